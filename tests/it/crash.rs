//! Crash safety: the real `plumb agent` is killed with SIGKILL at every step of every strategy's
//! rollout, then started again over the same state. Each time the environment must end
//! consistent — the new release fully live, or the old one — with exactly the declared replicas
//! running (nothing orphaned, nothing doubled), the migration run at most once (exactly once
//! when the new release went live), and an intact ledger. A kill in the middle of the
//! migration stops the environment until a person says what the database has; the test says
//! it from the migration's own journal, as that person would from the database.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plumb::ledger::{Ledger, Outcome};

use crate::agent::{eventually, release};
use crate::harness::{TestRepo, Web, trusted};
use crate::keys::TestKey;

const REPLICAS: usize = 2;

/// `web` as release `release`, with a migration that takes a moment and notes each run.
fn write_config(repo: &TestRepo, port: u16, release: &str, strategy: &str, journal: &Path) {
    let migration =
        format!("migration:\n  command: [sh, -c, \"sleep 0.2; echo {release} >> $JOURNAL\"]\n  timeout: 10s\n");
    let journal = journal.to_str().unwrap();
    Web {
        checks: ("50ms", 100),
        extra: &migration,
        env: &[("JOURNAL", journal)],
        ..Web::new(port, release, strategy)
    }
    .write(repo);
}

/// A repository trusting alice, and where the agent keeps its state.
struct Fixture {
    upstream: TestRepo,
    alice: TestKey,
    root: String,
    state: tempfile::TempDir,
    journal: std::path::PathBuf,
    port: u16,
    addr: SocketAddr,
    /// Where the agent's API listens (its token is [`crate::agent::TOKEN`]).
    api: SocketAddr,
}

impl Fixture {
    fn new() -> Fixture {
        let alice = TestKey::new("alice");
        let (upstream, root) = trusted(&alice);
        let state = tempfile::tempdir().unwrap();
        let journal = state.path().join("migrations.txt");
        let port = crate::reconcile::free_port();
        Fixture {
            upstream,
            alice,
            root,
            journal,
            state,
            port,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            api: SocketAddr::from(([127, 0, 0, 1], crate::reconcile::free_port())),
        }
    }

    /// Commits `web` as `release` with `strategy`, signed by alice.
    fn release(&mut self, release: &str, strategy: &str) -> String {
        write_config(&self.upstream, self.port, release, strategy, &self.journal);
        self.upstream.commit_signed(&format!("web {release}"), &self.alice)
    }

    fn agent(&self) -> Agent {
        Agent::start(
            self.upstream.path(),
            &self.root,
            self.state.path(),
            &self.upstream.branch(),
            self.api,
        )
    }
}

/// A `plumb agent` process over `state`, its API on `api` with [`crate::agent::TOKEN`].
pub(crate) struct Agent {
    child: Child,
}

impl Agent {
    pub(crate) fn start(repo: &Path, root: &str, state: &Path, branch: &str, api: SocketAddr) -> Agent {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state.join("agent.log"))
            .unwrap();
        let token = state.join("api.token");
        std::fs::write(&token, crate::agent::TOKEN).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_plumb"))
            .args(["agent", "--repo", repo.to_str().unwrap(), "--trust-root", root])
            .args([
                "--branch",
                branch,
                "--poll",
                "100ms",
                "--heal-every",
                "300ms",
                "--listen",
                &api.to_string(),
            ])
            .arg("--api-token-file")
            .arg(&token)
            .arg("--state")
            .arg(state)
            .current_dir(state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("plumb agent starts");
        Agent { child }
    }

    pub(crate) fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub(crate) fn stop(mut self) {
        // SAFETY: SIGTERM to the child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The processes whose working directory lies under `dir`: the replicas of a state directory.
fn processes_under(dir: &Path) -> Vec<u32> {
    let dir = std::fs::canonicalize(dir).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&dir)))
        .collect()
}

/// A process's id, parent, working directory and plumb variables, for failure messages.
fn describe(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let parent = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().nth(1))
        .unwrap_or("?");
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let plumb: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .filter(|v| v.starts_with("PLUMB_SLOT") || v.starts_with("EXAMPLE_RELEASE") || v.starts_with("PLUMB_REPLICA"))
        .collect();
    format!("{pid} (parent {parent}) in {}: {}", cwd.display(), plumb.join(" "))
}

/// The steps the attempt for `commit` has started so far, and its outcome.
fn attempt(state: &Path, commit: &str) -> Option<(usize, Option<Outcome>)> {
    let ledger = Ledger::open_read_only(&state.join("ledger.sqlite")).ok()?;
    let records = ledger.history("dev", 50).ok()?;
    let steps = records
        .iter()
        .filter(|r| r.attempt.commit == commit)
        .map(|r| r.steps.len())
        .sum();
    let outcome = records
        .iter()
        .find(|r| r.attempt.commit == commit && r.outcome != Some(Outcome::Interrupted))
        .and_then(|r| r.outcome.clone());
    Some((steps, outcome))
}

/// Whether the agent at `api` stopped the environment for an interrupted migration, and then
/// whether the migration ran, as its journal says (what the killed agent left running was
/// swept before the new one started its environments).
async fn interrupted(api: SocketAddr, journal: &Path) -> Option<bool> {
    let response = crate::http::try_get(api, "/api/v1/environments/dev").await?;
    let status: serde_json::Value = serde_json::from_str(&response.body).ok()?;
    status["blocked"]["migration"].as_str()?;
    Some(
        std::fs::read_to_string(journal)
            .unwrap_or_default()
            .lines()
            .any(|l| l == "r2"),
    )
}

/// Says, as the person who looked, whether the interrupted migration of `commit` ran.
async fn resolve(api: SocketAddr, commit: &str, ran: bool) {
    let state = if ran { "applied" } else { "rolled-back" };
    let body = format!(r#"{{"commit": "{commit}", "as": "{state}", "by": "the test"}}"#);
    let auth = [("authorization", format!("Bearer {}", crate::agent::TOKEN))];
    let response = crate::http::post(
        api,
        "/api/v1/environments/dev/migrations/resolve",
        &auth,
        body.as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
}

/// One strategy's rollout from r1 to r2, killed after `kill_at` steps (none: the reference run
/// that counts them). Returns the number of steps the uninterrupted rollout took.
async fn run(strategy: &str, kill_at: Option<usize>) -> usize {
    let mut f = Fixture::new();
    let (state, addr) = (f.state.path().to_owned(), f.addr);
    let state = state.as_path();
    f.release("r1", strategy);
    let context = format!("{strategy}, killed after step {kill_at:?}");

    let agent = f.agent();
    let seen = eventually(Duration::from_secs(60), || async {
        release(addr).await.filter(|r| r == "r1")
    })
    .await;
    assert_eq!(seen.as_deref(), Some("r1"), "{context}: r1 never served");

    let next = f.release("r2", strategy);
    let agent = match kill_at {
        Some(k) => {
            let reached = eventually(Duration::from_secs(60), || async {
                attempt(state, &next).filter(|(steps, _)| *steps >= k)
            })
            .await;
            assert!(reached.is_some(), "{context}: the rollout never reached the step");
            agent.kill();
            f.agent()
        }
        None => agent,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut resolved = false;
    let outcome = loop {
        if let Some((_, Some(outcome))) = attempt(state, &next) {
            break outcome;
        }
        if !resolved && let Some(ran) = interrupted(f.api, &f.journal).await {
            resolve(f.api, &next, ran).await;
            resolved = true;
        }
        assert!(Instant::now() < deadline, "{context}: the rollout never ended");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let migrations = std::fs::read_to_string(&f.journal).unwrap_or_default();
    let r2_migrations = migrations.lines().filter(|l| *l == "r2").count();
    let expected = match &outcome {
        Outcome::Succeeded => {
            assert_eq!(r2_migrations, 1, "{context}: the migration ran {r2_migrations} times");
            "r2"
        }
        other => panic!("{context}: {other:?}"),
    };
    let serving = eventually(Duration::from_secs(10), || async {
        release(addr).await.filter(|r| r == expected)
    })
    .await;
    assert_eq!(serving.as_deref(), Some(expected), "{context}");
    let running = eventually(Duration::from_secs(10), || async {
        let found = processes_under(&state.join("run"));
        (found.len() == REPLICAS).then_some(found)
    })
    .await;
    assert!(
        running.is_some(),
        "{context}: replicas running: {:#?}\nagent log:\n{}",
        processes_under(&state.join("run"))
            .into_iter()
            .map(describe)
            .collect::<Vec<_>>(),
        std::fs::read_to_string(state.join("agent.log")).unwrap_or_default()
    );
    let ledger = Ledger::open_read_only(&state.join("ledger.sqlite")).unwrap();
    assert!(
        ledger.verify().unwrap().is_ok(),
        "{context}: the ledger chain is broken"
    );
    let steps = attempt(state, &next).map_or(0, |(steps, _)| steps);
    agent.stop();
    assert!(
        processes_under(&state.join("run")).is_empty(),
        "{context}: left running after stop"
    );
    steps
}

const STRATEGIES: [&str; 4] = [
    "recreate: {}",
    "rolling: {batchSize: 1, maxSurge: 1}",
    "blueGreen: {keepOldVersion: 300ms}",
    "canary: {steps: [{weight: 50, pause: 300ms}], successThreshold: 0}",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_at_any_step_leaves_a_consistent_environment() {
    for strategy in STRATEGIES {
        let steps = run(strategy, None).await;
        assert!(steps >= 3, "{strategy}: {steps} steps");
        for k in 1..=steps {
            run(strategy, Some(k)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_rollout_parks_the_attempt_and_stops_everything() {
    let mut f = Fixture::new();
    let (state, addr) = (f.state.path().to_owned(), f.addr);
    // Ten minutes of keeping the old version: far longer than any shutdown may take.
    let strategy = "blueGreen: {keepOldVersion: 10m}";
    f.release("r1", strategy);
    let agent = f.agent();
    let seen = eventually(Duration::from_secs(60), || async {
        release(addr).await.filter(|r| r == "r1")
    })
    .await;
    assert_eq!(seen.as_deref(), Some("r1"));

    let next = f.release("r2", strategy);
    let switched = eventually(Duration::from_secs(60), || async {
        release(addr).await.filter(|r| r == "r2")
    })
    .await;
    assert_eq!(
        switched.as_deref(),
        Some("r2"),
        "the switch happens before the long keep"
    );
    // Mid-rollout, the metrics show how far the attempt got.
    let log = std::fs::read_to_string(state.join("agent.log")).unwrap();
    assert!(!log.contains('\u{1b}'), "a log file gets no terminal colours");
    let api: SocketAddr = log
        .lines()
        .find(|l| l.contains("The API listens."))
        .and_then(|l| l.split("address=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no API address in the log:\n{log}"));
    let families = crate::metrics::parse(&crate::http::get(api, "/metrics").await.body);
    let steps = crate::metrics::value(&families, "plumb_attempt_steps", &[("environment", "dev")]);
    assert!(steps.is_some_and(|s| s >= 4.0), "{steps:?}");
    let stopping = Instant::now();
    agent.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(30),
        "stopped in {:?}",
        stopping.elapsed()
    );
    assert!(
        processes_under(&state.as_path().join("run")).is_empty(),
        "every replica stopped"
    );
    assert_eq!(
        attempt(state.as_path(), &next).and_then(|(_, outcome)| outcome),
        None,
        "the cut attempt is parked as interrupted, not failed"
    );
    let ledger = Ledger::open_read_only(&state.as_path().join("ledger.sqlite")).unwrap();
    assert!(ledger.unfinished("dev").unwrap().is_empty());
    assert_eq!(ledger.history("dev", 1).unwrap()[0].outcome, Some(Outcome::Interrupted));

    // Started again, the agent applies the head afresh.
    let agent = f.agent();
    let seen = eventually(Duration::from_secs(60), || async {
        release(addr).await.filter(|r| r == "r2")
    })
    .await;
    assert_eq!(seen.as_deref(), Some("r2"));
    let migrations = std::fs::read_to_string(&f.journal).unwrap();
    assert_eq!(migrations.lines().filter(|l| *l == "r2").count(), 1, "{migrations}");
    agent.stop();
    assert!(processes_under(&state.as_path().join("run")).is_empty());
}
