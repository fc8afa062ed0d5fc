//! The client libraries against a real agent: the TypeScript package (`clients/typescript`),
//! built with its pinned compiler and run by Node's test runner.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::agent::{Running, eventually, release};
use crate::app_config::{replica_environment, serving, write};
use crate::harness::{project, trusted};
use crate::keys::TestKey;
use crate::sealed::Identity;

/// The TypeScript client, its dependencies installed from the lock file and built once.
pub fn typescript_client() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = project().join("clients/typescript");
        if !dir.join("node_modules/typescript").exists() {
            run(Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir));
        }
        run(Command::new("npm").args(["run", "--silent", "build"]).current_dir(&dir));
        dir
    })
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} (Node.js and npm are installed by .ci/run): {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{command:?}:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

#[test]
fn the_typescript_clients_own_tests_pass() {
    let dir = typescript_client();
    let report = run(Command::new("node").args(["--test", "test/"]).current_dir(dir));
    assert!(report.contains("# fail 0"), "{report}");
}

/// An agent on the local target that applied `web` r1 — a pool of 10, two hosts, a sealed
/// password — signed by alice.
struct Deployed {
    alice: TestKey,
    identity: Identity,
    upstream: crate::harness::TestRepo,
    port: u16,
    state: tempfile::TempDir,
    agent: Running,
    first: String,
}

impl Deployed {
    async fn start() -> Deployed {
        let alice = TestKey::new("alice");
        let identity = Identity::new();
        let (mut upstream, root) = trusted(&alice);
        let port = crate::reconcile::free_port();
        write(
            &upstream,
            port,
            "r1",
            &values(&identity, 10, "    hosts: [a, b]\n", "hunter2-the-first"),
        );
        let first = upstream.commit_signed("web r1", &alice);
        let state = tempfile::tempdir().unwrap();
        let agent = serving(&upstream, &root, &identity, state.path()).await;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(
            eventually(Duration::from_secs(30), || release(addr)).await.as_deref(),
            Some("r1")
        );
        Deployed {
            alice,
            identity,
            upstream,
            port,
            state,
            agent,
            first,
        }
    }

    /// What a replica of `web` was given.
    fn variables(&self) -> Vec<(String, String)> {
        replica_environment(self.state.path(), "web").expect("a replica of web")
    }

    /// Commits r2: a pool of 20, a new flag, no hosts, another password; its id.
    fn change(&mut self) -> String {
        let values = values(
            &self.identity,
            20,
            "    feature: {newFeature: true}\n",
            "hunter2-the-second",
        );
        write(&self.upstream, self.port, "r2", &values);
        self.upstream.commit_signed("web r2: a bigger pool", &self.alice)
    }
}

/// `web`'s configuration values, the password sealed for `identity`.
fn values(identity: &Identity, pool: u16, more: &str, password: &str) -> String {
    format!(
        "    database: {{host: db.internal, pool: {pool}}}\n{more}    password: {}\n",
        identity.seal(password)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_client_follows_a_real_agent_and_outlives_it() {
    let client = tokio::task::spawn_blocking(typescript_client).await.unwrap();
    let mut deployed = Deployed::start().await;

    // The program runs with what a replica of `web` was given.
    let variables = deployed.variables();
    let steps = tempfile::tempdir().unwrap();
    let mut node = tokio::process::Command::new("node");
    node.args(["--test", "scenarios/against-agent.mjs"])
        .current_dir(client)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PLUMB_TEST_DIR", steps.path())
        .env("PLUMB_TEST_FIRST", &deployed.first)
        .kill_on_drop(true);
    for (name, value) in variables.iter().filter(|(k, _)| k.starts_with("PLUMB_CONFIG")) {
        node.env(name, value);
    }
    let program = node.output();
    let steps_dir = steps.path().to_owned();
    let step = |name: &'static str| {
        let file = steps_dir.join(name);
        async move {
            eventually(Duration::from_secs(60), || {
                let file = file.clone();
                async move { file.exists().then_some(()) }
            })
            .await
            .unwrap_or_else(|| panic!("the client never reached `{name}`"))
        }
    };
    let driver = async {
        step("ready-for-change").await;
        let second = deployed.change();
        std::fs::write(steps.path().join("changed"), &second).unwrap();
        step("ready-for-stop").await;
        deployed.agent.stop().await;
        std::fs::write(steps.path().join("stopped"), "").unwrap();
    };
    tokio::pin!(program, driver);
    // The program's report, also when it fails before the driver is done.
    let output = tokio::select! {
        output = &mut program => output,
        () = &mut driver => program.await,
    };
    let output = output.expect("node runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && report.contains("# pass 1"),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_follows_a_real_agent_and_outlives_it() {
    use plumb_config::{ConfigurationManager, Options, Source};
    use serde_json::json;

    let mut deployed = Deployed::start().await;

    // Started with what a replica of `web` was given.
    let variables = deployed.variables();
    let variable = |name: &str| variables.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let options = Options {
        url: variable("PLUMB_CONFIG_URL"),
        token: variable("PLUMB_CONFIG_TOKEN"),
        file: variable("PLUMB_CONFIG").map(Into::into),
        on_hangup: false,
        file_check: None,
        retry: Duration::from_millis(100),
    };
    let manager = ConfigurationManager::initialize(options.clone()).await.unwrap();
    let snapshot = manager.watch().borrow().clone();
    assert_eq!(
        (snapshot.source, snapshot.commit.as_deref()),
        (Source::Agent, Some(deployed.first.as_str()))
    );
    assert_eq!(manager.get_configuration("password"), Some(json!("hunter2-the-first")));
    assert_eq!(manager.get_configuration("database.pool"), Some(json!(10)));
    let connected = eventually(Duration::from_secs(30), || async {
        manager.status().connected.then_some(())
    })
    .await;
    assert!(connected.is_some(), "{:?}", manager.status());

    // A commit's changes, told with their values, the new configuration watched.
    let mut changes = manager.changes();
    let mut watched = manager.watch();
    let second = deployed.change();
    let mut told = Vec::new();
    while told.len() < 4 {
        let change = tokio::time::timeout(Duration::from_secs(30), changes.recv())
            .await
            .expect("told within 30 s")
            .unwrap();
        assert_eq!(change.commit.as_deref(), Some(second.as_str()));
        assert_eq!(change.signer.as_deref(), Some("alice"));
        told.push((change.path, change.old_value, change.new_value));
    }
    assert_eq!(
        told,
        [
            ("database.pool".to_owned(), json!(10), json!(20)),
            ("feature".to_owned(), json!(null), json!({"newFeature": true})),
            ("hosts".to_owned(), json!(["a", "b"]), json!(null)),
            (
                "password".to_owned(),
                json!("hunter2-the-first"),
                json!("hunter2-the-second")
            ),
        ]
    );
    watched
        .wait_for(|s| s.commit.as_deref() == Some(second.as_str()))
        .await
        .unwrap();
    assert_eq!(watched.borrow().value["feature"]["newFeature"], true);
    let copy = deployed.state.path().join("config-copy.json");
    std::fs::copy(options.file.as_ref().unwrap(), &copy).unwrap();

    // The agent stops: the configuration stays; a new manager starts from the file.
    deployed.agent.stop().await;
    let lost = eventually(Duration::from_secs(30), || async {
        let status = manager.status();
        (!status.connected && status.agent_error.is_some()).then_some(())
    })
    .await;
    assert!(lost.is_some(), "{:?}", manager.status());
    assert_eq!(manager.get_configuration("database.pool"), Some(json!(20)));
    let restarted = ConfigurationManager::initialize(Options {
        file: Some(copy),
        ..options
    })
    .await
    .unwrap();
    assert_eq!(restarted.watch().borrow().source, Source::File);
    assert!(
        restarted
            .status()
            .agent_error
            .is_some_and(|e| e.contains("the agent at http"))
    );
    assert_eq!(
        restarted.get_configuration("password"),
        Some(json!("hunter2-the-second"))
    );
    restarted.close().await;
    manager.close().await;
}

/// The example service of the TypeScript client (`clients/typescript/example/app.ts`) as
/// service `web` on the local target at `port`, its configuration `values` (YAML, indented for
/// `values:`).
fn example_service(repo: &crate::harness::TestRepo, client: &Path, port: u16, values: &str) {
    let node = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("node"))
        .find(|candidate| candidate.exists())
        .expect("node on the PATH");
    repo.write(
        "plumb.yaml",
        "apiVersion: plumb/v1\nkind: Repository\nenvironments: [dev]\n",
    );
    repo.write(
        "environments/dev.yaml",
        "apiVersion: plumb/v1\nkind: Environment\nname: dev\ntarget:\n  local: {}\n",
    );
    repo.write(
        "services/web.yaml",
        &format!(
            "apiVersion: plumb/v1\nkind: Service\nname: web\ncommand: [{:?}, {:?}]\nreplicas: 1\n\
             ports:\n  - {{name: http, port: {port}}}\n\
             healthChecks:\n  - {{name: ready, http: {{path: /health, port: http}}, timeout: 1s, interval: 50ms, failureThreshold: 100}}\n\
             progressDeadline: 30s\nstrategy:\n  recreate: {{}}\nenv:\n  - {{name: EXAMPLE_RELEASE, value: r1}}\n\
             config:\n  file: app.json\n  reload: signal\n  values:\n{values}",
            node.display(),
            client.join("dist-example/app.js").display(),
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_example_service_reads_its_configuration_from_the_agent_while_it_runs() {
    let client = tokio::task::spawn_blocking(typescript_client).await.unwrap();
    let alice = TestKey::new("alice");
    let identity = Identity::new();
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    let values = |pool: u16| {
        format!(
            "    database: {{pool: {pool}}}\n    password: {}\n",
            identity.seal("hunter2")
        )
    };
    example_service(&upstream, client, port, &values(10));
    upstream.commit_signed("web", &alice);
    let state = tempfile::tempdir().unwrap();
    let agent = serving(&upstream, &root, &identity, state.path()).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(
        eventually(Duration::from_secs(60), || release(addr)).await.as_deref(),
        Some("r1")
    );
    let config = |path: &'static str| async move {
        serde_json::from_str::<serde_json::Value>(&crate::http::get(addr, path).await.body).unwrap()
    };
    // It started during the environment's first deployment, when the agent served nothing
    // yet: from its file; it follows the agent once the commit is applied healthy.
    let first = eventually(Duration::from_secs(30), || async {
        let now = config("/config").await;
        (now["status"]["source"] == "agent").then_some(now)
    })
    .await
    .expect("the service follows the agent");
    assert_eq!(first["value"]["password"], "hunter2", "{first}");
    assert_eq!(first["value"]["database"]["pool"], 10);

    // A commit changes the pool: the running service is told, and nothing restarts it.
    example_service(&upstream, client, port, &values(20));
    let second = upstream.commit_signed("web: a bigger pool", &alice);
    let told = eventually(Duration::from_secs(30), || async {
        let changes = config("/changes").await;
        (changes.as_array().is_some_and(|c| !c.is_empty())).then_some(changes)
    })
    .await
    .expect("the service is told the change");
    assert_eq!(
        told,
        serde_json::json!([{"path": "database.pool", "oldValue": 10, "newValue": 20, "commit": second, "signer": "alice"}])
    );
    let now = config("/config").await;
    assert_eq!(now["value"]["database"]["pool"], 20);
    assert_eq!(now["status"]["commit"], second);
    agent.stop().await;
}
