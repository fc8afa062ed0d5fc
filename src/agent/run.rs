//! The agent: for every repository it follows, a fetch worker turns triggers into authenticated
//! heads and a dispatcher hands them to the workers of that repository's environments (see
//! `dispatch`). Environments belong to one repository each; workers, the status board, metrics
//! and the HTTP API are shared.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::dispatch::{Shared, dispatch};
use super::environment::Publish;
use super::fetcher::{FetchError, Fetcher};
use super::lease::{Leader, LeaseError};
use super::record::{self, ClusterRecord};
use crate::access::{Access, Identity};
use crate::api::{self, Api, Workers};
use crate::appconfig::token::{self, Handout, Tokens};
use crate::error::chain;
use crate::ledger::{Ledger, LedgerError, Recorder};
use crate::notify::route::{Origin, Origins, Routes};
use crate::secret::Secret;
use crate::source::{Remote, TrackedRef};
use crate::spec::sealed::Keyring;
use crate::target::local::process::Backoff;
use crate::trigger::webhook::{self, Provider, Receiver, Receivers};
use crate::trigger::{Doorbell, Poll, Reason, doorbell};
use crate::trust::TrustRoot;

/// What the agent follows and where it keeps its state.
pub struct Settings {
    /// The state directory: caches, trust state, ledger, logs, working directories.
    pub state: PathBuf,
    /// The config repositories followed; each environment belongs to one of them.
    pub repositories: Vec<Repository>,
    /// How often each environment is checked for drift.
    pub heal_every: Duration,
    /// How the local target restarts replicas that exit.
    pub backoff: Backoff,
    /// Where the HTTP API listens, if anywhere.
    pub listen: Option<SocketAddr>,
    /// The bearer token of the API's mutating calls, an admin named `api-token`; without it
    /// and without `identities` they are refused.
    pub api_token: Option<Secret>,
    /// Named callers of the API, each with a token, a role and the environments it acts on.
    pub identities: Vec<Identity>,
    /// Whether the API's reads (`/api/v1/…`, `/metrics`) need an identity too.
    pub protect_reads: bool,
    /// Serve the API over TLS (client certificates as identities when a client CA is given).
    pub tls: Option<crate::tls::TlsSettings>,
    /// Apply only while holding this Lease (agents run as several replicas).
    pub leader: Option<Leader>,
    /// Where the ledger's events are told.
    pub notifications: Notifications,
    /// The API's address as the services reach it (`servicesUrl`), for their `PLUMB_CONFIG_URL`.
    pub services_url: Option<String>,
    /// The key the services' read tokens are made with, when not the state folder's.
    pub read_token_key_file: Option<PathBuf>,
}

/// The notification channels, and the agent's address for their links.
#[derive(Clone, Default)]
pub struct Notifications {
    /// The channels.
    pub channels: Vec<Arc<crate::notify::Channel>>,
    /// The agent's address as people reach it (`externalUrl`).
    pub external_url: Option<String>,
}

impl Settings {
    /// Who may call what on the API.
    pub fn access(&self) -> Access {
        Access::new(self.api_token.clone(), self.identities.clone(), self.protect_reads)
    }
}

/// One config repository and what the agent takes from it.
#[derive(Clone)]
pub struct Repository {
    /// Its name: the webhook route (`POST /hooks/{name}`) and its cache's folder.
    pub name: String,
    /// Where it is fetched from.
    pub remote: Remote,
    /// The ref whose head is applied.
    pub reference: TrackedRef,
    /// The folder of the configuration inside the repository (`""` for the root).
    pub folder: String,
    /// Where commit authentication starts.
    pub trust_root: TrustRoot,
    /// When to fetch.
    pub poll: Poll,
    /// The environments applied; `None` for all the repository declares (only when it is the
    /// agent's one repository).
    pub environments: Option<Vec<String>>,
    /// The forge's webhooks, received at `POST /hooks/{name}` beside the API.
    pub webhook: Option<(Provider, Secret)>,
    /// Certificate authorities an `https://` host may chain to, beside the system's.
    pub ca_file: Option<PathBuf>,
    /// The identities its encrypted values are opened with (none: a commit holding one is
    /// refused).
    pub keys: Arc<Keyring>,
    /// What its containers may take on the agent's hosts (capabilities, devices…): nothing
    /// unless the configuration grants it.
    pub allow: Arc<crate::spec::rights::Allow>,
}

impl Settings {
    /// What must hold across repositories: at least one, unique names, and every environment
    /// followed by one repository only — so with several, each lists its environments.
    pub fn check(&self) -> Result<(), String> {
        if self.repositories.is_empty() {
            return Err("the agent follows no repository".to_owned());
        }
        let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
        let mut names = std::collections::BTreeSet::new();
        for repository in &self.repositories {
            if !names.insert(repository.name.as_str()) {
                return Err(format!("two repositories are named `{}`", repository.name));
            }
            match &repository.environments {
                None if self.repositories.len() > 1 => {
                    return Err(format!(
                        "repository `{}` must list its environments: with several repositories each environment belongs to one",
                        repository.name
                    ));
                }
                None => {}
                Some(environments) => {
                    for environment in environments {
                        if let Some(owner) = owners.insert(environment, &repository.name) {
                            return Err(format!(
                                "environment `{environment}` is followed from both `{owner}` and `{}`; it must belong to one repository",
                                repository.name
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The repositories conflict (see [`Settings::check`]).
    #[error("{0}")]
    Repositories(String),
    /// A repository's cache or trust state cannot be opened.
    #[error("repository `{name}`: {source}")]
    Fetch {
        /// The repository.
        name: String,
        /// The cause.
        #[source]
        source: FetchError,
    },
    /// A repository's certificate authorities cannot be read.
    #[error("cannot trust the certificate authorities in {file}: {reason}")]
    Authorities {
        /// The file.
        file: PathBuf,
        /// What libgit2 said.
        reason: String,
    },
    /// The ledger cannot be opened.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The Lease cannot be used.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The API's address cannot be listened on.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The API's certificate, key or client CA cannot be used.
    #[error("the API's TLS settings cannot be used: {0}")]
    Tls(String),
    /// The key of the services' read tokens cannot be read or made.
    #[error("cannot use the key of the services' read tokens, {file}")]
    Tokens {
        /// The key's file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running agent.
pub struct Agent {
    /// Each repository's doorbell, by name: rings its fetch worker.
    pub doorbells: BTreeMap<String, Doorbell>,
    /// The settings that change while the agent runs.
    pub live: Live,
    /// Where the API listens, when it does.
    pub api: Option<SocketAddr>,
}

impl Agent {
    /// Asks every repository to fetch now.
    pub fn ring(&self, reason: Reason) {
        for doorbell in self.doorbells.values() {
            doorbell.ring(reason.clone());
        }
    }
}

/// The settings a running agent takes at once: the API token and whether reads need it, each
/// repository's polling and environments. The others need a restart.
#[derive(Clone)]
pub struct Live {
    access: Arc<std::sync::RwLock<Access>>,
    repositories: Arc<BTreeMap<String, Followed>>,
}

/// What changes while a repository is followed.
#[derive(Clone)]
pub(super) struct Followed {
    /// Rung on an update, so new environments are picked up without waiting for a poll.
    doorbell: Doorbell,
    poll: Arc<watch::Sender<Poll>>,
    environments: Arc<std::sync::RwLock<Option<Vec<String>>>>,
}

impl Followed {
    /// The environments followed now.
    pub(super) fn environments(&self) -> Option<Vec<String>> {
        self.environments.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Live {
    /// Takes the live part of `settings`; a repository added or removed waits for a restart.
    pub fn update(&self, settings: &Settings) {
        *self.access.write().unwrap_or_else(|e| e.into_inner()) = settings.access();
        for repository in &settings.repositories {
            let Some(followed) = self.repositories.get(&repository.name) else {
                continue;
            };
            *followed.environments.write().unwrap_or_else(|e| e.into_inner()) = repository.environments.clone();
            followed.poll.send_replace(repository.poll.clone());
            followed.doorbell.ring(Reason::Manual);
        }
    }
}

/// Runs the agent until `cancel`; then stops every environment's processes and returns.
/// `started` receives the doorbells once the fetch workers run.
pub async fn run(
    settings: Settings,
    cancel: CancellationToken,
    started: Option<tokio::sync::oneshot::Sender<Agent>>,
) -> Result<(), AgentError> {
    settings.check().map_err(AgentError::Repositories)?;
    let mut fetchers = Vec::new();
    let mut followed = BTreeMap::new();
    for repository in &settings.repositories {
        if let Some(file) = &repository.ca_file {
            crate::source::trust_authorities(file).map_err(|e| AgentError::Authorities {
                file: file.clone(),
                reason: e.message().to_owned(),
            })?;
        }
        let fetcher = Fetcher::open(
            settings.state.join("repositories").join(&repository.name),
            repository.remote.clone(),
            vec![repository.reference.clone()],
            repository.trust_root.clone(),
        )
        .map_err(|source| AgentError::Fetch {
            name: repository.name.clone(),
            source,
        })?;
        let (door, bell) = doorbell();
        followed.insert(
            repository.name.clone(),
            Followed {
                doorbell: door,
                poll: Arc::new(watch::channel(repository.poll.clone()).0),
                environments: Arc::new(std::sync::RwLock::new(repository.environments.clone())),
            },
        );
        fetchers.push((fetcher, bell));
    }
    let ledger = settings.state.join("ledger.sqlite");
    // Opened once here so a ledger that cannot be opened stops the agent at start; what the
    // outbox delivered a week ago is forgotten.
    if let Err(e) = Ledger::open(&ledger)?.outbox_prune(7) {
        tracing::warn!(error = %chain(&e), "Cannot prune the outbox.");
    }
    let routes = routes(&settings);
    let live = Live {
        access: Arc::new(std::sync::RwLock::new(settings.access())),
        repositories: Arc::new(followed),
    };
    let shared = Shared {
        state: settings.state.clone(),
        ledger,
        heal_every: settings.heal_every,
        backoff: settings.backoff,
        publish: Publish::default(),
        workers: Workers::default(),
        unread: Arc::new(AtomicUsize::new(settings.repositories.len())),
        cancel: cancel.clone(),
        record: None,
        notices: routes.clone().map(|r| r as Arc<dyn crate::ledger::Notices>),
        handout: None,
    };
    let tokens = match &settings.read_token_key_file {
        Some(file) => Tokens::from_file(file).map_err(|source| (file.clone(), source)),
        None => Tokens::open(&settings.state).map_err(|source| (settings.state.join(token::KEY_FILE), source)),
    }
    .map(Arc::new)
    .map_err(|(file, source)| AgentError::Tokens { file, source })?;
    let api = match settings.listen {
        Some(addr) => Some(serve(addr, &settings, &live, &shared, &tokens).await?),
        None => None,
    };
    // The services read their configuration where the API is served.
    let shared = Shared {
        handout: api.map(|bound| Arc::new(handout(&settings, bound, tokens.clone()))),
        ..shared
    };
    // With several replicas, only the Lease's holder goes on; the others wait here, serving the
    // API (not ready). The holder keeps the environments' records in the cluster too.
    let release = CancellationToken::new();
    // However this ends, the Lease is handed over (below, once everything has stopped).
    let _released = release.clone().drop_guard();
    let (renewing, copying, shared) = match &settings.leader {
        Some(leader) => {
            let Some(renewing) = leader.hold(&cancel, &release).await? else {
                return Ok(());
            };
            let record = Arc::new(ClusterRecord::new(leader).await?);
            let (witness, copying) = record::witness(record.clone(), shared.ledger.clone());
            let shared = Shared {
                record: Some((record, witness)),
                ..shared
            };
            (Some(renewing), Some(copying), shared)
        }
        None => (None, None, shared),
    };
    // Only the Lease's holder records, so only it sends.
    let senders = match &routes {
        Some(routes) => send(routes, &shared).await?,
        None => Vec::new(),
    };
    let mut tasks = Vec::new();
    for ((mut fetcher, bell), repository) in fetchers.into_iter().zip(settings.repositories) {
        if let Some((record, _)) = &shared.record {
            fetcher.keep_in_cluster(record.clone(), &repository.name).await;
        }
        let followed = live.repositories[&repository.name].clone();
        followed.doorbell.ring(Reason::Manual);
        let (tx, fetched) = mpsc::channel(4);
        let fetch = tokio::spawn(fetcher.run(bell, followed.poll.subscribe(), tx, cancel.clone()));
        let dispatcher = tokio::spawn(dispatch(repository, followed, fetched, shared.clone()));
        tasks.push((fetch, dispatcher));
    }
    if let Some(started) = started {
        let _ = started.send(Agent {
            doorbells: live
                .repositories
                .iter()
                .map(|(name, followed)| (name.clone(), followed.doorbell.clone()))
                .collect(),
            live: live.clone(),
            api,
        });
    }
    cancel.cancelled().await;
    for (fetch, dispatcher) in tasks {
        let _ = fetch.await;
        let Ok(environments) = dispatcher.await else { continue };
        for (_, environment) in environments {
            environment.stop().await;
        }
    }
    for sender in senders {
        let _ = sender.await;
    }
    // Everything that applies has stopped: the records' last changes reach the cluster, then
    // the Lease goes to the next agent.
    drop(shared);
    if let Some(copying) = copying
        && tokio::time::timeout(Duration::from_secs(10), copying).await.is_err()
    {
        tracing::warn!("The records' last changes did not reach the cluster in time.");
    }
    release.cancel();
    if let Some(renewing) = renewing {
        let _ = renewing.await;
    }
    Ok(())
}

/// What the services are handed when the API is served at `bound`: its address as each target
/// reaches it, and their tokens.
fn handout(settings: &Settings, bound: SocketAddr, tokens: Arc<Tokens>) -> Handout {
    let scheme = if settings.tls.is_some() { "https" } else { "http" };
    // A process on the agent's host reaches an API listening everywhere on loopback.
    let host = match bound.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::IpAddr::from([127, 0, 0, 1]),
        ip if ip.is_unspecified() => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let on_host = format!("{scheme}://{}", SocketAddr::new(host, bound.port()));
    Handout::new(tokens, settings.services_url.clone(), Some(on_host))
}

/// The notification channels' routes, when there are channels.
fn routes(settings: &Settings) -> Option<Arc<Routes>> {
    let notifications = &settings.notifications;
    if notifications.channels.is_empty() {
        return None;
    }
    let repositories = settings
        .repositories
        .iter()
        .map(|r| Origin {
            name: r.name.clone(),
            url: r.remote.display_url(),
            cache: settings.state.join("repositories").join(&r.name).join("cache"),
            environments: r.environments.clone(),
        })
        .collect();
    let origins = Origins {
        external_url: notifications.external_url.clone(),
        repositories,
    };
    Some(Arc::new(Routes::new(notifications.channels.clone(), origins)))
}

/// Starts each channel's sender on its own connection to the ledger.
async fn send(routes: &Routes, shared: &Shared) -> Result<Vec<tokio::task::JoinHandle<()>>, AgentError> {
    let mut senders = Vec::new();
    for channel in routes.channels() {
        let ledger = Recorder::open(shared.ledger.clone()).await?;
        senders.push(tokio::spawn(crate::notify::deliver::run(
            channel.clone(),
            ledger,
            routes.bell(&channel.name),
            shared.publish.metrics.clone(),
            shared.cancel.clone(),
        )));
    }
    Ok(senders)
}

/// Starts the HTTP API (and each repository's webhook receiver) on `addr`; returns the bound
/// address.
async fn serve(
    addr: SocketAddr,
    settings: &Settings,
    live: &Live,
    shared: &Shared,
    tokens: &Arc<Tokens>,
) -> Result<SocketAddr, AgentError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| AgentError::Listen { addr, source })?;
    let mut routes = api::router(Api {
        board: shared.publish.board.clone(),
        metrics: shared.publish.metrics.clone(),
        workers: shared.workers.clone(),
        ledger: shared.ledger.clone(),
        access: live.access.clone(),
        unread: shared.unread.clone(),
        config_events: shared.publish.config_events.clone(),
        tokens: tokens.clone(),
        stop: shared.cancel.clone(),
        sessions: Arc::default(),
        verified: Arc::default(),
        tls: settings.tls.is_some(),
        channels: Arc::new(
            settings
                .notifications
                .channels
                .iter()
                .map(|c| (c.name.clone(), c.kind.name()))
                .collect(),
        ),
    });
    let mut receivers = Receivers::default();
    for repository in &settings.repositories {
        let Some((provider, secret)) = &repository.webhook else {
            continue;
        };
        let receiver = Receiver {
            provider: *provider,
            secret: secret.clone(),
            refs: [repository.reference.name().to_owned()].into(),
            doorbell: live.repositories[&repository.name].doorbell.clone(),
        };
        if let Err(e) = receivers.insert(&repository.name, receiver) {
            tracing::error!(repository = %repository.name, error = %e, "Webhooks are off.");
        }
    }
    let receivers = receivers.counted(shared.publish.metrics.clone());
    routes = routes.merge(webhook::router(receivers, webhook::DEFAULT_BODY_LIMIT));
    let stop = shared.cancel.clone();
    if let Some(tls) = &settings.tls {
        let config = crate::tls::server_config(tls).map_err(AgentError::Tls)?;
        tokio::spawn(crate::tls::serve(listener, config, routes, stop));
        tracing::info!(address = %bound, "The API listens over TLS.");
        return Ok(bound);
    }
    tokio::spawn(async move {
        let served = axum::serve(listener, routes)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "The API stopped.");
        }
    });
    tracing::info!(address = %bound, "The API listens.");
    Ok(bound)
}
