//! The image a service runs: built by the engine from the repository's folder the service
//! carries (Compose's `build`), once per content — its tag is a digest of the content — or
//! pulled unless the engine has it. A failed build says what the engine said and the last lines
//! of its output.

use std::collections::{HashMap, VecDeque};

use bollard::query_parameters::{BuildImageOptionsBuilder, CreateImageOptionsBuilder};
use futures_util::{StreamExt, TryStreamExt};

use super::ComposeRuntime;
use crate::spec::model::Service;
use crate::spec::model::objects::Build;
use crate::spec::model::service::PullPolicy;
use crate::target::compose::container::{ENVIRONMENT, PROJECT};
use crate::target::compose::engine::{EngineError, not_found, request};
use crate::target::compose::tar;

/// How many lines of a build's output a failure quotes.
const TAIL: usize = 20;

impl ComposeRuntime {
    /// Makes sure the engine has `image`, the image `service` runs: built when the service
    /// carries its build, else pulled.
    pub(super) async fn image_for(&self, service: &Service, image: &str) -> Result<(), EngineError> {
        let container = service.container.as_ref();
        let platform = container.and_then(|c| c.platform.as_deref());
        if let Some(build) = container.and_then(|c| c.build.as_ref()) {
            return self.build(image, build, platform).await;
        }
        let policy = container.and_then(|c| c.pull_policy).unwrap_or(PullPolicy::Missing);
        if policy != PullPolicy::Always {
            match self.docker.inspect_image(image).await {
                Ok(_) => return Ok(()),
                Err(e) if !not_found(&e) => return Err(request(format!("inspecting image `{image}`"))(e)),
                Err(_) if policy == PullPolicy::Never => return Err(EngineError::NoImage(image.to_owned())),
                Err(_) => {}
            }
        }
        self.pull(image, platform).await
    }

    /// Pulls `image` (for `platform`, when given).
    async fn pull(&self, image: &str, platform: Option<&str>) -> Result<(), EngineError> {
        tracing::info!(environment = %self.environment, image, "Pulling the image.");
        let mut options = CreateImageOptionsBuilder::new().from_image(image);
        if let Some(platform) = platform {
            options = options.platform(platform);
        }
        self.docker
            .create_image(Some(options.build()), None, None)
            .try_collect::<Vec<_>>()
            .await
            .map_err(request(format!("pulling image `{image}`")))?;
        Ok(())
    }

    /// Builds `image` from `build` unless the engine has it (the tag names the content).
    async fn build(&self, image: &str, build: &Build, platform: Option<&str>) -> Result<(), EngineError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(request(format!("inspecting image `{image}`"))(e)),
        }
        let failed = |reason: String, tail: &VecDeque<String>| EngineError::Build {
            image: image.to_owned(),
            reason,
            tail: tail.iter().map(String::as_str).collect::<Vec<_>>().join("\n"),
        };
        let mut files = Vec::with_capacity(build.context.files.len());
        for file in &build.context.files {
            let bytes = file.bytes().ok_or_else(|| {
                failed(
                    format!("the content of `{}` is not base64", file.path),
                    &VecDeque::new(),
                )
            })?;
            files.push((file.path.as_str(), bytes, file.executable));
        }
        let archive = tar::archive(files.iter().map(|(path, bytes, executable)| tar::File {
            path,
            bytes,
            executable: *executable,
        }))
        .map_err(|e| failed(e.to_string(), &VecDeque::new()))?;
        tracing::info!(environment = %self.environment, image, files = files.len(), bytes = archive.len(), "Building the image.");
        let mut labels: HashMap<String, String> = build.labels.clone().into_iter().collect();
        labels.insert(PROJECT.to_owned(), self.project.clone());
        labels.insert(ENVIRONMENT.to_owned(), self.environment.clone());
        let args: HashMap<String, String> = build.args.clone().into_iter().collect();
        let mut options = BuildImageOptionsBuilder::new()
            .dockerfile(&build.dockerfile)
            .t(image)
            .rm(true)
            .forcerm(true)
            .buildargs(&args)
            .labels(&labels);
        if let Some(target) = &build.target {
            options = options.target(target);
        }
        if let Some(platform) = platform {
            options = options.platform(platform);
        }
        let mut output = self
            .docker
            .build_image(options.build(), None, Some(bollard::body_full(archive.into())));
        let mut tail = VecDeque::with_capacity(TAIL);
        while let Some(item) = output.next().await {
            let info = match item {
                Ok(info) => info,
                Err(bollard::errors::Error::DockerStreamError { error }) => return Err(failed(error, &tail)),
                Err(e) => return Err(failed(e.to_string(), &tail)),
            };
            for line in info.stream.iter().flat_map(|s| s.lines()) {
                if line.trim().is_empty() {
                    continue;
                }
                if tail.len() == TAIL {
                    tail.pop_front();
                }
                tail.push_back(line.to_owned());
            }
            if let Some(detail) = info.error_detail {
                return Err(failed(detail.message.unwrap_or_default(), &tail));
            }
        }
        // A build whose stream ended without an error made the image, or says nothing of why not.
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) => Err(failed(format!("the engine has no image after the build ({e})"), &tail)),
        }
    }
}
