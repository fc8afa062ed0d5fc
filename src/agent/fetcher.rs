//! The single fetch worker of one repository: waits for its doorbell or its timer, fetches the
//! tracked refs into the cache, authenticates each moved head, and hands the decisions on. One
//! worker per repository keeps fetches ordered; rings during a fetch coalesce into the next one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use git2::Oid;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::record::ClusterRecord;
use crate::source::{Cache, Remote, SourceError, TrackedRef};
use crate::trigger::{Bell, Poll, Reason, Timer};
use crate::trust::{Decision, StateError, TrustRoot, TrustState};

/// What one fetch found for one tracked ref.
#[derive(Debug)]
pub struct Update {
    /// The ref.
    pub reference: TrackedRef,
    /// Its head after the fetch.
    pub head: Oid,
    /// Whether that head may be applied.
    pub decision: Decision,
}

/// The outcome of one fetch, as the worker reports it.
#[derive(Debug)]
pub struct Fetch {
    /// What triggered it.
    pub reason: Reason,
    /// When the worker started it (for latency measurements).
    pub started: Instant,
    /// Each tracked ref's decision, or why the fetch failed.
    pub result: Result<Vec<Update>, FetchError>,
    /// The cache's repository, to read authenticated commits from.
    pub repository: PathBuf,
    /// How long fetching and authenticating took.
    pub took: Took,
}

/// How long a fetch's stages took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Took {
    /// Bringing the tracked refs' new commits in.
    pub fetch: Duration,
    /// Authenticating the new heads.
    pub authenticate: Duration,
}

/// Why a fetch produced no decisions.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Fetching failed (network, remote, credentials, timeout).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The trust state could not be read or written, or history could not be walked.
    #[error(transparent)]
    Trust(#[from] StateError),
    /// The fetch panicked; the worker goes on.
    #[error("the fetch panicked (a bug: please report it)")]
    Panicked,
}

/// Fetches and authenticates one repository.
pub struct Fetcher {
    cache: Cache,
    refs: Vec<TrackedRef>,
    root: TrustRoot,
    state: TrustState,
    /// Where a copy of the trust state is kept in the cluster, and under which name.
    copy: Option<(Arc<ClusterRecord>, String)>,
    /// How long the last fetch's stages took.
    took: Took,
}

impl Fetcher {
    /// A fetcher keeping its cache and trust state under `dir`.
    pub fn open(dir: PathBuf, remote: Remote, refs: Vec<TrackedRef>, root: TrustRoot) -> Result<Fetcher, FetchError> {
        std::fs::create_dir_all(&dir).map_err(|source| SourceError::Io {
            path: dir.clone(),
            source,
        })?;
        let cache = Cache::open(&dir.join("cache"), remote)?;
        let state = TrustState::load(&dir.join("trust.json"))?;
        Ok(Fetcher {
            cache,
            refs,
            root,
            state,
            copy: None,
            took: Took::default(),
        })
    }

    /// Keeps a copy of the trust state in the cluster's `record` as repository `name`'s, taking
    /// the copy there over first when this agent remembers nothing yet (it was rescheduled):
    /// the last authenticated commit stays the floor a head may not go below.
    pub async fn keep_in_cluster(&mut self, record: Arc<ClusterRecord>, name: &str) {
        match record.load_trust(name).await {
            Ok(Some(text)) => match self.state.adopt(&text) {
                Ok(true) => tracing::info!(repository = name, "Took the trust state over from the cluster."),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(repository = name, error = %e, "Cannot take the trust state over from the cluster.")
                }
            },
            Ok(None) => {}
            Err(e) => {
                tracing::error!(repository = name, error = %e, "Cannot read the trust state in the cluster; authenticating from the trust root.")
            }
        }
        self.copy = Some((record, name.to_owned()));
    }

    /// The cache, for reading trees of authenticated commits.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Fetches every tracked ref and decides on each head (blocking: git and OpenPGP work).
    pub fn fetch(&mut self) -> Result<Vec<Update>, FetchError> {
        let started = Instant::now();
        self.took = Took::default();
        let fetched = self.cache.fetch(&self.refs)?;
        self.took.fetch = started.elapsed();
        let mut updates = Vec::with_capacity(fetched.heads.len());
        for (reference, _, head) in fetched.heads {
            let started = Instant::now();
            let decision = self
                .state
                .decide(self.cache.repository(), &self.root, reference.name(), head)?;
            self.took.authenticate += started.elapsed();
            match &decision {
                Decision::Authenticated(report) => {
                    tracing::info!(reference = %reference, commit = %head, commits = report.commits.len(), "Authenticated a new head.")
                }
                Decision::Refused(report) => {
                    if let Some((culprit, refusal)) = &report.refusal {
                        tracing::warn!(reference = %reference, commit = %head, culprit = %culprit, kind = refusal.kind(), reason = %refusal, "Refused a new head; what runs keeps running.")
                    }
                }
                Decision::Unchanged | Decision::AlreadyRefused(_) => {}
            }
            updates.push(Update {
                reference,
                head,
                decision,
            });
        }
        Ok(updates)
    }

    /// Runs until `cancel`: fetches when the doorbell rings or the timer fires, and sends each
    /// outcome to `out`. New polling settings arriving on `polls` apply at once.
    pub async fn run(
        mut self,
        mut bell: Bell,
        mut polls: watch::Receiver<Poll>,
        out: mpsc::Sender<Fetch>,
        cancel: CancellationToken,
    ) {
        let mut timer = Timer::new(polls.borrow_and_update().clone());
        // Settings may stop arriving (their sender is gone): the last ones stay.
        let mut settable = true;
        loop {
            let next = timer.next(chrono::Utc::now());
            let reason = tokio::select! {
                _ = cancel.cancelled() => return,
                changed = polls.changed(), if settable => {
                    match changed {
                        Ok(()) => timer = Timer::new(polls.borrow_and_update().clone()),
                        Err(_) => settable = false,
                    }
                    continue;
                }
                rung = bell.wait() => match rung {
                    Some(reason) => reason,
                    None => return,
                },
                reason = wait(next) => reason,
            };
            let started = Instant::now();
            let (back, result) = match tokio::task::spawn_blocking(move || {
                // A panic (a bug in plumb or a library) fails this fetch, not the repository's
                // worker: the next trigger tries again.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.fetch()))
                    .unwrap_or(Err(FetchError::Panicked));
                (self, result)
            })
            .await
            {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(error = %e, "The fetch worker stopped.");
                    return;
                }
            };
            self = back;
            let decided = result.as_ref().is_ok_and(|updates| {
                updates
                    .iter()
                    .any(|u| matches!(u.decision, Decision::Authenticated(_) | Decision::Refused(_)))
            });
            // The cluster's copy moves before the head is handed on.
            if let Some((record, name)) = self.copy.as_ref().filter(|_| decided)
                && let Err(e) = record.save_trust(name, self.state.to_text()).await
            {
                tracing::error!(repository = %name, error = %e, "Cannot copy the trust state to the cluster; an agent taking over would start from an older anchor.");
            }
            let repository = self.cache.repository().path().to_owned();
            match &result {
                Ok(_) => timer.succeeded(),
                Err(e) => {
                    tracing::warn!(error = %e, "Fetch failed; backing off.");
                    timer.failed(None);
                }
            }
            if out
                .send(Fetch {
                    reason,
                    started,
                    result,
                    repository,
                    took: self.took,
                })
                .await
                .is_err()
            {
                return;
            }
            // The packs are made one once the heads are on their way: no commit waits for it.
            self = match tokio::task::spawn_blocking(move || {
                if self.cache.keep_packs_few() {
                    super::memory::release_free_memory();
                }
                self
            })
            .await
            {
                Ok(back) => back,
                Err(e) => {
                    tracing::error!(error = %e, "The fetch worker stopped.");
                    return;
                }
            };
        }
    }
}

async fn wait(next: Option<(std::time::Duration, Reason)>) -> Reason {
    match next {
        Some((delay, reason)) => {
            tokio::time::sleep(delay).await;
            reason
        }
        None => std::future::pending().await,
    }
}
