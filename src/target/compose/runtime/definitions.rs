//! The project's networks and volumes, created as their definitions say (driver, options,
//! addresses, labels), with Compose's labels and a digest of the definition. One found with
//! another digest was made from other settings: a network nobody uses is made again, one in use
//! is refused; a volume is never made again (its data would go), so a changed one is refused.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::ComposeRuntime;
use crate::spec::model::Service;
use crate::spec::model::objects::{NetworkDefinition, VolumeDefinition};
use crate::target::compose::container::{ENVIRONMENT, PROJECT, is_anonymous, volume_name};
use crate::target::compose::engine::{EngineError, not_found, request};

/// The label holding the digest of the definition a network or volume was created from.
const DEFINITION: &str = "plumb.definition";

/// A digest of a definition, as its label holds it; `None` for the engine's defaults (what
/// plumb created before definitions were carried out, and what it creates without one).
fn digest<T: serde::Serialize + Default + PartialEq>(definition: Option<&T>) -> Option<String> {
    let definition = definition.filter(|d| **d != T::default())?;
    let json = serde_json::to_vec(definition).expect("a definition serializes");
    Some(hex::encode(Sha256::digest(json))[..16].to_owned())
}

impl ComposeRuntime {
    /// The project's default network, created on first use with Compose's labels.
    pub(super) async fn network(&self) -> Result<String, EngineError> {
        self.named_network("default", None).await
    }

    /// The project's network `short` (`<project>_<short>`, or the name its definition gives),
    /// created on first use as `definition` says.
    pub(super) async fn named_network(
        &self,
        short: &str,
        definition: Option<&NetworkDefinition>,
    ) -> Result<String, EngineError> {
        let name = definition
            .and_then(|d| d.name.clone())
            .unwrap_or_else(|| format!("{}_{short}", self.project));
        let wanted = digest(definition);
        match self.docker.inspect_network(&name, None).await {
            Ok(found) => {
                let labels = found.labels.unwrap_or_default();
                if labels.get(DEFINITION) == wanted.as_ref() {
                    return Ok(name);
                }
                let users = found.containers.map_or(0, |c| c.len());
                if users > 0 {
                    return Err(EngineError::Changed(format!(
                        "network `{name}` was created with other settings and {users} containers use it: plumb does not change a network under running containers; stop them (or remove the network) and it is made again"
                    )));
                }
                tracing::info!(environment = %self.environment, network = %name, "Making the network again: its settings changed.");
                self.docker
                    .remove_network(&name)
                    .await
                    .map_err(request(format!("removing network `{name}`")))?;
            }
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(request(format!("inspecting network `{name}`"))(e)),
        }
        let mut labels: HashMap<String, String> = definition
            .map(|d| d.labels.clone().into_iter().collect())
            .unwrap_or_default();
        labels.insert(PROJECT.to_owned(), self.project.clone());
        labels.insert("com.docker.compose.network".to_owned(), short.to_owned());
        labels.insert(ENVIRONMENT.to_owned(), self.environment.clone());
        if let Some(wanted) = wanted {
            labels.insert(DEFINITION.to_owned(), wanted);
        }
        let definition = definition.cloned().unwrap_or_default();
        let ipam = definition.ipam.map(|ipam| bollard::models::Ipam {
            driver: ipam.driver,
            config: Some(
                ipam.config
                    .into_iter()
                    .map(|pool| bollard::models::IpamConfig {
                        subnet: pool.subnet,
                        ip_range: pool.ip_range,
                        gateway: pool.gateway,
                        auxiliary_addresses: (!pool.aux_addresses.is_empty())
                            .then(|| pool.aux_addresses.into_iter().collect()),
                    })
                    .collect(),
            ),
            options: (!ipam.options.is_empty()).then(|| ipam.options.into_iter().collect()),
        });
        let network = bollard::models::NetworkCreateRequest {
            name: name.clone(),
            labels: Some(labels),
            driver: definition.driver,
            options: (!definition.driver_opts.is_empty()).then(|| definition.driver_opts.into_iter().collect()),
            ipam,
            internal: definition.internal.then_some(true),
            attachable: definition.attachable.then_some(true),
            enable_ipv6: definition.enable_ipv6.then_some(true),
            ..Default::default()
        };
        self.docker
            .create_network(network)
            .await
            .map_err(request(format!("creating network `{name}`")))?;
        Ok(name)
    }

    /// The external network `name`, which must be there: plumb does not make it.
    pub(super) async fn external_network(&self, name: &str) -> Result<String, EngineError> {
        match self.docker.inspect_network(name, None).await {
            Ok(_) => Ok(name.to_owned()),
            Err(e) if not_found(&e) => Err(EngineError::Missing(format!("external network `{name}`"))),
            Err(e) => Err(request(format!("inspecting network `{name}`"))(e)),
        }
    }

    /// The project's volumes `service` mounts, created on first use as their definitions say,
    /// with Compose's labels; an external one must be there.
    pub(super) async fn volumes(&self, service: &Service) -> Result<(), EngineError> {
        let Some(container) = &service.container else {
            return Ok(());
        };
        for volume in container.volumes.iter().filter(|v| !is_anonymous(v)) {
            let short = volume.split(':').next().unwrap_or_default();
            if container.external_volumes.iter().any(|v| v == short) {
                // Another project's, or made by hand: it must be there; plumb does not make it.
                match self.docker.inspect_volume(short).await {
                    Ok(_) => continue,
                    Err(e) if not_found(&e) => {
                        return Err(EngineError::Missing(format!("external volume `{short}`")));
                    }
                    Err(e) => return Err(request(format!("inspecting volume `{short}`"))(e)),
                }
            }
            let definition = container.volume_definitions.get(short);
            self.volume(short, &volume_name(service, &self.project, short), definition)
                .await?;
        }
        Ok(())
    }

    /// The project's volume `short`, named `name` on the engine, created as `definition` says.
    async fn volume(&self, short: &str, name: &str, definition: Option<&VolumeDefinition>) -> Result<(), EngineError> {
        let wanted = digest(definition);
        match self.docker.inspect_volume(name).await {
            Ok(found) if found.labels.get(DEFINITION) == wanted.as_ref() => return Ok(()),
            Ok(_) => {
                return Err(EngineError::Changed(format!(
                    "volume `{name}` was created with other settings (driver, options or labels): plumb never makes a volume again, its data would be lost; remove it by hand to have it made as written"
                )));
            }
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(request(format!("inspecting volume `{name}`"))(e)),
        }
        let mut labels: HashMap<String, String> = definition
            .map(|d| d.labels.clone().into_iter().collect())
            .unwrap_or_default();
        labels.insert(PROJECT.to_owned(), self.project.clone());
        labels.insert("com.docker.compose.volume".to_owned(), short.to_owned());
        labels.insert(ENVIRONMENT.to_owned(), self.environment.clone());
        if let Some(wanted) = wanted {
            labels.insert(DEFINITION.to_owned(), wanted);
        }
        let definition = definition.cloned().unwrap_or_default();
        let body = bollard::models::VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(labels),
            driver: definition.driver,
            driver_opts: (!definition.driver_opts.is_empty()).then(|| definition.driver_opts.into_iter().collect()),
            ..Default::default()
        };
        self.docker
            .create_volume(body)
            .await
            .map_err(request(format!("creating volume `{name}`")))?;
        Ok(())
    }
}
