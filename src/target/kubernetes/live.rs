//! What runs, read from the environment's objects: a slot per Deployment (by its service and
//! slot labels), its version from `plumb.dev/version`, its replicas ready or not, its weight from
//! its Service's `plumb.dev/weights`, its configuration file digested as its ConfigMap holds it
//! (or its Secret, for a file holding decrypted values), the fields plumb applied that another
//! field manager has changed since, and how many times the kubelet restarted its containers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::fields;
use super::objects::{self, SERVICE, SLOT, VERSION, WEIGHTS};
use super::watch::Snapshot;
use crate::target::Slots;
use crate::target::workload::{LiveSlot, Slot, digest};

/// The slots `snapshot` shows running, by service. A slot with no replicas and no traffic is
/// retired, not running. `applied` holds the fields plumb's last apply owned, by Deployment; a
/// Deployment it does not know yet is taken as plumb left it (an agent that just started sees
/// what other managers change from now on).
pub fn of(snapshot: Snapshot, applied: &mut HashMap<String, BTreeSet<String>>) -> BTreeMap<String, Slots<LiveSlot>> {
    let Snapshot {
        deployments,
        services,
        config_maps,
        secrets,
        pods,
    } = snapshot;
    // The kubelet's restarts of each slot's containers.
    let mut restarts: BTreeMap<(String, Slot), u32> = BTreeMap::new();
    for pod in &pods {
        let labels = pod.metadata.labels.as_ref();
        let service = labels.and_then(|l| l.get(SERVICE));
        let slot = labels.and_then(|l| l.get(SLOT)).and_then(|s| slot_named(s));
        if let (Some(service), Some(slot)) = (service, slot) {
            let count = u32::try_from(super::watch::pod_restarts(pod)).unwrap_or(0);
            *restarts.entry((service.clone(), slot)).or_default() += count;
        }
    }
    // The configuration files as they are now in the cluster: edited by hand, they differ.
    let mut configs: BTreeMap<String, String> = config_maps
        .into_iter()
        .filter_map(|map| {
            let text = map.data?.into_values().next()?;
            Some((map.metadata.name?, digest(text.as_bytes())))
        })
        .collect();
    // A file holding decrypted values is in the slot's Secret, already digested.
    for secret in secrets {
        let labels = secret.metadata.labels.unwrap_or_default();
        let (Some(service), Some(slot)) = (
            labels.get(SERVICE),
            labels.get(SLOT).map(String::as_str).and_then(slot_named),
        ) else {
            continue;
        };
        if let Some(digested) = secret.data.and_then(|mut d| d.remove(objects::CONFIG_KEY)) {
            let text = String::from_utf8_lossy(&digested.0).into_owned();
            configs.insert(objects::config_map_name(service, slot), text);
        }
    }
    let weights: BTreeMap<String, Vec<(Slot, u32)>> = services
        .iter()
        .filter_map(|s| {
            let name = s.metadata.name.clone()?;
            let recorded = s.metadata.annotations.as_ref()?.get(WEIGHTS)?;
            Some((name, objects::parse_weights(recorded)))
        })
        .collect();
    let mut live: BTreeMap<String, Slots<LiveSlot>> = BTreeMap::new();
    for deployment in deployments {
        let labels = deployment.metadata.labels.clone().unwrap_or_default();
        let (Some(service), Some(slot)) = (labels.get(SERVICE), labels.get(SLOT)) else {
            continue;
        };
        let Some(slot) = slot_named(slot) else {
            continue;
        };
        let name = deployment.metadata.name.as_deref().unwrap_or_default();
        if !applied.contains_key(name) {
            applied.insert(name.to_owned(), fields::applied_by_plumb(&deployment));
        }
        let taken = fields::taken(&deployment, &applied[name]);
        let version = deployment
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(VERSION))
            .cloned()
            .unwrap_or_default();
        let wanted = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
        let status = deployment.status.unwrap_or_default();
        let ready = (status.ready_replicas.unwrap_or(0).max(0) as usize).min(wanted);
        let stalled = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Progressing" && c.status == "False");
        let mut replicas = vec!["ready".to_owned(); ready];
        replicas.resize(wanted, "not ready".to_owned());
        let weight = weights
            .get(service)
            .and_then(|w| w.iter().find(|(s, _)| *s == slot))
            .map_or(0, |(_, w)| *w);
        if wanted == 0 && weight == 0 {
            // Retired: kept at zero replicas, neither running nor taking traffic.
            continue;
        }
        live.entry(service.clone()).or_default().insert(
            slot,
            LiveSlot {
                version,
                replicas,
                weight,
                config: configs.get(&objects::config_map_name(service, slot)).cloned(),
                failed: if stalled { wanted - ready } else { 0 },
                taken,
                restarts: restarts.get(&(service.clone(), slot)).copied().unwrap_or(0),
            },
        );
    }
    live
}

/// The slot a `plumb.dev/slot` label names.
fn slot_named(label: &str) -> Option<Slot> {
    match label {
        "blue" => Some(Slot::Blue),
        "green" => Some(Slot::Green),
        _ => None,
    }
}
