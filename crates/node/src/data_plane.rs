//! The data plane's own tokio runtime, one per listening app. With one worker thread it
//! is a current-thread runtime driven by a dedicated thread (no work-stealing overhead:
//! the fastest shape for one core, as an NGINX worker); with more, a multi-thread
//! runtime. Dropping it never blocks, so it may be dropped anywhere, even inside an async
//! napi call: in-flight tasks are cancelled and the threads wind down in the background.

use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;

pub struct DataPlane {
    handle: Handle,
    owner: Owner,
}

enum Owner {
    /// A multi-thread runtime, shut down in the background on drop.
    Multi(Option<Runtime>),
    /// A current-thread runtime living on its own thread until told to stop.
    Single(Option<oneshot::Sender<()>>),
}

impl DataPlane {
    pub fn start(worker_threads: usize) -> std::io::Result<Self> {
        if worker_threads <= 1 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name("velithon-data-plane".into())
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    // Dropping the runtime here cancels whatever tasks are left.
                    drop(runtime);
                })?;
            return Ok(Self {
                handle,
                owner: Owner::Single(Some(stop)),
            });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads)
            .thread_name("velithon-data-plane")
            .enable_all()
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            owner: Owner::Multi(Some(runtime)),
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        match &mut self.owner {
            Owner::Multi(runtime) => {
                if let Some(rt) = runtime.take() {
                    rt.shutdown_background();
                }
            }
            Owner::Single(stop) => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
            }
        }
    }
}
