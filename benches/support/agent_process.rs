//! `plumb agent` as operators run it (the bench profile's binary), on a test repository, stopped
//! with SIGTERM when dropped (it stops its replicas).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `plumb agent`.
pub struct Agent(pub Child);

impl Agent {
    /// Starts the agent on `repo` (branch `branch`, trust root `root`), polling hourly, looking
    /// for drift every `heal_every` (`30s`, `1h`), its API on `api`, its state in `state`.
    pub fn start(repo: &Path, branch: &str, root: &str, heal_every: &str, api: SocketAddr, state: &Path) -> Agent {
        Agent::start_with(repo, branch, root, heal_every, api, state, &[])
    }

    /// [`Agent::start`], with `more` arguments (`--webhook github …`).
    pub fn start_with(
        repo: &Path,
        branch: &str,
        root: &str,
        heal_every: &str,
        api: SocketAddr,
        state: &Path,
        more: &[&str],
    ) -> Agent {
        let child = Command::new(env!("CARGO_BIN_EXE_plumb"))
            .args(["agent", "--repo", repo.to_str().unwrap(), "--trust-root", root])
            .args([
                "--branch",
                branch,
                "--poll",
                "1h",
                "--heal-every",
                heal_every,
                "--listen",
                &api.to_string(),
            ])
            .arg("--state")
            .arg(state)
            .args(more)
            .env("PLUMB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Agent(child)
    }

    /// Its resident memory (VmRSS), in megabytes.
    pub fn rss_mb(&self) -> f64 {
        self.status("VmRSS") / 1024.0
    }

    /// Its resident memory in megabytes, split as the kernel counts it: anonymous (heap,
    /// stacks), file-backed (the binary's pages in use) — and its threads.
    pub fn memory(&self) -> (f64, f64, f64, f64) {
        let mb = |field| self.status(field) / 1024.0;
        (mb("VmRSS"), mb("RssAnon"), mb("RssFile"), self.status("Threads"))
    }

    /// Its resident megabytes by what is mapped (a file, or `[heap]`, `[anon]`…), largest first.
    pub fn mappings(&self) -> Vec<(String, f64)> {
        let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", self.0.id())).unwrap();
        let mut by_name: std::collections::BTreeMap<String, f64> = Default::default();
        let mut name = String::new();
        for line in smaps.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.first().is_some_and(|f| f.contains('-') && !f.ends_with(':')) {
                name = fields.get(5).map_or("[anon]", |n| n).to_owned();
            } else if fields.first() == Some(&"Rss:") {
                *by_name.entry(name.clone()).or_default() += fields[1].parse::<f64>().unwrap() / 1024.0;
            }
        }
        let mut all: Vec<(String, f64)> = by_name.into_iter().collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all
    }

    /// A number field of /proc/PID/status.
    fn status(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap();
        status
            .lines()
            .find(|l| l.split(':').next() == Some(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: SIGTERM to the agent this benchmark started; it stops its replicas.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// A free port on loopback.
pub fn free_api() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
