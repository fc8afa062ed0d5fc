//! `plumb demo --once`, end to end: the README's main job deploys the example's three
//! environments on the local target, rolls a release out with each strategy and rolls a broken
//! one back, then stops every service; and one Ctrl-C stops it mid-deployment.

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
    one_ctrl_c_stops_the_demo_in_the_middle_of_its_first_deployment();
}

/// One Ctrl-C in the middle of the first deployment stops the demo and every service it
/// started. (Run after the tour above, never beside it: both use the demo's ports.)
fn one_ctrl_c_stops_the_demo_in_the_middle_of_its_first_deployment() {
    use std::io::BufRead;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_plumb"))
        .args(["demo", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir.path().join("demo"))
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
    // One Ctrl-C is enough: it exits within the parking grace, well inside this bound.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if signalled.elapsed() > Duration::from_secs(60) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let Some(status) = status else {
        let _ = child.kill();
        panic!("one SIGINT did not stop the demo within a minute: {out}");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
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
}
