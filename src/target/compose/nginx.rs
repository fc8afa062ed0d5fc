//! The nginx proxy of a Compose project (`proxy: nginx`): one nginx container on the project's
//! network, publishing every service's stable ports, whose configuration plumb writes — one
//! upstream per service port, each slot's replicas weighted by the slot's share — and reloads
//! with `nginx -s reload`, as operators do by hand. Answers are counted from nginx's own access
//! log (its container's output), per slot, for canary analysis.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder};
use futures_util::StreamExt;

use super::container::{ENVIRONMENT, PROJECT, SERVICE};
use super::engine::{EngineError, not_found, request};
use crate::router::SlotStats;

/// The label holding the stable ports the proxy container publishes (`8080,9090`).
const PORTS: &str = "plumb.proxy-ports";
/// Where the configuration folder is mounted in the proxy container.
const CONFIG_DIR: &str = "/plumb/nginx";
/// The prefix of the access log lines plumb reads.
const LOG_MARK: &str = "plumb-answer";

/// One service port as nginx serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// The service.
    pub service: String,
    /// The port's name.
    pub port: String,
    /// The stable port clients use (nginx listens on it inside its container).
    pub stable: u16,
    /// Each replica's address on the project network, its slot and the slot's weight.
    pub servers: Vec<(SocketAddr, String, u32)>,
}

/// The whole nginx configuration for `upstreams`. Within a slot, replicas share the slot's
/// weight; a slot without weight gets no server; an upstream with no server answers 502.
pub fn render(upstreams: &[Upstream]) -> String {
    let mut text = format!(
        "# Written by plumb; every change is reloaded with `nginx -s reload`.\n\
         worker_processes 1;\npid /tmp/nginx.pid;\nerror_log stderr warn;\nuser nobody nogroup;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  log_format plumb '{LOG_MARK} $server_port $upstream_addr $status $upstream_response_time';\n  \
         access_log /dev/stdout plumb;\n  client_body_temp_path /tmp/nginx-body;\n  proxy_temp_path /tmp/nginx-proxy;\n"
    );
    for upstream in upstreams {
        let name = upstream_name(upstream);
        text.push_str(&format!("  upstream {name} {{\n"));
        let mut replicas: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, slot, weight) in &upstream.servers {
            if *weight > 0 {
                *replicas.entry(slot).or_default() += 1;
            }
        }
        let mut any = false;
        for (addr, slot, weight) in &upstream.servers {
            if *weight == 0 {
                continue;
            }
            // 60 divides evenly among up to 6 replicas; the slot's share stays its weight.
            let each = (weight * 60 / replicas[slot.as_str()] as u32).max(1);
            text.push_str(&format!("    server {addr} weight={each};  # {slot}\n"));
            any = true;
        }
        if !any {
            text.push_str("    server 127.0.0.1:9 down;  # no slot takes traffic\n");
        }
        text.push_str("  }\n");
        text.push_str(&format!(
            "  server {{\n    listen {};\n    location / {{\n      proxy_pass http://{name};\n      \
             proxy_set_header Host $host;\n      proxy_next_upstream off;\n    }}\n  }}\n",
            upstream.stable
        ));
    }
    text.push_str("}\n");
    text
}

fn upstream_name(upstream: &Upstream) -> String {
    format!("{}_{}", upstream.service, upstream.port).replace('-', "_")
}

/// One answer nginx logged: the port it came in on, the replica that answered, the status and
/// the replica's time.
#[derive(Debug, PartialEq)]
pub struct Answer {
    /// The stable port.
    pub port: u16,
    /// The replica's address, `None` when no replica was reached.
    pub upstream: Option<SocketAddr>,
    /// The status nginx sent.
    pub status: u16,
    /// The replica's time.
    pub latency: Duration,
}

/// An access log line, `None` for other lines.
pub fn parse(line: &str) -> Option<Answer> {
    let mut fields = line.split_whitespace();
    if fields.next()? != LOG_MARK {
        return None;
    }
    let port = fields.next()?.parse().ok()?;
    // Several addresses when nginx tried more than one: the last answered.
    let mut upstream_field = fields.next()?.to_owned();
    let mut status_field = fields.next()?;
    while upstream_field.ends_with(',') {
        upstream_field = status_field.to_owned();
        status_field = fields.next()?;
    }
    let seconds: f64 = fields
        .next()
        .and_then(|t| t.rsplit(',').next())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0.0);
    Some(Answer {
        port,
        upstream: upstream_field.parse().ok(),
        status: status_field.parse().ok()?,
        latency: Duration::from_secs_f64(seconds),
    })
}

/// The answers in `answers` to `ports`, counted per slot of the replica that answered.
pub fn count(
    answers: &[Answer],
    ports: &BTreeSet<u16>,
    slots: &HashMap<SocketAddr, String>,
) -> BTreeMap<String, SlotStats> {
    let mut stats: BTreeMap<String, SlotStats> = BTreeMap::new();
    for answer in answers.iter().filter(|a| ports.contains(&a.port)) {
        let Some(slot) = answer.upstream.and_then(|u| slots.get(&u)) else {
            continue;
        };
        stats
            .entry(slot.clone())
            .or_default()
            .record(Some(answer.status), answer.latency);
    }
    stats
}

/// The proxy container of one project.
pub struct Nginx {
    docker: Docker,
    project: String,
    environment: String,
    image: String,
    address: IpAddr,
    port_offset: u16,
    /// Holds `nginx.conf` (mounted read-only).
    dir: PathBuf,
}

impl Nginx {
    /// The proxy of `project`, its configuration under `dir`.
    pub fn new(
        docker: Docker,
        project: &str,
        environment: &str,
        image: &str,
        address: IpAddr,
        port_offset: u16,
        dir: PathBuf,
    ) -> Nginx {
        Nginx {
            docker,
            project: project.to_owned(),
            environment: environment.to_owned(),
            image: image.to_owned(),
            address,
            port_offset,
            dir,
        }
    }

    fn name(&self) -> String {
        format!("{}-proxy", self.project)
    }

    /// Writes the configuration for `upstreams` and makes nginx serve it: reloaded in place, or
    /// the container (re)created when the set of stable ports changed.
    pub async fn update(&self, upstreams: &[Upstream], network: &str) -> Result<(), NginxError> {
        let text = render(upstreams);
        let path = self.dir.join("nginx.conf");
        crate::target::workload::save(&path, text, false)
            .await
            .map_err(|source| NginxError::Write { path, source })?;
        let ports: BTreeSet<u16> = upstreams.iter().map(|u| u.stable).collect();
        let label: String = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let name = self.name();
        let running = match self.docker.inspect_container(&name, None).await {
            Ok(found) => {
                let same = found
                    .config
                    .and_then(|c| c.labels)
                    .and_then(|l| l.get(PORTS).cloned())
                    .is_some_and(|p| p == label);
                let up = found.state.and_then(|s| s.running).unwrap_or(false);
                if same && up {
                    true
                } else {
                    self.docker
                        .remove_container(&name, Some(RemoveContainerOptionsBuilder::new().force(true).build()))
                        .await
                        .map_err(request(format!("removing proxy `{name}`")))?;
                    false
                }
            }
            Err(e) if not_found(&e) => false,
            Err(e) => return Err(request(format!("inspecting proxy `{name}`"))(e).into()),
        };
        if running {
            return self.reload().await;
        }
        self.create(&ports, &label, network).await
    }

    async fn create(&self, ports: &BTreeSet<u16>, label: &str, network: &str) -> Result<(), NginxError> {
        let name = self.name();
        let bindings = ports
            .iter()
            .map(|port| {
                let binding = PortBinding {
                    host_ip: Some(self.address.to_string()),
                    host_port: Some(port.saturating_add(self.port_offset).to_string()),
                };
                (format!("{port}/tcp"), Some(vec![binding]))
            })
            .collect::<HashMap<_, _>>();
        let labels = HashMap::from([
            (PROJECT.to_owned(), self.project.clone()),
            (SERVICE.to_owned(), "plumb-proxy".to_owned()),
            (ENVIRONMENT.to_owned(), self.environment.clone()),
            ("com.docker.compose.oneoff".to_owned(), "False".to_owned()),
            ("com.docker.compose.container-number".to_owned(), "1".to_owned()),
            ("com.docker.compose.config-hash".to_owned(), label.to_owned()),
            (PORTS.to_owned(), label.to_owned()),
        ]);
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(vec![
                "nginx".to_owned(),
                "-c".to_owned(),
                format!("{CONFIG_DIR}/nginx.conf"),
                "-g".to_owned(),
                "daemon off;".to_owned(),
            ]),
            labels: Some(labels),
            exposed_ports: Some(ports.iter().map(|p| format!("{p}/tcp")).collect()),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                binds: Some(vec![format!("{}:{CONFIG_DIR}:ro", self.dir.display())]),
                restart_policy: Some(bollard::models::RestartPolicy {
                    name: Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..HostConfig::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some([(network.to_owned(), EndpointSettings::default())].into()),
            }),
            ..ContainerCreateBody::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(request(format!("creating proxy `{name}`")))?;
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(request(format!("starting proxy `{name}`")))?;
        Ok(())
    }

    /// `nginx -s reload` in the proxy container; its output when it fails.
    async fn reload(&self) -> Result<(), NginxError> {
        let name = self.name();
        let exec = self
            .docker
            .create_exec(
                &name,
                bollard::models::ExecConfig {
                    cmd: Some(vec![
                        "nginx".to_owned(),
                        "-c".to_owned(),
                        format!("{CONFIG_DIR}/nginx.conf"),
                        "-s".to_owned(),
                        "reload".to_owned(),
                    ]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(request(format!("reloading proxy `{name}`")))?;
        let mut said = String::new();
        if let bollard::exec::StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(request(format!("reloading proxy `{name}`")))?
        {
            while let Some(Ok(line)) = output.next().await {
                said.push_str(&line.to_string());
            }
        }
        let inspected = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(request(format!("reloading proxy `{name}`")))?;
        match inspected.exit_code {
            Some(0) => Ok(()),
            code => Err(NginxError::Reload {
                code,
                output: said.trim().to_owned(),
            }),
        }
    }

    /// The answers nginx logged since `since` (seconds since the epoch).
    pub async fn answers(&self, since: i32) -> Vec<Answer> {
        let options = LogsOptionsBuilder::new().stdout(true).since(since).build();
        let lines: Vec<String> = self
            .docker
            .logs(&self.name(), Some(options))
            .filter_map(|line| async move { line.ok().map(|l| l.to_string()) })
            .collect()
            .await;
        lines.iter().flat_map(|chunk| chunk.lines()).filter_map(parse).collect()
    }

    /// Removes the proxy container.
    pub async fn remove(&self) {
        let _ = self
            .docker
            .remove_container(
                &self.name(),
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
    }
}

/// Why the proxy could not be updated.
#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    /// The engine refused a request.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The configuration could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `nginx -s reload` failed.
    #[error("`nginx -s reload` failed ({code:?}): {output}")]
    Reload {
        /// Its exit code.
        code: Option<i64>,
        /// What it said.
        output: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_share_traffic_by_weight() {
        let upstream = Upstream {
            service: "web".into(),
            port: "http".into(),
            stable: 8080,
            servers: vec![
                ("172.18.0.2:80".parse().unwrap(), "blue".into(), 90),
                ("172.18.0.3:80".parse().unwrap(), "blue".into(), 90),
                ("172.18.0.4:80".parse().unwrap(), "green".into(), 10),
                ("172.18.0.5:80".parse().unwrap(), "green".into(), 0),
            ],
        };
        let text = render(std::slice::from_ref(&upstream));
        assert!(text.contains("server 172.18.0.2:80 weight=2700;  # blue"), "{text}");
        assert!(text.contains("server 172.18.0.4:80 weight=600;  # green"), "{text}");
        assert!(!text.contains("172.18.0.5"), "{text}");
        assert!(text.contains("listen 8080;") && text.contains("proxy_pass http://web_http;"));
        let idle = Upstream {
            servers: vec![],
            ..upstream
        };
        assert!(render(&[idle]).contains("server 127.0.0.1:9 down;"));
    }

    #[test]
    fn access_log_lines_count_per_slot() {
        let lines = [
            "plumb-answer 8080 172.18.0.2:80 200 0.004",
            "plumb-answer 8080 172.18.0.4:80 500 0.010",
            "plumb-answer 8080 - 502 -",
            "2026/11/26 12:00:00 [notice] 1#1: signal process started",
            "plumb-answer 9090 172.18.0.2:80 200 0.001",
        ];
        let answers: Vec<Answer> = lines.iter().filter_map(|l| parse(l)).collect();
        assert_eq!(answers.len(), 4);
        let slots = HashMap::from([
            ("172.18.0.2:80".parse().unwrap(), "blue".to_owned()),
            ("172.18.0.4:80".parse().unwrap(), "green".to_owned()),
        ]);
        let stats = count(&answers, &BTreeSet::from([8080]), &slots);
        assert_eq!(stats["blue"].requests, 1);
        assert_eq!(stats["green"].server_errors, 1);
    }
}
