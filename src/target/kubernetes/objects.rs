//! The objects plumb applies for a service, as server-side apply documents holding only the
//! fields plumb owns: a Deployment per slot, the Service whose selector moves traffic, a Job per
//! migration, a ConfigMap for a slot's configuration file and a Secret for its decrypted
//! values (variables by reference, and the configuration file when it holds any). Labels say
//! who owns what; a `protocol` is stated on every port (1.20 servers require it).

use serde_json::{Value, json};

use crate::spec::model::Service;
use crate::spec::model::environment::GatewayRef;
use crate::spec::model::service::{Amounts, Port, ProbeKind, Protocol, Resources, Strategy};
use crate::target::workload::{
    Slot, WorkloadError, config_file, config_is_secret, digest, is_secret_variable, variables,
};

/// The label every object plumb manages carries, with the environment as value.
pub const ENVIRONMENT: &str = "plumb.dev/environment";
/// The service a Deployment or Job belongs to.
pub const SERVICE: &str = "app.kubernetes.io/name";
/// A Deployment's slot.
pub const SLOT: &str = "plumb.dev/slot";
/// The version a Deployment runs (annotation).
pub const VERSION: &str = "plumb.dev/version";
/// The commit a Deployment's version was applied from (annotation).
pub const COMMIT: &str = "plumb.dev/commit";
/// The weights last routed, on the Service (annotation): `blue=100,green=0`.
pub const WEIGHTS: &str = "plumb.dev/weights";
/// Where a replica reads its configuration file.
const CONFIG_DIR: &str = "/etc/plumb/config";

/// The ConfigMap holding the configuration file of `service`'s `slot`.
pub fn config_map_name(service: &str, slot: Slot) -> String {
    format!("{service}-{}-config", slot.name())
}

/// The Secret holding the decrypted values of `service`'s `slot`.
pub fn secret_name(service: &str, slot: Slot) -> String {
    format!("{service}-{}-secrets", slot.name())
}

/// The key of a Secret holding the slot's configuration file (not a variable's name, which
/// has no dash).
pub const CONFIG_KEY: &str = "plumb-config";

/// What goes in the Secret of a workload of `service` whose variables are `env` and whose
/// configuration file is `config`: the variables written encrypted, and the file when it
/// holds encrypted values. Empty when the service has none.
pub fn secret_data(service: &Service, env: &[(String, String)], config: Option<&str>) -> Vec<(String, String)> {
    let mut data: Vec<(String, String)> = env
        .iter()
        .filter(|(name, _)| is_secret_variable(service, name))
        .cloned()
        .collect();
    if let Some(text) = config.filter(|_| config_is_secret(service)) {
        data.push((CONFIG_KEY.to_owned(), text.to_owned()));
    }
    data
}

/// Secret `name` of `service` (of `slot`, for a Deployment's) holding `data`.
pub fn secret(
    environment: &str,
    service: &Service,
    name: &str,
    slot: Option<Slot>,
    data: &[(String, String)],
) -> Value {
    use base64::Engine;
    let mut labels = labels(environment, service);
    if let Some(slot) = slot {
        labels.insert(SLOT.to_owned(), json!(slot.name()));
    }
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.clone(), json!(base64::engine::general_purpose::STANDARD.encode(v))))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": labels},
        "type": "Opaque",
        "data": data,
    })
}

/// A Secret as plumb keeps it in memory: each value replaced by its digest, which is all that
/// observing compares; its annotations dropped (`kubectl apply` leaves the whole Secret, values
/// in clear, in one).
pub fn digest_secret(secret: &mut k8s_openapi::api::core::v1::Secret) {
    for value in secret.data.iter_mut().flat_map(|d| d.values_mut()) {
        value.0 = digest(&value.0).into_bytes();
    }
    secret.string_data = None;
    secret.metadata.annotations = None;
}

/// The ConfigMap of `service`'s `slot` holding its configuration file `key` with `text`.
pub fn config_map(environment: &str, service: &Service, slot: Slot, key: &str, text: &str) -> Value {
    let mut labels = labels(environment, service);
    labels.insert(SLOT.to_owned(), json!(slot.name()));
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_map_name(service.name.as_str(), slot), "labels": labels},
        "data": {key: text},
    })
}

/// The Deployment of `service`'s `slot`.
pub fn deployment_name(service: &str, slot: Slot) -> String {
    format!("{service}-{}", slot.name())
}

/// The labels of everything `service` owns in `environment`.
fn labels(environment: &str, service: &Service) -> serde_json::Map<String, Value> {
    let mut labels: serde_json::Map<String, Value> = service
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    labels.insert(SERVICE.to_owned(), json!(service.name.as_str()));
    labels.insert("app.kubernetes.io/managed-by".to_owned(), json!("plumb"));
    labels.insert(ENVIRONMENT.to_owned(), json!(environment));
    labels
}

/// The container of `service`, with `env` as its variables; those written encrypted are read
/// from Secret `secrets`.
fn container(service: &Service, env: &[(String, String)], secrets: &str) -> Value {
    let ports: Vec<Value> = service
        .ports
        .iter()
        .map(|p| json!({"name": p.name.as_str(), "containerPort": p.target_port.unwrap_or(p.port), "protocol": protocol(p)}))
        .collect();
    let mut env: Vec<Value> = env
        .iter()
        .map(|(k, v)| {
            if is_secret_variable(service, k) {
                json!({"name": k, "valueFrom": {"secretKeyRef": {"name": secrets, "key": k}}})
            } else {
                json!({"name": k, "value": v})
            }
        })
        .collect();
    if let Some(first) = service.ports.first() {
        env.push(json!({"name": "PORT", "value": first.target_port.unwrap_or(first.port).to_string()}));
    }
    // A pod is reached at its own address (probes, the Service), not on its loopback: the
    // address to listen on, as the compose target says it.
    if !env.iter().any(|v| v["name"] == "HOST") {
        env.push(json!({"name": "HOST", "value": "0.0.0.0"}));
    }
    let mut container = json!({
        "name": service.name.as_str(),
        "image": service.image,
        "env": env,
        "ports": ports,
    });
    if let Some(command) = &service.command {
        let names: Vec<&str> = env.iter().filter_map(|v| v["name"].as_str()).collect();
        container["command"] = json!(
            command
                .iter()
                .map(|arg| kubelet_expands(arg, &names))
                .collect::<Vec<_>>()
        );
    }
    if let Some(resources) = &service.resources {
        container["resources"] = self::resources(resources);
    }
    container
}

/// `arg` with each `${NAME}` of a variable in `names` written `$(NAME)`, which the kubelet
/// expands from the container's variables as the other targets expand `${NAME}`; a `$(` of
/// the argument's own is escaped (`$$(`) so the kubelet leaves it as written.
fn kubelet_expands(arg: &str, names: &[&str]) -> String {
    let escaped = arg.replace("$(", "$$(");
    let pairs: Vec<(String, String)> = names
        .iter()
        .map(|name| ((*name).to_owned(), format!("$({name})")))
        .collect();
    crate::target::workload::expand(&escaped, &pairs)
}

/// A port's protocol as the API writes it.
fn protocol(port: &Port) -> &'static str {
    match port.protocol {
        Protocol::TCP => "TCP",
        Protocol::UDP => "UDP",
    }
}

/// `resources` as a container's requests and limits, exactly as declared.
fn resources(resources: &Resources) -> Value {
    let amounts = |amounts: &Amounts| {
        let mut out = serde_json::Map::new();
        if let Some(cpu) = &amounts.cpu {
            out.insert("cpu".to_owned(), json!(cpu.0.0));
        }
        if let Some(memory) = &amounts.memory {
            out.insert("memory".to_owned(), json!(memory.0.0));
        }
        Value::Object(out)
    };
    let mut out = serde_json::Map::new();
    if let Some(requests) = &resources.requests {
        out.insert("requests".to_owned(), amounts(requests));
    }
    if let Some(limits) = &resources.limits {
        out.insert("limits".to_owned(), amounts(limits));
    }
    Value::Object(out)
}

/// The container probes of `service`'s health checks: each check becomes the probes it is
/// marked for (readiness by default), so the kubelet judges every pod by them. Validation
/// refuses what a probe cannot state (an expected status outside 200–399, times that are not
/// whole seconds, a liveness or startup check needing more than one success).
fn probes(service: &Service) -> serde_json::Map<String, Value> {
    let mut probes = serde_json::Map::new();
    for check in &service.health_checks {
        let mut probe = if let Some(http) = &check.http {
            json!({"httpGet": {"path": http.path, "port": probe_port(service, http.port.as_ref()), "scheme": "HTTP"}})
        } else if let Some(tcp) = &check.tcp {
            json!({"tcpSocket": {"port": probe_port(service, tcp.port.as_ref())}})
        } else if let Some(exec) = &check.exec {
            json!({"exec": {"command": exec.command}})
        } else {
            continue;
        };
        let seconds = |d: &crate::spec::model::scalar::Duration| d.0.as_secs();
        probe["timeoutSeconds"] = json!(seconds(&check.timeout).max(1));
        probe["periodSeconds"] = json!(seconds(&check.interval).max(1));
        probe["initialDelaySeconds"] = json!(seconds(&check.initial_delay));
        probe["successThreshold"] = json!(check.success_threshold);
        probe["failureThreshold"] = json!(check.failure_threshold);
        for kind in &check.probes {
            let field = match kind {
                ProbeKind::Readiness => "readinessProbe",
                ProbeKind::Liveness => "livenessProbe",
                ProbeKind::Startup => "startupProbe",
            };
            // A container has one probe of each kind: validation refuses a second.
            probes.entry(field).or_insert_with(|| probe.clone());
        }
    }
    probes
}

/// The container port a check aims at: a port's name as it is, a number of a declared port
/// as its container port, the first port's name when absent.
fn probe_port(service: &Service, port: Option<&crate::spec::model::scalar::Text>) -> Value {
    match port.map(|p| p.0.as_str()) {
        None => service.ports.first().map_or(json!(null), |p| json!(p.name.as_str())),
        Some(text) => match text.parse::<u16>() {
            Ok(number) => json!(
                service
                    .ports
                    .iter()
                    .find(|p| p.port == number)
                    .map_or(number, |p| p.target_port.unwrap_or(p.port))
            ),
            Err(_) => json!(text),
        },
    }
}

/// What a slot of a service is made of: its Deployment, and the Secret and ConfigMap it reads
/// (`None`: the slot has none, and one left by an earlier version is deleted).
pub struct SlotObjects {
    /// The Secret of its decrypted values.
    pub secret: Option<Value>,
    /// The ConfigMap of its configuration file, when that holds no decrypted value.
    pub config_map: Option<Value>,
    /// The Deployment.
    pub deployment: Value,
}

/// The variables every workload of `service` in `environment` gets: its own, opened, and who
/// it is.
pub fn variables_of(environment: &str, service: &Service) -> Result<Vec<(String, String)>, WorkloadError> {
    let mut env = variables(service)?;
    env.push(("PLUMB_ENVIRONMENT".to_owned(), environment.to_owned()));
    env.push(("PLUMB_SERVICE".to_owned(), service.name.as_str().to_owned()));
    Ok(env)
}

/// The objects of `version` of `service` in `slot`, from `commit`: what `deploy` applies.
pub fn slot_objects(
    environment: &str,
    service: &Service,
    slot: Slot,
    version: &str,
    commit: &str,
) -> Result<SlotObjects, WorkloadError> {
    let mut env = variables_of(environment, service)?;
    env.push(("PLUMB_SLOT".to_owned(), slot.name().to_owned()));
    env.push(("PLUMB_VERSION".to_owned(), version.to_owned()));
    let config = config_file(service)?;
    let key = config
        .as_ref()
        .map(|(file, _)| file.rsplit('/').next().unwrap_or(file).to_owned());
    let data = secret_data(service, &env, config.as_ref().map(|(_, text)| text.as_str()));
    let name = secret_name(service.name.as_str(), slot);
    let secret = (!data.is_empty()).then(|| self::secret(environment, service, &name, Some(slot), &data));
    let config_map = match (&config, &key) {
        (Some((_, text)), Some(key)) if !config_is_secret(service) => {
            Some(self::config_map(environment, service, slot, key, text))
        }
        _ => None,
    };
    Ok(SlotObjects {
        secret,
        config_map,
        deployment: deployment(environment, service, slot, version, commit, &env, key.as_deref()),
    })
}

/// The Deployment of `version` of `service` in `slot`, from `commit`; with `config`, its
/// ConfigMap's key (or, when the file holds decrypted values, its Secret's) is mounted
/// read-only under `/etc/plumb/config` and named by `PLUMB_CONFIG`.
pub fn deployment(
    environment: &str,
    service: &Service,
    slot: Slot,
    version: &str,
    commit: &str,
    env: &[(String, String)],
    config: Option<&str>,
) -> Value {
    let mut labels = labels(environment, service);
    labels.insert(SLOT.to_owned(), json!(slot.name()));
    let selector = json!({SERVICE: service.name.as_str(), SLOT: slot.name(), ENVIRONMENT: environment});
    let mut env = env.to_vec();
    if let Some(key) = config {
        env.push(("PLUMB_CONFIG".to_owned(), format!("{CONFIG_DIR}/{key}")));
    }
    let secrets = secret_name(service.name.as_str(), slot);
    let mut container = container(service, &env, &secrets);
    container.as_object_mut().expect("an object").extend(probes(service));
    let mut pod = json!({"containers": [container]});
    if let Some(key) = config {
        let source = if config_is_secret(service) {
            json!({"secret": {"secretName": secrets, "items": [{"key": CONFIG_KEY, "path": key}]}})
        } else {
            json!({"configMap": {"name": config_map_name(service.name.as_str(), slot)}})
        };
        let mut volume = json!({"name": "config"});
        volume
            .as_object_mut()
            .expect("an object")
            .extend(source.as_object().expect("an object").clone());
        pod["volumes"] = json!([volume]);
        pod["containers"][0]["volumeMounts"] = json!([{"name": "config", "mountPath": CONFIG_DIR, "readOnly": true}]);
    }
    let mut annotations = json!({VERSION: version});
    // An autoscaled Deployment's replicas are its autoscaler's: plumb does not apply them.
    let replicas = service.autoscaling.is_none().then_some(service.replicas);
    if !commit.is_empty() {
        annotations[COMMIT] = json!(commit);
    }
    // Rolling and recreate are the Deployment's own; a blue-green or canary slot is started
    // whole, so nothing of the old version runs in it while it rolls.
    let strategy = match &service.strategy {
        Strategy::Rolling(r) => json!({
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": r.max_surge, "maxUnavailable": r.max_unavailable},
        }),
        _ => json!({"type": "Recreate"}),
    };
    let mut document = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(service.name.as_str(), slot),
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "progressDeadlineSeconds": service.progress_deadline.0.as_secs().max(1),
            "selector": {"matchLabels": selector},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": labels, "annotations": {VERSION: version}},
                "spec": pod,
            },
        },
    });
    if let Some(replicas) = replicas {
        document["spec"]["replicas"] = json!(replicas);
    }
    document
}

/// The HorizontalPodAutoscaler of `service` (`api_version`: `autoscaling/v2` or `v2beta2`,
/// the same shape), aimed at its Deployment of `slot`; `None` when it is not autoscaled.
pub fn autoscaler(environment: &str, service: &Service, slot: Slot, api_version: &str) -> Option<Value> {
    let bounds = service.autoscaling.as_ref()?;
    let utilization = |resource: &str, percent: u32| json!({"type": "Resource", "resource": {"name": resource, "target": {"type": "Utilization", "averageUtilization": percent}}});
    let metrics: Vec<Value> = [
        bounds.target_cpu_utilization.map(|p| utilization("cpu", p)),
        bounds.target_memory_utilization.map(|p| utilization("memory", p)),
    ]
    .into_iter()
    .flatten()
    .collect();
    Some(json!({
        "apiVersion": api_version,
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": service.name.as_str(), "labels": labels(environment, service)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(service.name.as_str(), slot)},
            "minReplicas": bounds.min_replicas,
            "maxReplicas": bounds.max_replicas,
            "metrics": metrics,
        },
    }))
}

/// The Service of `service`, selecting `slots` (all of its slots when both take traffic:
/// the split then follows the replica counts), with the weights recorded.
pub fn service(environment: &str, service: &Service, slots: &[Slot], weights: &str) -> Value {
    let mut selector = json!({SERVICE: service.name.as_str(), ENVIRONMENT: environment});
    match slots {
        [one] => selector[SLOT] = json!(one.name()),
        [] => selector[SLOT] = json!("none"),
        _ => {}
    }
    let ports: Vec<Value> = service
        .ports
        .iter()
        .map(|p| json!({"name": p.name.as_str(), "port": p.port, "targetPort": p.target_port.unwrap_or(p.port), "protocol": protocol(p)}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service.name.as_str(),
            "labels": labels(environment, service),
            "annotations": {WEIGHTS: weights},
        },
        "spec": {"selector": selector, "ports": ports},
    })
}

/// The Service of `service`'s `slot` alone (`<service>-<slot>`): a Gateway's HTTPRoute weighs
/// traffic between the two.
pub fn slot_service(environment: &str, service: &Service, slot: Slot) -> Value {
    let mut document = self::service(environment, service, &[slot], "");
    let name = deployment_name(service.name.as_str(), slot);
    document["metadata"]["name"] = json!(name);
    document["metadata"]["labels"][SLOT] = json!(slot.name());
    if let Some(metadata) = document["metadata"].as_object_mut() {
        metadata.remove("annotations");
    }
    document
}

/// The HTTPRoute of `service` on `gateway`: `<service>.<domain>` to the two slots' Services
/// on `port`, by `weights`.
pub fn http_route(environment: &str, service: &str, port: u16, gateway: &GatewayRef, weights: &[(Slot, u32)]) -> Value {
    let mut parent = json!({"name": gateway.name});
    if let Some(namespace) = &gateway.namespace {
        parent["namespace"] = json!(namespace);
    }
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": service,
            "labels": {SERVICE: service, ENVIRONMENT: environment, "app.kubernetes.io/managed-by": "plumb"},
        },
        "spec": {
            "parentRefs": [parent],
            "hostnames": [format!("{service}.{}", gateway.domain)],
            "rules": [{"backendRefs": backend_refs(service, port, weights)}],
        },
    })
}

/// An HTTPRoute rule's backends: the Service of each slot taking traffic, with its weight.
pub fn backend_refs(service: &str, port: u16, weights: &[(Slot, u32)]) -> Value {
    weights
        .iter()
        .filter(|(_, weight)| *weight > 0)
        .map(|(slot, weight)| json!({"name": deployment_name(service, *slot), "port": port, "weight": weight}))
        .collect()
}

/// The Job running `command` of `service` once, within `deadline` seconds; the variables
/// written encrypted are read from the Secret of its name.
pub fn job(
    environment: &str,
    service: &Service,
    name: &str,
    command: &[String],
    deadline: u64,
    env: &[(String, String)],
) -> Value {
    let mut container = container(service, env, name);
    container["command"] = json!(command);
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels(environment, service)},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline.max(1),
            "template": {
                "metadata": {"labels": labels(environment, service)},
                "spec": {"restartPolicy": "Never", "containers": [container]},
            },
        },
    })
}

/// The name of `service`'s Job `job` (`migration`, `migration-rollback`): a DNS label.
pub fn job_name(service: &str, job: &str) -> String {
    let mut name: String = format!("{service}-{job}")
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(63);
    name.trim_end_matches('-').to_owned()
}

/// `blue=100,green=0` back into weights.
pub fn parse_weights(text: &str) -> Vec<(Slot, u32)> {
    text.split(',')
        .filter_map(|item| {
            let (slot, weight) = item.split_once('=')?;
            let slot = match slot {
                "blue" => Slot::Blue,
                "green" => Slot::Green,
                _ => return None,
            };
            Some((slot, weight.parse().ok()?))
        })
        .collect()
}

/// Weights as the Service's annotation records them.
pub fn format_weights(weights: &[(Slot, u32)]) -> String {
    weights
        .iter()
        .map(|(slot, weight)| format!("{}={weight}", slot.name()))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelet_expands_what_other_targets_expand() {
        let names = ["PORT", "HOST"];
        assert_eq!(kubelet_expands("--port=${PORT}", &names), "--port=$(PORT)");
        assert_eq!(kubelet_expands("${UNKNOWN} $(date)", &names), "${UNKNOWN} $$(date)");
    }

    #[test]
    fn weights_round_trip() {
        let weights = vec![(Slot::Blue, 90), (Slot::Green, 10)];
        assert_eq!(parse_weights(&format_weights(&weights)), weights);
        assert!(parse_weights("nonsense").is_empty());
    }
}
