//! The `Environment` document: where an environment runs, how it syncs, and the overlays it
//! lays over the services. It does not merge overlays (see `merge`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

use super::scalar::Name;
use super::service::Strategy;
use super::{ApiVersion, EnvironmentKind};

/// An environment: its target, its sync policy and its changes to the services.
// Not serialized: the `skip_serializing_if` attributes stay because the schema is generated
// from them, and leaves out the defaults they name.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "plumb Environment")]
pub struct Environment {
    /// Always `plumb/v1`.
    pub api_version: ApiVersion,
    /// Always `Environment`.
    pub kind: EnvironmentKind,
    /// The environment's name; the file must be `environments/<name>.yaml`.
    pub name: Name,
    /// What the environment is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the environment's services run.
    pub target: Target,
    /// When and how the agent applies changes.
    #[serde(default)]
    pub sync: SyncPolicy,
    /// When changes may land: allow and deny windows (read from the environment's rollback
    /// point, so a commit cannot open a window for itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_windows: Vec<super::gates::SyncWindow>,
    /// Apply a commit only after it ran healthy in other environments (read from the rollback
    /// point too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<super::gates::Promotion>,
    /// Apply a commit only once enough people approved it (read from the rollback point too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<super::gates::ApprovalRule>,
    /// What the images it runs must carry: a cosign signature by one of the keys or keyless
    /// identities named (read from the rollback point too); compose and kubernetes targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<super::gates::ImagePolicy>,
    /// Overlays by service name: any part of a service document, merged over it by the rules
    /// in the format reference.
    #[serde(default)]
    #[schemars(schema_with = "overlays_schema")]
    pub services: Overlays,
}

/// Where an environment's overlays are: the renderer merges them from the environment's
/// document, where each keeps the lines it was written at, after the schema checked their
/// shape; the typed environment holds none of them, so typing does not copy them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Overlays;

impl<'de> Deserialize<'de> for Overlays {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| Overlays)
    }
}

/// Written only as the schema's default: no overlays.
impl Serialize for Overlays {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_map(Some(0))?.end()
    }
}

fn overlays_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "propertyNames": { "pattern": Name::PATTERN },
        "additionalProperties": {
            "type": "object",
            "description": "Any part of a service document. Maps merge, lists replace (but `ports`, `env` and `healthChecks` merge by `name`), `null` removes, `$patch: delete` removes a named-list item, `$patch: replace` replaces instead of merging."
        }
    })
}

/// Where an environment runs: exactly one of `local`, `compose`, `kubernetes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Target {
    /// Processes on the agent's own machine, each behind plumb's router.
    Local(LocalTarget),
    /// Containers on a Docker Engine.
    Compose(ComposeTarget),
    /// Objects in a Kubernetes namespace.
    Kubernetes(KubernetesTarget),
}

impl Target {
    /// The target's name as written in documents.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Local(_) => "local",
            Target::Compose(_) => "compose",
            Target::Kubernetes(_) => "kubernetes",
        }
    }

    /// Whether this target can run `strategy`. Blue-green and canary need a way to move
    /// traffic; a Compose target configured without a proxy has none.
    pub fn supports(&self, strategy: &Strategy) -> bool {
        match (self, strategy) {
            (_, Strategy::Recreate(_) | Strategy::Rolling(_)) => true,
            (Target::Compose(c), _) => c.proxy != Proxy::None,
            (Target::Local(_) | Target::Kubernetes(_), _) => true,
        }
    }

    /// How many replicas this target runs for `declared`: a Kubernetes Deployment scales to
    /// zero; processes and containers run at least one.
    pub fn replicas(&self, declared: u32) -> u32 {
        match self {
            Target::Kubernetes(_) => declared,
            Target::Local(_) | Target::Compose(_) => declared.max(1),
        }
    }

    /// Whether services share one host's ports, so two services may not publish the same one.
    pub fn shares_host_ports(&self) -> bool {
        !matches!(self, Target::Kubernetes(_))
    }

    /// The workload field this target starts services from.
    pub fn workload_field(&self) -> &'static str {
        match self {
            Target::Local(_) => "command",
            Target::Compose(_) | Target::Kubernetes(_) => "image",
        }
    }

    /// What is added to every declared port on this target.
    pub fn port_offset(&self) -> u16 {
        match self {
            Target::Local(l) => l.port_offset,
            _ => 0,
        }
    }
}

/// Settings of the local target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalTarget {
    /// The address the routers listen on.
    #[serde(default = "loopback")]
    pub address: String,
    /// Added to every service port, so several environments can share one machine.
    #[serde(default)]
    pub port_offset: u16,
}

fn loopback() -> String {
    "127.0.0.1".into()
}

/// Settings of the Compose target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComposeTarget {
    /// The Compose project name; defaults to the environment's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Name>,
    /// The Docker Engine to drive (`unix://`, `tcp://`, `ssh://`); defaults to `DOCKER_HOST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_host: Option<String>,
    /// What moves traffic between versions.
    #[serde(default)]
    pub proxy: Proxy,
    /// The address plumb's router listens on for the services' stable ports.
    #[serde(default = "loopback")]
    pub address: String,
    /// Added to every service port, so several environments can share one host.
    #[serde(default)]
    pub port_offset: u16,
    /// The image of the nginx proxy (`proxy: nginx`).
    #[serde(default = "nginx_image")]
    pub nginx_image: String,
    /// Compose files of the repository whose services run here beside the `services/`
    /// documents (later files merge over earlier ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// The Compose profiles enabled: a Compose service with profiles runs only when one is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// Variables the Compose files are interpolated with (`${NAME}`), over those of the
    /// `.env` beside the first file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// Names of the agent's own environment variables the Compose files may use too (none
    /// by default: a file must not depend on the host it happens to run on unless it says so).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_variables: Vec<String>,
    /// Whether the Compose files' `build` runs here: the agent builds each image from the
    /// repository's content at the commit applied (refused when `false`, the default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub build: bool,
}

fn nginx_image() -> String {
    "nginx:stable-alpine".into()
}

/// The proxy in front of a Compose service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Proxy {
    /// plumb's own router.
    #[default]
    Plumb,
    /// An nginx container of the project whose upstreams plumb writes and reloads.
    Nginx,
    /// None: only recreate and rolling are possible.
    None,
}

/// Settings of the Kubernetes target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesTarget {
    /// The namespace the environment's objects live in.
    pub namespace: Name,
    /// The kubeconfig context; in-cluster configuration when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// A kubeconfig file on the agent's machine; `KUBECONFIG` or in-cluster when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// Take over fields another field manager holds when applying (server-side apply's
    /// `force`); without it such a conflict fails the apply and names the manager.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// A Gateway API Gateway routing to the services: each gets an HTTPRoute whose backend
    /// weights carry a canary's exact split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayRef>,
    /// YAML files of the repository holding plain Kubernetes objects (several per file,
    /// separated by `---`), applied as they are in the environment's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<String>,
}

/// The Gateway (Gateway API, `gateway.networking.k8s.io/v1`) an environment's services are
/// routed through.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayRef {
    /// The Gateway's name.
    pub name: String,
    /// Its namespace; the environment's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Each service answers on `<service>.<domain>`.
    pub domain: String,
}

/// When and how the agent applies changes to an environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncPolicy {
    /// Apply new commits as soon as they are authenticated; `false` waits for `plumb sync`.
    #[serde(default = "yes")]
    pub automatic: bool,
    /// Put back what was changed on the target by hand.
    #[serde(default = "yes")]
    pub self_heal: bool,
    /// Remove what the repository no longer declares.
    #[serde(default)]
    pub prune: bool,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy {
            automatic: true,
            self_heal: true,
            prune: false,
        }
    }
}

fn yes() -> bool {
    true
}
