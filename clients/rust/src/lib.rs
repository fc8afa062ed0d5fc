//! A service's configuration as plumb delivers it: read from the agent's API with the service's
//! read token and followed live over its event stream, with the file plumb writes
//! (`PLUMB_CONFIG`) as the fallback — so a service starts, and keeps its last configuration,
//! with no agent reachable.
//!
//! ```no_run
//! # async fn run() -> Result<(), plumb_config::Error> {
//! let manager = plumb_config::ConfigurationManager::initialize(plumb_config::Options::from_env()).await?;
//! let pool = manager.get_configuration("database.pool");
//! let mut changes = manager.changes();
//! while let Ok(change) = changes.recv().await {
//!     println!("{} changed to {}", change.path, change.new_value);
//! }
//! # Ok(()) }
//! ```

mod events;
mod follow;
mod http;
mod values;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

pub use values::{Difference, at, differences};

/// Where the configuration is read; [`Options::from_env`] takes what plumb sets in a replica.
#[derive(Clone, Debug)]
pub struct Options {
    /// `…/api/v1/environments/{env}/services/{svc}/config` (`PLUMB_CONFIG_URL`).
    pub url: Option<String>,
    /// The service's read token (`PLUMB_CONFIG_TOKEN`).
    pub token: Option<String>,
    /// The configuration file, JSON (`PLUMB_CONFIG`).
    pub file: Option<PathBuf>,
    /// Read the file again on SIGHUP (`reload: signal`).
    pub on_hangup: bool,
    /// How often the file is checked for a change (`reload: watch`); never when `None`.
    pub file_check: Option<Duration>,
    /// How long to wait before reaching the agent again (or what the agent advises).
    pub retry: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            url: None,
            token: None,
            file: None,
            on_hangup: true,
            file_check: Some(Duration::from_secs(1)),
            retry: Duration::from_secs(2),
        }
    }
}

impl Options {
    /// `PLUMB_CONFIG_URL`, `PLUMB_CONFIG_TOKEN` and `PLUMB_CONFIG`, as plumb sets them.
    pub fn from_env() -> Options {
        Options {
            url: std::env::var("PLUMB_CONFIG_URL").ok(),
            token: std::env::var("PLUMB_CONFIG_TOKEN").ok(),
            file: std::env::var_os("PLUMB_CONFIG").map(PathBuf::from),
            ..Options::default()
        }
    }
}

/// Where a configuration was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The agent's API.
    Agent,
    /// The file.
    File,
}

/// The configuration now.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// All of it.
    pub value: Value,
    /// The commit it was read at (`None` from the file).
    pub commit: Option<String>,
    /// Where it was read.
    pub source: Source,
}

/// One change of the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Where: keys joined by dots, array items by index.
    pub path: String,
    /// The value before (`null` when it did not exist).
    pub old_value: Value,
    /// The value after (`null` when it no longer exists).
    pub new_value: Value,
    /// The commit applied; `None` for a change read from the file.
    pub commit: Option<String>,
    /// Who signed that commit, when the agent knows.
    pub signer: Option<String>,
}

/// How the sources are doing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Status {
    /// Whether the event stream from the agent is open.
    pub connected: bool,
    /// The last event received from the agent.
    pub last_event_id: Option<i64>,
    /// The last failure to reach the agent, in words (`None` once it answers again).
    pub agent_error: Option<String>,
    /// The last failure to read the file, in words (`None` once it is read again).
    pub file_error: Option<String>,
}

/// Why no configuration could be read at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither the agent nor the file.
    #[error("no configuration: {0}")]
    Unreadable(String),
}

/// A service's configuration, followed.
pub struct ConfigurationManager {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    changes: broadcast::Sender<Change>,
    status: Arc<Mutex<Status>>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ConfigurationManager {
    /// Reads the configuration — from the agent when it answers, else from the file — and
    /// follows it from then on (the agent's stream, reconnecting; the file's signal and
    /// changes). An error only when neither can be read.
    pub async fn initialize(options: Options) -> Result<ConfigurationManager, Error> {
        let (follower, first) = follow::Follower::start(options).await?;
        let (sender, snapshot) = watch::channel(Arc::new(first));
        let (changes, _) = broadcast::channel(1024);
        let status = follower.status.clone();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(follower.run(sender, changes.clone(), cancel.clone()));
        Ok(ConfigurationManager {
            snapshot,
            changes,
            status,
            cancel,
            task,
        })
    }

    /// The value at `path` (keys joined by dots, array items by index; all of it for `""`).
    pub fn get_configuration(&self, path: &str) -> Option<Value> {
        at(&self.snapshot.borrow().value, path).cloned()
    }

    /// The configuration now, and each new one as it comes.
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// Each change from now on (`configurationChanged`).
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// How the sources are doing.
    pub fn status(&self) -> Status {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops following.
    pub async fn close(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn replace(file: &std::path::Path, value: &Value) {
        let temporary = file.with_extension("tmp");
        std::fs::write(&temporary, value.to_string()).unwrap();
        std::fs::rename(&temporary, file).unwrap();
    }

    #[tokio::test]
    async fn with_no_agent_it_starts_from_the_file_and_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        replace(&file, &json!({"level": "info", "pool": 10}));
        let manager = ConfigurationManager::initialize(Options {
            // Nothing listens on port 1.
            url: Some("http://127.0.0.1:1/api/v1/environments/dev/services/web/config".to_owned()),
            token: None,
            file: Some(file.clone()),
            on_hangup: false,
            file_check: Some(Duration::from_millis(10)),
            retry: Duration::from_millis(50),
        })
        .await
        .unwrap();
        assert_eq!(manager.watch().borrow().source, Source::File);
        assert!(manager.status().agent_error.is_some_and(|e| e.contains("127.0.0.1:1")));
        assert_eq!(manager.get_configuration("pool"), Some(json!(10)));

        let mut changes = manager.changes();
        replace(&file, &json!({"level": "debug", "pool": 10}));
        let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            change,
            Change {
                path: "level".to_owned(),
                old_value: json!("info"),
                new_value: json!("debug"),
                commit: None,
                signer: None
            }
        );

        // A file that is not JSON leaves the last configuration in place.
        std::fs::write(&file, "{ half").unwrap();
        let mut watched = manager.watch();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while manager.status().file_error.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the bad file was never read");
            let _ = tokio::time::timeout(Duration::from_millis(10), watched.changed()).await;
        }
        assert!(manager.status().file_error.is_some_and(|e| e.contains("not JSON")));
        assert_eq!(manager.get_configuration("level"), Some(json!("debug")));
        manager.close().await;
    }

    #[tokio::test]
    async fn with_neither_source_it_says_why() {
        let refused = ConfigurationManager::initialize(Options {
            url: Some("http://127.0.0.1:1/config".to_owned()),
            file: Some("/nonexistent/config.json".into()),
            ..Options::default()
        })
        .await
        .err()
        .unwrap()
        .to_string();
        assert!(refused.contains("the agent at http://127.0.0.1:1/config"), "{refused}");
        assert!(refused.contains("the file /nonexistent/config.json"), "{refused}");
    }
}
