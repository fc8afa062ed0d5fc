//! The kubernetes target on a real 1.20 control plane (the tests' own, see
//! `tests/it/control_plane.rs`, its node idle), with 1,000 services of 0 replicas:
//! - the first sync: every service created by plumb (services that do not depend on each other
//!   roll out at once, up to the target's limit), beside `kubectl apply --server-side` creating
//!   the same Deployments and Services;
//! - observe + plan with nothing to change (read from plumb's watches): time, the agent's
//!   resident memory, API requests as the API server counts them;
//! - a one-service change applied by plumb (observe, plan, server-side apply of the one
//!   Deployment, wait until available), beside `kubectl apply --server-side` of the same 1,000
//!   Deployments and Services with the one change (kubectl sends every object).
//!
//! Run: `cargo bench --bench kubernetes` (`PLUMB_BENCH_ROUNDS=10`, `PLUMB_BENCH_SERVICES=1000`).

#[path = "../tests/it/control_plane.rs"]
#[allow(dead_code)]
mod control_plane;

#[path = "../tests/it/docker.rs"]
#[allow(dead_code)]
mod docker;

#[path = "../tests/it/tls.rs"]
#[allow(dead_code)]
mod tls;

#[path = "support/timing.rs"]
#[allow(dead_code)]
mod timing;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use plumb::ledger::{Ledger, Outcome};
use plumb::reconcile::{self, Intent};
use plumb::spec::model::environment::Target as TargetSpec;
use plumb::target::kubernetes::KubernetesRuntime;
use timing::{ms, percentile, setting};

fn main() {
    let rounds = setting("PLUMB_BENCH_ROUNDS", 10);
    let services = setting("PLUMB_BENCH_SERVICES", 1000);
    let kubeconfig = control_plane::kubeconfig().to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(rounds, services, &kubeconfig));
}

/// A repository of `count` services in environment `kbench`, `s0` at `release`.
fn repository(dir: &Path, kubeconfig: &Path, count: usize, release: &str) {
    std::fs::create_dir_all(dir.join("services")).unwrap();
    std::fs::create_dir_all(dir.join("environments")).unwrap();
    std::fs::write(
        dir.join("plumb.yaml"),
        "apiVersion: plumb/v1\nkind: Repository\nenvironments: [kbench]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("environments/kbench.yaml"),
        format!(
            "apiVersion: plumb/v1\nkind: Environment\nname: kbench\ntarget:\n  kubernetes: {{namespace: kbench, kubeconfig: {:?}}}\n",
            kubeconfig.display().to_string()
        ),
    )
    .unwrap();
    for i in 0..count {
        let release = if i == 0 { release } else { "steady" };
        std::fs::write(
            dir.join(format!("services/s{i}.yaml")),
            format!(
                "apiVersion: plumb/v1\nkind: Service\nname: s{i}\nimage: registry.example/s:1\nreplicas: 0\n\
                 ports:\n  - {{name: http, port: 8080}}\nstrategy:\n  recreate: {{}}\nenv:\n  - {{name: RELEASE, value: {release}}}\n"
            ),
        )
        .unwrap();
    }
}

fn desired(dir: &Path) -> plumb::spec::Desired {
    let mut rendered = plumb::spec::render(&plumb::source::WorkTree::new(dir), Some("kbench")).unwrap();
    assert!(rendered.is_valid(), "{:?}", rendered.diagnostics);
    rendered.environments.shift_remove("kbench").unwrap()
}

/// This process's resident memory, in MiB.
fn resident() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb / 1024.0
}

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

async fn run(rounds: usize, count: usize, kubeconfig: &Path) {
    let state = tempfile::tempdir().unwrap();
    let repo = state.path().join("repo");
    repository(&repo, kubeconfig, count, "r0");
    let first = desired(&repo);
    let TargetSpec::Kubernetes(target) = &first.target else {
        unreachable!()
    };
    let cluster = KubernetesRuntime::new("kbench", target).await.unwrap();
    let recorder = plumb::ledger::Recorder::new(Ledger::open(&state.path().join("ledger.sqlite")).unwrap());
    let started = Instant::now();
    let applied = reconcile::apply(&cluster, &recorder, &first, intent("c0"), None)
        .await
        .unwrap();
    assert_eq!(applied.outcome, Outcome::Succeeded, "{:?}", applied.outcome);
    let first_sync = started.elapsed();

    let before = resident();
    let mut observed = Vec::new();
    let mut peak: f64 = before;
    let requests_before = requests(kubeconfig);
    for _ in 0..rounds {
        let started = Instant::now();
        // What the agent's drift check does: services and plain manifests, observed and planned.
        let (_, plan) = reconcile::observe_and_plan(&cluster, &recorder, &first, false)
            .await
            .unwrap();
        observed.push(started.elapsed());
        peak = peak.max(resident());
        assert!(plan.is_empty(), "nothing to change: {}", plan.summary().join("; "));
    }
    let made = requests(kubeconfig) - requests_before;
    println!(
        "observe + plan of {count} Deployments, nothing to change, {rounds} rounds: p50 {:.1} ms, p95 {:.1} ms; \
         {:.1} API requests each (the API server's count of requests for Deployments, Services, ConfigMaps and Secrets, \
         watches aside); resident memory {before:.1} MiB before, peak {peak:.1} MiB",
        ms(percentile(&mut observed, 0.5)),
        ms(percentile(&mut observed, 0.95)),
        made as f64 / rounds as f64,
    );

    let mut changes = Vec::new();
    for round in 1..=rounds {
        repository(&repo, kubeconfig, count, &format!("r{round}"));
        let next = desired(&repo);
        let commit = format!("c{round}");
        let started = Instant::now();
        let applied = reconcile::apply(&cluster, &recorder, &next, intent(&commit), None)
            .await
            .unwrap();
        changes.push(started.elapsed());
        assert_eq!(applied.outcome, Outcome::Succeeded);
        assert_eq!(applied.plan.steps.len(), 1);
    }

    let (peer_first, peer) = peer_rounds(rounds, count, kubeconfig);
    println!("first sync of {count} services (create, wait until available):");
    println!("  plumb: {:.1} s", first_sync.as_secs_f64());
    println!(
        "  kubectl apply --server-side of the same Deployments and Services: {:.1} s, then available \
         (kubectl wait --for=condition=Available): {:.1} s",
        peer_first.0.as_secs_f64(),
        peer_first.1.as_secs_f64()
    );
    println!(
        "  ratio plumb / kubectl until available: {:.2}",
        first_sync.as_secs_f64() / peer_first.1.as_secs_f64()
    );
    let (mut changes, mut peer) = (changes, peer);
    let (plumb_p50, peer_p50) = (ms(percentile(&mut changes, 0.5)), ms(percentile(&mut peer, 0.5)));
    println!("one-service change among {count}, {rounds} rounds:");
    println!(
        "  plumb (observe, plan, apply one Deployment, wait until available): p50 {plumb_p50:.0} ms, p95 {:.0} ms",
        ms(percentile(&mut changes, 0.95))
    );
    println!(
        "  kubectl apply --server-side of the {count} Deployments and Services:  p50 {peer_p50:.0} ms, p95 {:.0} ms",
        ms(percentile(&mut peer, 0.95))
    );
    println!("  ratio plumb / kubectl (p50): {:.3}", plumb_p50 / peer_p50);
    let _ = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["delete", "namespace", "kbench", "kpeer", "--wait=false"])
        .output();
}

/// The requests the API server has answered for Deployments, Services, ConfigMaps and Secrets, every
/// verb but WATCH (its `apiserver_request_total`).
fn requests(kubeconfig: &Path) -> u64 {
    let metrics = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["get", "--raw", "/metrics"])
        .output()
        .unwrap();
    assert!(metrics.status.success());
    String::from_utf8_lossy(&metrics.stdout)
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| {
            ["deployments", "services", "configmaps", "secrets"]
                .iter()
                .any(|r| l.contains(&format!("resource=\"{r}\"")))
        })
        .filter(|l| !l.contains("verb=\"WATCH\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The same objects as manifests, `s0` at `release`.
fn manifests(path: &Path, count: usize, release: &str) {
    let mut text = String::new();
    for i in 0..count {
        let release = if i == 0 { release } else { "steady" };
        text.push_str(&format!(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: s{i}-blue, namespace: kpeer}}\n\
             spec:\n  replicas: 0\n  selector: {{matchLabels: {{app: s{i}}}}}\n  template:\n    metadata: {{labels: {{app: s{i}}}}}\n    \
             spec: {{containers: [{{name: s{i}, image: registry.example/s:1, env: [{{name: RELEASE, value: {release}}}], ports: [{{containerPort: 8080, protocol: TCP}}]}}]}}\n\
             ---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: kpeer}}\n\
             spec: {{selector: {{app: s{i}}}, ports: [{{port: 8080, protocol: TCP}}]}}\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// `kubectl apply --server-side` of the same objects in namespace `kpeer`: how long creating them
/// took, and until they were available (`kubectl wait`); then each round's one-service change.
fn peer_rounds(rounds: usize, count: usize, kubeconfig: &Path) -> ((Duration, Duration), Vec<Duration>) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.yaml");
    let kubectl = |args: &[&str]| {
        let output = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let _ = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["create", "namespace", "kpeer"])
        .output();
    manifests(&file, count, "r0");
    let apply = [
        "apply",
        "--server-side",
        "--field-manager",
        "bench",
        "-f",
        file.to_str().unwrap(),
    ];
    // Created, then waited for as plumb waits: every Deployment observed by its controller and
    // available.
    let started = Instant::now();
    kubectl(&apply);
    let created = started.elapsed();
    kubectl(&[
        "-n",
        "kpeer",
        "wait",
        "--for=condition=Available",
        "deployment",
        "--all",
        "--timeout=900s",
    ]);
    let first = (created, started.elapsed());
    let mut times = Vec::new();
    for round in 1..=rounds {
        manifests(&file, count, &format!("r{round}"));
        let started = Instant::now();
        kubectl(&apply);
        times.push(started.elapsed());
    }
    (first, times)
}
