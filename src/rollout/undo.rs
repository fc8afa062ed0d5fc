//! Undoing a migration: its rollback command, run as a one-off job of the service as declared
//! at the migration's commit, recorded before it starts (so an agent that dies in the middle
//! leaves it marked interrupted, never run twice) and after it ends.

use std::time::Duration;

use super::{RolloutError, recorded_job};
use crate::ledger::Recorder;
use crate::spec::model::Service;
use crate::target::Target;

/// A migration to undo: the service as its commit declared it (its image, configuration and
/// rollback command), and that commit.
#[derive(Clone, Debug)]
pub struct Undo {
    /// The service at the migration's commit.
    pub service: Service,
    /// The commit whose migration it is.
    pub commit: String,
}

/// Runs the rollback command of `undo`'s migration as a recorded step of `attempt`. A
/// migration without one is an error naming its commit: the caller decides before changing
/// anything whether to go on without it.
pub async fn undo_migration(
    target: &dyn Target,
    ledger: &Recorder,
    attempt: i64,
    undo: &Undo,
) -> Result<(), RolloutError> {
    let service = &undo.service;
    let name = service.name.as_str();
    let short = undo.commit.get(..12).unwrap_or(&undo.commit);
    let Some(migration) = service.migration.as_ref() else {
        return Err(no_rollback_command(name, &undo.commit));
    };
    let Some(command) = migration.rollback_command.clone() else {
        return Err(no_rollback_command(name, &undo.commit));
    };
    {
        let (service, commit) = (name.to_owned(), undo.commit.clone());
        ledger
            .call(move |l| l.migration_rolling_back(attempt, &service, &commit))
            .await?;
    }
    // Where the record is kept in the cluster too, the rollback runs only once the cluster
    // holds that it started: an agent taking over never runs it twice.
    let environment = target_environment(ledger, attempt).await?;
    let held = ledger.call(move |l| Ok(l.held_elsewhere(&environment))).await?;
    let result = match held.await {
        Err(e) => Err(RolloutError::Migration {
            service: name.to_owned(),
            reason: format!("its rollback was not run: {e}"),
        }),
        Ok(()) => {
            let step = format!("{name}: roll back the migration of {short}");
            let job = format!("migration-rollback-{short}");
            recorded_job(ledger, attempt, &step, service, async {
                target
                    .run_job(service, &job, &command, migration.timeout.0.max(Duration::from_secs(1)))
                    .await
                    .map_err(|reason| RolloutError::Migration {
                        service: name.to_owned(),
                        reason: format!("its rollback for {short} failed: {}", reason.source),
                    })
            })
            .await
        }
    };
    let error = result.as_ref().err().map(ToString::to_string);
    let (service, commit) = (name.to_owned(), undo.commit.clone());
    ledger
        .call(move |l| l.migration_rolled_back(attempt, &service, &commit, error.as_deref()))
        .await?;
    result
}

/// The refusal for a migration that cannot be undone.
pub fn no_rollback_command(service: &str, commit: &str) -> RolloutError {
    RolloutError::Migration {
        service: service.to_owned(),
        reason: format!(
            "the migration of {commit} has no rollbackCommand, so the database cannot be brought back past it"
        ),
    }
}

/// The environment `attempt` belongs to.
async fn target_environment(ledger: &Recorder, attempt: i64) -> Result<String, RolloutError> {
    Ok(ledger.call(move |l| l.attempt_key(attempt)).await?.0)
}
