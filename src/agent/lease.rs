//! Leader election on a `coordination.k8s.io/v1` Lease, so two agents never apply at once: an
//! agent applies only while it holds the Lease, renews it every third of its duration, hands it
//! over when it stops, and stops applying — the whole agent stops — when it cannot renew in
//! time. A waiting agent takes the Lease once its holder's last renewal is older than the
//! duration. Every write carries the Lease's resource version, so two agents racing for an
//! expired Lease cannot both win.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Where the Lease lives and who this agent is.
#[derive(Clone, Debug)]
pub struct Leader {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub lease: String,
    /// A kubeconfig file; the in-cluster configuration or `KUBECONFIG` when absent.
    pub kubeconfig: Option<PathBuf>,
    /// How long a Lease not renewed stays held.
    pub duration: Duration,
    /// This agent's identity (the pod's name in a cluster).
    pub identity: String,
}

/// Why the Lease cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("lease {namespace}/{lease}: {reason}")]
pub struct LeaseError {
    namespace: String,
    lease: String,
    reason: String,
}

impl Leader {
    fn error(&self, reason: impl std::fmt::Display) -> LeaseError {
        LeaseError {
            namespace: self.namespace.clone(),
            lease: self.lease.clone(),
            reason: reason.to_string(),
        }
    }

    /// A client of the cluster holding the Lease.
    pub async fn client(&self) -> Result<kube::Client, LeaseError> {
        let config = match &self.kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path).map_err(|e| self.error(e))?;
                kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                    .await
                    .map_err(|e| self.error(e))?
            }
            None => kube::Config::infer().await.map_err(|e| self.error(e))?,
        };
        kube::Client::try_from(config).map_err(|e| self.error(e))
    }

    /// Waits until this agent holds the Lease (or `cancel`), then keeps renewing it in the
    /// background (the task returned) until `release`, and hands it over then — the agent
    /// releases once everything it runs has stopped, so two agents never apply at once. When a
    /// renewal fails for longer than the duration, `cancel` is triggered. `None` when cancelled
    /// before the Lease was won.
    pub async fn hold(
        &self,
        cancel: &CancellationToken,
        release: &CancellationToken,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, LeaseError> {
        let api = Api::namespaced(self.client().await?, &self.namespace);
        let mut said = false;
        loop {
            match self.claim(&api).await {
                Ok(true) => break,
                Ok(false) if !said => {
                    tracing::info!(lease = %self.lease, identity = %self.identity, "Another agent holds the lease; waiting to take over.");
                    said = true;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "Cannot read the lease; trying again."),
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(None),
                _ = tokio::time::sleep(self.duration / 4) => {}
            }
        }
        tracing::info!(lease = %self.lease, identity = %self.identity, "Holding the lease: this agent applies.");
        let (leader, cancel, release) = (self.clone(), cancel.clone(), release.clone());
        Ok(Some(tokio::spawn(
            async move { leader.renew(api, cancel, release).await },
        )))
    }

    /// Renews every third of the duration until `release`; hands the Lease over then. Losing it
    /// stops the agent (`cancel`).
    async fn renew(self, api: Api<Lease>, cancel: CancellationToken, release: CancellationToken) {
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = release.cancelled() => break,
                _ = tokio::time::sleep(self.duration / 3) => {}
            }
            match self.claim(&api).await {
                Ok(true) => renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.lease, "Another agent took the lease; stopping.");
                    cancel.cancel();
                    return;
                }
                Err(e) if renewed.elapsed() >= self.duration => {
                    tracing::error!(error = %e, "The lease could not be renewed in time; stopping.");
                    cancel.cancel();
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "Cannot renew the lease; trying again."),
            }
        }
        if let Err(e) = self.release(&api).await {
            tracing::warn!(error = %e, "Cannot hand the lease over; it expires on its own.");
        }
    }

    /// Takes or renews the Lease when it is free, expired or already ours; `false` when another
    /// agent holds it (or won a race for it).
    async fn claim(&self, api: &Api<Lease>) -> Result<bool, LeaseError> {
        let now = chrono::Utc::now();
        let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let seconds = self.duration.as_secs().max(1) as i64;
        let current = api.get_opt(&self.lease).await.map_err(|e| self.error(e))?;
        let Some(current) = current else {
            let lease = self.lease_value(None, &stamp, &stamp, 0, seconds);
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(self.error(e)),
            };
        };
        let value = serde_json::to_value(&current).unwrap_or(Value::Null);
        let spec = &value["spec"];
        let holder = spec["holderIdentity"].as_str().unwrap_or_default();
        let ours = holder == self.identity;
        let duration = spec["leaseDurationSeconds"].as_i64().unwrap_or(seconds);
        let expired = spec["renewTime"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_none_or(|renewed| renewed.to_utc() + chrono::Duration::seconds(duration) < now);
        if !(ours || holder.is_empty() || expired) {
            return Ok(false);
        }
        let transitions = spec["leaseTransitions"].as_i64().unwrap_or(0) + i64::from(!ours);
        let acquired = if ours {
            spec["acquireTime"].as_str().unwrap_or(&stamp).to_owned()
        } else {
            stamp.clone()
        };
        let lease = self.lease_value(
            current.metadata.resource_version.clone(),
            &acquired,
            &stamp,
            transitions,
            seconds,
        );
        match api.replace(&self.lease, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Gives the Lease up, so the next agent need not wait for it to expire.
    async fn release(&self, api: &Api<Lease>) -> Result<(), LeaseError> {
        let Some(current) = api.get_opt(&self.lease).await.map_err(|e| self.error(e))? else {
            return Ok(());
        };
        let mut value = serde_json::to_value(&current).unwrap_or(Value::Null);
        if value["spec"]["holderIdentity"].as_str() != Some(self.identity.as_str()) {
            return Ok(());
        }
        value["spec"]["holderIdentity"] = Value::Null;
        value["spec"]["renewTime"] = Value::Null;
        let lease: Lease = serde_json::from_value(value).map_err(|e| self.error(e))?;
        api.replace(&self.lease, &PostParams::default(), &lease)
            .await
            .map_err(|e| self.error(e))?;
        tracing::info!(lease = %self.lease, "Handed the lease over.");
        Ok(())
    }

    fn lease_value(
        &self,
        version: Option<String>,
        acquired: &str,
        renewed: &str,
        transitions: i64,
        seconds: i64,
    ) -> Lease {
        let value = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.lease, "namespace": self.namespace, "resourceVersion": version},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": seconds,
                "acquireTime": acquired,
                "renewTime": renewed,
                "leaseTransitions": transitions,
            },
        });
        serde_json::from_value(value).expect("a Lease document")
    }
}

/// This agent's identity: `POD_NAME` in a cluster, else the host's name and the process id.
pub fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}
