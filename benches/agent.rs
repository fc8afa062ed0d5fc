//! Commit to applied, through the whole agent: a signed commit is pushed, the agent's doorbell
//! rung (as a webhook would), and the clock stops when the stable port serves the change — so
//! each figure includes the fetch, the authentication, the rendering and the apply.
//! - a configuration-only change (file rewritten, replicas signalled), until every answer shows
//!   the new value;
//! - a blue-green rollout of a new release (2 replicas), until every answer comes from it;
//! - an automatic rollback: a release that fails its health checks, until the ledger records
//!   the attempt rolled back (the old release never stopped serving); and, from the ledger's
//!   timestamps, the restore alone (from the failed step to the end of the attempt).
//!
//! Health checks every 50 ms, three in a row to pass. Prints p50 and p95, and for the first two
//! where the time went (the agent's `plumb_stage_duration_seconds`, read around each push:
//! fetch, authenticate, render, plan, rollout), and the rollout by its steps (the ledger's, each
//! step's start to its end, versions and slots left out of their names). Run:
//! `cargo bench --bench agent` (`PLUMB_BENCH_ROUNDS=50`).

#[path = "../tests/it/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../tests/it/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "../tests/it/keys.rs"]
#[allow(dead_code)]
mod keys;

#[path = "support/timing.rs"]
#[allow(dead_code)]
mod timing;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use harness::{TestRepo, Web, agent_settings, trusted};
use keys::TestKey;
use plumb::ledger::{Ledger, Outcome};
use plumb::trigger::Reason;
use timing::{ms, percentile, setting};
use tokio_util::sync::CancellationToken;

fn main() {
    let rounds = setting("PLUMB_BENCH_ROUNDS", 50);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(rounds));
}

fn config(repo: &TestRepo, port: u16, release: &str, value: usize, healthy: bool) {
    let values = format!("config:\n  file: app.json\n  reload: signal\n  values: {{round: {value}}}\n");
    Web {
        healthy,
        checks: ("50ms", 3),
        extra: &values,
        ..Web::new(port, release, "blueGreen: {keepOldVersion: 0s}")
    }
    .write(repo);
}

/// Whether `checks` consecutive answers of `path` on `addr` all satisfy `ok`.
async fn all_answers(addr: SocketAddr, path: &str, checks: usize, ok: impl Fn(&str) -> bool) -> bool {
    for _ in 0..checks {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return false;
        }
        let response = http::get(addr, path).await;
        if response.status != 200 || !ok(&response.body) {
            return false;
        }
    }
    true
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn run(rounds: usize) {
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    config(&upstream, port, "r0", 0, true);
    upstream.commit_signed("r0", &alice);
    let state = tempfile::tempdir().unwrap();
    let settings = plumb::agent::Settings {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..agent_settings(&upstream, &root, state.path())
    };
    let cancel = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let agent = tokio::spawn(plumb::agent::run(settings, cancel.clone(), Some(tx)));
    let started = rx.await.unwrap();
    let (doorbell, api) = (started.doorbells["config"].clone(), started.api.unwrap());
    let ledger = Ledger::open_read_only(&state.path().join("ledger.sqlite")).unwrap();
    // Until the agent's figures count `attempts` attempts: each is timed once it has ended.
    let settled =
        async |attempts: f64| until("the attempt's figures", async || attempts_timed(api).await >= attempts).await;
    // Once the agent's figures count `attempts`, what each stage took since `before`.
    let took = async |before: &Stages, attempts: f64| {
        settled(attempts).await;
        stages(api).await.since(before)
    };
    until("r0 serving", async || {
        all_answers(addr, "/", 1, |b| b.contains(" r0 ")).await
    })
    .await;
    let mut attempts = 1.0;
    settled(attempts).await;

    let mut release = 0;
    let (mut reloads, mut rollouts, mut rollbacks, mut restores) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut reload_stages, mut rollout_stages) = (Stages::default(), Stages::default());
    let (mut reload_steps, mut rollout_steps) = (Stages::default(), Stages::default());
    let last_steps = || steps(&ledger.history("dev", 1).unwrap()[0]);
    for round in 1..=rounds {
        // A configuration-only change.
        config(&upstream, port, &format!("r{release}"), round, true);
        upstream.commit_signed("config", &alice);
        attempts += 1.0;
        let before = stages(api).await;
        let started = Instant::now();
        doorbell.ring(Reason::Manual);
        let wanted = format!("\"round\": {round}");
        until("the configuration change", async || {
            all_answers(addr, "/config", 4, |b| b.contains(&wanted)).await
        })
        .await;
        reloads.push(started.elapsed());
        reload_stages.extend(took(&before, attempts).await);
        reload_steps.extend(last_steps());

        // A new release, blue-green.
        release += 1;
        config(&upstream, port, &format!("r{release}"), round, true);
        upstream.commit_signed("release", &alice);
        attempts += 1.0;
        let before = stages(api).await;
        let started = Instant::now();
        doorbell.ring(Reason::Manual);
        let wanted = format!(" r{release} ");
        until("the rollout", async || {
            all_answers(addr, "/", 4, |b| b.contains(&wanted)).await
        })
        .await;
        rollouts.push(started.elapsed());
        rollout_stages.extend(took(&before, attempts).await);
        rollout_steps.extend(last_steps());

        // A release that never becomes healthy.
        config(&upstream, port, &format!("bad{round}"), round, false);
        let bad = upstream.commit_signed("bad release", &alice);
        attempts += 1.0;
        let started = Instant::now();
        doorbell.ring(Reason::Manual);
        let mut record = None;
        until("the automatic rollback", async || {
            record = ledger
                .history("dev", 1)
                .unwrap()
                .into_iter()
                .find(|r| r.attempt.commit == bad && r.outcome.is_some());
            record.is_some()
        })
        .await;
        rollbacks.push(started.elapsed());
        let record = record.unwrap();
        assert!(
            matches!(record.outcome, Some(Outcome::RolledBack(_))),
            "{:?}",
            record.outcome
        );
        let failed = record.steps.iter().find(|s| matches!(s.error, Some(Some(_)))).unwrap();
        let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap();
        let restore = at(record.finished.as_deref().unwrap()) - at(failed.finished.as_deref().unwrap());
        restores.push(restore.to_std().unwrap_or_default());
        assert!(all_answers(addr, "/", 4, |b| b.contains(&format!(" r{release} "))).await);
        // The next round starts from a good head again.
        config(&upstream, port, &format!("r{release}"), round, true);
        upstream.commit_signed("revert the bad release", &alice);
        attempts += 1.0;
        doorbell.ring(Reason::Manual);
        until("the revert", async || {
            ledger.history("dev", 1).unwrap()[0].outcome == Some(Outcome::Succeeded)
        })
        .await;
        settled(attempts).await;
    }
    cancel.cancel();
    agent.await.unwrap().unwrap();

    println!(
        "commit to applied through the agent (doorbell rung → stable port serves it), {rounds} rounds, 2 replicas:"
    );
    for (what, times) in [
        ("configuration-only change, every answer new", &mut reloads),
        ("blue-green rollout, every answer from the new release", &mut rollouts),
        (
            "automatic rollback of an unhealthy release, until recorded",
            &mut rollbacks,
        ),
        ("  of which restoring (failed step → attempt closed)", &mut restores),
    ] {
        println!(
            "  {what:<62} p50 {:>8.1} ms  p95 {:>8.1} ms",
            ms(percentile(times, 0.5)),
            ms(percentile(times, 0.95))
        );
    }
    for (what, mut stages, mut steps) in [
        ("configuration-only change", reload_stages, reload_steps),
        ("blue-green rollout", rollout_stages, rollout_steps),
    ] {
        println!("  {what}, by stage (until the attempt is recorded):");
        for (stage, times) in stages.0.iter_mut().chain(&mut steps.0) {
            println!(
                "    {stage:<60} p50 {:>8.1} ms  p95 {:>8.1} ms",
                ms(percentile(times, 0.5)),
                ms(percentile(times, 0.95))
            );
        }
    }
}

/// How long each step of `record` took, by name without versions and slots (`rollout step
/// web: start <version> in <slot>`); a step taken twice counts twice.
fn steps(record: &plumb::ledger::AttemptRecord) -> Stages {
    let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap();
    fn general(word: &str) -> &str {
        match word {
            "blue" | "green" => "<slot>",
            w if w.len() >= 7 && w.chars().all(|c| c.is_ascii_hexdigit() || c == '-' || c == '.') => "<version>",
            w => w,
        }
    }
    let mut steps = Stages::default();
    for step in &record.steps {
        let Some(finished) = &step.finished else { continue };
        let took = (at(finished) - at(&step.started)).to_std().unwrap_or_default();
        let name: Vec<&str> = step.name.split(' ').map(general).collect();
        steps.extend(Stages(vec![(format!("rollout step {}", name.join(" ")), vec![took])]));
    }
    steps
}

/// Times by stage, in the order a push goes through them.
#[derive(Default)]
struct Stages(Vec<(String, Vec<Duration>)>);

impl Stages {
    /// What each stage added since `before` (both sums of the agent's histograms).
    fn since(&self, before: &Stages) -> Stages {
        let before = |stage: &str| (before.0.iter().find(|(s, _)| s == stage)).map_or(Duration::ZERO, |(_, t)| t[0]);
        Stages(
            (self.0.iter())
                .map(|(stage, t)| (stage.clone(), vec![t[0].saturating_sub(before(stage))]))
                .collect(),
        )
    }

    fn extend(&mut self, more: Stages) {
        for (stage, times) in more.0 {
            match self.0.iter_mut().find(|(s, _)| *s == stage) {
                Some((_, all)) => all.extend(times),
                None => self.0.push((stage, times)),
            }
        }
    }
}

/// How many attempts the agent's figures have timed (its rollouts).
async fn attempts_timed(api: SocketAddr) -> f64 {
    let metrics = http::get(api, "/metrics").await.body;
    (metrics.lines())
        .find_map(|l| l.strip_prefix("plumb_stage_duration_seconds_count{stage=\"rollout\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The sums of the agent's `plumb_stage_duration_seconds`, by stage.
async fn stages(api: SocketAddr) -> Stages {
    let metrics = http::get(api, "/metrics").await.body;
    let mut sums = Stages::default();
    for stage in ["fetch", "authenticate", "render", "plan", "rollout"] {
        let series = format!("plumb_stage_duration_seconds_sum{{stage=\"{stage}\"}} ");
        let seconds = (metrics.lines())
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        sums.0.push((stage.to_owned(), vec![Duration::from_secs_f64(seconds)]));
    }
    sums
}
