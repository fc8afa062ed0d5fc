//! A real Docker Engine for the compose tests: the one `PLUMB_TEST_DOCKER_HOST` names, or else a
//! private `dockerd` this test process starts on its own socket, data root and exec root — it
//! dies with the process (parent-death signal), so nothing outlives the run. The test image is
//! imported from a root filesystem holding the `plumb` binary under test and the libraries it
//! links, nothing else (no registry is needed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The engine's address (`unix://…`), for `DOCKER_HOST`.
pub fn host() -> &'static str {
    &engine().host
}

/// The private engine's TCP listener with TLS: its address (`tcp://127.0.0.1:…`) and the
/// folder of the client's certificates (`ca.pem`, `cert.pem`, `key.pem`, for
/// `DOCKER_CERT_PATH`). The engine named by `PLUMB_TEST_DOCKER_HOST` has none.
pub fn tls() -> Option<&'static (String, PathBuf)> {
    engine().tls.as_ref()
}

struct Engine {
    host: String,
    tls: Option<(String, PathBuf)>,
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| match std::env::var("PLUMB_TEST_DOCKER_HOST") {
        Ok(host) if !host.is_empty() => Engine { host, tls: None },
        _ => start_private(),
    })
}

/// Runs the `docker` CLI against the engine; panics with its output when it fails.
pub fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", host())
        .output()
        .expect("the docker CLI runs (package docker.io)");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The image running `plumb example-app` as `/plumb example-app`, imported once per binary.
pub fn example_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        rootfs_image(
            "plumb-example",
            Path::new(env!("CARGO_BIN_EXE_plumb")),
            "/plumb",
            &[],
            &[],
        )
    })
}

/// An nginx image made of this machine's nginx (Debian's `nginx-light`) and what it links.
pub fn nginx_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let files = [
            (
                "etc/passwd",
                "root:x:0:0::/root:/nonexistent\nnobody:x:65534:65534::/nonexistent:/nonexistent\n",
            ),
            ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ];
        let dirs = ["tmp", "run", "var/log/nginx", "var/lib/nginx"];
        rootfs_image(
            "plumb-nginx",
            Path::new("/usr/sbin/nginx"),
            "/usr/sbin/nginx",
            &files,
            &dirs,
        )
    })
}

/// An image whose root file system holds `binary` at `inside`, the libraries it links, `files`
/// (path, content) and empty `dirs`; imported once per binary (its size and time in the tag).
fn rootfs_image(name: &str, binary: &Path, inside: &str, files: &[(&str, &str)], dirs: &[&str]) -> String {
    let meta = std::fs::metadata(binary).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (see .ci/run for the packages the tests need)",
            binary.display()
        )
    });
    let stamp = format!(
        "{}-{}",
        meta.len(),
        meta.modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    let image = format!("{name}:{stamp}");
    if !docker(&["images", "-q", &image]).trim().is_empty() {
        return image;
    }
    let root = root_filesystem(binary, inside, files, dirs);
    let fs = root.path().join("fs");
    let tar = root.path().join("rootfs.tar");
    let packed = Command::new("tar")
        .args(["-C", fs.to_str().unwrap(), "-cf"])
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(packed.success());
    docker(&[
        "import",
        "--change",
        "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        tar.to_str().unwrap(),
        &image,
    ]);
    image
}

/// A root file system, in `fs` under the folder returned, holding `binary` at `inside`, the
/// libraries it links, `files` (path, content) and empty `dirs` (writable by all); the
/// Kubernetes node's example image is made of the same (`control_plane`).
pub fn root_filesystem(binary: &Path, inside: &str, files: &[(&str, &str)], dirs: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let fs = root.path().join("fs");
    let place = |from: &Path, to: &str| {
        let target = fs.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(from, &target).unwrap();
    };
    place(binary, inside);
    for library in libraries(binary) {
        place(&library, library.to_str().unwrap());
    }
    for (path, text) in files {
        let target = fs.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, text).unwrap();
    }
    for dir in dirs {
        let target = fs.join(dir);
        std::fs::create_dir_all(&target).unwrap();
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    }
    root
}

/// The shared libraries `binary` loads, as `ldd` resolves them.
fn libraries(binary: &Path) -> Vec<PathBuf> {
    let output = Command::new("ldd").arg(binary).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Starts a private `dockerd` that dies with this process, on a unix socket and on a TCP port
/// with TLS (client certificates required).
fn start_private() -> Engine {
    let data = Path::new(env!("CARGO_TARGET_TMPDIR")).join("docker");
    // Socket paths are short (108 bytes): the socket and the exec root live under /tmp.
    let run = Path::new("/tmp").join(format!("plumb-test-docker-{}", std::process::id()));
    // What engines of earlier runs left (their test process, and so their dockerd, is gone).
    for entry in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("plumb-test-docker-")
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    std::fs::create_dir_all(&run).unwrap();
    let socket = run.join("docker.sock");
    let host = format!("unix://{}", socket.display());
    let certs = run.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    crate::tls::certificates(&certs);
    let tcp = format!(
        "tcp://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let mut command = dockerd(&host, &data.join("root"), &run);
    command
        .arg("--host")
        .arg(&tcp)
        .arg("--tlsverify")
        .arg("--tlscacert")
        .arg(certs.join("ca.pem"))
        .arg("--tlscert")
        .arg(certs.join("server.pem"))
        .arg("--tlskey")
        .arg(certs.join("server-key.pem"));
    let pid = crate::daemon::spawn_tied(command).unwrap_or_else(|e| {
        panic!("cannot start dockerd ({e}): install Debian's docker.io, or set PLUMB_TEST_DOCKER_HOST")
    });
    answers(&host, pid, &data.join("root"));
    Engine {
        host,
        tls: Some((tcp, certs)),
    }
}

/// `dockerd` on socket `host`, its data under `data` (and its log, `dockerd.log`), its runtime
/// state under `run`.
fn dockerd(host: &str, data: &Path, run: &Path) -> Command {
    std::fs::create_dir_all(data).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join("dockerd.log"))
        .unwrap();
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
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    command
}

/// Waits (up to 60 s) until the engine at `host` (process `pid`, data under `data`) answers.
fn answers(host: &str, pid: u32, data: &Path) {
    let started = Instant::now();
    loop {
        let ping = Command::new("docker")
            .args(["version", "--format", "{{.Server.APIVersion}}"])
            .env("DOCKER_HOST", host)
            .output();
        if ping.is_ok_and(|o| o.status.success()) {
            return;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(data.join("dockerd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!(
                "dockerd (pid {pid}) did not answer within 60 s; the end of {}:\n{}",
                data.join("dockerd.log").display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Docker Engine of one test's own, which the test may kill and start again, beside the
/// shared one: its own socket, data and runtime state, no default bridge, no iptables rules
/// (published ports go through `docker-proxy`) and addresses of its own, so the two never meet.
pub struct OwnEngine {
    /// Its address (`unix://…`), for `DOCKER_HOST`.
    pub host: String,
    dir: tempfile::TempDir,
    pid: u32,
}

impl OwnEngine {
    /// Starts one.
    pub fn start() -> OwnEngine {
        // Socket paths are short (108 bytes).
        let dir = tempfile::Builder::new()
            .prefix("plumb-own-docker-")
            .tempdir_in("/tmp")
            .unwrap();
        let host = format!("unix://{}", dir.path().join("docker.sock").display());
        let mut engine = OwnEngine { host, dir, pid: 0 };
        engine.spawn();
        engine
    }

    fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        let mut command = dockerd(&self.host, &data, self.dir.path());
        command.args([
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--default-address-pool",
            "base=10.213.0.0/16,size=24",
        ]);
        self.pid = crate::daemon::spawn_tied(command).expect("dockerd starts (package docker.io)");
        answers(&self.host, self.pid, &data);
    }

    /// Kills the engine outright (SIGKILL), as a crash would, and waits until it is gone.
    pub fn kill(&self) {
        // SAFETY: kill(2) on the dockerd this engine started.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        let started = Instant::now();
        while !crate::daemon::gone(self.pid) {
            assert!(started.elapsed() < Duration::from_secs(30), "dockerd outlived SIGKILL");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The containerd it started dies with it (parent-death signal). Each may stay a zombie
        // for a while, which a new dockerd would take for a running one: once they are gone,
        // their pid files go, as after a reboot.
        let containerd = self.dir.path().join("exec/containerd/containerd.pid");
        if let Some(pid) = std::fs::read_to_string(&containerd)
            .ok()
            .and_then(|p| p.trim().parse().ok())
        {
            let started = Instant::now();
            while !crate::daemon::gone(pid) {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "containerd outlived dockerd"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_file(containerd);
        let _ = std::fs::remove_file(self.dir.path().join("docker.pid"));
    }

    /// Starts the engine again over the same data.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Runs the `docker` CLI against this engine.
    pub fn docker(&self, args: &[&str]) -> String {
        let output = Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .output()
            .expect("the docker CLI runs");
        assert!(
            output.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Copies `image` over from the shared engine.
    pub fn load(&self, image: &str) {
        let archive = self.dir.path().join("image.tar");
        docker(&["save", "--output", archive.to_str().unwrap(), image]);
        self.docker(&["load", "--input", archive.to_str().unwrap()]);
        std::fs::remove_file(archive).unwrap();
    }
}

impl Drop for OwnEngine {
    fn drop(&mut self) {
        // Its containers go first; then the engine stops, taking its containerd with it.
        let all = Command::new("docker")
            .args(["ps", "-aq"])
            .env("DOCKER_HOST", &self.host)
            .output();
        if let Ok(all) = all {
            let ids: Vec<String> = String::from_utf8_lossy(&all.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .env("DOCKER_HOST", &self.host)
                    .output();
            }
        }
        // SAFETY: kill(2) on the dockerd this engine started.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let started = Instant::now();
        while !crate::daemon::gone(self.pid) && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // dockerd leaves its data root mounted over itself, and network namespaces mounted
        // in its runtime state: they go before the folder.
        for mounted in ["data", "exec"] {
            let _ = Command::new("umount")
                .args(["--recursive", "--lazy"])
                .arg(self.dir.path().join(mounted))
                .output();
        }
    }
}
