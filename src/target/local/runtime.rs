//! The local target's primitives over one environment: deploy a version of a service into a
//! slot (its replicas as supervised processes on ports of their own), route the service's stable
//! ports between slots by weight (one built-in router per port), retire a slot, resolve its
//! health checks, and observe what runs. Strategies are built on these, elsewhere.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::process::{Backoff, Replica, Spec, State};
use crate::health::Check;
use crate::router::{Backend, Router, SlotStats};
use crate::spec::model::Service;
use crate::spec::model::service::{Reload, Signal as ConfigSignal};
use crate::target::workload::{
    LiveSlot, Slot, WorkloadError, expand, file_digest, readiness_checks, variables, write_config,
};
use crate::target::{Capabilities, Pending, Slots, Target, TargetError};

/// The variable every process of a runtime carries: the runtime's working folder, unique per
/// state directory and environment. [`LocalRuntime::new`] sweeps what carries it.
const MARKER: &str = "PLUMB_RUN";

/// Why a primitive failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The service has no command to run (the local target runs commands, not images).
    #[error("service `{0}` has no `command`: the local target runs a command for each replica")]
    NoCommand(String),
    /// The service's variables or configuration file cannot be prepared.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// No free port could be found for a replica.
    #[error("no free port for a replica of `{service}`")]
    NoPort {
        /// The service.
        service: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
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
    /// The working directory cannot be made.
    #[error("service `{service}`: cannot make its working directory {path}")]
    Dir {
        /// The service.
        service: String,
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
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
}

struct SlotRuntime {
    version: String,
    /// The configuration file its replicas read, if any.
    config: Option<PathBuf>,
    replicas: Vec<ReplicaRuntime>,
    checks: Vec<crate::spec::model::service::HealthCheck>,
    /// The stable addresses this version declares, by port name.
    stable: Vec<(String, SocketAddr)>,
}

struct ReplicaRuntime {
    replica: Replica,
    /// Per declared port, in declaration order: its name, its stable number, the replica's own.
    ports: Vec<(String, u16, u16)>,
    /// The replica's environment (exec health checks see the same).
    env: Vec<(String, String)>,
}

impl ReplicaRuntime {
    /// The replica's own port for a port named (or numbered) as the service declares it;
    /// `None` names the first declared port.
    fn port(&self, name: Option<&str>) -> Option<u16> {
        match name {
            None => self.ports.first().map(|p| p.2),
            Some(name) => self
                .ports
                .iter()
                .find(|(n, stable, _)| n == name || name.parse() == Ok(*stable))
                .map(|p| p.2),
        }
    }
}

/// What the replicas of one version in one slot start from.
struct Launch {
    service: String,
    slot: Slot,
    command: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    config: Option<PathBuf>,
}

#[derive(Default)]
struct ServiceRuntime {
    /// One router per declared port and stable address: a port moved to another number is
    /// served at both until the last slot declaring the old one is retired.
    routers: BTreeMap<(String, SocketAddr), (Router, CancellationToken)>,
    slots: Slots<SlotRuntime>,
    weights: Slots<u32>,
}

/// The local runtime of one environment.
pub struct LocalRuntime {
    environment: String,
    address: IpAddr,
    port_offset: u16,
    logs: PathBuf,
    /// Slots' working directories.
    run: PathBuf,
    backoff: Backoff,
    services: Mutex<BTreeMap<String, ServiceRuntime>>,
    cancel: CancellationToken,
}

impl LocalRuntime {
    /// A runtime for `environment`, its routers on `address` (ports shifted by `port_offset`),
    /// its replicas' logs under `state/logs/<environment>/`.
    ///
    /// Processes an earlier runtime of the environment left running (its agent was killed) are
    /// killed first: the local target replaces, never adopts — its routers lived in the dead
    /// agent, so nothing was reaching them anyway, and the reconciler starts the environment
    /// again from the ledger.
    pub fn new(
        environment: &str,
        address: &str,
        port_offset: u16,
        state: &std::path::Path,
        backoff: Backoff,
    ) -> Result<LocalRuntime, RuntimeError> {
        let run = state.join("run").join(environment);
        let swept = super::process::sweep(MARKER, &run.display().to_string());
        if swept > 0 {
            tracing::warn!(
                environment,
                processes = swept,
                "Stopped processes a previous agent left running."
            );
        }
        Ok(LocalRuntime {
            environment: environment.to_owned(),
            address: address.parse().map_err(|_| RuntimeError::Address(address.to_owned()))?,
            port_offset,
            logs: state.join("logs").join(environment),
            run,
            backoff,
            services: Mutex::new(BTreeMap::new()),
            cancel: CancellationToken::new(),
        })
    }

    /// Where a replica's log lives.
    pub fn log_path(&self, service: &str, slot: Slot, replica: usize) -> PathBuf {
        self.logs.join(service).join(format!("{}-{replica}.log", slot.name()))
    }

    /// The working directory of `service`'s `slot` (unless the service names its own): its
    /// configuration file is written there.
    pub fn slot_dir(&self, service: &str, slot: Slot) -> PathBuf {
        self.run.join(service).join(slot.name())
    }

    /// The folder of a service's logs under a state directory.
    pub fn service_logs(state: &std::path::Path, environment: &str, service: &str) -> PathBuf {
        state.join("logs").join(environment).join(service)
    }

    /// Starts `version` of `service` in `slot` (replacing whatever ran there), without sending
    /// it traffic. The stable ports' routers are created on first use.
    pub async fn deploy(&self, service: &Service, slot: Slot, version: &str) -> Result<(), RuntimeError> {
        let launch = self.launch(service, slot, version).await?;
        let name = launch.service.clone();
        // The old replicas of the slot stop without the lock held: their grace periods must not
        // stall other services' routing.
        let old = self
            .services
            .lock()
            .await
            .get_mut(&name)
            .and_then(|r| r.slots.remove(&slot));
        if let Some(old) = old {
            stop_all(old.replicas).await;
        }
        let mut services = self.services.lock().await;
        let runtime = services.entry(name.clone()).or_default();
        let mut stable = Vec::new();
        for port in &service.ports {
            let addr = SocketAddr::new(self.address, port.port.saturating_add(self.port_offset));
            let key = (port.name.as_str().to_owned(), addr);
            if !runtime.routers.contains_key(&key) {
                let cancel = self.cancel.child_token();
                let router = Router::bind(addr, cancel.clone())
                    .await
                    .map_err(|e| RuntimeError::Bind {
                        service: name.clone(),
                        addr,
                        source: e.source,
                    })?;
                runtime.routers.insert(key.clone(), (router, cancel));
            }
            stable.push(key);
        }
        let mut replicas = Vec::new();
        let mut taken = std::collections::BTreeSet::new();
        for index in 0..service.replicas.max(1) as usize {
            replicas.push(self.start_replica(service, &launch, index, &mut taken)?);
        }
        runtime.slots.insert(
            slot,
            SlotRuntime {
                version: version.to_owned(),
                replicas,
                // Validation refuses liveness and startup checks on this target.
                checks: readiness_checks(service),
                stable,
                config: launch.config,
            },
        );
        // A new version takes traffic only when a strategy routes it there.
        runtime.weights.insert(slot, 0);
        reroute(runtime);
        Ok(())
    }

    /// Changes the number of `service`'s replicas in `slot` to `replicas`: new ones start beside
    /// the running ones and join the routers; surplus ones leave the routers, then stop.
    pub async fn scale(&self, service: &Service, slot: Slot, replicas: u32) -> Result<(), RuntimeError> {
        let name = service.name.as_str();
        let wanted = replicas.max(1) as usize;
        let mut services = self.services.lock().await;
        let Some(runtime) = services.get_mut(name) else {
            return Err(RuntimeError::NotRunning(name.to_owned()));
        };
        let Some(running) = runtime.slots.get_mut(&slot) else {
            return Err(RuntimeError::NotRunning(name.to_owned()));
        };
        let surplus = if running.replicas.len() < wanted {
            let launch = self.launch(service, slot, &running.version.clone()).await?;
            let mut taken = running
                .replicas
                .iter()
                .flat_map(|r| r.ports.iter().map(|p| p.2))
                .collect();
            for index in running.replicas.len()..wanted {
                let replica = self.start_replica(service, &launch, index, &mut taken)?;
                running.replicas.push(replica);
            }
            Vec::new()
        } else {
            running.replicas.split_off(wanted)
        };
        reroute(runtime);
        drop(services);
        stop_all(surplus).await;
        Ok(())
    }

    /// What every replica of `version` of `service` in `slot` starts from: its command, its
    /// environment, its working directory with the configuration file written there.
    async fn launch(&self, service: &Service, slot: Slot, version: &str) -> Result<Launch, RuntimeError> {
        let name = service.name.as_str().to_owned();
        let command = service
            .command
            .clone()
            .ok_or_else(|| RuntimeError::NoCommand(name.clone()))?;
        let mut env = variables(service)?;
        env.push(("PLUMB_ENVIRONMENT".to_owned(), self.environment.clone()));
        env.push((MARKER.to_owned(), self.run.display().to_string()));
        env.push(("PLUMB_SERVICE".to_owned(), name.clone()));
        env.push(("PLUMB_SLOT".to_owned(), slot.name().to_owned()));
        env.push(("PLUMB_VERSION".to_owned(), version.to_owned()));
        let dir = service
            .working_dir
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| self.slot_dir(&name, slot));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|source| RuntimeError::Dir {
                service: name.clone(),
                path: dir.clone(),
                source,
            })?;
        let config = write_config(service, &dir).await?;
        if let Some(path) = &config {
            env.push(("PLUMB_CONFIG".to_owned(), path.display().to_string()));
        }
        Ok(Launch {
            service: name,
            slot,
            command,
            env,
            dir,
            config,
        })
    }

    /// Starts replica `index` of a launch on ports not among `taken`.
    fn start_replica(
        &self,
        service: &Service,
        launch: &Launch,
        index: usize,
        taken: &mut std::collections::BTreeSet<u16>,
    ) -> Result<ReplicaRuntime, RuntimeError> {
        let mut ports = Vec::new();
        let mut env = launch.env.clone();
        for (i, port) in service.ports.iter().enumerate() {
            let free = free_port(taken).map_err(|source| RuntimeError::NoPort {
                service: launch.service.clone(),
                source,
            })?;
            if i == 0 {
                env.push(("PORT".to_owned(), free.to_string()));
            }
            let variable = port.name.as_str().to_uppercase().replace('-', "_");
            env.push((format!("PLUMB_PORT_{variable}"), free.to_string()));
            ports.push((port.name.as_str().to_owned(), port.port, free));
        }
        env.push(("PLUMB_REPLICA".to_owned(), index.to_string()));
        let spec = Spec {
            command: launch.command.iter().map(|arg| expand(arg, &env)).collect(),
            env: env.clone(),
            dir: Some(launch.dir.clone()),
            log: self.log_path(&launch.service, launch.slot, index),
        };
        Ok(ReplicaRuntime {
            replica: Replica::start(spec, self.backoff),
            ports,
            env,
        })
    }

    /// Runs a one-off job of `service` (a migration) with the service's environment, named
    /// `job` in its log file's name, to completion within `timeout`.
    pub async fn run_job(
        &self,
        service: &Service,
        job: &str,
        command: &[String],
        timeout: std::time::Duration,
    ) -> Result<String, String> {
        let name = service.name.as_str();
        let mut env = variables(service).map_err(|e| e.to_string())?;
        env.push(("PLUMB_ENVIRONMENT".to_owned(), self.environment.clone()));
        env.push((MARKER.to_owned(), self.run.display().to_string()));
        env.push(("PLUMB_SERVICE".to_owned(), name.to_owned()));
        let spec = Spec {
            command: command.iter().map(|arg| expand(arg, &env)).collect(),
            env,
            dir: service.working_dir.as_ref().map(PathBuf::from),
            log: self.logs.join(name).join(format!("{job}.log")),
        };
        super::process::run_job(&spec, timeout).await
    }

    /// A configuration-only change: rewrites `service`'s configuration file in `slot` and, as
    /// the service declares, signals its replicas (`signal`) or lets them notice (`watch`).
    /// Returns `false` when the service reloads by `restart`: the caller rolls it out instead.
    pub async fn reload(&self, service: &Service, slot: Slot) -> Result<bool, RuntimeError> {
        let name = service.name.as_str();
        let Some(config) = &service.config else {
            return Ok(true);
        };
        if config.reload == Reload::Restart {
            return Ok(false);
        }
        let dir = service
            .working_dir
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| self.slot_dir(name, slot));
        write_config(service, &dir).await?;
        if config.reload == Reload::Signal {
            let signal = match config.signal {
                ConfigSignal::SIGHUP => libc::SIGHUP,
                ConfigSignal::SIGUSR1 => libc::SIGUSR1,
                ConfigSignal::SIGUSR2 => libc::SIGUSR2,
            };
            let services = self.services.lock().await;
            for replica in services
                .get(name)
                .and_then(|s| s.slots.get(&slot))
                .into_iter()
                .flat_map(|s| &s.replicas)
            {
                if let State::Running { pid, .. } = replica.replica.state() {
                    // SAFETY: kill(2) to a process this runtime started and still supervises.
                    unsafe { libc::kill(pid as i32, signal) };
                }
            }
        }
        Ok(true)
    }

    /// Sets the traffic weights of `service`'s slots (absent slots get 0); atomic per port.
    pub async fn route(&self, service: &str, weights: &[(Slot, u32)]) {
        let mut services = self.services.lock().await;
        if let Some(runtime) = services.get_mut(service) {
            runtime.weights = weights.iter().copied().collect();
            reroute(runtime);
        }
    }

    /// Takes `slot` of `service` out of traffic and stops its replicas.
    pub async fn retire(&self, service: &str, slot: Slot) {
        let mut services = self.services.lock().await;
        let Some(runtime) = services.get_mut(service) else {
            return;
        };
        runtime.weights.remove(&slot);
        let old = runtime.slots.remove(&slot);
        // Stable addresses no remaining version declares stop being served.
        let declared: std::collections::BTreeSet<&(String, SocketAddr)> =
            runtime.slots.values().flat_map(|s| s.stable.iter()).collect();
        let unused: Vec<(String, SocketAddr)> = runtime
            .routers
            .keys()
            .filter(|k| !declared.contains(k))
            .cloned()
            .collect();
        for key in unused {
            if let Some((_, cancel)) = runtime.routers.remove(&key) {
                cancel.cancel();
            }
        }
        reroute(runtime);
        if runtime.slots.is_empty() {
            services.remove(service);
        }
        drop(services);
        if let Some(old) = old {
            stop_all_and_forget(old).await;
        }
    }

    /// The health checks of `service`'s `slot`, one set per replica, aimed at its own ports
    /// (never at the stable port, which would reach the slot serving now).
    pub async fn checks(&self, service: &str, slot: Slot) -> Result<Vec<Check>, RuntimeError> {
        let services = self.services.lock().await;
        let Some(runtime) = services.get(service).and_then(|s| s.slots.get(&slot)) else {
            return Ok(Vec::new());
        };
        let mut checks = Vec::new();
        for (index, replica) in runtime.replicas.iter().enumerate() {
            let resolve = |name: Option<&str>| {
                replica
                    .port(name)
                    .map(|port| SocketAddr::new([127, 0, 0, 1].into(), port))
            };
            for spec in &runtime.checks {
                let mut check =
                    Check::from_spec(spec, resolve, &replica.env).ok_or_else(|| RuntimeError::UnknownPort {
                        service: service.to_owned(),
                        check: spec.name.as_str().to_owned(),
                    })?;
                check.name = format!("{}#{index}", check.name);
                checks.push(check);
            }
        }
        Ok(checks)
    }

    /// What runs: per service, per slot.
    pub async fn observe(&self) -> BTreeMap<String, Slots<LiveSlot>> {
        let services = self.services.lock().await;
        let mut configs = Vec::new();
        let mut live: BTreeMap<String, Slots<LiveSlot>> = services
            .iter()
            .map(|(name, runtime)| {
                let slots = runtime
                    .slots
                    .iter()
                    .map(|(slot, s)| {
                        let states: Vec<State> = s.replicas.iter().map(|r| r.replica.state()).collect();
                        let weight = runtime.weights.get(slot).copied().unwrap_or(0);
                        if let Some(path) = &s.config {
                            configs.push((name.clone(), *slot, path.clone()));
                        }
                        (
                            *slot,
                            LiveSlot {
                                version: s.version.clone(),
                                replicas: states.iter().map(describe).collect(),
                                weight,
                                config: None,
                                failed: states.iter().filter(|s| matches!(s, State::Failed(_))).count(),
                                taken: Vec::new(),
                                restarts: 0,
                            },
                        )
                    })
                    .collect();
                (name.clone(), slots)
            })
            .collect();
        drop(services);
        for (service, slot, path) in configs {
            let digest = file_digest(&path).await;
            if let Some(live) = live.get_mut(&service).and_then(|s| s.get_mut(&slot)) {
                live.config = Some(digest);
            }
        }
        live
    }

    /// The routers of every port of `service`.
    pub async fn routers(&self, service: &str) -> Vec<Router> {
        let services = self.services.lock().await;
        services
            .get(service)
            .map(|s| s.routers.values().map(|(router, _)| router.clone()).collect())
            .unwrap_or_default()
    }

    /// The router of `service`'s port `port`, for traffic counters.
    pub async fn router(&self, service: &str, port: &str) -> Option<Router> {
        let services = self.services.lock().await;
        let routers = &services.get(service)?.routers;
        routers
            .iter()
            .find(|((name, _), _)| name == port)
            .map(|(_, (router, _))| router.clone())
    }

    /// Stops every replica and router.
    pub async fn shutdown(&self) {
        let mut services = self.services.lock().await;
        for (_, mut runtime) in std::mem::take(&mut *services) {
            for (_, slot) in std::mem::take(&mut runtime.slots) {
                stop_all_and_forget(slot).await;
            }
        }
        self.cancel.cancel();
    }
}

/// Stops `slot`'s replicas and removes the configuration file they read: a file holding
/// decrypted values does not outlive the replicas that need it (the next start writes it again).
async fn stop_all_and_forget(slot: SlotRuntime) {
    stop_all(slot.replicas).await;
    if let Some(config) = slot.config {
        crate::target::workload::forget_config(&config).await;
    }
}

fn describe(state: &State) -> String {
    match state {
        State::Running { restarts, .. } if *restarts > 0 => format!("running (restarted {restarts}×)"),
        State::Running { .. } => "running".to_owned(),
        State::Backoff { exit, .. } => format!("restarting after {exit}"),
        State::Failed(reason) => format!("failed: {reason}"),
        State::Stopped => "stopped".to_owned(),
    }
}

/// Points every port's router at the slots' replicas with the current weights.
fn reroute(runtime: &ServiceRuntime) {
    for ((port, _), (router, _)) in &runtime.routers {
        let backends = runtime
            .slots
            .iter()
            .map(|(slot, s)| Backend {
                slot: slot.name().to_owned(),
                weight: runtime.weights.get(slot).copied().unwrap_or(0),
                replicas: s
                    .replicas
                    .iter()
                    .filter_map(|r| r.port(Some(port)))
                    .map(|p| SocketAddr::new([127, 0, 0, 1].into(), p))
                    .collect(),
            })
            .collect();
        router.route(backends);
    }
}

/// Stops replicas concurrently (each may take its grace period).
async fn stop_all(replicas: Vec<ReplicaRuntime>) {
    let stopping: Vec<_> = replicas.into_iter().map(|r| tokio::spawn(r.replica.stop())).collect();
    for stop in stopping {
        let _ = stop.await;
    }
}

/// A port nobody listens on now (the process binds it right after), not among `taken` (the
/// ports already handed out in this deploy).
fn free_port(taken: &mut std::collections::BTreeSet<u16>) -> std::io::Result<u16> {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if taken.insert(port) {
            return Ok(port);
        }
    }
}

fn local_error(e: impl std::error::Error + Send + Sync + 'static) -> TargetError {
    TargetError {
        backend: "local",
        source: Box::new(e),
    }
}

/// A job's failure, as an error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct JobFailed(String);

impl Target for LocalRuntime {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            slots: true,
            weighted_traffic: true,
            jobs: true,
            // plumb's router (or nginx's access log) sees every answer.
            counts_answers: true,
            in_place: false,
        }
    }

    fn deploy<'a>(
        &'a self,
        service: &'a Service,
        slot: Slot,
        version: &'a str,
        _commit: &'a str,
    ) -> Pending<'a, Result<(), TargetError>> {
        Box::pin(async move {
            LocalRuntime::deploy(self, service, slot, version)
                .await
                .map_err(local_error)
        })
    }

    fn scale<'a>(&'a self, service: &'a Service, slot: Slot, replicas: u32) -> Pending<'a, Result<(), TargetError>> {
        Box::pin(async move {
            LocalRuntime::scale(self, service, slot, replicas)
                .await
                .map_err(local_error)
        })
    }

    fn reload<'a>(&'a self, service: &'a Service, slot: Slot) -> Pending<'a, Result<bool, TargetError>> {
        Box::pin(async move { LocalRuntime::reload(self, service, slot).await.map_err(local_error) })
    }

    fn route<'a>(&'a self, service: &'a str, weights: &'a [(Slot, u32)]) -> Pending<'a, Result<(), TargetError>> {
        // The routers are the agent's own: setting their weights cannot fail.
        Box::pin(async move {
            LocalRuntime::route(self, service, weights).await;
            Ok(())
        })
    }

    fn retire<'a>(&'a self, service: &'a str, slot: Slot) -> Pending<'a, Result<(), TargetError>> {
        Box::pin(async move {
            LocalRuntime::retire(self, service, slot).await;
            Ok(())
        })
    }

    fn checks<'a>(&'a self, service: &'a str, slot: Slot) -> Pending<'a, Result<Vec<Check>, TargetError>> {
        Box::pin(async move { LocalRuntime::checks(self, service, slot).await.map_err(local_error) })
    }

    fn traffic<'a>(&'a self, service: &'a str) -> Pending<'a, BTreeMap<String, SlotStats>> {
        Box::pin(async move { crate::router::total(&self.routers(service).await) })
    }

    fn reset_traffic<'a>(&'a self, service: &'a str) -> Pending<'a, ()> {
        Box::pin(async move {
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
    ) -> Pending<'a, Result<String, TargetError>> {
        Box::pin(async move {
            LocalRuntime::run_job(self, service, job, command, timeout)
                .await
                .map_err(|e| local_error(JobFailed(e)))
        })
    }

    fn observe(&self) -> Pending<'_, Result<BTreeMap<String, Slots<LiveSlot>>, TargetError>> {
        Box::pin(async move { Ok(LocalRuntime::observe(self).await) })
    }

    fn shutdown(&self) -> Pending<'_, ()> {
        Box::pin(LocalRuntime::shutdown(self))
    }
}
