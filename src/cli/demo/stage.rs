//! Where the demo plays: this machine's local target, a Kubernetes cluster (`plumb dev-cluster`'s,
//! or any the kubeconfig names: the demo's environments each get a namespace of their own), or a
//! Docker Engine (the one `DOCKER_HOST` names, the machine's, or a private `dockerd` the demo
//! starts). What the demo set up there, it removes at the end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};

use super::ENVIRONMENTS;
use crate::lab::engine::Engine;
use crate::target::compose::PROJECT;

/// The target the demo's environments run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// This machine's processes: needs nothing but this binary.
    Local,
    /// A Kubernetes cluster: `plumb dev-cluster up`'s, or the one the kubeconfig names.
    Kubernetes,
    /// A Docker Engine: `DOCKER_HOST`'s, the machine's, or a private one the demo starts.
    Compose,
}

/// The label of the namespaces the demo made.
const DEMO_LABEL: &str = "plumb.dev/demo";

/// A stage, set up.
pub(super) enum Stage {
    /// Processes of `exe example-app`.
    Local { exe: PathBuf },
    /// Namespaces `plumb-demo-<environment>` of the cluster `kubeconfig` names.
    Kubernetes {
        kubeconfig: PathBuf,
        image: String,
        client: kube::Client,
    },
    /// Projects `plumb-demo-<environment>` on the engine at `host`.
    Compose {
        host: String,
        image: String,
        docker: bollard::Docker,
        /// The private engine the demo started, if it did.
        engine: Option<Engine>,
    },
}

/// The name the demo gives `environment`'s namespace or Compose project.
fn own(environment: &str) -> String {
    format!("plumb-demo-{environment}")
}

impl Stage {
    /// Sets the stage up for `target`: finds the cluster or engine, makes the image and the
    /// namespaces, clears what an interrupted demo left.
    pub(super) async fn set(
        target: Target,
        kubeconfig: Option<PathBuf>,
        image: Option<String>,
        dir: &Path,
    ) -> anyhow::Result<Stage> {
        let exe = std::env::current_exe().context("cannot find the plumb executable")?;
        match target {
            Target::Local => Ok(Stage::Local { exe }),
            Target::Kubernetes => {
                let kubeconfig = kubeconfig_file(kubeconfig)?;
                let client = kube_client(&kubeconfig).await?;
                let image = image.unwrap_or_else(crate::lab::image::demo_name);
                let stage = Stage::Kubernetes {
                    kubeconfig,
                    image,
                    client,
                };
                stage.namespaces().await?;
                Ok(stage)
            }
            Target::Compose => {
                let (host, engine) = match std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()) {
                    Some(host) => (host, None),
                    None if crate::target::compose::engine::connect(None).await.is_ok() => {
                        ("unix:///var/run/docker.sock".to_owned(), None)
                    }
                    None => {
                        // Socket paths are short (108 bytes): the engine lives under /tmp.
                        let folder = PathBuf::from(format!("/tmp/plumb-demo-docker-{}", std::process::id()));
                        println!(
                            "No Docker Engine answers here: starting one of the demo's own ({}).",
                            folder.display()
                        );
                        let engine =
                            tokio::task::spawn_blocking(move || Engine::start(&folder, "10.214.0.0/16")).await??;
                        (engine.host.clone(), Some(engine))
                    }
                };
                let docker = crate::target::compose::engine::connect(Some(&host)).await?;
                let image = match image {
                    Some(image) => image,
                    None => load_example(&docker, &exe, dir).await?,
                };
                let stage = Stage::Compose {
                    host,
                    image,
                    docker,
                    engine,
                };
                stage.clear().await?;
                Ok(stage)
            }
        }
    }

    /// The `target:` of `environment` (a flow mapping), its ports offset by `offset` where the
    /// stage serves stable ports on this machine.
    pub(super) fn target(&self, environment: &str, offset: u16) -> String {
        match self {
            Stage::Local { .. } => format!("local: {{portOffset: {offset}}}"),
            Stage::Kubernetes { kubeconfig, .. } => {
                // A canary splits traffic exactly only through a Gateway's route.
                let gateway = if environment == "staging" {
                    ", gateway: {name: plumb-demo, domain: staging.demo.invalid}"
                } else {
                    ""
                };
                format!(
                    "kubernetes: {{namespace: {}, kubeconfig: {:?}{gateway}}}",
                    own(environment),
                    kubeconfig.display().to_string()
                )
            }
            Stage::Compose { host, .. } => format!(
                "compose: {{project: {}, dockerHost: {host:?}, portOffset: {offset}}}",
                own(environment)
            ),
        }
    }

    /// The image every service runs (containers only).
    pub(super) fn image(&self) -> &str {
        match self {
            Stage::Local { .. } => "",
            Stage::Kubernetes { image, .. } | Stage::Compose { image, .. } => image,
        }
    }

    /// Whether the environments' stable ports answer on this machine's loopback.
    pub(super) fn serves_ports(&self) -> bool {
        !matches!(self, Stage::Kubernetes { .. })
    }

    /// What to type to watch the stage while the tour plays.
    pub(super) fn watch_hint(&self) -> Option<String> {
        match self {
            Stage::Local { .. } => None,
            Stage::Kubernetes { kubeconfig, .. } => Some(format!(
                "KUBECONFIG={} kubectl get deploy,svc,pods -n {} -L plumb.dev/slot -w",
                kubeconfig.display(),
                own("staging")
            )),
            Stage::Compose { host, .. } => Some(format!("DOCKER_HOST={host} docker ps")),
        }
    }

    /// Makes each environment's namespace, labelled as the demo's; one an interrupted demo left
    /// is deleted first, one the demo did not make is refused.
    async fn namespaces(&self) -> anyhow::Result<()> {
        let Stage::Kubernetes { client, .. } = self else {
            return Ok(());
        };
        let api: Api<Namespace> = Api::all(client.clone());
        for environment in ENVIRONMENTS {
            let name = own(environment);
            if let Some(found) = api.get_opt(&name).await? {
                let ours = found.metadata.labels.unwrap_or_default().contains_key(DEMO_LABEL);
                anyhow::ensure!(
                    ours,
                    "namespace {name} exists and is not the demo's (no label {DEMO_LABEL}): delete it, or use another cluster"
                );
            }
        }
        self.clear().await?;
        for environment in ENVIRONMENTS {
            let namespace: Namespace = serde_json::from_value(serde_json::json!({
                "metadata": {"name": own(environment), "labels": {DEMO_LABEL: "true"}},
            }))?;
            api.create(&PostParams::default(), &namespace).await?;
        }
        Ok(())
    }

    /// Removes what the demo's environments run: their namespaces (waiting until they are gone)
    /// or their containers and networks; stops the demo's own engine.
    pub(super) async fn clear(&self) -> anyhow::Result<()> {
        match self {
            Stage::Local { .. } => Ok(()),
            Stage::Kubernetes { client, .. } => {
                let api: Api<Namespace> = Api::all(client.clone());
                for environment in ENVIRONMENTS {
                    let _ = api.delete(&own(environment), &DeleteParams::background()).await;
                }
                let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
                for environment in ENVIRONMENTS {
                    while api.get_opt(&own(environment)).await?.is_some() {
                        anyhow::ensure!(
                            tokio::time::Instant::now() < deadline,
                            "namespace {} is still being deleted after 3 minutes",
                            own(environment)
                        );
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
                Ok(())
            }
            Stage::Compose { docker, .. } => {
                for environment in ENVIRONMENTS {
                    let filters =
                        HashMap::from([("label".to_owned(), vec![format!("{PROJECT}={}", own(environment))])]);
                    let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
                    for container in docker.list_containers(Some(options)).await? {
                        let Some(id) = container.id else { continue };
                        docker
                            .remove_container(
                                &id,
                                Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build()),
                            )
                            .await?;
                    }
                    let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
                    for network in docker.list_networks(Some(options)).await? {
                        if let Some(id) = network.id {
                            docker.remove_network(&id).await?;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Clears the stage, then stops the demo's own engine, if it started one.
    pub(super) async fn strike(self) -> anyhow::Result<()> {
        let cleared = self.clear().await;
        if let Stage::Compose {
            engine: Some(engine), ..
        } = self
        {
            tokio::task::spawn_blocking(move || {
                engine.stop();
                std::fs::remove_dir_all(engine.folder())
                    .with_context(|| format!("cannot remove {}", engine.folder().display()))
            })
            .await??;
        }
        cleared
    }
}

/// The kubeconfig the demo uses: `given`, else `KUBECONFIG`'s first file, else `~/.kube/config`.
fn kubeconfig_file(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let found = given
        .or_else(|| {
            std::env::var_os("KUBECONFIG").and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()))
        })
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config")))
        .filter(|p| p.exists());
    let found = found.context(
        "no kubeconfig names a cluster: start one with `plumb dev-cluster up` and `eval $(plumb dev-cluster env)`, \
         or pass --kubeconfig",
    )?;
    std::fs::canonicalize(&found).with_context(|| format!("cannot read {}", found.display()))
}

/// A client of the cluster `kubeconfig` names (its current context), checked to answer and to
/// serve the Gateway API's HTTPRoutes (staging's canary routes through one).
async fn kube_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("{}", kubeconfig.display()))?;
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)?;
    client
        .apiserver_version()
        .await
        .with_context(|| format!("the cluster at {server} ({}) does not answer", kubeconfig.display()))?;
    let routes = client
        .list_api_group_resources("gateway.networking.k8s.io/v1")
        .await
        .ok()
        .is_some_and(|list| list.resources.iter().any(|r| r.name == "httproutes"));
    anyhow::ensure!(
        routes,
        "the cluster at {server} does not serve the Gateway API's HTTPRoutes, through which staging's canary \
         routes: install the Gateway API's CRDs (`plumb dev-cluster up` installs the HTTPRoute CRD)"
    );
    Ok(client)
}

/// Loads the image of `plumb example-app` made of `exe` into the engine, unless it is there;
/// returns its name.
async fn load_example(docker: &bollard::Docker, exe: &Path, dir: &Path) -> anyhow::Result<String> {
    let name = crate::lab::image::stamped("plumb-example", exe)?;
    if docker.inspect_image(&name).await.is_ok() {
        return Ok(name);
    }
    let archive = dir.join("example-image.tar");
    let (exe, made, made_name) = (exe.to_owned(), archive.clone(), name.clone());
    tokio::task::spawn_blocking(move || crate::lab::image::example(&exe, &made_name, &made)).await??;
    let bytes = tokio::fs::read(&archive).await?;
    let mut loading = docker.import_image(
        bollard::query_parameters::ImportImageOptionsBuilder::new()
            .quiet(true)
            .build(),
        bollard::body_full(bytes.into()),
        None,
    );
    while let Some(progress) = futures_util::StreamExt::next(&mut loading).await {
        progress.with_context(|| format!("loading image {name}"))?;
    }
    tokio::fs::remove_file(&archive).await?;
    Ok(name)
}
