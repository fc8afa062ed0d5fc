//! The connection to a Docker Engine: the host the environment names, else `DOCKER_HOST`, else
//! the local socket (`unix://`, `tcp://` — with TLS when `DOCKER_TLS_VERIFY` is set —, `https://`,
//! `ssh://`); the API version negotiated down to what the engine speaks (Debian's 20.10 stops at
//! 1.41). Every failure says which engine and what to check.

use bollard::Docker;

/// The socket a local engine listens on.
const LOCAL: &str = "unix:///var/run/docker.sock";

/// Why the engine cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine cannot be reached (no socket, refused, wrong scheme).
    #[error(
        "cannot reach the Docker Engine at {host}: {source} (is dockerd running? set DOCKER_HOST or the target's `dockerHost`)"
    )]
    Unreachable {
        /// The engine's address.
        host: String,
        /// The cause.
        #[source]
        source: bollard::errors::Error,
    },
    /// A request failed.
    #[error("{what}: {source}")]
    Request {
        /// What was asked, naming the object.
        what: String,
        /// The engine's answer.
        #[source]
        source: bollard::errors::Error,
    },
    /// An object the project uses but does not own (`external`) is not on the engine.
    #[error("{0} is not on the engine: it is external, so plumb does not create it")]
    Missing(String),
    /// A network or volume of the project was created from other settings and cannot be made
    /// again now: what and why, in words.
    #[error("{0}")]
    Changed(String),
    /// An image is not on the engine and may not be pulled.
    #[error("image `{0}` is not on the engine, and its pull policy is `never`")]
    NoImage(String),
    /// An image could not be built.
    #[error("building image `{image}` failed: {reason}\nthe build's last lines:\n{tail}")]
    Build {
        /// The image's tag.
        image: String,
        /// What the engine said.
        reason: String,
        /// The last lines of the build's output.
        tail: String,
    },
}

/// Connects to the engine at `host` (else `DOCKER_HOST`, else the local socket) and agrees on
/// an API version.
pub async fn connect(host: Option<&str>) -> Result<Docker, EngineError> {
    let host = host
        .map(str::to_owned)
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| LOCAL.to_owned());
    let unreachable = |source| EngineError::Unreachable {
        host: host.clone(),
        source,
    };
    let docker = Docker::connect_with_host(&host).map_err(unreachable)?;
    let docker = docker.negotiate_version().await.map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    Ok(docker)
}

/// A request's error, naming what was asked.
pub fn request(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> EngineError {
    let what = what.into();
    move |source| EngineError::Request { what, source }
}

/// Whether the engine answered 404 (no such container, image or network).
pub fn not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }
    )
}
