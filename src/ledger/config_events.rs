//! The configuration changes each applied commit made to each service, numbered in one sequence
//! for the whole agent: what a service's event stream replays from the last event it saw
//! (`Last-Event-ID`). Values are kept as served, encrypted ones masked: nothing secret is
//! written here.

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Ledger, LedgerError};
use crate::appconfig::Change;

/// A change as recorded and streamed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigEvent {
    /// Its number: the stream's event id.
    pub id: i64,
    /// The environment.
    pub environment: String,
    /// The service.
    pub service: String,
    /// What changed.
    #[serde(flatten)]
    pub change: Change,
    /// The commit applied.
    pub commit: String,
    /// Who signed it, when known.
    pub signer: Option<String>,
    /// When it was applied (RFC 3339).
    pub at: String,
}

pub(super) fn create(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS config_changes (
            id INTEGER PRIMARY KEY,
            environment TEXT NOT NULL,
            service TEXT NOT NULL,
            path TEXT NOT NULL,
            old TEXT NOT NULL,
            new TEXT NOT NULL,
            commit_id TEXT NOT NULL,
            signer TEXT,
            at TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS config_changes_by_service ON config_changes (environment, service, id);",
    )
}

impl Ledger {
    /// Records the changes applying `commit` made in `environment` (by service), in one
    /// transaction; returns them numbered.
    pub fn config_changed(
        &mut self,
        environment: &str,
        commit: &str,
        signer: Option<&str>,
        changes: Vec<(String, Change)>,
    ) -> Result<Vec<ConfigEvent>, LedgerError> {
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let written = (|| {
            let tx = self.conn.transaction()?;
            let mut events = Vec::with_capacity(changes.len());
            for (service, change) in changes {
                tx.execute(
                    "INSERT INTO config_changes (environment, service, path, old, new, commit_id, signer, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        environment,
                        service,
                        change.path,
                        change.old_value.to_string(),
                        change.new_value.to_string(),
                        commit,
                        signer,
                        at
                    ],
                )?;
                events.push(ConfigEvent {
                    id: tx.last_insert_rowid(),
                    environment: environment.to_owned(),
                    service,
                    change,
                    commit: commit.to_owned(),
                    signer: signer.map(str::to_owned),
                    at: at.clone(),
                });
            }
            tx.commit()?;
            Ok(events)
        })();
        written.map_err(|e| self.sql(e))
    }

    /// `service`'s changes in `environment` after event `after`, oldest first, at most `limit`.
    pub fn config_events_after(
        &self,
        environment: &str,
        service: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ConfigEvent>, LedgerError> {
        let rows: Vec<ConfigEvent> = self
            .conn
            .prepare(
                "SELECT id, path, old, new, commit_id, signer, at FROM config_changes
                 WHERE environment = ?1 AND service = ?2 AND id > ?3 ORDER BY id LIMIT ?4",
            )
            .and_then(|mut s| {
                s.query_map(params![environment, service, after, limit as i64], |r| {
                    let value = |text: String| serde_json::from_str(&text).unwrap_or(Value::Null);
                    Ok(ConfigEvent {
                        id: r.get(0)?,
                        environment: environment.to_owned(),
                        service: service.to_owned(),
                        change: Change {
                            path: r.get(1)?,
                            old_value: value(r.get(2)?),
                            new_value: value(r.get(3)?),
                        },
                        commit: r.get(4)?,
                        signer: r.get(5)?,
                        at: r.get(6)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.sql(e))?;
        Ok(rows)
    }
}
