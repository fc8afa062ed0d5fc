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
        for (stem, path) in service_files {
            if let Some(node) = loaded.named_document(tree, &stem, &path, limits)? {
                loaded.services.insert(stem, node);
            }
        }
        let mut environments = BTreeMap::new();
        for (stem, path) in environment_files {
            if let Some(node) = loaded.named_document(tree, &stem, &path, limits)? {
                environments.insert(stem, node);
            }
        }
        loaded.order_environments(environments);
        Ok(loaded)
    }

    /// Reads and parses one file; a parse error becomes a diagnostic.
    fn document(&mut self, tree: &dyn Tree, path: &str, limits: Limits) -> Result<Option<Node>, SourceError> {
        let Some(bytes) = tree.read(path, limits.max_bytes)? else {
            return Ok(None);
        };
        let file: Arc<str> = Arc::from(path);
        if let Ok(text) = std::str::from_utf8(&bytes).map_err(drop).and_then(|t| {
            if bytes.len() <= limits.max_bytes {
                Ok(t)
            } else {
                Err(())
            }
        }) {
            self.sources.insert(file.clone(), Arc::from(text));
        }
        match yaml::parse(&file, &bytes, limits) {
            Ok(node) => Ok(Some(node)),
            Err(e) => {
                self.diagnostics.push(e.into());
                Ok(None)
            }
        }
    }

    /// Reads a service or environment document, whose `name` must match its file name.
    fn named_document(
        &mut self,
        tree: &dyn Tree,
        stem: &str,
        path: &str,
        limits: Limits,
    ) -> Result<Option<Node>, SourceError> {
        let Some(node) = self.document(tree, path, limits)? else {
            return Ok(None);
        };
        if let Err(message) = Name::parse(stem) {
            self.diagnostics
                .push(Diagnostic::new(&node.at, format!("file name: {message}")).hint("rename the file"));
            return Ok(None);
        }
        if let Some(name) = node.get("name") {
            if name.as_str().is_some_and(|n| n != stem) {
                self.diagnostics.push(
                    Diagnostic::new(&name.at, format!("`name` must match the file name `{stem}`"))
                        .path(&Path::default().key("name"))
                        .hint(format!("rename the file, or set `name: {stem}`")),
                );
            }
        }
        Ok(Some(node))
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
