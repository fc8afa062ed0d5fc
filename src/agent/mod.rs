//! Wiring the pieces into a running agent: the fetch worker of the repository turns triggers into
//! authenticated heads (`fetcher`), one worker per environment applies them (`environment`),
//! and `run` ties them together over a state directory, with the HTTP API ([`crate::api`])
//! beside them.

mod command;
pub mod config;
mod environment;
mod fetcher;
mod run;

pub use environment::{Board, Done, Head, Input, Pending, Publish, RolledBack, Status, Worker, desired_of, render};
pub use fetcher::{Fetch, FetchError, Fetcher, Update};
pub use run::{Agent, AgentError, Settings, run};
