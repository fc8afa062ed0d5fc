//! The compose target's primitives over one environment, on a Docker Engine: a slot's replicas
//! are containers of the environment's Compose project, published on loopback; each service's
//! stable ports are served by plumb's router, which splits traffic between the slots by weight.
//!
//! The engine is the source of truth for what runs: every observation lists the project's
//! containers. Containers outlive the agent; a new agent adopts them — it rebinds the routers
//! from the containers' labels and takes the weights it last set from `routes.json`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::container::{ENVIRONMENT, Launch, PROJECT, Replica, SERVICE};
use super::engine::{self, EngineError, not_found, request};
use super::nginx::{Nginx, NginxError, Upstream};
use crate::health::Check;
use crate::router::{Backend, Router, SlotStats};
use crate::spec::model::Service;
use crate::spec::model::environment::{ComposeTarget, Proxy};
use crate::spec::model::service::{HealthCheck, Reload, Signal as ConfigSignal};
use crate::target::workload::{LiveSlot, Slot, WorkloadError, file_digest, variables, write_config};
use crate::target::{Capabilities, Pending, Target, TargetError};

/// Why a primitive failed.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// The engine cannot be reached or refused a request.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The service's variables or configuration file cannot be prepared.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// The service names no image.
    #[error("service `{0}` has no `image`: the compose target runs containers")]
    NoImage(String),
    /// A proxy this plumb does not drive yet.
    #[error("proxy `{0}` is not available in this plumb yet; use `plumb` (the built-in router) or `nginx`")]
    Proxy(&'static str),
    /// A stable port cannot be listened on.
    #[error("service `{service}` cannot listen on {addr}: another process holds it")]
    Bind {
        /// The service.
        service: String,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The address in the environment's target is not an IP address.
    #[error("`{0}` is not an IP address")]
    Address(String),
    /// The service (or its slot) does not run here.
    #[error("service `{0}` does not run in that slot")]
    NotRunning(String),
    /// A health check names a port the service does not declare.
    #[error("service `{service}`: health check `{check}` names a port the service does not declare")]
    UnknownPort {
        /// The service.
        service: String,
        /// The check.
        check: String,
    },
    /// An exec check, which would run on the agent's host rather than in the container.
    #[error(
        "service `{service}`: health check `{check}` is an exec check; on the compose target use http or tcp checks"
    )]
    ExecCheck {
        /// The service.
        service: String,
        /// The check.
        check: String,
    },
    /// A folder or file of the target's state cannot be written.
    #[error("cannot write {path}")]
    State {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The nginx proxy could not be updated.
    #[error(transparent)]
    Nginx(#[from] NginxError),
    /// The engine's health check reported a replica unhealthy.
    #[error("service `{service}`: the engine's health check failed: {output}")]
    Unhealthy {
        /// The service.
        service: String,
        /// The check's last output.
        output: String,
    },
    /// A one-off job failed or timed out.
    #[error("{0}")]
    Job(String),
}

/// One service's routers (or, behind nginx, its stable ports) and weights.
#[derive(Default)]
struct Routes {
    /// One router per declared port and stable address (plumb's router).
    routers: BTreeMap<(String, SocketAddr), (Router, CancellationToken)>,
    /// The declared ports by name and stable number (nginx).
    stable: BTreeSet<(String, u16)>,
    weights: BTreeMap<Slot, u32>,
}

/// The compose runtime of one environment.
pub struct ComposeRuntime {
    environment: String,
    project: String,
    address: IpAddr,
    port_offset: u16,
    docker: Docker,
    /// `state/compose/<environment>`: configuration folders and `routes.json`.
    dir: PathBuf,
    routing: Mutex<BTreeMap<String, Routes>>,
    /// The health checks of each deployed slot.
    checks: std::sync::Mutex<BTreeMap<(String, Slot), Vec<HealthCheck>>>,
    /// The nginx proxy, when the target names it; plumb's router otherwise.
    nginx: Option<Nginx>,
    /// When each service's traffic counters were last reset (seconds since the epoch; nginx).
    counted_since: std::sync::Mutex<HashMap<String, i32>>,
    /// Rung by the engine's events when a replica stops serving.
    bell: std::sync::Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
}

impl ComposeRuntime {
    /// A runtime for `environment` on the engine `target` names, adopting the containers of
    /// its project that already run.
    pub async fn new(environment: &str, target: &ComposeTarget, state: &Path) -> Result<ComposeRuntime, ComposeError> {
        if target.proxy == Proxy::None {
            return Err(ComposeError::Proxy("none"));
        }
        let docker = engine::connect(target.docker_host.as_deref()).await?;
        let project = target
            .project
            .as_ref()
            .map_or_else(|| environment.to_owned(), |p| p.as_str().to_owned());
        let address: IpAddr = target
            .address
            .parse()
            .map_err(|_| ComposeError::Address(target.address.clone()))?;
        let dir = state.join("compose").join(environment);
        let nginx = (target.proxy == Proxy::Nginx).then(|| {
            Nginx::new(
                docker.clone(),
                &project,
                environment,
                &target.nginx_image,
                address,
                target.port_offset,
                dir.join("nginx"),
            )
        });
        let runtime = ComposeRuntime {
            environment: environment.to_owned(),
            project,
            address,
            port_offset: target.port_offset,
            docker,
            dir,
            nginx,
            counted_since: std::sync::Mutex::default(),
            routing: Mutex::new(BTreeMap::new()),
            checks: std::sync::Mutex::new(BTreeMap::new()),
            bell: std::sync::Arc::default(),
            cancel: CancellationToken::new(),
        };
        runtime.adopt().await?;
        tokio::spawn(super::events::follow(
            runtime.docker.clone(),
            runtime.environment.clone(),
            runtime.bell.clone(),
            runtime.cancel.child_token(),
        ));
        Ok(runtime)
    }

    /// Rebinds the routers of the replicas that run, with the weights last set.
    async fn adopt(&self) -> Result<(), ComposeError> {
        let weights: BTreeMap<String, BTreeMap<Slot, u32>> = std::fs::read(self.dir.join("routes.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let replicas = self.replicas(None).await?;
        let mut routing = self.routing.lock().await;
        for replica in &replicas {
            let routes = routing.entry(replica.service.clone()).or_default();
            routes.weights = weights.get(&replica.service).cloned().unwrap_or_default();
            for port in &replica.ports {
                self.bind(&replica.service, routes, &port.name, port.stable).await?;
            }
        }
        let adopted = routing.len();
        if self.nginx.is_none() {
            for (service, routes) in routing.iter() {
                reroute(routes, &replicas, service);
            }
        }
        if adopted > 0 {
            tracing::info!(environment = %self.environment, services = adopted, "Adopted the containers that run.");
        }
        Ok(())
    }

    /// Binds the router of `service`'s port `name` on its stable number, unless it runs.
    async fn bind(&self, service: &str, routes: &mut Routes, name: &str, stable: u16) -> Result<(), ComposeError> {
        if self.nginx.is_some() {
            routes.stable.insert((name.to_owned(), stable));
            return Ok(());
        }
        let addr = SocketAddr::new(self.address, stable.saturating_add(self.port_offset));
        let key = (name.to_owned(), addr);
        if routes.routers.contains_key(&key) {
            return Ok(());
        }
        let cancel = self.cancel.child_token();
        let router = Router::bind(addr, cancel.clone())
            .await
            .map_err(|e| ComposeError::Bind {
                service: service.to_owned(),
                addr,
                source: e.source,
            })?;
        routes.routers.insert(key, (router, cancel));
        Ok(())
    }

    /// The project's replicas (of `service` only, when given), stopped ones included.
    async fn replicas(&self, service: Option<&str>) -> Result<Vec<Replica>, EngineError> {
        let mut labels = vec![
            format!("{ENVIRONMENT}={}", self.environment),
            format!("{PROJECT}={}", self.project),
        ];
        if let Some(service) = service {
            labels.push(format!("{SERVICE}={service}"));
        }
        let filters = HashMap::from([("label".to_owned(), labels)]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let listed = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(request(format!("listing the containers of project `{}`", self.project)))?;
        let mut replicas: Vec<Replica> = listed.iter().filter_map(Replica::from_summary).collect();
        replicas.sort_by(|a, b| (&a.service, a.slot, a.number).cmp(&(&b.service, b.slot, b.number)));
        Ok(replicas)
    }

    /// The project's default network, created on first use with Compose's labels.
    async fn network(&self) -> Result<String, EngineError> {
        self.named_network("default").await
    }

    /// The project's network `short` (`<project>_<short>`), created on first use.
    async fn named_network(&self, short: &str) -> Result<String, EngineError> {
        let name = format!("{}_{short}", self.project);
        match self.docker.inspect_network(&name, None).await {
            Ok(_) => return Ok(name),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(request(format!("inspecting network `{name}`"))(e)),
        }
        let labels = HashMap::from([
            (PROJECT.to_owned(), self.project.clone()),
            ("com.docker.compose.network".to_owned(), short.to_owned()),
            (ENVIRONMENT.to_owned(), self.environment.clone()),
        ]);
        let network = bollard::models::NetworkCreateRequest {
            name: name.clone(),
            labels: Some(labels),
            ..Default::default()
        };
        self.docker
            .create_network(network)
            .await
            .map_err(request(format!("creating network `{name}`")))?;
        Ok(name)
    }

    /// Pulls `image` unless the engine has it.
    async fn image(&self, image: &str) -> Result<(), EngineError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(request(format!("inspecting image `{image}`"))(e)),
        }
        tracing::info!(environment = %self.environment, image, "Pulling the image.");
        let options = CreateImageOptionsBuilder::new().from_image(image).build();
        self.docker
            .create_image(Some(options), None, None)
            .try_collect::<Vec<_>>()
            .await
            .map_err(request(format!("pulling image `{image}`")))?;
        Ok(())
    }

    /// Stops (with the container's grace period) and removes containers, concurrently.
    async fn remove(&self, ids: Vec<String>) {
        let removals = ids.into_iter().map(|id| {
            let docker = self.docker.clone();
            tokio::spawn(async move {
                let _ = docker
                    .stop_container(&id, Some(StopContainerOptionsBuilder::new().t(10).build()))
                    .await;
                if let Err(e) = docker
                    .remove_container(&id, Some(RemoveContainerOptionsBuilder::new().force(true).build()))
                    .await
                    && !not_found(&e)
                {
                    tracing::warn!(container = %id, error = %e, "Cannot remove a container.");
                }
            })
        });
        for removal in removals.collect::<Vec<_>>() {
            let _ = removal.await;
        }
    }

    /// The folder of `service`'s `slot` on the agent's host: its configuration file lives there.
    fn slot_dir(&self, service: &str, slot: Slot) -> PathBuf {
        self.dir.join(service).join(slot.name())
    }

    /// The project's volumes `service` mounts, created on first use with Compose's labels.
    async fn volumes(&self, service: &Service) -> Result<(), EngineError> {
        for volume in service.container.iter().flat_map(|c| &c.volumes) {
            let short = volume.split(':').next().unwrap_or_default();
            let name = format!("{}_{short}", self.project);
            match self.docker.inspect_volume(&name).await {
                Ok(_) => continue,
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(request(format!("inspecting volume `{name}`"))(e)),
            }
            let labels = HashMap::from([
                (PROJECT.to_owned(), self.project.clone()),
                ("com.docker.compose.volume".to_owned(), short.to_owned()),
                (ENVIRONMENT.to_owned(), self.environment.clone()),
            ]);
            let request_body = bollard::models::VolumeCreateRequest {
                name: Some(name.clone()),
                labels: Some(labels),
                ..Default::default()
            };
            self.docker
                .create_volume(request_body)
                .await
                .map_err(request(format!("creating volume `{name}`")))?;
        }
        Ok(())
    }

    /// Creates and starts replica `index` of a launch, on the networks its service joins.
    async fn start(&self, launch: &Launch<'_>, index: usize) -> Result<(), EngineError> {
        let name = launch.name(index);
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), launch.body(index))
            .await
            .map_err(request(format!("creating container `{name}`")))?;
        for short in launch.service.container.iter().flat_map(|c| &c.networks) {
            let network = self.named_network(short.as_str()).await?;
            let endpoint = bollard::models::NetworkConnectRequest {
                container: created.id.clone(),
                endpoint_config: Some(bollard::models::EndpointSettings {
                    aliases: Some(vec![launch.service.name.as_str().to_owned()]),
                    ..Default::default()
                }),
            };
            self.docker
                .connect_network(&network, endpoint)
                .await
                .map_err(request(format!("connecting `{name}` to network `{network}`")))?;
        }
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(request(format!("starting container `{name}`")))?;
        Ok(())
    }

    /// Waits until the engine reports every container of `service`'s `slot` healthy, when the
    /// service declares an engine health check: fails as soon as one is `unhealthy` (with the
    /// check's last output) or when the check's own time has passed.
    async fn healthy(&self, service: &Service, slot: Slot) -> Result<(), ComposeError> {
        let Some(check) = service.container.as_ref().and_then(|c| c.healthcheck.as_ref()) else {
            return Ok(());
        };
        let name = service.name.as_str();
        let patience = check.start_period.0 + (check.interval.0 + check.timeout.0) * (check.retries + 1);
        let deadline = tokio::time::Instant::now() + patience + std::time::Duration::from_secs(5);
        loop {
            let mut waiting = 0;
            for replica in self.replicas(Some(name)).await?.iter().filter(|r| r.slot == slot) {
                let inspected = self
                    .docker
                    .inspect_container(&replica.id, None)
                    .await
                    .map_err(request(format!("inspecting a replica of `{name}`")))?;
                let health = inspected.state.and_then(|s| s.health);
                let status = health.as_ref().and_then(|h| h.status);
                match status {
                    Some(bollard::models::HealthStatusEnum::HEALTHY) => {}
                    Some(bollard::models::HealthStatusEnum::UNHEALTHY) => {
                        let said = health
                            .and_then(|h| h.log)
                            .and_then(|log| log.last().and_then(|l| l.output.clone()))
                            .unwrap_or_default();
                        return Err(ComposeError::Unhealthy {
                            service: name.to_owned(),
                            output: said.trim().to_owned(),
                        });
                    }
                    _ => waiting += 1,
                }
            }
            if waiting == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ComposeError::Unhealthy {
                    service: name.to_owned(),
                    output: format!("{waiting} replicas not healthy within {patience:?}"),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Starts `version` of `service` in `slot` (replacing whatever ran there), without traffic.
    pub async fn deploy(&self, service: &Service, slot: Slot, version: &str) -> Result<(), ComposeError> {
        let name = service.name.as_str();
        let image = service
            .image
            .as_deref()
            .ok_or_else(|| ComposeError::NoImage(name.to_owned()))?;
        let env = variables(service)?;
        let old: Vec<String> = self
            .replicas(Some(name))
            .await?
            .into_iter()
            .filter(|r| r.slot == slot)
            .map(|r| r.id)
            .collect();
        self.remove(old).await;
        self.image(image).await?;
        self.volumes(service).await?;
        let network = self.network().await?;
        let dir = self.slot_dir(name, slot);
        std::fs::create_dir_all(&dir).map_err(|source| ComposeError::State {
            path: dir.clone(),
            source,
        })?;
        let config = write_config(service, &dir)?;
        let launch = Launch {
            project: &self.project,
            environment: &self.environment,
            service,
            slot,
            version,
            network: &network,
            config: config
                .as_ref()
                .and_then(|path| Some((dir.as_path(), path.file_name()?.to_string_lossy().into_owned()))),
            env: &env,
        };
        let mut routing = self.routing.lock().await;
        let routes = routing.entry(name.to_owned()).or_default();
        for port in launch.ports() {
            self.bind(name, routes, &port.name, port.stable).await?;
        }
        for index in 0..service.replicas.max(1) as usize {
            self.start(&launch, index).await?;
        }
        drop(routing);
        self.healthy(service, slot).await?;
        let mut routing = self.routing.lock().await;
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((name.to_owned(), slot), service.health_checks.clone());
        // A new version takes traffic only when a strategy routes it there.
        routing.entry(name.to_owned()).or_default().weights.insert(slot, 0);
        self.persist(&routing)?;
        let replicas = self.replicas(Some(name)).await?;
        self.publish(&routing, name, &replicas).await
    }

    /// Changes the number of `service`'s replicas in `slot`: new ones start beside the running
    /// ones; surplus ones leave the routers, then stop.
    pub async fn scale(&self, service: &Service, slot: Slot, replicas: u32) -> Result<(), ComposeError> {
        let name = service.name.as_str();
        let wanted = replicas.max(1) as usize;
        let running: Vec<Replica> = self
            .replicas(Some(name))
            .await?
            .into_iter()
            .filter(|r| r.slot == slot)
            .collect();
        let Some(first) = running.first() else {
            return Err(ComposeError::NotRunning(name.to_owned()));
        };
        let version = first.version.clone();
        if running.len() < wanted {
            let env = variables(service)?;
            let network = self.network().await?;
            let dir = self.slot_dir(name, slot);
            let file = service.config.as_ref().map(|c| c.file.clone());
            let launch = Launch {
                project: &self.project,
                environment: &self.environment,
                service,
                slot,
                version: &version,
                network: &network,
                config: file.map(|file| (dir.as_path(), file)),
                env: &env,
            };
            let taken: Vec<usize> = running.iter().map(|r| r.number).collect();
            let mut index = 0;
            for _ in running.len()..wanted {
                while taken.contains(&(index + 1)) {
                    index += 1;
                }
                self.start(&launch, index).await?;
                index += 1;
            }
            self.healthy(service, slot).await?;
        }
        let surplus: Vec<String> = running.iter().skip(wanted).map(|r| r.id.clone()).collect();
        let routing = self.routing.lock().await;
        let kept: Vec<Replica> = self
            .replicas(Some(name))
            .await?
            .into_iter()
            .filter(|r| !surplus.contains(&r.id))
            .collect();
        self.publish(&routing, name, &kept).await?;
        drop(routing);
        self.remove(surplus).await;
        Ok(())
    }

    /// A configuration-only change: rewrites the file the slot's containers mount and, as the
    /// service declares, signals them; `false` when the service reloads by restart.
    pub async fn reload(&self, service: &Service, slot: Slot) -> Result<bool, ComposeError> {
        let name = service.name.as_str();
        let Some(config) = &service.config else {
            return Ok(true);
        };
        if config.reload == Reload::Restart {
            return Ok(false);
        }
        write_config(service, &self.slot_dir(name, slot))?;
        if config.reload == Reload::Signal {
            let signal = match config.signal {
                ConfigSignal::SIGHUP => "SIGHUP",
                ConfigSignal::SIGUSR1 => "SIGUSR1",
                ConfigSignal::SIGUSR2 => "SIGUSR2",
            };
            for replica in self.replicas(Some(name)).await? {
                if replica.slot == slot && replica.running {
                    let options = KillContainerOptionsBuilder::new().signal(signal).build();
                    self.docker
                        .kill_container(&replica.id, Some(options))
                        .await
                        .map_err(request(format!("signalling a replica of `{name}`")))?;
                }
            }
        }
        Ok(true)
    }

    /// Sets the traffic weights of `service`'s slots (absent slots get 0).
    pub async fn route(&self, service: &str, weights: &[(Slot, u32)]) -> Result<(), ComposeError> {
        let replicas = self.replicas(Some(service)).await?;
        let mut routing = self.routing.lock().await;
        if let Some(routes) = routing.get_mut(service) {
            routes.weights = weights.iter().copied().collect();
        }
        self.persist(&routing)?;
        self.publish(&routing, service, &replicas).await
    }

    /// Takes `slot` of `service` out of traffic and removes its containers; the service's
    /// routers stop with its last slot.
    pub async fn retire(&self, service: &str, slot: Slot) -> Result<(), ComposeError> {
        let replicas = self.replicas(Some(service)).await?;
        let (leaving, staying): (Vec<Replica>, Vec<Replica>) = replicas.into_iter().partition(|r| r.slot == slot);
        let mut routing = self.routing.lock().await;
        if let Some(routes) = routing.get_mut(service) {
            routes.weights.remove(&slot);
            if staying.is_empty()
                && let Some(routes) = routing.remove(service)
            {
                for (_, (_, cancel)) in routes.routers {
                    cancel.cancel();
                }
            }
        }
        self.publish(&routing, service, &staying).await?;
        self.persist(&routing)?;
        drop(routing);
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(service.to_owned(), slot));
        self.remove(leaving.into_iter().map(|r| r.id).collect()).await;
        Ok(())
    }

    /// The health checks of `service`'s `slot`, one set per replica, aimed at its published
    /// ports (never at the stable port, which reaches the slot serving now).
    pub async fn checks(&self, service: &str, slot: Slot) -> Result<Vec<Check>, ComposeError> {
        let specs = self
            .checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(service.to_owned(), slot))
            .cloned()
            .unwrap_or_default();
        if let Some(exec) = specs.iter().find(|c| c.exec.is_some()) {
            return Err(ComposeError::ExecCheck {
                service: service.to_owned(),
                check: exec.name.as_str().to_owned(),
            });
        }
        let mut checks = Vec::new();
        for replica in self.replicas(Some(service)).await?.iter().filter(|r| r.slot == slot) {
            let resolve = |name: Option<&str>| {
                replica
                    .host_port(name)
                    .map(|port| SocketAddr::new([127, 0, 0, 1].into(), port))
            };
            for spec in &specs {
                let mut check = Check::from_spec(spec, resolve, &[]).ok_or_else(|| ComposeError::UnknownPort {
                    service: service.to_owned(),
                    check: spec.name.as_str().to_owned(),
                })?;
                check.name = format!("{}#{}", check.name, replica.number - 1);
                checks.push(check);
            }
        }
        Ok(checks)
    }

    /// Runs a one-off container of `service` (a migration) named after `job`, to completion
    /// within `timeout`; removed afterwards, its last lines quoted when it fails.
    pub async fn run_job(
        &self,
        service: &Service,
        job: &str,
        command: &[String],
        timeout: std::time::Duration,
    ) -> Result<(), ComposeError> {
        let name = service.name.as_str();
        let image = service
            .image
            .as_deref()
            .ok_or_else(|| ComposeError::NoImage(name.to_owned()))?;
        let env = variables(service)?;
        self.image(image).await?;
        let network = self.network().await?;
        let launch = Launch {
            project: &self.project,
            environment: &self.environment,
            service,
            slot: Slot::Blue,
            version: "",
            network: &network,
            config: None,
            env: &env,
        };
        let container: String = format!("{}-{name}-{job}", self.project)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        // A job container left by an agent that died while it ran.
        self.remove(vec![container.clone()]).await;
        let options = CreateContainerOptionsBuilder::new().name(&container).build();
        let created = self
            .docker
            .create_container(Some(options), launch.job(job, command))
            .await
            .map_err(request(format!("creating job container `{container}`")))?;
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(request(format!("starting job container `{container}`")))?;
        let mut waiting = self.docker.wait_container(&created.id, None);
        let outcome = match tokio::time::timeout(timeout, waiting.next()).await {
            Err(_) => Err(format!("`{job}` did not finish within {timeout:?}; it was stopped")),
            Ok(Some(Ok(answer))) if answer.status_code == 0 => Ok(()),
            Ok(Some(Ok(answer))) => Err(format!("`{job}` exited with {}", answer.status_code)),
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => {
                Err(format!("`{job}` exited with {code}"))
            }
            Ok(Some(Err(e))) => Err(format!("waiting for `{job}`: {e}")),
            Ok(None) => Err(format!("the engine stopped answering about `{job}`")),
        };
        drop(waiting);
        let outcome = match outcome {
            Ok(()) => Ok(()),
            Err(reason) => {
                let tail = self.tail(&created.id).await;
                Err(ComposeError::Job(if tail.is_empty() {
                    reason
                } else {
                    format!("{reason}; its last lines:\n{tail}")
                }))
            }
        };
        self.remove(vec![created.id]).await;
        outcome
    }

    /// The last lines a container wrote.
    async fn tail(&self, id: &str) -> String {
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).tail("20").build();
        let lines: Vec<String> = self
            .docker
            .logs(id, Some(options))
            .filter_map(|line| async move { line.ok().map(|l| l.to_string()) })
            .collect()
            .await;
        lines.concat().trim_end().to_owned()
    }

    /// What runs: per service, per slot.
    pub async fn observe(&self) -> Result<BTreeMap<String, BTreeMap<Slot, LiveSlot>>, ComposeError> {
        let replicas = self.replicas(None).await?;
        let routing = self.routing.lock().await;
        let mut live: BTreeMap<String, BTreeMap<Slot, LiveSlot>> = BTreeMap::new();
        for replica in &replicas {
            let weight = routing
                .get(&replica.service)
                .and_then(|r| r.weights.get(&replica.slot))
                .copied()
                .unwrap_or(0);
            let slot = live
                .entry(replica.service.clone())
                .or_default()
                .entry(replica.slot)
                .or_insert_with(|| LiveSlot {
                    version: replica.version.clone(),
                    replicas: Vec::new(),
                    weight,
                    config: replica.config.as_deref().map(|p| file_digest(Path::new(p))),
                    failed: 0,
                });
            slot.replicas.push(replica.state.clone());
            if replica.failed || replica.version != slot.version {
                slot.failed += 1;
            }
        }
        Ok(live)
    }

    /// Points the proxy at `service`'s `replicas` (the others as the engine lists them) with
    /// the weights: plumb's routers at once, or nginx's configuration rewritten and reloaded.
    async fn publish(
        &self,
        routing: &BTreeMap<String, Routes>,
        service: &str,
        replicas: &[Replica],
    ) -> Result<(), ComposeError> {
        let Some(nginx) = &self.nginx else {
            if let Some(routes) = routing.get(service) {
                reroute(routes, replicas, service);
            }
            return Ok(());
        };
        if routing.is_empty() {
            nginx.remove().await;
            return Ok(());
        }
        let others = self.replicas(None).await?;
        let everyone: Vec<&Replica> = others
            .iter()
            .filter(|r| r.service != service)
            .chain(replicas.iter())
            .collect();
        let mut upstreams = Vec::new();
        for (name, routes) in routing {
            for (port, stable) in &routes.stable {
                let servers = everyone
                    .iter()
                    .filter(|r| r.service == *name && r.running)
                    .filter_map(|r| {
                        let weight = routes.weights.get(&r.slot).copied().unwrap_or(0);
                        Some((r.address(port)?, r.slot.name().to_owned(), weight))
                    })
                    .collect();
                upstreams.push(Upstream {
                    service: name.clone(),
                    port: port.clone(),
                    stable: *stable,
                    servers,
                });
            }
        }
        std::fs::create_dir_all(self.dir.join("nginx")).map_err(|source| ComposeError::State {
            path: self.dir.join("nginx"),
            source,
        })?;
        let network = self.network().await?;
        nginx.update(&upstreams, &network).await?;
        Ok(())
    }

    /// `service`'s answers per slot since its counters were reset, from nginx's access log.
    async fn nginx_traffic(&self, nginx: &Nginx, service: &str) -> BTreeMap<String, SlotStats> {
        let since = self
            .counted_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .copied()
            .unwrap_or(0);
        let ports: BTreeSet<u16> = self
            .routing
            .lock()
            .await
            .get(service)
            .map(|r| r.stable.iter().map(|(_, p)| *p).collect())
            .unwrap_or_default();
        let Ok(replicas) = self.replicas(Some(service)).await else {
            return BTreeMap::new();
        };
        let slots: HashMap<SocketAddr, String> = replicas
            .iter()
            .flat_map(|r| {
                r.ports
                    .iter()
                    .filter_map(|p| Some((r.address(&p.name)?, r.slot.name().to_owned())))
                    .collect::<Vec<_>>()
            })
            .collect();
        super::nginx::count(&nginx.answers(since).await, &ports, &slots)
    }

    /// Writes the weights, so a new agent routes as this one did.
    fn persist(&self, routing: &BTreeMap<String, Routes>) -> Result<(), ComposeError> {
        let weights: BTreeMap<&String, &BTreeMap<Slot, u32>> = routing.iter().map(|(s, r)| (s, &r.weights)).collect();
        let path = self.dir.join("routes.json");
        let text = serde_json::to_string_pretty(&weights).expect("weights serialize");
        crate::target::workload::write_atomically(&path, &text).map_err(|source| ComposeError::State { path, source })
    }

    /// The routers of every port of `service`.
    async fn routers(&self, service: &str) -> Vec<Router> {
        let routing = self.routing.lock().await;
        routing
            .get(service)
            .map(|r| r.routers.values().map(|(router, _)| router.clone()).collect())
            .unwrap_or_default()
    }

    /// Stops the routers; the containers keep running for the next agent to adopt.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.routing.lock().await.clear();
    }
}

/// Points every port's router of `service` at its running replicas, with the weights.
fn reroute(routes: &Routes, replicas: &[Replica], service: &str) {
    for ((port, _), (router, _)) in &routes.routers {
        let backends = [Slot::Blue, Slot::Green]
            .into_iter()
            .filter_map(|slot| {
                let addresses: Vec<SocketAddr> = replicas
                    .iter()
                    .filter(|r| r.service == service && r.slot == slot && r.running)
                    .filter_map(|r| r.host_port(Some(port)))
                    .map(|p| SocketAddr::new([127, 0, 0, 1].into(), p))
                    .collect();
                let weight = routes.weights.get(&slot).copied();
                (weight.is_some() || !addresses.is_empty()).then(|| Backend {
                    slot: slot.name().to_owned(),
                    weight: weight.unwrap_or(0),
                    replicas: addresses,
                })
            })
            .collect();
        router.route(backends);
    }
}

fn compose_error(e: impl std::error::Error + Send + Sync + 'static) -> TargetError {
    TargetError {
        backend: "compose",
        source: Box::new(e),
    }
}

impl Target for ComposeRuntime {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            slots: true,
            weighted_traffic: true,
            jobs: true,
        }
    }

    fn deploy<'a>(
        &'a self,
        service: &'a Service,
        slot: Slot,
        version: &'a str,
    ) -> Pending<'a, Result<(), TargetError>> {
        Box::pin(async move {
            ComposeRuntime::deploy(self, service, slot, version)
                .await
                .map_err(compose_error)
        })
    }

    fn scale<'a>(&'a self, service: &'a Service, slot: Slot, replicas: u32) -> Pending<'a, Result<(), TargetError>> {
        Box::pin(async move {
            ComposeRuntime::scale(self, service, slot, replicas)
                .await
                .map_err(compose_error)
        })
    }

    fn reload<'a>(&'a self, service: &'a Service, slot: Slot) -> Pending<'a, Result<bool, TargetError>> {
        Box::pin(async move { ComposeRuntime::reload(self, service, slot).await.map_err(compose_error) })
    }

    fn route<'a>(&'a self, service: &'a str, weights: &'a [(Slot, u32)]) -> Pending<'a, ()> {
        Box::pin(async move {
            if let Err(e) = ComposeRuntime::route(self, service, weights).await {
                tracing::error!(environment = %self.environment, service, error = %e, "Cannot route.");
            }
        })
    }

    fn retire<'a>(&'a self, service: &'a str, slot: Slot) -> Pending<'a, ()> {
        Box::pin(async move {
            if let Err(e) = ComposeRuntime::retire(self, service, slot).await {
                tracing::error!(environment = %self.environment, service, error = %e, "Cannot retire a slot.");
            }
        })
    }

    fn checks<'a>(&'a self, service: &'a str, slot: Slot) -> Pending<'a, Result<Vec<Check>, TargetError>> {
        Box::pin(async move { ComposeRuntime::checks(self, service, slot).await.map_err(compose_error) })
    }

    fn traffic<'a>(&'a self, service: &'a str) -> Pending<'a, BTreeMap<String, SlotStats>> {
        Box::pin(async move {
            if let Some(nginx) = &self.nginx {
                return self.nginx_traffic(nginx, service).await;
            }
            let mut total: BTreeMap<String, SlotStats> = BTreeMap::new();
            for router in self.routers(service).await {
                for (slot, stats) in router.stats() {
                    total.entry(slot).or_default().add(&stats);
                }
            }
            total
        })
    }

    fn reset_traffic<'a>(&'a self, service: &'a str) -> Pending<'a, ()> {
        Box::pin(async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i32);
            self.counted_since
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(service.to_owned(), now);
            for router in self.routers(service).await {
                router.reset_stats();
            }
        })
    }

    fn run_job<'a>(
        &'a self,
        service: &'a Service,
        job: &'a str,
        command: &'a [String],
        timeout: std::time::Duration,
    ) -> Pending<'a, Result<(), TargetError>> {
        Box::pin(async move {
            ComposeRuntime::run_job(self, service, job, command, timeout)
                .await
                .map_err(compose_error)
        })
    }

    fn observe(&self) -> Pending<'_, Result<BTreeMap<String, BTreeMap<Slot, LiveSlot>>, TargetError>> {
        Box::pin(async move { ComposeRuntime::observe(self).await.map_err(compose_error) })
    }

    fn shutdown(&self) -> Pending<'_, ()> {
        Box::pin(ComposeRuntime::shutdown(self))
    }

    fn drift_bell(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        Some(self.bell.clone())
    }
}
