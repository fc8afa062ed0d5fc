//! plumb keeps environments in step with a git repository.
//!
//! The modules follow one reconcile's data flow:
//! - [`trigger`] decides when to fetch: polling, cron schedules, webhooks;
//! - [`source`] fetches a repository into a bare cache and reads its files at a revision;
//! - [`trust`] authenticates the commits between a trust root and a new head against the
//!   repository's signing policy;
//! - [`spec`] owns the repository format: documents, overlays, validation, the desired state;
//! - [`diff`] compares desired states and says what changes, and plans what makes a target run
//!   a desired state;
//! - [`health`] probes deployed slots (HTTP, TCP, exec) with thresholds and deadlines;
//! - [`ledger`] records every deployment attempt in a hash-chained SQLite journal;
//! - [`notify`] tells webhooks, Slack, mail and forges what the ledger records;
//! - [`rollout`] runs a strategy over a target's primitives, recording each step;
//! - [`reconcile`] applies a plan step by step and restores the rollback point when one fails;
//! - [`router`] splits a service's HTTP traffic between two slots by weight and counts answers;
//! - [`target`] runs environments: for now the local target's supervised processes;
//! - [`agent`] wires them into long-running workers, one per environment;
//! - [`api`] serves the agent's status and takes its commands over HTTP, from the callers
//!   [`access`] knows, and each service's configuration as [`appconfig`] shapes it;
//! - [`cli`] turns command lines into calls of the above, and results into text and exit codes;
//! - [`lab`] makes what trying the container targets needs on one machine: a Kubernetes node,
//!   a Docker Engine, images of the binary;
//! - [`blocking`] runs the ledger's and files' blocking work off the async runtime.

pub mod access;
pub mod agent;
pub mod api;
pub mod appconfig;
pub mod blocking;
pub mod cli;
pub mod diff;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
pub mod health;
pub mod lab;
pub mod ledger;
pub mod metrics;
pub mod notify;
pub mod reconcile;
pub mod rollout;
pub mod router;
pub mod secret;
pub mod source;
pub mod spec;
pub mod target;
pub mod tls;
pub mod trigger;
pub mod trust;
