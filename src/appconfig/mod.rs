//! The configuration a service reads (`config.values`, rendered for its environment), as the
//! agent serves it over the API: encrypted values masked (`***`) but to the service's own read
//! token ([`token`]), a part of it by path (`database.pool`, `hosts.0`), an entity tag for
//! conditional reads, and the changes between two applied renderings — one per changed leaf or
//! subtree — that the event stream tells.

pub mod token;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::spec::Desired;
use crate::spec::model::Service;
use crate::spec::model::scalar::is_encrypted;

/// An environment's services' configurations at its rollback point, as served.
#[derive(Clone, Debug, Default)]
pub struct Served {
    /// The rollback point.
    pub commit: String,
    /// Each service's configuration, masked (`{}` for one that declares none).
    pub services: BTreeMap<String, Value>,
    /// Each service's configuration in clear, for its own read token.
    pub clear: BTreeMap<String, Clear>,
}

/// A configuration with its decrypted values: never in a `Debug` output.
#[derive(Clone, PartialEq)]
pub struct Clear(Value);

impl Clear {
    /// The configuration.
    pub fn value(&self) -> &Value {
        &self.0
    }
}

impl std::fmt::Debug for Clear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clear(***)")
    }
}

impl Served {
    /// What `desired`, applied as `commit`, serves.
    pub fn of(commit: &str, desired: &Desired) -> Served {
        let empty = || Value::Object(Map::new());
        let mut served = Served {
            commit: commit.to_owned(),
            ..Served::default()
        };
        for (name, service) in &desired.services {
            let name = name.as_str().to_owned();
            served
                .services
                .insert(name.clone(), masked(service).unwrap_or_else(empty));
            served.clear.insert(name, Clear(clear(service).unwrap_or_else(empty)));
        }
        served
    }
}

/// What changed in each service's configuration from `before` to `after`, by service.
pub fn environment_changes(before: &Desired, after: &Desired) -> Vec<(String, Change)> {
    let names: BTreeSet<&str> = before
        .services
        .keys()
        .chain(after.services.keys())
        .map(|n| n.as_str())
        .collect();
    let mut found = Vec::new();
    for name in names {
        for change in changes(service(before, name), service(after, name)) {
            found.push((name.to_owned(), change));
        }
    }
    found
}

fn service<'a>(desired: &'a Desired, name: &str) -> Option<&'a Service> {
    desired
        .services
        .iter()
        .find_map(|(n, s)| (n.as_str() == name).then_some(&**s))
}

/// What stands for an encrypted value in everything served.
pub const MASK: &str = "***";

/// One change of a service's configuration between two applied commits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Where: keys joined by dots, array items by index (`""` for the whole configuration).
    pub path: String,
    /// The value before (`null` when it did not exist), encrypted values masked.
    pub old_value: Value,
    /// The value after (`null` when it no longer exists), encrypted values masked.
    pub new_value: Value,
}

/// `service`'s configuration with every encrypted value masked; `None` when it declares none.
pub fn masked(service: &Service) -> Option<Value> {
    let config = service.config.as_ref()?;
    let mut values = Value::Object(config.values.clone());
    mask(&mut values);
    Some(values)
}

fn mask(value: &mut Value) {
    match value {
        Value::String(s) if is_encrypted(s) => *s = MASK.to_owned(),
        Value::Object(map) => map.values_mut().for_each(mask),
        Value::Array(items) => items.iter_mut().for_each(mask),
        _ => {}
    }
}

/// `service`'s configuration with its encrypted values opened; `None` when it declares none
/// (or a value was not opened, which rendering does not let through).
pub fn clear(service: &Service) -> Option<Value> {
    let config = service.config.as_ref()?;
    let mut values = Value::Object(config.values.clone());
    service.opened.open_in(&mut values, "config.values").ok()?;
    Some(values)
}

/// The part of `value` at `path` (keys joined by dots, array items by index; `""` for all).
pub fn at_path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(value);
    }
    path.split('.').try_fold(value, |value, key| match value {
        Value::Object(map) => map.get(key),
        Value::Array(items) => items.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// The entity tag of `value` served at `commit`: the commit and a digest of the content.
pub fn etag(commit: &str, value: &Value) -> String {
    let digest = crate::target::workload::digest(value.to_string().as_bytes());
    format!("\"{}-{digest}\"", &commit[..commit.len().min(12)])
}

/// What changed in a service's configuration from `old` to `new` (either absent: the service,
/// or its configuration, did not exist). Compared on the clear values, so a re-sealed value
/// that says the same is no change and a changed secret is one; told masked.
pub fn changes(old: Option<&Service>, new: Option<&Service>) -> Vec<Change> {
    let empty = Value::Object(Map::new());
    let (old_clear, new_clear) = (old.and_then(clear), new.and_then(clear));
    let (old_masked, new_masked) = (old.and_then(masked), new.and_then(masked));
    let mut found = Vec::new();
    walk(
        old_clear.as_ref().unwrap_or(&empty),
        new_clear.as_ref().unwrap_or(&empty),
        old_masked.as_ref().unwrap_or(&empty),
        new_masked.as_ref().unwrap_or(&empty),
        "",
        &mut found,
    );
    found
}

/// Compares `old` and `new` at `path`: two objects key by key, anything else as a whole.
fn walk(old: &Value, new: &Value, old_told: &Value, new_told: &Value, path: &str, found: &mut Vec<Change>) {
    if old == new {
        return;
    }
    if let (Value::Object(before), Value::Object(after)) = (old, new) {
        let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        for key in keys {
            let here = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let (b, a) = (before.get(key), after.get(key));
            let (bt, at) = (old_told.get(key), new_told.get(key));
            match (b, a) {
                (Some(b), Some(a)) => walk(
                    b,
                    a,
                    bt.unwrap_or(&Value::Null),
                    at.unwrap_or(&Value::Null),
                    &here,
                    found,
                ),
                _ => found.push(Change {
                    path: here,
                    old_value: bt.cloned().unwrap_or(Value::Null),
                    new_value: at.cloned().unwrap_or(Value::Null),
                }),
            }
        }
        return;
    }
    found.push(Change {
        path: path.to_owned(),
        old_value: old_told.clone(),
        new_value: new_told.clone(),
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parts_are_found_by_dotted_paths() {
        let value = json!({"database": {"pool": 10, "hosts": ["a", "b"]}});
        assert_eq!(at_path(&value, "database.pool"), Some(&json!(10)));
        assert_eq!(at_path(&value, "database.hosts.1"), Some(&json!("b")));
        assert_eq!(at_path(&value, ""), Some(&value));
        assert_eq!(at_path(&value, "database.port"), None);
        assert_eq!(at_path(&value, "database.pool.size"), None);
    }

    #[test]
    fn changes_are_leaves_or_whole_subtrees_masked_where_encrypted() {
        let (old, new) = (
            json!({"database": {"pool": 10, "password": "s1"}, "feature": {"a": true}, "gone": 1}),
            json!({"database": {"pool": 20, "password": "s2"}, "feature": {"a": true}, "added": {"x": 1}}),
        );
        let (old_told, new_told) = (
            json!({"database": {"pool": 10, "password": MASK}, "feature": {"a": true}, "gone": 1}),
            json!({"database": {"pool": 20, "password": MASK}, "feature": {"a": true}, "added": {"x": 1}}),
        );
        let mut found = Vec::new();
        walk(&old, &new, &old_told, &new_told, "", &mut found);
        let said: Vec<(String, Value, Value)> = found.into_iter().map(|c| (c.path, c.old_value, c.new_value)).collect();
        assert_eq!(
            said,
            [
                ("added".to_owned(), Value::Null, json!({"x": 1})),
                ("database.password".to_owned(), json!(MASK), json!(MASK)),
                ("database.pool".to_owned(), json!(10), json!(20)),
                ("gone".to_owned(), json!(1), Value::Null),
            ]
        );
    }

    #[test]
    fn the_entity_tag_follows_commit_and_content() {
        let value = json!({"a": 1});
        let tag = etag("3f1c2a9e0b7d4c6a8f1e", &value);
        assert!(tag.starts_with("\"3f1c2a9e0b7d-"), "{tag}");
        assert_ne!(tag, etag("3f1c2a9e0b7d4c6a8f1e", &json!({"a": 2})));
        assert_ne!(tag, etag("0000000000004c6a8f1e", &value));
    }
}
