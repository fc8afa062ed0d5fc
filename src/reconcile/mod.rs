//! Applying a desired state to an environment: observe what runs, plan per service
//! ([`crate::diff::plan`]), take each step — rollouts by the service's strategy, reloads, scales, deletions — recording
//! every one in the ledger, and, when a step fails, restore the environment to its rollback
//! point (the last commit applied healthy, re-rendered by the caller).

use std::collections::BTreeSet;

use serde_json::json;
use tracing::Instrument;

use crate::ledger::{Attempt, LedgerError, Outcome, Recorder, Trigger};
use crate::rollout::{Rollout, RolloutError, Undo, recorded, undo_migration};
use crate::spec::Desired;
use crate::spec::model::Service;
use crate::target::{Slot, Slots, Target, TargetError};

use crate::diff::plan::{self, ManifestAction};
pub use crate::diff::plan::{Action, Live, LiveManifests, Plan, Step, plan, serving, version};

/// What a target runs of an environment: its services and its plain manifests' objects.
#[derive(Debug, Default)]
pub struct Observed {
    /// The services, per slot.
    pub services: Live,
    /// The plain manifests' objects, with their digests.
    pub manifests: LiveManifests,
}

/// Observes what `target` runs, with the versions of `desired`'s tasks the ledger holds run to
/// completion, and plans `desired` against it (services and plain manifests).
pub async fn observe_and_plan(
    target: &dyn Target,
    ledger: &Recorder,
    desired: &Desired,
    prune: bool,
) -> Result<(Observed, Plan), ObserveError> {
    let mut observed = Observed {
        services: target.observe().await?,
        manifests: target.observe_manifests().await?,
    };
    let tasks: Vec<String> = desired
        .services
        .values()
        .filter(|s| s.task)
        .map(|s| s.name.as_str().to_owned())
        .collect();
    if !tasks.is_empty() {
        let environment = desired.environment.as_str().to_owned();
        let done = ledger.call(move |l| l.tasks_done(&environment)).await?;
        for (service, version) in done.into_iter().filter(|(s, _)| tasks.contains(s)) {
            let completed = crate::target::LiveSlot {
                version,
                replicas: Vec::new(),
                weight: 100,
                config: None,
                failed: 0,
                taken: Vec::new(),
                restarts: 0,
            };
            observed.services.insert(service, [(Slot::Blue, completed)].into());
        }
    }
    let mut planned = plan::plan(desired, &observed.services, prune);
    planned.manifests = plan::manifests(desired, &observed.manifests, prune);
    Ok((observed, planned))
}

/// Why what runs cannot be known.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The target cannot be asked.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The ledger cannot tell which tasks ran.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<ObserveError> for RolloutError {
    fn from(error: ObserveError) -> Self {
        match error {
            ObserveError::Target(e) => RolloutError::Target(e),
            ObserveError::Ledger(e) => RolloutError::Ledger(e),
        }
    }
}

/// What applying a commit did.
#[derive(Debug)]
pub struct Applied {
    /// The ledger attempt, `None` when there was nothing to do and nothing was recorded.
    pub attempt: Option<i64>,
    /// The plan taken.
    pub plan: Plan,
    /// How it ended (`Succeeded` when there was nothing to do).
    pub outcome: Outcome,
    /// The strategy recorded: the services' one, `mixed` or `none`.
    pub strategy: String,
    /// How long observing the target and planning took.
    pub planned: std::time::Duration,
    /// How long the plan's steps took (migrations undone first, a restore after a failure);
    /// zero when nothing was attempted.
    pub rolled_out: std::time::Duration,
}

/// The desired state to restore when an apply fails: the rollback point, rendered.
pub struct RollbackPoint<'a> {
    /// Its commit.
    pub commit: &'a str,
    /// Its desired state.
    pub desired: &'a Desired,
}

/// What an apply is about, for the ledger.
pub struct Intent<'a> {
    /// The commit.
    pub commit: &'a str,
    /// Who signed it.
    pub signer: Option<&'a str>,
    /// What started it. Every trigger but [`Trigger::Heal`] records an attempt even when the
    /// plan is empty, so the commit becomes the rollback point; a heal with nothing to correct
    /// records nothing.
    pub trigger: Trigger,
    /// Migrations to undo, newest first, before any other step: what an earlier state being
    /// restored does not have.
    pub undo: &'a [Undo],
    /// Migrations such a restore leaves in place, because the operator said so: each is
    /// recorded as a step.
    pub kept: &'a [String],
    /// Who asked for it (the API identity of a sync or rollback).
    pub by: Option<&'a str>,
}

/// Applies `desired` to `target`: plans against what runs, takes the steps, and on failure
/// restores `rollback` (when given). Every step is written to the ledger before it is taken.
/// Fails only when the ledger cannot record; a failed apply is an [`Outcome`].
pub async fn apply(
    target: &dyn Target,
    ledger: &Recorder,
    desired: &Desired,
    intent: Intent<'_>,
    rollback: Option<RollbackPoint<'_>>,
) -> Result<Applied, LedgerError> {
    let planning = std::time::Instant::now();
    let observed = observe_and_plan(target, ledger, desired, desired.sync.prune).await;
    let planned = planning.elapsed();
    let (live, plan) = match observed {
        Ok(observed) => observed,
        Err(e) => {
            // Nothing was attempted: what runs is unknown, so nothing is changed or recorded.
            return Ok(Applied {
                attempt: None,
                plan: Plan::default(),
                outcome: Outcome::Failed(format!("cannot observe the target: {e}")),
                strategy: "none".to_owned(),
                planned,
                rolled_out: std::time::Duration::ZERO,
            });
        }
    };
    if plan.is_empty() && intent.trigger == Trigger::Heal {
        return Ok(Applied {
            attempt: None,
            plan,
            outcome: Outcome::Succeeded,
            strategy: "none".to_owned(),
            planned,
            rolled_out: std::time::Duration::ZERO,
        });
    }
    let environment = desired.environment.as_str();
    let strategy = strategy_summary(desired, &plan);
    let record = Attempt {
        environment: environment.to_owned(),
        commit: intent.commit.to_owned(),
        signer: intent.signer.map(str::to_owned),
        strategy: strategy.clone(),
        plan: json!(plan.summary()),
        trigger: intent.trigger,
        by: intent.by.map(str::to_owned),
    };
    let attempt = ledger.call(move |l| l.begin(&record)).await?;
    // Every event of the attempt (its steps included) carries the environment, commit, signer
    // and attempt: they are what notifications and log searches key on.
    let span = tracing::info_span!(
        "attempt",
        id = attempt,
        environment,
        commit = intent.commit,
        signer = intent.signer.unwrap_or(""),
        trigger = ?intent.trigger,
    );
    let started = std::time::Instant::now();
    let outcome = match undo_first(target, ledger, attempt, &intent)
        .instrument(span.clone())
        .await
    {
        Ok(()) => {
            attempt_steps(target, ledger, attempt, desired, &plan, &live, rollback)
                .instrument(span.clone())
                .await?
        }
        Err(RolloutError::Ledger(e)) => return Err(e),
        Err(e) => Outcome::Failed(format!("{e}; nothing else was changed")),
    };
    let rolled_out = started.elapsed();
    span.in_scope(|| {
        let duration_ms = rolled_out.as_millis() as u64;
        match &outcome {
            Outcome::Succeeded => tracing::info!(event = "succeeded", duration_ms, "Attempt succeeded."),
            other => tracing::warn!(event = "failed", duration_ms, outcome = %other, "Attempt did not succeed."),
        }
    });
    let ended = outcome.clone();
    ledger.call(move |l| l.finish(attempt, &ended)).await?;
    Ok(Applied {
        attempt: Some(attempt),
        plan,
        outcome,
        strategy,
        planned,
        rolled_out,
    })
}

/// Records the migrations the intent leaves in place, then undoes those it undoes, newest
/// first, stopping at the first that fails.
async fn undo_first(
    target: &dyn Target,
    ledger: &Recorder,
    attempt: i64,
    intent: &Intent<'_>,
) -> Result<(), RolloutError> {
    for kept in intent.kept {
        let step = format!("leave the migration of {kept} in place (--skip-migrations)");
        recorded(ledger, attempt, &step, async { Ok(()) }).await?;
    }
    for undo in intent.undo {
        undo_migration(target, ledger, attempt, undo).await?;
    }
    Ok(())
}

/// Takes the plan's steps and, when one fails, restores `rollback`; the attempt's outcome.
async fn attempt_steps(
    target: &dyn Target,
    ledger: &Recorder,
    attempt: i64,
    desired: &Desired,
    plan: &Plan,
    live: &Observed,
    rollback: Option<RollbackPoint<'_>>,
) -> Result<Outcome, LedgerError> {
    tracing::info!(event = "started", steps = ?plan.summary(), "Attempt started.");
    let failure = match take(target, ledger, attempt, desired, plan, &live.services, true).await {
        Ok(()) => return Ok(Outcome::Succeeded),
        Err(RolloutError::Ledger(e)) => return Err(e),
        Err(e) => e.to_string(),
    };
    let Some(point) = rollback else {
        return Ok(Outcome::Failed(format!(
            "{failure}; there is no rollback point to restore"
        )));
    };
    tracing::warn!(event = "rolling_back", rollback_point = point.commit, reason = %failure, "Restoring the rollback point.");
    match restore(target, ledger, attempt, desired, point.desired, plan, live).await {
        Ok(()) => Ok(Outcome::RolledBack(failure)),
        Err(RolloutError::Ledger(e)) => Err(e),
        Err(e) => Ok(Outcome::Failed(format!(
            "{failure}; restoring {} failed too: {e}",
            point.commit
        ))),
    }
}

/// Brings the environment back to `previous` after a failed attempt: the migrations the attempt
/// ran for services whose rollout did not fail are undone first, what it changed is rolled
/// back, and services it created are removed.
async fn restore(
    target: &dyn Target,
    ledger: &Recorder,
    attempt: i64,
    failed_desired: &Desired,
    previous: &Desired,
    failed: &Plan,
    before: &Observed,
) -> Result<(), RolloutError> {
    undo_attempt(target, ledger, attempt, failed_desired).await?;
    let (live, mut back) = observe_and_plan(target, ledger, previous, false).await?;
    let created: BTreeSet<&str> = failed
        .steps
        .iter()
        .filter(|s| s.action == Action::Create && !before.services.contains_key(&s.service))
        .map(|s| s.service.as_str())
        .collect();
    // Objects the failed attempt created go too.
    for step in &mut back.manifests {
        if step.action == ManifestAction::Orphan && !before.manifests.contains_key(&step.object) {
            step.action = ManifestAction::Delete;
            "created by the failed attempt".clone_into(&mut step.why);
        }
    }
    for step in &mut back.steps {
        if step.action == Action::Orphan && created.contains(step.service.as_str()) {
            step.action = Action::Delete;
            step.why = "created by the failed attempt".to_owned();
        }
    }
    take(target, ledger, attempt, previous, &back, &live.services, false).await
}

/// Undoes, newest first, the migrations `attempt` ran that are still in force (those of
/// services whose own rollout did not fail), as `desired` declares them; one without a
/// rollback command stays, as it does when its own rollout fails.
async fn undo_attempt(
    target: &dyn Target,
    ledger: &Recorder,
    attempt: i64,
    desired: &Desired,
) -> Result<(), RolloutError> {
    let environment = desired.environment.as_str().to_owned();
    let in_force = ledger.call(move |l| l.migrations_in_force(&environment)).await?;
    for record in in_force.into_iter().filter(|r| r.attempt == Some(attempt)) {
        let Some(service) = desired.services.values().find(|s| s.name.as_str() == record.service) else {
            continue;
        };
        if service.migration.as_ref().is_none_or(|m| m.rollback_command.is_none()) {
            continue;
        }
        let undo = Undo {
            service: Service::clone(service),
            commit: record.commit,
        };
        undo_migration(target, ledger, attempt, &undo).await?;
    }
    Ok(())
}

/// Takes every step of `plan` in order, stopping at the first failure.
async fn take(
    target: &dyn Target,
    ledger: &Recorder,
    attempt: i64,
    desired: &Desired,
    plan: &Plan,
    live: &Live,
    forward: bool,
) -> Result<(), RolloutError> {
    let commit = desired.commit.as_deref().unwrap_or_default();
    // Plain manifests first: services may use what they declare.
    let apply: Vec<_> = plan
        .manifests
        .iter()
        .filter(|s| s.action == ManifestAction::Apply)
        .filter_map(|s| desired.manifests.iter().find(|m| m.object == s.object))
        .collect();
    let delete: Vec<String> = plan
        .manifests
        .iter()
        .filter(|s| s.action == ManifestAction::Delete)
        .map(|s| s.object.clone())
        .collect();
    if !apply.is_empty() || !delete.is_empty() {
        let step = format!("apply {} manifest objects, delete {}", apply.len(), delete.len());
        recorded(ledger, attempt, &step, async {
            Ok(target.apply_manifests(apply, &delete).await?)
        })
        .await?;
    }
    // Rollouts gather into a wave, taken as the target allows (several at once on Kubernetes);
    // any other step waits for the wave before it.
    let mut wave: Vec<Unit<'_>> = Vec::new();
    for step in &plan.steps {
        let name = step.service.as_str();
        let service = desired
            .services
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, s)| s);
        let slots = live.get(name);
        let running = slots.and_then(serving).map(|(slot, _)| slot);
        if let (Action::Create | Action::Rollout, Some(service)) = (&step.action, service) {
            wave.push(Unit {
                service,
                slots,
                running,
            });
            continue;
        }
        roll_out_wave(target, ledger, attempt, std::mem::take(&mut wave), forward, commit).await?;
        match (&step.action, service) {
            (Action::Orphan | Action::Taken, _) => {}
            (Action::Delete, _) => {
                for slot in slots.into_iter().flat_map(|s| s.keys()) {
                    let step = format!("delete {name} ({})", slot.name());
                    recorded(ledger, attempt, &step, async { Ok(target.remove(name, *slot).await?) }).await?;
                }
            }
            (Action::Retire { slot }, _) => {
                let step = format!("retire idle {} of {name}", slot.name());
                retire(target, ledger, attempt, &step, name, *slot).await?;
            }
            (Action::Create | Action::Rollout, Some(_)) => unreachable!("rollouts go in a wave"),
            (Action::Reload, Some(service)) => {
                let slot = running.unwrap_or(Slot::Blue);
                let reloaded = recorded(ledger, attempt, &format!("reload the configuration of {name}"), async {
                    Ok(target.reload(service, slot).await?)
                })
                .await?;
                if !reloaded {
                    roll_out(target, ledger, attempt, service, running, forward, commit).await?;
                }
            }
            (Action::Scale { to, .. }, Some(service)) => {
                let slot = running.unwrap_or(Slot::Blue);
                recorded(ledger, attempt, &format!("scale {name} to {to}"), async {
                    Ok(target.scale(service, slot, *to).await?)
                })
                .await?;
            }
            (_, None) => unreachable!("plans only act on declared services"),
        }
    }
    roll_out_wave(target, ledger, attempt, wave, forward, commit).await
}

/// A service to roll out: its declaration, what runs of it, and the slot serving.
struct Unit<'a> {
    service: &'a Service,
    slots: Option<&'a Slots<crate::target::LiveSlot>>,
    running: Option<Slot>,
}

impl Unit<'_> {
    /// Rolls the service out (from a clean slate when no slot serves).
    async fn run(
        &self,
        target: &dyn Target,
        ledger: &Recorder,
        attempt: i64,
        forward: bool,
        commit: &str,
    ) -> Result<(), RolloutError> {
        let name = self.service.name.as_str();
        if self.running.is_none() {
            // Slots without traffic are leftovers: start from a clean service.
            for slot in self.slots.into_iter().flat_map(|s| s.keys()) {
                let step = format!("retire leftover {} of {name}", slot.name());
                retire(target, ledger, attempt, &step, name, *slot).await?;
            }
        }
        roll_out(target, ledger, attempt, self.service, self.running, forward, commit).await
    }
}

/// Rolls `units` out in their order (dependencies first), up to the target's
/// [`Target::rollouts_at_once`] at a time; a service starts once every service of the wave it
/// depends on has rolled out. The first failure stops new starts; those running end; then it is
/// returned (a ledger failure before any other).
async fn roll_out_wave(
    target: &dyn Target,
    ledger: &Recorder,
    attempt: i64,
    units: Vec<Unit<'_>>,
    forward: bool,
    commit: &str,
) -> Result<(), RolloutError> {
    let at_once = target.rollouts_at_once().max(1);
    if at_once == 1 || units.len() < 2 {
        for unit in units {
            unit.run(target, ledger, attempt, forward, commit).await?;
        }
        return Ok(());
    }
    let names: BTreeSet<&str> = units.iter().map(|u| u.service.name.as_str()).collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut waiting: std::collections::VecDeque<Unit<'_>> = units.into();
    let mut running = futures_util::stream::FuturesUnordered::new();
    let mut failure: Option<RolloutError> = None;
    loop {
        if failure.is_none() {
            let mut i = 0;
            while i < waiting.len() && running.len() < at_once {
                let ready = waiting[i]
                    .service
                    .depends_on
                    .iter()
                    .all(|d| !names.contains(d.as_str()) || done.contains(d.as_str()));
                // Nothing running and nothing ready cannot happen with a valid plan (no cycles,
                // dependencies first); should it, the next in order goes.
                if ready || (running.is_empty() && i == 0) {
                    let unit = waiting.remove(i).expect("index within bounds");
                    running.push(async move {
                        let name = unit.service.name.as_str();
                        (name, unit.run(target, ledger, attempt, forward, commit).await)
                    });
                } else {
                    i += 1;
                }
            }
        }
        match futures_util::StreamExt::next(&mut running).await {
            Some((name, Ok(()))) => {
                done.insert(name);
            }
            Some((_, Err(e))) => {
                if failure.is_none() || matches!(e, RolloutError::Ledger(_)) {
                    failure = Some(e);
                }
            }
            None => break,
        }
    }
    failure.map_or(Ok(()), Err)
}

/// A recorded step that retires `slot` of service `name`.
async fn retire(
    target: &dyn Target,
    ledger: &Recorder,
    attempt: i64,
    step: &str,
    name: &str,
    slot: Slot,
) -> Result<(), RolloutError> {
    recorded(ledger, attempt, step, async { Ok(target.retire(name, slot).await?) }).await
}

async fn roll_out(
    target: &dyn Target,
    ledger: &Recorder,
    attempt: i64,
    service: &Service,
    running: Option<Slot>,
    forward: bool,
    commit: &str,
) -> Result<(), RolloutError> {
    let version = version(service);
    let mut rollout = Rollout::new(target, ledger, attempt).from_commit(commit);
    if !forward {
        // Restoring: the migration hook of the failed commit already ran its rollback command.
        rollout = rollout.without_migration();
    }
    rollout.run(service, &version, running).await.map(|_| ())
}

/// The strategy recorded for an attempt: the one strategy of the services it rolls out, or
/// `mixed`, or `none` when nothing is rolled out.
fn strategy_summary(desired: &Desired, plan: &Plan) -> String {
    let strategies: BTreeSet<&str> = plan
        .steps
        .iter()
        .filter(|s| matches!(s.action, Action::Create | Action::Rollout))
        .filter_map(|s| desired.services.iter().find(|(n, _)| n.as_str() == s.service))
        .map(|(_, s)| s.strategy.name())
        .collect();
    match strategies.len() {
        0 => "none".to_owned(),
        1 => strategies.into_iter().next().unwrap_or_default().to_owned(),
        _ => "mixed".to_owned(),
    }
}
