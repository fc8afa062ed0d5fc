//! The ledger as the agent uses it: one writer per environment, shared by that environment's
//! rollouts, and readers for the API — their SQLite work (a write is durable, so it waits for
//! the disk) runs on the runtime's threads for blocking work, never on the ones that drive
//! rollouts, health checks and the API.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

use super::{Ledger, LedgerError};

/// How many reads of the ledger may run at once (API requests, metrics scrapes): the rest wait
/// their turn instead of taking every blocking thread.
const READERS: usize = 4;

static READING: Semaphore = Semaphore::const_new(READERS);

/// An environment's ledger, shared by whoever records in it. Cloning shares it.
#[derive(Clone)]
pub struct Recorder {
    ledger: Arc<Mutex<Ledger>>,
}

impl Recorder {
    /// Opens (creating when absent) the ledger file at `path`.
    pub async fn open(path: PathBuf) -> Result<Recorder, LedgerError> {
        blocking(move || Ledger::open(&path)).await.map(Recorder::new)
    }

    /// Shares `ledger`.
    pub fn new(ledger: Ledger) -> Recorder {
        Recorder {
            ledger: Arc::new(Mutex::new(ledger)),
        }
    }

    /// Runs `work` on the ledger, one call at a time, off the async threads. A call whose
    /// caller stops waiting still completes: an entry is never half written.
    pub async fn call<T, F>(&self, work: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ledger) -> Result<T, LedgerError> + Send + 'static,
    {
        let ledger = Arc::clone(&self.ledger);
        blocking(move || work(&mut ledger.lock().unwrap_or_else(PoisonError::into_inner))).await
    }
}

/// Opens the ledger at `path` read-only and runs `work` on it off the async threads, at most
/// [`READERS`] at once.
pub async fn read<T, F>(path: PathBuf, work: F) -> Result<T, LedgerError>
where
    T: Send + 'static,
    F: FnOnce(&Ledger) -> Result<T, LedgerError> + Send + 'static,
{
    let _turn = READING.acquire().await.expect("the readers' semaphore is never closed");
    blocking(move || work(&Ledger::open_read_only(&path)?)).await
}

/// Runs `work` off the async runtime (see [`crate::blocking::run`]).
async fn blocking<T, F>(work: F) -> Result<T, LedgerError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, LedgerError> + Send + 'static,
{
    crate::blocking::run(work)
        .await
        .unwrap_or_else(|e| Err(LedgerError::Lost(e.to_string())))
}
