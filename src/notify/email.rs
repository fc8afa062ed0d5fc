//! The email channel: SMTP with implicit TLS or STARTTLS (required, never downgraded) through
//! rustls, optional authentication, and a message with plain-text and HTML parts whose subject
//! sorts well in a mailbox (`[plumb] production rolled back 3f1c2a9`). The Message-ID comes from
//! the delivery id, so a retried mail is recognisably the same.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::config::{EmailChannel, SmtpTls};
use super::http::Sent;
use super::notice::{Notice, facts, failing_step};
use crate::agent::config::secret;

/// How long an SMTP exchange may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// Mail to fixed recipients through one SMTP server.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Email {
    /// The channel `config` describes, its secrets read; errors name fields under `at`.
    pub fn new(config: &EmailChannel, at: &str) -> anyhow::Result<Email> {
        use anyhow::Context;
        let port = config.port.unwrap_or(match config.tls {
            SmtpTls::Implicit => 465,
            SmtpTls::Starttls => 587,
            SmtpTls::None => 25,
        });
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(port)
            .timeout(Some(DEADLINE));
        if config.tls != SmtpTls::None {
            let mut parameters = TlsParameters::builder(config.host.clone());
            if let Some(file) = &config.ca_file {
                let pem =
                    std::fs::read(file).with_context(|| format!("{at}.caFile: cannot read {}", file.display()))?;
                let certificate = Certificate::from_pem(&pem)
                    .with_context(|| format!("{at}.caFile: {} holds no certificate", file.display()))?;
                parameters = parameters.add_root_certificate(certificate);
            }
            let parameters = parameters
                .build_rustls()
                .with_context(|| format!("{at}: cannot set up TLS"))?;
            builder = builder.tls(match config.tls {
                SmtpTls::Implicit => Tls::Wrapper(parameters),
                _ => Tls::Required(parameters),
            });
        }
        if let (Some(user), Some(password)) = (&config.username_file, &config.password_file) {
            let user = secret(user, &format!("{at}.usernameFile"), 1)?;
            let password = secret(password, &format!("{at}.passwordFile"), 1)?;
            builder = builder.credentials(Credentials::new(user.expose().to_owned(), password.expose().to_owned()));
        }
        let mailbox = |address: &str, field: &str| {
            address
                .parse::<Mailbox>()
                .with_context(|| format!("{at}.{field}: `{address}` is not a mail address"))
        };
        Ok(Email {
            transport: builder.build(),
            from: mailbox(&config.from, "from")?,
            to: config
                .to
                .iter()
                .map(|to| mailbox(to, "to"))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// Mails `notice`.
    pub async fn send(&self, notice: &Notice) -> Sent {
        let mut message = lettre::Message::builder()
            .from(self.from.clone())
            .subject(subject(notice))
            .message_id(Some(format!("<{}@plumb>", notice.delivery)));
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = match message.multipart(MultiPart::alternative_plain_html(text(notice), html(notice))) {
            Ok(message) => message,
            Err(e) => return Sent::Rejected(format!("cannot write the mail: {e}")),
        };
        // The transport's timeout covers each read, not a server that trickles: the whole
        // exchange has a deadline too.
        let sent = match tokio::time::timeout(DEADLINE * 2, self.transport.send(message)).await {
            Ok(sent) => sent,
            Err(_) => return Sent::Retry(format!("SMTP: no answer within {} s", (DEADLINE * 2).as_secs()), None),
        };
        match sent {
            Ok(response) => {
                let said: Vec<&str> = response.message().collect();
                Sent::Delivered(format!("SMTP {}: {}", response.code(), said.join(" ")))
            }
            Err(e) if e.is_permanent() => Sent::Rejected(format!("SMTP: {}", crate::error::chain(&e))),
            Err(e) => Sent::Retry(format!("SMTP: {}", crate::error::chain(&e)), None),
        }
    }
}

/// `[plumb] production rolled back 3f1c2a9`.
pub fn subject(notice: &Notice) -> String {
    format!("[plumb] {}", notice.summary)
}

/// The plain-text part.
pub fn text(notice: &Notice) -> String {
    let mut out = format!("{}\n\n", notice.summary);
    for (label, value) in facts(notice) {
        out.push_str(&format!("{label}: {value}\n"));
    }
    if let Some(url) = &notice.commit.url {
        out.push_str(&format!("Commit page: {url}\n"));
    }
    if let Some((step, error)) = failing_step(notice) {
        out.push_str(&format!("\nFailing step: {step}\n{error}\n"));
    } else if let Some(reason) = &notice.reason {
        out.push_str(&format!("\nWhy: {reason}\n"));
    }
    if !notice.drift.is_empty() {
        out.push_str("\nDrift:\n");
        for line in &notice.drift {
            out.push_str(&format!("  - {line}\n"));
        }
    }
    if let Some(attempt) = &notice.attempt
        && !attempt.steps.is_empty()
    {
        out.push_str("\nSteps:\n");
        for step in &attempt.steps {
            let took = step
                .duration_seconds
                .map(|s| format!(" ({s:.1} s)"))
                .unwrap_or_default();
            let failed = step
                .error
                .as_deref()
                .map(|e| format!(" — failed: {e}"))
                .unwrap_or_default();
            out.push_str(&format!("  - {}{took}{failed}\n", step.name));
        }
    }
    if let Some(url) = &notice.url {
        out.push_str(&format!("\nOn the agent: {url}\n"));
    }
    out.push_str(&format!("\nDelivery {}\n", notice.delivery));
    out
}

/// The HTML part: the same, as a table.
pub fn html(notice: &Notice) -> String {
    let mut rows = String::new();
    for (label, value) in facts(notice) {
        let value = match (label, &notice.commit.url) {
            ("Commit", Some(url)) => format!("<a href=\"{}\">{}</a>", escape(url), escape(&value)),
            _ => escape(&value),
        };
        rows.push_str(&format!("<tr><th align=\"left\">{label}</th><td>{value}</td></tr>"));
    }
    let mut more = String::new();
    if let Some((step, error)) = failing_step(notice) {
        more.push_str(&format!(
            "<p><strong>Failing step</strong> <code>{}</code></p><pre>{}</pre>",
            escape(step),
            escape(error)
        ));
    } else if let Some(reason) = &notice.reason {
        more.push_str(&format!("<p><strong>Why</strong></p><pre>{}</pre>", escape(reason)));
    }
    if !notice.drift.is_empty() {
        let items: String = notice.drift.iter().map(|d| format!("<li>{}</li>", escape(d))).collect();
        more.push_str(&format!("<p><strong>Drift</strong></p><ul>{items}</ul>"));
    }
    if let Some(url) = &notice.url {
        more.push_str(&format!("<p><a href=\"{}\">Open in plumb</a></p>", escape(url)));
    }
    format!(
        "<!DOCTYPE html><html><body><h2>{}</h2><table>{rows}</table>{more}<p><small>Delivery {}</small></p></body></html>",
        escape(&notice.summary),
        escape(&notice.delivery)
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
