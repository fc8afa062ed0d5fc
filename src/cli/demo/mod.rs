//! `plumb demo`: the first minute of a newcomer. It makes a signed working copy of `example-repo`
//! (keys generated on the spot for alice, who commits, and bob and carol, who approve; a signing
//! policy trusting them; its encrypted values sealed anew for an age identity made for the demo),
//! where every service runs `plumb example-app` instead of its real program and timings are
//! shortened; starts the agent (which opens those values) on the local target; and plays a
//! release through development (recreate), staging (canary, once development ran it) and
//! production (blue-green, once staging ran it, bob and carol approved it with `plumb approve`,
//! and it is synced), then a release that breaks in staging and never reaches production,
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
    /// Where the environments run.
    #[arg(long, value_enum, default_value_t = Target::Local)]
    target: Target,
    /// The cluster's kubeconfig (`--target kubernetes`): else `KUBECONFIG`, else
    /// `~/.kube/config`.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The image of `plumb example-app` the containers run (`--target kubernetes|compose`): by
    /// default the one `plumb dev-cluster up` imports, or on Compose one made of this binary and
    /// loaded into the engine.
    #[arg(long)]
    image: Option<String>,
}

mod example;
mod stage;

use stage::Stage;
pub use stage::Target;

const ENVIRONMENTS: [&str; 3] = ["development", "staging", "production"];
/// Marks a folder as the demo's, so a rerun may replace it.
const MARK: &str = ".plumb-demo";

/// Runs the demo.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    prepare(&args.dir)?;
    let repo_dir = args.dir.join("repo");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let stage = runtime.block_on(Stage::set(
        args.target,
        args.kubeconfig.clone(),
        args.image.clone(),
        &args.dir,
    ))?;
    // The example's secrets, sealed for an identity made for the demo: the agent opens them
    // as it would in production.
    let (identity, recipient) = sealed::generate();
    example::copy(&repo_dir, &stage, &recipient)?;
    let key = Key::generate("alice")?;
    let approvers = [Key::generate("bob")?, Key::generate("carol")?];
    for approver in &approvers {
        std::fs::write(
            args.dir.join(format!("{}.key", approver.name)),
            approver.cert.as_tsk().armored().to_vec()?,
        )?;
    }
    let repo = Repository::init(&repo_dir).context("cannot create the demo repository")?;
    std::fs::write(repo_dir.join("openpgp-policy.toml"), policy(&key, &approvers)?)?;
    let root = commit(
        &repo,
        &key,
        "Signing policy: trust the demo key",
        Some("openpgp-policy.toml"),
    )?;
    commit(&repo, &key, "The Twikit platform, 1.4.2", None)?;
    let token = hex::encode(fastrand::u128(..).to_be_bytes());
    std::fs::write(args.dir.join("api-token"), &token)?;
    let hook_secret = args.dir.join("hook-secret");
    std::fs::write(&hook_secret, hex::encode(fastrand::u128(..).to_be_bytes()))?;

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
        tls: None,
        protect_reads: false,
        leader: None,
        notifications: Default::default(),
        services_url: None,
        read_token_key_file: None,
    };
    let mut settings = settings;
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        super::signals::stop_on_signals(cancel.clone(), true);
        // The agent's outcomes go to a webhook the demo receives and prints.
        let secret = crate::agent::config::secret(&hook_secret, "hook-secret", 16)?;
        let (inbox, told) = super::inbox::start(secret, cancel.clone()).await?;
        settings.notifications = inbox_channel(&inbox, &hook_secret, args.listen)?;
        let (started, handle) = tokio::sync::oneshot::channel();
        let agent = tokio::spawn(agent::run(settings, cancel.clone(), Some(started)));
        let Ok(handle) = handle.await else {
            let failed = agent.await?.map_err(anyhow::Error::from);
            stage.strike().await?;
            return failed;
        };
        let tour = Tour {
            stage: &stage,
            repo: &repo,
            key: &key,
            approvers: &approvers,
            ledger: args.dir.join("state/ledger.sqlite"),
            api: handle.api.expect("the demo listens"),
            token: &token,
            doorbell: handle.doorbells["config"].clone(),
            inbox,
            told,
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
        let stopped = agent.await;
        if args.target != Target::Local {
            println!("Removing what the demo ran on the {:?} target.", args.target);
        }
        let struck = stage.strike().await;
        stopped??;
        toured?;
        struck
    })?;
    println!("Stopped; every service is down.");
    Ok(Outcome::Ok)
}

/// The demo's one notification channel: its outcomes, to the webhook at `url`.
fn inbox_channel(url: &str, secret: &Path, listen: std::net::SocketAddr) -> anyhow::Result<agent::Notifications> {
    let channel: crate::notify::ChannelConfig = serde_json::from_value(serde_json::json!({
        "name": "demo",
        "webhook": { "url": url, "secretFile": secret },
        "events": ["succeeded", "rolled_back", "failed", "refused"],
    }))?;
    Ok(agent::Notifications {
        channels: vec![std::sync::Arc::new(channel.channel("notifications[0]")?)],
        external_url: Some(format!("http://{listen}")),
    })
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

/// A key of the demo: alice's signs commits, bob's and carol's approve.
struct Key {
    name: &'static str,
    cert: Cert,
}

/// The demo's signing policy: alice may do everything, bob and carol may sign tags (approve).
fn policy(signer: &Key, approvers: &[Key]) -> anyhow::Result<String> {
    let armored = |key: &Key| -> anyhow::Result<String> { Ok(String::from_utf8(key.cert.armored().to_vec()?)?) };
    let mut text = format!(
        "version = 0\ncommit_goodlist = []\n\n[authorization.{}]\nsign_commit = true\nsign_tag = true\nadd_user = true\n\
         retire_user = true\naudit = true\nkeyring = \"\"\"\n{}\"\"\"\n",
        signer.name,
        armored(signer)?
    );
    for approver in approvers {
        text.push_str(&format!(
            "\n[authorization.{}]\nsign_tag = true\nkeyring = \"\"\"\n{}\"\"\"\n",
            approver.name,
            armored(approver)?
        ));
    }
    Ok(text)
}

impl Key {
    fn generate(name: &'static str) -> anyhow::Result<Key> {
        let (cert, _) = CertBuilder::new()
            .set_cipher_suite(CipherSuite::Cv25519)
            .set_creation_time(SystemTime::now() - Duration::from_secs(60))
            .add_userid(format!("{name} <{name}@plumb.invalid>"))
            .add_signing_subkey()
            .generate()
            .context("cannot generate a demo key")?;
        Ok(Key { name, cert })
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
    stage: &'a Stage,
    repo: &'a Repository,
    key: &'a Key,
    approvers: &'a [Key],
    ledger: PathBuf,
    api: std::net::SocketAddr,
    token: &'a str,
    doorbell: crate::trigger::Doorbell,
    /// Where the agent's notifications go.
    inbox: String,
    /// What they said, printed as the tour goes.
    told: super::inbox::Told,
}

impl Tour<'_> {
    async fn play(&self, dir: &Path) -> anyhow::Result<()> {
        let work = self
            .repo
            .workdir()
            .context("the demo repository has a work tree")?
            .to_owned();
        println!("plumb demo — the dashboard: http://{}/", self.api);
        println!("A signed copy of example-repo in {}", work.display());
        println!(
            "  API        http://{}/api/v1/status  (token in {})",
            self.api,
            dir.join("api-token").display()
        );
        if self.stage.serves_ports() {
            for (env, port) in ENVIRONMENTS.iter().zip([13000, 23000, 30000]) {
                println!("  {env:<11} http://127.0.0.1:{port}/   (twikit-backend)");
            }
        }
        if let Some(hint) = self.stage.watch_hint() {
            println!("  watch      {hint}");
        }
        println!(
            "  webhook    {}   (the agent's notifications, printed as ✉)",
            self.inbox
        );
        println!("\n1. The first deployment of every environment: staging once development ran it.");
        let mut seen = 0;
        seen = self.watch(seen, |a| a.len() >= 2).await?;
        println!("   production takes what staging ran, once two people other than its author approved it,");
        println!("   when it is synced (`plumb sync --env production`):");
        seen = self.approve_and_sync(dir, seen).await?;

        println!("\n2. Release 1.5.0: development recreates; staging, once development ran it, runs a canary.");
        if self.stage.serves_ports() {
            println!("   (requests go to staging meanwhile, so its router has answers to measure the canary by)");
        } else {
            println!(
                "   (its HTTPRoute's weights move; no Prometheus runs beside it, so health alone judges the canary)"
            );
        }
        let requests = self.traffic();
        self.edit("services/twikit-backend.yaml", "backend:1.4.2", "backend:1.5.0")?;
        commit(self.repo, self.key, "Release twikit-backend 1.5.0", None)?;
        self.doorbell.ring(Reason::Manual);
        seen = self.watch(seen, |a| a.len() >= 2).await?;
        requests.abort();
        println!("   approved for production, which syncs on request (`plumb sync --env production`): blue-green.");
        seen = self.approve_and_sync(dir, seen).await?;

        println!("\n3. Release 1.6.0 runs in development but fails its health checks in staging: the canary");
        println!("   goes back by itself, and production, which takes only what staging ran, never sees it.");
        let requests = self.traffic();
        self.edit("services/twikit-backend.yaml", "backend:1.5.0", "backend:1.6.0")?;
        self.edit(
            "environments/staging.yaml",
            "        value: staging\n",
            "        value: staging\n      - name: EXAMPLE_HEALTH\n        value: fail\n",
        )?;
        commit(self.repo, self.key, "Release twikit-backend 1.6.0", None)?;
        self.doorbell.ring(Reason::Manual);
        self.watch(seen, |a| a.len() >= 2).await?;
        requests.abort();
        // Production sees it at its next check.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let said = loop {
            let said = self.waiting("production").await?;
            if said.contains("stopped") || tokio::time::Instant::now() > deadline {
                break said;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        println!("   [production] waiting: {said}");
        self.told().await;

        println!("\nTry:");
        if self.stage.serves_ports() {
            println!("  curl http://127.0.0.1:30000/                      # production's backend");
        }
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

    /// Requests to staging's stable port every 20 ms, where the stage has one, until aborted.
    fn traffic(&self) -> tokio::task::JoinHandle<()> {
        let serves = self.stage.serves_ports();
        tokio::spawn(async move {
            if serves {
                traffic(std::net::SocketAddr::from(([127, 0, 0, 1], 23000))).await;
            }
        })
    }

    /// Waits (a few seconds at most) until the notifications queued so far went out.
    async fn told(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            let queued = crate::ledger::read(self.ledger.clone(), |l| l.outbox_state())
                .await
                .map(|states| states.values().map(|s| s.queued).sum::<i64>());
            self.print_told();
            if matches!(queued, Ok(0) | Err(_)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Prints what the notification receiver was told since the last time.
    fn print_told(&self) {
        for line in self.told.take() {
            println!("{line}");
        }
    }

    fn edit(&self, file: &str, from: &str, to: &str) -> anyhow::Result<()> {
        let path = self.repo.workdir().context("a work tree")?.join(file);
        let text = std::fs::read_to_string(&path)?;
        anyhow::ensure!(text.contains(from), "{file} no longer contains {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1))?;
        Ok(())
    }

    /// Bob and carol approve the head for `env` with `plumb approve`, each with their key file;
    /// then waits until the agent has fetched their approvals.
    async fn approve(&self, dir: &Path, env: &str) -> anyhow::Result<()> {
        let work = self.repo.workdir().context("a work tree")?.to_owned();
        for approver in self.approvers {
            let key = dir.join(format!("{}.key", approver.name));
            println!(
                "   {}: plumb approve --env {env} --repo {} --key {}",
                approver.name,
                work.display(),
                key.display()
            );
            let args = super::approve::ApproveArgs::with_key(env, &work, &key);
            let said = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                super::approve::approve(&args, &mut out).map(|_| out)
            })
            .await??;
            for line in String::from_utf8_lossy(&said).lines().take(1) {
                println!("     {line}");
            }
        }
        self.doorbell.ring(Reason::Manual);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let waiting = self.waiting(env).await?;
            if !waiting.contains("approval") && !waiting.contains("promotion") {
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "{env} still waits: {waiting}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Bob and carol approve production's head, the agent is asked to sync it, and its attempt
    /// is printed as it goes; returns the newest ledger entry printed.
    async fn approve_and_sync(&self, dir: &Path, seen: i64) -> anyhow::Result<i64> {
        self.approve(dir, "production").await?;
        let (synced, watched) = tokio::join!(self.sync("production"), self.watch(seen, |a| !a.is_empty()));
        synced?;
        watched
    }

    /// What `env`'s status says it waits for (empty when nothing).
    async fn waiting(&self, env: &str) -> anyhow::Result<String> {
        let server = super::client::Server::new(format!("http://{}", self.api), Secret::new(self.token));
        let path = format!("/api/v1/environments/{env}");
        let status = tokio::task::spawn_blocking(move || server.call("GET", &path, None)).await??;
        Ok(status["waiting"].as_str().unwrap_or_default().to_owned())
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
            // What the webhook was told follows what the ledger recorded before it.
            let told = self.told.take();
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
                    // The demo's commits are all good: one refused says the stage cannot run it.
                    "refusal" => anyhow::bail!(
                        "[{}] refused {}: {}",
                        entry.environment,
                        body["commit"].as_str().map_or("", |c| &c[..12.min(c.len())]),
                        body["reason"].as_str().unwrap_or_default()
                    ),
                    _ => {}
                }
            }
            for line in told {
                println!("{line}");
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
