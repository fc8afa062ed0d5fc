//! What every target makes of a service's workload the same way: the two slots, what runs in
//! one, the service's variables, its rendered configuration file, `${NAME}` in arguments, and
//! the digests that compare contents.

use std::path::PathBuf;

use crate::spec::model::Service;
use crate::spec::model::scalar::is_encrypted;
use crate::spec::model::service::ConfigFormat;

/// One of a service's two slots: the running version and the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    /// The first slot.
    Blue,
    /// The second slot.
    Green,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::Blue => Slot::Green,
            Slot::Green => Slot::Blue,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }
}

/// What runs in one slot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LiveSlot {
    /// The version deployed (the caller's identifier: a commit and a digest of the spec).
    pub version: String,
    /// Each replica's state.
    pub replicas: Vec<String>,
    /// The slot's share of traffic.
    pub weight: u32,
    /// A digest of the configuration file as it is now on the target (edited by hand, it
    /// differs from the rendered one); `None` when the service has none.
    pub config: Option<String>,
    /// Replicas that stopped and will not come back on their own (their program cannot start).
    pub failed: usize,
    /// Fields plumb applied that another field manager has changed since, each as
    /// `<field> (by <manager>)` (only the kubernetes target tells).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub taken: Vec<String>,
    /// How many times the target restarted the slot's containers since they were created (the
    /// kubelet after a failed liveness probe or an exit; only the kubernetes target tells).
    #[serde(skip_serializing_if = "is_zero")]
    pub restarts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why a service's workload cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// A value is still encrypted: the commit was rendered without the identities to open it.
    #[error(
        "service `{service}`: the value of `{variable}` is encrypted and was not decrypted (only an agent given the identities opens it)"
    )]
    Encrypted {
        /// The service.
        service: String,
        /// The variable.
        variable: String,
    },
    /// The configuration file cannot be written.
    #[error("service `{service}`: cannot write its configuration file {path}")]
    Config {
        /// The service.
        service: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The variables plumb sets in every replica (those of them that apply to it); a service may
/// not declare them.
pub const PROVIDED: [&str; 9] = [
    "PLUMB_ENVIRONMENT",
    "PLUMB_SERVICE",
    "PLUMB_SLOT",
    "PLUMB_VERSION",
    "PLUMB_REPLICA",
    "PLUMB_CONFIG",
    CONFIG_URL,
    CONFIG_TOKEN,
    "PLUMB_RUN",
];

/// Whether plumb sets variable `name` in replicas (see [`PROVIDED`]; and `PLUMB_PORT_<NAME>`).
pub fn is_provided(name: &str) -> bool {
    PROVIDED.contains(&name) || name.starts_with("PLUMB_PORT_")
}

/// The variable naming the service's configuration on the agent's API.
pub const CONFIG_URL: &str = "PLUMB_CONFIG_URL";

/// The variable holding the service's read token for it.
pub const CONFIG_TOKEN: &str = "PLUMB_CONFIG_TOKEN";

/// The variables `service` declares, encrypted ones in clear (refused while one is sealed),
/// then where it reads its configuration on the agent's API and its token for it, when the
/// agent gives them.
pub fn variables(service: &Service) -> Result<Vec<(String, String)>, WorkloadError> {
    let api = service.config_api.iter().flat_map(|api| {
        [
            Ok((CONFIG_URL.to_owned(), api.url.clone())),
            Ok((CONFIG_TOKEN.to_owned(), api.token.expose().to_owned())),
        ]
    });
    service
        .env
        .iter()
        .map(|variable| {
            let value = &variable.value.0;
            if !is_encrypted(value) {
                return Ok((variable.name.clone(), value.clone()));
            }
            match service.opened.get(value) {
                Some(clear) => Ok((variable.name.clone(), clear.expose().to_owned())),
                None => Err(WorkloadError::Encrypted {
                    service: service.name.as_str().to_owned(),
                    variable: variable.name.clone(),
                }),
            }
        })
        .chain(api)
        .collect()
}

/// `text` (a job's output, an error quoting it) with every clear value of `service`'s
/// encrypted values replaced by `***`.
pub fn mask_opened(service: &Service, text: &str) -> String {
    let mut masked = text.to_owned();
    let token = service.config_api.as_ref().map(|api| &api.token);
    for clear in service.opened.clear_values().chain(token) {
        let clear = clear.expose();
        if !clear.is_empty() && masked.contains(clear) {
            masked = masked.replace(clear, "***");
        }
    }
    masked
}

/// Whether `service`'s variable `name` is written encrypted (its clear value is a secret).
pub fn is_secret_variable(service: &Service, name: &str) -> bool {
    (name == CONFIG_TOKEN && service.config_api.is_some())
        || service.env.iter().any(|v| v.name == name && is_encrypted(&v.value.0))
}

/// Whether `service`'s configuration file holds encrypted values (its clear text is a secret).
pub fn config_is_secret(service: &Service) -> bool {
    service
        .config
        .as_ref()
        .is_some_and(|c| first_encrypted(&serde_json::Value::Object(c.values.clone()), "").is_some())
}

/// Writes `service`'s configuration file, rendered, into `dir`; returns its path, `None` when
/// the service declares none.
pub async fn write_config(service: &Service, dir: &std::path::Path) -> Result<Option<PathBuf>, WorkloadError> {
    let Some((file, text)) = config_file(service)? else {
        return Ok(None);
    };
    let path = dir.join(file);
    save(&path, text, config_is_secret(service))
        .await
        .map_err(|source| WorkloadError::Config {
            service: service.name.as_str().to_owned(),
            path: path.clone(),
            source,
        })?;
    Ok(Some(path))
}

/// The application configuration file of `service`, rendered: its path relative to the working
/// directory and its content. `None` when the service declares none.
pub fn config_file(service: &Service) -> Result<Option<(String, String)>, WorkloadError> {
    let Some(config) = &service.config else {
        return Ok(None);
    };
    let mut values = serde_json::Value::Object(config.values.clone());
    if let Err(path) = service.opened.open_in(&mut values, "config.values") {
        return Err(WorkloadError::Encrypted {
            service: service.name.as_str().to_owned(),
            variable: path,
        });
    }
    let text = match config.format {
        ConfigFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&values).expect("JSON values serialize")
        ),
        ConfigFormat::Yaml => crate::cli::emit::yaml(&values),
    };
    Ok(Some((config.file.clone(), text)))
}

/// The path of the first encrypted string in `value`.
fn first_encrypted(value: &serde_json::Value, at: &str) -> Option<String> {
    match value {
        serde_json::Value::String(s) if is_encrypted(s) => Some(at.to_owned()),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| first_encrypted(v, &format!("{at}.{k}"))),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| first_encrypted(v, &format!("{at}[{i}]"))),
        _ => None,
    }
}

/// A digest of a file's content as it is now (`absent` when it cannot be read).
pub async fn file_digest(path: &std::path::Path) -> String {
    tokio::fs::read(path)
        .await
        .map_or_else(|_| "absent".to_owned(), |bytes| digest(&bytes))
}

/// The digest plumb uses to compare contents: the first 16 hex digits of their SHA-256.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(bytes)[..8])
}

/// The digest of `service`'s configuration file as rendered, `None` when it declares none: what
/// [`LiveSlot::config`] is compared with.
pub fn config_digest(service: &Service) -> Result<Option<String>, WorkloadError> {
    Ok(config_file(service)?.map(|(_, text)| digest(text.as_bytes())))
}

/// Writes `text` to `path` atomically: a reader (the application on reload) never sees half.
pub fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    write_with_mode(path, text.as_bytes(), 0o666)
}

/// Writes `text` to `path` as [`write_atomically`] does, readable by its owner alone: a file
/// holding decrypted values.
pub fn write_privately(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    write_with_mode(path, text.as_bytes(), 0o600)
}

/// [`write_atomically`] (or, when `private`, [`write_privately`]) off the async runtime.
pub async fn save(path: &std::path::Path, content: impl Into<Vec<u8>>, private: bool) -> std::io::Result<()> {
    let (path, content) = (path.to_owned(), content.into());
    let mode = if private { 0o600 } else { 0o666 };
    crate::blocking::io(move || write_with_mode(&path, &content, mode)).await
}

/// Writes `content` to a new file beside `path` created with `mode` (less the umask), then puts
/// it in `path`'s place.
pub(crate) fn write_with_mode(path: &std::path::Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let temporary = path.with_extension("plumb-tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)?;
    file.write_all(content)?;
    drop(file);
    std::fs::rename(&temporary, path)
}

/// `${NAME}` in a command argument replaced by the replica's variable `NAME` (no shell is
/// involved); unknown names are left as written, as Kubernetes does.
pub fn expand(arg: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match env.iter().rev().find(|(k, _)| k == name) {
                    Some((_, value)) => out.push_str(value),
                    None => out.push_str(&rest[start..start + 3 + end]),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The health checks of `service` that decide readiness: what a rollout waits for.
pub fn readiness_checks(service: &Service) -> Vec<crate::spec::model::service::HealthCheck> {
    service
        .health_checks
        .iter()
        .filter(|check| check.gates_readiness())
        .cloned()
        .collect()
}

/// Removes a configuration file whose replicas are gone: it may hold decrypted values. A file
/// that cannot be removed is reported (one already gone is not).
pub async fn forget_config(path: &std::path::Path) {
    match tokio::fs::remove_file(path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "Cannot remove a configuration file of replicas that are gone; it may hold decrypted values.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn variables_in_arguments() {
        let env = vec![("PORT".to_owned(), "4100".to_owned())];
        assert_eq!(expand("--port=${PORT}", &env), "--port=4100");
        assert_eq!(expand("${PORT}${PORT}", &env), "41004100");
        assert_eq!(expand("${HOME_DIR}/x", &env), "${HOME_DIR}/x");
        assert_eq!(expand("${unterminated", &env), "${unterminated");
    }
}
