//! A Kubernetes cluster for the tests and benchmarks, started once per process and dying with
//! it: a control plane on loopback — etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler 1.20, with an admin kubeconfig — and one real node, `localhost`: a kubelet on a
//! private containerd (CRI, runc, cgroupfs), its pods on a CNI bridge, the example image
//! imported from the `plumb` binary under test (no registry). The Kubernetes binaries and the
//! sandbox's `pause` are built once by `scripts/build-kube-control-plane`.
//!
//! No kube-proxy runs (it would rewrite the host's iptables, which a Docker Engine uses too):
//! Service cluster IPs do not route; pod IPs do, from the host and from other pods. The node's
//! pods and cgroups and `/var/log/pods` are the machine's: one node per machine at a time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The kubeconfig of the tests' control plane (its node Ready).
pub fn kubeconfig() -> &'static Path {
    &cluster().kubeconfig
}

/// The image running `plumb example-app` as `/plumb example-app` on the node (the binary under
/// test and the libraries it links); present on the node, never pulled.
pub fn example_image() -> &'static str {
    &cluster().example_image
}

/// The name the node registers under: the API server reaches a node's kubelet at its name
/// first, and `localhost` takes logs, exec and port-forward to the kubelet on 127.0.0.1.
pub const NODE: &str = "localhost";

/// The sandbox image of every pod, imported with the example image.
const PAUSE_IMAGE: &str = "localhost/plumb-pause:1";

/// The bridge the node's pods hang from (`scripts/kube-node/cleanup` deletes it).
const BRIDGE: &str = "plumbcni0";

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

/// The lock that gives one test process at a time the machine's node: another process's node
/// would share the bridge, the pods' subnet and the kubelet's cgroups (each kubelet kills the
/// pods it does not know), and its cleanup would take them away. Waits for it, up to 20 minutes.
fn machine_lock() -> std::fs::File {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = Path::new("/tmp/plumb-test-kube.lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let started = Instant::now();
    let mut said = false;
    // SAFETY: flock on a descriptor this function owns.
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let _ = file.rewind();
        if !said {
            eprintln!(
                "waiting for the Kubernetes node of test process {} to end ({})",
                holder.trim(),
                path.display()
            );
            said = true;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1200),
            "the Kubernetes node of test process {} still runs after 20 minutes ({})",
            holder.trim(),
            path.display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    file.set_len(0).unwrap();
    write!(file, "{}", std::process::id()).unwrap();
    file
}

/// A server of the control plane: how it was started, and its process.
struct Server {
    program: PathBuf,
    args: Vec<String>,
    /// Where its logs go (`<name>.log`, `<name>.err.log`; appended to by each start).
    logs: PathBuf,
    name: &'static str,
    pid: u32,
}

impl Server {
    fn spawn(&mut self) {
        let log = |name: String| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.logs.join(name))
                .unwrap()
        };
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log(format!("{}.log", self.name)))
            .stderr(log(format!("{}.err.log", self.name)));
        self.pid = crate::daemon::spawn_tied(command).unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
    }
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
    while !crate::daemon::gone(pid) {
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
    cluster.apiserver.lock().unwrap_or_else(PoisonError::into_inner).spawn();
    apiserver_ready(&cluster.kubeconfig);
}

/// Waits (up to 90 s) until the API server behind `config` is ready.
fn apiserver_ready(config: &Path) {
    let started = Instant::now();
    loop {
        let ready = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(config)
            .args(["get", "--raw", "/readyz"])
            .output();
        if ready.is_ok_and(|o| o.status.success()) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "kube-apiserver did not become ready; see kube-apiserver.err.log beside {}",
            config.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(start)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the control plane, then the node; returns once the node takes pods.
fn start() -> Cluster {
    // Where scripts/build-kube-control-plane put them (PLUMB_KUBE_CACHE, as for the script).
    let cache = std::env::var_os("PLUMB_KUBE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/plumb-kube"));
    let bin = cache.join("bin");
    for binary in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "pause",
    ] {
        assert!(
            bin.join(binary).exists(),
            "no {binary} in {}: run scripts/build-kube-control-plane (.ci/run does)",
            bin.display()
        );
    }
    let machine = machine_lock();
    let dir = Path::new("/tmp").join(format!("plumb-test-kube-{}", std::process::id()));
    // What the clusters of earlier runs left: their test process is gone, and so are their
    // servers, but their pods' shims outlive containerd; a cleanup tied to each process ran when
    // it ended, and runs again here in case it could not.
    let cleanup = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kube-node/cleanup");
    for entry in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("plumb-test-kube-")
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = Command::new("bash").arg(&cleanup).arg(entry.path()).status();
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    crate::tls::certificates(&certs);
    let openssl = |args: &[&str]| {
        let done = Command::new("openssl").args(args).current_dir(&certs).output().unwrap();
        assert!(done.status.success(), "openssl {args:?}");
    };
    openssl(&["genrsa", "-out", "sa.key", "2048"]);
    openssl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
    std::fs::write(
        dir.join("tokens.csv"),
        "plumb-test-admin-token,admin,admin,system:masters\n",
    )
    .unwrap();
    let log = |name: &str| std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let tied = |mut command: Command, name: &str| {
        command
            .stdin(Stdio::null())
            .stdout(log(name))
            .stderr(log(&format!("{name}.err")));
        crate::daemon::spawn_tied(command).unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
    };

    // What the node changes on the host, for the cleanup to undo when this process ends: the
    // sysctls the kubelet sets at start, the host folders and cgroups it makes.
    let sysctls: String = ["vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"]
        .iter()
        .filter_map(|key| {
            let value = std::fs::read_to_string(Path::new("/proc/sys").join(key)).ok()?;
            Some(format!("{key} {}\n", value.trim()))
        })
        .collect();
    std::fs::write(dir.join("sysctl.orig"), sysctls).unwrap();
    let mut made = String::new();
    for folder in ["/var/log/pods", "/var/log/containers", "/var/lib/cni"] {
        if !Path::new(folder).exists() {
            made.push_str(folder);
            made.push('\n');
        }
    }
    if !Path::new("/sys/fs/cgroup/memory/kubepods").exists() {
        made.push_str("kubepods\n");
    }
    let firewall = Command::new("iptables").args(["-S", "CNI-FORWARD"]).output();
    if !firewall.is_ok_and(|o| o.status.success()) {
        made.push_str("iptables-cni\n");
    }
    std::fs::write(dir.join("made-by-node"), made).unwrap();
    // The cleanup inherits the machine's lock: the next test process starts its node only once
    // this one's is cleaned up.
    let lock = std::os::fd::AsRawFd::as_raw_fd(&machine);
    let mut reaper = Command::new("bash");
    reaper
        .arg(&cleanup)
        .arg("--on-term")
        .arg(&dir)
        .env("PLUMB_NODE_LOCK_FD", lock.to_string());
    // SAFETY: fcntl in the child before exec, on a descriptor open in the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut reaper, move || {
            libc::fcntl(lock, libc::F_SETFD, 0);
            Ok(())
        });
    }
    tied(reaper, "cleanup");

    let (client, peer, secure) = (free_port(), free_port(), free_port());
    let mut etcd = Command::new("etcd");
    etcd.arg("--data-dir")
        .arg(dir.join("etcd"))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"));
    let etcd = tied(etcd, "etcd");

    let c = |f: &str| certs.join(f).display().to_string();
    let args = vec![
        format!("--etcd-servers=http://127.0.0.1:{client}"),
        "--bind-address=127.0.0.1".to_owned(),
        "--advertise-address=127.0.0.1".to_owned(),
        format!("--secure-port={secure}"),
        "--insecure-port=0".to_owned(),
        format!("--cert-dir={}", dir.join("apiserver").display()),
        format!("--tls-cert-file={}", c("server.pem")),
        format!("--tls-private-key-file={}", c("server-key.pem")),
        format!("--client-ca-file={}", c("ca.pem")),
        format!("--token-auth-file={}", dir.join("tokens.csv").display()),
        format!("--service-account-key-file={}", c("sa.pub")),
        format!("--service-account-signing-key-file={}", c("sa.key")),
        "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
        "--authorization-mode=RBAC".to_owned(),
        "--disable-admission-plugins=ServiceAccount".to_owned(),
        "--service-cluster-ip-range=10.96.0.0/16".to_owned(),
    ];
    let mut apiserver = Server {
        program: bin.join("kube-apiserver"),
        args,
        logs: dir.clone(),
        name: "kube-apiserver",
        pid: 0,
    };
    apiserver.spawn();

    let config = dir.join("kubeconfig");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{secure}\n    \
             certificate-authority: {}\nusers:\n- name: admin\n  user:\n    token: plumb-test-admin-token\n\
             contexts:\n- name: test\n  context: {{cluster: test, user: admin}}\ncurrent-context: test\n",
            c("ca.pem")
        ),
    )
    .unwrap();

    // Meanwhile, containerd and the images the node runs.
    let containerd = start_containerd(&dir, &tied);
    let example_image = import_images(&dir, &bin, &containerd);

    apiserver_ready(&config);
    // nodelifecycle lifts the not-ready taint the API server puts on a node it registers (and
    // marks the node's pods unready should the kubelet stop reporting); endpoint fills the
    // Services' Endpoints.
    let mut manager = Command::new(bin.join("kube-controller-manager"));
    manager.arg(format!("--kubeconfig={}", config.display())).args([
        "--leader-elect=false",
        "--controllers=deployment,replicaset,job,garbagecollector,namespace,nodelifecycle,endpoint",
        "--port=0",
        "--secure-port=0",
        "--concurrent-deployment-syncs=5",
    ]);
    tied(manager, "kube-controller-manager");
    let mut scheduler = Command::new(bin.join("kube-scheduler"));
    scheduler.arg(format!("--kubeconfig={}", config.display())).args([
        "--leader-elect=false",
        "--port=0",
        "--secure-port=0",
    ]);
    tied(scheduler, "kube-scheduler");

    start_kubelet(&dir, &bin, &config, &containerd, &tied);
    Cluster {
        kubeconfig: config,
        example_image,
        apiserver: Mutex::new(apiserver),
        etcd,
        _machine: machine,
    }
}

/// Writes containerd's configuration and the pods' network under `dir`, starts containerd and
/// waits until its CRI plugin serves; returns its socket.
fn start_containerd(dir: &Path, tied: &dyn Fn(Command, &str) -> u32) -> PathBuf {
    let root = dir.join("containerd");
    let socket = root.join("containerd.sock");
    let net = dir.join("cni/net.d");
    std::fs::create_dir_all(&net).unwrap();
    let d = |sub: &str| root.join(sub).display().to_string();
    // The runtime root is what the cleanup asks runc about, the pods' network namespaces are
    // mounted under the state folder, where the cleanup finds them. This host gives no process
    // CAP_SYS_RESOURCE: runc cannot set the -998 oom_score_adj the kubelet asks for a sandbox
    // ("can't get final child's PID from pipe"), unless containerd clamps it to its own.
    std::fs::write(
        dir.join("containerd.toml"),
        format!(
            r#"version = 2
root = "{root}"
state = "{state}"
oom_score = 0

[grpc]
  address = "{socket}"

[ttrpc]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{opt}"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    netns_mounts_under_state_dir = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "{runc}"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{net}"
      max_conf_num = 1
"#,
            root = d("root"),
            state = d("state"),
            socket = socket.display(),
            opt = d("opt"),
            runc = d("runc"),
            net = net.display(),
        ),
    )
    .unwrap();
    // A bridge with addresses from host-local (its leases under `dir`), no masquerading; the
    // firewall plugin lets pods' traffic through the host's FORWARD chain, which a Docker Engine
    // sets to DROP. containerd adds the loopback plugin itself.
    let network = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "plumb-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": dir.join("cni/ipam"),
                    "ranges": [[{"subnet": "10.244.0.0/24", "gateway": "10.244.0.1"}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "firewall", "backend": "iptables"},
        ],
    });
    std::fs::write(
        net.join("10-plumb-pods.conflist"),
        serde_json::to_string_pretty(&network).unwrap(),
    )
    .unwrap();
    let mut command = Command::new("containerd");
    command.arg("--config").arg(dir.join("containerd.toml"));
    let pid = tied(command, "containerd");
    let started = Instant::now();
    loop {
        let plugins = Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["plugins", "ls"])
            .output();
        if let Ok(plugins) = plugins
            && plugins.status.success()
        {
            let listed = String::from_utf8_lossy(&plugins.stdout);
            let cri = listed
                .lines()
                .find(|l| l.split_whitespace().take(2).eq(["io.containerd.grpc.v1", "cri"]));
            assert!(
                cri.is_some_and(|l| l.trim_end().ends_with("ok")),
                "containerd's CRI plugin does not serve: {cri:?}; see {}",
                dir.join("containerd.err.log").display()
            );
            return socket;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "containerd (pid {pid}) did not answer within 30 s; see {}",
            dir.join("containerd.err.log").display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Imports the sandbox image and the example image into containerd's `k8s.io` namespace (the
/// CRI's); returns the example image's name.
fn import_images(dir: &Path, bin: &Path, containerd: &Path) -> String {
    let plumb = Path::new(env!("CARGO_BIN_EXE_plumb"));
    let meta = std::fs::metadata(plumb).unwrap();
    let stamp = format!(
        "{}-{}",
        meta.len(),
        meta.modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    let example = format!("localhost/plumb-example:{stamp}");
    let pause = tempfile::tempdir().unwrap();
    std::fs::create_dir(pause.path().join("fs")).unwrap();
    std::fs::copy(bin.join("pause"), pause.path().join("fs/pause")).unwrap();
    let example_fs = crate::docker::root_filesystem(plumb, "/plumb", &[], &["tmp"]);
    for (fs, name, entrypoint) in [
        (pause.path().join("fs"), PAUSE_IMAGE, Some("/pause")),
        (example_fs.path().join("fs"), example.as_str(), None),
    ] {
        let tar = dir.join("image.tar");
        image_archive(&fs, name, entrypoint, &tar);
        let imported = Command::new("ctr")
            .arg("--address")
            .arg(containerd)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&tar)
            .output()
            .unwrap();
        assert!(
            imported.status.success(),
            "importing {name}: {}",
            String::from_utf8_lossy(&imported.stderr)
        );
        std::fs::remove_file(&tar).unwrap();
    }
    example
}

/// Writes the root file system `fs` as image `name` in `docker save`'s format to `out`: one
/// layer, a configuration, a manifest naming them.
fn image_archive(fs: &Path, name: &str, entrypoint: Option<&str>, out: &Path) {
    use sha2::Digest;
    let work = tempfile::tempdir().unwrap();
    let tar = |from: &Path, to: &Path, what: &[&str]| {
        let packed = Command::new("tar")
            .args([
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--mtime=@0",
                "-C",
            ])
            .arg(from)
            .arg("-cf")
            .arg(to)
            .args(what)
            .status()
            .unwrap();
        assert!(packed.success(), "tar of {}", from.display());
    };
    let layer_tar = work.path().join("layer.tar");
    tar(fs, &layer_tar, &["."]);
    let layer = hex::encode(sha2::Sha256::digest(std::fs::read(&layer_tar).unwrap()));
    std::fs::create_dir(work.path().join(&layer)).unwrap();
    std::fs::rename(&layer_tar, work.path().join(&layer).join("layer.tar")).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": entrypoint.map(|e| vec![e]),
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer}")]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", hex::encode(sha2::Sha256::digest(&config)));
    std::fs::write(work.path().join(&config_name), &config).unwrap();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [name],
        "Layers": [format!("{layer}/layer.tar")],
    }]);
    std::fs::write(
        work.path().join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    tar(work.path(), out, &["manifest.json", &config_name, &layer]);
}

/// Starts the kubelet on `containerd`, registered as node `localhost` through `kubeconfig`, and
/// waits until the node is Ready and schedulable.
fn start_kubelet(dir: &Path, bin: &Path, kubeconfig: &Path, containerd: &Path, tied: &dyn Fn(Command, &str) -> u32) {
    let (port, healthz) = (free_port(), free_port());
    // Loopback only, so anonymous requests allowed for all (the API server's logs and exec);
    // the host's iptables left alone; the imported images never collected (nothing could pull
    // them again).
    std::fs::write(
        dir.join("kubelet.yaml"),
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
cgroupDriver: cgroupfs
failSwapOn: false
makeIPTablesUtilChains: false
authentication:
  anonymous: {{enabled: true}}
  webhook: {{enabled: false}}
authorization: {{mode: AlwaysAllow}}
resolvConf: /etc/resolv.conf
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
fileCheckFrequency: 10s
evictionHard: {{memory.available: 100Mi, nodefs.available: 2%, nodefs.inodesFree: 2%, imagefs.available: 2%}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
"
        ),
    )
    .unwrap();
    let kubelet_dir = dir.join("kubelet");
    let mut kubelet = Command::new(bin.join("kubelet"));
    kubelet.args([
        format!("--config={}", dir.join("kubelet.yaml").display()),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--hostname-override={NODE}"),
        "--container-runtime=remote".to_owned(),
        format!("--container-runtime-endpoint=unix://{}", containerd.display()),
        format!("--root-dir={}", kubelet_dir.display()),
        format!("--cert-dir={}", kubelet_dir.join("pki").display()),
        format!("--volume-plugin-dir={}", dir.join("volume-plugins").display()),
    ]);
    let pid = tied(kubelet, "kubelet");
    let started = Instant::now();
    loop {
        let node = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args([
                "get",
                "node",
                NODE,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.taints}",
            ])
            .output();
        if let Ok(node) = node
            && node.status.success()
            && String::from_utf8_lossy(&node.stdout).trim() == "True"
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "node {NODE} (kubelet pid {pid}) is not Ready and untainted after 120 s; see {} and {}",
            dir.join("kubelet.err.log").display(),
            dir.join("containerd.err.log").display()
        );
        std::thread::sleep(Duration::from_millis(250));
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
