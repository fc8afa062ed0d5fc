//! The agent's configuration file (`plumb agent --config agent.yaml`): what it follows, how it
//! authenticates, where it listens. Checked against its JSON Schema (`schemas/agent.schema.json`)
//! with the file, line and field of every problem; secrets are read from the files it names,
//! never written in it. On a change the file is read again: a bad edit is refused and the running
//! configuration stays; the API token, polling and the environments followed apply at once, the
//! rest at the next start. One repository is given as `repository`; several as `repositories`,
//! each owning the environments it lists.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use git2::Oid;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::lease::Leader;
use super::run::{Repository, Settings};
use crate::secret::Secret;
use crate::source::{Auth, Remote, TrackedRef};
use crate::spec::Diagnostic;
use crate::spec::model::scalar::Duration;
use crate::spec::schema::{Schema, schema_of};
use crate::spec::sealed::Keyring;
use crate::spec::yaml::{self, Limits};
use crate::target::local::process::Backoff;
use crate::trigger::webhook::Provider;
use crate::trigger::{Poll, Schedule};
use crate::trust::{Policy, TrustRoot};

/// The agent's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// Always `plumb/v1`.
    pub api_version: String,
    /// Always `Agent`.
    pub kind: String,
    /// The state directory: caches, trust state, ledger, logs, working folders.
    #[serde(default = "default_state")]
    pub state: PathBuf,
    /// Where the HTTP API listens.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// A file holding the bearer token of the API's mutating calls (at least 16 characters).
    pub api_token_file: Option<PathBuf>,
    /// Whether the API's reads (`/api/v1/…`, `/metrics`) need the token (or an identity) too.
    #[serde(default)]
    pub protect_reads: bool,
    /// Serve the API over TLS, with client certificates as identities when a client CA is
    /// given.
    pub tls: Option<TlsConfig>,
    /// Named callers of the API, each with its own token, role and environments; the ledger
    /// records which one synced, rolled back or resolved. `apiTokenFile` stays an `admin` named
    /// `api-token`.
    pub access: Option<AccessConfig>,
    /// The config repository followed, when there is one (its webhook is `POST /hooks/config`).
    pub repository: Option<RepositoryConfig>,
    /// The config repositories followed, when there are several: each names the environments
    /// it owns, and no environment belongs to two.
    pub repositories: Option<Vec<RepositoryConfig>>,
    /// The environments applied from `repository`; all it declares when absent.
    pub environments: Option<Vec<String>>,
    /// How often each environment is checked for drift.
    #[serde(default = "default_heal")]
    pub heal_every: Duration,
    /// Run as several replicas: only the holder of this Lease applies.
    pub leader_election: Option<LeaderElection>,
    /// The agent's address as people reach it (`https://plumb.example.com`): the links in
    /// notifications.
    pub external_url: Option<String>,
    /// The agent's API as the services it runs reach it (`http://plumb.plumb.svc:7070`):
    /// their `PLUMB_CONFIG_URL` starts with it. Without it, only local environments' services
    /// get the variables (the address the API listens on); on Kubernetes the token travels in a
    /// Secret, so set it where the agent may write Secrets in the environments' namespaces.
    pub services_url: Option<String>,
    /// The key the services' read tokens are made with (32 bytes or more): set it, from a
    /// Secret, when the agent runs as several replicas, so they all make the same tokens.
    /// Default: `config-tokens.key` in the state folder, made at the first start.
    pub read_token_key_file: Option<PathBuf>,
    /// Where events are told: webhooks, Slack, email, GitHub and GitLab deployment statuses.
    pub notifications: Option<Vec<crate::notify::ChannelConfig>>,
}

/// The API's certificate and the CA of its callers' certificates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// The agent's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// The CA (PEM) client certificates must chain to; without it none is asked for.
    pub client_ca_file: Option<PathBuf>,
}

/// Who may call the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessConfig {
    /// Whether reads (`/api/v1/…`, `/metrics`) need an identity (any role).
    #[serde(default)]
    pub reads: Reads,
    /// The identities.
    #[serde(default)]
    pub identities: Vec<IdentityConfig>,
}

/// Whether the API's reads need an identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Reads {
    /// Anyone may read.
    #[default]
    Open,
    /// Only a known identity.
    Authenticated,
}

/// A named caller of the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityConfig {
    /// Its name, as the ledger records it.
    #[schemars(regex(pattern = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"))]
    pub name: String,
    /// A file holding its bearer token (at least 16 characters; never written here).
    pub token_file: Option<PathBuf>,
    /// Or: the subject of the client certificate it presents to the API over TLS, as RFC 4514
    /// writes it (`CN=alice,O=ops`); the certificate must chain to `tls.clientCaFile`.
    pub client_subject: Option<String>,
    /// `viewer` (reads), `deployer` (sync, rollback, resolve migrations), `approver`
    /// (approve), `admin` (everything).
    pub role: crate::access::Role,
    /// The environments it acts on; every one when absent.
    pub environments: Option<Vec<String>>,
}

/// The Lease agents running as several replicas elect their leader with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderElection {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub lease: String,
    /// A kubeconfig file; in-cluster configuration (or `KUBECONFIG`) when absent.
    pub kubeconfig: Option<PathBuf>,
    /// How long a Lease not renewed stays held.
    #[serde(default = "default_lease")]
    pub duration: Duration,
    /// This agent's identity; `POD_NAME`, else the host's name and process id.
    pub identity: Option<String>,
}

fn default_lease() -> Duration {
    Duration::secs(15)
}

/// A config repository.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepositoryConfig {
    /// Its name (required under `repositories`, `config` otherwise): the webhook route
    /// `POST /hooks/{name}` and the folder of its cache.
    #[schemars(regex(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub name: Option<String>,
    /// `https://`, `ssh://`, `git://`, `file://` URL, or a path.
    pub url: String,
    /// The branch (or full ref) applied.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// The folder of the configuration inside the repository.
    #[serde(default)]
    pub folder: String,
    /// Where authentication starts: a trusted commit, or a policy for the first commits.
    pub trust_root: TrustRootConfig,
    /// Credentials for a private repository.
    pub credentials: Option<Credentials>,
    /// Certificate authorities (PEM) an `https://` host's certificate may chain to, beside the
    /// system's: for a forge behind a private CA. Trusted for every repository of the agent.
    pub ca_file: Option<PathBuf>,
    /// When to fetch without being asked.
    #[serde(default)]
    pub poll: PollConfig,
    /// Receive the forge's push webhooks at `POST /hooks/{name}`.
    pub webhook: Option<WebhookConfig>,
    /// The environments this repository owns (under `repositories`, required).
    pub environments: Option<Vec<String>>,
    /// How its encrypted values (`ENC[age,…]`) are opened; without, a commit holding one is
    /// refused.
    pub decryption: Option<DecryptionConfig>,
    /// What the repository's containers may take on this agent's hosts: capabilities,
    /// privileged mode, host devices and namespaces, security options. Nothing by default.
    #[serde(default)]
    pub allow: crate::spec::rights::Allow,
}

/// The identities a repository's encrypted values are opened with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecryptionConfig {
    /// Files of age X25519 identities (`AGE-SECRET-KEY-1…`, one per line, as `age-keygen`
    /// writes them), readable by the agent alone.
    pub identities: Vec<PathBuf>,
}

/// Where commit authentication starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum TrustRootConfig {
    /// A full commit id taken as authenticated.
    Commit(String),
    /// An `openpgp-policy.toml` file that judges the repository's first commits.
    PolicyFile(PathBuf),
}

/// Credentials: an HTTPS token, or an SSH key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum Credentials {
    /// HTTPS basic authentication with a token as the password.
    Token {
        /// The user name the host expects (`x-access-token`, `oauth2`…).
        #[serde(default = "default_token_user")]
        username: String,
        /// A file holding the token.
        token_file: PathBuf,
    },
    /// An SSH key; the host's key must be in `knownHostsFile`.
    Ssh {
        /// The private key file.
        private_key_file: PathBuf,
        /// A file holding the key's passphrase, when it has one.
        passphrase_file: Option<PathBuf>,
        /// The OpenSSH `known_hosts` file.
        known_hosts_file: PathBuf,
        /// Accept (and record) a host `knownHostsFile` does not list. Off by default.
        #[serde(default)]
        accept_unknown_hosts: bool,
    },
}

/// Polling settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PollConfig {
    /// How often to fetch; `0s` relies on webhooks and schedules alone.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// The fraction by which each wait varies (0 to 0.5).
    #[serde(default = "default_jitter")]
    #[schemars(range(min = 0.0, max = 0.5))]
    pub jitter: f64,
    /// Five-field cron expressions that also trigger a fetch.
    #[serde(default)]
    pub schedules: Vec<String>,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            interval: default_interval(),
            jitter: default_jitter(),
            schedules: Vec::new(),
        }
    }
}

/// Webhooks from the forge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookConfig {
    /// `github`, `gitlab`, `gitea`, `bitbucket` or `generic`.
    #[schemars(regex(pattern = "^(github|gitlab|gitea|bitbucket|generic)$"))]
    pub provider: String,
    /// A file holding the shared secret (at least 16 characters).
    pub secret_file: PathBuf,
}

fn default_state() -> PathBuf {
    PathBuf::from(".plumb")
}
fn default_listen() -> String {
    "127.0.0.1:7070".to_owned()
}
fn default_heal() -> Duration {
    Duration::secs(5)
}
fn default_branch() -> String {
    "main".to_owned()
}
fn default_token_user() -> String {
    "x-access-token".to_owned()
}
fn default_interval() -> Duration {
    Duration::secs(30)
}
fn default_jitter() -> f64 {
    0.1
}

static SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| Schema::compile(&schema_of::<AgentConfig>()).expect("the agent schema is valid"));

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid: every problem, with its line and field.
    #[error("{}", explain(.0))]
    Invalid(Vec<Diagnostic>),
}

/// One line per problem, with its hint.
fn explain(problems: &[Diagnostic]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|d| match &d.hint {
            Some(hint) => format!("{d} ({hint})"),
            None => d.to_string(),
        })
        .collect();
    lines.join("\n")
}

impl AgentConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: Arc<str> = Arc::from(path.display().to_string());
        let limits = Limits {
            max_bytes: 1 << 20,
            ..Limits::default()
        };
        let node = yaml::parse(&file, &bytes, limits).map_err(|e| ConfigError::Invalid(vec![e.into()]))?;
        let json = node.to_json();
        let mut problems = Vec::new();
        SCHEMA.check(&node, &json, &mut problems);
        if problems.is_empty() {
            match crate::spec::render::typed::<AgentConfig>(&node, json) {
                Ok(config) => {
                    config.check(&node, &mut problems);
                    if problems.is_empty() {
                        return Ok(config);
                    }
                }
                Err(problem) => problems.push(problem),
            }
        }
        Err(ConfigError::Invalid(problems))
    }

    /// What the schema cannot say: values that must parse.
    fn check(&self, node: &crate::spec::node::Node, out: &mut Vec<Diagnostic>) {
        use crate::spec::node::Step;
        let mut at = |path: &[&str], message: String| {
            let steps: Vec<Step> = path.iter().map(|k| Step::Key((*k).to_owned())).collect();
            let (found, _) = node.locate(&steps);
            out.push(Diagnostic::new(&found.at, message).path(&crate::spec::node::Path(steps)));
        };
        if self.api_version != "plumb/v1" || self.kind != "Agent" {
            at(
                &["kind"],
                "an agent configuration starts with `apiVersion: plumb/v1` and `kind: Agent`".to_owned(),
            );
        }
        if let Err(e) = self.listen.parse::<SocketAddr>() {
            at(
                &["listen"],
                format!("`{}` is not an address and port: {e}", self.listen),
            );
        }
        let mut names: Vec<&str> = Vec::new();
        match (&self.repository, &self.repositories) {
            (Some(_), None) => {}
            (None, Some(list)) if !list.is_empty() => {
                if self.environments.is_some() {
                    at(
                        &["environments"],
                        "with `repositories`, each repository lists its own `environments`".to_owned(),
                    );
                }
            }
            (Some(_), Some(_)) => at(
                &["repositories"],
                "give either `repository` (one) or `repositories` (several), not both".to_owned(),
            ),
            (None, _) => at(
                &["repository"],
                "the agent follows no repository: give `repository` or `repositories`".to_owned(),
            ),
        }
        for (place, name, repository) in self.each_repository() {
            let mut at = |tail: &[&str], message: String| {
                let mut steps = place.clone();
                steps.extend(tail.iter().map(|k| Step::Key((*k).to_owned())));
                let (found, _) = node.locate(&steps);
                out.push(Diagnostic::new(&found.at, message).path(&crate::spec::node::Path(steps)));
            };
            if self.repositories.is_some() {
                if repository.name.is_none() {
                    at(&[], "every repository under `repositories` needs a `name`".to_owned());
                }
                if repository.environments.is_none() {
                    at(
                        &[],
                        "every repository under `repositories` lists the `environments` it owns".to_owned(),
                    );
                }
            } else if repository.environments.is_some() && self.environments.is_some() {
                at(
                    &["environments"],
                    "`environments` is given twice: here and at the top".to_owned(),
                );
            }
            if names.contains(&name) {
                at(&["name"], format!("two repositories are named `{name}`"));
            }
            names.push(name);
            if let TrustRootConfig::Commit(commit) = &repository.trust_root
                && (commit.len() != 40 || Oid::from_str(commit).is_err())
            {
                at(
                    &["trustRoot", "commit"],
                    format!("`{commit}` is not a full commit id (40 hex digits)"),
                );
            }
            for schedule in &repository.poll.schedules {
                if let Err(e) = Schedule::parse(schedule) {
                    at(&["poll", "schedules"], e.to_string());
                }
            }
        }
        for (key, url) in [("externalUrl", &self.external_url), ("servicesUrl", &self.services_url)] {
            if let Some(url) = url
                && let Err(e) = crate::notify::http::check_url(url)
            {
                let steps = vec![Step::Key(key.to_owned())];
                let (found, _) = node.locate(&steps);
                out.push(Diagnostic::new(&found.at, e).path(&crate::spec::node::Path(steps)));
            }
        }
        let mut channels: Vec<&str> = Vec::new();
        for (i, channel) in self.notifications.iter().flatten().enumerate() {
            let mut at = |tail: &[String], message: String| {
                let mut steps = vec![Step::Key("notifications".to_owned()), Step::Index(i)];
                steps.extend(tail.iter().map(|k| Step::Key(k.clone())));
                let (found, _) = node.locate(&steps);
                out.push(Diagnostic::new(&found.at, message).path(&crate::spec::node::Path(steps)));
            };
            if channels.contains(&channel.name.as_str()) {
                at(
                    &["name".to_owned()],
                    format!("two channels are named `{}`", channel.name),
                );
            }
            channels.push(&channel.name);
            for (path, message) in channel.problems() {
                at(&path, message);
            }
        }
        let mut owners: Vec<(&str, &str)> = Vec::new();
        for (place, name, repository) in self.each_repository() {
            for (index, environment) in repository.environments.iter().flatten().enumerate() {
                if let Some((_, owner)) = owners.iter().find(|(e, _)| e == environment) {
                    let mut steps = place.clone();
                    steps.extend([Step::Key("environments".to_owned()), Step::Index(index)]);
                    let (found, _) = node.locate(&steps);
                    out.push(
                        Diagnostic::new(
                            &found.at,
                            format!("environment `{environment}` already belongs to repository `{owner}`"),
                        )
                        .path(&crate::spec::node::Path(steps)),
                    );
                }
                owners.push((environment, name));
            }
        }
    }

    /// Every repository with its place in the file and its name.
    /// The API's named callers, their tokens read; two with one name or one token are refused.
    fn identities(&self) -> anyhow::Result<Vec<crate::access::Identity>> {
        let mut identities: Vec<crate::access::Identity> = Vec::new();
        for (i, config) in self.access.iter().flat_map(|a| &a.identities).enumerate() {
            let at = format!("access.identities[{i}]");
            let token = match (&config.token_file, &config.client_subject) {
                (Some(file), None) => Some(secret(file, &format!("{at}.tokenFile"), 16)?),
                (None, Some(_)) => {
                    anyhow::ensure!(
                        self.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some()),
                        "{at}.clientSubject: client certificates need `tls.clientCaFile` (the CA they chain to)"
                    );
                    None
                }
                _ => anyhow::bail!("{at}: give exactly one of `tokenFile` and `clientSubject`"),
            };
            let reserved = self.api_token_file.is_some() && config.name == crate::access::Identity::API_TOKEN;
            anyhow::ensure!(
                !reserved && identities.iter().all(|other| other.name != config.name),
                "{at}.name: `{}` names another identity already",
                config.name
            );
            anyhow::ensure!(
                token.is_none() || identities.iter().all(|other| other.token != token),
                "{at}.tokenFile: the token is another identity's too; each needs its own"
            );
            anyhow::ensure!(
                config.client_subject.is_none()
                    || identities.iter().all(|other| other.subject != config.client_subject),
                "{at}.clientSubject: another identity has that subject too"
            );
            identities.push(crate::access::Identity {
                name: config.name.clone(),
                token,
                subject: config.client_subject.clone(),
                role: config.role,
                environments: config.environments.clone(),
            });
        }
        Ok(identities)
    }

    fn each_repository(&self) -> Vec<(Vec<crate::spec::node::Step>, &str, &RepositoryConfig)> {
        use crate::spec::node::Step;
        let single = self.repository.iter().map(|r| {
            (
                vec![Step::Key("repository".to_owned())],
                r.name.as_deref().unwrap_or("config"),
                r,
            )
        });
        let several = self.repositories.iter().flatten().enumerate().map(|(i, r)| {
            (
                vec![Step::Key("repositories".to_owned()), Step::Index(i)],
                r.name.as_deref().unwrap_or(""),
                r,
            )
        });
        single.chain(several).collect()
    }

    /// The agent's settings: secret files read, trust roots resolved. Errors name the field
    /// and the file.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let repositories = self
            .each_repository()
            .into_iter()
            .map(|(place, name, repository)| {
                let environments = repository.environments.clone().or_else(|| self.environments.clone());
                repository.settings(&field(&place), name, environments)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Settings {
            state: self.state.clone(),
            repositories,
            heal_every: self.heal_every.0,
            backoff: Backoff::default(),
            listen: Some(self.listen.parse()?),
            api_token: match &self.api_token_file {
                Some(file) => Some(secret(file, "apiTokenFile", 16)?),
                None => None,
            },
            identities: self.identities()?,
            tls: self.tls.as_ref().map(|t| crate::tls::TlsSettings {
                cert_file: t.cert_file.clone(),
                key_file: t.key_file.clone(),
                client_ca_file: t.client_ca_file.clone(),
            }),
            protect_reads: self.protect_reads || self.access.as_ref().is_some_and(|a| a.reads == Reads::Authenticated),
            notifications: super::run::Notifications {
                channels: self
                    .notifications
                    .iter()
                    .flatten()
                    .enumerate()
                    .map(|(i, c)| c.channel(&format!("notifications[{i}]")).map(Arc::new))
                    .collect::<anyhow::Result<_>>()?,
                external_url: self.external_url.clone(),
            },
            services_url: self.services_url.clone(),
            read_token_key_file: self.read_token_key_file.clone(),
            leader: self.leader_election.as_ref().map(|l| Leader {
                namespace: l.namespace.clone(),
                lease: l.lease.clone(),
                kubeconfig: l.kubeconfig.clone(),
                duration: l.duration.0,
                identity: l.identity.clone().unwrap_or_else(super::lease::identity),
            }),
        })
    }

    /// The fields whose change takes effect only at the next start.
    pub fn needs_restart(&self, newer: &AgentConfig) -> Vec<String> {
        let mut fields = Vec::new();
        if self.state != newer.state {
            fields.push("state".to_owned());
        }
        if self.listen != newer.listen {
            fields.push("listen".to_owned());
        }
        if self.heal_every != newer.heal_every {
            fields.push("healEvery".to_owned());
        }
        if self.leader_election != newer.leader_election {
            fields.push("leaderElection".to_owned());
        }
        if self.notifications != newer.notifications || self.external_url != newer.external_url {
            fields.push("notifications/externalUrl".to_owned());
        }
        if self.services_url != newer.services_url || self.read_token_key_file != newer.read_token_key_file {
            fields.push("servicesUrl/readTokenKeyFile".to_owned());
        }
        let before = self.each_repository();
        let after = newer.each_repository();
        for (place, name, new) in &after {
            let Some((_, _, old)) = before.iter().find(|(_, n, _)| n == name) else {
                fields.push(format!("{} (a new repository)", field(place)));
                continue;
            };
            let at = field(place);
            if old.url != new.url || old.branch != new.branch || old.folder != new.folder {
                fields.push(format!("{at}.url/branch/folder"));
            }
            if old.trust_root != new.trust_root {
                fields.push(format!("{at}.trustRoot"));
            }
            if old.credentials != new.credentials || old.ca_file != new.ca_file {
                fields.push(format!("{at}.credentials/caFile"));
            }
            if old.webhook != new.webhook {
                fields.push(format!("{at}.webhook"));
            }
            if old.decryption != new.decryption {
                fields.push(format!("{at}.decryption"));
            }
        }
        for (place, name, _) in &before {
            if !after.iter().any(|(_, n, _)| n == name) {
                fields.push(format!("{} (removed)", field(place)));
            }
        }
        fields
    }
}

/// A place in the file as its field name (`repositories[1]`).
fn field(place: &[crate::spec::node::Step]) -> String {
    use crate::spec::node::Step;
    place
        .iter()
        .map(|step| match step {
            Step::Key(key) => format!(".{key}"),
            Step::Index(i) => format!("[{i}]"),
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_owned()
}

impl RepositoryConfig {
    /// This repository's settings; errors name fields under `at`.
    fn settings(&self, at: &str, name: &str, environments: Option<Vec<String>>) -> anyhow::Result<Repository> {
        use anyhow::Context;
        let trust_root = match &self.trust_root {
            TrustRootConfig::Commit(commit) => TrustRoot::Commit(Oid::from_str(commit)?),
            TrustRootConfig::PolicyFile(file) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("{at}.trustRoot.policyFile: cannot read {}", file.display()))?;
                TrustRoot::Policy(Policy::parse(&text).with_context(|| format!("in {}", file.display()))?)
            }
        };
        let auth = match &self.credentials {
            None => Auth::None,
            Some(Credentials::Token { username, token_file }) => Auth::Token {
                username: username.clone(),
                token: secret(token_file, &format!("{at}.credentials.token.tokenFile"), 1)?,
            },
            Some(Credentials::Ssh {
                private_key_file,
                passphrase_file,
                known_hosts_file,
                accept_unknown_hosts,
            }) => Auth::Ssh {
                private_key: private_key_file.clone(),
                passphrase: match passphrase_file {
                    Some(file) => Some(secret(file, &format!("{at}.credentials.ssh.passphraseFile"), 1)?),
                    None => None,
                },
                known_hosts: known_hosts_file.clone(),
                accept_unknown_hosts: *accept_unknown_hosts,
            },
        };
        let url = if Path::new(&self.url).exists() {
            format!("file://{}", std::fs::canonicalize(&self.url)?.display())
        } else {
            self.url.clone()
        };
        let webhook = match &self.webhook {
            Some(hook) => {
                let provider =
                    Provider::named(&hook.provider).with_context(|| format!("{at}.webhook.provider: unknown"))?;
                Some((
                    provider,
                    secret(&hook.secret_file, &format!("{at}.webhook.secretFile"), 16)?,
                ))
            }
            None => None,
        };
        if let Some(file) = &self.ca_file {
            anyhow::ensure!(file.is_file(), "{at}.caFile: cannot read {}", file.display());
        }
        let keys = match &self.decryption {
            Some(decryption) => {
                Keyring::read(&decryption.identities).with_context(|| format!("{at}.decryption.identities"))?
            }
            None => Keyring::default(),
        };
        Ok(Repository {
            keys: Arc::new(keys),
            allow: Arc::new(self.allow.clone()),
            name: name.to_owned(),
            ca_file: self.ca_file.clone(),
            remote: Remote {
                url,
                auth,
                ..Remote::anonymous("")
            },
            reference: TrackedRef::new(&self.branch),
            folder: self.folder.clone(),
            trust_root,
            poll: self.poll.poll()?,
            environments,
            webhook,
        })
    }
}

impl PollConfig {
    /// The polling settings.
    pub fn poll(&self) -> anyhow::Result<Poll> {
        let schedules = self
            .schedules
            .iter()
            .map(|s| Schedule::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Poll {
            interval: (!self.interval.0.is_zero()).then_some(self.interval.0),
            jitter: self.jitter,
            schedules,
            ..Poll::default()
        })
    }
}

/// A secret read from `file` (trailing whitespace dropped), at least `min` characters.
pub fn secret(file: &Path, field: &str, min: usize) -> anyhow::Result<Secret> {
    use anyhow::Context;
    let text = std::fs::read_to_string(file).with_context(|| format!("{field}: cannot read {}", file.display()))?;
    let secret = Secret::new(text.trim());
    anyhow::ensure!(
        secret.expose().len() >= min,
        "{field}: the secret in {} is shorter than {min} characters",
        file.display()
    );
    Ok(secret)
}

/// Reads `path` again whenever its content changes (checked every second) and hands the live
/// part of a valid new configuration to `live`; a bad edit is logged with its lines and the
/// running configuration stays. Runs until `cancel`.
pub async fn watch(
    path: PathBuf,
    started: AgentConfig,
    live: super::run::Live,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut seen = tokio::fs::read(&path).await.unwrap_or_default();
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let Ok(bytes) = tokio::fs::read(&path).await else {
            continue;
        };
        if bytes == seen {
            continue;
        }
        seen = bytes;
        let newer = match AgentConfig::load(&path) {
            Ok(newer) => newer,
            Err(e) => {
                tracing::error!(config = %path.display(), problems = %e, "Refused the edited configuration; the running one stays.");
                continue;
            }
        };
        let settings = match newer.settings() {
            Ok(settings) => settings,
            Err(e) => {
                tracing::error!(config = %path.display(), error = format!("{e:#}"), "Refused the edited configuration; the running one stays.");
                continue;
            }
        };
        let later = started.needs_restart(&newer);
        if !later.is_empty() {
            tracing::warn!(config = %path.display(), fields = ?later, "These changes take effect at the next start.");
        }
        live.update(&settings);
        tracing::info!(config = %path.display(), "Configuration reloaded: the API token, protected reads, polling and environments apply now.");
    }
}
