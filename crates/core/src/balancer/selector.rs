//! A user's own load-balancing strategy, asynchronous (it may live in JavaScript). It
//! answers with a server URL, or `None` when it failed; the balancer then falls back to
//! its built-in strategy and counts it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use super::PickContext;

pub type SelectFuture = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// What a user strategy sees of the request, owned (it crosses threads).
#[derive(Debug, Clone)]
pub struct OwnedPickContext {
    pub method: String,
    pub path: String,
    /// Lower-case names, in the order sent.
    pub headers: Vec<(String, String)>,
    pub client: Option<SocketAddr>,
}

impl From<&PickContext<'_>> for OwnedPickContext {
    fn from(ctx: &PickContext<'_>) -> Self {
        Self {
            method: ctx.method.as_str().to_string(),
            path: ctx.path.to_string(),
            headers: crate::proxy::latin1_pairs(ctx.headers),
            client: ctx.client,
        }
    }
}

pub trait AsyncSelector: Send + Sync + 'static {
    /// Picks one of `servers` (URLs as configured), or `None` to fall back.
    fn select(&self, servers: Vec<String>, ctx: OwnedPickContext) -> SelectFuture;
}
