//! Test fixtures: a temporary git repository built in-process, and running the `plumb` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use git2::{Repository, Signature, Time};
use sequoia_openpgp::types::HashAlgorithm;

use crate::keys::TestKey;

/// The repository root of this project.
pub fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary git repository whose commits are made with git2 at pinned times.
pub struct TestRepo {
    dir: tempfile::TempDir,
    repo: Repository,
    clock: i64,
}

impl TestRepo {
    /// An empty repository.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let repo = Repository::init(dir.path()).expect("git init");
        TestRepo {
            dir,
            repo,
            clock: 1_700_000_000,
        }
    }

    /// A repository of one environment, `dev`, on the Compose target with `compose` as its
    /// `compose.yaml` (not committed).
    pub fn compose_only(compose: &str) -> Self {
        let repo = TestRepo::new();
        repo.write(
            "plumb.yaml",
            "apiVersion: plumb/v1\nkind: Repository\nenvironments: [dev]\n",
        )
        .write(
            "environments/dev.yaml",
            "apiVersion: plumb/v1\nkind: Environment\nname: dev\ntarget:\n  compose: {files: [compose.yaml]}\n",
        )
        .write("compose.yaml", compose);
        repo
    }

    /// A repository whose first commit holds a copy of `example-repo/`.
    pub fn example() -> Self {
        let repo = TestRepo::new();
        copy_dir(&project().join("example-repo"), repo.path());
        repo
    }

    /// The work tree.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file of the work tree.
    pub fn write(&self, path: &str, text: &str) -> &Self {
        let full = self.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
        self
    }

    /// Rewrites a file of the work tree, replacing `from` (which must occur) with `to`.
    pub fn edit(&self, path: &str, from: &str, to: &str) -> &Self {
        let full = self.path().join(path);
        let text = std::fs::read_to_string(&full).unwrap();
        assert!(text.contains(from), "{path} does not contain {from:?}");
        std::fs::write(full, text.replacen(from, to, 1)).unwrap();
        self
    }

    /// Commits every file of the work tree and returns the commit id.
    pub fn commit(&mut self, message: &str) -> String {
        self.commit_with(message, |_, _| None)
    }

    /// Commits every file of the work tree, signed by `key` at the commit's time.
    pub fn commit_signed(&mut self, message: &str, key: &TestKey) -> String {
        self.commit_with(message, |data, time| Some(key.sign(data, time, HashAlgorithm::SHA512)))
    }

    /// Moves the clock forward, as if time passed between commits.
    pub fn advance(&mut self, seconds: i64) {
        self.clock += seconds;
    }

    /// The time the next commit will carry.
    pub fn next_time(&self) -> i64 {
        self.clock + 60
    }

    /// Commits every file of the work tree on the current branch; `sign` gets the commit's
    /// payload and time and returns the armored signature to attach, if any.
    pub fn commit_with(&mut self, message: &str, sign: impl FnOnce(&[u8], i64) -> Option<String>) -> String {
        let parents: Vec<String> = self.head().into_iter().collect();
        self.commit_on(message, &parents, sign)
    }

    /// The commit the current branch points to.
    pub fn head(&self) -> Option<String> {
        let commit = self.repo.head().ok()?.peel_to_commit().ok()?;
        Some(commit.id().to_string())
    }

    /// Commits every file of the work tree with the given parents and moves the current branch
    /// to it (a merge with two parents; a rewrite with an older parent).
    pub fn commit_on(
        &mut self,
        message: &str,
        parents: &[String],
        sign: impl FnOnce(&[u8], i64) -> Option<String>,
    ) -> String {
        let mut index = self.repo.index().unwrap();
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
        index.update_all(["*"], None).unwrap();
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        self.clock += 60;
        let who = Signature::new("Test Engineer", "engineer@example.com", &Time::new(self.clock, 0)).unwrap();
        let parents: Vec<git2::Commit> = parents
            .iter()
            .map(|p| self.repo.find_commit(git2::Oid::from_str(p).unwrap()).unwrap())
            .collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        let buffer = self
            .repo
            .commit_create_buffer(&who, &who, message, &tree, &parents)
            .unwrap();
        let payload = buffer.as_str().unwrap().to_owned();
        let id = match sign(payload.as_bytes(), self.clock) {
            Some(signature) => self.repo.commit_signed(&payload, &signature, None).unwrap(),
            None => self
                .repo
                .odb()
                .unwrap()
                .write(git2::ObjectType::Commit, payload.as_bytes())
                .unwrap(),
        };
        self.set_branch(&id.to_string());
        id.to_string()
    }

    /// Moves the current branch to `commit` (a force-push, a reset).
    pub fn set_branch(&self, commit: &str) {
        let head = self.repo.find_reference("HEAD").unwrap();
        let branch = head.symbolic_target().unwrap().expect("HEAD names a branch").to_owned();
        self.repo
            .reference(&branch, git2::Oid::from_str(commit).unwrap(), true, "test")
            .unwrap();
    }

    /// The underlying repository.
    pub fn git(&self) -> &Repository {
        &self.repo
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// What a run of `plumb` printed and returned.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the `plumb` binary with `args`, without colour.
pub fn plumb(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_plumb"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("plumb runs");
    Run {
        code: output.status.code().expect("plumb exits"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// Compares `actual` with the golden file at `path`; `PLUMB_BLESS=1` rewrites the file.
pub fn golden(path: &Path, actual: &str) {
    if std::env::var_os("PLUMB_BLESS").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|_| panic!("missing golden file {}", path.display()));
    assert_eq!(
        actual,
        expected,
        "output differs from {} (PLUMB_BLESS=1 rewrites it)",
        path.display()
    );
}

/// A repository whose first commit, signed by `key`, holds a signing policy granting `key` every
/// capability; returns it with that commit (a trust root).
pub fn trusted(key: &TestKey) -> (TestRepo, String) {
    let mut repo = TestRepo::new();
    repo.write("openpgp-policy.toml", &crate::keys::policy(&[(key, crate::keys::ALL)]));
    let root = repo.commit_signed("Policy", key);
    (repo, root)
}

impl TestRepo {
    /// The full name of the branch commits go to.
    pub fn branch(&self) -> String {
        let head = self.repo.find_reference("HEAD").unwrap();
        head.symbolic_target().unwrap().unwrap().to_owned()
    }
}

/// A one-environment repository (`dev`, on the local target) whose service `web` runs
/// `plumb example-app` with two replicas behind port `port`, answering as `release`.
pub struct Web<'a> {
    pub port: u16,
    pub release: &'a str,
    /// Whether its health check passes.
    pub healthy: bool,
    /// The strategy, as inline YAML (`blueGreen: {keepOldVersion: 0s}`).
    pub strategy: &'a str,
    /// How often the health check runs and how many failures fail it.
    pub checks: (&'a str, u32),
    /// More of the service document (a migration, a configuration), as YAML.
    pub extra: &'a str,
    /// More variables for the app.
    pub env: &'a [(&'a str, &'a str)],
    /// The one environment the repository declares.
    pub environment: &'a str,
    /// The image to run on the compose target, and the engine's address; the local target
    /// when `None`.
    pub image: Option<(&'a str, &'a str)>,
}

impl Web<'_> {
    /// A healthy release with a patient health check.
    pub fn new<'a>(port: u16, release: &'a str, strategy: &'a str) -> Web<'a> {
        Web {
            port,
            release,
            healthy: true,
            strategy,
            checks: ("50ms", 60),
            extra: "",
            env: &[],
            environment: "dev",
            image: None,
        }
    }

    /// Writes the repository's files into `repo`'s work tree.
    pub fn write(&self, repo: &TestRepo) {
        let environment = self.environment;
        repo.write(
            "plumb.yaml",
            &format!("apiVersion: plumb/v1\nkind: Repository\nenvironments: [{environment}]\n"),
        );
        repo.write(
            &format!("environments/{environment}.yaml"),
            &format!(
                "apiVersion: plumb/v1\nkind: Environment\nname: {environment}\ntarget:\n  {}\n",
                match self.image {
                    Some((_, host)) => format!("compose: {{dockerHost: {host:?}}}\nsync: {{prune: true}}"),
                    None => "local: {}".to_owned(),
                }
            ),
        );
        let health = if self.healthy { "ok" } else { "fail" };
        let mut env = format!(
            "  - {{name: EXAMPLE_RELEASE, value: {}}}\n  - {{name: EXAMPLE_HEALTH, value: {health}}}\n",
            self.release
        );
        for (name, value) in self.env {
            env.push_str(&format!("  - {{name: {name}, value: {value:?}}}\n"));
        }
        repo.write(
            "services/web.yaml",
            &format!(
                "apiVersion: plumb/v1\nkind: Service\nname: web\n{}command: [{:?}, example-app]\nreplicas: 2\n\
                 ports:\n  - {{name: http, port: {}}}\n\
                 healthChecks:\n  - name: ready\n    http: {{path: /health, port: http}}\n    timeout: 1s\n    interval: {}\n    failureThreshold: {}\n\
                 progressDeadline: 20s\nstrategy:\n  {}\n{}env:\n{env}",
                self.image.map(|(i, _)| format!("image: {i}\n")).unwrap_or_default(),
                if self.image.is_some() { "/plumb" } else { env!("CARGO_BIN_EXE_plumb") },
                self.port,
                self.checks.0,
                self.checks.1,
                self.strategy,
                self.extra,
            ),
        );
    }
}

/// An in-process agent's settings over `repo`'s branch, trusting `root`, keeping its state in
/// `state`: no polling (the first fetch only; then the doorbell or webhooks), no drift checks,
/// no API. Tests and benchmarks change what they need.
pub fn agent_settings(repo: &TestRepo, root: &str, state: &Path) -> plumb::agent::Settings {
    plumb::agent::Settings {
        state: state.to_owned(),
        repositories: vec![repository_settings("config", repo, root)],
        heal_every: std::time::Duration::from_secs(3600),
        backoff: plumb::target::local::process::Backoff::default(),
        listen: None,
        api_token: None,
        identities: Vec::new(),
        tls: None,
        protect_reads: false,
        leader: None,
        notifications: Default::default(),
        services_url: None,
        read_token_key_file: None,
    }
}

/// The settings of repository `name` over `repo`'s branch, trusting `root`: no polling, no
/// webhook, every environment it declares.
pub fn repository_settings(name: &str, repo: &TestRepo, root: &str) -> plumb::agent::Repository {
    plumb::agent::Repository {
        name: name.to_owned(),
        remote: plumb::source::Remote::anonymous(repo.path().to_str().unwrap()),
        reference: plumb::source::TrackedRef::new(&repo.branch()),
        folder: String::new(),
        trust_root: plumb::trust::TrustRoot::Commit(git2::Oid::from_str(root).unwrap()),
        poll: plumb::trigger::Poll {
            interval: None,
            ..plumb::trigger::Poll::default()
        },
        environments: None,
        webhook: None,
        ca_file: None,
        keys: std::sync::Arc::default(),
        allow: std::sync::Arc::default(),
    }
}

/// File `inside` of npm package `package` at `version`, fetched once (`npm pack`, which checks
/// the registry's integrity hash) into `target/npm/`.
pub fn npm_file(package: &str, version: &str, inside: &str) -> PathBuf {
    let archive = format!("{}-{version}.tgz", package.trim_start_matches('@').replace('/', "-"));
    let dir = project().join("target/npm").join(archive.trim_end_matches(".tgz"));
    let file = dir.join(inside);
    if !file.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let packed = Command::new("npm")
            .args(["pack", "--silent", &format!("{package}@{version}")])
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("npm (package npm) fetches {package}: {e}"));
        assert!(packed.status.success(), "{}", String::from_utf8_lossy(&packed.stderr));
        let unpacked = Command::new("tar")
            .args(["-xzf", &archive, "--strip-components=1"])
            .arg(format!("package/{inside}"))
            .current_dir(&dir)
            .status()
            .unwrap();
        assert!(unpacked.success(), "{package}@{version} has no {inside}");
        std::fs::remove_file(dir.join(&archive)).unwrap();
    }
    file
}
