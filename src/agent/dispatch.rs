//! One repository's dispatcher: takes its fetch worker's decisions, renders each authenticated
//! head once, and hands every environment's share to that environment's worker — started (with
//! its target) the first time the environment shows up, and started again on its new target when
//! a commit changes it. A refusal is shown on the environments of this repository only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use git2::Oid;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::environment::{Head, Input, Publish, Worker, desired_of};
use super::fetcher::Fetch;
use super::record::ClusterRecord;
use super::run::{Followed, Repository};
use crate::api::Workers;
use crate::appconfig::token::Handed;
use crate::appconfig::token::Handout;
use crate::error::chain;
use crate::ledger::{Notices, Recorder, Witness};
use crate::source::SourceError;
use crate::spec::memo::Memo;
use crate::spec::model::environment::Target as TargetSpec;
use crate::spec::sealed::Keyring;
use crate::target::Target;
use crate::target::compose::ComposeRuntime;
use crate::target::kubernetes::KubernetesRuntime;
use crate::target::local::LocalRuntime;
use crate::target::local::process::Backoff;
use crate::trust::Decision;

/// What every repository's dispatcher shares.
#[derive(Clone)]
pub(super) struct Shared {
    pub state: PathBuf,
    pub ledger: PathBuf,
    pub heal_every: Duration,
    pub backoff: Backoff,
    pub publish: Publish,
    pub workers: Workers,
    /// Repositories whose first fetch has not been handled yet; the agent is ready at zero.
    pub unread: Arc<AtomicUsize>,
    pub cancel: CancellationToken,
    /// The environments' records in the cluster, and the witness keeping them, with leader
    /// election.
    pub record: Option<(Arc<ClusterRecord>, Witness)>,
    /// What decides the notifications the environments' entries queue.
    pub notices: Option<Arc<dyn Notices>>,
    /// Where the services read their configuration on the API, when it is served.
    pub handout: Option<Arc<Handout>>,
}

/// A started environment.
pub(super) struct Environment {
    /// Where its heads go (the newest replaces one not yet taken).
    heads: tokio::sync::watch::Sender<Option<Head>>,
    /// The target it was started on, as the repository wrote it.
    target: TargetSpec,
    runtime: Arc<dyn Target>,
    task: tokio::task::JoinHandle<()>,
    /// Stops its worker alone.
    cancel: CancellationToken,
}

impl Environment {
    /// Stops the worker (a step under way ends or is parked) and what the agent runs for it.
    pub(super) async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
        self.runtime.shutdown().await;
    }
}

/// A started environment, and its worker's input.
type Started = (Environment, mpsc::Sender<Input>);

/// Dispatches `repository`'s fetches until `fetched` closes or the agent stops; returns the
/// environments it started, for the agent to stop.
pub(super) async fn dispatch(
    repository: Repository,
    followed: Followed,
    mut fetched: mpsc::Receiver<Fetch>,
    shared: Shared,
) -> BTreeMap<String, Environment> {
    let mut environments: BTreeMap<String, Environment> = BTreeMap::new();
    let mut dispatched: Option<Oid> = None;
    let mut following = repository.environments.clone();
    let mut read = false;
    // What each render keeps for the next: a commit changing one file re-renders what it affects.
    let memo = Arc::new(Mutex::new(Memo::new(repository.keys.clone(), repository.allow.clone())));
    loop {
        let fetch = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            fetch = fetched.recv() => match fetch {
                Some(fetch) => fetch,
                None => break,
            },
        };
        let only = followed.environments();
        if only != following {
            // Environments were added or removed: hand the head out again.
            dispatched = None;
            following.clone_from(&only);
        }
        // The environments started, and those named in the configuration that are not yet
        // (a first fetch that fails is shown on them too).
        let mut refused_on: Vec<String> = environments.keys().cloned().collect();
        for name in only.iter().flatten() {
            if !refused_on.contains(name) {
                refused_on.push(name.clone());
            }
        }
        let Some(heads) = heads(&repository, only, fetch, &memo, &mut dispatched, &shared, &refused_on).await else {
            continue;
        };
        for (name, head) in heads {
            let moved = match (environments.get(&name), &head.desired) {
                (Some(environment), Ok(desired)) => environment.target != desired.target,
                _ => false,
            };
            if moved && let Some(environment) = environments.remove(&name) {
                tracing::warn!(environment = %name, commit = %head.commit, "The environment's target changed: its worker starts again on the new one; what runs on the old one is left as it is.");
                environment.stop().await;
            }
            if !environments.contains_key(&name) {
                match start(&shared, &name, &head).await {
                    Ok(Some((environment, input))) => {
                        environments.insert(name.clone(), environment);
                        shared
                            .workers
                            .write()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(name.clone(), input);
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::error!(repository = %repository.name, environment = %name, error = %e, "Cannot start the environment's worker; trying again at the next fetch.");
                        // Hand the head out again next time: the target may be back by then.
                        dispatched = None;
                        continue;
                    }
                }
            }
            environments[&name].heads.send_replace(Some(head));
        }
        if !read {
            read = true;
            shared.unread.fetch_sub(1, Ordering::Relaxed);
        }
    }
    environments
}

/// The rendered head of every environment followed, from one fetch (rendered with `memo`);
/// `None` when the fetch brought nothing new to apply (`dispatched` is the head handed out
/// last). A head refused by trust is shown on the status of the environments in `refused_on`.
async fn heads(
    repository: &Repository,
    only: Option<Vec<String>>,
    fetch: Fetch,
    memo: &Arc<Mutex<Memo>>,
    dispatched: &mut Option<Oid>,
    shared: &Shared,
    refused_on: &[String],
) -> Option<Vec<(String, Head)>> {
    let publish = &shared.publish;
    publish
        .metrics
        .fetch(if fetch.result.is_ok() { "ok" } else { "failed" });
    let (updates, cache) = match fetch.result {
        Ok(updates) => {
            publish.metrics.stage("fetch", fetch.took.fetch);
            if updates
                .iter()
                .any(|u| matches!(u.decision, Decision::Authenticated(_) | Decision::Refused(_)))
            {
                publish.metrics.stage("authenticate", fetch.took.authenticate);
            }
            for name in refused_on {
                publish.block(name, "fetch", None);
            }
            (updates, fetch.repository)
        }
        Err(e) => {
            let reason = format!("cannot fetch `{}`: {}", repository.name, chain(&e));
            tracing::warn!(repository = %repository.name, error = %reason, "Fetch failed; what runs keeps running.");
            for name in refused_on {
                publish.block(name, "fetch", Some(reason.clone()));
            }
            return None;
        }
    };
    let update = updates.into_iter().find(|u| u.reference == repository.reference)?;
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
                // Each started environment's worker records it (and so notifies) and shows it;
                // one not started yet shows it only.
                let workers = shared.workers.read().unwrap_or_else(|e| e.into_inner()).clone();
                for name in refused_on {
                    let Some(worker) = workers.get(name).cloned() else {
                        let mut board = publish.board.write().unwrap_or_else(|e| e.into_inner());
                        if let Some(status) = board.get_mut(name) {
                            status.refused = Some(reason.clone());
                        }
                        continue;
                    };
                    let refused = Input::Refused {
                        commit: culprit.to_string(),
                        kind: refusal.kind().to_owned(),
                        reason: reason.clone(),
                    };
                    // A worker busy with a rollout takes it when it is done: the fetches go on.
                    tokio::spawn(async move { worker.send(refused).await });
                }
            }
            return None;
        }
        Decision::AlreadyRefused(_) => return None,
    };
    let head = update.head;
    let folder = repository.folder.clone();
    let lent = (
        repository.keys.clone(),
        repository.allow.clone(),
        shared.handout.clone(),
    );
    let memo = memo.clone();
    let (rendered, took) = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let mut memo = memo.lock().unwrap_or_else(|e| e.into_inner());
        let rendered = render_all(&cache, head, &folder, &mut memo, &lent, only, signer);
        drop(memo);
        let took = started.elapsed();
        super::memory::release_free_memory();
        (rendered, took)
    })
    .await
    .ok()?;
    publish.metrics.stage("render", took);
    match rendered {
        Ok(heads) => {
            *dispatched = Some(head);
            Some(heads)
        }
        Err(e) => {
            tracing::error!(repository = %repository.name, commit = %head, error = %e, "Cannot read the authenticated head.");
            None
        }
    }
}

fn render_all(
    cache: &Path,
    head: Oid,
    folder: &str,
    memo: &mut Memo,
    (keys, allow, handout): &(Arc<Keyring>, Arc<crate::spec::rights::Allow>, Option<Arc<Handout>>),
    only: Option<Vec<String>>,
    signer: Option<String>,
) -> Result<Vec<(String, Head)>, SourceError> {
    let repo = git2::Repository::open_bare(cache).map_err(|source| SourceError::NotARepository {
        path: cache.to_owned(),
        source,
    })?;
    let subject = repo
        .find_commit(head)
        .ok()
        .and_then(|c| c.summary().ok().flatten().map(str::to_owned));
    let tree = crate::source::GitTree::at(repo, head, folder)?;
    let rendered = match memo.render(&tree) {
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
    match (&only, handout) {
        (Some(only), _) => names.retain(|n| only.contains(n)),
        (None, Some(handout)) => handout.keep_only(&names),
        (None, None) => {}
    }
    let mut rendered = rendered;
    let heads = names
        .into_iter()
        .map(|name| {
            let desired = desired_of(&mut rendered, &name, handout.as_deref(), Handed::Kept);
            let head = Head {
                commit: head,
                subject: subject.clone(),
                signer: signer.clone(),
                desired,
                repository: cache.to_owned(),
                folder: folder.to_owned(),
                keys: keys.clone(),
                allow: allow.clone(),
                handout: handout.clone(),
            };
            (name, head)
        })
        .collect();
    Ok(heads)
}

/// Starts the worker of environment `name` on the target its head names; `None` when it
/// cannot be started from this head (invalid, or a target this agent does not run).
async fn start(
    shared: &Shared,
    name: &str,
    head: &Head,
) -> Result<Option<Started>, Box<dyn std::error::Error + Send + Sync>> {
    let desired = match &head.desired {
        Ok(desired) => desired,
        Err(reason) => {
            tracing::error!(environment = name, commit = %head.commit, %reason, "Refused: the environment cannot be rendered.");
            return Ok(None);
        }
    };
    let runtime: Arc<dyn Target> = match &desired.target {
        TargetSpec::Local(local) => {
            // Sweeping what a killed agent left running reads /proc and waits for the processes
            // to go: blocking work, kept off the async threads.
            let (name, address, state) = (name.to_owned(), local.address.clone(), shared.state.clone());
            let (port_offset, backoff) = (local.port_offset, shared.backoff);
            let started =
                tokio::task::spawn_blocking(move || LocalRuntime::new(&name, &address, port_offset, &state, backoff));
            Arc::new(started.await??)
        }
        TargetSpec::Compose(compose) => Arc::new(ComposeRuntime::new(name, compose, &shared.state).await?),
        TargetSpec::Kubernetes(kubernetes) => Arc::new(KubernetesRuntime::new(name, kubernetes).await?),
    };
    let ledger = Recorder::open(shared.ledger.clone()).await?;
    if let Some(notices) = shared.notices.clone() {
        ledger
            .call(move |l| {
                l.notify_with(notices);
                Ok(())
            })
            .await?;
    }
    if let Some((record, witness)) = &shared.record {
        record.adopt(&ledger, name).await;
        let witness = witness.clone();
        ledger
            .call(move |l| {
                l.witnessed_by(witness);
                Ok(())
            })
            .await?;
    }
    let worker = Worker::new(name, runtime.clone(), ledger, shared.heal_every, shared.publish.clone()).await?;
    let (input, commands) = mpsc::channel(4);
    let (heads, receiver) = tokio::sync::watch::channel(None);
    let cancel = shared.cancel.child_token();
    let task = tokio::spawn(worker.run(receiver, commands, cancel.clone()));
    let environment = Environment {
        heads,
        target: desired.target.clone(),
        runtime,
        task,
        cancel,
    };
    Ok(Some((environment, input)))
}
