//! The compose target's primitives over one environment, on a Docker Engine: a slot's replicas
//! are containers of the environment's Compose project, published on loopback; each service's
//! stable ports are served by plumb's router, which splits traffic between the slots by weight.
//!
//! The engine is the source of truth for what runs: every observation lists the project's
//! containers. Containers outlive the agent; a new agent adopts them — it rebinds the routers
//! from the containers' labels and takes the weights it last set from `routes.json`.

mod build;
mod definitions;
mod objects;
mod target;
mod traffic;

use traffic::reroute;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::KillContainerOptionsBuilder;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::container::{Launch, Replica, write_files};
use super::engine::{self, EngineError, request};
use super::nginx::{Nginx, NginxError};
use crate::health::Check;
use crate::router::Router;
use crate::spec::model::Service;
use crate::spec::model::environment::{ComposeTarget, Proxy};
use crate::spec::model::service::{HealthCheck, Reload, Signal as ConfigSignal};
use crate::target::Slots;
use crate::target::workload::{LiveSlot, Slot, WorkloadError, file_digest, variables, write_config};

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
    weights: Slots<u32>,
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
        let weights: BTreeMap<String, Slots<u32>> = tokio::fs::read(self.dir.join("routes.json"))
            .await
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
        // What the new version needs is made before the old one goes: a build that fails
        // leaves it running.
        self.image_for(service, image).await?;
        self.volumes(service).await?;
        self.remove(old).await;
        let dir = self.slot_dir(name, slot);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|source| ComposeError::State {
                path: dir.clone(),
                source,
            })?;
        let config = write_config(service, &dir).await?;
        write_files(service, &dir).await.map_err(|source| ComposeError::State {
            path: dir.join("files"),
            source,
        })?;
        let launch = Launch {
            project: &self.project,
            environment: &self.environment,
            service,
            slot,
            version,
            config: config
                .as_ref()
                .and_then(|path| Some((dir.as_path(), path.file_name()?.to_string_lossy().into_owned()))),
            env: &env,
            files: Some(&dir),
            address: self.address,
            port_offset: self.port_offset,
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
        self.checks.lock().unwrap_or_else(|e| e.into_inner()).insert(
            (name.to_owned(), slot),
            crate::target::workload::readiness_checks(service),
        );
        // A new version takes traffic only when a strategy routes it there.
        routing.entry(name.to_owned()).or_default().weights.insert(slot, 0);
        self.persist(&routing).await?;
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
            let dir = self.slot_dir(name, slot);
            let file = service.config.as_ref().map(|c| c.file.clone());
            let launch = Launch {
                project: &self.project,
                environment: &self.environment,
                service,
                slot,
                version: &version,
                config: file.map(|file| (dir.as_path(), file)),
                env: &env,
                files: Some(&dir),
                address: self.address,
                port_offset: self.port_offset,
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
        write_config(service, &self.slot_dir(name, slot)).await?;
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
        self.persist(&routing).await?;
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
        self.persist(&routing).await?;
        drop(routing);
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(service.to_owned(), slot));
        // The configuration files the leaving containers read go with them: a file holding
        // decrypted values does not outlive them.
        let files: Vec<String> = leaving.iter().filter_map(|r| r.config.clone()).collect();
        self.remove(leaving.into_iter().map(|r| r.id).collect()).await;
        for file in files {
            crate::target::workload::forget_config(Path::new(&file)).await;
        }
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

    /// What runs: per service, per slot.
    pub async fn observe(&self) -> Result<BTreeMap<String, Slots<LiveSlot>>, ComposeError> {
        let replicas = self.replicas(None).await?;
        let routing = self.routing.lock().await;
        let mut live: BTreeMap<String, Slots<LiveSlot>> = BTreeMap::new();
        let mut configs = Vec::new();
        for replica in &replicas {
            let weight = routing
                .get(&replica.service)
                .and_then(|r| r.weights.get(&replica.slot))
                .copied()
                .unwrap_or(0);
            let slot = live
                .entry(replica.service.clone())
                .or_default()
                .or_insert_with(replica.slot, || {
                    if let Some(path) = &replica.config {
                        configs.push((replica.service.clone(), replica.slot, path.clone()));
                    }
                    LiveSlot {
                        version: replica.version.clone(),
                        replicas: Vec::new(),
                        weight,
                        config: None,
                        failed: 0,
                        taken: Vec::new(),
                        restarts: 0,
                    }
                });
            slot.replicas.push(replica.state.clone());
            if replica.failed || replica.version != slot.version {
                slot.failed += 1;
            }
        }
        drop(routing);
        for (service, slot, path) in configs {
            let digest = file_digest(Path::new(&path)).await;
            if let Some(live) = live.get_mut(&service).and_then(|s| s.get_mut(&slot)) {
                live.config = Some(digest);
            }
        }
        Ok(live)
    }

    /// Writes the weights, so a new agent routes as this one did.
    async fn persist(&self, routing: &BTreeMap<String, Routes>) -> Result<(), ComposeError> {
        let weights: BTreeMap<&String, &Slots<u32>> = routing.iter().map(|(s, r)| (s, &r.weights)).collect();
        let path = self.dir.join("routes.json");
        let text = serde_json::to_string_pretty(&weights).expect("weights serialize");
        crate::target::workload::save(&path, text, false)
            .await
            .map_err(|source| ComposeError::State { path, source })
    }

    /// Stops the routers; the containers keep running for the next agent to adopt.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.routing.lock().await.clear();
    }
}
