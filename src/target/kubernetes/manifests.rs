//! An environment's plain manifests on the cluster: each object applied as written, by
//! server-side apply under plumb's field manager, in the environment's namespace, labelled with
//! the environment and annotated with the digest of what the repository declares. An inventory
//! (ConfigMap `plumb-manifests`) lists every object plumb applied, so one the repository stops
//! declaring is found — and deleted when the environment prunes — whatever its kind.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
use kube::core::TypeMeta;
use kube::discovery::Scope;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::objects::ENVIRONMENT;
use super::runtime::{FRESH_WITHIN, KubernetesError, KubernetesRuntime, api_error, ignore_not_found};
use crate::spec::manifest::Manifest;

/// The ConfigMap listing the objects plumb applied from manifests.
const INVENTORY: &str = "plumb-manifests";
/// The annotation holding the digest of the object as the repository declares it.
const DIGEST: &str = "plumb.dev/digest";

impl KubernetesRuntime {
    /// The API resource serving `api_version`/`kind`, and whether it is namespaced.
    async fn resource(&self, api_version: &str, kind: &str) -> Result<(ApiResource, bool), KubernetesError> {
        let key = format!("{api_version}/{kind}");
        if let Some(found) = self.kinds.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(found.clone());
        }
        let meta = TypeMeta {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        };
        let unknown = |reason: String| KubernetesError::Config(format!("`{key}`: {reason}"));
        let gvk = GroupVersionKind::try_from(&meta).map_err(|e| unknown(e.to_string()))?;
        let (resource, capabilities) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| unknown(format!("the cluster does not serve it: {e}")))?;
        let found = (resource, capabilities.scope == Scope::Namespaced);
        self.kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, found.clone());
        Ok(found)
    }

    fn dynamic(&self, resource: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, resource)
    }

    /// The objects the inventory lists — read from the watches when they are current, so an
    /// environment without manifests costs no request.
    async fn inventory(&self) -> Result<BTreeSet<String>, KubernetesError> {
        let cached = match &self.watched {
            Some(watched) => watched.config_map(INVENTORY, FRESH_WITHIN).await,
            None => None,
        };
        let map = match cached {
            Some(map) => map,
            None => self
                .config_maps()
                .get_opt(INVENTORY)
                .await
                .map_err(api_error(format!("reading config map `{INVENTORY}`")))?,
        };
        Ok(map
            .and_then(|m| m.data?.remove("objects"))
            .map(|text| text.lines().map(str::to_owned).collect())
            .unwrap_or_default())
    }

    async fn save_inventory(&self, objects: &BTreeSet<String>) -> Result<(), KubernetesError> {
        let text: String = objects.iter().map(|o| format!("{o}\n")).collect();
        let document = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": INVENTORY,
                "labels": {ENVIRONMENT: self.environment, "app.kubernetes.io/managed-by": "plumb"},
            },
            "data": {"objects": text},
        });
        // Labelled with the environment, so the watches hold it; applied as a recorded write, so
        // a read waits for it.
        let what = format!("applying config map `{INVENTORY}`");
        self.apply(&self.config_maps(), INVENTORY, document, &what)
            .await
            .map(|_: ConfigMap| ())
    }

    /// The objects of the inventory that exist, with the digest they were applied with.
    pub async fn observe_manifests(&self) -> Result<BTreeMap<String, String>, KubernetesError> {
        let mut live = BTreeMap::new();
        for object in self.inventory().await? {
            let Some((api_version, kind, name)) = Manifest::identity(&object) else {
                continue;
            };
            let (resource, _) = self.resource(api_version, kind).await?;
            let found = self
                .dynamic(&resource)
                .get_opt(name)
                .await
                .map_err(api_error(format!("reading `{object}`")))?;
            if let Some(found) = found {
                let digest = found.annotations().get(DIGEST).cloned().unwrap_or_default();
                live.insert(object, digest);
            }
        }
        Ok(live)
    }

    /// Applies `apply` and deletes `delete`. The inventory lists an object before it is applied
    /// and after it is deleted, so none is ever lost from sight.
    pub async fn apply_manifests(&self, apply: &[&Manifest], delete: &[String]) -> Result<(), KubernetesError> {
        let mut inventory = self.inventory().await?;
        let before = inventory.len();
        inventory.extend(apply.iter().map(|m| m.object.clone()));
        if inventory.len() != before {
            self.save_inventory(&inventory).await?;
        }
        for manifest in apply {
            let Some((api_version, kind, name)) = Manifest::identity(&manifest.object) else {
                continue;
            };
            let place = format!("{}:{}", manifest.file, manifest.line);
            let (resource, namespaced) = self.resource(api_version, kind).await?;
            if !namespaced {
                return Err(KubernetesError::Config(format!(
                    "{place}: `{kind}/{name}` is cluster-scoped; an environment's manifests live in its namespace"
                )));
            }
            let mut document = manifest.document.clone();
            document["metadata"]["namespace"] = json!(self.namespace);
            document["metadata"]["labels"][ENVIRONMENT] = json!(self.environment);
            document["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("plumb");
            document["metadata"]["annotations"][DIGEST] = json!(manifest.digest);
            let what = format!("applying `{}` ({place})", manifest.object);
            let _: DynamicObject = self
                .apply_once(&self.dynamic(&resource), name, &document, &what)
                .await?;
        }
        for object in delete {
            if let Some((api_version, kind, name)) = Manifest::identity(object) {
                let (resource, _) = self.resource(api_version, kind).await?;
                let deleted = self.dynamic(&resource).delete(name, &DeleteParams::background()).await;
                ignore_not_found(deleted, format!("deleting `{object}`"))?;
            }
            inventory.remove(object);
        }
        if !delete.is_empty() {
            self.save_inventory(&inventory).await?;
        }
        Ok(())
    }
}
