//! Field ownership, from an object's `managedFields`: the fields plumb applied, and which of
//! them another field manager has changed since (`kubectl set image`, `kubectl edit`). A field
//! another manager only added, or a server default, is not plumb's and never counts.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::Value;

use super::runtime::MANAGER;

/// The fields plumb's apply owns in `deployment` now, as paths (`.spec.replicas`).
pub fn applied_by_plumb(deployment: &Deployment) -> BTreeSet<String> {
    entries(deployment)
        .filter(|(manager, operation, _)| *manager == MANAGER && *operation == "Apply")
        .flat_map(|(_, _, fields)| leaves(fields))
        .collect()
}

/// The fields of `applied` (what plumb's last apply owned) another manager owns in
/// `deployment` now, each as `<field> (by <manager>)`.
pub fn taken(deployment: &Deployment, applied: &BTreeSet<String>) -> Vec<String> {
    let mut taken: Vec<String> = entries(deployment)
        .filter(|(manager, _, _)| *manager != MANAGER)
        .flat_map(|(manager, _, fields)| {
            leaves(fields)
                .into_iter()
                .filter(|field| applied.contains(field))
                .map(move |field| format!("{field} (by {manager})"))
        })
        .collect();
    taken.sort();
    taken.dedup();
    taken
}

/// Each managed-fields entry of `deployment`: its manager, operation and field set.
fn entries(deployment: &Deployment) -> impl Iterator<Item = (&str, &str, &Value)> {
    deployment.metadata.managed_fields.iter().flatten().filter_map(|entry| {
        Some((
            entry.manager.as_deref()?,
            entry.operation.as_deref().unwrap_or_default(),
            &entry.fields_v1.as_ref()?.0,
        ))
    })
}

/// The fields a `fieldsV1` set holds, as paths: `f:spec` → `.spec`, `k:{"name":"web"}` →
/// `[name="web"]`, `v:"x"` → `[="x"]`, `i:0` → `[0]`. A member's own marker (`.`) is left out:
/// it says the member exists, not what it holds.
fn leaves(fields: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk(fields, String::new(), &mut out);
    out
}

fn walk(fields: &Value, at: String, out: &mut BTreeSet<String>) {
    let Some(map) = fields.as_object() else {
        return;
    };
    if map.is_empty() || map.keys().all(|k| k == ".") {
        if !at.is_empty() {
            out.insert(at);
        }
        return;
    }
    for (key, inner) in map {
        if key == "." {
            continue;
        }
        walk(inner, format!("{at}{}", step(key)), out);
    }
}

fn step(key: &str) -> String {
    if let Some(name) = key.strip_prefix("f:") {
        return format!(".{name}");
    }
    if let Some(json) = key.strip_prefix("k:") {
        let keys = serde_json::from_str::<serde_json::Map<String, Value>>(json)
            .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
            .unwrap_or_else(|_| json.to_owned());
        return format!("[{keys}]");
    }
    if let Some(value) = key.strip_prefix("v:") {
        return format!("[={value}]");
    }
    if let Some(index) = key.strip_prefix("i:") {
        return format!("[{index}]");
    }
    format!("[{key}]")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use serde_json::json;

    use super::*;

    fn entry(manager: &str, operation: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.to_owned()),
            operation: Some(operation.to_owned()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    fn container(fields: Value) -> Value {
        json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": fields}}}}})
    }

    #[test]
    fn a_field_plumb_applied_and_another_manager_changed_is_taken() {
        let mut applied = Deployment::default();
        applied.metadata.managed_fields = Some(vec![entry(
            "plumb",
            "Apply",
            json!({
                "f:metadata": {"f:annotations": {".": {}, "f:plumb.dev/version": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}}},
                },
            }),
        )]);
        let record = applied_by_plumb(&applied);
        assert!(
            record.contains(".spec.template.spec.containers[name=\"web\"].image"),
            "{record:?}"
        );
        assert!(record.contains(".metadata.annotations.plumb.dev/version"), "{record:?}");

        // Later: kubectl took the image; the controller wrote status and its annotation; plumb
        // itself scaled; another team added a variable of its own.
        let mut now = Deployment::default();
        now.metadata.managed_fields = Some(vec![
            entry("plumb", "Apply", container(json!({".": {}, "f:name": {}}))),
            entry("plumb", "Update", json!({"f:spec": {"f:replicas": {}}})),
            entry("kubectl-set", "Update", container(json!({"f:image": {}}))),
            entry(
                "kube-controller-manager",
                "Update",
                json!({"f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}}, "f:status": {"f:replicas": {}}}),
            ),
            entry(
                "kubectl-edit",
                "Update",
                container(json!({"f:env": {"k:{\"name\":\"EXTRA\"}": {".": {}, "f:name": {}, "f:value": {}}}})),
            ),
        ]);
        assert_eq!(
            taken(&now, &record),
            [".spec.template.spec.containers[name=\"web\"].image (by kubectl-set)"]
        );
        // Nothing taken: nothing reported.
        assert!(taken(&applied, &record).is_empty());
    }
}
