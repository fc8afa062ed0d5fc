//! Rules a schema cannot state: what the environment's target needs and can run, references
//! between fields and services (ports, dependencies and their cycles), and ports that would
//! collide on one host. Each problem is located at the line that causes it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use indexmap::IndexMap;

use super::diagnostic::{Diagnostic, closest};
use super::load::Loaded;
use super::model::environment::Environment;
use super::model::scalar::is_encrypted;
use super::model::service::{Autoscaling, HealthCheck, Protocol, Strategy};
use super::model::{Name, Service, Target};
use super::node::{Declared, Node, Path, Step};
use super::render::Desired;

/// Checks one rendered service against its environment's target.
pub fn service(service: &Service, node: &Node, target: &Target, out: &mut Vec<Diagnostic>) {
    let root = Path::default();
    let at = |path: &Path| node.locate(&path.0).0.at.clone();

    let workload = target.workload_field();
    let has_workload = match workload {
        "command" => service.command.is_some(),
        _ => service.image.is_some(),
    };
    if !has_workload {
        out.push(
            Diagnostic::new(
                &node.at,
                format!(
                    "the {} target runs services from `{workload}`, which `{}` does not set",
                    target.name(),
                    service.name
                ),
            )
            .path(&root.key(workload))
            .hint(format!(
                "set `{workload}` in services/{}.yaml or in this environment's overlay",
                service.name
            )),
        );
    }

    if !target.supports(&service.strategy) {
        let path = root.key("strategy");
        out.push(
            Diagnostic::new(&at(&path), format!("the {} target cannot run the {} strategy", target.name(), service.strategy.name()))
                .path(&path)
                .hint("blue-green and canary move traffic through a proxy: set the target's `proxy`, or use `recreate` or `rolling`"),
        );
    }

    match &service.strategy {
        Strategy::Canary(canary) => {
            let mut last = 0;
            for (i, step) in canary.steps.iter().enumerate() {
                if step.weight <= last {
                    let path = root
                        .key("strategy")
                        .key("canary")
                        .key("steps")
                        .join(Step::Index(i))
                        .key("weight");
                    out.push(
                        Diagnostic::new(
                            &at(&path),
                            format!("canary weights must increase: {} follows {last}", step.weight),
                        )
                        .path(&path),
                    );
                }
                last = step.weight;
            }
        }
        Strategy::Rolling(rolling) if rolling.max_surge == 0 && rolling.max_unavailable == 0 => {
            let path = root.key("strategy").key("rolling");
            out.push(
                Diagnostic::new(
                    &at(&path),
                    "a rolling update with `maxSurge: 0` and `maxUnavailable: 0` can never make progress",
                )
                .path(&path)
                .hint("allow at least one surge or one unavailable copy"),
            );
        }
        _ => {}
    }

    if let Some(autoscaling) = &service.autoscaling {
        check_autoscaling(service, autoscaling, node, out);
    }

    unique_names(node, "ports", service.ports.iter().map(|p| p.name.as_str()), out);
    unique_names(node, "env", service.env.iter().map(|e| e.name.as_str()), out);
    for (i, variable) in service.env.iter().enumerate() {
        if crate::target::workload::is_provided(&variable.name) {
            let path = Path::default().key("env").join(Step::Index(i)).key("name");
            out.push(
                Diagnostic::new(
                    &node.locate(&path.0).0.at,
                    format!(
                        "`{}` is set by plumb in every replica; a service cannot declare it",
                        variable.name
                    ),
                )
                .path(&path)
                .hint("give the variable another name"),
            );
        }
    }
    unique_names(
        node,
        "healthChecks",
        service.health_checks.iter().map(|h| h.name.as_str()),
        out,
    );

    let mut numbers = HashMap::new();
    for (i, port) in service.ports.iter().enumerate() {
        let path = root.key("ports").join(Step::Index(i)).key("port");
        if let Some(first) = numbers.insert((port.port, port.protocol), port.name.as_str()) {
            out.push(
                Diagnostic::new(
                    &at(&path),
                    format!("port {} is declared twice (also as `{first}`)", port.port),
                )
                .path(&path),
            );
        }
        if u32::from(port.port) + u32::from(target.port_offset()) > u32::from(u16::MAX) {
            out.push(
                Diagnostic::new(
                    &at(&path),
                    format!(
                        "port {} plus the target's port offset {} is above 65535",
                        port.port,
                        target.port_offset()
                    ),
                )
                .path(&path),
            );
        }
    }

    for (i, check) in service.health_checks.iter().enumerate() {
        check_port_reference(service, check, node, i, out);
    }
    super::support::check(service, node, target, out);
    secrets_stay_out_of_commands(service, node, out);
}

/// An autoscaler needs bounds in order and something to measure: a utilization is a share of
/// what each copy requests, so the request must be declared.
fn check_autoscaling(service: &Service, autoscaling: &Autoscaling, node: &Node, out: &mut Vec<Diagnostic>) {
    let root = Path::default().key("autoscaling");
    let at = |path: &Path| node.locate(&path.0).0.at.clone();
    if autoscaling.max_replicas < autoscaling.min_replicas {
        let path = root.key("maxReplicas");
        out.push(
            Diagnostic::new(
                &at(&path),
                format!(
                    "`maxReplicas` ({}) is below `minReplicas` ({})",
                    autoscaling.max_replicas, autoscaling.min_replicas
                ),
            )
            .path(&path),
        );
    }
    if autoscaling.target_cpu_utilization.is_none() && autoscaling.target_memory_utilization.is_none() {
        out.push(
            Diagnostic::new(&at(&root), "autoscaling needs something to measure")
                .path(&root)
                .hint("set `targetCPUUtilization` or `targetMemoryUtilization` (percent of what each copy requests)"),
        );
    }
    let requests = service.resources.as_ref().and_then(|r| r.requests.as_ref());
    for (key, set, requested, what) in [
        (
            "targetCPUUtilization",
            autoscaling.target_cpu_utilization.is_some(),
            requests.is_some_and(|r| r.cpu.is_some()),
            "cpu",
        ),
        (
            "targetMemoryUtilization",
            autoscaling.target_memory_utilization.is_some(),
            requests.is_some_and(|r| r.memory.is_some()),
            "memory",
        ),
    ] {
        if set && !requested {
            let path = root.key(key);
            out.push(
                Diagnostic::new(
                    &at(&path),
                    format!("`{key}` is a share of the {what} each copy requests, and the service requests none"),
                )
                .path(&path)
                .hint(format!("set `resources.requests.{what}`")),
            );
        }
    }
}

/// An encrypted variable is never expanded into a command (`${NAME}`): a command line is
/// readable by every user of the machine, and shows in errors. The program reads it from its
/// environment instead.
fn secrets_stay_out_of_commands(service: &Service, node: &Node, out: &mut Vec<Diagnostic>) {
    let secret: Vec<&str> = service
        .env
        .iter()
        .filter(|v| is_encrypted(&v.value.0))
        .map(|v| v.name.as_str())
        .collect();
    if secret.is_empty() {
        return;
    }
    let root = Path::default();
    let migration = root.key("migration");
    let commands = [
        (root.key("command"), service.command.as_ref()),
        (migration.key("command"), service.migration.as_ref().map(|m| &m.command)),
        (
            migration.key("rollbackCommand"),
            service.migration.as_ref().and_then(|m| m.rollback_command.as_ref()),
        ),
    ];
    for (path, command) in commands {
        for (i, arg) in command.into_iter().flatten().enumerate() {
            let Some(name) = secret.iter().find(|name| arg.contains(&format!("${{{name}}}"))) else {
                continue;
            };
            let path = path.join(Step::Index(i));
            out.push(
                Diagnostic::new(
                    &node.locate(&path.0).0.at,
                    format!("`${{{name}}}` is encrypted: it is not expanded into a command line, which every user of the machine can read"),
                )
                .path(&path)
                .hint(format!("have the program read `{name}` from its environment")),
            );
        }
    }
}

fn check_port_reference(service: &Service, check: &HealthCheck, node: &Node, index: usize, out: &mut Vec<Diagnostic>) {
    let (probe, port) = match (&check.http, &check.tcp) {
        (Some(http), _) => ("http", &http.port),
        (_, Some(tcp)) => ("tcp", &tcp.port),
        _ => return,
    };
    let path = Path::default().key("healthChecks").join(Step::Index(index)).key(probe);
    let names = || service.ports.iter().map(|p| p.name.as_str());
    match port {
        None if service.ports.is_empty() => out.push(
            Diagnostic::new(
                &node.locate(&path.0).0.at,
                format!(
                    "health check `{}` needs a port, and the service declares none",
                    check.name
                ),
            )
            .path(&path)
            .hint("declare the service's `ports`, or give the check a `port`"),
        ),
        Some(text) if text.0.parse::<u16>().is_err() && !names().any(|n| n == text.0) => {
            let path = path.key("port");
            let mut d = Diagnostic::new(
                &node.locate(&path.0).0.at,
                format!(
                    "health check `{}` names port `{}`, which the service does not declare",
                    check.name, text.0
                ),
            )
            .path(&path);
            if let Some(k) = closest(&text.0, names()) {
                d = d.hint(format!("did you mean `{k}`?"));
            }
            out.push(d);
        }
        _ => {}
    }
}

/// Items of a named list must have distinct names, or overlays could not address them.
fn unique_names<'a>(node: &Node, list: &str, names: impl Iterator<Item = &'a str>, out: &mut Vec<Diagnostic>) {
    let mut seen = HashMap::new();
    for (i, name) in names.enumerate() {
        if let Some(first) = seen.insert(name, i) {
            let path = Path::default().key(list).join(Step::Index(i)).key("name");
            out.push(
                Diagnostic::new(
                    &node.locate(&path.0).0.at,
                    format!("`{name}` appears twice in `{list}` (also item {first})"),
                )
                .path(&path)
                .hint(format!(
                    "items of `{list}` are matched by name when overlays merge; names must be unique"
                )),
            );
        }
    }
}

/// Checks an environment's sync windows: each schedule is cron, each zone an IANA zone, each
/// lasts a while.
pub fn windows(environment: &Environment, node: &Node, env: &str, out: &mut Vec<Diagnostic>) {
    for (i, window) in environment.sync_windows.iter().enumerate() {
        let field = |key: &str| Path::default().key("syncWindows").join(Step::Index(i)).key(key);
        let mut problem = |key: &str, message: String| {
            let path = field(key);
            let at = node.locate(&path.0).0.at.clone();
            out.push(Diagnostic::new(&at, message).path(&path).environment(env));
        };
        if let Err(e) = crate::trigger::Schedule::parse(&window.schedule) {
            problem("schedule", e.to_string());
        }
        if window.time_zone.parse::<chrono_tz::Tz>().is_err() {
            problem(
                "timeZone",
                format!(
                    "`{}` is not an IANA time zone (write it as `Europe/Berlin`, `America/New_York`, `UTC`)",
                    window.time_zone
                ),
            );
        }
        if window.duration.0.is_zero() {
            problem("duration", "a window must last a while".to_owned());
        }
    }
}

/// Checks an environment's promotion: it follows environments of this repository, not itself.
pub fn promotion(environment: &Environment, node: &Node, env: &str, declared: &[&str], out: &mut Vec<Diagnostic>) {
    let Some(promotion) = &environment.promotion else {
        return;
    };
    for (i, after) in promotion.after.iter().enumerate() {
        let message = if after.as_str() == env {
            format!("`{env}` cannot wait for itself")
        } else if !declared.contains(&after.as_str()) {
            let mut message = format!("`{after}` is not an environment of this repository");
            if let Some(close) = closest(after.as_str(), declared.iter().copied()) {
                message.push_str(&format!("; did you mean `{close}`?"));
            }
            message
        } else {
            continue;
        };
        let path = Path::default().key("promotion").key("after").join(Step::Index(i));
        let at = node.locate(&path.0).0.at.clone();
        out.push(Diagnostic::new(&at, message).path(&path).environment(env));
    }
}

/// Checks an environment's services together: dependencies and host ports.
pub fn environment(
    environment: &Environment,
    services: &BTreeMap<Name, Arc<Service>>,
    invalid: &BTreeSet<String>,
    documents: &Declared,
    env: &str,
    out: &mut Vec<Diagnostic>,
) {
    let located = |service: &str, path: &Path| documents.get(service).map(|n| n.locate(&path.0).0.at.clone());
    for (name, service) in services {
        for (i, dependency) in service.depends_on.iter().enumerate() {
            let path = Path::default().key("dependsOn").join(Step::Index(i));
            let Some(at) = located(name.as_str(), &path) else {
                continue;
            };
            let message = if !documents.contains_key(dependency.as_str()) {
                format!("`{name}` depends on `{dependency}`, which is not a service")
            } else if !services.contains_key(dependency) && !invalid.contains(dependency.as_str()) {
                format!("`{name}` depends on `{dependency}`, which is disabled in {env}")
            } else {
                continue;
            };
            out.push(Diagnostic::new(&at, message).path(&path).environment(env));
        }
    }
    if let Some(cycle) = dependency_cycle(services) {
        let first = &cycle[0];
        let at = located(first.as_str(), &Path::default().key("dependsOn"))
            .unwrap_or_else(|| documents[first.as_str()].at.clone());
        let chain = cycle
            .iter()
            .map(Name::as_str)
            .chain([first.as_str()])
            .collect::<Vec<_>>()
            .join(" → ");
        out.push(
            Diagnostic::new(&at, format!("services depend on each other in a cycle: {chain}"))
                .path(&Path::default().key("dependsOn"))
                .hint("remove one of these dependencies")
                .environment(env),
        );
    }
    if environment.target.shares_host_ports() {
        // A TCP and a UDP port may share a number.
        let mut taken: HashMap<(u32, Protocol), &Name> = HashMap::new();
        for (name, service) in services {
            for (i, port) in service.ports.iter().enumerate() {
                let host_port = u32::from(port.port) + u32::from(environment.target.port_offset());
                if let Some(other) = taken.insert((host_port, port.protocol), name) {
                    let path = Path::default().key("ports").join(Step::Index(i)).key("port");
                    if let Some(at) = located(name.as_str(), &path) {
                        out.push(
                            Diagnostic::new(
                                &at,
                                format!("port {host_port} is also used by `{other}` on the same host"),
                            )
                            .path(&path)
                            .environment(env),
                        );
                    }
                }
            }
        }
    }
}

/// The first cycle in the `dependsOn` graph, in dependency order.
fn dependency_cycle(services: &BTreeMap<Name, Arc<Service>>) -> Option<Vec<Name>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: HashMap<&Name, Mark> = HashMap::new();
    for (start, service) in services {
        // A service depending on none is on no cycle.
        if service.depends_on.is_empty() || marks.contains_key(start) {
            continue;
        }
        // Iterative depth-first search: (service, index of the next dependency to visit).
        let mut stack: Vec<(&Name, usize)> = vec![(start, 0)];
        marks.insert(start, Mark::Visiting);
        while let Some((name, next)) = stack.last_mut() {
            let deps = &services[*name].depends_on;
            if *next == deps.len() {
                marks.insert(name, Mark::Done);
                stack.pop();
                continue;
            }
            let dep = &deps[*next];
            *next += 1;
            let Some((dep, _)) = services.get_key_value(dep) else {
                continue;
            };
            match marks.get(dep) {
                Some(Mark::Visiting) => {
                    let from = stack
                        .iter()
                        .position(|(n, _)| *n == dep)
                        .expect("a visiting service is on the stack");
                    return Some(stack[from..].iter().map(|(n, _)| (*n).clone()).collect());
                }
                Some(Mark::Done) => {}
                None => {
                    marks.insert(dep, Mark::Visiting);
                    stack.push((dep, 0));
                }
            }
        }
    }
    None
}

/// Environments on the local target share the machine: the same address and port may not
/// be used by two of them.
pub fn shared_ports(environments: &IndexMap<String, Desired>, loaded: &Loaded, out: &mut Vec<Diagnostic>) {
    let mut taken: HashMap<(String, u32), (&str, &Name)> = HashMap::new();
    for (env, desired) in environments {
        let Target::Local(local) = &desired.target else {
            continue;
        };
        for (name, service) in &desired.services {
            for (i, port) in service.ports.iter().enumerate() {
                let host_port = u32::from(port.port) + u32::from(local.port_offset);
                let Some((other_env, other)) = taken.insert((local.address.clone(), host_port), (env, name)) else {
                    continue;
                };
                if other_env == env {
                    continue;
                }
                let path = Path::default().key("ports").join(Step::Index(i)).key("port");
                if let Some(node) = loaded.services.get(name.as_str()) {
                    out.push(
                        Diagnostic::new(
                            &node.locate(&path.0).0.at,
                            format!(
                                "port {host_port} on {} is used by `{other}` in {other_env} too",
                                local.address
                            ),
                        )
                        .path(&path)
                        .hint("give the local environments different `portOffset`s")
                        .environment(env),
                    );
                }
            }
        }
    }
}

/// Refuses environments that wait for each other in a circle (`production` after `staging`
/// after `production`): none of them would ever take a commit.
pub fn promotion_circles(environments: &IndexMap<String, Desired>, loaded: &Loaded, out: &mut Vec<Diagnostic>) {
    let after = |env: &str| -> Vec<&str> {
        environments
            .get(env)
            .and_then(|d| d.gates.promotion.as_ref())
            .map(|p| p.after.iter().map(Name::as_str).collect())
            .unwrap_or_default()
    };
    for start in environments.keys() {
        // Walk what `start` waits for; a path back to it is a circle, said once, at its first
        // environment in the repository's order.
        let mut path = vec![start.as_str()];
        let mut stack = vec![(start.as_str(), 0usize)];
        while let Some((env, next)) = stack.pop() {
            let waits = after(env);
            let Some(&to) = waits.get(next) else {
                path.pop();
                continue;
            };
            stack.push((env, next + 1));
            if to == start {
                let circle: Vec<&str> = path.iter().copied().chain([to]).collect();
                let first = environments.keys().position(|k| circle.contains(&k.as_str()));
                if first == environments.keys().position(|k| k == start)
                    && let Some((_, node)) = loaded.environments.iter().find(|(n, _)| n == start)
                {
                    let at = Path::default().key("promotion").key("after");
                    out.push(
                        Diagnostic::new(
                            &node.locate(&at.0).0.at,
                            format!(
                                "environments wait for each other in a circle ({}): none would take a commit",
                                circle.join(" after ")
                            ),
                        )
                        .path(&at)
                        .environment(start),
                    );
                }
                continue;
            }
            if !path.contains(&to) {
                path.push(to);
                stack.push((to, 0));
            }
        }
    }
}
