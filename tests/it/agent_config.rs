//! `plumb agent --config`: the file is checked with lines and fields named, and edits reach the
//! running agent — good ones at once, bad ones refused while the running configuration stays.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::agent::eventually;
use crate::harness::{Web, plumb, trusted};
use crate::http::{get, post};
use crate::keys::TestKey;

fn config(repo: &std::path::Path, root: &str, state: &std::path::Path, listen: SocketAddr, token: &str) -> String {
    format!(
        "apiVersion: plumb/v1\nkind: Agent\nstate: {state:?}\nlisten: \"{listen}\"\napiTokenFile: {token:?}\n\
         repository:\n  url: {repo:?}\n  branch: {branch}\n  trustRoot:\n    commit: \"{root}\"\n  poll:\n    interval: 200ms\n",
        state = state.display().to_string(),
        token = token,
        repo = repo.display().to_string(),
        branch = "master",
    )
}

#[test]
fn a_bad_configuration_names_the_line_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.yaml");
    std::fs::write(
        &file,
        "apiVersion: plumb/v1\nkind: Agent\nrepository:\n  url: https://git.example.com/config.git\n  trustRoot:\n    commit: abc\n  pol:\n    interval: 5s\n",
    )
    .unwrap();
    let run = plumb(&["agent", "--config", file.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("agent.yaml:7:3"), "{}", run.stderr);
    assert!(run.stderr.contains("unknown field `pol`"), "{}", run.stderr);
    assert!(run.stderr.contains("did you mean `poll`?"), "{}", run.stderr);
}

#[test]
fn an_environment_belongs_to_one_repository() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.yaml");
    let root = "0123456789012345678901234567890123456789";
    std::fs::write(
        &file,
        format!(
            "apiVersion: plumb/v1\nkind: Agent\nrepositories:\n\
             - name: platform\n  url: https://git.example.com/platform.git\n  trustRoot: {{commit: \"{root}\"}}\n  environments: [staging, production]\n\
             - name: payments\n  url: https://git.example.com/payments.git\n  trustRoot: {{commit: \"{root}\"}}\n  environments: [payments, production]\n\
             - name: tools\n  url: https://git.example.com/tools.git\n  trustRoot: {{commit: \"{root}\"}}\n"
        ),
    )
    .unwrap();
    let run = plumb(&["agent", "--config", file.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("agent.yaml:11:28: $.repositories[1].environments[1]: environment `production` already belongs to repository `platform`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "agent.yaml:12:3: $.repositories[2]: every repository under `repositories` lists the `environments` it owns"
        ),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_reach_the_running_agent_and_bad_ones_are_refused() {
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    Web::new(port, "r1", "recreate: {}").write(&upstream);
    upstream.commit_signed("web r1", &alice);

    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("token-1"), dir.path().join("token-2"));
    std::fs::write(&first, "first-token-0123456789\n").unwrap();
    std::fs::write(&second, "second-token-0123456789\n").unwrap();
    let api = SocketAddr::from(([127, 0, 0, 1], crate::reconcile::free_port()));
    let state = dir.path().join("state");
    let file = dir.path().join("agent.yaml");
    std::fs::write(
        &file,
        config(upstream.path(), &root, &state, api, first.to_str().unwrap()),
    )
    .unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_plumb"))
        .args(["agent", "--log-format", "json", "--config", file.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let sync = |token: &'static str| async move {
        let bearer = [("authorization", format!("Bearer {token}"))];
        post(api, "/api/v1/environments/dev/sync", &bearer, b"").await.status
    };
    let log = dir.path().join("agent.log");
    let applied = eventually(Duration::from_secs(60), || async {
        if tokio::net::TcpStream::connect(api).await.is_err() {
            return None;
        }
        (sync("first-token-0123456789").await == 200).then_some(())
    })
    .await;
    assert!(
        applied.is_some(),
        "the agent never answered a sync:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // A good edit: the new token works at once, the old one no longer.
    std::fs::write(
        &file,
        config(upstream.path(), &root, &state, api, second.to_str().unwrap()),
    )
    .unwrap();
    let reloaded = eventually(Duration::from_secs(10), || async {
        (sync("second-token-0123456789").await == 200).then_some(())
    })
    .await;
    assert!(reloaded.is_some(), "the edited token never took effect");
    assert_eq!(sync("first-token-0123456789").await, 401);

    // Reads open by default, protected on request.
    assert_eq!(get(api, "/api/v1/status").await.status, 200);
    let protected = format!(
        "{}protectReads: true\n",
        config(upstream.path(), &root, &state, api, second.to_str().unwrap())
    );
    std::fs::write(&file, protected).unwrap();
    let closed = eventually(Duration::from_secs(10), || async {
        (get(api, "/api/v1/status").await.status == 401).then_some(())
    })
    .await;
    assert!(closed.is_some(), "reads never needed the token");
    assert_eq!(get(api, "/metrics").await.status, 401);
    assert_eq!(get(api, "/healthz").await.status, 200, "liveness stays open");
    let bearer = [("authorization", "Bearer second-token-0123456789".to_owned())];
    assert_eq!(crate::http::get_with(api, "/api/v1/status", &bearer).await.status, 200);

    // A bad edit is refused; the running configuration stays.
    std::fs::write(&file, "apiVersion: plumb/v1\nkind: Agent\nlisten: nowhere\n").unwrap();
    let refused = eventually(Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("Refused the edited configuration").then_some(text)
    })
    .await
    .expect("the bad edit is reported");
    assert!(refused.contains("the agent follows no repository"), "{refused}");
    assert_eq!(sync("second-token-0123456789").await, 200);

    // SAFETY: SIGTERM to the child this test started.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    assert!(agent.wait().unwrap().success());
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        events
            .iter()
            .all(|e| e["level"].is_string() && e["message"].is_string())
    );
    // Deployment events carry the environment, commit and signer of their attempt.
    let step = events.iter().find(|e| e["event"] == "step_done").expect("a step event");
    assert_eq!(step["span"]["environment"], "dev", "{step}");
    assert!(step["span"]["commit"].as_str().is_some_and(|c| c.len() == 40), "{step}");
    assert!(step["step"].as_str().is_some_and(|s| s.starts_with("web: ")), "{step}");
    let ended = events
        .iter()
        .find(|e| e["event"] == "succeeded")
        .expect("an outcome event");
    assert!(ended["duration_ms"].is_u64(), "{ended}");
}
