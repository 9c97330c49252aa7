//! `maxConnectionsPerHost`: a semaphore per upstream host. A request waits at most
//! `connectionPoolTimeout` for a slot, then fails with `VG_POOL_TIMEOUT` (503).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ErrorCode, GatewayError};

pub(super) struct HostLimits {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HostLimits {
    pub(super) fn new(per_host: usize) -> Self {
        Self {
            per_host,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    fn semaphore(&self, host: &str) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = hosts.get(host) {
            return s.clone();
        }
        let s = Arc::new(Semaphore::new(self.per_host));
        hosts.insert(host.to_string(), s.clone());
        s
    }

    pub(super) async fn acquire(
        &self,
        host: &str,
        wait: Duration,
    ) -> Result<OwnedSemaphorePermit, GatewayError> {
        let sem = self.semaphore(host);
        match tokio::time::timeout(wait, sem.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(GatewayError::new(
                ErrorCode::Internal,
                "connection limiter closed",
            )),
            Err(_) => Err(GatewayError::new(
                ErrorCode::PoolTimeout,
                format!("no connection to {host} became free within connectionPoolTimeout"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_then_times_out() {
        let limits = HostLimits::new(1);
        let held = limits
            .acquire("a:1", Duration::from_millis(10))
            .await
            .unwrap();
        let err = limits
            .acquire("a:1", Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::PoolTimeout);
        // Another host has its own slots.
        let _b = limits
            .acquire("b:1", Duration::from_millis(10))
            .await
            .unwrap();
        drop(held);
        let _a = limits
            .acquire("a:1", Duration::from_millis(10))
            .await
            .unwrap();
    }
}
