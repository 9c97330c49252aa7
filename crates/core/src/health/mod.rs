//! Active health checks: a periodic, jittered probe of every server of a load balancer,
//! marking servers down after consecutive failures and up after consecutive successes.

mod checker;
mod state;

pub use checker::{
    ChangeHook, CheckFuture, CheckResult, CustomCheck, HealthCheckConfig, HealthChecker,
};
pub use state::{HealthSnapshot, HealthState};
