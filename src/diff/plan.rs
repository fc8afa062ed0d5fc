//! What to do to one environment: the desired state of a commit compared with what its target
//! runs now, per service. Pure and deterministic: services in dependency order, then by name.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::fingerprint::fingerprint;
use crate::spec::Desired;
use crate::spec::model::service::Reload;
use crate::spec::model::{Service, Target};
use crate::target::{LiveSlot, Slot, Slots, digest};

/// What runs, per service and slot, as a target observes it.
pub type Live = BTreeMap<String, Slots<LiveSlot>>;

/// What to do to one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    /// Start it: it does not run.
    Create,
    /// Roll a new version out with the service's strategy.
    Rollout,
    /// Rewrite its configuration file and have the running replicas reload it.
    Reload,
    /// Change the number of replicas of the running version.
    Scale {
        /// How many run.
        from: usize,
        /// How many are wanted.
        to: u32,
    },
    /// Stop a slot that takes no traffic (left over by an interrupted rollout).
    Retire {
        /// The idle slot.
        slot: Slot,
    },
    /// Remove it: the repository no longer declares it, and the environment prunes.
    Delete,
    /// It runs but the repository no longer declares it; the environment does not prune, so it
    /// is only reported.
    Orphan,
    /// Another field manager changed fields plumb applies; the environment does not force, so
    /// it is only reported (plumb's next apply would conflict, naming them).
    Taken,
}

/// One service's part of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The service.
    pub service: String,
    /// What to do.
    #[serde(flatten)]
    pub action: Action,
    /// Why, for people.
    pub why: String,
}

/// What to do to one plain manifest's object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestAction {
    /// Apply it: it is missing or differs from what the repository declares.
    Apply,
    /// Delete it: the repository no longer declares it, and the environment prunes.
    Delete,
    /// It exists but the repository no longer declares it; only reported.
    Orphan,
}

/// One plain manifest's object's part of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ManifestStep {
    /// The object, `<apiVersion>/<kind>/<name>`.
    pub object: String,
    /// What to do.
    pub action: ManifestAction,
    /// Why, for people.
    pub why: String,
}

/// What to do to one environment; empty when it runs what is desired.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The steps, in the order they are taken.
    pub steps: Vec<Step>,
    /// The plain manifests' objects to apply or delete, before the services' steps.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<ManifestStep>,
}

impl Plan {
    /// Whether there is nothing to change (orphans and fields taken by another manager are
    /// only reported).
    pub fn is_empty(&self) -> bool {
        self.steps
            .iter()
            .all(|s| matches!(s.action, Action::Orphan | Action::Taken))
            && self.manifests.iter().all(|m| m.action == ManifestAction::Orphan)
    }

    /// The summary lines of what is only reported as drift: fields another manager took.
    pub fn reported(&self) -> Vec<String> {
        let taken = Plan {
            steps: self
                .steps
                .iter()
                .filter(|s| s.action == Action::Taken)
                .cloned()
                .collect(),
            manifests: Vec::new(),
        };
        taken.summary()
    }

    /// One line per step, for logs, the ledger and golden tests.
    pub fn summary(&self) -> Vec<String> {
        let manifests = self.manifests.iter().map(|m| {
            let action = match m.action {
                ManifestAction::Apply => "apply",
                ManifestAction::Delete => "delete",
                ManifestAction::Orphan => "orphan",
            };
            format!("manifest {}: {action} ({})", m.object, m.why)
        });
        manifests
            .chain(self.steps.iter().map(|s| {
                let action = match &s.action {
                    Action::Create => "create".to_owned(),
                    Action::Rollout => "rollout".to_owned(),
                    Action::Reload => "reload".to_owned(),
                    Action::Scale { from, to } => format!("scale {from} → {to}"),
                    Action::Retire { slot } => format!("retire {}", slot.name()),
                    Action::Delete => "delete".to_owned(),
                    Action::Orphan => "orphan".to_owned(),
                    Action::Taken => "taken by another manager".to_owned(),
                };
                format!("{}: {action} ({})", s.service, s.why)
            }))
            .collect()
    }
}

/// What the target holds of the environment's plain manifests: each object's digest, as last
/// applied, by `<apiVersion>/<kind>/<name>`.
pub type LiveManifests = BTreeMap<String, String>;

/// The manifest steps that bring `live` to what `desired` declares.
pub fn manifests(desired: &Desired, live: &LiveManifests, prune: bool) -> Vec<ManifestStep> {
    let mut steps: Vec<ManifestStep> = desired
        .manifests
        .iter()
        .filter_map(|m| {
            let why = match live.get(&m.object) {
                None => format!("missing ({}:{})", m.file, m.line),
                Some(digest) if *digest != m.digest => format!("changed ({}:{})", m.file, m.line),
                Some(_) => return None,
            };
            Some(ManifestStep {
                object: m.object.clone(),
                action: ManifestAction::Apply,
                why,
            })
        })
        .collect();
    for object in live
        .keys()
        .filter(|o| !desired.manifests.iter().any(|m| &m.object == *o))
    {
        steps.push(ManifestStep {
            object: object.clone(),
            action: if prune {
                ManifestAction::Delete
            } else {
                ManifestAction::Orphan
            },
            why: "no longer declared".to_owned(),
        });
    }
    steps
}

/// The version of a service: a digest of everything that needs new processes when it changes.
/// Replicas (scaled in place), descriptive and rollout settings, and configuration values a
/// service reloads without a restart are left out; so is the commit, so a commit that does not
/// touch a service does not roll it out.
pub fn version(service: &Service) -> String {
    let mut value = serde_json::to_value(service).expect("a service serializes");
    if let Value::Object(fields) = &mut value {
        for field in super::DESCRIPTIVE.iter().chain(&["replicas"]) {
            fields.shift_remove(*field);
        }
        let reloads = service.config.as_ref().is_some_and(|c| c.reload != Reload::Restart);
        if let (true, Some(Value::Object(config))) = (reloads, fields.get_mut("config")) {
            config.shift_remove("values");
        }
    }
    digest(value.to_string().as_bytes())
}

/// The slot serving a service: the one with the largest share of traffic.
pub fn serving(slots: &Slots<LiveSlot>) -> Option<(Slot, &LiveSlot)> {
    slots
        .iter()
        .filter(|(_, s)| s.weight > 0)
        .max_by_key(|(slot, s)| (s.weight, std::cmp::Reverse(**slot)))
        .map(|(slot, s)| (*slot, s))
}

/// What it takes for `live` to run `desired`. Services the environment does not declare are
/// deleted when `prune`, reported as orphans otherwise.
pub fn plan(desired: &Desired, live: &Live, prune: bool) -> Plan {
    let mut steps = Vec::new();
    for service in ordered(desired) {
        let name = service.name.as_str();
        if let Some(step) = service_step(service, live.get(name), &desired.target) {
            steps.push(step);
        }
    }
    for name in live.keys().filter(|n| !desired.services.contains_key(n.as_str())) {
        let (action, why) = if prune {
            (Action::Delete, "no longer declared")
        } else {
            (Action::Orphan, "no longer declared; pruning is off")
        };
        steps.push(Step {
            service: name.clone(),
            action,
            why: why.to_owned(),
        });
    }
    Plan {
        steps,
        manifests: Vec::new(),
    }
}

fn service_step(service: &Arc<Service>, slots: Option<&Slots<LiveSlot>>, target: &Target) -> Option<Step> {
    let step = |action, why: String| {
        Some(Step {
            service: service.name.as_str().to_owned(),
            action,
            why,
        })
    };
    let fingerprint = fingerprint(service);
    let wanted = fingerprint.version.as_str();
    if service.task {
        // A task's last completed version (from the ledger, as the caller observes it).
        let done = slots.and_then(serving).map(|(_, s)| s.version.as_str());
        return match done {
            Some(done) if done == wanted => None,
            Some(done) => step(Action::Rollout, format!("task version {done} → {wanted}: run it")),
            None => step(Action::Create, "task never ran to completion here".to_owned()),
        };
    }
    let Some((slot, running)) = slots.and_then(serving) else {
        return step(Action::Create, "not running".to_owned());
    };
    if running.version != wanted {
        return step(Action::Rollout, format!("version {} → {wanted}", running.version));
    }
    if running.failed > 0 {
        return step(Action::Rollout, format!("{} replicas cannot start", running.failed));
    }
    // A configuration that cannot be rendered (an encrypted value) fails in the rollout, which
    // says why; here it only means "different".
    if running.config != fingerprint.config {
        let reloads = service.config.as_ref().is_some_and(|c| c.reload != Reload::Restart);
        let why = "the configuration file differs from the rendered one".to_owned();
        return step(if reloads { Action::Reload } else { Action::Rollout }, why);
    }
    // An autoscaled service's replicas are its autoscaler's to set.
    let replicas = target.replicas(service.replicas);
    if service.autoscaling.is_none() && running.replicas.len() != replicas as usize {
        return step(
            Action::Scale {
                from: running.replicas.len(),
                to: replicas,
            },
            "replica count".to_owned(),
        );
    }
    if !running.taken.is_empty() {
        let fields = running.taken.join(", ");
        return match target {
            Target::Kubernetes(kubernetes) if kubernetes.force => step(
                Action::Rollout,
                format!("changed by another field manager: {fields}; `force` takes them back"),
            ),
            _ => step(
                Action::Taken,
                format!(
                    "changed by another field manager: {fields}; plumb takes fields back only with `target.kubernetes.force: true`"
                ),
            ),
        };
    }
    let idle = slots?.keys().find(|s| **s != slot).copied()?;
    step(Action::Retire { slot: idle }, "takes no traffic".to_owned())
}

/// The environment's services, each after the services it depends on, otherwise by name.
fn ordered(desired: &Desired) -> Vec<&Arc<Service>> {
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::with_capacity(desired.services.len());
    while out.len() < desired.services.len() {
        let before = out.len();
        for service in desired.services.values() {
            let name = service.name.as_str();
            if placed.contains(name) {
                continue;
            }
            let ready = service
                .depends_on
                .iter()
                .all(|d| placed.contains(d.as_str()) || !desired.services.contains_key(d));
            if ready {
                placed.insert(name);
                out.push(service);
            }
        }
        if out.len() == before {
            // A cycle (validation reports it): the rest in name order.
            out.extend(desired.services.values().filter(|s| !placed.contains(s.name.as_str())));
            break;
        }
    }
    out
}
