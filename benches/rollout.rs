//! Blue-green on the local target with real processes (`plumb example-app`) and the real router:
//! the time of a whole rollout (start the new slot, health, switch, retire the old), the
//! switch-back time (from the flip of the weights to the first answer from the old slot), and a
//! configuration-only change (file rewritten, replicas signalled) until every replica serves the
//! new value. Prints p50 and p95.
//!
//! Run: `cargo bench --bench rollout` (`PLUMB_BENCH_ROUNDS=20`).

#[path = "../tests/it/http.rs"]
#[allow(dead_code)]
mod http;

#[path = "support/timing.rs"]
#[allow(dead_code)]
mod timing;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use plumb::ledger::{Attempt, Ledger};
use plumb::rollout::Rollout;
use plumb::spec::model::Service;
use plumb::target::local::LocalRuntime;
use plumb::target::local::process::Backoff;
use timing::{ms, percentile, setting};

fn main() {
    let rounds = setting("PLUMB_BENCH_ROUNDS", 20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(rounds));
}

async fn run(rounds: usize) {
    let state = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stable: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let service = service(state.path(), port);
    let local = LocalRuntime::new("bench", "127.0.0.1", 0, state.path(), Backoff::default()).unwrap();
    let mut ledger = Ledger::open(&state.path().join("ledger.sqlite")).unwrap();
    // The rollout's own connection, as in the agent.
    let recorder = plumb::ledger::Recorder::new(Ledger::open(&state.path().join("ledger.sqlite")).unwrap());

    let mut live = None;
    let (mut rollouts, mut switch_backs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let version = format!("v{round}");
        let attempt = ledger
            .begin(&Attempt {
                environment: "bench".to_owned(),
                commit: version.clone(),
                signer: None,
                strategy: "blueGreen".to_owned(),
                plan: serde_json::json!({}),
                trigger: Default::default(),
                by: None,
            })
            .unwrap();
        let started = Instant::now();
        let slot = Rollout::new(&local, &recorder, attempt)
            .run(&service, &version, live)
            .await
            .unwrap();
        rollouts.push(started.elapsed());
        assert_eq!(
            http::get(stable, "/").await.body,
            format!("api {version} {}\n", slot.name())
        );
        live = Some(slot);

        // Switch-back drill: a second slot with the same version, flip to it, flip back.
        let other = slot.other();
        local.deploy(&service, other, "previous").await.unwrap();
        plumb::health::wait_healthy(&local.checks("api", other).await.unwrap(), Duration::from_secs(20))
            .await
            .unwrap();
        local.route("api", &[(other, 100), (slot, 0)]).await;
        assert!(http::get(stable, "/").await.body.contains("previous"));
        let flipped = Instant::now();
        local.route("api", &[(slot, 100), (other, 0)]).await;
        let answer = http::get(stable, "/").await.body;
        switch_backs.push(flipped.elapsed());
        assert_eq!(answer, format!("api {version} {}\n", slot.name()));
        local.retire("api", other).await;
    }
    let reloads = reload_rounds(&local, &state.path().join("repo"), port, stable, rounds).await;
    local.shutdown().await;
    let mut reloads = reloads;
    println!(
        "configuration change (rewrite + SIGHUP → both replicas serve it): p50 {:.2} ms, p95 {:.2} ms",
        ms(percentile(&mut reloads, 0.5)),
        ms(percentile(&mut reloads, 0.95))
    );
    println!(
        "blue-green rollout (start, health, switch, retire): p50 {:.1} ms, p95 {:.1} ms over {rounds}",
        ms(percentile(&mut rollouts, 0.5)),
        ms(percentile(&mut rollouts, 0.95))
    );
    println!(
        "switch-back (weights flipped → first answer from the old slot): p50 {:.3} ms, p95 {:.3} ms",
        ms(percentile(&mut switch_backs, 0.5)),
        ms(percentile(&mut switch_backs, 0.95))
    );
}

/// Configuration-only changes on a running slot: the time until both replicas answer `/config`
/// with the new value.
async fn reload_rounds(
    local: &LocalRuntime,
    repo: &std::path::Path,
    port: u16,
    stable: SocketAddr,
    rounds: usize,
) -> Vec<Duration> {
    let with = |n: usize| {
        service_with_config(
            repo,
            port,
            &format!("config:\n  file: app.json\n  reload: signal\n  values:\n    round: {n}\n"),
        )
    };
    local
        .deploy(&with(0), plumb::target::Slot::Blue, "config")
        .await
        .unwrap();
    plumb::health::wait_healthy(
        &local.checks("api", plumb::target::Slot::Blue).await.unwrap(),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    local.route("api", &[(plumb::target::Slot::Blue, 100)]).await;
    let mut times = Vec::new();
    for n in 1..=rounds {
        let service = with(n);
        let expected = format!("\"round\": {n}");
        let started = Instant::now();
        assert!(local.reload(&service, plumb::target::Slot::Blue).await.unwrap());
        loop {
            let (a, b) = (
                http::get(stable, "/config").await.body,
                http::get(stable, "/config").await.body,
            );
            if a.contains(&expected) && b.contains(&expected) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the change never arrived");
        }
        times.push(started.elapsed());
    }
    local.retire("api", plumb::target::Slot::Blue).await;
    times
}

fn service(dir: &std::path::Path, port: u16) -> Service {
    service_with_config(&dir.join("repo"), port, "")
}

fn service_with_config(repo: &std::path::Path, port: u16, extra: &str) -> Service {
    let write = |path: &str, text: String| {
        let full = repo.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    };
    write(
        "plumb.yaml",
        "apiVersion: plumb/v1\nkind: Repository\nenvironments: [bench]\n".to_owned(),
    );
    write(
        "environments/bench.yaml",
        "apiVersion: plumb/v1\nkind: Environment\nname: bench\ntarget:\n  local: {}\n".to_owned(),
    );
    write(
        "services/api.yaml",
        format!(
            "apiVersion: plumb/v1\nkind: Service\nname: api\ncommand: [{:?}, example-app]\nreplicas: 2\n\
             ports:\n  - {{name: http, port: {port}}}\n\
             healthChecks:\n  - name: ready\n    http: {{path: /health, port: http}}\n    interval: 20ms\n    failureThreshold: 500\n\
             strategy:\n  blueGreen: {{keepOldVersion: 0s}}\n{extra}",
            env!("CARGO_BIN_EXE_plumb")
        ),
    );
    let rendered = plumb::spec::render(&plumb::source::WorkTree::new(repo), Some("bench")).unwrap();
    assert!(rendered.is_valid(), "{:?}", rendered.diagnostics);
    plumb::spec::model::Service::clone(rendered.environments["bench"].services.values().next().unwrap())
}
