//! The `kubernetes` target: each slot of a service a Deployment (`<service>-blue`,
//! `<service>-green`) in the environment's namespace, applied by server-side apply under field
//! manager `plumb`; traffic moved by the selector of the service's Service; a rollout step
//! judged by the Deployment's own progress (observed generation, updated and available
//! replicas, progress deadline); migrations as Jobs with a deadline. What runs is read from
//! watches of the environment's objects.

mod apply;
mod autoscale;
#[cfg(test)]
mod contract_tests;
mod fields;
mod gateway;
mod live;
mod manifests;
mod objects;
mod pods;
pub mod render;
pub mod runtime;
mod target;
mod watch;

pub use runtime::{KubernetesError, KubernetesRuntime};
