//! plumb keeps environments in step with a git repository.
//!
//! The modules follow one reconcile's data flow:
//! - [`trigger`] decides when to fetch: polling, cron schedules, webhooks;
//! - [`source`] fetches a repository into a bare cache and reads its files at a revision;
//! - [`trust`] authenticates the commits between a trust root and a new head against the
//!   repository's signing policy;
//! - [`spec`] owns the repository format: documents, overlays, validation, the desired state;
//! - [`diff`] compares desired states and says what changes;
//! - [`health`] probes deployed slots (HTTP, TCP, exec) with thresholds and deadlines;
//! - [`ledger`] records every deployment attempt in a hash-chained SQLite journal;
//! - [`rollout`] runs a strategy over a target's primitives, recording each step;
//! - [`router`] splits a service's HTTP traffic between two slots by weight and counts answers;
//! - [`target`] runs environments: for now the local target's supervised processes;
//! - [`agent`] wires them into long-running workers;
//! - [`cli`] turns command lines into calls of the above, and results into text and exit codes.

pub mod agent;
pub mod cli;
pub mod diff;
pub mod health;
pub mod ledger;
pub mod reconcile;
pub mod rollout;
pub mod router;
pub mod secret;
pub mod source;
pub mod spec;
pub mod target;
pub mod trigger;
pub mod trust;
