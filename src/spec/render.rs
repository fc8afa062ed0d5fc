//! Rendering: the desired state of each environment, from the repository's service defaults,
//! the service documents and the environment's overlays, merged, checked against plumb's
//! schemas and the applications' own, and typed. Every problem is collected; an environment
//! with any is not rendered.

use super::rights::Allow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use git2::Oid;
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;

use super::check;
use super::diagnostic::{Diagnostic, closest, consolidate};
use super::load::Loaded;
use super::manifest::{self, Manifest};
use super::memo::{Kept, KeptService, Memo};
use super::merge::{merge, merge_into};
use super::model::environment::SyncPolicy;
use super::model::gates::{Gates, ImageKey, KeylessPolicy, KeylessSigners, SignedImages};
use super::model::scalar::{is_encrypted, mask};
use super::model::{Environment, Name, Service, Target};
use super::node::{Declared, Kind, Node, Origin, Path, Step};
use super::schema::{BUILTIN, Schema};
use super::sealed::{Keyring, Opened};
use super::yaml::{self, Limits};
use crate::source::{SourceError, Tree};

/// The desired state of one environment at one commit.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Desired {
    /// The environment.
    pub environment: Name,
    /// The commit rendered, when read from git.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Where its services run.
    pub target: Target,
    /// How the agent applies it.
    pub sync: SyncPolicy,
    /// What a commit must pass before it is applied (the environment's rollback point's
    /// rules are the ones in force).
    #[serde(skip_serializing_if = "Gates::is_empty")]
    pub gates: Gates,
    /// Its enabled services, by name, merged and validated; shared with the renders that found
    /// them unchanged (a memo's).
    pub services: BTreeMap<Name, Arc<Service>>,
    /// Plain Kubernetes objects it declares beside its services.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<Manifest>,
}

impl Desired {
    /// The JSON form with every encrypted value masked, for showing to people.
    pub fn to_masked_json(&self) -> Value {
        let mut value = serde_json::to_value(self).expect("desired state serializes");
        if let Some(Value::Object(services)) = value.get_mut("services") {
            for service in services.values_mut() {
                if let Value::Object(fields) = service {
                    fields.shift_remove("apiVersion");
                    fields.shift_remove("kind");
                }
            }
        }
        mask_encrypted(&mut value);
        value
    }
}

/// Replaces every encrypted string in `value` by its mask.
pub fn mask_encrypted(value: &mut Value) {
    match value {
        Value::String(s) if is_encrypted(s) => *s = mask(s),
        Value::Array(items) => items.iter_mut().for_each(mask_encrypted),
        Value::Object(map) => map.values_mut().for_each(mask_encrypted),
        _ => {}
    }
}

/// The outcome of rendering a repository.
pub struct Rendered {
    /// The environments rendered without problems, in promotion order.
    pub environments: IndexMap<String, Desired>,
    /// Every problem found, sorted and folded across environments.
    pub diagnostics: Vec<Diagnostic>,
    /// The text of every file read, for showing the lines diagnostics point at.
    pub sources: HashMap<Arc<str>, Arc<str>>,
}

impl Rendered {
    /// Whether the repository is valid.
    pub fn is_valid(&self) -> bool {
        self.diagnostics.is_empty()
    }
}

/// Why a repository could not be rendered at all (as opposed to being invalid).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Its files could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The environment asked for does not exist.
    #[error("no environment named `{name}`: {hint}")]
    UnknownEnvironment {
        /// The name asked for.
        name: String,
        /// The names that exist, or the nearest one.
        hint: String,
    },
}

/// Reads and renders `tree`: every environment, or only `only` (whose name must exist).
/// Encrypted values stay sealed: for showing and checking a repository.
pub fn render(tree: &dyn Tree, only: Option<&str>) -> Result<Rendered, RenderError> {
    render_with(tree, only, None, &Allow::default(), None)
}

/// Reads and renders `tree` as [`render`] does, opening every encrypted value with `keys`, and
/// granting its containers what `allow` grants: for applying. A value `keys` cannot open, or a
/// right not granted, is a problem at the line that wrote it.
pub fn render_opening(
    tree: &dyn Tree,
    only: Option<&str>,
    keys: &Keyring,
    allow: &Allow,
) -> Result<Rendered, RenderError> {
    render_with(tree, only, Some(keys), allow, None)
}

/// Renders `tree`; with a `memo`, from what it kept of the last render where nothing changed,
/// leaving in it what this render read.
pub(super) fn render_with(
    tree: &dyn Tree,
    only: Option<&str>,
    keys: Option<&Keyring>,
    allow: &Allow,
    mut memo: Option<&mut Memo>,
) -> Result<Rendered, RenderError> {
    debug_assert!(
        memo.is_none() || only.is_none(),
        "a memo's render renders every environment"
    );
    let limits = Limits::default();
    let mut loaded = match memo.as_deref_mut() {
        // A source that cannot be read loses nothing the memo kept: the next render retries.
        Some(memo) => {
            let known = std::mem::take(&mut memo.documents);
            match Loaded::read_knowing(tree, limits, &known) {
                Ok(loaded) => loaded,
                Err(e) => {
                    memo.documents = known;
                    return Err(e.into());
                }
            }
        }
        None => Loaded::read(tree, limits)?,
    };
    let mut diagnostics = std::mem::take(&mut loaded.diagnostics);
    let mut sources = std::mem::take(&mut loaded.sources);
    let schemas = AppSchemas::default();
    let mut environments = IndexMap::new();
    if let Some(only) = only
        && !loaded.environments.iter().any(|(name, _)| name == only)
    {
        let known: Vec<&str> = loaded.environments.iter().map(|(n, _)| n.as_str()).collect();
        let hint = match closest(only, known.iter().copied()) {
            Some(k) => format!("did you mean `{k}`?"),
            None => format!("the environments are: {}", known.join(", ")),
        };
        return Err(RenderError::UnknownEnvironment {
            name: only.to_owned(),
            hint,
        });
    }
    // Environments render in parallel, the first on this thread: they share only read-only
    // documents and the cache of compiled application schemas.
    let selected: Vec<&(String, Arc<Node>)> = loaded
        .environments
        .iter()
        .filter(|(name, _)| only.is_none_or(|o| o == name))
        .collect();
    // The Compose files and plain manifests the environments point at, read once each.
    let compose = ("compose", "files", "Compose file");
    let compose_limits = Limits {
        compose: true,
        ..limits
    };
    let composed = listed_files(&selected, tree, compose_limits, &mut sources, compose, yaml::parse);
    let manifest = ("kubernetes", "manifests", "manifest file");
    let manifests = listed_files(&selected, tree, limits, &mut sources, manifest, yaml::parse_documents);
    let (composed, manifests) = match (composed, manifests) {
        (Ok(composed), Ok(manifests)) => (composed, manifests),
        (Err(e), _) | (_, Err(e)) => {
            give_back(memo, &mut loaded.documents);
            return Err(e.into());
        }
    };
    let mut kept = memo.as_deref_mut().map(|memo| std::mem::take(&mut memo.environments));
    let results: Vec<Rendering> = std::thread::scope(|scope| {
        let mut jobs = selected.iter().map(|(name, node)| {
            let (loaded, schemas, composed, manifests) = (&loaded, &schemas, &composed, &manifests);
            // Only a memo's render keeps anything.
            let mut recall = kept.as_mut().map(|kept| kept.remove(name).unwrap_or_default());
            move || {
                let mut found = Vec::new();
                let context = Context {
                    loaded,
                    tree,
                    limits,
                    schemas,
                    composed,
                    manifests,
                    keys,
                    allow,
                };
                let rendered = render_environment(&context, name, node, recall.as_mut(), &mut found);
                (rendered, found, recall)
            }
        });
        // The first environment renders on this thread.
        let first = jobs.next();
        let handles: Vec<_> = jobs.map(|job| scope.spawn(job)).collect();
        (first.map(|job| job()).into_iter())
            .chain(handles.into_iter().map(|h| h.join().expect("rendering does not panic")))
            .collect()
    });
    let mut unreadable = None;
    for ((name, _), (rendered, found, now)) in selected.into_iter().zip(results) {
        if let (Some(memo), Some(mut now)) = (memo.as_deref_mut(), now) {
            if rendered.is_err() {
                // Stopped midway, its services are some of this render and some of the last:
                // their overlays are compared by value next time, not taken as the document's.
                now.environment = None;
            }
            memo.environments.insert(name.clone(), now);
        }
        match rendered {
            Ok(desired) => {
                if let Some(desired) = desired.filter(|_| found.is_empty()) {
                    environments.insert(name.clone(), desired);
                }
                diagnostics.extend(found);
            }
            Err(e) => {
                unreadable.get_or_insert(e);
            }
        }
    }
    if let Some(e) = unreadable {
        give_back(memo, &mut loaded.documents);
        return Err(e.into());
    }
    if only.is_none() {
        check::shared_ports(&environments, &loaded, &mut diagnostics);
        check::promotion_circles(&environments, &loaded, &mut diagnostics);
    }
    match memo {
        Some(memo) => memo.documents = std::mem::take(&mut loaded.documents),
        // Freeing the documents of many services takes milliseconds that need not delay the
        // caller; when no thread can be had, the closure that holds them frees them here.
        None if loaded.services.len() >= super::load::FEW_FILES => {
            let _ = std::thread::Builder::new().spawn(move || drop(loaded));
        }
        None => drop(loaded),
    }
    Ok(Rendered {
        environments,
        diagnostics: consolidate(diagnostics),
        sources,
    })
}

/// Gives `memo` (when rendering with one) the documents this render read, when it stops on a
/// file it cannot read: they are the repository's all the same, and the next render reuses them.
fn give_back(memo: Option<&mut Memo>, documents: &mut super::memo::Documents) {
    if let Some(memo) = memo {
        memo.documents = std::mem::take(documents);
    }
}

/// Files read for rendering, by path: parsed, or why they cannot be.
type Files<T> = HashMap<String, Result<T, Diagnostic>>;

/// Files the `selected` environments list under `target.<target>.<field>`, parsed by `parse`
/// (or why they cannot be), by path; their text joins `sources` for showing the lines problems
/// point at. `what` names such a file in a problem (`Compose file`).
fn listed_files<T>(
    selected: &[&(String, Arc<Node>)],
    tree: &dyn Tree,
    limits: Limits,
    sources: &mut HashMap<Arc<str>, Arc<str>>,
    (target, field, what): (&str, &str, &str),
    parse: Parser<T>,
) -> Result<Files<T>, SourceError> {
    let mut files = HashMap::new();
    for (_, node) in selected {
        let Some(Kind::Seq(listed)) = node
            .get("target")
            .and_then(|t| t.get(target))
            .and_then(|c| c.get(field))
            .map(|f| &f.kind)
        else {
            continue;
        };
        for item in listed {
            let Some(path) = item.as_str() else { continue };
            if files.contains_key(path) {
                continue;
            }
            let parsed = match tree.read(path, limits.max_bytes)? {
                None => Err(Diagnostic::new(
                    &item.at,
                    format!("{what} `{path}` is not in the repository"),
                )),
                Some(bytes) => {
                    let file: Arc<str> = Arc::from(path);
                    sources.insert(file.clone(), Arc::from(String::from_utf8_lossy(&bytes).as_ref()));
                    parse(&file, &bytes, limits).map_err(Diagnostic::from)
                }
            };
            files.insert(path.to_owned(), parsed);
        }
    }
    Ok(files)
}

/// What every environment's rendering reads.
struct Context<'a> {
    loaded: &'a Loaded,
    tree: &'a dyn Tree,
    limits: Limits,
    schemas: &'a AppSchemas,
    /// Compose files, by path.
    composed: &'a Files<Node>,
    /// Manifest files, by path.
    manifests: &'a Files<Vec<Node>>,
    /// The identities encrypted values are opened with; left sealed without.
    keys: Option<&'a Keyring>,
    /// What containers may take on the agent's hosts.
    allow: &'a Allow,
}

/// The most files a folder mounted or built from may hold.
const MOST_FOLDER_FILES: usize = 2_000;

/// The most bytes a folder mounted or built from may hold.
const MOST_FOLDER_BYTES: usize = 16 << 20;

/// What `path` of `tree` holds: a file's bytes (at most `max_bytes`), or a folder's files. What
/// cannot be taken is said in words (a symbolic link, too large); a tree that cannot be read
/// is an error.
fn look(tree: &dyn Tree, path: &str, max_bytes: usize) -> Result<super::compose::Found, SourceError> {
    use super::compose::{FolderEntry, Found};
    use crate::source::{EntryKind, WalkError, walk};
    let too_large = |path: &str| Ok(Found::Unreadable(format!("`{path}` is larger than {max_bytes} bytes")));
    let parent = path.rsplit_once('/').map_or("", |(parent, _)| parent);
    let name = path.rsplit('/').next().unwrap_or(path);
    let entry = match tree.entries(parent) {
        Ok(entries) => entries.into_iter().find(|e| e.name == name),
        Err(e) => return not_taken(e, ""),
    };
    match entry.map(|e| e.kind) {
        None if !path.is_empty() => Ok(Found::Absent),
        Some(EntryKind::File { executable }) => match tree.read(path, max_bytes) {
            Ok(Some(bytes)) if bytes.len() > max_bytes => too_large(path),
            Ok(Some(bytes)) => Ok(Found::File(bytes, executable)),
            Ok(None) => Ok(Found::Absent),
            Err(e) => not_taken(e, ""),
        },
        _ => {
            let files = match walk(tree, path, MOST_FOLDER_FILES) {
                Ok(files) => files,
                Err(WalkError::Source(e)) => return not_taken(e, &format!("folder `{path}`: ")),
                Err(e) => return Ok(Found::Unreadable(format!("folder `{path}`: {e}"))),
            };
            let mut entries = Vec::with_capacity(files.len());
            let mut total = 0;
            for (relative, executable) in files {
                let full = if path.is_empty() {
                    relative.clone()
                } else {
                    format!("{path}/{relative}")
                };
                let bytes = match tree.read(&full, max_bytes) {
                    Ok(Some(bytes)) if bytes.len() > max_bytes => return too_large(&full),
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => continue,
                    Err(e) => return not_taken(e, ""),
                };
                total += bytes.len();
                if total > MOST_FOLDER_BYTES {
                    let why = format!("folder `{path}` holds more than {MOST_FOLDER_BYTES} bytes");
                    return Ok(Found::Unreadable(why));
                }
                entries.push(FolderEntry {
                    path: relative,
                    bytes,
                    executable,
                });
            }
            Ok(Found::Folder(entries))
        }
    }
}

/// Why a file or folder a Compose file names is not taken: a symbolic link is said in words
/// (`before` it); any other error reading the tree is returned, and stops the render.
fn not_taken(e: SourceError, before: &str) -> Result<super::compose::Found, SourceError> {
    match e {
        SourceError::Symlink(_) => Ok(super::compose::Found::Unreadable(format!("{before}{e}"))),
        e => Err(e),
    }
}

/// The services of the Compose files `target` points at, as service documents; a name also
/// declared in `services/` is refused. A file they name that the repository holds but that
/// cannot be read stops the render, as any other.
fn compose_services(
    context: &Context,
    environment: &str,
    target: &Target,
    out: &mut Vec<Diagnostic>,
) -> Result<BTreeMap<String, Node>, SourceError> {
    let Target::Compose(compose) = target else {
        return Ok(BTreeMap::new());
    };
    let mut nodes = Vec::new();
    for file in &compose.files {
        match context.composed.get(file) {
            Some(Ok(node)) => nodes.push(node.clone()),
            Some(Err(problem)) => out.push(problem.clone()),
            None => {}
        }
    }
    // A file too large to read whole, or not text, is refused, never read cut or mended; one
    // that cannot be read stops the render (it is there: the next render tries again).
    let max_bytes = context.limits.max_bytes;
    let unfit = std::cell::RefCell::new(BTreeMap::new());
    let unreadable = std::cell::RefCell::new(None);
    let read = |path: &str| {
        let bytes = match context.tree.read(path, max_bytes) {
            Ok(bytes) => bytes?,
            Err(SourceError::Symlink(_)) => {
                let why = "is a symbolic link; plumb reads only regular files from a config repository";
                unfit.borrow_mut().insert(path.to_owned(), why.to_owned());
                return None;
            }
            Err(e) => {
                unreadable.borrow_mut().get_or_insert(e);
                return None;
            }
        };
        if bytes.len() > max_bytes {
            let why = format!("is larger than {max_bytes} bytes: plumb reads no file cut short");
            unfit.borrow_mut().insert(path.to_owned(), why);
            return None;
        }
        match String::from_utf8(bytes) {
            Ok(text) => Some((Arc::from(path), text)),
            Err(e) => {
                let why = format!("is not UTF-8 text: {}", e.utf8_error());
                unfit.borrow_mut().insert(path.to_owned(), why);
                None
            }
        }
    };
    let variables = |name: &str| {
        compose.variables.get(name).cloned().or_else(|| {
            compose
                .agent_variables
                .iter()
                .any(|n| n == name)
                .then(|| std::env::var(name).ok())
                .flatten()
        })
    };
    let look = |path: &str| {
        look(context.tree, path, max_bytes).unwrap_or_else(|e| {
            let why = e.to_string();
            unreadable.borrow_mut().get_or_insert(e);
            super::compose::Found::Unreadable(why)
        })
    };
    let project = compose.project.as_ref().map_or(environment, |p| p.as_str());
    let settings = super::compose::Settings {
        project,
        address: &compose.address,
        profiles: &compose.profiles,
        build: compose.build,
    };
    let repository = super::compose::Repository {
        read: &read,
        look: &look,
    };
    let mut services = super::compose::services(&nodes, &settings, &variables, &repository, out);
    if let Some(e) = unreadable.into_inner() {
        return Err(e);
    }
    for (path, why) in unfit.into_inner() {
        out.push(Diagnostic::new(
            &super::node::Origin::file(&Arc::from(path.as_str())),
            format!("`{path}` {why}"),
        ));
    }
    services.retain(|name, node| {
        if Name::parse(name).is_err() {
            out.push(Diagnostic::new(
                &node.at,
                format!("Compose service `{name}` needs a plumb name: lowercase letters, digits and dashes"),
            ));
            return false;
        }
        if let Some(declared) = context.loaded.services.get(name) {
            out.push(
                Diagnostic::new(
                    &node.at,
                    format!("service `{name}` is declared both here and in services/"),
                )
                .hint(format!("declared at {}", declared.at)),
            );
            return false;
        }
        true
    });
    Ok(services)
}

/// Renders environment `name` from its document `node`; with what a memo `kept` of its last
/// render, renders again only what changed since, and leaves in `kept` what this render found.
fn render_environment(
    context: &Context,
    name: &str,
    node: &Arc<Node>,
    mut kept: Option<&mut Kept>,
    out: &mut Vec<Diagnostic>,
) -> Result<Option<Desired>, SourceError> {
    let loaded = context.loaded;
    if let Some(kept) = kept.as_deref_mut() {
        kept.reused = 0;
    }
    let overlays_kept = kept.as_deref().is_some_and(|kept| kept.checked(node));
    let environment = match kept.as_deref().and_then(|kept| kept.environment(node)) {
        Some(environment) => environment,
        None => {
            let json = node.to_json();
            let before = out.len();
            BUILTIN.environment.check(node, &json, out);
            if out.len() > before {
                return Ok(None);
            }
            let environment: Environment = match typed(node, json) {
                Ok(e) => e,
                Err(d) => {
                    out.push(d);
                    return Ok(None);
                }
            };
            if let Some(kept) = kept.as_deref_mut() {
                kept.keep_environment(node, &environment);
            }
            environment
        }
    };
    let composed = compose_services(context, name, &environment.target, out)?;
    // Every service by name, with its document when it has one (a Compose file's service has
    // none; one named as one of services/ was refused above). The documents are shared by every
    // environment: borrowed, never copied.
    let mut documents: Vec<(&str, &Node, Option<&Arc<Node>>)> = (loaded.services.iter())
        .map(|(name, node)| (name.as_str(), &**node, Some(node)))
        .chain(composed.iter().map(|(name, node)| (name.as_str(), node, None)))
        .collect();
    if !composed.is_empty() {
        documents.sort_by_key(|(name, ..)| *name);
    }
    let declared: Declared = documents.iter().map(|&(name, node, _)| (name, node)).collect();
    let overlays = node.get("services").and_then(Node::as_map);
    if let Some(overlays) = overlays {
        for (service, member) in overlays {
            check_overlay(&declared, service, member, out);
        }
    }
    if let Some(kept) = kept.as_deref_mut() {
        kept.start(&environment.target, loaded.service_defaults());
    }
    // Built in name order, then made a map at once.
    let mut services = Vec::with_capacity(documents.len());
    let mut schema_blobs = HashMap::new();
    let mut invalid = BTreeSet::new();
    for &(service, base, document) in &documents {
        let overlay = overlays.and_then(|o| o.get(service)).map(|o| &o.value);
        // Services of Compose files have no document of their own and are never kept.
        if let (Some(kept), Some(document)) = (kept.as_deref_mut(), document) {
            let inputs = (service, document, overlay, overlays_kept);
            if let Some(reused) = reused(kept, inputs, &mut schema_blobs, context)? {
                if let Some(typed) = reused {
                    let key = Name::parse(service).expect("document file names are checked when read");
                    services.push((key, typed));
                }
                continue;
            }
        }
        let start = out.len();
        let merged = merged_service(loaded, base, overlay, out);
        if merged.get("enabled").is_some_and(|e| e.kind == Kind::Bool(false)) {
            if let Some(kept) = kept.as_deref_mut() {
                let clean = document.filter(|_| out.len() == start);
                keep_service(kept, service, clean, overlay, &merged, None, context)?;
            }
            continue;
        }
        let merged_json = merged.to_json();
        let before = out.len();
        BUILTIN.service.check(&merged, &merged_json, out);
        let mut sealed = Vec::new();
        find_sealed(&merged, &mut Vec::new(), &mut sealed, out);
        let opened = context
            .keys
            .filter(|_| !sealed.is_empty())
            .map(|keys| open_sealed(&sealed, keys, out));
        check_app_config(&merged, &merged_json, opened.as_ref(), context, out)?;
        let typed = if out.len() == before {
            typed::<Service>(&merged, merged_json).map_err(|d| out.push(d)).ok()
        } else {
            None
        };
        if let Some(mut typed) = typed {
            typed.opened = opened.unwrap_or_default();
            check::service(&typed, &merged, &environment.target, out);
            super::rights::check(&typed, &merged, context.allow, out);
            let typed = Arc::new(typed);
            if let Some(kept) = kept.as_deref_mut() {
                let clean = document.filter(|_| out.len() == start);
                keep_service(kept, service, clean, overlay, &merged, Some(&typed), context)?;
            }
            let key = Name::parse(service).expect("document file names are checked when read");
            services.push((key, typed));
        } else {
            invalid.insert(service.to_owned());
            if let Some(kept) = kept.as_deref_mut() {
                kept.services.remove(service);
            }
        }
        out[before..]
            .iter_mut()
            .for_each(|d| d.environments = vec![name.to_owned()]);
    }
    if let Some(kept) = kept {
        kept.services
            .retain(|service, _| declared.contains_key(service.as_str()));
    }
    let services: BTreeMap<Name, Arc<Service>> = services.into_iter().collect();
    check::environment(&environment, &services, &invalid, &declared, name, out);
    check::windows(&environment, node, name, out);
    let declared_environments: Vec<&str> = loaded.environments.iter().map(|(n, _)| n.as_str()).collect();
    check::promotion(&environment, node, name, &declared_environments, out);
    let images = signed_images(context, &environment, node, name, out)?;
    let manifests = match &environment.target {
        Target::Kubernetes(kubernetes) => {
            let before = out.len();
            let found = manifest::manifests(
                &kubernetes.manifests,
                context.manifests,
                kubernetes.namespace.as_str(),
                out,
            );
            out[before..]
                .iter_mut()
                .for_each(|d| d.environments = vec![name.to_owned()]);
            found
        }
        _ => Vec::new(),
    };
    Ok(Some(Desired {
        environment: environment.name,
        commit: loaded.commit.map(|c| c.to_string()),
        target: environment.target,
        sync: environment.sync,
        gates: Gates {
            sync_windows: environment.sync_windows,
            promotion: environment.promotion,
            approval: environment.approval,
            images,
        },
        services,
        manifests,
    }))
}

/// Service `name` as `kept` holds it (`Some(None)`: disabled), when rendering it again from
/// `document` and `overlay` (`overlays_kept`: the environment's document is the one last
/// checked) would give the same; `None` when it must be rendered. `schema_blobs` are the blob
/// ids of application schemas this environment looked up: the environments' threads would wait
/// on each other at the shared ones.
fn reused(
    kept: &mut Kept,
    (name, document, overlay, overlays_kept): (&str, &Arc<Node>, Option<&Node>, bool),
    schema_blobs: &mut HashMap<String, Option<Oid>>,
    context: &Context,
) -> Result<Option<Option<Arc<Service>>>, SourceError> {
    let Some(entry) = kept.services.get(name) else {
        return Ok(None);
    };
    let schema_blob = |path: &str| {
        if let Some(blob) = schema_blobs.get(path) {
            return Ok(*blob);
        }
        let blob = context.schemas.blob(context.tree, path)?;
        schema_blobs.insert(path.to_owned(), blob);
        Ok(blob)
    };
    if !entry.holds(document, (overlay, overlays_kept), schema_blob)? {
        return Ok(None);
    }
    let service = entry.service.clone();
    kept.reused += 1;
    Ok(Some(service))
}

/// Keeps in `kept` service `name` as rendered (`None`: disabled) from `document` and `overlay`
/// into `merged`; `document` is `None` when the service had a problem, and is then dropped.
fn keep_service(
    kept: &mut Kept,
    name: &str,
    document: Option<&Arc<Node>>,
    overlay: Option<&Node>,
    merged: &Node,
    service: Option<&Arc<Service>>,
    context: &Context,
) -> Result<(), SourceError> {
    let Some(document) = document else {
        kept.services.remove(name);
        return Ok(());
    };
    // A disabled service is not checked against its schema: the schema is not one of its inputs.
    let schema_path = merged
        .get("config")
        .and_then(|c| c.get("schema"))
        .and_then(Node::as_str);
    let schema = match schema_path.filter(|_| service.is_some()) {
        Some(path) => Some((path.to_owned(), context.schemas.blob(context.tree, path)?)),
        None => None,
    };
    let entry = KeptService {
        base: document.clone(),
        overlay: overlay.cloned(),
        schema,
        service: service.cloned(),
    };
    kept.services.insert(name.to_owned(), entry);
    Ok(())
}

/// The signers `images.requireSignature` names, read from the repository: each key missing or
/// not a cosign public key is reported at its line, and so is what is wrong with the keyless
/// signers (`keyless_signers`). Refused on the local target, which runs commands, not images.
fn signed_images(
    context: &Context,
    environment: &Environment,
    node: &Node,
    name: &str,
    out: &mut Vec<Diagnostic>,
) -> Result<Option<SignedImages>, SourceError> {
    let Some(policy) = &environment.images else {
        return Ok(None);
    };
    let located = |path: &Path| node.locate(&path.0).0.at.clone();
    let images = Path::default().key("images");
    if let Target::Local(_) = environment.target {
        let message = "`images`: the local target runs commands, not images";
        out.push(
            Diagnostic::new(&located(&images), message)
                .path(&images)
                .environment(name),
        );
        return Ok(None);
    }
    let mut keys = Vec::new();
    for (i, file) in policy.require_signature.keys.iter().enumerate() {
        let path = images.clone().key("requireSignature").key("keys").join(Step::Index(i));
        let read = context.tree.read(file, context.limits.max_bytes)?;
        let problem = match read {
            None => format!("key file `{file}` is not in the repository"),
            Some(bytes) => {
                let pem = String::from_utf8_lossy(&bytes).into_owned();
                match crate::gate::images::cosign::key(&pem) {
                    Ok(_) => {
                        keys.push(ImageKey {
                            file: file.clone(),
                            pem,
                        });
                        continue;
                    }
                    Err(why) => format!("`{file}` is not a cosign public key: {why}"),
                }
            }
        };
        out.push(Diagnostic::new(&located(&path), problem).path(&path).environment(name));
    }
    let required = images.clone().key("requireSignature");
    let keyless = match &policy.require_signature.keyless {
        Some(keyless) => keyless_signers(context, keyless, &required.clone().key("keyless"), &located, name, out)?,
        None if policy.require_signature.keys.is_empty() => {
            let message = "names no key (`keys`) and no keyless identity (`keyless`): no image could run";
            out.push(
                Diagnostic::new(&located(&required), message)
                    .path(&required)
                    .environment(name),
            );
            None
        }
        None => None,
    };
    Ok(Some(SignedImages { keys, keyless }))
}

/// The keyless signers `policy` names, with its trusted root read from the repository: a root
/// missing or not one, an identity naming neither or both of `subject` and `subjectPattern`, or
/// a pattern that is not a regular expression is reported at its line.
fn keyless_signers(
    context: &Context,
    policy: &KeylessPolicy,
    at: &Path,
    located: &dyn Fn(&Path) -> Origin,
    name: &str,
    out: &mut Vec<Diagnostic>,
) -> Result<Option<KeylessSigners>, SourceError> {
    let mut report = |path: &Path, message: String| {
        out.push(Diagnostic::new(&located(path), message).path(path).environment(name));
    };
    let mut sound = true;
    for (i, identity) in policy.identities.iter().enumerate() {
        let path = at.clone().key("identities").join(Step::Index(i));
        match (&identity.subject, &identity.subject_pattern) {
            (Some(_), None) => {}
            (None, Some(pattern)) => {
                if let Err(why) = crate::gate::images::keyless::pattern_of(pattern) {
                    report(&path.key("subjectPattern"), why);
                    sound = false;
                }
            }
            (None, None) => {
                report(
                    &path,
                    "names neither `subject` nor `subjectPattern`: name one".to_owned(),
                );
                sound = false;
            }
            (Some(_), Some(_)) => {
                report(&path, "names both `subject` and `subjectPattern`: name one".to_owned());
                sound = false;
            }
        }
    }
    let path = at.clone().key("trustedRoot");
    let file = &policy.trusted_root;
    let Some(bytes) = context.tree.read(file, context.limits.max_bytes)? else {
        report(&path, format!("trusted root `{file}` is not in the repository"));
        return Ok(None);
    };
    let root = String::from_utf8_lossy(&bytes).into_owned();
    if let Err(why) = crate::gate::images::keyless::root::TrustedRoot::parse(root.as_bytes()) {
        report(&path, format!("`{file}` is not a Sigstore trusted root: {why}"));
        return Ok(None);
    }
    Ok(sound.then(|| KeylessSigners {
        file: file.clone(),
        root,
        identities: policy.identities.clone(),
    }))
}

/// A service's document as an environment renders it: the repository's service defaults, the
/// service's own file (`base`), the environment's `overlay`; every value keeps the file and line
/// that wrote it.
fn merged_service(loaded: &Loaded, base: &Node, overlay: Option<&Node>, out: &mut Vec<Diagnostic>) -> Node {
    let mut merged = match loaded.service_defaults() {
        Some(defaults) => merge(defaults, base, "", out),
        None => base.clone(),
    };
    // The service's own name and kind are never inherited from defaults.
    if let (Kind::Map(m), Kind::Map(b)) = (&mut merged.kind, &base.kind) {
        for key in ["apiVersion", "kind", "name"] {
            if let Some(member) = b.get(key) {
                m.insert(key.into(), member.clone());
            }
        }
    }
    if let Some(overlay) = overlay.filter(|o| o.as_map().is_some()) {
        merge_into(&mut merged, overlay, "", out);
    }
    merged
}

/// The document of `service` (declared in `services/`) as `environment` renders it, each value
/// with the file and line that wrote it; `None` when either is not declared. For saying where a
/// value comes from: the document is not checked (render the repository for that).
pub fn service_origins(tree: &dyn Tree, environment: &str, service: &str) -> Result<Option<Node>, SourceError> {
    let loaded = Loaded::read(tree, Limits::default())?;
    let Some((_, environment)) = loaded.environments.iter().find(|(name, _)| name == environment) else {
        return Ok(None);
    };
    let Some(base) = loaded.services.get(service) else {
        return Ok(None);
    };
    let overlay = environment.get("services").and_then(|s| s.get(service));
    Ok(Some(merged_service(&loaded, base, overlay, &mut Vec::new())))
}

/// A [`Step`] that borrows its key.
enum StepRef<'a> {
    Key(&'a str),
    Index(usize),
}

/// The encrypted values under `node`, with their paths, into `found`. `path` leads to `node`: a
/// stack of keys (or indexes) pushed and popped on the way down, made a [`Path`] only for a
/// value found. Only a variable's value and the application's configuration values may be
/// encrypted: one written elsewhere is a problem at its line.
fn find_sealed<'a>(
    node: &'a Node,
    path: &mut Vec<StepRef<'a>>,
    found: &mut Vec<(&'a Node, Path)>,
    out: &mut Vec<Diagnostic>,
) {
    match &node.kind {
        Kind::Str(s) if is_encrypted(s) => {
            let steps = path.iter().map(|step| match *step {
                StepRef::Key(key) => Step::Key(key.to_owned()),
                StepRef::Index(index) => Step::Index(index),
            });
            let path = Path(steps.collect());
            let secret_field = match path.0.as_slice() {
                [Step::Key(env), Step::Index(_), Step::Key(value)] => env == "env" && value == "value",
                [
                    Step::Key(container),
                    Step::Key(files),
                    Step::Index(_),
                    Step::Key(content),
                ] if container == "container" => files == "files" && content == "content",
                [Step::Key(config), Step::Key(values), ..] => config == "config" && values == "values",
                _ => false,
            };
            if secret_field {
                found.push((node, path));
            } else {
                let message =
                    "only a variable's `value`, `config.values` and a mounted file's `content` may be encrypted";
                out.push(Diagnostic::new(&node.at, message).path(&path));
            }
        }
        Kind::Map(map) => {
            for (key, member) in map {
                path.push(StepRef::Key(key));
                find_sealed(&member.value, path, found, out);
                path.pop();
            }
        }
        Kind::Seq(items) => {
            for (index, item) in items.iter().enumerate() {
                path.push(StepRef::Index(index));
                find_sealed(item, path, found, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The clear values of `sealed`, opened with `keys`; one that cannot be opened is a problem at
/// its line.
fn open_sealed(sealed: &[(&Node, Path)], keys: &Keyring, out: &mut Vec<Diagnostic>) -> Opened {
    let mut opened = BTreeMap::new();
    for (node, path) in sealed {
        let Some(text) = node.as_str() else { continue };
        match keys.open(text) {
            Ok(clear) => {
                opened.insert(text.to_owned(), clear);
            }
            Err(e) => out.push(Diagnostic::new(&node.at, format!("cannot decrypt this value: {e}")).path(path)),
        }
    }
    Opened::new(opened)
}

/// An overlay must name a known service and may not rename it.
fn check_overlay(declared: &Declared, service: &str, member: &super::node::Member, out: &mut Vec<Diagnostic>) {
    let path = Path::default().key("services").key(service);
    if !declared.contains_key(service) {
        let mut d = Diagnostic::new(&member.key_at, format!("overlay for unknown service `{service}`")).path(&path);
        if let Some(k) = closest(service, declared.keys().copied()) {
            d = d.hint(format!("did you mean `{k}`?"));
        } else {
            d = d.hint("declare the service in services/ first; an overlay only changes a service");
        }
        out.push(d);
        return;
    }
    if let Some(map) = member.value.as_map() {
        for key in ["apiVersion", "kind", "name"] {
            if let Some(m) = map.get(key) {
                out.push(
                    Diagnostic::new(&m.key_at, format!("an overlay cannot change `{key}`"))
                        .path(&path.key(key))
                        .hint("remove it from the overlay"),
                );
            }
        }
    }
}

/// Reads one file listed by an environment into `T`.
type Parser<T> = fn(&Arc<str>, &[u8], Limits) -> Result<T, yaml::YamlError>;

/// One environment rendered: its desired state when valid (or the source that could not be
/// read), its problems, and what a memo keeps, even when the source could not be read.
type Rendering = (Result<Option<Desired>, SourceError>, Vec<Diagnostic>, Option<Kept>);

/// Deserializes a schema-checked document from its JSON form, taking its strings rather than
/// copying them; a remaining error still names its path.
// A diagnostic is large, and the error path is the rare one.
#[allow(clippy::result_large_err)]
pub(crate) fn typed<T: serde::de::DeserializeOwned>(node: &Node, json: Value) -> Result<T, Diagnostic> {
    // Following the path slows every value down; it is only needed to say where typing failed,
    // which the schema check makes rare.
    serde_json::from_value(json).or_else(|_| traced(node))
}

/// Deserializes `node` again, following the path to say where that fails.
#[allow(clippy::result_large_err)]
#[cold]
fn traced<T: serde::de::DeserializeOwned>(node: &Node) -> Result<T, Diagnostic> {
    serde_path_to_error::deserialize(node.to_json()).map_err(|e| {
        let path = Path(
            e.path()
                .iter()
                .filter_map(|s| match s {
                    serde_path_to_error::Segment::Seq { index } => Some(Step::Index(*index)),
                    serde_path_to_error::Segment::Map { key } => Some(Step::Key(key.clone())),
                    _ => None,
                })
                .collect(),
        );
        let (found, _) = node.locate(&path.0);
        Diagnostic::new(&found.at, e.inner().to_string()).path(&path)
    })
}

/// Application schemas, read and compiled once per path, and the blob ids of their files.
#[derive(Default)]
struct AppSchemas {
    /// Each schema, by path, or why it cannot be used.
    compiled: std::sync::Mutex<HashMap<String, Result<Arc<Schema>, String>>>,
    /// Each schema file's blob id, by path (`None`: absent, or the tree has none).
    blobs: std::sync::Mutex<HashMap<String, Option<Oid>>>,
}

impl AppSchemas {
    /// The blob id of the schema file at `path` (`None` when absent or the tree has none),
    /// looked up once.
    fn blob(&self, tree: &dyn Tree, path: &str) -> Result<Option<Oid>, SourceError> {
        let mut blobs = self.blobs.lock().expect("the lock is never poisoned");
        if let Some(blob) = blobs.get(path) {
            return Ok(*blob);
        }
        let blob = tree.blob(path)?;
        blobs.insert(path.to_owned(), blob);
        Ok(blob)
    }

    /// The compiled schema at `path`, reading it on first use.
    fn get(&self, tree: &dyn Tree, path: &str, limits: Limits) -> Result<Result<Arc<Schema>, String>, SourceError> {
        let mut cache = self.compiled.lock().expect("the lock is never poisoned");
        if !cache.contains_key(path) {
            let compiled = load_app_schema(tree, path, limits)?;
            cache.insert(path.to_owned(), compiled);
        }
        Ok(cache[path].clone())
    }
}

/// Checks a service's `config.values` against the application's schema. Works on the merged
/// tree, so the values are checked even when another part of the service is invalid; with the
/// values `opened`, the encrypted ones are checked decrypted.
fn check_app_config(
    merged: &Node,
    merged_json: &Value,
    opened: Option<&Opened>,
    context: &Context,
    out: &mut Vec<Diagnostic>,
) -> Result<(), SourceError> {
    let Context {
        tree, limits, schemas, ..
    } = *context;
    let Some(config) = merged.get("config") else {
        return Ok(());
    };
    let Some(schema_node) = config.get("schema") else {
        return Ok(());
    };
    let Some(path) = schema_node.as_str() else {
        return Ok(());
    };
    match &schemas.get(tree, path, limits)? {
        Err(message) => out
            .push(Diagnostic::new(&schema_node.at, message.clone()).path(&Path::default().key("config").key("schema"))),
        Ok(schema) => {
            let values_path = Path::default().key("config").key("values");
            let empty = Node::new(Kind::Map(Default::default()), config.at.clone());
            let values_node = config.get("values").unwrap_or(&empty);
            let no_values = Value::Object(serde_json::Map::new());
            let values = merged_json.pointer("/config/values").unwrap_or(&no_values);
            let before = out.len();
            // Decrypted when every value opened (one that did not is a problem already).
            let decrypted = opened.and_then(|opened| {
                let mut decrypted = values.clone();
                opened.open_in(&mut decrypted, "").ok().map(|()| decrypted)
            });
            match decrypted {
                Some(decrypted) => schema.check_decrypted(values_node, &decrypted, out),
                None => schema.check(values_node, values, out),
            }
            for d in &mut out[before..] {
                let inner = d.path.take().unwrap_or_default();
                d.path = Some(format!("{values_path}{}", inner.trim_start_matches('$')));
                if d.hint.is_none() {
                    d.hint = Some(format!("the application's schema is {path}"));
                }
            }
        }
    }
    Ok(())
}

fn load_app_schema(tree: &dyn Tree, path: &str, limits: Limits) -> Result<Result<Arc<Schema>, String>, SourceError> {
    let Some(bytes) = tree.read(path, limits.max_bytes)? else {
        return Ok(Err(format!(
            "the application schema `{path}` does not exist in the repository"
        )));
    };
    let file: Arc<str> = Arc::from(path);
    let document = match yaml::parse(&file, &bytes, limits) {
        Ok(node) => node.to_json(),
        Err(e) => return Ok(Err(format!("the application schema cannot be read: {e}"))),
    };
    Ok(Schema::compile(&document)
        .map(Arc::new)
        .map_err(|e| format!("the application schema `{path}` is not a valid JSON Schema: {e}")))
}
