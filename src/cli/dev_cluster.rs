//! `plumb dev-cluster up|down|env`: a Kubernetes cluster on this machine's loopback to try the
//! kubernetes target on (`plumb demo --target kubernetes`), its state in one folder — the
//! cluster the tests use (`crate::lab::cluster`), with the example image imported from this
//! binary and the Gateway API's HTTPRoute CRD installed.
//!
//! `up` starts a supervisor in the background, which starts everything tied to itself, and
//! returns once the node takes pods; the supervisor stops it all — and undoes what the node
//! changed on the host — on `down`, on SIGTERM, SIGINT or SIGHUP, or when the terminal `up` ran
//! in closes. `up --foreground` is the supervisor itself.

use std::io::BufRead;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::Outcome;
use crate::lab::cluster;

/// The cluster's commands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Start the cluster and return once its node takes pods.
    Up {
        #[command(flatten)]
        at: Dir,
        /// Stay in the foreground until Ctrl-C, SIGTERM or the terminal closes.
        #[arg(long)]
        foreground: bool,
    },
    /// Stop the cluster and everything it runs; undo what its node changed on this machine.
    Down {
        #[command(flatten)]
        at: Dir,
    },
    /// Print the variable that points kubectl and plumb at the cluster.
    Env {
        #[command(flatten)]
        at: Dir,
    },
    /// The supervisor `up` starts in the background.
    #[command(hide = true)]
    Supervise {
        #[command(flatten)]
        at: Dir,
        /// The terminal whose closing stops the cluster.
        #[arg(long)]
        tty: Option<PathBuf>,
    },
}

/// The cluster's folder.
#[derive(clap::Args)]
pub struct Dir {
    /// Where the cluster keeps its state, logs and kubeconfig (short: sockets live there).
    #[arg(long, default_value = "/tmp/plumb-dev-cluster")]
    dir: PathBuf,
}

/// The supervisor's pid, in the folder.
const PID: &str = "supervisor.pid";
/// Written once the cluster takes pods.
const READY: &str = "ready";
/// The supervisor's log (its progress, then its errors).
const LOG: &str = "dev-cluster.log";

/// Runs a `plumb dev-cluster` command.
pub fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Up { at, foreground: false } => up(&at.dir),
        Command::Up { at, foreground: true } => {
            prepare(&at.dir)?;
            supervise(&at.dir, None, true)
        }
        Command::Supervise { at, tty } => supervise(&at.dir, tty.as_deref(), false),
        Command::Down { at } => down(&at.dir),
        Command::Env { at } => {
            anyhow::ensure!(
                running(&at.dir).is_some() && at.dir.join(READY).exists(),
                "no cluster runs in {}: start one with `plumb dev-cluster up`",
                at.dir.display()
            );
            println!("export KUBECONFIG={}", at.dir.join("kubeconfig").display());
            Ok(Outcome::Ok)
        }
    }
}

/// The supervisor of `dir` when it runs.
fn running(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.join(PID)).ok()?.trim().parse().ok()?;
    let command = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    (!crate::lab::gone(pid) && String::from_utf8_lossy(&command).contains("dev-cluster")).then_some(pid)
}

/// Checks that the cluster can start in `dir`, and clears what an earlier one left there.
fn prepare(dir: &Path) -> anyhow::Result<()> {
    let bin = cluster::binaries();
    let missing = cluster::missing(&bin);
    anyhow::ensure!(
        missing.is_empty(),
        "{} missing in {}: `scripts/local-cluster up` builds them first (about 10 minutes, once), \
         or run scripts/build-kube-control-plane",
        missing.join(", "),
        bin.display()
    );
    if let Some(pid) = running(dir) {
        anyhow::bail!(
            "a cluster already runs in {} (supervisor {pid}): `plumb dev-cluster env` prints its kubeconfig",
            dir.display()
        );
    }
    // One node per machine: whoever holds the lock (the tests, another folder's cluster) runs
    // it; one that is ending (its cleanup holds the lock) is waited for, a minute at most.
    drop(cluster::lock_machine(Duration::from_secs(60))?);
    if dir.exists() {
        let _ = cluster::clean_up(dir);
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// Starts the supervisor in its own session, echoes its progress, returns once the cluster is
/// ready (or the supervisor failed).
fn up(dir: &Path) -> anyhow::Result<Outcome> {
    prepare(dir)?;
    let log_path = dir.join(LOG);
    let log = std::fs::File::create(&log_path)?;
    let mut supervisor = std::process::Command::new(std::env::current_exe()?);
    supervisor
        .args(["dev-cluster", "supervise", "--dir"])
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(tty) = terminal() {
        supervisor.arg("--tty").arg(tty);
    }
    // SAFETY: setsid in the child before exec: its own session, so that the shell's job
    // control leaves it alone (it watches the terminal itself).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut supervisor, || {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = supervisor.spawn().context("cannot start the supervisor")?;
    let mut progress = std::io::BufReader::new(std::fs::File::open(&log_path)?);
    let mut line = String::new();
    loop {
        while progress.read_line(&mut line)? > 0 {
            if line.ends_with('\n') {
                print!("{line}");
                line.clear();
            } else {
                let back = line.len() as i64;
                progress.seek_relative(-back)?;
                line.clear();
                break;
            }
        }
        if dir.join(READY).exists() {
            return Ok(Outcome::Ok);
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "the cluster did not start ({status}); its logs are in {}",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The terminal this command runs in, if any.
fn terminal() -> Option<PathBuf> {
    [0, 1, 2].into_iter().find_map(|fd| {
        // SAFETY: isatty on a descriptor number; no memory is touched.
        (unsafe { libc::isatty(fd) } == 1)
            .then(|| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok())
            .flatten()
    })
}

/// Starts the cluster tied to this process, says how to use it, and waits for the end: a
/// signal, or the hang-up of `tty`. Returning ends this process, which ends the cluster.
fn supervise(dir: &Path, tty: Option<&Path>, foreground: bool) -> anyhow::Result<Outcome> {
    std::fs::write(dir.join(PID), std::process::id().to_string())?;
    let machine = cluster::lock_machine(Duration::ZERO)?;
    cluster::reaper(dir, &machine)?;
    let exe = std::env::current_exe()?;
    let image = crate::lab::image::demo_name();
    println!("Starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd and the kubelet");
    println!("  (about 30 s; logs in {})", dir.display());
    let started = cluster::start(dir, &cluster::binaries(), (&exe, &image))?;
    println!(
        "Node {} Ready; image {image} imported (plumb example-app)",
        cluster::NODE
    );
    let crd = dir.join("httproute-crd.yaml");
    std::fs::write(&crd, cluster::HTTPROUTE_CRD)?;
    let config = &started.kubeconfig;
    cluster::kubectl(config, &["apply", "-f", &crd.display().to_string()])?;
    cluster::kubectl(
        config,
        &[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "crd/httproutes.gateway.networking.k8s.io",
        ],
    )?;
    println!("Gateway API HTTPRoute CRD installed (no Gateway controller runs: canaries record their weights)");
    println!("\nThe cluster runs. Use it with:");
    println!("  export KUBECONFIG={}", config.display());
    println!("  kubectl get pods -A");
    println!("  plumb demo --target kubernetes");
    if foreground {
        println!("Ctrl-C (or closing this terminal) stops it and everything it runs.");
    } else {
        println!("`plumb dev-cluster down` (or closing this terminal) stops it and everything it runs.");
    }
    std::fs::write(dir.join(READY), "")?;
    wait_for_the_end(tty)?;
    println!("Stopping the cluster");
    Ok(Outcome::Ok)
}

/// Returns on SIGTERM, SIGINT or SIGHUP, or when `tty` hangs up.
fn wait_for_the_end(tty: Option<&Path>) -> anyhow::Result<()> {
    let (hung_up, mut hang_up) = tokio::sync::mpsc::unbounded_channel::<()>();
    // Without a terminal, nothing hangs up: the channel stays open until the end, silent.
    let mut silent = Some(hung_up);
    if let Some(tty) = tty {
        let hung_up = silent.take().expect("taken once");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(tty)
            .with_context(|| format!("cannot watch {}", tty.display()))?;
        std::thread::spawn(move || {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
            loop {
                let mut poll = libc::pollfd {
                    fd,
                    events: 0,
                    revents: 0,
                };
                // SAFETY: poll on one descriptor this thread owns; nothing is read from it.
                unsafe { libc::poll(&mut poll, 1, 1000) };
                if poll.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                    let _ = hung_up.send(());
                    return;
                }
            }
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut int, mut hup) = (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        );
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
            _ = hang_up.recv() => {}
        }
        drop(silent);
        anyhow::Ok(())
    })
}

/// Stops the supervisor of `dir` and waits until its node is cleaned up; removes the folder.
fn down(dir: &Path) -> anyhow::Result<Outcome> {
    let Some(pid) = running(dir) else {
        println!("No cluster runs in {}.", dir.display());
        return Ok(Outcome::Ok);
    };
    // SAFETY: kill(2) on the supervisor this folder names (checked to be one).
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    println!(
        "Stopping the cluster of {} and undoing what its node changed",
        dir.display()
    );
    // The supervisor holds the machine's lock, then its node's cleanup until that is done.
    drop(cluster::lock_machine(Duration::from_secs(120))?);
    std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    println!("Stopped; nothing it started runs.");
    Ok(Outcome::Ok)
}
