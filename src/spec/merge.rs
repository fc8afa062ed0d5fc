//! Overlay merge: how an environment's overlay (and the repository's service defaults) change a
//! service document. The rules, each golden-tested under `tests/fixtures/merge/`:
//!
//! 1. maps merge deeply, key by key;
//! 2. any other value — scalars and plain lists — is replaced whole by the overlay's;
//! 3. an explicit `null` removes the key;
//! 4. the named lists (`ports`, `env`, `healthChecks`) merge item by item, matched by `name`;
//!    new names are appended in overlay order;
//! 5. in a named list, an item with `$patch: delete` removes the item of that name;
//! 6. a map (or named-list item) with `$patch: replace` replaces what it overlays instead of
//!    merging into it;
//! 7. in a union (`strategy`, a health check's `http`/`tcp`/`exec`), setting one member drops
//!    the others the base had.
//!
//! Every value keeps the origin of the document that wrote it. It does not validate.

use super::diagnostic::Diagnostic;
use super::model::{NAMED_LISTS, UNIONS};
use super::node::{Kind, Member, Node};

/// The key of merge directives.
pub const DIRECTIVE: &str = "$patch";

/// Merges `overlay` over `base`, a service document (or a fragment of one at `field`, in the
/// path notation of [`UNIONS`]: `""` for a whole service).
pub fn merge(base: &Node, overlay: &Node, field: &str, errors: &mut Vec<Diagnostic>) -> Node {
    let mut merged = base.clone();
    merge_into(&mut merged, overlay, field, errors);
    merged
}

/// Merges `overlay` over `base` in place: nothing of `base` is copied, which matters for
/// repositories of thousands of services.
pub fn merge_into(base: &mut Node, overlay: &Node, field: &str, errors: &mut Vec<Diagnostic>) {
    merge_at(base, overlay, &mut field.to_owned(), errors);
}

/// [`merge_into`] at `field`, which each level below extends and gives back as it was: the
/// fields of a merge are spelled in one buffer, not one string per key.
fn merge_at(base: &mut Node, overlay: &Node, field: &mut String, errors: &mut Vec<Diagnostic>) {
    let (Kind::Map(_), Kind::Map(overlay_members)) = (&base.kind, &overlay.kind) else {
        *base = strip(overlay);
        return;
    };
    match directive(overlay, errors) {
        Some(Directive::Replace) => {
            *base = strip(overlay);
            return;
        }
        Some(Directive::Delete) => errors.push(
            Diagnostic::new(&overlay.at, "`$patch: delete` only removes an item of a named list")
                .hint("to remove a key, set it to `null`"),
        ),
        None => {}
    }
    let Kind::Map(members) = &mut base.kind else {
        unreachable!("checked above")
    };
    if let Some(union) = UNIONS.iter().find(|u| u.field == field.as_str()) {
        let chosen = overlay_members
            .iter()
            .any(|(k, m)| union.members.contains(&k.as_str()) && m.value.kind != Kind::Null);
        if chosen {
            members.retain(|k, _| !union.members.contains(&k.as_str()) || overlay_members.contains_key(k));
        }
    }
    for (key, member) in overlay_members {
        if key == DIRECTIVE {
            continue;
        }
        if member.value.kind == Kind::Null {
            members.shift_remove(key);
            continue;
        }
        match members.get_mut(key) {
            Some(existing) => {
                let parent = field.len();
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(key);
                if NAMED_LISTS.contains(&field.as_str()) {
                    merge_named(&mut existing.value, &member.value, field, errors);
                } else {
                    merge_at(&mut existing.value, &member.value, field, errors);
                }
                field.truncate(parent);
                existing.key_at = member.key_at.clone();
            }
            None => {
                members.insert(
                    key.clone(),
                    Member {
                        key_at: member.key_at.clone(),
                        value: strip(&member.value),
                    },
                );
            }
        }
    }
}

/// Merges a named list item by item, in place.
fn merge_named(base: &mut Node, overlay: &Node, field: &mut String, errors: &mut Vec<Diagnostic>) {
    let (Kind::Seq(items), Kind::Seq(overlay_items)) = (&mut base.kind, &overlay.kind) else {
        *base = strip(overlay);
        return;
    };
    for item in overlay_items {
        let Some(name) = item.get("name").and_then(Node::as_str) else {
            errors.push(
                Diagnostic::new(&item.at, format!("an item of `{field}` in an overlay has no `name`")).hint(format!(
                    "items of `{field}` are merged by name: give each one its `name`"
                )),
            );
            continue;
        };
        let found = items
            .iter()
            .position(|i| i.get("name").and_then(Node::as_str) == Some(name));
        match (directive(item, errors), found) {
            (Some(Directive::Delete), Some(i)) => {
                items.remove(i);
            }
            (Some(Directive::Delete), None) => {}
            (Some(Directive::Replace), Some(i)) => items[i] = strip(item),
            (_, Some(i)) => {
                field.push_str("[]");
                merge_at(&mut items[i], item, field, errors);
                field.truncate(field.len() - 2);
            }
            (_, None) => items.push(strip(item)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Directive {
    Delete,
    Replace,
}

fn directive(node: &Node, errors: &mut Vec<Diagnostic>) -> Option<Directive> {
    let value = node.get(DIRECTIVE)?;
    match value.as_str() {
        Some("delete") => Some(Directive::Delete),
        Some("replace") => Some(Directive::Replace),
        _ => {
            errors.push(
                Diagnostic::new(&value.at, "`$patch` must be `delete` or `replace`")
                    .hint("`delete` removes a named-list item; `replace` replaces a map instead of merging into it"),
            );
            None
        }
    }
}

/// `node` without merge directives, which mean nothing once merged.
fn strip(node: &Node) -> Node {
    match &node.kind {
        Kind::Map(members) if members.contains_key(DIRECTIVE) => {
            let mut members = members.clone();
            members.shift_remove(DIRECTIVE);
            Node::new(Kind::Map(members), node.at.clone())
        }
        _ => node.clone(),
    }
}
