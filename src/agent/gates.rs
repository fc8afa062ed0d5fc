//! The gates a worker holds a commit at: the sync windows and the promotion in force (the
//! rollback point's, or a first deployment's own). Automatic syncs wait for both, self-heal for
//! the windows; `plumb sync` waits for the promotion, and for the windows unless each one
//! holding changes back says `manualSync`; `plumb rollback` is never held.

use chrono::{DateTime, Utc};

use super::command::CommandError;
use super::environment::{Head, Worker};
use crate::gate::window::{self, Closed};
use crate::ledger::LedgerError;
use crate::spec::Desired;
use crate::spec::model::gates::Gates;

impl Worker {
    /// The gates in force for `desired`: the rollback point's; `desired`'s own when nothing
    /// was applied here yet.
    fn gates<'a>(&'a self, desired: &'a Desired) -> &'a Gates {
        self.applied.as_ref().map_or(&desired.gates, |(_, point)| &point.gates)
    }

    /// What holds `head` (rendered as `desired`) back now — a sync window, a promotion — in
    /// words; published as the status's `waiting`.
    pub(super) async fn held(&self, head: &Head, desired: &Desired) -> Result<Option<String>, LedgerError> {
        let mut reasons = Vec::new();
        if let Some(closed) = self.window_closed(desired) {
            reasons.push(format!("sync window: {}", closed.reason));
        }
        if let Some(waiting) = self.promotion(head, desired).await? {
            reasons.push(format!("promotion: {waiting}"));
        }
        let waiting = (!reasons.is_empty()).then(|| reasons.join("; "));
        self.publish(|s| s.waiting.clone_from(&waiting));
        Ok(waiting)
    }

    /// Whether the sync windows in force hold changes back now; the `plumb_sync_window_open`
    /// gauge follows.
    pub(super) fn window_closed(&self, desired: &Desired) -> Option<Closed> {
        let closed = window::closed(&self.gates(desired).sync_windows, Utc::now());
        self.publish.metrics.window(&self.name, closed.is_none());
        closed
    }

    /// Refuses a manual sync of `head` that the gates hold back: a promotion not done, or a
    /// window that does not allow manual syncs.
    pub(super) async fn manual_sync_allowed(&self, head: &Head, desired: &Desired) -> Result<(), CommandError> {
        if let Some(closed) = self.window_closed(desired).filter(|c| !c.manual) {
            return Err(CommandError::Conflict(format!(
                "{}; manual syncs wait too (the window does not say `manualSync: true`); `plumb rollback` is never held",
                closed.reason
            )));
        }
        if let Some(waiting) = self.promotion(head, desired).await? {
            return Err(CommandError::Conflict(format!(
                "the commit is not promoted here yet: {waiting}"
            )));
        }
        Ok(())
    }

    /// What the promotion in force still waits for before `head` may be applied here: each
    /// environment it follows must have applied the commit (or run what it declares for them)
    /// healthy, for the soak time, without rolling it back.
    async fn promotion(&self, head: &Head, desired: &Desired) -> Result<Option<String>, LedgerError> {
        let Some(promotion) = self.gates(desired).promotion.clone() else {
            return Ok(None);
        };
        let commit = head.commit.to_string();
        let short = &commit[..12];
        let soak = chrono::Duration::from_std(promotion.soak.0).unwrap_or_default();
        let now = Utc::now();
        let mut waiting = Vec::new();
        for before in &promotion.after {
            let before = before.as_str();
            let (name, at) = (before.to_owned(), commit.clone());
            let (own, point) = self
                .ledger
                .call(move |l| Ok((l.applied_at(&name, &at)?, l.rollback_point(&name)?)))
                .await?;
            // Applied there as this commit, or running there what this commit declares for it.
            let since = match (own, point) {
                (Some((attempt, at)), _) => Some((attempt, at)),
                (None, Some(point)) if same_state(head, &commit, &point, before) => {
                    let (name, point) = (before.to_owned(), point.clone());
                    self.ledger.call(move |l| l.applied_at(&name, &point)).await?
                }
                _ => None,
            };
            let Some((attempt, at)) = since else {
                waiting.push(format!("waiting for {before} to apply {short}"));
                continue;
            };
            let name = before.to_owned();
            if let Some(when) = self.ledger.call(move |l| l.rolled_back_after(&name, attempt)).await? {
                waiting.push(format!(
                    "stopped: {before} was rolled back at {when}; {short} is not promoted"
                ));
                continue;
            }
            let until = DateTime::parse_from_rfc3339(&at).map(|t| t.with_timezone(&Utc) + soak);
            if let Some(until) = until.ok().filter(|until| *until > now) {
                waiting.push(format!(
                    "waiting for {before}: soaking until {}",
                    until.format("%Y-%m-%d %H:%M:%S UTC")
                ));
            }
        }
        Ok((!waiting.is_empty()).then(|| waiting.join("; ")))
    }
}

/// Whether `commit` declares for `environment` exactly what `point` (applied there) does.
fn same_state(head: &Head, commit: &str, point: &str, environment: &str) -> bool {
    match (head.render(commit, environment), head.render(point, environment)) {
        (Ok(wanted), Ok(running)) => fingerprint(&wanted) == fingerprint(&running),
        _ => false,
    }
}

/// What a desired state runs, without the commit it was read at: each service's version, the
/// target, the plain manifests.
fn fingerprint(desired: &Desired) -> String {
    let services: Vec<(&str, String)> = desired
        .services
        .values()
        .map(|s| (s.name.as_str(), crate::reconcile::version(s)))
        .collect();
    serde_json::json!({ "services": services, "target": desired.target, "manifests": desired.manifests }).to_string()
}
