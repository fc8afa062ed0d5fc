//! Comparing desired states: what a change to the repository does to each environment, per
//! service and per field, with what the change means for the running service (a new version
//! rolled out, a configuration reload, a scale); and comparing a desired state with what a
//! target observes, into the plan that makes them agree (`plan`, remembering what it worked out
//! of each shared service: `fingerprint`). No I/O, deterministic order; the one state kept is
//! `fingerprint`'s table, which only saves work.

pub mod fingerprint;
pub mod plan;

use std::collections::BTreeSet;

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::spec::Desired;
use crate::spec::model::NAMED_LISTS;
use crate::spec::model::scalar::{is_encrypted, mask};
use crate::spec::model::service::Reload;

/// What changes in one environment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EnvironmentDiff {
    /// The environment.
    pub environment: String,
    /// Changes to the environment's own settings (target, sync).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<Change>,
    /// Services added, removed or changed, by name.
    pub services: Vec<ServiceDiff>,
}

impl EnvironmentDiff {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty() && self.services.is_empty()
    }
}

/// What changes in one service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceDiff {
    /// The service.
    pub service: String,
    /// What the change does to the running service.
    pub impact: Impact,
    /// Called out because reviewers look for them: the image, the command and the strategy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub highlights: Vec<String>,
    /// Every changed field.
    pub changes: Vec<Change>,
}

/// What a change does to a running service, from the most to the least disruptive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Impact {
    /// The service is deployed where it did not run.
    Create,
    /// The service is removed (or disabled).
    Delete,
    /// A new version is rolled out with the service's strategy.
    Rollout,
    /// Only the configuration changes, and the service reloads it without a restart.
    Reload,
    /// Only the number of copies changes.
    Scale,
    /// Only descriptive fields change (description, labels, the rollout settings themselves).
    Settings,
}

/// One changed field. Encrypted values appear masked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    /// Where, as `config.values.database.pool.max` or `env[NODE_ENV].value`.
    pub path: String,
    /// The value before, absent when added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// The value after, absent when removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// Compares the environments present on either side, in the order of `after` then `before`.
/// An environment present on one side only is compared with an empty one.
pub fn environments(before: &IndexMap<String, Desired>, after: &IndexMap<String, Desired>) -> Vec<EnvironmentDiff> {
    let names: Vec<&String> = after
        .keys()
        .chain(before.keys().filter(|k| !after.contains_key(*k)))
        .collect();
    names
        .into_iter()
        .map(|name| environment(name, before.get(name), after.get(name)))
        .collect()
}

/// Compares one environment's desired states.
pub fn environment(name: &str, before: Option<&Desired>, after: Option<&Desired>) -> EnvironmentDiff {
    let json = |d: Option<&Desired>| d.map(|d| serde_json::to_value(d).expect("desired state serializes"));
    let (before, after) = (json(before), json(after));
    let field = |v: &Option<Value>, key: &str| v.as_ref().and_then(|v| v.get(key)).cloned();
    let mut settings = Vec::new();
    for key in ["target", "sync"] {
        compare(
            key,
            field(&before, key).as_ref(),
            field(&after, key).as_ref(),
            &mut settings,
        );
    }
    let empty = Map::new();
    let services = |v: &Option<Value>| {
        v.as_ref()
            .and_then(|v| v.get("services"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(|| empty.clone())
    };
    let (before_services, after_services) = (services(&before), services(&after));
    let names: BTreeSet<&String> = before_services.keys().chain(after_services.keys()).collect();
    let services = names
        .into_iter()
        .filter_map(|name| service(name, before_services.get(name), after_services.get(name)))
        .collect();
    EnvironmentDiff {
        environment: name.to_owned(),
        settings,
        services,
    }
}

fn service(name: &str, before: Option<&Value>, after: Option<&Value>) -> Option<ServiceDiff> {
    let mut changes = Vec::new();
    compare("", before.map(keyed).as_ref(), after.map(keyed).as_ref(), &mut changes);
    if changes.is_empty() {
        return None;
    }
    let mut highlights = Vec::new();
    for field in ["image", "command"] {
        if let Some(c) = changes.iter().find(|c| c.path == field) {
            highlights.push(format!(
                "{field}: {} → {}",
                show(c.before.as_ref()),
                show(c.after.as_ref())
            ));
        }
    }
    let strategy = |v: Option<&Value>| {
        v.and_then(|v| v.get("strategy"))
            .and_then(Value::as_object)
            .and_then(|m| m.keys().next().cloned())
    };
    match (strategy(before), strategy(after)) {
        (Some(b), Some(a)) if a != b => highlights.push(format!("strategy: {b} → {a}")),
        (Some(s), Some(_)) if changes.iter().any(|c| c.path.starts_with("strategy.")) => {
            highlights.push(format!("strategy: {s} settings change"))
        }
        _ => {}
    }
    let impact = match (before, after) {
        (None, _) => Impact::Create,
        (_, None) => Impact::Delete,
        (Some(_), Some(after)) => impact(&changes, after),
    };
    Some(ServiceDiff {
        service: name.to_owned(),
        impact,
        highlights,
        changes,
    })
}

/// The service fields whose change needs no new processes: they describe the service or how it
/// is rolled out. (Health checks are not among them: a target bakes them into what it runs.)
pub const DESCRIPTIVE: [&str; 7] = [
    "description",
    "labels",
    "strategy",
    "progressDeadline",
    "migration",
    "dependsOn",
    "enabled",
];

/// What changed fields do to a running service.
fn impact(changes: &[Change], after: &Value) -> Impact {
    let top = |c: &Change| c.path.split(['.', '[']).next().unwrap_or_default().to_owned();
    let fields: BTreeSet<String> = changes.iter().map(top).collect();
    let mut impact = Impact::Settings;
    for field in &fields {
        let this = match field.as_str() {
            "replicas" => Impact::Scale,
            "config" => {
                let only_values = changes
                    .iter()
                    .filter(|c| top(c) == "config")
                    .all(|c| c.path.starts_with("config.values"));
                let reload: Option<Reload> = after
                    .pointer("/config/reload")
                    .and_then(|r| serde_json::from_value(r.clone()).ok());
                if only_values && reload.is_some_and(|r| r != Reload::Restart) {
                    Impact::Reload
                } else {
                    Impact::Rollout
                }
            }
            f if DESCRIPTIVE.contains(&f) => Impact::Settings,
            _ => Impact::Rollout,
        };
        impact = impact.min(this);
    }
    impact
}

/// The service with its named lists turned into maps keyed by name, so their items compare
/// by name, not by position.
fn keyed(service: &Value) -> Value {
    let mut service = service.clone();
    if let Value::Object(fields) = &mut service {
        for list in NAMED_LISTS {
            if let Some(Value::Array(items)) = fields.get(*list) {
                let map: Map<String, Value> = items
                    .iter()
                    .map(|item| {
                        (
                            item.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                            item.clone(),
                        )
                    })
                    .collect();
                fields.insert((*list).to_owned(), Value::Object(map));
            }
        }
    }
    service
}

fn compare(path: &str, before: Option<&Value>, after: Option<&Value>, out: &mut Vec<Change>) {
    match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            let keys: Vec<&String> = b.keys().chain(a.keys().filter(|k| !b.contains_key(*k))).collect();
            for key in keys {
                compare(&join(path, key), b.get(key), a.get(key), out);
            }
        }
        (b, a) if b == a => {}
        (b, a) => out.push(Change {
            path: path.to_owned(),
            before: b.map(masked),
            after: a.map(masked),
        }),
    }
}

fn join(path: &str, key: &str) -> String {
    // Named lists sit at the top of a service and were keyed by name (see `keyed`).
    if NAMED_LISTS.contains(&path) {
        format!("{path}[{key}]")
    } else if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn masked(value: &Value) -> Value {
    let mut value = value.clone();
    crate::spec::render::mask_encrypted(&mut value);
    value
}

/// A value in one line.
pub fn show(value: Option<&Value>) -> String {
    match value {
        None => "(none)".into(),
        Some(Value::String(s)) if is_encrypted(s) => mask(s),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}
