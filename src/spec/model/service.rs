//! The `Service` document: one workload, how it is deployed, checked, migrated and configured.
//! Only the shape and defaults live here; rules that span fields or documents are in `check`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::objects::{Build, Encoding, HostMount, NetworkDefinition, RepositoryFolder, VolumeDefinition};
use super::scalar::{Duration, Name, Quantity, Text};
use super::{ApiVersion, ServiceKind};

/// A service: its workload, ports, health checks, deployment strategy, migration hook and
/// application configuration. Environments change any of it through overlays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "plumb Service")]
pub struct Service {
    /// Always `plumb/v1`.
    pub api_version: ApiVersion,
    /// Always `Service`.
    pub kind: ServiceKind,
    /// The service's name; the file must be `services/<name>.yaml`.
    pub name: Name,
    /// What the service is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `false` leaves the service out of an environment (and retires it there).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The container image, for the `compose` and `kubernetes` targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The program and its arguments: what the `local` target runs, and the container command
    /// elsewhere. `${PORT}` is replaced by the port the process must listen on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub command: Option<Vec<String>>,
    /// The directory the process starts in, relative to the target's state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// How many copies run.
    #[serde(default = "one")]
    #[schemars(range(max = 1000))]
    pub replicas: u32,
    /// Copies added and removed by load, between two bounds (a HorizontalPodAutoscaler on the
    /// kubernetes target); `replicas` is then not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// The ports the service answers on. A named list: overlays merge items by `name`.
    #[serde(default)]
    pub ports: Vec<Port>,
    /// CPU and memory for each copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Environment variables. A named list: overlays merge items by `name`.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Checks that decide whether a copy is healthy. A named list: overlays merge by `name`.
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    /// How a new version replaces the running one.
    #[serde(default)]
    pub strategy: Strategy,
    /// How long a rollout may take before it fails and is rolled back.
    #[serde(default = "ten_minutes")]
    pub progress_deadline: Duration,
    /// A command run once per commit and environment before traffic moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<Migration>,
    /// The application's own configuration, validated against its JSON Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<AppConfig>,
    /// Services that must be deployed and healthy first (a task: run to completion first).
    #[serde(default)]
    pub depends_on: Vec<Name>,
    /// A task: its program runs to completion once per version, as a one-off job, before the
    /// services that depend on it (Compose's `service_completed_successfully`), instead of
    /// being kept running. Its success is recorded in the ledger: it runs again only when it
    /// changes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub task: bool,
    /// The clear values of its encrypted values, opened by the agent when it rendered the
    /// commit; never serialized.
    #[serde(skip)]
    #[schemars(skip)]
    pub opened: crate::spec::sealed::Opened,
    /// Where its replicas read their configuration from the agent's API, given by the agent
    /// (never read from the repository): `PLUMB_CONFIG_URL` and `PLUMB_CONFIG_TOKEN`.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub config_api: Option<ConfigApi>,
    /// Labels added to everything plumb creates for the service.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Container settings, for the `compose` target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
}

/// Container settings (the `compose` target; Compose files translate to these).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    /// Named volumes of the project, as `name:/path` or `name:/path:ro`, and anonymous ones
    /// (`/path`, a new volume for each container). Host paths are `hostMounts`, which the
    /// agent grants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = "^([A-Za-z0-9][A-Za-z0-9_.-]*:/[^:]*(:(ro|rw))?|/[^:]*)$")))]
    pub volumes: Vec<String>,
    /// Networks of the project the containers join, beside its default one: a name, or a
    /// name with the aliases the service is known by there and a fixed address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Attachment>,
    /// The health check the engine runs in each container; a rollout waits for `healthy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<DockerHealthcheck>,
    /// What the engine does when a container exits (`unless-stopped` by default: plumb wants
    /// its replicas running, and an exit is drift it reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    /// The platform the image is pulled, built and run for (`linux/arm64`), instead of the
    /// engine's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[a-z0-9]+(/[a-z0-9_]+){0,2}$"))]
    pub platform: Option<String>,
    /// When the image is pulled: when the engine lacks it (the default), at every deploy, or
    /// never (it must be on the engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    /// The most times the engine restarts a container that failed (`on-failure` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_retries: Option<u32>,
    /// The program run before `command` (the image's `ENTRYPOINT` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// The user (and group) the program runs as: `name`, `uid`, `uid:gid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The container's host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The container's working directory (the image's otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Whether an init process runs first, reaping children and passing signals (default
    /// `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// The container's root filesystem is read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// In-memory filesystems: `/path` or `/path:options`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    /// The signal that stops the program (`SIGTERM` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(SIG)?[A-Z0-9]+$"))]
    pub stop_signal: Option<String>,
    /// How long the program has to stop before it is killed (10s by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<Duration>,
    /// Resource limits of the processes (`nofile`, `nproc`…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// Kernel parameters of the container's namespaces (`net.core.somaxconn`…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// Lines added to the container's `/etc/hosts`: `name:address`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// DNS servers of the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// Where the container's output goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// Container ports other services reach on the project's networks, not published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    /// Shared memory size (`64Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<Quantity>,
    /// A terminal is allocated for the program.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    /// The program's standard input is kept open.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin_open: bool,
    /// Linux capabilities added (`NET_ADMIN`): only those the agent allows the repository.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Linux capabilities dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Privileged mode: only when the agent allows the repository.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// Host devices, `host[:container[:permissions]]`: only those the agent allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// `host` shares the host's process namespace (when the agent allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^host$"))]
    pub pid: Option<String>,
    /// The IPC namespace: `private`, `shareable`, `none`, or `host` (when the agent allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(private|shareable|none|host)$"))]
    pub ipc: Option<String>,
    /// `host` leaves the engine's user namespace remapping (when the agent allows host
    /// namespaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^host$"))]
    pub userns_mode: Option<String>,
    /// Security options (`no-new-privileges:true`): only those the agent allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// Volumes of `volumes` that are not the project's (Compose's `external: true`): mounted by
    /// the name written, never created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_volumes: Vec<String>,
    /// The container's name instead of `<project>-<service>-<slot>-<n>`: for a single replica
    /// with the recreate strategy (two containers cannot share a name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]+$"))]
    pub container_name: Option<String>,
    /// Files of the repository mounted into the containers, as of the commit applied: the agent
    /// writes each on its host and the engine mounts it. A change is a new version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<RepositoryFile>,
    /// Folders of the repository mounted into the containers, as of the commit applied, like
    /// `files`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folders: Vec<RepositoryFolder>,
    /// Paths of the agent's host mounted into the containers: only under the prefixes the
    /// agent allows the repository.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_mounts: Vec<HostMount>,
    /// How the project's own networks the service joins are created, by name (the engine's
    /// defaults for those absent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub network_definitions: BTreeMap<String, NetworkDefinition>,
    /// How the project's own volumes the service mounts are created, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volume_definitions: BTreeMap<String, VolumeDefinition>,
    /// `none` (no network at all) or `host` (the host's network namespace, when the agent
    /// allows it): instead of the project's networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(none|host)$"))]
    pub network_mode: Option<String>,
    /// The image is built from the repository (`image` is then its tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
}

/// A file mounted into a container, with its content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepositoryFile {
    /// Where the content comes from (a path of the repository), for people reading the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The path in the container.
    #[schemars(regex(pattern = "^/"))]
    pub target: String,
    /// The file's text, or its bytes in base64 (`encoding: base64`).
    #[schemars(length(max = 1048576))]
    pub content: String,
    /// How `content` is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// The file's owner on the host, which the container sees (a user id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The file's group on the host, which the container sees (a group id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// The file's mode (`0o440`); readable by all (`0o644`) otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 0o777))]
    pub mode: Option<u32>,
    /// Mounted read-only (the default); with `false` the container may change its copy, which
    /// the next version replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// A network a service joins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Attachment {
    /// By name alone.
    Name(#[schemars(regex(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"))] String),
    /// With settings.
    Detailed(NetworkSettings),
}

impl Attachment {
    /// The network's name in the project.
    pub fn name(&self) -> &str {
        match self {
            Attachment::Name(name) => name,
            Attachment::Detailed(settings) => &settings.name,
        }
    }

    /// Its aliases.
    pub fn aliases(&self) -> &[String] {
        match self {
            Attachment::Name(_) => &[],
            Attachment::Detailed(settings) => &settings.aliases,
        }
    }

    /// Its name on the engine, when it is another project's or made by hand (`external`):
    /// used as it is, never created.
    pub fn engine_name(&self) -> Option<&str> {
        match self {
            Attachment::Name(_) => None,
            Attachment::Detailed(settings) => settings.engine_name.as_deref(),
        }
    }

    /// Its fixed IPv4 address.
    pub fn ipv4_address(&self) -> Option<&str> {
        match self {
            Attachment::Name(_) => None,
            Attachment::Detailed(settings) => settings.ipv4_address.as_deref(),
        }
    }
}

/// How a service joins a network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSettings {
    /// The network.
    #[schemars(regex(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"))]
    pub name: String,
    /// The network's name on the engine when it is not the project's own (Compose's
    /// `external: true`): joined as it is, never created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_name: Option<String>,
    /// Other names the service is reached by on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// A fixed address on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
}

/// When an image is pulled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// At every deploy, so a moved tag is followed.
    Always,
    /// When the engine does not have it.
    Missing,
    /// Never: the image must be on the engine.
    Never,
}

/// The engine's restart policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Never restarted: an exit is a failed replica.
    No,
    /// Restarted whatever the exit.
    Always,
    /// Restarted after a non-zero exit.
    OnFailure,
    /// Restarted unless stopped by hand.
    UnlessStopped,
}

/// A resource limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ulimit {
    /// The soft limit.
    pub soft: i64,
    /// The hard limit.
    pub hard: i64,
}

/// A logging driver and its options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Logging {
    /// The driver (`json-file`, `local`, `syslog`…).
    pub driver: String,
    /// Its options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// A health check the Docker Engine runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerHealthcheck {
    /// `[CMD, program, args…]`, `[CMD-SHELL, command]`, or `[NONE]`: no check at all, not even
    /// the image's own.
    #[schemars(length(min = 1))]
    pub test: Vec<String>,
    /// Time between checks.
    #[serde(default = "thirty_seconds")]
    pub interval: Duration,
    /// The longest one check may take.
    #[serde(default = "thirty_seconds")]
    pub timeout: Duration,
    /// Consecutive failures that make a container unhealthy.
    #[serde(default = "three")]
    pub retries: u32,
    /// Failures during this time after start do not count.
    #[serde(default = "no_time")]
    pub start_period: Duration,
}

fn thirty_seconds() -> Duration {
    Duration::secs(30)
}
fn no_time() -> Duration {
    Duration::secs(0)
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn ten_minutes() -> Duration {
    Duration::secs(600)
}

/// Copies added and removed by load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Autoscaling {
    /// The fewest copies.
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: u32,
    /// The most copies.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: u32,
    /// The average CPU use, in percent of the CPU requested, to keep the copies at.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "targetCPUUtilization")]
    #[schemars(range(min = 1))]
    pub target_cpu_utilization: Option<u32>,
    /// The average memory use, in percent of the memory requested, to keep the copies at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_memory_utilization: Option<u32>,
}

/// A port the service answers on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    /// The port's name, referred to by health checks.
    pub name: Name,
    /// The stable port clients use (the router's or the published one).
    #[schemars(range(min = 1))]
    pub port: u16,
    /// The port the process listens on, when it differs (containers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_port: Option<u16>,
    /// `TCP` (default) or `UDP`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A transport protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Protocol {
    /// TCP.
    #[default]
    TCP,
    /// UDP.
    UDP,
}

/// CPU and memory for each copy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// What each copy is guaranteed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Amounts>,
    /// What each copy may not exceed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Amounts>,
}

/// An amount of CPU and memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Amounts {
    /// CPUs: `250m`, `0.5`, `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory: `256Mi`, `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

/// An environment variable. Its value may be encrypted (`ENC[...]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    /// The variable's name: letters, digits, `_`, `.` and `-`, not starting with a digit
    /// (`discovery.type` is one).
    #[schemars(regex(pattern = r"^[-._A-Za-z][-._A-Za-z0-9]*$"))]
    pub name: String,
    /// Its value.
    pub value: Text,
}

/// A check that decides whether a copy is healthy: exactly one of `http`, `tcp`, `exec`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    {"required": ["http"]}, {"required": ["tcp"]}, {"required": ["exec"]}
]))]
pub struct HealthCheck {
    /// The check's name.
    pub name: Name,
    /// An HTTP request that must answer with the expected status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// A TCP connection that must be accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheck>,
    /// A command that must exit with status 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecCheck>,
    /// How long one attempt may take.
    #[serde(default = "two_seconds")]
    pub timeout: Duration,
    /// Time between attempts.
    #[serde(default = "five_seconds")]
    pub interval: Duration,
    /// Time to wait before the first attempt.
    #[serde(default)]
    pub initial_delay: Duration,
    /// Consecutive successes that make a copy healthy.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub success_threshold: u32,
    /// Consecutive failures that make a copy unhealthy.
    #[serde(default = "three")]
    #[schemars(range(min = 1))]
    pub failure_threshold: u32,
    /// What the check decides: `readiness` (a copy takes traffic, a rollout progresses; the
    /// default), `liveness` (a copy failing it is restarted), `startup` (the other checks wait
    /// until it passes once). Only the kubernetes target runs liveness and startup checks.
    #[serde(default = "readiness", skip_serializing_if = "is_readiness_only")]
    #[schemars(length(min = 1), extend("uniqueItems" = true))]
    pub probes: Vec<ProbeKind>,
}

/// What a health check decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// Whether a copy takes traffic, and so whether a rollout progresses.
    Readiness,
    /// Whether a copy is alive: one failing it is restarted.
    Liveness,
    /// Whether a copy has started: the other checks wait until it passes once.
    Startup,
}

impl ProbeKind {
    /// The kind's name as written in documents.
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Readiness => "readiness",
            ProbeKind::Liveness => "liveness",
            ProbeKind::Startup => "startup",
        }
    }
}

impl HealthCheck {
    /// Whether the check decides readiness (the rollout's gate).
    pub fn gates_readiness(&self) -> bool {
        self.probes.contains(&ProbeKind::Readiness)
    }
}

fn readiness() -> Vec<ProbeKind> {
    vec![ProbeKind::Readiness]
}
fn is_readiness_only(probes: &[ProbeKind]) -> bool {
    probes == [ProbeKind::Readiness]
}

fn two_seconds() -> Duration {
    Duration::secs(2)
}
fn five_seconds() -> Duration {
    Duration::secs(5)
}
fn three() -> u32 {
    3
}

/// An HTTP health check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCheck {
    /// The path requested.
    #[schemars(regex(pattern = r"^/"))]
    pub path: String,
    /// The port's name (or number); defaults to the service's first port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Text>,
    /// The status that means healthy.
    #[serde(default = "ok")]
    #[schemars(range(min = 100, max = 599))]
    pub status: u16,
}

fn ok() -> u16 {
    200
}

/// A TCP health check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpCheck {
    /// The port's name (or number); defaults to the service's first port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Text>,
}

/// A command health check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecCheck {
    /// The program and its arguments.
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
}

/// How a new version replaces the running one: exactly one of the four strategies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Strategy {
    /// Stop every old copy, then start the new ones.
    Recreate(Recreate),
    /// Replace copies in batches.
    Rolling(Rolling),
    /// Start the new version beside the old, check it, switch all traffic at once, keep the old
    /// version for instant switch-back.
    BlueGreen(BlueGreen),
    /// Move traffic to the new version in steps, promoting only while it stays healthy.
    Canary(Canary),
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy::Recreate(Recreate {})
    }
}

impl Strategy {
    /// The strategy's name as written in documents.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Recreate(_) => "recreate",
            Strategy::Rolling(_) => "rolling",
            Strategy::BlueGreen(_) => "blueGreen",
            Strategy::Canary(_) => "canary",
        }
    }
}

/// Settings of the recreate strategy (none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recreate {}

/// Settings of the rolling strategy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rolling {
    /// Copies replaced at a time.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub batch_size: u32,
    /// Copies that may be unavailable during the rollout.
    #[serde(default)]
    pub max_unavailable: u32,
    /// Copies that may run above `replicas` during the rollout.
    #[serde(default = "one")]
    pub max_surge: u32,
}

/// Settings of the blue-green strategy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlueGreen {
    /// Time the new version runs, healthy, before traffic switches.
    #[serde(default)]
    pub warmup: Duration,
    /// Time given to requests in flight on the old version after the switch.
    #[serde(default)]
    pub switchover: Duration,
    /// How long the old version is kept running for an instant switch-back.
    #[serde(default = "ten_minutes")]
    pub keep_old_version: Duration,
}

/// Settings of the canary strategy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Canary {
    /// Traffic steps, in increasing weight; full promotion follows the last step.
    #[schemars(length(min = 1))]
    pub steps: Vec<CanaryStep>,
    /// The share of successful requests (non-5xx), in percent, the canary must keep.
    #[serde(default = "ninety_five")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub success_threshold: f64,
    /// Requests the canary must have answered before its success rate is judged.
    #[serde(default = "twenty")]
    pub min_requests: u32,
    /// Judges the canary by a Prometheus query as well, at the end of every step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusGate>,
}

/// A canary's success rate as Prometheus computes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusGate {
    /// Prometheus' address, plain HTTP (`http://prometheus.monitoring:9090`).
    #[schemars(regex(pattern = r"^http://[^/?#]+/?$"))]
    pub url: String,
    /// A PromQL query whose one value is the canary's success rate in percent, held to
    /// `successThreshold`; `{{service}}`, `{{slot}}` and `{{environment}}` are put in.
    #[schemars(length(min = 1))]
    pub query: String,
}

fn ninety_five() -> f64 {
    95.0
}
fn twenty() -> u32 {
    20
}

/// One canary step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryStep {
    /// Percentage of traffic sent to the new version.
    #[schemars(range(min = 1, max = 100))]
    pub weight: u8,
    /// How long the step is held and analysed.
    #[serde(default)]
    pub pause: Duration,
}

/// A migration hook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Migration {
    /// The program and its arguments, run once per commit and environment.
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    /// Run when a rollout that migrated is rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub rollback_command: Option<Vec<String>>,
    /// How long the migration may run before it is killed and the rollout fails.
    #[serde(default = "five_minutes")]
    pub timeout: Duration,
}

fn five_minutes() -> Duration {
    Duration::secs(300)
}

/// The application's configuration: values, the schema they must satisfy, the file they are
/// written to and how the running process learns of a change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppConfig {
    /// A JSON Schema in the repository (a path from its root) the values must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Where the rendered file is written, relative to the process's working directory.
    #[serde(default = "config_file")]
    pub file: String,
    /// The file's format.
    #[serde(default)]
    pub format: ConfigFormat,
    /// How a running process learns of a change.
    #[serde(default)]
    pub reload: Reload,
    /// The signal sent when `reload` is `signal`.
    #[serde(default)]
    pub signal: Signal,
    /// The values. Strings written `ENC[...]` are encrypted.
    #[serde(default)]
    pub values: serde_json::Map<String, serde_json::Value>,
}

fn config_file() -> String {
    "config.json".into()
}

/// A configuration file format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConfigFormat {
    /// JSON.
    #[default]
    Json,
    /// YAML.
    Yaml,
}

/// How a running process learns that its configuration changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Reload {
    /// The process is restarted (through the service's strategy).
    #[default]
    Restart,
    /// The file is rewritten and the process sent `signal`.
    Signal,
    /// The file is rewritten; the process watches it.
    Watch,
}

/// A signal a process can be sent to reload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Signal {
    /// SIGHUP.
    #[default]
    SIGHUP,
    /// SIGUSR1.
    SIGUSR1,
    /// SIGUSR2.
    SIGUSR2,
}

/// How a service's replicas reach their configuration on the agent's API.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigApi {
    /// `…/api/v1/environments/{env}/services/{svc}/config`.
    pub url: String,
    /// The service's read token.
    pub token: crate::secret::Secret,
}

/// Serialized into the service's version (a new URL or key deploys the replicas again) with
/// the token's digest, never the token.
impl Serialize for ConfigApi {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut api = serializer.serialize_struct("ConfigApi", 2)?;
        api.serialize_field("url", &self.url)?;
        api.serialize_field(
            "token",
            &crate::target::workload::digest(self.token.expose().as_bytes()),
        )?;
        api.end()
    }
}
