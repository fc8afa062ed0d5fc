//! The target as an environment's worker drives it, watched for the status: the traffic
//! weights each `route` sets and what each slot answered as a canary's analysis reads it are
//! published as they happen, so a rollout's progress shows between its steps (the dashboard
//! follows it live). Every call passes through to the target unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::environment::Board;
use crate::diff::plan::LiveManifests;
use crate::health::Check;
use crate::router::SlotStats;
use crate::spec::manifest::Manifest;
use crate::spec::model::Service;
use crate::target::{Capabilities, Observed, Pending, Slot, Target, TargetError};

/// A service's traffic as the running attempt set and read it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    /// The weights the last `route` set, by slot.
    pub weights: Vec<(Slot, u32)>,
    /// What each slot answered since the counters last started over (a canary's step), as
    /// last read.
    pub answers: BTreeMap<String, SlotStats>,
}

/// `inner`, publishing the traffic it is told and reads into environment `env`'s status.
pub struct Watched {
    inner: Arc<dyn Target>,
    board: Board,
    env: String,
}

impl Watched {
    /// Watches `inner` for environment `env`, whose status is on `board`.
    pub fn new(inner: Arc<dyn Target>, board: Board, env: &str) -> Watched {
        Watched {
            inner,
            board,
            env: env.to_owned(),
        }
    }

    fn note(&self, service: &str, update: impl FnOnce(&mut Traffic)) {
        let mut board = self.board.write().unwrap_or_else(|e| e.into_inner());
        let status = board.entry(self.env.clone()).or_default();
        update(status.traffic.entry(service.to_owned()).or_default());
    }
}

impl Target for Watched {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn deploy<'a>(
        &'a self,
        service: &'a Service,
        slot: Slot,
        version: &'a str,
        commit: &'a str,
    ) -> Pending<'a, Result<(), TargetError>> {
        self.inner.deploy(service, slot, version, commit)
    }

    fn scale<'a>(&'a self, service: &'a Service, slot: Slot, replicas: u32) -> Pending<'a, Result<(), TargetError>> {
        self.inner.scale(service, slot, replicas)
    }

    fn reload<'a>(&'a self, service: &'a Service, slot: Slot) -> Pending<'a, Result<bool, TargetError>> {
        self.inner.reload(service, slot)
    }

    fn route<'a>(&'a self, service: &'a str, weights: &'a [(Slot, u32)]) -> Pending<'a, Result<(), TargetError>> {
        Box::pin(async move {
            let routed = self.inner.route(service, weights).await;
            if routed.is_ok() {
                self.note(service, |t| t.weights = weights.to_vec());
            }
            routed
        })
    }

    fn retire<'a>(&'a self, service: &'a str, slot: Slot) -> Pending<'a, Result<(), TargetError>> {
        self.inner.retire(service, slot)
    }

    fn remove<'a>(&'a self, service: &'a str, slot: Slot) -> Pending<'a, Result<(), TargetError>> {
        self.inner.remove(service, slot)
    }

    fn checks<'a>(&'a self, service: &'a str, slot: Slot) -> Pending<'a, Result<Vec<Check>, TargetError>> {
        self.inner.checks(service, slot)
    }

    fn traffic<'a>(&'a self, service: &'a str) -> Pending<'a, BTreeMap<String, SlotStats>> {
        Box::pin(async move {
            let answers = self.inner.traffic(service).await;
            self.note(service, |t| t.answers.clone_from(&answers));
            answers
        })
    }

    fn reset_traffic<'a>(&'a self, service: &'a str) -> Pending<'a, ()> {
        Box::pin(async move {
            self.inner.reset_traffic(service).await;
            self.note(service, |t| t.answers.clear());
        })
    }

    fn run_job<'a>(
        &'a self,
        service: &'a Service,
        job: &'a str,
        command: &'a [String],
        timeout: Duration,
    ) -> Pending<'a, Result<String, TargetError>> {
        self.inner.run_job(service, job, command, timeout)
    }

    fn restart_cause<'a>(&'a self, service: &'a str, slot: Slot) -> Pending<'a, Option<String>> {
        self.inner.restart_cause(service, slot)
    }

    fn observe(&self) -> Pending<'_, Result<Observed, TargetError>> {
        self.inner.observe()
    }

    fn shutdown(&self) -> Pending<'_, ()> {
        self.inner.shutdown()
    }

    fn observe_manifests(&self) -> Pending<'_, Result<LiveManifests, TargetError>> {
        self.inner.observe_manifests()
    }

    fn apply_manifests<'a>(
        &'a self,
        apply: Vec<&'a Manifest>,
        delete: &'a [String],
    ) -> Pending<'a, Result<(), TargetError>> {
        self.inner.apply_manifests(apply, delete)
    }

    fn rollouts_at_once(&self) -> usize {
        self.inner.rollouts_at_once()
    }

    fn drift_bell(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.inner.drift_bell()
    }
}
