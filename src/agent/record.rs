//! The environments' records and the repositories' trust states kept in the cluster beside the
//! agent's own files, so an agent rescheduled onto another node (its state directory gone)
//! continues where the last one stopped: its rollback points, its failed commits, the state of
//! its migrations, the attempt it was in the middle of, the last commit it authenticated.
//!
//! With leader election, the holder keeps the newest attempts of each environment (the entries
//! of its ledger, as JSON) in the ConfigMap `<lease>-ledger` beside the Lease, one key per
//! environment, each written by server-side apply under its own field manager so environments
//! never overwrite each other. A fresh ledger takes an environment's copy over when its worker
//! starts. The copy follows the ledger a moment behind, except where it matters: a migration
//! starts only once the copy holds that it started, so a rescheduled agent never runs it twice.
//! A repository's trust state (`trust.<name>.json`) is copied after each decision, before the
//! head is handed on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::sync::{mpsc, oneshot};

use super::lease::{Leader, LeaseError};
use crate::ledger::{self, Carried, Ledger, Recorder, Witness, Witnessed};

/// The attempts kept per environment.
const KEPT: usize = 30;
/// The most an environment's copy may weigh; older attempts are left out to stay under it
/// (a ConfigMap holds at most 1 MiB in all).
const MOST: usize = 256 * 1024;
/// How long a copy that could not be written waits before it is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// The ConfigMap holding the copies.
pub struct ClusterRecord {
    api: Api<ConfigMap>,
    name: String,
}

impl ClusterRecord {
    /// The copies beside `leader`'s Lease.
    pub async fn new(leader: &Leader) -> Result<ClusterRecord, LeaseError> {
        let client = leader.client().await?;
        Ok(ClusterRecord {
            api: Api::namespaced(client, &leader.namespace),
            name: format!("{}-ledger", leader.lease),
        })
    }

    fn key(environment: &str) -> String {
        format!("{environment}.json")
    }

    /// The key of repository `name`'s trust state (environment names hold no dots).
    fn trust_key(name: &str) -> String {
        format!("trust.{name}.json")
    }

    /// The text under `key`, `None` when the cluster holds none.
    async fn load_key(&self, key: &str) -> Result<Option<String>, String> {
        let map = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| format!("reading config map `{}`: {e}", self.name))?;
        Ok(map.and_then(|m| m.data?.remove(key)))
    }

    /// `environment`'s copy, `None` when the cluster holds none.
    async fn load(&self, environment: &str) -> Result<Option<Carried>, String> {
        let key = ClusterRecord::key(environment);
        let Some(text) = self.load_key(&key).await? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("config map `{}`, key `{key}`: {e}", self.name))
    }

    /// Repository `name`'s trust state, as [`crate::trust::TrustState::to_text`] wrote it.
    pub async fn load_trust(&self, name: &str) -> Result<Option<String>, String> {
        self.load_key(&ClusterRecord::trust_key(name)).await
    }

    /// Keeps repository `name`'s trust state.
    pub async fn save_trust(&self, name: &str, text: String) -> Result<(), String> {
        self.save_key(&ClusterRecord::trust_key(name), &format!("plumb-trust-{name}"), text)
            .await
    }

    /// Takes `environment`'s copy into `ledger` when it holds nothing of it yet. A copy that
    /// cannot be read is reported and left: the agent then starts afresh, as without one.
    pub async fn adopt(&self, ledger: &Recorder, environment: &str) {
        let carried = match self.load(environment).await {
            Ok(Some(carried)) => carried,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(environment, error = %e, "Cannot read the environment's record in the cluster; starting without it.");
                return;
            }
        };
        match ledger.call(move |l| l.adopt(&carried)).await {
            Ok(0) => {}
            Ok(attempts) => {
                tracing::info!(
                    environment,
                    attempts,
                    "Took the environment's record over from the cluster."
                );
            }
            Err(e) => tracing::error!(environment, error = %e, "Cannot take the environment's record over."),
        }
    }

    /// `environment`'s copy from `ledger`: its newest attempts, as many as fit.
    fn copy(ledger: &Ledger, environment: &str) -> Result<String, String> {
        let mut kept = KEPT;
        loop {
            let carried = ledger.carry(environment, kept).map_err(|e| e.to_string())?;
            let text = serde_json::to_string(&carried).expect("a record serializes");
            if text.len() <= MOST || kept == 1 {
                return Ok(text);
            }
            kept /= 2;
        }
    }

    /// Writes `text` under `key` as field manager `manager`, who owns that key alone.
    async fn save_key(&self, key: &str, manager: &str, text: String) -> Result<(), String> {
        let document = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.name, "labels": {"app.kubernetes.io/managed-by": "plumb"}},
            "data": {key: text},
        });
        self.api
            .patch(
                &self.name,
                &PatchParams::apply(manager).force(),
                &Patch::Apply(document),
            )
            .await
            .map_err(|e| format!("writing config map `{}`: {e}", self.name))?;
        Ok(())
    }

    /// Keeps the copies up to date from the ledger at `path` until every [`Witness`] is gone,
    /// answering those who wait. A copy that cannot be written is tried again a little later,
    /// and at the next change.
    pub async fn follow(self: Arc<Self>, path: PathBuf, mut requests: mpsc::UnboundedReceiver<Witnessed>) {
        let mut behind: BTreeMap<String, Vec<oneshot::Sender<Result<(), String>>>> = BTreeMap::new();
        loop {
            let retry = !behind.is_empty();
            let first = tokio::select! {
                next = requests.recv() => match next {
                    Some(request) => Some(request),
                    None => break,
                },
                _ = tokio::time::sleep(RETRY), if retry => None,
            };
            // Everything asked until now is written once.
            let asked = first.into_iter().chain(std::iter::from_fn(|| requests.try_recv().ok()));
            for request in asked {
                behind.entry(request.environment).or_default().extend(request.held);
            }
            let environments: Vec<String> = behind.keys().cloned().collect();
            let copies = ledger::read(path.clone(), move |ledger| {
                Ok(environments
                    .into_iter()
                    .map(|environment| {
                        let copy = ClusterRecord::copy(ledger, &environment);
                        (environment, copy)
                    })
                    .collect::<Vec<_>>())
            });
            let copies = match copies.await {
                Ok(copies) => copies,
                Err(e) => {
                    tracing::error!(error = %e, "Cannot read the ledger to copy it to the cluster.");
                    continue;
                }
            };
            for (environment, copy) in copies {
                let key = ClusterRecord::key(&environment);
                let manager = format!("plumb-ledger-{environment}");
                let result = match copy {
                    Ok(text) => self.save_key(&key, &manager, text).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = &result {
                    tracing::warn!(environment = %environment, error = %e, "Cannot copy the environment's record to the cluster; trying again.");
                }
                let waiting = if result.is_ok() {
                    behind.remove(&environment).unwrap_or_default()
                } else {
                    behind.get_mut(&environment).map(std::mem::take).unwrap_or_default()
                };
                for waiter in waiting {
                    let _ = waiter.send(result.clone());
                }
            }
        }
    }
}

/// A witness, and the task that keeps the cluster's copies from what it is told.
pub fn witness(record: Arc<ClusterRecord>, ledger: PathBuf) -> (Witness, tokio::task::JoinHandle<()>) {
    let (witness, requests) = Witness::channel();
    (witness, tokio::spawn(record.follow(ledger, requests)))
}
