//! The dashboard at size: one environment of 1,000 services on the local target (each a real
//! process with an exec health check and a configuration tree), served by `plumb agent` (release
//! build). Once the first drift check has filled the services' table and probed every check,
//! each page is fetched 50 times in a row: the overview, the environment's page (1,000 rows of
//! services with their health, 1,000 configuration trees), the same filtered to one service, and
//! what a sync would do (the head planned against what runs). Prints p50/p95 and the page's
//! size; the drift check's duration with 1,000 probes shows in the time the table took.
//!
//! Run: `cargo bench --bench dashboard` (`PLUMB_BENCH_SERVICES=1000`, `PLUMB_BENCH_ROUNDS=50`).

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
#[allow(dead_code)]
mod agent_process;
#[path = "support/timing.rs"]
#[allow(dead_code)]
mod timing;

use std::time::{Duration, Instant};

use agent_process::{Agent, free_api};
use harness::{TestRepo, trusted};
use keys::TestKey;
use timing::{ms, percentile, setting};

fn main() {
    let services = setting("PLUMB_BENCH_SERVICES", 1000);
    let rounds = setting("PLUMB_BENCH_ROUNDS", 50);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(measure(services, rounds));
}

/// A repository whose environment `production` runs `services` services, each a `sleep` with an
/// exec health check and a few configuration values.
fn repository(services: usize) -> (TestRepo, String) {
    let alice = TestKey::new("alice");
    let (mut repo, root) = trusted(&alice);
    repo.write(
        "plumb.yaml",
        "apiVersion: plumb/v1\nkind: Repository\nenvironments: [production]\n",
    );
    repo.write(
        "environments/production.yaml",
        "apiVersion: plumb/v1\nkind: Environment\nname: production\ntarget:\n  local: {}\n",
    );
    for s in 0..services {
        repo.write(
            &format!("services/svc-{s}.yaml"),
            &format!(
                "apiVersion: plumb/v1\nkind: Service\nname: svc-{s}\ncommand: [sleep, \"86400\"]\n\
                 strategy:\n  recreate: {{}}\n\
                 healthChecks:\n  - {{name: alive, exec: {{command: [\"true\"]}}, interval: 100ms}}\n\
                 config:\n  values: {{index: {s}, database: {{host: db-{s}.internal, pool: {{min: 2, max: 20}}}}, features: [a, b]}}\n"
            ),
        );
    }
    repo.commit_signed("Services", &alice);
    (repo, root)
}

async fn measure(services: usize, rounds: usize) {
    let (repo, root) = repository(services);
    let state = tempfile::tempdir().unwrap();
    let api = free_api();
    let started = Instant::now();
    let agent = Agent::start(repo.path(), &repo.branch(), &root, "10s", api, state.path());
    let deadline = Instant::now() + Duration::from_secs(900);
    let rows = |body: &str| body.matches("<th scope=\"row\">svc-").count();
    loop {
        if let Some(page) = http::try_get(api, "/environments/production").await
            && rows(&page.body) >= services
        {
            break;
        }
        assert!(Instant::now() < deadline, "the services' table never filled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{services} services applied and probed in {:.1} s; agent {:.1} MB resident",
        started.elapsed().as_secs_f64(),
        agent.rss_mb()
    );
    let page = http::get(api, "/environments/production").await.body;
    assert_eq!(
        page.matches("passing").count(),
        services,
        "every check probed and passing"
    );
    println!("GET, {rounds} times in a row (server render and transfer over loopback):");
    for path in [
        "/",
        "/environments/production",
        "/environments/production?service=svc-7",
        "/environments/production/plan",
    ] {
        let mut times = Vec::with_capacity(rounds);
        let mut size = 0;
        for _ in 0..rounds {
            let started = Instant::now();
            let answer = http::get(api, path).await;
            times.push(started.elapsed());
            assert_eq!(answer.status, 200, "{path}: {}", answer.body);
            size = answer.body.len();
        }
        let p50 = ms(percentile(&mut times, 0.5));
        let p95 = ms(percentile(&mut times, 0.95));
        println!(
            "  {path:<42} p50 {p50:>7.2} ms  p95 {p95:>7.2} ms  {:>8.1} KB",
            size as f64 / 1024.0
        );
    }
    drop(agent);
}
