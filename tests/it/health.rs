//! Health checks against real servers and real commands: thresholds, deadlines, timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use plumb::health::{Check, Probe, ProbeError, Unhealthy, wait_healthy};

/// Serves `/health` (200), `/sick` (503) and `/warming` (503 for the first three requests).
async fn serve() -> SocketAddr {
    let warming = Arc::new(AtomicU32::new(0));
    let app = axum::Router::new()
        .route("/health", axum::routing::get(|| async { StatusCode::OK }))
        .route(
            "/sick",
            axum::routing::get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
        )
        .route(
            "/warming",
            axum::routing::get(move || {
                let seen = warming.fetch_add(1, Ordering::SeqCst);
                async move {
                    if seen < 3 {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn check(probe: Probe, success: u32, failure: u32) -> Check {
    Check {
        name: "ready".to_owned(),
        probe,
        timeout: Duration::from_millis(500),
        interval: Duration::from_millis(10),
        initial_delay: Duration::ZERO,
        success_threshold: success,
        failure_threshold: failure,
    }
}

fn http(addr: SocketAddr, path: &str) -> Probe {
    Probe::Http {
        addr,
        path: path.to_owned(),
        status: 200,
    }
}

#[tokio::test]
async fn http_checks_pass_fail_and_wait_for_warm_up() {
    let addr = serve().await;
    wait_healthy(&[check(http(addr, "/health"), 2, 3)], Duration::from_secs(5))
        .await
        .unwrap();
    // Three 503s, then 200s: a failure threshold of 5 rides it out.
    wait_healthy(&[check(http(addr, "/warming"), 2, 5)], Duration::from_secs(5))
        .await
        .unwrap();
    let error = wait_healthy(&[check(http(addr, "/sick"), 1, 3)], Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        Unhealthy::Failing {
            check: "ready".to_owned(),
            failures: 3,
            last: ProbeError::Status {
                path: "/sick".to_owned(),
                got: 503,
                expected: 200
            }
        }
    );
}

#[tokio::test]
async fn a_deadline_ends_a_check_that_never_passes() {
    // A port nobody listens on (bound, then released).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let started = Instant::now();
    let error = wait_healthy(
        &[check(Probe::Tcp { addr: closed }, 1, 10_000)],
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, Unhealthy::Deadline { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn one_failing_check_ends_the_wait_at_once() {
    let addr = serve().await;
    let started = Instant::now();
    let checks = [
        check(http(addr, "/sick"), 1, 1),
        check(http(addr, "/warming"), 1_000, 1_000),
    ];
    let error = wait_healthy(&checks, Duration::from_secs(30)).await.unwrap_err();
    assert!(matches!(error, Unhealthy::Failing { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[tokio::test]
async fn exec_checks_and_timeouts() {
    let run = |command: &[&str]| Probe::Exec {
        command: command.iter().map(|s| s.to_string()).collect(),
        env: vec![("PLUMB_PORT".to_owned(), "8080".to_owned())],
    };
    assert_eq!(
        run(&["sh", "-c", "test \"$PLUMB_PORT\" = 8080"])
            .run(Duration::from_secs(5))
            .await,
        Ok(())
    );
    let failed = run(&["false"]).run(Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(failed, ProbeError::Exec { .. }), "{failed:?}");
    let started = Instant::now();
    let slow = run(&["sleep", "30"]).run(Duration::from_millis(200)).await.unwrap_err();
    assert_eq!(slow, ProbeError::Timeout(Duration::from_millis(200)));
    assert!(started.elapsed() < Duration::from_secs(5));
    let missing = run(&["/no/such/program"])
        .run(Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("cannot start"), "{missing}");
}

#[tokio::test]
async fn a_server_that_is_not_http_is_named() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(b"SSH-2.0-OpenSSH\r\n").await;
        }
    });
    let error = http(addr, "/health").run(Duration::from_secs(2)).await.unwrap_err();
    assert_eq!(
        error,
        ProbeError::NotHttp {
            path: "/health".to_owned()
        }
    );
}

#[tokio::test]
async fn a_declared_check_probes_the_slot_port_it_names() {
    let addr = serve().await;
    let rendered = plumb::spec::render(
        &plumb::source::WorkTree::new(crate::harness::project().join("example-repo")),
        Some("production"),
    )
    .unwrap();
    let service = &rendered.environments["production"].services["twikit-backend"];
    let declared = &service.health_checks[0];
    let named = declared
        .http
        .as_ref()
        .and_then(|h| h.port.as_ref())
        .map(|p| p.0.clone());
    let check = Check::from_spec(declared, |port| (port.map(str::to_owned) == named).then_some(addr), &[])
        .expect("the port resolves");
    assert_eq!(check.name, declared.name.as_str());
    assert_eq!(
        (check.timeout, check.failure_threshold),
        (declared.timeout.0, declared.failure_threshold)
    );
    let Probe::Http { path, .. } = &check.probe else {
        panic!("{:?}", check.probe)
    };
    assert_eq!(path, &declared.http.as_ref().unwrap().path);
    assert!(Check::from_spec(declared, |_| None, &[]).is_none());
}
