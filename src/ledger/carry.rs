//! An environment's recent record carried from one agent's ledger to another's — through the
//! cluster, so a rescheduled agent keeps its rollback points, failed commits and migration
//! states — and the witness that keeps such a copy up to date.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::{Ledger, LedgerError, journal};

/// The entries of an environment's newest attempts, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Carried {
    /// The environment.
    pub environment: String,
    /// Its entries, each attempt followed by what belongs to it.
    pub entries: Vec<CarriedEntry>,
}

/// One entry, as the ledger that carries it holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CarriedEntry {
    /// Its number there.
    pub seq: i64,
    /// When it was written there.
    pub at: String,
    /// What it records.
    pub kind: String,
    /// The attempt it belongs to, by that ledger's numbering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i64>,
    /// Its content.
    pub body: Value,
}

/// A request to the witness: an environment's record changed; with `held`, the caller waits
/// until the witness holds the change.
pub struct Witnessed {
    /// The environment.
    pub environment: String,
    /// Answered once the copy holds everything appended so far.
    pub held: Option<oneshot::Sender<Result<(), String>>>,
}

/// The sending end of a witness.
#[derive(Clone, Debug)]
pub struct Witness(mpsc::UnboundedSender<Witnessed>);

impl Witness {
    /// A witness, and the requests it receives.
    pub fn channel() -> (Witness, mpsc::UnboundedReceiver<Witnessed>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Witness(sender), receiver)
    }

    /// Tells the witness `environment`'s record changed (it catches up in its own time).
    pub(super) fn told(&self, environment: &str) {
        let _ = self.0.send(Witnessed {
            environment: environment.to_owned(),
            held: None,
        });
    }
}

impl Ledger {
    /// Tells `witness` of every entry appended from now on.
    pub fn witnessed_by(&mut self, witness: Witness) {
        self.witness = Some(witness);
    }

    /// Waits until the witness holds everything appended for `environment` so far; at once
    /// without a witness. (The future does not borrow the ledger.)
    pub fn held_elsewhere(&self, environment: &str) -> impl Future<Output = Result<(), LedgerError>> + Send + use<> {
        let witness = self.witness.clone();
        let environment = environment.to_owned();
        async move {
            let Some(witness) = witness else {
                return Ok(());
            };
            let (held, answer) = oneshot::channel();
            let request = Witnessed {
                environment,
                held: Some(held),
            };
            witness
                .0
                .send(request)
                .map_err(|_| LedgerError::Witness("the witness stopped".to_owned()))?;
            match tokio::time::timeout(std::time::Duration::from_secs(10), answer).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(reason))) => Err(LedgerError::Witness(reason)),
                Ok(Err(_)) => Err(LedgerError::Witness("the witness stopped".to_owned())),
                Err(_) => Err(LedgerError::Witness("no answer within 10 s".to_owned())),
            }
        }
    }

    /// The entries of `environment`'s newest `attempts` attempts, to carry to another ledger.
    pub fn carry(&self, environment: &str, attempts: usize) -> Result<Carried, LedgerError> {
        let entries = journal::recent(&self.conn, environment, attempts).map_err(|e| self.sql(e))?;
        let entries = entries
            .into_iter()
            .map(|entry| CarriedEntry {
                seq: entry.seq,
                at: entry.at,
                kind: entry.kind,
                attempt: entry.attempt,
                body: serde_json::from_str(&entry.body).unwrap_or(Value::Null),
            })
            .collect();
        Ok(Carried {
            environment: environment.to_owned(),
            entries,
        })
    }

    /// Appends what `carried` holds when this ledger holds nothing for its environment yet (a
    /// fresh agent taking over); returns the number of attempts taken over. An attempt carried
    /// without an outcome stays unfinished here, and is closed as interrupted like one of this
    /// agent's own.
    pub fn adopt(&mut self, carried: &Carried) -> Result<usize, LedgerError> {
        if !self.history(&carried.environment, 1)?.is_empty() {
            return Ok(0);
        }
        let mut renumbered = std::collections::HashMap::new();
        let mut adopted = 0;
        for entry in &carried.entries {
            let attempt = match entry.attempt {
                Some(old) => match renumbered.get(&old) {
                    Some(new) => Some(*new),
                    // An entry whose attempt was not carried: nothing to attach it to.
                    None => continue,
                },
                None => None,
            };
            let mut body = entry.body.clone();
            if entry.kind == "attempt"
                && let Value::Object(fields) = &mut body
            {
                fields.insert("carriedFrom".to_owned(), Value::String(entry.at.clone()));
            }
            // Taken over, not new: what it caused was announced by the agent that recorded it.
            let appended = self.append_as(&carried.environment, &entry.kind, attempt, &body, None)?;
            if entry.kind == "attempt" {
                renumbered.insert(entry.seq, appended.seq);
                adopted += 1;
            }
        }
        Ok(adopted)
    }
}
