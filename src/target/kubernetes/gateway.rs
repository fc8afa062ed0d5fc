//! Routing through a Gateway API Gateway: each slot of a service behind its own Service, and an
//! HTTPRoute `<service>` for `<service>.<domain>` whose backends carry the exact weights.

use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch};

use super::objects::{self, deployment_name};
use super::runtime::{KubernetesError, KubernetesRuntime, ignore_not_found};
use crate::spec::model::Service;
use crate::target::workload::Slot;

/// The API group and version of the Gateway API's HTTPRoutes.
const ROUTES_API: &str = "gateway.networking.k8s.io/v1";

impl KubernetesRuntime {
    /// The HTTPRoutes of the environment's namespace; an error when the cluster does not serve
    /// the Gateway API.
    pub(super) async fn routes(&self, server: &str) -> Result<Api<DynamicObject>, KubernetesError> {
        let served = self
            .client
            .list_api_group_resources(ROUTES_API)
            .await
            .ok()
            .is_some_and(|list| list.resources.iter().any(|r| r.name == "httproutes"));
        if !served {
            return Err(KubernetesError::Config(format!(
                "the environment routes through a Gateway, but {server} does not serve the Gateway API ({ROUTES_API} HTTPRoute)"
            )));
        }
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
            "httproutes",
        );
        Ok(Api::namespaced_with(self.client.clone(), &self.namespace, &resource))
    }

    /// Applies `service`'s Service of `slot` and its HTTPRoute (with the weights last routed),
    /// when the environment routes through a Gateway.
    pub(super) async fn apply_route(
        &self,
        service: &Service,
        slot: Slot,
        weights: &[(Slot, u32)],
    ) -> Result<(), KubernetesError> {
        let (Some((gateway, routes)), Some(port)) = (&self.gateway, service.ports.first()) else {
            return Ok(());
        };
        let name = deployment_name(service.name.as_str(), slot);
        let document = objects::slot_service(&self.environment, service, slot);
        self.apply(&self.services(), &name, document, &format!("applying service `{name}`"))
            .await?;
        let name = service.name.as_str();
        let document = objects::http_route(&self.environment, name, port.port, gateway, weights);
        self.apply_once(routes, name, &document, &format!("applying HTTPRoute `{name}`"))
            .await?;
        Ok(())
    }

    /// Sets the weights of `service`'s HTTPRoute, to its slots' Services on `port`.
    pub(super) async fn weigh_route(
        &self,
        service: &str,
        port: i32,
        weights: &[(Slot, u32)],
    ) -> Result<(), KubernetesError> {
        let Some((_, routes)) = &self.gateway else {
            return Ok(());
        };
        let backends = objects::backend_refs(service, port as u16, weights);
        let patch = serde_json::json!({"spec": {"rules": [{"backendRefs": backends}]}});
        let weighed = routes
            .patch(service, &KubernetesRuntime::update(), &Patch::Merge(patch))
            .await;
        ignore_not_found(weighed, format!("weighing HTTPRoute `{service}`"))
    }

    /// Deletes `service`'s HTTPRoute and its slots' Services.
    pub(super) async fn remove_route(&self, service: &str) -> Result<(), KubernetesError> {
        let Some((_, routes)) = &self.gateway else {
            return Ok(());
        };
        for slot in [Slot::Blue, Slot::Green] {
            let name = deployment_name(service, slot);
            let deleted = self.services().delete(&name, &DeleteParams::background()).await;
            ignore_not_found(deleted, format!("deleting service `{name}`"))?;
            self.wrote("Service", &name, None);
        }
        let deleted = routes.delete(service, &DeleteParams::background()).await;
        ignore_not_found(deleted, format!("deleting HTTPRoute `{service}`"))
    }
}
