//! Which channels an entry's notice goes to, and what the notice knows beyond the ledger (the
//! repository, the commit's subject, the agent's address). The ledger asks inside the entry's
//! transaction; the senders are rung once it commits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::Notify;

use super::Channel;
use super::notice::{Context, RepositoryRef, compose};
use crate::ledger::{Entry, Message, Notices};

/// A config repository, as notices name it.
#[derive(Clone, Debug)]
pub struct Origin {
    /// Its name in the agent's configuration.
    pub name: String,
    /// Where it is fetched from, credentials removed.
    pub url: String,
    /// Its fetched commits (the fetcher's cache folder).
    pub cache: PathBuf,
    /// The environments it owns; all when `None`.
    pub environments: Option<Vec<String>>,
}

/// What notices know beyond the ledger.
pub struct Origins {
    /// The agent's address as people reach it (`externalUrl`).
    pub external_url: Option<String>,
    /// The repositories followed.
    pub repositories: Vec<Origin>,
}

impl Origins {
    fn origin(&self, environment: &str) -> Option<&Origin> {
        self.repositories.iter().find(|r| match &r.environments {
            Some(only) => only.iter().any(|e| e == environment),
            None => true,
        })
    }
}

impl Context for Origins {
    fn repository(&self, environment: &str) -> Option<(RepositoryRef, Option<String>)> {
        let origin = self.origin(environment)?;
        let reference = RepositoryRef {
            name: origin.name.clone(),
            url: origin.url.clone(),
        };
        Some((reference, web_address(&origin.url)))
    }

    fn subject(&self, environment: &str, commit: &str) -> Option<String> {
        crate::source::subject(&self.origin(environment)?.cache, commit)
    }

    fn url(&self, environment: &str) -> Option<String> {
        let base = self.external_url.as_deref()?.trim_end_matches('/');
        Some(format!("{base}/environments/{environment}"))
    }
}

/// The web page of a repository fetched from `url`, when it is on a forge: `https://host/path`
/// for `https://`, `ssh://` and `user@host:path` addresses, `.git` dropped.
pub fn web_address(url: &str) -> Option<String> {
    let (host, path) = if let Some(rest) = url.strip_prefix("https://") {
        rest.split_once('/')?
    } else if let Some(rest) = url.strip_prefix("ssh://") {
        let (authority, path) = rest.split_once('/')?;
        let host = authority.rsplit('@').next()?;
        (host.split(':').next()?, path)
    } else if !url.contains("://") && url.contains('@') {
        let (user_host, path) = url.split_once(':')?;
        (user_host.rsplit('@').next()?, path)
    } else {
        return None;
    };
    let host = host.rsplit('@').next()?;
    let path = path.trim_end_matches('/').trim_end_matches(".git");
    (!host.is_empty() && !path.is_empty()).then(|| format!("https://{host}/{path}"))
}

/// The channels and what they want: the ledger's [`Notices`].
pub struct Routes {
    channels: Vec<Arc<Channel>>,
    context: Origins,
    /// Rung when a channel has something new queued.
    bells: BTreeMap<String, Arc<Notify>>,
}

impl Routes {
    /// Routes to `channels`, with `context` for what the ledger does not hold.
    pub fn new(channels: Vec<Arc<Channel>>, context: Origins) -> Routes {
        let bells = channels
            .iter()
            .map(|c| (c.name.clone(), Arc::new(Notify::new())))
            .collect();
        Routes {
            channels,
            context,
            bells,
        }
    }

    /// The channels.
    pub fn channels(&self) -> &[Arc<Channel>] {
        &self.channels
    }

    /// What rings when `channel` has something new queued.
    pub fn bell(&self, channel: &str) -> Arc<Notify> {
        self.bells.get(channel).cloned().unwrap_or_default()
    }

    /// What notices know beyond the ledger.
    pub fn context(&self) -> &Origins {
        &self.context
    }
}

impl Notices for Routes {
    fn of(&self, conn: &Connection, entry: &Entry) -> rusqlite::Result<Vec<Message>> {
        let Some(notice) = compose(conn, entry, &self.context)? else {
            return Ok(Vec::new());
        };
        Ok(self
            .channels
            .iter()
            .filter(|channel| channel.wants(notice.event, &notice.environment))
            .map(|channel| {
                let mut notice = notice.clone();
                notice.delivery = super::delivery_id();
                Message {
                    channel: channel.name.clone(),
                    delivery: notice.delivery.clone(),
                    event: notice.event.name().to_owned(),
                    environment: notice.environment.clone(),
                    commit: notice.commit.id.clone(),
                    body: serde_json::to_string(&notice).expect("a notice serializes"),
                }
            })
            .collect())
    }

    fn queued(&self) {
        for bell in self.bells.values() {
            bell.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::ledger::{Attempt, Ledger, Outcome, Trigger};
    use crate::notify::{Event, Kind, Notice};

    const COMMIT: &str = "3f1c2a9e0b7d4c6a8f1e2d3c4b5a69788796a5b4";

    fn routes(environments: Option<Vec<String>>) -> Arc<Routes> {
        let channel = Channel {
            name: "ops".to_owned(),
            events: [
                Event::Started,
                Event::Succeeded,
                Event::RolledBack,
                Event::Refused,
                Event::Drift,
                Event::Waiting,
            ]
            .into_iter()
            .collect::<BTreeSet<_>>(),
            environments,
            kind: Kind::Webhook(crate::notify::webhook::Webhook {
                url: "http://127.0.0.1:9/".to_owned(),
                secret: crate::secret::Secret::new("a-secret-of-some-length"),
                client: crate::notify::http::Client::new(None).unwrap(),
            }),
        };
        let origins = Origins {
            external_url: Some("https://plumb.example.com/".to_owned()),
            repositories: vec![Origin {
                name: "config".to_owned(),
                url: "https://github.com/twikit/config.git".to_owned(),
                cache: PathBuf::from("/nonexistent"),
                environments: None,
            }],
        };
        Arc::new(Routes::new(vec![Arc::new(channel)], origins))
    }

    fn attempt(environment: &str, plan: serde_json::Value, trigger: Trigger) -> Attempt {
        Attempt {
            environment: environment.to_owned(),
            commit: COMMIT.to_owned(),
            signer: Some("alice".to_owned()),
            strategy: "canary".to_owned(),
            plan,
            trigger,
            by: None,
        }
    }

    fn notices(ledger: &Ledger) -> Vec<Notice> {
        ledger
            .outbox_of("ops")
            .unwrap()
            .into_iter()
            .map(|(message, state)| {
                assert_eq!(state, "queued");
                let notice: Notice = serde_json::from_str(&message.body).unwrap();
                assert_eq!(notice.delivery, message.delivery);
                assert_eq!(notice.event.name(), message.event);
                notice
            })
            .collect()
    }

    #[test]
    fn entries_queue_what_the_channels_want_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("ledger.sqlite")).unwrap();
        ledger.notify_with(routes(Some(vec!["dev".to_owned()])));

        let id = ledger
            .begin(&attempt("dev", json!(["web: roll out r2"]), Trigger::Commit))
            .unwrap();
        ledger.step_started(id, "start green").unwrap();
        ledger
            .step_finished(id, "start green", Some("health check failed: HTTP 503"), None)
            .unwrap();
        ledger
            .finish(id, &Outcome::RolledBack("health check failed: HTTP 503".to_owned()))
            .unwrap();
        let told = notices(&ledger);
        let events: Vec<Event> = told.iter().map(|n| n.event).collect();
        assert_eq!(events, [Event::Started, Event::RolledBack]);
        let rolled_back = &told[1];
        assert_eq!(rolled_back.summary, "dev rolled back 3f1c2a9");
        assert_eq!(rolled_back.reason.as_deref(), Some("health check failed: HTTP 503"));
        assert_eq!(rolled_back.signer.as_deref(), Some("alice"));
        assert_eq!(
            rolled_back.commit.url.as_deref(),
            Some(format!("https://github.com/twikit/config/commit/{COMMIT}").as_str())
        );
        assert_eq!(
            rolled_back.url.as_deref(),
            Some("https://plumb.example.com/environments/dev")
        );
        let attempt_told = rolled_back.attempt.as_ref().unwrap();
        assert_eq!(attempt_told.steps[0].name, "start green");
        assert!(attempt_told.steps[0].duration_seconds.is_some());
        assert_ne!(told[0].delivery, told[1].delivery);

        // Another environment, not wanted: nothing. A refusal seen twice: told once.
        let other = ledger.begin(&attempt("prod", json!(["web"]), Trigger::Commit)).unwrap();
        ledger.finish(other, &Outcome::Succeeded).unwrap();
        assert!(ledger.refused_head("dev", COMMIT, "unsigned", "no signature").unwrap());
        assert!(!ledger.refused_head("dev", COMMIT, "unsigned", "no signature").unwrap());
        assert_eq!(notices(&ledger).len(), 3);
        // A head held back is told once per cause; drift left alone once until it changes.
        let held = routes(None);
        let mut other = Ledger::open(&dir.path().join("other.sqlite")).unwrap();
        other.notify_with(held);
        assert!(other.waiting("dev", COMMIT, &["approval"], "0 of 2 approvals").unwrap());
        assert!(!other.waiting("dev", COMMIT, &["approval"], "1 of 2 approvals").unwrap());
        assert!(other.waiting("dev", COMMIT, &["window"], "closed until 18:00").unwrap());
        let drift = ["web: 1 replica missing".to_owned()];
        assert!(other.drift_left("dev", COMMIT, &drift, "self-heal is off").unwrap());
        assert!(!other.drift_left("dev", COMMIT, &drift, "self-heal is off").unwrap());
        let told = notices(&other);
        let said: Vec<&str> = told.iter().map(|n| n.summary.as_str()).collect();
        assert_eq!(
            said,
            [
                "dev holds 3f1c2a9 for approval",
                "dev holds 3f1c2a9 for window",
                "dev drifted from 3f1c2a9"
            ]
        );
        assert_eq!(told[0].reason.as_deref(), Some("0 of 2 approvals"));
        assert_eq!(told[2].healed, Some(false));
        assert_eq!(told[2].reason.as_deref(), Some("self-heal is off"));

        // The commit applied; applied again with nothing to change, it says nothing new; a
        // manual sync is told; an interrupted attempt is not; a heal is told as drift.
        for (trigger, outcome) in [
            (Trigger::Commit, Outcome::Succeeded),
            (Trigger::Commit, Outcome::Succeeded),
            (Trigger::Sync, Outcome::Succeeded),
            (Trigger::Commit, Outcome::Interrupted),
        ] {
            let id = ledger.begin(&attempt("dev", json!([]), trigger)).unwrap();
            ledger.finish(id, &outcome).unwrap();
        }
        let id = ledger
            .begin(&attempt("dev", json!(["web: 1 replica missing"]), Trigger::Heal))
            .unwrap();
        ledger.finish(id, &Outcome::Succeeded).unwrap();
        let told = notices(&ledger);
        let events: Vec<Event> = told[3..].iter().map(|n| n.event).collect();
        assert_eq!(events, [Event::Succeeded, Event::Succeeded, Event::Drift]);
        assert_eq!(told[5].healed, Some(true));
        assert_eq!(told[5].drift, ["web: 1 replica missing"]);
        assert_eq!(told[5].summary, "dev drift corrected to 3f1c2a9");
    }

    #[test]
    fn an_entry_taken_over_from_another_agent_queues_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Ledger::open(&dir.path().join("first.sqlite")).unwrap();
        let id = first.begin(&attempt("dev", json!(["web"]), Trigger::Commit)).unwrap();
        first.finish(id, &Outcome::Succeeded).unwrap();
        let carried = first.carry("dev", 10).unwrap();
        let mut second = Ledger::open(&dir.path().join("second.sqlite")).unwrap();
        second.notify_with(routes(None));
        assert_eq!(second.adopt(&carried).unwrap(), 1);
        assert!(notices(&second).is_empty());
    }

    #[test]
    fn forge_addresses_become_web_pages() {
        let page = Some("https://github.com/twikit/config".to_owned());
        assert_eq!(web_address("https://github.com/twikit/config.git"), page);
        assert_eq!(web_address("https://token@github.com/twikit/config"), page);
        assert_eq!(web_address("ssh://git@github.com:22/twikit/config.git"), page);
        assert_eq!(web_address("git@github.com:twikit/config.git"), page);
        assert_eq!(web_address("file:///srv/config"), None);
        assert_eq!(web_address("/srv/config"), None);
    }
}
