//! What the repository declares is what runs on the real node (`control_plane`): health checks
//! are the kubelet's probes — a release whose `/health` answers 503 never becomes available and
//! is rolled back with the probe's words, a crash-looping one likewise, a failing liveness
//! probe restarts a container — resources reach the container as written, the Service sends
//! traffic to ready pods only, and an autoscaled service leaves its replicas to its autoscaler.

use std::net::SocketAddr;
use std::time::Duration;

use plumb::agent::Settings;
use plumb::ledger::Outcome;

use crate::agent::{Running, eventually, outcome};
use crate::control_plane::{example_image, kubectl};
use crate::harness::{TestRepo, agent_settings, trusted};
use crate::keys::TestKey;
use crate::kube::{deployment_field, environment, rolled_back, serving_slot, write};

/// Starts an agent over `upstream` keeping its state in `state`, checking drift every `heal`.
async fn agent(upstream: &TestRepo, root: &str, state: &std::path::Path, heal: Duration) -> Running {
    Running::start(Settings {
        heal_every: heal,
        ..agent_settings(upstream, root, state)
    })
    .await
}

/// What the pods behind Service `web` of `namespace` answer on `/`, one answer per endpoint.
async fn endpoint_answers(namespace: &str) -> Vec<String> {
    let ips = kubectl(&[
        "-n",
        namespace,
        "get",
        "endpoints",
        "web",
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}",
    ]);
    let mut answers = Vec::new();
    for ip in ips.split_whitespace() {
        let addr = SocketAddr::new(ip.parse().unwrap(), 8080);
        let answer = crate::http::try_get(addr, "/").await.map(|r| r.body.trim().to_owned());
        answers.push(answer.unwrap_or_else(|| format!("{ip}: no answer")));
    }
    answers.sort();
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_answering_503_never_serves_and_is_rolled_back_in_the_probes_words() {
    let _cluster = crate::control_plane::shared().await;
    let namespace = "kprobes";
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let state = tempfile::tempdir().unwrap();
    let resources = "resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {cpu: 500m, memory: 256Mi}}\n";
    write(
        &upstream,
        namespace,
        "r1",
        "blueGreen: {keepOldVersion: 0s}",
        true,
        resources,
    );
    let first = upstream.commit_signed("web r1", &alice);
    let agent = agent(&upstream, &root, state.path(), Duration::from_secs(3600)).await;
    assert_eq!(outcome(state.path(), namespace, &first).await, Some(Outcome::Succeeded));

    // The health check is the container's readiness probe; the resources are as written.
    let container = "{.spec.template.spec.containers[0]";
    assert_eq!(
        deployment_field(
            namespace,
            "web-blue",
            &format!("{container}.readinessProbe.httpGet.path}}")
        ),
        "/health"
    );
    assert_eq!(
        deployment_field(
            namespace,
            "web-blue",
            &format!("{container}.readinessProbe.httpGet.port}}")
        ),
        "http"
    );
    assert_eq!(
        deployment_field(namespace, "web-blue", &format!("{container}.resources.limits.memory}}")),
        "256Mi"
    );
    assert_eq!(
        deployment_field(namespace, "web-blue", &format!("{container}.resources.requests.cpu}}")),
        "10m"
    );
    let answers = endpoint_answers(namespace).await;
    assert_eq!(answers, ["web r1 blue", "web r1 blue"], "the Service's endpoints");

    // r2's /health answers 503: its pods run but are never ready, the switch never happens,
    // and the rollback says what the kubelet's probe saw.
    write(
        &upstream,
        namespace,
        "r2",
        "blueGreen: {keepOldVersion: 0s}",
        false,
        resources,
    );
    // Long enough for the pods to start and fail their probe however loaded the node is: the
    // rollback is to quote the probe.
    upstream.edit("services/web.yaml", "progressDeadline: 10s", "progressDeadline: 45s");
    let bad = upstream.commit_signed("web r2, answering 503", &alice);
    agent.push();
    let reason = rolled_back(state.path(), namespace, &bad).await;
    assert!(
        reason.contains("Readiness probe failed") && reason.contains("503"),
        "{reason}"
    );
    assert_eq!(serving_slot(namespace), "blue");
    // Only ready pods are behind the Service: r1's, still answering.
    let answers = endpoint_answers(namespace).await;
    assert_eq!(answers, ["web r1 blue", "web r1 blue"], "the Service's endpoints");

    // A release that exits at once loops in CrashLoopBackOff; rolled back, saying how it exits.
    write(
        &upstream,
        namespace,
        "r3",
        "blueGreen: {keepOldVersion: 0s}",
        true,
        resources,
    );
    upstream.edit(
        "services/web.yaml",
        "command: [/plumb, example-app]",
        "command: [/plumb, no-such-subcommand]",
    );
    let crashing = upstream.commit_signed("web r3, crashing", &alice);
    agent.push();
    let reason = rolled_back(state.path(), namespace, &crashing).await;
    assert!(
        reason.contains("exit code") || reason.contains("Back-off restarting failed container"),
        "{reason}"
    );
    assert_eq!(serving_slot(namespace), "blue");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_liveness_probe_restarts_the_container() {
    let _cluster = crate::control_plane::shared().await;
    let namespace = "kliveness";
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let state = tempfile::tempdir().unwrap();
    // Ready by `/health`; alive by a path the app does not serve (404): the kubelet restarts
    // the container after each failed liveness probe.
    write(&upstream, namespace, "r1", "recreate: {}", true, "");
    upstream.edit(
        "services/web.yaml",
        "healthChecks:\n",
        "healthChecks:\n  - {name: alive, http: {path: /missing, port: http}, interval: 1s, timeout: 1s, failureThreshold: 1, probes: [liveness]}\n",
    );
    let first = upstream.commit_signed("web r1, failing its liveness probe", &alice);
    // Drift is looked for an hour apart: a report comes from the restart itself, which the
    // agent's watch of the pods sees.
    let agent = Running::start(Settings {
        heal_every: Duration::from_secs(3600),
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..agent_settings(&upstream, &root, state.path())
    })
    .await;
    let api = agent.handle.api.unwrap();
    // The rollout may or may not catch the pods ready between restarts; what matters is that
    // the kubelet runs the probe: the containers restart.
    let _ = outcome(state.path(), namespace, &first).await;
    assert_eq!(
        deployment_field(
            namespace,
            "web-blue",
            "{.spec.template.spec.containers[0].livenessProbe.httpGet.path}"
        ),
        "/missing"
    );
    let restarted = eventually(Duration::from_secs(90), || async {
        let counts = kubectl(&[
            "-n",
            namespace,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=web",
            "-o",
            "jsonpath={.items[*].status.containerStatuses[0].restartCount}",
        ]);
        counts
            .split_whitespace()
            .any(|c| c.parse::<u32>().unwrap_or(0) > 0)
            .then_some(counts)
    })
    .await;
    assert!(
        restarted.is_some(),
        "the kubelet restarts a container failing its liveness probe"
    );
    // plumb reports it: the status says how many times and why, the metric counts.
    let said = eventually(Duration::from_secs(60), || async {
        let status: serde_json::Value = serde_json::from_str(
            &crate::agent::api_get(api, &format!("/api/v1/environments/{namespace}"))
                .await
                .body,
        )
        .unwrap();
        let said = status["restarts"]["web"].as_str().unwrap_or_default().to_owned();
        said.contains("Liveness probe failed").then_some(said)
    })
    .await;
    let said = said.expect("the status reports the liveness restart with the kubelet's words");
    assert!(said.starts_with("blue: restarted "), "{said}");
    let families = crate::metrics::parse(&crate::agent::api_get(api, "/metrics").await.body);
    let restarts = crate::metrics::value(
        &families,
        "plumb_container_restarts",
        &[("environment", namespace), ("service", "web"), ("slot", "blue")],
    );
    assert!(restarts.is_some_and(|n| n >= 1.0), "{restarts:?}");
    agent.stop().await;
}

/// Service `web` of `namespace`, autoscaled between 2 and 4 copies, with `strategy` and `release`.
fn autoscaled(repo: &TestRepo, namespace: &str, release: &str, strategy: &str) {
    repo.write(
        "plumb.yaml",
        &format!("apiVersion: plumb/v1\nkind: Repository\nenvironments: [{namespace}]\n"),
    );
    environment(repo, namespace, "");
    repo.write(
        "services/web.yaml",
        &format!(
            "apiVersion: plumb/v1\nkind: Service\nname: web\nimage: {}\ncommand: [/plumb, example-app]\n\
             autoscaling: {{minReplicas: 2, maxReplicas: 4, targetCPUUtilization: 80}}\n\
             resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}\n\
             ports:\n  - {{name: http, port: 8080}}\nprogressDeadline: 120s\nstrategy:\n  {strategy}\n\
             healthChecks:\n  - {{name: ready, http: {{path: /health, port: http}}, interval: 1s, timeout: 1s}}\n\
             env:\n  - {{name: EXAMPLE_RELEASE, value: {release}}}\n",
            example_image()
        ),
    );
}

/// New pods start before old ones stop: a rollout does not wait for the old pods' grace period.
const ROLLING: &str = "rolling: {maxSurge: 1, maxUnavailable: 0}";

fn autoscaler_field(namespace: &str, path: &str) -> String {
    kubectl(&["-n", namespace, "get", "hpa", "web", "-o", &format!("jsonpath={path}")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autoscaled_service_leaves_its_replicas_to_its_autoscaler() {
    let _cluster = crate::control_plane::shared().await;
    let namespace = "kautoscale";
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let state = tempfile::tempdir().unwrap();
    autoscaled(&upstream, namespace, "r1", ROLLING);
    let first = upstream.commit_signed("web r1, autoscaled", &alice);
    // Drift checks every half second all along: none may take the replicas back.
    let agent = agent(&upstream, &root, state.path(), Duration::from_millis(500)).await;
    assert_eq!(outcome(state.path(), namespace, &first).await, Some(Outcome::Succeeded));
    assert_eq!(autoscaler_field(namespace, "{.spec.scaleTargetRef.name}"), "web-blue");
    assert_eq!(
        autoscaler_field(namespace, "{.spec.minReplicas}/{.spec.maxReplicas}"),
        "2/4"
    );
    assert_eq!(deployment_field(namespace, "web-blue", "{.spec.replicas}"), "2");

    // The autoscaler's call, played by hand: neither drift nor a conflict. A later release
    // rolls out over it and keeps it.
    kubectl(&["-n", namespace, "scale", "deployment", "web-blue", "--replicas=3"]);
    autoscaled(&upstream, namespace, "r2", ROLLING);
    let second = upstream.commit_signed("web r2", &alice);
    agent.push();
    assert_eq!(
        outcome(state.path(), namespace, &second).await,
        Some(Outcome::Succeeded)
    );
    assert_eq!(deployment_field(namespace, "web-blue", "{.spec.replicas}"), "3");

    // Blue-green: the new color starts as large as the serving one, and the autoscaler moves
    // with the traffic.
    autoscaled(&upstream, namespace, "r3", "blueGreen: {keepOldVersion: 0s}");
    let third = upstream.commit_signed("web r3, blue-green", &alice);
    agent.push();
    assert_eq!(outcome(state.path(), namespace, &third).await, Some(Outcome::Succeeded));
    assert_eq!(serving_slot(namespace), "green");
    assert_eq!(deployment_field(namespace, "web-green", "{.spec.replicas}"), "3");
    assert_eq!(autoscaler_field(namespace, "{.spec.scaleTargetRef.name}"), "web-green");
    agent.stop().await;
}
