//! Registry logins for the image gate, read where `docker login`, cosign and crane keep them: the
//! `auths` of `config.json` in `$DOCKER_CONFIG`, or in `~/.docker` (a Kubernetes Secret of type
//! `kubernetes.io/dockerconfigjson`, mounted as that file, serves the agent's pod). A login goes
//! to its own registry only: with `Basic` when the registry asks for it, or to the token realm
//! the registry names, for a token scoped to the image's repository.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

/// The largest `config.json` read.
const LIMIT: u64 = 1 << 20;

/// The logins of a `config.json`, by registry host (`ghcr.io`, `localhost:5000`, `docker.io`).
#[derive(Default)]
pub struct Logins {
    /// Where they were read, for saying so.
    file: Option<PathBuf>,
    by_registry: HashMap<String, Login>,
    /// Registries whose credentials a credential helper keeps (`credHelpers`, or every one with
    /// `credsStore`): plumb runs no helper, and says so when such a registry asks.
    helpers: HashMap<String, String>,
    store: Option<String>,
}

/// A user name and password (or token) for one registry.
#[derive(Clone)]
pub struct Login {
    username: String,
    password: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Login({}, ***)", self.username)
    }
}

impl Login {
    /// The `Authorization` header's value with `Basic`.
    pub fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
    }
}

impl Logins {
    /// The logins of `$DOCKER_CONFIG/config.json`, or of `~/.docker/config.json`; none when
    /// neither file is there.
    pub fn from_environment() -> Result<Logins, String> {
        let folder = match std::env::var_os("DOCKER_CONFIG") {
            Some(folder) => PathBuf::from(folder),
            None => match std::env::var_os("HOME") {
                Some(home) => Path::new(&home).join(".docker"),
                None => return Ok(Logins::default()),
            },
        };
        let file = folder.join("config.json");
        if !file.exists() {
            return Ok(Logins::default());
        }
        Logins::read(&file)
    }

    /// The logins of the Docker `config.json` at `file`.
    pub fn read(file: &Path) -> Result<Logins, String> {
        let problem = |why: String| format!("registry logins `{}`: {why}", file.display());
        let size = std::fs::metadata(file).map_err(|e| problem(e.to_string()))?.len();
        if size > LIMIT {
            return Err(problem(format!("{size} bytes, more than {LIMIT}")));
        }
        let text = std::fs::read(file).map_err(|e| problem(e.to_string()))?;
        let config: serde_json::Value = serde_json::from_slice(&text).map_err(|e| problem(format!("not JSON: {e}")))?;
        let mut logins = Logins {
            file: Some(file.to_owned()),
            ..Logins::default()
        };
        if let Some(auths) = config.get("auths") {
            let auths = auths
                .as_object()
                .ok_or_else(|| problem("`auths` is not an object".into()))?;
            for (key, entry) in auths {
                let login = login(entry).map_err(|why| problem(format!("`auths.{key}`: {why}")))?;
                if let Some(login) = login {
                    logins.by_registry.insert(registry_of(key), login);
                }
            }
        }
        if let Some(helpers) = config.get("credHelpers").and_then(|h| h.as_object()) {
            for (key, helper) in helpers {
                let helper = helper.as_str().unwrap_or_default().to_owned();
                logins.helpers.insert(registry_of(key), helper);
            }
        }
        logins.store = config.get("credsStore").and_then(|s| s.as_str()).map(str::to_owned);
        Ok(logins)
    }

    /// The login for `registry` (a host and port, `docker.io` for Docker Hub), or why there is
    /// none when the registry asks for one.
    pub fn of(&self, registry: &str) -> Result<&Login, String> {
        if let Some(login) = self.by_registry.get(registry) {
            return Ok(login);
        }
        let helper = self.helpers.get(registry).or(self.store.as_ref());
        Err(match (helper, &self.file) {
            (Some(helper), Some(file)) => format!(
                "its login is kept by the credential helper `{helper}` ({}), which plumb does not run: \
                 put it in that file's `auths`",
                file.display()
            ),
            (None, Some(file)) => format!("{} holds no login for {registry}", file.display()),
            _ => "the agent has no registry logins (`config.json` in `$DOCKER_CONFIG` or `~/.docker`)".to_owned(),
        })
    }
}

/// The login an entry of `auths` holds: `auth` (base64 of `user:password`), or `username` and
/// `password`; `None` for an entry with neither (`docker logout` leaves `{}`).
fn login(entry: &serde_json::Value) -> Result<Option<Login>, String> {
    let field = |name: &str| entry.get(name).and_then(|v| v.as_str()).filter(|v| !v.is_empty());
    if let Some(auth) = field("auth") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| "`auth` is not base64".to_owned())?;
        let decoded = String::from_utf8(decoded).map_err(|_| "`auth` is not UTF-8 once decoded".to_owned())?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| "`auth` is not `user:password` once decoded".to_owned())?;
        return Ok(Some(Login {
            username: username.to_owned(),
            password: password.to_owned(),
        }));
    }
    match (field("username"), field("password")) {
        (Some(username), Some(password)) => Ok(Some(Login {
            username: username.to_owned(),
            password: password.to_owned(),
        })),
        (Some(_), None) | (None, Some(_)) => Err("`username` and `password` go together".to_owned()),
        (None, None) if field("identitytoken").is_some() => Err(
            "an `identitytoken` (an OAuth refresh token) is not read: log in with a password or an access token"
                .to_owned(),
        ),
        (None, None) => Ok(None),
    }
}

/// The registry host a key of `auths` names: keys may be URLs (`https://ghcr.io`, Docker Hub's
/// `https://index.docker.io/v1/`) or hosts.
fn registry_of(key: &str) -> String {
    let host = key.split_once("://").map_or(key, |(_, rest)| rest);
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        host => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logins(json: &str) -> Result<Logins, String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, json).unwrap();
        Logins::read(&file)
    }

    #[test]
    fn logins_are_read_by_registry_as_docker_writes_them() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let found = logins(&format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{auth}"}},
                "ghcr.io": {{"username": "bob", "password": "ghp_token"}},
                "http://localhost:5000": {{"auth": "{auth}"}}, "quay.io": {{}}}},
              "credHelpers": {{"123.dkr.ecr.us-east-1.amazonaws.com": "ecr-login"}}}}"#
        ))
        .unwrap();
        assert_eq!(found.of("docker.io").unwrap().basic(), format!("Basic {auth}"));
        assert_eq!(found.of("localhost:5000").unwrap().username, "alice");
        assert_eq!(found.of("ghcr.io").unwrap().password, "ghp_token");
        assert!(found.of("quay.io").unwrap_err().contains("holds no login for quay.io"));
        let helper = found.of("123.dkr.ecr.us-east-1.amazonaws.com").unwrap_err();
        assert!(helper.contains("credential helper `ecr-login`"), "{helper}");
        // The password is never shown.
        assert!(!format!("{:?}", found.of("ghcr.io").unwrap()).contains("ghp_token"));
    }

    #[test]
    fn a_login_that_cannot_be_read_is_named() {
        let bad = logins(r#"{"auths": {"ghcr.io": {"auth": "not base64!"}}}"#)
            .err()
            .unwrap();
        assert!(bad.contains("`auths.ghcr.io`: `auth` is not base64"), "{bad}");
        let half = logins(r#"{"auths": {"ghcr.io": {"username": "bob"}}}"#).err().unwrap();
        assert!(half.contains("`username` and `password` go together"), "{half}");
        let token = logins(r#"{"auths": {"ghcr.io": {"identitytoken": "x"}}}"#)
            .err()
            .unwrap();
        assert!(token.contains("`identitytoken`"), "{token}");
        assert!(logins("not json").err().unwrap().contains("not JSON"));
    }
}
