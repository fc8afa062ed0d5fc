//! Governance: who may call what on the agent's API (named identities from `agent.yaml`, each
//! with a role and the environments it acts on), and the ledger saying who did it.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::agent::eventually;
use crate::harness::{TestRepo, Web, plumb, trusted};
use crate::http::{Response, get_with, post, try_get_with};
use crate::keys::TestKey;

/// A repository with two environments on the local target, `staging` and `production`, each
/// serving `web` on its own port.
fn two_environments(repo: &TestRepo, staging: u16, production: u16) {
    Web {
        environment: "staging",
        ..Web::new(staging, "r1", "recreate: {}")
    }
    .write(repo);
    repo.write(
        "plumb.yaml",
        "apiVersion: plumb/v1\nkind: Repository\nenvironments: [staging, production]\n",
    );
    repo.write(
        "environments/production.yaml",
        &format!(
            "apiVersion: plumb/v1\nkind: Environment\nname: production\ntarget:\n  local: {{}}\n\
             services:\n  web:\n    ports:\n      - {{name: http, port: {production}}}\n"
        ),
    );
}

/// A running `plumb agent --config`.
pub(crate) struct Agent(Child);

impl Agent {
    /// `plumb agent --config file`, its log appended to `log`.
    pub(crate) fn from_config(file: &std::path::Path, log: &std::path::Path) -> Agent {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        Agent(
            Command::new(env!("CARGO_BIN_EXE_plumb"))
                .args(["agent", "--config", file.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    /// Kills it with SIGKILL: nothing of it runs on.
    pub(crate) fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: SIGTERM to the child this test started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {token}"))]
}

async fn call(api: SocketAddr, path: &str, token: Option<&str>) -> Response {
    post(api, path, &token.map(bearer).unwrap_or_default(), b"").await
}

const ANN: &str = "ann-deploys-staging-only";
const VIV: &str = "viv-only-looks-at-things";
const ROOT: &str = "the-single-api-token-of-old";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_may_do_what_its_role_allows_where_it_may() {
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let (staging, production) = (crate::reconcile::free_port(), crate::reconcile::free_port());
    two_environments(&upstream, staging, production);
    upstream.commit_signed("web r1 in staging and production", &alice);

    let dir = tempfile::tempdir().unwrap();
    for (file, token) in [("ann", ANN), ("viv", VIV), ("root", ROOT)] {
        std::fs::write(dir.path().join(file), token).unwrap();
    }
    let api = SocketAddr::from(([127, 0, 0, 1], crate::reconcile::free_port()));
    let file = dir.path().join("agent.yaml");
    let d = dir.path().display();
    std::fs::write(
        &file,
        format!(
            "apiVersion: plumb/v1\nkind: Agent\nstate: \"{d}/state\"\nlisten: \"{api}\"\napiTokenFile: \"{d}/root\"\n\
             access:\n  reads: authenticated\n  identities:\n\
             \x20   - {{name: ann, tokenFile: \"{d}/ann\", role: deployer, environments: [staging]}}\n\
             \x20   - {{name: viv, tokenFile: \"{d}/viv\", role: viewer}}\n\
             repository:\n  url: {:?}\n  branch: {}\n  trustRoot:\n    commit: \"{root}\"\n  poll:\n    interval: 200ms\n",
            upstream.path().display().to_string(),
            upstream.branch(),
        ),
    )
    .unwrap();
    let _agent = Agent::from_config(&file, &dir.path().join("agent.log"));
    let ready = eventually(Duration::from_secs(30), || async {
        let status = try_get_with(api, "/api/v1/environments/staging", &bearer(VIV)).await?;
        let body: serde_json::Value = serde_json::from_str(&status.body).ok()?;
        body["applied"].is_string().then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "{}",
        std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
    );

    // Reads need an identity; any role reads.
    assert_eq!(get_with(api, "/api/v1/status", &[]).await.status, 401);
    assert_eq!(
        get_with(api, "/api/v1/status", &bearer("not-a-token-anyone-has"))
            .await
            .status,
        401
    );
    assert_eq!(get_with(api, "/api/v1/status", &bearer(ANN)).await.status, 200);

    // A deployer syncs where it may, and nowhere else; a viewer syncs nowhere.
    let synced = call(api, "/api/v1/environments/staging/sync", Some(ANN)).await;
    assert_eq!(synced.status, 200, "{}", synced.body);
    let refused = call(api, "/api/v1/environments/production/sync", Some(ANN)).await;
    assert_eq!(refused.status, 403);
    assert!(
        refused.body.contains("`ann` may not sync in `production`"),
        "{}",
        refused.body
    );
    let refused = call(api, "/api/v1/environments/staging/rollback", Some(VIV)).await;
    assert_eq!(refused.status, 403);
    assert!(
        refused.body.contains("`viv` (Viewer) may not roll back"),
        "{}",
        refused.body
    );
    assert_eq!(call(api, "/api/v1/environments/staging/sync", None).await.status, 401);
    // The single token of old is an admin.
    let synced = call(api, "/api/v1/environments/production/sync", Some(ROOT)).await;
    assert_eq!(synced.status, 200, "{}", synced.body);

    // The ledger says who asked: in the API's history and in `plumb history`.
    let history = get_with(api, "/api/v1/environments/staging/history?limit=1", &bearer(VIV)).await;
    let history: serde_json::Value = serde_json::from_str(&history.body).unwrap();
    assert_eq!(history["attempts"][0]["by"], "ann", "{history:#}");
    let printed = plumb(&[
        "history",
        "--env",
        "production",
        "--limit",
        "1",
        "--state",
        &format!("{d}/state"),
    ]);
    assert!(printed.stdout.contains("asked by api-token"), "{}", printed.stdout);
    // No token reaches the log.
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    for token in [ANN, VIV, ROOT] {
        assert!(!log.contains(token));
    }
}

#[test]
fn two_identities_may_not_share_a_name_or_a_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a"), ANN).unwrap();
    std::fs::write(dir.path().join("b"), ANN).unwrap();
    let d = dir.path().display();
    let root = "0123456789012345678901234567890123456789";
    let file = dir.path().join("agent.yaml");
    let write = |identities: &str| {
        std::fs::write(
            &file,
            format!(
                "apiVersion: plumb/v1\nkind: Agent\naccess:\n  identities:\n{identities}\
                 repository:\n  url: https://git.example.com/config.git\n  trustRoot: {{commit: \"{root}\"}}\n"
            ),
        )
        .unwrap();
    };
    write(&format!(
        "    - {{name: ann, tokenFile: \"{d}/a\", role: deployer}}\n    - {{name: bob, tokenFile: \"{d}/b\", role: admin}}\n"
    ));
    let run = plumb(&["agent", "--config", file.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("access.identities[1].tokenFile: the token is another identity's too"),
        "{}",
        run.stderr
    );
    write(&format!(
        "    - {{name: ann, tokenFile: \"{d}/a\", role: deployer}}\n    - {{name: ann, tokenFile: \"{d}/b\", role: cook}}\n"
    ));
    let run = plumb(&["agent", "--config", file.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("agent.yaml:6:"), "{}", run.stderr);
    assert!(run.stderr.contains("cook"), "{}", run.stderr);
}

/// The environment document of `dev` on the local target, with `windows` (YAML list items).
fn dev_with_windows(repo: &TestRepo, windows: &str) {
    let windows = if windows.is_empty() {
        String::new()
    } else {
        format!("syncWindows:\n{windows}")
    };
    repo.write(
        "environments/dev.yaml",
        &format!("apiVersion: plumb/v1\nkind: Environment\nname: dev\ntarget:\n  local: {{}}\n{windows}"),
    );
}

/// A deny window that is always in force: one opens every minute and lasts an hour.
const ALWAYS_DENY: &str = "  - {kind: deny, schedule: \"* * * * *\", duration: 1h, timeZone: Europe/Berlin}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_window_holds_syncs_back_but_never_a_rollback() {
    use crate::agent::{TOKEN, api_get, api_post, release};

    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Web::new(port, "r1", "recreate: {}").write(&upstream);
    let r1 = upstream.commit_signed("web r1", &alice);
    let state = tempfile::tempdir().unwrap();
    let (api, cancel, agent) = polling_agent(&upstream, &root, state.path()).await;
    let serving = |wanted: &'static str| async move {
        eventually(Duration::from_secs(30), || async {
            release(addr).await.filter(|r| r == wanted)
        })
        .await
    };
    assert_eq!(serving("r1").await.as_deref(), Some("r1"));

    // A commit bringing a deny window is judged by the rules it found (none): it lands.
    Web::new(port, "r2", "recreate: {}").write(&upstream);
    dev_with_windows(&upstream, ALWAYS_DENY);
    upstream.commit_signed("web r2, and no changes from now on", &alice);
    assert_eq!(serving("r2").await.as_deref(), Some("r2"));

    // The next waits, even though it removes the window: the rules in force are r2's.
    Web::new(port, "r3", "recreate: {}").write(&upstream);
    dev_with_windows(&upstream, "");
    upstream.commit_signed("web r3, and the window removed", &alice);
    let waiting = eventually(Duration::from_secs(10), || async {
        let status: serde_json::Value =
            serde_json::from_str(&api_get(api, "/api/v1/environments/dev").await.body).ok()?;
        status["waiting"].as_str().map(str::to_owned)
    })
    .await
    .expect("the status says which window holds the head back");
    assert!(
        waiting.contains("sync window: the deny window `* * * * *, 1h, Europe/Berlin` is open until"),
        "{waiting}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await; // three checks: still r2
    assert_eq!(release(addr).await.as_deref(), Some("r2"));
    let families = crate::metrics::parse(&api_get(api, "/metrics").await.body);
    assert_eq!(
        crate::metrics::value(&families, "plumb_sync_window_open", &[("environment", "dev")]),
        Some(0.0)
    );
    // `plumb sync` too, the window not saying `manualSync`.
    let auth = [("authorization", format!("Bearer {TOKEN}"))];
    let refused = api_post(api, "/api/v1/environments/dev/sync", &auth, b"").await;
    assert_eq!(refused.status, 409);
    assert!(refused.body.contains("manual syncs wait too"), "{}", refused.body);
    // A rollback is never held.
    let body = format!(r#"{{"to": "{r1}"}}"#);
    let rolled = api_post(api, "/api/v1/environments/dev/rollback", &auth, body.as_bytes()).await;
    assert_eq!(rolled.status, 200, "{}", rolled.body);
    assert_eq!(serving("r1").await.as_deref(), Some("r1"));

    // From r1's rules (no window) the next head lands; a window saying `manualSync` holds
    // automatic syncs back but lets `plumb sync` through.
    Web::new(port, "r4", "recreate: {}").write(&upstream);
    dev_with_windows(
        &upstream,
        "  - {kind: deny, schedule: \"* * * * *\", duration: 1h, manualSync: true}\n",
    );
    upstream.commit_signed("web r4, a window for automatic syncs only", &alice);
    assert_eq!(serving("r4").await.as_deref(), Some("r4"));
    Web::new(port, "r5", "recreate: {}").write(&upstream);
    dev_with_windows(
        &upstream,
        "  - {kind: deny, schedule: \"* * * * *\", duration: 1h, manualSync: true}\n",
    );
    upstream.commit_signed("web r5", &alice);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(release(addr).await.as_deref(), Some("r4"));
    let synced = api_post(api, "/api/v1/environments/dev/sync", &auth, b"").await;
    assert_eq!(synced.status, 200, "{}", synced.body);
    assert_eq!(serving("r5").await.as_deref(), Some("r5"));

    cancel.cancel();
    agent.await.unwrap().unwrap();
}

#[test]
fn a_window_that_cannot_be_read_is_refused_at_its_line() {
    let alice = TestKey::new("alice");
    let (upstream, _) = trusted(&alice);
    Web::new(crate::reconcile::free_port(), "r1", "recreate: {}").write(&upstream);
    dev_with_windows(
        &upstream,
        "  - {kind: allow, schedule: \"0 25 * * *\", duration: 8h}\n  - {kind: deny, schedule: \"@daily\", duration: 1h, timeZone: Europe/Berlim}\n",
    );
    let run = plumb(&["validate", "--repo", upstream.path().to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains("environments/dev.yaml:7:") && said.contains("`0 25 * * *` is not a cron schedule"),
        "{said}"
    );
    assert!(
        said.contains("environments/dev.yaml:8:") && said.contains("`Europe/Berlim` is not an IANA time zone"),
        "{said}"
    );
    // A promotion follows environments of the repository, not itself.
    upstream.write(
        "environments/dev.yaml",
        "apiVersion: plumb/v1\nkind: Environment\nname: dev\ntarget:\n  local: {}\npromotion: {after: [dve, dev]}\n",
    );
    let run = plumb(&["validate", "--repo", upstream.path().to_str().unwrap()]);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains(
            "environments/dev.yaml:6:21: $.promotion.after[0]: `dve` is not an environment of this repository"
        ),
        "{said}"
    );
    assert!(said.contains("`dev` cannot wait for itself"), "{said}");

    // Nor do environments wait for each other in a circle.
    two_environments(&upstream, 7101, 7102);
    upstream.write(
        "environments/staging.yaml",
        "apiVersion: plumb/v1\nkind: Environment\nname: staging\ntarget:\n  local: {}\npromotion: {after: [production]}\n",
    );
    upstream.write(
        "environments/production.yaml",
        "apiVersion: plumb/v1\nkind: Environment\nname: production\ntarget:\n  local: {portOffset: 1}\npromotion: {after: [staging]}\n",
    );
    let run = plumb(&["validate", "--repo", upstream.path().to_str().unwrap()]);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 1, "{said}");
    assert!(
        said.contains("environments/staging.yaml:6:20: $.promotion.after: environments wait for each other in a circle (staging after production after staging)"),
        "{said}"
    );
    assert_eq!(said.matches("in a circle").count(), 1, "{said}");
}

/// An agent over `upstream` polling every 100 ms, checking every 200 ms, with the API token.
async fn polling_agent(
    upstream: &TestRepo,
    root: &str,
    state: &std::path::Path,
) -> (
    SocketAddr,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<Result<(), plumb::agent::AgentError>>,
) {
    let settings = plumb::agent::Settings {
        heal_every: Duration::from_millis(200),
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        api_token: Some(plumb::secret::Secret::new(crate::agent::TOKEN)),
        repositories: vec![plumb::agent::Repository {
            poll: plumb::trigger::Poll {
                interval: Some(Duration::from_millis(100)),
                ..plumb::trigger::Poll::default()
            },
            ..crate::harness::repository_settings("config", upstream, root)
        }],
        ..crate::harness::agent_settings(upstream, root, state)
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let (started, handle) = tokio::sync::oneshot::channel();
    let agent = tokio::spawn(plumb::agent::run(settings, cancel.clone(), Some(started)));
    let api = handle.await.unwrap().api.unwrap();
    (api, cancel, agent)
}

/// What the status of `environment` says it waits for.
pub(crate) async fn waiting(api: SocketAddr, environment: &str) -> Option<String> {
    let status = crate::agent::api_get(api, &format!("/api/v1/environments/{environment}")).await;
    let status: serde_json::Value = serde_json::from_str(&status.body).ok()?;
    status["waiting"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_takes_a_commit_once_staging_ran_it_for_the_soak() {
    use crate::agent::{TOKEN, api_post, release};

    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let (staging, production) = (crate::reconcile::free_port(), crate::reconcile::free_port());
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let write = |upstream: &TestRepo, release: &str| {
        two_environments(upstream, staging, production);
        Web {
            environment: "staging",
            ..Web::new(staging, release, "recreate: {}")
        }
        .write(upstream);
        upstream.write(
            "plumb.yaml",
            "apiVersion: plumb/v1\nkind: Repository\nenvironments: [staging, production]\n",
        );
        upstream.write(
            "environments/production.yaml",
            &format!(
                "apiVersion: plumb/v1\nkind: Environment\nname: production\ntarget:\n  local: {{}}\n\
                 promotion: {{after: [staging], soak: 2s}}\n\
                 services:\n  web:\n    ports:\n      - {{name: http, port: {production}}}\n"
            ),
        );
    };
    write(&upstream, "r1");
    let c1 = upstream.commit_signed("web r1", &alice);
    let state = tempfile::tempdir().unwrap();
    let (api, cancel, agent) = polling_agent(&upstream, &root, state.path()).await;
    let serving = |port: u16, wanted: &'static str| async move {
        eventually(Duration::from_secs(30), || async {
            release(at(port)).await.filter(|r| r == wanted)
        })
        .await
    };

    // The first deployment follows its own rule: production waits for staging's soak.
    assert_eq!(serving(staging, "r1").await.as_deref(), Some("r1"));
    let soaking = eventually(Duration::from_secs(10), || async {
        waiting(api, "production").await.filter(|w| w.contains("soaking until"))
    })
    .await;
    assert!(
        soaking
            .as_deref()
            .is_some_and(|w| w.starts_with("promotion: waiting for staging: soaking until")),
        "{soaking:?}"
    );
    assert_eq!(release(at(production)).await, None, "not before the soak");
    assert_eq!(serving(production, "r1").await.as_deref(), Some("r1"));
    let _ = c1;

    // r2 goes the same way.
    write(&upstream, "r2");
    let c2 = upstream.commit_signed("web r2", &alice);
    assert_eq!(serving(staging, "r2").await.as_deref(), Some("r2"));
    assert_eq!(release(at(production)).await.as_deref(), Some("r1"));
    assert_eq!(serving(production, "r2").await.as_deref(), Some("r2"));

    // r3 is rolled back in staging during its soak: production never takes it.
    write(&upstream, "r3");
    let c3 = upstream.commit_signed("web r3", &alice);
    assert_eq!(serving(staging, "r3").await.as_deref(), Some("r3"));
    let auth = [("authorization", format!("Bearer {TOKEN}"))];
    let body = format!(r#"{{"to": "{c2}"}}"#);
    let rolled = api_post(api, "/api/v1/environments/staging/rollback", &auth, body.as_bytes()).await;
    assert_eq!(rolled.status, 200, "{}", rolled.body);
    let stopped = eventually(Duration::from_secs(10), || async {
        waiting(api, "production").await.filter(|w| w.contains("stopped"))
    })
    .await;
    assert!(
        stopped
            .as_deref()
            .is_some_and(|w| w.contains("stopped: staging was rolled back") && w.contains(&c3[..12])),
        "{stopped:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await; // past the soak: still r2
    assert_eq!(release(at(production)).await.as_deref(), Some("r2"));
    // Nor does `plumb sync` push it through.
    let refused = api_post(api, "/api/v1/environments/production/sync", &auth, b"").await;
    assert_eq!(refused.status, 409);
    assert!(refused.body.contains("not promoted here yet"), "{}", refused.body);

    cancel.cancel();
    agent.await.unwrap().unwrap();
}

/// `git clone REPO INTO`: a clone whose `origin` is `repo`.
pub(crate) fn clone(repo: &std::path::Path, into: &std::path::Path) {
    let cloned = Command::new("git")
        .args(["clone", "--quiet"])
        .arg(repo)
        .arg(into)
        .output()
        .unwrap();
    assert!(cloned.status.success(), "{}", String::from_utf8_lossy(&cloned.stderr));
}

/// Writes `key`'s secret keys to `path`, armored, as an approver keeps them.
pub(crate) fn secret_key_file(key: &TestKey, path: &std::path::Path) {
    use sequoia_openpgp::serialize::SerializeInto;
    std::fs::write(path, key.cert.as_tsk().armored().to_vec().unwrap()).unwrap();
}

/// `plumb approve ARGS` (with `env` set), insisting it succeeds; what it printed.
pub(crate) fn approve(args: &[&str], env: &[(&str, &std::path::Path)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_plumb"));
    command.arg("approve").args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "plumb approve {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A production environment needing two approvals among alice, bob and carol (`required` as
/// written by the commit; the rule in force is the rollback point's).
pub(crate) fn production(repo: &TestRepo, port: u16, release: &str, required: u32) {
    Web {
        environment: "production",
        ..Web::new(port, release, "recreate: {}")
    }
    .write(repo);
    repo.write(
        "environments/production.yaml",
        &format!(
            "apiVersion: plumb/v1\nkind: Environment\nname: production\ntarget:\n  local: {{}}\n\
             approval: {{required: {required}, approvers: [alice, bob, carol], allowSelfApproval: false}}\n"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_moves_once_two_other_people_approved_exactly_that_commit() {
    use crate::agent::{TOKEN, api_get, api_post, release};
    use crate::keys::{ALL, KEYS_CREATED, policy};

    let (alice, bob, carol, dave, erin) = (
        TestKey::new("alice"),
        TestKey::new("bob"),
        TestKey::new("carol"),
        TestKey::new("dave"),
        TestKey::new("erin"),
    );
    let (mut upstream, root) = trusted(&alice);
    let tag = &["sign_tag"][..];
    upstream.write(
        "openpgp-policy.toml",
        &policy(&[(&alice, ALL), (&bob, tag), (&carol, tag), (&dave, tag)]),
    );
    let port = crate::reconcile::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    production(&upstream, port, "r1", 2);
    let c1 = upstream.commit_signed("web r1: bob, carol and dave may approve", &alice);

    let keys = tempfile::tempdir().unwrap();
    for key in [&alice, &bob, &carol, &dave, &erin] {
        secret_key_file(key, &keys.path().join(format!("{}.key", key.name)));
    }
    let key = |name: &str| keys.path().join(format!("{name}.key")).to_str().unwrap().to_owned();
    // The approvers' clone, whose `origin` is the repository the agent follows.
    let work = keys.path().join("work");
    clone(upstream.path(), &work);
    let work = work.to_str().unwrap().to_owned();

    let state = tempfile::tempdir().unwrap();
    let (api, cancel, agent) = polling_agent(&upstream, &root, state.path()).await;
    let wait_for = |wanted: &'static str| async move {
        eventually(Duration::from_secs(20), || async {
            waiting(api, "production").await.filter(|w| w.contains(wanted))
        })
        .await
    };
    assert!(wait_for("approval: 0 of 2 approvals; waiting").await.is_some());
    assert_eq!(release(addr).await, None, "not applied unapproved");

    // The commit's own signer does not count; a first other person does.
    let said = approve(&["--env", "production", "--repo", &work, "--key", &key("alice")], &[]);
    assert!(
        said.contains(&format!(
            "approved {c1} for production as refs/plumb/approvals/production/{c1}/"
        )),
        "{said}"
    );
    assert!(said.contains("pushed to origin"), "{said}");
    approve(&["--env", "production", "--repo", &work, "--key", &key("bob")], &[]);
    assert!(wait_for("approval: 1 of 2 approvals (bob); waiting").await.is_some());
    let families = crate::metrics::parse(&api_get(api, "/metrics").await.body);
    assert_eq!(
        crate::metrics::value(
            &families,
            "plumb_refused_approvals_total",
            &[("reason", "not_authorized")]
        ),
        Some(1.0),
        "alice's own approval is refused"
    );

    // Handed to the API: one by someone the policy does not know, and one for another
    // environment, are refused and change nothing.
    let auth = [("authorization", format!("Bearer {TOKEN}"))];
    for (who, environment) in [("erin", "production"), ("carol", "staging")] {
        let said = approve(
            &[
                "--env",
                environment,
                "--repo",
                &work,
                "--key",
                &key(who),
                "--push",
                "none",
            ],
            &[],
        );
        let object = said.split(" as ").nth(1).unwrap().trim().to_owned();
        let text = Command::new("git")
            .args(["-C", &work, "cat-file", "tag", &object])
            .output()
            .unwrap();
        let body = serde_json::json!({ "approval": String::from_utf8(text.stdout).unwrap() }).to_string();
        let refused = api_post(api, "/api/v1/environments/production/approvals", &auth, body.as_bytes()).await;
        assert_eq!(refused.status, 409, "{}", refused.body);
        let expected = if who == "erin" {
            "is not in the parent commit's signing policy"
        } else {
            "for `staging`"
        };
        assert!(refused.body.contains(expected), "{who}: {}", refused.body);
    }
    assert!(wait_for("approval: 1 of 2 approvals (bob); waiting").await.is_some());

    // Carol signs with her GnuPG, as git signs: the second approval; production moves.
    let gnupg = keys.path().join("gnupg");
    std::fs::create_dir(&gnupg).unwrap();
    std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let imported = Command::new("gpg")
        .args(["--batch", "--quiet", "--import", &key("carol")])
        .env("GNUPGHOME", &gnupg)
        .output()
        .unwrap();
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let fingerprint = carol.cert.fingerprint().to_hex();
    approve(
        &["--env", "production", "--repo", &work, "--gpg-key", &fingerprint],
        &[("GNUPGHOME", &gnupg)],
    );
    let _ = Command::new("gpgconf")
        .args(["--kill", "gpg-agent"])
        .env("GNUPGHOME", &gnupg)
        .status();
    let served = eventually(Duration::from_secs(20), || async {
        release(addr).await.filter(|r| r == "r1")
    })
    .await;
    assert_eq!(served.as_deref(), Some("r1"));
    // The ledger keeps who approved, with which key, beside the attempt they allowed.
    let history = api_get(api, "/api/v1/environments/production/history?limit=1").await;
    let history: serde_json::Value = serde_json::from_str(&history.body).unwrap();
    let approvals: Vec<&str> = history["attempts"][0]["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["user"].as_str().unwrap())
        .collect();
    assert_eq!(approvals, ["bob", "carol"], "{history:#}");

    // The next commit starts from nothing: approvals of r1 do not carry. It lowers its own
    // rule to one approval, and revokes carol's key — the rule in force is r1's (two), and a
    // revoked key stops counting.
    upstream.write(
        "openpgp-policy.toml",
        &policy(&[
            (&alice, ALL),
            (&bob, tag),
            (&carol.revoked(false, KEYS_CREATED + 100), tag),
            (&dave, tag),
        ]),
    );
    production(&upstream, port, "r2", 1);
    let c2 = upstream.commit_signed("web r2, one approval is enough (says r2)", &alice);
    assert!(wait_for("approval: 0 of 2 approvals; waiting").await.is_some());
    let fetched = Command::new("git")
        .args(["-C", &work, "pull", "--quiet"])
        .output()
        .unwrap();
    assert!(fetched.status.success(), "{}", String::from_utf8_lossy(&fetched.stderr));
    approve(&["--env", "production", "--repo", &work, "--key", &key("bob")], &[]);
    approve(&["--env", "production", "--repo", &work, "--key", &key("carol")], &[]);
    approve(&["--env", "production", "--repo", &work, "--key", &key("dave")], &[]);
    assert!(wait_for("approval: 1 of 2 approvals (bob); waiting").await.is_some());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(release(addr).await.as_deref(), Some("r1"));
    let log = Command::new("git")
        .args(["-C", &work, "for-each-ref", "--format=%(refname)"])
        .arg(format!("refs/plumb/approvals/production/{c2}/"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(log.stdout).unwrap().lines().count(), 3);

    cancel.cancel();
    agent.await.unwrap().unwrap();
}

/// Makes, in `dir`, a CA (`ca.pem`), the agent's certificate for 127.0.0.1 (`server.pem`,
/// `server.key`) and client certificates for alice (`alice.pem`, `alice.key`, subject
/// `O=ops, CN=alice`) and mallory (signed by another CA).
fn certificates(dir: &std::path::Path) {
    let script = r#"set -e
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key ca.key; openssl req -x509 -key ca.key -out ca.pem -days 2 -subj /CN=plumb-test-ca
key other.key; openssl req -x509 -key other.key -out other.pem -days 2 -subj /CN=another-ca
sign() { # name subject extensions ca
  key "$1.key"; openssl req -new -key "$1.key" -out "$1.csr" -subj "$2"
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$4.pem" -CAkey "$4.key" -CAcreateserial -out "$1.pem" -days 2 -extfile "$1.ext" 2>/dev/null
}
sign server /CN=agent "subjectAltName=IP:127.0.0.1
extendedKeyUsage=serverAuth" ca
sign alice "/O=ops/CN=alice" "extendedKeyUsage=clientAuth" ca
sign mallory "/O=ops/CN=alice" "extendedKeyUsage=clientAuth" other
"#;
    let made = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_client_certificate_names_its_identity() {
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let (staging, production) = (crate::reconcile::free_port(), crate::reconcile::free_port());
    two_environments(&upstream, staging, production);
    upstream.commit_signed("web r1", &alice);
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let d = dir.path().display();
    let api = SocketAddr::from(([127, 0, 0, 1], crate::reconcile::free_port()));
    let file = dir.path().join("agent.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: plumb/v1\nkind: Agent\nstate: \"{d}/state\"\nlisten: \"{api}\"\n\
             tls: {{certFile: \"{d}/server.pem\", keyFile: \"{d}/server.key\", clientCaFile: \"{d}/ca.pem\"}}\n\
             access:\n  reads: authenticated\n  identities:\n\
             \x20   - {{name: alice-ops, clientSubject: \"CN=alice,O=ops\", role: deployer, environments: [staging]}}\n\
             repository:\n  url: {:?}\n  branch: {}\n  trustRoot:\n    commit: \"{root}\"\n  poll:\n    interval: 200ms\n",
            upstream.path().display().to_string(),
            upstream.branch(),
        ),
    )
    .unwrap();
    let _agent = Agent::from_config(&file, &dir.path().join("agent.log"));
    let server = format!("https://{api}");
    let plumb_as = |who: Option<&str>, args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.extend([
            "--server".to_owned(),
            server.clone(),
            "--ca-file".to_owned(),
            format!("{d}/ca.pem"),
        ]);
        if let Some(who) = who {
            all.extend([
                "--client-cert".to_owned(),
                format!("{d}/{who}.pem"),
                "--client-key".to_owned(),
                format!("{d}/{who}.key"),
            ]);
        }
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        plumb(&all)
    };
    let ready = eventually(Duration::from_secs(30), || async {
        let run = plumb_as(Some("alice"), &["status", "--output", "json"]);
        let status: serde_json::Value = serde_json::from_str(&run.stdout).ok()?;
        let environments = status["environments"].as_array()?;
        (environments.len() == 2 && environments.iter().all(|e| e["applied"].is_string())).then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "{}",
        std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
    );
    // The certificate stands for the token: alice syncs staging, not production.
    let synced = plumb_as(Some("alice"), &["sync", "--env", "staging"]);
    assert_eq!(synced.code, 0, "{}{}", synced.stdout, synced.stderr);
    let refused = plumb_as(Some("alice"), &["sync", "--env", "production"]);
    assert!(
        refused.stderr.contains("403") && refused.stderr.contains("`alice-ops` may not sync in `production`"),
        "{}",
        refused.stderr
    );
    let history = plumb(&[
        "history",
        "--env",
        "staging",
        "--limit",
        "1",
        "--state",
        &format!("{d}/state"),
    ]);
    assert!(history.stdout.contains("asked by alice-ops"), "{}", history.stdout);
    // Without a certificate (and no token): 401. With the same subject from another CA: the
    // handshake fails, nothing is answered.
    let anonymous = plumb_as(None, &["status"]);
    assert!(anonymous.stderr.contains("401"), "{}", anonymous.stderr);
    let forged = plumb_as(Some("mallory"), &["status"]);
    assert_ne!(forged.code, 0);
    assert!(forged.stderr.contains("cannot reach the agent"), "{}", forged.stderr);
    // Plain HTTP is not served.
    let plain = plumb(&["status", "--server", &format!("http://{api}")]);
    assert_ne!(plain.code, 0, "{}", plain.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_changes_nothing_for_staging_counts_as_run_there() {
    use crate::agent::{TOKEN, api_post, release};

    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let (staging, production) = (crate::reconcile::free_port(), crate::reconcile::free_port());
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    // Staging applies only on request; production follows it.
    let write = |upstream: &TestRepo, production_release: &str| {
        two_environments(upstream, staging, production);
        upstream.write(
            "environments/staging.yaml",
            "apiVersion: plumb/v1\nkind: Environment\nname: staging\ntarget:\n  local: {}\nsync: {automatic: false}\n",
        );
        upstream.write(
            "environments/production.yaml",
            &format!(
                "apiVersion: plumb/v1\nkind: Environment\nname: production\ntarget:\n  local: {{}}\n\
                 promotion: {{after: [staging]}}\n\
                 services:\n  web:\n    ports:\n      - {{name: http, port: {production}}}\n\
                 \x20   env:\n      - {{name: EXAMPLE_RELEASE, value: {production_release}}}\n"
            ),
        );
    };
    write(&upstream, "r1-production");
    upstream.commit_signed("web r1", &alice);
    let state = tempfile::tempdir().unwrap();
    let (api, cancel, agent) = polling_agent(&upstream, &root, state.path()).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            waiting(api, "production")
                .await
                .filter(|w| w.contains("waiting for staging to apply"))
        })
        .await
        .is_some()
    );
    let auth = [("authorization", format!("Bearer {TOKEN}"))];
    let synced = api_post(api, "/api/v1/environments/staging/sync", &auth, b"").await;
    assert_eq!(synced.status, 200, "{}", synced.body);
    let serving = |port: u16, wanted: &'static str| async move {
        eventually(Duration::from_secs(30), || async {
            release(at(port)).await.filter(|r| r == wanted)
        })
        .await
    };
    assert_eq!(
        serving(production, "r1-production").await.as_deref(),
        Some("r1-production")
    );

    // A commit changing production alone: staging never applies it (no sync asked), yet what
    // staging runs is what the commit declares for it, so production takes it.
    write(&upstream, "r2-production");
    upstream.commit_signed("production only: r2", &alice);
    assert_eq!(
        serving(production, "r2-production").await.as_deref(),
        Some("r2-production")
    );
    assert_eq!(release(at(staging)).await.as_deref(), Some("r1"));

    cancel.cancel();
    agent.await.unwrap().unwrap();
}
