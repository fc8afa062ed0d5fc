//! Notifications: what the ledger records — attempts started and ended, commits refused, heads
//! held back, drift — told to the channels that want it: a signed webhook, Slack, email, and the
//! commit's deployment status on GitHub or GitLab.
//!
//! A message is queued in the ledger's outbox in the same transaction as the entry that causes
//! it ([`route`]), so none is lost to a crash or sent for what was not recorded. Each channel's
//! sender ([`deliver`]) takes its messages in order per environment, retries with exponential
//! backoff and jitter (honouring `Retry-After`), and never holds a deployment up: it runs beside
//! the workers, and a channel that stays down only grows its queue (in the metrics and status).

pub mod config;
pub mod deliver;
pub mod email;
pub mod github;
pub mod gitlab;
pub mod http;
pub mod notice;
pub mod route;
pub mod slack;
pub mod webhook;

use std::collections::BTreeSet;

pub use config::ChannelConfig;
pub use http::Sent;
pub use notice::{Event, Notice};

use crate::ledger::{Message, Recorder};

/// A channel, ready to send.
pub struct Channel {
    /// Its name.
    pub name: String,
    /// The events it wants.
    pub events: BTreeSet<Event>,
    /// The environments it wants; all when `None`.
    pub environments: Option<Vec<String>>,
    /// Where and how it sends.
    pub kind: Kind,
}

/// How a channel sends.
pub enum Kind {
    /// A signed JSON POST.
    Webhook(webhook::Webhook),
    /// A Slack incoming webhook.
    Slack(slack::Slack),
    /// Mail over SMTP.
    Email(Box<email::Email>),
    /// GitHub deployment statuses.
    Github(github::Github),
    /// GitLab commit statuses.
    Gitlab(gitlab::Gitlab),
}

impl Kind {
    /// Its name, as configured.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Webhook(_) => "webhook",
            Kind::Slack(_) => "slack",
            Kind::Email(_) => "email",
            Kind::Github(_) => "github",
            Kind::Gitlab(_) => "gitlab",
        }
    }
}

impl Channel {
    /// Whether it wants `event` in `environment`.
    pub fn wants(&self, event: Event, environment: &str) -> bool {
        self.events.contains(&event)
            && self
                .environments
                .as_ref()
                .is_none_or(|only| only.iter().any(|e| e == environment))
    }

    /// Sends `message` once (the forges remember their deployments in `ledger`).
    pub async fn send(&self, message: &Message, ledger: &Recorder) -> Sent {
        if let Kind::Webhook(webhook) = &self.kind {
            // The bytes queued, exactly: they are what the signature covers.
            return webhook.send(message).await;
        }
        let notice: Notice = match serde_json::from_str(&message.body) {
            Ok(notice) => notice,
            Err(e) => return Sent::Rejected(format!("the queued message cannot be read: {e}")),
        };
        match &self.kind {
            Kind::Webhook(_) => unreachable!("sent above"),
            Kind::Slack(slack) => slack.send(&notice).await,
            Kind::Email(email) => email.send(&notice).await,
            Kind::Github(github) => github.send(&notice, ledger).await,
            Kind::Gitlab(gitlab) => gitlab.send(&notice).await,
        }
    }
}

/// A new delivery id: 122 random bits written as a UUID (version 4).
pub fn delivery_id() -> String {
    let bits = fastrand::u128(..);
    let bits = (bits & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn delivery_ids_are_version_4_uuids_and_differ() {
        let (a, b) = (super::delivery_id(), super::delivery_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }
}
