//! The project's own networks and volumes (Compose's top-level `networks` and `volumes`), as
//! the settings plumb creates them with, and those of the engine it only uses (`external`).
//! Every setting is carried out or refused by name.

use super::service::text_map;
use super::{Project, map, scalar, seq, text};
use crate::spec::diagnostic::Diagnostic;
use crate::spec::node::{Kind, MergeTag, Node};

/// Networks or volumes: which of the two a definition is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Object {
    Network,
    Volume,
}

impl Object {
    fn word(self) -> &'static str {
        match self {
            Object::Network => "network",
            Object::Volume => "volume",
        }
    }
}

/// Keeps the definitions of a file's top-level `networks` or `volumes`: a later file's
/// settings over an earlier one's, key by key, as Compose merges them.
pub(super) fn keep(object: Object, node: &Node, project: &mut Project<'_>, out: &mut Vec<Diagnostic>) {
    let Some(members) = node.as_map() else {
        if !matches!(node.kind, Kind::Null) {
            out.push(Diagnostic::new(&node.at, format!("`{}s` is a map", object.word())));
        }
        return;
    };
    let kept = match object {
        Object::Network => &mut project.network_nodes,
        Object::Volume => &mut project.volume_nodes,
    };
    for (name, member) in members {
        let value = match &member.value.kind {
            Kind::Null => Node::new(Kind::Map(Default::default()), member.value.at.clone()),
            Kind::Map(_) => member.value.clone(),
            _ => {
                out.push(Diagnostic::new(
                    &member.value.at,
                    format!("{} `{name}` is a map of settings", object.word()),
                ));
                continue;
            }
        };
        match (member.value.merge, kept.get_mut(name.as_str())) {
            (Some(MergeTag::Reset), _) => {
                kept.shift_remove(name.as_str());
            }
            (Some(MergeTag::Override), Some((_, earlier))) => *earlier = value,
            (_, Some((_, earlier))) => {
                if let (Kind::Map(earlier), Kind::Map(later)) = (&mut earlier.kind, value.kind) {
                    for (key, setting) in later {
                        earlier.insert(key, setting);
                    }
                }
            }
            (_, None) => {
                kept.insert(name.to_string(), (member.key_at.clone(), value));
            }
        }
    }
}

/// Turns the kept definitions into what plumb creates: an `external` one is used by its name on
/// the engine (`name`, else as written) and never created; the project's own are created with
/// their settings, as `<project>_<name>` unless they name themselves.
pub(super) fn settle(project: &mut Project<'_>, out: &mut Vec<Diagnostic>) {
    for object in [Object::Network, Object::Volume] {
        let kept = match object {
            Object::Network => std::mem::take(&mut project.network_nodes),
            Object::Volume => std::mem::take(&mut project.volume_nodes),
        };
        for (name, (key_at, node)) in kept {
            let external = matches!(node.get("external").map(|n| &n.kind), Some(Kind::Bool(true)));
            if external {
                if let Some(engine_name) = external_name(object, &name, &node, out) {
                    match object {
                        Object::Network => project.external_networks.insert(name, engine_name),
                        Object::Volume => project.external_volumes.insert(name, engine_name),
                    };
                }
                continue;
            }
            if object == Object::Network && name == "default" && node.as_map().is_some_and(|m| !m.is_empty()) {
                out.push(Diagnostic::new(
                    &key_at,
                    "settings of the project's `default` network are not carried out: plumb's proxy and jobs create it with the engine's defaults; define a network of your own for them".to_owned(),
                ));
                continue;
            }
            let definition = match object {
                Object::Network => network(&name, &node, out),
                Object::Volume => volume(&name, &node, out),
            };
            match object {
                Object::Network => project.networks.insert(name, definition),
                Object::Volume => project.volumes.insert(name, definition),
            };
        }
    }
}

/// The engine name of an external network or volume; any setting besides `name` is refused,
/// as Compose refuses it: plumb does not create it.
fn external_name(object: Object, name: &str, node: &Node, out: &mut Vec<Diagnostic>) -> Option<String> {
    for (key, setting) in node.as_map().into_iter().flatten() {
        if !matches!(key.as_str(), "external" | "name") && !key.starts_with("x-") {
            out.push(Diagnostic::new(
                &setting.key_at,
                format!(
                    "`{key}` of external {} `{name}` cannot be carried out: an external {} is used as it is, never created",
                    object.word(),
                    object.word()
                ),
            ));
        }
    }
    Some(node.get("name").and_then(scalar).unwrap_or_else(|| name.to_owned()))
}

/// A network's settings as plumb's `NetworkDefinition`.
fn network(name: &str, node: &Node, out: &mut Vec<Diagnostic>) -> Node {
    let mut fields = Vec::new();
    for (key, member) in node.as_map().into_iter().flatten() {
        let value = &member.value;
        match key.as_str() {
            "name" | "driver" => fields.push((key.as_str(), text_of(value, key, out))),
            "driver_opts" => fields.push(("driverOpts", text_map(value, "driver option", out))),
            "labels" => fields.push(("labels", text_map(value, "label", out))),
            "internal" | "attachable" => fields.push((key.as_str(), value.clone())),
            "enable_ipv6" => fields.push(("enableIpv6", value.clone())),
            "ipam" => fields.push(("ipam", ipam(value, out))),
            "external" => {}
            key if key.starts_with("x-") => {}
            key => out.push(Diagnostic::new(
                &member.key_at,
                format!("`{key}` of network `{name}` is not carried out by plumb's compose target"),
            )),
        }
    }
    map(fields, &node.at)
}

/// A network's address management (`driver`, `config` pools, `options`).
fn ipam(node: &Node, out: &mut Vec<Diagnostic>) -> Node {
    let mut fields = Vec::new();
    for (key, member) in node.as_map().into_iter().flatten() {
        let value = &member.value;
        match key.as_str() {
            "driver" => fields.push(("driver", text_of(value, key, out))),
            "options" => fields.push(("options", text_map(value, "IPAM option", out))),
            "config" => {
                let pools = match &value.kind {
                    Kind::Seq(items) => items.iter().map(|pool| ipam_pool(pool, out)).collect(),
                    _ => {
                        out.push(Diagnostic::new(
                            &value.at,
                            "`config` is a list of address pools".to_owned(),
                        ));
                        Vec::new()
                    }
                };
                fields.push(("config", seq(pools, &value.at)));
            }
            key => out.push(Diagnostic::new(
                &member.key_at,
                format!("`{key}` of `ipam` is not carried out by plumb's compose target"),
            )),
        }
    }
    map(fields, &node.at)
}

/// One address pool: `subnet`, `ip_range`, `gateway`, `aux_addresses`.
fn ipam_pool(node: &Node, out: &mut Vec<Diagnostic>) -> Node {
    let mut fields = Vec::new();
    for (key, member) in node.as_map().into_iter().flatten() {
        let value = &member.value;
        match key.as_str() {
            "subnet" | "gateway" => fields.push((key.as_str(), text_of(value, key, out))),
            "ip_range" => fields.push(("ipRange", text_of(value, key, out))),
            "aux_addresses" => fields.push(("auxAddresses", text_map(value, "auxiliary address", out))),
            key => out.push(Diagnostic::new(
                &member.key_at,
                format!("`{key}` of an address pool is not carried out by plumb's compose target"),
            )),
        }
    }
    if node.as_map().is_none() {
        out.push(Diagnostic::new(
            &node.at,
            "an address pool is a map (`subnet`, `gateway`…)".to_owned(),
        ));
    }
    map(fields, &node.at)
}

/// A volume's settings as plumb's `VolumeDefinition`.
fn volume(name: &str, node: &Node, out: &mut Vec<Diagnostic>) -> Node {
    let mut fields = Vec::new();
    for (key, member) in node.as_map().into_iter().flatten() {
        let value = &member.value;
        match key.as_str() {
            "name" | "driver" => fields.push((key.as_str(), text_of(value, key, out))),
            "driver_opts" => fields.push(("driverOpts", text_map(value, "driver option", out))),
            "labels" => fields.push(("labels", text_map(value, "label", out))),
            "external" => {}
            key if key.starts_with("x-") => {}
            key => out.push(Diagnostic::new(
                &member.key_at,
                format!("`{key}` of volume `{name}` is not carried out by plumb's compose target"),
            )),
        }
    }
    map(fields, &node.at)
}

/// A setting that is one text.
fn text_of(node: &Node, key: &str, out: &mut Vec<Diagnostic>) -> Node {
    match scalar(node) {
        Some(value) => text(value, &node.at),
        None => {
            out.push(Diagnostic::new(&node.at, format!("`{key}` is a text")));
            text("", &node.at)
        }
    }
}
