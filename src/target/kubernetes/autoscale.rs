//! Autoscaled services: a HorizontalPodAutoscaler `<service>` aimed at the color that serves,
//! moved with it when traffic moves (blue-green, canary), deleted with the service. plumb's
//! applies then leave a Deployment's `spec.replicas` out, so the autoscaler (or a
//! `kubectl scale`) owns it: neither drift nor a conflict. A new color starts with as many
//! replicas as the serving one has, within the declared bounds, so a switch under load does
//! not land on one pod.

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind};

use super::objects::{self, deployment_name};
use super::runtime::{KubernetesError, KubernetesRuntime, ignore_not_found};
use crate::spec::model::Service;
use crate::target::workload::Slot;

/// The versions of the autoscaling API that carry CPU and memory targets, newest first:
/// `v2` from Kubernetes 1.23, `v2beta2` before (and until 1.25).
const VERSIONS: [&str; 2] = ["v2", "v2beta2"];

impl KubernetesRuntime {
    /// The HorizontalPodAutoscalers of the namespace, in the newest version the cluster
    /// serves; `None` when it serves neither.
    async fn autoscaler_api(&self) -> Option<&(Api<DynamicObject>, &'static str)> {
        self.autoscalers
            .get_or_init(|| async {
                for version in VERSIONS {
                    let served = self
                        .client
                        .list_api_group_resources(&format!("autoscaling/{version}"))
                        .await
                        .ok()
                        .is_some_and(|list| list.resources.iter().any(|r| r.name == "horizontalpodautoscalers"));
                    if served {
                        let resource = ApiResource::from_gvk_with_plural(
                            &GroupVersionKind::gvk("autoscaling", version, "HorizontalPodAutoscaler"),
                            "horizontalpodautoscalers",
                        );
                        let api = Api::namespaced_with(self.client.clone(), &self.namespace, &resource);
                        return Some((api, version));
                    }
                }
                None
            })
            .await
            .as_ref()
    }

    /// After `service`'s Deployment of `slot` was applied (`applied`, without replicas):
    /// remembers the service, and scales the Deployment to the replicas it starts with — those
    /// of the other color when it has more (it serves), within the declared bounds.
    pub(super) async fn start_autoscaled(
        &self,
        service: &Service,
        slot: Slot,
        applied: &Deployment,
    ) -> Result<(), KubernetesError> {
        let Some(bounds) = &service.autoscaling else {
            return Ok(());
        };
        let name = service.name.as_str();
        self.autoscaled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), service.clone());
        let current = applied.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let other = self
            .deployments()
            .get_opt(&deployment_name(name, slot.other()))
            .await
            .map_err(super::runtime::api_error(format!(
                "reading deployment `{}`",
                deployment_name(name, slot.other())
            )))?
            .and_then(|d| d.spec?.replicas)
            .unwrap_or(0);
        let start = current.max(other).max(0) as u32;
        let start = start.clamp(bounds.min_replicas, bounds.max_replicas.max(bounds.min_replicas));
        if i64::from(start) != i64::from(current) {
            self.set_replicas(&deployment_name(name, slot), start).await?;
        }
        Ok(())
    }

    /// Aims `service`'s autoscaler at `slot`, when this agent deployed it autoscaled.
    pub(super) async fn autoscale_serving(&self, service: &str, slot: Slot) -> Result<(), KubernetesError> {
        let declared = self
            .autoscaled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .cloned();
        let Some(declared) = declared else {
            return Ok(());
        };
        let Some((api, version)) = self.autoscaler_api().await else {
            return Err(KubernetesError::Config(format!(
                "`{service}` is autoscaled, and the cluster serves no HorizontalPodAutoscaler API (autoscaling/v2 or v2beta2)"
            )));
        };
        let api_version = format!("autoscaling/{version}");
        let Some(document) = objects::autoscaler(&self.environment, &declared, slot, &api_version) else {
            return Ok(());
        };
        let what = format!("applying HorizontalPodAutoscaler `{service}`");
        self.apply_once(api, service, &document, &what).await?;
        Ok(())
    }

    /// Deletes `service`'s autoscaler, if the cluster has the API and the object.
    pub(super) async fn remove_autoscaler(&self, service: &str) -> Result<(), KubernetesError> {
        self.autoscaled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(service);
        let Some((api, _)) = self.autoscaler_api().await else {
            return Ok(());
        };
        let deleted = api.delete(service, &DeleteParams::background()).await;
        ignore_not_found(deleted, format!("deleting HorizontalPodAutoscaler `{service}`"))
    }
}
