//! The built-in router over real HTTP: weights, atomic switches, round-robin replicas, and the
//! per-slot counters canary analysis reads.

use std::net::SocketAddr;

use axum::http::StatusCode;
use plumb::router::{Backend, Router};
use tokio_util::sync::CancellationToken;

use crate::http::{get, post};

/// A replica answering `/` with its name, and `/fail` with a 500.
async fn replica(name: &'static str) -> SocketAddr {
    let app = axum::Router::new()
        .route("/", axum::routing::get(move || async move { name }))
        .route(
            "/fail",
            axum::routing::get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route("/missing", axum::routing::get(|| async { StatusCode::NOT_FOUND }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn backend(slot: &str, weight: u32, replicas: Vec<SocketAddr>) -> Backend {
    Backend {
        slot: slot.to_owned(),
        weight,
        replicas,
    }
}

async fn bodies(router: &Router, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let response = get(router.addr(), "/").await;
        assert_eq!(response.status, 200, "{}", response.body);
        out.push(response.body);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_switch_atomically_and_split_exactly() {
    let cancel = CancellationToken::new();
    let router = Router::bind("127.0.0.1:0".parse().unwrap(), cancel.clone())
        .await
        .unwrap();
    let (blue1, blue2, green) = (replica("blue-1").await, replica("blue-2").await, replica("green").await);

    router.route(vec![
        backend("blue", 100, vec![blue1, blue2]),
        backend("green", 0, vec![green]),
    ]);
    assert_eq!(bodies(&router, 4).await, ["blue-1", "blue-2", "blue-1", "blue-2"]);

    // Blue-green switch: the very next request goes to green.
    router.route(vec![
        backend("blue", 0, vec![blue1, blue2]),
        backend("green", 100, vec![green]),
    ]);
    assert_eq!(bodies(&router, 3).await, ["green", "green", "green"]);

    // Canary 10 %: exactly one request in ten, every ten.
    router.reset_stats();
    router.route(vec![
        backend("blue", 90, vec![blue1]),
        backend("green", 10, vec![green]),
    ]);
    let answers = bodies(&router, 100).await;
    assert_eq!(answers.iter().filter(|b| *b == "green").count(), 10);
    let stats = router.stats();
    assert_eq!((stats["blue"].requests, stats["green"].requests), (90, 10));
    assert_eq!(stats["green"].success_rate(), Some(1.0));
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_against_their_slot_and_a_read_goes_to_the_next_replica() {
    let cancel = CancellationToken::new();
    let router = Router::bind("127.0.0.1:0".parse().unwrap(), cancel.clone())
        .await
        .unwrap();
    let healthy = replica("green").await;
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();

    router.route(vec![backend("blue", 1, vec![gone]), backend("green", 1, vec![healthy])]);
    // Alternating slots. A POST is never sent twice: blue (down) → 502, then green (which
    // routes GET only) → 405. A GET that meets blue is sent on to the next pick, green: / → 200,
    // /missing → 404.
    let statuses = [
        post(router.addr(), "/", &[], b"").await.status,
        post(router.addr(), "/", &[], b"").await.status,
        get(router.addr(), "/").await.status,
        get(router.addr(), "/missing").await.status,
    ];
    assert_eq!(statuses, [502, 405, 200, 404]);
    let stats = router.stats();
    assert_eq!((stats["blue"].unanswered, stats["blue"].success_rate()), (3, Some(0.0)));
    assert_eq!((stats["green"].ok, stats["green"].client_errors), (1, 2));

    router.route(vec![]);
    assert_eq!(get(router.addr(), "/").await.status, 503);
    cancel.cancel();
}
