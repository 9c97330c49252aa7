//! One connection first, for `https://` upstreams whose HTTP version ALPN decides.
//!
//! hyper-util's legacy client learns a connection's protocol only once it is made, so a
//! burst of requests to a host with no pooled connection opens one TLS connection per
//! request, and if the upstream picks h2 all but one are thrown away (100 handshakes for
//! one session). The gate lets the first request to such a host make the connection
//! while the others wait for it (at most the connect timeout); once it is in the pool,
//! an h2 host's requests share it and an HTTP/1.1 host's go on in parallel (and are
//! never held again). An h2 host is gated again after `keepAliveTimeout` without a
//! request, when the pool has let its connection go. This is what Envoy's mixed
//! (ALPN) pool does: one connection decides the protocol before more are made.
//!
//! Hosts come and go (service discovery): when the map has doubled since it was last
//! pruned, entries idle longer than `keepAliveTimeout` (the pool has let their
//! connections go) are dropped, so it holds about the hosts in use.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{capture_connection, Connect};
use hyper_util::client::legacy::{Client, Error};
use tokio::sync::watch;

use crate::body::ProxyBody;

pub(super) struct AlpnGate {
    hosts: Mutex<Hosts>,
    keep_alive: Duration,
    connect_timeout: Duration,
}

/// The hosts, and the size at which they are next pruned.
struct Hosts {
    map: HashMap<String, Host>,
    prune_at: usize,
}

/// The map is not pruned below this many hosts.
const PRUNE_FROM: usize = 64;

struct Host {
    /// What the last connection negotiated: `Some(true)` h2, `Some(false)` HTTP/1.1.
    h2: Option<bool>,
    /// The last request sent to the host (the pool keeps an h2 connection as long).
    last_used: Instant,
    /// A request is making the first connection; the others wait for `made`.
    connecting: bool,
    made: watch::Sender<()>,
}

enum Step {
    Go,
    Wait(watch::Receiver<()>),
    Connect,
}

impl AlpnGate {
    pub(super) fn new(keep_alive: Duration, connect_timeout: Duration) -> Self {
        Self {
            hosts: Mutex::new(Hosts {
                map: HashMap::new(),
                prune_at: PRUNE_FROM,
            }),
            keep_alive,
            connect_timeout,
        }
    }

    /// Sends `req` (absolute `https://` URI) through `client`, one connection first.
    pub(super) async fn send<C>(
        &self,
        client: &Client<C, ProxyBody>,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, Error>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        let key = req.uri().authority().map_or("", |a| a.as_str()).to_string();
        loop {
            match self.step(&key) {
                Step::Go => return client.request(req).await,
                Step::Wait(mut made) => {
                    let waited = tokio::time::timeout(self.connect_timeout, made.changed()).await;
                    if !matches!(waited, Ok(Ok(()))) {
                        // The first connection takes too long: don't hold this one too.
                        return client.request(req).await;
                    }
                }
                Step::Connect => {
                    let mut first = First {
                        gate: self,
                        key: &key,
                        open: true,
                    };
                    let mut capture = capture_connection(&mut req);
                    let response = client.request(req);
                    tokio::pin!(response);
                    let connected = async {
                        capture
                            .wait_for_connection_metadata()
                            .await
                            .as_ref()
                            .map(|c| c.is_negotiated_h2())
                    };
                    tokio::pin!(connected);
                    let mut learned = false;
                    loop {
                        tokio::select! {
                            res = &mut response => return res,
                            h2 = &mut connected, if !learned => {
                                learned = true;
                                if let Some(h2) = h2 {
                                    self.learn(&key, h2);
                                    first.open = false;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn step(&self, key: &str) -> Step {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if !hosts.map.contains_key(key) && hosts.map.len() >= hosts.prune_at {
            self.prune(&mut hosts, now);
        }
        let host = match hosts.map.get_mut(key) {
            Some(host) => host,
            None => hosts.map.entry(key.to_string()).or_insert_with(|| Host {
                h2: None,
                last_used: now,
                connecting: false,
                made: watch::Sender::new(()),
            }),
        };
        match host.h2 {
            Some(false) => {
                host.last_used = now;
                Step::Go
            }
            Some(true) if now.duration_since(host.last_used) < self.keep_alive => {
                host.last_used = now;
                Step::Go
            }
            _ if host.connecting => Step::Wait(host.made.subscribe()),
            _ => {
                host.connecting = true;
                Step::Connect
            }
        }
    }

    /// Drops the hosts idle longer than `keepAliveTimeout` (never one connecting; its
    /// waiters look the host up again when woken); the next prune is at twice the size
    /// left, so a map of live hosts is not scanned on every new one.
    fn prune(&self, hosts: &mut Hosts, now: Instant) {
        let keep_alive = self.keep_alive;
        hosts
            .map
            .retain(|_, h| h.connecting || now.duration_since(h.last_used) < keep_alive);
        hosts.prune_at = (hosts.map.len() * 2).max(PRUNE_FROM);
    }

    /// The first connection is in the pool: let the others go.
    fn learn(&self, key: &str, h2: bool) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(host) = hosts.map.get_mut(key) {
            host.h2 = Some(h2);
            host.last_used = Instant::now();
            host.connecting = false;
            host.made.send_replace(());
        }
    }
}

/// Ends a first connection however its request ends (failed, cancelled): the waiting
/// requests go on (and the next one tries again).
struct First<'a> {
    gate: &'a AlpnGate,
    key: &'a str,
    /// Still this request's to end (false once its connection was learned).
    open: bool,
}

impl Drop for First<'_> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let mut hosts = self.gate.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(host) = hosts.map.get_mut(self.key) {
            if host.connecting {
                host.connecting = false;
                host.made.send_replace(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_first_connection_per_host_then_by_protocol() {
        let gate = AlpnGate::new(Duration::from_millis(50), Duration::from_secs(1));
        assert!(matches!(gate.step("a:443"), Step::Connect));
        let Step::Wait(mut made) = gate.step("a:443") else {
            panic!("a second request waits")
        };
        assert!(matches!(gate.step("b:443"), Step::Connect));
        gate.learn("a:443", true);
        assert!(made.has_changed().unwrap());
        made.mark_unchanged();
        assert!(matches!(gate.step("a:443"), Step::Go));
        // An h2 host idle for keepAliveTimeout is gated again.
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(gate.step("a:443"), Step::Connect));
        // HTTP/1.1 hosts are never held.
        gate.learn("b:443", false);
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(gate.step("b:443"), Step::Go));
    }

    #[test]
    fn idle_hosts_are_pruned() {
        let gate = AlpnGate::new(Duration::from_millis(200), Duration::from_secs(1));
        for i in 0..100 {
            let key = format!("old{i}:443");
            assert!(matches!(gate.step(&key), Step::Connect));
            gate.learn(&key, i % 2 == 0);
        }
        std::thread::sleep(Duration::from_millis(250));
        // One host in use, one still making its first connection (however old).
        assert!(matches!(gate.step("live:443"), Step::Connect));
        gate.learn("live:443", true);
        assert!(matches!(gate.step("busy:443"), Step::Connect));
        for i in 0..40 {
            assert!(matches!(gate.step(&format!("new{i}:443")), Step::Connect));
        }
        let hosts = gate.hosts.lock().unwrap();
        assert!(hosts.map.keys().all(|k| !k.starts_with("old")));
        assert!(hosts.map.contains_key("live:443"));
        assert!(hosts.map.contains_key("busy:443"));
        assert_eq!(hosts.map.len(), 42);
    }

    #[test]
    fn a_failed_first_connection_lets_the_others_go() {
        let gate = AlpnGate::new(Duration::from_secs(5), Duration::from_secs(1));
        assert!(matches!(gate.step("a:443"), Step::Connect));
        let Step::Wait(made) = gate.step("a:443") else {
            panic!("a second request waits")
        };
        drop(First {
            gate: &gate,
            key: "a:443",
            open: true,
        });
        assert!(made.has_changed().unwrap());
        assert!(matches!(gate.step("a:443"), Step::Connect));
    }
}
