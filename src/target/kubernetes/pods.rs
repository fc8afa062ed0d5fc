//! Why a Deployment's pods are not ready, or were restarted, in the kubelet's words: read only
//! when a rollout fails or a restart is seen, so the ledger and the status say what the probes
//! saw (`Readiness probe failed: HTTP probe failed with statuscode: 503`, `Liveness probe
//! failed: …`) or how a container keeps dying, not only that the progress deadline passed.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::ListParams;

use super::runtime::KubernetesRuntime;

impl KubernetesRuntime {
    /// What keeps the pods of Deployment `name` (selected by `selector`) from being ready:
    /// the first unready pod's container state or its newest warning event. `None` when
    /// nothing can be said (every pod ready, or pods and events cannot be read).
    pub(super) async fn pod_trouble(&self, selector: &str) -> Option<String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let listed = pods.list(&ListParams::default().labels(selector)).await.ok()?;
        let unready = listed.items.into_iter().find(|pod| !is_ready(pod))?;
        let name = unready.metadata.name.clone().unwrap_or_default();
        let state = container_trouble(&unready);
        let newest = self.newest_warning(&name).await;
        let said: Vec<String> = state.into_iter().chain(newest).collect();
        (!said.is_empty()).then(|| format!("pod `{name}`: {}", said.join("; ")))
    }

    /// Why the most restarted pod selected by `selector` was last restarted: its newest
    /// warning event that restarts containers (`Liveness probe failed: …`), else its newest
    /// warning, and its container's last exit. `None` when
    /// nothing can be said.
    pub(super) async fn restart_cause(&self, selector: &str) -> Option<String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let listed = pods.list(&ListParams::default().labels(selector)).await.ok()?;
        let pod = listed
            .items
            .into_iter()
            .filter(|pod| super::watch::pod_restarts(pod) > 0)
            .max_by_key(super::watch::pod_restarts)?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let newest = self.newest_warning(&name).await;
        let last_exit = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|statuses| {
                statuses.iter().find_map(|status| {
                    let exit = status.last_state.as_ref()?.terminated.as_ref()?;
                    let reason = exit.reason.as_deref().map(|r| format!(", {r}")).unwrap_or_default();
                    Some(format!(
                        "container `{}` last exited with code {}{reason}",
                        status.name, exit.exit_code
                    ))
                })
            });
        let said: Vec<String> = newest.into_iter().chain(last_exit).collect();
        (!said.is_empty()).then(|| format!("pod `{name}`: {}", said.join("; ")))
    }

    /// The message of pod `name`'s newest warning event of a failed liveness or startup probe,
    /// else of its newest warning event, when there is one.
    async fn newest_warning(&self, name: &str) -> Option<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let fields = format!("involvedObject.kind=Pod,involvedObject.name={name},type=Warning");
        let list = events.list(&ListParams::default().fields(&fields)).await.ok()?;
        // A node without cluster DNS warns of it on every pod: it says nothing of this one.
        let telling = |e: &Event| e.message.is_some() && e.reason.as_deref() != Some("MissingClusterDNS");
        // What restarts a container (a failed liveness or startup probe) says more of a restart
        // than the readiness failures and back-offs that follow it.
        let restarts = |e: &Event| {
            e.message
                .as_deref()
                .is_some_and(|m| m.starts_with("Liveness probe failed") || m.starts_with("Startup probe failed"))
        };
        let newest = list.items.into_iter().filter(telling).max_by_key(|e| {
            let at = e
                .last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or(e.event_time.as_ref().map(|t| t.0));
            (restarts(e), at)
        })?;
        newest.message.map(|m| m.trim().to_owned())
    }
}

/// Whether `pod`'s Ready condition is true.
fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A container of `pod` that died or keeps dying (a crash loop), or waits for a reason worth
/// telling: its state and last exit.
fn container_trouble(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|status| {
        let state = status.state.as_ref()?;
        let exited = |exit: &k8s_openapi::api::core::v1::ContainerStateTerminated| {
            let reason = exit.reason.as_deref().map(|r| format!(", {r}")).unwrap_or_default();
            format!("exit code {}{reason}", exit.exit_code)
        };
        if let Some(exit) = &state.terminated {
            return Some(format!(
                "container `{}` exited ({}; restarted {} times)",
                status.name,
                exited(exit),
                status.restart_count
            ));
        }
        let waiting = state.waiting.as_ref();
        let last = status.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        if state.running.is_some() {
            return last.filter(|_| status.restart_count > 0).map(|exit| {
                format!(
                    "container `{}` restarted {} times (last {})",
                    status.name,
                    status.restart_count,
                    exited(exit)
                )
            });
        }
        match (waiting.and_then(|w| w.reason.as_deref()), last) {
            (Some(reason), Some(exit)) => Some(format!(
                "container `{}` is {reason} (restarted {} times; last {})",
                status.name,
                status.restart_count,
                exited(exit)
            )),
            (Some(reason), None) if reason != "ContainerCreating" => {
                let message = waiting.and_then(|w| w.message.as_deref()).unwrap_or("");
                Some(
                    format!("container `{}` is waiting: {reason} {message}", status.name)
                        .trim_end()
                        .to_owned(),
                )
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_crash_loop_is_told_with_its_exit() {
        let looping = pod(serde_json::json!({
            "metadata": {"name": "web-blue-1"},
            "status": {"conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "web", "ready": false, "restartCount": 3, "image": "i", "imageID": "",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 2, "reason": "Error"}}}]}
        }));
        assert!(!is_ready(&looping));
        assert_eq!(
            container_trouble(&looping).unwrap(),
            "container `web` is CrashLoopBackOff (restarted 3 times; last exit code 2, Error)"
        );
        let starting = pod(serde_json::json!({
            "status": {"containerStatuses": [{"name": "web", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                "state": {"waiting": {"reason": "ContainerCreating"}}}]}
        }));
        assert_eq!(container_trouble(&starting), None);
    }
}
