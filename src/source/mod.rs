//! Where repository content comes from: a working directory, a commit of a local repository, or
//! a bare cache of a remote brought up to date by fetching only the tracked refs. Trees are read
//! straight from the object database (no checkout). This module never interprets what it reads.

mod cache;
mod known_hosts;
mod packs;
mod remote;
mod tree;

pub use cache::{Cache, Fetched, TrackedRef, subject};
pub use known_hosts::{HostKey, check as check_host_key};
pub use remote::{Auth, Remote, Timeouts, trust_authorities};
pub use tree::{Entry, EntryKind, GitTree, SourceError, Tree, WalkError, WorkTree, open, walk};
