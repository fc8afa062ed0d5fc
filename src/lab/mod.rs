//! What a machine needs to try the container targets without owning a cluster or a Docker
//! host, made of the machine's own packages: a Kubernetes node ([`cluster`]), a Docker Engine
//! of plumb's own ([`engine`]) and images made of a binary and the libraries it links
//! ([`image`]), no registry. `plumb dev-cluster`, `plumb demo --target …` and the tests use
//! them; every process they start is tied to the process that started it and dies with it.

pub mod cluster;
pub mod engine;
pub mod image;
mod node;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

/// `/tmp/{prefix}{pid}`, made for this process, after removing (with `leftover`, then the
/// directory itself) those of earlier processes that are gone. Socket paths are short (108
/// bytes), so servers that listen on one run under /tmp rather than a project's folder.
pub fn run_dir(prefix: &str, leftover: impl Fn(&Path)) -> std::io::Result<PathBuf> {
    for entry in std::fs::read_dir("/tmp")?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(prefix)
            && !Path::new("/proc").join(pid).exists()
        {
            leftover(&entry.path());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = Path::new("/tmp").join(format!("{prefix}{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Spawns `command` so that it receives SIGTERM when this process ends; returns its pid.
pub fn spawn_tied(mut command: Command) -> std::io::Result<u32> {
    // SAFETY: prctl in the child before exec; it only asks for a signal when the parent dies.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    // The parent-death signal follows the thread that spawned the child: a thread that lives as
    // long as the process spawns it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let spawned = command.spawn();
        // The child has its copies of the descriptors it was given: this process's go.
        drop(command);
        let failed = spawned.is_err();
        let _ = tx.send(spawned.map(|c| c.id()));
        if !failed {
            loop {
                std::thread::park();
            }
        }
    });
    rx.recv().expect("the spawning thread answers")
}

/// Whether a process is gone (or a zombie waiting for its parent).
pub fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z"))
}

/// A TCP port free on loopback now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot bind a loopback port")?
        .local_addr()?
        .port())
}

/// Asks `ready` every `every` until it holds, for at most `limit`; the error says what did not
/// happen (`what`).
fn wait_until(
    limit: Duration,
    every: Duration,
    what: impl Fn() -> String,
    mut ready: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if ready()? {
            return Ok(());
        }
        anyhow::ensure!(started.elapsed() < limit, "{}", what());
        std::thread::sleep(every);
    }
}

/// Runs `command`; its standard output, or an error with its standard error.
fn output(mut command: Command) -> anyhow::Result<String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let done = command.output().with_context(|| format!("cannot run {program}"))?;
    anyhow::ensure!(
        done.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&done.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&done.stdout).into_owned())
}

/// A certificate authority (`ca.pem`), a server certificate for 127.0.0.1 (`server.pem`,
/// `server-key.pem`) and a client certificate (`client.pem`, `client-key.pem`, and the names
/// `DOCKER_CERT_PATH` expects: `cert.pem`, `key.pem`), made with `openssl` in `dir`, valid for
/// 30 days.
pub fn certificates(dir: &std::path::Path) -> anyhow::Result<()> {
    let run = |args: &[&str]| {
        let mut command = Command::new("openssl");
        command.args(args).current_dir(dir);
        output(command).map(drop).context("openssl (package openssl)")
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n",
    )?;
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage = clientAuth\n")?;
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=plumb local CA",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    ])?;
    for (name, cn) in [("server", "127.0.0.1"), ("client", "plumb")] {
        let (key, csr, ext, pem) = (
            format!("{name}-key.pem"),
            format!("{name}.csr"),
            format!("{name}.ext"),
            format!("{name}.pem"),
        );
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ])?;
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ])?;
    }
    std::fs::copy(dir.join("client.pem"), dir.join("cert.pem"))?;
    std::fs::copy(dir.join("client-key.pem"), dir.join("key.pem"))?;
    Ok(())
}
