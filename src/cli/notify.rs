//! `plumb notify test`: sends a test message on one channel of an agent's configuration and
//! prints the receiver's answer — the way to check a URL, a secret, an SMTP login or a forge
//! token before an event depends on it. On GitHub and GitLab, which show deployments rather than
//! messages, it reads the repository with the token instead of making a deployment.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::Outcome;
use crate::agent::config::AgentConfig;
use crate::ledger::Message;
use crate::notify::notice::{Context as NoticeContext, Event, RepositoryRef};
use crate::notify::{Kind, Sent, notice};

/// `plumb notify test`'s arguments.
#[derive(clap::Args)]
pub struct TestArgs {
    /// The agent's configuration file.
    #[arg(long, default_value = "agent.yaml")]
    config: PathBuf,
    /// The channel (its `name` under `notifications`).
    #[arg(long)]
    channel: String,
    /// The environment the test message names.
    #[arg(long, default_value = "test")]
    env: String,
}

/// What a test message knows: the agent's address, no repository.
struct Bare(Option<String>);

impl NoticeContext for Bare {
    fn repository(&self, _: &str) -> Option<(RepositoryRef, Option<String>)> {
        None
    }
    fn subject(&self, _: &str, _: &str) -> Option<String> {
        None
    }
    fn url(&self, environment: &str) -> Option<String> {
        let base = self.0.as_deref()?.trim_end_matches('/');
        Some(format!("{base}/api/v1/environments/{environment}"))
    }
}

/// Sends the test message and prints the answer: exit 0 when the receiver took it.
pub fn test(args: &TestArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let config = AgentConfig::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (index, found) = config
        .notifications
        .iter()
        .flatten()
        .enumerate()
        .find(|(_, c)| c.name == args.channel)
        .with_context(|| {
            format!(
                "{} has no notification channel `{}`",
                args.config.display(),
                args.channel
            )
        })?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let sent = runtime.block_on(async {
        let channel = found.channel(&format!("notifications[{index}]"))?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut notice = notice::blank(Event::Test, &args.env, "", &now, &Bare(config.external_url.clone()));
        notice.delivery = crate::notify::delivery_id();
        let message = Message {
            channel: channel.name.clone(),
            delivery: notice.delivery.clone(),
            event: Event::Test.name().to_owned(),
            environment: args.env.clone(),
            commit: String::new(),
            body: serde_json::to_string(&notice)?,
        };
        let sent = match &channel.kind {
            Kind::Webhook(webhook) => webhook.send(&message).await,
            Kind::Slack(slack) => slack.send(&notice).await,
            Kind::Email(email) => email.send(&notice).await,
            Kind::Github(github) => answered(github.test().await),
            Kind::Gitlab(gitlab) => answered(gitlab.test().await),
        };
        anyhow::Ok((channel.kind.name(), notice.delivery, sent))
    })?;
    let (kind, delivery, sent) = sent;
    match sent {
        Sent::Delivered(answer) => {
            writeln!(
                out,
                "{kind} channel `{}` took the test message (delivery {delivery}): {answer}",
                args.channel
            )?;
            Ok(Outcome::Ok)
        }
        Sent::Retry(answer, after) => {
            let later = after
                .map(|a| format!(" (it asks to wait {} s)", a.as_secs()))
                .unwrap_or_default();
            writeln!(
                out,
                "{kind} channel `{}` did not take it now{later}: {answer}",
                args.channel
            )?;
            Ok(Outcome::Found)
        }
        Sent::Rejected(answer) => {
            writeln!(out, "{kind} channel `{}` refused it: {answer}", args.channel)?;
            Ok(Outcome::Found)
        }
    }
}

/// A forge's answer to reading the repository or project.
fn answered(answer: Result<crate::notify::http::Answer, String>) -> Sent {
    match answer {
        Ok(answer) => answer.sorted(),
        Err(e) => Sent::Retry(e, None),
    }
}
