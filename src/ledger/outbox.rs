//! The outbox: the messages the ledger's entries cause (a notification to each channel that
//! wants one), written in the same transaction as the entry, so a message is never lost to a
//! crash and never sent for an entry that was not recorded. Each message has a delivery id made
//! when it is queued and kept on every retry; a channel's messages for one environment go out
//! in order. Which entries cause which messages is not the ledger's business: the agent hands
//! it a [`Notices`] that decides.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

use super::{Entry, Ledger, LedgerError};

/// A message to queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The channel it goes to.
    pub channel: String,
    /// Its delivery id: unique, the same on every retry.
    pub delivery: String,
    /// The event (`succeeded`, `refused`…).
    pub event: String,
    /// The environment it concerns.
    pub environment: String,
    /// The commit it concerns.
    pub commit: String,
    /// What is sent, JSON.
    pub body: String,
}

/// A queued message, as the outbox holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    /// Its row.
    pub id: i64,
    /// The message.
    pub message: Message,
    /// How many times it was tried.
    pub tries: u32,
    /// When it was queued (RFC 3339).
    pub queued: String,
    /// When it may be tried next (Unix milliseconds).
    pub due: i64,
}

/// Decides which messages an entry causes.
pub trait Notices: Send + Sync {
    /// The messages `entry` causes; `conn` reads what else the ledger holds (the attempt the
    /// entry belongs to, its steps), inside the entry's transaction.
    fn of(&self, conn: &Connection, entry: &Entry) -> rusqlite::Result<Vec<Message>>;

    /// Told after messages were queued: the senders look at the outbox now.
    fn queued(&self);
}

/// How a message's delivery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The receiver took it.
    Delivered,
    /// The receiver refused it for good (a 4xx other than 408 and 429): not tried again.
    Rejected,
    /// It was tried until its time ran out.
    GivenUp,
}

impl Ended {
    fn state(self) -> &'static str {
        match self {
            Ended::Delivered => "delivered",
            Ended::Rejected => "rejected",
            Ended::GivenUp => "given-up",
        }
    }
}

/// One channel's outbox, for the status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelState {
    /// Messages waiting to go.
    pub queued: i64,
    /// When the last message was delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_delivered: Option<String>,
    /// Why the oldest waiting message has not gone yet, when it was tried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing: Option<String>,
    /// Messages not delivered for good (refused by the receiver, or out of time).
    pub undelivered: i64,
}

pub(super) fn create(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS outbox (
            id INTEGER PRIMARY KEY,
            delivery TEXT NOT NULL UNIQUE,
            channel TEXT NOT NULL,
            cause INTEGER NOT NULL,
            event TEXT NOT NULL,
            environment TEXT NOT NULL,
            commit_id TEXT NOT NULL,
            body TEXT NOT NULL,
            queued TEXT NOT NULL,
            due INTEGER NOT NULL,
            tries INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL DEFAULT 'queued',
            answer TEXT,
            finished TEXT,
            UNIQUE (channel, cause, event)
        );
        CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (channel, state, environment, id);
        CREATE TABLE IF NOT EXISTS forge_deployments (
            channel TEXT NOT NULL,
            environment TEXT NOT NULL,
            commit_id TEXT NOT NULL,
            deployment TEXT NOT NULL,
            PRIMARY KEY (channel, environment, commit_id)
        );",
    )
}

/// Queues the messages `notices` says `entry` causes, inside the entry's transaction; returns
/// how many were queued. An entry queues a message for a channel and event once.
pub(super) fn enqueue(tx: &Transaction<'_>, notices: &dyn Notices, entry: &Entry) -> rusqlite::Result<usize> {
    let mut queued = 0;
    for message in notices.of(tx, entry)? {
        queued += tx.execute(
            "INSERT OR IGNORE INTO outbox (delivery, channel, cause, event, environment, commit_id, body, queued, due)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                message.delivery,
                message.channel,
                entry.seq,
                message.event,
                message.environment,
                message.commit,
                message.body,
                entry.at,
                now_ms()
            ],
        )?;
    }
    Ok(queued)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Ledger {
    /// Queues the messages `notices` says each entry appended from now on causes.
    pub fn notify_with(&mut self, notices: std::sync::Arc<dyn Notices>) {
        self.notices = Some(notices);
    }

    /// The message `channel` sends next: of each environment's oldest waiting message, the
    /// one due first (it may not be due yet).
    pub fn outbox_next(&self, channel: &str) -> Result<Option<Queued>, LedgerError> {
        self.conn
            .query_row(
                "SELECT id, delivery, event, environment, commit_id, body, tries, queued, due FROM outbox o
                 WHERE channel = ?1 AND state = 'queued' AND id = (SELECT min(id) FROM outbox
                     WHERE channel = o.channel AND state = 'queued' AND environment = o.environment)
                 ORDER BY due, id LIMIT 1",
                params![channel],
                |row| {
                    Ok(Queued {
                        id: row.get(0)?,
                        message: Message {
                            channel: channel.to_owned(),
                            delivery: row.get(1)?,
                            event: row.get(2)?,
                            environment: row.get(3)?,
                            commit: row.get(4)?,
                            body: row.get(5)?,
                        },
                        tries: row.get(6)?,
                        queued: row.get(7)?,
                        due: row.get(8)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// Records that message `id` was tried and is tried again at `due` (Unix milliseconds),
    /// with why it did not go.
    pub fn outbox_retry(&mut self, id: i64, due: i64, error: &str) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "UPDATE outbox SET tries = tries + 1, due = ?2, answer = ?3 WHERE id = ?1",
                params![id, due, error],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Records how message `id`'s delivery ended, with the receiver's answer.
    pub fn outbox_ended(&mut self, id: i64, ended: Ended, answer: &str) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "UPDATE outbox SET tries = tries + 1, state = ?2, answer = ?3, finished = ?4 WHERE id = ?1",
                params![id, ended.state(), answer, now()],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Forgets the messages that ended more than `days` ago.
    pub fn outbox_prune(&mut self, days: i64) -> Result<usize, LedgerError> {
        let before =
            (chrono::Utc::now() - chrono::Duration::days(days)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.conn
            .execute(
                "DELETE FROM outbox WHERE state != 'queued' AND finished < ?1",
                params![before],
            )
            .map_err(|e| self.sql(e))
    }

    /// How many of `channel`'s messages wait to go.
    pub fn outbox_queued(&self, channel: &str) -> Result<i64, LedgerError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM outbox WHERE channel = ?1 AND state = 'queued'",
                params![channel],
                |row| row.get(0),
            )
            .map_err(|e| self.sql(e))
    }

    /// Each channel's outbox: what waits, what went last, what fails.
    pub fn outbox_state(&self) -> Result<BTreeMap<String, ChannelState>, LedgerError> {
        let mut states: BTreeMap<String, ChannelState> = BTreeMap::new();
        let rows: Vec<(String, String, i64, Option<String>)> = self
            .conn
            .prepare("SELECT channel, state, count(*), max(finished) FROM outbox GROUP BY channel, state")
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect()
            })
            .map_err(|e| self.sql(e))?;
        for (channel, state, count, finished) in rows {
            let channel = states.entry(channel).or_default();
            match state.as_str() {
                "queued" => channel.queued = count,
                "delivered" => channel.last_delivered = finished,
                _ => channel.undelivered += count,
            }
        }
        let failing: Vec<(String, String)> = self
            .conn
            .prepare(
                "SELECT channel, answer FROM outbox o WHERE state = 'queued' AND tries > 0
                 AND id = (SELECT min(id) FROM outbox WHERE channel = o.channel AND state = 'queued')",
            )
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| self.sql(e))?;
        for (channel, answer) in failing {
            states.entry(channel).or_default().failing = Some(answer);
        }
        Ok(states)
    }

    /// The messages queued for `channel` (any state), oldest first: for tests and audits.
    pub fn outbox_of(&self, channel: &str) -> Result<Vec<(Message, String)>, LedgerError> {
        self.conn
            .prepare(
                "SELECT delivery, event, environment, commit_id, body, state FROM outbox WHERE channel = ?1 ORDER BY id",
            )
            .and_then(|mut s| {
                s.query_map(params![channel], |r| {
                    Ok((
                        Message {
                            channel: channel.to_owned(),
                            delivery: r.get(0)?,
                            event: r.get(1)?,
                            environment: r.get(2)?,
                            commit: r.get(3)?,
                            body: r.get(4)?,
                        },
                        r.get(5)?,
                    ))
                })?
                .collect()
            })
            .map_err(|e| self.sql(e))
    }

    /// The forge's deployment that `channel` made for `commit` in `environment`.
    pub fn forge_deployment(
        &self,
        channel: &str,
        environment: &str,
        commit: &str,
    ) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row(
                "SELECT deployment FROM forge_deployments WHERE channel = ?1 AND environment = ?2 AND commit_id = ?3",
                params![channel, environment, commit],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// Remembers the forge's deployment that `channel` made for `commit` in `environment`.
    pub fn keep_forge_deployment(
        &mut self,
        channel: &str,
        environment: &str,
        commit: &str,
        deployment: &str,
    ) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO forge_deployments (channel, environment, commit_id, deployment) VALUES (?1, ?2, ?3, ?4)",
                params![channel, environment, commit, deployment],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }
}
