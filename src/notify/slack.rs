//! The Slack channel: an incoming-webhook message in Block Kit — a header saying what happened,
//! the facts (environment, outcome, commit with its link, signer, strategy, duration), the
//! failing step and the reason, and a link to the agent — with a plain-text fallback.

use serde_json::{Value, json};

use super::http::{Client, Sent};
use super::notice::{Notice, facts, failing_step};
use crate::secret::Secret;

/// A Slack incoming webhook.
pub struct Slack {
    /// The webhook's URL (a secret: whoever has it may post).
    pub url: Secret,
    /// The client.
    pub client: Client,
}

impl Slack {
    /// Posts `notice` as a message.
    pub async fn send(&self, notice: &Notice) -> Sent {
        let body = message(notice).to_string();
        let headers = [("content-type", "application/json")];
        match self
            .client
            .send("POST", self.url.expose(), &headers, body.into_bytes())
            .await
        {
            Ok(answer) => answer.sorted(),
            // The error may hold the URL: it is not repeated.
            Err(e) => Sent::Retry(e.replace(self.url.expose(), "<the webhook URL>"), None),
        }
    }
}

/// The message's JSON.
pub fn message(notice: &Notice) -> Value {
    let mut fields: Vec<Value> = facts(notice)
        .into_iter()
        .map(|(label, value)| {
            let value = match (label, &notice.commit.url) {
                ("Commit", Some(url)) => format!("<{}|{}>", escape(url), escape(&value)),
                _ => escape(&value),
            };
            json!({ "type": "mrkdwn", "text": cut(&format!("*{label}*\n{value}"), 2000) })
        })
        .collect();
    fields.truncate(10);
    let mut blocks = vec![
        json!({ "type": "header", "text": { "type": "plain_text", "text": cut(&notice.summary, 150) } }),
        json!({ "type": "section", "fields": fields }),
    ];
    if let Some((step, error)) = failing_step(notice) {
        let text = format!("*Failing step* `{}`\n{}", escape(step), escape(error));
        blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": cut(&text, 3000) } }));
    } else if let Some(reason) = &notice.reason {
        let text = format!("*Why*\n{}", escape(reason));
        blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": cut(&text, 3000) } }));
    }
    if !notice.drift.is_empty() {
        let lines: Vec<String> = notice
            .drift
            .iter()
            .take(20)
            .map(|d| format!("• {}", escape(d)))
            .collect();
        let text = format!("*Drift*\n{}", lines.join("\n"));
        blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": cut(&text, 3000) } }));
    }
    let mut context = Vec::new();
    if let Some(url) = &notice.url {
        context.push(format!("<{}|Open in plumb>", escape(url)));
    }
    context.push(format!("delivery {}", notice.delivery));
    blocks.push(json!({
        "type": "context",
        "elements": [{ "type": "mrkdwn", "text": context.join(" · ") }],
    }));
    json!({ "text": format!("[plumb] {}", notice.summary), "blocks": blocks })
}

/// `text` with the three characters Slack's mrkdwn reserves escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `text` cut to at most `max` characters (Slack refuses longer blocks).
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}
