//! Chaos on real parts: the state directory's disk fills up, a replica freezes during its health
//! checks, the Docker Engine is killed in the middle of a rollout. Each ends consistent — the old release or the new one fully live, the ledger whole
//! and verified, nothing left behind — and the agent says what stops it while it is stopped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use plumb::agent::Settings;
use plumb::ledger::{Ledger, Outcome};
use plumb::secret::Secret;

use crate::agent::{Running, TOKEN, api_get, api_post, eventually, outcome, release};
use crate::harness::{Web, agent_settings, trusted};
use crate::keys::TestKey;
use plumb::lab::gone;

/// A filesystem of its own, `size` large, mounted over `dir` until dropped.
struct SmallDisk {
    dir: PathBuf,
    filler: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "plumb-chaos"])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root (CI runs as root)");
        SmallDisk {
            dir: dir.to_owned(),
            filler: dir.join("filler"),
        }
    }

    /// Takes every byte left.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(&self.filler).unwrap();
        for chunk in [1 << 20, 4096, 512] {
            let bytes = vec![0u8; chunk];
            while file.write_all(&bytes).is_ok() {}
        }
        let _ = file.sync_all();
    }

    /// Gives the space back.
    fn free(&self) {
        std::fs::remove_file(&self.filler).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// The environment's status from the API.
async fn status(api: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&api_get(api, "/api/v1/environments/dev").await.body).unwrap()
}

/// Waits (bounded) until `dev`'s status satisfies `test`; the status.
async fn status_until(api: SocketAddr, what: &str, test: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let found = eventually(Duration::from_secs(60), || async {
        let status = status(api).await;
        test(&status).then_some(status)
    })
    .await;
    match found {
        Some(status) => status,
        None => panic!("the status never showed {what}: {}", status(api).await),
    }
}

/// The value of metric series `series` (name and labels, as exposed).
async fn metric(api: SocketAddr, series: &str) -> Option<f64> {
    let body = api_get(api, "/metrics").await.body;
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Every attempt of `dev` in the ledger under `state`, oldest first, once it verifies.
fn verified_outcomes(state: &Path) -> Vec<(String, Option<Outcome>)> {
    let ledger = Ledger::open_read_only(&state.join("ledger.sqlite")).unwrap();
    assert!(ledger.verify().unwrap().is_ok(), "the ledger verifies");
    crate::agent::outcomes(state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_agent_acting_and_loses_nothing() {
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Web::new(port, "r1", "blueGreen: {keepOldVersion: 0s}").write(&upstream);
    let first = upstream.commit_signed("web r1", &alice);

    let state = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(state.path(), "48m");
    let settings = Settings {
        heal_every: Duration::from_millis(200),
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        api_token: Some(Secret::new(TOKEN)),
        ..agent_settings(&upstream, &root, state.path())
    };
    let agent = Running::start(settings).await;
    let api = agent.handle.api.unwrap();
    assert_eq!(outcome(state.path(), "dev", &first).await, Some(Outcome::Succeeded));
    assert_eq!(release(addr).await.as_deref(), Some("r1"));

    // Full while a new commit arrives: it cannot even be fetched. What runs keeps running, and
    // the status and metrics say why nothing happens.
    disk.fill();
    Web::new(port, "r2", "blueGreen: {keepOldVersion: 0s}").write(&upstream);
    let second = upstream.commit_signed("web r2", &alice);
    agent.push();
    let blocked = status_until(api, "the failed fetch", |s| s["blocked"]["fetch"].is_string()).await;
    let reason = blocked["blocked"]["fetch"].as_str().unwrap();
    assert!(reason.contains("space"), "the reason names the full disk: {reason}");
    assert_eq!(
        metric(api, "plumb_blocked{environment=\"dev\",cause=\"fetch\"}").await,
        Some(1.0)
    );
    assert_eq!(release(addr).await.as_deref(), Some("r1"));

    // Space returns: the next fetch brings the commit, and it is applied.
    disk.free();
    agent.push();
    assert_eq!(outcome(state.path(), "dev", &second).await, Some(Outcome::Succeeded));
    assert_eq!(release(addr).await.as_deref(), Some("r2"));
    status_until(api, "the fetch block lifted", |s| s.get("blocked").is_none()).await;
    assert_eq!(
        metric(api, "plumb_blocked{environment=\"dev\",cause=\"fetch\"}").await,
        Some(0.0)
    );

    // Full once the commit is fetched (it waits for a manual sync): the sync is refused because
    // nothing can be recorded, and nothing changes.
    Web::new(port, "r3", "blueGreen: {keepOldVersion: 0s}").write(&upstream);
    upstream.write(
        "environments/dev.yaml",
        "apiVersion: plumb/v1\nkind: Environment\nname: dev\ntarget:\n  local: {}\nsync: {automatic: false}\n",
    );
    let third = upstream.commit_signed("web r3, synced by hand", &alice);
    agent.push();
    status_until(api, "the head waiting for a sync", |s| s["head"] == third.as_str()).await;
    let before = verified_outcomes(state.path());
    disk.fill();
    let sync = "/api/v1/environments/dev/sync";
    let bearer = [("authorization", format!("Bearer {TOKEN}"))];
    let refused = api_post(api, sync, &bearer, b"").await;
    assert_eq!(refused.status, 500, "{}", refused.body);
    assert!(
        refused.body.contains("full"),
        "the answer names the full disk: {}",
        refused.body
    );
    let blocked = status_until(api, "the ledger's failure", |s| s["blocked"]["ledger"].is_string()).await;
    assert!(
        blocked["blocked"]["ledger"]
            .as_str()
            .unwrap()
            .contains("nothing is applied")
    );
    assert_eq!(
        metric(api, "plumb_blocked{environment=\"dev\",cause=\"ledger\"}").await,
        Some(1.0)
    );
    assert_eq!(release(addr).await.as_deref(), Some("r2"));

    // Space returns: the ledger is found writable again at the next check, the sync goes
    // through, and no entry of before was lost.
    disk.free();
    status_until(api, "the ledger block lifted", |s| s.get("blocked").is_none()).await;
    let synced = api_post(api, sync, &bearer, b"").await;
    assert_eq!(synced.status, 200, "{}", synced.body);
    assert_eq!(release(addr).await.as_deref(), Some("r3"));
    let after = verified_outcomes(state.path());
    assert_eq!(after[..before.len()], before[..], "every entry of before is kept");
    assert_eq!(
        after.last(),
        Some(&(third.clone(), Some(Outcome::Succeeded))),
        "{after:?}"
    );
    agent.stop().await;
    drop(disk);
}

/// The processes (other than this one) whose environment holds `variable`, exactly.
fn processes_with(variable: &str) -> Vec<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.to_owned();
            if pid == me {
                return None;
            }
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let found = environ.split(|b| *b == 0).any(|v| v == variable.as_bytes());
            found.then(|| pid.parse().ok())?
        })
        .filter(|pid| !gone(*pid))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_frozen_during_its_health_checks_is_rolled_back_and_killed() {
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let web = |release| Web {
        checks: ("200ms", 3),
        ..Web::new(port, release, "blueGreen: {keepOldVersion: 0s}")
    };
    web("frozen-1").write(&upstream);
    let first = upstream.commit_signed("web r1", &alice);
    let state = tempfile::tempdir().unwrap();
    let agent = Running::start(agent_settings(&upstream, &root, state.path())).await;
    assert_eq!(outcome(state.path(), "dev", &first).await, Some(Outcome::Succeeded));

    // Release 2's checks start 2 s after its replicas: time enough to freeze them both first
    // (found by their release's name, which is this test's own).
    web("frozen-2").write(&upstream);
    let service = upstream.path().join("services/web.yaml");
    let text = std::fs::read_to_string(&service).unwrap();
    upstream.write(
        "services/web.yaml",
        &text.replace("    timeout: 1s\n", "    timeout: 1s\n    initialDelay: 2s\n"),
    );
    let second = upstream.commit_signed("web r2", &alice);
    agent.push();
    let frozen = eventually(Duration::from_secs(30), || async {
        let pids = processes_with("EXAMPLE_RELEASE=frozen-2");
        (pids.len() == 2).then_some(pids)
    })
    .await
    .expect("release 2's two replicas start");
    for pid in &frozen {
        // SAFETY: kill(2) on a replica this test's agent started.
        assert_eq!(unsafe { libc::kill(*pid as i32, libc::SIGSTOP) }, 0);
    }

    // A frozen replica accepts connections (the kernel does) and never answers: its checks
    // time out, the release is rolled back, and the frozen processes are killed, not left.
    let reason = match outcome(state.path(), "dev", &second).await {
        Some(Outcome::RolledBack(reason)) => reason,
        other => panic!("release 2 was not rolled back: {other:?}"),
    };
    assert!(reason.contains("ready"), "{reason}");
    assert_eq!(release(addr).await.as_deref(), Some("frozen-1"));
    let killed = eventually(Duration::from_secs(60), || async {
        frozen.iter().all(|pid| gone(*pid)).then_some(())
    })
    .await;
    assert!(killed.is_some(), "the frozen replicas are gone");
    assert!(processes_with("EXAMPLE_RELEASE=frozen-2").is_empty());
    assert_eq!(
        verified_outcomes(state.path()),
        [
            (first.clone(), Some(Outcome::Succeeded)),
            (second.clone(), Some(Outcome::RolledBack(reason)))
        ]
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_engine_killed_mid_rollout_ends_with_one_release_fully_live() {
    let mut engine = crate::docker::OwnEngine::start();
    let image = crate::docker::example_image();
    engine.load(image);
    let project = "cchaos";
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let host = engine.host.clone();
    let write = |release: &'static str, upstream: &crate::harness::TestRepo| {
        Web {
            image: Some((image, &host)),
            environment: project,
            checks: ("200ms", 5),
            ..Web::new(port, release, "blueGreen: {keepOldVersion: 0s}")
        }
        .write(upstream);
        upstream.write(
            &format!("environments/{project}.yaml"),
            &format!(
                "apiVersion: plumb/v1\nkind: Environment\nname: {project}\ntarget:\n  compose: {{dockerHost: {host:?}}}\nsync: {{prune: true, selfHeal: true}}\n"
            ),
        );
    };
    let state = tempfile::tempdir().unwrap();
    write("r1", &upstream);
    let first = upstream.commit_signed("web r1", &alice);
    let agent = Running::start(Settings {
        heal_every: Duration::from_millis(500),
        ..agent_settings(&upstream, &root, state.path())
    })
    .await;
    assert_eq!(outcome(state.path(), project, &first).await, Some(Outcome::Succeeded));
    assert_eq!(release(addr).await.as_deref(), Some("r1"));

    // r2's checks start 3 s after its containers: the engine dies in between.
    write("r2", &upstream);
    let service = upstream.path().join("services/web.yaml");
    let text = std::fs::read_to_string(&service).unwrap();
    upstream.write(
        "services/web.yaml",
        &text.replace("    timeout: 1s\n", "    timeout: 1s\n    initialDelay: 3s\n"),
    );
    let second = upstream.commit_signed("web r2", &alice);
    agent.push();
    let green = eventually(Duration::from_secs(60), || async {
        let listed = engine.docker(&["ps", "-q", "--filter", "label=plumb.slot=green"]);
        (listed.split_whitespace().count() == 2).then_some(())
    })
    .await;
    assert!(green.is_some(), "r2's containers start");
    engine.kill();
    let ended = outcome(state.path(), project, &second).await;
    assert!(
        matches!(ended, Some(Outcome::RolledBack(_) | Outcome::Failed(_))),
        "r2 cannot finish without the engine: {ended:?}"
    );

    // The engine comes back: drift from the rollback point is healed, and the environment
    // converges on r1, fully live (in whichever slot), with nothing of r2 left.
    engine.restart();
    let converged = eventually(Duration::from_secs(120), || async {
        let all = engine.docker(&["ps", "-a", "--format", "{{.Label \"plumb.version\"}} {{.State}}"]);
        let states: Vec<&str> = all.lines().collect();
        let one_version = states.windows(2).all(|w| w[0] == w[1]);
        let serving = release(addr).await;
        (states.len() == 2 && one_version && states[0].ends_with(" running") && serving.as_deref() == Some("r1"))
            .then_some(())
    })
    .await;
    if converged.is_none() {
        let ledger = Ledger::open_read_only(&state.path().join("ledger.sqlite")).unwrap();
        let attempts: Vec<String> = ledger
            .history(project, 20)
            .unwrap()
            .iter()
            .map(|r| {
                let steps: Vec<String> = r.steps.iter().map(|s| format!("{} {:?}", s.name, s.error)).collect();
                format!("{} {:?} {:?} {steps:?}", r.attempt.commit, r.attempt.trigger, r.outcome)
            })
            .collect();
        panic!(
            "r1 fully live and nothing of r2 left: {}; answers: {:?}; attempts: {attempts:#?}",
            engine.docker(&[
                "ps",
                "-a",
                "--format",
                "{{.Names}} {{.Label \"plumb.version\"}} {{.Status}}"
            ]),
            release(addr).await
        );
    }
    let ledger = Ledger::open_read_only(&state.path().join("ledger.sqlite")).unwrap();
    assert!(ledger.verify().unwrap().is_ok(), "the ledger verifies");
    assert_eq!(ledger.rollback_point(project).unwrap().as_deref(), Some(first.as_str()));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_stopped_mid_rollout_ends_with_one_release_fully_live() {
    // No other test uses the cluster while parts of it are down.
    let _cluster = crate::control_plane::exclusive().await;
    let namespace = "kchaos";
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let state = tempfile::tempdir().unwrap();
    crate::kube::write(&upstream, namespace, "r1", "blueGreen: {keepOldVersion: 0s}", true, "");
    let first = upstream.commit_signed("web r1", &alice);
    let agent = Running::start(Settings {
        heal_every: Duration::from_secs(2),
        ..agent_settings(&upstream, &root, state.path())
    })
    .await;
    assert_eq!(outcome(state.path(), namespace, &first).await, Some(Outcome::Succeeded));

    // r2's pods start; while they are probed, the API server dies, and comes back 5 s later.
    let second = roll_out_while(&mut upstream, &alice, &agent, namespace, "r2", || {
        crate::control_plane::kill_apiserver();
        std::thread::sleep(Duration::from_secs(5));
        crate::control_plane::restart_apiserver();
    })
    .await;
    one_release_fully_live(state.path(), namespace, &second, "r2", "r1").await;

    // r3's pods start; while they are probed, etcd freezes for 5 s.
    let third = roll_out_while(&mut upstream, &alice, &agent, namespace, "r3", || {
        crate::control_plane::freeze_etcd(true);
        std::thread::sleep(Duration::from_secs(5));
        crate::control_plane::freeze_etcd(false);
    })
    .await;
    let previous = if outcome(state.path(), namespace, &second).await == Some(Outcome::Succeeded) {
        "r2"
    } else {
        "r1"
    };
    one_release_fully_live(state.path(), namespace, &third, "r3", previous).await;
    let ledger = Ledger::open_read_only(&state.path().join("ledger.sqlite")).unwrap();
    assert!(ledger.verify().unwrap().is_ok(), "the ledger verifies");
    agent.stop().await;
}

/// The release the Deployment `name` of `namespace` runs.
fn release_in(namespace: &str, name: &str) -> String {
    crate::kube::deployment_field(
        namespace,
        name,
        "{.spec.template.spec.containers[0].env[?(@.name==\"EXAMPLE_RELEASE\")].value}",
    )
}

/// Commits `release` (blue-green), and runs `fault` (a fault injected for a while, on a
/// thread of its own) as soon as its Deployment is applied; the commit.
async fn roll_out_while(
    upstream: &mut crate::harness::TestRepo,
    alice: &TestKey,
    agent: &Running,
    namespace: &str,
    release: &'static str,
    fault: impl FnOnce() + Send + 'static,
) -> String {
    let serving = crate::kube::serving_slot(namespace);
    crate::kube::write(
        upstream,
        namespace,
        release,
        "blueGreen: {keepOldVersion: 0s}",
        true,
        "",
    );
    let commit = upstream.commit_signed(&format!("web {release}"), alice);
    agent.push();
    let next = if serving == "blue" { "web-green" } else { "web-blue" };
    let applied = eventually(Duration::from_secs(120), || async {
        (release_in(namespace, next) == release).then_some(())
    })
    .await;
    assert!(applied.is_some(), "{release}'s Deployment is applied");
    tokio::task::spawn_blocking(fault).await.unwrap();
    commit
}

/// Waits until the attempt for `commit` (of `release`) ended, then until the environment runs
/// one release fully: the Service selects one color, whose Deployment runs `release` when the
/// attempt succeeded and `previous` otherwise, on every replica, ready; the other color holds no
/// pod.
async fn one_release_fully_live(state: &Path, namespace: &str, commit: &str, release: &str, previous: &str) {
    let ended = outcome(state, namespace, commit).await;
    let expected = match &ended {
        Some(Outcome::Succeeded) => release,
        Some(Outcome::RolledBack(_) | Outcome::Failed(_)) => previous,
        other => panic!("{commit}'s attempt: {other:?}"),
    };
    let settled = eventually(Duration::from_secs(180), || async {
        let serving = crate::kube::serving_slot(namespace);
        let idle = if serving == "blue" { "green" } else { "blue" };
        let live = format!("web-{serving}");
        let ready = crate::kube::deployment_field(namespace, &live, "{.status.readyReplicas}");
        let idle_pods = crate::control_plane::kubectl(&[
            "-n",
            namespace,
            "get",
            "pods",
            "-l",
            &format!("plumb.dev/slot={idle}"),
            "-o",
            "name",
        ]);
        (release_in(namespace, &live) == expected && ready == "2" && idle_pods.trim().is_empty()).then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "{expected} fully live after {ended:?}: {}",
        crate::control_plane::kubectl(&["-n", namespace, "get", "deploy,pods,svc", "-o", "wide"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_fetch_that_fails_is_shown_on_the_environments_named() {
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Web::new(port, "r1", "recreate: {}").write(&upstream);
    let first = upstream.commit_signed("web r1", &alice);
    let state = tempfile::tempdir().unwrap();
    let mut settings = Settings {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        api_token: Some(Secret::new(TOKEN)),
        ..agent_settings(&upstream, &root, state.path())
    };
    settings.repositories[0].environments = Some(vec!["dev".to_owned()]);
    // The repository is away when the agent starts.
    let away = upstream.path().with_extension("away");
    std::fs::rename(upstream.path(), &away).unwrap();
    let agent = Running::start(settings).await;
    let api = agent.handle.api.unwrap();
    let blocked = status_until(api, "the failed first fetch", |s| s["blocked"]["fetch"].is_string()).await;
    let reason = blocked["blocked"]["fetch"].as_str().unwrap();
    assert!(
        reason.contains("cannot fetch `config`"),
        "the reason names the repository: {reason}"
    );

    // Back: the next fetch applies the head, and the block is lifted.
    std::fs::rename(&away, upstream.path()).unwrap();
    agent.push();
    assert_eq!(outcome(state.path(), "dev", &first).await, Some(Outcome::Succeeded));
    assert_eq!(release(addr).await.as_deref(), Some("r1"));
    status_until(api, "the fetch block lifted", |s| s.get("blocked").is_none()).await;
}
