//! The migration history of each environment: every run of a service's migration for a commit,
//! how it ended, whether its rollback command ran since, and what a person verified after an
//! agent died in the middle of one. From it come the migrations in force (what the database
//! has had and not undone) and the ones interrupted (which nothing runs again automatically).

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Ledger, LedgerError};

/// One run of a service's migration for a commit, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationRecord {
    /// The service.
    pub service: String,
    /// The commit whose migration it is.
    pub commit: String,
    /// The attempt it ran in.
    pub attempt: Option<i64>,
    /// When it started (RFC 3339, UTC).
    pub started: String,
    /// When its last state was recorded.
    pub finished: Option<String>,
    /// `started` (running, or interrupted when no attempt runs), `succeeded`, `failed`,
    /// `rolling-back` (its rollback command runs, or was interrupted), `rolled-back`,
    /// `rollback-failed`.
    pub state: String,
    /// Why it, or its rollback, failed.
    pub error: Option<String>,
    /// The version of the service it migrated to (not recorded before versions were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Who recorded its state by hand after an interruption (`plumb migrations resolve`).
    #[serde(default, rename = "resolvedBy", skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
}

impl MigrationRecord {
    /// Whether an agent died while it, or its rollback command, ran: nothing runs again
    /// automatically until a person records what happened.
    pub fn interrupted(&self) -> bool {
        matches!(self.state.as_str(), "started" | "rolling-back")
    }
}

/// What a person verified of an interrupted migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationState {
    /// The database has it: it counts as in force.
    Applied,
    /// The database does not have it (it never ran, or its rollback completed).
    RolledBack,
}

impl MigrationState {
    /// The state recorded.
    fn recorded(self) -> &'static str {
        match self {
            MigrationState::Applied => "succeeded",
            MigrationState::RolledBack => "rolled-back",
        }
    }
}

impl Ledger {
    /// Records that `service`'s migration for the attempt's commit starts (before running
    /// it), migrating to `version` of the service.
    pub fn migration_started(&mut self, attempt: i64, service: &str, version: &str) -> Result<(), LedgerError> {
        let (environment, commit) = self.attempt_key(attempt)?;
        let body = json!({ "service": service, "commit": commit, "state": "started", "version": version });
        self.append(&environment, "migration", Some(attempt), &body)?;
        Ok(())
    }

    /// Records how `service`'s migration for the attempt's commit ended.
    pub fn migration_finished(&mut self, attempt: i64, service: &str, error: Option<&str>) -> Result<(), LedgerError> {
        let (environment, commit) = self.attempt_key(attempt)?;
        let state = if error.is_some() { "failed" } else { "succeeded" };
        let body = json!({ "service": service, "commit": commit, "state": state, "error": error });
        self.append(&environment, "migration", Some(attempt), &body)?;
        Ok(())
    }

    /// Records, under `attempt`, that the rollback command of `service`'s migration for
    /// `commit` starts (before running it).
    pub fn migration_rolling_back(&mut self, attempt: i64, service: &str, commit: &str) -> Result<(), LedgerError> {
        let environment = self.environment_of(attempt)?;
        let body = json!({ "service": service, "commit": commit, "state": "rolling-back" });
        self.append(&environment, "migration", Some(attempt), &body)?;
        Ok(())
    }

    /// Records, under `attempt`, how the rollback command of `service`'s migration for
    /// `commit` ended.
    pub fn migration_rolled_back(
        &mut self,
        attempt: i64,
        service: &str,
        commit: &str,
        error: Option<&str>,
    ) -> Result<(), LedgerError> {
        let environment = self.environment_of(attempt)?;
        let state = if error.is_some() {
            "rollback-failed"
        } else {
            "rolled-back"
        };
        let body = json!({ "service": service, "commit": commit, "state": state, "error": error });
        self.append(&environment, "migration", Some(attempt), &body)?;
        Ok(())
    }

    /// Records what `by` verified of the interrupted migrations of `commit` in `environment`
    /// (of `service` only, when given); returns the services resolved, none when nothing of
    /// that commit was interrupted.
    pub fn migration_resolved(
        &mut self,
        environment: &str,
        commit: &str,
        service: Option<&str>,
        state: MigrationState,
        by: &str,
    ) -> Result<Vec<String>, LedgerError> {
        let interrupted: Vec<String> = self
            .migrations(environment, usize::MAX)?
            .into_iter()
            .filter(|r| r.interrupted() && r.commit == commit && service.is_none_or(|s| s == r.service))
            .map(|r| r.service)
            .collect();
        for service in &interrupted {
            let body = json!({
                "service": service, "commit": commit, "state": state.recorded(), "resolvedBy": by,
            });
            self.append(environment, "migration", None, &body)?;
        }
        Ok(interrupted)
    }

    /// The last recorded state of `service`'s migration for `commit` in `environment`:
    /// `started` (interrupted, if nothing followed), `succeeded`, `failed`, or a rollback's.
    pub fn migration_state(
        &self,
        environment: &str,
        service: &str,
        commit: &str,
    ) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row(
                "SELECT json_extract(body, '$.state') FROM entries
                 WHERE environment = ?1 AND kind = 'migration'
                 AND json_extract(body, '$.service') = ?2 AND json_extract(body, '$.commit') = ?3
                 ORDER BY seq DESC LIMIT 1",
                params![environment, service, commit],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// The migrations of `environment`, newest first, at most `limit`: each run of a service's
    /// migration for a commit, with how it ended and whether it was rolled back.
    pub fn migrations(&self, environment: &str, limit: usize) -> Result<Vec<MigrationRecord>, LedgerError> {
        let rows: Vec<(String, Option<i64>, String)> = self
            .conn
            .prepare("SELECT at, attempt, body FROM entries WHERE environment = ?1 AND kind = 'migration' ORDER BY seq")
            .and_then(|mut statement| {
                statement
                    .query_map(params![environment], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect()
            })
            .map_err(|e| self.sql(e))?;
        let mut records: Vec<MigrationRecord> = Vec::new();
        for (at, attempt, body) in rows {
            let body: Value = serde_json::from_str(&body).unwrap_or_default();
            let text = |key: &str| body[key].as_str().map(str::to_owned);
            let (service, commit) = (text("service").unwrap_or_default(), text("commit").unwrap_or_default());
            let state = text("state").unwrap_or_default();
            if state == "started" {
                records.push(MigrationRecord {
                    service,
                    commit,
                    attempt,
                    started: at,
                    finished: None,
                    state,
                    error: None,
                    version: text("version"),
                    resolved_by: None,
                });
                continue;
            }
            let Some(record) = records
                .iter_mut()
                .rev()
                .find(|r| r.service == service && r.commit == commit)
            else {
                continue;
            };
            record.finished = Some(at);
            record.error = text("error");
            if let Some(by) = text("resolvedBy") {
                record.resolved_by = Some(by);
            }
            record.state = state;
        }
        records.reverse();
        records.truncate(limit);
        Ok(records)
    }

    /// The migrations in force in `environment`, newest first: they succeeded (or a person
    /// said they were applied) and their rollback command has not run since.
    pub fn migrations_in_force(&self, environment: &str) -> Result<Vec<MigrationRecord>, LedgerError> {
        let mut all = self.migrations(environment, usize::MAX)?;
        all.retain(|r| r.state == "succeeded");
        Ok(all)
    }
}
