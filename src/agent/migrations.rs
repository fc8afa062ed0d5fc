//! What bringing an earlier state back does to an environment's database. Restoring an earlier
//! commit — `plumb rollback`, or a new head (a `git revert`) that brings a service's earlier
//! version back — first runs the rollback command of every migration in force since, newest
//! first, each as the service was declared at that migration's commit. One that cannot be
//! undone stops the restore before anything changes, unless the operator says to leave the
//! migrations in place. A migration an agent died in the middle of stops the environment until
//! a person says what the database has.

use super::command::CommandError;
use super::environment::{Head, Worker};
use crate::ledger::Trigger;
use crate::ledger::{LedgerError, MigrationRecord, MigrationState};
use crate::reconcile::{Intent, version};
use crate::rollout::Undo;
use crate::spec::Desired;

/// The migrations a restore undoes, newest first, and those it leaves in place on request.
#[derive(Default)]
pub struct Back {
    /// To undo.
    pub undo: Vec<Undo>,
    /// Left in place (`--skip-migrations`), as `<service> for <commit>`.
    pub kept: Vec<String>,
}

impl<'a> Intent<'a> {
    /// Applying `commit` (signed by `signer`), started by `trigger`, after `back`; nobody
    /// asked by name.
    pub fn new(commit: &'a str, signer: Option<&'a str>, trigger: Trigger, back: &'a Back) -> Intent<'a> {
        Intent {
            commit,
            signer,
            trigger,
            undo: &back.undo,
            kept: &back.kept,
            by: None,
        }
    }
}

/// What `plumb migrations resolve` recorded.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Resolved {
    /// The commit.
    pub commit: String,
    /// The services whose interrupted migration was resolved.
    pub services: Vec<String>,
    /// What they were recorded as.
    #[serde(rename = "as")]
    pub state: MigrationState,
    /// Who said so.
    #[serde(rename = "resolvedBy")]
    pub by: String,
}

impl Worker {
    /// The migrations to undo to bring `commit` (applied healthy before) back: every one in
    /// force that ran after it was last applied.
    pub(super) async fn back_to(&self, head: &Head, commit: &str, skip: bool) -> Result<Back, CommandError> {
        let (name, wanted) = (self.name.clone(), commit.to_owned());
        let (since, in_force) = self
            .ledger
            .call(move |l| Ok((l.applied_at(&name, &wanted)?, l.migrations_in_force(&name)?)))
            .await?;
        let since = since.map_or(0, |(attempt, _)| attempt);
        let newer: Vec<MigrationRecord> = in_force
            .into_iter()
            .filter(|r| r.attempt.is_some_and(|a| a > since))
            .collect();
        self.back(head, newer, skip).map_err(CommandError::Conflict)
    }

    /// The migrations to undo before applying `desired`: for each service whose version is
    /// that of a migration still in force but not the newest (a revert), every migration of
    /// it in force above that one. A version whose own migration is not in force (never had
    /// one, or it was rolled back) undoes nothing: its migration, if any, runs as a new one.
    pub(super) async fn back_for(&self, head: &Head, desired: &Desired, skip: bool) -> Result<Back, String> {
        let name = self.name.clone();
        let in_force = self
            .ledger
            .call(move |l| l.migrations_in_force(&name))
            .await
            .map_err(|e| e.to_string())?;
        let mut newer: Vec<MigrationRecord> = Vec::new();
        for service in desired.services.values() {
            let wanted = version(service);
            let mine: Vec<&MigrationRecord> = in_force.iter().filter(|r| r.service == service.name.as_str()).collect();
            if let Some(at) = mine.iter().position(|r| r.version.as_deref() == Some(wanted.as_str())) {
                newer.extend(mine[..at].iter().map(|r| (*r).clone()));
            }
        }
        newer.sort_by_key(|r| std::cmp::Reverse(r.attempt));
        self.back(head, newer, skip)
    }

    /// Each of `records` (newest first) as a migration to undo, rendered from its commit; with
    /// `skip`, all as kept instead. A migration without a rollback command, or whose commit
    /// cannot be rendered, is refused by name.
    fn back(&self, head: &Head, records: Vec<MigrationRecord>, skip: bool) -> Result<Back, String> {
        let mut back = Back::default();
        let mut rendered: std::collections::BTreeMap<String, Desired> = std::collections::BTreeMap::new();
        for record in records {
            let short = record.commit.get(..12).unwrap_or(&record.commit).to_owned();
            if skip {
                back.kept.push(format!("{} for {short}", record.service));
                continue;
            }
            if !rendered.contains_key(&record.commit) {
                let desired = head.render(&record.commit, &self.name).map_err(|e| {
                    format!(
                        "the migration of `{}` for {short} must be undone, but that commit cannot be rendered now: {e}; \
                         give --skip-migrations to leave the database as it is",
                        record.service
                    )
                })?;
                rendered.insert(record.commit.clone(), desired);
            }
            let service = rendered[&record.commit]
                .services
                .values()
                .find(|s| s.name.as_str() == record.service)
                .filter(|s| s.migration.as_ref().is_some_and(|m| m.rollback_command.is_some()))
                .ok_or_else(|| {
                    format!(
                        "the migration of `{}` for {} has no rollbackCommand, so the database cannot be brought back \
                         past it; nothing was changed. Give --skip-migrations to leave the database as it is",
                        record.service, record.commit
                    )
                })?;
            back.undo.push(Undo {
                service: crate::spec::model::Service::clone(service),
                commit: record.commit,
            });
        }
        Ok(back)
    }

    /// Why nothing may be applied here now: a migration, or its rollback, that an agent died in
    /// the middle of. Published as the `migration` block of the status.
    pub(super) async fn interrupted(&self) -> Result<Option<String>, LedgerError> {
        let name = self.name.clone();
        let migrations = self.ledger.call(move |l| l.migrations(&name, usize::MAX)).await?;
        let stopped: Vec<String> = migrations
            .iter()
            .filter(|r| r.interrupted())
            .map(|r| {
                let what = if r.state == "started" {
                    "migration"
                } else {
                    "migration's rollback"
                };
                format!("the {what} of `{}` for {}", r.service, r.commit)
            })
            .collect();
        let reason = (!stopped.is_empty()).then(|| {
            let commit = migrations
                .iter()
                .find(|r| r.interrupted())
                .map_or("", |r| r.commit.as_str());
            format!(
                "{} stopped in the middle (the agent stopped while it ran) and is not run again: nothing is applied \
                 until a person checks the database and says what it has, with `plumb migrations resolve --env {} \
                 --commit {commit} --as applied|rolled-back`",
                stopped.join(", "),
                self.name
            )
        });
        self.publish.block(&self.name, "migration", reason.clone());
        Ok(reason)
    }

    /// Records what a person verified of the interrupted migrations of `commit` (a unique
    /// prefix will do; of `service` only, when given).
    pub async fn resolve(
        &mut self,
        commit: &str,
        service: Option<String>,
        state: MigrationState,
        by: &str,
    ) -> Result<Resolved, CommandError> {
        let name = self.name.clone();
        let migrations = self.ledger.call(move |l| l.migrations(&name, usize::MAX)).await?;
        let mut commits: Vec<&str> = migrations
            .iter()
            .filter(|r| r.interrupted() && r.commit.starts_with(commit))
            .map(|r| r.commit.as_str())
            .collect();
        commits.dedup();
        let full = match commits.as_slice() {
            [one] => (*one).to_owned(),
            [] => {
                return Err(CommandError::NotFound(format!(
                    "no migration of `{commit}` is interrupted in `{}`; `plumb migrations` lists them",
                    self.name
                )));
            }
            _ => {
                return Err(CommandError::Conflict(format!(
                    "`{commit}` names several commits; give more digits"
                )));
            }
        };
        let (name, who, at) = (self.name.clone(), by.to_owned(), full.clone());
        let services = self
            .ledger
            .call(move |l| l.migration_resolved(&name, &at, service.as_deref(), state, &who))
            .await?;
        if services.is_empty() {
            return Err(CommandError::NotFound(format!(
                "that service's migration of {full} is not interrupted"
            )));
        }
        tracing::warn!(environment = %self.name, commit = %full, ?services, ?state, by, "Interrupted migrations resolved by hand.");
        self.interrupted().await?;
        self.publish_last().await;
        Ok(Resolved {
            commit: full,
            services,
            state,
            by: by.to_owned(),
        })
    }
}
