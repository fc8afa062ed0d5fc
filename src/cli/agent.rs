//! `plumb agent`: the long-running agent over one repository, started from flags (a
//! configuration file with hot reload and the HTTP API come with the agent service). Stops
//! cleanly on SIGTERM or Ctrl-C: running steps end, replicas are stopped.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use git2::Oid;
use tokio_util::sync::CancellationToken;

use super::Outcome;
use crate::agent::{self, Settings};
use crate::secret::Secret;
use crate::source::{Remote, TrackedRef};
use crate::spec::model::scalar::Duration as Span;
use crate::target::local::process::Backoff;
use crate::trigger::Poll;
use crate::trigger::webhook::Provider;
use crate::trust::{Policy, TrustRoot};

/// The agent's flags.
#[derive(clap::Args)]
pub struct Args {
    /// The config repository: a URL (`https://`, `ssh://`, `git://`, `file://`) or a path.
    #[arg(long)]
    repo: String,
    /// The branch (or full ref) whose head is applied.
    #[arg(long, default_value = "main")]
    branch: String,
    /// The folder of the configuration inside the repository.
    #[arg(long, default_value = "")]
    folder: String,
    /// The commit trusted without checking (a full commit id), where authentication starts.
    #[arg(long, conflicts_with = "policy_file", required_unless_present = "policy_file")]
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
    /// Where the HTTP API listens (status, history, sync, rollback).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: std::net::SocketAddr,
    /// A file holding the bearer token of the API's mutating calls (sync, rollback); without
    /// one they are refused.
    #[arg(long)]
    api_token_file: Option<PathBuf>,
    /// Receive the forge's push webhooks at `POST /hooks/config`: `github`, `gitlab`, `gitea`,
    /// `bitbucket` or `generic`.
    #[arg(long, requires = "webhook_secret_file", value_parser = provider)]
    webhook: Option<Provider>,
    /// A file holding the webhooks' shared secret.
    #[arg(long)]
    webhook_secret_file: Option<PathBuf>,
}

fn provider(name: &str) -> Result<Provider, String> {
    [
        Provider::GitHub,
        Provider::GitLab,
        Provider::Gitea,
        Provider::Bitbucket,
        Provider::Generic,
    ]
    .into_iter()
    .find(|p| p.name() == name)
    .ok_or_else(|| "one of github, gitlab, gitea, bitbucket, generic".to_owned())
}

/// A secret read from a file (trailing whitespace dropped), at least 16 characters long.
fn secret_file(file: &std::path::Path, what: &str) -> anyhow::Result<Secret> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let secret = Secret::new(text.trim());
    anyhow::ensure!(
        secret.expose().len() >= 16,
        "the {what} in {} is shorter than 16 characters",
        file.display()
    );
    Ok(secret)
}

fn span(text: &str) -> Result<Duration, String> {
    Span::parse(text).map(|d| d.0)
}

/// Runs the agent until SIGTERM or Ctrl-C.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
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
        Some(file) => Some(secret_file(file, "API token")?),
        None => None,
    };
    let webhook = match (args.webhook, &args.webhook_secret_file) {
        (Some(provider), Some(file)) => Some((provider, secret_file(file, "webhook secret")?)),
        _ => None,
    };
    let url = if std::path::Path::new(&args.repo).exists() {
        let path = std::fs::canonicalize(&args.repo).with_context(|| format!("cannot read {}", args.repo))?;
        format!("file://{}", path.display())
    } else {
        args.repo.clone()
    };
    let settings = Settings {
        state: args.state,
        remote: Remote::anonymous(url),
        reference: TrackedRef::new(&args.branch),
        folder: args.folder,
        trust_root,
        poll: Poll {
            interval: Some(args.poll),
            ..Poll::default()
        },
        environments: (!args.environments.is_empty()).then_some(args.environments),
        heal_every: args.heal_every,
        backoff: Backoff::default(),
        listen: Some(args.listen),
        api_token,
        webhook,
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("PLUMB_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM can be handled");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("Stopping: running steps end, then replicas stop.");
            stop.cancel();
        });
        agent::run(settings, cancel, None).await
    })?;
    Ok(Outcome::Ok)
}
