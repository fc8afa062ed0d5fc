//! `plumb example-app`: a small HTTP service for the example repository and the tests, so the
//! local target has something real to run on any machine. It listens on `$PORT` (at `$HOST`,
//! loopback by default), answers `/` with who it is — its service, release (`$EXAMPLE_RELEASE`,
//! else plumb's version) and slot — (or 500 when `EXAMPLE_ROOT=fail`, to rehearse a failing
//! canary), and `/health` with 200 (or 503 when `EXAMPLE_HEALTH=fail`, to rehearse a failed
//! rollout). `/config` shows the configuration file plumb wrote (`$PLUMB_CONFIG`) as read at
//! start and on each SIGHUP. It stops on SIGTERM or SIGINT.

use std::net::SocketAddr;

use anyhow::Context;
use axum::http::StatusCode;

/// Serves until killed.
pub fn run() -> anyhow::Result<()> {
    let port: u16 = std::env::var("PORT")
        .context("PORT is not set")?
        .parse()
        .context("PORT is not a port number")?;
    // `$HOST`: the address to listen on (a container's target sets `0.0.0.0`), loopback else.
    let host: std::net::IpAddr = match std::env::var("HOST") {
        Ok(host) => host.parse().context("HOST is not an IP address")?,
        Err(_) => [127, 0, 0, 1].into(),
    };
    let identity = format!(
        "{} {} {}\n",
        std::env::var("PLUMB_SERVICE").unwrap_or_else(|_| "example".to_owned()),
        std::env::var("EXAMPLE_RELEASE")
            .or_else(|_| std::env::var("PLUMB_VERSION"))
            .unwrap_or_default(),
        std::env::var("PLUMB_SLOT").unwrap_or_default(),
    );
    let healthy = std::env::var("EXAMPLE_HEALTH").map_or(true, |v| v != "fail");
    let serving = std::env::var("EXAMPLE_ROOT").map_or(true, |v| v != "fail");
    let config_path = std::env::var_os("PLUMB_CONFIG");
    let read = move || {
        config_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    let config = std::sync::Arc::new(std::sync::RwLock::new(read()));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let reloaded = config.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                *reloaded.write().expect("never poisoned") = read();
            }
        });
        let app = axum::Router::new()
            .route(
                "/config",
                axum::routing::get(move || {
                    let text = config.read().expect("never poisoned").clone();
                    async move { text }
                }),
            )
            .route(
                "/",
                axum::routing::get(move || async move {
                    if serving {
                        (StatusCode::OK, identity)
                    } else {
                        (StatusCode::INTERNAL_SERVER_ERROR, "failing\n".to_owned())
                    }
                }),
            )
            .route(
                "/health",
                axum::routing::get(move || async move {
                    if healthy {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(host, port))
            .await
            .with_context(|| format!("cannot listen on {host}:{port}"))?;
        println!("listening on {host}:{port}");
        // As a container's first process, no signal has a default action: SIGTERM must be
        // handled to stop (`docker stop`, a pod's deletion) without waiting for SIGKILL.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            })
            .await
            .context("serving")
    })
}
