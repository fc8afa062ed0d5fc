//! A target's drift bell, rung at most once per quiet period: a change within the quiet second
//! after a ring is held and rung when it ends (the bell holds one ring; the worker's check then
//! covers every change since).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The shortest time between two rings.
const QUIET: Duration = Duration::from_secs(1);

/// A bell that keeps quiet periods.
pub struct QuietBell {
    bell: Arc<Notify>,
    last: Option<Instant>,
    /// A ring held back by the quiet period, and when it is due.
    held: Option<Instant>,
}

impl QuietBell {
    /// Rings `bell`, keeping quiet periods.
    pub fn new(bell: Arc<Notify>) -> QuietBell {
        QuietBell {
            bell,
            last: None,
            held: None,
        }
    }

    /// Rings now, or when the quiet period since the last ring ends.
    pub fn ring(&mut self) {
        match self.last {
            Some(at) if at.elapsed() < QUIET => {
                self.held.get_or_insert(at + QUIET);
            }
            _ => self.ring_now(),
        }
    }

    fn ring_now(&mut self) {
        self.held = None;
        self.last = Some(Instant::now());
        self.bell.notify_one();
    }

    /// Waits until a held ring is due and rings it; never ends while none is held (for a
    /// `select!` beside the events that ring).
    pub async fn held(&mut self) {
        match self.held {
            Some(due) => {
                tokio::time::sleep_until(due).await;
                self.ring_now();
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ring_within_the_quiet_period_is_held_not_lost() {
        let bell = Arc::new(Notify::new());
        let mut quiet = QuietBell::new(bell.clone());
        quiet.ring();
        bell.notified().await;
        quiet.ring();
        quiet.ring();
        let started = Instant::now();
        tokio::select! {
            _ = bell.notified() => panic!("rang within the quiet period"),
            _ = quiet.held() => {}
        }
        assert!(started.elapsed() >= QUIET - Duration::from_millis(1));
        bell.notified().await;
    }
}
