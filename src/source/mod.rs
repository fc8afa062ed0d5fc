//! Where repository content comes from: a working directory, or a commit read straight from a
//! git object database (no checkout). Fetching remotes arrives with the git source; this module
//! never interprets what it reads.

mod tree;

pub use tree::{GitTree, SourceError, Tree, WorkTree, open};
