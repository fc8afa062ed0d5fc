//! What the agent observed of an environment outside any attempt: a head the signing policy
//! refused, a head held back (by a sync window, a promotion, approvals, or automatic sync being
//! off), drift it did not correct. Each is recorded once, not at every check, so the record —
//! and the notifications it causes — says when it began, not how often it was seen.

use rusqlite::{OptionalExtension, params};
use serde_json::{Value, json};

use super::{Ledger, LedgerError};

impl Ledger {
    /// Records that `commit`, the head of `environment`'s repository, was refused by the
    /// signing policy, once per commit; whether it was recorded now.
    pub fn refused_head(
        &mut self,
        environment: &str,
        commit: &str,
        kind: &str,
        reason: &str,
    ) -> Result<bool, LedgerError> {
        if self.noted(environment, "refusal", commit, "")? {
            return Ok(false);
        }
        let body = json!({ "commit": commit, "kind": kind, "reason": reason, "key": "" });
        self.append(environment, "refusal", None, &body)?;
        Ok(true)
    }

    /// Records that `commit` waits in `environment` for `causes` (`window`, `promotion`,
    /// `approval`, `sync`), once per commit and set of causes; whether it was recorded now.
    pub fn waiting(
        &mut self,
        environment: &str,
        commit: &str,
        causes: &[&str],
        reason: &str,
    ) -> Result<bool, LedgerError> {
        let key = causes.join(",");
        if self.noted(environment, "waiting", commit, &key)? {
            return Ok(false);
        }
        let body = json!({ "commit": commit, "for": causes, "reason": reason, "key": key });
        self.append(environment, "waiting", None, &body)?;
        Ok(true)
    }

    /// Records drift from `commit` (the rollback point) that is not corrected now, and why;
    /// unless the same drift was recorded since the environment's last attempt ended. Whether
    /// it was recorded now.
    pub fn drift_left(
        &mut self,
        environment: &str,
        commit: &str,
        drift: &[String],
        why: &str,
    ) -> Result<bool, LedgerError> {
        let last: Option<String> = self
            .conn
            .query_row(
                "SELECT d.body FROM entries d WHERE d.environment = ?1 AND d.kind = 'drift'
                 AND NOT EXISTS (SELECT 1 FROM entries o WHERE o.environment = ?1 AND o.kind = 'outcome' AND o.seq > d.seq)
                 ORDER BY d.seq DESC LIMIT 1",
                params![environment],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        let same = last
            .and_then(|body| serde_json::from_str::<Value>(&body).ok())
            .is_some_and(|body| body["commit"] == commit && body["drift"] == json!(drift));
        if same {
            return Ok(false);
        }
        let body = json!({ "commit": commit, "drift": drift, "reason": why });
        self.append(environment, "drift", None, &body)?;
        Ok(true)
    }

    /// Whether an entry of `kind` for `commit` with `key` was recorded in `environment`.
    fn noted(&self, environment: &str, kind: &str, commit: &str, key: &str) -> Result<bool, LedgerError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM entries WHERE environment = ?1 AND kind = ?2
                 AND json_extract(body, '$.commit') = ?3 AND json_extract(body, '$.key') = ?4)",
                params![environment, kind, commit, key],
                |row| row.get(0),
            )
            .map_err(|e| self.sql(e))
    }
}
