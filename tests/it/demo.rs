//! `plumb demo --once`, end to end: the README's main job deploys the example's three
//! environments on the local target, rolls a release out with each strategy and rolls a broken
//! one back, then stops every service; and one Ctrl-C stops it mid-deployment. The same tour on
//! a Docker Engine of the demo's own and on the tests' Kubernetes cluster, each leaving nothing
//! behind, after the tour or after one Ctrl-C.

use crate::harness::plumb;

#[test]
fn the_demo_tours_every_strategy_and_stops_clean() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let run = plumb(&[
        "demo",
        "--once",
        "--listen",
        "127.0.0.1:0",
        "--dir",
        demo.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(
        out.starts_with("plumb demo — the dashboard: http://127.0.0.1:"),
        "{out}"
    );
    let count = |needle: &str| out.matches(needle).count();
    // The first deployment (3), release 1.5.0 (development, staging, then production on sync,
    // once bob and carol approved it), release 1.6.0 in development.
    assert_eq!(count("✓ succeeded"), 7, "{out}");
    assert_eq!(count("bob: plumb approve --env production"), 2, "{out}");
    assert_eq!(count("carol: plumb approve --env production"), 2, "{out}");
    assert!(out.contains("[staging]   twikit-backend: promote green"), "{out}");
    assert!(
        out.contains("[production]   twikit-backend: switch traffic to green"),
        "{out}"
    );
    // Release 1.6.0 fails its health checks in staging (canary), and never reaches production.
    assert_eq!(
        count("↩ rolled back: the new version of `twikit-backend` is unhealthy"),
        1,
        "{out}"
    );
    assert!(
        out.contains("[production] waiting: promotion: stopped: ") && out.contains("failed in staging"),
        "{out}"
    );
    assert!(
        out.contains("[staging]   twikit-backend: abort: all traffic back to green"),
        "{out}"
    );
    // Its outcomes went to the demo's webhook, signed: each success, and the rollback.
    assert_eq!(count("   ✉ webhook: "), 8, "{out}");
    assert_eq!(count("(signed; delivery "), 8, "{out}");
    assert!(out.contains("   ✉ webhook: staging rolled back "), "{out}");
    assert!(out.ends_with("Stopped; every service is down.\n"), "{out}");
    for port in [13000, 23000, 30000] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still open"
        );
    }
    // A second run replaces the demo folder; a folder that is not the demo's is never removed.
    std::fs::create_dir_all(dir.path().join("mine")).unwrap();
    let refused = plumb(&[
        "demo",
        "--once",
        "--listen",
        "127.0.0.1:0",
        "--dir",
        dir.path().join("mine").to_str().unwrap(),
    ]);
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains("is not a plumb demo folder"),
        "{}",
        refused.stderr
    );
    one_ctrl_c_stops_the_demo_in_the_middle_of_its_first_deployment(&[]);
    the_compose_tour_plays_on_an_engine_of_its_own();
}

/// What every tour prints, whatever its target: the first deployment, release 1.5.0 through
/// recreate, canary and blue-green, release 1.6.0 rolled back in staging (`why`).
fn toured(out: &str, why: &str) {
    let count = |needle: &str| out.matches(needle).count();
    assert_eq!(count("✓ succeeded"), 7, "{out}");
    assert!(
        out.contains("[development]   twikit-backend: replace blue with"),
        "{out}"
    );
    assert!(out.contains("[staging]   twikit-backend: promote green"), "{out}");
    assert!(
        out.contains("[production]   twikit-backend: switch traffic to green"),
        "{out}"
    );
    assert_eq!(count("[staging] ↩ rolled back: "), 1, "{out}");
    assert!(out.contains(why), "{out}");
    assert!(
        out.contains("[production] waiting: promotion: stopped: ") && out.contains("failed in staging"),
        "{out}"
    );
    assert!(out.ends_with("Stopped; every service is down.\n"), "{out}");
}

/// The tour on Compose: with no engine named and none at the machine's socket, the demo starts
/// one of its own, loads the example image into it (made of this binary), and at the end removes
/// the containers, stops the engine and removes its folder. (After the local tour: the same
/// stable ports.)
fn the_compose_tour_plays_on_an_engine_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_plumb"))
        .args([
            "demo",
            "--target",
            "compose",
            "--once",
            "--listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir.path().join("demo"))
        .env_remove("DOCKER_HOST")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    toured(&out, "GET /health answered 503, expected 200");
    let engine = own_engine(&out);
    assert!(!engine.exists(), "{} is left", engine.display());
    for port in [13000, 23000, 30000] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still open"
        );
    }
    let out = one_ctrl_c_stops_the_demo_in_the_middle_of_its_first_deployment(&["--target", "compose"]);
    let engine = own_engine(&out);
    assert!(!engine.exists(), "{} is left after Ctrl-C", engine.display());
}

/// The folder of the engine the demo says it started, no dockerd of it running.
fn own_engine(out: &str) -> std::path::PathBuf {
    let (_, after) = out
        .split_once("starting one of the demo's own (")
        .unwrap_or_else(|| panic!("the demo started no engine of its own: {out}"));
    let folder = std::path::PathBuf::from(after.split(')').next().unwrap());
    for process in std::fs::read_dir("/proc").unwrap().flatten() {
        let command = std::fs::read(process.path().join("cmdline")).unwrap_or_default();
        let command = String::from_utf8_lossy(&command);
        assert!(
            !(command.starts_with("dockerd") && command.contains(folder.to_str().unwrap())),
            "the demo's dockerd still runs: {command}"
        );
    }
    folder
}

#[test]
fn the_kubernetes_tour_plays_in_namespaces_it_deletes() {
    use crate::control_plane::{example_image, kubeconfig, kubectl};
    use plumb::lab::cluster::HTTPROUTE_CRD;
    let _cluster = crate::control_plane::shared_blocking();
    // Staging's canary routes through the Gateway API, as `plumb dev-cluster up` installs it.
    let crd = tempfile::tempdir().unwrap();
    std::fs::write(crd.path().join("crd.yaml"), HTTPROUTE_CRD).unwrap();
    kubectl(&["apply", "-f", crd.path().join("crd.yaml").to_str().unwrap()]);
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/httproutes.gateway.networking.k8s.io",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let target = [
        "--target",
        "kubernetes",
        "--kubeconfig",
        kubeconfig().to_str().unwrap(),
        "--image",
        example_image(),
    ];
    let demo = dir.path().join("demo");
    let mut args = vec![
        "demo",
        "--once",
        "--listen",
        "127.0.0.1:0",
        "--dir",
        demo.to_str().unwrap(),
    ];
    args.extend(target);
    let run = plumb(&args);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    // The failing release never becomes ready: the kubelet's readiness probe says why.
    toured(
        &run.stdout,
        "Readiness probe failed: HTTP probe failed with statuscode: 503",
    );
    assert!(
        run.stdout.contains("kubectl get deploy,svc,pods -n plumb-demo-staging"),
        "{}",
        run.stdout
    );
    let namespaces = || kubectl(&["get", "namespaces", "-o", "name"]);
    assert!(!namespaces().contains("plumb-demo-"), "{}", namespaces());
    // One Ctrl-C mid-deployment deletes the namespaces too.
    one_ctrl_c_stops_the_demo_in_the_middle_of_its_first_deployment(&target);
    assert!(!namespaces().contains("plumb-demo-"), "{}", namespaces());
}

/// One Ctrl-C in the middle of the first deployment stops the demo and every service it
/// started. (Run after the tour above, never beside it: both use the demo's ports.)
/// `target` names the demo's target (the local one when empty); returns what it printed.
fn one_ctrl_c_stops_the_demo_in_the_middle_of_its_first_deployment(target: &[&str]) -> String {
    use std::io::BufRead;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_plumb"))
        .args(["demo", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir.path().join("demo"))
        .args(target)
        .env_remove("DOCKER_HOST")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, seen) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    // Wait for a step of the first deployment to start: the demo is then in the middle of it.
    let mut out = String::new();
    let started = loop {
        match seen.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                out.push_str(&line);
                out.push('\n');
                if line.contains("[development]") || line.contains("[staging]") {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    assert!(started, "no step of the first deployment started: {out}");
    let signalled = Instant::now();
    // SAFETY: signals our own child, still running (we hold it unreaped).
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    // One Ctrl-C is enough: the step in progress is parked within 10 s, then the demo removes
    // what it ran (on Kubernetes it waits, at most 3 minutes, for its namespaces to be gone).
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if signalled.elapsed() > Duration::from_secs(200) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let Some(status) = status else {
        panic!("one SIGINT did not stop the demo: {out}{stderr}");
    };
    assert!(status.success(), "{status}: {out}{stderr}");
    assert!(
        stderr.contains("Stopping:"),
        "the terminal says what it waits for: {stderr}"
    );
    for port in [13000, 23000, 30000] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still open"
        );
    }
    // The rest of what it printed, up to its end.
    while let Ok(line) = seen.recv_timeout(Duration::from_secs(10)) {
        out.push_str(&line);
        out.push('\n');
    }
    assert!(out.ends_with("Stopped; every service is down.\n"), "{out}");
    out
}
