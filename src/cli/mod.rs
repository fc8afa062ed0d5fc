//! The `plumb` command line: arguments resolved into checked values in one step, the work
//! handed to the library, results printed for people (colour on a terminal) or machines
//! (`--output json`). Exit codes: 0 ok or no difference, 1 invalid or different, 2 error.

mod agent;
mod approve;
mod client;
mod config;
mod config_set;
mod demo;
mod dev_cluster;
mod diff;
pub(crate) mod emit;
mod example_app;
mod forge_comment;
mod inbox;
mod ledger;
mod notify;
mod report;
mod review;
mod seal;
mod signals;
mod verify;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::source;
use crate::spec::sealed::Keyring;
use crate::spec::{self, Rendered};

/// What a command found, as an exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Valid, or no difference.
    Ok,
    /// Invalid, or different.
    Found,
}

#[derive(Parser)]
#[command(
    name = "plumb",
    version,
    about = "Keep environments in step with a git repository.",
    after_help = "Exit codes: 0 ok or no difference, 1 invalid or different, 2 error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a config repository: documents, overlays, schemas, references.
    #[command(after_help = "Examples:
  plumb validate --repo example-repo
  plumb validate --repo . --rev origin/main --env production
  plumb validate --repo . --output json")]
    Validate {
        #[command(flatten)]
        at: RepoArgs,
        /// Only this environment.
        #[arg(long)]
        env: Option<String>,
        /// How to print the result.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Print an environment's desired state: merged, validated, secrets masked.
    #[command(after_help = "Examples:
  plumb render --env production --repo example-repo
  plumb render --env staging --service twikit-backend --repo example-repo --output json
  plumb render --env production --repo . --rev v1.4.2")]
    Render {
        #[command(flatten)]
        at: RepoArgs,
        /// The environment.
        #[arg(long)]
        env: String,
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// How to print the result (`text` is YAML).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Show what changes between two revisions, per environment and service — no cluster needed.
    #[command(after_help = "Examples:
  plumb diff --repo . --from origin/main --to HEAD
  plumb diff --repo . --from main --to feature --env production --output markdown
  plumb diff --env production --live --server http://127.0.0.1:7070")]
    Diff {
        /// The repository (or the config folder inside it).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// The revision before the change (a branch, tag or commit).
        #[arg(long, required_unless_present = "live")]
        from: Option<String>,
        /// The revision after the change.
        #[arg(long, required_unless_present = "live")]
        to: Option<String>,
        /// Instead: ask a running agent what applying the head of `--env` would do to what
        /// runs now.
        #[arg(long, requires = "env", conflicts_with_all = ["from", "to"])]
        live: bool,
        #[command(flatten)]
        server: client::Server,
        /// Only this environment.
        #[arg(long)]
        env: Option<String>,
        /// How to print the result.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Authenticate commits against the repository's signing policy (`openpgp-policy.toml`).
    #[command(
        after_help = "Every commit from the trust root (exclusive) to the revision must be signed by someone
its parent's policy authorizes. Exit 0 when authenticated, 1 when refused.

Examples:
  plumb verify --repo . --trust-root v1.0.0 --rev HEAD
  plumb verify --repo . --trust-root origin/main --rev HEAD --output json
  plumb verify --repo . --policy-file initial-policy.toml"
    )]
    Verify {
        /// The repository.
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// The commit trusted without checking (a revision), where authentication starts.
        #[arg(long, conflicts_with = "policy_file", required_unless_present = "policy_file")]
        trust_root: Option<String>,
        /// Instead of a trust root commit: a policy that judges the repository's first commits.
        #[arg(long)]
        policy_file: Option<PathBuf>,
        /// The revision to authenticate.
        #[arg(long, default_value = "HEAD")]
        rev: String,
        /// How to print the result.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Run the agent: fetch, authenticate, render and apply the repository's environments.
    #[command(after_help = "Examples:
  plumb agent --repo https://git.example.com/config.git --trust-root 3f1c…(40 hex) --env production
  plumb agent --repo ../config --policy-file initial-policy.toml --poll 5s")]
    Agent(agent::Args),
    /// The tour: a signed copy of example-repo deployed by the agent on this machine's local
    /// target — a release through recreate, canary and blue-green, then an automatic rollback.
    #[command(after_help = "Needs nothing but this binary: every service runs `plumb example-app`.
Stop it with Ctrl-C; `--once` stops after the tour.")]
    Demo(demo::Args),
    /// A Kubernetes cluster on this machine's loopback (etcd, kube-apiserver, controller
    /// manager, scheduler, a kubelet on containerd), to try the kubernetes target on.
    #[command(
        subcommand,
        after_help = "Needs Kubernetes 1.20 built from Debian's source once (`scripts/local-cluster up` does it,
about 10 minutes), and root: the node runs pods with runc on a CNI bridge.

Examples:
  plumb dev-cluster up && eval $(plumb dev-cluster env)
  plumb demo --target kubernetes
  plumb dev-cluster down"
    )]
    DevCluster(dev_cluster::Command),
    /// Show a running agent's environments: applied commit, head, signer, sync state, drift.
    #[command(
        after_help = "Exit 0 when every environment runs its head without drift, 1 otherwise.

Examples:
  plumb status
  plumb status --server http://agent.internal:7070 --output json"
    )]
    Status {
        #[command(flatten)]
        server: client::Server,
        /// How to print the result.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Ask a running agent to apply an environment's head now (also retries a failed head).
    #[command(after_help = "Example:
  PLUMB_API_TOKEN=… plumb sync --env staging")]
    Sync {
        /// The environment.
        #[arg(long)]
        env: String,
        /// Apply a head that brings an earlier version back without undoing the migrations
        /// applied since (the database keeps them; recorded as a step).
        #[arg(long)]
        skip_migrations: bool,
        #[command(flatten)]
        server: client::Server,
        /// How to print the result.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Ask a running agent to restore an earlier applied commit, and print the `git revert`
    /// that makes the repository agree.
    #[command(after_help = "Examples:
  plumb rollback --env production
  plumb rollback --env production --to 3f1c2a9 --token-file /etc/plumb/token")]
    Rollback {
        /// The environment.
        #[arg(long)]
        env: String,
        /// The commit to restore (a prefix will do); by default the one before the current.
        #[arg(long)]
        to: Option<String>,
        /// Leave the migrations applied since that commit in place instead of running their
        /// rollback commands (the database keeps them; recorded as a step).
        #[arg(long)]
        skip_migrations: bool,
        #[command(flatten)]
        server: client::Server,
        /// How to print the result.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Show the deployment attempts recorded in the ledger for an environment.
    #[command(after_help = "Examples:
  plumb history --env production --state /var/lib/plumb
  plumb history --env staging --limit 5 --output json
  plumb history --env staging --server http://127.0.0.1:7070")]
    History {
        /// The environment.
        #[arg(long)]
        env: String,
        /// The agent's state directory.
        #[arg(long, env = "PLUMB_STATE", default_value = ".plumb")]
        state: PathBuf,
        /// Ask a running agent's API instead of reading the state directory.
        #[arg(long)]
        server: Option<String>,
        /// At most this many attempts, newest first.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// How to print the result.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Show the migrations run in an environment: each service's migration per commit, how it
    /// ended, and whether its rollback command ran.
    #[command(after_help = "Examples:
  plumb migrations --env production --state /var/lib/plumb
  plumb migrations --env staging --output json
  plumb migrations --env staging --server http://127.0.0.1:7070
  plumb migrations resolve --env production --commit 3f1c2a9 --as rolled-back --by alice")]
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Migrations {
        /// Record what a person verified after an interruption.
        #[command(subcommand)]
        action: Option<MigrationsCommand>,
        /// The environment.
        #[arg(long, required = true)]
        env: Option<String>,
        /// The agent's state directory.
        #[arg(long, env = "PLUMB_STATE", default_value = ".plumb")]
        state: PathBuf,
        /// Ask a running agent's API instead of reading the state directory.
        #[arg(long)]
        server: Option<String>,
        /// At most this many, newest first.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// How to print the result.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Print the output of a service's replicas on the local target (newest last).
    #[command(after_help = "Examples:
  plumb logs --env production --service twikit-backend
  plumb logs --env staging --service twikit-worker --bytes 1000000")]
    Logs {
        /// The environment.
        #[arg(long)]
        env: String,
        /// The service.
        #[arg(long)]
        service: String,
        /// The agent's state directory.
        #[arg(long, env = "PLUMB_STATE", default_value = ".plumb")]
        state: PathBuf,
        /// At most this many bytes of each replica's log, rotated files included.
        #[arg(long, default_value_t = 64 * 1024)]
        bytes: u64,
    },
    /// Audit the ledger.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Approve a commit for an environment: an OpenPGP-signed tag under
    /// `refs/plumb/approvals/`, signed with your GnuPG as `git tag -s` signs, pushed with the
    /// branch's remote.
    #[command(after_help = "Examples:
  plumb approve --env production                       # HEAD of the clone in this folder
  plumb approve --env production 3f1c2a9 --repo ~/src/config
  plumb approve --env production --repo https://git.example.com/platform/config.git main
  plumb approve --env staging --key bob.key --push none
  plumb approve --env production --print 3f1c2a9         # the signed tag, to paste in the dashboard")]
    Approve(approve::ApproveArgs),
    /// Notifications: check a channel of the agent's configuration.
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// A pull request's check, for a config repository's CI: its commits authenticated against
    /// the policy at its base, its head validated, what it changes per environment — as one
    /// Markdown comment and annotations on the lines. Exit 1 when a commit is refused or a
    /// document invalid.
    #[command(after_help = "Examples:
  plumb review --base origin/main --head HEAD
  plumb review --base \"$BASE_SHA\" --head \"$HEAD_SHA\" --comment comment.md --github-annotations
  plumb review --base \"$CI_MERGE_REQUEST_DIFF_BASE_SHA\" --comment note.md --code-quality gl-code-quality-report.json")]
    Review(review::ReviewArgs),
    /// A service's application configuration (`config.values`), as an environment renders it.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Encrypt a value for the repository: reads it from standard input, prints
    /// `ENC[age,…]` to paste into a service's `env` or `config.values`.
    #[command(after_help = "Examples:
  printf %s \"$DB_PASSWORD\" | plumb seal --recipient age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
  plumb seal --recipients-file production.recipients < password.txt")]
    Seal(seal::SealArgs),
    /// Make an age identity for an agent: written to a file only its owner can read; its
    /// recipient (to seal values with) is printed.
    #[command(after_help = "Example:
  plumb keygen --out /etc/plumb/age.key")]
    Keygen {
        /// The file to write (it must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// A small HTTP service the example repository runs on the local target (listens on $PORT).
    #[command(hide = true)]
    ExampleApp,
    /// Write plumb's JSON Schemas, for editors and CI.
    #[command(after_help = "Example:
  plumb schemas --out schemas")]
    Schemas {
        /// The folder to write into.
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum MigrationsCommand {
    /// Say what the database has after the agent stopped in the middle of a migration or its
    /// rollback: the environment applies nothing until then.
    #[command(after_help = "Examples:
  plumb migrations resolve --env production --commit 3f1c2a9 --as applied --by alice
  plumb migrations resolve --env staging --commit 3f1c2a9 --service api --as rolled-back")]
    Resolve {
        /// The environment.
        #[arg(long)]
        env: String,
        /// The commit whose migration was interrupted (a prefix will do).
        #[arg(long)]
        commit: String,
        /// Only this service's migration of the commit (by default every interrupted one).
        #[arg(long)]
        service: Option<String>,
        /// What the database has: the migration `applied`, or `rolled-back` (never ran, or its
        /// rollback completed).
        #[arg(long = "as", value_enum)]
        state: Resolution,
        /// Who checked the database (recorded with the resolution); by default `$USER`.
        #[arg(long, env = "USER")]
        by: Option<String>,
        #[command(flatten)]
        server: client::Server,
        /// How to print the result.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
}

/// What a person found in the database.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Resolution {
    /// The migration is in the database.
    Applied,
    /// It is not (it never ran, or its rollback completed).
    RolledBack,
}

#[derive(Subcommand)]
enum NotifyCommand {
    /// Send a test message on one channel and print the receiver's answer: exit 0 when it took
    /// it, 1 when it did not.
    #[command(after_help = "Examples:
  plumb notify test --config /etc/plumb/agent.yaml --channel ops
  plumb notify test --channel oncall --env production")]
    Test(notify::TestArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a service's configuration (or a part of it) in an environment, each value with the
    /// file and line that wrote it; encrypted values masked unless `--identity` opens them.
    #[command(after_help = "Examples:
  plumb config get --repo example-repo --env production --service twikit-backend database
  plumb config get --repo . --rev origin/main --env staging --service twikit-backend features.newTimeline
  plumb config get --env production --service twikit-backend --identity age.key --output json")]
    Get(config::GetArgs),
    /// Change one value for one environment the GitOps way: the environment's overlay edited in
    /// place (only the value's lines change), sealed on request, validated, committed signed on
    /// a new branch and pushed; prints where to open the pull request. Never touches the
    /// deployed branch, the work tree or the branch checked out.
    #[command(after_help = "Examples:
  plumb config set --env production --service twikit-backend database.pool.max 80
  plumb config set --env staging --service twikit-backend features.newTimeline true --from origin/main
  printf %s \"$PASSWORD\" | plumb config set --env production --service twikit-backend database.password - --seal
  plumb config set --env production --service twikit-backend logging.level debug --key alice.key --push none")]
    Set(config_set::SetArgs),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the ledger's hash chain: exit 0 when intact, 1 when an entry was altered or removed.
    Verify {
        /// The agent's state directory.
        #[arg(long, env = "PLUMB_STATE", default_value = ".plumb")]
        state: PathBuf,
        /// How to print the result.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
}

#[derive(clap::Args)]
struct RepoArgs {
    /// The repository (or the config folder inside it).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Read this revision from git's object database instead of the files on disk.
    #[arg(long)]
    rev: Option<String>,
    /// A file of age identities: every encrypted value must open with them (repeat for
    /// several). Clear values are never printed.
    #[arg(long = "identity", value_name = "FILE")]
    identities: Vec<PathBuf>,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// For machines.
    Json,
    /// For a pull-request comment (`diff` only).
    Markdown,
    /// The objects the kubernetes target would apply (`render` only).
    Manifests,
}

/// Runs the command line and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Found) => ExitCode::from(1),
        Err(e) => {
            let _ = writeln!(
                anstream::stderr(),
                "{}error:{} {e:#}",
                report::ERROR.render(),
                report::ERROR.render_reset()
            );
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<Outcome> {
    let mut out = anstream::stdout().lock();
    match command {
        Command::Validate { at, env, output } => {
            let rendered = render(&at, env.as_deref())?;
            report::validation(&mut out, &rendered, output)?;
            let outcome = if rendered.is_valid() {
                Outcome::Ok
            } else {
                Outcome::Found
            };
            // The process ends here: freeing what was rendered would only delay its exit.
            std::mem::forget(rendered);
            Ok(outcome)
        }
        Command::Render {
            at,
            env,
            service,
            output,
        } => {
            let rendered = render(&at, Some(&env))?;
            if !rendered.is_valid() {
                report::validation(&mut anstream::stderr().lock(), &rendered, Format::Text)?;
                return Ok(Outcome::Found);
            }
            let desired = &rendered.environments[&env];
            if output == Format::Manifests {
                return manifests(&mut out, desired, service.as_deref());
            }
            let mut value = desired.to_masked_json();
            if let Some(service) = service {
                let Some(one) = value["services"].get(&service).cloned() else {
                    anyhow::bail!("environment `{env}` has no enabled service named `{service}`");
                };
                value = one;
            }
            match output {
                Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?,
                Format::Text | Format::Markdown | Format::Manifests => write!(out, "{}", emit::yaml(&value))?,
            }
            Ok(Outcome::Ok)
        }
        Command::Diff {
            env: Some(env),
            live: true,
            server,
            output,
            ..
        } => client::live_diff(&mut out, &server, &env, output),
        Command::Diff {
            repo,
            from,
            to,
            env,
            output,
            ..
        } => {
            let (Some(from), Some(to)) = (from, to) else {
                anyhow::bail!("give --from and --to, or --live with --env");
            };
            let before = render(
                &RepoArgs {
                    repo: repo.clone(),
                    rev: Some(from.clone()),
                    identities: Vec::new(),
                },
                env.as_deref(),
            )?;
            let after = render(
                &RepoArgs {
                    repo,
                    rev: Some(to.clone()),
                    identities: Vec::new(),
                },
                env.as_deref(),
            )?;
            diff::print(&mut out, &before, &after, (&from, &to), output)
        }
        Command::Verify {
            repo,
            trust_root,
            policy_file,
            rev,
            output,
        } => verify::run(
            &mut out,
            &repo,
            trust_root.as_deref(),
            policy_file.as_deref(),
            &rev,
            output,
        ),
        Command::Agent(args) => agent::run(args),
        Command::Demo(args) => demo::run(args),
        Command::DevCluster(command) => dev_cluster::run(command),
        Command::Status { server, output } => client::status(&mut out, &server, output),
        Command::Sync {
            env,
            skip_migrations,
            server,
            output,
        } => client::sync(&mut out, &server, &env, skip_migrations, output),
        Command::Rollback {
            env,
            to,
            skip_migrations,
            server,
            output,
        } => client::rollback(&mut out, &server, &env, to.as_deref(), skip_migrations, output),
        Command::History {
            env,
            server: Some(server),
            limit,
            output,
            ..
        } => client::history(&mut out, &client::Server::at(server), &env, limit, output),
        Command::History {
            env,
            state,
            limit,
            output,
            ..
        } => ledger::history(&mut out, &state, &env, limit, output),
        Command::Migrations {
            action:
                Some(MigrationsCommand::Resolve {
                    env,
                    commit,
                    service,
                    state,
                    by,
                    server,
                    output,
                }),
            ..
        } => {
            let state = match state {
                Resolution::Applied => crate::ledger::MigrationState::Applied,
                Resolution::RolledBack => crate::ledger::MigrationState::RolledBack,
            };
            let request = client::Resolve {
                commit: &commit,
                service: service.as_deref(),
                state,
                by: by.as_deref(),
            };
            client::resolve(&mut out, &server, &env, &request, output)
        }
        Command::Migrations {
            env: Some(env),
            server: Some(server),
            limit,
            output,
            ..
        } => client::migrations(&mut out, &client::Server::at(server), &env, limit, output),
        Command::Migrations {
            env: Some(env),
            state,
            limit,
            output,
            ..
        } => ledger::migrations(&mut out, &state, &env, limit, output),
        Command::Migrations { env: None, .. } => anyhow::bail!("`plumb migrations` needs --env ENVIRONMENT"),
        Command::Audit(AuditCommand::Verify { state, output }) => ledger::verify(&mut out, &state, output),
        Command::Logs {
            env,
            service,
            state,
            bytes,
        } => logs(&mut out, &state, &env, &service, bytes),
        Command::ExampleApp => example_app::run().map(|()| Outcome::Ok),
        Command::Seal(args) => seal::seal(&args, &mut out),
        Command::Approve(args) => approve::approve(&args, &mut out),
        Command::Notify(NotifyCommand::Test(args)) => notify::test(&args, &mut out),
        Command::Review(args) => review::review(&args, &mut out),
        Command::Config(ConfigCommand::Get(args)) => config::get(&args, &mut out),
        Command::Config(ConfigCommand::Set(args)) => config_set::set(&args, &mut out),
        Command::Keygen { out: file } => seal::keygen(&file, &mut out),
        Command::Schemas { out: dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            for (name, schema) in spec::schema::generate() {
                let path = dir.join(name);
                std::fs::write(&path, format!("{}\n", serde_json::to_string_pretty(&schema)?))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                writeln!(out, "wrote {}", path.display())?;
            }
            Ok(Outcome::Ok)
        }
    }
}

/// Prints the tail of every log file of a service (replicas by slot, then jobs).
fn logs(out: &mut dyn Write, state: &std::path::Path, env: &str, service: &str, bytes: u64) -> anyhow::Result<Outcome> {
    let dir = crate::target::local::LocalRuntime::service_logs(state, env, service);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("no logs for `{service}` in `{env}` under {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        writeln!(out, "==> {name} <==")?;
        let text = crate::target::local::logs::tail(&file, bytes)
            .with_context(|| format!("cannot read {}", file.display()))?;
        write!(out, "{text}")?;
        if !text.is_empty() && !text.ends_with('\n') {
            writeln!(out)?;
        }
    }
    Ok(Outcome::Ok)
}

/// Prints the objects the kubernetes target would apply for `desired` (those of `service`
/// alone, when given) as a YAML stream.
fn manifests(out: &mut impl Write, desired: &spec::Desired, service: Option<&str>) -> anyhow::Result<Outcome> {
    let Some(objects) = crate::target::kubernetes::render::manifests(desired) else {
        anyhow::bail!(
            "environment `{}` runs on the {} target, which applies no Kubernetes objects: `--output manifests` is for environments on the kubernetes target (`--output text` shows what it runs)",
            desired.environment,
            desired.target.name()
        );
    };
    let objects = objects.context("cannot make the objects")?;
    let label = |o: &serde_json::Value| {
        o["metadata"]["labels"][crate::target::kubernetes::render::SERVICE]
            .as_str()
            .map(str::to_owned)
    };
    for object in objects
        .iter()
        .filter(|o| service.is_none() || label(o).as_deref() == service)
    {
        write!(out, "---\n{}", emit::yaml(object))?;
    }
    Ok(Outcome::Ok)
}

fn render(at: &RepoArgs, env: Option<&str>) -> anyhow::Result<Rendered> {
    let tree = source::open(&at.repo, at.rev.as_deref())?;
    let rendered = if at.identities.is_empty() {
        spec::render(tree.as_ref(), env)
    } else {
        spec::render_opening(
            tree.as_ref(),
            env,
            &Keyring::read(&at.identities)?,
            &spec::rights::Allow::default(),
        )
    };
    rendered.with_context(|| format!("cannot read the repository at {}", at.repo.display()))
}
