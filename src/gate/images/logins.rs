//! Registry logins for the image gate, read where `docker login`, cosign and crane keep them: the
//! `auths` of `config.json` in `$DOCKER_CONFIG`, or in `~/.docker` (a Kubernetes Secret of type
//! `kubernetes.io/dockerconfigjson`, mounted as that file, serves the agent's pod). A registry's
//! login is sent to that registry, with `Basic` when it asks for that, or to the token realm it
//! names (over HTTPS: Docker Hub's is `auth.docker.io`), for a token to pull from it.

use std::collections::HashMap;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;

/// The largest `config.json` read.
const LIMIT: u64 = 1 << 20;

/// Docker Hub's key in `config.json`.
const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// The logins of a `config.json`, by registry host (`ghcr.io`, `localhost:5000`, `docker.io`).
#[derive(Default)]
pub struct Logins {
    /// Where they were read, for saying so.
    file: Option<PathBuf>,
    /// Each registry's entry: a login, or why its entry cannot be used (said only when that
    /// registry asks), and whether its key named the registry exactly.
    by_registry: HashMap<String, (Result<Login, String>, bool)>,
    /// The credential helpers named for one registry each (`credHelpers`), by key as written:
    /// Docker looks a registry's host up there exactly (Docker Hub's as its URL key). An empty
    /// name sends that registry to `auths`.
    helpers: HashMap<String, String>,
    /// A credential helper keeping every login (`credsStore`).
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

/// Why there is no login to send to a registry that asks for one.
#[derive(Debug)]
pub enum NoLogin {
    /// Nothing is written for that registry.
    None(String),
    /// Something is, that plumb cannot send (a credential helper's, an OAuth token): the agent's
    /// operator can mend it.
    Unusable(String),
}

impl Logins {
    /// The logins of `$DOCKER_CONFIG/config.json`, or of `~/.docker/config.json`; none when
    /// the file is not there.
    pub fn from_environment() -> Result<Logins, String> {
        let folder = match std::env::var_os("DOCKER_CONFIG") {
            Some(folder) => PathBuf::from(folder),
            None => match std::env::var_os("HOME") {
                Some(home) => Path::new(&home).join(".docker"),
                None => return Ok(Logins::default()),
            },
        };
        let file = folder.join("config.json");
        match std::fs::File::open(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Logins::default()),
            opened => Logins::read_from(&file, opened),
        }
    }

    /// The logins of the Docker `config.json` at `file`.
    pub fn read(file: &Path) -> Result<Logins, String> {
        Logins::read_from(file, std::fs::File::open(file))
    }

    fn read_from(file: &Path, opened: std::io::Result<std::fs::File>) -> Result<Logins, String> {
        let problem = |why: String| format!("registry logins `{}`: {why}", file.display());
        let mut text = Vec::new();
        opened
            .and_then(|f| f.take(LIMIT + 1).read_to_end(&mut text))
            .map_err(|e| problem(e.to_string()))?;
        if text.len() as u64 > LIMIT {
            return Err(problem(format!("more than {LIMIT} bytes")));
        }
        let config: serde_json::Value = serde_json::from_slice(&text).map_err(|e| problem(format!("not JSON: {e}")))?;
        let mut logins = Logins {
            file: Some(file.to_owned()),
            ..Logins::default()
        };
        let auths = config.get("auths").and_then(|a| a.as_object());
        for (key, entry) in auths.into_iter().flatten() {
            let (registry, exact) = registry_of(key);
            let login = match login(entry) {
                Ok(Some(login)) => Ok(login),
                Ok(None) => continue,
                Err(why) => Err(format!("`auths.{key}` of {}: {why}", file.display())),
            };
            // A key naming the registry exactly wins over one naming a URL of it, as Docker's
            // own lookup has it; of two alike, the first.
            match logins.by_registry.get(&registry) {
                Some((_, true)) => {}
                Some((_, false)) if !exact => {}
                _ => {
                    logins.by_registry.insert(registry, (login, exact));
                }
            }
        }
        let helpers = config.get("credHelpers").and_then(|h| h.as_object());
        for (key, helper) in helpers.into_iter().flatten() {
            let helper = helper.as_str().unwrap_or_default().to_owned();
            logins.helpers.insert(key.clone(), helper);
        }
        // An empty `credsStore` names no helper, as in Docker.
        let store = config
            .get("credsStore")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty());
        logins.store = store.map(str::to_owned);
        Ok(logins)
    }

    /// The login for `registry` (a host and port, `docker.io` for Docker Hub), or why there is
    /// none. Docker's own order: a credential helper named for that registry, then one named
    /// for every registry, then `auths`; plumb runs no helper, so a registry a helper answers
    /// for has no login plumb can send, whatever `auths` holds.
    pub fn of(&self, registry: &str) -> Result<&Login, NoLogin> {
        let file = self.file.as_deref().map(Path::display);
        let key = if registry == "docker.io" { DOCKER_HUB } else { registry };
        let helper = self.helpers.get(key);
        if let (Some(helper), Some(file)) = (helper.filter(|h| !h.is_empty()), &file) {
            return Err(NoLogin::Unusable(format!(
                "the login for {registry} is kept by the credential helper `{helper}` (`credHelpers` of \
                 {file}), which plumb does not run: put it in that file's `auths` and remove its \
                 `credHelpers` entry"
            )));
        }
        // A registry whose helper is named empty skips `credsStore`, as in Docker.
        if let (Some(store), Some(file), None) = (&self.store, &file, helper) {
            return Err(NoLogin::Unusable(format!(
                "{file} keeps its logins with the credential helper `{store}` (`credsStore`), which \
                 plumb does not run and which Docker asks before `auths`: put the login for {registry} \
                 in `auths` and remove `credsStore`"
            )));
        }
        match (self.by_registry.get(registry), file) {
            (Some((Ok(login), _)), _) => Ok(login),
            (Some((Err(why), _)), _) => Err(NoLogin::Unusable(why.clone())),
            (None, Some(file)) => Err(NoLogin::None(format!("{file} holds no login for {registry}"))),
            (None, None) => Err(NoLogin::None(
                "the agent has no registry logins (`config.json` in `$DOCKER_CONFIG` or `~/.docker`)".to_owned(),
            )),
        }
    }
}

/// The login an entry of `auths` holds: `auth` (base64 of `user:password`), or `username` and
/// `password`; `None` for an entry with neither (`docker logout` leaves `{}`).
fn login(entry: &serde_json::Value) -> Result<Option<Login>, String> {
    let field = |name: &str| entry.get(name).and_then(|v| v.as_str()).filter(|v| !v.is_empty());
    // Some registries (Azure's) write an OAuth refresh token beside an `auth` with no password.
    if field("identitytoken").is_some() {
        return Err(
            "an `identitytoken` (an OAuth refresh token) is not read: log in with a password or an access token"
                .to_owned(),
        );
    }
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
        (None, None) => Ok(None),
    }
}

/// The registry host a key of `auths` names, lowercased, and whether the key is exactly that
/// host (or Docker Hub's own key): keys may be URLs (`https://ghcr.io`, Docker Hub's
/// `https://index.docker.io/v1/`) or hosts.
fn registry_of(key: &str) -> (String, bool) {
    let host = key.split_once("://").map_or(key, |(_, rest)| rest);
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => ("docker.io".to_owned(), key == DOCKER_HUB),
        _ => {
            let exact = host.eq_ignore_ascii_case(key);
            (host, exact)
        }
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

    fn unusable(found: &Logins, registry: &str) -> String {
        match found.of(registry) {
            Err(NoLogin::Unusable(why)) => why,
            other => panic!("{registry}: {other:?}"),
        }
    }

    #[test]
    fn logins_are_read_by_registry_as_docker_writes_them() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let other = base64::engine::general_purpose::STANDARD.encode("mallory:other");
        let found = logins(&format!(
            r#"{{"auths": {{"https://index.docker.io/v1/access-token": {{"auth": "{other}"}},
                "https://index.docker.io/v1/": {{"auth": "{auth}"}},
                "https://ghcr.io": {{"auth": "{other}"}}, "GHCR.io": {{"username": "bob", "password": "ghp_token"}},
                "http://localhost:5000": {{"auth": "{auth}"}}, "quay.io": {{}},
                "docker.example.com": {{"auth": "{auth}"}}}},
              "credHelpers": {{"123.dkr.ecr.us-east-1.amazonaws.com": "ecr-login", "docker.example.com": "pass"}}}}"#
        ))
        .unwrap();
        assert_eq!(found.of("docker.io").unwrap().basic(), format!("Basic {auth}"));
        assert_eq!(found.of("localhost:5000").unwrap().username, "alice");
        assert_eq!(found.of("ghcr.io").unwrap().password, "ghp_token");
        assert!(matches!(found.of("quay.io"), Err(NoLogin::None(why)) if why.contains("holds no login for quay.io")));
        let helper = unusable(&found, "123.dkr.ecr.us-east-1.amazonaws.com");
        assert!(helper.contains("credential helper `ecr-login`"), "{helper}");
        // Docker asks a registry's helper before its `auths` entry: so does plumb, and says it
        // runs none.
        assert!(unusable(&found, "docker.example.com").contains("credential helper `pass`"));
        // The password is never shown.
        assert!(!format!("{:?}", found.of("ghcr.io").unwrap()).contains("ghp_token"));
    }

    #[test]
    fn an_entry_that_cannot_be_used_is_named_when_its_registry_asks() {
        let found = logins(
            r#"{"auths": {"ghcr.io": {"auth": "not base64!"}, "quay.io": {"username": "bob"},
                "acme.azurecr.io": {"auth": "MDAwMDAwMDAtMDAwMDo=", "identitytoken": "x"},
                "docker.example.com": {"auth": "YWxpY2U6cw=="}}}"#,
        )
        .unwrap();
        assert!(unusable(&found, "ghcr.io").contains("`auths.ghcr.io` of "));
        assert!(unusable(&found, "ghcr.io").ends_with("`auth` is not base64"));
        assert!(unusable(&found, "quay.io").contains("`username` and `password` go together"));
        assert!(unusable(&found, "acme.azurecr.io").contains("`identitytoken`"));
        // The others' entries are read all the same.
        assert_eq!(found.of("docker.example.com").unwrap().username, "alice");
        // A helper for every registry comes before `auths`, in Docker as in plumb.
        let stored = logins(
            r#"{"auths": {"docker.example.com": {"auth": "YWxpY2U6cw=="}, "quay.io": {"auth": "YWxpY2U6cw=="}},
                "credsStore": "desktop", "credHelpers": {"ghcr.io": "gh", "quay.io": "", "https://index.docker.io/v1/": "hub"}}"#,
        )
        .unwrap();
        for registry in ["docker.example.com", "registry.gitlab.com"] {
            assert!(unusable(&stored, registry).contains("credential helper `desktop`"));
        }
        // A registry's own helper is named before the store; an empty one sends it to `auths`.
        assert!(unusable(&stored, "ghcr.io").contains("credential helper `gh`"));
        assert!(unusable(&stored, "docker.io").contains("credential helper `hub`"));
        assert_eq!(stored.of("quay.io").unwrap().username, "alice");
        // An empty store is none.
        let none = logins(r#"{"auths": {"quay.io": {"auth": "YWxpY2U6cw=="}}, "credsStore": ""}"#).unwrap();
        assert_eq!(none.of("quay.io").unwrap().username, "alice");
        assert!(logins("not json").err().unwrap().contains("not JSON"));
        let large = format!("{{\"auths\": {{}}, \"pad\": \"{}\"}}", "x".repeat(LIMIT as usize));
        assert!(logins(&large).err().unwrap().contains("more than"));
    }
}
