//! The ledger: an embedded SQLite file (WAL) in the state directory recording every deployment
//! attempt, each step with its times, rollback points and failed commits. It is an append-only
//! journal whose entries are hash-chained, so editing or deleting an entry in the middle is
//! detected by [`Ledger::verify`]; the newest hash, kept elsewhere, also detects a truncated
//! tail. The ledger never decides anything: it records, and answers questions about the record.

mod carry;
mod config_events;
mod journal;
mod migrations;
mod observed;
mod outbox;
mod recorder;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use carry::{Carried, Witness, Witnessed};
pub use config_events::ConfigEvent;
pub use journal::{Entry, Tamper};
pub use migrations::{MigrationRecord, MigrationState};
pub use outbox::{ChannelState, Ended, Message, Notices, Queued, now_ms};
pub use recorder::{Recorder, read};

/// Why the ledger could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Opening or creating the file failed.
    #[error("cannot open the ledger {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// A read or write failed.
    #[error("the ledger {path} failed")]
    Sql {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// An attempt id that the ledger does not hold.
    #[error("the ledger has no attempt {0}")]
    UnknownAttempt(i64),
    /// The work on the ledger did not complete: it panicked, or the agent is shutting down.
    #[error("the ledger's work did not complete: {0}")]
    Lost(String),
    /// The ledger's witness (the copy kept in the cluster) could not hold an entry.
    #[error("the ledger's copy in the cluster was not updated: {0}")]
    Witness(String),
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result", content = "reason")]
pub enum Outcome {
    /// Applied and healthy: the commit becomes the environment's rollback point.
    Succeeded,
    /// Failed, and the environment was restored to its rollback point; the commit is marked
    /// failed and not retried until the head moves.
    RolledBack(String),
    /// Failed, and could not be restored: a person must look.
    Failed(String),
    /// Not applied at all: the commit cannot be rendered (invalid) or asks for what this agent
    /// cannot do. Nothing changed; the commit is not retried until the head moves.
    Refused(String),
    /// The agent stopped before the attempt ended (it was killed): closed when the agent
    /// starts again, which then applies the head afresh. Not a failure of the commit.
    Interrupted,
}

/// What started an attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A new head (or the head again after a restart).
    #[default]
    Commit,
    /// Drift found between the rollback point and what runs. Its failure does not mark the
    /// commit failed: the commit was applied healthy before.
    Heal,
    /// A manual sync.
    Sync,
    /// A manual rollback.
    Rollback,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Succeeded => f.write_str("succeeded"),
            Outcome::RolledBack(reason) => write!(f, "rolled back: {reason}"),
            Outcome::Failed(reason) => write!(f, "failed: {reason}"),
            Outcome::Refused(reason) => write!(f, "refused: {reason}"),
            Outcome::Interrupted => f.write_str("interrupted: the agent stopped mid-way"),
        }
    }
}

/// What a new attempt is about.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attempt {
    /// The environment.
    pub environment: String,
    /// The commit being applied.
    pub commit: String,
    /// Who signed it (the policy's name), when known.
    pub signer: Option<String>,
    /// The strategy, or `"mixed"` when services differ.
    pub strategy: String,
    /// The plan, summarised (per service: what changes).
    pub plan: Value,
    /// What started it.
    #[serde(default)]
    pub trigger: Trigger,
    /// Who asked for it, for a sync or rollback through the API (the identity's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// One attempt as recorded, with its steps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Its id.
    pub id: i64,
    /// When it started (RFC 3339, UTC).
    pub started: String,
    /// What it was about.
    #[serde(flatten)]
    pub attempt: Attempt,
    /// Each step, in order.
    pub steps: Vec<StepRecord>,
    /// How it ended, `None` while running (or if the agent died mid-way).
    pub outcome: Option<Outcome>,
    /// When it ended.
    pub finished: Option<String>,
    /// The approvals that allowed it (who, key, when signed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<Value>,
}

/// One step of an attempt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    /// What the step does (`start green`, `switch traffic`…).
    pub name: String,
    /// When it started.
    pub started: String,
    /// When it ended, and how.
    pub finished: Option<String>,
    /// `None` while running; `Ok` or the error.
    pub error: Option<Option<String>>,
    /// The last lines of the job it ran (a migration, its rollback, a task), secrets masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// The ledger of one agent.
pub struct Ledger {
    path: PathBuf,
    conn: Connection,
    /// Told of every entry appended, when another party keeps a copy.
    witness: Option<Witness>,
    /// Decides the messages each entry appended queues in the outbox.
    notices: Option<std::sync::Arc<dyn Notices>>,
}

impl Ledger {
    /// Opens (creating when absent) the ledger file at `path`.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let open = |source| LedgerError::Open {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let conn = Connection::open(path).map_err(open)?;
        // WAL lets readers (the API, `plumb history`) run beside the writer; FULL makes each
        // committed step survive power loss, which crash recovery relies on.
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(open)?;
        // The ledger is mostly appended to and its lookups are indexed: SQLite's page cache of
        // 2 MB per connection, filled by every page written, only made an agent's memory grow
        // with its history; the kernel caches the file.
        conn.pragma_update(None, "cache_size", -256).map_err(open)?;
        // Sorts (building an index on an existing ledger) stay in memory: the agent's image has
        // a read-only root, so SQLite may find no folder for temporary files.
        conn.pragma_update(None, "temp_store", "MEMORY").map_err(open)?;
        journal::create(&conn).map_err(open)?;
        outbox::create(&conn).map_err(open)?;
        config_events::create(&conn).map_err(open)?;
        Ok(Ledger {
            path: path.to_owned(),
            conn,
            witness: None,
            notices: None,
        })
    }

    /// Opens an existing ledger for reading only (`plumb history`, `plumb audit verify`):
    /// nothing is created or changed, so a copy on read-only storage can be audited.
    pub fn open_read_only(path: &Path) -> Result<Ledger, LedgerError> {
        let open = |source| LedgerError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open)?;
        Ok(Ledger {
            path: path.to_owned(),
            conn,
            witness: None,
            notices: None,
        })
    }

    fn sql(&self, source: rusqlite::Error) -> LedgerError {
        LedgerError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends an entry, durable when this returns, with the messages it causes in the
    /// outbox, and tells the witness.
    fn append(
        &mut self,
        environment: &str,
        kind: &str,
        attempt: Option<i64>,
        body: &Value,
    ) -> Result<Entry, LedgerError> {
        let notices = self.notices.clone();
        self.append_as(environment, kind, attempt, body, notices.as_deref())
    }

    /// Appends an entry, queuing the messages `notices` says it causes in the same transaction.
    fn append_as(
        &mut self,
        environment: &str,
        kind: &str,
        attempt: Option<i64>,
        body: &Value,
        notices: Option<&dyn Notices>,
    ) -> Result<Entry, LedgerError> {
        let written = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let entry = journal::append_in(&tx, environment, kind, attempt, body)?;
            let queued = match notices {
                Some(notices) => outbox::enqueue(&tx, notices, &entry)?,
                None => 0,
            };
            tx.commit()?;
            Ok((entry, queued))
        })();
        let (entry, queued) = written.map_err(|e| self.sql(e))?;
        if let Some(notices) = notices.filter(|_| queued > 0) {
            notices.queued();
        }
        if let Some(witness) = &self.witness {
            witness.told(environment);
        }
        Ok(entry)
    }

    /// Records the start of an attempt, before anything is changed; returns its id.
    pub fn begin(&mut self, attempt: &Attempt) -> Result<i64, LedgerError> {
        let body = serde_json::to_value(attempt).expect("an attempt serializes");
        let entry = self.append(&attempt.environment, "attempt", None, &body)?;
        Ok(entry.seq)
    }

    /// Records that `step` of `attempt` starts; call before taking it.
    pub fn step_started(&mut self, attempt: i64, step: &str) -> Result<(), LedgerError> {
        let environment = self.environment_of(attempt)?;
        self.append(&environment, "step", Some(attempt), &json!({ "step": step }))?;
        Ok(())
    }

    /// Records that `step` of `attempt` ended, with its error if it failed, and the last lines
    /// of its output when it ran a job (secrets masked).
    pub fn step_finished(
        &mut self,
        attempt: i64,
        step: &str,
        error: Option<&str>,
        output: Option<&str>,
    ) -> Result<(), LedgerError> {
        let environment = self.environment_of(attempt)?;
        let mut body = json!({ "step": step, "error": error });
        if let Some(output) = output {
            body["output"] = json!(output);
        }
        self.append(&environment, "step_done", Some(attempt), &body)?;
        Ok(())
    }

    /// Records an approval of `commit` handed to the API by `by`, as it was verified.
    pub fn approval_received(
        &mut self,
        environment: &str,
        commit: &str,
        approval: &Value,
        by: &str,
    ) -> Result<(), LedgerError> {
        let body = json!({ "commit": commit, "approval": approval, "by": by });
        self.append(environment, "approval", None, &body)?;
        Ok(())
    }

    /// Records the approvals (who, key, when signed) that allowed `attempt`.
    pub fn approvals(&mut self, attempt: i64, approvals: &[Value]) -> Result<(), LedgerError> {
        let environment = self.environment_of(attempt)?;
        self.append(
            &environment,
            "approvals",
            Some(attempt),
            &json!({ "approvals": approvals }),
        )?;
        Ok(())
    }

    /// Records how `attempt` ended. A success makes its commit the rollback point; a failure
    /// marks its commit failed.
    pub fn finish(&mut self, attempt: i64, outcome: &Outcome) -> Result<(), LedgerError> {
        let environment = self.environment_of(attempt)?;
        let body = serde_json::to_value(outcome).expect("an outcome serializes");
        self.append(&environment, "outcome", Some(attempt), &body)?;
        Ok(())
    }

    /// Records that task `service` ran `version` to completion under `attempt`.
    pub fn task_done(&mut self, attempt: i64, service: &str, version: &str) -> Result<(), LedgerError> {
        let environment = self.environment_of(attempt)?;
        let body = json!({ "service": service, "version": version });
        self.append(&environment, "task", Some(attempt), &body)?;
        Ok(())
    }

    /// The version each task of `environment` last ran to completion, by service.
    pub fn tasks_done(&self, environment: &str) -> Result<BTreeMap<String, String>, LedgerError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT json_extract(body, '$.service'), json_extract(body, '$.version') FROM entries
                 WHERE environment = ?1 AND kind = 'task' ORDER BY seq",
            )
            .map_err(|e| self.sql(e))?;
        let rows = statement
            .query_map(params![environment], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(|e| self.sql(e))?;
        let mut done = BTreeMap::new();
        for row in rows {
            let (service, version): (String, String) = row.map_err(|e| self.sql(e))?;
            done.insert(service, version);
        }
        Ok(done)
    }

    /// The environment and commit of an attempt.
    pub fn attempt_key(&self, attempt: i64) -> Result<(String, String), LedgerError> {
        let body: String = self
            .conn
            .query_row(
                "SELECT body FROM entries WHERE seq = ?1 AND kind = 'attempt'",
                params![attempt],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?
            .ok_or(LedgerError::UnknownAttempt(attempt))?;
        let attempt: Attempt = serde_json::from_str(&body).map_err(|e| {
            self.sql(rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                Box::new(e),
            ))
        })?;
        Ok((attempt.environment, attempt.commit))
    }

    fn environment_of(&self, attempt: i64) -> Result<String, LedgerError> {
        self.conn
            .query_row(
                "SELECT environment FROM entries WHERE seq = ?1 AND kind = 'attempt'",
                params![attempt],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?
            .ok_or(LedgerError::UnknownAttempt(attempt))
    }

    /// The commit of the environment's newest successful attempt: where a rollback goes.
    pub fn rollback_point(&self, environment: &str) -> Result<Option<String>, LedgerError> {
        let newest = self
            .conn
            .query_row(
                "SELECT a.body FROM entries o JOIN entries a ON a.seq = o.attempt
                 WHERE o.environment = ?1 AND o.kind = 'outcome' AND json_extract(o.body, '$.result') = 'succeeded'
                 ORDER BY o.seq DESC LIMIT 1",
                params![environment],
                |row| row.get::<_, String>(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        Ok(newest.and_then(|body| serde_json::from_str::<Attempt>(&body).ok().map(|a| a.commit)))
    }

    /// When `commit` was last applied healthy in `environment` by a commit, sync or rollback
    /// (not a drift correction): the attempt and when it ended.
    pub fn applied_at(&self, environment: &str, commit: &str) -> Result<Option<(i64, String)>, LedgerError> {
        self.conn
            .query_row(
                // The commit's attempts, then their outcomes (as `is_failed`).
                "SELECT a.seq, o.at FROM entries a JOIN entries o ON o.attempt = a.seq
                 WHERE a.environment = ?1 AND a.kind = 'attempt'
                 AND json_extract(a.body, '$.commit') = ?2
                 AND coalesce(json_extract(a.body, '$.trigger'), 'commit') != 'heal'
                 AND o.kind = 'outcome' AND json_extract(o.body, '$.result') = 'succeeded'
                 ORDER BY o.seq DESC LIMIT 1",
                params![environment, commit],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// The first manual rollback in `environment` after attempt `after`: when it started.
    pub fn rolled_back_after(&self, environment: &str, after: i64) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row(
                "SELECT at FROM entries WHERE environment = ?1 AND kind = 'attempt' AND seq > ?2
                 AND json_extract(body, '$.trigger') = 'rollback' ORDER BY seq LIMIT 1",
                params![environment, after],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// The commits applied healthy in `environment`, newest first, each once: where a manual
    /// rollback may go.
    pub fn applied_commits(&self, environment: &str, limit: usize) -> Result<Vec<String>, LedgerError> {
        let commits: Vec<String> = self
            .conn
            .prepare(
                "SELECT json_extract(a.body, '$.commit') FROM entries o JOIN entries a ON a.seq = o.attempt
                 WHERE o.environment = ?1 AND o.kind = 'outcome' AND json_extract(o.body, '$.result') = 'succeeded'
                 ORDER BY o.seq DESC",
            )
            .and_then(|mut statement| statement.query_map(params![environment], |row| row.get(0))?.collect())
            .map_err(|e| self.sql(e))?;
        let mut seen = std::collections::BTreeSet::new();
        Ok(commits
            .into_iter()
            .filter(|c| seen.insert(c.clone()))
            .take(limit)
            .collect())
    }

    /// Whether `commit` failed in `environment` (and so is not retried until the head moves).
    pub fn is_failed(&self, environment: &str, commit: &str) -> Result<bool, LedgerError> {
        self.conn
            .query_row(
                // The commit's attempts (by `entries_by_commit`), then their outcomes: not every
                // outcome of the environment's history, at every new head.
                "SELECT EXISTS (SELECT 1 FROM entries a JOIN entries o ON o.attempt = a.seq
                 WHERE a.environment = ?1 AND a.kind = 'attempt'
                 AND json_extract(a.body, '$.commit') = ?2
                 AND coalesce(json_extract(a.body, '$.trigger'), 'commit') != 'heal'
                 AND o.kind = 'outcome'
                 AND json_extract(o.body, '$.result') NOT IN ('succeeded', 'interrupted'))",
                params![environment, commit],
                |row| row.get(0),
            )
            .map_err(|e| self.sql(e))
    }

    /// The attempts in `environment` that never recorded an outcome (the agent died mid-way),
    /// oldest first.
    pub fn unfinished(&self, environment: &str) -> Result<Vec<i64>, LedgerError> {
        self.conn
            .prepare(
                "SELECT a.seq FROM entries a WHERE a.environment = ?1 AND a.kind = 'attempt'
                 AND NOT EXISTS (SELECT 1 FROM entries o WHERE o.attempt = a.seq AND o.kind = 'outcome')
                 ORDER BY a.seq",
            )
            .and_then(|mut statement| statement.query_map(params![environment], |row| row.get(0))?.collect())
            .map_err(|e| self.sql(e))
    }

    /// The attempts in `environment`, newest first, at most `limit`.
    pub fn history(&self, environment: &str, limit: usize) -> Result<Vec<AttemptRecord>, LedgerError> {
        let attempts: Vec<(i64, String, String)> = self
            .conn
            .prepare(
                "SELECT seq, at, body FROM entries WHERE environment = ?1 AND kind = 'attempt'
                 ORDER BY seq DESC LIMIT ?2",
            )
            .and_then(|mut statement| {
                statement
                    .query_map(params![environment, limit as i64], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })?
                    .collect()
            })
            .map_err(|e| self.sql(e))?;
        attempts
            .into_iter()
            .map(|(id, started, body)| record_of(&self.conn, id, started, &body).map_err(|e| self.sql(e)))
            .collect()
    }

    /// The journal's entries after entry `seq`, oldest first, at most 1,000: for following the
    /// ledger as it grows.
    pub fn entries_after(&self, seq: i64) -> Result<Vec<Entry>, LedgerError> {
        journal::after(&self.conn, seq, 1000).map_err(|e| self.sql(e))
    }

    /// Whether the ledger takes a write now (its disk may have been full): rewrites a header
    /// field with its own value, which adds no entry.
    pub fn writable(&mut self) -> Result<(), LedgerError> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|e| self.sql(e))?;
        self.conn
            .pragma_update(None, "user_version", version)
            .map_err(|e| self.sql(e))
    }

    /// Walks the whole journal checking every hash; returns the number of entries and the
    /// newest hash (publish it elsewhere to detect a truncated tail).
    pub fn verify(&self) -> Result<Result<(usize, String), Tamper>, LedgerError> {
        journal::verify(&self.conn).map_err(|e| self.sql(e))
    }
}

/// Attempt `id` (started at `started`, recorded as `body`) with everything recorded under it.
pub(crate) fn record_of(conn: &Connection, id: i64, started: String, body: &str) -> rusqlite::Result<AttemptRecord> {
    let attempt: Attempt = serde_json::from_str(body)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))?;
    let mut record = AttemptRecord {
        id,
        started,
        attempt,
        steps: Vec::new(),
        outcome: None,
        finished: None,
        approvals: Vec::new(),
    };
    let events: Vec<(String, String, String)> = conn
        .prepare("SELECT kind, at, body FROM entries WHERE attempt = ?1 ORDER BY seq")?
        .query_map(params![id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (kind, at, body) in events {
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        match kind.as_str() {
            "step" => record.steps.push(StepRecord {
                name: body["step"].as_str().unwrap_or_default().to_owned(),
                started: at,
                finished: None,
                error: None,
                output: None,
            }),
            "step_done" => {
                let name = body["step"].as_str().unwrap_or_default();
                if let Some(step) = record.steps.iter_mut().rev().find(|s| s.name == name) {
                    step.finished = Some(at);
                    step.error = Some(body["error"].as_str().map(str::to_owned));
                    step.output = body["output"].as_str().map(str::to_owned);
                }
            }
            "approvals" => {
                record.approvals = body["approvals"].as_array().cloned().unwrap_or_default();
            }
            "outcome" => {
                record.outcome = serde_json::from_value(body).ok();
                record.finished = Some(at);
            }
            _ => {}
        }
    }
    Ok(record)
}
