//! Load balancers: a set of upstream servers and a strategy that picks one per request.
//! The server list is an immutable snapshot swapped atomically, so readers on the hot
//! path never lock and a change never disturbs requests already in flight.

mod selector;
mod strategy;
mod upstream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

pub use selector::{AsyncSelector, OwnedPickContext, SelectFuture};
pub use strategy::{PickContext, RoundRobin, Strategy};
pub use upstream::{Upstream, UpstreamUrlError};

use crate::error::{ErrorCode, GatewayError};

pub struct LoadBalancer {
    servers: ArcSwap<Vec<Arc<Upstream>>>,
    strategy: Box<dyn Strategy>,
    /// A user's own strategy (e.g. JS); `strategy` is then its fallback.
    selector: OnceLock<Arc<dyn AsyncSelector>>,
    fallbacks: AtomicU64,
}

impl LoadBalancer {
    pub fn new(urls: &[String], strategy: Box<dyn Strategy>) -> Result<Self, UpstreamUrlError> {
        Ok(Self {
            servers: ArcSwap::from_pointee(parse_all(urls)?),
            strategy,
            selector: OnceLock::new(),
            fallbacks: AtomicU64::new(0),
        })
    }

    /// Installs a user strategy. The built-in strategy stays as its fallback for when the
    /// selector fails, times out or names a server that is not in the list.
    pub fn set_selector(&self, selector: Arc<dyn AsyncSelector>) -> bool {
        self.selector.set(selector).is_ok()
    }

    /// How often a user strategy's answer was replaced by the fallback.
    pub fn fallback_count(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Picks with the user strategy if there is one, else as `pick`.
    pub async fn pick_async(&self, ctx: &PickContext<'_>) -> Result<Arc<Upstream>, GatewayError> {
        let Some(selector) = self.selector.get() else {
            return self.pick(ctx);
        };
        let servers = self.servers.load_full();
        if servers.is_empty() {
            return self.pick(ctx);
        }
        let urls: Vec<String> = servers.iter().map(|s| s.url().to_string()).collect();
        let chosen = selector.select(urls, OwnedPickContext::from(ctx)).await;
        match chosen.and_then(|url| servers.iter().find(|s| s.url() == url).cloned()) {
            Some(upstream) => Ok(upstream),
            None => self.pick_fallback(ctx),
        }
    }

    /// The built-in strategy's pick, counted as a fallback of the user strategy.
    pub fn pick_fallback(&self, ctx: &PickContext<'_>) -> Result<Arc<Upstream>, GatewayError> {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.pick(ctx)
    }

    /// One server, round robin: what `forwardTo(url)` and `route(…, { upstream })` use.
    pub fn single(url: &str) -> Result<Self, UpstreamUrlError> {
        Self::new(&[url.to_string()], Box::<RoundRobin>::default())
    }

    /// Replaces the server list atomically. Servers whose URL stays keep their state.
    pub fn set_servers(&self, urls: &[String]) -> Result<(), UpstreamUrlError> {
        let old = self.servers.load();
        let mut next = Vec::with_capacity(urls.len());
        for url in urls {
            match old.iter().find(|s| s.url() == url) {
                Some(kept) => next.push(kept.clone()),
                None => next.push(Arc::new(Upstream::parse(url)?)),
            }
        }
        self.servers.store(Arc::new(next));
        Ok(())
    }

    pub fn servers(&self) -> Arc<Vec<Arc<Upstream>>> {
        self.servers.load_full()
    }

    pub fn strategy_name(&self) -> &'static str {
        self.strategy.name()
    }

    pub fn pick(&self, ctx: &PickContext<'_>) -> Result<Arc<Upstream>, GatewayError> {
        let servers = self.servers.load();
        if servers.is_empty() {
            return Err(GatewayError::new(
                ErrorCode::NoHealthyUpstream,
                "the load balancer has no upstream servers",
            ));
        }
        match self.strategy.pick(&servers, ctx) {
            Some(i) if i < servers.len() => Ok(servers[i].clone()),
            _ => Err(GatewayError::new(
                ErrorCode::NoHealthyUpstream,
                "no upstream server is available",
            )),
        }
    }
}

fn parse_all(urls: &[String]) -> Result<Vec<Arc<Upstream>>, UpstreamUrlError> {
    urls.iter()
        .map(|u| Upstream::parse(u).map(Arc::new))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_pick(lb: &LoadBalancer) -> String {
        let headers = http::HeaderMap::new();
        let ctx = PickContext {
            method: &http::Method::GET,
            path: "/",
            headers: &headers,
            client: None,
        };
        lb.pick(&ctx).unwrap().url().to_string()
    }

    #[test]
    fn round_robin_cycles_in_order() {
        let urls: Vec<String> = (1..=3)
            .map(|i| format!("http://127.0.0.1:900{i}"))
            .collect();
        let lb = LoadBalancer::new(&urls, Box::<RoundRobin>::default()).unwrap();
        let picks: Vec<String> = (0..6).map(|_| ctx_pick(&lb)).collect();
        assert_eq!(picks[..3], urls[..]);
        assert_eq!(picks[3..], urls[..]);
    }

    /// A user strategy that answers from a script: a URL, or `None` (it failed).
    struct Scripted(std::sync::Mutex<Vec<Option<String>>>);

    impl AsyncSelector for Scripted {
        fn select(&self, servers: Vec<String>, ctx: OwnedPickContext) -> SelectFuture {
            assert_eq!(servers.len(), 2);
            assert_eq!(ctx.path, "/p");
            let next = self.0.lock().unwrap().remove(0);
            Box::pin(async move { next })
        }
    }

    #[tokio::test]
    async fn a_user_strategy_falls_back_to_round_robin_and_counts_it() {
        let urls = vec!["http://a:1".to_string(), "http://b:1".to_string()];
        let lb = LoadBalancer::new(&urls, Box::<RoundRobin>::default()).unwrap();
        let script = vec![
            Some("http://b:1".to_string()),
            None,
            Some("http://not-listed:1".to_string()),
            Some("http://b:1".to_string()),
        ];
        assert!(lb.set_selector(Arc::new(Scripted(std::sync::Mutex::new(script)))));
        let headers = http::HeaderMap::new();
        let ctx = PickContext {
            method: &http::Method::GET,
            path: "/p",
            headers: &headers,
            client: None,
        };
        let mut picks = Vec::new();
        for _ in 0..4 {
            picks.push(lb.pick_async(&ctx).await.unwrap().url().to_string());
        }
        // b (chosen), a and b (round robin after a failure and a bad answer), b (chosen).
        assert_eq!(
            picks,
            ["http://b:1", "http://a:1", "http://b:1", "http://b:1"]
        );
        assert_eq!(lb.fallback_count(), 2);
    }

    #[test]
    fn set_servers_keeps_the_state_of_servers_that_stay() {
        let lb = LoadBalancer::new(
            &["http://a:1".into(), "http://b:1".into()],
            Box::<RoundRobin>::default(),
        )
        .unwrap();
        let before = lb.servers()[1].clone();
        lb.set_servers(&["http://b:1".into(), "http://c:1".into()])
            .unwrap();
        let after = lb.servers();
        assert!(Arc::ptr_eq(&before, &after[0]));
        assert_eq!(after[1].url(), "http://c:1");
        lb.set_servers(&[]).unwrap();
        let headers = http::HeaderMap::new();
        let ctx = PickContext {
            method: &http::Method::GET,
            path: "/",
            headers: &headers,
            client: None,
        };
        assert_eq!(
            lb.pick(&ctx).unwrap_err().code(),
            ErrorCode::NoHealthyUpstream
        );
    }
}
