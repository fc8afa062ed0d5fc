//! Notifications: what the outbox adds to recording (composing a message and queuing it in the
//! ledger entry's own transaction, beside the same entries recorded with no channel); how long
//! from an entry's commit to a webhook receiver on loopback holding the message, signature
//! checked, p50 and p95; and how fast a queue of messages drains to that receiver.
//!
//! Run: `cargo bench --bench notify` (`PLUMB_BENCH_ATTEMPTS`, `PLUMB_BENCH_EVENTS` to change the
//! counts).

#[path = "support/timing.rs"]
mod timing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use plumb::ledger::{Attempt, Ledger, Outcome, Recorder, Trigger};
use plumb::notify::route::{Origin, Origins, Routes};
use plumb::notify::{Channel, ChannelConfig};
use serde_json::json;
use timing::{ms, percentile, setting};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "a-webhook-secret-for-the-benchmark";

/// Attempt `i`: a canary of a commit of its own in `production`.
fn attempt(i: usize) -> Attempt {
    Attempt {
        environment: "production".to_owned(),
        commit: format!("{i:040x}"),
        signer: Some("alice".to_owned()),
        strategy: "canary".to_owned(),
        plan: json!(["api: roll out (image changed)"]),
        trigger: Trigger::Commit,
        by: None,
    }
}

/// Records `attempts` attempts of four steps each in `ledger`: 10 entries per attempt.
fn record(ledger: &mut Ledger, attempts: usize) {
    for i in 0..attempts {
        let id = ledger.begin(&attempt(i)).unwrap();
        for step in ["start canary", "canary 10%", "canary 50%", "promote"] {
            ledger.step_started(id, step).unwrap();
            ledger.step_finished(id, step, None, None).unwrap();
        }
        ledger.finish(id, &Outcome::Succeeded).unwrap();
    }
}

fn routes(channel: &Arc<Channel>, dir: &std::path::Path) -> Arc<Routes> {
    let origins = Origins {
        external_url: Some("https://plumb.example.com".to_owned()),
        repositories: vec![Origin {
            name: "config".to_owned(),
            url: "https://github.com/twikit/config.git".to_owned(),
            cache: dir.join("no-cache"),
            environments: None,
        }],
    };
    Arc::new(Routes::new(vec![channel.clone()], origins))
}

/// A webhook receiver on loopback: checks each signature and says when each message arrived.
async fn receiver(arrived: mpsc::UnboundedSender<(String, Instant)>) -> String {
    async fn take(
        State(arrived): State<mpsc::UnboundedSender<(String, Instant)>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let at = Instant::now();
        let expected = format!("sha256={}", plumb::notify::webhook::signature(SECRET.as_bytes(), &body));
        assert_eq!(headers["x-plumb-signature-256"].to_str().unwrap(), expected);
        let delivery = headers["x-plumb-delivery"].to_str().unwrap().to_owned();
        let _ = arrived.send((delivery, at));
        StatusCode::NO_CONTENT
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let routes = axum::Router::new()
        .route("/hook", axum::routing::post(take))
        .with_state(arrived);
    tokio::spawn(async move { axum::serve(listener, routes).await.unwrap() });
    url
}

fn main() {
    let attempts = setting("PLUMB_BENCH_ATTEMPTS", 300);
    let events = setting("PLUMB_BENCH_EVENTS", 200);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hook-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (arrived, mut arrivals) = mpsc::unbounded_channel();
    let url = runtime.block_on(receiver(arrived));
    let channel: ChannelConfig = serde_json::from_value(json!({
        "name": "ops",
        "webhook": { "url": url, "secretFile": secret },
    }))
    .unwrap();
    let channel = Arc::new(runtime.block_on(async { channel.channel("notifications[0]") }).unwrap());

    // 1. Recording, with and without a channel (each entry durable: SQLite, WAL, FULL sync).
    let entries = attempts * 10;
    let mut plain = Ledger::open(&dir.path().join("plain.sqlite")).unwrap();
    let start = Instant::now();
    record(&mut plain, attempts);
    let without = start.elapsed();
    let mut noting = Ledger::open(&dir.path().join("noting.sqlite")).unwrap();
    noting.notify_with(routes(&channel, dir.path()));
    let start = Instant::now();
    record(&mut noting, attempts);
    let with = start.elapsed();
    let queued = noting.outbox_of("ops").unwrap().len();
    println!("recording {entries} entries ({attempts} attempts, {queued} messages queued):");
    println!(
        "  no channel      {:>8.1} ms   {:>6.1} µs per entry",
        ms(without),
        without.as_secs_f64() * 1e6 / entries as f64
    );
    println!(
        "  one webhook     {:>8.1} ms   {:>6.1} µs per entry   (+{:.1} µs per entry, {:.2}×)",
        ms(with),
        with.as_secs_f64() * 1e6 / entries as f64,
        (with.as_secs_f64() - without.as_secs_f64()) * 1e6 / entries as f64,
        with.as_secs_f64() / without.as_secs_f64()
    );
    drop(noting);

    runtime.block_on(async {
        // 2. From an entry's commit to the receiver holding its message, one at a time.
        let path = dir.path().join("live.sqlite");
        let mut ledger = Ledger::open(&path).unwrap();
        let routes = routes(&channel, dir.path());
        ledger.notify_with(routes.clone());
        let ledger = Recorder::new(ledger);
        let cancel = CancellationToken::new();
        let sender = tokio::spawn(plumb::notify::deliver::run(
            channel.clone(),
            Recorder::open(path.clone()).await.unwrap(),
            routes.bell("ops"),
            Arc::new(plumb::metrics::Metrics::default()),
            cancel.clone(),
        ));
        let mut latencies = Vec::with_capacity(events);
        for i in 0..events {
            let attempt = attempt(i);
            let committed = ledger
                .call(move |l| {
                    l.begin(&attempt)?;
                    Ok(Instant::now())
                })
                .await
                .unwrap();
            let (_, at) = arrivals.recv().await.unwrap();
            latencies.push(at.duration_since(committed));
        }
        println!("\nentry committed → webhook received (loopback, signed), {events} events one at a time:");
        println!(
            "  p50 {:.2} ms   p95 {:.2} ms",
            ms(percentile(&mut latencies, 0.5)),
            ms(percentile(&mut latencies, 0.95))
        );

        // 3. A queue drained: many events recorded at once, then sent in order.
        let burst = events * 5;
        let start = Instant::now();
        ledger
            .call(move |l| {
                for i in 0..burst {
                    l.refused_head(
                        "production",
                        &format!("{:040x}", i + 1_000_000),
                        "unsigned",
                        "no signature",
                    )?;
                }
                Ok(())
            })
            .await
            .unwrap();
        let recorded = start.elapsed();
        for _ in 0..burst {
            tokio::time::timeout(Duration::from_secs(60), arrivals.recv())
                .await
                .unwrap()
                .unwrap();
        }
        let drained = start.elapsed();
        println!(
            "\n{burst} messages queued at once (recorded in {:.0} ms), all received after:",
            ms(recorded)
        );
        println!(
            "  {:.0} ms   ({:.0} messages/s, in order, one connection at a time)",
            ms(drained),
            burst as f64 / drained.as_secs_f64()
        );
        cancel.cancel();
        let _ = sender.await;
    });
}
