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
use super::node::{Kind, Member, Node, Origin, Text};

mod build;
pub mod dotenv;
pub mod interpolate;
mod merge;
mod objects;
mod service;
mod units;

/// Reads a file of the repository (`.env`, an `env_file`): its name for messages, and its text.
pub type ReadFile<'a> = dyn Fn(&str) -> Option<(Arc<str>, String)> + 'a;

/// What a path of the repository holds, for mounts and build contexts.
pub enum Found {
    /// Nothing.
    Absent,
    /// A file: its bytes, and whether it may be run.
    File(Vec<u8>, bool),
    /// A folder: its files at any depth.
    Folder(Vec<FolderEntry>),
    /// It cannot be read or is too large: why, in words.
    Unreadable(String),
}

/// A file inside a folder of the repository.
pub struct FolderEntry {
    /// Its path inside the folder.
    pub path: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Whether it may be run.
    pub executable: bool,
}

/// Looks a path of the repository up.
pub type Look<'a> = dyn Fn(&str) -> Found + 'a;

/// The repository's files, as the project reads them.
pub struct Repository<'a> {
    /// The text of a file (`.env`, an `env_file`, an included file).
    pub read: &'a ReadFile<'a>,
    /// Any path: a file's bytes, a folder's files.
    pub look: &'a Look<'a>,
}

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
    /// Whether images may be built from the repository (`target.compose.build`).
    pub build: bool,
}

/// The plumb service documents of parsed Compose `files`, merged as Compose merges them (a later
/// file's service over an earlier one's), with the services whose profiles are off left out.
/// Values are interpolated with `variables`, else those of the `.env` beside the first file (the
/// project's folder, which relative paths start from). `repository` gives the files, by
/// paths relative to the repository root.
pub fn services(
    files: &[Node],
    settings: &Settings<'_>,
    variables: &Lookup<'_>,
    repository: &Repository<'_>,
    out: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Node> {
    let mut services: BTreeMap<String, Node> = BTreeMap::new();
    let Some(first) = files.first() else {
        return services;
    };
    let mut project = Project::new(&first.at.file, settings.address, variables, repository, out);
    let mut merged = Merged::default();
    for file in files {
        absorb(file.clone(), settings, &mut project, &mut merged, 0, out);
    }
    objects::settle(&mut project, out);
    project.tasks = tasks(&merged.services);
    let bases = merged.services.clone();
    for (name, (key_at, service)) in &merged.services {
        let Some(mut service) = extended(name, service, &bases, &project, 0, out) else {
            continue;
        };
        merge::settle(&mut service);
        if let Some(service) = service::translate(name, &service, key_at, settings, &project, out) {
            services.insert(name.clone(), service);
        }
    }
    services
}

/// The services some service awaits to complete (`depends_on: {x: {condition:
/// service_completed_successfully}}`).
fn tasks(services: &IndexMap<String, (Origin, Node)>) -> std::collections::BTreeSet<String> {
    services
        .values()
        .filter_map(|(_, service)| service.get("depends_on")?.as_map())
        .flat_map(|dependencies| dependencies.iter())
        .filter(|(_, dependency)| {
            dependency.value.get("condition").and_then(scalar).as_deref() == Some("service_completed_successfully")
        })
        .map(|(name, _)| name.to_string())
        .collect()
}

/// How deep `include` and `extends` may nest: deeper is refused as a loop.
const MOST_NESTED: usize = 8;

/// How many files a project may include in all.
const MOST_LOADS: usize = 64;

/// The services of the files read so far, merged, and those that came from an `include`.
#[derive(Default)]
struct Merged {
    services: IndexMap<String, (Origin, Node)>,
    included: BTreeMap<String, Origin>,
}

/// Takes in one Compose file: its variables interpolated, its `include`s first, its top-level
/// definitions, and its services merged over those of earlier files (`depth` 0) — an included
/// file's service may not be defined again by the file that includes it.
fn absorb(
    mut file: Node,
    settings: &Settings<'_>,
    project: &mut Project<'_>,
    merged: &mut Merged,
    depth: usize,
    out: &mut Vec<Diagnostic>,
) {
    project.interpolate(&mut file, out);
    let Some(top) = file.as_map() else {
        out.push(Diagnostic::new(
            &file.at,
            "a Compose file is a map with `services`".to_owned(),
        ));
        return;
    };
    for (key, member) in top {
        match key.as_str() {
            "services" | "version" => {}
            "include" => {
                for include in included(&member.value, out) {
                    if depth >= MOST_NESTED {
                        out.push(Diagnostic::new(
                            &include.at,
                            "`include` nests too deep (a loop?)".to_owned(),
                        ));
                        continue;
                    }
                    let mut inner = Merged::default();
                    project.including.push(file.at.file.clone());
                    project.include(&file.at.file, include, settings, &mut inner, depth, out);
                    project.including.pop();
                    for (name, (key_at, service)) in inner.services {
                        if merged.services.contains_key(&name) {
                            out.push(Diagnostic::new(
                                &key_at,
                                format!("service `{name}` is defined by two included files; Compose refuses it"),
                            ));
                            continue;
                        }
                        merged.included.insert(name.clone(), key_at.clone());
                        merged.services.insert(name, (key_at, service));
                    }
                }
            }
            "name" => {
                if scalar(&member.value).as_deref() != Some(settings.project) && depth == 0 {
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
            "networks" => objects::keep(objects::Object::Network, &member.value, project, out),
            "volumes" => objects::keep(objects::Object::Volume, &member.value, project, out),
            "secrets" | "configs" => {
                let known = if key == "secrets" {
                    &mut project.secrets
                } else {
                    &mut project.configs
                };
                for (name, definition) in member.value.as_map().into_iter().flatten() {
                    known.insert(name.to_string(), definition.value.clone());
                }
            }
            key if key.starts_with("x-") => {}
            key => out.push(Diagnostic::new(
                &member.key_at,
                format!("`{key}` is refused: plumb's compose target does not carry it out"),
            )),
        }
    }
    let Some(list) = file.get("services").and_then(Node::as_map) else {
        if file.get("include").is_none() {
            out.push(Diagnostic::new(
                &file.at,
                "a Compose file is a map with `services`".to_owned(),
            ));
        }
        return;
    };
    for (name, member) in list {
        if let Some(from) = merged.included.get(name.as_str()) {
            out.push(Diagnostic::new(
                &member.key_at,
                format!("service `{name}` is already defined by an included file ({from}); Compose refuses to define it twice"),
            ));
            continue;
        }
        if member.value.merge == Some(crate::spec::node::MergeTag::Reset) {
            merged.services.shift_remove(name.as_str());
            continue;
        }
        match merged.services.get_mut(name.as_str()) {
            Some((_, earlier)) => merge::service(earlier, &member.value),
            None => {
                merged
                    .services
                    .insert(name.to_string(), (member.key_at.clone(), member.value.clone()));
            }
        }
    }
}

/// One item of an `include`: the files (later ones merged over earlier ones, as override
/// files), the folder their relative paths start from, and the files of default variables.
struct Include {
    at: Origin,
    paths: Vec<(String, Origin)>,
    project_directory: Option<(String, Origin)>,
    env_files: Vec<(String, Origin)>,
}

/// The items an `include` names: each a path, or `{path, project_directory, env_file}`.
fn included(node: &Node, out: &mut Vec<Diagnostic>) -> Vec<Include> {
    let mut includes = Vec::new();
    for item in match &node.kind {
        Kind::Seq(items) => items.iter().collect(),
        _ => vec![node],
    } {
        let mut include = Include {
            at: item.at.clone(),
            paths: Vec::new(),
            project_directory: None,
            env_files: Vec::new(),
        };
        match &item.kind {
            Kind::Map(members) => {
                for (key, member) in members {
                    match key.as_str() {
                        "path" => include.paths.extend(strings(&member.value, out)),
                        "env_file" => include.env_files.extend(strings(&member.value, out)),
                        "project_directory" => {
                            include.project_directory = scalar(&member.value).map(|d| (d, member.value.at.clone()));
                        }
                        other => out.push(Diagnostic::new(
                            &member.key_at,
                            format!("`{other}` of an `include` is not carried out by plumb's compose target"),
                        )),
                    }
                }
            }
            _ => include.paths.extend(scalar(item).map(|p| (p, item.at.clone()))),
        }
        if include.paths.is_empty() {
            out.push(Diagnostic::new(
                &item.at,
                "an `include` names the file to include in `path`".to_owned(),
            ));
            continue;
        }
        includes.push(include);
    }
    includes
}

/// `service` with the service it `extends` (in this project, or in another file) merged under
/// it, as Compose does; `None` when that cannot be found.
fn extended(
    name: &str,
    service: &Node,
    bases: &IndexMap<String, (Origin, Node)>,
    project: &Project<'_>,
    depth: usize,
    out: &mut Vec<Diagnostic>,
) -> Option<Node> {
    let Some(extends) = service.get("extends") else {
        return Some(service.clone());
    };
    if depth >= MOST_NESTED {
        out.push(Diagnostic::new(
            &extends.at,
            "`extends` nests too deep (a loop?)".to_owned(),
        ));
        return None;
    }
    let (base_name, file) = match &extends.kind {
        Kind::Map(_) => (extends.get("service").and_then(scalar), extends.get("file")),
        _ => (scalar(extends), None),
    };
    let Some(base_name) = base_name else {
        out.push(Diagnostic::new(&extends.at, "`extends` names a `service`".to_owned()));
        return None;
    };
    let base = match file.and_then(|f| Some((scalar(f)?, f.at.clone()))) {
        Some((path, at)) => {
            // From the folder of the file that extends (an included one's project folder).
            let file = &service.at.file;
            let folder = match project.folders.get(file) {
                Some(folder) => folder.clone(),
                None => file.rfind('/').map_or(String::new(), |slash| file[..=slash].to_owned()),
            };
            let mut node = project.load(&folder, &path, &at, out)?;
            project.interpolate(&mut node, out);
            let found = node.get("services").and_then(|s| s.get(&base_name)).cloned();
            let Some(found) = found else {
                out.push(Diagnostic::new(&at, format!("`{path}` has no service `{base_name}`")));
                return None;
            };
            let others: IndexMap<String, (Origin, Node)> = node
                .get("services")
                .and_then(Node::as_map)
                .into_iter()
                .flatten()
                .map(|(n, m)| (n.to_string(), (m.key_at.clone(), m.value.clone())))
                .collect();
            extended(&base_name, &found, &others, project, depth + 1, out)?
        }
        None => {
            let Some((_, found)) = bases.get(&base_name).filter(|_| base_name != name) else {
                out.push(Diagnostic::new(
                    &extends.at,
                    format!("`extends` names service `{base_name}`, which is not defined"),
                ));
                return None;
            };
            extended(&base_name, found, bases, project, depth + 1, out)?
        }
    };
    let mut result = base;
    let mut own = service.clone();
    if let Kind::Map(members) = &mut own.kind {
        members.shift_remove("extends");
    }
    merge::service(&mut result, &own);
    result.at = service.at.clone();
    Some(result)
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
    look: &'a Look<'a>,
    /// The top-level `secrets` and `configs`, by name.
    secrets: IndexMap<String, Node>,
    configs: IndexMap<String, Node>,
    /// The top-level `networks` and `volumes` as written (merged over the files), by name.
    network_nodes: IndexMap<String, (Origin, Node)>,
    volume_nodes: IndexMap<String, (Origin, Node)>,
    /// The external networks and volumes, by name, with their names on the engine.
    external_networks: BTreeMap<String, String>,
    external_volumes: BTreeMap<String, String>,
    /// The project's own networks and volumes, by name, with the settings they are created
    /// with (plumb's `NetworkDefinition` and `VolumeDefinition`).
    networks: BTreeMap<String, Node>,
    volumes: BTreeMap<String, Node>,
    /// The services another awaits to complete (`service_completed_successfully`): tasks.
    tasks: std::collections::BTreeSet<String>,
    /// The folder relative paths start from in each included file (with a trailing `/`): its
    /// own, or its `include`'s `project_directory`.
    folders: BTreeMap<Arc<str>, String>,
    /// The default variables of each included file (its `include`'s `env_file`, else the
    /// `.env` of its folder), under the project's own.
    defaults: BTreeMap<Arc<str>, Vec<dotenv::Entry>>,
    /// The files whose `include` is being followed, outermost first.
    including: Vec<Arc<str>>,
    /// How many files were included.
    loads: usize,
}

impl<'a> Project<'a> {
    fn new(
        first: &str,
        address: &'a str,
        variables: &'a Lookup<'a>,
        repository: &'a Repository<'a>,
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
            read: repository.read,
            look: repository.look,
            secrets: IndexMap::new(),
            configs: IndexMap::new(),
            network_nodes: IndexMap::new(),
            volume_nodes: IndexMap::new(),
            external_networks: BTreeMap::new(),
            external_volumes: BTreeMap::new(),
            networks: BTreeMap::new(),
            volumes: BTreeMap::new(),
            tasks: std::collections::BTreeSet::new(),
            folders: BTreeMap::new(),
            defaults: BTreeMap::new(),
            including: Vec::new(),
            loads: 0,
        };
        if let Some((file, text)) = project.read(".env")
            && let Some(entries) = dotenv_entries(file, &text, variables, out)
        {
            project.dotenv = entries;
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
        join(&self.folder, relative)
    }

    /// The repository path of `relative` written in `file`: from the project's folder, or from
    /// the file's own folder when it was included (as Compose resolves them).
    fn path_in(&self, file: &str, relative: &str) -> Option<String> {
        match self.folders.get(file) {
            Some(folder) => join(folder, relative),
            None => self.path(relative),
        }
    }

    /// The folder relative paths start from in `file` (with a trailing `/`).
    fn folder_of(&self, file: &str) -> String {
        match self.folders.get(file) {
            Some(folder) => folder.clone(),
            None => self.folder.clone(),
        }
    }

    /// Takes in the files of one `include` of `from` (merged together into `inner`), their
    /// relative paths starting from its `project_directory` (else the first file's folder),
    /// interpolated with its `env_file` (else that folder's `.env`) under the project's
    /// variables — as Compose includes them.
    fn include(
        &mut self,
        from: &Arc<str>,
        include: Include,
        settings: &Settings<'_>,
        inner: &mut Merged,
        depth: usize,
        out: &mut Vec<Diagnostic>,
    ) {
        let base = self.folder_of(from);
        let mut nodes = Vec::new();
        for (path, at) in &include.paths {
            if self.loads >= MOST_LOADS {
                out.push(Diagnostic::new(
                    at,
                    format!("more than {MOST_LOADS} files are included"),
                ));
                return;
            }
            let Some(node) = self.load(&base, path, at, out) else {
                return;
            };
            if self.including.contains(&node.at.file) {
                out.push(Diagnostic::new(
                    at,
                    format!("`{path}` includes itself, through this `include`"),
                ));
                return;
            }
            self.loads += 1;
            nodes.push(node);
        }
        let folder = match &include.project_directory {
            Some((directory, at)) => match join(&base, directory) {
                Some(folder) if folder.is_empty() => folder,
                Some(folder) => format!("{folder}/"),
                None => {
                    out.push(Diagnostic::new(at, format!("`{directory}` is outside the repository")));
                    return;
                }
            },
            None => {
                let first = &nodes[0].at.file;
                first
                    .rfind('/')
                    .map_or(String::new(), |slash| first[..=slash].to_owned())
            }
        };
        let mut defaults = Vec::new();
        let env_files: Vec<(String, Origin, bool)> = if include.env_files.is_empty() {
            vec![(format!("{folder}.env"), include.at.clone(), false)]
        } else {
            include
                .env_files
                .iter()
                .filter_map(|(path, at)| match join(&base, path) {
                    Some(path) => Some((path, at.clone(), true)),
                    None => {
                        out.push(Diagnostic::new(at, format!("`{path}` is outside the repository")));
                        None
                    }
                })
                .collect()
        };
        for (path, at, required) in env_files {
            match (self.read)(&path) {
                Some((file, text)) => {
                    defaults.extend(
                        dotenv_entries(file, &text, &|name| self.lookup(name), out)
                            .into_iter()
                            .flatten(),
                    );
                }
                None if required => out.push(Diagnostic::new(
                    &at,
                    format!("env file `{path}` is not in the repository"),
                )),
                None => {}
            }
        }
        for node in nodes {
            self.folders.insert(node.at.file.clone(), folder.clone());
            self.defaults.insert(node.at.file.clone(), defaults.clone());
            absorb(node, settings, self, inner, depth + 1, out);
        }
    }

    /// The Compose file at `relative` to `folder` of the repository, parsed; `None`, said at
    /// `at`, when it cannot be read.
    fn load(&self, folder: &str, relative: &str, at: &Origin, out: &mut Vec<Diagnostic>) -> Option<Node> {
        let Some(path) = join(folder, relative) else {
            out.push(Diagnostic::new(at, format!("`{relative}` is outside the repository")));
            return None;
        };
        let Some((name, text)) = (self.read)(&path) else {
            out.push(Diagnostic::new(
                at,
                format!("Compose file `{path}` is not in the repository"),
            ));
            return None;
        };
        let limits = super::yaml::Limits {
            compose: true,
            ..super::yaml::Limits::default()
        };
        match super::yaml::parse(&name, text.as_bytes(), limits) {
            Ok(node) => Some(node),
            Err(e) => {
                out.push(e.into());
                None
            }
        }
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

    /// Interpolates every string value under `node`, a file (keys are left as written, as
    /// Compose does): with the project's variables, then the file's defaults when it was
    /// included.
    fn interpolate(&self, node: &mut Node, out: &mut Vec<Diagnostic>) {
        let defaults = self.defaults.get(&node.at.file).map_or(&[][..], Vec::as_slice);
        let lookup = |name: &str| {
            self.lookup(name)
                .or_else(|| defaults.iter().rev().find(|e| e.name == name).map(|e| e.value.clone()))
        };
        interpolate_with(node, &lookup, out);
    }
}

/// Interpolates every string value under `node` with `lookup`.
fn interpolate_with(node: &mut Node, lookup: &dyn Fn(&str) -> Option<String>, out: &mut Vec<Diagnostic>) {
    match &mut node.kind {
            Kind::Str(text) => match interpolate::interpolate(text, lookup) {
                Ok(value) => *text = value.into(),
                Err(problem) => out.push(
                    Diagnostic::new(&node.at, format!("`{text}` {problem}")).hint(
                        "variables come from the environment's `target.compose.variables` and the `.env` beside the Compose file",
                    ),
                ),
            },
            Kind::Seq(items) => {
                for item in items {
                    interpolate_with(item, lookup, out);
                }
            }
            Kind::Map(members) => {
                for member in members.values_mut() {
                    interpolate_with(&mut member.value, lookup, out);
                }
            }
            _ => {}
    }
}

/// The variables of `.env` file `file` (holding `text`), earlier ones and `lookup` interpolated
/// into later ones; `None` when a line cannot be read, said at that line.
fn dotenv_entries(
    file: Arc<str>,
    text: &str,
    lookup: &Lookup<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<Vec<dotenv::Entry>> {
    match dotenv::parse(text, lookup) {
        Ok(entries) => Some(entries),
        Err(problem) => {
            let at = Origin {
                file,
                line: problem.line,
                column: 1,
            };
            out.push(Diagnostic::new(&at, problem.message));
            None
        }
    }
}

/// The repository path of `relative` to `folder`, `None` when it leaves the repository or is
/// absolute.
fn join(folder: &str, relative: &str) -> Option<String> {
    if relative.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = folder.split('/').filter(|p| !p.is_empty()).collect();
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

/// A map node at `at`.
fn map(entries: Vec<(&str, Node)>, at: &Origin) -> Node {
    let members: super::node::Members = entries
        .into_iter()
        .map(|(key, value)| {
            (
                key.into(),
                Member {
                    key_at: value.at.clone(),
                    value,
                },
            )
        })
        .collect();
    Node::new(Kind::Map(members), at.clone())
}

fn text(value: impl Into<Text>, at: &Origin) -> Node {
    Node::new(Kind::Str(value.into()), at.clone())
}

fn seq(items: Vec<Node>, at: &Origin) -> Node {
    Node::new(Kind::Seq(items), at.clone())
}

/// A scalar as text (`8080`, `true`, `x`); `None` for maps, lists and null.
fn scalar(node: &Node) -> Option<String> {
    match &node.kind {
        Kind::Str(s) => Some(s.to_string()),
        Kind::Int(i) => Some(i.to_string()),
        Kind::Float(f) => Some(f.to_string()),
        Kind::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A Compose list given as a string or a list of strings; an item that is neither is refused.
fn strings(node: &Node, out: &mut Vec<Diagnostic>) -> Vec<(String, Origin)> {
    let one = |node: &Node, out: &mut Vec<Diagnostic>| {
        let text = scalar(node);
        if text.is_none() {
            out.push(Diagnostic::new(
                &node.at,
                "this is a text, a number or a boolean".to_owned(),
            ));
        }
        text.map(|text| (text, node.at.clone()))
    };
    match &node.kind {
        Kind::Seq(items) => items.iter().filter_map(|item| one(item, out)).collect(),
        Kind::Null => Vec::new(),
        _ => one(node, out).into_iter().collect(),
    }
}

/// Words of a command written as one string, split as Compose does (POSIX shell words, no
/// shell): quotes group, a backslash escapes the next character outside single quotes (in
/// double quotes only `"`, `\`, `$` and a backquote). `None` when a quote is not closed.
fn words(command: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') if matches!(chars.peek(), Some('"' | '\\' | '$' | '`')) => {
                word.extend(chars.next());
            }
            (Some(_), c) => word.push(c),
            (None, '\\') => {
                word.extend(chars.next());
                started = true;
            }
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
    if quote.is_some() {
        return None;
    }
    if started {
        out.push(word);
    }
    Some(out)
}

/// `KEY=value` pairs of a list, or the members of a map; a name without a value (`KEY`, or
/// `KEY:` with nothing) comes with `None` and where it is written.
fn pairs(node: &Node, what: &str, out: &mut Vec<Diagnostic>) -> Vec<(Text, Option<Node>, Origin)> {
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
                let Some(line) = scalar(item) else {
                    out.push(Diagnostic::new(&item.at, format!("a {what} is written `NAME=value`")));
                    return None;
                };
                Some(match line.split_once('=') {
                    Some((key, value)) => (key.into(), Some(text(value, &item.at)), item.at.clone()),
                    None => (line.into(), None, item.at.clone()),
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
            build: true,
        };
        let look = |_: &str| Found::Absent;
        let repository = Repository {
            read: &read,
            look: &look,
        };
        let services = services(&[node], &settings, &variables, &repository, &mut out);
        (services, out)
    }

    #[test]
    fn a_compose_service_becomes_a_plumb_service() {
        let (services, problems) = translate_text(
            "services:\n  web:\n    image: shop/web:${TAG}\n    command: serve --port \"8000\"\n    env_file: web.env\n    \
             environment: {MODE: compose}\n    ports: [\"127.0.0.1:8080:8000\"]\n    volumes: [\"data:/var/lib/web:ro\"]\n    \
             networks: [back]\n    healthcheck: {test: \"curl -f localhost:8000\", retries: 5}\n    depends_on: {db: {condition: service_healthy}}\n    \
             deploy: {replicas: 3}\n    x-plumb: {strategy: {blueGreen: {}}}\n  debugger:\n    image: shop/dbg\n    profiles: [debug]\n  \
             tools:\n    image: shop/tools\n    profiles: [tools]\nvolumes: {data: {}}\nnetworks: {back: {internal: true}}\n",
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
        assert_eq!(web["container"]["networks"], serde_json::json!(["back"]));
        assert_eq!(
            web["container"]["networkDefinitions"],
            serde_json::json!({"back": {"internal": true}})
        );
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
    fn commands_split_into_words_as_a_shell_would() {
        assert_eq!(
            words(r#"a "b c" d\ e 'f\g' "h\"i" --x='y z'"#),
            Some(vec![
                "a".to_owned(),
                "b c".to_owned(),
                "d e".to_owned(),
                "f\\g".to_owned(),
                "h\"i".to_owned(),
                "--x=y z".to_owned()
            ])
        );
        assert_eq!(words("serve 'unclosed"), None);
    }

    #[test]
    fn later_files_merge_as_compose_merges_them() {
        let file: Arc<str> = Arc::from("deploy/compose.yaml");
        let over: Arc<str> = Arc::from("deploy/compose.prod.yaml");
        let base = parse(
            &file,
            b"services:\n  web:\n    image: web:1\n    command: [a]\n    environment: [A=1, B=2]\n    ports: ['8080:80']\n    volumes: ['data:/data']\nvolumes: {data: {}}\n",
            Limits::default(),
        )
        .unwrap();
        let overlay = parse(
            &over,
            b"services:\n  web:\n    command: [b]\n    environment: {B: 3}\n    ports: ['8443:443']\n    volumes: ['other:/data']\n    deploy: {resources: {limits: {cpus: '0.5', memory: 256m}}}\nvolumes: {other: {}}\n",
            Limits::default(),
        )
        .unwrap();
        let mut out = Vec::new();
        let settings = Settings {
            project: "shop",
            address: "127.0.0.1",
            profiles: &[],
            build: false,
        };
        let repository = Repository {
            read: &|_| None,
            look: &|_| Found::Absent,
        };
        let services = services(&[base, overlay], &settings, &|_| None, &repository, &mut out);
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
            "services:\n  web:\n    image: x\n    volumes_from: [db]\n    ports: [\"80\"]\n    environment: [HOME]\nmodels: {}\n",
        );
        let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("compose.yaml:4:5") && m.contains("`volumes_from`")),
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
                .any(|m| m.starts_with("compose.yaml:7:1") && m.contains("`models`")),
            "{messages:?}"
        );
    }
}
