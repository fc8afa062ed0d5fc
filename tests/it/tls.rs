//! TLS for the tests: a certificate authority with a server certificate for 127.0.0.1 and a
//! client certificate, made with `openssl`; and nginx terminating TLS in front of a plain HTTP
//! test server, so clients meet a real TLS server.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A certificate authority, a server certificate for 127.0.0.1 and a client certificate, made
/// with `openssl` in `dir` (`plumb::lab::certificates`).
pub fn certificates(dir: &Path) {
    plumb::lab::certificates(dir).unwrap();
}

/// nginx on loopback serving TLS with the certificates in `certs`, forwarding to `backend`;
/// stopped when dropped.
pub struct Terminator {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Terminator {
    /// Starts nginx (Debian's `nginx-light`) in front of `backend`.
    pub fn start(certs: &Path, backend: SocketAddr) -> Terminator {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path().display();
        let c = certs.display();
        let config = format!(
            "daemon off;\nworker_processes 1;\nuser root root;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {c}/server.pem;\n    ssl_certificate_key {c}/server-key.pem;\n    \
             client_max_body_size 0;\n    location / {{\n      proxy_pass http://{backend};\n      proxy_http_version 1.1;\n      \
             proxy_request_buffering off;\n      proxy_buffering off;\n    }}\n  }}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), config).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx runs (package nginx-light)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not listen: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Terminator { child, addr, _dir: dir }
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        // SAFETY: SIGQUIT to the nginx this test started: a graceful stop of it and its workers.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let _ = self.child.wait();
    }
}
