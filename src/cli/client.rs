//! Commands against a running agent's API: `plumb status`, `plumb sync`, `plumb rollback`.
//! Mutating calls send the bearer token from `--token-file` or `PLUMB_API_TOKEN`; over
//! `https://`, the agent's certificate is checked against `--ca-file` and a client certificate
//! may stand for the token.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::{Format, Outcome};
use crate::secret::Secret;

/// Where the agent is and how to prove who we are.
#[derive(clap::Args)]
pub struct Server {
    /// The agent's API.
    #[arg(long, env = "PLUMB_SERVER", default_value = "http://127.0.0.1:7070")]
    server: String,
    /// A file holding the API's bearer token (mutating calls); or set `PLUMB_API_TOKEN`.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// A token given in-process (the demo).
    #[arg(skip)]
    token: Option<Secret>,
    /// For an `https://` agent: the CA (PEM) its certificate chains to.
    #[arg(long, env = "PLUMB_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// For an `https://` agent: a client certificate (PEM) to present instead of a token.
    #[arg(long, env = "PLUMB_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "PLUMB_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<PathBuf>,
}

impl Server {
    /// The agent at `server`, with the token from `PLUMB_API_TOKEN` if any.
    pub fn at(server: String) -> Server {
        Server {
            server,
            token_file: None,
            token: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }
}

impl Server {
    /// The agent at `server`, with `token`.
    pub fn new(server: String, token: Secret) -> Server {
        Server {
            server,
            token_file: None,
            token: Some(token),
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }

    fn token(&self) -> anyhow::Result<Option<Secret>> {
        if let Some(token) = &self.token {
            return Ok(Some(token.clone()));
        }
        if let Some(file) = &self.token_file {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            return Ok(Some(Secret::new(text.trim())));
        }
        Ok(std::env::var("PLUMB_API_TOKEN").ok().map(Secret::new))
    }

    /// How to connect: plain HTTP, or TLS checked against `--ca-file` (with the client
    /// certificate, when given) for an `https://` agent.
    fn connector(
        &self,
    ) -> anyhow::Result<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = if self.server.starts_with("https://") {
            let ca = self
                .ca_file
                .as_deref()
                .context("an https:// agent needs --ca-file (the CA its certificate chains to)")?;
            let identity = self.client_cert.as_deref().zip(self.client_key.as_deref());
            let config = crate::tls::client_config(ca, identity).map_err(anyhow::Error::msg)?;
            builder.with_tls_config(config).https_or_http()
        } else {
            let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
            builder.with_tls_config(config).https_or_http()
        };
        Ok(builder.enable_http1().build())
    }

    /// Sends a request and returns the answer's JSON, or an error with the agent's message.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.server.trim_end_matches('/'));
        let mut request = axum::http::Request::builder().method(method).uri(&url);
        if let Some(token) = self.token()? {
            // Reads send it too: an agent may protect them.
            request = request.header("authorization", format!("Bearer {}", token.expose()));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = request
            .header("content-type", "application/json")
            .body(Full::new(axum::body::Bytes::from(body)))
            .with_context(|| format!("`{url}` is not a valid URL"))?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let connector = self.connector()?;
        let (status, bytes) = runtime.block_on(async {
            let client = Client::builder(TokioExecutor::new()).build::<_, Full<axum::body::Bytes>>(connector);
            let response = client
                .request(request)
                .await
                .with_context(|| format!("cannot reach the agent at {}", self.server))?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        })?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["error"].as_str().unwrap_or("no message");
            anyhow::bail!("the agent answered {status}: {message}");
        }
        Ok(value)
    }
}

/// `plumb status`: a table of environments.
pub fn status(out: &mut dyn Write, server: &Server, output: Format) -> anyhow::Result<Outcome> {
    let status = server.call("GET", "/api/v1/status", None)?;
    if output == Format::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?;
        return Ok(Outcome::Ok);
    }
    let short = |v: &Value| v.as_str().map_or("-".to_owned(), |c| c.chars().take(12).collect());
    writeln!(
        out,
        "{:<14} {:<12} {:<12} {:<12} {:<8} {:<6} LAST ATTEMPT",
        "ENVIRONMENT", "APPLIED", "HEAD", "SIGNER", "SYNCED", "DRIFT"
    )?;
    let mut all_synced = true;
    for env in status["environments"].as_array().into_iter().flatten() {
        let synced = env["synced"].as_bool().unwrap_or(false);
        all_synced &= synced;
        let last = &env["lastAttempt"];
        let outcome = match last["outcome"]["result"].as_str() {
            Some(result) => result.to_owned(),
            None if last.is_object() => format!("running: {}", last["step"].as_str().unwrap_or("starting")),
            None => "-".to_owned(),
        };
        writeln!(
            out,
            "{:<14} {:<12} {:<12} {:<12} {:<8} {:<6} {outcome}",
            env["name"].as_str().unwrap_or_default(),
            short(&env["applied"]),
            short(&env["head"]),
            env["signer"].as_str().unwrap_or("-"),
            if synced { "yes" } else { "no" },
            env["drift"].as_array().map_or(0, Vec::len),
        )?;
        if let Some(reason) = env["refused"].as_str() {
            writeln!(out, "  not applied: {reason}")?;
        }
        if let Some(waiting) = env["waiting"].as_str() {
            writeln!(out, "  waiting: {waiting}")?;
        }
        for (cause, reason) in env["blocked"].as_object().into_iter().flatten() {
            writeln!(out, "  blocked ({cause}): {}", reason.as_str().unwrap_or_default())?;
        }
    }
    if let Some(channels) = status["notifications"].as_array() {
        writeln!(
            out,
            "\n{:<14} {:<8} {:<7} {:<25} FAILING",
            "CHANNEL", "KIND", "QUEUED", "LAST DELIVERED"
        )?;
        for channel in channels {
            let undelivered = channel["undelivered"].as_i64().unwrap_or(0);
            let failing = match (channel["failing"].as_str(), undelivered) {
                (Some(failing), _) => failing.to_owned(),
                (None, 0) => "-".to_owned(),
                (None, n) => format!("- ({n} not delivered for good)"),
            };
            writeln!(
                out,
                "{:<14} {:<8} {:<7} {:<25} {failing}",
                channel["channel"].as_str().unwrap_or_default(),
                channel["kind"].as_str().unwrap_or_default(),
                channel["queued"].as_i64().unwrap_or(0),
                channel["lastDelivered"].as_str().unwrap_or("-"),
            )?;
        }
    }
    Ok(if all_synced { Outcome::Ok } else { Outcome::Found })
}

/// `plumb diff --env E --live`: what applying the head would do to what runs now. Exit 1 when
/// something would change.
pub fn live_diff(out: &mut dyn Write, server: &Server, env: &str, output: Format) -> anyhow::Result<Outcome> {
    let pending = server.call("GET", &format!("/api/v1/environments/{env}/diff"), None)?;
    let steps = pending["plan"]["steps"].as_array().cloned().unwrap_or_default();
    if output == Format::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&pending)?)?;
    } else {
        let short = |v: &Value| v.as_str().map_or("none".to_owned(), |c| c.chars().take(12).collect());
        writeln!(
            out,
            "{env}: head {} against what runs (rollback point {})",
            short(&pending["commit"]),
            short(&pending["applied"])
        )?;
        if steps.is_empty() {
            writeln!(out, "  nothing to do")?;
        }
        for step in &steps {
            writeln!(
                out,
                "  {}: {} ({})",
                step["service"].as_str().unwrap_or_default(),
                step["action"].as_str().unwrap_or_default(),
                step["why"].as_str().unwrap_or_default()
            )?;
        }
    }
    let changes = steps.iter().any(|s| s["action"] != "orphan");
    Ok(if changes { Outcome::Found } else { Outcome::Ok })
}

/// `plumb history --env E --server URL`: the attempts as the running agent's ledger holds them.
pub fn history(
    out: &mut dyn Write,
    server: &Server,
    env: &str,
    limit: usize,
    output: Format,
) -> anyhow::Result<Outcome> {
    let answer = server.call(
        "GET",
        &format!("/api/v1/environments/{env}/history?limit={limit}"),
        None,
    )?;
    let records: Vec<crate::ledger::AttemptRecord> =
        serde_json::from_value(answer["attempts"].clone()).context("the agent's history is not what plumb expects")?;
    super::ledger::print_history(out, env, &records, output)
}

/// `plumb migrations --env E --server URL`: the migrations as the agent's ledger holds them.
pub fn migrations(
    out: &mut dyn Write,
    server: &Server,
    env: &str,
    limit: usize,
    output: Format,
) -> anyhow::Result<Outcome> {
    let answer = server.call(
        "GET",
        &format!("/api/v1/environments/{env}/migrations?limit={limit}"),
        None,
    )?;
    let records: Vec<crate::ledger::MigrationRecord> = serde_json::from_value(answer["migrations"].clone())
        .context("the agent's migrations are not what plumb expects")?;
    super::ledger::print_migrations(out, env, &records, output)
}

/// What `plumb migrations resolve` says.
pub struct Resolve<'a> {
    /// The commit (a prefix will do).
    pub commit: &'a str,
    /// Only this service's migration.
    pub service: Option<&'a str>,
    /// What the database has.
    pub state: crate::ledger::MigrationState,
    /// Who checked.
    pub by: Option<&'a str>,
}

/// `plumb migrations resolve --env E --commit C --as applied|rolled-back`: record what a
/// person verified of an interrupted migration; the environment goes on.
pub fn resolve(
    out: &mut dyn Write,
    server: &Server,
    env: &str,
    request: &Resolve<'_>,
    output: Format,
) -> anyhow::Result<Outcome> {
    let body = serde_json::json!({
        "commit": request.commit, "service": request.service, "as": request.state, "by": request.by,
    });
    let done = server.call(
        "POST",
        &format!("/api/v1/environments/{env}/migrations/resolve"),
        Some(body),
    )?;
    if output == Format::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&done)?)?;
    } else {
        let services: Vec<&str> = done["services"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        writeln!(
            out,
            "{env}: the migration of {} for {} recorded as {} by {}; the environment goes on",
            services.join(", "),
            done["commit"].as_str().unwrap_or_default(),
            done["as"].as_str().unwrap_or_default(),
            done["resolvedBy"].as_str().unwrap_or_default()
        )?;
    }
    Ok(Outcome::Ok)
}

/// `plumb sync --env E`: apply the head now.
pub fn sync(
    out: &mut dyn Write,
    server: &Server,
    env: &str,
    skip_migrations: bool,
    output: Format,
) -> anyhow::Result<Outcome> {
    let body = serde_json::json!({ "skipMigrations": skip_migrations });
    let done = with_progress(server, env, output, || {
        server.call("POST", &format!("/api/v1/environments/{env}/sync"), Some(body))
    })?;
    print_done(out, &done, output)
}

/// Runs `call` (a long request) while following the environment's attempt on stderr: a spinner
/// naming the running step on a terminal, one plain line per step when piped (nothing with
/// `--output json`).
fn with_progress(
    server: &Server,
    env: &str,
    output: Format,
    call: impl FnOnce() -> anyhow::Result<Value>,
) -> anyhow::Result<Value> {
    if output == Format::Json {
        return call();
    }
    let before = server
        .call("GET", &format!("/api/v1/environments/{env}"), None)
        .ok()
        .and_then(|v| v["lastAttempt"]["id"].as_i64());
    let done = std::sync::atomic::AtomicBool::new(false);
    let spinner = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        spinner.set_message(format!("waiting for {env}"));
        spinner
    });
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut printed = 0;
            loop {
                // One more look once the call returned, for the last steps.
                let finished = done.load(std::sync::atomic::Ordering::Relaxed);
                if let Ok(status) = server.call("GET", &format!("/api/v1/environments/{env}"), None) {
                    let last = &status["lastAttempt"];
                    if last["id"].as_i64() != before {
                        let steps = last["steps"].as_array().cloned().unwrap_or_default();
                        for step in steps.iter().skip(printed) {
                            let name = step["name"].as_str().unwrap_or_default();
                            match &spinner {
                                Some(spinner) => spinner.set_message(name.to_owned()),
                                None => eprintln!("  … {name}"),
                            }
                        }
                        printed = printed.max(steps.len());
                    }
                }
                if finished {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        });
        let result = call();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    });
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    result
}

/// `plumb rollback --env E [--to COMMIT]`: restore an earlier applied commit, and say which
/// `git revert` makes the repository agree.
pub fn rollback(
    out: &mut dyn Write,
    server: &Server,
    env: &str,
    to: Option<&str>,
    skip_migrations: bool,
    output: Format,
) -> anyhow::Result<Outcome> {
    let body = serde_json::json!({ "to": to, "skipMigrations": skip_migrations });
    let done = with_progress(server, env, output, || {
        server.call("POST", &format!("/api/v1/environments/{env}/rollback"), Some(body))
    })?;
    let outcome = print_done(out, &done, output)?;
    if output != Format::Json
        && let Some(revert) = done["revert"].as_str()
    {
        writeln!(
            out,
            "The head is not applied again until it moves. Make git agree with the environment \
             by opening a pull request with:\n  {revert}"
        )?;
    }
    Ok(outcome)
}

fn print_done(out: &mut dyn Write, done: &Value, output: Format) -> anyhow::Result<Outcome> {
    if output == Format::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(done)?)?;
    } else {
        let commit = done["commit"].as_str().unwrap_or_default();
        let result = done["outcome"]["result"].as_str().unwrap_or("unknown");
        writeln!(out, "{commit}: {result}")?;
        if let Some(reason) = done["outcome"]["reason"].as_str() {
            writeln!(out, "  {reason}")?;
        }
        for line in done["plan"].as_array().into_iter().flatten() {
            writeln!(out, "  {}", line.as_str().unwrap_or_default())?;
        }
    }
    Ok(if done["outcome"]["result"] == "succeeded" {
        Outcome::Ok
    } else {
        Outcome::Found
    })
}
