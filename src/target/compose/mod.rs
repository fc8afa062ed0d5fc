//! The `compose` target: each replica a container of the environment's Compose project on a
//! Docker Engine, labelled so `docker compose ps` lists it; each service port behind plumb's
//! router or an nginx container, which split traffic between two slots by weight.

mod container;
pub use container::PROJECT;
pub mod engine;
mod events;
pub mod nginx;
pub mod runtime;
mod tar;

pub use runtime::{ComposeError, ComposeRuntime};
