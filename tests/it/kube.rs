//! The kubernetes target against a real cluster (`control_plane`): a control plane and one real
//! node, whose kubelet runs the pods — the example app from the `plumb` binary under test, ready
//! by its readiness probe on `/health`, or never ready when `EXAMPLE_HEALTH=fail` — and Jobs,
//! which succeed or fail by their command.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use plumb::agent::Settings;
use plumb::ledger::{Ledger, Outcome};
use plumb::spec::model::environment::{GatewayRef, KubernetesTarget};
use plumb::spec::model::scalar::Name;
use plumb::target::kubernetes::KubernetesRuntime;
use tokio_util::sync::CancellationToken;

use crate::agent::{Running, eventually, newest_attempt, next_outcome, outcome, succeeds};
use crate::control_plane::{example_image, kubeconfig, kubectl};
use crate::harness::{TestRepo, agent_settings, trusted};
use crate::keys::TestKey;

/// A repository of environment `namespace` on the control plane, with service `web`: the
/// example app, listening on every address of its pod (the target sets `HOST`; the kubelet probes the pod's IP), ready
/// by its `/health` unless `healthy` is false. A healthy release has 150 s to roll out (real
/// pods start in seconds, more when every test rolls out at once); an unhealthy one fails after
/// 10 s.
pub(crate) fn write(repo: &TestRepo, namespace: &str, release: &str, strategy: &str, healthy: bool, extra: &str) {
    repo.write(
        "plumb.yaml",
        &format!("apiVersion: plumb/v1\nkind: Repository\nenvironments: [{namespace}]\n"),
    );
    environment(repo, namespace, "");
    let (health, deadline) = if healthy { ("ok", "150s") } else { ("fail", "10s") };
    repo.write(
        "services/web.yaml",
        &format!(
            "apiVersion: plumb/v1\nkind: Service\nname: web\nimage: {}\ncommand: [/plumb, example-app]\nreplicas: 2\n\
             ports:\n  - {{name: http, port: 8080}}\nprogressDeadline: {deadline}\nstrategy:\n  {strategy}\n{extra}\
             healthChecks:\n  - {{name: ready, http: {{path: /health, port: http}}, interval: 1s, timeout: 1s}}\n\
             env:\n  - {{name: EXAMPLE_RELEASE, value: {release}}}\n  - {{name: EXAMPLE_HEALTH, value: {health}}}\n",
            example_image()
        ),
    );
}

/// The environment `namespace` on the control plane, its kubernetes target with `more` settings.
pub(crate) fn environment(repo: &TestRepo, namespace: &str, more: &str) {
    repo.write(
        &format!("environments/{namespace}.yaml"),
        &format!(
            "apiVersion: plumb/v1\nkind: Environment\nname: {namespace}\ntarget:\n  kubernetes: {{namespace: {namespace}, kubeconfig: {:?}{more}}}\nsync: {{prune: true}}\n",
            kubeconfig().display().to_string()
        ),
    );
}

/// Field `path` (a JSONPath) of Deployment `name` in `namespace`.
pub(crate) fn deployment_field(namespace: &str, name: &str, path: &str) -> String {
    kubectl(&[
        "-n",
        namespace,
        "get",
        "deployment",
        name,
        "-o",
        &format!("jsonpath={path}"),
    ])
}

/// Why the attempt for `commit` in `namespace` was rolled back (it must have been).
pub(crate) async fn rolled_back(state: &Path, namespace: &str, commit: &str) -> String {
    match outcome(state, namespace, commit).await {
        Some(Outcome::RolledBack(reason)) => reason,
        other => panic!("{commit}: {other:?}"),
    }
}

/// The slot the Service `web` of `namespace` selects (empty when it selects both).
pub(crate) fn serving_slot(namespace: &str) -> String {
    kubectl(&[
        "-n",
        namespace,
        "get",
        "service",
        "web",
        "-o",
        "jsonpath={.spec.selector.plumb\\.dev/slot}",
    ])
}

/// The release a Deployment's template runs, `None` when it does not exist.
fn release_of(namespace: &str, deployment: &str) -> Option<String> {
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args([
            "-n",
            namespace,
            "get",
            "deployment",
            deployment,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"EXAMPLE_RELEASE\")].value}",
        ])
        .output()
        .unwrap();
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_migrations_and_rollback_on_a_real_control_plane() {
    let _cluster = crate::control_plane::shared().await;
    let namespace = "kbluegreen";
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let state = tempfile::tempdir().unwrap();

    write(&upstream, namespace, "r1", "blueGreen: {keepOldVersion: 0s}", true, "");
    let first = upstream.commit_signed("web r1", &alice);
    let agent = Running::start(Settings {
        heal_every: Duration::from_secs(3600),
        ..agent_settings(&upstream, &root, state.path())
    })
    .await;
    assert_eq!(outcome(state.path(), namespace, &first).await, Some(Outcome::Succeeded));
    assert_eq!(release_of(namespace, "web-blue").as_deref(), Some("r1"));
    assert_eq!(serving_slot(namespace), "blue");
    let managers = kubectl(&[
        "-n",
        namespace,
        "get",
        "deployment",
        "web-blue",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(
        managers.split_whitespace().any(|m| m == "plumb"),
        "applied by field manager plumb: {managers}"
    );
    assert_eq!(
        deployment_field(namespace, "web-blue", "{.metadata.annotations.plumb\\.dev/commit}"),
        first,
        "the Deployment names the commit it comes from"
    );

    // Blue-green with a migration Job: green takes the Service, blue is retired.
    write(
        &upstream,
        namespace,
        "r2",
        "blueGreen: {keepOldVersion: 0s}",
        true,
        "migration:\n  command: [/plumb, --version]\n  timeout: 30s\n",
    );
    let second = upstream.commit_signed("web r2, migrated", &alice);
    agent.push();
    assert_eq!(
        outcome(state.path(), namespace, &second).await,
        Some(Outcome::Succeeded)
    );
    assert_eq!(release_of(namespace, "web-green").as_deref(), Some("r2"));
    assert_eq!(serving_slot(namespace), "green");
    assert_eq!(
        deployment_field(namespace, "web-blue", "{.spec.replicas}"),
        "0",
        "the old color is scaled to zero, its Deployment kept"
    );
    assert_eq!(release_of(namespace, "web-blue").as_deref(), Some("r1"));
    // The Job's output, read from its pod through the API server and kubelet, is kept with
    // its step.
    let ledger = Ledger::open_read_only(&state.path().join("ledger.sqlite")).unwrap();
    let attempts = ledger.history(namespace, 10).unwrap();
    let migrated = attempts
        .iter()
        .flat_map(|a| &a.steps)
        .find(|s| s.name == "web: migrate")
        .expect("a migration step");
    assert!(
        migrated.output.as_deref().is_some_and(|o| o.contains("plumb")),
        "{migrated:?}"
    );

    // Pods that never become ready: the progress deadline fails the rollout, green stays.
    write(&upstream, namespace, "r3", "blueGreen: {keepOldVersion: 0s}", false, "");
    let bad = upstream.commit_signed("web r3, never ready", &alice);
    agent.push();
    let reason = rolled_back(state.path(), namespace, &bad).await;
    assert!(
        reason.contains("web-blue") && reason.contains("not available"),
        "{reason}"
    );
    assert_eq!(serving_slot(namespace), "green");
    assert_eq!(release_of(namespace, "web-green").as_deref(), Some("r2"));

    // A failing migration Job fails the rollout before traffic moves.
    write(
        &upstream,
        namespace,
        "r4",
        "blueGreen: {keepOldVersion: 0s}",
        true,
        "migration:\n  command: [/plumb, no-such-command]\n  timeout: 30s\n",
    );
    let unmigrated = upstream.commit_signed("web r4, migration fails", &alice);
    agent.push();
    rolled_back(state.path(), namespace, &unmigrated).await;
    assert_eq!(release_of(namespace, "web-green").as_deref(), Some("r2"));

    agent.stop().await;
}

/// A namespace's environment with release r1 of `web` applied by an agent (watching, checking
/// for drift every half second) that follows `upstream`.
struct KubeScenario {
    namespace: &'static str,
    alice: TestKey,
    upstream: TestRepo,
    root: String,
    state: tempfile::TempDir,
    agent: Running,
}

impl KubeScenario {
    async fn start(namespace: &'static str) -> KubeScenario {
        let alice = TestKey::new("alice");
        let (mut upstream, root) = trusted(&alice);
        let state = tempfile::tempdir().unwrap();
        write(&upstream, namespace, "r1", "recreate: {}", true, "");
        let first = upstream.commit_signed("web r1", &alice);
        let agent = KubeScenario::agent(&upstream, &root, state.path(), Duration::from_millis(500)).await;
        assert_eq!(outcome(state.path(), namespace, &first).await, Some(Outcome::Succeeded));
        KubeScenario {
            namespace,
            alice,
            upstream,
            root,
            state,
            agent,
        }
    }

    async fn agent(upstream: &TestRepo, root: &str, state: &Path, heal: Duration) -> Running {
        Running::start(Settings {
            heal_every: heal,
            listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            ..agent_settings(upstream, root, state)
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_and_rolling_and_their_failures_on_a_real_kubelet() {
    let _cluster = crate::control_plane::shared().await;
    let KubeScenario {
        namespace,
        alice,
        mut upstream,
        state,
        agent,
        ..
    } = KubeScenario::start("kstrategies").await;

    // Recreate and rolling by the Deployment's own strategy, in the serving color (canary, in
    // the other color, needs a Gateway: its own test). Then each one's failure: pods that never
    // become ready fail the rollout at the progress deadline, and the release before serves
    // again — from the same color, but after a recreate, which had stopped it.
    for (release, strategy, kind, in_place) in [
        ("r2", "recreate: {}", "Recreate", true),
        ("r3", "rolling: {maxSurge: 1, maxUnavailable: 0}", "RollingUpdate", true),
    ] {
        let before = serving_slot(namespace);
        write(&upstream, namespace, release, strategy, true, "");
        let commit = upstream.commit_signed(&format!("web {release}"), &alice);
        agent.push();
        assert_eq!(
            outcome(state.path(), namespace, &commit).await,
            Some(Outcome::Succeeded),
            "{strategy}"
        );
        let serving = serving_slot(namespace);
        let deployment = format!("web-{serving}");
        assert_eq!(
            release_of(namespace, &deployment).as_deref(),
            Some(release),
            "{strategy}"
        );
        assert_eq!(serving == before, in_place, "{strategy}");
        assert_eq!(deployment_field(namespace, &deployment, "{.spec.strategy.type}"), kind);
        if kind == "RollingUpdate" {
            let limits = deployment_field(
                namespace,
                &deployment,
                "{.spec.strategy.rollingUpdate.maxSurge}/{.spec.strategy.rollingUpdate.maxUnavailable}",
            );
            assert_eq!(limits, "1/0");
        }

        write(&upstream, namespace, "never-ready", strategy, false, "");
        let commit = upstream.commit_signed("web never ready", &alice);
        agent.push();
        let reason = rolled_back(state.path(), namespace, &commit).await;
        assert!(reason.contains("not available"), "{strategy}: {reason}");
        let now = serving_slot(namespace);
        assert_eq!(
            release_of(namespace, &format!("web-{now}")).as_deref(),
            Some(release),
            "{strategy}"
        );
        if kind != "Recreate" || !in_place {
            assert_eq!(now, serving, "{strategy}");
        }
    }

    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_by_another_manager_is_named_and_taken_back_only_when_forced() {
    let _cluster = crate::control_plane::shared().await;
    let KubeScenario {
        namespace,
        alice,
        mut upstream,
        state,
        agent,
        ..
    } = KubeScenario::start("kdrift").await;

    let set_image_by_hand = |deployment: &str| {
        let target = format!("deployment/{deployment}");
        kubectl(&[
            "-n",
            namespace,
            "set",
            "image",
            &target,
            "web=registry.example/web:by-hand",
        ]);
    };
    // A field another manager took from plumb is drift, named, but only reported while the
    // environment does not force: an apply would conflict, and does, naming it.
    let deployment = format!("web-{}", serving_slot(namespace));
    set_image_by_hand(&deployment);
    let api = agent.handle.api.unwrap();
    let drift = eventually(Duration::from_secs(30), || async {
        let status = crate::http::get(api, &format!("/api/v1/environments/{namespace}"))
            .await
            .body;
        status
            .contains(".spec.template.spec.containers[name=\\\"web\\\"].image (by kubectl-set)")
            .then_some(status)
    })
    .await;
    assert!(drift.is_some(), "the status names the field taken and its manager");
    assert_eq!(
        deployment_field(namespace, &deployment, "{.spec.template.spec.containers[0].image}"),
        "registry.example/web:by-hand",
        "not taken back without force"
    );
    write(&upstream, namespace, "r5", "recreate: {}", true, "");
    let conflicted = upstream.commit_signed("web r5", &alice);
    agent.push();
    let reason = rolled_back(state.path(), namespace, &conflicted).await;
    assert!(
        reason.contains("conflict") && reason.contains("kubectl") && reason.contains("force: true"),
        "{reason}"
    );
    environment(&upstream, namespace, ", force: true");
    let forced = upstream.commit_signed("web r5, forced", &alice);
    agent.push();
    assert_eq!(
        outcome(state.path(), namespace, &forced).await,
        Some(Outcome::Succeeded)
    );
    assert_eq!(
        deployment_field(namespace, &deployment, "{.spec.template.spec.containers[0].image}"),
        example_image()
    );
    // Forcing, a field taken is taken back as drift, without a commit.
    let deployment = format!("web-{}", serving_slot(namespace));
    set_image_by_hand(&deployment);
    let restored = eventually(Duration::from_secs(60), || async {
        let serving = format!("web-{}", serving_slot(namespace));
        let image = deployment_field(namespace, &serving, "{.spec.template.spec.containers[0].image}");
        (image == example_image()).then_some(())
    })
    .await;
    assert!(restored.is_some(), "the image is taken back");

    // Another field manager: a label of its own is not drift; replicas — plumb's field — are.
    let serving = serving_slot(namespace);
    let deployment = format!("web-{serving}");
    kubectl(&["-n", namespace, "label", "deployment", &deployment, "team=payments"]);
    kubectl(&["-n", namespace, "scale", "deployment", &deployment, "--replicas=5"]);
    let healed = eventually(Duration::from_secs(60), || async {
        let replicas = kubectl(&[
            "-n",
            namespace,
            "get",
            "deployment",
            &deployment,
            "-o",
            "jsonpath={.spec.replicas}",
        ]);
        (replicas == "2").then_some(())
    })
    .await;
    assert!(healed.is_some(), "the scale by hand is corrected");
    let labels = kubectl(&[
        "-n",
        namespace,
        "get",
        "deployment",
        &deployment,
        "-o",
        "jsonpath={.metadata.labels.team}",
    ]);
    assert_eq!(labels, "payments", "another manager's field is left alone");

    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_agent_touches_nothing_and_a_removed_service_is_pruned() {
    let _cluster = crate::control_plane::shared().await;
    let KubeScenario {
        namespace,
        alice,
        mut upstream,
        root,
        state,
        agent,
    } = KubeScenario::start("kprune").await;
    let deployment = format!("web-{}", serving_slot(namespace));

    // A new agent over the same state finds everything in place: nothing is applied again.
    agent.stop().await;
    let generation = kubectl(&[
        "-n",
        namespace,
        "get",
        "deployment",
        &deployment,
        "-o",
        "jsonpath={.metadata.generation}",
    ]);
    let before = newest_attempt(state.path(), namespace);
    let agent = KubeScenario::agent(&upstream, &root, state.path(), Duration::from_secs(3600)).await;
    assert_eq!(
        next_outcome(state.path(), namespace, before).await,
        Some(Outcome::Succeeded),
        "the new agent applied the head over what runs"
    );
    let after = kubectl(&[
        "-n",
        namespace,
        "get",
        "deployment",
        &deployment,
        "-o",
        "jsonpath={.metadata.generation}",
    ]);
    assert_eq!(generation, after, "the Deployment was not touched");

    // With the periodic check an hour away, the watches alone bring a scale by hand to light.
    kubectl(&["-n", namespace, "scale", "deployment", &deployment, "--replicas=4"]);
    let healed = eventually(Duration::from_secs(30), || async {
        (deployment_field(namespace, &deployment, "{.spec.replicas}") == "2").then_some(())
    })
    .await;
    assert!(healed.is_some(), "the watch rang the drift bell");

    // Pruned: the service leaves the repository, its Deployment and Service go.
    std::fs::remove_file(upstream.path().join("services/web.yaml")).unwrap();
    let pruned = upstream.commit_signed("web goes", &alice);
    agent.push();
    assert_eq!(
        outcome(state.path(), namespace, &pruned).await,
        Some(Outcome::Succeeded)
    );
    let gone = eventually(Duration::from_secs(30), || async {
        let left = kubectl(&[
            "-n",
            namespace,
            "get",
            "deployments,services",
            "-l",
            "app.kubernetes.io/name=web",
            "-o",
            "name",
        ]);
        left.trim().is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some());

    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_agents_only_the_lease_holder_applies() {
    let _cluster = crate::control_plane::shared().await;
    let namespace = "kleader";
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let _ = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["create", "namespace", "plumb-leases"])
        .output();
    write(&upstream, namespace, "r1", "recreate: {}", true, "");
    let first = upstream.commit_signed("web r1", &alice);
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let agent = |upstream: &TestRepo, state: &Path, identity: &str| {
        let settings = Settings {
            leader: Some(plumb::agent::lease::Leader {
                namespace: "plumb-leases".to_owned(),
                lease: "kleader".to_owned(),
                kubeconfig: Some(kubeconfig().to_owned()),
                duration: Duration::from_secs(4),
                identity: identity.to_owned(),
            }),
            ..agent_settings(upstream, &root, state)
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(plumb::agent::run(settings, cancel.clone(), None));
        (cancel, task)
    };
    // Field `path` (a JSONPath) of the Lease.
    let lease = |path: &str| {
        kubectl(&[
            "-n",
            "plumb-leases",
            "get",
            "lease",
            "kleader",
            "-o",
            &format!("jsonpath={path}"),
        ])
    };
    let (stop_one, run_one) = agent(&upstream, one.path(), "agent-one");
    assert_eq!(outcome(one.path(), namespace, &first).await, Some(Outcome::Succeeded));
    let (stop_two, run_two) = agent(&upstream, two.path(), "agent-two");
    assert_eq!(lease("{.spec.holderIdentity}"), "agent-one");

    // While one holds the lease, two applies nothing, even for a new commit.
    write(
        &upstream,
        namespace,
        "r2",
        "recreate: {}",
        true,
        "migration:\n  command: [/plumb, --version]\n  timeout: 30s\n",
    );
    let second = upstream.commit_signed("web r2", &alice);
    // Two waits while one renews: seen renewed three times (every third of the 4 s duration),
    // the Lease would have expired by now had one stopped renewing.
    let mut renewals = std::collections::BTreeSet::new();
    let renewed = eventually(Duration::from_secs(60), || {
        renewals.insert(lease("{.spec.renewTime} {.spec.holderIdentity}"));
        let enough = renewals.len() > 3;
        async move { enough.then_some(()) }
    })
    .await;
    assert!(renewed.is_some(), "one renews its Lease");
    assert!(
        renewals.iter().all(|r| r.ends_with(" agent-one")),
        "one held the Lease throughout: {renewals:?}"
    );
    assert!(
        !two.path().join("ledger.sqlite").exists()
            || Ledger::open_read_only(&two.path().join("ledger.sqlite"))
                .unwrap()
                .history(namespace, 10)
                .unwrap()
                .is_empty(),
        "the agent without the lease recorded an attempt"
    );

    // One stops and hands the lease over: two takes it and applies the head.
    stop_one.cancel();
    run_one.await.unwrap().unwrap();
    assert_eq!(outcome(two.path(), namespace, &second).await, Some(Outcome::Succeeded));
    assert_eq!(release_of(namespace, "web-blue").as_deref(), Some("r2"));
    assert_eq!(lease("{.spec.holderIdentity}"), "agent-two");

    // Two started from an empty state directory and took one's record over from the cluster:
    // its rollback points include what one applied. Its migration ran once the cluster held
    // that it started.
    let ledger = Ledger::open_read_only(&two.path().join("ledger.sqlite")).unwrap();
    assert_eq!(
        ledger.applied_commits(namespace, 10).unwrap(),
        [second.to_string(), first.to_string()]
    );
    let copy = kubectl(&[
        "-n",
        "plumb-leases",
        "get",
        "configmap",
        "kleader-ledger",
        "-o",
        "jsonpath={.data.kleader\\.json}",
    ]);
    let copy: serde_json::Value = serde_json::from_str(&copy).unwrap();
    let kinds: Vec<&str> = copy["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"migration") && kinds.contains(&"outcome"), "{kinds:?}");
    stop_two.cancel();
    run_two.await.unwrap().unwrap();

    // A third agent, its state directory empty as well, takes the trust state over from the
    // cluster: the branch moved back to r1 — validly signed, but older than what two
    // authenticated — is refused, and r2 keeps running. (Its fresh cache never saw r2, which the
    // remote no longer has: the refusal reads as history rewritten under the trusted commit.)
    upstream.set_branch(&first);
    let three = tempfile::tempdir().unwrap();
    let (stop_three, run_three) = agent(&upstream, three.path(), "agent-three");
    let trust = three.path().join("repositories/config/trust.json");
    let refused = eventually(Duration::from_secs(60), || async {
        let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&trust).ok()?).ok()?;
        let anchor = state["refs"].as_object()?.values().next()?.clone();
        (anchor["refused"]["commit"] == first.as_str()).then_some(anchor)
    })
    .await;
    let anchor = refused.unwrap_or_else(|| panic!("not refused: {:?}", std::fs::read_to_string(&trust)));
    assert_eq!(
        anchor["authenticated"],
        second.as_str(),
        "the anchor came from the cluster"
    );
    assert_eq!(release_of(namespace, "web-blue").as_deref(), Some("r2"));
    stop_three.cancel();
    run_three.await.unwrap().unwrap();
}

#[test]
fn the_agents_own_manifests_are_accepted_by_the_api_server() {
    let _cluster = crate::control_plane::shared_blocking();
    let base = crate::harness::project().join("deploy/kubernetes");
    let rendered = Command::new("kubectl").arg("kustomize").arg(&base).output().unwrap();
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let manifests = dir_with(&rendered.stdout);
    // A server-side dry run needs the namespace its objects go to.
    let _ = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["create", "namespace", "plumb"])
        .output();
    let applied = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["apply", "--dry-run=server", "-f"])
        .arg(manifests.path().join("all.yaml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&applied.stdout);
    assert!(
        applied.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    for kind in [
        "namespace/plumb",
        "clusterrole.rbac.authorization.k8s.io/plumb",
        "deployment.apps/plumb",
        "networkpolicy.networking.k8s.io/plumb",
    ] {
        assert!(said.contains(kind), "{said}");
    }
    // The agent configuration it ships is one the agent accepts.
    let text = String::from_utf8_lossy(&rendered.stdout).into_owned();
    let config = text
        .split("agent.yaml: |\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with("    "))
        .map(|l| &l[4..])
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(manifests.path().join("agent.yaml"), config).unwrap();
    plumb::agent::config::AgentConfig::load(&manifests.path().join("agent.yaml")).unwrap();
}

/// A folder holding `bytes` as `all.yaml`.
fn dir_with(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("all.yaml"), bytes).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stopped_mid_rollout_is_finished_by_the_next_and_rollback_restores() {
    let _cluster = crate::control_plane::shared().await;
    let namespace = "krestart";
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let state = tempfile::tempdir().unwrap();
    const TOKEN: &str = "a-long-enough-api-token";
    let start = |upstream: &TestRepo| {
        Running::start(Settings {
            listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            api_token: Some(plumb::secret::Secret::new(TOKEN)),
            ..agent_settings(upstream, &root, state.path())
        })
    };
    let strategy = "blueGreen: {keepOldVersion: 20s}";
    write(&upstream, namespace, "r1", strategy, true, "");
    let first = upstream.commit_signed("web r1", &alice);
    let agent = start(&upstream).await;
    assert_eq!(outcome(state.path(), namespace, &first).await, Some(Outcome::Succeeded));

    // Stopped while the old color is kept for switch-back: the attempt is parked.
    write(&upstream, namespace, "r2", strategy, true, "");
    let second = upstream.commit_signed("web r2", &alice);
    agent.push();
    let switched = eventually(Duration::from_secs(60), || async {
        let selector = serving_slot(namespace);
        (selector == "green").then_some(())
    })
    .await;
    assert!(switched.is_some());
    agent.stop().await;
    assert_eq!(
        outcome(state.path(), namespace, &second).await,
        Some(Outcome::Interrupted)
    );
    assert!(
        release_of(namespace, "web-blue").is_some(),
        "the old color is still there"
    );

    // The next agent finishes from what the cluster runs: green serves r2, blue is retired.
    let agent = start(&upstream).await;
    assert!(
        succeeds(state.path(), namespace, &second).await,
        "the head was applied after the restart"
    );
    assert_eq!(release_of(namespace, "web-green").as_deref(), Some("r2"));
    assert_eq!(deployment_field(namespace, "web-blue", "{.spec.replicas}"), "0");

    // A rollback on demand restores r1, through the same blue-green.
    let api = agent.handle.api.unwrap();
    let bearer = [("authorization", format!("Bearer {TOKEN}"))];
    let answer = crate::http::post(api, &format!("/api/v1/environments/{namespace}/rollback"), &bearer, b"").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let serving = serving_slot(namespace);
    assert_eq!(release_of(namespace, &format!("web-{serving}")).as_deref(), Some("r1"));

    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_file_travels_in_a_config_map_and_hand_edits_are_undone() {
    let _cluster = crate::control_plane::shared().await;
    let namespace = "kconfig";
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let state = tempfile::tempdir().unwrap();
    let config = |greeting: &str| {
        format!("config:\n  file: conf/app.json\n  format: json\n  values: {{greeting: {greeting}}}\n")
    };
    write(
        &upstream,
        namespace,
        "r1",
        "blueGreen: {keepOldVersion: 0s}",
        true,
        &config("hello"),
    );
    let first = upstream.commit_signed("web r1 with its configuration", &alice);
    let agent = Running::start(Settings {
        heal_every: Duration::from_millis(500),
        ..agent_settings(&upstream, &root, state.path())
    })
    .await;
    assert_eq!(outcome(state.path(), namespace, &first).await, Some(Outcome::Succeeded));
    let data = kubectl(&[
        "-n",
        namespace,
        "get",
        "configmap",
        "web-blue-config",
        "-o",
        "jsonpath={.data.app\\.json}",
    ]);
    assert!(data.contains("\"greeting\": \"hello\""), "{data}");
    let mounted = kubectl(&[
        "-n",
        namespace,
        "get",
        "deployment",
        "web-blue",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"PLUMB_CONFIG\")].value} {.spec.template.spec.volumes[0].configMap.name}",
    ]);
    assert_eq!(mounted, "/etc/plumb/config/app.json web-blue-config");

    // Edited by hand: drift, put back.
    kubectl(&[
        "-n",
        namespace,
        "patch",
        "configmap",
        "web-blue-config",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"app.json":"{\"greeting\": \"hacked\"}"}}"#,
    ]);
    let restored = eventually(Duration::from_secs(60), || async {
        let data = kubectl(&[
            "-n",
            namespace,
            "get",
            "configmaps",
            "-l",
            "app.kubernetes.io/name=web",
            "-o",
            "jsonpath={.items[*].data.app\\.json}",
        ]);
        (data.contains("hello") && !data.contains("hacked")).then_some(())
    })
    .await;
    assert!(restored.is_some(), "the hand edit is undone");

    // A new value is a new version: blue-green to a new color with its own ConfigMap; the old
    // color's goes with it.
    write(
        &upstream,
        namespace,
        "r1",
        "blueGreen: {keepOldVersion: 0s}",
        true,
        &config("bonjour"),
    );
    let second = upstream.commit_signed("web, new greeting", &alice);
    agent.push();
    assert_eq!(
        outcome(state.path(), namespace, &second).await,
        Some(Outcome::Succeeded)
    );
    let maps = eventually(Duration::from_secs(30), || async {
        let data = kubectl(&[
            "-n",
            namespace,
            "get",
            "configmaps",
            "-l",
            "app.kubernetes.io/name=web",
            "-o",
            "jsonpath={.items[*].data.app\\.json}",
        ]);
        (data.contains("bonjour") && !data.contains("hello")).then_some(data)
    })
    .await;
    assert!(maps.is_some(), "one config map, with the new value");
    agent.stop().await;
}

/// The backends of HTTPRoute `web` in `namespace`: `name=weight` each.
fn route_backends(namespace: &str) -> String {
    kubectl(&[
        "-n",
        namespace,
        "get",
        "httproute",
        "web",
        "-o",
        "jsonpath={range .spec.rules[0].backendRefs[*]}{.name}={.weight} {end}",
    ])
    .trim()
    .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_weighs_traffic_exactly_on_a_gateway_api_route() {
    // The Gateway API is served once this test or the Kubernetes demo's installed its CRD: alone
    // on the cluster, this test starts without it.
    let alone = crate::control_plane::exclusive().await;
    kubectl(&[
        "delete",
        "--ignore-not-found",
        "--wait",
        "crd/httproutes.gateway.networking.k8s.io",
    ]);
    let namespace = "kgateway";
    let gateway = ", gateway: {name: shop, namespace: infra, domain: shop.example}";
    // Without the Gateway API, an environment routing through a Gateway cannot start.
    let target = KubernetesTarget {
        namespace: Name::parse(namespace).unwrap(),
        context: None,
        kubeconfig: Some(kubeconfig().display().to_string()),
        force: false,
        gateway: Some(GatewayRef {
            name: "shop".to_owned(),
            namespace: Some("infra".to_owned()),
            domain: "shop.example".to_owned(),
        }),
        manifests: Vec::new(),
    };
    let error = KubernetesRuntime::new(namespace, &target)
        .await
        .err()
        .expect("refused without the Gateway API");
    assert!(error.to_string().contains("does not serve the Gateway API"), "{error}");
    let crd = dir_with(plumb::lab::cluster::HTTPROUTE_CRD.as_bytes());
    kubectl(&["apply", "-f", crd.path().join("all.yaml").to_str().unwrap()]);
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/httproutes.gateway.networking.k8s.io",
    ]);
    drop(alone);
    let _cluster = crate::control_plane::shared().await;

    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let state = tempfile::tempdir().unwrap();
    let canary = "canary: {steps: [{weight: 25, pause: 3s}], successThreshold: 0}";
    write(&upstream, namespace, "r1", canary, true, "");
    environment(&upstream, namespace, gateway);
    let first = upstream.commit_signed("web r1 behind the gateway", &alice);
    let agent = Running::start(agent_settings(&upstream, &root, state.path())).await;
    assert_eq!(outcome(state.path(), namespace, &first).await, Some(Outcome::Succeeded));
    assert_eq!(route_backends(namespace), "web-blue=100");
    let route = kubectl(&[
        "-n",
        namespace,
        "get",
        "httproute",
        "web",
        "-o",
        "jsonpath={.spec.parentRefs[0].namespace}/{.spec.parentRefs[0].name} {.spec.hostnames[0]} {.spec.rules[0].backendRefs[0].port}",
    ]);
    assert_eq!(route, "infra/shop web.shop.example 8080");

    // The canary step holds green at exactly 25%; promotion gives it everything.
    write(&upstream, namespace, "r2", canary, true, "");
    environment(&upstream, namespace, gateway);
    let second = upstream.commit_signed("web r2", &alice);
    agent.push();
    let split = eventually(Duration::from_secs(60), || async {
        let backends = route_backends(namespace);
        (backends.contains("web-blue=75") && backends.contains("web-green=25")).then_some(backends)
    })
    .await;
    assert!(
        split.is_some(),
        "the canary's weight: {}; {:?}",
        route_backends(namespace),
        outcome(state.path(), namespace, &second).await
    );
    assert_eq!(
        outcome(state.path(), namespace, &second).await,
        Some(Outcome::Succeeded)
    );
    assert_eq!(route_backends(namespace), "web-green=100");
    let selector = kubectl(&[
        "-n",
        namespace,
        "get",
        "service",
        "web-green",
        "-o",
        "jsonpath={.spec.selector.plumb\\.dev/slot}",
    ]);
    assert_eq!(selector, "green", "each slot's own Service selects it alone");

    agent.stop().await;
}

/// Plain manifests for environment `kmanifests`: a ConfigMap greeting `greeting`, a
/// ServiceAccount `worker` when `worker`, and `more` documents.
fn manifests(greeting: &str, worker: bool, more: &str) -> String {
    let mut text =
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{greeting: {greeting}}}\n");
    if worker {
        text.push_str("---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: worker}\n");
    }
    text.push_str(more);
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_manifests_are_applied_healed_pruned_and_checked() {
    let _cluster = crate::control_plane::shared().await;
    let namespace = "kmanifests";
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let state = tempfile::tempdir().unwrap();
    write(&upstream, namespace, "r1", "recreate: {}", true, "");
    environment(&upstream, namespace, ", manifests: [k8s/extra.yaml]");
    upstream.write("k8s/extra.yaml", &manifests("hello", true, ""));
    let first = upstream.commit_signed("web r1 with plain manifests", &alice);
    let agent = Running::start(Settings {
        heal_every: Duration::from_millis(500),
        ..agent_settings(&upstream, &root, state.path())
    })
    .await;
    assert_eq!(outcome(state.path(), namespace, &first).await, Some(Outcome::Succeeded));
    let settings = |path: &str| {
        kubectl(&[
            "-n",
            namespace,
            "get",
            "configmap",
            "settings",
            "-o",
            &format!("jsonpath={path}"),
        ])
    };
    assert_eq!(settings("{.data.greeting}"), "hello");
    assert_eq!(settings("{.metadata.labels.plumb\\.dev/environment}"), namespace);
    let worker = || {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .args(["-n", namespace, "get", "serviceaccount", "worker", "-o", "name"])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(worker());

    // Deleted by hand: drift, put back.
    kubectl(&["-n", namespace, "delete", "serviceaccount", "worker"]);
    let back = eventually(Duration::from_secs(30), || async { worker().then_some(()) }).await;
    assert!(back.is_some(), "the ServiceAccount is put back");

    // A changed object is applied again; one no longer declared is pruned.
    upstream.write("k8s/extra.yaml", &manifests("bonjour", false, ""));
    let second = upstream.commit_signed("new greeting, no worker", &alice);
    agent.push();
    assert_eq!(
        outcome(state.path(), namespace, &second).await,
        Some(Outcome::Succeeded)
    );
    assert_eq!(settings("{.data.greeting}"), "bonjour");
    let gone = eventually(Duration::from_secs(30), || async { (!worker()).then_some(()) }).await;
    assert!(gone.is_some(), "the ServiceAccount is pruned");

    // A Secret is refused with its line before anything is applied.
    let secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: token}\n";
    upstream.write("k8s/extra.yaml", &manifests("hola", false, secret));
    let refused = upstream.commit_signed("a secret in clear text", &alice);
    agent.push();
    let outcome_of = outcome(state.path(), namespace, &refused).await;
    let Some(Outcome::Refused(reason)) = &outcome_of else {
        panic!("{outcome_of:?}")
    };
    assert!(
        reason.contains("k8s/extra.yaml:6") && reason.contains("Secret/token` is refused"),
        "{reason}"
    );
    assert_eq!(settings("{.data.greeting}"), "bonjour");

    // A cluster-scoped kind fails the attempt, naming the file and line; bonjour stays.
    let role = "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: reader}\n";
    upstream.write("k8s/extra.yaml", &manifests("hola", false, role));
    let scoped = upstream.commit_signed("a cluster role", &alice);
    agent.push();
    let reason = rolled_back(state.path(), namespace, &scoped).await;
    assert!(
        reason.contains("k8s/extra.yaml:6") && reason.contains("cluster-scoped"),
        "{reason}"
    );
    assert_eq!(settings("{.data.greeting}"), "bonjour");

    agent.stop().await;
}

/// The values of Secret `name` in `namespace`, decoded, by key (empty when there is none).
fn secret_data(namespace: &str, name: &str) -> std::collections::BTreeMap<String, String> {
    use base64::Engine;
    let json = kubectl(&["-n", namespace, "get", "secrets", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    let Some(secret) = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["metadata"]["name"] == name)
    else {
        return Default::default();
    };
    secret["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap();
            (k.clone(), String::from_utf8(bytes).unwrap())
        })
        .collect()
}

/// The names of the Secrets of service `web` in `namespace`.
fn web_secrets(namespace: &str) -> String {
    kubectl(&[
        "-n",
        namespace,
        "get",
        "secrets",
        "-l",
        "app.kubernetes.io/name=web",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypted_values_travel_in_a_secret_and_nowhere_else() {
    let _cluster = crate::control_plane::shared().await;
    let namespace = "ksecret";
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let state = tempfile::tempdir().unwrap();
    let identity = crate::sealed::Identity::new();
    let token = crate::sealed::unique("tok");
    let password = crate::sealed::unique("pw");
    let seal = |clear: &str| identity.seal(clear);
    let with_secrets = |release: &str| {
        let config = format!(
            "migration:\n  command: [/plumb, --version]\n  timeout: 30s\nconfig:\n  file: conf/app.json\n  values: {{user: app, password: {:?}}}\n",
            seal(&password)
        );
        write(
            &upstream,
            namespace,
            release,
            "blueGreen: {keepOldVersion: 0s}",
            true,
            &config,
        );
        upstream.edit(
            "services/web.yaml",
            "  - {name: EXAMPLE_HEALTH, value: ok}\n",
            &format!(
                "  - {{name: EXAMPLE_HEALTH, value: ok}}\n  - {{name: API_TOKEN, value: {:?}}}\n",
                seal(&token)
            ),
        );
    };
    with_secrets("r1");
    let first = upstream.commit_signed("web r1 with secrets", &alice);
    // The agent serves its API: the service gets where to read its configuration, and a token.
    let mut settings = Settings {
        heal_every: Duration::from_millis(500),
        listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        services_url: Some("http://plumb.plumb-system:7070".to_owned()),
        ..agent_settings(&upstream, &root, state.path())
    };
    settings.repositories[0].keys = identity.keys();
    let agent = Running::start(settings).await;
    assert_eq!(outcome(state.path(), namespace, &first).await, Some(Outcome::Succeeded));

    // The slot's Secret holds the variables and the configuration file; the Deployment refers to
    // them; no ConfigMap, Deployment or Job left behind holds a clear value.
    let data = secret_data(namespace, "web-blue-secrets");
    assert_eq!(data.get("API_TOKEN"), Some(&token));
    let read_token = data
        .get("PLUMB_CONFIG_TOKEN")
        .expect("the service's read token")
        .clone();
    assert!(read_token.starts_with("plumbcfg."), "{read_token}");
    let variables = kubectl(&[
        "-n",
        namespace,
        "get",
        "deployment",
        "web-blue",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"PLUMB_CONFIG_URL\")].value} {.spec.template.spec.containers[0].env[?(@.name==\"PLUMB_CONFIG_TOKEN\")].valueFrom.secretKeyRef.name}",
    ]);
    assert_eq!(
        variables,
        format!("http://plumb.plumb-system:7070/api/v1/environments/{namespace}/services/web/config web-blue-secrets")
    );
    assert!(
        data.get("plumb-config").is_some_and(|c| c.contains(&password)),
        "{:?}",
        data.keys()
    );
    let deployment = kubectl(&["-n", namespace, "get", "deployment", "web-blue", "-o", "json"]);
    assert!(!deployment.contains(&token) && !deployment.contains(&password));
    let reference = kubectl(&[
        "-n",
        namespace,
        "get",
        "deployment",
        "web-blue",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"API_TOKEN\")].valueFrom.secretKeyRef.name} {.spec.template.spec.volumes[0].secret.secretName} {.spec.template.spec.volumes[0].secret.items[0].path}",
    ]);
    assert_eq!(reference, "web-blue-secrets web-blue-secrets app.json");
    let everything = kubectl(&[
        "-n",
        namespace,
        "get",
        "configmaps,deployments,jobs,services",
        "-o",
        "json",
    ]);
    assert!(!everything.contains(&token) && !everything.contains(&password));
    assert!(!everything.contains(&read_token));
    assert_eq!(
        web_secrets(namespace),
        "web-blue-secrets",
        "the migration's Secret went with its Job"
    );

    // The file edited by hand in the Secret: drift, put back.
    kubectl(&[
        "-n",
        namespace,
        "patch",
        "secret",
        "web-blue-secrets",
        "--type",
        "merge",
        "-p",
        r#"{"stringData":{"plumb-config":"{\"password\": \"hacked\"}"}}"#,
    ]);
    let restored = eventually(Duration::from_secs(60), || async {
        let names = web_secrets(namespace);
        let files: Vec<String> = names
            .split_whitespace()
            .filter_map(|n| secret_data(namespace, n).remove("plumb-config"))
            .collect();
        (!files.is_empty() && files.iter().all(|f| f.contains(&password))).then_some(())
    })
    .await;
    assert!(restored.is_some(), "the hand edit is undone");

    // A version without encrypted values leaves no Secret behind.
    write(&upstream, namespace, "r2", "blueGreen: {keepOldVersion: 0s}", true, "");
    let second = upstream.commit_signed("web r2, no secrets", &alice);
    agent.push();
    assert!(succeeds(state.path(), namespace, &second).await);
    let gone = eventually(Duration::from_secs(30), || async {
        web_secrets(namespace).is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some(), "left: {}", web_secrets(namespace));
    agent.stop().await;
}
