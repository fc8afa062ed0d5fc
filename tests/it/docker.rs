//! A real Docker Engine for the compose tests: the one `PLUMB_TEST_DOCKER_HOST` names, or else a
//! private `dockerd` this test process starts on its own socket, data root and exec root — it
//! dies with the process (parent-death signal), so nothing outlives the run. The test image is
//! imported from a root filesystem holding the `plumb` binary under test and the libraries it
//! links, nothing else (no registry is needed).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

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
    let root = tempfile::tempdir().unwrap();
    let fs = plumb::lab::image::RootFs::new(&root.path().join("fs")).unwrap();
    fs.binary(binary, inside).unwrap();
    for (path, text) in files {
        fs.file(path, text).unwrap();
    }
    for dir in dirs {
        fs.folder(dir).unwrap();
    }
    let tar = root.path().join("rootfs.tar");
    let packed = Command::new("tar")
        .args(["-C", fs.path().to_str().unwrap(), "-cf"])
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

/// Starts a private `dockerd` that dies with this process, on a unix socket and on a TCP port
/// with TLS (client certificates required).
fn start_private() -> Engine {
    let data = Path::new(env!("CARGO_TARGET_TMPDIR")).join("docker");
    // The socket and the exec root; what engines of earlier runs left (their test process,
    // and so their dockerd, is gone) is removed.
    let run = plumb::lab::run_dir("plumb-test-docker-", |_| ()).unwrap();
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
    let mut command = plumb::lab::engine::dockerd(&host, &data.join("root"), &run).unwrap();
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
    let pid = plumb::lab::spawn_tied(command).unwrap_or_else(|e| {
        panic!("cannot start dockerd ({e}): install Debian's docker.io, or set PLUMB_TEST_DOCKER_HOST")
    });
    plumb::lab::engine::answers(&host, pid, &data.join("root")).unwrap();
    Engine {
        host,
        tls: Some((tcp, certs)),
    }
}

/// A Docker Engine of one test's own, which the test may kill and start again, beside the
/// shared one (`plumb::lab::engine`: its own socket, data and runtime state, no default bridge,
/// no iptables rules, addresses of its own, so the two never meet); stopped when dropped.
pub struct OwnEngine {
    engine: plumb::lab::engine::Engine,
    /// Its address (`unix://…`), for `DOCKER_HOST`.
    pub host: String,
    dir: tempfile::TempDir,
}

impl OwnEngine {
    /// Starts one.
    pub fn start() -> OwnEngine {
        // Socket paths are short (108 bytes).
        let dir = tempfile::Builder::new()
            .prefix("plumb-own-docker-")
            .tempdir_in("/tmp")
            .unwrap();
        let engine = plumb::lab::engine::Engine::start(dir.path(), "10.213.0.0/16").unwrap();
        OwnEngine {
            host: engine.host.clone(),
            engine,
            dir,
        }
    }

    /// Kills the engine outright (SIGKILL), as a crash would, and waits until it is gone.
    pub fn kill(&self) {
        self.engine.kill().unwrap();
    }

    /// Starts the engine again over the same data.
    pub fn restart(&mut self) {
        self.engine.restart().unwrap();
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
        self.engine.stop();
    }
}
