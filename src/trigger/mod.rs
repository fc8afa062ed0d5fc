//! What makes plumb look at a repository: a polling timer with jitter and backoff, cron
//! schedules, and webhooks from forges. Every trigger rings one doorbell per repository; rings
//! that arrive while a fetch is pending coalesce into it. This module decides *when* to fetch,
//! never fetches or reconciles itself.

mod poll;
mod schedule;
pub mod webhook;

use tokio::sync::mpsc;

pub use poll::{Poll, Timer};
pub use schedule::{Schedule, ScheduleError};

/// Why a fetch was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The polling interval elapsed.
    Poll,
    /// A cron schedule fired.
    Schedule(String),
    /// A forge reported a push to a tracked ref.
    Webhook {
        /// The forge (`github`, `gitlab`…).
        provider: &'static str,
        /// The refs pushed.
        refs: Vec<String>,
    },
    /// Someone asked (CLI, API).
    Manual,
}

/// What became of a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rung {
    /// A fetch is now pending.
    Queued,
    /// A fetch was already pending; this ring joins it.
    Coalesced,
    /// Nobody listens any more (shutting down).
    Closed,
}

/// The sending side: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct Doorbell {
    tx: mpsc::Sender<Reason>,
}

/// The receiving side, held by the repository's single fetch worker.
#[derive(Debug)]
pub struct Bell {
    rx: mpsc::Receiver<Reason>,
}

/// A doorbell with room for one pending fetch.
pub fn doorbell() -> (Doorbell, Bell) {
    let (tx, rx) = mpsc::channel(1);
    (Doorbell { tx }, Bell { rx })
}

impl Doorbell {
    /// Asks for a fetch; returns at once.
    pub fn ring(&self, reason: Reason) -> Rung {
        match self.tx.try_send(reason) {
            Ok(()) => Rung::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Rung::Coalesced,
            Err(mpsc::error::TrySendError::Closed(_)) => Rung::Closed,
        }
    }
}

impl Bell {
    /// Waits for the next ring; `None` once every doorbell is gone.
    pub async fn wait(&mut self) -> Option<Reason> {
        self.rx.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_coalesces_into_one_pending_fetch() {
        let (door, mut bell) = doorbell();
        assert_eq!(door.ring(Reason::Poll), Rung::Queued);
        assert_eq!(door.ring(Reason::Manual), Rung::Coalesced);
        assert_eq!(door.ring(Reason::Manual), Rung::Coalesced);
        assert_eq!(bell.wait().await, Some(Reason::Poll));
        // Once the worker took the ring, the next one queues again.
        assert_eq!(door.ring(Reason::Manual), Rung::Queued);
        drop(bell);
        assert_eq!(door.ring(Reason::Manual), Rung::Closed);
    }
}
