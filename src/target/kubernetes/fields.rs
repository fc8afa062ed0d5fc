//! Field ownership, from an object's `managedFields`: the fields plumb applied, and which of
//! them another field manager has changed since (`kubectl set image`, `kubectl edit`). A field
//! another manager only added, or a server default, is not plumb's and never counts.
//!
//! The watches keep each Deployment's managed fields [compacted](compact): every entry's field
//! set as its paths, one per line — a string clones in one allocation, where the nested sets
//! the server sends made a drift check of 1,000 Deployments twice as slow.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::Value;

use super::runtime::MANAGER;

/// The fields plumb's apply owns in `deployment` now, as paths (`.spec.replicas`).
pub fn applied_by_plumb(deployment: &Deployment) -> BTreeSet<String> {
    let mut applied = BTreeSet::new();
    for (manager, operation, fields) in entries(deployment) {
        if manager == MANAGER && operation == "Apply" {
            each_leaf(fields, |field| {
                applied.insert(field.to_owned());
            });
        }
    }
    applied
}

/// The fields of `applied` (what plumb's last apply owned) another manager owns in
/// `deployment` now, each as `<field> (by <manager>)`.
pub fn taken(deployment: &Deployment, applied: &BTreeSet<String>) -> Vec<String> {
    let mut taken = Vec::new();
    for (manager, _, fields) in entries(deployment) {
        if manager != MANAGER {
            each_leaf(fields, |field| {
                if applied.contains(field) {
                    taken.push(format!("{field} (by {manager})"));
                }
            });
        }
    }
    taken.sort();
    taken.dedup();
    taken
}

/// `deployment`'s managed fields with each entry's field set as its paths, one per line; the
/// entries of the status alone (the controller's) are dropped, as nothing plumb applies is there.
pub fn compact(deployment: &mut Deployment) {
    let Some(entries) = deployment.metadata.managed_fields.as_mut() else {
        return;
    };
    entries.retain_mut(|entry| {
        let Some(fields) = entry.fields_v1.as_mut() else {
            return false;
        };
        let mut paths = Vec::new();
        each_leaf(&fields.0, |field| paths.push(field.to_owned()));
        entry.time = None;
        fields.0 = Value::String(paths.join("\n"));
        !paths.iter().all(|p| p.starts_with(".status"))
    });
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

/// Calls `each` with every field a `fieldsV1` set holds, as a path: `f:spec` → `.spec`,
/// `k:{"name":"web"}` → `[name="web"]`, `v:"x"` → `[="x"]`, `i:0` → `[0]`. A member's own marker
/// (`.`) is left out: it says the member exists, not what it holds. A [compacted](compact) set
/// is its lines.
fn each_leaf(fields: &Value, mut each: impl FnMut(&str)) {
    match fields {
        Value::String(compacted) => compacted.lines().for_each(each),
        _ => walk(fields, String::new(), &mut each),
    }
}

fn walk(fields: &Value, at: String, each: &mut impl FnMut(&str)) {
    let Some(map) = fields.as_object() else {
        return;
    };
    if map.is_empty() || map.keys().all(|k| k == ".") {
        if !at.is_empty() {
            each(&at);
        }
        return;
    }
    for (key, inner) in map {
        if key == "." {
            continue;
        }
        walk(inner, format!("{at}{}", step(key)), each);
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
        let expected = [".spec.template.spec.containers[name=\"web\"].image (by kubectl-set)"];
        assert_eq!(taken(&now, &record), expected);
        // Nothing taken: nothing reported.
        assert!(taken(&applied, &record).is_empty());
        // Compacted as the watches keep it, the same answers; the controller's status-only
        // entry is gone.
        now.metadata.managed_fields.as_mut().unwrap().push(entry(
            "kube-controller-manager",
            "Update",
            json!({"f:status": {"f:conditions": {}, "f:replicas": {}}}),
        ));
        compact(&mut now);
        compact(&mut applied);
        assert_eq!(now.metadata.managed_fields.as_ref().unwrap().len(), 5);
        assert_eq!(taken(&now, &record), expected);
        assert_eq!(applied_by_plumb(&applied), record);
    }
}
