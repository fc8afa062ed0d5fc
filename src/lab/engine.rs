//! A Docker Engine of plumb's own: `dockerd` on its own socket, data root and exec root, which
//! leaves the host's networking alone — no default bridge, no iptables rules, addresses from a
//! pool of its own, published ports through `docker-proxy` — so it runs beside any other engine
//! of the machine. It dies with the process that started it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

/// A private engine.
pub struct Engine {
    /// Its address (`unix://…`), for `DOCKER_HOST`.
    pub host: String,
    dir: PathBuf,
    pool: &'static str,
    pid: u32,
}

impl Engine {
    /// Starts one in `dir` (its socket path must stay under 108 bytes), its networks' addresses
    /// from `pool` (`10.213.0.0/16`: two engines running at once need pools of their own), and
    /// waits until it answers.
    pub fn start(dir: &Path, pool: &'static str) -> anyhow::Result<Engine> {
        std::fs::create_dir_all(dir)?;
        let host = format!("unix://{}", dir.join("docker.sock").display());
        let mut engine = Engine {
            host,
            dir: dir.to_owned(),
            pool,
            pid: 0,
        };
        engine.spawn()?;
        Ok(engine)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let data = self.dir.join("data");
        let mut command = dockerd(&self.host, &data, &self.dir)?;
        command.args([
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--default-address-pool",
            &format!("base={},size=24", self.pool),
        ]);
        self.pid = super::spawn_tied(command).context("cannot start dockerd (package docker.io)")?;
        answers(&self.host, self.pid, &data)
    }

    /// Kills the engine outright (SIGKILL), as a crash would, and waits until it is gone.
    pub fn kill(&self) -> anyhow::Result<()> {
        // SAFETY: kill(2) on the dockerd this engine started.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        gone_within(self.pid, "dockerd")?;
        // The containerd it started dies with it (parent-death signal). Each may stay a zombie
        // for a while, which a new dockerd would take for a running one: once they are gone,
        // their pid files go, as after a reboot.
        let containerd = self.dir.join("exec/containerd/containerd.pid");
        if let Some(pid) = std::fs::read_to_string(&containerd)
            .ok()
            .and_then(|p| p.trim().parse().ok())
        {
            gone_within(pid, "containerd")?;
        }
        let _ = std::fs::remove_file(containerd);
        let _ = std::fs::remove_file(self.dir.join("docker.pid"));
        Ok(())
    }

    /// Starts the engine again over the same data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.spawn()
    }

    /// Its folder.
    pub fn folder(&self) -> &Path {
        &self.dir
    }

    /// Removes every container, stops the engine and unmounts what it left mounted.
    pub fn stop(&self) {
        let docker = |args: &[&str]| {
            Command::new("docker")
                .args(args)
                .env("DOCKER_HOST", &self.host)
                .output()
        };
        if let Ok(all) = docker(&["ps", "-aq"]) {
            let ids: Vec<String> = String::from_utf8_lossy(&all.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = docker(&args);
            }
        }
        // SAFETY: kill(2) on the dockerd this engine started.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let _ = super::wait_until(Duration::from_secs(30), Duration::from_millis(50), String::new, || {
            Ok(super::gone(self.pid))
        });
        // dockerd leaves its data root mounted over itself, and network namespaces mounted
        // in its runtime state: they go before the folder.
        for mounted in ["data", "exec"] {
            let _ = Command::new("umount")
                .args(["--recursive", "--lazy"])
                .arg(self.dir.join(mounted))
                .output();
        }
    }
}

fn gone_within(pid: u32, name: &str) -> anyhow::Result<()> {
    super::wait_until(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || format!("{name} (pid {pid}) outlived its end"),
        || Ok(super::gone(pid)),
    )
}

/// `dockerd` on socket `host`, its data under `data` (and its log, `dockerd.log`), its runtime
/// state under `run`.
pub fn dockerd(host: &str, data: &Path, run: &Path) -> anyhow::Result<Command> {
    std::fs::create_dir_all(data)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join("dockerd.log"))?;
    let mut command = Command::new("dockerd");
    command
        .arg("--host")
        .arg(host)
        .arg("--data-root")
        .arg(data)
        .arg("--exec-root")
        .arg(run.join("exec"))
        .arg("--pidfile")
        .arg(run.join("docker.pid"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(command)
}

/// Waits (up to 60 s) until the engine at `host` (process `pid`, data under `data`) answers.
pub fn answers(host: &str, pid: u32, data: &Path) -> anyhow::Result<()> {
    super::wait_until(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let log = std::fs::read_to_string(data.join("dockerd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            format!(
                "dockerd (pid {pid}) did not answer within 60 s; the end of {}:\n{}",
                data.join("dockerd.log").display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        },
        || {
            let ping = Command::new("docker")
                .args(["version", "--format", "{{.Server.APIVersion}}"])
                .env("DOCKER_HOST", host)
                .output();
            Ok(ping.is_ok_and(|o| o.status.success()))
        },
    )
}
