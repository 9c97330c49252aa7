//! The data plane's own tokio runtime (one per listening app, `workerThreads` threads).
//! Dropping it never blocks, so it may be dropped anywhere, even inside an async napi
//! call: in-flight tasks are cancelled and the threads wind down in the background.

use tokio::runtime::{Handle, Runtime};

pub struct DataPlane {
    runtime: Option<Runtime>,
}

impl DataPlane {
    pub fn start(worker_threads: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads)
            .thread_name("velithon-data-plane")
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    pub fn handle(&self) -> &Handle {
        match &self.runtime {
            Some(rt) => rt.handle(),
            None => unreachable!("the runtime is only taken in drop"),
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
