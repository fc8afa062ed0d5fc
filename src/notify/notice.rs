//! What a notification says, composed from the ledger entry that caused it: the event, the
//! environment, repository, commit (and its subject), signer, the attempt's strategy, steps and
//! durations, the error, and a link to the agent. This is the webhook's body as it is sent
//! (`schemas/notification.schema.json`); the other channels format the same facts.

use rusqlite::Connection;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ledger::{AttemptRecord, Entry, Outcome, Trigger};

/// The most steps (and planned changes) a notification lists; the rest are counted.
const MAX_LISTED: usize = 50;

/// The longest error or reason a notification carries, in bytes.
const MAX_TEXT: usize = 2048;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// An attempt started changing the environment.
    Started,
    /// An attempt ended applied and healthy.
    Succeeded,
    /// An attempt failed and the environment was restored to its rollback point.
    RolledBack,
    /// An attempt failed and could not be restored: a person must look.
    Failed,
    /// A commit was not applied at all: unsigned, unauthorized, invalid (with the reason).
    Refused,
    /// What runs differs from the rollback point: corrected (`healed`) or left (why).
    Drift,
    /// A head is held back: by a sync window, a promotion, approvals, or a manual sync.
    Waiting,
    /// A test message (`plumb notify test`).
    Test,
}

impl Event {
    /// Its name, as configured and sent.
    pub fn name(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Succeeded => "succeeded",
            Event::RolledBack => "rolled_back",
            Event::Failed => "failed",
            Event::Refused => "refused",
            Event::Drift => "drift",
            Event::Waiting => "waiting",
            Event::Test => "test",
        }
    }

    /// What it says after the environment's name (`production rolled back 3f1c2a9`).
    fn verb(self) -> &'static str {
        match self {
            Event::Started => "deploying",
            Event::Succeeded => "deployed",
            Event::RolledBack => "rolled back",
            Event::Failed => "failed to deploy",
            Event::Refused => "refused",
            Event::Drift => "drifted from",
            Event::Waiting => "holds",
            Event::Test => "test message for",
        }
    }
}

/// A notification: the webhook's JSON body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "plumb notification")]
pub struct Notice {
    /// What happened.
    pub event: Event,
    /// This message's id: unique, the same on every retry (also in `X-Plumb-Delivery`).
    pub delivery: String,
    /// When it happened (RFC 3339, UTC).
    pub time: String,
    /// The environment.
    pub environment: String,
    /// The config repository the commit is from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositoryRef>,
    /// The commit.
    pub commit: CommitRef,
    /// Who signed the commit (the signing policy's name), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// One line: `production rolled back 3f1c2a9`.
    pub summary: String,
    /// Why: the error of a failed attempt, a refusal's reason, what a head waits for, why drift
    /// is left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The attempt, when the event is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<AttemptNotice>,
    /// For `drift`: what differs, per service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<String>,
    /// For `drift`: whether it was corrected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healed: Option<bool>,
    /// For `waiting`: what the head waits for (`window`, `promotion`, `approval`, `sync`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
    /// The environment's page on the agent's dashboard (under `externalUrl` in the agent's
    /// configuration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A config repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepositoryRef {
    /// Its name in the agent's configuration.
    pub name: String,
    /// Where it is fetched from (credentials removed).
    pub url: String,
}

/// A commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommitRef {
    /// Its full id.
    pub id: String,
    /// Its first seven digits.
    pub short: String,
    /// The first line of its message, when the agent has the commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Its page on the forge, when the repository is on one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// An attempt, as a notification tells it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttemptNotice {
    /// Its id in the ledger.
    pub id: i64,
    /// What started it: `commit`, `heal`, `sync`, `rollback`.
    pub trigger: String,
    /// Who asked for it (a sync or rollback through the API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The strategy: the services' one, `mixed` or `none`.
    pub strategy: String,
    /// `running`, `succeeded`, `rolled_back`, `failed`, `refused`, `interrupted`.
    pub outcome: String,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it started.
    pub started: String,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// How long it took, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// What it changes, per service (the first 50).
    pub changes: Vec<String>,
    /// Its steps, in order (the first 50).
    pub steps: Vec<StepNotice>,
    /// Steps and changes left out of the lists above.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A step of an attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepNotice {
    /// What it does (`start green`, `switch traffic`…).
    pub name: String,
    /// How long it took, in seconds (absent while it runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a notice needs beyond the ledger.
pub trait Context: Send + Sync {
    /// The repository `environment` is applied from, and its web address for commit links.
    fn repository(&self, environment: &str) -> Option<(RepositoryRef, Option<String>)>;
    /// The subject of `commit` in `environment`'s repository.
    fn subject(&self, environment: &str, commit: &str) -> Option<String>;
    /// The environment's page on the agent.
    fn url(&self, environment: &str) -> Option<String>;
}

/// The notice `entry` causes, without its delivery id; `None` for entries that cause none (a
/// step, a heal starting, a commit that changed nothing starting, an interrupted attempt).
pub fn compose(conn: &Connection, entry: &Entry, context: &dyn Context) -> rusqlite::Result<Option<Notice>> {
    // Most entries are steps: nothing to read for them.
    if !matches!(
        entry.kind.as_str(),
        "attempt" | "outcome" | "refusal" | "waiting" | "drift"
    ) {
        return Ok(None);
    }
    let body: Value = serde_json::from_str(&entry.body).unwrap_or(Value::Null);
    let text = |key: &str| body[key].as_str().map(clip);
    let (event, commit, record) = match entry.kind.as_str() {
        "attempt" => {
            let record = crate::ledger::record_of(conn, entry.seq, entry.at.clone(), &entry.body)?;
            let changes = record.attempt.plan.as_array().is_some_and(|p| !p.is_empty());
            if record.attempt.trigger == Trigger::Heal || !changes {
                return Ok(None);
            }
            (Event::Started, record.attempt.commit.clone(), Some(record))
        }
        "outcome" => {
            let Some(id) = entry.attempt else { return Ok(None) };
            let started: String = conn.query_row("SELECT at FROM entries WHERE seq = ?1", [id], |r| r.get(0))?;
            let attempt: String = conn.query_row("SELECT body FROM entries WHERE seq = ?1", [id], |r| r.get(0))?;
            let record = crate::ledger::record_of(conn, id, started, &attempt)?;
            let event = match (&record.outcome, record.attempt.trigger) {
                (Some(Outcome::Interrupted) | None, _) => return Ok(None),
                (Some(_), Trigger::Heal) => Event::Drift,
                (Some(Outcome::Succeeded), _) => Event::Succeeded,
                (Some(Outcome::RolledBack(_)), _) => Event::RolledBack,
                (Some(Outcome::Failed(_)), _) => Event::Failed,
                (Some(Outcome::Refused(_)), _) => Event::Refused,
            };
            // A commit applied again with nothing to change (the agent started again over it)
            // said nothing new; a sync or a rollback someone asked for is always told.
            let unchanged = record.attempt.plan.as_array().is_none_or(|p| p.is_empty());
            if event == Event::Succeeded
                && record.attempt.trigger == Trigger::Commit
                && unchanged
                && succeeded_before(conn, &entry.environment, &record.attempt.commit, id)?
            {
                return Ok(None);
            }
            (event, record.attempt.commit.clone(), Some(record))
        }
        "refusal" => (Event::Refused, text("commit").unwrap_or_default(), None),
        "waiting" => (Event::Waiting, text("commit").unwrap_or_default(), None),
        "drift" => (Event::Drift, text("commit").unwrap_or_default(), None),
        _ => return Ok(None),
    };
    let environment = entry.environment.clone();
    let mut notice = blank(event, &environment, &commit, &entry.at, context);
    match record {
        Some(record) => {
            notice.signer.clone_from(&record.attempt.signer);
            notice.reason = match &record.outcome {
                Some(Outcome::RolledBack(r) | Outcome::Failed(r) | Outcome::Refused(r)) => Some(clip(r)),
                _ => None,
            };
            if event == Event::Drift {
                notice.healed = Some(record.outcome == Some(Outcome::Succeeded));
                notice.drift = strings(&record.attempt.plan);
            }
            notice.attempt = Some(attempt_notice(&record));
        }
        None => {
            notice.reason = text("reason");
            notice.drift = strings(&body["drift"]);
            notice.waiting_for = strings(&body["for"]);
            if event == Event::Drift {
                notice.healed = Some(false);
            }
        }
    }
    notice.summary = summary(&notice);
    Ok(Some(notice))
}

/// Whether `commit` was applied healthy in `environment` by an attempt before `attempt`.
fn succeeded_before(conn: &Connection, environment: &str, commit: &str, attempt: i64) -> rusqlite::Result<bool> {
    conn.query_row(
        // The commit's attempts (by the ledger's `entries_by_commit`), then their outcomes.
        "SELECT EXISTS (SELECT 1 FROM entries a JOIN entries o ON o.attempt = a.seq
         WHERE a.environment = ?1 AND a.kind = 'attempt'
         AND json_extract(a.body, '$.commit') = ?2 AND a.seq < ?3
         AND o.kind = 'outcome' AND json_extract(o.body, '$.result') = 'succeeded')",
        rusqlite::params![environment, commit, attempt],
        |row| row.get(0),
    )
}

/// A notice of `event` for `commit` in `environment`, with what the context knows and nothing
/// else yet.
pub fn blank(event: Event, environment: &str, commit: &str, at: &str, context: &dyn Context) -> Notice {
    let repository = context.repository(environment);
    let web = repository.as_ref().and_then(|(_, web)| web.clone());
    let mut notice = Notice {
        event,
        delivery: String::new(),
        time: at.to_owned(),
        environment: environment.to_owned(),
        repository: repository.map(|(r, _)| r),
        commit: CommitRef {
            id: commit.to_owned(),
            short: commit.chars().take(7).collect(),
            subject: context.subject(environment, commit),
            url: web
                .filter(|_| !commit.is_empty())
                .map(|web| format!("{web}/commit/{commit}")),
        },
        signer: None,
        summary: String::new(),
        reason: None,
        attempt: None,
        drift: Vec::new(),
        healed: None,
        waiting_for: Vec::new(),
        url: context.url(environment),
    };
    notice.summary = summary(&notice);
    notice
}

/// The one line that says what happened (a mail's subject after `[plumb] `).
pub fn summary(notice: &Notice) -> String {
    let name = &notice.environment;
    let short = &notice.commit.short;
    match notice.event {
        Event::Drift if notice.healed == Some(true) => format!("{name} drift corrected to {short}"),
        Event::Test => format!("test message for {name}"),
        Event::Waiting if !notice.waiting_for.is_empty() => {
            format!("{name} holds {short} for {}", notice.waiting_for.join(", "))
        }
        event => format!("{name} {} {short}", event.verb()),
    }
}

fn attempt_notice(record: &AttemptRecord) -> AttemptNotice {
    let outcome = match &record.outcome {
        None => "running",
        Some(Outcome::Succeeded) => "succeeded",
        Some(Outcome::RolledBack(_)) => "rolled_back",
        Some(Outcome::Failed(_)) => "failed",
        Some(Outcome::Refused(_)) => "refused",
        Some(Outcome::Interrupted) => "interrupted",
    };
    let error = match &record.outcome {
        Some(Outcome::RolledBack(r) | Outcome::Failed(r) | Outcome::Refused(r)) => Some(clip(r)),
        _ => None,
    };
    let changes = strings(&record.attempt.plan);
    let omitted = changes.len().saturating_sub(MAX_LISTED) + record.steps.len().saturating_sub(MAX_LISTED);
    let trigger = serde_json::to_value(record.attempt.trigger)
        .ok()
        .and_then(|t| t.as_str().map(str::to_owned))
        .unwrap_or_default();
    AttemptNotice {
        id: record.id,
        trigger,
        by: record.attempt.by.clone(),
        strategy: record.attempt.strategy.clone(),
        outcome: outcome.to_owned(),
        error,
        started: record.started.clone(),
        finished: record.finished.clone(),
        duration_seconds: record.finished.as_deref().and_then(|end| seconds(&record.started, end)),
        changes: changes.into_iter().take(MAX_LISTED).collect(),
        steps: record
            .steps
            .iter()
            .take(MAX_LISTED)
            .map(|step| StepNotice {
                name: step.name.clone(),
                duration_seconds: step.finished.as_deref().and_then(|end| seconds(&step.started, end)),
                error: step.error.clone().flatten().map(|e| clip(&e)),
            })
            .collect(),
        omitted,
    }
}

/// Seconds from `start` to `end` (RFC 3339), to the millisecond.
fn seconds(start: &str, end: &str) -> Option<f64> {
    let start = chrono::DateTime::parse_from_rfc3339(start).ok()?;
    let end = chrono::DateTime::parse_from_rfc3339(end).ok()?;
    Some((end - start).num_milliseconds().max(0) as f64 / 1000.0)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(|i| i.as_str().map(clip)).collect())
        .unwrap_or_default()
}

/// `text`, cut at [`MAX_TEXT`] bytes on a character boundary.
fn clip(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A notice's facts as labelled lines, for the channels that write for people (Slack, mail):
/// outcome, commit, signer, strategy, duration, who asked.
pub fn facts(notice: &Notice) -> Vec<(&'static str, String)> {
    let mut facts = vec![("Environment", notice.environment.clone())];
    let outcome = match (&notice.attempt, notice.event) {
        (_, Event::Drift) if notice.healed == Some(true) => "drift corrected".to_owned(),
        (_, Event::Drift) => "drift left as it is".to_owned(),
        (_, Event::Waiting) => format!("waiting for {}", notice.waiting_for.join(", ")),
        (Some(attempt), _) => attempt.outcome.replace('_', " "),
        (None, event) => event.name().replace('_', " "),
    };
    facts.push(("Outcome", outcome));
    let mut commit = notice.commit.short.clone();
    if let Some(subject) = &notice.commit.subject {
        commit.push_str(" — ");
        commit.push_str(subject);
    }
    facts.push(("Commit", commit));
    if let Some(signer) = &notice.signer {
        facts.push(("Signer", signer.clone()));
    }
    if let Some(attempt) = &notice.attempt {
        facts.push(("Strategy", attempt.strategy.clone()));
        if let Some(seconds) = attempt.duration_seconds {
            facts.push(("Duration", format!("{seconds:.1} s")));
        }
        if let Some(by) = &attempt.by {
            facts.push(("Asked by", format!("{by} ({})", attempt.trigger)));
        }
    }
    facts
}

/// The step that failed, and its error, when one did.
pub fn failing_step(notice: &Notice) -> Option<(&str, &str)> {
    let attempt = notice.attempt.as_ref()?;
    attempt
        .steps
        .iter()
        .find_map(|s| s.error.as_deref().map(|e| (s.name.as_str(), e)))
}
