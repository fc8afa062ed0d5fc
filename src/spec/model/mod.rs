//! The typed documents of a config repository — `plumb.yaml`, services, environments — with
//! the JSON Schemas generated from them. Shapes and defaults only: merging, validation and
//! cross-references live beside this module.

pub mod environment;
pub mod gates;
pub mod objects;
pub mod scalar;
pub mod service;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use environment::{Environment, Target};
pub use scalar::Name;
pub use service::Service;

/// Lists that overlays merge item by item, matching items by their `name`, instead of
/// replacing them whole.
pub const NAMED_LISTS: &[&str] = &["ports", "env", "healthChecks"];

/// A field that holds exactly one of several members. An overlay that sets one member
/// removes the others it would otherwise inherit, so switching a service from blue-green to
/// canary is one overlay line, not a second one that nulls the old strategy.
#[derive(Debug)]
pub struct Union {
    /// Where the union sits in a service, in the merge path notation (`healthChecks[]` for
    /// each item of that list).
    pub field: &'static str,
    /// Its members.
    pub members: &'static [&'static str],
}

/// Every union of the format.
pub const UNIONS: &[Union] = &[
    Union {
        field: "strategy",
        members: &["recreate", "rolling", "blueGreen", "canary"],
    },
    Union {
        field: "healthChecks[]",
        members: &["http", "tcp", "exec"],
    },
    Union {
        field: "target",
        members: &["local", "compose", "kubernetes"],
    },
];

/// The format version every document declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    /// The first version.
    #[serde(rename = "plumb/v1")]
    V1,
}

/// The `kind` of `plumb.yaml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RepositoryKind {
    /// The repository document.
    Repository,
}

/// The `kind` of a service document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceKind {
    /// A service document.
    Service,
}

/// The `kind` of an environment document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EnvironmentKind {
    /// An environment document.
    Environment,
}

/// `plumb.yaml`: the environments in promotion order and repository-wide defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "plumb Repository")]
pub struct Repository {
    /// Always `plumb/v1`.
    pub api_version: ApiVersion,
    /// Always `Repository`.
    pub kind: RepositoryKind,
    /// The environments, in the order a change is promoted through them; each has its
    /// document in `environments/<name>.yaml`.
    #[schemars(length(min = 1))]
    pub environments: Vec<Name>,
    /// Values every service starts from, below its own document and the overlays.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub service_defaults: serde_json::Map<String, serde_json::Value>,
}
