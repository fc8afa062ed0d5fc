//! The agent end to end over a real signed repository: authenticated commits are applied, a
//! commit refused by trust or invalid leaves the running version untouched, a failing one is
//! rolled back automatically.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use plumb::agent::Settings;
use plumb::ledger::{Ledger, Outcome};
use plumb::secret::Secret;
use plumb::trigger::webhook::Provider;
use tokio_util::sync::CancellationToken;

use crate::harness::{Web, agent_settings, repository_settings, trusted};
use crate::http::post;
use crate::keys::TestKey;
use crate::servers::hmac_sha256_hex;

pub(crate) const TOKEN: &str = "a-long-enough-api-token";

/// The path as the OpenAPI description writes it: `/api/v1/environments/{env}/…`.
fn documented(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    match path.strip_prefix("/api/v1/environments/") {
        Some(rest) => match rest.split_once('/') {
            Some((_, tail)) => match tail.strip_prefix("services/").and_then(|t| t.split_once('/')) {
                Some((_, tail)) => format!("/api/v1/environments/{{env}}/services/{{svc}}/{tail}"),
                None => format!("/api/v1/environments/{{env}}/{tail}"),
            },
            None => "/api/v1/environments/{env}".to_owned(),
        },
        None => path.to_owned(),
    }
}

/// `GET path`, its answer checked against the OpenAPI description.
pub(crate) async fn api_get(api: SocketAddr, path: &str) -> crate::http::Response {
    api_get_with(api, path, &[]).await
}

/// `GET path` with `headers`, its answer checked against the OpenAPI description.
pub(crate) async fn api_get_with(api: SocketAddr, path: &str, headers: &[(&str, String)]) -> crate::http::Response {
    let response = crate::http::get_with(api, path, headers).await;
    crate::openapi::conforms(&documented(path), "get", response.status, &response.body);
    response
}

/// `POST path`, its answer checked against the OpenAPI description.
pub(crate) async fn api_post(
    api: SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> crate::http::Response {
    let response = post(api, path, headers, body).await;
    crate::openapi::conforms(&documented(path), "post", response.status, &response.body);
    response
}
const HOOK_SECRET: &str = "a-long-enough-webhook-secret";

/// Tells the agent at `api` that `branch` moved, as a forge's webhook does.
async fn push(api: SocketAddr, branch: &str) {
    assert_eq!(push_to(api, "config", branch).await, 202);
}

/// Tells the agent at `api` that `branch` of repository `name` moved; the answer's status.
async fn push_to(api: SocketAddr, name: &str, branch: &str) -> u16 {
    let body = format!("{{\"ref\": \"{branch}\"}}");
    let signature = format!("sha256={}", hmac_sha256_hex(HOOK_SECRET, body.as_bytes()));
    let path = format!("/hooks/{name}");
    post(api, &path, &[("x-plumb-signature", signature)], body.as_bytes())
        .await
        .status
}

/// The release `web` answers with on `addr`, `None` while nothing answers.
pub async fn release(addr: SocketAddr) -> Option<String> {
    let response = crate::http::try_get(addr, "/").await?;
    (response.status == 200).then(|| response.body.split(' ').nth(1).map(str::to_owned))?
}

/// Waits up to `limit` for `probe` to return `Some`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The outcome recorded for `commit` in `environment` under `state`, once there is one (within
/// 240 s).
pub async fn outcome(state: &Path, environment: &str, commit: &str) -> Option<Outcome> {
    eventually(Duration::from_secs(240), || async {
        let ledger = Ledger::open_read_only(&state.join("ledger.sqlite")).ok()?;
        let history = ledger.history(environment, 100).ok()?;
        history
            .into_iter()
            .find(|r| r.attempt.commit == commit)
            .and_then(|r| r.outcome)
    })
    .await
}

/// The id of the newest attempt of `environment` under `state`; 0 when there is none.
pub fn newest_attempt(state: &Path, environment: &str) -> i64 {
    Ledger::open_read_only(&state.join("ledger.sqlite"))
        .and_then(|l| l.history(environment, 1))
        .ok()
        .and_then(|records| records.first().map(|r| r.id))
        .unwrap_or(0)
}

/// Waits (up to 240 s) for an attempt of `environment` newer than attempt `after` to end; its
/// outcome. An agent starting over an applied head records one, even when nothing changes: the
/// positive sign that it looked.
pub async fn next_outcome(state: &Path, environment: &str, after: i64) -> Option<Outcome> {
    eventually(Duration::from_secs(240), || async {
        let ledger = Ledger::open_read_only(&state.join("ledger.sqlite")).ok()?;
        let history = ledger.history(environment, 1).ok()?;
        history.into_iter().find(|r| r.id > after).and_then(|r| r.outcome)
    })
    .await
}

/// Whether an attempt for `commit` in `environment` under `state` succeeds within 240 s (an
/// earlier attempt for it may have ended otherwise).
pub async fn succeeds(state: &Path, environment: &str, commit: &str) -> bool {
    eventually(Duration::from_secs(240), || async {
        let ledger = Ledger::open_read_only(&state.join("ledger.sqlite")).ok()?;
        let history = ledger.history(environment, 100).ok()?;
        history
            .iter()
            .any(|r| r.attempt.commit == commit && r.outcome == Some(Outcome::Succeeded))
            .then_some(())
    })
    .await
    .is_some()
}

/// An agent running in-process.
pub struct Running {
    cancel: CancellationToken,
    agent: tokio::task::JoinHandle<()>,
    /// Its doorbells and API address.
    pub handle: plumb::agent::Agent,
}

impl Running {
    /// Starts the agent with `settings`, once its fetch workers run.
    pub async fn start(settings: Settings) -> Running {
        let cancel = CancellationToken::new();
        let (started, handle) = tokio::sync::oneshot::channel();
        let agent = tokio::spawn(plumb::agent::run(settings, cancel.clone(), Some(started)));
        let handle = handle.await.expect("the agent starts");
        Running {
            cancel,
            agent: tokio::spawn(async move { agent.await.unwrap().unwrap() }),
            handle,
        }
    }

    /// Tells the agent its repositories moved.
    pub fn push(&self) {
        self.handle.ring(plumb::trigger::Reason::Manual);
    }

    /// Stops it, as SIGTERM does, and waits until it has.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.agent.await.unwrap();
    }
}

/// Whether the trust state of repository `config` records `commit` as refused.
fn refused(state: &Path, commit: &str) -> bool {
    refused_in(state, "config", commit)
}

/// Whether the trust state of repository `name` records `commit` as refused.
fn refused_in(state: &Path, name: &str, commit: &str) -> bool {
    std::fs::read_to_string(state.join("repositories").join(name).join("trust.json")).is_ok_and(|t| t.contains(commit))
}

pub(crate) fn outcomes(state: &Path) -> Vec<(String, Option<Outcome>)> {
    let ledger = Ledger::open_read_only(&state.join("ledger.sqlite")).unwrap();
    let mut records = ledger.history("dev", 100).unwrap();
    records.reverse();
    records.into_iter().map(|r| (r.attempt.commit, r.outcome)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_commits_apply_and_nothing_else_touches_what_runs() {
    let alice = TestKey::new("alice");
    let mallory = TestKey::new("mallory");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Web::new(port, "r1", "blueGreen: {keepOldVersion: 0s}").write(&upstream);
    let first = upstream.commit_signed("web r1", &alice);

    let state = tempfile::tempdir().unwrap();
    let reference = upstream.branch();
    let mut settings = Settings {
        heal_every: Duration::from_millis(200),
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        api_token: Some(Secret::new(TOKEN)),
        ..agent_settings(&upstream, &root, state.path())
    };
    settings.repositories[0].webhook = Some((Provider::Generic, Secret::new(HOOK_SECRET)));
    let cancel = CancellationToken::new();
    let (started, handle) = tokio::sync::oneshot::channel();
    let agent = tokio::spawn(plumb::agent::run(settings, cancel.clone(), Some(started)));
    let api = handle.await.unwrap().api.unwrap();
    let seen = eventually(Duration::from_secs(30), || release(addr)).await;
    assert_eq!(seen.as_deref(), Some("r1"));

    // Signed by someone the policy does not know: refused by trust, never applied.
    Web::new(port, "r2-mallory", "blueGreen: {keepOldVersion: 0s}").write(&upstream);
    let forged = upstream.commit_signed("web r2", &mallory);
    push(api, &reference).await;
    let found = eventually(Duration::from_secs(10), || async {
        refused(state.path(), &forged).then_some(())
    })
    .await;
    assert!(found.is_some(), "the fetcher refuses the forged head");
    // The refusal is decided before any worker sees the head: once the status shows it, the
    // head will never be applied.
    let status = eventually(Duration::from_secs(10), || async {
        let status: serde_json::Value =
            serde_json::from_str(&api_get(api, "/api/v1/environments/dev").await.body).unwrap();
        let refused = status["refused"].as_str().unwrap_or_default();
        (refused.contains(&forged) && refused.contains("unknown_signer")).then_some(status)
    })
    .await;
    assert!(status.is_some(), "the status says why the forged head is not applied");
    assert_eq!(release(addr).await.as_deref(), Some("r1"));
    assert_eq!(outcomes(state.path()), [(first.clone(), Some(Outcome::Succeeded))]);

    // Signed, but invalid: refused with the file and field named, nothing changes.
    upstream.set_branch(&first);
    Web::new(port, "r2", "blueGreen: {keepOldVersion: 0s}").write(&upstream);
    upstream.edit("services/web.yaml", "replicas: 2", "replicas: many");
    let invalid = upstream.commit_signed("web r2, badly", &alice);
    push(api, &reference).await;
    let recorded = eventually(Duration::from_secs(10), || async {
        outcomes(state.path())
            .into_iter()
            .find(|(c, _)| *c == invalid)
            .and_then(|(_, o)| o)
    })
    .await;
    let Some(Outcome::Refused(reason)) = recorded else {
        panic!("{recorded:?}")
    };
    assert!(
        reason.contains("services/web.yaml") && reason.contains("replicas"),
        "{reason}"
    );
    assert_eq!(release(addr).await.as_deref(), Some("r1"));

    // A good commit rolls out; a failing one after it is rolled back automatically.
    upstream.edit("services/web.yaml", "replicas: many", "replicas: 2");
    let good = upstream.commit_signed("web r2, fixed", &alice);
    push(api, &reference).await;
    let seen = eventually(Duration::from_secs(30), || async {
        release(addr).await.filter(|r| r == "r2")
    })
    .await;
    assert_eq!(seen.as_deref(), Some("r2"));
    Web {
        healthy: false,
        ..Web::new(port, "r3", "blueGreen: {keepOldVersion: 0s}")
    }
    .write(&upstream);
    let bad = upstream.commit_signed("web r3, unhealthy", &alice);
    push(api, &reference).await;
    let recorded = eventually(Duration::from_secs(30), || async {
        outcomes(state.path())
            .into_iter()
            .find(|(c, _)| *c == bad)
            .and_then(|(_, o)| o)
    })
    .await;
    assert!(matches!(recorded, Some(Outcome::RolledBack(_))), "{recorded:?}");
    assert_eq!(release(addr).await.as_deref(), Some("r2"));
    let ledger = Ledger::open_read_only(&state.path().join("ledger.sqlite")).unwrap();
    assert_eq!(ledger.rollback_point("dev").unwrap(), Some(good.clone()));
    assert!(ledger.verify().unwrap().is_ok());

    // The metrics count what happened, as Prometheus reads them.
    let families = crate::metrics::parse(&api_get(api, "/metrics").await.body);
    let value = |name: &str, labels: &[(&str, &str)]| crate::metrics::value(&families, name, labels);
    assert_eq!(
        value("plumb_refused_commits_total", &[("reason", "unknown_signer")]),
        Some(1.0)
    );
    let running = [("environment", "dev"), ("commit", good.as_str()), ("signer", "alice")];
    assert_eq!(value("plumb_commit_info", &running), Some(1.0));
    let rolled_back = [
        ("environment", "dev"),
        ("trigger", "commit"),
        ("strategy", "blueGreen"),
        ("result", "rolled_back"),
    ];
    assert_eq!(value("plumb_attempts_total", &rolled_back), Some(1.0));
    assert_eq!(value("plumb_rollbacks_total", &[("kind", "automatic")]), Some(1.0));
    assert_eq!(
        value(
            "plumb_webhook_deliveries_total",
            &[("provider", "generic"), ("result", "accepted")]
        ),
        Some(4.0)
    );
    assert_eq!(
        value("plumb_reconcile_duration_seconds_count", &[("environment", "dev")]),
        Some(3.0)
    );
    assert_eq!(value("plumb_attempts_total", &[("result", "refused")]), Some(1.0));
    // Each attempt's planning and rollout are timed; each fetch, and each commit authenticated
    // and rendered.
    for stage in ["plan", "rollout"] {
        let count = value("plumb_stage_duration_seconds_count", &[("stage", stage)]);
        assert_eq!(count, Some(3.0), "{stage}");
    }
    for stage in ["fetch", "authenticate", "render"] {
        let count = value("plumb_stage_duration_seconds_count", &[("stage", stage)]);
        assert!(count.is_some_and(|c| c >= 1.0), "{stage}: {count:?}");
    }
    let rendering = value("plumb_stage_duration_seconds_sum", &[("stage", "render")]);
    assert!(rendering.is_some_and(|s| s > 0.0), "{rendering:?}");
    assert_eq!(
        crate::metrics::kind(&families, "plumb_reconcile_duration_seconds").as_deref(),
        Some("histogram")
    );
    assert_eq!(
        crate::metrics::kind(&families, "plumb_commit_info").as_deref(),
        Some("gauge")
    );

    // The API shows it; mutating calls need the token.
    let status: serde_json::Value = serde_json::from_str(&api_get(api, "/api/v1/status").await.body).unwrap();
    let dev = &status["environments"][0];
    assert_eq!(
        (dev["name"].as_str(), dev["applied"].as_str()),
        (Some("dev"), Some(good.as_str()))
    );
    assert_eq!(dev["head"].as_str(), Some(bad.as_str()));
    assert_eq!(dev["synced"], false);
    assert_eq!(dev["lastAttempt"]["outcome"]["result"], "rolled_back");
    assert_eq!(api_get(api, "/api/v1/environments/nope").await.status, 404);
    // The migration history, as the ledger holds it (this service has no migration).
    let migrations: serde_json::Value =
        serde_json::from_str(&api_get(api, "/api/v1/environments/dev/migrations").await.body).unwrap();
    assert_eq!(migrations["migrations"], serde_json::json!([]));
    assert_eq!(api_get(api, "/api/v1/environments/nope/migrations").await.status, 404);
    let asked = tokio::process::Command::new(env!("CARGO_BIN_EXE_plumb"))
        .args(["migrations", "--env", "dev", "--server", &format!("http://{api}")])
        .output()
        .await
        .unwrap();
    assert!(asked.status.success(), "{}", String::from_utf8_lossy(&asked.stderr));
    assert_eq!(
        String::from_utf8_lossy(&asked.stdout),
        "no migrations recorded for `dev`\n"
    );
    let rollback = "/api/v1/environments/dev/rollback";
    assert_eq!(api_post(api, rollback, &[], b"").await.status, 401);
    let wrong = [("authorization", "Bearer not-the-token-at-all".to_owned())];
    assert_eq!(api_post(api, rollback, &wrong, b"").await.status, 401);
    let bearer = [("authorization", format!("Bearer {TOKEN}"))];
    assert_eq!(
        api_post(api, rollback, &bearer, b"{\"to\": \"0000\"}").await.status,
        404,
        "a commit never applied here is not found"
    );
    assert_eq!(api_post(api, rollback, &bearer, &[b'x'; 20_000]).await.status, 413);

    // `plumb rollback` restores the commit before the rollback point and says how to revert.
    let server = format!("http://{api}");
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_plumb"))
            .args(["rollback", "--env", "dev", "--server", &server])
            .env("PLUMB_API_TOKEN", TOKEN)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        stdout.contains(&format!("git revert --no-edit {first}..{bad}")),
        "{stdout}"
    );
    assert_eq!(release(addr).await.as_deref(), Some("r1"));
    let ledger = Ledger::open_read_only(&state.path().join("ledger.sqlite")).unwrap();
    assert_eq!(ledger.rollback_point("dev").unwrap(), Some(first.clone()));
    assert!(
        ledger.is_failed("dev", &bad).unwrap(),
        "the head stays out until it moves"
    );

    cancel.cancel();
    agent.await.unwrap().unwrap();
    assert_eq!(release(addr).await, None, "the agent stops its replicas when it stops");
}

/// Two repositories, each with its own signers and environments, under one agent: each
/// environment follows its own repository only, a refusal in one touches nothing of the other,
/// and each has its own webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_repositories_each_own_their_environments() {
    let (alice, bob, mallory) = (TestKey::new("alice"), TestKey::new("bob"), TestKey::new("mallory"));
    let (mut platform, platform_root) = trusted(&alice);
    let (mut payments, payments_root) = trusted(&bob);
    let (dev_port, pay_port) = (crate::reconcile::free_port(), crate::reconcile::free_port());
    let (dev, pay) = (
        SocketAddr::from(([127, 0, 0, 1], dev_port)),
        SocketAddr::from(([127, 0, 0, 1], pay_port)),
    );
    Web::new(dev_port, "p1", "recreate: {}").write(&platform);
    platform.commit_signed("web p1", &alice);
    Web {
        environment: "payments",
        ..Web::new(pay_port, "q1", "recreate: {}")
    }
    .write(&payments);
    payments.commit_signed("web q1", &bob);

    let state = tempfile::tempdir().unwrap();
    let mut settings = Settings {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..agent_settings(&platform, &platform_root, state.path())
    };
    let both = |dev: &str, pay: &str| {
        let mut first = repository_settings("platform", &platform, &platform_root);
        first.environments = Some(vec![dev.to_owned()]);
        first.webhook = Some((Provider::Generic, Secret::new(HOOK_SECRET)));
        let mut second = repository_settings("payments", &payments, &payments_root);
        second.environments = Some(vec![pay.to_owned()]);
        second.webhook = Some((Provider::Generic, Secret::new(HOOK_SECRET)));
        vec![first, second]
    };

    // An environment claimed twice stops the agent at start, naming both repositories.
    settings.repositories = both("dev", "dev");
    let refused = plumb::agent::run(settings, CancellationToken::new(), None).await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("`dev`") && message.contains("`platform` and `payments`"),
        "{message}"
    );

    let settings = Settings {
        repositories: both("dev", "payments"),
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..agent_settings(&platform, &platform_root, state.path())
    };
    let cancel = CancellationToken::new();
    let (started, handle) = tokio::sync::oneshot::channel();
    let agent = tokio::spawn(plumb::agent::run(settings, cancel.clone(), Some(started)));
    let handle = handle.await.unwrap();
    let api = handle.api.unwrap();
    assert_eq!(handle.doorbells.keys().collect::<Vec<_>>(), ["payments", "platform"]);
    let serving = |addr: SocketAddr, release: &'static str| async move {
        eventually(Duration::from_secs(30), || async {
            crate::agent::release(addr).await.filter(|r| r == release)
        })
        .await
    };
    assert!(serving(dev, "p1").await.is_some());
    assert!(serving(pay, "q1").await.is_some());
    assert_eq!(api_get(api, "/readyz").await.status, 200);

    // A forged commit in payments is refused there; platform's environment knows nothing of it.
    Web {
        environment: "payments",
        ..Web::new(pay_port, "q2-mallory", "recreate: {}")
    }
    .write(&payments);
    let forged = payments.commit_signed("web q2", &mallory);
    assert_eq!(push_to(api, "payments", &payments.branch()).await, 202);
    let found = eventually(Duration::from_secs(10), || async {
        refused_in(state.path(), "payments", &forged).then_some(())
    })
    .await;
    assert!(found.is_some(), "the payments fetcher refuses the forged head");
    let status = |env: &'static str| async move {
        let body = api_get(api, &format!("/api/v1/environments/{env}")).await.body;
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let shown = eventually(Duration::from_secs(5), || async {
        status("payments").await["refused"].as_str().map(str::to_owned)
    })
    .await;
    assert!(shown.is_some_and(|r| r.contains(&forged)));
    assert!(status("dev").await["refused"].is_null());

    // A push to platform moves dev only; payments keeps its release.
    Web::new(dev_port, "p2", "recreate: {}").write(&platform);
    platform.commit_signed("web p2", &alice);
    assert_eq!(push_to(api, "platform", &platform.branch()).await, 202);
    assert!(serving(dev, "p2").await.is_some());
    assert_eq!(crate::agent::release(pay).await.as_deref(), Some("q1"));
    // Webhooks are routed by repository name; there is no `config` repository here.
    assert_eq!(push_to(api, "config", &platform.branch()).await, 404);

    cancel.cancel();
    agent.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_sync_applies_nothing_not_even_the_first_deployment_until_asked() {
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Web::new(port, "r1", "recreate: {}").write(&upstream);
    upstream.edit(
        "environments/dev.yaml",
        "local: {}",
        "local: {}\nsync: {automatic: false}",
    );
    let first = upstream.commit_signed("web r1, synced by hand", &alice);
    let state = tempfile::tempdir().unwrap();
    let agent = Running::start(Settings {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        api_token: Some(Secret::new(TOKEN)),
        ..agent_settings(&upstream, &root, state.path())
    })
    .await;
    let api = agent.handle.api.unwrap();

    // The agent has handled the head (the status names it) and says it waits: nothing ran.
    let waiting = eventually(Duration::from_secs(30), || async {
        let status: serde_json::Value =
            serde_json::from_str(&api_get(api, "/api/v1/environments/dev").await.body).ok()?;
        let waits = status["head"] == first.as_str()
            && status["refused"]
                .as_str()
                .is_some_and(|r| r.contains("waiting for `plumb sync`"));
        waits.then_some(status)
    })
    .await;
    assert!(
        waiting.is_some(),
        "the status says the first deployment waits for a sync"
    );
    let attempts = Ledger::open_read_only(&state.path().join("ledger.sqlite"))
        .and_then(|l| l.history("dev", 10))
        .map(|h| h.len())
        .unwrap_or(0);
    assert_eq!(attempts, 0, "no attempt before `plumb sync`");
    assert_eq!(release(addr).await, None);

    let bearer = [("authorization", format!("Bearer {TOKEN}"))];
    let synced = api_post(api, "/api/v1/environments/dev/sync", &bearer, b"").await;
    assert!(synced.status < 300, "{} {}", synced.status, synced.body);
    assert!(succeeds(state.path(), "dev", &first).await);
    assert_eq!(release(addr).await.as_deref(), Some("r1"));
    agent.stop().await;
}
