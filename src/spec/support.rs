//! What each target does with each field of the service format: carried out (and how) or
//! refused (and why). One table is the source of both the check `plumb validate` runs — a
//! field a target refuses is reported at its line, naming the field and the target — and the
//! per-target table in the docs (`plumb schemas` writes it; a test holds the docs equal to it,
//! and another holds every field of the schema present in it). Nothing a user writes is
//! dropped without a word.

use super::diagnostic::Diagnostic;
use super::model::scalar::Duration;
use super::model::service::{HealthCheck, ProbeKind, Protocol, Restart, Strategy};
use super::model::{Service, Target};
use super::node::{Node, Path, Step};

/// What one target does with a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Carried out, as said.
    Done(&'static str),
    /// Refused at validation, for the reason said.
    Refused(&'static str),
    /// Refused with the field it is part of (named), and reported there.
    Within(&'static str),
}

/// A field of the service format, or a use of it (`path: what`), and what each target does.
pub struct Field {
    /// The field's path in the service document (`healthChecks[].probes`), with the use the
    /// row is about after a colon when only that use is refused.
    pub path: &'static str,
    /// The local target.
    pub local: Support,
    /// The compose target.
    pub compose: Support,
    /// The kubernetes target.
    pub kubernetes: Support,
    /// Where `service` uses the field as this row means it on `target`: the paths a refusal
    /// is reported at.
    pub used: fn(&Service, &Target) -> Vec<Path>,
}

impl Field {
    /// What `target` does with the field.
    pub fn on(&self, target: &Target) -> Support {
        match target {
            Target::Local(_) => self.local,
            Target::Compose(_) => self.compose,
            Target::Kubernetes(_) => self.kubernetes,
        }
    }
}

use Support::{Done, Refused, Within};

const EVERYWHERE: Support = Done("yes");

fn root() -> Path {
    Path::default()
}

/// Paths of `service` where `key` is set (an `Option` that is `Some`, a list or map not empty).
fn when(set: bool, path: Path) -> Vec<Path> {
    if set { vec![path] } else { Vec::new() }
}

/// Whether `service` runs one container at a time: one replica, replaced in place.
fn single(service: &Service) -> bool {
    service.replicas == 1 && service.autoscaling.is_none() && matches!(service.strategy, Strategy::Recreate(_))
}

fn never(_: &Service, _: &Target) -> Vec<Path> {
    Vec::new()
}

/// Paths of each health check matching `matches`, at `key` under it.
fn checks(service: &Service, key: &[&str], matches: impl Fn(&HealthCheck) -> bool) -> Vec<Path> {
    service
        .health_checks
        .iter()
        .enumerate()
        .filter(|(_, check)| matches(check))
        .map(|(i, _)| {
            key.iter()
                .fold(root().key("healthChecks").join(Step::Index(i)), |path, k| path.key(k))
        })
        .collect()
}

fn whole_seconds(d: &Duration) -> bool {
    d.0.subsec_nanos() == 0
}

/// The table: every field of the service format, and the uses of a field that a target refuses.
pub static FIELDS: &[Field] = &[
    Field {
        path: "apiVersion",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: EVERYWHERE,
        used: never,
    },
    Field {
        path: "kind",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: EVERYWHERE,
        used: never,
    },
    Field {
        path: "name",
        local: Done("names the processes and the router"),
        compose: Done("the Compose service name"),
        kubernetes: Done("names the Deployments (`<name>-<slot>`), the Service and the ConfigMaps"),
        used: never,
    },
    Field {
        path: "description",
        local: Done("documentation only"),
        compose: Done("documentation only"),
        kubernetes: Done("documentation only"),
        used: never,
    },
    Field {
        path: "enabled",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: EVERYWHERE,
        used: never,
    },
    Field {
        path: "image",
        local: Done("not used: the local target runs `command`"),
        compose: Done("the container image"),
        kubernetes: Done("the container image"),
        used: never,
    },
    Field {
        path: "command",
        local: Done("the program run, `${PORT}` put in"),
        compose: Done("the container command"),
        kubernetes: Done("the container `command`"),
        used: never,
    },
    Field {
        path: "workingDir",
        local: Done("the process's working directory, under the state directory"),
        compose: Refused(
            "it is relative to the agent's state directory, which a container does not see: set the working directory in the image",
        ),
        kubernetes: Refused(
            "it is relative to the agent's state directory, which a container does not see: set the working directory in the image",
        ),
        used: |s, _| when(s.working_dir.is_some(), root().key("workingDir")),
    },
    Field {
        path: "replicas",
        local: Done("processes (at least one)"),
        compose: Done("containers (at least one)"),
        kubernetes: Done("`spec.replicas` (zero allowed)"),
        used: never,
    },
    Field {
        path: "autoscaling",
        local: Refused("the local target runs a fixed number of processes: set `replicas`"),
        compose: Refused("the Docker Engine does not scale containers by load: set `replicas`"),
        kubernetes: Done(
            "a HorizontalPodAutoscaler (the newest version the cluster serves) for the serving color; plumb leaves the Deployment's replicas to it",
        ),
        used: |s, _| when(s.autoscaling.is_some(), root().key("autoscaling")),
    },
    Field {
        path: "replicas: with autoscaling",
        local: Within("autoscaling"),
        compose: Within("autoscaling"),
        kubernetes: Refused(
            "the autoscaler sets the replicas between `minReplicas` and `maxReplicas`: remove `replicas`",
        ),
        used: |s, _| when(s.autoscaling.is_some() && s.replicas != 1, root().key("replicas")),
    },
    Field {
        path: "ports[].name",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: Done("the container port's and the Service port's name"),
        used: never,
    },
    Field {
        path: "ports[].port",
        local: Done("the router listens on it (plus `portOffset`)"),
        compose: Done("the router listens on it (plus `portOffset`)"),
        kubernetes: Done("the Service port"),
        used: never,
    },
    Field {
        path: "ports[].targetPort",
        local: Done("not used: each process listens on the port it is given in `PORT`"),
        compose: Done("the container port"),
        kubernetes: Done("the container port and the Service's `targetPort`"),
        used: never,
    },
    Field {
        path: "ports[].protocol",
        local: Done("TCP"),
        compose: Done("TCP"),
        kubernetes: Done("the container's and the Service's port `protocol`"),
        used: never,
    },
    Field {
        path: "ports[].protocol: UDP",
        local: Refused("plumb's router forwards TCP only"),
        compose: Done("published by the container itself on `address` at the port (plus `portOffset`), not routed"),
        kubernetes: Done("`protocol: UDP`"),
        used: |s, _| {
            s.ports
                .iter()
                .enumerate()
                .filter(|(_, p)| p.protocol == Protocol::UDP)
                .map(|(i, _)| root().key("ports").join(Step::Index(i)).key("protocol"))
                .collect()
        },
    },
    Field {
        path: "ports[].protocol: UDP with two slots or replicas",
        local: Within("ports[].protocol: UDP"),
        compose: Refused(
            "a UDP port is published by the container itself, which two containers cannot share: it needs `replicas: 1` and the recreate strategy",
        ),
        kubernetes: Done("`protocol: UDP`"),
        used: |s, _| {
            s.ports
                .iter()
                .enumerate()
                .filter(|(_, p)| p.protocol == Protocol::UDP && !single(s))
                .map(|(i, _)| root().key("ports").join(Step::Index(i)).key("protocol"))
                .collect()
        },
    },
    Field {
        path: "resources",
        local: Refused(
            "the local target does not confine processes: set `resources` only in environments on the compose or kubernetes target",
        ),
        compose: Done("see its fields"),
        kubernetes: Done("the container's `resources`, exactly as declared"),
        used: |s, _| when(s.resources.is_some(), root().key("resources")),
    },
    Field {
        path: "resources.limits.cpu",
        local: Within("resources"),
        compose: Done("`NanoCpus`"),
        kubernetes: Done("`limits.cpu`"),
        used: never,
    },
    Field {
        path: "resources.limits.memory",
        local: Within("resources"),
        compose: Done("`Memory`"),
        kubernetes: Done("`limits.memory`"),
        used: never,
    },
    Field {
        path: "resources.requests.memory",
        local: Within("resources"),
        compose: Done("`MemoryReservation`"),
        kubernetes: Done("`requests.memory`"),
        used: never,
    },
    Field {
        path: "resources.requests.cpu",
        local: Within("resources"),
        compose: Refused("the Docker Engine reserves no CPU for a container"),
        kubernetes: Done("`requests.cpu`"),
        used: |s, _| {
            when(
                s.resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .is_some_and(|r| r.cpu.is_some()),
                root().key("resources").key("requests").key("cpu"),
            )
        },
    },
    Field {
        path: "resources: a CPU amount in memory units, or a memory amount in millis",
        local: Within("resources"),
        compose: Refused("the engine takes CPUs as a number (`0.5`, `500m`) and memory in bytes (`512Mi`)"),
        kubernetes: Done("as written"),
        used: |s, _| {
            let mut paths = Vec::new();
            let Some(resources) = &s.resources else { return paths };
            for (key, amounts) in [("requests", &resources.requests), ("limits", &resources.limits)] {
                let Some(amounts) = amounts else { continue };
                if amounts.cpu.as_ref().is_some_and(|q| q.nano_cpus().is_none()) {
                    paths.push(root().key("resources").key(key).key("cpu"));
                }
                if amounts.memory.as_ref().is_some_and(|q| q.bytes().is_none()) {
                    paths.push(root().key("resources").key(key).key("memory"));
                }
            }
            paths
        },
    },
    Field {
        path: "env[]",
        local: Done("the process's environment"),
        compose: Done("the container's environment"),
        kubernetes: Done("the container's `env`; encrypted values by `secretKeyRef`"),
        used: never,
    },
    Field {
        path: "healthChecks[].name",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: EVERYWHERE,
        used: never,
    },
    Field {
        path: "healthChecks[].http",
        local: Done("plumb probes each process"),
        compose: Done("plumb probes each container"),
        kubernetes: Done("`httpGet` probe (path, port, scheme HTTP)"),
        used: never,
    },
    Field {
        path: "healthChecks[].http.status: outside 200–399",
        local: Done("that exact status"),
        compose: Done("that exact status"),
        kubernetes: Refused("the kubelet counts any status from 200 to 399 as success and cannot expect another"),
        used: |s, _| {
            checks(s, &["http", "status"], |c| {
                c.http.as_ref().is_some_and(|h| !(200..400).contains(&h.status))
            })
        },
    },
    Field {
        path: "healthChecks[].tcp",
        local: Done("plumb connects to each process"),
        compose: Done("plumb connects to each container"),
        kubernetes: Done("`tcpSocket` probe"),
        used: never,
    },
    Field {
        path: "healthChecks[].exec",
        local: Done("run on the agent's machine"),
        compose: Refused(
            "plumb would run the command on the agent's machine, not in the container: use an http or tcp check",
        ),
        kubernetes: Done("`exec` probe, run in the container"),
        used: |s, _| checks(s, &["exec"], |c| c.exec.is_some()),
    },
    Field {
        path: "healthChecks[].timeout",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: Done("`timeoutSeconds`"),
        used: never,
    },
    Field {
        path: "healthChecks[].interval",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: Done("`periodSeconds`"),
        used: never,
    },
    Field {
        path: "healthChecks[].initialDelay",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: Done("`initialDelaySeconds`"),
        used: never,
    },
    Field {
        path: "healthChecks[]: a time that is not whole seconds",
        local: Done("to the millisecond"),
        compose: Done("to the millisecond"),
        kubernetes: Refused("the kubelet counts probe times in whole seconds: write `1s`, not `500ms`"),
        used: |s, _| {
            let mut paths = checks(s, &["timeout"], |c| !whole_seconds(&c.timeout));
            paths.extend(checks(s, &["interval"], |c| !whole_seconds(&c.interval)));
            paths.extend(checks(s, &["initialDelay"], |c| !whole_seconds(&c.initial_delay)));
            paths
        },
    },
    Field {
        path: "healthChecks[].successThreshold",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: Done("`successThreshold`"),
        used: never,
    },
    Field {
        path: "healthChecks[].successThreshold: above 1 on a liveness or startup check",
        local: Done("not applicable: liveness and startup checks are refused"),
        compose: Done("not applicable: liveness and startup checks are refused"),
        kubernetes: Refused("Kubernetes requires a liveness or startup probe to succeed once"),
        used: |s, _| {
            checks(s, &["successThreshold"], |c| {
                c.success_threshold > 1 && c.probes.iter().any(|k| *k != ProbeKind::Readiness)
            })
        },
    },
    Field {
        path: "healthChecks[].failureThreshold",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: Done("`failureThreshold`"),
        used: never,
    },
    Field {
        path: "healthChecks[].probes",
        local: Done("readiness: the check gates each rollout"),
        compose: Done("readiness: the check gates each rollout"),
        kubernetes: Done("`readinessProbe`, `livenessProbe`, `startupProbe`"),
        used: never,
    },
    Field {
        path: "healthChecks[].probes: liveness, startup",
        local: Refused(
            "the local target checks health while a version rolls out; nothing probes a running process afterwards",
        ),
        compose: Refused(
            "plumb checks health while a version rolls out; for a check the engine keeps running use `container.healthcheck`",
        ),
        kubernetes: Done("`livenessProbe`, `startupProbe`"),
        used: |s, _| checks(s, &["probes"], |c| c.probes.iter().any(|k| *k != ProbeKind::Readiness)),
    },
    Field {
        path: "healthChecks[].probes: two checks of one kind",
        local: Done("every readiness check must pass"),
        compose: Done("every readiness check must pass"),
        kubernetes: Refused(
            "a container has one probe of each kind: keep one check per kind (an `exec` check can test several things)",
        ),
        used: |s, _| {
            let mut seen = std::collections::BTreeSet::new();
            let mut paths = Vec::new();
            for (i, check) in s.health_checks.iter().enumerate() {
                if check.probes.iter().any(|kind| !seen.insert(*kind)) {
                    paths.push(root().key("healthChecks").join(Step::Index(i)).key("name"));
                }
            }
            paths
        },
    },
    Field {
        path: "strategy.recreate",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: Done("the Deployment's `Recreate` strategy"),
        used: never,
    },
    Field {
        path: "strategy.rolling.maxSurge",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: Done("`rollingUpdate.maxSurge`"),
        used: never,
    },
    Field {
        path: "strategy.rolling.maxUnavailable",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: Done("`rollingUpdate.maxUnavailable`"),
        used: never,
    },
    Field {
        path: "strategy.rolling.batchSize",
        local: Done("copies replaced at a time"),
        compose: Done("copies replaced at a time"),
        kubernetes: Refused(
            "a Deployment replaces pods by `maxSurge` and `maxUnavailable` alone: remove `batchSize` (or set it to 1)",
        ),
        used: |s, _| {
            when(
                matches!(&s.strategy, Strategy::Rolling(r) if r.batch_size != 1),
                root().key("strategy").key("rolling").key("batchSize"),
            )
        },
    },
    Field {
        path: "strategy.blueGreen.warmup",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: EVERYWHERE,
        used: never,
    },
    Field {
        path: "strategy.blueGreen.switchover",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: EVERYWHERE,
        used: never,
    },
    Field {
        path: "strategy.blueGreen.keepOldVersion",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: Done("then the old color is scaled to zero"),
        used: never,
    },
    Field {
        path: "strategy.canary.steps[]",
        local: Done("the router's exact weights"),
        compose: Done("the router's (or nginx's) exact weights"),
        kubernetes: Done("the exact weights of a Gateway's HTTPRoute"),
        used: never,
    },
    Field {
        path: "strategy.canary: without `target.kubernetes.gateway`",
        local: Done("plumb's router weighs traffic"),
        compose: Done("plumb's router (or nginx) weighs traffic"),
        kubernetes: Refused(
            "a Service alone cannot weigh traffic between two Deployments: name a Gateway API Gateway in `target.kubernetes.gateway`, whose HTTPRoute carries the weights, or use `blueGreen`",
        ),
        used: |s, t| {
            when(
                matches!(&s.strategy, Strategy::Canary(_)) && matches!(t, Target::Kubernetes(k) if k.gateway.is_none()),
                root().key("strategy").key("canary"),
            )
        },
    },
    Field {
        path: "strategy.canary.successThreshold",
        local: Done("the router counts each slot's answers"),
        compose: Done("the router counts each slot's answers"),
        kubernetes: Done("with `prometheus`"),
        used: never,
    },
    Field {
        path: "strategy.canary.minRequests",
        local: Done("the router counts each slot's answers"),
        compose: Done("the router counts each slot's answers"),
        kubernetes: Done("with `prometheus`"),
        used: never,
    },
    Field {
        path: "strategy.canary.successThreshold: without `prometheus`",
        local: Done("the router counts each slot's answers"),
        compose: Done("the router counts each slot's answers"),
        kubernetes: Refused(
            "no router sees a canary's answers on this target: add `prometheus: {url, query}` to judge them, or set `successThreshold: 0` to move the weights on health checks alone",
        ),
        used: |s, _| {
            when(
                matches!(&s.strategy, Strategy::Canary(c) if c.prometheus.is_none() && c.success_threshold > 0.0),
                root().key("strategy").key("canary"),
            )
        },
    },
    Field {
        path: "strategy.canary.prometheus",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: EVERYWHERE,
        used: never,
    },
    Field {
        path: "progressDeadline",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: Done("`progressDeadlineSeconds`, and plumb's own wait"),
        used: never,
    },
    Field {
        path: "migration.command",
        local: Done("a process"),
        compose: Done("a one-off container"),
        kubernetes: Done("a Job"),
        used: never,
    },
    Field {
        path: "migration.rollbackCommand",
        local: Done("a process"),
        compose: Done("a one-off container"),
        kubernetes: Done("a Job"),
        used: never,
    },
    Field {
        path: "task",
        local: Done("a process run to completion once per version"),
        compose: Done("a one-off container run to completion once per version"),
        kubernetes: Done("a Job run to completion once per version"),
        used: never,
    },
    Field {
        path: "task: with ports, health checks, replicas or a migration",
        local: Refused(
            "a task runs once to completion: it serves nothing, so it has no ports, health checks, migration or copies",
        ),
        compose: Refused(
            "a task runs once to completion: it serves nothing, so it has no ports, health checks, migration or copies",
        ),
        kubernetes: Refused(
            "a task runs once to completion: it serves nothing, so it has no ports, health checks, migration or copies",
        ),
        used: |s, _| {
            let serving = !s.ports.is_empty()
                || !s.health_checks.is_empty()
                || s.replicas != 1
                || s.autoscaling.is_some()
                || s.migration.is_some();
            when(s.task && serving, root().key("task"))
        },
    },
    Field {
        path: "task: without a command on the local target",
        local: Refused("a local process needs its `command`"),
        compose: Done("the image's own command"),
        kubernetes: Done("the image's own command"),
        used: |s, t| {
            when(
                s.task && s.command.is_none() && matches!(t, Target::Local(_)),
                root().key("task"),
            )
        },
    },
    Field {
        path: "migration.timeout",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: Done("the Job's `activeDeadlineSeconds`"),
        used: never,
    },
    Field {
        path: "config.schema",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: EVERYWHERE,
        used: never,
    },
    Field {
        path: "config.file",
        local: Done("written in the working directory"),
        compose: Done("mounted under `/etc/plumb/config`"),
        kubernetes: Done("a ConfigMap (a Secret when it holds encrypted values) mounted under `/etc/plumb/config`"),
        used: never,
    },
    Field {
        path: "config.format",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: EVERYWHERE,
        used: never,
    },
    Field {
        path: "config.reload",
        local: Done("signal, watch or restart"),
        compose: Done("signal, watch or restart"),
        kubernetes: Done("a change rolls out (a ConfigMap reaches running pods only eventually)"),
        used: never,
    },
    Field {
        path: "config.signal",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: Done("not sent: a change rolls out"),
        used: never,
    },
    Field {
        path: "config.values",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: EVERYWHERE,
        used: never,
    },
    Field {
        path: "dependsOn",
        local: Done("deploy order"),
        compose: Done("deploy order"),
        kubernetes: Done("deploy order"),
        used: never,
    },
    Field {
        path: "labels",
        local: Refused("processes carry no labels"),
        compose: Done("container labels"),
        kubernetes: Done("labels of every object of the service"),
        used: |s, _| when(!s.labels.is_empty(), root().key("labels")),
    },
    Field {
        path: "container",
        local: Refused("the local target runs processes, not containers"),
        compose: Done("see its fields"),
        kubernetes: Refused(
            "these are Docker Engine settings: a pod's volumes and probes are not written this way (use `healthChecks` for probes)",
        ),
        used: |s, _| when(s.container.is_some(), root().key("container")),
    },
    Field {
        path: "container.volumes",
        local: Within("container"),
        compose: Done("named volumes of the project"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.networks",
        local: Within("container"),
        compose: Done("networks of the project"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.healthcheck",
        local: Within("container"),
        compose: Done("the engine's health check"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.networks[].aliases",
        local: Within("container"),
        compose: Done("more names the service is reached by on the network"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.restart",
        local: Within("container"),
        compose: Done("the engine's restart policy (`unless-stopped` by default)"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.entrypoint",
        local: Within("container"),
        compose: Done("the container's `Entrypoint`"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.user",
        local: Within("container"),
        compose: Done("the container's `User`"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.hostname",
        local: Within("container"),
        compose: Done("the container's `Hostname`"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.workingDir",
        local: Within("container"),
        compose: Done("the container's `WorkingDir`"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.init",
        local: Within("container"),
        compose: Done("an init process first (default `true`)"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.readOnly",
        local: Within("container"),
        compose: Done("a read-only root filesystem"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.tmpfs",
        local: Within("container"),
        compose: Done("in-memory filesystems"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.stopSignal",
        local: Within("container"),
        compose: Done("the container's `StopSignal`"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.stopGracePeriod",
        local: Within("container"),
        compose: Done("the container's `StopTimeout`; the engine waits that long when plumb stops it"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.ulimits",
        local: Within("container"),
        compose: Done("the container's `Ulimits`"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.sysctls",
        local: Within("container"),
        compose: Done("the container's `Sysctls`"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.extraHosts",
        local: Within("container"),
        compose: Done("lines of the container's `/etc/hosts`"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.dns",
        local: Within("container"),
        compose: Done("the container's DNS servers"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.logging",
        local: Within("container"),
        compose: Done("the container's logging driver and options"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.expose",
        local: Within("container"),
        compose: Done("exposed container ports, not published"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.shmSize",
        local: Within("container"),
        compose: Done("the size of `/dev/shm`"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.files",
        local: Within("container"),
        compose: Done("written on the agent's host per slot and mounted (read-only unless `readOnly: false`)"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.platform",
        local: Within("container"),
        compose: Done("the platform the image is pulled, built and run for"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.usernsMode",
        local: Within("container"),
        compose: Done("the host's user namespace, when the agent allows host namespaces"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.pullPolicy",
        local: Within("container"),
        compose: Done("the image pulled at every deploy, when missing, or never"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.restartRetries",
        local: Within("container"),
        compose: Done("the engine's most restarts after failures"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.restartRetries: without `restart: on-failure`",
        local: Within("container"),
        compose: Refused("the engine counts restarts after failures only: it needs `restart: on-failure`"),
        kubernetes: Within("container"),
        used: |s, _| {
            let counted = s
                .container
                .as_ref()
                .is_some_and(|c| c.restart_retries.is_some() && c.restart != Some(Restart::OnFailure));
            when(counted, root().key("container").key("restartRetries"))
        },
    },
    Field {
        path: "container.networkMode: with ports",
        local: Within("container"),
        compose: Refused("with a network mode of its own the container's ports are not reached through plumb's proxy"),
        kubernetes: Within("container"),
        used: |s, _| {
            let moded = s.container.as_ref().is_some_and(|c| c.network_mode.is_some());
            when(moded && !s.ports.is_empty(), root().key("container").key("networkMode"))
        },
    },
    Field {
        path: "container.folders",
        local: Within("container"),
        compose: Done(
            "written on the agent's host per slot, every file, and mounted (read-only unless `readOnly: false`)",
        ),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.hostMounts",
        local: Within("container"),
        compose: Done("paths of the agent's host mounted, when the agent allows them for the repository"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.networkDefinitions",
        local: Within("container"),
        compose: Done(
            "the project's networks created with these settings; one made otherwise is made again when no container uses it, and refused while one does",
        ),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.volumeDefinitions",
        local: Within("container"),
        compose: Done(
            "the project's volumes created with these settings; one created otherwise is refused, never recreated (its data stays)",
        ),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.networkMode",
        local: Within("container"),
        compose: Done("no network, or the host's (when the agent allows host namespaces)"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.networkMode: host with two slots or replicas",
        local: Within("container"),
        compose: Refused(
            "two containers on the host's network would listen on the same ports: the host's network needs `replicas: 1` and the recreate strategy",
        ),
        kubernetes: Within("container"),
        used: |s, _| {
            let host = s
                .container
                .as_ref()
                .is_some_and(|c| c.network_mode.as_deref() == Some("host"));
            when(host && !single(s), root().key("container").key("networkMode"))
        },
    },
    Field {
        path: "container.build",
        local: Within("container"),
        compose: Done("the image built by the engine from the repository's folder, tagged by its content, built once"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.tty",
        local: Within("container"),
        compose: Done("a terminal for the program"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.stdinOpen",
        local: Within("container"),
        compose: Done("standard input kept open"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.capAdd",
        local: Within("container"),
        compose: Done("added capabilities, when the agent allows them for the repository"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.capDrop",
        local: Within("container"),
        compose: Done("dropped capabilities"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.privileged",
        local: Within("container"),
        compose: Done("privileged mode, when the agent allows it for the repository"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.devices",
        local: Within("container"),
        compose: Done("host devices, when the agent allows them for the repository"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.pid",
        local: Within("container"),
        compose: Done("the host's process namespace, when the agent allows it for the repository"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.ipc",
        local: Within("container"),
        compose: Done("the IPC namespace (`host` when the agent allows it for the repository)"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.securityOpt",
        local: Within("container"),
        compose: Done("security options, when the agent allows them for the repository"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.externalVolumes",
        local: Within("container"),
        compose: Done("volumes mounted by their engine names, never created"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.containerName",
        local: Within("container"),
        compose: Done("the container's name"),
        kubernetes: Within("container"),
        used: never,
    },
    Field {
        path: "container.containerName: with two slots or replicas",
        local: Within("container"),
        compose: Refused(
            "two containers cannot share one name: a fixed name needs `replicas: 1` and the recreate strategy",
        ),
        kubernetes: Within("container"),
        used: |s, _| {
            let named = s.container.as_ref().is_some_and(|c| c.container_name.is_some());
            when(named && !single(s), root().key("container").key("containerName"))
        },
    },
    Field {
        path: "container.networks[].ipv4Address: with two slots or replicas",
        local: Within("container"),
        compose: Refused(
            "one address cannot be held by two containers: a fixed address needs `replicas: 1` and the recreate strategy",
        ),
        kubernetes: Within("container"),
        used: |s, _| {
            s.container
                .iter()
                .flat_map(|c| c.networks.iter().enumerate())
                .filter(|(_, n)| n.ipv4_address().is_some() && !single(s))
                .map(|(i, _)| {
                    root()
                        .key("container")
                        .key("networks")
                        .join(Step::Index(i))
                        .key("ipv4Address")
                })
                .collect()
        },
    },
];

/// The environment document's own fields. `target` holds one target's settings, each carried
/// out by that target alone (its reference is the target's page); `services` holds overlays,
/// whose fields are the service rows above.
pub static ENVIRONMENT_FIELDS: &[Field] = &[
    Field {
        path: "apiVersion",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: EVERYWHERE,
        used: never,
    },
    Field {
        path: "kind",
        local: EVERYWHERE,
        compose: EVERYWHERE,
        kubernetes: EVERYWHERE,
        used: never,
    },
    Field {
        path: "name",
        local: EVERYWHERE,
        compose: Done("also the Compose project, unless `project` says otherwise"),
        kubernetes: Done("the value of every object's `plumb.dev/environment` label"),
        used: never,
    },
    Field {
        path: "description",
        local: Done("documentation only"),
        compose: Done("documentation only"),
        kubernetes: Done("documentation only"),
        used: never,
    },
    Field {
        path: "target",
        local: Done("`local`: see the local target's page"),
        compose: Done("`compose`: see the compose target's page"),
        kubernetes: Done("`kubernetes`: see the kubernetes target's page"),
        used: never,
    },
    Field {
        path: "sync.automatic",
        local: Done("`false`: nothing is applied, not even the first deployment, until `plumb sync`"),
        compose: Done("as on every target"),
        kubernetes: Done("as on every target"),
        used: never,
    },
    Field {
        path: "sync.selfHeal",
        local: Done("drift put back at each check"),
        compose: Done("drift put back at each check and on engine events"),
        kubernetes: Done("drift put back at each check and on watch events"),
        used: never,
    },
    Field {
        path: "sync.prune",
        local: Done("services no longer declared are stopped"),
        compose: Done("their containers removed"),
        kubernetes: Done("their objects deleted, plain manifests by inventory"),
        used: never,
    },
    Field {
        path: "syncWindows",
        local: Done("automatic syncs and self-heal wait outside the windows in force (the rollback point's)"),
        compose: Done("automatic syncs and self-heal wait outside the windows in force (the rollback point's)"),
        kubernetes: Done("automatic syncs and self-heal wait outside the windows in force (the rollback point's)"),
        used: never,
    },
    Field {
        path: "syncWindows[].kind",
        local: Done("`allow`: changes land only while one is open; `deny`: held back while open"),
        compose: Done("`allow`: changes land only while one is open; `deny`: held back while open"),
        kubernetes: Done("`allow`: changes land only while one is open; `deny`: held back while open"),
        used: never,
    },
    Field {
        path: "syncWindows[].schedule",
        local: Done("five-field cron or `@daily`, read in the window's zone"),
        compose: Done("five-field cron or `@daily`, read in the window's zone"),
        kubernetes: Done("five-field cron or `@daily`, read in the window's zone"),
        used: never,
    },
    Field {
        path: "syncWindows[].duration",
        local: Done("how long each opening lasts, real time"),
        compose: Done("how long each opening lasts, real time"),
        kubernetes: Done("how long each opening lasts, real time"),
        used: never,
    },
    Field {
        path: "syncWindows[].timeZone",
        local: Done("IANA zone, daylight-saving changes followed"),
        compose: Done("IANA zone, daylight-saving changes followed"),
        kubernetes: Done("IANA zone, daylight-saving changes followed"),
        used: never,
    },
    Field {
        path: "syncWindows[].manualSync",
        local: Done("`plumb sync` goes through while this window holds changes back"),
        compose: Done("`plumb sync` goes through while this window holds changes back"),
        kubernetes: Done("`plumb sync` goes through while this window holds changes back"),
        used: never,
    },
    Field {
        path: "promotion",
        local: Done("a commit waits until the environments it follows ran it healthy (read from the rollback point)"),
        compose: Done("a commit waits until the environments it follows ran it healthy (read from the rollback point)"),
        kubernetes: Done(
            "a commit waits until the environments it follows ran it healthy (read from the rollback point)",
        ),
        used: never,
    },
    Field {
        path: "promotion.after",
        local: Done("environments of this repository, not itself"),
        compose: Done("environments of this repository, not itself"),
        kubernetes: Done("environments of this repository, not itself"),
        used: never,
    },
    Field {
        path: "promotion.soak",
        local: Done("how long it must have run there without a rollback"),
        compose: Done("how long it must have run there without a rollback"),
        kubernetes: Done("how long it must have run there without a rollback"),
        used: never,
    },
    Field {
        path: "approval",
        local: Done(
            "a commit waits for signed approvals under refs/plumb/approvals/ (rule read from the rollback point)",
        ),
        compose: Done(
            "a commit waits for signed approvals under refs/plumb/approvals/ (rule read from the rollback point)",
        ),
        kubernetes: Done(
            "a commit waits for signed approvals under refs/plumb/approvals/ (rule read from the rollback point)",
        ),
        used: never,
    },
    Field {
        path: "approval.required",
        local: Done("how many different people"),
        compose: Done("how many different people"),
        kubernetes: Done("how many different people"),
        used: never,
    },
    Field {
        path: "approval.approvers",
        local: Done("signing-policy users holding sign_tag; any such user when absent"),
        compose: Done("signing-policy users holding sign_tag; any such user when absent"),
        kubernetes: Done("signing-policy users holding sign_tag; any such user when absent"),
        used: never,
    },
    Field {
        path: "approval.allowSelfApproval",
        local: Done("whether the commit's signer counts"),
        compose: Done("whether the commit's signer counts"),
        kubernetes: Done("whether the commit's signer counts"),
        used: never,
    },
    Field {
        path: "images.requireSignature.keys",
        local: Refused("the local target runs commands, not images"),
        compose: Done(
            "each service's image must carry a cosign signature of its digest, in its registry, by one of these keys (or of the keyless identities; read from the rollback point); else the commit is refused",
        ),
        kubernetes: Done(
            "each service's image must carry a cosign signature of its digest, in its registry, by one of these keys (or of the keyless identities; read from the rollback point); else the commit is refused",
        ),
        used: never,
    },
    Field {
        path: "images.requireSignature.keyless",
        local: Refused("the local target runs commands, not images"),
        compose: Done(
            "or a keyless signature by one of these identities: its certificate chain, log entry (signed entry timestamp, inclusion proof) and certificate transparency timestamp checked offline against the trusted root (read from the rollback point)",
        ),
        kubernetes: Done(
            "or a keyless signature by one of these identities: its certificate chain, log entry (signed entry timestamp, inclusion proof) and certificate transparency timestamp checked offline against the trusted root (read from the rollback point)",
        ),
        used: never,
    },
    Field {
        path: "services",
        local: Done("overlays: see the service rows"),
        compose: Done("overlays: see the service rows"),
        kubernetes: Done("overlays: see the service rows"),
        used: never,
    },
];

/// Reports every field `service` uses that `target` refuses, at its line.
pub fn check(service: &Service, node: &Node, target: &Target, out: &mut Vec<Diagnostic>) {
    for field in FIELDS {
        let Support::Refused(why) = field.on(target) else {
            continue;
        };
        for path in (field.used)(service, target) {
            let at = node.locate(&path.0).0.at.clone();
            out.push(
                Diagnostic::new(
                    &at,
                    format!(
                        "the {} target does not carry out `{}`: {why}",
                        target.name(),
                        field.path
                    ),
                )
                .path(&path),
            );
        }
    }
}

/// The tables as Markdown, for the docs: the service document's, then the environment's.
pub fn markdown() -> String {
    format!(
        "{}\nThe environment document:\n\n{}",
        table(FIELDS),
        table(ENVIRONMENT_FIELDS)
    )
}

fn table(fields: &[Field]) -> String {
    let cell = |support: Support| match support {
        Done(how) => how.replace('|', "\\|"),
        Refused(why) => format!("**refused**: {}", why.replace('|', "\\|")),
        Within(parent) => format!("**refused** with `{parent}`"),
    };
    let mut out = String::from("| field | local | compose | kubernetes |\n|---|---|---|---|\n");
    for field in fields {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            field.path.replace('|', "\\|"),
            cell(field.local),
            cell(field.compose),
            cell(field.kubernetes)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every property of the service schema, as `a.b[].c`.
    fn schema_paths() -> Vec<String> {
        paths_of(serde_json::to_value(schemars::schema_for!(Service)).unwrap())
    }

    fn paths_of(schema: serde_json::Value) -> Vec<String> {
        let defs = schema["$defs"].clone();
        let mut out = Vec::new();
        walk(&schema, &defs, "", &mut out, 0);
        out
    }

    fn walk(schema: &serde_json::Value, defs: &serde_json::Value, at: &str, out: &mut Vec<String>, depth: usize) {
        if depth > 8 {
            return;
        }
        if let Some(reference) = schema["$ref"].as_str() {
            let name = reference.trim_start_matches("#/$defs/");
            return walk(&defs[name], defs, at, out, depth + 1);
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            for branch in schema[key].as_array().into_iter().flatten() {
                walk(branch, defs, at, out, depth + 1);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(items, defs, &format!("{at}[]"), out, depth + 1);
        }
        for (key, property) in schema["properties"].as_object().into_iter().flatten() {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            out.push(path.clone());
            // Free-form maps (values, labels) are one field; an environment's target settings
            // and overlays have rows of their own elsewhere.
            if !matches!(key.as_str(), "values" | "labels" | "target" | "services") {
                walk(property, defs, &path, out, depth + 1);
            }
        }
    }

    #[test]
    fn every_field_of_the_schema_has_a_row() {
        let rows: Vec<&str> = FIELDS.iter().map(|f| f.path.split(':').next().unwrap()).collect();
        // A row covers its field and what lies under it; a field whose parts all have rows is
        // covered by them.
        let covered = |path: &str| {
            rows.iter().any(|row| {
                *row == path
                    || path.starts_with(&format!("{row}."))
                    || path.starts_with(&format!("{row}[]"))
                    || row.starts_with(&format!("{path}."))
                    || row.starts_with(&format!("{path}["))
            })
        };
        let missing: Vec<String> = schema_paths().into_iter().filter(|p| !covered(p)).collect();
        assert!(
            missing.is_empty(),
            "fields with no row in the per-target table: {missing:?}"
        );
        let rows: Vec<&str> = ENVIRONMENT_FIELDS.iter().map(|f| f.path).collect();
        let environment = serde_json::to_value(schemars::schema_for!(crate::spec::model::environment::Environment));
        let missing: Vec<String> = paths_of(environment.unwrap())
            .into_iter()
            .filter(|p| {
                !rows.iter().any(|r| r == p || p.starts_with(&format!("{r}.")))
                    && !rows.iter().any(|r| r.starts_with(&format!("{p}.")))
            })
            .collect();
        assert!(missing.is_empty(), "environment fields with no row: {missing:?}");
    }

    /// The docs hold the table between these marks; `PLUMB_BLESS=1 cargo test` writes it there.
    const START: &str = "<!-- per-target table: generated from src/spec/support.rs -->\n";
    const END: &str = "<!-- end of the per-target table -->";

    #[test]
    fn the_docs_hold_the_table() {
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/targets.md");
        let docs = std::fs::read_to_string(file).unwrap();
        let (before, rest) = docs
            .split_once(START)
            .expect("docs/targets.md marks where the table goes");
        let (table, after) = rest
            .split_once(END)
            .expect("docs/targets.md marks where the table ends");
        if table != markdown() && std::env::var_os("PLUMB_BLESS").is_some() {
            std::fs::write(file, format!("{before}{START}{}{END}{after}", markdown())).unwrap();
            return;
        }
        assert!(
            table == markdown(),
            "docs/targets.md does not hold the table the check uses: run `PLUMB_BLESS=1 cargo test --lib support` and review the diff"
        );
    }
}
