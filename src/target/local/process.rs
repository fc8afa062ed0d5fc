//! One supervised replica: a child process in its own process group, its output appended to a
//! log file, restarted with backoff when it exits on its own, stopped with SIGTERM and, after a
//! grace period, SIGKILL to the whole group (so shells do not leave orphans behind).
//!
//! Every process carries a marker variable naming its owner, so an agent that was killed
//! outright can find and remove what it left behind ([`sweep`]) instead of starting duplicates
//! beside it — including a process started in the instant before the agent died.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::logs::{KEEP, LogFile, MAX_BYTES};

/// How often a running replica's log size is checked for rotation.
const ROTATION_CHECK: Duration = Duration::from_secs(30);

/// How to run a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Environment variables, on top of a minimal inherited set.
    pub env: Vec<(String, String)>,
    /// The working directory.
    pub dir: Option<PathBuf>,
    /// Where stdout and stderr go.
    pub log: PathBuf,
}

/// Restart policy.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// The first wait before a restart.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// A run this long resets the wait to `first`.
    pub reset_after: Duration,
    /// Between SIGTERM and SIGKILL.
    pub grace: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(10),
            grace: Duration::from_secs(10),
        }
    }
}

/// What a replica is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Running as this process id.
    Running {
        /// The process id (also its process group id).
        pid: u32,
        /// How many times it was restarted.
        restarts: u32,
    },
    /// Exited; waiting to be restarted.
    Backoff {
        /// How it exited.
        exit: String,
        /// How many times it was restarted.
        restarts: u32,
    },
    /// Could not be started at all (no such program…).
    Failed(String),
    /// Stopped on request.
    Stopped,
}

/// A supervised replica. Dropping it without [`Replica::stop`] kills its process group at once.
pub struct Replica {
    state: watch::Receiver<State>,
    stop: CancellationToken,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        if self.done.is_some() {
            self.stop.cancel();
            if let State::Running { pid, .. } = *self.state.borrow() {
                signal_group(pid, libc::SIGKILL);
            }
        }
    }
}

impl Replica {
    /// Starts the process and supervises it until [`Replica::stop`].
    pub fn start(spec: Spec, backoff: Backoff) -> Replica {
        let (tx, state) = watch::channel(State::Backoff {
            exit: "not started".to_owned(),
            restarts: 0,
        });
        let stop = CancellationToken::new();
        let done = tokio::spawn(supervise(Arc::new(spec), backoff, tx, stop.clone()));
        Replica {
            state,
            stop,
            done: Some(done),
        }
    }

    /// What the replica is doing now.
    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    /// Waits until the replica's state satisfies `f` (a test, or a deploy waiting for start).
    pub async fn wait_for(&mut self, f: impl Fn(&State) -> bool) -> State {
        let found = self.state.wait_for(|s| f(s)).await.map(|s| s.clone());
        found.unwrap_or_else(|_| self.state())
    }

    /// Stops the process (SIGTERM, then SIGKILL after the grace period) and the supervision.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

async fn supervise(spec: Arc<Spec>, backoff: Backoff, state: watch::Sender<State>, stop: CancellationToken) {
    let mut restarts = 0u32;
    let mut wait = backoff.first;
    loop {
        let log = match LogFile::open(&spec.log) {
            Ok(log) => log,
            Err(e) => {
                let _ = state.send(State::Failed(format!("cannot open log {}: {e}", spec.log.display())));
                return;
            }
        };
        let mut child = match spawn(&spec, &log) {
            Ok(child) => child,
            Err(e) => {
                let _ = state.send(State::Failed(e));
                return;
            }
        };
        let pid = child.id().unwrap_or_default();
        let _ = state.send(State::Running { pid, restarts });
        let started = tokio::time::Instant::now();
        let mut rotation = tokio::time::interval(ROTATION_CHECK);
        let exit = loop {
            tokio::select! {
                exit = child.wait() => break exit,
                _ = rotation.tick() => {
                    // A copy of up to MAX_BYTES: off the runtime.
                    let file = log.clone();
                    if let Err(e) = crate::blocking::io(move || file.rotate_if_larger(MAX_BYTES, KEEP)).await {
                        tracing::warn!(log = %spec.log.display(), error = %e, "Cannot rotate a replica's log.");
                    }
                }
                _ = stop.cancelled() => {
                    terminate(&mut child, pid, backoff.grace).await;
                    let _ = state.send(State::Stopped);
                    return;
                }
            }
        };
        // What the leader left behind in its group (a server started by a shell) would hold the
        // port the restart needs.
        signal_group(pid, libc::SIGKILL);
        let exit = match exit {
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        };
        log.note(&format!("plumb: the process exited ({exit}); restarting in {wait:?}"));
        let _ = state.send(State::Backoff {
            exit: exit.clone(),
            restarts,
        });
        if started.elapsed() >= backoff.reset_after {
            wait = backoff.first;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => {
                let _ = state.send(State::Stopped);
                return;
            }
        }
        wait = (wait * 2).min(backoff.max);
        restarts += 1;
    }
}

fn spawn(spec: &Spec, log: &LogFile) -> Result<tokio::process::Child, String> {
    let Some((program, args)) = spec.command.split_first() else {
        return Err("the command is empty".to_owned());
    };
    let (stdout, stderr) = log.handles().map_err(|e| format!("cannot open log: {e}"))?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(inherited())
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    if let Some(dir) = &spec.dir {
        command.current_dir(dir);
    }
    command
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", spec.command.join(" ")))
}

/// The agent's variables a service may rely on; nothing else leaks (no secrets of the agent).
pub fn inherited() -> impl Iterator<Item = (String, String)> {
    ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v)))
}

/// SIGTERM to the process group, SIGKILL after `grace`.
async fn terminate(child: &mut tokio::process::Child, pid: u32, grace: Duration) {
    signal_group(pid, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(pid, libc::SIGKILL);
        let _ = child.wait().await;
    }
    // Whatever the leader left behind in its group goes too.
    signal_group(pid, libc::SIGKILL);
}

/// Sends `signal` to the process group `pgid`.
pub fn signal_group(pgid: u32, signal: i32) {
    if pgid == 0 {
        return;
    }
    // SAFETY: kill(2) with a negative id signals a process group this supervisor created.
    unsafe {
        libc::kill(-(pgid as i32), signal);
    }
}

/// Runs a one-off job (a migration) to completion within `timeout`; on timeout its whole
/// process group is killed. Output goes to `spec.log`; the last lines this run wrote are
/// returned, or quoted in the error.
pub async fn run_job(spec: &Spec, timeout: Duration) -> Result<String, String> {
    let log = LogFile::open(&spec.log).map_err(|e| format!("cannot open log {}: {e}", spec.log.display()))?;
    let from = std::fs::metadata(&spec.log).map_or(0, |m| m.len());
    let mut child = spawn(spec, &log)?;
    let pid = child.id().unwrap_or_default();
    let result = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("`{}` {status}", spec.command.join(" "))),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            signal_group(pid, libc::SIGKILL);
            let _ = child.wait().await;
            Err(format!(
                "`{}` did not finish within {timeout:?} and was killed",
                spec.command.join(" ")
            ))
        }
    };
    signal_group(pid, libc::SIGKILL);
    let tail = last_lines(&spec.log, from);
    log.note(&format!(
        "plumb: the job ended: {}",
        result.as_ref().map_or_else(|e| e.as_str(), |()| "ok")
    ));
    match result {
        Ok(()) => Ok(tail),
        Err(reason) if tail.is_empty() => Err(reason),
        Err(reason) => Err(format!("{reason}; its last lines:\n{tail}")),
    }
}

/// How much of a job's output is kept: its last lines, within a size.
const TAIL_LINES: usize = 20;
const TAIL_BYTES: u64 = 4096;

/// The last [`TAIL_LINES`] lines (at most [`TAIL_BYTES`]) written to `path` after offset `from`.
fn last_lines(path: &std::path::Path, from: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let end = file.metadata().map_or(0, |m| m.len());
    // The log may have been rotated under the job (truncated in place): read what is there.
    let start = if end < from {
        0
    } else {
        from.max(end.saturating_sub(TAIL_BYTES))
    };
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.take(TAIL_BYTES).read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// Kills every process (with its process group, when it leads one) whose environment holds
/// `variable=value`, except this process; returns how many were killed. An agent calls this
/// before starting anything, with the marker its processes carry: what a killed agent left
/// running is replaced, never duplicated. Processes of other users are not visible, and are
/// not plumb's.
pub fn sweep(variable: &str, value: &str) -> usize {
    let marker = format!("{variable}={value}");
    let me = std::process::id();
    let mut killed = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
            // SAFETY: getpgid(2) and kill(2) on a process that carries this agent's marker.
            unsafe {
                if libc::getpgid(pid as i32) == pid as i32 {
                    libc::kill(-(pid as i32), libc::SIGKILL);
                }
                libc::kill(pid as i32, libc::SIGKILL);
            }
            killed.push(pid);
        }
    }
    // Wait (briefly) for them to go, so their ports are free again.
    for pid in &killed {
        for _ in 0..200 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let gone = stat
                .rfind(')')
                .is_none_or(|i| stat[i + 1..].trim_start().starts_with('Z'));
            if gone {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    killed.len()
}
