//! What rendering one commit keeps for the next, so that a commit changing one file re-reads
//! only that file and re-checks only the services it affects: every document parsed, by path and
//! git blob id, and each environment's services as they rendered without a problem, with what
//! they were rendered from. The agent keeps one per repository, since it renders every commit
//! it fetches; a command renders once, from scratch.
//!
//! A service is rendered again unless its document is the same blob, its overlay the same value
//! (wherever it moved in the environment's file), the repository's service defaults the same
//! value, the environment's target the same, and the application schema it names the same blob.
//! A service that had a problem is never kept: problems are found again, at today's lines.
//! Services of Compose files are rendered at every commit.

use std::collections::HashMap;
use std::sync::Arc;

use git2::Oid;

use super::model::{Environment, Service, Target};
use super::node::Node;
use super::render::{RenderError, Rendered};
use super::rights::Allow;
use super::sealed::Keyring;
use crate::source::{SourceError, Tree};

/// What one render keeps for the next, for one repository, its values opened with one keyring
/// and its containers granted one set of rights.
pub struct Memo {
    /// The identities encrypted values are opened with.
    pub(super) keys: Arc<Keyring>,
    /// What containers may take on the agent's hosts.
    pub(super) allow: Arc<Allow>,
    /// Every document the last render parsed from a blob, by path.
    pub(super) documents: Documents,
    /// Each environment's services the last render kept, by environment.
    pub(super) environments: HashMap<String, Kept>,
}

impl Memo {
    /// An empty memo for renders opening values with `keys` and granting `allow`.
    pub fn new(keys: Arc<Keyring>, allow: Arc<Allow>) -> Self {
        Memo {
            keys,
            allow,
            documents: Documents::default(),
            environments: HashMap::new(),
        }
    }

    /// Renders every environment of `tree` as [`super::render_opening`] does with this memo's
    /// keys and rights (the same result), reusing what the last render found unchanged, and
    /// keeping what this one read for the next.
    pub fn render(&mut self, tree: &dyn Tree) -> Result<Rendered, RenderError> {
        let (keys, allow) = (self.keys.clone(), self.allow.clone());
        super::render::render_with(tree, None, Some(&keys), &allow, Some(self))
    }

    /// How many documents and services (as an environment rendered them) are kept.
    pub fn kept(&self) -> (usize, usize) {
        let services = self.environments.values().map(|kept| kept.services.len()).sum();
        (self.documents.len(), services)
    }

    /// How many services (as an environment renders them) the last render took from the memo
    /// instead of rendering them again (up to where it stopped, when it stopped on a file it
    /// could not read).
    pub fn reused(&self) -> usize {
        self.environments.values().map(|kept| kept.reused).sum()
    }
}

/// Documents parsed from blobs, by path.
pub(super) type Documents = HashMap<Arc<str>, Document, foldhash::fast::RandomState>;

/// A document parsed from a blob.
pub(super) struct Document {
    /// The blob it was parsed from.
    pub blob: Oid,
    /// Its tree.
    pub node: Arc<Node>,
    /// Its text, for showing the lines problems point at.
    pub text: Option<Arc<str>>,
}

/// One environment as it rendered: its document as last checked without a problem, its
/// services as they rendered without a problem, and what every one of them was rendered with.
#[derive(Default)]
pub(super) struct Kept {
    /// The environment's document, and its typed form (less the overlays, which are merged
    /// into each service from the document); `None` also when a render stopped midway, its
    /// services then kept from two renders: their overlays are compared by value.
    pub environment: Option<(Arc<Node>, Environment)>,
    /// The environment's target.
    pub target: Option<Target>,
    /// The repository's service defaults.
    pub defaults: Option<Node>,
    /// The services, by name.
    pub services: HashMap<String, KeptService, foldhash::fast::RandomState>,
    /// How many services the last render took from the render before.
    pub reused: usize,
}

impl Kept {
    /// The environment typed from `document`, when that is the document last checked.
    pub fn environment(&self, document: &Arc<Node>) -> Option<Environment> {
        let (_, environment) = self.environment.as_ref().filter(|_| self.checked(document))?;
        Some(environment.clone())
    }

    /// Whether `document` is the environment's document last checked: then every overlay is
    /// the one the services kept were rendered with.
    pub fn checked(&self, document: &Arc<Node>) -> bool {
        self.environment
            .as_ref()
            .is_some_and(|(kept, _)| Arc::ptr_eq(kept, document))
    }

    /// Keeps `environment`, checked without a problem, as typed from `document`.
    pub fn keep_environment(&mut self, document: &Arc<Node>, environment: &Environment) {
        self.environment = Some((document.clone(), environment.clone()));
    }

    /// Starts a render of the environment for `target` over `defaults`: the services kept are
    /// dropped when either changed.
    pub fn start(&mut self, target: &Target, defaults: Option<&Node>) {
        if !same(self.defaults.as_ref(), defaults) || self.target.as_ref() != Some(target) {
            self.services.clear();
            self.target = Some(target.clone());
            self.defaults = defaults.cloned();
        }
    }
}

/// A service as an environment rendered it without a problem, and what it was rendered from.
pub(super) struct KeptService {
    /// Its document, as parsed from its blob.
    pub base: Arc<Node>,
    /// The environment's overlay for it.
    pub overlay: Option<Node>,
    /// The application schema its configuration was checked against, and that file's blob.
    pub schema: Option<(String, Option<Oid>)>,
    /// The service rendered, or `None` when the environment disables it.
    pub service: Option<Arc<Service>>,
}

impl KeptService {
    /// Whether rendering `base` with `overlay` would give this service again (`overlays_kept`:
    /// the environment's document is the one last checked, so the overlay is the same);
    /// `schema_blob` says what a schema file holds now.
    pub fn holds(
        &self,
        base: &Arc<Node>,
        (overlay, overlays_kept): (Option<&Node>, bool),
        schema_blob: impl FnOnce(&str) -> Result<Option<Oid>, SourceError>,
    ) -> Result<bool, SourceError> {
        let same_overlay = overlays_kept || same(self.overlay.as_ref(), overlay);
        if !Arc::ptr_eq(&self.base, base) || !same_overlay {
            return Ok(false);
        }
        match &self.schema {
            None => Ok(true),
            Some((_, None)) => Ok(false),
            Some((path, Some(blob))) => Ok(schema_blob(path)? == Some(*blob)),
        }
    }
}

/// Whether `kept` and `now` are both absent, or the same value ([`Node::same_value`]).
fn same(kept: Option<&Node>, now: Option<&Node>) -> bool {
    match (kept, now) {
        (None, None) => true,
        (Some(kept), Some(now)) => kept.same_value(now),
        _ => false,
    }
}
