//! Blocking work — the ledger, files — run off the async runtime, so a slow disk holds up the
//! call waiting for it and nothing else.

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::task::JoinError;

/// Runs `work` on a thread for blocking work. A single-threaded runtime (the unit tests', whose
/// clock is paused and would jump ahead while nothing runs on it) has none to spare: there the
/// work runs in place.
pub async fn run<T, F>(work: F) -> Result<T, JoinError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work).await
}

/// [`run`] for file operations: a lost thread is an I/O error.
pub async fn io<T, F>(work: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    run(work).await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
}
