//! How plumb writes: server-side apply under field manager `plumb`, a conflict with plumb's own
//! earlier updates settled by forcing and one with another manager only when the environment
//! says so; scales and routes as updates by the same manager; every write told to the watches,
//! so an observation waits for it.

use kube::Api;
use kube::api::{Patch, PatchParams};

use super::runtime::{KubernetesError, KubernetesRuntime, MANAGER, api_error};
use super::watch::Kind;

/// The field managers an API server's conflict message names (`conflict with "kubectl-edit"
/// using apps/v1: .spec.replicas`).
fn conflicting_managers(message: &str) -> Vec<&str> {
    message
        .split("with \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect()
}

impl KubernetesRuntime {
    /// Tells the watches plumb wrote `name` of `kind`, now at resource version `written`, or
    /// deleted it (`None`).
    pub(super) fn wrote(&self, kind: &str, name: &str, written: Option<&str>) {
        if let (Some(watched), Some(kind)) = (&self.watched, watch_kind(kind)) {
            watched.wrote(kind, name, written);
        }
    }

    /// Applies `document` as object `name` by server-side apply under plumb's field manager.
    /// A conflict with plumb's own earlier updates (a scale, a route) is settled by forcing;
    /// one with another manager only when the environment says so, else it is the error.
    pub(super) async fn apply<K>(
        &self,
        api: &Api<K>,
        name: &str,
        document: serde_json::Value,
        what: &str,
    ) -> Result<K, KubernetesError>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let applied = self.apply_once(api, name, &document, what).await?;
        self.wrote(&K::kind(&()), name, applied.meta().resource_version.as_deref());
        Ok(applied)
    }

    pub(super) async fn apply_once<K>(
        &self,
        api: &Api<K>,
        name: &str,
        document: &serde_json::Value,
        what: &str,
    ) -> Result<K, KubernetesError>
    where
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let params = PatchParams::apply(MANAGER);
        match api.patch(name, &params, &Patch::Apply(document)).await {
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let managers = conflicting_managers(&status.message);
                let own = managers.iter().all(|m| *m == MANAGER);
                if !own && !self.force {
                    return Err(KubernetesError::Conflict {
                        what: what.to_owned(),
                        message: status.message,
                    });
                }
                if !own {
                    tracing::warn!(environment = %self.environment, object = what, managers = ?managers, "Taking fields over from other managers (force).");
                }
                api.patch(name, &params.force(), &Patch::Apply(document))
                    .await
                    .map_err(api_error(what))
            }
            done => done.map_err(api_error(what)),
        }
    }

    /// Patch parameters for plumb's updates that are not applies (scale, route), so the
    /// fields they set are known as plumb's.
    pub(super) fn update() -> PatchParams {
        PatchParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PatchParams::default()
        }
    }
}

/// The watched kind an object kind (`Deployment`) is, if it is one.
pub(super) fn watch_kind(kind: &str) -> Option<Kind> {
    match kind {
        "Deployment" => Some(Kind::Deployment),
        "Service" => Some(Kind::Service),
        "ConfigMap" => Some(Kind::ConfigMap),
        "Secret" => Some(Kind::Secret),
        _ => None,
    }
}
