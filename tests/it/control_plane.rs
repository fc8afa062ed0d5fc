//! A Kubernetes control plane for the tests and benchmarks: etcd, kube-apiserver and
//! kube-controller-manager 1.20 on loopback (built once by `scripts/build-kube-control-plane`),
//! started once per process and dying with it, with an admin kubeconfig.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The kubeconfig of the tests' control plane.
pub fn kubeconfig() -> &'static Path {
    static CONFIG: OnceLock<PathBuf> = OnceLock::new();
    CONFIG.get_or_init(start)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts etcd, kube-apiserver and kube-controller-manager; returns an admin kubeconfig.
fn start() -> PathBuf {
    // Where scripts/build-kube-control-plane put them (PLUMB_KUBE_CACHE, as for the script).
    let cache = std::env::var_os("PLUMB_KUBE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/plumb-kube"));
    let bin = cache.join("bin");
    assert!(
        bin.join("kube-apiserver").exists(),
        "no kube-apiserver in {}: run scripts/build-kube-control-plane (.ci/run does)",
        bin.display()
    );
    let dir = Path::new("/tmp").join(format!("plumb-test-kube-{}", std::process::id()));
    for entry in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("plumb-test-kube-")
            && !Path::new("/proc").join(pid).exists()
        {
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

    let (client, peer, secure) = (free_port(), free_port(), free_port());
    let mut etcd = Command::new("etcd");
    etcd.arg("--data-dir")
        .arg(dir.join("etcd"))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"));
    tied(etcd, "etcd");

    let c = |f: &str| certs.join(f).display().to_string();
    let mut apiserver = Command::new(bin.join("kube-apiserver"));
    apiserver.args([
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
    ]);
    tied(apiserver, "kube-apiserver");

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
    let started = Instant::now();
    loop {
        let ready = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&config)
            .args(["get", "--raw", "/readyz"])
            .output();
        if ready.is_ok_and(|o| o.status.success()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "kube-apiserver did not become ready; see {}",
            dir.join("kube-apiserver.err.log").display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut manager = Command::new(bin.join("kube-controller-manager"));
    manager.arg(format!("--kubeconfig={}", config.display())).args([
        "--leader-elect=false",
        "--controllers=deployment,replicaset,job,garbagecollector,namespace",
        "--port=0",
        "--secure-port=0",
        "--concurrent-deployment-syncs=5",
    ]);
    tied(manager, "kube-controller-manager");
    config
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
