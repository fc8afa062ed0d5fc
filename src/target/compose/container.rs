//! A replica as a container: the labels plumb puts on it (its own, and Compose's so `docker
//! compose ps` lists it), the body it is created from, and what an engine's listing says of it.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, DeviceMapping, HealthConfig, HostConfig,
    HostConfigLogConfig, PortBinding, ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};

use crate::spec::model::Service;
use crate::spec::model::objects::{FolderFile, RepositoryFolder};
use crate::spec::model::scalar::is_encrypted;
use crate::spec::model::service::{Amounts, Container, Protocol, RepositoryFile, Restart};
use crate::target::workload::{Slot, expand};

/// Compose's project label.
pub const PROJECT: &str = "com.docker.compose.project";
/// Compose's service label.
pub const SERVICE: &str = "com.docker.compose.service";
/// Compose's replica number label (from 1).
const NUMBER: &str = "com.docker.compose.container-number";
/// Compose's hash of a service's definition (`docker compose ps` lists only containers that
/// carry one): plumb's version digest.
const CONFIG_HASH: &str = "com.docker.compose.config-hash";
/// Compose's label for one-off containers (`run`).
const ONEOFF: &str = "com.docker.compose.oneoff";
/// The environment a container belongs to.
pub const ENVIRONMENT: &str = "plumb.environment";
/// The slot of a replica.
const SLOT: &str = "plumb.slot";
/// The version a replica runs.
const VERSION: &str = "plumb.version";
/// A replica's ports: `name=stable/container,…`.
const PORTS: &str = "plumb.ports";
/// The configuration file on the agent's host a replica reads, when it has one.
const CONFIG: &str = "plumb.config";
/// A one-off job's name.
pub const JOB: &str = "plumb.job";

/// Where a container reads its configuration file.
const CONFIG_DIR: &str = "/etc/plumb/config";

/// A declared port: its name, the stable port (the router's), the container's own, and where
/// a replica publishes it on loopback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMap {
    /// The port's name.
    pub name: String,
    /// The stable port clients use.
    pub stable: u16,
    /// The port the process listens on inside the container.
    pub container: u16,
    /// The replica's port on the host's loopback, chosen when it is created and kept across
    /// its restarts (so health checks aimed at it stay right).
    pub host: Option<u16>,
}

/// What one replica starts from.
pub struct Launch<'a> {
    /// The Compose project.
    pub project: &'a str,
    /// The environment.
    pub environment: &'a str,
    /// The service.
    pub service: &'a Service,
    /// The slot and the version in it.
    pub slot: Slot,
    /// The version's identifier.
    pub version: &'a str,
    /// The folder holding the configuration file on the agent's host, and the file's name.
    pub config: Option<(&'a std::path::Path, String)>,
    /// The service's variables.
    pub env: &'a [(String, String)],
    /// The environment's address, where UDP ports are published.
    pub address: std::net::IpAddr,
    /// Added to each UDP port published there.
    pub port_offset: u16,
    /// The folder on the agent's host where the service's repository files are written
    /// ([`write_files`]).
    pub files: Option<&'a std::path::Path>,
}

/// Where each of `service`'s repository files is written under `dir`: `files/<n>-<name>`.
pub fn file_paths<'a>(service: &'a Service, dir: &std::path::Path) -> Vec<(std::path::PathBuf, &'a RepositoryFile)> {
    service
        .container
        .iter()
        .flat_map(|c| c.files.iter().enumerate())
        .map(|(index, file)| {
            let name = file.target.rsplit('/').next().unwrap_or("file");
            (dir.join("files").join(format!("{index}-{name}")), file)
        })
        .collect()
}

/// Where each of `service`'s repository folders is written under `dir`: `files/d<n>-<name>`.
pub fn folder_paths<'a>(
    service: &'a Service,
    dir: &std::path::Path,
) -> Vec<(std::path::PathBuf, &'a RepositoryFolder)> {
    service
        .container
        .iter()
        .flat_map(|c| c.folders.iter().enumerate())
        .map(|(index, folder)| {
            let name = folder
                .target
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("folder");
            (dir.join("files").join(format!("d{index}-{name}")), folder)
        })
        .collect()
}

/// The name on the engine of `service`'s volume `short`: an external one's own, the name its
/// definition gives, else `<project>_<short>`.
pub fn volume_name(service: &Service, project: &str, short: &str) -> String {
    let Some(container) = &service.container else {
        return format!("{project}_{short}");
    };
    if container.external_volumes.iter().any(|v| v == short) {
        return short.to_owned();
    }
    container
        .volume_definitions
        .get(short)
        .and_then(|d| d.name.clone())
        .unwrap_or_else(|| format!("{project}_{short}"))
}

/// Writes `service`'s repository files and folders under `dir`, each replaced atomically, an
/// encrypted content opened. They are readable by every user (a container's program may run as
/// any), in a folder only the agent's user may enter: on the host, a secret is the agent's alone.
pub async fn write_files(service: &Service, dir: &std::path::Path) -> std::io::Result<()> {
    let paths = file_paths(service, dir);
    let folders: Vec<_> = folder_paths(service, dir)
        .into_iter()
        .map(|(path, folder)| (path, folder.files.clone()))
        .collect();
    if paths.is_empty() && folders.is_empty() {
        return Ok(());
    }
    let folder = dir.join("files");
    crate::blocking::io(move || {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&folder)?;
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700))
    })
    .await?;
    for (path, file) in paths {
        let content = if is_encrypted(&file.content) {
            match service.opened.get(&file.content) {
                Some(clear) => clear.expose().to_owned(),
                None => {
                    return Err(std::io::Error::other(format!(
                        "the content of {} is encrypted and was not opened (no key for it)",
                        file.target
                    )));
                }
            }
        } else {
            file.content.clone()
        };
        let bytes = match file.encoding {
            None => content.into_bytes(),
            Some(_) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(content)
                    .map_err(|e| std::io::Error::other(format!("the content of {}: {e}", file.target)))?
            }
        };
        crate::target::workload::save(&path, bytes, false).await?;
        if file.mode.is_some() || file.uid.is_some() || file.gid.is_some() {
            let (mode, uid, gid) = (file.mode, file.uid, file.gid);
            let path = path.clone();
            crate::blocking::io(move || {
                use std::os::unix::fs::PermissionsExt;
                std::os::unix::fs::chown(&path, uid, gid)?;
                if let Some(mode) = mode {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
                }
                Ok(())
            })
            .await
            .map_err(|e| std::io::Error::other(format!("setting the owner and mode of {}: {e}", file.target)))?;
        }
    }
    for (path, files) in folders {
        crate::blocking::io(move || write_folder(&path, &files)).await?;
    }
    Ok(())
}

/// Writes a folder's files as a new folder beside `path`, then puts it in `path`'s place: a
/// container started from the old one keeps what it mounted.
fn write_folder(path: &std::path::Path, files: &[FolderFile]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let fresh = path.with_extension(format!("new{}", std::process::id()));
    let old = path.with_extension(format!("old{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&fresh);
    std::fs::create_dir_all(&fresh)?;
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755))?;
    for file in files {
        // Paths come from the repository's tree: no `..`, no absolute path.
        if file.path.split('/').any(|part| part == ".." || part.is_empty()) {
            return Err(std::io::Error::other(format!(
                "`{}` is not a path inside a folder",
                file.path
            )));
        }
        let bytes = file
            .bytes()
            .ok_or_else(|| std::io::Error::other(format!("the content of `{}` is not base64", file.path)))?;
        let target = fresh.join(&file.path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))?;
        }
        std::fs::write(&target, bytes)?;
        let mode = if file.executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
    }
    if path.exists() {
        std::fs::rename(path, &old)?;
    }
    std::fs::rename(&fresh, path)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

impl Launch<'_> {
    /// The container's name: `<project>-<service>-<slot>-<n>`, as Compose names its own.
    /// A service that names its container (`container.containerName`, one replica with the
    /// recreate strategy) gets that name.
    pub fn name(&self, index: usize) -> String {
        if let Some(name) = self.service.container.as_ref().and_then(|c| c.container_name.as_ref()) {
            return name.clone();
        }
        format!(
            "{}-{}-{}-{}",
            self.project,
            self.service.name.as_str(),
            self.slot.name(),
            index + 1
        )
    }

    /// The declared ports.
    pub fn ports(&self) -> Vec<PortMap> {
        ports_of(self.service)
    }

    /// The container to create for replica `index`: its ports published on loopback (the
    /// router reaches them there), its configuration folder mounted read-only, restarted by
    /// the engine when it exits (as the local target supervises), under an init process.
    pub fn body(&self, index: usize) -> ContainerCreateBody {
        let mut ports = self.ports();
        for port in &mut ports {
            port.host = free_port();
        }
        let mut env = self.env.to_vec();
        env.push(("PLUMB_ENVIRONMENT".to_owned(), self.environment.to_owned()));
        env.push(("PLUMB_SERVICE".to_owned(), self.service.name.as_str().to_owned()));
        env.push(("PLUMB_SLOT".to_owned(), self.slot.name().to_owned()));
        env.push(("PLUMB_VERSION".to_owned(), self.version.to_owned()));
        env.push(("PLUMB_REPLICA".to_owned(), index.to_string()));
        // The replica is reached through its published ports, not on its own loopback.
        env.push(("HOST".to_owned(), "0.0.0.0".to_owned()));
        for (i, port) in ports.iter().enumerate() {
            if i == 0 {
                env.push(("PORT".to_owned(), port.container.to_string()));
            }
            let variable = port.name.to_uppercase().replace('-', "_");
            env.push((format!("PLUMB_PORT_{variable}"), port.container.to_string()));
        }
        let mut labels = self.labels();
        labels.insert(NUMBER.to_owned(), (index + 1).to_string());
        labels.insert(ONEOFF.to_owned(), "False".to_owned());
        labels.insert(SLOT.to_owned(), self.slot.name().to_owned());
        labels.insert(VERSION.to_owned(), self.version.to_owned());
        labels.insert(CONFIG_HASH.to_owned(), self.version.to_owned());
        labels.insert(
            PORTS.to_owned(),
            ports
                .iter()
                .map(|p| match p.host {
                    Some(host) => format!("{}={}/{}/{host}", p.name, p.stable, p.container),
                    None => format!("{}={}/{}", p.name, p.stable, p.container),
                })
                .collect::<Vec<_>>()
                .join(","),
        );
        let mut binds = self.volumes();
        binds.extend(self.file_binds());
        if let Some((dir, file)) = &self.config {
            env.push(("PLUMB_CONFIG".to_owned(), format!("{CONFIG_DIR}/{file}")));
            binds.push(format!("{}:{CONFIG_DIR}:ro", dir.display()));
            labels.insert(CONFIG.to_owned(), dir.join(file).display().to_string());
        }
        let mut bindings = ports
            .iter()
            .map(|p| {
                let binding = PortBinding {
                    host_ip: Some("127.0.0.1".to_owned()),
                    host_port: Some(p.host.map(|h| h.to_string()).unwrap_or_default()),
                };
                (format!("{}/tcp", p.container), Some(vec![binding]))
            })
            .collect::<HashMap<_, _>>();
        let settings = self.service.container.clone().unwrap_or_default();
        let mut exposed: Vec<String> = ports.iter().map(|p| format!("{}/tcp", p.container)).collect();
        // UDP ports (one replica replaced in place: validation sees to it) are published by the
        // container on the environment's address, at the stable port.
        for port in self.service.ports.iter().filter(|p| p.protocol == Protocol::UDP) {
            let inside = format!("{}/udp", port.target_port.unwrap_or(port.port));
            let binding = PortBinding {
                host_ip: Some(self.address.to_string()),
                host_port: Some(port.port.saturating_add(self.port_offset).to_string()),
            };
            bindings.insert(inside.clone(), Some(vec![binding]));
            exposed.push(inside);
        }
        exposed.extend(
            settings
                .expose
                .iter()
                .map(|e| if e.contains('/') { e.clone() } else { format!("{e}/tcp") }),
        );
        ContainerCreateBody {
            image: self.service.image.clone(),
            cmd: self
                .service
                .command
                .as_ref()
                .map(|command| command.iter().map(|arg| expand(arg, &env)).collect()),
            entrypoint: settings.entrypoint.clone(),
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            exposed_ports: Some(exposed),
            volumes: self.anonymous_volumes(),
            healthcheck: self.healthcheck(),
            user: settings.user.clone(),
            tty: settings.tty.then_some(true),
            open_stdin: settings.stdin_open.then_some(true),
            hostname: settings.hostname.clone(),
            working_dir: settings.working_dir.clone(),
            stop_signal: settings.stop_signal.clone(),
            stop_timeout: Some(settings.stop_grace_period.map_or(10, |d| d.0.as_secs() as i64)),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                binds: (!binds.is_empty()).then_some(binds),
                ..self.host_config(&settings)
            }),

            ..ContainerCreateBody::default()
        }
    }

    /// The engine settings every container of the service shares (replicas and one-off jobs).
    fn host_config(&self, settings: &Container) -> HostConfig {
        let restart = match settings.restart.unwrap_or(Restart::UnlessStopped) {
            Restart::No => RestartPolicyNameEnum::NO,
            Restart::Always => RestartPolicyNameEnum::ALWAYS,
            Restart::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
            Restart::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
        };
        HostConfig {
            init: Some(settings.init.unwrap_or(true)),
            // Validation refuses what the engine cannot hold (a CPU request).
            nano_cpus: self.limit(|a| a.cpu.as_ref()?.nano_cpus(), false),
            memory: self.limit(|a| a.memory.as_ref()?.bytes(), false),
            memory_reservation: self.limit(|a| a.memory.as_ref()?.bytes(), true),
            restart_policy: Some(RestartPolicy {
                name: Some(restart),
                maximum_retry_count: settings.restart_retries.map(i64::from),
            }),
            readonly_rootfs: settings.read_only.then_some(true),
            tmpfs: (!settings.tmpfs.is_empty()).then(|| {
                settings
                    .tmpfs
                    .iter()
                    .map(|t| match t.split_once(':') {
                        Some((path, options)) => (path.to_owned(), options.to_owned()),
                        None => (t.clone(), String::new()),
                    })
                    .collect()
            }),
            ulimits: (!settings.ulimits.is_empty()).then(|| {
                settings
                    .ulimits
                    .iter()
                    .map(|(name, limit)| ResourcesUlimits {
                        name: Some(name.clone()),
                        soft: Some(limit.soft),
                        hard: Some(limit.hard),
                    })
                    .collect()
            }),
            sysctls: (!settings.sysctls.is_empty())
                .then(|| settings.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            extra_hosts: (!settings.extra_hosts.is_empty()).then(|| settings.extra_hosts.clone()),
            dns: (!settings.dns.is_empty()).then(|| settings.dns.clone()),
            log_config: settings.logging.as_ref().map(|logging| HostConfigLogConfig {
                typ: Some(logging.driver.clone()),
                config: Some(logging.options.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            }),
            cap_add: (!settings.cap_add.is_empty()).then(|| capabilities(&settings.cap_add)),
            cap_drop: (!settings.cap_drop.is_empty()).then(|| capabilities(&settings.cap_drop)),
            privileged: settings.privileged.then_some(true),
            devices: (!settings.devices.is_empty()).then(|| settings.devices.iter().map(|d| device(d)).collect()),
            pid_mode: settings.pid.clone(),
            network_mode: settings.network_mode.clone(),
            userns_mode: settings.userns_mode.clone(),
            ipc_mode: settings.ipc.clone(),
            security_opt: (!settings.security_opt.is_empty()).then(|| settings.security_opt.clone()),
            shm_size: settings
                .shm_size
                .as_ref()
                .and_then(|q| q.bytes())
                .and_then(|n| i64::try_from(n).ok()),
            ..HostConfig::default()
        }
    }

    /// A one-off container running `command` to completion (a migration), named `job`.
    pub fn job(&self, job: &str, command: &[String]) -> ContainerCreateBody {
        let mut env = self.env.to_vec();
        env.push(("PLUMB_ENVIRONMENT".to_owned(), self.environment.to_owned()));
        env.push(("PLUMB_SERVICE".to_owned(), self.service.name.as_str().to_owned()));
        let mut labels = self.labels();
        labels.insert(ONEOFF.to_owned(), "True".to_owned());
        labels.insert(JOB.to_owned(), job.to_owned());
        let mut binds = self.volumes();
        binds.extend(self.file_binds());
        let settings = self.service.container.clone().unwrap_or_default();
        ContainerCreateBody {
            image: self.service.image.clone(),
            // No command: the image's own.
            cmd: (!command.is_empty()).then(|| command.iter().map(|arg| expand(arg, &env)).collect()),
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            entrypoint: settings.entrypoint.clone(),
            user: settings.user.clone(),
            working_dir: settings.working_dir.clone(),
            host_config: Some(HostConfig {
                binds: (!binds.is_empty()).then_some(binds),
                // A job runs once: the engine does not restart it.
                restart_policy: None,
                ..self.host_config(&settings)
            }),

            ..ContainerCreateBody::default()
        }
    }

    /// The named volumes the service mounts, as binds of the project's volumes, and the
    /// paths of the host it mounts.
    fn volumes(&self) -> Vec<String> {
        let Some(container) = &self.service.container else {
            return Vec::new();
        };
        let named = container
            .volumes
            .iter()
            .filter(|volume| !is_anonymous(volume))
            .map(|volume| {
                let (short, rest) = volume.split_once(':').unwrap_or((volume, ""));
                format!("{}:{rest}", volume_name(self.service, self.project, short))
            });
        let host = container.host_mounts.iter().map(|mount| {
            let mode = if mount.read_only { "ro" } else { "rw" };
            match &mount.propagation {
                Some(propagation) => format!("{}:{}:{mode},{propagation}", mount.source, mount.target),
                None => format!("{}:{}:{mode}", mount.source, mount.target),
            }
        });
        named.chain(host).collect()
    }

    /// The repository's files and folders, as binds of their copies on the agent's host.
    fn file_binds(&self) -> Vec<String> {
        let Some(dir) = self.files else {
            return Vec::new();
        };
        let bind = |path: std::path::PathBuf, target: &str, read_only: Option<bool>| {
            let mode = if read_only == Some(false) { "rw" } else { "ro" };
            format!("{}:{target}:{mode}", path.display())
        };
        let files = file_paths(self.service, dir)
            .into_iter()
            .map(|(path, file)| bind(path, &file.target, file.read_only));
        let folders = folder_paths(self.service, dir)
            .into_iter()
            .map(|(path, folder)| bind(path, &folder.target, folder.read_only));
        files.chain(folders).collect()
    }

    /// The anonymous volumes (`/path`): a new one for each container, removed with it.
    fn anonymous_volumes(&self) -> Option<Vec<String>> {
        let paths: Vec<String> = self
            .service
            .container
            .iter()
            .flat_map(|c| &c.volumes)
            .filter(|volume| is_anonymous(volume))
            .cloned()
            .collect();
        (!paths.is_empty()).then_some(paths)
    }

    /// An amount of the service's `resources` (its requests, else its limits) as the engine
    /// takes it.
    fn limit(&self, amount: impl Fn(&Amounts) -> Option<u64>, requests: bool) -> Option<i64> {
        let resources = self.service.resources.as_ref()?;
        let amounts = if requests {
            resources.requests.as_ref()
        } else {
            resources.limits.as_ref()
        };
        amount(amounts?).and_then(|n| i64::try_from(n).ok())
    }

    /// The engine's health check, when the service declares one.
    fn healthcheck(&self) -> Option<HealthConfig> {
        let check = self.service.container.as_ref()?.healthcheck.as_ref()?;
        if check.test.first().is_some_and(|t| t == "NONE") {
            // Off, the image's own check included: nothing else goes with it.
            return Some(HealthConfig {
                test: Some(check.test.clone()),
                ..HealthConfig::default()
            });
        }
        let nanos = |d: &crate::spec::model::scalar::Duration| d.0.as_nanos() as i64;
        Some(HealthConfig {
            test: Some(check.test.clone()),
            interval: Some(nanos(&check.interval)),
            timeout: Some(nanos(&check.timeout)),
            retries: Some(check.retries.into()),
            start_period: Some(nanos(&check.start_period)),
            start_interval: None,
        })
    }

    fn labels(&self) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = self.service.labels.clone().into_iter().collect();
        labels.insert(PROJECT.to_owned(), self.project.to_owned());
        labels.insert(SERVICE.to_owned(), self.service.name.as_str().to_owned());
        labels.insert(ENVIRONMENT.to_owned(), self.environment.to_owned());
        labels
    }
}

/// Capabilities as Compose hands them to the engine: `CAP_NET_ADMIN` for `NET_ADMIN`.
fn capabilities(names: &[String]) -> Vec<String> {
    names
        .iter()
        .map(|name| {
            let name = name.to_ascii_uppercase();
            if name == "ALL" || name.starts_with("CAP_") {
                name
            } else {
                format!("CAP_{name}")
            }
        })
        .collect()
}

/// A device, `host[:container[:permissions]]`, as the engine takes it.
fn device(spec: &str) -> DeviceMapping {
    let mut parts = spec.splitn(3, ':');
    let host = parts.next().unwrap_or_default().to_owned();
    let inside = parts
        .next()
        .filter(|p| !p.is_empty())
        .map_or_else(|| host.clone(), str::to_owned);
    DeviceMapping {
        path_on_host: Some(host),
        path_in_container: Some(inside),
        cgroup_permissions: Some(parts.next().unwrap_or("rwm").to_owned()),
    }
}

/// Whether a volume of `container.volumes` is anonymous (`/path`, no name).
pub fn is_anonymous(volume: &str) -> bool {
    volume.starts_with('/')
}

/// The ports `service` declares.
pub fn ports_of(service: &Service) -> Vec<PortMap> {
    service
        .ports
        .iter()
        // A UDP port is published by the container itself, not routed ([`Launch::body`]).
        .filter(|p| p.protocol == Protocol::TCP)
        .map(|p| PortMap {
            name: p.name.as_str().to_owned(),
            stable: p.port,
            container: p.target_port.unwrap_or(p.port),
            host: None,
        })
        .collect()
}

/// A replica as the engine lists it.
#[derive(Clone, Debug)]
pub struct Replica {
    /// The container's id.
    pub id: String,
    /// The service.
    pub service: String,
    /// Its slot.
    pub slot: Slot,
    /// Its number (from 1).
    pub number: usize,
    /// The version it runs.
    pub version: String,
    /// Its declared ports.
    pub ports: Vec<PortMap>,
    /// Container port → host port on loopback, for the ports published now.
    pub published: Vec<(u16, u16)>,
    /// Whether it runs (and is not marked unhealthy by its own health check).
    pub running: bool,
    /// Whether it stopped or is unhealthy and will not come back on its own.
    pub failed: bool,
    /// Its state in words (`running`, `exited (137)`, `running (unhealthy)`).
    pub state: String,
    /// Its configuration file on the agent's host.
    pub config: Option<String>,
    /// Its address on the project's network.
    pub ip: Option<std::net::IpAddr>,
}

impl Replica {
    /// A replica from the engine's listing; `None` for containers that are not replicas (jobs,
    /// or labels plumb did not write).
    pub fn from_summary(summary: &ContainerSummary) -> Option<Replica> {
        let labels = summary.labels.as_ref()?;
        if labels.contains_key(JOB) {
            return None;
        }
        let slot = match labels.get(SLOT)?.as_str() {
            "blue" => Slot::Blue,
            "green" => Slot::Green,
            _ => return None,
        };
        let ports = labels.get(PORTS).map(|p| parse_ports(p)).unwrap_or_default();
        let published = summary
            .ports
            .iter()
            .flatten()
            .filter_map(|p| Some((p.private_port, p.public_port?)))
            .collect();
        let status = summary.status.clone().unwrap_or_default();
        let unhealthy = status.contains("(unhealthy)");
        let state = summary.state.unwrap_or(ContainerSummaryStateEnum::EMPTY);
        let running = state == ContainerSummaryStateEnum::RUNNING && !unhealthy;
        let failed = matches!(
            state,
            ContainerSummaryStateEnum::EXITED | ContainerSummaryStateEnum::DEAD | ContainerSummaryStateEnum::CREATED
        ) || unhealthy;
        Some(Replica {
            id: summary.id.clone()?,
            service: labels.get(SERVICE)?.clone(),
            slot,
            number: labels.get(NUMBER).and_then(|n| n.parse().ok()).unwrap_or(0),
            version: labels.get(VERSION).cloned().unwrap_or_default(),
            ports,
            published,
            running,
            failed,
            state: if status.is_empty() {
                format!("{state}")
            } else {
                status.to_lowercase()
            },
            config: labels.get(CONFIG).cloned(),
            ip: summary
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
                .into_iter()
                .flat_map(|networks| networks.values())
                .find_map(|endpoint| endpoint.ip_address.as_deref()?.parse().ok()),
        })
    }

    /// Its address on the project's network for the port named `name` (nginx reaches it there).
    pub fn address(&self, name: &str) -> Option<std::net::SocketAddr> {
        let port = self.ports.iter().find(|p| p.name == name)?;
        Some(std::net::SocketAddr::new(self.ip?, port.container))
    }

    /// The host port on loopback of the port named (or numbered, by its stable number) as the
    /// service declares it; `None` names the first declared port.
    pub fn host_port(&self, name: Option<&str>) -> Option<u16> {
        let port = match name {
            None => self.ports.first(),
            Some(name) => self
                .ports
                .iter()
                .find(|p| p.name == name || name.parse() == Ok(p.stable)),
        }?;
        port.host.or_else(|| {
            self.published
                .iter()
                .find(|(container, _)| *container == port.container)
                .map(|(_, host)| *host)
        })
    }
}

/// `name=stable/container[/host],…` back into ports.
fn parse_ports(text: &str) -> Vec<PortMap> {
    text.split(',')
        .filter_map(|item| {
            let (name, numbers) = item.split_once('=')?;
            let mut numbers = numbers.split('/');
            Some(PortMap {
                name: name.to_owned(),
                stable: numbers.next()?.parse().ok()?,
                container: numbers.next()?.parse().ok()?,
                host: numbers.next().and_then(|h| h.parse().ok()),
            })
        })
        .collect()
}

/// A port nobody listens on now on loopback (the engine binds it right after); `None` lets the
/// engine choose.
fn free_port() -> Option<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    Some(listener.local_addr().ok()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_labels_round_trip() {
        let ports = parse_ports("http=8080/80/41000,admin=9090/9090");
        assert_eq!(
            ports,
            [
                PortMap {
                    name: "http".into(),
                    stable: 8080,
                    container: 80,
                    host: Some(41000),
                },
                PortMap {
                    name: "admin".into(),
                    stable: 9090,
                    container: 9090,
                    host: None,
                }
            ]
        );
        assert!(parse_ports("nonsense").is_empty());
    }
}
