//! `plumb agent`: the long-running agent over one repository, from a configuration file
//! (reloaded when it changes) or from flags. Stops cleanly on SIGTERM or Ctrl-C: a step in
//! progress ends or is parked, replicas are stopped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use git2::Oid;
use tokio_util::sync::CancellationToken;

use super::Outcome;
use crate::agent::config::{AgentConfig, secret};
use crate::agent::{self, Repository, Settings};
use crate::source::{Remote, TrackedRef};
use crate::spec::model::scalar::Duration as Span;
use crate::spec::sealed::Keyring;
use crate::target::local::process::Backoff;
use crate::trigger::Poll;
use crate::trigger::webhook::Provider;
use crate::trust::{Policy, TrustRoot};

/// The agent's flags.
#[derive(clap::Args)]
pub struct Args {
    /// The agent's configuration file (`schemas/agent.schema.json`), reloaded when it changes;
    /// instead of the flags below.
    #[arg(long, conflicts_with_all = ["repo", "trust_root", "policy_file", "environments", "api_token_file", "webhook"])]
    config: Option<PathBuf>,
    /// The config repository: a URL (`https://`, `ssh://`, `git://`, `file://`) or a path.
    #[arg(long, required_unless_present = "config")]
    repo: Option<String>,
    /// The branch (or full ref) whose head is applied.
    #[arg(long, default_value = "main")]
    branch: String,
    /// The folder of the configuration inside the repository.
    #[arg(long, default_value = "")]
    folder: String,
    /// The commit trusted without checking (a full commit id), where authentication starts.
    #[arg(long, conflicts_with = "policy_file", required_unless_present_any = ["policy_file", "config"])]
    trust_root: Option<String>,
    /// Instead of a trust root commit: a policy that judges the repository's first commits.
    #[arg(long)]
    policy_file: Option<PathBuf>,
    /// Apply only this environment (repeat for several); all by default.
    #[arg(long = "env")]
    environments: Vec<String>,
    /// How often to fetch (`30s`, `500ms`, `5m`).
    #[arg(long, default_value = "30s", value_parser = span)]
    poll: Duration,
    /// How often each environment is checked for drift.
    #[arg(long, default_value = "5s", value_parser = span)]
    heal_every: Duration,
    /// The agent's state directory.
    #[arg(long, env = "PLUMB_STATE", default_value = ".plumb")]
    state: PathBuf,
    /// Where the HTTP API listens (status, history, sync, rollback, metrics).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: std::net::SocketAddr,
    /// A file holding the bearer token of the API's mutating calls (sync, rollback); without
    /// one they are refused.
    #[arg(long)]
    api_token_file: Option<PathBuf>,
    /// Require the token for reads too (`/api/v1/…`, `/metrics`).
    #[arg(long, requires = "api_token_file")]
    protect_reads: bool,
    /// Receive the forge's push webhooks at `POST /hooks/config`: `github`, `gitlab`, `gitea`,
    /// `bitbucket` or `generic`.
    #[arg(long, requires = "webhook_secret_file", value_parser = provider)]
    webhook: Option<Provider>,
    /// A file holding the webhooks' shared secret.
    #[arg(long)]
    webhook_secret_file: Option<PathBuf>,
    /// A file of age identities the repository's encrypted values are opened with (repeat for
    /// several).
    #[arg(long = "identity", value_name = "FILE")]
    identities: Vec<PathBuf>,
    /// How the agent logs: `text` for people, `json` (one object per line) for collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How the agent logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line.
    Json,
}

fn provider(name: &str) -> Result<Provider, String> {
    Provider::named(name).ok_or_else(|| "one of github, gitlab, gitea, bitbucket, generic".to_owned())
}

fn span(text: &str) -> Result<Duration, String> {
    Span::parse(text).map(|d| d.0)
}

/// glibc gives threads that allocate at once arenas of their own, up to eight per core; the
/// agent's workers then keep freed memory in many of them — a quarter of its heap with 1,000
/// services. Two arenas serve requests as fast (docs/performance.md). `MALLOC_ARENA_MAX`, when
/// set, still decides.
fn fewer_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: sets one allocator parameter, before the runtime starts its threads.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    }
}

/// Runs the agent until SIGTERM or Ctrl-C.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    fewer_arenas();
    let (settings, config) = match &args.config {
        Some(path) => {
            let config = AgentConfig::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
            let settings = config.settings()?;
            (settings, Some((path.clone(), config)))
        }
        None => (from_flags(&args)?, None),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PLUMB_LOG").unwrap_or_else(|_| "info".into());
    // Colours only on a terminal: a log file or a collector gets plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        super::signals::stop_on_signals(cancel.clone(), false);
        let (started, handle) = tokio::sync::oneshot::channel();
        let agent = tokio::spawn(agent::run(settings, cancel.clone(), Some(started)));
        if let (Some((path, config)), Ok(handle)) = (config, handle.await) {
            tokio::spawn(agent::config::watch(path, config, handle.live, cancel.clone()));
        }
        anyhow::Ok(agent.await.context("the agent stopped abnormally")??)
    })?;
    Ok(Outcome::Ok)
}

/// The settings given as flags.
fn from_flags(args: &Args) -> anyhow::Result<Settings> {
    let repo = args.repo.clone().context("--repo is required without --config")?;
    let trust_root = match (&args.trust_root, &args.policy_file) {
        (Some(commit), None) => TrustRoot::Commit(
            Oid::from_str(commit)
                .ok()
                .filter(|_| commit.len() == 40)
                .with_context(|| format!("--trust-root `{commit}` is not a full commit id (40 hex digits)"))?,
        ),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            TrustRoot::Policy(Policy::parse(&text).with_context(|| format!("in {}", file.display()))?)
        }
        _ => anyhow::bail!("give exactly one of --trust-root COMMIT or --policy-file FILE"),
    };
    let api_token = match &args.api_token_file {
        Some(file) => Some(secret(file, "--api-token-file", 16)?),
        None => None,
    };
    let webhook = match (args.webhook, &args.webhook_secret_file) {
        (Some(provider), Some(file)) => Some((provider, secret(file, "--webhook-secret-file", 16)?)),
        _ => None,
    };
    let url = if std::path::Path::new(&repo).exists() {
        let path = std::fs::canonicalize(&repo).with_context(|| format!("cannot read {repo}"))?;
        format!("file://{}", path.display())
    } else {
        repo
    };
    Ok(Settings {
        state: args.state.clone(),
        repositories: vec![Repository {
            name: "config".to_owned(),
            remote: Remote::anonymous(url),
            reference: TrackedRef::new(&args.branch),
            folder: args.folder.clone(),
            trust_root,
            poll: Poll {
                interval: Some(args.poll),
                ..Poll::default()
            },
            environments: (!args.environments.is_empty()).then(|| args.environments.clone()),
            webhook,
            ca_file: None,
            keys: Arc::new(Keyring::read(&args.identities)?),
            allow: std::sync::Arc::default(),
        }],
        heal_every: args.heal_every,
        backoff: Backoff::default(),
        listen: Some(args.listen),
        api_token,
        identities: Vec::new(),
        tls: None,
        protect_reads: args.protect_reads,
        leader: None,
        notifications: Default::default(),
        services_url: None,
        read_token_key_file: None,
    })
}
