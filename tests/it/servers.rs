//! Real servers on loopback shared by the tests and the benchmarks: a `git daemon`, and the
//! HMAC signature forges put on webhooks.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};

/// A `git daemon` serving the repositories under a folder on a free loopback port.
pub struct Daemon {
    child: Child,
    pub port: u16,
}

impl Daemon {
    /// Serves every repository under `base` (`git://127.0.0.1:port/<name>`).
    pub fn serve(base: &Path) -> Daemon {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("git")
            .args(["daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("git daemon starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, port }
    }
}

impl Drop for Daemon {
    /// `git daemon` runs `git-daemon` as a child: stop the whole process group.
    fn drop(&mut self) {
        // SAFETY: kill(2) on the group this process created; no memory is involved.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The hex HMAC-SHA256 of `body` with `secret`, as GitHub, Gitea and Bitbucket sign webhooks.
#[allow(dead_code)]
pub fn hmac_sha256_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}
