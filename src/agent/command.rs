//! What an operator asks an environment's worker: sync the head now, or roll back to an earlier
//! applied commit — and why such a request could not be carried out, by kind, so the API can
//! answer with the right status.

use super::environment::{Done, Pending, RolledBack, Worker};
use crate::ledger::{LedgerError, Outcome, Trigger};
use crate::reconcile::Intent;

/// Why an operator's request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// What the request names does not exist (a commit never applied healthy here): 404.
    #[error("{0}")]
    NotFound(String),
    /// The environment is not in a state to do it (no head fetched yet, an invalid head, no
    /// earlier commit, an ambiguous prefix): 409.
    #[error("{0}")]
    Conflict(String),
    /// The target could not be asked what runs: 503, worth retrying.
    #[error("the target cannot be reached: {0}")]
    Unavailable(String),
    /// The ledger could not record or answer: 500; nothing is applied until it can.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The refusal when no head has been handed to the worker yet.
fn no_head() -> CommandError {
    CommandError::Conflict("no head has been fetched yet".to_owned())
}

impl Worker {
    /// Applies the last head now: a manual sync, which also retries a head that failed.
    /// Migrations a revert brings back are undone first, unless `skip_migrations`. The
    /// ledger records `by` as who asked.
    pub async fn sync(&mut self, by: &str, skip_migrations: bool) -> Result<Done, CommandError> {
        let head = self.last.clone().ok_or_else(no_head)?;
        let commit = head.commit.to_string();
        let desired = head.desired.clone().map_err(CommandError::Conflict)?;
        self.not_interrupted().await?;
        if self.applied.is_none() {
            self.applied = self.rollback_point(&head).await?;
        }
        let approvals = self.manual_sync_allowed(&head, &desired).await?;
        self.images_signed(&desired).await.map_err(|refusal| match refusal {
            crate::gate::images::Refusal::Refused(why) => CommandError::Conflict(why),
            crate::gate::images::Refusal::Unavailable(why) => CommandError::Unavailable(why),
        })?;
        let back = self
            .back_for(&head, &desired, skip_migrations)
            .await
            .map_err(CommandError::Conflict)?;
        self.handled = Some(head.commit);
        let intent = Intent {
            by: Some(by),
            ..Intent::new(&commit, head.signer.as_deref(), Trigger::Sync, &back)
        };
        let applied = self.apply(desired, intent, true).await?;
        self.record_approvals(applied.attempt, &approvals).await?;
        self.publish(|s| s.drift.clear());
        Ok(Done {
            attempt: applied.attempt,
            commit,
            plan: applied.plan.summary(),
            outcome: applied.outcome,
        })
    }

    /// What applying the last head would do now: its desired state planned against what runs.
    pub async fn pending(&mut self) -> Result<Pending, CommandError> {
        let head = self.last.as_ref().ok_or_else(no_head)?;
        let desired = head.desired.as_ref().map_err(|e| CommandError::Conflict(e.clone()))?;
        let (_, plan) =
            crate::reconcile::observe_and_plan(self.target.as_ref(), &self.ledger, desired, desired.sync.prune)
                .await
                .map_err(|e| CommandError::Unavailable(e.to_string()))?;
        let before = self.applied.as_ref().map(|(_, d)| d);
        Ok(Pending {
            commit: head.commit.to_string(),
            applied: self.applied.as_ref().map(|(c, _)| c.clone()),
            plan,
            changes: crate::diff::environment(&self.name, before, Some(desired)),
        })
    }

    /// Restores `to` (a commit applied healthy before, or a unique prefix of one; by default
    /// the one before the rollback point). The head it replaces is recorded as rolled back, so
    /// it is not applied again until the head moves — across restarts too — and the `git
    /// revert` that makes the repository agree is returned. Should the restore fail, the
    /// environment goes back to what ran before it.
    ///
    /// First the migrations applied since `to` was last applied are undone, newest first;
    /// one that cannot be stops the rollback before anything changes, unless
    /// `skip_migrations` (then each one left in place is a recorded step).
    pub async fn rollback(
        &mut self,
        to: Option<&str>,
        by: &str,
        skip_migrations: bool,
    ) -> Result<RolledBack, CommandError> {
        let head = self.last.clone().ok_or_else(no_head)?;
        self.not_interrupted().await?;
        let target = self.rollback_target(to).await?;
        let desired = head
            .render(&target, &self.name)
            .map_err(|e| CommandError::Conflict(format!("{target} cannot be rendered now: {e}")))?;
        self.remember_subject(&head, &target);
        let back = self.back_to(&head, &target, skip_migrations).await?;
        let intent = Intent {
            by: Some(by),
            ..Intent::new(&target, None, Trigger::Rollback, &back)
        };
        let applied = self.apply(desired, intent, true).await?;
        let head_commit = head.commit.to_string();
        let mut replaced = None;
        if applied.outcome == Outcome::Succeeded && head_commit != target {
            let reason = format!("rolled back on request to {target}");
            self.pin_out(&head_commit, head.signer.clone(), &reason).await?;
            self.publish(|s| s.refused = Some(reason));
            replaced = Some(head_commit);
        }
        let revert = replaced
            .as_ref()
            .map(|head| format!("git revert --no-edit {target}..{head}"));
        tracing::warn!(environment = %self.name, to = %target, ?revert, "Rolled back on request.");
        Ok(RolledBack {
            done: Done {
                attempt: applied.attempt,
                commit: target,
                plan: applied.plan.summary(),
                outcome: applied.outcome,
            },
            head: replaced,
            revert,
        })
    }

    /// Refuses while a migration an agent died in the middle of is not resolved.
    async fn not_interrupted(&self) -> Result<(), CommandError> {
        match self.interrupted().await? {
            Some(reason) => Err(CommandError::Conflict(reason)),
            None => Ok(()),
        }
    }

    /// The commit a rollback goes to: `to` (a prefix of a commit applied healthy before), or
    /// the newest applied commit other than the rollback point.
    async fn rollback_target(&self, to: Option<&str>) -> Result<String, CommandError> {
        let name = self.name.clone();
        let candidates = self.ledger.call(move |l| l.applied_commits(&name, 50)).await?;
        let current = self.applied.as_ref().map(|(c, _)| c.as_str());
        let Some(prefix) = to else {
            return candidates
                .into_iter()
                .find(|c| Some(c.as_str()) != current)
                .ok_or_else(|| {
                    CommandError::Conflict("there is no earlier applied commit to roll back to".to_owned())
                });
        };
        let matching: Vec<&String> = candidates.iter().filter(|c| c.starts_with(prefix)).collect();
        match matching.as_slice() {
            [one] => Ok((*one).clone()),
            [] => {
                let recent: Vec<&str> = candidates.iter().take(5).map(|c| &c[..12.min(c.len())]).collect();
                Err(CommandError::NotFound(format!(
                    "`{prefix}` was never applied healthy in `{}`; recent ones: {}",
                    self.name,
                    recent.join(", ")
                )))
            }
            _ => Err(CommandError::Conflict(format!(
                "`{prefix}` names several applied commits; give more digits"
            ))),
        }
    }

    /// Records `commit` as rolled back, so it is not applied again until the head moves.
    async fn pin_out(&mut self, commit: &str, signer: Option<String>, reason: &str) -> Result<(), LedgerError> {
        let outcome = Outcome::RolledBack(reason.to_owned());
        self.record_unapplied(commit, signer, Trigger::Rollback, outcome)
            .await?;
        self.publish.metrics.rollback(&self.name, "manual");
        Ok(())
    }
}
