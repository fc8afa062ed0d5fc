//! The reconciler: plans (golden), and applying commits to a real local target with a real
//! ledger — create, configuration reload, scale, a failing rollout restored to the rollback
//! point, prune, drift corrected.

use std::net::SocketAddr;
use std::time::Duration;

use plumb::agent::Worker;
use plumb::ledger::{Ledger, Outcome, Recorder};
use plumb::reconcile::{self, Intent, Live, RollbackPoint};
use plumb::spec::Desired;
use plumb::target::local::LocalRuntime;
use plumb::target::local::process::Backoff;
use plumb::target::{LiveSlot, Slot, Slots, config_digest};

use crate::harness::{golden, project};
use crate::http::get;

/// A configuration repository on disk with one environment, `dev`, on the local target.
pub struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    pub fn new(sync: &str) -> Repo {
        let repo = Repo {
            dir: tempfile::tempdir().unwrap(),
        };
        repo.write(
            "plumb.yaml",
            "apiVersion: plumb/v1\nkind: Repository\nenvironments: [dev]\n",
        );
        repo.write(
            "environments/dev.yaml",
            &format!("apiVersion: plumb/v1\nkind: Environment\nname: dev\ntarget:\n  local: {{}}\nsync: {sync}\n"),
        );
        repo
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn write(&self, path: &str, text: &str) {
        let full = self.dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    /// A service running `plumb example-app` on stable port `port` as release `release`;
    /// `extra` is appended to its document (YAML).
    pub fn service(&self, name: &str, port: u16, release: &str, extra: &str) {
        self.write(
            &format!("services/{name}.yaml"),
            &format!(
                "apiVersion: plumb/v1\nkind: Service\nname: {name}\ncommand: [{:?}, example-app]\n\
                 ports:\n  - {{name: http, port: {port}}}\n\
                 healthChecks:\n  - name: ready\n    http: {{path: /health, port: http}}\n    timeout: 1s\n    interval: 50ms\n    failureThreshold: 100\n\
                 progressDeadline: 10s\n{extra}env:\n  - {{name: EXAMPLE_RELEASE, value: {release}}}\n",
                env!("CARGO_BIN_EXE_plumb"),
            ),
        );
    }

    pub fn desired(&self) -> Desired {
        let mut rendered = plumb::spec::render(&plumb::source::WorkTree::new(self.dir.path()), Some("dev")).unwrap();
        plumb::agent::desired_of(&mut rendered, "dev", None, plumb::appconfig::token::Handed::Once).unwrap()
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn slot(desired: &Desired, service: &str, replicas: usize, weight: u32) -> LiveSlot {
    let service = desired.services.values().find(|s| s.name.as_str() == service).unwrap();
    LiveSlot {
        version: reconcile::version(service),
        replicas: vec!["running".to_owned(); replicas],
        weight,
        config: config_digest(service).unwrap(),
        failed: 0,
        taken: Vec::new(),
        restarts: 0,
    }
}

#[test]
fn plans_are_deterministic_and_ordered_by_dependencies() {
    let repo = Repo::new("{}");
    // Commands with no machine-specific path, so versions (digests) are the same everywhere.
    let service = |name: &str, port: u16, extra: &str| {
        repo.write(
            &format!("services/{name}.yaml"),
            &format!("apiVersion: plumb/v1\nkind: Service\nname: {name}\ncommand: [app]\nports:\n  - {{name: http, port: {port}}}\n{extra}"),
        )
    };
    service("web", 4001, "replicas: 2\n");
    service("queue", 4002, "");
    service(
        "api",
        4003,
        "dependsOn: [queue]\nconfig:\n  file: app.json\n  reload: signal\n  values: {greeting: hello}\n",
    );
    let desired = repo.desired();
    let mut out = String::new();
    let mut show = |title: &str, live: &Live, prune: bool| {
        out.push_str(&format!("# {title}\n"));
        for line in reconcile::plan(&desired, live, prune).summary() {
            out.push_str(&line);
            out.push('\n');
        }
    };
    show("nothing runs", &Live::new(), false);

    let steady: Live = ["api", "queue", "web"]
        .into_iter()
        .map(|name| {
            let replicas = if name == "web" { 2 } else { 1 };
            (
                name.to_owned(),
                Slots::from([(Slot::Blue, slot(&desired, name, replicas, 100))]),
            )
        })
        .collect();
    show("everything runs as desired", &steady, false);

    let mut drifted = steady.clone();
    let api = drifted.get_mut("api").unwrap().get_mut(&Slot::Blue).unwrap();
    api.config = Some("0123456789abcdef".to_owned());
    let queue = drifted.get_mut("queue").unwrap().get_mut(&Slot::Blue).unwrap();
    queue.version = "0000000000000000".to_owned();
    drifted
        .get_mut("web")
        .unwrap()
        .get_mut(&Slot::Blue)
        .unwrap()
        .replicas
        .pop();
    drifted.insert(
        "legacy".to_owned(),
        Slots::from([(Slot::Green, slot(&desired, "web", 1, 100))]),
    );
    show(
        "config edited, old version, one replica short, a service no longer declared",
        &drifted,
        false,
    );
    show("the same with pruning", &drifted, true);

    let mut leftovers = steady.clone();
    leftovers
        .get_mut("web")
        .unwrap()
        .insert(Slot::Green, slot(&desired, "web", 2, 0));
    leftovers.get_mut("queue").unwrap().get_mut(&Slot::Blue).unwrap().failed = 1;
    leftovers.get_mut("api").unwrap().get_mut(&Slot::Blue).unwrap().weight = 0;
    show(
        "an idle slot, a replica that cannot start, nothing serving",
        &leftovers,
        false,
    );

    let again: Vec<String> = (0..3)
        .map(|_| reconcile::plan(&desired, &drifted, true).summary().join("\n"))
        .collect();
    assert!(again.windows(2).all(|w| w[0] == w[1]));
    golden(&project().join("tests/fixtures/plan.expected.txt"), &out);
}

/// A runtime and a ledger over one temporary state directory.
struct Agentless {
    state: tempfile::TempDir,
    runtime: LocalRuntime,
    ledger: Ledger,
    /// The applies' own connection to it, as in the agent.
    recorder: Recorder,
}

impl Agentless {
    fn new() -> Agentless {
        let state = tempfile::tempdir().unwrap();
        let runtime = LocalRuntime::new("dev", "127.0.0.1", 0, state.path(), Backoff::default()).unwrap();
        let ledger = Ledger::open(&state.path().join("ledger.sqlite")).unwrap();
        let recorder = Recorder::new(Ledger::open(&state.path().join("ledger.sqlite")).unwrap());
        Agentless {
            state,
            runtime,
            ledger,
            recorder,
        }
    }

    async fn apply(
        &mut self,
        desired: &Desired,
        commit: &str,
        rollback: Option<(&str, &Desired)>,
    ) -> reconcile::Applied {
        let intent = Intent {
            commit,
            signer: Some("alice"),
            trigger: plumb::ledger::Trigger::Commit,
            undo: &[],
            kept: &[],
            by: None,
        };
        let rollback = rollback.map(|(commit, desired)| RollbackPoint { commit, desired });
        reconcile::apply(&self.runtime, &self.recorder, desired, intent, rollback)
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_applied_and_a_failed_one_is_restored_to_the_rollback_point() {
    let mut env = Agentless::new();
    let (web, api) = (free_port(), free_port());
    let repo = Repo::new("{prune: true}");
    repo.service(
        "web",
        web,
        "r1",
        "replicas: 2\nstrategy:\n  blueGreen: {keepOldVersion: 0s}\n",
    );
    repo.service(
        "api",
        api,
        "r1",
        "config:\n  file: app.json\n  reload: signal\n  values: {greeting: hello}\n",
    );
    let first = repo.desired();
    let applied = env.apply(&first, "c1", None).await;
    assert_eq!(applied.outcome, Outcome::Succeeded, "{:?}", applied.plan);
    assert_eq!(
        applied.plan.summary(),
        ["api: create (not running)", "web: create (not running)"]
    );
    assert_eq!(get(addr(web), "/").await.body.split(' ').nth(1), Some("r1"));

    // A configuration-only change is reloaded in place; a scale keeps the running replicas.
    repo.service(
        "api",
        api,
        "r1",
        "config:\n  file: app.json\n  reload: signal\n  values: {greeting: bonjour}\n",
    );
    repo.service(
        "web",
        web,
        "r1",
        "replicas: 3\nstrategy:\n  blueGreen: {keepOldVersion: 0s}\n",
    );
    let second = repo.desired();
    let applied = env.apply(&second, "c2", Some(("c1", &first))).await;
    assert_eq!(applied.outcome, Outcome::Succeeded);
    let actions: Vec<String> = applied.plan.summary();
    assert!(
        actions[0].starts_with("api: reload") && actions[1] == "web: scale 2 → 3 (replica count)",
        "{actions:?}"
    );
    let config = wait_for(
        || async { get(addr(api), "/config").await.body },
        |b| b.contains("bonjour"),
    )
    .await;
    assert!(config.contains("bonjour"));
    let live = env.runtime.observe().await;
    assert_eq!(live["web"][&Slot::Blue].replicas.len(), 3);

    // A new release of web that never becomes healthy, and a new service, in one commit: the
    // environment goes back to the rollback point — web r1 serving, the new service gone.
    repo.service(
        "web",
        web,
        "r2",
        "replicas: 3\nstrategy:\n  blueGreen: {keepOldVersion: 0s}\n",
    );
    repo.write(
        "services/web.yaml",
        &std::fs::read_to_string(repo.path().join("services/web.yaml"))
            .unwrap()
            .replace(
                "EXAMPLE_RELEASE, value: r2}",
                "EXAMPLE_RELEASE, value: r2}\n  - {name: EXAMPLE_HEALTH, value: fail}",
            ),
    );
    let extra = free_port();
    repo.service("extra", extra, "r1", "");
    let third = repo.desired();
    let applied = env.apply(&third, "c3", Some(("c2", &second))).await;
    let Outcome::RolledBack(reason) = &applied.outcome else {
        panic!("{:?}", applied.outcome)
    };
    assert!(reason.contains("unhealthy"), "{reason}");
    assert_eq!(get(addr(web), "/").await.body.split(' ').nth(1), Some("r1"));
    let live = env.runtime.observe().await;
    assert!(
        !live.contains_key("extra"),
        "the service the failed commit created is removed: {:#?}",
        env.ledger.history("dev", 1).unwrap()[0].steps
    );
    assert!(env.ledger.is_failed("dev", "c3").unwrap());
    assert_eq!(env.ledger.rollback_point("dev").unwrap().as_deref(), Some("c2"));
    let history = env.ledger.history("dev", 1).unwrap();
    assert!(
        history[0].steps.iter().any(|s| s.name == "delete extra (blue)"),
        "{:?}",
        history[0].steps
    );

    // Pruning: a service removed from the repository stops.
    std::fs::remove_file(repo.path().join("services/extra.yaml")).unwrap();
    std::fs::remove_file(repo.path().join("services/api.yaml")).unwrap();
    repo.service(
        "web",
        web,
        "r1",
        "replicas: 3\nstrategy:\n  blueGreen: {keepOldVersion: 0s}\n",
    );
    let fourth = repo.desired();
    let applied = env.apply(&fourth, "c4", Some(("c2", &second))).await;
    assert_eq!(applied.outcome, Outcome::Succeeded);
    assert_eq!(applied.plan.summary(), ["api: delete (no longer declared)"]);
    assert!(!env.runtime.observe().await.contains_key("api"));
    assert!(get_fails(addr(api)).await, "the pruned service's port is closed");
    env.runtime.shutdown().await;
    drop(env.state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_reported_and_corrected_by_self_heal() {
    let state = tempfile::tempdir().unwrap();
    let runtime =
        std::sync::Arc::new(LocalRuntime::new("dev", "127.0.0.1", 0, state.path(), Backoff::default()).unwrap());
    let ledger = Recorder::new(Ledger::open(&state.path().join("ledger.sqlite")).unwrap());
    let publish = plumb::agent::Publish::default();
    let board = publish.board.clone();
    let mut worker = Worker::new(
        "dev",
        runtime.clone(),
        ledger,
        Duration::from_secs(3600),
        publish.clone(),
    )
    .await
    .unwrap();
    let port = free_port();
    let repo = Repo::new("{selfHeal: true}");
    repo.service(
        "api",
        port,
        "r1",
        "replicas: 2\nconfig:\n  file: app.json\n  reload: signal\n  values: {greeting: hello}\n",
    );
    let desired = repo.desired();
    let head = plumb::agent::Head {
        commit: git2::Oid::from_str("1111111111111111111111111111111111111111").unwrap(),
        subject: None,
        signer: None,
        desired: Ok(desired.clone()),
        repository: state.path().join("no-repository"),
        folder: String::new(),
        keys: Default::default(),
        allow: Default::default(),
        handout: None,
    };
    worker.head(head).await.unwrap();
    assert_eq!(runtime.observe().await["api"][&Slot::Blue].replicas.len(), 2);
    let applied = board.read().unwrap()["dev"].applied.clone();
    assert_eq!(applied.as_deref(), Some("1111111111111111111111111111111111111111"));

    // Someone edits the configuration file by hand and scales the service down.
    let file = runtime.slot_dir("api", Slot::Blue).join("app.json");
    std::fs::write(&file, "{\"greeting\": \"hacked\"}\n").unwrap();
    runtime
        .scale(&desired.services.values().next().unwrap().clone(), Slot::Blue, 1)
        .await
        .unwrap();
    let live = runtime.observe().await;
    let drift = reconcile::plan(&desired, &live, false);
    assert_eq!(
        drift.summary(),
        ["api: reload (the configuration file differs from the rendered one)"],
        "the configuration first; the scale shows once it is fixed"
    );

    worker.heal().await.unwrap();
    let metrics = publish.metrics.encode();
    assert!(
        metrics.contains("plumb_drift{environment=\"dev\",service=\"api\"} 1"),
        "{metrics}"
    );
    worker.heal().await.unwrap();
    worker.heal().await.unwrap();
    let metrics = publish.metrics.encode();
    assert!(
        metrics.contains("plumb_drift{environment=\"dev\",service=\"api\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "plumb_attempts_total{environment=\"dev\",trigger=\"heal\",strategy=\"none\",result=\"succeeded\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("plumb_traffic_weight{environment=\"dev\",service=\"api\",slot=\"blue\"} 100"),
        "{metrics}"
    );
    assert!(std::fs::read_to_string(&file).unwrap().contains("hello"));
    assert_eq!(runtime.observe().await["api"][&Slot::Blue].replicas.len(), 2);
    assert!(reconcile::plan(&desired, &runtime.observe().await, false).is_empty());
    runtime.shutdown().await;
}

async fn wait_for<F, Fut>(probe: F, done: impl Fn(&String) -> bool) -> String
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = probe().await;
        if done(&seen) || tokio::time::Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_fails(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_replaces_a_batch_at_a_time_and_a_bad_batch_is_rolled_back() {
    let mut env = Agentless::new();
    let port = free_port();
    let repo = Repo::new("{}");
    let rolling = "replicas: 3\nstrategy:\n  rolling: {batchSize: 2, maxSurge: 1, maxUnavailable: 1}\n";
    repo.service("web", port, "r1", rolling);
    let first = repo.desired();
    assert_eq!(env.apply(&first, "c1", None).await.outcome, Outcome::Succeeded);

    repo.service("web", port, "r2", rolling);
    let second = repo.desired();
    let applied = env.apply(&second, "c2", Some(("c1", &first))).await;
    assert_eq!(applied.outcome, Outcome::Succeeded);
    let version = reconcile::version(second.services.values().next().unwrap());
    let steps: Vec<String> = env.ledger.history("dev", 1).unwrap()[0]
        .steps
        .iter()
        .map(|s| s.name.replace(&version, "r2"))
        .collect();
    // Batches of two: one old copy stops before each batch (maxUnavailable 1), one more
    // (maxSurge 1) once it is healthy; traffic follows the replicas.
    assert_eq!(
        steps,
        [
            "web: scale blue to 2",
            "web: start 2 of r2 in green",
            "web: health of green",
            "web: shift 66% to green",
            "web: scale blue to 1",
            "web: scale green to 3",
            "web: health of green",
            "web: shift 100% to green",
            "web: promote green",
            "web: retire blue",
        ]
    );
    let live = env.runtime.observe().await;
    assert_eq!(live["web"][&Slot::Green].replicas.len(), 3);
    assert!(!live["web"].contains_key(&Slot::Blue));
    assert_eq!(get(addr(port), "/").await.body, "web r2 green\n");

    // A batch that never becomes healthy: traffic back to the old copies, which are brought
    // back to three by the rollback point.
    repo.service("web", port, "r3", rolling);
    repo.write(
        "services/web.yaml",
        &std::fs::read_to_string(repo.path().join("services/web.yaml"))
            .unwrap()
            .replace("value: r3}", "value: r3}\n  - {name: EXAMPLE_HEALTH, value: fail}"),
    );
    let third = repo.desired();
    let applied = env.apply(&third, "c3", Some(("c2", &second))).await;
    assert!(
        matches!(applied.outcome, Outcome::RolledBack(_)),
        "{:?}",
        applied.outcome
    );
    let live = env.runtime.observe().await;
    assert_eq!(live["web"].len(), 1, "{live:?}");
    assert_eq!(live["web"][&Slot::Green].replicas.len(), 3);
    assert_eq!(get(addr(port), "/").await.body, "web r2 green\n");
    env.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_recreate_brings_the_rollback_point_back() {
    let mut env = Agentless::new();
    let port = free_port();
    let repo = Repo::new("{}");
    repo.service("api", port, "v1", "replicas: 2\nstrategy:\n  recreate: {}\n");
    let good = repo.desired();
    assert_eq!(env.apply(&good, "c1", None).await.outcome, Outcome::Succeeded);
    assert_eq!(get(addr(port), "/").await.body, "api v1 blue\n");

    repo.service("api", port, "v2", "replicas: 2\nstrategy:\n  recreate: {}\n");
    repo.write(
        "services/api.yaml",
        &std::fs::read_to_string(repo.path().join("services/api.yaml"))
            .unwrap()
            .replace("value: v2}", "value: v2}\n  - {name: EXAMPLE_HEALTH, value: fail}"),
    );
    let bad = repo.desired();
    let applied = env.apply(&bad, "c2", Some(("c1", &good))).await;
    let Outcome::RolledBack(reason) = &applied.outcome else {
        panic!("{:?}", applied.outcome)
    };
    assert!(reason.contains("unhealthy"), "{reason}");
    assert_eq!(get(addr(port), "/").await.body, "api v1 blue\n", "v1 serves again");
    let (old, new) = (
        reconcile::version(good.services.values().next().unwrap()),
        reconcile::version(bad.services.values().next().unwrap()),
    );
    let steps: Vec<String> = env.ledger.history("dev", 1).unwrap()[0]
        .steps
        .iter()
        .map(|s| s.name.replace(&new, "v2").replace(&old, "v1"))
        .collect();
    assert_eq!(
        steps,
        [
            "api: replace blue with v2",
            "api: health of blue",
            "retire leftover blue of api",
            "api: replace blue with v1",
            "api: health of blue",
            "api: route traffic to blue"
        ]
    );
    env.runtime.shutdown().await;
}
