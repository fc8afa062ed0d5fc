//! The engine's objects of the project: listing its replicas, creating its networks and
//! volumes, pulling images, starting and removing containers, waiting for the engine's health
//! checks, and one-off jobs.

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;

use bollard::models::{ContainerCreateBody, EndpointIpamConfig, EndpointSettings, NetworkingConfig};

use super::{ComposeError, ComposeRuntime};
use crate::spec::model::Service;
use crate::target::compose::container::{ENVIRONMENT, Launch, PROJECT, Replica, SERVICE};
use crate::target::compose::engine::{EngineError, not_found, request};
use crate::target::workload::{Slot, variables};

/// A network a container joins, and how it is known there.
pub(super) struct Joined {
    /// The network's name on the engine.
    network: String,
    /// The names other containers reach it by there (the service's, then its own aliases).
    aliases: Vec<String>,
    /// A fixed address there.
    ipv4_address: Option<String>,
}

impl Joined {
    /// `network`, where the service is known by its name alone.
    fn by_name(network: String, service: &str) -> Joined {
        Joined {
            network,
            aliases: vec![service.to_owned()],
            ipv4_address: None,
        }
    }

    fn endpoint(&self) -> EndpointSettings {
        EndpointSettings {
            aliases: Some(self.aliases.clone()),
            ipam_config: self.ipv4_address.as_ref().map(|address| EndpointIpamConfig {
                ipv4_address: Some(address.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl ComposeRuntime {
    /// The project's replicas (of `service` only, when given), stopped ones included.
    pub(super) async fn replicas(&self, service: Option<&str>) -> Result<Vec<Replica>, EngineError> {
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

    /// Stops (with the container's grace period) and removes containers, concurrently.
    pub(super) async fn remove(&self, ids: Vec<String>) {
        let removals = ids.into_iter().map(|id| {
            let docker = self.docker.clone();
            tokio::spawn(async move {
                // Without a time, the engine waits the container's own `StopTimeout`.
                let _ = docker.stop_container(&id, None).await;
                if let Err(e) = docker
                    .remove_container(
                        &id,
                        Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build()),
                    )
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
    pub(super) fn slot_dir(&self, service: &str, slot: Slot) -> PathBuf {
        self.dir.join(service).join(slot.name())
    }

    /// The networks `service`'s containers join, each made if it is the project's (an external
    /// one must be there): those it lists, else the project's default one, as Compose joins
    /// them — and the default one too when nginx reaches the service's ports there. None for a
    /// service with a network mode of its own.
    pub(super) async fn joined(&self, service: &Service) -> Result<Vec<Joined>, EngineError> {
        let name = service.name.as_str().to_owned();
        let Some(container) = service.container.as_ref().filter(|c| !c.networks.is_empty()) else {
            let none = service.container.as_ref().is_some_and(|c| c.network_mode.is_some());
            if none {
                return Ok(Vec::new());
            }
            return Ok(vec![Joined::by_name(self.network().await?, &name)]);
        };
        if container.network_mode.is_some() {
            return Ok(Vec::new());
        }
        let mut joined = Vec::new();
        for attachment in &container.networks {
            let network = match attachment.engine_name() {
                Some(engine_name) => self.external_network(engine_name).await?,
                None => {
                    let definition = container.network_definitions.get(attachment.name());
                    self.named_network(attachment.name(), definition).await?
                }
            };
            let mut aliases = vec![name.clone()];
            aliases.extend(attachment.aliases().iter().cloned());
            joined.push(Joined {
                network,
                aliases,
                ipv4_address: attachment.ipv4_address().map(str::to_owned),
            });
        }
        if self.nginx.is_some() && !service.ports.is_empty() {
            joined.push(Joined::by_name(self.network().await?, &name));
        }
        Ok(joined)
    }

    /// Creates container `name` from `body` on the `joined` networks (the first when it is
    /// created, the others after); removed again when it cannot join one.
    async fn create(
        &self,
        name: &str,
        mut body: ContainerCreateBody,
        joined: &[Joined],
        service: &Service,
    ) -> Result<String, EngineError> {
        body.networking_config = joined.first().map(|first| NetworkingConfig {
            endpoints_config: Some([(first.network.clone(), first.endpoint())].into()),
        });
        let mut options = CreateContainerOptionsBuilder::new().name(name);
        if let Some(platform) = service.container.as_ref().and_then(|c| c.platform.as_deref()) {
            options = options.platform(platform);
        }
        let options = options.build();
        let id = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(request(format!("creating container `{name}`")))?
            .id;
        for other in joined.iter().skip(1) {
            let endpoint = bollard::models::NetworkConnectRequest {
                container: id.clone(),
                endpoint_config: Some(other.endpoint()),
            };
            if let Err(e) = self.docker.connect_network(&other.network, endpoint).await {
                // Not left half made: a retry would find the name taken.
                self.remove(vec![id.clone()]).await;
                return Err(request(format!("connecting `{name}` to network `{}`", other.network))(
                    e,
                ));
            }
        }
        Ok(id)
    }

    /// Creates and starts replica `index` of a launch, on the networks its service joins.
    pub(super) async fn start(&self, launch: &Launch<'_>, index: usize) -> Result<(), EngineError> {
        let name = launch.name(index);
        // Every network is there (an external one must be) before anything is created.
        let joined = self.joined(launch.service).await?;
        let id = self.create(&name, launch.body(index), &joined, launch.service).await?;
        self.docker
            .start_container(&id, None)
            .await
            .map_err(request(format!("starting container `{name}`")))?;
        Ok(())
    }

    /// Waits until the engine reports every container of `service`'s `slot` healthy, when the
    /// service declares an engine health check: fails as soon as one is `unhealthy` (with the
    /// check's last output) or when the check's own time has passed.
    pub(super) async fn healthy(&self, service: &Service, slot: Slot) -> Result<(), ComposeError> {
        let Some(check) = service
            .container
            .as_ref()
            .and_then(|c| c.healthcheck.as_ref())
            .filter(|check| check.test.first().is_some_and(|t| t != "NONE"))
        else {
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

    /// Runs a one-off container of `service` (a migration) named after `job`, to completion
    /// within `timeout`; removed afterwards. Returns its last lines, quoted in the error when
    /// it fails.
    pub async fn run_job(
        &self,
        service: &Service,
        job: &str,
        command: &[String],
        timeout: std::time::Duration,
    ) -> Result<String, ComposeError> {
        let name = service.name.as_str();
        let image = service
            .image
            .as_deref()
            .ok_or_else(|| ComposeError::NoImage(name.to_owned()))?;
        let env = variables(service)?;
        self.image_for(service, image).await?;
        self.volumes(service).await?;
        let joined = self.joined(service).await?;
        // The job's own copies of the repository files: the running slots' stay as they are.
        let files = self.dir.join(name).join("job");
        crate::target::compose::container::write_files(service, &files)
            .await
            .map_err(|source| ComposeError::State {
                path: files.join("files"),
                source,
            })?;
        let launch = Launch {
            project: &self.project,
            environment: &self.environment,
            service,
            slot: Slot::Blue,
            version: "",
            config: None,
            env: &env,
            files: Some(&files),
            address: self.address,
            port_offset: self.port_offset,
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
        let id = self
            .create(&container, launch.job(job, command), &joined, service)
            .await?;
        self.docker
            .start_container(&id, None)
            .await
            .map_err(request(format!("starting job container `{container}`")))?;
        let mut waiting = self.docker.wait_container(&id, None);
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
            Ok(()) => Ok(self.tail(&id).await),
            Err(reason) => {
                let tail = self.tail(&id).await;
                Err(ComposeError::Job(if tail.is_empty() {
                    reason
                } else {
                    format!("{reason}; its last lines:\n{tail}")
                }))
            }
        };
        self.remove(vec![id]).await;
        outcome
    }

    /// The last lines a container wrote.
    pub(super) async fn tail(&self, id: &str) -> String {
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).tail("20").build();
        let lines: Vec<String> = self
            .docker
            .logs(id, Some(options))
            .filter_map(|line| async move { line.ok().map(|l| l.to_string()) })
            .collect()
            .await;
        lines.concat().trim_end().to_owned()
    }
}
