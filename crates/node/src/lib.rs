//! The napi-rs binding of velithon-gateway. It turns validated options from the
//! TypeScript facade into `velithon-core` values and runs the data plane on its own
//! tokio runtime. Nothing here runs per request: the hot path is all in the core.

#![deny(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::dbg_macro,
    clippy::todo
)]

mod app;
mod balancer;
mod callback;
mod client;
mod control_plane;
mod data_plane;
mod errors;
mod handler;
mod health;
mod latin1;
mod metrics;
mod middleware;
mod retry;
mod selector;
mod transforms;
mod transport;
