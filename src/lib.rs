//! plumb keeps environments in step with a git repository.
//!
//! The modules follow one reconcile's data flow:
//! - [`source`] reads a repository's files at a revision (a working directory or a commit);
//! - [`spec`] owns the repository format: documents, overlays, validation, the desired state;
//! - [`diff`] compares desired states and says what changes;
//! - [`cli`] turns command lines into calls of the above, and results into text and exit codes.

pub mod cli;
pub mod diff;
pub mod source;
pub mod spec;
