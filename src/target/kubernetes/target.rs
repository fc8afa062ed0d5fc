//! The kubernetes runtime as a [`Target`]: its primitives, each failure returned to the rollout.

use std::collections::BTreeMap;
use std::time::Duration;

use super::objects;
use super::runtime::KubernetesRuntime;
use crate::health::Check;
use crate::router::SlotStats;
use crate::spec::manifest::Manifest;
use crate::spec::model::Service;
use crate::target::workload::{LiveSlot, Slot};
use crate::target::{Capabilities, Pending, Slots, Target, TargetError};

fn kube_error(e: impl std::error::Error + Send + Sync + 'static) -> TargetError {
    TargetError {
        backend: "kubernetes",
        source: Box::new(e),
    }
}

/// How many services roll out at once in one attempt (a first sync of many services).
const ROLLOUTS_AT_ONCE: usize = 32;

impl Target for KubernetesRuntime {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            slots: true,
            // Approximated by the replica ratio of the two Deployments behind one Service.
            weighted_traffic: true,
            jobs: true,
            // No router of plumb's sees the answers: a canary is judged by Prometheus.
            counts_answers: false,
            // A Deployment's own rolling update, within the strategy's surge and unavailability.
            in_place: true,
        }
    }

    /// The API server takes many requests at once; each rollout waits mostly for its pods.
    fn rollouts_at_once(&self) -> usize {
        ROLLOUTS_AT_ONCE
    }

    fn deploy<'a>(
        &'a self,
        service: &'a Service,
        slot: Slot,
        version: &'a str,
        commit: &'a str,
    ) -> Pending<'a, Result<(), TargetError>> {
        Box::pin(async move {
            KubernetesRuntime::deploy(self, service, slot, version, commit)
                .await
                .map_err(kube_error)
        })
    }

    fn scale<'a>(&'a self, service: &'a Service, slot: Slot, replicas: u32) -> Pending<'a, Result<(), TargetError>> {
        Box::pin(async move {
            KubernetesRuntime::scale(self, service, slot, replicas)
                .await
                .map_err(kube_error)
        })
    }

    fn reload<'a>(&'a self, _service: &'a Service, _slot: Slot) -> Pending<'a, Result<bool, TargetError>> {
        // A changed ConfigMap reaches running pods only eventually: a change rolls out.
        Box::pin(async { Ok(false) })
    }

    fn route<'a>(&'a self, service: &'a str, weights: &'a [(Slot, u32)]) -> Pending<'a, Result<(), TargetError>> {
        Box::pin(async move {
            KubernetesRuntime::route(self, service, weights)
                .await
                .map_err(kube_error)
        })
    }

    fn retire<'a>(&'a self, service: &'a str, slot: Slot) -> Pending<'a, Result<(), TargetError>> {
        Box::pin(async move { KubernetesRuntime::retire(self, service, slot).await.map_err(kube_error) })
    }

    fn remove<'a>(&'a self, service: &'a str, _slot: Slot) -> Pending<'a, Result<(), TargetError>> {
        Box::pin(async move { KubernetesRuntime::remove(self, service).await.map_err(kube_error) })
    }

    fn checks<'a>(&'a self, _service: &'a str, _slot: Slot) -> Pending<'a, Result<Vec<Check>, TargetError>> {
        // The cluster judges health: a deploy returns only once its replicas are available.
        Box::pin(async { Ok(Vec::new()) })
    }

    fn traffic<'a>(&'a self, _service: &'a str) -> Pending<'a, BTreeMap<String, SlotStats>> {
        // No router sees the answers on this target yet.
        Box::pin(async { BTreeMap::new() })
    }

    fn reset_traffic<'a>(&'a self, _service: &'a str) -> Pending<'a, ()> {
        Box::pin(async {})
    }

    fn run_job<'a>(
        &'a self,
        service: &'a Service,
        job: &'a str,
        command: &'a [String],
        timeout: Duration,
    ) -> Pending<'a, Result<String, TargetError>> {
        Box::pin(async move {
            KubernetesRuntime::run_job(self, service, job, command, timeout)
                .await
                .map_err(kube_error)
        })
    }

    fn restart_cause<'a>(&'a self, service: &'a str, slot: Slot) -> Pending<'a, Option<String>> {
        Box::pin(async move {
            let selector = format!("{}={service},{}={}", objects::SERVICE, objects::SLOT, slot.name());
            KubernetesRuntime::restart_cause(self, &selector).await
        })
    }

    fn observe(&self) -> Pending<'_, Result<BTreeMap<String, Slots<LiveSlot>>, TargetError>> {
        Box::pin(async move { KubernetesRuntime::observe(self).await.map_err(kube_error) })
    }

    fn shutdown(&self) -> Pending<'_, ()> {
        // Everything runs in the cluster: nothing of the agent's own to stop.
        Box::pin(async {})
    }

    fn observe_manifests(&self) -> Pending<'_, Result<BTreeMap<String, String>, TargetError>> {
        Box::pin(async move { KubernetesRuntime::observe_manifests(self).await.map_err(kube_error) })
    }

    fn apply_manifests<'a>(
        &'a self,
        apply: Vec<&'a Manifest>,
        delete: &'a [String],
    ) -> Pending<'a, Result<(), TargetError>> {
        Box::pin(async move {
            KubernetesRuntime::apply_manifests(self, &apply, delete)
                .await
                .map_err(kube_error)
        })
    }

    fn drift_bell(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        Some(self.bell.clone())
    }
}
