//! plumb's integration tests: one binary, real files, real git repositories, the real `plumb`
//! executable.

mod agent;
mod agent_config;
mod cli;
mod crash;
mod demo;
mod golden;
mod harness;
mod health;
mod hostile;
mod http;
mod keys;
mod ledger;
mod local;
mod metrics;
mod openapi;
mod process;
mod reconcile;
mod router;
mod schemas;
mod servers;
mod smart_http;
mod source;
mod ssh;
mod trust;
mod webhook;
