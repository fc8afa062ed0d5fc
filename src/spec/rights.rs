//! Container settings that widen what a container may do on its host — added capabilities,
//! privileged mode, host devices, the host's process or memory namespaces, security options,
//! the host's network, another project's networks and volumes, paths of the host —
//! are for the agent's operator to grant, not for a repository to take: each is refused at its
//! line unless the agent's configuration allows it for the repository (`allow:` of the
//! repository in the agent's configuration), and the refusal names that setting.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::diagnostic::Diagnostic;
use super::model::Service;
use super::node::{Node, Path, Step};

/// What a repository's containers may take on the agent's hosts. Nothing by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Allow {
    /// Linux capabilities a container may add (`NET_ADMIN`), or `ALL`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Whether a container may run privileged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// Host devices a container may use (`/dev/net/tun`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Whether a container may share the host's process or memory namespace (`pid: host`,
    /// `ipc: host`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_namespaces: bool,
    /// Security options a container may set (`no-new-privileges:true`, `seccomp=unconfined`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_options: Vec<String>,
    /// Networks of the engine outside the project a container may join (Compose's
    /// `external: true`), by their names on the engine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Volumes of the engine outside the project a container may mount, by their names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Folders of the agent's host a container may mount, with everything under them
    /// (`/srv/certs`): a bind mount, or a volume whose `local` driver binds a device path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_paths: Vec<String>,
}

impl Allow {
    /// Whether `path`, an absolute path of the host, is one the agent allows or under one.
    /// A path with `..` is never allowed: it could climb out of the folder allowed.
    pub fn host_path(&self, path: &str) -> bool {
        if !path.starts_with('/') || path.split('/').any(|part| part == "..") {
            return false;
        }
        let path = path.trim_end_matches('/');
        self.host_paths.iter().any(|allowed| {
            let allowed = allowed.trim_end_matches('/');
            path == allowed || path.strip_prefix(allowed).is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

/// Reports each right `service` takes that `allow` does not grant, at its line.
pub fn check(service: &Service, node: &Node, allow: &Allow, out: &mut Vec<Diagnostic>) {
    let Some(container) = &service.container else {
        return;
    };
    let at = |path: Path| node.locate(&path.0).0.at.clone();
    let field = |key: &str, index: Option<usize>| {
        let path = Path::default().key("container").key(key);
        match index {
            Some(i) => path.join(Step::Index(i)),
            None => path,
        }
    };
    let mut refuse = |path: Path, what: String, setting: &str| {
        out.push(
            Diagnostic::new(
                &at(path.clone()),
                format!("{what}: the agent does not allow it for this repository"),
            )
            .path(&path)
            .hint(format!(
                "the agent's operator grants it in the agent's configuration, under the repository's `allow.{setting}`"
            )),
        );
    };
    // `net_admin`, `NET_ADMIN` and `CAP_NET_ADMIN` name one capability.
    let canonical = |name: &str| {
        let upper = name.to_ascii_uppercase();
        upper.strip_prefix("CAP_").map_or(upper.clone(), str::to_owned)
    };
    for (i, capability) in container.cap_add.iter().enumerate() {
        let name = canonical(capability);
        if !allow
            .capabilities
            .iter()
            .any(|c| canonical(c) == "ALL" || canonical(c) == name)
        {
            refuse(
                field("capAdd", Some(i)),
                format!("capability {name} is added"),
                "capabilities",
            );
        }
    }
    if container.privileged && !allow.privileged {
        refuse(
            field("privileged", None),
            "the container is privileged".to_owned(),
            "privileged",
        );
    }
    for (i, device) in container.devices.iter().enumerate() {
        let host = device.split(':').next().unwrap_or_default();
        if !allow.devices.iter().any(|d| d == host) {
            refuse(
                field("devices", Some(i)),
                format!("host device {host} is used"),
                "devices",
            );
        }
    }
    for (key, mode) in [("pid", &container.pid), ("ipc", &container.ipc)] {
        if mode.as_deref() == Some("host") && !allow.host_namespaces {
            refuse(
                field(key, None),
                format!("`{key}: host` shares the host's namespace"),
                "hostNamespaces",
            );
        }
    }
    if container.userns_mode.is_some() && !allow.host_namespaces {
        refuse(
            field("usernsMode", None),
            "`userns_mode: host` leaves the engine's user namespace remapping".to_owned(),
            "hostNamespaces",
        );
    }
    if container.network_mode.as_deref() == Some("host") && !allow.host_namespaces {
        refuse(
            field("networkMode", None),
            "`network_mode: host` shares the host's network namespace".to_owned(),
            "hostNamespaces",
        );
    }
    for (i, mount) in container.host_mounts.iter().enumerate() {
        if !allow.host_path(&mount.source) {
            refuse(
                field("hostMounts", Some(i)),
                format!("`{}` is a host path outside the repository", mount.source),
                "hostPaths",
            );
        }
    }
    for (name, volume) in &container.volume_definitions {
        if let Some(device) = volume.host_path()
            && !allow.host_path(device)
        {
            let path = Path::default()
                .key("container")
                .key("volumeDefinitions")
                .key(name)
                .key("driverOpts");
            refuse(
                path,
                format!("volume `{name}` binds `{device}`, a host path outside the repository"),
                "hostPaths",
            );
        }
    }
    for (i, network) in container.networks.iter().enumerate() {
        if let Some(name) = network.engine_name()
            && !allow.networks.iter().any(|n| n == name)
        {
            let path = field("networks", Some(i)).key("engineName");
            refuse(
                path,
                format!("network {name}, outside the project, is joined"),
                "networks",
            );
        }
    }
    for (i, volume) in container.external_volumes.iter().enumerate() {
        if !allow.volumes.contains(volume) {
            refuse(
                field("externalVolumes", Some(i)),
                format!("volume {volume}, outside the project, is mounted"),
                "volumes",
            );
        }
    }
    for (i, option) in container.security_opt.iter().enumerate() {
        if !allow.security_options.contains(option) {
            refuse(
                field("securityOpt", Some(i)),
                format!("security option `{option}` is set"),
                "securityOptions",
            );
        }
    }
}
