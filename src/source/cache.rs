//! A bare clone of one remote, kept in the agent's state directory and brought up to date by
//! fetching only the tracked refs. Trees are read from it straight out of the object database.
//! A cache that is deleted or corrupted is rebuilt from the remote: it holds nothing that cannot
//! be fetched again.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use git2::{AutotagOption, ErrorClass, FetchOptions, Oid, Repository};

use super::remote::{self, Interruption, Remote};
use super::{GitTree, SourceError};

/// A ref followed on the remote: a branch (`main`, `refs/heads/main`) or a tag (`refs/tags/v1`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackedRef(String);

impl TrackedRef {
    /// A branch name or a full ref name.
    pub fn new(name: &str) -> Self {
        if name.starts_with("refs/") {
            TrackedRef(name.to_owned())
        } else {
            TrackedRef(format!("refs/heads/{name}"))
        }
    }

    /// The full ref name, as on the remote and in the cache.
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TrackedRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one fetch brought.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Each tracked ref: the commit it pointed to before the fetch (if any) and after.
    pub heads: Vec<(TrackedRef, Option<Oid>, Oid)>,
    /// Objects received (0 when nothing was new).
    pub objects: usize,
    /// Bytes received.
    pub bytes: usize,
    /// Whether the cache had to be rebuilt first.
    pub rebuilt: bool,
}

/// A bare clone of a remote.
pub struct Cache {
    dir: PathBuf,
    remote: Remote,
    repo: Repository,
    /// Packs made one with the others, deleted at the next fetch (see [`super::packs`]).
    retired: Vec<PathBuf>,
    /// Fetches to let pass before trying again to make the packs one, after a failure.
    packs_pause: usize,
}

/// libgit2's network timeouts are process-wide; set them under one lock.
static NETWORK_OPTIONS: Mutex<()> = Mutex::new(());

impl Cache {
    /// Opens the cache in `dir`, creating (or re-creating, when unreadable) an empty bare
    /// repository there. Nothing is fetched yet.
    pub fn open(dir: &Path, remote: Remote) -> Result<Cache, SourceError> {
        let newest = generations(dir).pop();
        let repo = match newest.as_ref().map(|(_, path)| Repository::open_bare(path)) {
            Some(Ok(repo)) => repo,
            _ => rebuild(dir, newest.map_or(0, |(n, _)| n + 1))?,
        };
        Ok(Cache {
            dir: dir.to_owned(),
            remote,
            repo,
            retired: Vec::new(),
            packs_pause: 0,
        })
    }

    /// The remote this cache follows.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// Fetches `refs` from the remote, force-updating the cache's copies: whether a move is a
    /// fast-forward is for the caller (trust) to judge, with the old value in hand.
    pub fn fetch(&mut self, refs: &[TrackedRef]) -> Result<Fetched, SourceError> {
        let mut rebuilt = false;
        if !self.repo.path().join("HEAD").is_file() {
            self.rebuild()?;
            rebuilt = true;
        }
        let before: Vec<Option<Oid>> = refs.iter().map(|r| self.head(r)).collect();
        let (objects, bytes) = match self.fetch_once(refs) {
            Ok(stats) => stats,
            Err(SourceError::Fetch { source, .. }) if !rebuilt && is_local_damage(&source) => {
                tracing::warn!(dir = %self.dir.display(), error = %source, "Rebuilding a damaged repository cache.");
                self.rebuild()?;
                rebuilt = true;
                self.fetch_once(refs)?
            }
            Err(e) => return Err(e),
        };
        let mut heads = Vec::with_capacity(refs.len());
        for (tracked, before) in refs.iter().zip(before) {
            let after = self.head(tracked).ok_or_else(|| SourceError::MissingRef {
                reference: tracked.name().to_owned(),
                url: self.remote.display_url(),
            })?;
            heads.push((tracked.clone(), if rebuilt { None } else { before }, after));
        }
        Ok(Fetched {
            heads,
            objects,
            bytes,
            rebuilt,
        })
    }

    /// Makes the cache's packs one when they are many (see [`super::packs`]); the agent calls
    /// it after a fetch's heads are on their way, so that no commit waits for it. Every object is
    /// in the cache whatever happens here: a failure is told, and tried again fifty fetches later.
    /// Returns whether the packs changed (the work's memory is then worth handing back).
    pub fn keep_packs_few(&mut self) -> bool {
        if self.packs_pause > 0 {
            self.packs_pause -= 1;
            return false;
        }
        let path = self.repo.path().to_owned();
        let changed = match super::packs::consolidate(&path, &mut self.retired) {
            Ok(changed) => changed,
            Err(e) => {
                self.packs_pause = super::packs::MOST_PACKS;
                tracing::warn!(dir = %self.dir.display(), error = %e, "Cannot make the cache's packs one; trying again in fifty fetches.");
                // Some may have been deleted before it failed.
                true
            }
        };
        // A handle opened anew lists the packs as they are now, and lets go of those made one.
        if changed {
            match Repository::open_bare(&path) {
                Ok(repo) => self.repo = repo,
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "Cannot open the cache again after changing its packs; the next fetch rebuilds it if it is damaged.")
                }
            }
        }
        changed
    }

    /// Starts the cache over in a new generation folder. A new path, not the old one emptied:
    /// libgit2 keeps pack files mapped process-wide by path, so a handle still open on the
    /// damaged cache (a tree being read) would make a new pack of the same name read as the old.
    fn rebuild(&mut self) -> Result<(), SourceError> {
        let next = generations(&self.dir).last().map_or(0, |(n, _)| n + 1);
        self.repo = rebuild(&self.dir, next)?;
        Ok(())
    }

    fn fetch_once(&mut self, refs: &[TrackedRef]) -> Result<(usize, usize), SourceError> {
        let timeouts = self.remote.timeouts;
        {
            let _guard = NETWORK_OPTIONS.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: libgit2 reads these process-wide integers when it opens a connection;
            // writes are serialised by the lock above.
            unsafe {
                git2::opts::set_server_connect_timeout_in_milliseconds(millis(timeouts.connect))
                    .and_then(|_| git2::opts::set_server_timeout_in_milliseconds(millis(timeouts.idle)))
                    .map_err(|source| self.fetch_error(source))?;
            }
        }
        let interrupted = RefCell::new(None);
        let deadline = Instant::now() + timeouts.total;
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(remote::callbacks(&self.remote, deadline, &interrupted))
            .download_tags(AutotagOption::None);
        let mut refspecs: Vec<String> = refs.iter().map(|r| format!("+{0}:{0}", r.name())).collect();
        // Approvals travel with the repository (`plumb approve`); none is ever pruned here, so
        // one handed to the agent's API stays too.
        refspecs.push(format!("+{0}/*:{0}/*", crate::gate::approval::NAMESPACE));
        let mut anonymous = self
            .repo
            .remote_anonymous(&self.remote.url)
            .map_err(|source| self.fetch_error(source))?;
        let result = anonymous.fetch(&refspecs, Some(&mut options), None);
        drop(options);
        match interrupted.into_inner() {
            Some(Interruption::TimedOut) => {
                return Err(SourceError::Timeout {
                    url: self.remote.display_url(),
                    after: timeouts.total,
                });
            }
            Some(Interruption::HostKey(reason) | Interruption::Credentials(reason)) if result.is_err() => {
                return Err(SourceError::Refused {
                    url: self.remote.display_url(),
                    reason,
                });
            }
            _ => {}
        }
        result.map_err(|source| self.fetch_error(source))?;
        let stats = anonymous.stats();
        Ok((stats.received_objects(), stats.received_bytes()))
    }

    /// The commit `tracked` points to in the cache, if it was fetched.
    pub fn head(&self, tracked: &TrackedRef) -> Option<Oid> {
        let reference = self.repo.find_reference(tracked.name()).ok()?;
        reference.peel_to_commit().ok().map(|c| c.id())
    }

    /// The cache's repository, for authentication and history walks.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The files of `commit` under `folder` (`""` for the root).
    pub fn tree(&self, commit: Oid, folder: &str) -> Result<GitTree, SourceError> {
        let repo = Repository::open_bare(self.repo.path()).map_err(|source| SourceError::NotARepository {
            path: self.repo.path().to_owned(),
            source,
        })?;
        GitTree::at(repo, commit, folder)
    }

    fn fetch_error(&self, source: git2::Error) -> SourceError {
        SourceError::Fetch {
            url: self.remote.display_url(),
            source,
        }
    }
}

fn millis(d: std::time::Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// Whether a fetch failed because of the cache itself rather than the network or the remote.
fn is_local_damage(e: &git2::Error) -> bool {
    matches!(
        e.class(),
        ErrorClass::Odb
            | ErrorClass::Object
            | ErrorClass::Repository
            | ErrorClass::Reference
            | ErrorClass::Index
            | ErrorClass::Zlib
            | ErrorClass::Indexer
            | ErrorClass::Filesystem
            | ErrorClass::Config
    )
}

/// The subject (first line of the message) of `commit` in the cache in `dir`, as fetched so
/// far; `None` when it does not hold the commit.
pub fn subject(dir: &Path, commit: &str) -> Option<String> {
    let (_, newest) = generations(dir).pop()?;
    let repo = Repository::open_bare(newest).ok()?;
    let commit = repo.find_commit(Oid::from_str(commit).ok()?).ok()?;
    commit.summary_bytes().map(|s| String::from_utf8_lossy(s).into_owned())
}

/// The generation folders (`repo-<n>`) in `dir`, oldest first.
fn generations(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let n = name.to_str()?.strip_prefix("repo-")?.parse().ok()?;
            Some((n, entry.path()))
        })
        .collect();
    found.sort();
    found
}

/// Initialises an empty bare repository as generation `n` in `dir` and removes every other
/// generation (open handles on them keep working until dropped).
fn rebuild(dir: &Path, n: u64) -> Result<Repository, SourceError> {
    for (_, old) in generations(dir) {
        if let Err(source) = std::fs::remove_dir_all(&old) {
            return Err(SourceError::Io { path: old, source });
        }
    }
    let path = dir.join(format!("repo-{n}"));
    Repository::init_bare(&path).map_err(|source| SourceError::NotARepository { path, source })
}
