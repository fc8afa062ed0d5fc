//! The worker of one environment: it applies each authenticated head it is handed, in order,
//! keeps the last healthy commit as the rollback point (re-rendered from git when the agent
//! starts), and between heads checks for drift, correcting it when the environment self-heals.
//! One worker per environment: environments never wait for each other.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use git2::{Oid, Repository};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ledger::{Attempt, Ledger, LedgerError, Outcome};
use crate::reconcile::{self, Intent, RollbackPoint};
use crate::source::GitTree;
use crate::spec::{self, Desired};
use crate::target::Target;

/// An authenticated head, rendered for one environment.
pub struct Head {
    /// The commit.
    pub commit: Oid,
    /// Who signed it, when it was authenticated now (not known for a head authenticated before
    /// the agent started).
    pub signer: Option<String>,
    /// The environment's desired state at the commit, or why it cannot be rendered.
    pub desired: Result<Desired, String>,
    /// The repository holding the commit (and the rollback point).
    pub repository: PathBuf,
    /// The folder of the configuration inside it.
    pub folder: String,
}

/// What the worker is told.
pub enum Input {
    /// A head to apply.
    Head(Box<Head>),
}

/// Applies one environment's heads to its target.
pub struct Worker {
    name: String,
    target: Arc<dyn Target>,
    ledger: Ledger,
    /// How often drift is looked for.
    heal_every: Duration,
    /// The last head handled (applied, refused, or skipped as failed before).
    handled: Option<Oid>,
    /// The rollback point, rendered.
    applied: Option<(String, Desired)>,
}

impl Worker {
    /// A worker for environment `name` on `target`, recording in `ledger`. Attempts a killed
    /// agent left unfinished are closed as interrupted.
    pub fn new(
        name: &str,
        target: Arc<dyn Target>,
        mut ledger: Ledger,
        heal_every: Duration,
    ) -> Result<Worker, LedgerError> {
        for attempt in ledger.unfinished(name)? {
            tracing::warn!(
                environment = name,
                attempt,
                "Closing an attempt the previous agent left unfinished."
            );
            ledger.finish(attempt, &Outcome::Interrupted)?;
        }
        Ok(Worker {
            name: name.to_owned(),
            target,
            ledger,
            heal_every,
            handled: None,
            applied: None,
        })
    }

    /// Runs until `cancel` or until the input closes.
    pub async fn run(mut self, mut input: mpsc::Receiver<Input>, cancel: CancellationToken) {
        let mut heal = tokio::time::interval(self.heal_every);
        heal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                next = input.recv() => match next {
                    Some(Input::Head(head)) => self.head(*head).await,
                    None => return,
                },
                _ = heal.tick() => self.heal().await,
            };
            if let Err(e) = result {
                tracing::error!(environment = %self.name, error = %e, "The ledger cannot record; nothing is applied until it can.");
            }
        }
    }

    /// Applies `head` unless it was handled or failed before.
    pub async fn head(&mut self, head: Head) -> Result<(), LedgerError> {
        if self.handled == Some(head.commit) {
            return Ok(());
        }
        self.handled = Some(head.commit);
        let commit = head.commit.to_string();
        let name = self.name.clone();
        if self.ledger.is_failed(&name, &commit)? {
            tracing::info!(environment = %name, commit, "This commit failed before; it is not retried until the head moves.");
            return Ok(());
        }
        let desired = match head.desired {
            Ok(desired) => desired,
            Err(reason) => {
                tracing::warn!(environment = %name, commit, %reason, "Refused a commit that cannot be applied; what runs keeps running.");
                return self.refuse(&commit, head.signer.as_deref(), reason);
            }
        };
        if self.applied.is_none() {
            self.applied = self.rollback_point(&head.repository, &head.folder)?;
        }
        if !desired.sync.automatic && self.applied.is_some() {
            tracing::info!(environment = %name, commit, "Automatic sync is off: the commit waits for a manual sync.");
            return Ok(());
        }
        let rollback = self
            .applied
            .as_ref()
            .map(|(commit, desired)| RollbackPoint { commit, desired });
        let intent = Intent {
            commit: &commit,
            signer: head.signer.as_deref(),
            record_empty: true,
        };
        let applied = reconcile::apply(self.target.as_ref(), &mut self.ledger, &desired, intent, rollback).await?;
        match &applied.outcome {
            Outcome::Succeeded => {
                tracing::info!(environment = %name, commit, "Applied; the commit is the new rollback point.");
                self.applied = Some((commit, desired));
            }
            outcome => tracing::warn!(environment = %name, commit, ?outcome, "The commit was not applied."),
        }
        Ok(())
    }

    /// Looks for drift from the rollback point; corrects it when the environment self-heals.
    pub async fn heal(&mut self) -> Result<(), LedgerError> {
        let Some((commit, desired)) = &self.applied else {
            return Ok(());
        };
        if !desired.sync.self_heal {
            let live = self.target.observe().await;
            let plan = reconcile::plan(desired, &live, desired.sync.prune);
            if !plan.is_empty() {
                tracing::warn!(environment = %self.name, drift = ?plan.summary(), "Drift found; self-heal is off.");
            }
            return Ok(());
        }
        let intent = Intent {
            commit,
            signer: None,
            record_empty: false,
        };
        let healed = reconcile::apply(self.target.as_ref(), &mut self.ledger, desired, intent, None).await?;
        if healed.attempt.is_some() {
            tracing::warn!(environment = %self.name, drift = ?healed.plan.summary(), outcome = ?healed.outcome, "Drift found and corrected.");
        }
        Ok(())
    }

    /// Records a commit that is not applied at all.
    fn refuse(&mut self, commit: &str, signer: Option<&str>, reason: String) -> Result<(), LedgerError> {
        let attempt = self.ledger.begin(&Attempt {
            environment: self.name.clone(),
            commit: commit.to_owned(),
            signer: signer.map(str::to_owned),
            strategy: "none".to_owned(),
            plan: serde_json::json!([]),
        })?;
        self.ledger.finish(attempt, &Outcome::Refused(reason))
    }

    /// The environment's rollback point, rendered from the repository; `None` when there is
    /// none yet, or it cannot be rendered any more (then a failure cannot be restored).
    fn rollback_point(
        &self,
        repository: &std::path::Path,
        folder: &str,
    ) -> Result<Option<(String, Desired)>, LedgerError> {
        let Some(commit) = self.ledger.rollback_point(&self.name)? else {
            return Ok(None);
        };
        match render(repository, &commit, folder, &self.name) {
            Ok(desired) => Ok(Some((commit, desired))),
            Err(reason) => {
                tracing::error!(environment = %self.name, commit, %reason, "The rollback point cannot be rendered; a failed rollout will not be restored.");
                Ok(None)
            }
        }
    }
}

/// The desired state of `environment` at `commit`, or why there is none.
pub fn render(repository: &std::path::Path, commit: &str, folder: &str, environment: &str) -> Result<Desired, String> {
    let repo = Repository::open_bare(repository).map_err(|e| e.to_string())?;
    let oid = Oid::from_str(commit).map_err(|e| e.to_string())?;
    let tree = GitTree::at(repo, oid, folder).map_err(|e| e.to_string())?;
    let mut rendered = spec::render(&tree, Some(environment)).map_err(|e| e.to_string())?;
    desired_of(&mut rendered, environment)
}

/// Takes one environment out of a rendering, or its problems in one message.
pub fn desired_of(rendered: &mut spec::Rendered, environment: &str) -> Result<Desired, String> {
    let problems: Vec<String> = rendered
        .diagnostics
        .iter()
        .filter(|d| d.environments.is_empty() || d.environments.iter().any(|e| e == environment))
        .map(ToString::to_string)
        .collect();
    if !problems.is_empty() {
        return Err(format!("the repository is invalid: {}", problems.join("; ")));
    }
    rendered
        .environments
        .shift_remove(environment)
        .ok_or_else(|| format!("the repository declares no environment `{environment}`"))
}
