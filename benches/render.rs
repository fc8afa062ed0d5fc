//! Load + merge + validate of synthetic repositories (1,000 and 10,000 services × 3
//! environments), in-process and as a `plumb validate` process, beside `kubectl kustomize` on an
//! equivalent base + overlays tree (one Deployment per service, one strategic-merge patch per
//! service and environment). Prints wall times, peak memory and the ratio.
//!
//! Then the agent's path for a commit changing one service of 1,000: the commit rendered with
//! the memo of the commit before, and the plan of one environment against what runs the commit
//! before; beside rendering the same commit from scratch.
//!
//! Run: `cargo bench --bench render` (`PLUMB_BENCH_SIZES=1000` for one size,
//! `PLUMB_BENCH_NO_PEER=1` to skip kustomize, which takes minutes per environment at 10,000;
//! `PLUMB_BENCH_WRITE=DIR` to write the 1,000-service repository and stop;
//! `PLUMB_BENCH_COMMITS=N` for the commits of the incremental part, 50 by default, 0 for none;
//! `PLUMB_BENCH_SIZES=` for the incremental part alone, `PLUMB_BENCH_MEMO_ONLY=1` without the
//! renders from scratch, for profiling the memo's).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plumb::reconcile::{Live, plan, version};
use plumb::source::{GitTree, WorkTree};
use plumb::spec::memo::Memo;
use plumb::spec::rights::Allow;
use plumb::spec::sealed::Keyring;
use plumb::target::{LiveSlot, Slot, config_digest};

const ENVIRONMENTS: [&str; 3] = ["development", "staging", "production"];
const APP_SCHEMAS: usize = 10;

fn main() {
    // `PLUMB_BENCH_WRITE=DIR` writes the 1,000-service repository to DIR and stops, for profiling
    // a single `plumb validate` (callgrind counts instructions where wall times are noisy).
    if let Some(dir) = std::env::var_os("PLUMB_BENCH_WRITE") {
        write_plumb_repo(Path::new(&dir), 1_000);
        return;
    }
    let sizes: Vec<usize> = std::env::var("PLUMB_BENCH_SIZES")
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|_| vec![1_000, 10_000]);
    let kustomize = std::env::var_os("PLUMB_BENCH_NO_PEER").is_none()
        && Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success());
    println!(
        "size      | in-process median | plumb validate (process) | peak RSS  | kubectl kustomize ×3 | peak RSS  | ratio"
    );
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        write_plumb_repo(&dir.path().join("plumb"), n);
        write_kustomize_tree(&dir.path().join("kustomize"), n);

        let runs = if n <= 1_000 { 15 } else { 3 };
        let mut times: Vec<Duration> = (0..runs)
            .map(|_| {
                let tree = WorkTree::new(dir.path().join("plumb"));
                let start = Instant::now();
                let rendered = plumb::spec::render(&tree, None).unwrap();
                let elapsed = start.elapsed();
                assert!(
                    rendered.is_valid(),
                    "synthetic repository is valid: {:?}",
                    rendered.diagnostics.first()
                );
                assert_eq!(rendered.environments.len(), 3);
                elapsed
            })
            .collect();
        times.sort();
        let in_process = times[times.len() / 2];

        let repo = dir.path().join("plumb");
        let (plumb_time, plumb_rss) = measure(
            Command::new(env!("CARGO_BIN_EXE_plumb"))
                .args(["validate", "--repo"])
                .arg(&repo),
        );
        let peer = kustomize.then(|| {
            let mut total = Duration::ZERO;
            let mut rss = 0;
            for env in ENVIRONMENTS {
                let (t, r) = measure(
                    Command::new("kubectl")
                        .arg("kustomize")
                        .arg(dir.path().join("kustomize/overlays").join(env)),
                );
                total += t;
                rss = rss.max(r);
            }
            (total, rss)
        });
        let (peer_time, peer_rss, ratio) = match peer {
            Some((t, r)) => (
                format!("{t:.2?}"),
                format!("{} MiB", r / 1024),
                format!("{:.1}×", t.as_secs_f64() / plumb_time.as_secs_f64()),
            ),
            None => ("not run".into(), "-".into(), "-".into()),
        };
        println!(
            "{n:>5} × 3 | {:>16.2?} | {:>24.2?} | {:>5} MiB | {peer_time:>20} | {peer_rss:>9} | {ratio}",
            in_process,
            plumb_time,
            plumb_rss / 1024
        );
    }
    let commits = std::env::var("PLUMB_BENCH_COMMITS").map_or(50, |n| n.parse().expect("a number of commits"));
    if commits > 0 {
        incremental(1_000, commits);
    }
}

/// `commits` commits each changing one service's image in a repository of `services` × 3:
/// commit → plan of one environment with the memo, beside rendering from scratch.
fn incremental(services: usize, commits: usize) {
    let dir = tempfile::tempdir().unwrap();
    write_plumb_repo(dir.path(), services);
    let repo = git2::Repository::init(dir.path()).unwrap();
    let mut head = commit_all(&repo, "Services");
    let tree = |commit| GitTree::at(git2::Repository::open(dir.path()).unwrap(), commit, "").unwrap();
    let (keys, allow) = (Arc::new(Keyring::new(Vec::new())), Arc::new(Allow::default()));
    let mut memo = Memo::new(keys.clone(), allow.clone());
    let start = Instant::now();
    let rendered = memo.render(&tree(head)).unwrap();
    let first = start.elapsed();
    assert!(rendered.is_valid(), "{:?}", rendered.diagnostics.first());
    let mut live = running(&rendered.environments["production"]);
    let (mut with_memo, mut planning, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
    for c in 0..commits {
        let changed = (c * 37) % services;
        let path = format!("services/svc-{changed}.yaml");
        let text = std::fs::read_to_string(dir.path().join(&path)).unwrap();
        let image = format!(":1.0.{changed}\n");
        assert!(text.contains(&image));
        write(
            &dir.path().join(&path),
            &text.replace(&image, &format!(":2.{c}.{changed}\n")),
        );
        head = commit_all(&repo, &format!("svc-{changed} to 2.{c}"));

        let start = Instant::now();
        let rendered = memo.render(&tree(head)).unwrap();
        let rendered_at = start.elapsed();
        let production = &rendered.environments["production"];
        let planned = plan(production, &live, false);
        with_memo.push(start.elapsed());
        planning.push(start.elapsed() - rendered_at);
        assert!(rendered.is_valid());
        assert_eq!(planned.steps.len(), 1, "one service changed: one step");
        assert_eq!(memo.reused(), 3 * (services - 1), "every other service was kept");
        live = running(production);

        if std::env::var_os("PLUMB_BENCH_MEMO_ONLY").is_some() {
            continue;
        }
        let start = Instant::now();
        let fresh = plumb::spec::render_opening(&tree(head), None, &keys, &allow).unwrap();
        scratch.push(start.elapsed());
        assert_eq!(fresh.environments, rendered.environments);
    }
    let quantile = |times: &mut Vec<Duration>, q: f64| {
        times.sort();
        times[((times.len() - 1) as f64 * q).round() as usize]
    };
    println!(
        "\ncommit → plan, one of {services} services changed, {commits} commits (first render with an empty memo {first:.2?}):"
    );
    println!(
        "  with the memo   p50 {:>9.2?}  p95 {:>9.2?}  (of which the plan of one environment: p50 {:.2?})",
        quantile(&mut with_memo, 0.5),
        quantile(&mut with_memo, 0.95),
        quantile(&mut planning, 0.5)
    );
    if scratch.is_empty() {
        return;
    }
    println!(
        "  from scratch    p50 {:>9.2?}  p95 {:>9.2?}  (render only)",
        quantile(&mut scratch, 0.5),
        quantile(&mut scratch, 0.95)
    );
}

/// What a target running `desired` reports: each service serving its version from one slot.
fn running(desired: &plumb::spec::Desired) -> Live {
    desired
        .services
        .values()
        .map(|service| {
            let slot = LiveSlot {
                version: version(service),
                replicas: vec!["ready".to_owned(); service.replicas as usize],
                weight: 100,
                config: config_digest(service).unwrap(),
                failed: 0,
                taken: Vec::new(),
                restarts: 0,
            };
            (service.name.as_str().to_owned(), [(Slot::Blue, slot)].into())
        })
        .collect()
}

/// Commits every file of the work tree of `repo` on its head; the commit.
fn commit_all(repo: &git2::Repository, message: &str) -> git2::Oid {
    let mut index = repo.index().unwrap();
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let who = git2::Signature::new("Bench", "bench@example.com", &git2::Time::new(1_700_000_000, 0)).unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &who, &who, message, &tree, &parents).unwrap()
}

/// Runs a command to completion; its wall time and peak resident memory in KiB.
// The child is reaped by `wait4`, which also reports its peak memory.
#[allow(clippy::zombie_processes)]
fn measure(command: &mut Command) -> (Duration, i64) {
    let start = Instant::now();
    let child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("command starts");
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `usage` is a valid, writable rusage.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    assert_eq!(pid, child.id() as libc::pid_t);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{command:?} failed"
    );
    (elapsed, usage.ru_maxrss)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn write_plumb_repo(root: &Path, n: usize) {
    write(
        &root.join("plumb.yaml"),
        "apiVersion: plumb/v1\nkind: Repository\nenvironments: [development, staging, production]\nserviceDefaults:\n  progressDeadline: 10m\n",
    );
    for s in 0..APP_SCHEMAS {
        write(
            &root.join(format!("schemas/app-{s}.json")),
            r#"{"type": "object", "required": ["port", "database"], "properties": {"port": {"type": "integer"}, "logLevel": {"enum": ["debug", "info", "warn"]}, "database": {"type": "object", "properties": {"host": {"type": "string"}, "pool": {"type": "integer", "maximum": 500}}}, "features": {"type": "object", "additionalProperties": {"type": "boolean"}}}}"#,
        );
    }
    for i in 0..n {
        let text = format!(
            "apiVersion: plumb/v1\nkind: Service\nname: svc-{i}\nimage: registry.example.com/svc-{i}:1.0.{i}\nreplicas: 2\nports:\n  - {{name: http, port: 8080}}\nenv:\n  - {{name: LOG_FORMAT, value: json}}\n  - {{name: SERVICE_ID, value: \"{i}\"}}\nhealthChecks:\n  - name: ready\n    http: {{path: /health}}\nstrategy:\n  rolling: {{maxSurge: 1}}\nconfig:\n  schema: schemas/app-{}.json\n  values:\n    port: 8080\n    logLevel: info\n    database: {{host: db-{i}.internal, pool: 10}}\n    features: {{a: true, b: false}}\n",
            i % APP_SCHEMAS
        );
        write(&root.join(format!("services/svc-{i}.yaml")), &text);
    }
    for (e, env) in ENVIRONMENTS.iter().enumerate() {
        let mut text = format!(
            "apiVersion: plumb/v1\nkind: Environment\nname: {env}\ntarget:\n  kubernetes: {{namespace: {env}}}\nservices:\n"
        );
        for i in 0..n {
            writeln!(
                text,
                "  svc-{i}:\n    replicas: {}\n    env:\n      - {{name: ENVIRONMENT, value: {env}}}\n    config:\n      values:\n        logLevel: {}\n        database: {{pool: {}}}",
                e + 1,
                if e == 0 { "debug" } else { "warn" },
                10 * (e + 1)
            )
            .unwrap();
        }
        write(&root.join(format!("environments/{env}.yaml")), &text);
    }
}

fn write_kustomize_tree(root: &Path, n: usize) {
    let mut kustomization =
        String::from("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n");
    for i in 0..n {
        writeln!(kustomization, "  - svc-{i}.yaml").unwrap();
        let text = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: svc-{i}\nspec:\n  replicas: 2\n  strategy:\n    type: RollingUpdate\n    rollingUpdate: {{maxSurge: 1}}\n  selector:\n    matchLabels: {{app: svc-{i}}}\n  template:\n    metadata:\n      labels: {{app: svc-{i}}}\n      annotations:\n        config/logLevel: info\n        config/database-pool: \"10\"\n    spec:\n      containers:\n        - name: app\n          image: registry.example.com/svc-{i}:1.0.{i}\n          ports:\n            - {{name: http, containerPort: 8080, protocol: TCP}}\n          env:\n            - {{name: LOG_FORMAT, value: json}}\n            - {{name: SERVICE_ID, value: \"{i}\"}}\n          readinessProbe:\n            httpGet: {{path: /health, port: http}}\n"
        );
        write(&root.join(format!("base/svc-{i}.yaml")), &text);
    }
    write(&root.join("base/kustomization.yaml"), &kustomization);
    for (e, env) in ENVIRONMENTS.iter().enumerate() {
        let mut k = String::from(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../base\npatches:\n",
        );
        let mut patches = String::new();
        for i in 0..n {
            writeln!(
                patches,
                "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: svc-{i}\nspec:\n  replicas: {}\n  template:\n    metadata:\n      annotations:\n        config/logLevel: {}\n        config/database-pool: \"{}\"\n    spec:\n      containers:\n        - name: app\n          env:\n            - {{name: ENVIRONMENT, value: {env}}}",
                e + 1,
                if e == 0 { "debug" } else { "warn" },
                10 * (e + 1)
            )
            .unwrap();
        }
        k.push_str("  - path: patches.yaml\n");
        write(&root.join(format!("overlays/{env}/kustomization.yaml")), &k);
        write(&root.join(format!("overlays/{env}/patches.yaml")), &patches);
    }
}
