//! The health checks' last results, for the status and the dashboard: at each drift check the
//! worker probes every slot that runs once per check it declares (what a rollout's health gate
//! probes, aimed at that slot alone). A target that leaves probing to itself (the kubelet runs
//! Kubernetes' probes) returns no checks; its replicas' readiness says the same. Probing takes
//! at most two seconds of the drift check: a slot not probed by then shows no result this time.

use std::collections::BTreeMap;

use futures_util::StreamExt;

use crate::reconcile::Live;
use crate::target::{Slot, Slots, Target};

/// How many slots are probed at once.
const AT_ONCE: usize = 16;
/// The longest a drift check spends probing; the slots not probed by then show none.
const BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// One check's last result: `Ok`, or why it failed in the probe's words.
pub type Probed = (String, Result<(), String>);

/// Probes once each check of each slot in `live`: per service, per slot, the results in the
/// checks' order; a slot whose checks the target cannot aim, that failure.
pub async fn probe_live(target: &dyn Target, live: &Live) -> BTreeMap<String, Slots<Vec<Probed>>> {
    let mut slots: Vec<(String, Slot)> = Vec::new();
    for (service, running) in live {
        slots.extend(running.keys().map(|slot| (service.clone(), *slot)));
    }
    let rounds = futures_util::stream::iter(slots).map(|(service, slot)| async move {
        let checks = match target.checks(&service, slot).await {
            Ok(checks) if checks.is_empty() => return None,
            Ok(checks) => checks,
            Err(e) => {
                return Some((
                    service,
                    slot,
                    vec![("checks".to_owned(), Err(format!("cannot be aimed: {e}")))],
                ));
            }
        };
        let results = crate::health::probe_all(&checks)
            .await
            .into_iter()
            .map(|(name, result)| (name, result.map_err(|e| e.to_string())))
            .collect::<Vec<_>>();
        Some((service, slot, results))
    });
    let mut probed: BTreeMap<String, Slots<Vec<Probed>>> = BTreeMap::new();
    let mut rounds = rounds.buffer_unordered(AT_ONCE);
    // The worker waits for this: slots whose checks hang are not waited for past the budget.
    let until = tokio::time::Instant::now() + BUDGET;
    while let Ok(Some(round)) = tokio::time::timeout_at(until, rounds.next()).await {
        if let Some((service, slot, results)) = round {
            probed.entry(service).or_default().insert(slot, results);
        }
    }
    probed
}
