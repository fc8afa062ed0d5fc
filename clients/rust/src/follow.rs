//! Following the configuration: the agent's event stream (reconnecting, resumed with
//! `Last-Event-ID`), and the file while the stream is down (on SIGHUP, or when it changes).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::events::EventParser;
use crate::http::{Client, Served};
use crate::values::{at, differences};
use crate::{Change, Error, Options, Snapshot, Source, Status};

/// A change as the stream tells it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Told {
    path: String,
    old_value: Value,
    new_value: Value,
    commit: String,
    signer: Option<String>,
}

/// What the follower knows.
struct Known {
    snapshot: Snapshot,
    etag: Option<String>,
    /// The configuration before the commit read last, for the values of its events.
    before: Value,
    /// When the file was last read, as its modification time.
    file_seen: Option<SystemTime>,
}

pub struct Follower {
    options: Options,
    client: Option<Client>,
    known: Mutex<Known>,
    pub status: Arc<Mutex<Status>>,
}

/// Where the follower tells what it finds.
struct Outlets {
    snapshot: watch::Sender<Arc<Snapshot>>,
    changes: broadcast::Sender<Change>,
}

impl Follower {
    /// Reads the configuration once (the file, then the agent); the follower and what it read.
    pub async fn start(options: Options) -> Result<(Follower, Snapshot), Error> {
        let client = options.url.clone().map(|url| Client::new(url, options.token.clone()));
        let (mut known, mut file_error) = (None, None);
        if let Some(file) = &options.file {
            match read_file(file) {
                Ok((value, seen)) => {
                    known = Some(Known {
                        before: value.clone(),
                        snapshot: Snapshot {
                            value,
                            commit: None,
                            source: Source::File,
                        },
                        etag: None,
                        file_seen: seen,
                    });
                }
                Err(e) => file_error = Some(e),
            }
        }
        let mut agent_error = None;
        if let Some(client) = &client {
            match client.read(None).await {
                Ok(Some(served)) if known.as_ref().is_none_or(|k| k.snapshot.value == served.value) => {
                    let file_seen = known.and_then(|k| k.file_seen);
                    known = Some(Known {
                        before: served.value.clone(),
                        snapshot: Snapshot {
                            value: served.value,
                            commit: Some(served.commit),
                            source: Source::Agent,
                        },
                        etag: served.etag,
                        file_seen,
                    });
                }
                Ok(_) => {}
                Err(e) => agent_error = Some(e),
            }
        }
        let Some(known) = known else {
            let why: Vec<String> = agent_error.into_iter().chain(file_error).collect();
            return Err(Error::Unreadable(if why.is_empty() {
                "neither PLUMB_CONFIG_URL nor PLUMB_CONFIG is set".to_owned()
            } else {
                why.join("; ")
            }));
        };
        let first = known.snapshot.clone();
        let status = Status {
            agent_error,
            file_error,
            ..Status::default()
        };
        Ok((
            Follower {
                options,
                client,
                known: Mutex::new(known),
                status: Arc::new(Mutex::new(status)),
            },
            first,
        ))
    }

    /// Follows until cancelled.
    pub async fn run(
        self,
        snapshot: watch::Sender<Arc<Snapshot>>,
        changes: broadcast::Sender<Change>,
        cancel: CancellationToken,
    ) {
        let outlets = Outlets { snapshot, changes };
        let this = &self;
        let outlets = &outlets;
        let agent = async {
            let Some(client) = &this.client else {
                return cancel.cancelled().await;
            };
            let mut retry = this.options.retry;
            loop {
                if let Err(e) = this.stream(client, outlets, &mut retry).await {
                    this.status(|s| s.agent_error = Some(e));
                }
                this.status(|s| s.connected = false);
                // The file may have changed while the stream told nothing yet.
                if let Some(file) = &this.options.file {
                    this.reload(file, outlets, false);
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(retry) => {}
                }
            }
        };
        let file = async {
            let Some(file) = &this.options.file else {
                return cancel.cancelled().await;
            };
            let mut hangups = this
                .options
                .on_hangup
                .then(|| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok())
                .flatten();
            let check = this.options.file_check.unwrap_or(Duration::MAX);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    Some(()) = async { match &mut hangups { Some(h) => h.recv().await, None => None } } => this.reload(file, outlets, true),
                    () = tokio::time::sleep(check) => this.reload(file, outlets, false),
                }
            }
        };
        tokio::select! {
            () = agent => {}
            () = file => {}
            () = cancel.cancelled() => {}
        }
    }

    fn status(&self, change: impl FnOnce(&mut Status)) {
        change(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn known<T>(&self, work: impl FnOnce(&mut Known) -> T) -> T {
        work(&mut self.known.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// One connection to the stream: what was missed, then each change, until it ends.
    async fn stream(&self, client: &Client, outlets: &Outlets, retry: &mut Duration) -> Result<(), String> {
        let last = self.status.lock().unwrap_or_else(|e| e.into_inner()).last_event_id;
        let mut body = client.events(last).await?;
        self.status(|s| {
            s.connected = true;
            s.agent_error = None;
        });
        // What changed while no stream was open is read whole and told, once it listens. With a
        // file, the file — what plumb deployed to this replica — stays until the agent serves the
        // same: the agent serves the last healthy commit, older than the replica's during a
        // rollout.
        let from_file = self.known(|k| k.snapshot.source == Source::File);
        if last.is_none() || from_file {
            let etag = self.known(|k| k.etag.clone());
            if let Some(served) = client.read(etag.as_deref()).await?
                && (!from_file || self.known(|k| k.snapshot.value == served.value))
            {
                self.take(served, None, outlets, true);
            }
        }
        let mut parser = EventParser::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("the event stream: {e}"))?;
            let Ok(data) = frame.into_data() else { continue };
            for event in parser.push(&data) {
                if event.event != "configurationChanged" {
                    continue;
                }
                let told: Told =
                    serde_json::from_str(&event.data).map_err(|e| format!("an event the client cannot read: {e}"))?;
                if let Some(id) = event.id.and_then(|id| id.parse().ok()) {
                    self.status(|s| s.last_event_id = Some(id));
                }
                self.changed(client, told, outlets).await?;
            }
            if let Some(advised) = parser.retry {
                *retry = Duration::from_millis(advised);
            }
        }
        Ok(())
    }

    /// Takes what the agent served; tells what changed when `tell`.
    fn take(&self, served: Served, signer: Option<String>, outlets: &Outlets, tell: bool) {
        let said = self.known(|known| {
            let previous = std::mem::replace(&mut known.snapshot.value, served.value.clone());
            known.snapshot.commit = Some(served.commit.clone());
            known.snapshot.source = Source::Agent;
            known.etag = served.etag;
            // Changes told here are not told again by the commit's events.
            known.before = if tell { served.value.clone() } else { previous.clone() };
            let said: Vec<Change> = if tell {
                differences(&previous, &served.value)
                    .into_iter()
                    .map(|d| Change {
                        path: d.path,
                        old_value: d.old_value,
                        new_value: d.new_value,
                        commit: Some(served.commit.clone()),
                        signer: signer.clone(),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            outlets.snapshot.send_replace(Arc::new(known.snapshot.clone()));
            said
        });
        for change in said {
            let _ = outlets.changes.send(change);
        }
    }

    /// One change the agent told: the configuration read again (decrypted values come to the
    /// service's own token only, never in events), the change told with its values.
    async fn changed(&self, client: &Client, told: Told, outlets: &Outlets) -> Result<(), String> {
        let current = self.known(|k| k.snapshot.commit.as_deref() == Some(told.commit.as_str()));
        if !current {
            let etag = self.known(|k| k.etag.clone());
            if let Some(served) = client.read(etag.as_deref()).await? {
                self.take(served, told.signer.clone(), outlets, false);
            }
        }
        let change = self.known(|known| {
            let current = known.snapshot.commit.as_deref() == Some(told.commit.as_str());
            let (old_value, new_value) = if current {
                (
                    at(&known.before, &told.path).cloned().unwrap_or(Value::Null),
                    at(&known.snapshot.value, &told.path).cloned().unwrap_or(Value::Null),
                )
            } else {
                (told.old_value, told.new_value)
            };
            (old_value != new_value).then_some(Change {
                path: told.path,
                old_value,
                new_value,
                commit: Some(told.commit),
                signer: told.signer,
            })
        });
        if let Some(change) = change {
            let _ = outlets.changes.send(change);
        }
        Ok(())
    }

    /// The file again, when the agent is not followed: on a signal, or when it changed.
    fn reload(&self, file: &Path, outlets: &Outlets, signalled: bool) {
        if self.status.lock().unwrap_or_else(|e| e.into_inner()).connected {
            return;
        }
        let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
        if !signalled && modified.is_some() && modified == self.known(|k| k.file_seen) {
            return;
        }
        let (value, seen) = match read_file(file) {
            Ok(read) => read,
            // Half-written or invalid: the last configuration stays.
            Err(e) => return self.status(|s| s.file_error = Some(e)),
        };
        self.status(|s| s.file_error = None);
        let said = self.known(|known| {
            known.file_seen = seen;
            if known.snapshot.value == value {
                return Vec::new();
            }
            let previous = std::mem::replace(&mut known.snapshot.value, value.clone());
            known.snapshot.commit = None;
            known.snapshot.source = Source::File;
            known.before = value.clone();
            outlets.snapshot.send_replace(Arc::new(known.snapshot.clone()));
            differences(&previous, &value)
        });
        for d in said {
            let _ = outlets.changes.send(Change {
                path: d.path,
                old_value: d.old_value,
                new_value: d.new_value,
                commit: None,
                signer: None,
            });
        }
    }
}

/// The file's configuration, and its modification time.
fn read_file(file: &Path) -> Result<(Value, Option<SystemTime>), String> {
    let seen = std::fs::metadata(file).and_then(|m| m.modified()).ok();
    let text = std::fs::read(file).map_err(|e| format!("the file {}: {e}", file.display()))?;
    let value = serde_json::from_slice(&text).map_err(|e| {
        let yaml = matches!(file.extension().and_then(|x| x.to_str()), Some("yaml" | "yml"));
        let hint = if yaml {
            " (this client reads JSON files: set `config.format: json`)"
        } else {
            ""
        };
        format!("the file {}: not JSON{hint}: {e}", file.display())
    })?;
    Ok((value, seen))
}
