//! The repository format: reading documents (`yaml`, `load`, Compose files: `compose`, plain
//! Kubernetes manifests: `manifest`),
//! merging overlays (`merge`),
//! checking them (`schema`, `check`, and the container rights the agent grants: `rights`) and
//! producing the typed desired state of each environment (`render`, and from one commit to the
//! next: `memo`). No I/O beyond reading the
//! tree it is given, and the agent's own variables a Compose target names (`agentVariables`).

mod check;
pub mod compose;
pub mod diagnostic;
pub mod edit;
pub mod load;
pub mod manifest;
pub mod members;
pub mod memo;
pub mod merge;
pub mod model;
pub mod node;
pub mod render;
pub mod rights;
pub mod schema;
pub mod sealed;
pub mod support;
pub mod yaml;

pub use diagnostic::Diagnostic;
pub use render::{Desired, RenderError, Rendered, render, render_opening, service_origins};
