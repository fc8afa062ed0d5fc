//! Several Compose files merged as the Compose Specification merges them: maps member by member,
//! lists appended (an entry already there is not repeated), `command`, `entrypoint` and a
//! health check's `test` replaced, `volumes`, `secrets` and `configs` unique by target path, `environment`, `labels`
//! and the like merged by name whether written as lists or maps. A value tagged `!override`
//! replaces the earlier one whole; one tagged `!reset` removes it (and itself).

use super::scalar;
use crate::spec::node::{Kind, Member, Members, MergeTag, Node};

/// Lists replaced by a later file rather than appended to.
const REPLACED: &[&str] = &["command", "entrypoint", "test"];

/// Lists of `NAME=value` (or maps) merged by name.
const BY_NAME: &[&str] = &["environment", "labels", "sysctls", "annotations"];

/// Lists of names (or maps of names to settings) merged by name.
const NAMED: &[&str] = &["depends_on", "networks"];

/// Merges a later file's definition of a service over an earlier one's.
pub(super) fn service(base: &mut Node, overlay: &Node) {
    merge(base, overlay, "");
}

fn merge(base: &mut Node, overlay: &Node, key: &str) {
    if overlay.merge == Some(MergeTag::Override) {
        *base = overlay.clone();
        return;
    }
    if BY_NAME.contains(&key) || NAMED.contains(&key) {
        let value = BY_NAME.contains(&key);
        if let (Some(mut merged), Some(over)) = (as_map(base, value), as_map(overlay, value)) {
            for (name, member) in over {
                merged.insert(name, member);
            }
            base.kind = Kind::Map(merged);
            return;
        }
    }
    match (&mut base.kind, &overlay.kind) {
        (Kind::Map(members), Kind::Map(over)) => {
            for (name, member) in over {
                if member.value.merge == Some(MergeTag::Reset) {
                    members.shift_remove(name);
                    continue;
                }
                match members.get_mut(name) {
                    Some(existing) => merge(&mut existing.value, &member.value, name),
                    None => {
                        members.insert(name.clone(), member.clone());
                    }
                }
            }
        }
        (Kind::Seq(items), Kind::Seq(over)) if !REPLACED.contains(&key) => {
            for item in over {
                // Unique by target path: a later entry for the same path replaces the earlier.
                let target_of = match key {
                    "volumes" => Some(volume_target as fn(&Node) -> Option<String>),
                    "secrets" | "configs" => Some(grant_target as fn(&Node) -> Option<String>),
                    _ => None,
                };
                if let Some(target_of) = target_of
                    && let Some(target) = target_of(item)
                {
                    items.retain(|i| target_of(i).as_deref() != Some(target.as_str()));
                }
                if !items.iter().any(|i| i.to_json() == item.to_json()) {
                    items.push(item.clone());
                }
            }
        }
        _ => *base = overlay.clone(),
    }
}

/// Takes out of `node` what is tagged `!reset` and is left after merging (a file resetting a
/// value no earlier file set): the value is gone either way.
pub(super) fn settle(node: &mut Node) {
    match &mut node.kind {
        Kind::Map(members) => {
            members.retain(|_, member| member.value.merge != Some(MergeTag::Reset));
            for member in members.values_mut() {
                settle(&mut member.value);
            }
        }
        Kind::Seq(items) => {
            items.retain(|item| item.merge != Some(MergeTag::Reset));
            for item in items {
                settle(item);
            }
        }
        _ => {}
    }
}

/// A list of `NAME=value` (with `value`) or of names, or a map, as a map.
fn as_map(node: &Node, value: bool) -> Option<Members> {
    match &node.kind {
        Kind::Map(members) => Some(members.clone()),
        Kind::Seq(items) => Some(
            items
                .iter()
                .filter_map(|item| {
                    let line = scalar(item)?;
                    let (name, member_value) = match line.split_once('=') {
                        Some((name, v)) if value => (name.into(), Kind::Str(v.into())),
                        _ => (line.into(), Kind::Null),
                    };
                    Some((
                        name,
                        Member {
                            key_at: item.at.clone(),
                            value: Node::new(member_value, item.at.clone()),
                        },
                    ))
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Where a secret or config is mounted: its `target`, else its name (`source`).
fn grant_target(node: &Node) -> Option<String> {
    match &node.kind {
        Kind::Map(_) => node.get("target").or_else(|| node.get("source")).and_then(scalar),
        _ => scalar(node),
    }
}

/// The target path of a volume, short or long form.
fn volume_target(node: &Node) -> Option<String> {
    match &node.kind {
        Kind::Map(_) => node.get("target").and_then(scalar),
        _ => {
            let spec = scalar(node)?;
            let parts: Vec<&str> = spec.split(':').collect();
            match parts.as_slice() {
                [target] | [_, target] | [_, target, _] => Some((*target).to_owned()),
                _ => None,
            }
        }
    }
}
