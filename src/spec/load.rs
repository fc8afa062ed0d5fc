//! Reading a repository's documents at one revision: `plumb.yaml`, `services/*.yaml`,
//! `environments/*.yaml`, each parsed within the limits and paired with its file name. It does
//! not merge or render.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use git2::Oid;

use super::diagnostic::Diagnostic;
use super::memo::{Document, Documents};
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
    pub repository_node: Option<Arc<Node>>,
    /// Service documents by name.
    pub services: BTreeMap<String, Arc<Node>>,
    /// Environment documents by name, in promotion order when `plumb.yaml` is valid.
    pub environments: Vec<(String, Arc<Node>)>,
    /// The text of every file read, for showing the lines diagnostics point at.
    pub sources: HashMap<Arc<str>, Arc<str>>,
    /// What was wrong while reading.
    pub diagnostics: Vec<Diagnostic>,
    /// The documents parsed from blobs of a git tree, by path: what a memo keeps.
    pub(super) documents: Documents,
}

impl Loaded {
    /// Reads the documents of `tree`.
    pub fn read(tree: &dyn Tree, limits: Limits) -> Result<Loaded, SourceError> {
        Loaded::read_knowing(tree, limits, &Documents::default())
    }

    /// Reads the documents of `tree`, taking from `known` those whose blob it holds instead of
    /// parsing them again.
    pub(super) fn read_knowing(tree: &dyn Tree, limits: Limits, known: &Documents) -> Result<Loaded, SourceError> {
        let mut loaded = Loaded {
            commit: tree.commit(),
            repository: None,
            repository_node: None,
            services: BTreeMap::new(),
            environments: Vec::new(),
            sources: HashMap::new(),
            diagnostics: Vec::new(),
            documents: Documents::default(),
        };
        let blob = tree.blob(REPOSITORY_FILE)?;
        match loaded.document(tree, REPOSITORY_FILE, blob, limits, known)? {
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
        let all: Vec<File> = service_files.into_iter().chain(environment_files).collect();
        let mut parsed = parse_all(tree, &all, limits, known)?.into_iter();
        let mut environments = BTreeMap::new();
        for (i, (stem, ..)) in all.into_iter().enumerate() {
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

    /// Reads and parses one file (or takes it from `known`); a parse error becomes a diagnostic.
    fn document(
        &mut self,
        tree: &dyn Tree,
        path: &str,
        blob: Option<Oid>,
        limits: Limits,
        known: &Documents,
    ) -> Result<Option<Arc<Node>>, SourceError> {
        let parsed = parse_file(tree, path, blob, limits, known)?;
        Ok(self.accept(parsed))
    }

    /// Keeps a parsed file's text for messages, and its tree or its parse error.
    fn accept(&mut self, parsed: Option<Parsed>) -> Option<Arc<Node>> {
        let parsed = parsed?;
        if let Some(text) = &parsed.text {
            self.sources.insert(parsed.file.clone(), text.clone());
        }
        match parsed.node {
            Ok(node) => {
                if let Some(blob) = parsed.blob {
                    let document = Document {
                        blob,
                        node: node.clone(),
                        text: parsed.text,
                    };
                    self.documents.insert(parsed.file, document);
                }
                Some(node)
            }
            Err(diagnostic) => {
                self.diagnostics.push(diagnostic);
                None
            }
        }
    }

    /// A service or environment document, whose `name` must match its file name.
    /// A document kept from an earlier render passed these checks then, at the same path: only
    /// documents that pass them are kept.
    fn named_document(&mut self, stem: &str, parsed: Option<Parsed>) -> Option<Arc<Node>> {
        let (file, known) = parsed.as_ref().map(|p| (p.file.clone(), p.known))?;
        let node = self.accept(parsed)?;
        if known {
            return Some(node);
        }
        if let Err(message) = Name::parse(stem) {
            self.diagnostics
                .push(Diagnostic::new(&node.at, format!("file name: {message}")).hint("rename the file"));
            self.documents.remove(&file);
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
            self.documents.remove(&file);
        }
        Some(node)
    }

    fn read_repository(&mut self, node: Arc<Node>) {
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
    fn order_environments(&mut self, mut found: BTreeMap<String, Arc<Node>>) {
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

/// A document file: its stem, its path, and its blob id when the tree has them.
type File = (String, String, Option<Oid>);

/// The YAML files of `dir`, sorted.
fn yaml_files(tree: &dyn Tree, dir: &str) -> Result<Vec<File>, SourceError> {
    let files: Vec<(String, Option<Oid>)> = match tree.blobs(dir)? {
        Some(files) => files.into_iter().map(|(name, blob)| (name, Some(blob))).collect(),
        None => tree.list(dir)?.into_iter().map(|name| (name, None)).collect(),
    };
    Ok(files
        .into_iter()
        .filter(|(name, _)| !name.starts_with('.'))
        .filter_map(|(name, blob)| {
            let stem = name
                .strip_suffix(".yaml")
                .or_else(|| name.strip_suffix(".yml"))?
                .to_owned();
            Some((stem, format!("{dir}/{name}"), blob))
        })
        .collect())
}

/// A file read and parsed, not yet recorded.
struct Parsed {
    file: Arc<str>,
    /// The text, when it is UTF-8 within the size limit (kept for error excerpts).
    text: Option<Arc<str>>,
    node: Result<Arc<Node>, Diagnostic>,
    /// The blob it was read from, when the tree has blob ids.
    blob: Option<Oid>,
    /// Whether it was taken from the documents known instead of parsed.
    known: bool,
}

/// Reads and parses one file, or takes it from `known` when it holds the same blob at the same
/// path; `None` when it is absent.
fn parse_file(
    tree: &dyn Tree,
    path: &str,
    blob: Option<Oid>,
    limits: Limits,
    known: &Documents,
) -> Result<Option<Parsed>, SourceError> {
    if let Some(blob) = blob
        && let Some((file, document)) = known.get_key_value(path).filter(|(_, d)| d.blob == blob)
    {
        return Ok(Some(Parsed {
            file: file.clone(),
            text: document.text.clone(),
            node: Ok(document.node.clone()),
            blob: Some(blob),
            known: true,
        }));
    }
    let Some(bytes) = tree.read(path, limits.max_bytes)? else {
        return Ok(None);
    };
    let file: Arc<str> = Arc::from(path);
    let text = std::str::from_utf8(&bytes)
        .ok()
        .filter(|_| bytes.len() <= limits.max_bytes)
        .map(Arc::from);
    let node = yaml::parse(&file, &bytes, limits)
        .map(Arc::new)
        .map_err(Diagnostic::from);
    Ok(Some(Parsed {
        file,
        text,
        node,
        blob,
        known: false,
    }))
}

/// Below this many files, work on them is not worth another thread.
pub(super) const FEW_FILES: usize = 64;

/// Reads and parses `files` on every core, returning results in the same order.
fn parse_all(
    tree: &dyn Tree,
    files: &[File],
    limits: Limits,
    known: &Documents,
) -> Result<Vec<Option<Parsed>>, SourceError> {
    // Files known already are only looked up: when few are not, threads would cost more.
    let unknown = files
        .iter()
        .filter(|(_, path, blob)| blob.is_none_or(|blob| known.get(path.as_str()).is_none_or(|d| d.blob != blob)))
        .count();
    if unknown < FEW_FILES {
        let parse = |(_, path, blob): &File| parse_file(tree, path, *blob, limits, known);
        return files.iter().map(parse).collect();
    }
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len().max(1));
    // Worker `w` takes files w, w + workers, …: large and small files spread evenly. This
    // thread is worker 0.
    let share = |w: usize| {
        (files.iter().skip(w).step_by(workers))
            .map(|(_, path, blob)| parse_file(tree, path, *blob, limits, known))
            .collect::<Result<Vec<_>, _>>()
    };
    let results: Vec<Result<Vec<Option<Parsed>>, SourceError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..workers).map(|w| scope.spawn(move || share(w))).collect();
        let mine = share(0);
        std::iter::once(mine)
            .chain(handles.into_iter().map(|h| h.join().expect("parsing does not panic")))
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
