//! Reading a repository's documents at one revision: `plumb.yaml`, `services/*.yaml`,
//! `environments/*.yaml`, each parsed within the limits and paired with its file name. It does
//! not merge or render.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use git2::Oid;

use super::diagnostic::Diagnostic;
use super::model::{Name, Repository};
use super::node::{Node, Origin, Path, Step};
use super::schema::BUILTIN;
use super::yaml::{self, Limits};
use crate::source::{SourceError, Tree};

/// The repository document's file.
pub const REPOSITORY_FILE: &str = "plumb.yaml";
/// The folder of service documents.
pub const SERVICES_DIR: &str = "services";
/// The folder of environment documents.
pub const ENVIRONMENTS_DIR: &str = "environments";
/// Most documents a repository may hold.
pub const MAX_DOCUMENTS: usize = 50_000;

/// Every document of a repository at one revision, parsed but not merged.
pub struct Loaded {
    /// The commit read, when read from git.
    pub commit: Option<Oid>,
    /// `plumb.yaml`, when it is valid.
    pub repository: Option<Repository>,
    /// `plumb.yaml` with positions, when it parsed.
    pub repository_node: Option<Node>,
    /// Service documents by name.
    pub services: BTreeMap<String, Node>,
    /// Environment documents by name, in promotion order when `plumb.yaml` is valid.
    pub environments: Vec<(String, Node)>,
    /// The text of every file read, for showing the lines diagnostics point at.
    pub sources: HashMap<Arc<str>, Arc<str>>,
    /// What was wrong while reading.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// Reads the documents of `tree`.
    pub fn read(tree: &dyn Tree, limits: Limits) -> Result<Loaded, SourceError> {
        let mut loaded = Loaded {
            commit: tree.commit(),
            repository: None,
            repository_node: None,
            services: BTreeMap::new(),
            environments: Vec::new(),
            sources: HashMap::new(),
            diagnostics: Vec::new(),
        };
        match loaded.document(tree, REPOSITORY_FILE, limits)? {
            Some(node) => loaded.read_repository(node),
            None => loaded.diagnostics.push(
                Diagnostic::new(
                    &Origin::file(&Arc::from(REPOSITORY_FILE)),
                    "no plumb.yaml: this is not a plumb config repository",
                )
                .hint("point --repo at the folder holding plumb.yaml, services/ and environments/"),
            ),
        }
        let service_files = yaml_files(tree, SERVICES_DIR)?;
        let environment_files = yaml_files(tree, ENVIRONMENTS_DIR)?;
        if service_files.len() + environment_files.len() > MAX_DOCUMENTS {
            loaded.diagnostics.push(Diagnostic::new(
                &Origin::file(&Arc::from(SERVICES_DIR)),
                format!("more than {MAX_DOCUMENTS} documents in services/ and environments/"),
            ));
            return Ok(loaded);
        }
        // Every document is parsed in one pass over all cores; results come back in order.
        let services_count = service_files.len();
        let all: Vec<(String, String)> = service_files.into_iter().chain(environment_files).collect();
        let mut parsed = parse_all(tree, &all, limits)?.into_iter();
        let mut environments = BTreeMap::new();
        for (i, (stem, _)) in all.into_iter().enumerate() {
            let node = loaded.named_document(&stem, parsed.next().flatten());
            match node {
                Some(node) if i < services_count => {
                    loaded.services.insert(stem, node);
                }
                Some(node) => {
                    environments.insert(stem, node);
                }
                None => {}
            }
        }
        loaded.order_environments(environments);
        Ok(loaded)
    }

    /// Reads and parses one file; a parse error becomes a diagnostic.
    fn document(&mut self, tree: &dyn Tree, path: &str, limits: Limits) -> Result<Option<Node>, SourceError> {
        let parsed = parse_file(tree, path, limits)?;
        Ok(self.accept(parsed))
    }

    /// Keeps a parsed file's text for messages, and its tree or its parse error.
    fn accept(&mut self, parsed: Option<Parsed>) -> Option<Node> {
        let parsed = parsed?;
        if let Some(text) = parsed.text {
            self.sources.insert(parsed.file, text);
        }
        match parsed.node {
            Ok(node) => Some(node),
            Err(diagnostic) => {
                self.diagnostics.push(diagnostic);
                None
            }
        }
    }

    /// A service or environment document, whose `name` must match its file name.
    fn named_document(&mut self, stem: &str, parsed: Option<Parsed>) -> Option<Node> {
        let node = self.accept(parsed)?;
        if let Err(message) = Name::parse(stem) {
            self.diagnostics
                .push(Diagnostic::new(&node.at, format!("file name: {message}")).hint("rename the file"));
            return None;
        }
        if let Some(name) = node.get("name")
            && name.as_str().is_some_and(|n| n != stem)
        {
            self.diagnostics.push(
                Diagnostic::new(&name.at, format!("`name` must match the file name `{stem}`"))
                    .path(&Path::default().key("name"))
                    .hint(format!("rename the file, or set `name: {stem}`")),
            );
        }
        Some(node)
    }

    fn read_repository(&mut self, node: Node) {
        let before = self.diagnostics.len();
        let json = node.to_json();
        BUILTIN.repository.check(&node, &json, &mut self.diagnostics);
        if self.diagnostics.len() == before {
            match serde_json::from_value::<Repository>(json) {
                Ok(repository) => self.repository = Some(repository),
                Err(e) => self.diagnostics.push(Diagnostic::new(&node.at, e.to_string())),
            }
        }
        self.repository_node = Some(node);
    }

    /// `serviceDefaults` of `plumb.yaml`, with positions.
    pub fn service_defaults(&self) -> Option<&Node> {
        self.repository_node.as_ref()?.get("serviceDefaults")
    }

    /// Puts environments in promotion order and reports any listed without a document, or
    /// with a document but not listed.
    fn order_environments(&mut self, mut found: BTreeMap<String, Node>) {
        let Some(repository) = &self.repository else {
            self.environments = found.into_iter().collect();
            return;
        };
        let file: Arc<str> = Arc::from(REPOSITORY_FILE);
        let root = self.repository_node.as_ref();
        for (i, name) in repository.environments.iter().enumerate() {
            let path = Path::default().key("environments").join(Step::Index(i));
            match found.remove(name.as_str()) {
                Some(node) => self.environments.push((name.to_string(), node)),
                None => {
                    let at = root.map_or_else(|| Origin::file(&file), |n| n.locate(&path.0).0.at.clone());
                    let d = if self.environments.iter().any(|(n, _)| n == name.as_str()) {
                        Diagnostic::new(&at, format!("environment `{name}` is listed twice"))
                    } else {
                        Diagnostic::new(&at, format!("environment `{name}` has no document"))
                            .hint(format!("add environments/{name}.yaml"))
                    };
                    self.diagnostics.push(d.path(&path));
                }
            }
        }
        for (name, node) in found {
            self.diagnostics.push(
                Diagnostic::new(&node.at, format!("environment `{name}` is not listed in plumb.yaml"))
                    .hint("add it to `environments` in plumb.yaml, in its place in the promotion order"),
            );
        }
    }
}

/// The YAML files of `dir`, as (stem, path), sorted.
fn yaml_files(tree: &dyn Tree, dir: &str) -> Result<Vec<(String, String)>, SourceError> {
    Ok(tree
        .list(dir)?
        .into_iter()
        .filter(|name| !name.starts_with('.'))
        .filter_map(|name| {
            let stem = name
                .strip_suffix(".yaml")
                .or_else(|| name.strip_suffix(".yml"))?
                .to_owned();
            Some((stem, format!("{dir}/{name}")))
        })
        .collect())
}

/// A file read and parsed, not yet recorded.
struct Parsed {
    file: Arc<str>,
    /// The text, when it is UTF-8 within the size limit (kept for error excerpts).
    text: Option<Arc<str>>,
    node: Result<Node, Diagnostic>,
}

/// Reads and parses one file; `None` when it is absent.
fn parse_file(tree: &dyn Tree, path: &str, limits: Limits) -> Result<Option<Parsed>, SourceError> {
    let Some(bytes) = tree.read(path, limits.max_bytes)? else {
        return Ok(None);
    };
    let file: Arc<str> = Arc::from(path);
    let text = std::str::from_utf8(&bytes)
        .ok()
        .filter(|_| bytes.len() <= limits.max_bytes)
        .map(Arc::from);
    let node = yaml::parse(&file, &bytes, limits).map_err(Diagnostic::from);
    Ok(Some(Parsed { file, text, node }))
}

/// Reads and parses `files` on every core, returning results in the same order.
fn parse_all(tree: &dyn Tree, files: &[(String, String)], limits: Limits) -> Result<Vec<Option<Parsed>>, SourceError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len().max(1));
    // Worker `w` takes files w, w + workers, …: large and small files spread evenly.
    let results: Vec<Result<Vec<Option<Parsed>>, SourceError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    files
                        .iter()
                        .skip(w)
                        .step_by(workers)
                        .map(|(_, path)| parse_file(tree, path, limits))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("parsing does not panic"))
            .collect()
    });
    let mut parts = Vec::with_capacity(workers);
    for part in results {
        parts.push(part?.into_iter());
    }
    let mut all = Vec::with_capacity(files.len());
    for i in 0..files.len() {
        all.push(parts[i % workers].next().expect("each worker parsed its share"));
    }
    Ok(all)
}
