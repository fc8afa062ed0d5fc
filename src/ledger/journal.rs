//! The hash-chained journal under the ledger: one table of entries, each hashing its own fields
//! and the previous entry's hash, so a changed or removed entry breaks every hash after it.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The hash before the first entry.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One journal entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its position, from 1.
    pub seq: i64,
    /// When it was written (RFC 3339, UTC, milliseconds).
    pub at: String,
    /// The environment it concerns.
    pub environment: String,
    /// What it records (`attempt`, `step`, `step_done`, `outcome`).
    pub kind: String,
    /// The attempt it belongs to (`None` for an attempt itself).
    pub attempt: Option<i64>,
    /// Its content, JSON.
    pub body: String,
    /// SHA-256 over the previous hash and the fields above.
    pub hash: String,
}

/// Where the chain breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ledger entry {seq} was altered or an entry before it was removed: {reason}")]
pub struct Tamper {
    /// The first entry whose hash does not hold.
    pub seq: i64,
    /// What does not match.
    pub reason: String,
}

pub(super) fn create(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS entries (
            seq INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            environment TEXT NOT NULL,
            kind TEXT NOT NULL,
            attempt INTEGER,
            body TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS entries_by_environment ON entries (environment, kind, seq);
        CREATE INDEX IF NOT EXISTS entries_by_attempt ON entries (attempt, seq);
        CREATE INDEX IF NOT EXISTS entries_by_commit ON entries (environment, kind, json_extract(body, '$.commit'));",
    )
}

fn hash(previous: &str, seq: i64, at: &str, environment: &str, kind: &str, attempt: Option<i64>, body: &str) -> String {
    let mut digest = Sha256::new();
    // Length-prefixed fields: no two different entries hash the same bytes.
    for field in [
        previous,
        &seq.to_string(),
        at,
        environment,
        kind,
        &attempt.map(|a| a.to_string()).unwrap_or_default(),
        body,
    ] {
        digest.update((field.len() as u64).to_be_bytes());
        digest.update(field.as_bytes());
    }
    hex::encode(digest.finalize())
}

/// Appends an entry inside `tx` (durable once it commits).
pub(super) fn append_in(
    tx: &Transaction<'_>,
    environment: &str,
    kind: &str,
    attempt: Option<i64>,
    body: &Value,
) -> rusqlite::Result<Entry> {
    let last: Option<(i64, String)> = tx
        .query_row("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let (previous_seq, previous_hash) = last.unwrap_or((0, GENESIS.to_owned()));
    let seq = previous_seq + 1;
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body = body.to_string();
    let hash = hash(&previous_hash, seq, &at, environment, kind, attempt, &body);
    tx.execute(
        "INSERT INTO entries (seq, at, environment, kind, attempt, body, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![seq, at, environment, kind, attempt, body, hash],
    )?;
    Ok(Entry {
        seq,
        at,
        environment: environment.to_owned(),
        kind: kind.to_owned(),
        attempt,
        body,
        hash,
    })
}

/// The entries of `environment`'s newest `attempts` attempts and of what belongs to them,
/// oldest first.
pub(super) fn recent(conn: &Connection, environment: &str, attempts: usize) -> rusqlite::Result<Vec<Entry>> {
    let mut statement = conn.prepare(
        "WITH newest AS (SELECT seq FROM entries WHERE environment = ?1 AND kind = 'attempt'
                         ORDER BY seq DESC LIMIT ?2)
         SELECT seq, at, environment, kind, attempt, body, hash FROM entries
         WHERE seq IN newest OR attempt IN newest ORDER BY seq",
    )?;
    statement
        .query_map(params![environment, attempts as i64], entry)?
        .collect()
}

fn entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        seq: row.get(0)?,
        at: row.get(1)?,
        environment: row.get(2)?,
        kind: row.get(3)?,
        attempt: row.get(4)?,
        body: row.get(5)?,
        hash: row.get(6)?,
    })
}

/// The entries after `seq`, oldest first, at most `limit`.
pub(super) fn after(conn: &Connection, seq: i64, limit: usize) -> rusqlite::Result<Vec<Entry>> {
    let mut statement = conn.prepare(
        "SELECT seq, at, environment, kind, attempt, body, hash FROM entries WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    statement.query_map(params![seq, limit as i64], entry)?.collect()
}

/// Recomputes every hash in order.
pub(super) fn verify(conn: &Connection) -> rusqlite::Result<Result<(usize, String), Tamper>> {
    let mut statement =
        conn.prepare("SELECT seq, at, environment, kind, attempt, body, hash FROM entries ORDER BY seq")?;
    let mut rows = statement.query([])?;
    let mut previous = GENESIS.to_owned();
    let mut expected_seq = 1;
    let mut count = 0;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        if seq != expected_seq {
            return Ok(Err(Tamper {
                seq: expected_seq,
                reason: format!("entry {expected_seq} is missing (next is {seq})"),
            }));
        }
        let (at, environment, kind): (String, String, String) = (row.get(1)?, row.get(2)?, row.get(3)?);
        let (attempt, body, stored): (Option<i64>, String, String) = (row.get(4)?, row.get(5)?, row.get(6)?);
        let computed = hash(&previous, seq, &at, &environment, &kind, attempt, &body);
        if computed != stored {
            return Ok(Err(Tamper {
                seq,
                reason: "its hash does not match its content and the entry before it".to_owned(),
            }));
        }
        previous = stored;
        expected_seq += 1;
        count += 1;
    }
    Ok(Ok((count, previous)))
}
