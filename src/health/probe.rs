//! One probe: an HTTP request, a TCP connection or a command, bounded by a timeout. The HTTP
//! probe speaks just enough HTTP/1.1 to read a status line, so it needs no client library and
//! never follows redirects (a redirect is an answer, judged by its status).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// `GET path` on `addr`; healthy when the status is `status`.
    Http {
        /// Where the slot listens.
        addr: SocketAddr,
        /// The request path.
        path: String,
        /// The expected status.
        status: u16,
    },
    /// Healthy when `addr` accepts a connection.
    Tcp {
        /// Where the slot listens.
        addr: SocketAddr,
    },
    /// Healthy when the command exits 0.
    Exec {
        /// The program and its arguments.
        command: Vec<String>,
        /// Extra environment variables (the slot's port, say).
        env: Vec<(String, String)>,
    },
}

/// Why a probe failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Not probed yet (the deadline passed during the initial delay).
    #[error("not probed yet")]
    NotRun,
    /// The probe took longer than its timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection was refused or broke.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The HTTP answer had another status.
    #[error("GET {path} answered {got}, expected {expected}")]
    Status {
        /// The path.
        path: String,
        /// The status received.
        got: u16,
        /// The status expected.
        expected: u16,
    },
    /// The answer was not HTTP.
    #[error("GET {path} did not answer HTTP")]
    NotHttp {
        /// The path.
        path: String,
    },
    /// The command failed to start, or exited non-zero.
    #[error("`{command}` {reason}")]
    Exec {
        /// The command, as written.
        command: String,
        /// What happened.
        reason: String,
    },
}

impl Probe {
    /// Probes once, within `timeout` (a command still running then is killed).
    pub async fn run(&self, timeout: Duration) -> Result<(), ProbeError> {
        match tokio::time::timeout(timeout, self.attempt()).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::Timeout(timeout)),
        }
    }

    async fn attempt(&self) -> Result<(), ProbeError> {
        match self {
            Probe::Tcp { addr } => connect(*addr).await.map(drop),
            Probe::Http { addr, path, status } => {
                let mut stream = connect(*addr).await?;
                let request = format!(
                    "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: plumb-health\r\nConnection: close\r\n\r\n"
                );
                let broken = |e: std::io::Error| ProbeError::Connect {
                    addr: *addr,
                    reason: e.to_string(),
                };
                stream.write_all(request.as_bytes()).await.map_err(broken)?;
                // The status line is all that is judged; read at most a small head.
                let mut head = vec![0u8; 256];
                let mut filled = 0;
                while filled < head.len() && !head[..filled].contains(&b'\n') {
                    let n = stream.read(&mut head[filled..]).await.map_err(broken)?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                let line = String::from_utf8_lossy(&head[..filled]);
                let got = line
                    .strip_prefix("HTTP/1.")
                    .and_then(|rest| rest.get(2..5))
                    .and_then(|code| code.parse::<u16>().ok())
                    .ok_or_else(|| ProbeError::NotHttp { path: path.clone() })?;
                if got == *status {
                    Ok(())
                } else {
                    Err(ProbeError::Status {
                        path: path.clone(),
                        got,
                        expected: *status,
                    })
                }
            }
            Probe::Exec { command, env } => {
                let shown = command.join(" ");
                let Some((program, args)) = command.split_first() else {
                    return Err(ProbeError::Exec {
                        command: shown,
                        reason: "is empty".to_owned(),
                    });
                };
                // Like the replica it checks: a minimal environment (none of the agent's
                // secrets), its own process group so a timeout kills what it started too.
                let mut child = tokio::process::Command::new(program)
                    .args(args)
                    .env_clear()
                    .envs(crate::target::local::process::inherited())
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .process_group(0)
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| ProbeError::Exec {
                        command: shown.clone(),
                        reason: format!("cannot start: {e}"),
                    })?;
                let group = GroupGuard(child.id().unwrap_or_default());
                let status = child.wait().await.map_err(|e| ProbeError::Exec {
                    command: shown.clone(),
                    reason: e.to_string(),
                })?;
                drop(group);
                if status.success() {
                    Ok(())
                } else {
                    Err(ProbeError::Exec {
                        command: shown,
                        reason: format!("exited with {status}"),
                    })
                }
            }
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, ProbeError> {
    TcpStream::connect(addr).await.map_err(|e| ProbeError::Connect {
        addr,
        reason: e.to_string(),
    })
}

/// Kills a probe's process group when the probe ends or is abandoned at its timeout.
struct GroupGuard(u32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        crate::target::local::process::signal_group(self.0, libc::SIGKILL);
    }
}
