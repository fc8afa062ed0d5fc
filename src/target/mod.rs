//! Where environments run, behind one small interface: deploy a version of a service into a
//! slot, route traffic between slots by weight, retire a slot, resolve its health checks, read
//! its traffic counters, run a one-off job, observe, and say what it can do. Strategies are
//! written once over these primitives (`rollout`) and never name a backend. Backends: `local`
//! (child processes behind the built-in router), `compose` (containers on a Docker Engine
//! behind the same router) and `kubernetes` (Deployments behind a Service).

pub mod bell;
pub mod compose;
pub mod kubernetes;
pub mod local;
pub mod slots;
pub mod workload;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::diff::plan::LiveManifests;
use crate::health::Check;
use crate::router::SlotStats;
use crate::spec::manifest::Manifest;
use crate::spec::model::Service;
use crate::spec::model::service::Strategy;

pub use slots::Slots;
pub use workload::{LiveSlot, Slot, config_digest, digest};

/// What runs of an environment: per service, per slot.
pub type Observed = BTreeMap<String, Slots<LiveSlot>>;

/// A future a target returns (boxed: targets are used as trait objects).
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a target can do, which decides the strategies it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Two versions of a service can run side by side (blue-green, canary).
    pub slots: bool,
    /// Traffic can be split between slots by weight, and answers counted per slot (canary).
    pub weighted_traffic: bool,
    /// One-off jobs can run (migrations).
    pub jobs: bool,
    /// The target counts each slot's answers (plumb's router sees the traffic), so a canary
    /// can be judged by its success rate without Prometheus.
    pub counts_answers: bool,
    /// The target replaces a slot's copies itself within the rolling strategy's surge and
    /// unavailability limits (a Kubernetes Deployment's rolling update): rolling then runs in
    /// the serving slot instead of between two.
    pub in_place: bool,
}

impl Capabilities {
    /// Whether a strategy can run on a target with these capabilities.
    pub fn supports(&self, strategy: &Strategy) -> bool {
        match strategy {
            Strategy::Recreate(_) => true,
            Strategy::Rolling(_) => self.slots || self.in_place,
            Strategy::BlueGreen(_) => self.slots,
            Strategy::Canary(_) => self.slots && self.weighted_traffic,
        }
    }
}

/// Why a target primitive failed.
#[derive(Debug, thiserror::Error)]
#[error("{backend} target: {source}")]
pub struct TargetError {
    /// The backend (`local`…).
    pub backend: &'static str,
    /// What failed.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// The primitives of a target over one environment.
pub trait Target: Send + Sync {
    /// What it can do.
    fn capabilities(&self) -> Capabilities;

    /// Starts `version` of `service` in `slot`, replacing what ran there, without traffic;
    /// `commit` is the commit it comes from (empty when not read from git).
    fn deploy<'a>(
        &'a self,
        service: &'a Service,
        slot: Slot,
        version: &'a str,
        commit: &'a str,
    ) -> Pending<'a, Result<(), TargetError>>;

    /// Changes the number of replicas of `service` running in `slot`, keeping the running ones.
    fn scale<'a>(&'a self, service: &'a Service, slot: Slot, replicas: u32) -> Pending<'a, Result<(), TargetError>>;

    /// A configuration-only change: rewrites the service's configuration file for `slot` and
    /// signals its replicas, or lets them watch; `false` when the service reloads by restart
    /// (the caller rolls it out instead).
    fn reload<'a>(&'a self, service: &'a Service, slot: Slot) -> Pending<'a, Result<bool, TargetError>>;

    /// Sets the traffic weights of `service`'s slots (absent slots get none). An error means
    /// traffic may not have moved: the caller fails its step.
    fn route<'a>(&'a self, service: &'a str, weights: &'a [(Slot, u32)]) -> Pending<'a, Result<(), TargetError>>;

    /// Takes `slot` of `service` out of traffic and stops it.
    fn retire<'a>(&'a self, service: &'a str, slot: Slot) -> Pending<'a, Result<(), TargetError>>;

    /// Removes `slot` of `service` for good (the service left the repository): by default the
    /// same as [`Target::retire`]; a target that keeps retired slots around deletes them.
    fn remove<'a>(&'a self, service: &'a str, slot: Slot) -> Pending<'a, Result<(), TargetError>> {
        self.retire(service, slot)
    }

    /// The health checks of `service`'s `slot`, aimed at that slot alone.
    fn checks<'a>(&'a self, service: &'a str, slot: Slot) -> Pending<'a, Result<Vec<Check>, TargetError>>;

    /// `service`'s answers per slot since the last [`Target::reset_traffic`].
    fn traffic<'a>(&'a self, service: &'a str) -> Pending<'a, BTreeMap<String, SlotStats>>;

    /// Starts `service`'s traffic counters over.
    fn reset_traffic<'a>(&'a self, service: &'a str) -> Pending<'a, ()>;

    /// Runs a one-off job of `service` to completion within `timeout`; the last lines of its
    /// output (a failure's are in its error).
    fn run_job<'a>(
        &'a self,
        service: &'a Service,
        job: &'a str,
        command: &'a [String],
        timeout: Duration,
    ) -> Pending<'a, Result<String, TargetError>>;

    /// Why the containers of `service`'s `slot` were last restarted, in the target's words (a
    /// failed liveness probe), when it tells.
    fn restart_cause<'a>(&'a self, service: &'a str, slot: Slot) -> Pending<'a, Option<String>> {
        let _ = (service, slot);
        Box::pin(async { None })
    }

    /// What runs: per service, per slot; an error when the target cannot be asked (its
    /// engine or API is unreachable) — never an empty answer in its place.
    fn observe(&self) -> Pending<'_, Result<Observed, TargetError>>;

    /// Stops what the agent itself runs for the environment (local replicas, routers); what
    /// an engine runs keeps running for the next agent.
    fn shutdown(&self) -> Pending<'_, ()>;

    /// What the target holds of the environment's plain manifests: each object's digest as
    /// last applied (only the kubernetes target runs any).
    fn observe_manifests(&self) -> Pending<'_, Result<LiveManifests, TargetError>> {
        Box::pin(async { Ok(LiveManifests::new()) })
    }

    /// Applies the plain manifests `apply` and deletes the objects `delete`
    /// (`<apiVersion>/<kind>/<name>`).
    fn apply_manifests<'a>(
        &'a self,
        apply: Vec<&'a Manifest>,
        delete: &'a [String],
    ) -> Pending<'a, Result<(), TargetError>> {
        Box::pin(async move {
            if apply.is_empty() && delete.is_empty() {
                return Ok(());
            }
            Err(TargetError {
                backend: "this",
                source: "plain manifests run on the kubernetes target only".into(),
            })
        })
    }

    /// How many services' rollouts of one attempt may run at once (services that do not depend
    /// on each other); one, the default, takes them one after another.
    fn rollouts_at_once(&self) -> usize {
        1
    }

    /// A bell the target rings when it sees what runs change by itself (a container died):
    /// the environment's worker then looks for drift at once rather than at its next tick.
    fn drift_bell(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model::scalar::Duration as Span;
    use crate::spec::model::service::{Canary, CanaryStep, Recreate, Rolling};

    #[test]
    fn strategies_follow_capabilities() {
        let canary = Strategy::Canary(Canary {
            steps: vec![CanaryStep {
                weight: 10,
                pause: Span::secs(60),
            }],
            success_threshold: 95.0,
            min_requests: 20,
            prometheus: None,
        });
        let rolling = Strategy::Rolling(Rolling {
            batch_size: 1,
            max_unavailable: 0,
            max_surge: 1,
        });
        let everything = Capabilities {
            slots: true,
            weighted_traffic: true,
            jobs: true,
            counts_answers: true,
            in_place: false,
        };
        let no_split = Capabilities {
            weighted_traffic: false,
            ..everything
        };
        assert!(everything.supports(&canary) && !no_split.supports(&canary));
        assert!(no_split.supports(&Strategy::Recreate(Recreate {})));
        assert!(everything.supports(&rolling));
        let one_slot = Capabilities {
            slots: false,
            weighted_traffic: false,
            jobs: false,
            counts_answers: false,
            in_place: true,
        };
        assert!(one_slot.supports(&rolling) && !one_slot.supports(&canary));
    }
}
