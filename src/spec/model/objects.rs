//! What a container uses besides its image and settings: the project's networks and volumes
//! with the settings they are created with, paths of the agent's host, folders of the
//! repository, and the image built from the repository (Compose's `build`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How one of the project's own networks is created (Compose's top-level `networks`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkDefinition {
    /// Its name on the engine, instead of `<project>_<network>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"))]
    pub name: Option<String>,
    /// The network driver (`bridge` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The driver's options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// Its addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Ipam>,
    /// No route out of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// Containers outside the project may join it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attachable: bool,
    /// IPv6 is enabled on it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_ipv6: bool,
    /// Labels of the network.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A network's address management.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ipam {
    /// The IPAM driver (`default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Its address pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<IpamPool>,
    /// The driver's options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// An address pool of a network.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpamPool {
    /// The subnet, in CIDR notation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// The range containers' addresses are taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    /// The gateway's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Addresses the driver must not hand out, by host name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, String>,
}

/// How one of the project's own volumes is created (Compose's top-level `volumes`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeDefinition {
    /// Its name on the engine, instead of `<project>_<volume>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"))]
    pub name: Option<String>,
    /// The volume driver (`local` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The driver's options (`type`, `o`, `device` of the `local` driver). A `device` that is
    /// a path of the agent's host is a host path: allowed only as one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// Labels of the volume.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl VolumeDefinition {
    /// The path of the agent's host the `local` driver binds, if it binds one.
    pub fn host_path(&self) -> Option<&str> {
        let local = self.driver.as_deref().is_none_or(|d| d == "local");
        let device = self.driver_opts.get("device")?;
        let binds = self
            .driver_opts
            .get("o")
            .is_some_and(|o| o.split(',').any(|option| option == "bind" || option == "rbind"));
        (local && binds).then_some(device.as_str())
    }
}

/// A path of the agent's host mounted into the containers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostMount {
    /// The absolute path on the host.
    #[schemars(regex(pattern = "^/"))]
    pub source: String,
    /// The path in the container.
    #[schemars(regex(pattern = "^/"))]
    pub target: String,
    /// Mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// How mounts made under it on either side reach the other (`rslave`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^r?(shared|slave|private)$"))]
    pub propagation: Option<String>,
}

/// A folder of the repository mounted into the containers, as of the commit applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepositoryFolder {
    /// The folder in the repository, for people reading the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The path in the container.
    #[schemars(regex(pattern = "^/"))]
    pub target: String,
    /// Its files.
    pub files: Vec<FolderFile>,
    /// Mounted read-only (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// A file inside a folder of the repository.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FolderFile {
    /// Its path inside the folder, `/`-separated, without `..`.
    #[schemars(regex(pattern = "^[^/]([^/]*/?)*[^/]$|^[^/]$"))]
    pub path: String,
    /// Its content: the text, or its bytes in base64 (`encoding: base64`).
    pub content: String,
    /// How `content` is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// Whether it may be run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
}

impl FolderFile {
    /// Its bytes; `None` when base64 content does not decode.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match self.encoding {
            None => Some(self.content.as_bytes().to_vec()),
            Some(Encoding::Base64) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(&self.content).ok()
            }
        }
    }
}

/// How the content of a file is written in the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Bytes in standard base64.
    Base64,
}

/// The image built from a folder of the repository (Compose's `build`), tagged by a digest of
/// everything that goes into it: the same content is built once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Build {
    /// The build context: the folder of the repository and its files.
    pub context: RepositoryFolder,
    /// The Dockerfile, relative to the context.
    #[serde(default = "dockerfile")]
    pub dockerfile: String,
    /// Build arguments.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    /// The stage built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Labels of the image.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn dockerfile() -> String {
    "Dockerfile".to_owned()
}
