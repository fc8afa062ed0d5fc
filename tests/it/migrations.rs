//! Migrations that roll back with the release, on a real PostgreSQL: an example app whose
//! releases each add a column with a real SQL file, applied by a small migration command over
//! `psql`; the real `plumb agent` deploys them, `plumb rollback` and a failed health check bring
//! earlier releases back, and the schema follows. An agent killed in the middle of a rollback
//! migration stops the environment until `plumb migrations resolve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::agent::{TOKEN, eventually};
use crate::crash::Agent;
use crate::harness::{TestRepo, Web, trusted};
use crate::keys::TestKey;
use crate::postgres::Postgres;

/// The migration command the example app ships: `migrate up` applies, in order, each
/// `NNN_up.sql` of `$MIGRATIONS` not yet recorded in `schema_migrations`; `migrate down NNN`
/// reverts `NNN` when it is recorded. A file runs in one transaction with its record. While
/// the file `$MIGRATE_PAUSE` exists, a revert waits inside its transaction (and says so).
const MIGRATE: &str = r#"#!/bin/sh
set -eu
q() { psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" "$@"; }
q -c 'CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY)'
applied() { [ -n "$(q -t -A -c "SELECT 1 FROM schema_migrations WHERE version = '$1'")" ]; }
case "$1" in
up)
  for file in "$MIGRATIONS"/*_up.sql; do
    version=$(basename "$file" _up.sql)
    applied "$version" && continue
    q -1 -f "$file" -c "INSERT INTO schema_migrations VALUES ('$version')"
    echo "applied $version"
  done ;;
down)
  version=$2
  if ! applied "$version"; then echo "$version is not applied"; exit 0; fi
  pause="SELECT 1"
  if [ -e "${MIGRATE_PAUSE:-/nonexistent}" ]; then touch "$MIGRATE_PAUSE.reached"; pause="SELECT pg_sleep(120)"; fi
  q -1 -f "$MIGRATIONS/${version}_down.sql" -c "DELETE FROM schema_migrations WHERE version = '$version'" -c "$pause"
  echo "reverted $version" ;;
esac
"#;

/// Each migration: its version, what it does, what undoes it.
const FILES: [(&str, &str, &str); 4] = [
    (
        "001",
        "CREATE TABLE items (id serial PRIMARY KEY, one text);",
        "DROP TABLE items;",
    ),
    (
        "002",
        "ALTER TABLE items ADD COLUMN two text;",
        "ALTER TABLE items DROP COLUMN two;",
    ),
    (
        "003",
        "ALTER TABLE items ADD COLUMN three text;",
        "ALTER TABLE items DROP COLUMN three;",
    ),
    (
        "004",
        "ALTER TABLE items ADD COLUMN four text;",
        "ALTER TABLE items DROP COLUMN four;",
    ),
];

/// The app's releases on disk (as an image would carry them): release `n` holds migrations
/// 1 to `n`, and the migration command.
struct Releases {
    dir: tempfile::TempDir,
}

impl Releases {
    fn new() -> Releases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("migrate"), MIGRATE).unwrap();
        for n in 1..=FILES.len() {
            let migrations = dir.path().join(format!("r{n}"));
            std::fs::create_dir_all(&migrations).unwrap();
            for (version, up, down) in &FILES[..n] {
                std::fs::write(migrations.join(format!("{version}_up.sql")), up).unwrap();
                std::fs::write(migrations.join(format!("{version}_down.sql")), down).unwrap();
            }
        }
        Releases { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The repository, the database, the agent and its API.
struct Fixture {
    upstream: TestRepo,
    alice: TestKey,
    root: String,
    state: tempfile::TempDir,
    releases: Releases,
    db: Postgres,
    port: u16,
    api: SocketAddr,
    token: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let alice = TestKey::new("alice");
        let (upstream, root) = trusted(&alice);
        let state = tempfile::tempdir().unwrap();
        let token = state.path().join("api.token");
        std::fs::write(&token, TOKEN).unwrap();
        Fixture {
            upstream,
            alice,
            root,
            state,
            releases: Releases::new(),
            db: Postgres::start(),
            port: crate::reconcile::free_port(),
            api: SocketAddr::from(([127, 0, 0, 1], crate::reconcile::free_port())),
            token,
        }
    }

    /// Commits release `n` (`healthy` or not; with a rollback command or not), signed by alice.
    fn release(&mut self, n: usize, healthy: bool, rollback: bool) -> String {
        let migrate = self.releases.path("migrate");
        let migrate = migrate.to_str().unwrap();
        let mut migration = format!("migration:\n  command: [sh, {migrate}, up]\n  timeout: 150s\n");
        if rollback {
            migration.push_str(&format!("  rollbackCommand: [sh, {migrate}, down, \"00{n}\"]\n"));
        }
        let (url, migrations, pause) = (
            self.db.url(),
            self.releases.path(&format!("r{n}")),
            self.releases.path("pause"),
        );
        let release = format!("r{n}");
        let env = [
            ("DATABASE_URL", url.as_str()),
            ("MIGRATIONS", migrations.to_str().unwrap()),
            ("MIGRATE_PAUSE", pause.to_str().unwrap()),
        ];
        Web {
            healthy,
            checks: ("50ms", 20),
            extra: &migration,
            env: &env,
            ..Web::new(self.port, &release, "recreate: {}")
        }
        .write(&self.upstream);
        let message = format!("web {release}{}", if healthy { "" } else { " (unhealthy)" });
        self.upstream.commit_signed(&message, &self.alice)
    }

    fn agent(&self) -> Agent {
        Agent::start(
            self.upstream.path(),
            &self.root,
            self.state.path(),
            &self.upstream.branch(),
            self.api,
        )
    }

    /// Runs `plumb ARGS` against the agent; its output.
    fn plumb(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_plumb"))
            .args(args)
            .arg("--server")
            .arg(format!("http://{}", self.api))
            .arg("--token-file")
            .arg(&self.token)
            .output()
            .unwrap()
    }

    /// Runs `plumb ARGS` over the state directory; its standard output.
    fn read(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_plumb"))
            .args(args)
            .arg("--state")
            .arg(self.state.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The environment's status, from the API.
    async fn status(&self) -> Option<Value> {
        let response = crate::http::try_get(self.api, "/api/v1/environments/dev").await?;
        serde_json::from_str(&response.body).ok()
    }

    /// Waits until the last attempt is `commit`'s and ended as `result`.
    async fn ended(&self, commit: &str, result: &str) {
        let seen = eventually(Duration::from_secs(120), || async {
            let status = self.status().await?;
            let last = &status["lastAttempt"];
            (last["commit"] == commit && last["outcome"]["result"] == result && status["busy"] != true).then_some(())
        })
        .await;
        assert!(
            seen.is_some(),
            "{commit} never ended as {result}: {:#}\n{}",
            self.status().await.unwrap_or_default(),
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("agent.log")).unwrap_or_default()
    }

    fn columns(&self) -> Vec<String> {
        self.db.columns("items")
    }
}

fn columns(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn short(commit: &str) -> &str {
    &commit[..12]
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_roll_back_with_the_release_on_postgresql() {
    let mut f = Fixture::new();
    let c1 = f.release(1, true, true);
    let agent = f.agent();
    f.ended(&c1, "succeeded").await;
    assert_eq!(f.columns(), columns(&["id", "one"]));
    let c2 = f.release(2, true, true);
    f.ended(&c2, "succeeded").await;
    let c3 = f.release(3, true, true);
    f.ended(&c3, "succeeded").await;
    assert_eq!(f.columns(), columns(&["id", "one", "two", "three"]));
    let status = f.status().await.unwrap();
    assert!(
        status["migrated"]["web"].as_str().unwrap().starts_with(&c3),
        "{status:#}"
    );

    // `plumb rollback` to the first release undoes the two migrations since, newest first,
    // before the first release runs again.
    let out = f.plumb(&["rollback", "--env", "dev", "--to", short(&c1)]);
    ok(&out, "rollback to r1");
    assert_eq!(f.columns(), columns(&["id", "one"]));
    let history = f.read(&["history", "--env", "dev", "--limit", "2"]);
    let three = history.find(&format!("roll back the migration of {}", short(&c3)));
    let two = history.find(&format!("roll back the migration of {}", short(&c2)));
    assert!(three.is_some() && two.is_some() && three < two, "{history}");
    // Each with the last lines of its output.
    assert!(
        history.contains("| reverted 003") && history.contains("| reverted 002"),
        "{history}"
    );
    let listed = f.read(&["migrations", "--env", "dev", "--output", "json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let state_of = |commit: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["commit"] == commit)
            .map(|m| m["state"].clone())
    };
    assert_eq!(state_of(&c3), Some("rolled-back".into()), "{listed:#}");
    assert_eq!(state_of(&c2), Some("rolled-back".into()), "{listed:#}");
    assert_eq!(state_of(&c1), Some("succeeded".into()), "{listed:#}");

    // Release 2 again, then release 3 failing its health check: the automatic rollback undoes
    // release 3's migration before release 2 runs again.
    let c4 = f.release(2, true, true);
    f.ended(&c4, "succeeded").await;
    assert_eq!(f.columns(), columns(&["id", "one", "two"]));
    let c5 = f.release(3, false, true);
    f.ended(&c5, "rolled_back").await;
    assert_eq!(f.columns(), columns(&["id", "one", "two"]));

    // Release 3 healthy; then the agent is killed while rolling its migration back.
    let c6 = f.release(3, true, true);
    f.ended(&c6, "succeeded").await;
    assert_eq!(f.columns(), columns(&["id", "one", "two", "three"]));
    let pause = f.releases.path("pause");
    std::fs::write(&pause, "").unwrap();
    let mut rollback = Command::new(env!("CARGO_BIN_EXE_plumb"))
        .args([
            "rollback",
            "--env",
            "dev",
            "--to",
            &c4,
            "--server",
            &format!("http://{}", f.api),
        ])
        .arg("--token-file")
        .arg(&f.token)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let reached = pause.with_extension("reached");
    let waited = eventually(Duration::from_secs(60), || async { reached.exists().then_some(()) }).await;
    assert!(waited.is_some(), "the rollback migration never started\n{}", f.log());
    tokio::time::sleep(Duration::from_millis(300)).await; // inside its transaction now
    agent.kill();
    let _ = rollback.wait();
    std::fs::remove_file(&pause).unwrap();
    let agent = f.agent();
    let blocked = eventually(Duration::from_secs(60), || async {
        let status = f.status().await?;
        status["blocked"]["migration"].as_str().map(str::to_owned)
    })
    .await
    .unwrap_or_else(|| panic!("the environment did not stop\n{}", f.log()));
    assert!(
        blocked.contains(&c6) && blocked.contains("plumb migrations resolve"),
        "{blocked}"
    );
    // The revert did not commit: the database keeps release 3's column.
    assert_eq!(f.columns(), columns(&["id", "one", "two", "three"]));
    let refused = f.plumb(&["sync", "--env", "dev"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("resolve"),
        "{refused:?}"
    );
    let refused = f.plumb(&["rollback", "--env", "dev", "--to", &c4]);
    assert!(!refused.status.success(), "{refused:?}");
    let out = f.plumb(&[
        "migrations",
        "resolve",
        "--env",
        "dev",
        "--commit",
        short(&c6),
        "--as",
        "applied",
        "--by",
        "tester",
    ]);
    let said = ok(&out, "resolve");
    assert!(
        said.contains("recorded as applied by api-token (said: tester)"),
        "{said}"
    );
    let unblocked = eventually(Duration::from_secs(30), || async {
        let status = f.status().await?;
        status["blocked"].get("migration").is_none().then_some(())
    })
    .await;
    assert!(unblocked.is_some());
    // The environment goes on: the rollback, asked again, completes.
    ok(
        &f.plumb(&["rollback", "--env", "dev", "--to", short(&c4)]),
        "rollback to r2",
    );
    assert_eq!(f.columns(), columns(&["id", "one", "two"]));

    // Release 3 once more, then a revert of it landing: the new head brings release 2's
    // version back, so release 3's migration is undone before it runs; release 2's own, in
    // force, does not run again.
    let c8 = f.release(3, true, true);
    f.ended(&c8, "succeeded").await;
    assert_eq!(f.columns(), columns(&["id", "one", "two", "three"]));
    let revert = f.release(2, true, true);
    f.ended(&revert, "succeeded").await;
    assert_eq!(f.columns(), columns(&["id", "one", "two"]));
    let history = f.read(&["history", "--env", "dev", "--limit", "1"]);
    assert!(
        history.contains(&format!("roll back the migration of {}", short(&c8))),
        "{history}"
    );
    assert!(!history.contains("migrate: ok"), "{history}");

    // A release whose migration has no rollback command: a rollback past it stops before
    // anything changes, unless told to leave the migrations in place.
    let c7 = f.release(4, true, false);
    f.ended(&c7, "succeeded").await;
    assert_eq!(f.columns(), columns(&["id", "one", "two", "three", "four"]));
    let refused = f.plumb(&["rollback", "--env", "dev", "--to", short(&c4)]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("has no rollbackCommand") && said.contains(&c7), "{said}");
    assert_eq!(f.columns(), columns(&["id", "one", "two", "three", "four"]));
    ok(
        &f.plumb(&["rollback", "--env", "dev", "--to", short(&c4), "--skip-migrations"]),
        "rollback leaving the migrations",
    );
    assert_eq!(f.columns(), columns(&["id", "one", "two", "three", "four"]));

    // Every step is in the history: the migrations, their rollbacks, the interruption, the
    // migration left in place.
    let history = f.read(&["history", "--env", "dev", "--limit", "50"]);
    for commit in [&c3, &c2, &c5, &c6] {
        let step = format!("roll back the migration of {}", short(commit));
        assert!(history.contains(&step), "{step} missing:\n{history}");
    }
    assert!(history.contains("interrupted"), "{history}");
    assert!(
        history.contains(&format!(
            "leave the migration of web for {} in place (--skip-migrations)",
            short(&c7)
        )),
        "{history}"
    );
    let listed = f.read(&["migrations", "--env", "dev"]);
    assert!(listed.contains("tester"), "{listed}");
    assert_eq!(listed.matches(&short(&c4)).count(), 1, "{listed}\n{history}");
    agent.stop();
}
