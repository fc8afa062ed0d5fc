//! The channels as the agent's configuration writes them (`notifications:` in `agent.yaml`):
//! each a name, one kind with its settings, the events and environments it wants. Secrets are
//! read from the files named, never written in the configuration.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::notice::Event;
use super::{Channel, Kind};
use crate::agent::config::secret;

/// A notification channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelConfig {
    /// Its name: in metrics, the status and `plumb notify test --channel`.
    #[schemars(regex(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// POST the notification's JSON, signed with HMAC-SHA256.
    pub webhook: Option<WebhookChannel>,
    /// A Slack incoming webhook.
    pub slack: Option<SlackChannel>,
    /// Mail over SMTP.
    pub email: Option<EmailChannel>,
    /// GitHub deployments and their statuses for the commit.
    pub github: Option<GithubChannel>,
    /// GitLab commit statuses.
    pub gitlab: Option<GitlabChannel>,
    /// The events it wants; all it can show when absent.
    pub events: Option<Vec<Event>>,
    /// The environments it wants; every environment when absent.
    pub environments: Option<Vec<String>>,
}

/// A webhook: `POST url` with the notification's JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookChannel {
    /// Where to POST (`https://` or `http://`).
    pub url: String,
    /// A file holding the HMAC-SHA256 key (at least 16 characters); the signature goes in
    /// `X-Plumb-Signature-256: sha256=<hex>`.
    pub secret_file: PathBuf,
    /// Certificate authorities the host may chain to, beside the system's.
    pub ca_file: Option<PathBuf>,
}

/// A Slack incoming webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlackChannel {
    /// A file holding the incoming webhook's URL (it is a secret).
    pub webhook_url_file: PathBuf,
    /// Certificate authorities the host may chain to, beside the system's.
    pub ca_file: Option<PathBuf>,
}

/// How an SMTP connection is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// TLS from the first byte (port 465 by default).
    Implicit,
    /// Plain text upgraded with STARTTLS, which must be offered (port 587 by default).
    #[default]
    Starttls,
    /// No TLS (port 25 by default): only for a relay on the same host or network.
    None,
}

/// Mail over SMTP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailChannel {
    /// The SMTP server.
    pub host: String,
    /// Its port; 465, 587 or 25 by `tls`.
    pub port: Option<u16>,
    /// `implicit`, `starttls` (the default) or `none`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// A file holding the user name to authenticate as (with `passwordFile`).
    pub username_file: Option<PathBuf>,
    /// A file holding the password.
    pub password_file: Option<PathBuf>,
    /// The sender (`plumb@example.com` or `plumb <plumb@example.com>`).
    pub from: String,
    /// The recipients.
    #[schemars(length(min = 1))]
    pub to: Vec<String>,
    /// Certificate authorities the server may chain to, beside the system's.
    pub ca_file: Option<PathBuf>,
}

/// GitHub deployments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GithubChannel {
    /// A file holding a token that may write deployments (`deployments: write`).
    pub token_file: PathBuf,
    /// `owner/name` of the repository whose commits are deployed.
    #[schemars(regex(pattern = "^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"))]
    pub repository: String,
    /// The API's root: `https://api.github.com`, or GitHub Enterprise Server's
    /// `https://HOST/api/v3`.
    #[serde(default = "default_github")]
    pub api_url: String,
    /// Certificate authorities the host may chain to, beside the system's.
    pub ca_file: Option<PathBuf>,
}

fn default_github() -> String {
    "https://api.github.com".to_owned()
}

/// GitLab commit statuses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitlabChannel {
    /// A file holding a token with the `api` scope (Developer role or above).
    pub token_file: PathBuf,
    /// The project: `group/name` or its numeric id.
    pub project: String,
    /// The API's root: `https://gitlab.com/api/v4` or `https://HOST/api/v4`.
    #[serde(default = "default_gitlab")]
    pub api_url: String,
    /// Certificate authorities the host may chain to, beside the system's.
    pub ca_file: Option<PathBuf>,
}

fn default_gitlab() -> String {
    "https://gitlab.com/api/v4".to_owned()
}

/// The events a forge shows (as the deployment's or commit's state).
pub const FORGE_EVENTS: [Event; 6] = [
    Event::Started,
    Event::Waiting,
    Event::Succeeded,
    Event::RolledBack,
    Event::Failed,
    Event::Refused,
];

/// The events a message channel sends when it names none.
const ALL_EVENTS: [Event; 7] = [
    Event::Started,
    Event::Succeeded,
    Event::RolledBack,
    Event::Failed,
    Event::Refused,
    Event::Drift,
    Event::Waiting,
];

impl ChannelConfig {
    /// The kinds given (exactly one is valid).
    fn kinds(&self) -> Vec<&'static str> {
        [
            (self.webhook.is_some(), "webhook"),
            (self.slack.is_some(), "slack"),
            (self.email.is_some(), "email"),
            (self.github.is_some(), "github"),
            (self.gitlab.is_some(), "gitlab"),
        ]
        .into_iter()
        .filter_map(|(given, kind)| given.then_some(kind))
        .collect()
    }

    /// What the schema cannot say, each with the field under the channel it concerns.
    pub fn problems(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = Vec::new();
        let mut at = |path: &[&str], message: String| {
            problems.push((path.iter().map(|p| (*p).to_owned()).collect(), message));
        };
        let kinds = self.kinds();
        if kinds.len() != 1 {
            at(
                &[],
                format!(
                    "channel `{}` needs exactly one of webhook, slack, email, github, gitlab (found {})",
                    self.name,
                    if kinds.is_empty() {
                        "none".to_owned()
                    } else {
                        kinds.join(", ")
                    }
                ),
            );
        }
        let forge = self.github.is_some() || self.gitlab.is_some();
        for event in self.events.iter().flatten() {
            if *event == Event::Test {
                at(
                    &["events"],
                    "`test` is not an event to subscribe to: `plumb notify test` sends one".to_owned(),
                );
            } else if forge && !FORGE_EVENTS.contains(event) {
                at(
                    &["events"],
                    format!(
                        "a forge shows a deployment's state; `{}` is not one (it shows started, waiting, succeeded, rolled_back, failed, refused)",
                        event.name()
                    ),
                );
            }
        }
        let urls = [
            self.webhook.as_ref().map(|w| (&w.url, ["webhook", "url"])),
            self.github.as_ref().map(|g| (&g.api_url, ["github", "apiUrl"])),
            self.gitlab.as_ref().map(|g| (&g.api_url, ["gitlab", "apiUrl"])),
        ];
        for (url, path) in urls.into_iter().flatten() {
            if let Err(e) = super::http::check_url(url) {
                at(&path, e);
            }
        }
        if let Some(email) = &self.email {
            for (i, address) in std::iter::once(&email.from).chain(&email.to).enumerate() {
                if let Err(e) = address.parse::<lettre::message::Mailbox>() {
                    let field = if i == 0 {
                        "from".to_owned()
                    } else {
                        format!("to[{}]", i - 1)
                    };
                    at(&["email", &field], format!("`{address}` is not a mail address: {e}"));
                }
            }
            if email.username_file.is_some() != email.password_file.is_some() {
                at(
                    &["email"],
                    "give `usernameFile` and `passwordFile` together (or neither)".to_owned(),
                );
            }
        }
        problems
    }

    /// The channel, its secrets read; errors name the field under `at`.
    pub fn channel(&self, at: &str) -> anyhow::Result<Channel> {
        let field = |name: &str| format!("{at}.{name}");
        let kind = if let Some(w) = &self.webhook {
            Kind::Webhook(super::webhook::Webhook {
                url: w.url.clone(),
                secret: secret(&w.secret_file, &field("webhook.secretFile"), 16)?,
                client: client(w.ca_file.as_deref(), &field("webhook.caFile"))?,
            })
        } else if let Some(s) = &self.slack {
            let url = secret(&s.webhook_url_file, &field("slack.webhookUrlFile"), 8)?;
            super::http::check_url(url.expose())
                .map_err(|e| anyhow::anyhow!("{}: {e}", field("slack.webhookUrlFile")))?;
            Kind::Slack(super::slack::Slack {
                url,
                client: client(s.ca_file.as_deref(), &field("slack.caFile"))?,
            })
        } else if let Some(e) = &self.email {
            Kind::Email(Box::new(super::email::Email::new(e, &field("email"))?))
        } else if let Some(g) = &self.github {
            Kind::Github(super::github::Github {
                channel: self.name.clone(),
                token: secret(&g.token_file, &field("github.tokenFile"), 4)?,
                repository: g.repository.clone(),
                api: g.api_url.trim_end_matches('/').to_owned(),
                client: client(g.ca_file.as_deref(), &field("github.caFile"))?,
            })
        } else if let Some(g) = &self.gitlab {
            Kind::Gitlab(super::gitlab::Gitlab {
                token: secret(&g.token_file, &field("gitlab.tokenFile"), 4)?,
                project: g.project.clone(),
                api: g.api_url.trim_end_matches('/').to_owned(),
                client: client(g.ca_file.as_deref(), &field("gitlab.caFile"))?,
            })
        } else {
            anyhow::bail!("{at}: a channel needs one of webhook, slack, email, github, gitlab");
        };
        let default: &[Event] = if matches!(kind, Kind::Github(_) | Kind::Gitlab(_)) {
            &FORGE_EVENTS
        } else {
            &ALL_EVENTS
        };
        let events: BTreeSet<Event> = match &self.events {
            Some(events) => events.iter().copied().collect(),
            None => default.iter().copied().collect(),
        };
        Ok(Channel {
            name: self.name.clone(),
            events,
            environments: self.environments.clone(),
            kind,
        })
    }
}

fn client(ca_file: Option<&Path>, field: &str) -> anyhow::Result<super::http::Client> {
    super::http::Client::new(ca_file).map_err(|e| anyhow::anyhow!("{field}: {e}"))
}
