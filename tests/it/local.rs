//! The local target's primitives with real processes (`plumb example-app`) behind the real
//! router: deploy into a slot, health, switch traffic, retire, observe.

use std::net::TcpListener;
use std::time::Duration;

use plumb::health::wait_healthy;
use plumb::ledger::{Attempt, Ledger, Outcome};
use plumb::rollout::{Rollout, RolloutError};
use plumb::spec::model::Service;
use plumb::target::Slot;
use plumb::target::local::LocalRuntime;
use plumb::target::local::process::Backoff;

use crate::http::get;

/// A one-service repository whose service runs `plumb example-app` on stable port `port`.
fn service(port: u16, health: &str) -> Service {
    service_with(port, health, "recreate: {}")
}

/// The same, with a strategy (YAML, inline).
fn service_with(port: u16, health: &str, strategy: &str) -> Service {
    service_env(port, &[("EXAMPLE_HEALTH", health)], strategy, "")
}

/// The same, with `env` for the example app.
fn service_env(port: u16, env: &[(&str, &str)], strategy: &str, extra: &str) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    };
    write(
        "plumb.yaml",
        "apiVersion: plumb/v1\nkind: Repository\nenvironments: [dev]\n",
    );
    write(
        "environments/dev.yaml",
        "apiVersion: plumb/v1\nkind: Environment\nname: dev\ntarget:\n  local: {}\n",
    );
    write(
        "services/api.yaml",
        &format!(
            "apiVersion: plumb/v1\nkind: Service\nname: api\ncommand: [{:?}, example-app]\nreplicas: 2\n\
             ports:\n  - {{name: http, port: {port}}}\nenv:\n{env}\
             healthChecks:\n  - name: ready\n    http: {{path: /health, port: http}}\n    timeout: 1s\n    interval: 50ms\n    failureThreshold: 200\n\
             strategy:\n  {strategy}\nprogressDeadline: 20s\n{extra}",
            env!("CARGO_BIN_EXE_plumb"),
            env = env
                .iter()
                .map(|(k, v)| format!("  - {{name: {k}, value: {v}}}\n"))
                .collect::<String>(),
        ),
    );
    let rendered = plumb::spec::render(&plumb::source::WorkTree::new(dir.path()), Some("dev")).unwrap();
    assert!(rendered.is_valid(), "{:?}", rendered.diagnostics);
    plumb::spec::model::Service::clone(rendered.environments["dev"].services.values().next().unwrap())
}

/// A local runtime over a temporary state directory, and a free stable port for the service.
struct Env {
    state: tempfile::TempDir,
    port: u16,
    stable: std::net::SocketAddr,
    runtime: LocalRuntime,
}

impl Env {
    fn new() -> Env {
        let state = tempfile::tempdir().unwrap();
        let port = free_port();
        let runtime = LocalRuntime::new("dev", "127.0.0.1", 0, state.path(), Backoff::default()).unwrap();
        Env {
            stable: format!("127.0.0.1:{port}").parse().unwrap(),
            state,
            port,
            runtime,
        }
    }

    /// The ledger in the state directory.
    fn ledger(state: &tempfile::TempDir) -> Ledger {
        Ledger::open(&state.path().join("ledger.sqlite")).unwrap()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_check_switch_and_retire_slots() {
    let Env {
        state,
        port,
        stable,
        runtime,
        ..
    } = Env::new();

    runtime.deploy(&service(port, "ok"), Slot::Blue, "v1").await.unwrap();
    let checks = runtime.checks("api", Slot::Blue).await.unwrap();
    assert_eq!(checks.len(), 2, "one check per replica");
    wait_healthy(&checks, Duration::from_secs(20)).await.unwrap();
    runtime.route("api", &[(Slot::Blue, 100)]).await;
    assert_eq!(get(stable, "/").await.body, "api v1 blue\n");

    // Green starts beside blue without traffic, then takes all of it at once.
    runtime.deploy(&service(port, "ok"), Slot::Green, "v2").await.unwrap();
    wait_healthy(
        &runtime.checks("api", Slot::Green).await.unwrap(),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(get(stable, "/").await.body, "api v1 blue\n");
    runtime.route("api", &[(Slot::Green, 100), (Slot::Blue, 0)]).await;
    for _ in 0..4 {
        assert_eq!(get(stable, "/").await.body, "api v2 green\n");
    }
    let live = runtime.observe().await;
    assert_eq!(live["api"][&Slot::Blue].weight, 0);
    assert_eq!(live["api"][&Slot::Green].version, "v2");
    assert_eq!(live["api"][&Slot::Green].replicas, ["running", "running"]);

    // Switch back is the same flip; then blue is retired for good.
    runtime.route("api", &[(Slot::Blue, 100), (Slot::Green, 0)]).await;
    assert_eq!(get(stable, "/").await.body, "api v1 blue\n");
    runtime.retire("api", Slot::Green).await;
    assert!(!runtime.observe().await["api"].contains_key(&Slot::Green));
    let log = std::fs::read_to_string(runtime.log_path("api", Slot::Blue, 0)).unwrap();
    assert!(log.contains("listening on 127.0.0.1:"), "{log}");
    let shown = crate::harness::plumb(&[
        "logs",
        "--env",
        "dev",
        "--service",
        "api",
        "--state",
        state.path().to_str().unwrap(),
    ]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(
        shown.stdout.starts_with("==> blue-0.log <==\nlistening on 127.0.0.1:"),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains("==> blue-1.log <==") && shown.stdout.contains("==> green-0.log <=="),
        "{}",
        shown.stdout
    );
    let missing = crate::harness::plumb(&[
        "logs",
        "--env",
        "dev",
        "--service",
        "nope",
        "--state",
        state.path().to_str().unwrap(),
    ]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("no logs for `nope` in `dev`"),
        "{}",
        missing.stderr
    );
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_version_is_seen_before_it_gets_traffic() {
    // The state directory stays bound: it lives as long as the replicas writing into it.
    let Env {
        state: _state,
        port,
        runtime,
        ..
    } = Env::new();
    runtime
        .deploy(&service(port, "fail"), Slot::Green, "bad")
        .await
        .unwrap();
    let error = wait_healthy(
        &runtime.checks("api", Slot::Green).await.unwrap(),
        Duration::from_secs(20),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("answered 503"), "{error}");
    runtime.shutdown().await;
}

fn attempt(version: &str) -> Attempt {
    Attempt {
        environment: "dev".to_owned(),
        commit: version.to_owned(),
        signer: Some("alice".to_owned()),
        strategy: "blueGreen".to_owned(),
        plan: serde_json::json!({ "api": "rollout" }),
        trigger: Default::default(),
        by: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_switches_when_healthy_and_never_when_not() {
    let Env {
        state,
        port,
        stable,
        runtime,
        ..
    } = Env::new();
    let mut ledger = Env::ledger(&state);
    // The rollout's own connection, as in the agent.
    let recorder = plumb::ledger::Recorder::new(Env::ledger(&state));
    let strategy = "blueGreen: {keepOldVersion: 0s}";

    // First version: nothing runs yet, so it lands in blue and takes the traffic.
    let first = ledger.begin(&attempt("v1")).unwrap();
    let mut rollout = Rollout::new(&runtime, &recorder, first);
    let live = rollout
        .run(&service_with(port, "ok", strategy), "v1", None)
        .await
        .unwrap();
    ledger.finish(first, &Outcome::Succeeded).unwrap();
    assert_eq!(live, Slot::Blue);
    assert_eq!(get(stable, "/").await.body, "api v1 blue\n");

    // A healthy second version: green, switched, blue retired.
    let second = ledger.begin(&attempt("v2")).unwrap();
    let mut rollout = Rollout::new(&runtime, &recorder, second);
    let live = rollout
        .run(&service_with(port, "ok", strategy), "v2", Some(live))
        .await
        .unwrap();
    ledger.finish(second, &Outcome::Succeeded).unwrap();
    assert_eq!(live, Slot::Green);
    assert_eq!(get(stable, "/").await.body, "api v2 green\n");
    assert!(!runtime.observe().await["api"].contains_key(&Slot::Blue));

    // An unhealthy third version never receives a request, and is retired.
    let router = runtime.router("api", "http").await.unwrap();
    router.reset_stats();
    let third = ledger.begin(&attempt("v3")).unwrap();
    let mut rollout = Rollout::new(&runtime, &recorder, third);
    let error = rollout
        .run(&service_with(port, "fail", strategy), "v3", Some(live))
        .await
        .unwrap_err();
    assert!(matches!(error, RolloutError::Unhealthy { .. }), "{error}");
    ledger.finish(third, &Outcome::RolledBack(error.to_string())).unwrap();
    assert_eq!(get(stable, "/").await.body, "api v2 green\n");
    assert_eq!(
        router.stats().get("blue").map(|s| s.requests),
        None,
        "v3 (blue) got no traffic"
    );
    assert!(!runtime.observe().await["api"].contains_key(&Slot::Blue));

    let history = ledger.history("dev", 10).unwrap();
    let steps: Vec<(String, bool)> = history[0]
        .steps
        .iter()
        .map(|s| (s.name.clone(), matches!(s.error, Some(Some(_)))))
        .collect();
    assert_eq!(
        steps,
        [
            ("api: start v3 in blue".to_owned(), false),
            ("api: health of blue".to_owned(), true),
            ("api: retire blue".to_owned(), false)
        ]
    );
    assert_eq!(ledger.rollback_point("dev").unwrap().as_deref(), Some("v2"));
    assert!(ledger.is_failed("dev", "v3").unwrap());
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_promotes_a_good_version_and_aborts_a_bad_one() {
    let Env {
        state,
        port,
        stable,
        runtime,
        ..
    } = Env::new();
    let mut ledger = Env::ledger(&state);
    // The rollout's own connection, as in the agent.
    let recorder = plumb::ledger::Recorder::new(Env::ledger(&state));
    let strategy =
        "canary: {steps: [{weight: 20, pause: 1s}, {weight: 50, pause: 1s}], minRequests: 5, successThreshold: 95}";
    let good = || service_env(port, &[("EXAMPLE_HEALTH", "ok")], strategy, "");

    // Nothing serves yet: the first version simply starts.
    let first = ledger.begin(&attempt("v1")).unwrap();
    let live = Rollout::new(&runtime, &recorder, first)
        .run(&good(), "v1", None)
        .await
        .unwrap();

    // Clients keep calling the stable port throughout.
    let stop = tokio_util::sync::CancellationToken::new();
    let traffic = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.is_cancelled() {
                answers.push(get(stable, "/").await.body);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            answers
        })
    };

    let second = ledger.begin(&attempt("v2")).unwrap();
    let live = Rollout::new(&runtime, &recorder, second)
        .run(&good(), "v2", Some(live))
        .await
        .unwrap();
    assert_eq!(live, Slot::Green);

    // v3 answers 500 on `/` while its health check passes: the analysis catches it.
    let bad = service_env(
        port,
        &[("EXAMPLE_HEALTH", "ok"), ("EXAMPLE_ROOT", "fail")],
        strategy,
        "",
    );
    let third = ledger.begin(&attempt("v3")).unwrap();
    let error = Rollout::new(&runtime, &recorder, third)
        .run(&bad, "v3", Some(live))
        .await
        .unwrap_err();
    assert!(matches!(error, RolloutError::Analysis { .. }), "{error}");
    assert!(error.to_string().contains("success rate 0.0%"), "{error}");
    stop.cancel();
    let answers = traffic.await.unwrap();
    assert_eq!(get(stable, "/").await.body, "api v2 green\n");
    assert!(
        !runtime.observe().await["api"].contains_key(&Slot::Blue),
        "the canary slot is retired"
    );

    // While v2 was a canary, both versions served; nothing but v1, v2 and v3's failures answered.
    assert!(answers.iter().any(|a| a == "api v1 blue\n") && answers.iter().any(|a| a == "api v2 green\n"));
    assert!(
        answers
            .iter()
            .all(|a| a == "api v1 blue\n" || a == "api v2 green\n" || a == "failing\n"),
        "{answers:?}"
    );
    let steps: Vec<String> = ledger.history("dev", 1).unwrap()[0]
        .steps
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(
        steps,
        [
            "api: start v3 in blue",
            "api: health of blue",
            "api: shift 20% to blue",
            "api: analyse 20% for 1s",
            "api: abort: all traffic back to green",
            "api: retire blue"
        ]
    );
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_per_commit_and_roll_back_with_the_rollout() {
    let Env {
        state, port, runtime, ..
    } = Env::new();
    let mut ledger = Env::ledger(&state);
    // The rollout's own connection, as in the agent.
    let recorder = plumb::ledger::Recorder::new(Env::ledger(&state));
    let journal = state.path().join("migrations.txt");
    let hook = |command: &str, timeout: &str| {
        format!(
            "migration:\n  command: [sh, -c, {command:?}]\n  rollbackCommand: [sh, -c, \"echo down >> $JOURNAL\"]\n  timeout: {timeout}\n"
        )
    };
    let journal_value = journal.to_str().unwrap();
    let make = |health: &str, command: &str, timeout: &str| {
        service_env(
            port,
            &[("EXAMPLE_HEALTH", health), ("JOURNAL", journal_value)],
            "blueGreen: {keepOldVersion: 0s}",
            &hook(command, timeout),
        )
    };
    let up = "echo up >> $JOURNAL";
    let read = || std::fs::read_to_string(&journal).unwrap_or_default();
    let mut roll = async |commit: &str, service: &Service, live: Option<Slot>| {
        let id = ledger.begin(&attempt(commit)).unwrap();
        let result = Rollout::new(&runtime, &recorder, id).run(service, commit, live).await;
        (id, result)
    };

    let (_, first) = roll("c1", &make("ok", up, "10s"), None).await;
    let live = first.unwrap();
    assert_eq!(read(), "up\n");
    // The same commit again (a retry, a second trigger): the migration does not run twice.
    let (_, again) = roll("c1", &make("ok", up, "10s"), Some(live)).await;
    let live = again.unwrap();
    assert_eq!(read(), "up\n");

    // A new commit whose version is unhealthy: migrated, then rolled back with it.
    let (_, failed) = roll("c2", &make("fail", up, "10s"), Some(live)).await;
    assert!(matches!(failed, Err(RolloutError::Unhealthy { .. })), "{failed:?}");
    assert_eq!(read(), "up\nup\ndown\n");

    // A migration that hangs is killed at its timeout, and nothing is deployed.
    let started = std::time::Instant::now();
    let (_, hung) = roll("c3", &make("ok", "sleep 30", "300ms"), Some(live)).await;
    let Err(RolloutError::Migration { reason, .. }) = hung else {
        panic!("{hung:?}")
    };
    assert!(reason.contains("did not finish within 300ms"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(runtime.observe().await["api"].len(), 1, "only the running slot");

    // An interrupted migration (started, never finished: the agent died) is not run again.
    let id = ledger.begin(&attempt("c4")).unwrap();
    ledger.migration_started(id, "api", "v1").unwrap();
    let retry = ledger.begin(&attempt("c4")).unwrap();
    let interrupted = Rollout::new(&runtime, &recorder, retry)
        .run(&make("ok", up, "10s"), "c4", Some(live))
        .await;
    assert!(
        matches!(interrupted, Err(RolloutError::MigrationInterrupted { .. })),
        "{interrupted:?}"
    );
    assert_eq!(read(), "up\nup\ndown\n");

    // The ledger's migration history says each run and how it ended, newest first.
    let history: Vec<(String, String)> = ledger
        .migrations("dev", 10)
        .unwrap()
        .into_iter()
        .map(|m| (m.commit, m.state))
        .collect();
    let expected: Vec<(String, String)> = [
        ("c4", "started"),
        ("c3", "failed"),
        ("c2", "rolled-back"),
        ("c1", "succeeded"),
    ]
    .iter()
    .map(|(c, s)| ((*c).to_owned(), (*s).to_owned()))
    .collect();
    assert_eq!(history, expected);
    // `plumb migrations` prints it from the state directory.
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_plumb"))
        .args(["migrations", "--env", "dev", "--state"])
        .arg(state.path())
        .output()
        .unwrap();
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let printed = String::from_utf8(printed.stdout).unwrap();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 4, "{printed}");
    assert!(
        lines[0].starts_with("api c4 started — interrupted: `plumb migrations resolve` says what the database has"),
        "{printed}"
    );
    assert!(
        lines[1].starts_with("api c3 failed: ") && lines[1].contains("did not finish within 300ms"),
        "{printed}"
    );
    assert!(lines[2].starts_with("api c2 rolled-back (started "), "{printed}");
    assert!(lines[3].starts_with("api c1 succeeded (started "), "{printed}");
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_port_is_served_at_both_until_the_old_version_retires() {
    let state = tempfile::tempdir().unwrap();
    let (old_port, new_port) = (free_port(), free_port());
    let old_stable: std::net::SocketAddr = format!("127.0.0.1:{old_port}").parse().unwrap();
    let new_stable: std::net::SocketAddr = format!("127.0.0.1:{new_port}").parse().unwrap();
    let runtime = LocalRuntime::new("dev", "127.0.0.1", 0, state.path(), Backoff::default()).unwrap();
    runtime
        .deploy(&service(old_port, "ok"), Slot::Blue, "v1")
        .await
        .unwrap();
    runtime
        .deploy(&service(new_port, "ok"), Slot::Green, "v2")
        .await
        .unwrap();
    for slot in [Slot::Blue, Slot::Green] {
        wait_healthy(&runtime.checks("api", slot).await.unwrap(), Duration::from_secs(20))
            .await
            .unwrap();
    }
    runtime.route("api", &[(Slot::Green, 100), (Slot::Blue, 0)]).await;
    assert_eq!(get(old_stable, "/").await.body, "api v2 green\n");
    assert_eq!(get(new_stable, "/").await.body, "api v2 green\n");

    runtime.retire("api", Slot::Blue).await;
    assert_eq!(get(new_stable, "/").await.body, "api v2 green\n");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(old_stable).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the old port is still served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_change_reaches_running_replicas_by_signal() {
    let Env {
        state: _state,
        port,
        stable,
        runtime,
        ..
    } = Env::new();
    let with = |greeting: &str, reload: &str| {
        let config = format!(
            "config:\n  file: app.json\n  reload: {reload}\n  values:\n    greeting: {greeting}\n    pool: {{max: 10}}\n"
        );
        service_env(port, &[("EXAMPLE_HEALTH", "ok")], "recreate: {}", &config)
    };
    runtime
        .deploy(&with("hello", "signal"), Slot::Blue, "v1")
        .await
        .unwrap();
    wait_healthy(
        &runtime.checks("api", Slot::Blue).await.unwrap(),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    runtime.route("api", &[(Slot::Blue, 100)]).await;
    let written = std::fs::read_to_string(runtime.slot_dir("api", Slot::Blue).join("app.json")).unwrap();
    assert_eq!(
        written,
        "{\n  \"greeting\": \"hello\",\n  \"pool\": {\n    \"max\": 10\n  }\n}\n"
    );
    assert!(get(stable, "/config").await.body.contains("hello"));

    // The same processes pick up the new file on SIGHUP: no restart, no rollout.
    assert!(runtime.reload(&with("bonjour", "signal"), Slot::Blue).await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Both replicas, round-robin: two answers in a row show the new value.
        let (a, b) = (get(stable, "/config").await.body, get(stable, "/config").await.body);
        if a.contains("bonjour") && b.contains("bonjour") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {a:?} / {b:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        runtime.observe().await["api"][&Slot::Blue].replicas,
        ["running", "running"]
    );

    // A service that reloads by restart leaves the change to a rollout.
    assert!(!runtime.reload(&with("hola", "restart"), Slot::Blue).await.unwrap());
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_is_judged_by_a_prometheus_query_too() {
    let url = tokio::task::spawn_blocking(crate::prometheus::url).await.unwrap();
    let Env {
        state, port, runtime, ..
    } = Env::new();
    let mut ledger = Env::ledger(&state);
    // The rollout's own connection, as in the agent.
    let recorder = plumb::ledger::Recorder::new(Env::ledger(&state));
    let gated = |url: &str| {
        let strategy = format!(
            "canary: {{steps: [{{weight: 50, pause: 1s}}], minRequests: 0, prometheus: {{url: {url:?}, query: '{}'}}}}",
            crate::prometheus::QUERY
        );
        service_env(port, &[("EXAMPLE_HEALTH", "ok")], &strategy, "")
    };
    let first = ledger.begin(&attempt("v1")).unwrap();
    let live = Rollout::new(&runtime, &recorder, first)
        .run(&gated(url), "v1", None)
        .await
        .unwrap();
    assert_eq!(live, Slot::Blue);

    // Green's rate, 99.5 %, holds the 95 % threshold: promoted.
    let second = ledger.begin(&attempt("v2")).unwrap();
    let live = Rollout::new(&runtime, &recorder, second)
        .run(&gated(url), "v2", Some(live))
        .await
        .unwrap();
    assert_eq!(live, Slot::Green);

    // Blue's, 42 %, does not: the canary is aborted though every request it answered was fine.
    let third = ledger.begin(&attempt("v3")).unwrap();
    let error = Rollout::new(&runtime, &recorder, third)
        .run(&gated(url), "v3", Some(live))
        .await
        .unwrap_err();
    assert!(
        matches!(error, RolloutError::Analysis { .. })
            && error
                .to_string()
                .contains("Prometheus reports a success rate of 42.0%, under 95%"),
        "{error}"
    );

    // A Prometheus that cannot be asked cannot vouch for the canary either.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let fourth = ledger.begin(&attempt("v4")).unwrap();
    let error = Rollout::new(&runtime, &recorder, fourth)
        .run(&gated(&closed), "v4", Some(live))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("cannot ask Prometheus"), "{error}");
    assert_eq!(runtime.observe().await["api"][&Slot::Green].version, "v2");
    runtime.shutdown().await;
}
