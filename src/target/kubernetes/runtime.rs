//! The kubernetes target's primitives over one environment's namespace. The cluster is the
//! source of truth: observing reads the watches of the environment's objects (`watch`), and
//! the weights last routed live on each Service (annotation `plumb.dev/weights`), so a
//! rescheduled agent routes as the last one did. A retired slot is scaled to zero, not deleted;
//! a removed service is deleted. Writes go through `apply`; routes on a Gateway, `gateway`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service as KubeService};
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, ListParams, LogParams, Patch};
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::apply::watch_kind;
use super::live;
use super::objects::{self, ENVIRONMENT, SERVICE, SLOT, WEIGHTS, deployment_name};
use super::watch::{Snapshot, Watched};
use crate::spec::model::Service;
use crate::spec::model::environment::{GatewayRef, KubernetesTarget};
use crate::target::Slots;
use crate::target::workload::{LiveSlot, Slot, WorkloadError};

/// The field manager plumb applies as.
pub(super) const MANAGER: &str = "plumb";

/// How long an observation waits for the watches to show plumb's last writes before listing.
pub(super) const FRESH_WITHIN: Duration = Duration::from_secs(5);

/// Why a primitive failed.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// The cluster's configuration cannot be found or read.
    #[error("cannot configure the Kubernetes client: {0}")]
    Config(String),
    /// The API server refused or failed a request.
    #[error("{what}: {source}")]
    Api {
        /// What was asked, naming the object.
        what: String,
        /// The server's answer.
        #[source]
        source: kube::Error,
    },
    /// Another field manager holds fields plumb applies, and the environment does not force.
    #[error(
        "{what}: {message}; plumb takes fields over from another manager only when the environment sets `target.kubernetes.force: true`"
    )]
    Conflict {
        /// What was applied, naming the object.
        what: String,
        /// The API server's account of the conflict: the managers and their fields.
        message: String,
    },
    /// The service's variables cannot be prepared.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// A Deployment did not become available.
    #[error("deployment `{name}` is not available: {reason}")]
    NotAvailable {
        /// The Deployment.
        name: String,
        /// Why, in the controller's words when it gave some.
        reason: String,
    },
    /// A migration Job failed or ran out of time.
    #[error("job `{name}` failed: {reason}")]
    Job {
        /// The Job.
        name: String,
        /// Why.
        reason: String,
    },
}

pub(super) fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> KubernetesError {
    let what = what.into();
    move |source| KubernetesError::Api { what, source }
}

/// The runtime of one environment in its namespace.
pub struct KubernetesRuntime {
    pub(super) environment: String,
    pub(super) namespace: String,
    pub(super) client: kube::Client,
    /// Whether an apply takes fields over from other managers.
    pub(super) force: bool,
    /// The environment's objects as watches report them; observing lists without.
    pub(super) watched: Option<Watched>,
    /// Rung when the watches see a change plumb did not write.
    pub(super) bell: std::sync::Arc<tokio::sync::Notify>,
    /// The Gateway routing to the services, and the HTTPRoutes' API.
    pub(super) gateway: Option<(GatewayRef, Api<DynamicObject>)>,
    /// The API resources of the plain manifests' kinds, by `<apiVersion>/<kind>`, and whether
    /// each is namespaced.
    pub(super) kinds: std::sync::Mutex<std::collections::HashMap<String, (kube::api::ApiResource, bool)>>,
    /// The fields plumb's last apply owned, by Deployment: what another manager may take.
    pub(super) applied: std::sync::Mutex<std::collections::HashMap<String, std::collections::BTreeSet<String>>>,
    /// The autoscaled services this agent deployed, as declared: routing a color moves their
    /// autoscaler to it.
    pub(super) autoscaled: std::sync::Mutex<std::collections::HashMap<String, Service>>,
    /// The HorizontalPodAutoscalers' API, once discovered (`None`: the cluster serves none).
    pub(super) autoscalers: tokio::sync::OnceCell<Option<(Api<DynamicObject>, &'static str)>>,
}

impl KubernetesRuntime {
    /// A runtime for `environment` in the cluster `target` names: its `kubeconfig` file (with
    /// `context`), else the in-cluster configuration or `KUBECONFIG`. The namespace is created
    /// when missing.
    pub async fn new(environment: &str, target: &KubernetesTarget) -> Result<KubernetesRuntime, KubernetesError> {
        let options = KubeConfigOptions {
            context: target.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match &target.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path).map_err(|e| KubernetesError::Config(format!("{path}: {e}")))?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| KubernetesError::Config(format!("{path}: {e}")))?
            }
            None if target.context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| KubernetesError::Config(e.to_string()))?,
            None => kube::Config::infer()
                .await
                .map_err(|e| KubernetesError::Config(e.to_string()))?,
        };
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(api_error(format!("connecting to {server}")))?;
        client
            .apiserver_version()
            .await
            .map_err(api_error(format!("asking {server} for its version")))?;
        let mut runtime = KubernetesRuntime::with_client(environment, target, client);
        if let Some(gateway) = &target.gateway {
            runtime.gateway = Some((gateway.clone(), runtime.routes(&server).await?));
        }
        let selector = format!("{ENVIRONMENT}={environment}");
        runtime.watched = Some(Watched::start(
            &runtime.client,
            &runtime.namespace,
            &selector,
            runtime.bell.clone(),
        ));
        let namespace = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": runtime.namespace, "labels": {ENVIRONMENT: environment}},
        });
        let what = format!("applying namespace `{}`", runtime.namespace);
        runtime
            .apply(
                &Api::<Namespace>::all(runtime.client.clone()),
                &runtime.namespace,
                namespace,
                &what,
            )
            .await?;
        Ok(runtime)
    }

    /// A runtime for `environment` over `client`, which is trusted to reach the cluster.
    pub(super) fn with_client(environment: &str, target: &KubernetesTarget, client: kube::Client) -> KubernetesRuntime {
        KubernetesRuntime {
            environment: environment.to_owned(),
            namespace: target.namespace.as_str().to_owned(),
            client,
            force: target.force,
            watched: None,
            bell: std::sync::Arc::default(),
            gateway: None,
            kinds: std::sync::Mutex::default(),
            applied: std::sync::Mutex::default(),
            autoscaled: std::sync::Mutex::default(),
            autoscalers: tokio::sync::OnceCell::new(),
        }
    }

    /// The client this runtime speaks through.
    #[cfg(test)]
    pub(super) fn client(&self) -> &kube::Client {
        &self.client
    }

    pub(super) fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub(super) fn services(&self) -> Api<KubeService> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub(super) fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub(super) fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Applies Secret `name` of `service` holding `data`, or deletes it when there is none: a
    /// version without decrypted values leaves none behind.
    async fn apply_secret(
        &self,
        service: &Service,
        name: &str,
        slot: Option<Slot>,
        data: &[(String, String)],
    ) -> Result<(), KubernetesError> {
        if data.is_empty() {
            return self.delete(&self.secrets(), name, "secret").await;
        }
        let document = objects::secret(&self.environment, service, name, slot, data);
        self.apply(&self.secrets(), name, document, &format!("applying secret `{name}`"))
            .await?;
        Ok(())
    }

    /// Deletes object `name` (a `what`) if it is there (the watches tell, when they can: no
    /// request for what is not).
    async fn delete<K>(&self, api: &Api<K>, name: &str, what: &str) -> Result<(), KubernetesError>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let kind = K::kind(&());
        let known = self
            .watched
            .as_ref()
            .zip(watch_kind(&kind))
            .and_then(|(w, k)| w.has(k, name));
        if known == Some(false) {
            return Ok(());
        }
        let deleted = api.delete(name, &DeleteParams::background()).await;
        ignore_not_found(deleted, format!("deleting {what} `{name}`"))?;
        self.wrote(&K::kind(&()), name, None);
        Ok(())
    }

    /// The variables of `service`.
    fn env(&self, service: &Service) -> Result<Vec<(String, String)>, KubernetesError> {
        Ok(objects::variables_of(&self.environment, service)?)
    }

    /// Applies `version` of `service` in `slot`, from `commit`, and waits until the Deployment
    /// is available;
    /// the service's Service is applied with its ports (created selecting no slot yet).
    pub async fn deploy(
        &self,
        service: &Service,
        slot: Slot,
        version: &str,
        commit: &str,
    ) -> Result<(), KubernetesError> {
        let name = deployment_name(service.name.as_str(), slot);
        // The configuration file goes in the slot's ConfigMap, the decrypted values in its
        // Secret (the file too, when it holds any), applied before the pods need them.
        let objects = objects::slot_objects(&self.environment, service, slot, version, commit)?;
        let secret_name = objects::secret_name(service.name.as_str(), slot);
        match objects.secret {
            Some(document) => {
                let what = format!("applying secret `{secret_name}`");
                self.apply(&self.secrets(), &secret_name, document, &what).await?;
            }
            None => self.delete(&self.secrets(), &secret_name, "secret").await?,
        }
        let map_name = objects::config_map_name(service.name.as_str(), slot);
        match objects.config_map {
            Some(document) => {
                let what = format!("applying config map `{map_name}`");
                self.apply(&self.config_maps(), &map_name, document, &what).await?;
            }
            // No file, or one in the Secret: a ConfigMap of an earlier version goes.
            None => self.delete(&self.config_maps(), &map_name, "config map").await?,
        }
        let document = objects.deployment;
        let what = format!("applying deployment `{name}`");
        let applied = self.apply(&self.deployments(), &name, document, &what).await?;
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), super::fields::applied_by_plumb(&applied));
        if service.autoscaling.is_some() {
            self.start_autoscaled(service, slot, &applied).await?;
        }
        // The Service follows the declared ports; its selector keeps the weights last routed.
        let existing = self
            .services()
            .get_opt(service.name.as_str())
            .await
            .map_err(api_error(format!("reading service `{}`", service.name.as_str())))?;
        let weights = existing
            .and_then(|s| s.metadata.annotations?.get(WEIGHTS).map(|w| objects::parse_weights(w)))
            .unwrap_or_else(|| vec![(slot, 0)]);
        self.apply_service(service, &weights).await?;
        self.apply_route(service, slot, &weights).await?;
        self.available(&name, service.progress_deadline.0).await
    }

    /// Applies `service`'s Service with `weights`: it selects the slots with weight (both: the
    /// split follows their replica counts).
    async fn apply_service(&self, service: &Service, weights: &[(Slot, u32)]) -> Result<(), KubernetesError> {
        let serving: Vec<Slot> = weights.iter().filter(|(_, w)| *w > 0).map(|(s, _)| *s).collect();
        let document = objects::service(&self.environment, service, &serving, &objects::format_weights(weights));
        let name = service.name.as_str();
        self.apply(&self.services(), name, document, &format!("applying service `{name}`"))
            .await?;
        Ok(())
    }

    /// Waits until Deployment `name` has observed its spec and every replica is updated and
    /// available; fails when the controller reports the progress deadline exceeded, or after
    /// `deadline` (and a little more) has passed.
    ///
    /// A `Progressing=False` condition counts only once `deadline` has passed since this wait
    /// began (right after plumb changed the Deployment): no template of plumb's can have timed
    /// out sooner. Before that it is left from an earlier template — a hand-set image that could
    /// not be pulled — which the controller keeps reporting (`Deployment "…" has timed out
    /// progressing`) until a new ReplicaSet progresses; a Recreate scales the old pods down
    /// first, under the new generation.
    async fn available(&self, name: &str, deadline: Duration) -> Result<(), KubernetesError> {
        let began = tokio::time::Instant::now();
        let until = began + deadline + Duration::from_secs(5);
        loop {
            let deployment = self
                .deployments()
                .get(name)
                .await
                .map_err(api_error(format!("reading deployment `{name}`")))?;
            let generation = deployment.metadata.generation.unwrap_or(0);
            let wanted = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let status = deployment.status.unwrap_or_default();
            if status.observed_generation.unwrap_or(0) >= generation
                && status.updated_replicas.unwrap_or(0) >= wanted
                && status.available_replicas.unwrap_or(0) >= wanted
                && status.replicas.unwrap_or(0) == wanted
            {
                return Ok(());
            }
            let stalled = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Progressing" && c.status == "False");
            // A condition from before the controller saw this spec, or from before this spec
            // could have timed out, says nothing about it.
            let current = status.observed_generation.unwrap_or(0) >= generation && began.elapsed() >= deadline;
            let failed = match stalled.filter(|_| current) {
                Some(condition) => Some(
                    condition
                        .message
                        .clone()
                        .unwrap_or_else(|| "progress deadline exceeded".to_owned()),
                ),
                None if tokio::time::Instant::now() > until => Some(format!(
                    "{} of {wanted} replicas available after {deadline:?}",
                    status.available_replicas.unwrap_or(0)
                )),
                None => None,
            };
            if let Some(mut reason) = failed {
                // The kubelet's account of the pods that are not ready: what the probes saw.
                let selector = deployment
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.match_labels.as_ref())
                    .map(|labels| {
                        labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                if let Some(trouble) = self.pod_trouble(&selector).await {
                    reason = format!("{reason}; {trouble}");
                }
                return Err(KubernetesError::NotAvailable {
                    name: name.to_owned(),
                    reason,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sets the replicas of `service`'s `slot` and waits until they are available.
    pub async fn scale(&self, service: &Service, slot: Slot, replicas: u32) -> Result<(), KubernetesError> {
        let name = deployment_name(service.name.as_str(), slot);
        self.set_replicas(&name, replicas).await?;
        self.available(&name, service.progress_deadline.0).await
    }

    pub(super) async fn set_replicas(&self, name: &str, replicas: u32) -> Result<(), KubernetesError> {
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        let scaled = self
            .deployments()
            .patch(name, &KubernetesRuntime::update(), &Patch::Merge(patch))
            .await
            .map_err(api_error(format!("scaling deployment `{name}`")))?;
        self.wrote("Deployment", name, scaled.metadata.resource_version.as_deref());
        Ok(())
    }

    /// Routes `service` by `weights` through its Service's selector.
    pub async fn route(&self, service: &str, weights: &[(Slot, u32)]) -> Result<(), KubernetesError> {
        let Some(existing) = self
            .services()
            .get_opt(service)
            .await
            .map_err(api_error(format!("reading service `{service}`")))?
        else {
            return Ok(());
        };
        let serving: Vec<Slot> = weights.iter().filter(|(_, w)| *w > 0).map(|(s, _)| *s).collect();
        let mut selector = serde_json::json!({SERVICE: service, ENVIRONMENT: self.environment});
        match serving.as_slice() {
            [one] => selector[SLOT] = serde_json::json!(one.name()),
            [] => selector[SLOT] = serde_json::json!("none"),
            _ => selector[SLOT] = serde_json::Value::Null,
        }
        let patch = serde_json::json!({
            "metadata": {"annotations": {WEIGHTS: objects::format_weights(weights)}},
            "spec": {"selector": selector},
        });
        let name = existing.metadata.name.unwrap_or_else(|| service.to_owned());
        let routed: KubeService = self
            .services()
            .patch(&name, &KubernetesRuntime::update(), &Patch::Merge(patch))
            .await
            .map_err(api_error(format!("routing service `{service}`")))?;
        self.wrote("Service", &name, routed.metadata.resource_version.as_deref());
        if let [one] = serving.as_slice() {
            self.autoscale_serving(service, *one).await?;
        }
        // Through a Gateway, the route's backends carry the exact weights, to the Service's port.
        if let Some(port) = routed
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref()?.first().map(|p| p.port))
        {
            self.weigh_route(service, port, weights).await?;
        }
        Ok(())
    }

    /// Scales `service`'s `slot` to zero, keeping its Deployment (and the ReplicaSets of its
    /// history) for a quick way back; observing no longer counts a slot without replicas and
    /// without traffic. Its ConfigMap and Secret go: the next version in the slot brings its
    /// own, and a hand edit left in them would come back as a conflict then; no decrypted value
    /// outlives the version that needs it.
    pub async fn retire(&self, service: &str, slot: Slot) -> Result<(), KubernetesError> {
        let name = deployment_name(service, slot);
        match self.set_replicas(&name, 0).await {
            Err(KubernetesError::Api { source, .. }) if is_not_found(&source) => {}
            done => done?,
        }
        let map_name = objects::config_map_name(service, slot);
        self.delete(&self.config_maps(), &map_name, "config map").await?;
        let secret_name = objects::secret_name(service, slot);
        self.delete(&self.secrets(), &secret_name, "secret").await
    }

    /// Deletes everything of `service`: both slots' Deployments, ConfigMaps and Secrets, and
    /// its Service.
    pub async fn remove(&self, service: &str) -> Result<(), KubernetesError> {
        for slot in [Slot::Blue, Slot::Green] {
            let name = deployment_name(service, slot);
            self.delete(&self.deployments(), &name, "deployment").await?;
            self.applied.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
            let map_name = objects::config_map_name(service, slot);
            self.delete(&self.config_maps(), &map_name, "config map").await?;
            let secret_name = objects::secret_name(service, slot);
            self.delete(&self.secrets(), &secret_name, "secret").await?;
        }
        self.remove_autoscaler(service).await?;
        let deleted = self.services().delete(service, &DeleteParams::background()).await;
        ignore_not_found(deleted, format!("deleting service `{service}`"))?;
        self.wrote("Service", service, None);
        self.remove_route(service).await
    }

    /// Runs `command` of `service` as Job `job`, to completion within `timeout`; the last
    /// lines its pod wrote (quoted in the error when it fails).
    pub async fn run_job(
        &self,
        service: &Service,
        job: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<String, KubernetesError> {
        let env = self.env(service)?;
        let name = objects::job_name(service.name.as_str(), job);
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
        // A Job left by an agent that died while it ran.
        let _ = jobs.delete(&name, &DeleteParams::background()).await;
        while jobs.get_opt(&name).await.ok().flatten().is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The Job's decrypted variables, in a Secret of its name that goes with it, however
        // the Job ends.
        let secret_data = objects::secret_data(service, &env, None);
        let ran = async {
            self.apply_secret(service, &name, None, &secret_data).await?;
            let document = objects::job(&self.environment, service, &name, command, timeout.as_secs(), &env);
            self.apply(&jobs, &name, document, &format!("applying job `{name}`"))
                .await?;
            let outcome = self.job_outcome(&jobs, &name, timeout).await?;
            Ok::<_, KubernetesError>((outcome, self.job_tail(&name).await))
        }
        .await;
        let _ = jobs.delete(&name, &DeleteParams::background()).await;
        if !secret_data.is_empty() {
            self.delete(&self.secrets(), &name, "secret").await?;
        }
        match ran? {
            (Ok(()), tail) => Ok(tail),
            (Err(reason), tail) if tail.is_empty() => Err(KubernetesError::Job { name, reason }),
            (Err(reason), tail) => Err(KubernetesError::Job {
                name,
                reason: format!("{reason}; its last lines:\n{tail}"),
            }),
        }
    }

    /// The last lines the newest pod of Job `name` wrote; empty when they cannot be read (the
    /// pod is gone, the kubelet does not answer within 5 s).
    async fn job_tail(&self, name: &str) -> String {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let listed = pods
            .list(&ListParams::default().labels(&format!("job-name={name}")))
            .await;
        let Some(pod) = listed.ok().and_then(|l| {
            l.items
                .into_iter()
                .max_by_key(|p| p.metadata.creation_timestamp.clone())
        }) else {
            return String::new();
        };
        let params = LogParams {
            tail_lines: Some(20),
            limit_bytes: Some(4096),
            ..LogParams::default()
        };
        let pod = pod.metadata.name.unwrap_or_default();
        // The API server asks the kubelet: a node that does not answer costs seconds, not the
        // rollout.
        match tokio::time::timeout(Duration::from_secs(5), pods.logs(&pod, &params)).await {
            Ok(Ok(logs)) => logs.trim_end().to_owned(),
            _ => String::new(),
        }
    }

    /// How Job `name` ends: `Err` with why it failed, or did not finish within `timeout`.
    async fn job_outcome(
        &self,
        jobs: &Api<Job>,
        name: &str,
        timeout: Duration,
    ) -> Result<Result<(), String>, KubernetesError> {
        let until = tokio::time::Instant::now() + timeout + Duration::from_secs(5);
        loop {
            let found = jobs
                .get(name)
                .await
                .map_err(api_error(format!("reading job `{name}`")))?;
            let status = found.status.unwrap_or_default();
            if status.succeeded.unwrap_or(0) > 0 {
                return Ok(Ok(()));
            }
            let failed = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Failed" && c.status == "True");
            if let Some(condition) = failed {
                return Ok(Err(condition.message.clone().unwrap_or_else(|| "failed".to_owned())));
            }
            if status.failed.unwrap_or(0) > 0 {
                return Ok(Err("its pod failed".to_owned()));
            }
            if tokio::time::Instant::now() > until {
                return Ok(Err(format!("did not finish within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What runs: the environment's Deployments, by service and slot, with the weights their
    /// Services record — from the watches when they hold plumb's last writes, else listed.
    pub async fn observe(&self) -> Result<BTreeMap<String, Slots<LiveSlot>>, KubernetesError> {
        let cached = match &self.watched {
            Some(watched) => watched.snapshot(FRESH_WITHIN).await,
            None => None,
        };
        let snapshot = match cached {
            Some(snapshot) => snapshot,
            None => {
                if self.watched.is_some() {
                    tracing::debug!(environment = %self.environment, "The watches do not show plumb's last writes yet; listing.");
                }
                self.list().await?
            }
        };
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        Ok(live::of(snapshot, &mut applied))
    }

    /// The environment's objects, listed.
    async fn list(&self) -> Result<Snapshot, KubernetesError> {
        let selector = ListParams::default().labels(&format!("{ENVIRONMENT}={}", self.environment));
        let deployments = self
            .deployments()
            .list(&selector)
            .await
            .map_err(api_error("listing deployments"))?;
        let services = self
            .services()
            .list(&selector)
            .await
            .map_err(api_error("listing services"))?;
        let config_maps = self
            .config_maps()
            .list(&selector)
            .await
            .map_err(api_error("listing config maps"))?;
        // Not granted Secrets here: none of plumb's can be here either.
        let mut secrets = match self.secrets().list(&selector).await {
            Err(e) if is_forbidden(&e) => Vec::new(),
            listed => listed.map_err(api_error("listing secrets"))?.items,
        };
        secrets.iter_mut().for_each(objects::digest_secret);
        // Not granted Pods here: restarts are not reported.
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let pods = match pods.list(&selector).await {
            Err(e) if is_forbidden(&e) => Vec::new(),
            listed => listed.map_err(api_error("listing pods"))?.items,
        };
        Ok(Snapshot {
            deployments: deployments.items,
            services: services.items,
            config_maps: config_maps.items,
            secrets,
            pods,
        })
    }
}

pub(super) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

pub(super) fn is_forbidden(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 403)
}

/// `done`, with an object already gone counted as success.
pub(super) fn ignore_not_found<T>(done: Result<T, kube::Error>, what: String) -> Result<(), KubernetesError> {
    match done {
        Err(e) if !is_not_found(&e) => Err(KubernetesError::Api { what, source: e }),
        _ => Ok(()),
    }
}
