//! Wiring the pieces into a running agent: each repository's fetch worker turns triggers into
//! authenticated heads (`fetcher`), its dispatcher renders them for its environments
//! (`dispatch`), one worker per environment applies them (`environment`), and `run` ties them
//! together over a state directory, with the HTTP API ([`crate::api`]) beside them. With
//! leader election, the environments' records are also kept in the cluster (`record`).

mod command;
pub mod config;
mod dispatch;
mod environment;
mod fetcher;
mod gates;
pub mod lease;
mod memory;
mod migrations;
mod probes;
mod record;
mod run;
mod watched;

pub use command::CommandError;
pub use environment::{Board, Done, Head, Input, Pending, Publish, RolledBack, Running, Status, Worker, desired_of};
pub use fetcher::{Fetch, FetchError, Fetcher, Update};
pub use gates::Received;
pub use migrations::Resolved;
pub use probes::Probed;
pub use run::{Agent, AgentError, Live, Notifications, Repository, Settings, run};
pub use watched::Traffic;
