//! A service's version and configuration digest, as a plan compares them with what runs,
//! worked out once per shared service. A memo's render hands every commit that leaves a service
//! unchanged the same `Arc<Service>`, so the plan of a commit changing one service of a thousand
//! works out one version, not a thousand.
//!
//! Sound because a service is never changed while this table knows it: the table holds a
//! `Weak` to each service it remembers, so the allocation is never reused for another service,
//! `Arc::get_mut` refuses it, and `Arc::make_mut` moves it to a new allocation (a new address)
//! before changing it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::plan::version;
use crate::spec::model::Service;
use crate::target::config_digest;

/// What a plan compares of a service with what runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// [`version`] of the service.
    pub version: String,
    /// [`config_digest`] of the service; `None` when it has no configuration file or it cannot
    /// be rendered (an encrypted value: the rollout says why).
    pub config: Option<String>,
}

impl Fingerprint {
    /// Works out the fingerprint of `service`.
    pub fn of(service: &Service) -> Fingerprint {
        Fingerprint {
            version: version(service),
            config: config_digest(service).ok().flatten(),
        }
    }
}

/// The services remembered, and how many were alive at the last sweep.
struct Table {
    /// Each service's fingerprint, by the service's address.
    known: HashMap<usize, (Weak<Service>, Arc<Fingerprint>)>,
    /// How many services were alive at the last sweep.
    alive: usize,
}

/// The one table of the process: every environment's plans share their services' fingerprints.
static TABLE: Mutex<Option<Table>> = Mutex::new(None);

/// The fingerprint of `service`, remembered while the service is shared.
pub fn fingerprint(service: &Arc<Service>) -> Arc<Fingerprint> {
    let address = Arc::as_ptr(service) as usize;
    if let Some(found) = lock().as_ref().and_then(|t| t.known.get(&address)) {
        return found.1.clone();
    }
    // Worked out outside the lock: the environments' workers plan at once.
    let fingerprint = Arc::new(Fingerprint::of(service));
    let mut table = lock();
    let table = table.get_or_insert_with(|| Table {
        known: HashMap::new(),
        alive: 0,
    });
    table
        .known
        .insert(address, (Arc::downgrade(service), fingerprint.clone()));
    // Services no longer alive are swept once the table has grown by a quarter since the last
    // sweep: each holds its allocation (not its contents) until then.
    if table.known.len() > table.alive + table.alive / 4 + 64 {
        table.known.retain(|_, (weak, _)| weak.strong_count() > 0);
        table.alive = table.known.len();
    }
    fingerprint
}

/// The table, even after a panic while it was held (it is consistent between statements).
fn lock() -> std::sync::MutexGuard<'static, Option<Table>> {
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "plumb/v1", "kind": "Service", "name": name, "command": ["sleep", "1"],
            "config": {"values": {"level": 1}}
        }))
        .unwrap()
    }

    #[test]
    fn a_shared_service_is_worked_out_once_and_a_changed_one_again() {
        let shared = Arc::new(service("a"));
        let first = fingerprint(&shared);
        assert_eq!(*first, Fingerprint::of(&shared));
        assert!(Arc::ptr_eq(&first, &fingerprint(&shared.clone())), "remembered");

        // Changed while the table knows it: moved first, so worked out again.
        let mut changed = shared;
        Arc::make_mut(&mut changed).config.as_mut().unwrap().values["level"] = 2.into();
        let again = fingerprint(&changed);
        assert_eq!(*again, Fingerprint::of(&changed));
        assert_ne!(again.config, first.config);
        assert_ne!(again.version, first.version, "values are part of a restart's version");
    }

    #[test]
    fn services_gone_are_swept() {
        for i in 0..1_000 {
            fingerprint(&Arc::new(service(&format!("s{i}"))));
        }
        let known = lock().as_ref().map_or(0, |t| t.known.len());
        assert!(known < 400, "{known} services remembered after they were dropped");
    }
}
