//! The agent as operators run it (`plumb agent`, built as releases ship it): its resident memory idle (three
//! environments, no services) and with 1,000 services declared across three environments (each
//! a real process on the local target), and `GET /api/v1/status` latency under 100 concurrent
//! clients. Prints megabytes and p50/p99.
//!
//! Then a soak: `PLUMB_BENCH_SOAK` commits (1,000; 0 skips it) to the agent holding those
//! services, each changing one service's variable and pushed by a signed webhook, the agent's
//! resident memory read once each is applied; prints it (its anonymous and mapped-file parts
//! too) every tenth of the way and the slope (least squares), and writes every point to `target/footprint-soak.csv` (commit, MB). With
//! it, what the agent's own `plumb_stage_duration_seconds` says each commit's render (every
//! environment) and plans (each environment's) took: the incremental render at work.
//!
//! Run: `cargo bench --bench footprint` (`PLUMB_BENCH_SERVICES=1000`, `PLUMB_BENCH_CLIENTS=100`,
//! `PLUMB_BENCH_MAPPINGS=1` lists what is resident).

#[path = "../tests/it/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../tests/it/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "../tests/it/keys.rs"]
#[allow(dead_code)]
mod keys;

#[path = "support/agent_process.rs"]
mod agent_process;
#[path = "support/push.rs"]
mod push;
#[path = "support/timing.rs"]
#[allow(dead_code)]
mod timing;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use agent_process::{Agent, free_api};
use harness::{TestRepo, trusted};
use keys::TestKey;
use timing::setting;

const ENVIRONMENTS: [&str; 3] = ["development", "staging", "production"];
const HOOK_SECRET: &str = "a-long-enough-webhook-secret";

fn main() {
    let services = setting("PLUMB_BENCH_SERVICES", 1000);
    let clients = setting("PLUMB_BENCH_CLIENTS", 100);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let idle = runtime.block_on(measure(0, 0));
    let loaded = runtime.block_on(measure(services, clients));
    println!("plumb agent, resident memory (VmRSS):");
    let split = |m: &Measured| {
        format!(
            "(anonymous {:.1} MB, mapped files {:.1} MB, {} threads)",
            m.anon_mb, m.file_mb, m.threads
        )
    };
    println!(
        "  idle, 3 environments, no services     {:>7.1} MB  {}",
        idle.rss_mb,
        split(&idle)
    );
    println!(
        "  {services} services across 3 environments  {:>7.1} MB  {}, all applied in {:.1} s",
        loaded.rss_mb,
        split(&loaded),
        loaded.applied_s
    );
    if let Some((p50, p99, count)) = loaded.status {
        println!("GET /api/v1/status with {services} services, {clients} concurrent clients, {count} requests:");
        println!("  p50 {p50:.2} ms  p99 {p99:.2} ms");
    }
    let commits = setting("PLUMB_BENCH_SOAK", 1000);
    if commits > 0 {
        runtime.block_on(soak(services.max(1), commits));
    }
}

/// Pushes `commits` one-service changes to an agent holding `services`, and follows its memory.
async fn soak(services: usize, commits: usize) {
    let (mut repo, root, alice) = repository(services);
    let state = tempfile::tempdir().unwrap();
    let secret = state.path().join("webhook-secret");
    std::fs::write(&secret, HOOK_SECRET).unwrap();
    let api = free_api();
    let webhook = ["--webhook", "github", "--webhook-secret-file", secret.to_str().unwrap()];
    let agent = Agent::start_with(repo.path(), &repo.branch(), &root, "1h", api, state.path(), &webhook);
    let mut head = String::new();
    until_applied(api, None).await;
    let mut points = Vec::with_capacity(commits);
    let (mut renders, mut plans) = (Vec::with_capacity(commits), Vec::with_capacity(commits));
    println!("soak: {commits} commits, each changing one of {services} services, pushed by webhook:");
    for commit in 1..=commits {
        let s = commit % services;
        repo.write(&format!("services/svc-{s}.yaml"), &service(s, commit));
        head = repo.commit_signed(&format!("svc-{s}, change {commit}"), &alice);
        let before = (stage_sum(api, "render").await, stage_sum(api, "plan").await);
        push::push(api, HOOK_SECRET, &repo.branch(), &head).await;
        until_applied(api, Some(&head)).await;
        renders.push(stage_sum(api, "render").await - before.0);
        plans.push(stage_sum(api, "plan").await - before.1);
        let rss = agent.rss_mb();
        points.push(rss);
        if commit % (commits / 10).max(1) == 0 {
            let (_, anon, file, _) = agent.memory();
            println!("  after {commit:>5} commits  {rss:>7.1} MB  (anonymous {anon:.1} MB, mapped files {file:.1} MB)");
        }
    }
    // Least squares over every point, in MB per 1,000 commits.
    let n = points.len() as f64;
    let mean_x = (n + 1.0) / 2.0;
    let mean_y = points.iter().sum::<f64>() / n;
    let (mut covariance, mut variance) = (0.0, 0.0);
    for (i, y) in points.iter().enumerate() {
        let x = (i + 1) as f64 - mean_x;
        covariance += x * (y - mean_y);
        variance += x * x;
    }
    println!(
        "  slope {:+.2} MB per 1,000 commits (first {:.1} MB, last {:.1} MB, head {})",
        covariance / variance.max(f64::MIN_POSITIVE) * 1000.0,
        points[0],
        points[points.len() - 1],
        &head[..12]
    );
    if std::env::var_os("PLUMB_BENCH_MAPPINGS").is_some() {
        for (name, mb) in agent.mappings().into_iter().take(8) {
            println!("    {mb:>6.1} MB  {name}");
        }
    }
    for (what, times) in [
        ("render, every environment", &mut renders),
        ("plans, all three environments", &mut plans),
    ] {
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize] * 1000.0;
        println!("  {what:<32} p50 {:>7.2} ms  p95 {:>7.2} ms", at(0.5), at(0.95));
    }
    let csv: String = (points.iter().enumerate())
        .map(|(i, mb)| format!("{},{mb:.2}\n", i + 1))
        .collect();
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/target/footprint-soak.csv");
    std::fs::write(file, format!("commit,rss_mb\n{csv}")).unwrap();
    drop(agent);
}

/// The agent's `plumb_stage_duration_seconds` sum for `stage`, in seconds.
async fn stage_sum(api: SocketAddr, stage: &str) -> f64 {
    let series = format!("plumb_stage_duration_seconds_sum{{stage=\"{stage}\"}} ");
    let metrics = http::get(api, "/metrics").await.body;
    (metrics.lines())
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Until every environment is synced — on `commit`, when given.
async fn until_applied(api: SocketAddr, commit: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(response) = http::try_get(api, "/api/v1/status").await {
            let status: serde_json::Value = serde_json::from_str(&response.body).unwrap_or_default();
            let environments = status["environments"].as_array().cloned().unwrap_or_default();
            let done = |e: &serde_json::Value| e["synced"] == true && commit.is_none_or(|c| e["applied"] == c);
            if environments.len() == 3 && environments.iter().all(done) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the agent never applied everything");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Measured {
    rss_mb: f64,
    anon_mb: f64,
    file_mb: f64,
    threads: f64,
    applied_s: f64,
    status: Option<(f64, f64, usize)>,
}

/// A repository with `services` services spread over three environments, each a `sleep`.
fn repository(services: usize) -> (TestRepo, String, TestKey) {
    let alice = TestKey::new("alice");
    let (mut repo, root) = trusted(&alice);
    repo.write(
        "plumb.yaml",
        "apiVersion: plumb/v1\nkind: Repository\nenvironments: [development, staging, production]\n",
    );
    for (i, env) in ENVIRONMENTS.iter().enumerate() {
        // Each environment enables its third of the services.
        let mine: Vec<String> = (0..services)
            .filter(|s| s % 3 == i)
            .map(|s| format!("  svc-{s}: {{enabled: true}}\n"))
            .collect();
        let services = if mine.is_empty() {
            String::new()
        } else {
            format!("services:\n{}", mine.concat())
        };
        repo.write(
            &format!("environments/{env}.yaml"),
            &format!("apiVersion: plumb/v1\nkind: Environment\nname: {env}\ntarget:\n  local: {{}}\n{services}"),
        );
    }
    for s in 0..services {
        repo.write(&format!("services/svc-{s}.yaml"), &service(s, 0));
    }
    repo.commit_signed("Services", &alice);
    (repo, root, alice)
}

/// Service `s`'s document, its `CHANGE` variable at `change`.
fn service(s: usize, change: usize) -> String {
    format!(
        "apiVersion: plumb/v1\nkind: Service\nname: svc-{s}\nenabled: false\ncommand: [sleep, \"86400\"]\n\
         strategy:\n  recreate: {{}}\nenv:\n  - {{name: INDEX, value: \"{s}\"}}\n  - {{name: CHANGE, value: \"{change}\"}}\n"
    )
}

async fn measure(services: usize, clients: usize) -> Measured {
    let (repo, root, _) = repository(services);
    let state = tempfile::tempdir().unwrap();
    let api = free_api();
    let started = Instant::now();
    let agent = Agent::start(repo.path(), &repo.branch(), &root, "1h", api, state.path());
    // Applied: every environment synced (or, with no services, its first attempt recorded).
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(response) = http::try_get(api, "/api/v1/status").await {
            let status: serde_json::Value = serde_json::from_str(&response.body).unwrap_or_default();
            let environments = status["environments"].as_array().cloned().unwrap_or_default();
            if environments.len() == 3 && environments.iter().all(|e| e["synced"] == true) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the agent never applied everything");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let applied_s = started.elapsed().as_secs_f64();
    // Let allocations settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, anon, file, threads) = agent.memory();
    if std::env::var_os("PLUMB_BENCH_MAPPINGS").is_some() {
        for (name, mb) in agent.mappings().into_iter().take(8) {
            println!("    {mb:>6.1} MB  {name}");
        }
    }
    let status = if clients > 0 {
        Some(hammer(api, clients, 50).await)
    } else {
        None
    };
    drop(agent);
    Measured {
        rss_mb: rss,
        anon_mb: anon,
        file_mb: file,
        threads,
        applied_s,
        status,
    }
}

/// `clients` concurrent clients, each on its own kept-alive connection (as dashboards and
/// scrapers do) sending `each` sequential requests; p50, p99, count.
async fn hammer(api: SocketAddr, clients: usize, each: usize) -> (f64, f64, usize) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let url: axum::http::Uri = format!("http://{api}/api/v1/status").parse().unwrap();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = Client::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(1)
                    .build_http::<Empty<axum::body::Bytes>>();
                let mut times = Vec::with_capacity(each);
                for _ in 0..each {
                    let started = Instant::now();
                    let response = client.get(url.clone()).await.unwrap();
                    assert_eq!(response.status(), 200);
                    response.into_body().collect().await.unwrap();
                    times.push(started.elapsed());
                }
                times
            })
        })
        .collect();
    let mut times = Vec::new();
    for task in tasks {
        times.extend(task.await.unwrap());
    }
    times.sort();
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99), times.len())
}
