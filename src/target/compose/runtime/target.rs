//! The compose runtime as a [`Target`]: the strategies' view of it.

use std::collections::BTreeMap;

use super::ComposeRuntime;
use crate::health::Check;
use crate::router::SlotStats;
use crate::spec::model::Service;
use crate::target::workload::{LiveSlot, Slot};
use crate::target::{Capabilities, Pending, Slots, Target, TargetError};

fn compose_error(e: impl std::error::Error + Send + Sync + 'static) -> TargetError {
    TargetError {
        backend: "compose",
        source: Box::new(e),
    }
}

impl Target for ComposeRuntime {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            slots: true,
            weighted_traffic: true,
            jobs: true,
            // plumb's router (or nginx's access log) sees every answer.
            counts_answers: true,
            in_place: false,
        }
    }

    fn deploy<'a>(
        &'a self,
        service: &'a Service,
        slot: Slot,
        version: &'a str,
        _commit: &'a str,
    ) -> Pending<'a, Result<(), TargetError>> {
        Box::pin(async move {
            ComposeRuntime::deploy(self, service, slot, version)
                .await
                .map_err(compose_error)
        })
    }

    fn scale<'a>(&'a self, service: &'a Service, slot: Slot, replicas: u32) -> Pending<'a, Result<(), TargetError>> {
        Box::pin(async move {
            ComposeRuntime::scale(self, service, slot, replicas)
                .await
                .map_err(compose_error)
        })
    }

    fn reload<'a>(&'a self, service: &'a Service, slot: Slot) -> Pending<'a, Result<bool, TargetError>> {
        Box::pin(async move { ComposeRuntime::reload(self, service, slot).await.map_err(compose_error) })
    }

    fn route<'a>(&'a self, service: &'a str, weights: &'a [(Slot, u32)]) -> Pending<'a, Result<(), TargetError>> {
        Box::pin(async move {
            ComposeRuntime::route(self, service, weights)
                .await
                .map_err(compose_error)
        })
    }

    fn retire<'a>(&'a self, service: &'a str, slot: Slot) -> Pending<'a, Result<(), TargetError>> {
        Box::pin(async move { ComposeRuntime::retire(self, service, slot).await.map_err(compose_error) })
    }

    fn checks<'a>(&'a self, service: &'a str, slot: Slot) -> Pending<'a, Result<Vec<Check>, TargetError>> {
        Box::pin(async move { ComposeRuntime::checks(self, service, slot).await.map_err(compose_error) })
    }

    fn traffic<'a>(&'a self, service: &'a str) -> Pending<'a, BTreeMap<String, SlotStats>> {
        Box::pin(async move {
            if let Some(nginx) = &self.nginx {
                return self.nginx_traffic(nginx, service).await;
            }
            crate::router::total(&self.routers(service).await)
        })
    }

    fn reset_traffic<'a>(&'a self, service: &'a str) -> Pending<'a, ()> {
        Box::pin(async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i32);
            self.counted_since
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(service.to_owned(), now);
            for router in self.routers(service).await {
                router.reset_stats();
            }
        })
    }

    fn run_job<'a>(
        &'a self,
        service: &'a Service,
        job: &'a str,
        command: &'a [String],
        timeout: std::time::Duration,
    ) -> Pending<'a, Result<String, TargetError>> {
        Box::pin(async move {
            ComposeRuntime::run_job(self, service, job, command, timeout)
                .await
                .map_err(compose_error)
        })
    }

    fn observe(&self) -> Pending<'_, Result<BTreeMap<String, Slots<LiveSlot>>, TargetError>> {
        Box::pin(async move { ComposeRuntime::observe(self).await.map_err(compose_error) })
    }

    fn shutdown(&self) -> Pending<'_, ()> {
        Box::pin(ComposeRuntime::shutdown(self))
    }

    fn drift_bell(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        Some(self.bell.clone())
    }
}
