//! Compose files an environment points at (`target: {compose: {files: […]}}`), read as
//! Compose v2 reads them: interpolated (`interpolate`, with the project's `.env`: `dotenv`),
//! merged by the specification's rules (`merge`), each Compose service then translated key by
//! key into a plumb `Service` document (`service`) built from nodes that keep the Compose
//! file's lines, so it is merged with the environment's overlays, validated and reported like
//! one written in `services/`. A key plumb does not carry out is refused, naming it and why: a
//! setting silently dropped would deploy something else than what was reviewed.

use std::collections::BTreeMap;
use std::sync::Arc;

use indexmap::IndexMap;

use super::diagnostic::Diagnostic;
use super::node::{Kind, Member, Node, Origin};

pub mod dotenv;
pub mod interpolate;
mod merge;
mod service;
mod units;

/// Reads a file of the repository (`.env`, an `env_file`): its name for messages, and its text.
pub type ReadFile<'a> = dyn Fn(&str) -> Option<(Arc<str>, String)> + 'a;

/// Variables given to interpolation besides the project's `.env`, which they override: the
/// environment's own, and those it takes from the agent's process.
pub type Lookup<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// What plumb knows of the environment a project runs in.
pub struct Settings<'a> {
    /// The Compose project's name (the environment's `target.compose.project`, else its name).
    pub project: &'a str,
    /// The address the stable ports are served on.
    pub address: &'a str,
    /// The profiles enabled.
    pub profiles: &'a [String],
}

/// Top-level keys refused, and why.
const TOP_LEVEL_REFUSED: &[(&str, &str)] = &[(
    "include",
    "plumb does not follow `include` yet: list the files in `target.compose.files`",
)];

/// The plumb service documents of parsed Compose `files`, merged as Compose merges them (a later
/// file's service over an earlier one's), with the services whose profiles are off left out.
/// Values are interpolated with `variables`, else those of the `.env` beside the first file (the
/// project's folder, which relative paths start from). `read` gives the text of a file,
/// relative to the repository root.
pub fn services(
    files: &[Node],
    settings: &Settings<'_>,
    variables: &Lookup<'_>,
    read: &ReadFile<'_>,
    out: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Node> {
    let mut services: BTreeMap<String, Node> = BTreeMap::new();
    let Some(first) = files.first() else {
        return services;
    };
    let mut project = Project::new(&first.at.file, settings.address, variables, read, out);
    let mut merged: IndexMap<String, (Origin, Node)> = IndexMap::new();
    for file in files {
        let mut file = file.clone();
        project.interpolate(&mut file, out);
        let Some(top) = file.as_map() else {
            out.push(Diagnostic::new(
                &file.at,
                "a Compose file is a map with `services`".to_owned(),
            ));
            continue;
        };
        for (key, member) in top {
            match key.as_str() {
                "services" | "version" => {}
                "name" => {
                    if scalar(&member.value).as_deref() != Some(settings.project) {
                        out.push(
                            Diagnostic::new(
                                &member.value.at,
                                format!(
                                    "the Compose file names project `{}`, but this environment runs project `{}`",
                                    scalar(&member.value).unwrap_or_default(),
                                    settings.project
                                ),
                            )
                            .hint("set `target.compose.project` to the same name"),
                        );
                    }
                }
                "networks" | "volumes" => definitions(key, &member.value, &mut project, out),
                "secrets" | "configs" => {
                    let known = if key == "secrets" {
                        &mut project.secrets
                    } else {
                        &mut project.configs
                    };
                    for (name, definition) in member.value.as_map().into_iter().flatten() {
                        known.insert(name.clone(), definition.value.clone());
                    }
                }
                key if key.starts_with("x-") => {}
                key => {
                    let why = TOP_LEVEL_REFUSED
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map_or("it is not part of the Compose Specification plumb reads", |(_, why)| {
                            why
                        });
                    out.push(Diagnostic::new(&member.key_at, format!("`{key}` is refused: {why}")));
                }
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
            match merged.get_mut(name) {
                Some((_, earlier)) => merge::service(earlier, &member.value),
                None => {
                    merged.insert(name.clone(), (member.key_at.clone(), member.value.clone()));
                }
            }
        }
    }
    for (name, (key_at, service)) in &merged {
        if let Some(service) = service::translate(name, service, key_at, settings.profiles, &project, out) {
            services.insert(name.clone(), service);
        }
    }
    services
}

/// Top-level `networks` or `volumes`: plumb creates each as `<project>_<name>` with the
/// engine's defaults; an `external` one (named by `name`, else as written) is used as it is and
/// never created. Any other setting is refused by name.
fn definitions(what: &str, node: &Node, project: &mut Project<'_>, out: &mut Vec<Diagnostic>) {
    for (name, member) in node.as_map().into_iter().flatten() {
        let external = matches!(member.value.get("external").map(|n| &n.kind), Some(Kind::Bool(true)));
        if external {
            let engine_name = member
                .value
                .get("name")
                .and_then(scalar)
                .unwrap_or_else(|| name.clone());
            let known = if what == "networks" {
                &mut project.external_networks
            } else {
                &mut project.external_volumes
            };
            known.insert(name.clone(), engine_name);
        }
        for (key, setting) in member.value.as_map().into_iter().flatten() {
            let default = match key.as_str() {
                "driver" => matches!(scalar(&setting.value).as_deref(), Some("bridge" | "local")),
                "external" => matches!(setting.value.kind, Kind::Bool(_)),
                "name" => external,
                key => key.starts_with("x-"),
            };
            if !default {
                out.push(Diagnostic::new(
                    &setting.key_at,
                    format!(
                        "`{key}` of {} `{name}` is not carried out: plumb creates `<project>_{name}` with the engine's defaults",
                        if what == "networks" { "network" } else { "volume" }
                    ),
                ));
            }
        }
    }
}

/// The project the Compose files make: its folder and its variables.
struct Project<'a> {
    /// The folder of the first file, with a trailing `/` (empty at the repository root).
    folder: String,
    /// The address the stable ports are served on.
    address: &'a str,
    variables: &'a Lookup<'a>,
    /// The `.env` beside the first file.
    dotenv: Vec<dotenv::Entry>,
    read: &'a ReadFile<'a>,
    /// The top-level `secrets` and `configs`, by name.
    secrets: IndexMap<String, Node>,
    configs: IndexMap<String, Node>,
    /// The external networks and volumes, by name, with their names on the engine.
    external_networks: BTreeMap<String, String>,
    external_volumes: BTreeMap<String, String>,
}

impl<'a> Project<'a> {
    fn new(
        first: &str,
        address: &'a str,
        variables: &'a Lookup<'a>,
        read: &'a ReadFile<'a>,
        out: &mut Vec<Diagnostic>,
    ) -> Project<'a> {
        let folder = match first.rfind('/') {
            Some(slash) => first[..=slash].to_owned(),
            None => String::new(),
        };
        let mut project = Project {
            folder,
            address,
            variables,
            dotenv: Vec::new(),
            read,
            secrets: IndexMap::new(),
            configs: IndexMap::new(),
            external_networks: BTreeMap::new(),
            external_volumes: BTreeMap::new(),
        };
        if let Some((file, text)) = project.read(".env") {
            match dotenv::parse(&text, variables) {
                Ok(entries) => project.dotenv = entries,
                Err(problem) => out.push(Diagnostic::new(
                    &Origin {
                        file,
                        line: problem.line,
                        column: 1,
                    },
                    problem.message,
                )),
            }
        }
        project
    }

    /// A file of the repository named relative to the project's folder (`./` and `../` taken
    /// off as far as they go inside the repository).
    fn read(&self, relative: &str) -> Option<(Arc<str>, String)> {
        (self.read)(&self.path(relative)?)
    }

    /// The repository path of `relative`, `None` when it leaves the repository.
    fn path(&self, relative: &str) -> Option<String> {
        let mut parts: Vec<&str> = if relative.starts_with('/') {
            return None;
        } else {
            self.folder.split('/').filter(|p| !p.is_empty()).collect()
        };
        for part in relative.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop()?;
                }
                part => parts.push(part),
            }
        }
        Some(parts.join("/"))
    }

    /// A variable's value: the environment's, else the `.env`'s.
    fn lookup(&self, name: &str) -> Option<String> {
        (self.variables)(name).or_else(|| {
            self.dotenv
                .iter()
                .rev()
                .find(|e| e.name == name)
                .map(|e| e.value.clone())
        })
    }

    /// Interpolates every string value under `node` (keys are left as written, as Compose
    /// does).
    fn interpolate(&self, node: &mut Node, out: &mut Vec<Diagnostic>) {
        match &mut node.kind {
            Kind::Str(text) => match interpolate::interpolate(text, &|name| self.lookup(name)) {
                Ok(value) => *text = value,
                Err(problem) => out.push(
                    Diagnostic::new(&node.at, format!("`{text}` {problem}")).hint(
                        "variables come from the environment's `target.compose.variables` and the `.env` beside the Compose file",
                    ),
                ),
            },
            Kind::Seq(items) => {
                for item in items {
                    self.interpolate(item, out);
                }
            }
            Kind::Map(members) => {
                for member in members.values_mut() {
                    self.interpolate(&mut member.value, out);
                }
            }
            _ => {}
        }
    }
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

/// `KEY=value` pairs of a list, or the members of a map; a name without a value (`KEY`, or
/// `KEY:` with nothing) comes with `None` and where it is written.
fn pairs(node: &Node, what: &str, out: &mut Vec<Diagnostic>) -> Vec<(String, Option<Node>, Origin)> {
    match &node.kind {
        Kind::Map(members) => members
            .iter()
            .filter_map(|(key, member)| match (&member.value.kind, scalar(&member.value)) {
                (_, Some(value)) => Some((key.clone(), Some(text(value, &member.value.at)), member.key_at.clone())),
                (Kind::Null, None) => Some((key.clone(), None, member.key_at.clone())),
                (_, None) => {
                    out.push(Diagnostic::new(
                        &member.value.at,
                        format!("{what} `{key}` is a text, a number or a boolean"),
                    ));
                    None
                }
            })
            .collect(),
        Kind::Seq(items) => items
            .iter()
            .filter_map(|item| {
                let line = scalar(item)?;
                Some(match line.split_once('=') {
                    Some((key, value)) => (key.to_owned(), Some(text(value, &item.at)), item.at.clone()),
                    None => (line, None, item.at.clone()),
                })
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
        let variables = |name: &str| (name == "TAG").then(|| "1.4".to_owned());
        let profiles = ["debug".to_owned()];
        let settings = Settings {
            project: "shop",
            address: "127.0.0.1",
            profiles: &profiles,
        };
        let services = services(&[node], &settings, &variables, &read, &mut out);
        (services, out)
    }

    #[test]
    fn a_compose_service_becomes_a_plumb_service() {
        let (services, problems) = translate_text(
            "services:\n  web:\n    image: shop/web:${TAG}\n    command: serve --port \"8000\"\n    env_file: web.env\n    \
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
            serde_json::json!([{"name": "p8080", "port": 8080, "targetPort": 8000, "protocol": "TCP"}])
        );
        assert_eq!(web["image"], "shop/web:1.4");
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
    fn later_files_merge_as_compose_merges_them() {
        let file: Arc<str> = Arc::from("deploy/compose.yaml");
        let over: Arc<str> = Arc::from("deploy/compose.prod.yaml");
        let base = parse(
            &file,
            b"services:\n  web:\n    image: web:1\n    command: [a]\n    environment: [A=1, B=2]\n    ports: ['8080:80']\n    volumes: ['data:/data']\n",
            Limits::default(),
        )
        .unwrap();
        let overlay = parse(
            &over,
            b"services:\n  web:\n    command: [b]\n    environment: {B: 3}\n    ports: ['8443:443']\n    volumes: ['other:/data']\n    deploy: {resources: {limits: {cpus: '0.5', memory: 256m}}}\n",
            Limits::default(),
        )
        .unwrap();
        let mut out = Vec::new();
        let settings = Settings {
            project: "shop",
            address: "127.0.0.1",
            profiles: &[],
        };
        let services = services(&[base, overlay], &settings, &|_| None, &|_| None, &mut out);
        assert!(out.is_empty(), "{out:?}");
        let web = services["web"].to_json();
        assert_eq!(web["command"], serde_json::json!(["b"]));
        assert_eq!(
            web["env"],
            serde_json::json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}])
        );
        assert_eq!(web["ports"].as_array().unwrap().len(), 2);
        assert_eq!(web["container"]["volumes"], serde_json::json!(["other:/data"]));
        assert_eq!(
            web["resources"],
            serde_json::json!({"limits": {"cpu": "500m", "memory": "268435456"}})
        );
    }

    #[test]
    fn what_plumb_would_drop_is_refused_by_name() {
        let (_, problems) = translate_text(
            "services:\n  web:\n    image: x\n    userns_mode: host\n    ports: [\"80\"]\n    environment: [HOME]\ninclude: [other.yaml]\n",
        );
        let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("compose.yaml:4:5") && m.contains("`userns_mode`")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("compose.yaml:5:13") && m.contains("published port")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("variable `HOME` has no value here")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("compose.yaml:7:1") && m.contains("`include`")),
            "{messages:?}"
        );
    }
}
