//! The worker of one environment: it applies each authenticated head it is handed, in order,
//! keeps the last healthy commit as the rollback point (re-rendered from git when the agent
//! starts), and between heads checks for drift, correcting it when the environment self-heals.
//! It also takes commands: sync now, roll back to an earlier applied commit. One worker per
//! environment: environments never wait for each other. What it knows is published on a shared
//! board the API reads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use git2::{Oid, Repository};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::command::CommandError;
use super::migrations::{Back, Resolved};
use crate::appconfig::token::{Handed, Handout};
use crate::error::chain;
use crate::gate::images::Refusal;
use crate::ledger::{Attempt, LedgerError, MigrationState, Outcome, Recorder, Trigger};
use crate::metrics::Metrics;
use crate::reconcile::{self, Applied, Intent, RollbackPoint};
use crate::source::GitTree;
use crate::spec::sealed::Keyring;
use crate::spec::{self, Desired};
use crate::target::Target;
use crate::target::{Slot, Slots};

/// An authenticated head, rendered for one environment.
#[derive(Clone)]
pub struct Head {
    /// The commit.
    pub commit: Oid,
    /// Its subject (the first line of its message).
    pub subject: Option<String>,
    /// Who signed it, when it was authenticated now (not known for a head authenticated before
    /// the agent started).
    pub signer: Option<String>,
    /// The environment's desired state at the commit, or why it cannot be rendered.
    pub desired: Result<Desired, String>,
    /// The repository holding the commit (and the rollback point).
    pub repository: PathBuf,
    /// The folder of the configuration inside it.
    pub folder: String,
    /// The identities its encrypted values are opened with.
    pub keys: Arc<Keyring>,
    /// What its containers may take on the agent's hosts.
    pub allow: Arc<crate::spec::rights::Allow>,
    /// Where its services read their configuration on the agent's API, and their tokens.
    pub handout: Option<Arc<Handout>>,
}

impl Head {
    /// The desired state of `environment` at `commit` of this head's repository (the head or
    /// one before it), encrypted values opened; or why there is none.
    pub fn render(&self, commit: &str, environment: &str) -> Result<Desired, String> {
        let repo = Repository::open_bare(&self.repository).map_err(|e| e.to_string())?;
        let oid = Oid::from_str(commit).map_err(|e| e.to_string())?;
        let tree = GitTree::at(repo, oid, &self.folder).map_err(|e| e.to_string())?;
        let mut rendered =
            spec::render_opening(&tree, Some(environment), &self.keys, &self.allow).map_err(|e| e.to_string())?;
        desired_of(&mut rendered, environment, self.handout.as_deref(), Handed::Once)
    }
}

/// What the worker is told.
pub enum Input {
    /// A head to apply.
    Head(Box<Head>),
    /// Apply the last head now, even when automatic sync is off or it failed before.
    Sync {
        /// Who asks.
        by: String,
        /// Leave in place the migrations a revert would undo.
        skip_migrations: bool,
        /// Where the result goes.
        reply: oneshot::Sender<Result<Done, CommandError>>,
    },
    /// Say what applying the last head would do now, changing nothing.
    Plan(oneshot::Sender<Result<Pending, CommandError>>),
    /// Restore an earlier applied commit (`None`: the one before the rollback point).
    Rollback {
        /// The commit, or a unique prefix of it.
        to: Option<String>,
        /// Who asks.
        by: String,
        /// Leave the migrations applied since in place instead of undoing them.
        skip_migrations: bool,
        /// Where the result goes.
        reply: oneshot::Sender<Result<RolledBack, CommandError>>,
    },
    /// Take an approval the agent cannot fetch (a signed tag object's text).
    Approve {
        /// The approval.
        raw: String,
        /// Who hands it over.
        by: String,
        /// Where the result goes.
        reply: oneshot::Sender<Result<super::gates::Received, CommandError>>,
    },
    /// A head the signing policy refused: recorded and shown, never applied.
    Refused {
        /// The commit refused.
        commit: String,
        /// The kind of refusal (`unsigned`, `unauthorized`…).
        kind: String,
        /// Why, in words.
        reason: String,
    },
    /// Record what a person verified of an interrupted migration.
    Resolve {
        /// The commit, or a unique prefix of it.
        commit: String,
        /// The service, when only one of the commit's is meant.
        service: Option<String>,
        /// What the database has.
        state: MigrationState,
        /// Who said so.
        by: String,
        /// Where the result goes.
        reply: oneshot::Sender<Result<Resolved, CommandError>>,
    },
}

/// What an apply did, for the API.
#[derive(Clone, Debug, Serialize)]
pub struct Done {
    /// The ledger attempt, when one was recorded.
    pub attempt: Option<i64>,
    /// The commit applied.
    pub commit: String,
    /// The plan, one line per service.
    pub plan: Vec<String>,
    /// How it ended.
    pub outcome: Outcome,
}

/// What applying the last head would do now.
#[derive(Clone, Debug, Serialize)]
pub struct Pending {
    /// The head.
    pub commit: String,
    /// The rollback point, for comparison.
    pub applied: Option<String>,
    /// Per service, what would be done (empty: the environment runs the head).
    pub plan: crate::reconcile::Plan,
    /// The head's desired state against the rollback point's, field by field (encrypted values
    /// masked); everything the head declares when nothing was applied healthy yet.
    pub changes: crate::diff::EnvironmentDiff,
}

/// A manual rollback's result.
#[derive(Clone, Debug, Serialize)]
pub struct RolledBack {
    /// The restore.
    #[serde(flatten)]
    pub done: Done,
    /// The head that is no longer applied (not retried until the head moves).
    pub head: Option<String>,
    /// The command that makes git agree with the environment again, to open as a pull request.
    pub revert: Option<String>,
}

/// What an environment's worker knows, published for the API.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    /// The rollback point: the last commit applied healthy.
    pub applied: Option<String>,
    /// The last head handed to the worker.
    pub head: Option<String>,
    /// Who signed that head, when known.
    pub signer: Option<String>,
    /// Why that head was not applied, if it was not.
    pub refused: Option<String>,
    /// What differs between the rollback point and what runs, at the last check.
    pub drift: Vec<String>,
    /// Why the agent cannot act on the environment now, by cause (`fetch`: its repository
    /// cannot be fetched; `ledger`: nothing can be recorded, so nothing is applied;
    /// `migration`: a migration or its rollback was interrupted, so nothing is applied until a
    /// person resolves it). Empty when it can; a cause goes as soon as it is over.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub blocked: BTreeMap<String, String>,
    /// Each service's migration position: the newest commit whose migration succeeded and was
    /// not rolled back (`<commit> (<when>)`), by service.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub migrated: BTreeMap<String, String>,
    /// What holds the head back now, in words: a sync window (and until when), a promotion
    /// (which environment, soaking until when); absent when nothing does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Services whose containers the target restarted, by service: how many times, and why
    /// the last time when the target tells (`blue: restarted 3 times; Liveness probe failed: …`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub restarts: BTreeMap<String, String>,
    /// The subjects (first lines of the messages) of the rollback point and the head, by commit.
    #[serde(skip)]
    pub subjects: BTreeMap<String, String>,
    /// Whether an attempt is running (its steps are then read from the ledger as they go).
    #[serde(skip)]
    pub busy: bool,
    /// The gates the head waits for, as `waiting` says them: `window`, `promotion`,
    /// `approval`.
    #[serde(skip)]
    pub awaiting: Vec<&'static str>,
    /// While an attempt runs, per service it routes: the weights it set and what the slots
    /// answered as the analysis last read them; emptied when an attempt starts.
    #[serde(skip)]
    pub traffic: BTreeMap<String, super::Traffic>,
    /// Each service's configuration at the rollback point, as the API serves it.
    #[serde(skip)]
    pub configs: Option<Arc<crate::appconfig::Served>>,
    /// The last attempt that ended, as the ledger recorded it.
    #[serde(skip)]
    pub last_attempt: Option<Arc<crate::ledger::AttemptRecord>>,
    /// What the target ran at the last check, for the dashboard.
    #[serde(skip)]
    pub running: Option<Arc<Running>>,
}

/// What the target ran of each service at a check.
#[derive(Clone, Debug, Default)]
pub struct Running {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Per service: the replicas the rollback point declares (`None` for a service it no longer
    /// has), and each slot as the target runs it.
    pub services: BTreeMap<String, (Option<u32>, Slots<crate::target::workload::LiveSlot>)>,
    /// Per service, per slot: each health check's result, probed once at the check.
    pub health: BTreeMap<String, Slots<Vec<super::probes::Probed>>>,
}

/// The subject of `commit` in the bare repository at `repository`, when it holds the commit.
fn subject(repository: &std::path::Path, commit: &str) -> Option<String> {
    let repo = Repository::open_bare(repository).ok()?;
    let commit = repo.find_commit(Oid::from_str(commit).ok()?).ok()?;
    commit.summary().ok().flatten().map(str::to_owned)
}

/// Each service's newest migration that succeeded and was not rolled back (`migrations` newest
/// first), as `<commit> (<when>)`.
fn migration_position(migrations: &[crate::ledger::MigrationRecord]) -> BTreeMap<String, String> {
    let mut position = BTreeMap::new();
    for record in migrations.iter().filter(|r| r.state == "succeeded") {
        position.entry(record.service.clone()).or_insert_with(|| {
            let when = record.finished.as_deref().unwrap_or(&record.started);
            format!("{} ({when})", record.commit)
        });
    }
    position
}

/// The status's lines of `restarts`, by service: per slot, how many times and why.
fn restart_lines(restarts: &BTreeMap<(String, Slot), (u32, Option<String>)>) -> BTreeMap<String, String> {
    let mut said: BTreeMap<String, String> = BTreeMap::new();
    for ((service, slot), (count, cause)) in restarts {
        let line = match cause {
            Some(cause) => format!("{}: restarted {count} times; {cause}", slot.name()),
            None => format!("{}: restarted {count} times", slot.name()),
        };
        said.entry(service.clone())
            .and_modify(|s| {
                s.push_str("; ");
                s.push_str(&line);
            })
            .or_insert(line);
    }
    said
}

/// Every environment's status, by name.
pub type Board = Arc<RwLock<BTreeMap<String, Status>>>;

/// Where workers publish what they know: the status board, the metrics, and the services'
/// configuration changes as they are applied.
#[derive(Clone)]
pub struct Publish {
    /// Every environment's status.
    pub board: Board,
    /// The agent's metrics.
    pub metrics: Arc<Metrics>,
    /// Each configuration change, once recorded (the API's event streams follow it).
    pub config_events: tokio::sync::broadcast::Sender<crate::ledger::ConfigEvent>,
}

impl Default for Publish {
    fn default() -> Self {
        Publish {
            board: Board::default(),
            metrics: Arc::default(),
            // A stream that falls this far behind is closed; its client resumes from the
            // ledger with `Last-Event-ID`.
            config_events: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

impl Publish {
    /// Says why environment `name` cannot be acted on for `cause`, or (`None`) that it can
    /// again; the `plumb_blocked` gauge follows.
    pub fn block(&self, name: &str, cause: &str, reason: Option<String>) {
        let blocked = reason.is_some();
        {
            let mut board = self.board.write().unwrap_or_else(|e| e.into_inner());
            match reason {
                Some(reason) => {
                    let status = board.entry(name.to_owned()).or_default();
                    status.blocked.insert(cause.to_owned(), reason);
                }
                None => {
                    if let Some(status) = board.get_mut(name) {
                        status.blocked.remove(cause);
                    }
                }
            }
        }
        self.metrics.blocked(name, cause, blocked);
    }
}

/// Applies one environment's heads to its target.
pub struct Worker {
    pub(super) name: String,
    pub(super) target: Arc<dyn Target>,
    pub(super) ledger: Recorder,
    /// How often drift is looked for.
    heal_every: Duration,
    /// The last head handled (applied, refused, or skipped as failed before).
    pub(super) handled: Option<Oid>,
    /// The rollback point, rendered.
    pub(super) applied: Option<(String, Desired)>,
    /// The last head received, for a manual sync.
    pub(super) last: Option<Head>,
    pub(super) publish: Publish,
    /// Whether the last write to the ledger failed.
    ledger_blocked: bool,
    /// The restarts of each slot's containers at the last check, and their cause.
    restarts: BTreeMap<(String, Slot), (u32, Option<String>)>,
    /// The approvals already said not to count (each is logged once).
    pub(super) refused_approvals: std::collections::BTreeSet<String>,
}

impl Worker {
    /// A worker for environment `name` on `target`, recording in `ledger`. Attempts a killed
    /// agent left unfinished are closed as interrupted.
    pub async fn new(
        name: &str,
        target: Arc<dyn Target>,
        ledger: Recorder,
        heal_every: Duration,
        publish: Publish,
    ) -> Result<Worker, LedgerError> {
        for attempt in close_unfinished(&ledger, name).await? {
            tracing::warn!(
                environment = name,
                attempt,
                "Closed an attempt the previous agent left unfinished."
            );
        }
        let target = Arc::new(super::watched::Watched::new(target, publish.board.clone(), name));
        let worker = Worker {
            name: name.to_owned(),
            target,
            ledger,
            heal_every,
            handled: None,
            applied: None,
            last: None,
            publish,
            ledger_blocked: false,
            restarts: BTreeMap::new(),
            refused_approvals: std::collections::BTreeSet::new(),
        };
        worker.publish_last().await;
        worker.interrupted().await?;
        Ok(worker)
    }

    /// Publishes the newest attempt the ledger holds, and each service's migration position
    /// (the API serves them from memory).
    pub(super) async fn publish_last(&self) {
        let name = self.name.clone();
        let read = self
            .ledger
            .call(move |l| Ok((l.history(&name, 1)?, l.migrations(&name, 1000)?)))
            .await;
        match read {
            Ok((mut records, migrations)) => {
                let last = records.pop().map(Arc::new);
                let migrated = migration_position(&migrations);
                self.publish(|s| {
                    s.last_attempt = last;
                    s.migrated = migrated;
                    s.busy = false;
                });
            }
            Err(e) => tracing::warn!(environment = %self.name, error = %e, "Cannot read the last attempt back."),
        }
    }

    /// Updates this environment's entry on the board.
    pub(super) fn publish(&self, update: impl FnOnce(&mut Status)) {
        let mut board = self.publish.board.write().unwrap_or_else(|e| e.into_inner());
        let status = board.entry(self.name.clone()).or_default();
        status.applied = self.applied.as_ref().map(|(commit, _)| commit.clone());
        // Rendered for the API once per rollback point.
        let served = status.configs.as_ref().map(|c| c.commit.as_str());
        if served != status.applied.as_deref() {
            status.configs = self
                .applied
                .as_ref()
                .map(|(commit, desired)| Arc::new(crate::appconfig::Served::of(commit, desired)));
        }
        update(status);
        // Only the subjects of the rollback point and the head are kept.
        let shown: Vec<String> = [&status.applied, &status.head].into_iter().flatten().cloned().collect();
        status.subjects.retain(|commit, _| shown.contains(commit));
    }

    /// Keeps the subject of `commit` (read from `head`'s repository) for the status, when the
    /// status shows it (as the rollback point).
    pub(super) fn remember_subject(&self, head: &Head, commit: &str) {
        if let Some(subject) = subject(&head.repository, commit) {
            self.publish(|s| {
                s.subjects.insert(commit.to_owned(), subject);
            });
        }
    }

    /// Runs until `cancel` or until the commands close. Heads arrive on `heads`, where a newer
    /// one replaces one not yet taken: a worker busy with a long rollout never holds up the
    /// dispatcher, and then applies only the newest head.
    pub async fn run(
        mut self,
        mut heads: watch::Receiver<Option<Head>>,
        mut input: mpsc::Receiver<Input>,
        cancel: CancellationToken,
    ) {
        let mut heal = tokio::time::interval(self.heal_every);
        heal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heads_open = true;
        // Rung by the target when what runs changes by itself: look for drift now.
        let drift_bell = self.target.drift_bell();
        loop {
            let next = tokio::select! {
                // A stop wins over anything else ready: no new work starts once it is asked.
                biased;
                _ = cancel.cancelled() => return,
                changed = heads.changed(), if heads_open => match changed {
                    Ok(()) => heads.borrow_and_update().clone().map(|head| Input::Head(Box::new(head))),
                    Err(_) => {
                        heads_open = false;
                        continue;
                    }
                },
                next = input.recv() => match next {
                    Some(next) => Some(next),
                    None => return,
                },
                _ = heal.tick() => None,
                _ = async { drift_bell.as_ref()?.notified().await; Some(()) }, if drift_bell.is_some() => None,
            };
            // Each piece of work says whether the ledger failed it.
            let work = async {
                match next {
                    Some(Input::Head(head)) => self.head(*head).await.err().map(|e| chain(&e)),
                    Some(Input::Sync {
                        by,
                        skip_migrations,
                        reply,
                    }) => {
                        let done = self.sync(&by, skip_migrations).await;
                        let failed = ledger_failure(&done);
                        let _ = reply.send(done);
                        failed
                    }
                    Some(Input::Refused { commit, kind, reason }) => {
                        self.refused_head(commit, kind, reason).await.err().map(|e| chain(&e))
                    }
                    Some(Input::Plan(reply)) => {
                        let _ = reply.send(self.pending().await);
                        None
                    }
                    Some(Input::Rollback {
                        to,
                        by,
                        skip_migrations,
                        reply,
                    }) => {
                        let done = self.rollback(to.as_deref(), &by, skip_migrations).await;
                        let failed = ledger_failure(&done);
                        let _ = reply.send(done);
                        failed
                    }
                    Some(Input::Approve { raw, by, reply }) => {
                        let done = self.receive_approval(raw, &by).await;
                        let failed = ledger_failure(&done);
                        let received = done.is_ok();
                        let _ = reply.send(done);
                        // The head waiting for approvals is judged again now.
                        match self
                            .last
                            .clone()
                            .filter(|last| received && self.handled != Some(last.commit))
                        {
                            Some(head) => failed.or(self.head(head).await.err().map(|e| chain(&e))),
                            None => failed,
                        }
                    }
                    Some(Input::Resolve {
                        commit,
                        service,
                        state,
                        by,
                        reply,
                    }) => {
                        let done = self.resolve(&commit, service, state, &by).await;
                        let failed = ledger_failure(&done);
                        let resolved = done.is_ok();
                        let _ = reply.send(done);
                        // The head waiting for the resolution goes on now.
                        match self
                            .last
                            .clone()
                            .filter(|last| resolved && self.handled != Some(last.commit))
                        {
                            Some(head) => failed.or(self.head(head).await.err().map(|e| chain(&e))),
                            None => failed,
                        }
                    }
                    None => match self.last.clone().filter(|last| self.handled != Some(last.commit)) {
                        Some(head) => self.head(head).await.err().map(|e| chain(&e)),
                        None => self.heal().await.err().map(|e| chain(&e)),
                    },
                }
            };
            let Some(failure) = until_parked(work, &cancel).await else {
                self.park().await;
                return;
            };
            self.ledger_state(failure).await;
        }
    }

    /// Keeps the status and metrics saying whether the ledger can record. After a failure the
    /// worker stops acting: the head is taken again at each check (nothing changes before
    /// the ledger has recorded the attempt), and the ledger is tried with a write that records
    /// nothing until it takes one.
    async fn ledger_state(&mut self, failure: Option<String>) {
        let failure = match failure {
            None if self.ledger_blocked => self.ledger.call(|l| l.writable()).await.err().map(|e| chain(&e)),
            failure => failure,
        };
        match failure {
            None if self.ledger_blocked => {
                tracing::info!(environment = %self.name, "The ledger records again.");
                self.ledger_blocked = false;
                self.publish.block(&self.name, "ledger", None);
            }
            None => {}
            Some(reason) => {
                self.handled = None;
                let reason = format!("the ledger cannot record, so nothing is applied: {reason}");
                if !self.ledger_blocked {
                    tracing::error!(environment = %self.name, error = %reason, "The ledger cannot record; nothing is applied until it can.");
                }
                self.ledger_blocked = true;
                self.publish.block(&self.name, "ledger", Some(reason));
            }
        }
    }

    /// Closes what an apply cut short by a shutdown left unfinished.
    async fn park(&mut self) {
        match close_unfinished(&self.ledger, &self.name).await {
            Ok(_) => {
                tracing::warn!(environment = %self.name, "Stopped in the middle of an attempt: parked as interrupted; the head is applied again at the next start.")
            }
            Err(e) => {
                tracing::error!(environment = %self.name, error = %e, "Cannot close the parked attempt; the next start closes it.")
            }
        }
    }

    /// Applies `head` unless it was handled or failed before.
    pub async fn head(&mut self, mut head: Head) -> Result<(), LedgerError> {
        if self.handled == Some(head.commit) {
            return Ok(());
        }
        self.last = Some(head.clone());
        let commit = head.commit.to_string();
        let name = self.name.clone();
        self.publish(|s| {
            s.head = Some(commit.clone());
            s.signer = head.signer.clone();
            s.refused = None;
            s.awaiting.clear();
            if let Some(subject) = &head.subject {
                s.subjects.insert(commit.clone(), subject.clone());
            }
        });
        // Taken again once a person has resolved the interrupted migration.
        if self.interrupted().await?.is_some() {
            return Ok(());
        }
        self.handled = Some(head.commit);
        let failed_before = {
            let (name, commit) = (name.clone(), commit.clone());
            self.ledger.call(move |l| l.is_failed(&name, &commit)).await?
        };
        if failed_before {
            tracing::info!(environment = %name, commit, "This commit failed before; it is not retried until the head moves.");
            self.publish(|s| s.refused = Some("failed before; not retried until the head moves".to_owned()));
            return Ok(());
        }
        // Taken out: the worker keeps its own copy of the head in `last`.
        let desired = match std::mem::replace(&mut head.desired, Err(String::new())) {
            Ok(desired) => desired,
            Err(reason) => {
                tracing::warn!(environment = %name, commit, %reason, "Refused a commit that cannot be applied; what runs keeps running.");
                self.publish(|s| s.refused = Some(reason.clone()));
                return self.refuse(&commit, head.signer.as_deref(), reason).await;
            }
        };
        if self.applied.is_none() {
            // Rendered from the head's repository, with its identities (`last` is this head).
            let point = self
                .rollback_point(self.last.as_ref().expect("the head was kept above"))
                .await?;
            self.applied = point;
        }
        // Held back by a sync window, a promotion or missing approvals, the head waits; it is
        // taken again at the next check.
        let held = self.held(&head, &desired).await?;
        if let Some(waiting) = held.waiting {
            tracing::info!(environment = %name, commit, %waiting, "The commit waits.");
            self.handled = None;
            return self.note_waiting(&commit, held.causes, waiting).await;
        }
        // Manual means manual: not even the first deployment happens before `plumb sync`.
        if !desired.sync.automatic {
            tracing::info!(environment = %name, commit, "Automatic sync is off: the commit waits for a manual sync.");
            let waiting = "automatic sync is off: waiting for `plumb sync`".to_owned();
            self.publish(|s| s.refused = Some(waiting.clone()));
            return self.note_waiting(&commit, vec!["sync"], waiting).await;
        }
        let back = match self.back_for(&head, &desired, false).await {
            Ok(back) => back,
            Err(reason) => {
                tracing::warn!(environment = %name, commit, %reason, "Refused a commit whose migrations cannot be undone; what runs keeps running.");
                self.publish(|s| s.refused = Some(reason.clone()));
                return self.refuse(&commit, head.signer.as_deref(), reason).await;
            }
        };
        // Its images, signed as the rules in force ask: an unsigned one refuses the commit, an
        // unreachable registry holds it back until the next check.
        match self.images_signed(&desired).await {
            Ok(()) => {}
            Err(Refusal::Refused(reason)) => {
                tracing::warn!(environment = %name, commit, %reason, "Refused a commit whose images are not signed as required; what runs keeps running.");
                self.publish(|s| s.refused = Some(reason.clone()));
                return self.refuse(&commit, head.signer.as_deref(), reason).await;
            }
            Err(Refusal::Unavailable(reason)) => {
                tracing::warn!(environment = %name, commit, %reason, "The commit's image signatures cannot be checked now; it waits.");
                self.handled = None;
                self.publish(|s| s.waiting = Some(format!("images: {reason}")));
                return self.note_waiting(&commit, vec!["images"], reason).await;
            }
        }
        let intent = Intent::new(&commit, head.signer.as_deref(), Trigger::Commit, &back);
        let applied = self.apply(desired, intent, true).await?;
        self.record_approvals(applied.attempt, &held.approvals).await?;
        if applied.attempt.is_none() && matches!(applied.outcome, Outcome::Failed(_)) {
            // Nothing was attempted (the target could not be asked): the head is tried again
            // at the next drift check.
            self.handled = None;
        }
        match &applied.outcome {
            Outcome::Succeeded => {
                tracing::info!(environment = %name, commit, "Applied; the commit is the new rollback point.");
                self.publish(|s| s.drift.clear());
            }
            outcome => {
                tracing::warn!(environment = %name, commit, %outcome, "The commit was not applied.");
                let reason = outcome.to_string();
                self.publish(|s| s.refused = Some(reason));
            }
        }
        Ok(())
    }

    /// Applies `desired` as `intent` says (after undoing the migrations it names) and, when
    /// `restore`, restores the rollback point if it fails; counts the attempt. A success makes
    /// its commit the rollback point.
    pub(super) async fn apply(
        &mut self,
        desired: Desired,
        intent: Intent<'_>,
        restore: bool,
    ) -> Result<Applied, LedgerError> {
        let started = Instant::now();
        let rollback = self
            .applied
            .as_ref()
            .filter(|_| restore)
            .map(|(commit, desired)| RollbackPoint { commit, desired });
        let (commit, signer, trigger) = (intent.commit, intent.signer, intent.trigger);
        self.publish(|s| {
            s.busy = true;
            s.traffic.clear();
        });
        let applied = reconcile::apply(self.target.as_ref(), &self.ledger, &desired, intent, rollback).await;
        self.publish_last().await;
        let applied = applied?;
        let metrics = &self.publish.metrics;
        if applied.attempt.is_some() {
            let took = started.elapsed();
            metrics.attempt(
                &self.name,
                trigger,
                &applied.strategy,
                &applied.outcome,
                Some(took.as_secs_f64()),
            );
            metrics.stage("plan", applied.planned);
            metrics.stage("rollout", applied.rolled_out);
        }
        if applied.outcome == Outcome::Succeeded {
            if trigger != Trigger::Heal {
                metrics.commit(&self.name, commit, signer);
            }
            let changes = match &self.applied {
                Some((_, before)) => crate::appconfig::environment_changes(before, &desired),
                // The first deployment: there is nothing it changed.
                None => Vec::new(),
            };
            self.applied = Some((commit.to_owned(), desired));
            self.publish(|_| {});
            self.config_changed(commit, signer, changes).await?;
        }
        Ok(applied)
    }

    /// Records the configuration changes applying `commit` made and tells the event streams.
    async fn config_changed(
        &self,
        commit: &str,
        signer: Option<&str>,
        changes: Vec<(String, crate::appconfig::Change)>,
    ) -> Result<(), LedgerError> {
        if changes.is_empty() {
            return Ok(());
        }
        let (name, commit, signer) = (self.name.clone(), commit.to_owned(), signer.map(str::to_owned));
        let events = self
            .ledger
            .call(move |l| l.config_changed(&name, &commit, signer.as_deref(), changes))
            .await?;
        for event in events {
            // No stream listening is no error.
            let _ = self.publish.config_events.send(event);
        }
        Ok(())
    }

    /// Looks for drift from the rollback point; corrects it when the environment self-heals.
    /// Publishes what runs, with each running slot's health checks probed once.
    pub async fn heal(&mut self) -> Result<(), LedgerError> {
        if self.interrupted().await?.is_some() {
            return Ok(());
        }
        let Some((commit, desired)) = &self.applied else {
            // Nothing applied healthy yet (a first rollout failed): what runs is still watched
            // for restarts the target makes.
            if let Ok(live) = self.target.observe().await {
                self.report_restarts(&live).await;
            }
            return Ok(());
        };
        let (observed, plan) =
            match reconcile::observe_and_plan(self.target.as_ref(), &self.ledger, desired, desired.sync.prune).await {
                Ok(observed) => observed,
                Err(e) => {
                    tracing::warn!(environment = %self.name, error = %e, "Cannot look for drift now.");
                    return Ok(());
                }
            };
        let live = observed.services;
        let metrics = &self.publish.metrics;
        let drifting: Vec<&str> = plan.steps.iter().map(|s| s.service.as_str()).collect();
        let services = desired
            .services
            .keys()
            .map(|n| n.as_str())
            .chain(live.keys().map(String::as_str));
        let services: std::collections::BTreeSet<&str> = services.collect();
        metrics.drift(&self.name, services.into_iter().map(|s| (s, drifting.contains(&s))));
        metrics.weights(
            &self.name,
            live.iter().flat_map(|(service, slots)| {
                slots
                    .iter()
                    .map(move |(slot, s)| (service.as_str(), slot.name(), s.weight))
            }),
        );
        let health = super::probes::probe_live(self.target.as_ref(), &live).await;
        let running = Running {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            health,
            services: live
                .iter()
                .map(|(service, slots)| {
                    let declared = desired.services.get(service.as_str()).map(|s| s.replicas);
                    (service.clone(), (declared, slots.clone()))
                })
                .collect(),
        };
        self.publish(|s| s.running = Some(Arc::new(running)));
        // What the rollback point says, taken before the restarts are recorded (which needs the
        // worker whole); the desired state is cloned only when it is applied again.
        let self_heal = desired.sync.self_heal;
        let held = self.window_closed(desired).is_some();
        let again = (!plan.is_empty() && self_heal && !held).then(|| (commit.clone(), desired.clone()));
        let point = commit.clone();
        self.report_restarts(&live).await;
        if plan.is_empty() {
            // What is only reported (fields another manager took) stays visible as drift.
            let reported = plan.reported();
            self.publish(|s| s.drift = reported);
            return Ok(());
        }
        let Some((commit, desired)) = again else {
            let why = if self_heal {
                tracing::info!(environment = %self.name, drift = ?plan.summary(), "Drift found; a sync window holds the correction back.");
                "a sync window holds the correction back"
            } else {
                tracing::warn!(environment = %self.name, drift = ?plan.summary(), "Drift found; self-heal is off.");
                "self-heal is off"
            };
            self.publish(|s| s.drift = plan.summary());
            let (name, drift) = (self.name.clone(), plan.summary());
            self.ledger
                .call(move |l| l.drift_left(&name, &point, &drift, why))
                .await?;
            return Ok(());
        };
        let back = Back::default();
        let healed = self
            .apply(desired, Intent::new(&commit, None, Trigger::Heal, &back), false)
            .await?;
        tracing::warn!(environment = %self.name, drift = ?healed.plan.summary(), outcome = ?healed.outcome, "Drift found and corrected.");
        let remaining = match healed.outcome {
            // What is only reported stays visible: the heal did not act on it.
            Outcome::Succeeded => healed.plan.reported(),
            _ => healed.plan.summary(),
        };
        self.publish(|s| s.drift = remaining);
        Ok(())
    }

    /// Counts and publishes the restarts of the containers in `live`, with their cause.
    async fn report_restarts(&mut self, live: &reconcile::Live) {
        self.publish.metrics.restarts(
            &self.name,
            live.iter().flat_map(|(service, slots)| {
                slots
                    .iter()
                    .filter(|(_, s)| s.restarts > 0)
                    .map(move |(slot, s)| (service.as_str(), slot.name(), s.restarts))
            }),
        );
        self.restarts = self.restarts_now(live).await;
        self.publish(|s| s.restarts = restart_lines(&self.restarts));
    }

    /// The restarts of each slot's containers in `live`, with their cause; a slot restarted
    /// since the last check (a failed liveness probe, an exit) is said in the log with the
    /// cause the target gives. The status shows them until those containers are replaced.
    async fn restarts_now(&self, live: &reconcile::Live) -> BTreeMap<(String, Slot), (u32, Option<String>)> {
        let mut seen = BTreeMap::new();
        for (service, slots) in live {
            for (slot, running) in slots.iter().filter(|(_, s)| s.restarts > 0) {
                let key = (service.clone(), *slot);
                let before = self.restarts.get(&key).map_or(0, |(count, _)| *count);
                let cause = if running.restarts > before {
                    let cause = self.target.restart_cause(service, *slot).await;
                    tracing::warn!(
                        environment = %self.name,
                        service = %service,
                        slot = slot.name(),
                        restarts = running.restarts,
                        cause = cause.as_deref().unwrap_or("not told"),
                        "Containers were restarted by the target."
                    );
                    cause
                } else {
                    self.restarts.get(&key).and_then(|(_, cause)| cause.clone())
                };
                seen.insert(key, (running.restarts, cause));
            }
        }
        seen
    }

    /// Records (once per commit and causes) that `commit` waits for `causes`.
    async fn note_waiting(&self, commit: &str, causes: Vec<&'static str>, reason: String) -> Result<(), LedgerError> {
        let (name, commit) = (self.name.clone(), commit.to_owned());
        self.ledger
            .call(move |l| l.waiting(&name, &commit, &causes, &reason))
            .await
            .map(drop)
    }

    /// Records (once per commit) that the signing policy refused `commit`, this environment's
    /// repository's head, and shows why.
    pub(super) async fn refused_head(&self, commit: String, kind: String, reason: String) -> Result<(), LedgerError> {
        self.publish(|s| s.refused = Some(reason.clone()));
        let name = self.name.clone();
        self.ledger
            .call(move |l| l.refused_head(&name, &commit, &kind, &reason))
            .await
            .map(drop)
    }

    /// Records a commit that is not applied at all.
    async fn refuse(&mut self, commit: &str, signer: Option<&str>, reason: String) -> Result<(), LedgerError> {
        let outcome = Outcome::Refused(reason);
        self.record_unapplied(commit, signer.map(str::to_owned), Trigger::Commit, outcome.clone())
            .await?;
        self.publish
            .metrics
            .attempt(&self.name, Trigger::Commit, "none", &outcome, None);
        Ok(())
    }

    /// Records an attempt at `commit` that changed nothing and ended as `outcome`.
    pub(super) async fn record_unapplied(
        &self,
        commit: &str,
        signer: Option<String>,
        trigger: Trigger,
        outcome: Outcome,
    ) -> Result<(), LedgerError> {
        let attempt = Attempt {
            environment: self.name.clone(),
            commit: commit.to_owned(),
            signer,
            strategy: "none".to_owned(),
            plan: serde_json::json!([]),
            trigger,
            by: None,
        };
        self.ledger
            .call(move |l| {
                let id = l.begin(&attempt)?;
                l.finish(id, &outcome)
            })
            .await?;
        self.publish_last().await;
        Ok(())
    }

    /// The environment's rollback point, rendered from the repository; `None` when there is
    /// none yet, or it cannot be rendered any more (then a failure cannot be restored).
    pub(super) async fn rollback_point(&self, head: &Head) -> Result<Option<(String, Desired)>, LedgerError> {
        let name = self.name.clone();
        let Some(commit) = self.ledger.call(move |l| l.rollback_point(&name)).await? else {
            return Ok(None);
        };
        match head.render(&commit, &self.name) {
            Ok(desired) => {
                self.remember_subject(head, &commit);
                Ok(Some((commit, desired)))
            }
            Err(reason) => {
                tracing::error!(environment = %self.name, commit, %reason, "The rollback point cannot be rendered; a failed rollout will not be restored.");
                Ok(None)
            }
        }
    }
}

/// The ledger's failure behind a command's refusal, if that is what it was.
fn ledger_failure<T>(done: &Result<T, CommandError>) -> Option<String> {
    match done {
        Err(CommandError::Ledger(e)) => Some(chain(e)),
        _ => None,
    }
}

/// Closes as interrupted every attempt of `environment` left unfinished; returns their ids.
async fn close_unfinished(ledger: &Recorder, environment: &str) -> Result<Vec<i64>, LedgerError> {
    let environment = environment.to_owned();
    ledger
        .call(move |l| {
            let unfinished = l.unfinished(&environment)?;
            for attempt in &unfinished {
                l.finish(*attempt, &Outcome::Interrupted)?;
            }
            Ok(unfinished)
        })
        .await
}

/// How long a step in progress may go on once the agent is asked to stop.
const PARK_GRACE: Duration = Duration::from_secs(10);

/// Runs `work` to its end; once `cancel` fires, for at most [`PARK_GRACE`] more (a step in
/// progress usually ends by then; a long wait, such as keeping the old version for
/// switch-back, is cut short). `None` when it was cut short.
async fn until_parked<T>(work: impl std::future::Future<Output = T>, cancel: &CancellationToken) -> Option<T> {
    tokio::pin!(work);
    tokio::select! {
        done = &mut work => return Some(done),
        _ = cancel.cancelled() => {}
    }
    tokio::time::timeout(PARK_GRACE, work).await.ok()
}

/// Takes one environment out of a rendering, its services given where they read their
/// configuration (`handed` says whether the rendering is a memo's); or its problems in one
/// message.
pub fn desired_of(
    rendered: &mut spec::Rendered,
    environment: &str,
    handout: Option<&Handout>,
    handed: Handed,
) -> Result<Desired, String> {
    let problems: Vec<String> = rendered
        .diagnostics
        .iter()
        .filter(|d| d.environments.is_empty() || d.environments.iter().any(|e| e == environment))
        .map(ToString::to_string)
        .collect();
    if !problems.is_empty() {
        return Err(format!("the repository is invalid: {}", problems.join("; ")));
    }
    let mut desired = rendered
        .environments
        .shift_remove(environment)
        .ok_or_else(|| format!("the repository declares no environment `{environment}`"))?;
    if let Some(handout) = handout {
        handout.give(environment, &mut desired, handed);
    }
    Ok(desired)
}
