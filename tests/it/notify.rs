//! Notifications on real parts: the agent's webhook through a receiver that fails, throttles and
//! then takes each message (signed, once per delivery id, in order); queued messages that
//! survive an agent killed with SIGKILL; mail over STARTTLS with a login to a real SMTP server
//! (aiosmtpd); Slack's Block Kit; GitHub's deployment requests checked against GitHub's own
//! OpenAPI description; GitLab's commit statuses; `plumb notify test`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use plumb::agent::{Notifications, Settings};
use plumb::ledger::{Attempt, Ledger, Outcome, Recorder, Trigger};
use plumb::notify::route::{Origin, Origins, Routes};
use plumb::notify::{Channel, ChannelConfig, Sent};
use serde_json::{Value, json};

use crate::agent::{Running, eventually, release};
use crate::governance::Agent;
use crate::harness::{Web, agent_settings, plumb, project, trusted};
use crate::http::{get, try_get};
use crate::keys::TestKey;
use crate::receiver::{Received, Receiver, Script, always};

const SECRET: &str = "the-webhook-signing-secret";
const COMMIT: &str = "3f1c2a9e0b7d4c6a8f1e2d3c4b5a69788796a5b4";

fn channel(config: Value) -> Arc<Channel> {
    let config: ChannelConfig = serde_json::from_value(config).unwrap();
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    Arc::new(config.channel("notifications[0]").unwrap())
}

fn signature(body: &[u8]) -> String {
    format!("sha256={}", plumb::notify::webhook::signature(SECRET.as_bytes(), body))
}

/// The requests answered 2xx, in order.
fn taken(receiver: &Receiver) -> Vec<Received> {
    receiver
        .received()
        .into_iter()
        .filter(|r| (200..300).contains(&r.status))
        .collect()
}

fn events(received: &[Received]) -> Vec<String> {
    received.iter().map(|r| r.header("x-plumb-event").to_owned()).collect()
}

fn check_against_schema(body: &Value) {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(project().join("schemas/notification.schema.json")).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let problems: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(problems.is_empty(), "{problems:?} in {body:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_is_told_each_event_once_signed_and_in_order_through_failures() {
    // Down, then throttled with Retry-After, then taking everything.
    let receiver = Receiver::start(Arc::new(|_, before| match before {
        0 => (500, Vec::new(), "down for a moment".to_owned()),
        1 => (429, vec![("retry-after", "1".to_owned())], "slow down".to_owned()),
        _ => (200, Vec::new(), "ok".to_owned()),
    }))
    .await;
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    Web::new(port, "r1", "blueGreen: {keepOldVersion: 0s}").write(&upstream);
    let r1 = upstream.commit_signed("web r1", &alice);

    let state = tempfile::tempdir().unwrap();
    let secret = state.path().join("hook-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let mut settings = Settings {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        notifications: Notifications {
            channels: vec![channel(json!({
                "name": "ops",
                "webhook": { "url": receiver.url("/plumb"), "secretFile": secret },
            }))],
            external_url: Some("https://plumb.example.com".to_owned()),
        },
        ..agent_settings(&upstream, &root, state.path())
    };
    settings.repositories[0].poll.interval = Some(Duration::from_millis(100));
    let agent = Running::start(settings).await;
    let api = agent.handle.api.unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(
        eventually(Duration::from_secs(30), || release(addr)).await.as_deref(),
        Some("r1")
    );
    let told = |count: usize| {
        let receiver = &receiver;
        eventually(Duration::from_secs(30), move || async move {
            let taken = taken(receiver);
            (taken.len() >= count).then_some(taken)
        })
    };
    told(2).await.expect("r1's start and success are delivered");

    // A release whose health check fails is rolled back; then a commit that is invalid.
    Web {
        healthy: false,
        checks: ("50ms", 3),
        ..Web::new(port, "r2", "blueGreen: {keepOldVersion: 0s}")
    }
    .write(&upstream);
    let r2 = upstream.commit_signed("web r2", &alice);
    told(4).await.expect("r2's start and rollback are delivered");
    upstream.write(
        "services/web.yaml",
        "apiVersion: plumb/v1\nkind: Service\nname: web\nreplicas: many\n",
    );
    let r3 = upstream.commit_signed("web r3, broken", &alice);
    let taken = told(5).await.expect("r3's refusal is delivered");

    assert_eq!(
        events(&taken),
        ["started", "succeeded", "started", "rolled_back", "refused"]
    );
    // Every try carried the same id and bytes; each id was taken once.
    let received = receiver.received();
    assert_eq!(received[0].status, 500);
    assert_eq!(received[1].status, 429);
    for retry in &received[..3] {
        assert_eq!(retry.header("x-plumb-delivery"), received[2].header("x-plumb-delivery"));
        assert_eq!(retry.body, received[2].body);
    }
    let mut ids: Vec<&str> = taken.iter().map(|r| r.header("x-plumb-delivery")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    for request in &taken {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/plumb");
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(request.header("x-plumb-signature-256"), signature(&request.body));
        let body = request.json();
        check_against_schema(&body);
        assert_eq!(body["event"], request.header("x-plumb-event"));
        assert_eq!(body["delivery"], request.header("x-plumb-delivery"));
        assert_eq!(body["environment"], "dev");
        assert_eq!(body["repository"]["name"], "config");
        assert_eq!(body["signer"], "alice");
        assert_eq!(body["url"], "https://plumb.example.com/environments/dev");
    }
    let succeeded = taken[1].json();
    assert_eq!(succeeded["commit"]["id"], r1);
    assert_eq!(succeeded["commit"]["subject"], "web r1");
    assert_eq!(succeeded["summary"], format!("dev deployed {}", &r1[..7]));
    let steps = succeeded["attempt"]["steps"].as_array().unwrap();
    assert!(
        !steps.is_empty() && steps.iter().all(|s| s["durationSeconds"].is_number()),
        "{succeeded:#}"
    );
    let rolled_back = taken[3].json();
    assert_eq!(rolled_back["commit"]["id"], r2);
    assert_eq!(rolled_back["attempt"]["outcome"], "rolled_back");
    assert!(
        rolled_back["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{rolled_back:#}"
    );
    let refused = taken[4].json();
    assert_eq!(refused["commit"]["id"], r3);
    assert!(
        refused["reason"].as_str().unwrap().contains("services/web.yaml"),
        "{refused:#}"
    );

    // The metrics and the status say how it went.
    let metrics = get(api, "/metrics").await.body;
    assert!(
        metrics.contains("plumb_notifications_total{channel=\"ops\",result=\"retried\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("plumb_notifications_total{channel=\"ops\",result=\"delivered\"} 5"),
        "{metrics}"
    );
    let status = get(api, "/api/v1/status").await.body;
    crate::openapi::conforms("/api/v1/status", "get", 200, &status);
    let status: Value = serde_json::from_str(&status).unwrap();
    let ops = &status["notifications"][0];
    assert_eq!(ops["channel"], "ops");
    assert_eq!(ops["kind"], "webhook");
    assert_eq!(ops["queued"], 0);
    assert!(ops["lastDelivered"].is_string(), "{status:#}");

    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_notifications_survive_sigkill_and_go_once() {
    let receiver = Receiver::start(always(503)).await;
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    Web::new(port, "r1", "recreate: {}").write(&upstream);
    upstream.commit_signed("web r1", &alice);

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::write(dir.path().join("hook-secret"), SECRET).unwrap();
    let api = SocketAddr::from(([127, 0, 0, 1], crate::reconcile::free_port()));
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: plumb/v1\nkind: Agent\nstate: \"{d}/state\"\nlisten: \"{api}\"\n\
             repository:\n  url: {:?}\n  branch: {}\n  trustRoot: {{commit: \"{root}\"}}\n  poll: {{interval: 100ms}}\n\
             externalUrl: https://plumb.example.com\n\
             notifications:\n  - name: ops\n    webhook: {{url: \"{}\", secretFile: \"{d}/hook-secret\"}}\n",
            upstream.path().display().to_string(),
            upstream.branch(),
            receiver.url("/plumb"),
        ),
    )
    .unwrap();
    let log = dir.path().join("agent.log");
    let agent = Agent::from_config(&config, &log);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let live = eventually(Duration::from_secs(30), || release(addr)).await;
    assert_eq!(
        live.as_deref(),
        Some("r1"),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    // Applied: both messages are queued; the first was tried (and refused for now).
    let tried = eventually(Duration::from_secs(30), || async {
        let status: Value = serde_json::from_str(&try_get(api, "/api/v1/status").await?.body).ok()?;
        let ops = &status["notifications"][0];
        (ops["queued"] == 2 && ops["failing"].is_string()).then_some(())
    })
    .await;
    assert!(tried.is_some(), "{}", std::fs::read_to_string(&log).unwrap());
    let before: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("x-plumb-delivery").to_owned())
        .collect();
    agent.kill();

    receiver.answer_with(always(204));
    let _agent = Agent::from_config(&config, &log);
    let delivered = eventually(Duration::from_secs(30), || async {
        let delivered = taken(&receiver);
        (delivered.len() >= 2).then_some(delivered)
    })
    .await
    .unwrap_or_else(|| panic!("{}", std::fs::read_to_string(&log).unwrap()));
    assert_eq!(events(&delivered[..2]), ["started", "succeeded"]);
    assert_eq!(delivered[0].header("x-plumb-delivery"), before[0]);
    assert!(
        before.iter().all(|id| id == &before[0]),
        "only the first was tried: {before:?}"
    );

    // The restarted agent applies the commit again (the killed agent's replicas went with it:
    // that attempt is told too, as its own messages). Once it is recorded and the outbox is
    // empty, every message went exactly once, by delivery id.
    let ledger = dir.path().join("state/ledger.sqlite");
    let settled = eventually(Duration::from_secs(30), || async {
        let ledger = Ledger::open_read_only(&ledger).ok()?;
        let history = ledger.history("dev", 10).ok()?;
        let outbox = ledger.outbox_of("ops").ok()?;
        let done = history.len() >= 2 && history.iter().all(|a| a.outcome.is_some());
        (done && outbox.iter().all(|(_, state)| state == "delivered")).then_some(outbox)
    })
    .await
    .unwrap_or_else(|| panic!("{}", std::fs::read_to_string(&log).unwrap()));
    let mut queued: Vec<&str> = settled.iter().map(|(m, _)| m.delivery.as_str()).collect();
    let delivered = taken(&receiver);
    let mut acknowledged: Vec<&str> = delivered.iter().map(|r| r.header("x-plumb-delivery")).collect();
    queued.sort();
    acknowledged.sort();
    assert_eq!(queued, acknowledged);
    acknowledged.dedup();
    assert_eq!(acknowledged.len(), delivered.len(), "a delivery id was taken twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_waiting_for_a_manual_sync_is_told_once_and_then_its_sync() {
    let receiver = Receiver::start(always(200)).await;
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    Web::new(port, "r1", "recreate: {}").write(&upstream);
    upstream.write(
        "environments/dev.yaml",
        "apiVersion: plumb/v1\nkind: Environment\nname: dev\ntarget:\n  local: {}\nsync:\n  automatic: false\n",
    );
    let r1 = upstream.commit_signed("web r1, synced by hand", &alice);

    let state = tempfile::tempdir().unwrap();
    let secret = state.path().join("hook-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let mut settings = Settings {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        api_token: Some(plumb::secret::Secret::new(crate::agent::TOKEN)),
        notifications: Notifications {
            channels: vec![channel(json!({
                "name": "ops",
                "webhook": { "url": receiver.url("/plumb"), "secretFile": secret },
                "events": ["waiting", "started", "succeeded"],
            }))],
            external_url: None,
        },
        ..agent_settings(&upstream, &root, state.path())
    };
    // Checked again and again while it waits: told once all the same.
    settings.repositories[0].poll.interval = Some(Duration::from_millis(100));
    settings.heal_every = Duration::from_millis(100);
    let agent = Running::start(settings).await;
    let api = agent.handle.api.unwrap();
    let waiting = eventually(Duration::from_secs(30), || async {
        let taken = taken(&receiver);
        (!taken.is_empty()).then_some(taken)
    })
    .await
    .expect("the wait is told");
    let body = waiting[0].json();
    check_against_schema(&body);
    assert_eq!(body["event"], "waiting");
    assert_eq!(body["commit"]["id"], r1);
    assert_eq!(body["waitingFor"], json!(["sync"]));
    assert_eq!(body["summary"], format!("dev holds {} for sync", &r1[..7]));

    let bearer = [("authorization", format!("Bearer {}", crate::agent::TOKEN))];
    let synced = crate::agent::api_post(api, "/api/v1/environments/dev/sync", &bearer, b"").await;
    assert_eq!(synced.status, 200, "{}", synced.body);
    let taken = eventually(Duration::from_secs(30), || async {
        let taken = taken(&receiver);
        (taken.len() >= 3).then_some(taken)
    })
    .await
    .expect("the sync is told");
    assert_eq!(events(&taken), ["waiting", "started", "succeeded"]);
    let started = taken[1].json();
    assert_eq!(started["attempt"]["trigger"], "sync");
    assert_eq!(started["attempt"]["by"], "api-token");

    agent.stop().await;
}

/// A ledger whose entries queue messages for `channel`, and a finished attempt at [`COMMIT`]
/// in `dev` that ended as `outcome` (with a failing step when it failed).
async fn recorded(dir: &Path, channel: &Arc<Channel>, outcome: Outcome) -> Recorder {
    let origins = Origins {
        external_url: Some("https://plumb.example.com".to_owned()),
        repositories: vec![Origin {
            name: "config".to_owned(),
            url: "https://github.com/twikit/config.git".to_owned(),
            cache: dir.join("no-cache"),
            environments: None,
        }],
    };
    let mut ledger = Ledger::open(&dir.join("ledger.sqlite")).unwrap();
    ledger.notify_with(Arc::new(Routes::new(vec![channel.clone()], origins)));
    let id = ledger
        .begin(&Attempt {
            environment: "dev".to_owned(),
            commit: COMMIT.to_owned(),
            signer: Some("alice".to_owned()),
            strategy: "canary".to_owned(),
            plan: json!(["web: r1 → r2"]),
            trigger: Trigger::Commit,
            by: None,
        })
        .unwrap();
    ledger.step_started(id, "canary 10%").unwrap();
    let error = match &outcome {
        Outcome::RolledBack(e) | Outcome::Failed(e) => Some(e.clone()),
        _ => None,
    };
    ledger.step_finished(id, "canary 10%", error.as_deref(), None).unwrap();
    ledger.finish(id, &outcome).unwrap();
    Recorder::new(ledger)
}

/// Sends every message queued for `channel`, in order; how each went.
async fn send_all(channel: &Channel, ledger: &Recorder) -> Vec<Sent> {
    let name = channel.name.clone();
    let queued = ledger.call(move |l| l.outbox_of(&name)).await.unwrap();
    let mut sent = Vec::new();
    for (message, _) in queued {
        sent.push(channel.send(&message, ledger).await);
    }
    sent
}

/// A real SMTP server (aiosmtpd) on loopback: STARTTLS required, then a login; each mail is
/// written to `dir` with how it arrived.
struct Smtp {
    child: Child,
    port: u16,
}

const SMTP_SERVER: &str = r#"
import os, signal, ssl, sys
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

out, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

class Keep:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(out) if f.endswith(".eml")])
        with open(os.path.join(out, "%03d.meta" % n), "w") as f:
            f.write("tls=%s login=%s from=%s to=%s" % (session.ssl is not None, session.authenticated,
                    envelope.mail_from, ",".join(envelope.rcpt_tos)))
        with open(os.path.join(out, "%03d.eml" % n), "wb") as f:
            f.write(envelope.original_content)
        return "250 2.0.0 Kept"

def login(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == b"plumb" and data.password == b"s3cret-pass"
    # Not handled here: the server answers 235 or 535 itself.
    return AuthResult(success=ok, handled=False)

context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
controller = Controller(Keep(), hostname="127.0.0.1", port=port, tls_context=context,
                        require_starttls=True, authenticator=login, auth_require_tls=True)
controller.start()
print("ready", flush=True)
signal.sigwait([signal.SIGTERM, signal.SIGINT])
controller.stop()
"#;

impl Smtp {
    fn start(dir: &Path, certs: &Path) -> Smtp {
        let port = crate::reconcile::free_port();
        std::fs::write(dir.join("smtp.py"), SMTP_SERVER).unwrap();
        let mut child = Command::new("/usr/bin/python3")
            .arg(dir.join("smtp.py"))
            .arg(dir)
            .arg(port.to_string())
            .arg(certs.join("server.pem"))
            .arg(certs.join("server-key.pem"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with aiosmtpd (package python3-aiosmtpd)");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP server did not start");
        Smtp { child, port }
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        // SAFETY: SIGTERM to the child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_over_starttls_with_a_login_to_a_real_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    crate::tls::certificates(&certs);
    let mails = dir.path().join("mails");
    std::fs::create_dir(&mails).unwrap();
    let smtp = Smtp::start(&mails, &certs);
    std::fs::write(dir.path().join("user"), "plumb\n").unwrap();
    std::fs::write(dir.path().join("password"), "s3cret-pass\n").unwrap();
    std::fs::write(dir.path().join("wrong"), "not-the-password\n").unwrap();
    let email = |password: &str| {
        channel(json!({
            "name": "oncall",
            "email": {
                "host": "127.0.0.1", "port": smtp.port, "tls": "starttls",
                "usernameFile": dir.path().join("user"), "passwordFile": dir.path().join(password),
                "from": "plumb <plumb@example.com>", "to": ["oncall@example.com", "ops@example.com"],
                "caFile": certs.join("ca.pem"),
            },
            "events": ["rolled_back"],
        }))
    };
    let good = email("password");
    let ledger = recorded(
        dir.path(),
        &good,
        Outcome::RolledBack("canary 10%: 4 of 20 requests failed".to_owned()),
    )
    .await;
    let sent = send_all(&good, &ledger).await;
    assert!(
        matches!(sent.as_slice(), [Sent::Delivered(said)] if said.contains("250")),
        "{sent:?}"
    );

    let meta = std::fs::read_to_string(mails.join("000.meta")).unwrap();
    assert_eq!(
        meta,
        "tls=True login=True from=plumb@example.com to=oncall@example.com,ops@example.com"
    );
    let mail = std::fs::read_to_string(mails.join("000.eml")).unwrap();
    assert!(mail.contains("Subject: [plumb] dev rolled back 3f1c2a9"), "{mail}");
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(mail.contains("text/plain") && mail.contains("text/html"), "{mail}");
    let (message, _) = ledger.call(|l| l.outbox_of("oncall")).await.unwrap().remove(0);
    assert!(
        mail.contains(&format!("Message-ID: <{}@plumb>", message.delivery)),
        "{mail}"
    );
    assert!(mail.contains("Failing step: canary 10%"), "{mail}");

    // A wrong password is refused for good (535), and says so.
    let wrong = email("wrong");
    let other = tempfile::tempdir().unwrap();
    let ledger = recorded(other.path(), &wrong, Outcome::RolledBack("no".to_owned())).await;
    let sent = send_all(&wrong, &ledger).await;
    assert!(
        matches!(sent.as_slice(), [Sent::Rejected(said)] if said.contains("535")),
        "{sent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_gets_block_kit_sections_with_the_failing_step() {
    let receiver = Receiver::start(Arc::new(|_, _| (200, Vec::new(), "ok".to_owned()))).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slack-url"), receiver.url("/services/T0/B0/secret")).unwrap();
    let slack = channel(json!({ "name": "team-chat", "slack": { "webhookUrlFile": dir.path().join("slack-url") } }));
    let ledger = recorded(
        dir.path(),
        &slack,
        Outcome::RolledBack("canary 10%: <5xx> & more".to_owned()),
    )
    .await;
    let sent = send_all(&slack, &ledger).await;
    assert!(sent.iter().all(|s| matches!(s, Sent::Delivered(_))), "{sent:?}");
    let received = receiver.received();
    assert_eq!(received.len(), 2, "started and rolled back");
    let message = received[1].json();
    assert_eq!(message["text"], "[plumb] dev rolled back 3f1c2a9");
    let blocks = message["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], "dev rolled back 3f1c2a9");
    let fields: Vec<&str> = blocks[1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"*Environment*\ndev"), "{fields:?}");
    assert!(fields.contains(&"*Outcome*\nrolled back"), "{fields:?}");
    assert!(fields.contains(&"*Signer*\nalice"), "{fields:?}");
    assert!(
        fields.contains(&format!("*Commit*\n<https://github.com/twikit/config/commit/{COMMIT}|3f1c2a9>").as_str()),
        "{fields:?}"
    );
    assert!(fields.iter().any(|f| f.starts_with("*Duration*\n")), "{fields:?}");
    assert_eq!(
        blocks[2]["text"]["text"],
        "*Failing step* `canary 10%`\ncanary 10%: &lt;5xx&gt; &amp; more"
    );
    assert_eq!(blocks.last().unwrap()["type"], "context");
}

/// GitHub's published OpenAPI description (the npm package `@octokit/openapi`).
pub(crate) fn github_openapi() -> Value {
    let file = crate::harness::npm_file("@octokit/openapi", "23.0.2", "generated/api.github.com.json");
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

/// Checks `request` (made below `prefix`) against GitHub's description: the path and method
/// name an operation, each query parameter is one of its parameters, and the body is valid
/// against its request schema.
pub(crate) fn check_against_github(openapi: &Value, prefix: &str, request: &Received) {
    let (path, query) = request.path.split_once('?').unwrap_or((&request.path, ""));
    let path = path.strip_prefix(prefix).unwrap();
    let method = request.method.to_lowercase();
    let (template, operation) = openapi["paths"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(template, item)| {
            let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
            item.get(&method).is_some()
                && t.len() == p.len()
                && t.iter().zip(&p).all(|(t, p)| t.starts_with('{') || t == p)
        })
        .unwrap_or_else(|| panic!("GitHub has no `{method} {path}`"));
    let operation = &operation[&method];
    let resolve = |value: &Value| -> Value {
        match value["$ref"].as_str() {
            Some(reference) => openapi.pointer(reference.trim_start_matches('#')).cloned().unwrap(),
            None => value.clone(),
        }
    };
    let parameters: Vec<String> = operation["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| resolve(p)["name"].as_str().unwrap().to_owned())
        .collect();
    for (name, _) in form_urlencoded::parse(query.as_bytes()) {
        assert!(
            parameters.contains(&name.to_string()),
            "`{name}` is no parameter of {template}"
        );
    }
    if request.body.is_empty() {
        return;
    }
    let pointer = format!(
        "#/paths/{}/{method}/requestBody/content/application~1json/schema",
        template.replace('~', "~0").replace('/', "~1")
    );
    // Braces are not allowed in a URI fragment: percent-encoded.
    let pointer = pointer.replace('{', "%7B").replace('}', "%7D");
    let mut schema = openapi.clone();
    schema["$ref"] = json!(pointer);
    let validator = jsonschema::validator_for(&schema).unwrap();
    let body = request.json();
    let problems: Vec<String> = validator.iter_errors(&body).map(|e| e.to_string()).collect();
    assert!(problems.is_empty(), "{method} {template}: {problems:?} in {body:#}");
}

/// A stand-in for GitHub's API below `/api/v3`, answering as GitHub does; `listed` is what
/// listing deployments returns.
fn github_answers(listed: Value) -> Script {
    Arc::new(move |request, _| {
        let path = request.path.split('?').next().unwrap();
        match (request.method.as_str(), path) {
            ("GET", "/api/v3/repos/twikit/config/deployments") => (200, Vec::new(), listed.to_string()),
            ("POST", "/api/v3/repos/twikit/config/deployments") => (
                201,
                Vec::new(),
                json!({ "id": 42, "payload": request.json()["payload"] }).to_string(),
            ),
            ("POST", p) if p.ends_with("/statuses") => (201, Vec::new(), json!({ "id": 7 }).to_string()),
            _ => (404, Vec::new(), json!({ "message": "Not Found" }).to_string()),
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_deployment_statuses_follow_githubs_openapi_description() {
    let openapi = tokio::task::spawn_blocking(github_openapi).await.unwrap();
    let receiver = Receiver::start(github_answers(json!([]))).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "ghp_forge-token-of-the-test").unwrap();
    let config = json!({
        "name": "forge",
        "github": { "tokenFile": dir.path().join("token"), "repository": "twikit/config", "apiUrl": receiver.url("/api/v3") },
    });
    let github = channel(config.clone());
    let ledger = recorded(dir.path(), &github, Outcome::Succeeded).await;
    let sent = send_all(&github, &ledger).await;
    assert!(sent.iter().all(|s| matches!(s, Sent::Delivered(_))), "{sent:?}");

    let received = receiver.received();
    let asked: Vec<String> = received
        .iter()
        .map(|r| format!("{} {}", r.method, r.path.split('?').next().unwrap()))
        .collect();
    assert_eq!(
        asked,
        [
            "GET /api/v3/repos/twikit/config/deployments",
            "POST /api/v3/repos/twikit/config/deployments",
            "POST /api/v3/repos/twikit/config/deployments/42/statuses",
            "POST /api/v3/repos/twikit/config/deployments/42/statuses",
        ]
    );
    for request in &received {
        check_against_github(&openapi, "/api/v3", request);
        assert_eq!(request.header("authorization"), "Bearer ghp_forge-token-of-the-test");
        assert_eq!(request.header("accept"), "application/vnd.github+json");
    }
    let deployment = received[1].json();
    assert_eq!(deployment["ref"], COMMIT);
    assert_eq!(deployment["environment"], "dev");
    let states: Vec<Value> = received[2..].iter().map(|r| r.json()["state"].clone()).collect();
    assert_eq!(states, ["in_progress", "success"]);
    assert_eq!(
        received[3].json()["log_url"],
        "https://plumb.example.com/environments/dev"
    );

    // An agent that made the deployment but died before remembering it finds it again.
    let listed = json!([{ "id": 42, "payload": { "plumb": { "environment": "dev" } } }]);
    let receiver = Receiver::start(github_answers(listed)).await;
    let github = channel(json!({
        "name": "forge",
        "github": { "tokenFile": dir.path().join("token"), "repository": "twikit/config", "apiUrl": receiver.url("/api/v3") },
    }));
    let other = tempfile::tempdir().unwrap();
    let ledger = recorded(other.path(), &github, Outcome::Succeeded).await;
    send_all(&github, &ledger).await;
    let posted: Vec<String> = receiver
        .received()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        posted,
        [
            "/api/v3/repos/twikit/config/deployments/42/statuses",
            "/api/v3/repos/twikit/config/deployments/42/statuses",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_shows_the_environment_as_a_commit_status() {
    // The second status is already set (a retry after a lost answer): GitLab says so with 400.
    let receiver = Receiver::start(Arc::new(|_, before| match before {
        0 => (201, Vec::new(), "{}".to_owned()),
        _ => (
            400,
            Vec::new(),
            json!({ "message": "Cannot transition status via :success from :success" }).to_string(),
        ),
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "glpat-forge-token-of-the-test").unwrap();
    let gitlab = channel(json!({
        "name": "forge",
        "gitlab": { "tokenFile": dir.path().join("token"), "project": "platform/config", "apiUrl": receiver.url("/api/v4") },
    }));
    let ledger = recorded(dir.path(), &gitlab, Outcome::Succeeded).await;
    let sent = send_all(&gitlab, &ledger).await;
    assert!(sent.iter().all(|s| matches!(s, Sent::Delivered(_))), "{sent:?}");
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    for request in &received {
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.path,
            format!("/api/v4/projects/platform%2Fconfig/statuses/{COMMIT}")
        );
        assert_eq!(request.header("private-token"), "glpat-forge-token-of-the-test");
        assert_eq!(request.json()["name"], "plumb/dev");
    }
    let states: Vec<Value> = received.iter().map(|r| r.json()["state"].clone()).collect();
    assert_eq!(states, ["running", "success"]);
}

fn write_agent_config(dir: &Path, notifications: &str) -> PathBuf {
    let file = dir.join("agent.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: plumb/v1\nkind: Agent\nrepository:\n  url: https://git.example.com/config.git\n  trustRoot: {{commit: \"0123456789012345678901234567890123456789\"}}\n\
             externalUrl: https://plumb.example.com\nnotifications:\n{notifications}"
        ),
    )
    .unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plumb_notify_test_sends_a_signed_test_message_and_prints_the_answer() {
    let receiver = Receiver::start(Arc::new(|request, _| match request.path.as_str() {
        "/gone" => (410, Vec::new(), "no such hook".to_owned()),
        _ => (200, Vec::new(), "thanks".to_owned()),
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hook-secret"), SECRET).unwrap();
    let d = dir.path().display();
    let config = write_agent_config(
        dir.path(),
        &format!(
            "  - name: ops\n    webhook: {{url: \"{}\", secretFile: \"{d}/hook-secret\"}}\n\
             \x20 - name: old\n    webhook: {{url: \"{}\", secretFile: \"{d}/hook-secret\"}}\n",
            receiver.url("/hook"),
            receiver.url("/gone"),
        ),
    );
    let config = config.to_str().unwrap().to_owned();
    let run = tokio::task::spawn_blocking(move || {
        (
            plumb(&[
                "notify",
                "test",
                "--config",
                &config,
                "--channel",
                "ops",
                "--env",
                "production",
            ]),
            plumb(&["notify", "test", "--config", &config, "--channel", "old"]),
        )
    });
    let (took, refused) = run.await.unwrap();
    assert_eq!(took.code, 0, "{}{}", took.stdout, took.stderr);
    assert!(
        took.stdout.contains("webhook channel `ops` took the test message") && took.stdout.contains("HTTP 200: thanks"),
        "{}",
        took.stdout
    );
    assert_eq!(refused.code, 1);
    assert!(
        refused.stdout.contains("refused it: HTTP 410: no such hook"),
        "{}",
        refused.stdout
    );
    let test = &receiver.received()[0];
    assert_eq!(test.header("x-plumb-event"), "test");
    assert_eq!(test.header("x-plumb-signature-256"), signature(&test.body));
    let body = test.json();
    check_against_schema(&body);
    assert_eq!(body["summary"], "test message for production");
}

#[test]
fn channels_a_user_gets_wrong_are_refused_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_agent_config(
        dir.path(),
        "  - name: forge\n    github: {tokenFile: /t, repository: twikit/config}\n    events: [succeeded, drift]\n\
         \x20 - name: both\n    webhook: {url: \"https://hooks.example.com/x\", secretFile: /s}\n    slack: {webhookUrlFile: /u}\n\
         \x20 - name: mail\n    email: {host: smtp.example.com, from: \"not an address\", to: [oncall@example.com]}\n\
         \x20 - name: leaky\n    webhook: {url: \"https://user:pw@hooks.example.com/x\", secretFile: /s}\n",
    );
    let run = plumb(&["agent", "--config", config.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    for expected in [
        "agent.yaml:10:13: $.notifications[0].events: a forge shows a deployment's state; `drift` is not one",
        "agent.yaml:11:5: $.notifications[1]: channel `both` needs exactly one of webhook, slack, email, github, gitlab (found webhook, slack)",
        "$.notifications[2].email.from: `not an address` is not a mail address",
        "$.notifications[3].webhook.url: a URL must not hold credentials",
    ] {
        assert!(run.stderr.contains(expected), "{expected}\n{}", run.stderr);
    }
}
