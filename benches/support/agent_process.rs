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
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap();
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb / 1024.0
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
