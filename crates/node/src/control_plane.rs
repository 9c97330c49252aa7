//! The control plane's runtime: one current-thread tokio runtime on its own thread,
//! started on first use and kept for the life of the process, for background work that
//! is not tied to a listener (active health checks). It never blocks the Node thread and
//! does not keep Node alive.

use std::sync::OnceLock;

use tokio::runtime::Handle;

static CONTROL_PLANE: OnceLock<Handle> = OnceLock::new();

pub fn handle() -> napi::Result<Handle> {
    if let Some(handle) = CONTROL_PLANE.get() {
        return Ok(handle.clone());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| napi::Error::from_reason(format!("cannot start the control plane: {e}")))?;
    let handle = runtime.handle().clone();
    if CONTROL_PLANE.set(handle.clone()).is_err() {
        // Another caller won the race; this runtime was never driven.
        return Ok(CONTROL_PLANE.get().cloned().unwrap_or(handle));
    }
    std::thread::Builder::new()
        .name("velithon-control-plane".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .map_err(|e| napi::Error::from_reason(format!("cannot start the control plane: {e}")))?;
    Ok(handle)
}
