//! The velithon-gateway data plane.
//!
//! A plain Rust library: a hyper listener, a router for Velithon's path patterns,
//! load balancers, a pooled upstream client and the forwarding logic that streams
//! bodies both ways. It knows nothing of Node; `crates/node` binds it.

pub mod balancer;
pub mod body;
pub mod client;
pub mod error;
pub mod health;
mod idle;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod resilience;
pub mod router;
pub mod server;
pub mod status_set;
pub mod transform;

pub use error::{ErrorCode, GatewayError};
