//! `plumb demo --once`, end to end: the README's main job deploys the example's three
//! environments on the local target, rolls a release out with each strategy and rolls a broken
//! one back, then stops every service.

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
    // The first deployment (3), release 1.5.0 (development, staging, then production on sync).
    assert_eq!(count("✓ succeeded"), 6, "{out}");
    assert!(out.contains("[staging]   twikit-backend: promote green"), "{out}");
    assert!(
        out.contains("[production]   twikit-backend: switch traffic to green"),
        "{out}"
    );
    // Release 1.6.0 fails its health checks in development (recreate) and staging (canary).
    assert_eq!(
        count("↩ rolled back: the new version of `twikit-backend` is unhealthy"),
        2,
        "{out}"
    );
    assert!(
        out.contains("[staging]   twikit-backend: abort: all traffic back to green"),
        "{out}"
    );
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
}
