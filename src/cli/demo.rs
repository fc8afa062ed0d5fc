//! `plumb demo`: the first minute of a newcomer. It makes a signed working copy of `example-repo`
//! (a key generated on the spot, a signing policy trusting it, its encrypted values sealed anew
//! for an age identity made for the demo), where every service runs `plumb example-app` instead
//! of its real program and timings are shortened; starts the agent (which opens those values)
//! on the local target; and plays a release through development (recreate), staging (canary)
//! and production (blue-green, synced on request), then a broken release that is rolled back,
//! printing each step as the ledger records it. Then the agent keeps running until Ctrl-C.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use git2::{Repository, Signature};
use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::packet::signature::SignatureBuilder;
use sequoia_openpgp::policy::StandardPolicy;
use sequoia_openpgp::serialize::{Serialize, SerializeInto};
use sequoia_openpgp::types::SignatureType;
use sequoia_openpgp::{Packet, armor};
use tokio_util::sync::CancellationToken;

use super::Outcome;
use crate::agent::{self, Settings};
use crate::ledger::{Ledger, Outcome as Ended};
use crate::secret::Secret;
use crate::source::{Remote, TrackedRef};
use crate::spec::sealed;
use crate::target::local::process::Backoff;
use crate::trigger::{Poll, Reason};
use crate::trust::TrustRoot;

/// The demo's flags.
#[derive(clap::Args)]
pub struct Args {
    /// Where the demo keeps its repository, key and agent state (replaced on each run).
    #[arg(long, default_value = ".plumb-demo")]
    dir: PathBuf,
    /// Where the agent's API listens.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: std::net::SocketAddr,
    /// Stop after the tour instead of running until Ctrl-C.
    #[arg(long)]
    once: bool,
}

const ENVIRONMENTS: [&str; 3] = ["development", "staging", "production"];
/// Marks a folder as the demo's, so a rerun may replace it.
const MARK: &str = ".plumb-demo";

/// Runs the demo.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    prepare(&args.dir)?;
    let repo_dir = args.dir.join("repo");
    let exe = std::env::current_exe().context("cannot find the plumb executable")?;
    // The example's secrets, sealed for an identity made for the demo: the agent opens them
    // as it would in production.
    let (identity, recipient) = sealed::generate();
    copy_example(&repo_dir, &exe, &recipient)?;
    let key = Key::generate()?;
    let repo = Repository::init(&repo_dir).context("cannot create the demo repository")?;
    std::fs::write(repo_dir.join("openpgp-policy.toml"), key.policy()?)?;
    let root = commit(
        &repo,
        &key,
        "Signing policy: trust the demo key",
        Some("openpgp-policy.toml"),
    )?;
    commit(&repo, &key, "The Twikit platform, 1.4.2", None)?;
    let token = hex::encode(fastrand::u128(..).to_be_bytes());
    std::fs::write(args.dir.join("api-token"), &token)?;

    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("PLUMB_LOG").unwrap_or_else(|_| "error".into()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let settings = Settings {
        state: args.dir.join("state"),
        repositories: vec![agent::Repository {
            name: "config".to_owned(),
            remote: Remote::anonymous(format!("file://{}", std::fs::canonicalize(&repo_dir)?.display())),
            reference: TrackedRef::new("main"),
            folder: String::new(),
            trust_root: TrustRoot::Commit(root),
            poll: Poll {
                interval: Some(Duration::from_secs(2)),
                ..Poll::default()
            },
            environments: None,
            webhook: None,
            ca_file: None,
            keys: std::sync::Arc::new(sealed::Keyring::new(vec![
                identity.expose().parse().map_err(anyhow::Error::msg)?,
            ])),
            allow: std::sync::Arc::default(),
        }],
        heal_every: Duration::from_secs(2),
        backoff: Backoff::default(),
        listen: Some(args.listen),
        api_token: Some(Secret::new(token.clone())),
        identities: Vec::new(),
        protect_reads: false,
        leader: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        super::signals::stop_on_signals(cancel.clone(), true);
        let (started, handle) = tokio::sync::oneshot::channel();
        let agent = tokio::spawn(agent::run(settings, cancel.clone(), Some(started)));
        let Ok(handle) = handle.await else {
            return agent.await?.map_err(anyhow::Error::from);
        };
        let tour = Tour {
            repo: &repo,
            key: &key,
            ledger: args.dir.join("state/ledger.sqlite"),
            api: handle.api.expect("the demo listens"),
            token: &token,
            doorbell: handle.doorbells["config"].clone(),
        };
        // One Ctrl-C stops the tour wherever it is, and the agent with it.
        let toured = tokio::select! {
            toured = tour.play(&args.dir) => toured,
            _ = cancel.cancelled() => Ok(()),
        };
        if toured.is_ok() && !args.once && !cancel.is_cancelled() {
            println!("\nThe agent keeps running; Ctrl-C stops it and its services.");
            cancel.cancelled().await;
        }
        cancel.cancel();
        agent.await??;
        toured
    })?;
    println!("Stopped; every service is down.");
    Ok(Outcome::Ok)
}

/// Replaces the demo folder, refusing to touch a folder that is not the demo's.
fn prepare(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        anyhow::ensure!(
            dir.join(MARK).exists(),
            "{} exists and is not a plumb demo folder; choose another with --dir",
            dir.display()
        );
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(MARK), "a plumb demo folder, replaced by each `plumb demo`\n")?;
    Ok(())
}

/// `example-repo`, built into the binary so the demo runs from anywhere.
const EXAMPLE: [(&str, &str); 8] = [
    ("plumb.yaml", include_str!("../../example-repo/plumb.yaml")),
    (
        "environments/development.yaml",
        include_str!("../../example-repo/environments/development.yaml"),
    ),
    (
        "environments/staging.yaml",
        include_str!("../../example-repo/environments/staging.yaml"),
    ),
    (
        "environments/production.yaml",
        include_str!("../../example-repo/environments/production.yaml"),
    ),
    (
        "services/twikit-backend.yaml",
        include_str!("../../example-repo/services/twikit-backend.yaml"),
    ),
    (
        "services/twikit-worker.yaml",
        include_str!("../../example-repo/services/twikit-worker.yaml"),
    ),
    (
        "schemas/twikit-backend.schema.json",
        include_str!("../../example-repo/schemas/twikit-backend.schema.json"),
    ),
    (
        "schemas/twikit-worker.schema.json",
        include_str!("../../example-repo/schemas/twikit-worker.schema.json"),
    ),
];

/// Writes `example-repo` to `to`, every service running `exe example-app`, each encrypted
/// value sealed anew for `recipient` and timings shortened for a one-minute tour.
fn copy_example(to: &Path, exe: &Path, recipient: &str) -> anyhow::Result<()> {
    let app = format!("command: [{:?}, example-app]", exe.display().to_string());
    for (relative, text) in EXAMPLE {
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            // The example's production runs on Kubernetes: the demo runs it here, below the
            // ephemeral port range, without what only Kubernetes carries out.
            if line.ends_with("# kubernetes only") {
                continue;
            }
            let line = if trimmed.starts_with("kubernetes: {namespace: twikit-production}") {
                format!("{indent}local: {{portOffset: 27000}}")
            } else if trimmed.starts_with("command: [twikit-backend, migrate") {
                format!("{indent}command: [sh, -c, \"echo migrating up; sleep 1\"]")
            } else if trimmed.starts_with("rollbackCommand:") {
                format!("{indent}rollbackCommand: [sh, -c, \"echo migrating down\"]")
            } else if trimmed.starts_with("command: [twikit-backend, check") {
                format!("{indent}command: [\"true\"]")
            } else if trimmed.starts_with("command: [twikit-") {
                format!("{indent}{app}")
            } else {
                line.to_owned()
            };
            out.push_str(&line);
            out.push('\n');
        }
        let mut text = out;
        let mut from = 0;
        while let Some(found) = text[from..].find("ENC[") {
            let start = from + found;
            let end = text[start..].find(']').map_or(text.len(), |e| start + e + 1);
            let value = sealed::seal(&[recipient.to_owned()], "demo-password-sealed-for-the-tour")?;
            text.replace_range(start..end, &value);
            from = start + value.len();
        }
        for (long, short) in [
            ("interval: 5s", "interval: 200ms"),
            ("progressDeadline: 10m", "progressDeadline: 30s"),
            ("pause: 5m", "pause: 6s"),
            ("warmup: 1m", "warmup: 2s"),
            ("switchover: 30s", "switchover: 1s"),
            ("keepOldVersion: 30m", "keepOldVersion: 5s"),
        ] {
            text = text.replace(long, short);
        }
        let path = to.join(relative);
        std::fs::create_dir_all(path.parent().expect("a file has a folder"))?;
        std::fs::write(&path, text)?;
    }
    Ok(())
}

/// The demo's signing key.
struct Key {
    cert: Cert,
}

impl Key {
    fn generate() -> anyhow::Result<Key> {
        let (cert, _) = CertBuilder::new()
            .set_cipher_suite(CipherSuite::Cv25519)
            .set_creation_time(SystemTime::now() - Duration::from_secs(60))
            .add_userid("plumb demo <demo@plumb.invalid>")
            .add_signing_subkey()
            .generate()
            .context("cannot generate the demo key")?;
        Ok(Key { cert })
    }

    fn policy(&self) -> anyhow::Result<String> {
        let public = String::from_utf8(self.cert.armored().to_vec()?)?;
        Ok(format!(
            "version = 0\ncommit_goodlist = []\n\n[authorization.demo]\nsign_commit = true\nadd_user = true\n\
             retire_user = true\naudit = true\nkeyring = \"\"\"\n{public}\"\"\"\n"
        ))
    }

    fn sign(&self, data: &[u8]) -> anyhow::Result<String> {
        let policy = StandardPolicy::new();
        let mut keypair = self
            .cert
            .keys()
            .with_policy(&policy, None)
            .for_signing()
            .secret()
            .next()
            .context("the demo key cannot sign")?
            .key()
            .clone()
            .into_keypair()?;
        let signature = SignatureBuilder::new(SignatureType::Binary).sign_message(&mut keypair, data)?;
        let mut writer = armor::Writer::new(Vec::new(), armor::Kind::Signature)?;
        Packet::from(signature).serialize(&mut writer)?;
        Ok(String::from_utf8(writer.finalize()?)?)
    }
}

/// Commits the work tree (or only `path`) to `main`, signed; returns the commit.
fn commit(repo: &Repository, key: &Key, message: &str, only: Option<&str>) -> anyhow::Result<git2::Oid> {
    let mut index = repo.index()?;
    match only {
        Some(path) => index.add_path(Path::new(path))?,
        None => index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?,
    }
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let who = Signature::now("plumb demo", "demo@plumb.invalid")?;
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let buffer = repo.commit_create_buffer(&who, &who, message, &tree, &parents)?;
    let payload = buffer.as_str().context("a commit is text")?;
    let id = repo.commit_signed(payload, &key.sign(payload.as_bytes())?, None)?;
    repo.reference("refs/heads/main", id, true, message)?;
    repo.set_head("refs/heads/main")?;
    Ok(id)
}

/// Sends a request to `addr` every 20 ms, forever (the caller aborts it).
async fn traffic(addr: std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            let request = "GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n";
            if stream.write_all(request.as_bytes()).await.is_ok() {
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The scripted part of the demo.
struct Tour<'a> {
    repo: &'a Repository,
    key: &'a Key,
    ledger: PathBuf,
    api: std::net::SocketAddr,
    token: &'a str,
    doorbell: crate::trigger::Doorbell,
}

impl Tour<'_> {
    async fn play(&self, dir: &Path) -> anyhow::Result<()> {
        let work = self
            .repo
            .workdir()
            .context("the demo repository has a work tree")?
            .to_owned();
        println!("plumb demo: a signed copy of example-repo in {}", work.display());
        println!(
            "  API        http://{}/api/v1/status  (token in {})",
            self.api,
            dir.join("api-token").display()
        );
        for (env, port) in ENVIRONMENTS.iter().zip([13000, 23000, 30000]) {
            println!("  {env:<11} http://127.0.0.1:{port}/   (twikit-backend)");
        }
        println!("\n1. The first deployment of every environment.");
        let mut seen = 0;
        seen = self.watch(seen, |a| a.len() >= 2).await?;
        println!("   production applies nothing until it is synced (`plumb sync --env production`):");
        let sync = self.sync("production");
        let (synced, watched) = tokio::join!(sync, self.watch(seen, |a| !a.is_empty()));
        synced?;
        seen = watched?;

        println!("\n2. Release 1.5.0: development recreates, staging runs a canary, production waits for a sync.");
        println!("   (requests go to staging meanwhile, so its router has answers to measure the canary by)");
        let traffic = tokio::spawn(traffic(std::net::SocketAddr::from(([127, 0, 0, 1], 23000))));
        self.edit("services/twikit-backend.yaml", "backend:1.4.2", "backend:1.5.0")?;
        commit(self.repo, self.key, "Release twikit-backend 1.5.0", None)?;
        self.doorbell.ring(Reason::Manual);
        seen = self.watch(seen, |a| a.len() >= 2).await?;
        traffic.abort();
        println!("   production syncs on request (`plumb sync --env production`): blue-green.");
        let sync = self.sync("production");
        let (synced, watched) = tokio::join!(sync, self.watch(seen, |a| !a.is_empty()));
        synced?;
        seen = watched?;

        println!("\n3. Release 1.6.0 fails its health checks: each environment goes back by itself.");
        self.edit("services/twikit-backend.yaml", "backend:1.5.0", "backend:1.6.0")?;
        self.edit(
            "services/twikit-backend.yaml",
            "  - name: LOG_FORMAT\n    value: json\n",
            "  - name: LOG_FORMAT\n    value: json\n  - name: EXAMPLE_HEALTH\n    value: fail\n",
        )?;
        commit(self.repo, self.key, "Release twikit-backend 1.6.0", None)?;
        self.doorbell.ring(Reason::Manual);
        self.watch(seen, |a| a.len() >= 2).await?;

        println!("\nTry:");
        println!("  curl http://127.0.0.1:30000/                      # production's backend");
        println!("  plumb status --server http://{}", self.api);
        println!("  plumb history --env staging --state {}", dir.join("state").display());
        println!(
            "  plumb rollback --env production --server http://{} --token-file {}",
            self.api,
            dir.join("api-token").display()
        );
        println!(
            "  git -C {} commit -am 'a change'   # after an edit: unsigned, so plumb refuses it",
            work.display()
        );
        Ok(())
    }

    fn edit(&self, file: &str, from: &str, to: &str) -> anyhow::Result<()> {
        let path = self.repo.workdir().context("a work tree")?.join(file);
        let text = std::fs::read_to_string(&path)?;
        anyhow::ensure!(text.contains(from), "{file} no longer contains {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1))?;
        Ok(())
    }

    /// Asks the agent, through its API, to sync `env`.
    async fn sync(&self, env: &str) -> anyhow::Result<()> {
        let server = super::client::Server::new(format!("http://{}", self.api), Secret::new(self.token));
        let env = env.to_owned();
        tokio::task::spawn_blocking(move || server.call("POST", &format!("/api/v1/environments/{env}/sync"), None))
            .await??;
        Ok(())
    }

    /// Prints every step and outcome the ledger records after entry `seen` until `done` holds
    /// for the attempts that ended meanwhile; returns the newest entry printed.
    async fn watch(&self, mut seen: i64, done: impl Fn(&[String]) -> bool) -> anyhow::Result<i64> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let mut ended = Vec::new();
        loop {
            let Ok(ledger) = Ledger::open_read_only(&self.ledger) else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            for entry in ledger.entries_after(seen)? {
                seen = entry.seq;
                let body: serde_json::Value = serde_json::from_str(&entry.body).unwrap_or_default();
                match entry.kind.as_str() {
                    "attempt" => println!(
                        "   [{}] applying {} ({})",
                        entry.environment,
                        body["commit"].as_str().map_or("", |c| &c[..12.min(c.len())]),
                        body["strategy"].as_str().unwrap_or_default()
                    ),
                    "step" => println!(
                        "   [{}]   {}",
                        entry.environment,
                        body["step"].as_str().unwrap_or_default()
                    ),
                    "outcome" => {
                        let outcome: Option<Ended> = serde_json::from_value(body).ok();
                        let said = match &outcome {
                            Some(Ended::Succeeded) => "✓ succeeded".to_owned(),
                            Some(Ended::RolledBack(why)) => format!("↩ rolled back: {why}"),
                            Some(other) => format!("✗ {other}"),
                            None => "?".to_owned(),
                        };
                        println!("   [{}] {said}", entry.environment);
                        ended.push(entry.environment.clone());
                    }
                    _ => {}
                }
            }
            if done(&ended) {
                return Ok(seen);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the demo waited two minutes in vain"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
