//! The gates a worker holds a commit at: the sync windows in force (the rollback point's, or a
//! first deployment's own). Automatic syncs and self-heal wait for a window; `plumb sync` goes
//! through only where every window holding changes back says `manualSync`; `plumb rollback` is
//! never held.

use chrono::Utc;

use super::command::CommandError;
use super::environment::Worker;
use crate::gate::window::{self, Closed};
use crate::spec::Desired;
use crate::spec::model::gates::Gates;

impl Worker {
    /// The gates in force for `desired`: the rollback point's; `desired`'s own when nothing
    /// was applied here yet.
    fn gates<'a>(&'a self, desired: &'a Desired) -> &'a Gates {
        self.applied.as_ref().map_or(&desired.gates, |(_, point)| &point.gates)
    }

    /// Whether the sync windows in force hold changes back now; the status says why and the
    /// `plumb_sync_window_open` gauge follows.
    pub(super) fn window_closed(&self, desired: &Desired) -> Option<Closed> {
        let closed = window::closed(&self.gates(desired).sync_windows, Utc::now());
        self.publish.metrics.window(&self.name, closed.is_none());
        let waiting = closed.as_ref().map(|c| format!("sync window: {}", c.reason));
        self.publish(|s| s.window = waiting);
        closed
    }

    /// Refuses a manual sync the windows in force hold back, unless each allows manual syncs.
    pub(super) fn manual_sync_allowed(&self, desired: &Desired) -> Result<(), CommandError> {
        match self.window_closed(desired) {
            Some(closed) if !closed.manual => Err(CommandError::Conflict(format!(
                "{}; manual syncs wait too (the window does not say `manualSync: true`); `plumb rollback` is never held",
                closed.reason
            ))),
            _ => Ok(()),
        }
    }
}
