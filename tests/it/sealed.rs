//! Encrypted values end to end: sealed for the agent's identity, opened when it renders a
//! commit, handed to the application (a variable, its configuration file) and to nothing else;
//! a value the agent cannot open refuses the commit at its line. Checked both ways against the
//! age tool.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use plumb::ledger::Outcome;
use plumb::spec::sealed::{self, Keyring};

use crate::agent::{Running, eventually, outcome, release};
use crate::harness::{TestRepo, Web, agent_settings, plumb, trusted};
use crate::keys::TestKey;

/// An agent's age identity for a test, in a file of its own.
pub struct Identity {
    _dir: tempfile::TempDir,
    /// The identity file.
    pub file: std::path::PathBuf,
    /// Its recipient.
    pub recipient: String,
}

impl Identity {
    /// A new identity.
    pub fn new() -> Identity {
        let dir = tempfile::tempdir().unwrap();
        let (file, recipient) = identity(dir.path(), "agent.key");
        Identity {
            _dir: dir,
            file,
            recipient,
        }
    }

    /// `clear` sealed for it.
    pub fn seal(&self, clear: &str) -> String {
        sealed::seal(std::slice::from_ref(&self.recipient), clear).unwrap()
    }

    /// A keyring of it, for an agent's settings.
    pub fn keys(&self) -> Arc<Keyring> {
        Arc::new(Keyring::read(std::slice::from_ref(&self.file)).unwrap())
    }
}

/// A value no test writes twice: `prefix` and a random number.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", fastrand::u64(..))
}

/// A new identity written to `dir/name` as `plumb keygen` writes it; its recipient.
fn identity(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let file = dir.join(name);
    let run = plumb(&["keygen", "--out", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "an identity is readable by its owner alone");
    (file, run.stdout.trim().to_owned())
}

/// Every running process's variables that hold `marker` as one of them.
fn environ_with(marker: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(bytes) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<String> = bytes
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if vars.iter().any(|v| v == marker) {
            found.push(vars);
        }
    }
    found
}

/// The files under `dir` whose bytes hold `needle`.
pub fn files_holding(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes())) {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_opens_encrypted_values_for_the_application_alone() {
    let keys = tempfile::tempdir().unwrap();
    let (ours, recipient) = identity(keys.path(), "agent.key");
    let (_, stranger) = identity(keys.path(), "other.key");
    let password = format!("pw-{}", fastrand::u64(..));
    let token = format!("tok-{}", fastrand::u64(..));
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let sealed_token = sealed::seal(std::slice::from_ref(&recipient), &token).unwrap();
    let sealed_password = sealed::seal(std::slice::from_ref(&recipient), &password).unwrap();
    let config =
        format!("config:\n  file: app.json\n  values:\n    database: {{user: app, password: {sealed_password:?}}}\n");
    let env = [("API_TOKEN", sealed_token.as_str())];
    let web = Web {
        extra: &config,
        env: &env,
        ..Web::new(port, "s1", "recreate: {}")
    };
    web.write(&upstream);
    let first = upstream.commit_signed("web s1 with secrets", &alice);

    let state = tempfile::tempdir().unwrap();
    let mut settings = agent_settings(&upstream, &root, state.path());
    settings.repositories[0].keys = Arc::new(Keyring::read(&[ours]).unwrap());
    let agent = Running::start(settings).await;
    assert_eq!(outcome(state.path(), "dev", &first).await, Some(Outcome::Succeeded));
    assert_eq!(release(addr).await.as_deref(), Some("s1"));

    // The application reads both in clear: its configuration file, and its variable.
    let shown = crate::http::get(addr, "/config").await.body;
    assert!(shown.contains(&password), "{shown}");
    let replicas = environ_with("EXAMPLE_RELEASE=s1");
    assert_eq!(replicas.len(), 2, "two replicas run");
    for vars in &replicas {
        assert!(vars.contains(&format!("API_TOKEN={token}")), "{vars:?}");
    }
    // Nothing else the agent keeps holds them: not the ledger, not the logs; the files that do
    // are the application's configuration files, readable by their owner alone.
    for secret in [&password, &token] {
        for file in files_holding(state.path(), secret) {
            assert_eq!(
                file.file_name().unwrap(),
                "app.json",
                "{} holds a secret",
                file.display()
            );
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
    }
    assert!(
        files_holding(state.path(), &token).is_empty(),
        "a variable is never written"
    );

    // A value sealed for someone else: the commit is refused at its line, what runs stays.
    let theirs = sealed::seal(&[stranger], "not for this agent").unwrap();
    let env = [("API_TOKEN", theirs.as_str())];
    Web {
        env: &env,
        extra: &config,
        ..Web::new(port, "s2", "recreate: {}")
    }
    .write(&upstream);
    let refused = upstream.commit_signed("web s2, sealed for another agent", &alice);
    agent.push();
    let Some(Outcome::Refused(reason)) = outcome(state.path(), "dev", &refused).await else {
        panic!("the commit is refused");
    };
    let line = std::fs::read_to_string(upstream.path().join("services/web.yaml"))
        .unwrap()
        .lines()
        .position(|l| l.contains("API_TOKEN"))
        .unwrap()
        + 1;
    assert!(
        reason.contains(&format!("services/web.yaml:{line}"))
            && reason.contains("env[")
            && reason.contains("cannot decrypt this value: none of this agent's identities"),
        "{reason}"
    );
    assert!(!reason.contains("not for this agent"));
    assert_eq!(release(addr).await.as_deref(), Some("s1"));

    // Rotated: a new ciphertext of a new value rolls out like any change.
    let rotated = format!("pw-{}", fastrand::u64(..));
    let sealed_rotated = sealed::seal(std::slice::from_ref(&recipient), &rotated).unwrap();
    let config = config.replace(&sealed_password, &sealed_rotated);
    let env = [("API_TOKEN", sealed_token.as_str())];
    Web {
        extra: &config,
        env: &env,
        ..Web::new(port, "s3", "recreate: {}")
    }
    .write(&upstream);
    let third = upstream.commit_signed("web s3, password rotated", &alice);
    agent.push();
    assert_eq!(outcome(state.path(), "dev", &third).await, Some(Outcome::Succeeded));
    let shown = eventually(Duration::from_secs(10), || async {
        let body = crate::http::try_get(addr, "/config").await?.body;
        body.contains(&rotated).then_some(body)
    })
    .await;
    assert!(shown.is_some(), "the rotated value is served");
    assert!(
        files_holding(state.path(), &password).is_empty(),
        "the retired version's file is gone"
    );
    agent.stop().await;
    assert!(
        files_holding(state.path(), &rotated).is_empty(),
        "no decrypted file outlives the replicas"
    );
}

/// Runs the age tool with `args`, `input` on its standard input; its standard output.
fn age(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("age")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the age tool is installed (.ci/run installs it)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "age {args:?} fails");
    output.stdout
}

#[test]
fn values_sealed_by_the_age_tool_open_and_the_other_way_round() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let keys = tempfile::tempdir().unwrap();
    let (ours, recipient) = identity(keys.path(), "agent.key");
    let (theirs, _) = identity(keys.path(), "other.key");

    // Sealed by age, as `age -r <recipient> | base64 -w0` documents it: plumb opens it.
    let by_age = format!(
        "ENC[age,{}]",
        b64.encode(age(&["-r", &recipient], b"from the age tool"))
    );
    let repo = TestRepo::new();
    Web {
        env: &[("GREETING", by_age.as_str())],
        ..Web::new(8080, "r1", "recreate: {}")
    }
    .write(&repo);
    let dir = repo.path().to_str().unwrap();
    let checked = plumb(&["validate", "--repo", dir, "--identity", ours.to_str().unwrap()]);
    assert_eq!(checked.code, 0, "{}{}", checked.stdout, checked.stderr);
    let keyring = Keyring::read(std::slice::from_ref(&ours)).unwrap();
    assert_eq!(keyring.open(&by_age).unwrap().expose(), "from the age tool");

    // With another identity, validation names the file, line and field.
    let wrong = plumb(&["validate", "--repo", dir, "--identity", theirs.to_str().unwrap()]);
    assert_eq!(wrong.code, 1, "{}{}", wrong.stdout, wrong.stderr);
    assert!(
        wrong.stdout.contains("services/web.yaml:") && wrong.stdout.contains("cannot decrypt this value"),
        "{}",
        wrong.stdout
    );
    assert!(!wrong.stdout.contains("from the age tool"));

    // Sealed by `plumb seal` (from standard input): the age tool opens it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_plumb"))
        .args(["seal", "--recipient", &recipient])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"from plumb\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    let body = printed
        .trim()
        .strip_prefix("ENC[age,")
        .unwrap()
        .strip_suffix(']')
        .unwrap();
    let opened = age(&["-d", "-i", ours.to_str().unwrap()], &b64.decode(body).unwrap());
    assert_eq!(opened, b"from plumb", "one trailing newline is dropped");
}

#[test]
fn decrypted_values_are_checked_against_the_application_schema_without_being_shown() {
    let keys = tempfile::tempdir().unwrap();
    let (ours, recipient) = identity(keys.path(), "agent.key");
    let repo = TestRepo::new();
    repo.write(
        "schemas/web.json",
        r#"{"type": "object", "properties": {"password": {"type": "string", "minLength": 12}, "db": {"type": "object", "maxProperties": 1}}}"#,
    );
    let short = sealed::seal(std::slice::from_ref(&recipient), "hunter2").unwrap();
    let config = format!(
        "config:\n  file: app.json\n  schema: schemas/web.json\n  values:\n    password: {short:?}\n    db: {{user: app, password: {short:?}}}\n"
    );
    Web {
        extra: &config,
        ..Web::new(8080, "r1", "recreate: {}")
    }
    .write(&repo);
    let dir = repo.path().to_str().unwrap();
    // Sealed, the value cannot be judged: it is not (the map holding two values is).
    let unopened = plumb(&["validate", "--repo", dir]);
    assert!(!unopened.stdout.contains("minLength"), "{}", unopened.stdout);
    // Opened, it is judged, and not shown.
    let opened = plumb(&["validate", "--repo", dir, "--identity", ours.to_str().unwrap()]);
    assert_eq!(opened.code, 1, "{}", opened.stdout);
    let line = std::fs::read_to_string(repo.path().join("services/web.yaml"))
        .unwrap()
        .lines()
        .position(|l| l.contains("password:"))
        .unwrap()
        + 1;
    assert!(
        opened.stdout.contains(&format!("services/web.yaml:{line}"))
            && opened
                .stdout
                .contains("config.values.password: the decrypted value does not satisfy the schema's `minLength` (it is not shown)"),
        "{}",
        opened.stdout
    );
    // A problem with a value that holds one shows none of it either.
    assert!(
        opened.stdout.contains(
            "config.values.db: does not satisfy the schema's `maxProperties` (not shown: it holds a decrypted value)"
        ),
        "{}",
        opened.stdout
    );
    assert!(!opened.stdout.contains("hunter2") && !opened.stderr.contains("hunter2"));
}

/// The problems `plumb validate` finds in a repository of service `web` with `env` and
/// `extra` (more of its document), which must have some.
fn refused(env: &[(&str, &str)], extra: &str) -> String {
    let repo = TestRepo::new();
    Web {
        env,
        extra,
        ..Web::new(8080, "r1", "recreate: {}")
    }
    .write(&repo);
    let run = plumb(&["validate", "--repo", repo.path().to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    run.stdout
}

#[test]
fn only_variables_configuration_values_and_mounted_files_may_be_encrypted() {
    let label = Identity::new().seal("payments");
    let problems = refused(&[], &format!("labels: {{team: {label:?}}}\n"));
    let expected =
        "$.labels.team: only a variable's `value`, `config.values` and a mounted file's `content` may be encrypted";
    assert!(problems.contains(expected), "{problems}");
}

#[test]
fn an_encrypted_variable_is_never_expanded_into_a_command() {
    let token = Identity::new().seal("s3cret-token");
    let problems = refused(
        &[("API_TOKEN", token.as_str())],
        "migration:\n  command: [migrate, \"--token=${API_TOKEN}\"]\n",
    );
    assert!(
        problems.contains("$.migration.command[1]: `${API_TOKEN}` is encrypted"),
        "{problems}"
    );
}
