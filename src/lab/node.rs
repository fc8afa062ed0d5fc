//! The cluster's one node: a private containerd (CRI, runc, cgroupfs) whose pods hang from a
//! CNI bridge, the images it runs imported (never pulled), and a kubelet registered as
//! [`super::cluster::NODE`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use super::cluster::{NODE, kubectl};

/// The sandbox image of every pod, imported with the example image.
const PAUSE_IMAGE: &str = "localhost/plumb-pause:1";

/// The bridge the node's pods hang from (`scripts/kube-node/cleanup` deletes it).
const BRIDGE: &str = "plumbcni0";

/// Writes containerd's configuration and the pods' network under `dir`, starts containerd and
/// waits until its CRI plugin serves; returns its socket.
pub(super) fn start_containerd(dir: &Path) -> anyhow::Result<PathBuf> {
    let root = dir.join("containerd");
    let socket = root.join("containerd.sock");
    let net = dir.join("cni/net.d");
    std::fs::create_dir_all(&net)?;
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
    )?;
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
        serde_json::to_string_pretty(&network)?,
    )?;
    let mut command = Command::new("containerd");
    command.arg("--config").arg(dir.join("containerd.toml"));
    let pid = super::cluster::tied(dir, command, "containerd").context("containerd (package containerd)")?;
    let err_log = dir.join("containerd.err.log");
    super::wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            format!(
                "containerd (pid {pid}) did not answer within 30 s; see {}",
                err_log.display()
            )
        },
        || {
            let mut plugins = Command::new("ctr");
            plugins.arg("--address").arg(&socket).args(["plugins", "ls"]);
            let Ok(listed) = super::output(plugins) else {
                return Ok(false);
            };
            let cri = listed
                .lines()
                .find(|l| l.split_whitespace().take(2).eq(["io.containerd.grpc.v1", "cri"]));
            anyhow::ensure!(
                cri.is_some_and(|l| l.trim_end().ends_with("ok")),
                "containerd's CRI plugin does not serve: {cri:?}; see {}",
                err_log.display()
            );
            Ok(true)
        },
    )?;
    Ok(socket)
}

/// Imports the sandbox image (`pause` from `bin`) and the example image (`example`: a plumb
/// binary and the image's name) into containerd's `k8s.io` namespace (the CRI's).
pub(super) fn import_images(dir: &Path, bin: &Path, containerd: &Path, example: (&Path, &str)) -> anyhow::Result<()> {
    let tar = dir.join("image.tar");
    let pause = super::image::RootFs::new(&dir.join("pause-fs"))?;
    pause.binary(&bin.join("pause"), "/pause")?;
    pause.archive(PAUSE_IMAGE, Some("/pause"), &tar)?;
    std::fs::remove_dir_all(pause.path())?;
    import(containerd, &tar).with_context(|| format!("importing {PAUSE_IMAGE}"))?;
    let (binary, name) = example;
    super::image::example(binary, name, &tar)?;
    import(containerd, &tar).with_context(|| format!("importing {name}"))?;
    std::fs::remove_file(&tar)?;
    Ok(())
}

fn import(containerd: &Path, tar: &Path) -> anyhow::Result<()> {
    let mut command = Command::new("ctr");
    command
        .arg("--address")
        .arg(containerd)
        .args(["-n", "k8s.io", "images", "import"])
        .arg(tar);
    super::output(command).map(drop)
}

/// Starts the kubelet on `containerd`, registered as node [`NODE`] through `kubeconfig`, and
/// waits until the node is Ready and schedulable.
pub(super) fn start_kubelet(dir: &Path, bin: &Path, kubeconfig: &Path, containerd: &Path) -> anyhow::Result<()> {
    let (port, healthz) = (super::free_port()?, super::free_port()?);
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
    )?;
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
    let pid = super::cluster::tied(dir, kubelet, "kubelet")?;
    super::wait_until(
        Duration::from_secs(120),
        Duration::from_millis(250),
        || {
            format!(
                "node {NODE} (kubelet pid {pid}) is not Ready and untainted after 120 s; see {} and {}",
                dir.join("kubelet.err.log").display(),
                dir.join("containerd.err.log").display()
            )
        },
        || {
            let ready = kubectl(
                kubeconfig,
                &[
                    "get",
                    "node",
                    NODE,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.taints}",
                ],
            );
            Ok(ready.is_ok_and(|r| r.trim() == "True"))
        },
    )
}
