//! A read-only view of a repository's files at one revision.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use git2::{ObjectType, Oid, Repository};

/// Why repository content could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The directory does not exist or cannot be read.
    #[error("cannot read {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `--rev` was given but the directory is not in a git repository.
    #[error("{path} is not inside a git repository")]
    NotARepository {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: git2::Error,
    },
    /// The revision does not name a commit.
    #[error("revision `{rev}` does not name a commit in {path}")]
    Revision {
        /// The revision as given.
        rev: String,
        /// The repository.
        path: PathBuf,
        /// The cause.
        #[source]
        source: git2::Error,
    },
    /// Reading the object database failed.
    #[error("cannot read `{path}` from commit {commit}")]
    Object {
        /// The file.
        path: String,
        /// The commit.
        commit: Oid,
        /// The cause.
        #[source]
        source: git2::Error,
    },
    /// A fetch failed: the network, the remote, or credentials.
    #[error("cannot fetch from {url}: {}", source.message())]
    Fetch {
        /// The remote, without credentials.
        url: String,
        /// The cause.
        #[source]
        source: git2::Error,
    },
    /// A fetch took longer than its deadline and was cancelled.
    #[error("fetching from {url} took longer than {after:?} and was cancelled")]
    Timeout {
        /// The remote, without credentials.
        url: String,
        /// The deadline.
        after: std::time::Duration,
    },
    /// plumb refused to go on: the host's key is not trusted, or credentials are wrong or missing.
    #[error("refused to fetch from {url}: {reason}")]
    Refused {
        /// The remote, without credentials.
        url: String,
        /// Why.
        reason: String,
    },
    /// A tracked ref does not exist on the remote.
    #[error("{url} has no ref `{reference}`")]
    MissingRef {
        /// The ref.
        reference: String,
        /// The remote, without credentials.
        url: String,
    },
    /// A symbolic link, which plumb does not follow: it could point outside the repository.
    #[error("`{0}` is a symbolic link; plumb reads only regular files from a config repository")]
    Symlink(String),
}

/// The files of a repository at one revision. Paths are `/`-separated and relative to the
/// repository root (or the config folder inside it).
pub trait Tree: Sync {
    /// The regular files directly inside `dir`, by name, sorted; empty when `dir` is absent.
    fn list(&self, dir: &str) -> Result<Vec<String>, SourceError>;
    /// At most `limit + 1` bytes of `path` (enough for the reader to tell it is too large), or
    /// `None` when the file is absent.
    fn read(&self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, SourceError>;
    /// The revision, for messages: a commit id, or `None` for a working directory.
    fn commit(&self) -> Option<Oid>;
    /// The files and folders directly inside `dir`, sorted by name; empty when `dir` is absent.
    fn entries(&self, dir: &str) -> Result<Vec<Entry>, SourceError>;
    /// [`Tree::list`] with the git blob id of each file: what it holds, for telling unchanged
    /// files from changed ones without reading them. `None` for a tree without blob ids (a
    /// working directory).
    fn blobs(&self, _dir: &str) -> Result<Option<Vec<(String, Oid)>>, SourceError> {
        Ok(None)
    }
    /// The git blob id of the file at `path`; `None` when absent, not a file, or the tree has
    /// no blob ids.
    fn blob(&self, _path: &str) -> Result<Option<Oid>, SourceError> {
        Ok(None)
    }
}

/// A file or folder inside a folder of a [`Tree`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
}

/// What an [`Entry`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file, which may be run or not.
    File {
        /// Whether it may be run.
        executable: bool,
    },
    /// A folder.
    Folder,
}

/// The files under `dir` at any depth, by path relative to `dir`, with whether each may be run;
/// at most `most` of them (more is an error naming the folder).
pub fn walk(tree: &dyn Tree, dir: &str, most: usize) -> Result<Vec<(String, bool)>, WalkError> {
    let mut files = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(relative) = pending.pop() {
        let full = match (dir, relative.as_str()) {
            ("", r) => r.to_owned(),
            (d, "") => d.to_owned(),
            (d, r) => format!("{d}/{r}"),
        };
        for entry in tree.entries(&full)? {
            let path = if relative.is_empty() {
                entry.name
            } else {
                format!("{relative}/{}", entry.name)
            };
            match entry.kind {
                EntryKind::Folder => pending.push(path),
                EntryKind::File { executable } => {
                    if files.len() == most {
                        return Err(WalkError::TooMany { most });
                    }
                    files.push((path, executable));
                }
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Why the files of a folder could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// The tree cannot be read, or holds a symbolic link.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The folder holds too many files.
    #[error("it holds more than {most} files")]
    TooMany {
        /// The most allowed.
        most: usize,
    },
}

/// Opens `dir` as it is on disk, or at `rev` from its git object database.
pub fn open(dir: &Path, rev: Option<&str>) -> Result<Box<dyn Tree>, SourceError> {
    match rev {
        None => {
            fs::metadata(dir).map_err(|source| SourceError::Io {
                path: dir.to_owned(),
                source,
            })?;
            Ok(Box::new(WorkTree::new(dir)))
        }
        Some(rev) => Ok(Box::new(GitTree::open(dir, rev)?)),
    }
}

/// A directory on disk.
pub struct WorkTree {
    root: PathBuf,
}

impl WorkTree {
    /// The files under `root` as they are on disk.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        WorkTree { root: root.into() }
    }
}

impl Tree for WorkTree {
    fn list(&self, dir: &str) -> Result<Vec<String>, SourceError> {
        let path = self.root.join(dir);
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(SourceError::Io { path, source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| SourceError::Io {
                path: path.clone(),
                source,
            })?;
            let kind = entry.file_type().map_err(|source| SourceError::Io {
                path: entry.path(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if kind.is_symlink() {
                return Err(SourceError::Symlink(format!("{dir}/{name}")));
            }
            if kind.is_file() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, SourceError> {
        let full = self.root.join(path);
        let size = match fs::symlink_metadata(&full) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(SourceError::Symlink(path.to_owned())),
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(SourceError::Io { path: full, source }),
        };
        let file = fs::File::open(&full).map_err(|source| SourceError::Io {
            path: full.clone(),
            source,
        })?;
        // Sized as the file was a moment ago, so that it is read in one go (it may have changed).
        let mut bytes = Vec::with_capacity(size.min(limit as u64) as usize + 1);
        file.take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| SourceError::Io { path: full, source })?;
        Ok(Some(bytes))
    }

    fn commit(&self) -> Option<Oid> {
        None
    }

    fn entries(&self, dir: &str) -> Result<Vec<Entry>, SourceError> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.root.join(dir);
        let listing = match fs::read_dir(&path) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(SourceError::Io { path, source }),
        };
        let mut entries = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|source| SourceError::Io {
                path: path.clone(),
                source,
            })?;
            let meta = fs::symlink_metadata(entry.path()).map_err(|source| SourceError::Io {
                path: entry.path(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = if meta.file_type().is_symlink() {
                return Err(SourceError::Symlink(format!("{dir}/{name}")));
            } else if meta.is_dir() {
                if name == ".git" {
                    continue;
                }
                EntryKind::Folder
            } else if meta.is_file() {
                EntryKind::File {
                    executable: meta.permissions().mode() & 0o111 != 0,
                }
            } else {
                continue;
            };
            entries.push(Entry { name, kind });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }
}

/// A commit's tree, read from the object database without a checkout.
pub struct GitTree {
    /// Behind a lock: libgit2 handles may move between threads but not be shared.
    repo: Mutex<Repository>,
    commit: Oid,
    tree: Oid,
    /// The folder inside the repository the config lives in (`""` for the root).
    prefix: String,
}

impl GitTree {
    /// Opens the repository containing `dir` at `rev`; paths are then relative to `dir`.
    pub fn open(dir: &Path, rev: &str) -> Result<GitTree, SourceError> {
        let repo = Repository::discover(dir).map_err(|source| SourceError::NotARepository {
            path: dir.to_owned(),
            source,
        })?;
        let (commit, tree) = repo
            .revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map(|c| (c.id(), c.tree_id()))
            .map_err(|source| SourceError::Revision {
                rev: rev.to_owned(),
                path: dir.to_owned(),
                source,
            })?;
        let prefix = match repo.workdir() {
            Some(workdir) => {
                let dir = fs::canonicalize(dir).map_err(|source| SourceError::Io {
                    path: dir.to_owned(),
                    source,
                })?;
                let workdir = fs::canonicalize(workdir).map_err(|source| SourceError::Io {
                    path: workdir.to_owned(),
                    source,
                })?;
                dir.strip_prefix(&workdir)
                    .map(|p| p.to_string_lossy().replace('\\', "/"))
                    .unwrap_or_default()
            }
            None => String::new(),
        };
        Ok(GitTree {
            repo: Mutex::new(repo),
            commit,
            tree,
            prefix,
        })
    }

    /// The tree of `commit` in `repo`, with paths relative to `folder` (`""` for the root).
    pub fn at(repo: Repository, commit: Oid, folder: &str) -> Result<GitTree, SourceError> {
        let tree = repo
            .find_commit(commit)
            .map(|c| c.tree_id())
            .map_err(|source| SourceError::Object {
                path: folder.to_owned(),
                commit,
                source,
            })?;
        Ok(GitTree {
            repo: Mutex::new(repo),
            commit,
            tree,
            prefix: folder.trim_matches('/').to_owned(),
        })
    }

    fn full(&self, path: &str) -> String {
        match (self.prefix.as_str(), path) {
            ("", p) => p.to_owned(),
            (prefix, "") => prefix.to_owned(),
            (prefix, p) => format!("{prefix}/{p}"),
        }
    }

    fn object_error(&self, path: &str, source: git2::Error) -> SourceError {
        SourceError::Object {
            path: path.to_owned(),
            commit: self.commit,
            source,
        }
    }

    /// The tree entry at `path`, or `None` when absent.
    fn entry(&self, path: &str) -> Result<Option<(ObjectType, i32, Oid)>, SourceError> {
        let repo = self.repo.lock().expect("the lock is never poisoned");
        let tree = repo.find_tree(self.tree).map_err(|e| self.object_error(path, e))?;
        let full = self.full(path);
        if full.is_empty() {
            return Ok(Some((ObjectType::Tree, 0o040000, self.tree)));
        }
        match tree.get_path(Path::new(&full)) {
            Ok(entry) => Ok(entry.kind().map(|k| (k, entry.filemode(), entry.id()))),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.object_error(path, e)),
        }
    }
}

const SYMLINK_MODE: i32 = 0o120000;

impl Tree for GitTree {
    fn list(&self, dir: &str) -> Result<Vec<String>, SourceError> {
        let Some((ObjectType::Tree, _, id)) = self.entry(dir)? else {
            return Ok(Vec::new());
        };
        let repo = self.repo.lock().expect("the lock is never poisoned");
        let tree = repo.find_tree(id).map_err(|e| self.object_error(dir, e))?;
        let mut names = Vec::new();
        for entry in tree.iter() {
            let name = String::from_utf8_lossy(entry.name_bytes()).into_owned();
            if entry.filemode() == SYMLINK_MODE {
                return Err(SourceError::Symlink(format!("{dir}/{name}")));
            }
            if entry.kind() == Some(ObjectType::Blob) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, SourceError> {
        match self.entry(path)? {
            Some((_, SYMLINK_MODE, _)) => Err(SourceError::Symlink(path.to_owned())),
            Some((ObjectType::Blob, _, id)) => {
                let repo = self.repo.lock().expect("the lock is never poisoned");
                let blob = repo.find_blob(id).map_err(|e| self.object_error(path, e))?;
                let content = blob.content();
                Ok(Some(content[..content.len().min(limit + 1)].to_vec()))
            }
            _ => Ok(None),
        }
    }

    fn commit(&self) -> Option<Oid> {
        Some(self.commit)
    }

    fn entries(&self, dir: &str) -> Result<Vec<Entry>, SourceError> {
        let Some((ObjectType::Tree, _, id)) = self.entry(dir)? else {
            return Ok(Vec::new());
        };
        let repo = self.repo.lock().expect("the lock is never poisoned");
        let tree = repo.find_tree(id).map_err(|e| self.object_error(dir, e))?;
        let mut entries = Vec::new();
        for entry in tree.iter() {
            let name = String::from_utf8_lossy(entry.name_bytes()).into_owned();
            let kind = match (entry.filemode(), entry.kind()) {
                (SYMLINK_MODE, _) => return Err(SourceError::Symlink(format!("{dir}/{name}"))),
                (mode, Some(ObjectType::Blob)) => EntryKind::File {
                    executable: mode == 0o100755,
                },
                (_, Some(ObjectType::Tree)) => EntryKind::Folder,
                // A submodule's commit: its files are not in this repository.
                _ => continue,
            };
            entries.push(Entry { name, kind });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    fn blobs(&self, dir: &str) -> Result<Option<Vec<(String, Oid)>>, SourceError> {
        let Some((ObjectType::Tree, _, id)) = self.entry(dir)? else {
            return Ok(Some(Vec::new()));
        };
        let repo = self.repo.lock().expect("the lock is never poisoned");
        let tree = repo.find_tree(id).map_err(|e| self.object_error(dir, e))?;
        let mut files = Vec::new();
        for entry in tree.iter() {
            let name = String::from_utf8_lossy(entry.name_bytes()).into_owned();
            if entry.filemode() == SYMLINK_MODE {
                return Err(SourceError::Symlink(format!("{dir}/{name}")));
            }
            if entry.kind() == Some(ObjectType::Blob) {
                files.push((name, entry.id()));
            }
        }
        files.sort();
        Ok(Some(files))
    }

    fn blob(&self, path: &str) -> Result<Option<Oid>, SourceError> {
        Ok(match self.entry(path)? {
            Some((ObjectType::Blob, mode, id)) if mode != SYMLINK_MODE => Some(id),
            _ => None,
        })
    }
}
