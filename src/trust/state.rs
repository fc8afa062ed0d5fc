//! What the agent remembers between fetches, per tracked ref: the last authenticated commit (the
//! start of the next range, and the reference for fast-forward and rollback checks) and the last
//! refused head (never retried until the ref moves). Kept in a small JSON file written
//! atomically, outside the git cache, so rebuilding the cache forgets nothing.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use super::{Report, TrustError, TrustRoot, authenticate};

/// The remembered state of one ref.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The last authenticated commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<String>,
    /// The last refused head, with the refusal's kind and message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<RefusedHead>,
}

/// A head that was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedHead {
    /// The head.
    pub commit: String,
    /// The commit the refusal is about (the head or an ancestor).
    pub culprit: String,
    /// [`super::Refusal::kind`].
    pub kind: String,
    /// The refusal, for people.
    pub reason: String,
}

/// What to do with a fetched head.
#[derive(Debug)]
pub enum Decision {
    /// The head is the last authenticated commit: nothing new.
    Unchanged,
    /// The head was refused before and has not moved since: not checked again.
    AlreadyRefused(RefusedHead),
    /// Every commit up to the head is authenticated; the head may be applied.
    Authenticated(Report),
    /// The head is refused; what runs keeps running.
    Refused(Report),
}

/// The anchors of every tracked ref of one repository, persisted in one file.
pub struct TrustState {
    path: PathBuf,
    file: StateFile,
}

/// The file: the trust root the anchors grew from, and the anchors.
#[derive(Default, Serialize, Deserialize)]
struct StateFile {
    /// [`TrustRoot::identity`] of the root configured when the anchors were recorded.
    #[serde(default)]
    root: String,
    /// By ref name.
    #[serde(default)]
    refs: BTreeMap<String, Anchor>,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing the file failed.
    #[error("cannot access trust state {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not what plumb wrote.
    #[error("trust state {path} is corrupt: {reason}; remove it to start again from the configured trust root")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// Authentication could not be carried out.
    #[error(transparent)]
    Trust(#[from] TrustError),
}

impl TrustState {
    /// Loads the state from `path`; an absent file is a fresh state.
    pub fn load(path: &Path) -> Result<TrustState, StateError> {
        let file = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                path: path.to_owned(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile::default(),
            Err(source) => {
                return Err(StateError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Ok(TrustState {
            path: path.to_owned(),
            file,
        })
    }

    /// The state as its file holds it, for keeping a copy elsewhere.
    pub fn to_text(&self) -> String {
        serde_json::to_string(&self.file).expect("the state serializes")
    }

    /// Takes over a copy written by [`TrustState::to_text`] — another agent's — when this state
    /// remembers nothing yet; returns whether it did. The copy's anchors count only while the
    /// configured trust root is the one they grew from (as for this agent's own).
    pub fn adopt(&mut self, text: &str) -> Result<bool, StateError> {
        if !self.file.refs.is_empty() {
            return Ok(false);
        }
        self.file = serde_json::from_str(text).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            reason: format!("the copy taken over: {e}"),
        })?;
        self.save()?;
        Ok(true)
    }

    /// The anchor of `reference`.
    pub fn anchor(&self, reference: &str) -> Anchor {
        self.file.refs.get(reference).cloned().unwrap_or_default()
    }

    /// Decides whether `head`, just fetched for `reference`, may be applied: authenticates the
    /// range from the last authenticated commit (or `root` the first time) and remembers the
    /// outcome.
    pub fn decide(
        &mut self,
        repo: &Repository,
        root: &TrustRoot,
        reference: &str,
        head: Oid,
    ) -> Result<Decision, StateError> {
        // The operator moved the trust root (after a compromise, say): what was authenticated
        // from the old one no longer counts.
        let identity = root.identity();
        if self.file.root != identity {
            if !self.file.refs.is_empty() {
                tracing::warn!(path = %self.path.display(), "The trust root changed; authenticating again from the new one.");
            }
            self.file = StateFile {
                root: identity,
                refs: BTreeMap::new(),
            };
        }
        let anchor = self.anchor(reference);
        let head_hex = head.to_string();
        if anchor.authenticated.as_deref() == Some(&head_hex) {
            return Ok(Decision::Unchanged);
        }
        if let Some(refused) = anchor.refused.as_ref().filter(|r| r.commit == head_hex) {
            return Ok(Decision::AlreadyRefused(refused.clone()));
        }
        let start = match anchor.authenticated.as_deref().map(Oid::from_str) {
            Some(Ok(commit)) => TrustRoot::Commit(commit),
            Some(Err(e)) => {
                return Err(StateError::Corrupt {
                    path: self.path.clone(),
                    reason: e.to_string(),
                });
            }
            None => root.clone(),
        };
        let report = authenticate(repo, &start, head)?;
        let entry = self.file.refs.entry(reference.to_owned()).or_default();
        let decision = match &report.refusal {
            None => {
                entry.authenticated = Some(head_hex);
                entry.refused = None;
                Decision::Authenticated(report)
            }
            Some((culprit, refusal)) => {
                entry.refused = Some(RefusedHead {
                    commit: head_hex,
                    culprit: culprit.to_string(),
                    kind: refusal.kind().to_owned(),
                    reason: refusal.to_string(),
                });
                Decision::Refused(report)
            }
        };
        self.save()?;
        Ok(decision)
    }

    fn save(&self) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        let temporary = self.path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&temporary).map_err(io)?;
        let bytes = serde_json::to_vec_pretty(&self.file).expect("the state serializes");
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&temporary, &self.path).map_err(io)?;
        // The rename itself reaches the disk only with its directory.
        let directory = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(directory).and_then(|d| d.sync_all()).map_err(io)
    }
}
