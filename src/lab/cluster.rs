//! A Kubernetes cluster on loopback, its state in one folder: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler 1.20 with an admin kubeconfig, and one real node,
//! `localhost` ([`super::node`]): a kubelet on a private containerd (CRI, runc, cgroupfs), its
//! pods on a CNI bridge, the example image imported from a plumb binary (no registry). The
//! Kubernetes binaries and the sandbox's `pause` are built once by
//! `scripts/build-kube-control-plane`.
//!
//! No kube-proxy runs (it would rewrite the host's iptables, which a Docker Engine uses too):
//! Service cluster IPs do not route; pod IPs do, from the host and from other pods, and
//! `kubectl port-forward` works. The node's pods and cgroups and `/var/log/pods` are the
//! machine's: one node per machine at a time, which [`lock_machine`] enforces.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

/// The name the node registers under: the API server reaches a node's kubelet at its name
/// first, and `localhost` takes logs, exec and port-forward to the kubelet on 127.0.0.1.
pub const NODE: &str = "localhost";

/// The lock whoever runs this machine's node holds, with its pid inside.
pub const MACHINE_LOCK: &str = "/tmp/plumb-kube-node.lock";

/// The HTTPRoute CRD of the Gateway API, its schema left open (the API server stores what it is
/// given; no Gateway controller runs on this cluster to act on it): what lets an environment
/// route a canary through a Gateway here.
pub const HTTPROUTE_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: httproutes.gateway.networking.k8s.io
  annotations: {api-approved.kubernetes.io: \"https://github.com/kubernetes-sigs/gateway-api\"}
spec:
  group: gateway.networking.k8s.io
  names: {kind: HTTPRoute, listKind: HTTPRouteList, plural: httproutes, singular: httproute}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
";

/// What undoes the node's traces on the host once its processes are gone.
const CLEANUP: &str = include_str!("../../scripts/kube-node/cleanup");

/// The binaries the cluster runs, besides the machine's etcd and containerd.
const BINARIES: [&str; 5] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "pause",
];

/// Where `scripts/build-kube-control-plane` puts the binaries (`PLUMB_KUBE_CACHE`, else
/// `~/.cache/plumb-kube`, then `bin`).
pub fn binaries() -> PathBuf {
    std::env::var_os("PLUMB_KUBE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/plumb-kube"))
        .join("bin")
}

/// The binaries missing from `bin`.
pub fn missing(bin: &Path) -> Vec<&'static str> {
    BINARIES.into_iter().filter(|b| !bin.join(b).exists()).collect()
}

/// Takes the machine's node lock, waiting for it up to `wait`; the error names its holder.
pub fn lock_machine(wait: Duration) -> anyhow::Result<File> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(MACHINE_LOCK)
        .with_context(|| format!("cannot open {MACHINE_LOCK}"))?;
    let mut said = false;
    super::wait_until(
        wait,
        Duration::from_millis(500),
        || format!("a Kubernetes node of this machine still runs ({MACHINE_LOCK})"),
        || {
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(true);
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let _ = file.rewind();
            anyhow::ensure!(
                !wait.is_zero(),
                "a Kubernetes node already runs on this machine, started by process {} ({MACHINE_LOCK}): \
                 one node per machine",
                holder.trim()
            );
            if !said {
                eprintln!("waiting for the Kubernetes node of process {} to end", holder.trim());
                said = true;
            }
            Ok(false)
        },
    )?;
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

/// Undoes now what the node of `dir` left on the host (its processes are gone).
pub fn clean_up(dir: &Path) -> anyhow::Result<()> {
    let script = dir.join("cleanup");
    std::fs::write(&script, CLEANUP)?;
    let mut command = Command::new("bash");
    command.arg(&script).arg(dir);
    super::output(command).map(drop)
}

/// Starts the cleanup of `dir`'s node, tied to this process: it undoes what the node changed on
/// the host when this process ends, and holds the machine's `lock` until it is done.
pub fn reaper(dir: &Path, lock: &File) -> anyhow::Result<u32> {
    record_host(dir)?;
    let script = dir.join("cleanup");
    std::fs::write(&script, CLEANUP)?;
    let lock = std::os::fd::AsRawFd::as_raw_fd(lock);
    let mut reaper = Command::new("bash");
    reaper
        .arg(&script)
        .arg("--on-term")
        .arg(dir)
        .env("PLUMB_NODE_LOCK_FD", lock.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log(dir, "cleanup.err")?);
    // SAFETY: fcntl in the child before exec, on a descriptor open in the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut reaper, move || {
            libc::fcntl(lock, libc::F_SETFD, 0);
            Ok(())
        });
    }
    super::spawn_tied(reaper).context("cannot start the node's cleanup")
}

/// Saves what the node changes on the host, for its cleanup to undo: the sysctls the kubelet
/// sets at start, the host folders, cgroups and firewall chains it makes.
fn record_host(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let sysctls: String = ["vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"]
        .iter()
        .filter_map(|key| {
            let value = std::fs::read_to_string(Path::new("/proc/sys").join(key)).ok()?;
            Some(format!("{key} {}\n", value.trim()))
        })
        .collect();
    std::fs::write(dir.join("sysctl.orig"), sysctls)?;
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
    std::fs::write(dir.join("made-by-node"), made)?;
    Ok(())
}

/// A log file of `dir` (`<name>.log`), appended to.
fn log(dir: &Path, name: &str) -> anyhow::Result<File> {
    let path = dir.join(format!("{name}.log"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// Spawns `command` tied to this process, its output in `dir`'s `<name>.log` and
/// `<name>.err.log`.
pub(super) fn tied(dir: &Path, mut command: Command, name: &str) -> anyhow::Result<u32> {
    command
        .stdin(Stdio::null())
        .stdout(log(dir, name)?)
        .stderr(log(dir, &format!("{name}.err"))?);
    super::spawn_tied(command).with_context(|| format!("cannot start {name}"))
}

/// A server of the control plane: how it was started, and its process.
pub struct Server {
    program: PathBuf,
    args: Vec<String>,
    dir: PathBuf,
    name: &'static str,
    /// Its process.
    pub pid: u32,
}

impl Server {
    /// Starts it (again), tied to this process.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        self.pid = tied(&self.dir, command, self.name)?;
        Ok(())
    }
}

/// A running cluster.
pub struct Cluster {
    /// The admin's kubeconfig.
    pub kubeconfig: PathBuf,
    /// The API server, for whoever stops it and starts it again.
    pub apiserver: Server,
    /// etcd's process.
    pub etcd: u32,
}

/// Starts the control plane in `dir` from the binaries in `bin`, then the node with the image
/// `example` (a plumb binary, and the image's name) imported; returns once the node takes pods.
/// Every process is tied to this one; the caller holds the machine's lock and its [`reaper`].
pub fn start(dir: &Path, bin: &Path, example: (&Path, &str)) -> anyhow::Result<Cluster> {
    let missing = missing(bin);
    anyhow::ensure!(
        missing.is_empty(),
        "{} missing in {}: scripts/build-kube-control-plane builds them (about 10 minutes, once)",
        missing.join(", "),
        bin.display()
    );
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs)?;
    certificates(&certs)?;
    std::fs::write(
        dir.join("tokens.csv"),
        "plumb-test-admin-token,admin,admin,system:masters\n",
    )?;

    let (client, peer, secure) = (super::free_port()?, super::free_port()?, super::free_port()?);
    let mut etcd = Command::new("etcd");
    etcd.arg("--data-dir")
        .arg(dir.join("etcd"))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"));
    let etcd = tied(dir, etcd, "etcd").context("etcd (package etcd-server)")?;

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
        dir: dir.to_owned(),
        name: "kube-apiserver",
        pid: 0,
    };
    apiserver.spawn()?;

    let config = dir.join("kubeconfig");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: plumb-local\n  cluster:\n    server: https://127.0.0.1:{secure}\n    \
             certificate-authority: {}\nusers:\n- name: admin\n  user:\n    token: plumb-test-admin-token\n\
             contexts:\n- name: plumb-local\n  context: {{cluster: plumb-local, user: admin}}\ncurrent-context: plumb-local\n",
            c("ca.pem")
        ),
    )?;

    // Meanwhile, containerd and the images the node runs.
    let containerd = super::node::start_containerd(dir)?;
    super::node::import_images(dir, bin, &containerd, example)?;

    apiserver_ready(&config)?;
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
    tied(dir, manager, "kube-controller-manager")?;
    let mut scheduler = Command::new(bin.join("kube-scheduler"));
    scheduler.arg(format!("--kubeconfig={}", config.display())).args([
        "--leader-elect=false",
        "--port=0",
        "--secure-port=0",
    ]);
    tied(dir, scheduler, "kube-scheduler")?;

    super::node::start_kubelet(dir, bin, &config, &containerd)?;
    Ok(Cluster {
        kubeconfig: config,
        apiserver,
        etcd,
    })
}

/// Waits (up to 90 s) until the API server behind `config` is ready.
pub fn apiserver_ready(config: &Path) -> anyhow::Result<()> {
    super::wait_until(
        Duration::from_secs(90),
        Duration::from_millis(200),
        || {
            format!(
                "kube-apiserver did not become ready; see kube-apiserver.err.log beside {}",
                config.display()
            )
        },
        || Ok(kubectl(config, &["get", "--raw", "/readyz"]).is_ok()),
    )
}

/// `kubectl` with `config`: its output, or its error.
pub fn kubectl(config: &Path, args: &[&str]) -> anyhow::Result<String> {
    let mut command = Command::new("kubectl");
    command.arg("--kubeconfig").arg(config).args(args);
    super::output(command).with_context(|| format!("kubectl {}", args.join(" ")))
}

/// [`super::certificates`] and the service accounts' key pair (`sa.key`, `sa.pub`).
fn certificates(dir: &Path) -> anyhow::Result<()> {
    super::certificates(dir)?;
    for args in [
        &["genrsa", "-out", "sa.key", "2048"][..],
        &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
    ] {
        let mut command = Command::new("openssl");
        command.args(args).current_dir(dir);
        super::output(command).context("openssl (package openssl)")?;
    }
    Ok(())
}
