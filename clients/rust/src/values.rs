//! The parts of a configuration: a value by its dotted path, and what changed between two.

use std::collections::BTreeSet;

use serde_json::Value;

/// The part of `value` at `path`: keys joined by dots, array items by index (`database.pool`,
/// `hosts.0`); all of it for `""`.
pub fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(value);
    }
    path.split('.').try_fold(value, |value, key| match value {
        Value::Object(map) => map.get(key),
        Value::Array(items) => items.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// One changed leaf or subtree: where, and its value before and after (`null`: absent).
#[derive(Clone, Debug, PartialEq)]
pub struct Difference {
    /// Where: keys joined by dots (`""` for the whole configuration).
    pub path: String,
    /// The value before.
    pub old_value: Value,
    /// The value after.
    pub new_value: Value,
}

/// What changed from `before` to `after`, as the agent tells it: two objects compared key by
/// key (keys in order), anything else as a whole.
pub fn differences(before: &Value, after: &Value) -> Vec<Difference> {
    let mut found = Vec::new();
    walk(before, after, "", &mut found);
    found
}

fn walk(before: &Value, after: &Value, path: &str, found: &mut Vec<Difference>) {
    if before == after {
        return;
    }
    if let (Value::Object(old), Value::Object(new)) = (before, after) {
        let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        for key in keys {
            let here = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match (old.get(key), new.get(key)) {
                (Some(b), Some(a)) => walk(b, a, &here, found),
                (b, a) => found.push(Difference {
                    path: here,
                    old_value: b.cloned().unwrap_or(Value::Null),
                    new_value: a.cloned().unwrap_or(Value::Null),
                }),
            }
        }
        return;
    }
    found.push(Difference {
        path: path.to_owned(),
        old_value: before.clone(),
        new_value: after.clone(),
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parts_and_differences() {
        let value = json!({"database": {"pool": 10, "hosts": ["a", "b"]}});
        assert_eq!(at(&value, "database.hosts.1"), Some(&json!("b")));
        assert_eq!(at(&value, "database.port"), None);
        let before = json!({"database": {"pool": 10}, "gone": 1});
        let after = json!({"database": {"pool": 20}, "added": {"x": 1}});
        let said: Vec<(String, Value, Value)> = differences(&before, &after)
            .into_iter()
            .map(|d| (d.path, d.old_value, d.new_value))
            .collect();
        assert_eq!(
            said,
            [
                ("added".to_owned(), Value::Null, json!({"x": 1})),
                ("database.pool".to_owned(), json!(10), json!(20)),
                ("gone".to_owned(), json!(1), Value::Null),
            ]
        );
    }
}
