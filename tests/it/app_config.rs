//! A service's configuration over the agent's API, on a real agent and the local target: read
//! whole or in part, with entity tags; encrypted values masked; and the changes a commit applies
//! streamed as Server-Sent Events, resumed after the last event seen.

use std::net::SocketAddr;
use std::time::Duration;

use plumb::agent::Settings;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::agent::{Running, api_get, api_get_with, eventually, release};
use crate::harness::{TestRepo, Web, agent_settings, trusted};
use crate::keys::TestKey;
use crate::sealed::Identity;

/// `web` as `release`, its configuration `values` (YAML, indented for `values:`).
pub(crate) fn write(repo: &TestRepo, port: u16, release: &str, values: &str) {
    let extra = format!("config:\n  file: app.json\n  values:\n{values}");
    Web {
        extra: &extra,
        ..Web::new(port, release, "recreate: {}")
    }
    .write(repo);
}

/// An agent serving its API on loopback over `upstream`'s branch (trusting `root`, polling every
/// 100 ms), opening values sealed for `identity`.
pub(crate) async fn serving(upstream: &TestRepo, root: &str, identity: &Identity, state: &std::path::Path) -> Running {
    let mut settings = Settings {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..agent_settings(upstream, root, state)
    };
    settings.repositories[0].poll.interval = Some(Duration::from_millis(100));
    settings.repositories[0].keys = identity.keys();
    Running::start(settings).await
}

/// An open event stream, read as it comes.
struct Events {
    stream: tokio::net::TcpStream,
    buffer: String,
}

impl Events {
    async fn open(api: SocketAddr, path: &str, last_event: Option<i64>) -> Events {
        let mut stream = tokio::net::TcpStream::connect(api).await.unwrap();
        let resume = last_event
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {api}\r\nAccept: text/event-stream\r\n{resume}\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut events = Events {
            stream,
            buffer: String::new(),
        };
        // The stream is open once its first line (the retry advice) arrived.
        events.until(|text| text.contains("retry: 2000")).await;
        assert!(events.buffer.starts_with("HTTP/1.1 200"), "{}", events.buffer);
        assert!(events.buffer.to_lowercase().contains("content-type: text/event-stream"));
        events
    }

    /// Reads until `done` holds for what was received.
    async fn until(&mut self, done: impl Fn(&str) -> bool) {
        let mut chunk = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done(&self.buffer) {
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("waited in vain; received: {}", self.buffer))
                .unwrap();
            assert!(read > 0, "the stream closed; received: {}", self.buffer);
            self.buffer.push_str(&String::from_utf8_lossy(&chunk[..read]));
        }
    }

    /// The events received so far: id, event name, data.
    fn received(&self) -> Vec<(i64, String, Value)> {
        let mut found = Vec::new();
        for frame in self.buffer.split("\n\n") {
            let frame = frame.rsplit("\r\n").next().unwrap_or(frame);
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
            };
            if let (Some(id), Some(event), Some(data)) = (field("id"), field("event"), field("data")) {
                found.push((id.parse().unwrap(), event, serde_json::from_str(&data).unwrap()));
            }
        }
        found
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_reads_its_configuration_and_follows_its_changes() {
    let alice = TestKey::new("alice");
    let identity = Identity::new();
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    write(
        &upstream,
        port,
        "r1",
        &format!(
            "    database: {{host: db.internal, pool: 10}}\n    hosts: [a, b]\n    password: {}\n",
            identity.seal("hunter2-the-first")
        ),
    );
    upstream.commit_signed("web r1", &alice);
    let state = tempfile::tempdir().unwrap();
    let agent = serving(&upstream, &root, &identity, state.path()).await;
    let api = agent.handle.api.unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(
        eventually(Duration::from_secs(30), || release(addr)).await.as_deref(),
        Some("r1")
    );

    // All of it, encrypted values masked, with an entity tag.
    let base = "/api/v1/environments/dev/services/web/config";
    let all = once_applied(api, base, &[]).await;
    assert_eq!(all.status, 200, "{}", all.body);
    let body: Value = serde_json::from_str(&all.body).unwrap();
    assert_eq!(
        body["value"],
        json!({"database": {"host": "db.internal", "pool": 10}, "hosts": ["a", "b"], "password": "***"})
    );
    assert!(!all.body.contains("hunter2"));
    let tag = all.header("etag").unwrap().to_owned();
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
    // A part, and a conditional read of it.
    let part = api_get(api, &format!("{base}?path=database.pool")).await;
    assert_eq!(serde_json::from_str::<Value>(&part.body).unwrap()["value"], 10);
    let part_tag = part.header("etag").unwrap().to_owned();
    let again = api_get_with(
        api,
        &format!("{base}?path=database.pool"),
        &[("If-None-Match", part_tag.clone())],
    )
    .await;
    assert_eq!(again.status, 304);
    assert_eq!(again.header("etag"), Some(part_tag.as_str()));
    let item = api_get(api, &format!("{base}?path=hosts.1")).await;
    assert_eq!(serde_json::from_str::<Value>(&item.body).unwrap()["value"], "b");
    assert_eq!(api_get(api, &format!("{base}?path=database.port")).await.status, 404);
    assert_eq!(
        api_get(api, "/api/v1/environments/dev/services/nope/config")
            .await
            .status,
        404
    );
    assert_eq!(
        api_get(api, "/api/v1/environments/nope/services/web/config")
            .await
            .status,
        404
    );

    // A commit changes the pool and the password, adds a flag and drops a list: one event per
    // changed leaf or subtree, in order.
    let mut events = Events::open(api, &format!("{base}/events"), None).await;
    write(
        &upstream,
        port,
        "r2",
        &format!(
            "    database: {{host: db.internal, pool: 20}}\n    feature: {{newFeature: true}}\n    password: {}\n",
            identity.seal("hunter2-the-second")
        ),
    );
    let r2 = upstream.commit_signed("web r2: a bigger pool", &alice);
    events
        .until(|text| text.matches("event: configurationChanged").count() >= 4)
        .await;
    let received = events.received();
    let said: Vec<(String, Value, Value)> = received
        .iter()
        .map(|(_, name, data)| {
            assert_eq!(name, "configurationChanged");
            assert_eq!(data["commit"], r2);
            assert_eq!(data["signer"], "alice");
            (
                data["path"].as_str().unwrap().to_owned(),
                data["oldValue"].clone(),
                data["newValue"].clone(),
            )
        })
        .collect();
    assert_eq!(
        said,
        [
            ("database.pool".to_owned(), json!(10), json!(20)),
            ("feature".to_owned(), Value::Null, json!({"newFeature": true})),
            ("hosts".to_owned(), json!(["a", "b"]), Value::Null),
            ("password".to_owned(), json!("***"), json!("***")),
        ]
    );
    assert!(!events.buffer.contains("hunter2"));
    let ids: Vec<i64> = received.iter().map(|(id, _, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // The tag moved with the commit; a client that saw the first event resumes after it.
    let now = api_get_with(api, base, &[("If-None-Match", tag.clone())]).await;
    assert_eq!(now.status, 200);
    assert_ne!(now.header("etag"), Some(tag.as_str()));
    let mut resumed = Events::open(api, &format!("{base}/events"), Some(ids[0])).await;
    resumed
        .until(|text| text.matches("event: configurationChanged").count() >= 3)
        .await;
    let replayed: Vec<i64> = resumed.received().iter().map(|(id, _, _)| *id).collect();
    assert_eq!(replayed, ids[1..]);

    // A stop ends the streams: the agent does not wait for its clients.
    tokio::time::timeout(Duration::from_secs(30), agent.stop())
        .await
        .expect("the agent stops with streams open");
}

/// The answer to a configuration read once the environment's first rollout is recorded as
/// applied: the replica answers before that (the health checks that follow it), and until then
/// the configuration is 503, as documented.
async fn once_applied(api: SocketAddr, path: &str, headers: &[(&str, String)]) -> crate::http::Response {
    eventually(Duration::from_secs(30), || async {
        let answer = api_get_with(api, path, headers).await;
        (answer.status != 503).then_some(answer)
    })
    .await
    .expect("the environment's first rollout is recorded as applied")
}

/// The environment of a running replica of `service` started by the agent whose state is
/// `state`, as the kernel shows it.
pub(crate) fn replica_environment(state: &std::path::Path, service: &str) -> Option<Vec<(String, String)>> {
    let run = format!("PLUMB_RUN={}", state.display());
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let environ = std::fs::read(entry.path().join("environ")).ok()?;
        let variables: Vec<(String, String)> = String::from_utf8_lossy(&environ)
            .split('\0')
            .filter_map(|v| v.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let ours = variables.iter().any(|(k, v)| format!("{k}={v}").starts_with(&run))
            && variables.iter().any(|(k, v)| k == "PLUMB_SERVICE" && v == service);
        ours.then_some(variables)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reads_its_own_configuration_in_clear_with_the_token_it_was_given() {
    let alice = TestKey::new("alice");
    let identity = Identity::new();
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    let sealed = identity.seal("hunter2-in-clear");
    write(
        &upstream,
        port,
        "r1",
        &format!("    pool: 10\n    password: {sealed}\n"),
    );
    upstream.commit_signed("web r1", &alice);
    let state = tempfile::tempdir().unwrap();
    let agent = serving(&upstream, &root, &identity, state.path()).await;
    let api = agent.handle.api.unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(
        eventually(Duration::from_secs(30), || release(addr)).await.as_deref(),
        Some("r1")
    );

    // The replica was told where its configuration is, and given a token for it.
    let variables = replica_environment(state.path(), "web").expect("a replica of web");
    let variable = |name: &str| variables.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let base = "/api/v1/environments/dev/services/web/config";
    assert_eq!(variable("PLUMB_CONFIG_URL"), Some(format!("http://{api}{base}")));
    let token = variable("PLUMB_CONFIG_TOKEN").expect("a read token");
    let bearer = |token: &str| [("Authorization", format!("Bearer {token}"))];

    // With it: the decrypted values. Without it: masked.
    let own = once_applied(api, base, &bearer(&token)).await;
    assert_eq!(own.status, 200, "{}", own.body);
    let value = serde_json::from_str::<Value>(&own.body).unwrap()["value"].clone();
    assert_eq!(value, json!({"pool": 10, "password": "hunter2-in-clear"}));
    let anyone = api_get(api, base).await;
    assert!(anyone.body.contains("\"***\"") && !anyone.body.contains("hunter2"));
    assert_ne!(own.header("etag"), anyone.header("etag"));

    // It reads nothing else: another service, another environment, the agent's status.
    for other in [
        "/api/v1/environments/dev/services/db/config",
        "/api/v1/environments/prod/services/web/config",
        "/api/v1/status",
    ] {
        let refused = crate::http::get_with(api, other, &bearer(&token)).await;
        assert_eq!(refused.status, 403, "{other}: {}", refused.body);
        assert!(refused.body.contains("`web` in `dev` only"), "{}", refused.body);
    }
    // A token not made by this agent's key is no one's.
    let forged = format!("{}AA", &token[..token.len() - 2]);
    assert_eq!(api_get_with(api, base, &bearer(&forged)).await.status, 401);
    agent.stop().await;
}
