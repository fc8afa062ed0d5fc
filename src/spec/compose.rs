//! Compose files an environment points at (`target: {compose: {files: […]}}`): each Compose
//! service becomes a plumb `Service` document, built from nodes that keep the Compose file's
//! lines, so it is merged with the environment's overlays, validated and reported like one
//! written in `services/`. What plumb takes from a Compose service: `image`, `command`,
//! `environment`, `env_file`, `ports`, `volumes` (named), `networks`, `healthcheck`,
//! `depends_on`, `labels`, `profiles`, `deploy.replicas`, and an `x-plumb` map merged over the
//! result (strategy, health checks, migration…). Anything else is refused, naming the key: a
//! setting silently dropped would deploy something else than what was reviewed.

use std::collections::BTreeMap;
use std::sync::Arc;

use indexmap::IndexMap;

use super::diagnostic::Diagnostic;
use super::merge::merge_into;
use super::node::{Kind, Member, Node, Origin};

/// Reads a file of the repository (an `env_file`): its name for messages, and its text.
pub type ReadFile<'a> = dyn Fn(&str) -> Option<(Arc<str>, String)> + 'a;

/// Top-level keys of a Compose file plumb reads or may ignore.
const TOP_LEVEL: &[&str] = &["services", "volumes", "networks", "name", "version"];

/// Keys of a Compose service plumb translates (`restart` is plumb's to manage, and ignored).
const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "environment",
    "env_file",
    "ports",
    "volumes",
    "networks",
    "healthcheck",
    "depends_on",
    "labels",
    "profiles",
    "deploy",
    "restart",
    "x-plumb",
];

/// The plumb service documents of parsed Compose `files` (later ones merged over earlier ones),
/// with the services whose profiles are not among `profiles` left out. `read` gives the text
/// of an `env_file`, relative to the repository root.
pub fn services(
    files: &[Node],
    profiles: &[String],
    read: &ReadFile<'_>,
    out: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Node> {
    let mut services: BTreeMap<String, Node> = BTreeMap::new();
    for file in files {
        let Some(top) = file.as_map() else {
            out.push(Diagnostic::new(
                &file.at,
                "a Compose file is a map with `services`".to_owned(),
            ));
            continue;
        };
        for (key, member) in top {
            if !TOP_LEVEL.contains(&key.as_str()) && !key.starts_with("x-") {
                out.push(Diagnostic::new(
                    &member.key_at,
                    format!("`{key}` is not supported in Compose files plumb reads"),
                ));
            }
        }
        let Some(list) = file.get("services").and_then(Node::as_map) else {
            out.push(Diagnostic::new(
                &file.at,
                "a Compose file is a map with `services`".to_owned(),
            ));
            continue;
        };
        for (name, member) in list {
            let Some(service) = translate(name, &member.value, &member.key_at, profiles, read, out) else {
                continue;
            };
            match services.get_mut(name) {
                Some(earlier) => merge_into(earlier, &service, "", out),
                None => {
                    services.insert(name.clone(), service);
                }
            }
        }
    }
    services
}

/// A map node at `at`.
fn map(entries: Vec<(&str, Node)>, at: &Origin) -> Node {
    let members: IndexMap<String, Member> = entries
        .into_iter()
        .map(|(key, value)| {
            (
                key.to_owned(),
                Member {
                    key_at: value.at.clone(),
                    value,
                },
            )
        })
        .collect();
    Node::new(Kind::Map(members), at.clone())
}

fn text(value: impl Into<String>, at: &Origin) -> Node {
    Node::new(Kind::Str(value.into()), at.clone())
}

fn seq(items: Vec<Node>, at: &Origin) -> Node {
    Node::new(Kind::Seq(items), at.clone())
}

/// A scalar as text (`8080`, `true`, `x`); `None` for maps, lists and null.
fn scalar(node: &Node) -> Option<String> {
    match &node.kind {
        Kind::Str(s) => Some(s.clone()),
        Kind::Int(i) => Some(i.to_string()),
        Kind::Float(f) => Some(f.to_string()),
        Kind::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A Compose list given as a string or a list of strings.
fn strings(node: &Node) -> Vec<(String, Origin)> {
    match &node.kind {
        Kind::Seq(items) => items.iter().filter_map(|i| Some((scalar(i)?, i.at.clone()))).collect(),
        _ => scalar(node).map(|s| vec![(s, node.at.clone())]).unwrap_or_default(),
    }
}

/// Words of a command written as one string, split as Compose does (quotes group, no shell).
fn words(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(word);
    }
    out
}

/// `KEY=value` pairs of a list, or the members of a map.
fn pairs(node: &Node, what: &str, out: &mut Vec<Diagnostic>) -> Vec<(String, Node)> {
    match &node.kind {
        Kind::Map(members) => members
            .iter()
            .filter_map(|(key, member)| match scalar(&member.value) {
                Some(value) => Some((key.clone(), text(value, &member.value.at))),
                None => {
                    out.push(Diagnostic::new(
                        &member.value.at,
                        format!("{what} `{key}` has no value; plumb takes nothing from its own environment"),
                    ));
                    None
                }
            })
            .collect(),
        Kind::Seq(items) => items
            .iter()
            .filter_map(|item| {
                let line = scalar(item)?;
                match line.split_once('=') {
                    Some((key, value)) => Some((key.to_owned(), text(value, &item.at))),
                    None => {
                        out.push(Diagnostic::new(
                            &item.at,
                            format!("{what} `{line}` is not `NAME=value`"),
                        ));
                        None
                    }
                }
            })
            .collect(),
        _ => {
            out.push(Diagnostic::new(
                &node.at,
                format!("{what}s are a map or a list of `NAME=value`"),
            ));
            Vec::new()
        }
    }
}

/// One Compose service as a plumb service document; `None` when its profiles are off.
fn translate(
    name: &str,
    service: &Node,
    key_at: &Origin,
    profiles: &[String],
    read: &ReadFile<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<Node> {
    let Some(members) = service.as_map() else {
        out.push(Diagnostic::new(
            &service.at,
            format!("Compose service `{name}` is not a map"),
        ));
        return None;
    };
    if let Some(wanted) = service.get("profiles") {
        let wanted = strings(wanted);
        if !wanted.is_empty() && !wanted.iter().any(|(p, _)| profiles.contains(p)) {
            return None;
        }
    }
    for (key, member) in members {
        if !SERVICE_KEYS.contains(&key.as_str()) {
            out.push(
                Diagnostic::new(
                    &member.key_at,
                    format!("`{key}` of Compose service `{name}` is not supported by plumb's compose target"),
                )
                .hint("plumb refuses what it would otherwise drop; `x-plumb` holds plumb's own settings"),
            );
        }
    }
    let at = &service.at;
    let mut doc = vec![
        ("apiVersion", text("plumb/v1", key_at)),
        ("kind", text("Service", key_at)),
        ("name", text(name, key_at)),
    ];
    if let Some(image) = service.get("image") {
        doc.push(("image", image.clone()));
    }
    if let Some(command) = service.get("command") {
        let items = match &command.kind {
            Kind::Str(line) => words(line).into_iter().map(|w| text(w, &command.at)).collect(),
            _ => strings(command).into_iter().map(|(w, at)| text(w, &at)).collect(),
        };
        doc.push(("command", seq(items, &command.at)));
    }
    let mut env: IndexMap<String, Node> = IndexMap::new();
    if let Some(files) = service.get("env_file") {
        for (file, file_at) in strings(files) {
            let Some((origin, content)) = read(&file) else {
                out.push(Diagnostic::new(
                    &file_at,
                    format!("env_file `{file}` is not in the repository"),
                ));
                continue;
            };
            for (index, line) in content.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let line_at = Origin {
                    file: origin.clone(),
                    line: index as u32 + 1,
                    column: 1,
                };
                match line.split_once('=') {
                    Some((key, value)) => {
                        env.insert(key.trim().to_owned(), text(value.trim(), &line_at));
                    }
                    None => out.push(Diagnostic::new(&line_at, format!("`{line}` is not `NAME=value`"))),
                }
            }
        }
    }
    if let Some(environment) = service.get("environment") {
        for (key, value) in pairs(environment, "variable", out) {
            env.insert(key, value);
        }
    }
    if !env.is_empty() {
        let items = env
            .into_iter()
            .map(|(key, value)| {
                let at = value.at.clone();
                map(vec![("name", text(key, &at)), ("value", value)], &at)
            })
            .collect();
        doc.push(("env", seq(items, at)));
    }
    if let Some(ports) = service.get("ports") {
        let items = match &ports.kind {
            Kind::Seq(items) => items.iter().filter_map(|p| port(p, out)).collect(),
            _ => {
                out.push(Diagnostic::new(&ports.at, "`ports` is a list".to_owned()));
                Vec::new()
            }
        };
        doc.push(("ports", seq(items, &ports.at)));
    }
    if let Some(replicas) = service.get("deploy").and_then(|d| d.get("replicas")) {
        doc.push(("replicas", replicas.clone()));
    }
    if let Some(depends) = service.get("depends_on") {
        let names = match &depends.kind {
            Kind::Map(members) => members.iter().map(|(k, m)| text(k, &m.key_at)).collect(),
            _ => strings(depends).into_iter().map(|(n, at)| text(n, &at)).collect(),
        };
        doc.push(("dependsOn", seq(names, &depends.at)));
    }
    if let Some(labels) = service.get("labels") {
        let entries = pairs(labels, "label", out);
        let members = entries
            .into_iter()
            .map(|(key, value)| {
                (
                    key,
                    Member {
                        key_at: value.at.clone(),
                        value,
                    },
                )
            })
            .collect();
        doc.push(("labels", Node::new(Kind::Map(members), labels.at.clone())));
    }
    let mut container = Vec::new();
    if let Some(volumes) = service.get("volumes") {
        let items = match &volumes.kind {
            Kind::Seq(items) => items.iter().filter_map(|v| volume(v, out)).collect(),
            _ => Vec::new(),
        };
        container.push(("volumes", seq(items, &volumes.at)));
    }
    if let Some(networks) = service.get("networks") {
        let names = match &networks.kind {
            Kind::Map(members) => members.iter().map(|(k, m)| text(k, &m.key_at)).collect(),
            _ => strings(networks).into_iter().map(|(n, at)| text(n, &at)).collect(),
        };
        container.push(("networks", seq(names, &networks.at)));
    }
    if let Some(check) = service.get("healthcheck")
        && let Some(check) = healthcheck(check, out)
    {
        container.push(("healthcheck", check));
    }
    if !container.is_empty() {
        doc.push(("container", map(container, at)));
    }
    let mut translated = map(doc, at);
    if let Some(extra) = service.get("x-plumb") {
        merge_into(&mut translated, extra, "", out);
    }
    Some(translated)
}

/// A port as `published:target`, `ip:published:target`, or the long form, named `p<published>`.
fn port(node: &Node, out: &mut Vec<Diagnostic>) -> Option<Node> {
    let (published, target) = match &node.kind {
        Kind::Map(_) => (
            node.get("published").and_then(scalar),
            node.get("target").and_then(scalar),
        ),
        _ => {
            let spec = scalar(node)?;
            let spec = spec.split('/').next().unwrap_or_default().to_owned();
            let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
            match parts.as_slice() {
                [target, published, ..] => (Some((*published).to_owned()), Some((*target).to_owned())),
                _ => (None, Some(spec.clone())),
            }
        }
    };
    let (Some(published), Some(target)) = (published, target) else {
        out.push(
            Diagnostic::new(
                &node.at,
                "a port needs a published port: plumb serves it there".to_owned(),
            )
            .hint("write `published:target`, as `8080:80`"),
        );
        return None;
    };
    let (Ok(published), Ok(target)) = (published.parse::<u16>(), target.parse::<u16>()) else {
        out.push(Diagnostic::new(
            &node.at,
            "ports are numbers (ranges are not supported)".to_owned(),
        ));
        return None;
    };
    let at = &node.at;
    Some(map(
        vec![
            ("name", text(format!("p{published}"), at)),
            ("port", Node::new(Kind::Int(published.into()), at.clone())),
            ("targetPort", Node::new(Kind::Int(target.into()), at.clone())),
        ],
        at,
    ))
}

/// A volume as `name:/path[:ro]` (the long form `{type: volume, source, target, read_only}`
/// too); host paths are left for the schema to refuse with its reason.
fn volume(node: &Node, out: &mut Vec<Diagnostic>) -> Option<Node> {
    match &node.kind {
        Kind::Map(_) => {
            let source = node.get("source").and_then(scalar);
            let target = node.get("target").and_then(scalar);
            let (Some(source), Some(target)) = (source, target) else {
                out.push(Diagnostic::new(
                    &node.at,
                    "a volume needs `source` and `target`".to_owned(),
                ));
                return None;
            };
            let read_only = matches!(node.get("read_only").map(|n| &n.kind), Some(Kind::Bool(true)));
            let suffix = if read_only { ":ro" } else { "" };
            Some(text(format!("{source}:{target}{suffix}"), &node.at))
        }
        _ => Some(node.clone()),
    }
}

/// A Compose health check as the engine's; `None` when disabled.
fn healthcheck(node: &Node, out: &mut Vec<Diagnostic>) -> Option<Node> {
    if matches!(node.get("disable").map(|n| &n.kind), Some(Kind::Bool(true))) {
        return None;
    }
    let at = &node.at;
    let test = match node.get("test") {
        Some(test) => match &test.kind {
            Kind::Str(command) => seq(vec![text("CMD-SHELL", &test.at), text(command, &test.at)], &test.at),
            _ => test.clone(),
        },
        None => {
            out.push(Diagnostic::new(at, "a health check needs `test`".to_owned()));
            return None;
        }
    };
    if test.get_index(0).and_then(scalar).as_deref() == Some("NONE") {
        return None;
    }
    let mut entries = vec![("test", test)];
    for (compose, plumb) in [
        ("interval", "interval"),
        ("timeout", "timeout"),
        ("retries", "retries"),
        ("start_period", "startPeriod"),
    ] {
        if let Some(value) = node.get(compose) {
            entries.push((plumb, value.clone()));
        }
    }
    Some(map(entries, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::yaml::{Limits, parse};

    fn translate_text(text: &str) -> (BTreeMap<String, Node>, Vec<Diagnostic>) {
        let file: Arc<str> = Arc::from("compose.yaml");
        let node = parse(&file, text.as_bytes(), Limits::default()).unwrap();
        let mut out = Vec::new();
        let read = |path: &str| {
            (path == "web.env").then(|| (Arc::from("web.env"), "# comment\nLEVEL=debug\nMODE=file\n".to_owned()))
        };
        let services = services(&[node], &["debug".to_owned()], &read, &mut out);
        (services, out)
    }

    #[test]
    fn a_compose_service_becomes_a_plumb_service() {
        let (services, problems) = translate_text(
            "services:\n  web:\n    image: shop/web:1.4\n    command: serve --port \"8000\"\n    env_file: web.env\n    \
             environment: {MODE: compose}\n    ports: [\"127.0.0.1:8080:8000\"]\n    volumes: [\"data:/var/lib/web:ro\"]\n    \
             networks: [back]\n    healthcheck: {test: \"curl -f localhost:8000\", retries: 5}\n    depends_on: {db: {condition: service_healthy}}\n    \
             deploy: {replicas: 3}\n    x-plumb: {strategy: {blueGreen: {}}}\n  debugger:\n    image: shop/dbg\n    profiles: [debug]\n  \
             tools:\n    image: shop/tools\n    profiles: [tools]\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(services.keys().collect::<Vec<_>>(), ["debugger", "web"]);
        let web = services["web"].to_json();
        assert_eq!(web["command"], serde_json::json!(["serve", "--port", "8000"]));
        assert_eq!(
            web["env"],
            serde_json::json!([{"name": "LEVEL", "value": "debug"}, {"name": "MODE", "value": "compose"}])
        );
        assert_eq!(
            web["ports"],
            serde_json::json!([{"name": "p8080", "port": 8080, "targetPort": 8000}])
        );
        assert_eq!(web["replicas"], 3);
        assert_eq!(web["dependsOn"], serde_json::json!(["db"]));
        assert_eq!(web["container"]["volumes"], serde_json::json!(["data:/var/lib/web:ro"]));
        assert_eq!(
            web["container"]["healthcheck"],
            serde_json::json!({"test": ["CMD-SHELL", "curl -f localhost:8000"], "retries": 5})
        );
        assert_eq!(web["strategy"], serde_json::json!({"blueGreen": {}}));
        // Values keep the lines they were written on.
        let env = services["web"].get("env").unwrap();
        assert_eq!(env.get_index(0).unwrap().at.file.as_ref(), "web.env");
        assert_eq!(env.get_index(0).unwrap().at.line, 2);
    }

    #[test]
    fn what_plumb_would_drop_is_refused_by_name() {
        let (_, problems) = translate_text(
            "services:\n  web:\n    image: x\n    privileged: true\n    ports: [\"80\"]\n    environment: [HOME]\nconfigs: {}\n",
        );
        let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("compose.yaml:4:5") && m.contains("`privileged`")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("compose.yaml:5:13") && m.contains("published port")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("`HOME` is not `NAME=value`")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("compose.yaml:7:1") && m.contains("`configs`")),
            "{messages:?}"
        );
    }
}
