//! The agent over one repository: its fetch worker turns triggers into authenticated heads; each
//! head is rendered once, and every environment's share goes to that environment's worker,
//! created (with its target) the first time the environment shows up. The HTTP API, when
//! configured, serves beside them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use git2::Oid;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::environment::{Head, Input, Publish, Worker, desired_of};
use super::fetcher::{Fetch, FetchError, Fetcher};
use crate::api::{self, Api, Workers};
use crate::ledger::{Ledger, LedgerError};
use crate::secret::Secret;
use crate::source::{Remote, SourceError, TrackedRef};
use crate::spec::model::environment::Target as TargetSpec;
use crate::target::local::LocalRuntime;
use crate::target::local::process::Backoff;
use crate::trigger::webhook::{self, Provider, Receiver, Receivers};
use crate::trigger::{Doorbell, Poll, Reason, doorbell};
use crate::trust::{Decision, TrustRoot};

/// What the agent follows and where it keeps its state.
pub struct Settings {
    /// The state directory: caches, trust state, ledger, logs, working directories.
    pub state: PathBuf,
    /// The repository.
    pub remote: Remote,
    /// The ref whose head is applied.
    pub reference: TrackedRef,
    /// The folder of the configuration inside the repository (`""` for the root).
    pub folder: String,
    /// Where commit authentication starts.
    pub trust_root: TrustRoot,
    /// When to fetch.
    pub poll: Poll,
    /// The environments applied; `None` for all the repository declares.
    pub environments: Option<Vec<String>>,
    /// How often each environment is checked for drift.
    pub heal_every: Duration,
    /// How the local target restarts replicas that exit.
    pub backoff: Backoff,
    /// Where the HTTP API listens, if anywhere.
    pub listen: Option<SocketAddr>,
    /// The bearer token of the API's mutating calls; without one they are refused.
    pub api_token: Option<Secret>,
    /// Whether the API's reads (`/api/v1/…`, `/metrics`) need the token too.
    pub protect_reads: bool,
    /// Webhooks from the forge, received at `POST /hooks/config` beside the API.
    pub webhook: Option<(Provider, Secret)>,
}

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The repository's cache or trust state cannot be opened.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The ledger cannot be opened.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The API's address cannot be listened on.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running agent: ring its doorbell to fetch now.
pub struct Agent {
    /// Rings the fetch worker (webhooks, manual syncs).
    pub doorbell: Doorbell,
    /// The settings that change while the agent runs.
    pub live: Live,
    /// Where the API listens, when it does.
    pub api: Option<SocketAddr>,
}

/// The settings a running agent takes at once: the API token and whether reads need it,
/// polling, the environments followed. The others need a restart.
#[derive(Clone)]
pub struct Live {
    token: Arc<std::sync::RwLock<Option<Secret>>>,
    protect_reads: Arc<AtomicBool>,
    /// Rung on an update, so new environments are picked up without waiting for a poll.
    doorbell: Doorbell,
    poll: Arc<tokio::sync::watch::Sender<Poll>>,
    environments: Arc<std::sync::RwLock<Option<Vec<String>>>>,
}

impl Live {
    fn new(settings: &Settings, doorbell: Doorbell) -> Live {
        Live {
            doorbell,
            token: Arc::new(std::sync::RwLock::new(settings.api_token.clone())),
            protect_reads: Arc::new(AtomicBool::new(settings.protect_reads)),
            poll: Arc::new(tokio::sync::watch::channel(settings.poll.clone()).0),
            environments: Arc::new(std::sync::RwLock::new(settings.environments.clone())),
        }
    }

    /// Takes the live part of `settings`.
    pub fn update(&self, settings: &Settings) {
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = settings.api_token.clone();
        self.protect_reads.store(settings.protect_reads, Ordering::Relaxed);
        *self.environments.write().unwrap_or_else(|e| e.into_inner()) = settings.environments.clone();
        self.poll.send_replace(settings.poll.clone());
        self.doorbell.ring(Reason::Manual);
    }
}

/// A started environment, and its worker's input.
type Started = (Environment, mpsc::Sender<Input>);

struct Environment {
    /// Where its heads go (the newest replaces one not yet taken).
    heads: tokio::sync::watch::Sender<Option<Head>>,
    runtime: Arc<LocalRuntime>,
    task: tokio::task::JoinHandle<()>,
}

/// Runs the agent until `cancel`; then stops every environment's processes and returns.
/// `started` receives the doorbell once the fetch worker runs.
pub async fn run(
    settings: Settings,
    cancel: CancellationToken,
    started: Option<tokio::sync::oneshot::Sender<Agent>>,
) -> Result<(), AgentError> {
    let repo_dir = settings.state.join("repository");
    let fetcher = Fetcher::open(
        repo_dir,
        settings.remote.clone(),
        vec![settings.reference.clone()],
        settings.trust_root.clone(),
    )?;
    let ledger_path = settings.state.join("ledger.sqlite");
    // Opened once here so a ledger that cannot be opened stops the agent at start.
    drop(Ledger::open(&ledger_path)?);
    let publish = Publish::default();
    let (door, bell) = doorbell();
    let live = Live::new(&settings, door.clone());
    let workers: Workers = Arc::default();
    let ready = Arc::new(AtomicBool::new(false));
    let api_addr = match settings.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Listen { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| AgentError::Listen { addr, source })?;
            let mut routes = api::router(Api {
                board: publish.board.clone(),
                metrics: publish.metrics.clone(),
                workers: workers.clone(),
                ledger: ledger_path.clone(),
                token: live.token.clone(),
                protect_reads: live.protect_reads.clone(),
                ready: ready.clone(),
            });
            if let Some((provider, secret)) = &settings.webhook {
                let mut receivers = Receivers::default();
                let receiver = Receiver {
                    provider: *provider,
                    secret: secret.clone(),
                    refs: [settings.reference.name().to_owned()].into(),
                    doorbell: door.clone(),
                };
                if let Err(e) = receivers.insert("config", receiver) {
                    tracing::error!(error = %e, "Webhooks are off.");
                }
                let receivers = receivers.counted(publish.metrics.clone());
                routes = routes.merge(webhook::router(receivers, webhook::DEFAULT_BODY_LIMIT));
            }
            let stop = cancel.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, routes)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "The API stopped.");
                }
            });
            tracing::info!(address = %bound, "The API listens.");
            Some(bound)
        }
        None => None,
    };
    door.ring(Reason::Manual);
    let (tx, mut fetched) = mpsc::channel(4);
    let polls = live.poll.subscribe();
    let fetch_task = tokio::spawn(fetcher.run(bell, polls, tx, cancel.clone()));
    if let Some(started) = started {
        let _ = started.send(Agent {
            live: live.clone(),
            doorbell: door.clone(),
            api: api_addr,
        });
    }
    let mut environments: BTreeMap<String, Environment> = BTreeMap::new();
    let mut dispatched: Option<Oid> = None;
    let mut followed = settings.environments.clone();
    loop {
        let fetch = tokio::select! {
            _ = cancel.cancelled() => break,
            fetch = fetched.recv() => match fetch {
                Some(fetch) => fetch,
                None => break,
            },
        };
        let only = live.environments.read().unwrap_or_else(|e| e.into_inner()).clone();
        if only != followed {
            // Environments were added or removed: hand the head out again.
            dispatched = None;
            followed.clone_from(&only);
        }
        if let Some(heads) = heads(&settings, only, fetch, &mut dispatched, &publish).await {
            for (name, head) in heads {
                if !environments.contains_key(&name) {
                    match start(&settings, &name, &head, &ledger_path, &publish, &cancel) {
                        Ok(Some((environment, input))) => {
                            environments.insert(name.clone(), environment);
                            workers
                                .write()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(name.clone(), input);
                        }
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::error!(environment = %name, error = %e, "Cannot start the environment's worker.");
                            continue;
                        }
                    }
                }
                environments[&name].heads.send_replace(Some(head));
            }
            ready.store(true, Ordering::Relaxed);
        }
    }
    cancel.cancel();
    let _ = fetch_task.await;
    for (_, environment) in environments {
        let _ = environment.task.await;
        environment.runtime.shutdown().await;
    }
    Ok(())
}

/// The rendered head of every environment followed, from one fetch; `None` when the fetch
/// brought nothing new to apply (`dispatched` is the head handed out last). A head refused by
/// trust is shown on every environment's status.
async fn heads(
    settings: &Settings,
    only: Option<Vec<String>>,
    fetch: Fetch,
    dispatched: &mut Option<Oid>,
    publish: &Publish,
) -> Option<Vec<(String, Head)>> {
    publish
        .metrics
        .fetch(if fetch.result.is_ok() { "ok" } else { "failed" });
    let (updates, repository) = match fetch.result {
        Ok(updates) => (updates, fetch.repository),
        Err(e) => {
            tracing::warn!(error = %e, "Fetch failed; what runs keeps running.");
            return None;
        }
    };
    let update = updates.into_iter().find(|u| u.reference == settings.reference)?;
    let signer = match &update.decision {
        Decision::Authenticated(report) => {
            report
                .commits
                .iter()
                .find(|c| c.id == update.head)
                .and_then(|c| match &c.outcome {
                    crate::trust::Outcome::Authenticated { signer, .. } => Some(signer.clone()),
                    crate::trust::Outcome::Refused(_) => None,
                })
        }
        // The last authenticated head: handed out once after a (re)start.
        Decision::Unchanged if *dispatched == Some(update.head) => return None,
        Decision::Unchanged => None,
        Decision::Refused(report) => {
            if let Some((culprit, refusal)) = &report.refusal {
                let reason = format!(
                    "commit {culprit} refused by the signing policy ({}): {refusal}",
                    refusal.kind()
                );
                publish.metrics.refused(refusal.kind());
                for status in publish.board.write().unwrap_or_else(|e| e.into_inner()).values_mut() {
                    status.refused = Some(reason.clone());
                }
            }
            return None;
        }
        Decision::AlreadyRefused(_) => return None,
    };
    let head = update.head;
    let folder = settings.folder.clone();
    let rendered = tokio::task::spawn_blocking(move || render_all(&repository, head, &folder, only, signer))
        .await
        .ok()?;
    match rendered {
        Ok(heads) => {
            *dispatched = Some(head);
            Some(heads)
        }
        Err(e) => {
            tracing::error!(commit = %head, error = %e, "Cannot read the authenticated head.");
            None
        }
    }
}

fn render_all(
    repository: &std::path::Path,
    head: Oid,
    folder: &str,
    only: Option<Vec<String>>,
    signer: Option<String>,
) -> Result<Vec<(String, Head)>, SourceError> {
    let repo = git2::Repository::open_bare(repository).map_err(|source| SourceError::NotARepository {
        path: repository.to_owned(),
        source,
    })?;
    let tree = crate::source::GitTree::at(repo, head, folder)?;
    let rendered = match crate::spec::render(&tree, None) {
        Ok(rendered) => rendered,
        Err(crate::spec::RenderError::Source(e)) => return Err(e),
        Err(e) => unreachable!("no environment was asked for: {e}"),
    };
    let mut names: Vec<String> = rendered.environments.keys().cloned().collect();
    for diagnostic in &rendered.diagnostics {
        names.extend(diagnostic.environments.iter().cloned());
    }
    names.sort();
    names.dedup();
    if let Some(only) = &only {
        names.retain(|n| only.contains(n));
    }
    let mut rendered = rendered;
    let heads = names
        .into_iter()
        .map(|name| {
            let desired = desired_of(&mut rendered, &name);
            let head = Head {
                commit: head,
                signer: signer.clone(),
                desired,
                repository: repository.to_owned(),
                folder: folder.to_owned(),
            };
            (name, head)
        })
        .collect();
    Ok(heads)
}

/// Starts the worker of environment `name` on the target its head names; `None` when it
/// cannot be started from this head (invalid, or a target this agent does not run).
fn start(
    settings: &Settings,
    name: &str,
    head: &Head,
    ledger: &std::path::Path,
    publish: &Publish,
    cancel: &CancellationToken,
) -> Result<Option<Started>, Box<dyn std::error::Error + Send + Sync>> {
    let desired = match &head.desired {
        Ok(desired) => desired,
        Err(reason) => {
            tracing::error!(environment = name, commit = %head.commit, %reason, "Refused: the environment cannot be rendered.");
            return Ok(None);
        }
    };
    let TargetSpec::Local(local) = &desired.target else {
        tracing::error!(
            environment = name,
            target = desired.target.name(),
            "This agent runs only the local target so far; the environment is skipped."
        );
        return Ok(None);
    };
    let runtime = Arc::new(LocalRuntime::new(
        name,
        &local.address,
        local.port_offset,
        &settings.state,
        settings.backoff,
    )?);
    let worker = Worker::new(
        name,
        runtime.clone(),
        Ledger::open(ledger)?,
        settings.heal_every,
        publish.clone(),
    )?;
    let (input, commands) = mpsc::channel(4);
    let (heads, receiver) = tokio::sync::watch::channel(None);
    let task = tokio::spawn(worker.run(receiver, commands, cancel.child_token()));
    Ok(Some((Environment { heads, runtime, task }, input)))
}
