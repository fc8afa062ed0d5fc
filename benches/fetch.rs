//! Fetching: one new commit into a cache of a 10,000-commit repository, plumb (libgit2, in
//! process) beside `git fetch` into a bare clone, over the git protocol (`git daemon` on
//! loopback) and over `file://`; and webhook-to-fetch-started latency through the real HTTP
//! receiver and fetch worker.
//!
//! Run: `cargo bench --bench fetch` (`PLUMB_BENCH_COMMITS=10000`, `PLUMB_BENCH_ROUNDS=15`).

#[path = "../tests/it/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "../tests/it/servers.rs"]
mod servers;

#[path = "support/timing.rs"]
#[allow(dead_code)]
mod timing;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use git2::{Oid, Repository, Signature, Time};
use plumb::agent::Fetcher;
use plumb::secret::Secret;
use plumb::source::{Cache, Remote, TrackedRef};
use plumb::trigger::webhook::{self, Provider, Receiver, Receivers};
use plumb::trigger::{Poll, doorbell};
use plumb::trust::{Policy, TrustRoot};
use timing::{ms, percentile, setting};

fn main() {
    let commits: usize = setting("PLUMB_BENCH_COMMITS", 10_000);
    let rounds: usize = setting("PLUMB_BENCH_ROUNDS", 15);
    let dir = tempfile::tempdir().unwrap();
    let upstream = dir.path().join("upstream");
    let repo = Repository::init_bare(&upstream).unwrap();
    let started = Instant::now();
    let mut head = None;
    for i in 0..commits {
        head = Some(commit(&repo, head, i));
    }
    println!("built {commits} commits in {:.1} s", started.elapsed().as_secs_f64());
    let daemon = servers::Daemon::serve(dir.path());

    println!("transport | plumb fetch (median) | git fetch (median) | ratio");
    for (name, url) in [
        ("git://", format!("git://127.0.0.1:{}/upstream", daemon.port)),
        ("file://", format!("file://{}", upstream.display())),
    ] {
        let cache_dir = dir.path().join(format!("cache-{}", name.trim_end_matches("://")));
        let mut cache = Cache::open(&cache_dir, Remote::anonymous(&url)).unwrap();
        let tracked = [TrackedRef::new("main")];
        cache.fetch(&tracked).unwrap();
        let mirror = dir.path().join(format!("mirror-{}", name.trim_end_matches("://")));
        git(&["init", "-q", "--bare", mirror.to_str().unwrap()]);
        git(&[
            "-C",
            mirror.to_str().unwrap(),
            "fetch",
            "-q",
            &url,
            "+refs/heads/main:refs/heads/main",
        ]);

        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            head = Some(commit(&repo, head, commits + round));
            let start = Instant::now();
            let fetched = cache.fetch(&tracked).unwrap();
            ours.push(start.elapsed());
            assert_eq!(Some(fetched.heads[0].2), head);
            let start = Instant::now();
            git(&[
                "-C",
                mirror.to_str().unwrap(),
                "fetch",
                "-q",
                &url,
                "+refs/heads/main:refs/heads/main",
            ]);
            theirs.push(start.elapsed());
        }
        let (ours, theirs) = (median(ours), median(theirs));
        println!(
            "{name:<9} | {:>17.2} ms | {:>15.2} ms | {:.2}× the time of git fetch",
            ms(ours),
            ms(theirs),
            ours.as_secs_f64() / theirs.as_secs_f64()
        );
    }

    webhook_latency(dir.path(), &upstream, rounds.max(50));
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn git(args: &[&str]) {
    let status = Command::new("git").args(args).status().unwrap();
    assert!(status.success(), "git {args:?}");
}

/// A commit changing one of 100 files (so trees share most entries, as in a real repository).
fn commit(repo: &Repository, parent: Option<Oid>, i: usize) -> Oid {
    let base = parent.map(|p| repo.find_commit(p).unwrap().tree().unwrap());
    let mut builder = repo.treebuilder(base.as_ref()).unwrap();
    let blob = repo
        .blob(format!("service: svc-{}\nreplicas: {}\n", i % 100, i).as_bytes())
        .unwrap();
    builder.insert(format!("svc-{}.yaml", i % 100), blob, 0o100644).unwrap();
    let tree = repo.find_tree(builder.write().unwrap()).unwrap();
    let who = Signature::new("Bench", "bench@example.com", &Time::new(1_700_000_000 + i as i64, 0)).unwrap();
    let parents: Vec<git2::Commit> = parent.iter().map(|p| repo.find_commit(*p).unwrap()).collect();
    let parents: Vec<&git2::Commit> = parents.iter().collect();
    repo.commit(
        Some("refs/heads/main"),
        &who,
        &who,
        &format!("Change {i}"),
        &tree,
        &parents,
    )
    .unwrap()
}

/// POSTs signed GitHub push webhooks and measures until the fetch worker starts the fetch.
fn webhook_latency(dir: &Path, upstream: &Path, rounds: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (door, bell) = doorbell();
        let mut receivers = Receivers::default();
        receivers
            .insert(
                "config",
                Receiver {
                    provider: Provider::GitHub,
                    secret: Secret::new("bench-secret"),
                    refs: BTreeSet::from(["refs/heads/main".to_owned()]),
                    doorbell: door,
                },
            )
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, webhook::router(receivers, 1 << 20)).await });
        // Authentication is not what is measured here: an empty policy refuses every commit
        // quickly, and the refusal is remembered.
        let fetcher = Fetcher::open(
            dir.join("webhook-state"),
            Remote::anonymous(upstream.to_str().unwrap()),
            vec![TrackedRef::new("main")],
            TrustRoot::Policy(Policy::default()),
        )
        .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let cancel = tokio_util::sync::CancellationToken::new();
        let (_, timer) = tokio::sync::watch::channel(Poll {
            interval: None,
            ..Poll::default()
        });
        tokio::spawn(fetcher.run(bell, timer, tx, cancel.clone()));

        let body = br#"{"ref":"refs/heads/main"}"#;
        let signature = servers::hmac_sha256_hex("bench-secret", body);
        let headers = [
            ("X-GitHub-Event", "push".to_owned()),
            ("X-Hub-Signature-256", format!("sha256={signature}")),
        ];
        let mut latencies = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let sent = Instant::now();
            let response = http::post(addr, "/hooks/config", &headers, body).await;
            assert_eq!(response.status, 202, "{}", response.body);
            let fetch = rx.recv().await.unwrap();
            latencies.push(fetch.started - sent);
        }
        cancel.cancel();
        println!(
            "webhook → fetch started: p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms over {rounds} pushes",
            ms(percentile(&mut latencies, 0.5)),
            ms(percentile(&mut latencies, 0.95)),
            ms(percentile(&mut latencies, 1.0))
        );
    });
}
