//! Strategies over a target's primitives — recreate, rolling, blue-green, canary — for one
//! service, with its migration hook run once per commit. Each step is written to the ledger
//! before it is taken and after it ends. A rollout an agent crash interrupted is not resumed
//! step by step: the target replaces what the dead agent left (see `target::local`), and the
//! reconciler applies the commit again from what runs, the migration ledger keeping hooks from
//! running twice.

mod canary;
#[cfg(test)]
mod fault_tests;
mod prometheus;
mod rolling;
mod undo;

use std::time::Duration;

use crate::health::wait_healthy;
use crate::ledger::{LedgerError, Recorder};
use crate::spec::model::Service;
use crate::spec::model::service::{BlueGreen, Strategy};
use crate::target::{Slot, Target, TargetError};

pub use undo::{Undo, no_rollback_command, undo_migration};

/// Why a rollout stopped.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The new version did not become healthy. With blue-green, canary and rolling, traffic never
    /// left the old one and the new slot was retired; recreate had replaced it.
    #[error("the new version of `{service}` is unhealthy: {reason}")]
    Unhealthy {
        /// The service.
        service: String,
        /// The health failure.
        reason: String,
    },
    /// Canary analysis failed: the new version answered badly or failed a health check while
    /// taking part of the traffic; all traffic went back to the running version.
    #[error("the canary of `{service}` failed; all traffic is back on the running version: {reason}")]
    Analysis {
        /// The service.
        service: String,
        /// What the analysis saw.
        reason: String,
    },
    /// A target primitive failed.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The ledger could not record a step: nothing more is done unrecorded.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The migration hook failed or timed out; nothing else was changed.
    #[error("the migration of `{service}` failed: {reason}")]
    Migration {
        /// The service.
        service: String,
        /// What happened.
        reason: String,
    },
    /// A migration for this commit started earlier and never reported an end (the agent
    /// stopped mid-way): running it again could apply it twice, so a person must look.
    #[error(
        "the migration of `{service}` for this commit was interrupted earlier and is not run twice: check the database, then `plumb migrations resolve`"
    )]
    MigrationInterrupted {
        /// The service.
        service: String,
    },
    /// A task did not run to completion.
    #[error("the task `{service}` did not complete: {reason}")]
    Task {
        /// The service.
        service: String,
        /// What happened.
        reason: String,
    },
    /// The service's strategy is not one this target runs.
    #[error("the `{0}` strategy is not available on this target yet")]
    Unsupported(&'static str),
}

/// One rollout of one service, recorded under ledger attempt `attempt`.
pub struct Rollout<'a> {
    runtime: &'a dyn Target,
    ledger: &'a Recorder,
    attempt: i64,
    /// Whether the migration hook runs (not when restoring a rollback point).
    migrate: bool,
    /// The service rolled out, named in every step.
    service: String,
    /// The commit rolled out (empty when not read from git).
    commit: String,
}

impl<'a> Rollout<'a> {
    /// A rollout on `runtime`, recorded under ledger attempt `attempt`.
    pub fn new(runtime: &'a dyn Target, ledger: &'a Recorder, attempt: i64) -> Rollout<'a> {
        Rollout {
            runtime,
            ledger,
            attempt,
            migrate: true,
            service: String::new(),
            commit: String::new(),
        }
    }

    /// A rollout of what `commit` declares, which the target records beside what it runs.
    pub fn from_commit(mut self, commit: &str) -> Rollout<'a> {
        commit.clone_into(&mut self.commit);
        self
    }

    /// A rollout that does not run the service's migration hook: restoring a rollback point,
    /// whose migration ran when it was applied.
    pub fn without_migration(mut self) -> Rollout<'a> {
        self.migrate = false;
        self
    }
}

impl Rollout<'_> {
    /// Rolls `version` of `service` out by its strategy, from `live` (the slot serving now, if
    /// any). Returns the slot serving afterwards.
    ///
    /// The service's migration hook runs first, once per commit and environment: a commit whose
    /// migration succeeded before (an earlier attempt, another service's retry) skips it. When
    /// the rollout then fails, the hook's rollback command runs.
    pub async fn run(&mut self, service: &Service, version: &str, live: Option<Slot>) -> Result<Slot, RolloutError> {
        self.service = service.name.as_str().to_owned();
        if service.task {
            self.complete(service, version).await?;
            return Ok(Slot::Blue);
        }
        if !self.runtime.capabilities().supports(&service.strategy) {
            return Err(RolloutError::Unsupported(service.strategy.name()));
        }
        let migrated = self.migrate(service, version).await?;
        let result = match &service.strategy {
            Strategy::BlueGreen(settings) => self.blue_green(service, version, live, settings).await,
            Strategy::Canary(settings) => self.canary(service, version, live, settings).await,
            Strategy::Recreate(_) => self.in_place(service, version, live).await,
            // The target replaces copies itself, within the same limits.
            Strategy::Rolling(_) if self.runtime.capabilities().in_place => self.in_place(service, version, live).await,
            Strategy::Rolling(settings) => self.rolling(service, version, live, settings).await,
        };
        if result.is_err() && migrated {
            self.unmigrate(service).await?;
        }
        result
    }

    /// Runs task `service` to completion (within its progress deadline) as a one-off job, and
    /// records in the ledger that `version` completed: it does not run again until it changes.
    async fn complete(&mut self, service: &Service, version: &str) -> Result<(), RolloutError> {
        let name = service.name.as_str();
        let command = service.command.clone().unwrap_or_default();
        let job = format!("task-{}", version.get(..12).unwrap_or(version));
        let step = format!("{name}: run {version} to completion");
        recorded_job(self.ledger, self.attempt, &step, service, async {
            self.runtime
                .run_job(service, &job, &command, service.progress_deadline.0)
                .await
                .map_err(|reason| RolloutError::Task {
                    service: name.to_owned(),
                    reason: reason.source.to_string(),
                })
        })
        .await?;
        let (attempt, name, version) = (self.attempt, name.to_owned(), version.to_owned());
        self.ledger.call(move |l| l.task_done(attempt, &name, &version)).await?;
        Ok(())
    }

    /// Runs the migration hook unless it already succeeded for this commit, or the migration
    /// in force for the service is this very version's (a commit that brings back an earlier
    /// version, whose newer migrations were undone); returns whether it ran now.
    async fn migrate(&mut self, service: &Service, version: &str) -> Result<bool, RolloutError> {
        let Some(migration) = service.migration.as_ref().filter(|_| self.migrate) else {
            return Ok(false);
        };
        let name = service.name.as_str();
        let attempt = self.attempt;
        let (environment, commit) = self.ledger.call(move |l| l.attempt_key(attempt)).await?;
        let state = {
            let (environment, name, commit) = (environment.clone(), name.to_owned(), commit.clone());
            self.ledger
                .call(move |l| l.migration_state(&environment, &name, &commit))
                .await?
        };
        match state.as_deref() {
            Some("succeeded") => return Ok(false),
            Some("started" | "rolling-back") => {
                return Err(RolloutError::MigrationInterrupted {
                    service: name.to_owned(),
                });
            }
            _ => {}
        }
        let in_force = {
            let (environment, name) = (environment.clone(), name.to_owned());
            let all = self.ledger.call(move |l| l.migrations_in_force(&environment)).await?;
            all.into_iter().find(|r| r.service == name)
        };
        if in_force.is_some_and(|r| r.version.as_deref() == Some(version)) {
            return Ok(false);
        }
        let (service_name, to) = (name.to_owned(), version.to_owned());
        self.ledger
            .call(move |l| l.migration_started(attempt, &service_name, &to))
            .await?;
        // Where the record is kept in the cluster too, the migration runs only once the cluster
        // holds that it started: an agent taking over never runs it twice.
        let held = {
            let environment = environment.clone();
            self.ledger.call(move |l| Ok(l.held_elsewhere(&environment))).await?
        };
        if let Err(e) = held.await {
            let reason = format!("not run: {e}");
            self.migration_finished(name, Some(reason.clone())).await?;
            return Err(RolloutError::Migration {
                service: name.to_owned(),
                reason,
            });
        }
        let job = format!("migration-{}", commit.get(..12).unwrap_or(&commit));
        let step = format!("{name}: migrate");
        let result = recorded_job(self.ledger, self.attempt, &step, service, async {
            self.runtime
                .run_job(service, &job, &migration.command, migration.timeout.0)
                .await
                .map_err(|reason| RolloutError::Migration {
                    service: name.to_owned(),
                    reason: reason.source.to_string(),
                })
        })
        .await;
        let error = result.as_ref().err().map(ToString::to_string);
        self.migration_finished(name, error).await?;
        result.map(|()| true)
    }

    /// Records how this attempt's migration of `service` ended.
    async fn migration_finished(&self, service: &str, error: Option<String>) -> Result<(), LedgerError> {
        let (attempt, service) = (self.attempt, service.to_owned());
        self.ledger
            .call(move |l| l.migration_finished(attempt, &service, error.as_deref()))
            .await
    }

    /// Runs the migration hook's rollback command after the rollout that migrated failed,
    /// when it has one.
    async fn unmigrate(&mut self, service: &Service) -> Result<(), RolloutError> {
        if service.migration.as_ref().is_none_or(|m| m.rollback_command.is_none()) {
            return Ok(());
        }
        let attempt = self.attempt;
        let (_, commit) = self.ledger.call(move |l| l.attempt_key(attempt)).await?;
        let undo = Undo {
            service: service.clone(),
            commit,
        };
        undo_migration(self.runtime, self.ledger, attempt, &undo).await
    }

    async fn blue_green(
        &mut self,
        service: &Service,
        version: &str,
        live: Option<Slot>,
        settings: &BlueGreen,
    ) -> Result<Slot, RolloutError> {
        let name = service.name.as_str();
        let next = live.map_or(Slot::Blue, Slot::other);
        self.deploy(&format!("start {version} in {}", next.name()), service, next, version)
            .await?;
        if !settings.warmup.0.is_zero() {
            self.step(&format!("warm up for {:?}", settings.warmup.0), async {
                tokio::time::sleep(settings.warmup.0).await;
                Ok(())
            })
            .await?;
        }
        let healthy = self.health(service, next).await;
        if let Err(e) = healthy {
            self.retire(name, next).await?;
            return Err(e);
        }
        let mut weights = vec![(next, 100)];
        weights.extend(live.map(|l| (l, 0)));
        self.route(&format!("switch traffic to {}", next.name()), name, &weights)
            .await?;
        if let Some(old) = live {
            let keep = settings.keep_old_version.0 + settings.switchover.0;
            self.step(&format!("keep {} for switch-back ({keep:?})", old.name()), async {
                tokio::time::sleep(keep).await;
                Ok(())
            })
            .await?;
            self.retire(name, old).await?;
        }
        Ok(next)
    }

    /// Replaces what runs in the serving slot: all at once (recreate), or by the target within
    /// the rolling limits when it replaces copies itself.
    async fn in_place(&mut self, service: &Service, version: &str, live: Option<Slot>) -> Result<Slot, RolloutError> {
        let name = service.name.as_str();
        let slot = live.unwrap_or(Slot::Blue);
        let how = match (&service.strategy, live) {
            (Strategy::Rolling(r), Some(_)) => format!(
                "roll {} to {version} (max surge {}, max unavailable {})",
                slot.name(),
                r.max_surge,
                r.max_unavailable
            ),
            _ => format!("replace {} with {version}", slot.name()),
        };
        self.deploy(&how, service, slot, version).await?;
        self.health(service, slot).await?;
        self.route(&format!("route traffic to {}", slot.name()), name, &[(slot, 100)])
            .await?;
        Ok(slot)
    }

    async fn health(&mut self, service: &Service, slot: Slot) -> Result<(), RolloutError> {
        let checks = self.runtime.checks(service.name.as_str(), slot).await?;
        let deadline: Duration = service.progress_deadline.0;
        self.step(&format!("health of {}", slot.name()), async {
            wait_healthy(&checks, deadline)
                .await
                .map_err(|e| RolloutError::Unhealthy {
                    service: service.name.as_str().to_owned(),
                    reason: e.to_string(),
                })
        })
        .await
    }

    /// A recorded step that starts `version` of `service` in `slot`.
    async fn deploy(&mut self, step: &str, service: &Service, slot: Slot, version: &str) -> Result<(), RolloutError> {
        let (runtime, commit) = (self.runtime, self.commit.clone());
        self.step(step, async {
            runtime
                .deploy(service, slot, version, &commit)
                .await
                .map_err(RolloutError::from)
        })
        .await
    }

    /// A recorded step that sets `service`'s traffic weights.
    async fn route(&mut self, step: &str, service: &str, weights: &[(Slot, u32)]) -> Result<(), RolloutError> {
        let runtime = self.runtime;
        self.step(step, async {
            runtime.route(service, weights).await.map_err(RolloutError::from)
        })
        .await
    }

    /// A recorded step that retires `slot` of `service`.
    async fn retire(&mut self, service: &str, slot: Slot) -> Result<(), RolloutError> {
        let runtime = self.runtime;
        self.step(&format!("retire {}", slot.name()), async {
            runtime.retire(service, slot).await.map_err(RolloutError::from)
        })
        .await
    }

    /// Records `name` as started, runs it, records how it ended.
    async fn step<T>(
        &mut self,
        name: &str,
        action: impl std::future::Future<Output = Result<T, RolloutError>>,
    ) -> Result<T, RolloutError> {
        let name = format!("{}: {name}", self.service);
        recorded(self.ledger, self.attempt, &name, action).await
    }
}

/// Records step `name` of `attempt` as started, runs it, records how it ended.
pub async fn recorded<T>(
    ledger: &Recorder,
    attempt: i64,
    name: &str,
    action: impl std::future::Future<Output = Result<T, RolloutError>>,
) -> Result<T, RolloutError> {
    recorded_with(ledger, attempt, name, action, |_| None).await
}

/// A recorded step that runs a job: the last lines of its output (`service`'s secrets masked)
/// are recorded with its end.
pub async fn recorded_job(
    ledger: &Recorder,
    attempt: i64,
    name: &str,
    service: &Service,
    action: impl std::future::Future<Output = Result<String, RolloutError>>,
) -> Result<(), RolloutError> {
    let masked = async { action.await.map_err(|e| mask_error(service, e)) };
    recorded_with(ledger, attempt, name, masked, |tail| {
        Some(crate::target::workload::mask_opened(service, tail)).filter(|t| !t.is_empty())
    })
    .await
    .map(|_| ())
}

/// `error` with `service`'s secrets masked where it quotes a job's output.
fn mask_error(service: &Service, error: RolloutError) -> RolloutError {
    use crate::target::workload::mask_opened;
    match error {
        RolloutError::Migration { service: name, reason } => RolloutError::Migration {
            service: name,
            reason: mask_opened(service, &reason),
        },
        RolloutError::Task { service: name, reason } => RolloutError::Task {
            service: name,
            reason: mask_opened(service, &reason),
        },
        other => other,
    }
}

/// [`recorded`], with what `output` finds in the step's result recorded beside its end.
async fn recorded_with<T>(
    ledger: &Recorder,
    attempt: i64,
    name: &str,
    action: impl std::future::Future<Output = Result<T, RolloutError>>,
    output: impl FnOnce(&T) -> Option<String>,
) -> Result<T, RolloutError> {
    // The step is durable in the ledger before it is taken.
    let step = name.to_owned();
    ledger.call(move |l| l.step_started(attempt, &step)).await?;
    tracing::info!(event = "step", step = name, "Step started.");
    let started = std::time::Instant::now();
    let result = action.await;
    let error = result.as_ref().err().map(ToString::to_string);
    let duration_ms = started.elapsed().as_millis() as u64;
    match &error {
        None => tracing::info!(event = "step_done", step = name, duration_ms, "Step done."),
        Some(e) => tracing::warn!(event = "step_failed", step = name, duration_ms, error = %e, "Step failed."),
    }
    let step = name.to_owned();
    let output = result.as_ref().ok().and_then(output);
    ledger
        .call(move |l| l.step_finished(attempt, &step, error.as_deref(), output.as_deref()))
        .await?;
    result
}
