//! A Kubernetes cluster for the tests and benchmarks, started once per process and dying with
//! it: `plumb::lab::cluster` — a control plane on loopback and one real node, `localhost` — with
//! the example image imported from the `plumb` binary under test (no registry). The Kubernetes
//! binaries and the sandbox's `pause` are built once by `scripts/build-kube-control-plane`.
//!
//! No kube-proxy runs: Service cluster IPs do not route; pod IPs do, from the host and from other
//! pods. The node's pods and cgroups and `/var/log/pods` are the machine's: one node per machine
//! at a time (`plumb::lab::cluster::lock_machine`), shared with `plumb dev-cluster`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use plumb::lab::cluster::{self, Server};

/// The kubeconfig of the tests' control plane (its node Ready).
pub fn kubeconfig() -> &'static Path {
    &cluster().kubeconfig
}

/// The image running `plumb example-app` as `/plumb example-app` on the node (the binary under
/// test and the libraries it links); present on the node, never pulled.
pub fn example_image() -> &'static str {
    &cluster().example_image
}

struct Cluster {
    kubeconfig: PathBuf,
    example_image: String,
    /// The API server, for a test that stops it and starts it again.
    apiserver: Mutex<Server>,
    /// etcd's process, for a test that freezes it.
    etcd: u32,
    /// Held while this process's node may run, and by its cleanup until that is done.
    _machine: std::fs::File,
}

/// How the tests of this process share the cluster: every test that uses it holds [`shared`]
/// for its whole run, a test that stops parts of it holds [`exclusive`]. Fair: once a test
/// asks for it alone, later ones wait behind it.
static SHARING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A share of the cluster, for a test's whole run: no test stops a part of it meanwhile.
pub async fn shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    SHARING.read().await
}

/// [`shared`], for a test that runs outside the async runtime.
pub fn shared_blocking() -> tokio::sync::RwLockReadGuard<'static, ()> {
    SHARING.blocking_read()
}

/// The cluster to this test alone, once every other test using it is done.
pub async fn exclusive() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    SHARING.write().await
}

/// Kills the API server outright (SIGKILL), as a crash would; what it stored stays in etcd.
/// Hold [`exclusive`].
pub fn kill_apiserver() {
    let pid = cluster().apiserver.lock().unwrap_or_else(PoisonError::into_inner).pid;
    // SAFETY: kill(2) on the API server this process started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let started = Instant::now();
    while !plumb::lab::gone(pid) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "kube-apiserver outlived SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Freezes etcd (SIGSTOP) or lets it go on (SIGCONT): the API server's reads and writes hang
/// meanwhile, as with a stalled disk or a lost quorum. Hold [`exclusive`].
pub fn freeze_etcd(frozen: bool) {
    let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
    // SAFETY: kill(2) on the etcd this process started.
    unsafe { libc::kill(cluster().etcd as i32, signal) };
}

/// Starts the API server again, as it was, and waits until it is ready. Hold [`exclusive`].
pub fn restart_apiserver() {
    let cluster = cluster();
    cluster
        .apiserver
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .spawn()
        .unwrap();
    cluster::apiserver_ready(&cluster.kubeconfig).unwrap();
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(start)
}

/// Starts the cluster in a folder of this process's, once the machine's node is free (up to 20
/// minutes), with a cleanup tied to this process; returns once the node takes pods.
fn start() -> Cluster {
    let bin = cluster::binaries();
    let missing = cluster::missing(&bin);
    assert!(
        missing.is_empty(),
        "no {} in {}: run scripts/build-kube-control-plane (.ci/run does)",
        missing.join(", "),
        bin.display()
    );
    let machine = cluster::lock_machine(Duration::from_secs(1200)).unwrap();
    // What the clusters of earlier runs left: their test process is gone, and so are their
    // servers, but their pods' shims outlive containerd; a cleanup tied to each process ran when
    // it ended, and runs again here in case it could not.
    let dir = plumb::lab::run_dir("plumb-test-kube-", |left| {
        let _ = cluster::clean_up(left);
    })
    .unwrap();
    // The cleanup inherits the machine's lock: the next test process starts its node only once
    // this one's is cleaned up.
    cluster::reaper(&dir, &machine).unwrap();
    let plumb = Path::new(env!("CARGO_BIN_EXE_plumb"));
    let example_image = plumb::lab::image::stamped("localhost/plumb-example", plumb).unwrap();
    let started = cluster::start(&dir, &bin, (plumb, &example_image)).unwrap_or_else(|e| panic!("{e:#}"));
    Cluster {
        kubeconfig: started.kubeconfig,
        example_image,
        apiserver: Mutex::new(started.apiserver),
        etcd: started.etcd,
        _machine: machine,
    }
}

/// `kubectl` against the tests' control plane; its output, or a panic with its error.
pub fn kubectl(args: &[&str]) -> String {
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
