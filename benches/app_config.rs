//! A configuration change, from the push to the application: a signed commit changes one value
//! of a service's configuration, the forge's webhook (GitHub's push event, signed) reaches the
//! agent, and the clock stops when a TypeScript client (`clients/typescript`, in its own Node.js
//! process, subscribed with the service's read token) is told the change — so each figure
//! includes the webhook, the fetch, the authentication, the rendering, the apply (the file
//! rewritten and the replicas signalled), the ledger and the event stream.
//!
//! Prints p50 and p95 over the changes. Run: `cargo bench --bench app_config`
//! (`PLUMB_BENCH_CHANGES=50`); the client is built first (`npm ci && npm run build` in
//! `clients/typescript`).

#[path = "../tests/it/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../tests/it/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "../tests/it/keys.rs"]
#[allow(dead_code)]
mod keys;

#[path = "support/push.rs"]
mod push;
#[path = "support/timing.rs"]
#[allow(dead_code)]
mod timing;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::{TestRepo, Web, agent_settings, project, trusted};
use keys::TestKey;
use plumb::secret::Secret;
use plumb::trigger::webhook::Provider;
use timing::{ms, percentile, setting};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

const HOOK_SECRET: &str = "a-long-enough-webhook-secret";

fn main() {
    let changes = setting("PLUMB_BENCH_CHANGES", 50);
    let client = project().join("clients/typescript");
    for args in [&["ci", "--no-audit", "--no-fund"][..], &["run", "--silent", "build"]] {
        let status = std::process::Command::new("npm")
            .args(args)
            .current_dir(&client)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "npm {args:?} in {}",
            client.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(changes));
}

/// `web`, whose configuration holds `round` and reloads on a signal.
fn config(repo: &TestRepo, port: u16, round: usize) {
    let values = format!("config:\n  file: app.json\n  reload: signal\n  values: {{feature: {{round: {round}}}}}\n");
    Web {
        checks: ("20ms", 3),
        extra: &values,
        ..Web::new(port, "r1", "blueGreen: {keepOldVersion: 0s}")
    }
    .write(repo);
}

/// Milliseconds since the epoch, as Node's `performance` tells them.
fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0
}

async fn run(changes: usize) {
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config(&upstream, port, 0);
    upstream.commit_signed("r1", &alice);
    let state = tempfile::tempdir().unwrap();
    let mut settings = plumb::agent::Settings {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..agent_settings(&upstream, &root, state.path())
    };
    settings.repositories[0].webhook = Some((Provider::GitHub, Secret::new(HOOK_SECRET)));
    let reference = settings.repositories[0].reference.name().to_owned();
    let cancel = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let agent = tokio::spawn(plumb::agent::run(settings, cancel.clone(), Some(tx)));
    let api = rx.await.unwrap().api.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http::try_get(SocketAddr::from(([127, 0, 0, 1], port)), "/")
        .await
        .is_none()
    {
        assert!(Instant::now() < deadline, "web never served");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The client, with what a replica of `web` is given.
    let token = plumb::appconfig::token::Tokens::open(state.path())
        .unwrap()
        .issue("dev", "web");
    let mut node = tokio::process::Command::new("node")
        .arg("scenarios/latency.mjs")
        .current_dir(project().join("clients/typescript"))
        .env(
            "PLUMB_CONFIG_URL",
            format!("http://{api}/api/v1/environments/dev/services/web/config"),
        )
        .env("PLUMB_CONFIG_TOKEN", token.expose())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs the client");
    let mut told = BufReader::new(node.stdout.take().unwrap()).lines();
    assert_eq!(told.next_line().await.unwrap().as_deref(), Some("ready"));

    let mut times = Vec::new();
    for round in 1..=changes {
        config(&upstream, port, round);
        let commit = upstream.commit_signed("a configuration change", &alice);
        let pushed = now_ms();
        push::push(api, HOOK_SECRET, &reference, &commit).await;
        let line = tokio::time::timeout(Duration::from_secs(60), told.next_line())
            .await
            .expect("the client is told within a minute")
            .unwrap()
            .expect("the client runs");
        let change: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(change["path"], "feature.round", "{line}");
        assert_eq!(change["value"], round, "{line}");
        times.push(Duration::from_secs_f64(
            (change["at"].as_f64().unwrap() - pushed).max(0.0) / 1000.0,
        ));
    }
    drop(node.stdin.take());
    let _ = node.wait().await;
    cancel.cancel();
    agent.await.unwrap().unwrap();

    println!("configuration change, webhook push → TypeScript client told ({changes} changes):");
    println!(
        "  p50 {:.1} ms   p95 {:.1} ms",
        ms(percentile(&mut times, 0.5)),
        ms(percentile(&mut times, 0.95))
    );
}
