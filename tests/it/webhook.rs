//! Webhooks over real HTTP into a real fetch worker: a signed push is fetched and authenticated,
//! an unsigned one refused and not retried, and every request that cannot prove where it comes
//! from is refused with `401`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use plumb::agent::{Fetch, Fetcher};
use plumb::secret::Secret;
use plumb::source::{Remote, TrackedRef};
use plumb::trigger::webhook::{self, Provider, Receiver, Receivers};
use plumb::trigger::{Bell, Doorbell, Poll, Reason, doorbell};
use plumb::trust::{Decision, TrustRoot};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::harness::TestRepo;
use crate::http::post;
use crate::keys::{ALL, TestKey, policy};
use crate::servers::hmac_sha256_hex;

const SECRET: &str = "webhook-s3cret";
const BODY_LIMIT: usize = 64 * 1024;

struct Setup {
    upstream: TestRepo,
    alice: TestKey,
    reference: String,
    addr: SocketAddr,
    doorbell: Doorbell,
    bell: Option<Bell>,
    fetcher: Option<Fetcher>,
    fetches: mpsc::Receiver<Fetch>,
    sender: mpsc::Sender<Fetch>,
    cancel: CancellationToken,
    _state: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Setup {
        let mut upstream = TestRepo::new();
        let alice = TestKey::new("alice");
        upstream.write("openpgp-policy.toml", &policy(&[(&alice, ALL)]));
        let root = upstream.commit_signed("Policy", &alice);
        let reference = {
            let head = upstream.git().find_reference("HEAD").unwrap();
            head.symbolic_target().unwrap().unwrap().to_owned()
        };
        let state = tempfile::tempdir().unwrap();
        let fetcher = Fetcher::open(
            state.path().to_owned(),
            Remote::anonymous(upstream.path().to_str().unwrap()),
            vec![TrackedRef::new(&reference)],
            TrustRoot::Commit(git2::Oid::from_str(&root).unwrap()),
        )
        .unwrap();
        let (door, bell) = doorbell();
        let mut receivers = Receivers::default();
        receivers
            .insert(
                "config",
                Receiver {
                    provider: Provider::GitHub,
                    secret: Secret::new(SECRET),
                    refs: BTreeSet::from([reference.clone()]),
                    doorbell: door.clone(),
                },
            )
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, webhook::router(receivers, BODY_LIMIT))
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .unwrap();
        });
        let (sender, fetches) = mpsc::channel(16);
        Setup {
            upstream,
            alice,
            reference,
            addr,
            doorbell: door,
            bell: Some(bell),
            fetcher: Some(fetcher),
            fetches,
            sender,
            cancel,
            _state: state,
        }
    }

    /// Starts the fetch worker (webhooks only: no polling).
    fn start_worker(&mut self) {
        let (_, timer) = tokio::sync::watch::channel(Poll {
            interval: None,
            ..Poll::default()
        });
        let worker = self.fetcher.take().unwrap().run(
            self.bell.take().unwrap(),
            timer,
            self.sender.clone(),
            self.cancel.clone(),
        );
        tokio::spawn(worker);
    }

    async fn next_fetch(&mut self) -> Fetch {
        tokio::time::timeout(Duration::from_secs(30), self.fetches.recv())
            .await
            .expect("a fetch within 30 s")
            .expect("the worker runs")
    }

    async fn push(&self, reference: &str) -> crate::http::Response {
        let body = format!(r#"{{"ref":"{reference}","after":"0000"}}"#);
        let headers = [
            ("X-GitHub-Event", "push".to_owned()),
            (
                "X-Hub-Signature-256",
                format!("sha256={}", hmac_sha256_hex(SECRET, body.as_bytes())),
            ),
        ];
        post(self.addr, "/hooks/config", &headers, body.as_bytes()).await
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_push_is_fetched_and_authenticated_an_unsigned_one_refused_once() {
    let mut s = Setup::new().await;
    s.start_worker();

    s.upstream.write("README.md", "one\n");
    let good = s.upstream.commit_signed("Signed change", &s.alice.clone());
    let response = s.push(&s.reference).await;
    assert_eq!(
        (response.status, response.body.contains("\"queued\"")),
        (202, true),
        "{}",
        response.body
    );
    let fetch = s.next_fetch().await;
    assert!(matches!(fetch.reason, Reason::Webhook { provider: "github", .. }));
    let updates = fetch.result.unwrap();
    assert_eq!(updates[0].head.to_string(), good);
    assert!(
        matches!(updates[0].decision, Decision::Authenticated(_)),
        "{:?}",
        updates[0].decision
    );

    s.upstream.write("README.md", "two\n");
    let bad = s.upstream.commit("Unsigned change");
    s.push(&s.reference).await;
    let updates = s.next_fetch().await.result.unwrap();
    let Decision::Refused(report) = &updates[0].decision else {
        panic!("{:?}", updates[0].decision)
    };
    assert_eq!(report.refusal.as_ref().unwrap().1.kind(), "unsigned");

    // The same head again: remembered, not re-checked.
    s.push(&s.reference).await;
    let updates = s.next_fetch().await.result.unwrap();
    let Decision::AlreadyRefused(refused) = &updates[0].decision else {
        panic!("{:?}", updates[0].decision)
    };
    assert_eq!(refused.commit, bad);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_prove_nothing_are_refused() {
    let s = Setup::new().await;
    let body = format!(r#"{{"ref":"{}"}}"#, s.reference);
    let good = format!("sha256={}", hmac_sha256_hex(SECRET, body.as_bytes()));
    let wrong = format!("sha256={}", hmac_sha256_hex("guess", body.as_bytes()));
    let push = |signature: Option<String>| {
        let mut headers = vec![("X-GitHub-Event", "push".to_owned())];
        headers.extend(signature.map(|s| ("X-Hub-Signature-256", s)));
        headers
    };
    // (what, path, headers, body, status, text the answer holds)
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, String)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "wrong secret",
            "/hooks/config",
            push(Some(wrong)),
            body.clone().into_bytes(),
            401,
            "signature does not match",
        ),
        (
            "missing header",
            "/hooks/config",
            push(None),
            body.clone().into_bytes(),
            401,
            "missing X-Hub-Signature-256",
        ),
        (
            "unknown repository",
            "/hooks/other",
            push(Some(good.clone())),
            body.clone().into_bytes(),
            404,
            "no such repository",
        ),
        (
            "oversized body",
            "/hooks/config",
            push(Some(good.clone())),
            vec![b' '; BODY_LIMIT + 1],
            413,
            "\"message\":\"the body is over the limit of 65536 bytes\"",
        ),
        (
            "untracked ref",
            "/hooks/config",
            push(Some(format!(
                "sha256={}",
                hmac_sha256_hex(SECRET, br#"{"ref":"refs/heads/feature"}"#)
            ))),
            br#"{"ref":"refs/heads/feature"}"#.to_vec(),
            200,
            "touches no tracked ref",
        ),
        (
            "ping",
            "/hooks/config",
            vec![
                ("X-GitHub-Event", "ping".to_owned()),
                (
                    "X-Hub-Signature-256",
                    format!("sha256={}", hmac_sha256_hex(SECRET, b"{}")),
                ),
            ],
            b"{}".to_vec(),
            200,
            "\"pong\"",
        ),
        (
            "unsigned ping",
            "/hooks/config",
            vec![("X-GitHub-Event", "ping".to_owned())],
            b"{}".to_vec(),
            401,
            "missing",
        ),
    ];
    for (name, path, headers, body, status, text) in cases {
        let response = post(s.addr, path, &headers, &body).await;
        assert_eq!(response.status, status, "{name}: {}", response.body);
        assert!(response.body.contains(text), "{name}: {}", response.body);
    }
    // None of the above rang: the doorbell is still free.
    assert_eq!(s.doorbell.ring(Reason::Manual), plumb::trigger::Rung::Queued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_github_sends_form_encoded_rings_as_a_json_one_does() {
    let s = Setup::new().await;
    let json = format!(r#"{{"ref":"{}","after":"0000"}}"#, s.reference);
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &json)
        .finish();
    let headers = [
        ("X-GitHub-Event", "push".to_owned()),
        ("Content-Type", "application/x-www-form-urlencoded".to_owned()),
        // GitHub signs the body as sent: the form.
        (
            "X-Hub-Signature-256",
            format!("sha256={}", hmac_sha256_hex(SECRET, body.as_bytes())),
        ),
    ];
    let response = post(s.addr, "/hooks/config", &headers, body.as_bytes()).await;
    assert_eq!(response.status, 202, "{}", response.body);
    assert!(response.body.contains("queued"), "{}", response.body);
    assert_eq!(s.doorbell.ring(Reason::Manual), plumb::trigger::Rung::Coalesced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_pushes_is_one_fetch() {
    let mut s = Setup::new().await;
    s.upstream.write("README.md", "burst\n");
    s.upstream.commit_signed("Change", &s.alice.clone());
    // The worker is not running yet, so the whole burst lands before any fetch starts.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let response = s.push(&s.reference).await;
        statuses.push((response.status, response.body.contains("\"coalesced\"")));
    }
    assert_eq!(statuses[0], (202, false));
    assert!(statuses[1..].iter().all(|s| *s == (202, true)), "{statuses:?}");
    s.start_worker();
    assert!(matches!(s.next_fetch().await.reason, Reason::Webhook { .. }));
    // The next fetch is the one rung now: nothing else was pending.
    s.doorbell.ring(Reason::Manual);
    assert_eq!(s.next_fetch().await.reason, Reason::Manual);
}
