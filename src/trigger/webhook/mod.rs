//! The HTTP receiver for forge webhooks: `POST /hooks/{repository}`. A request is answered only
//! after its signature is checked against the repository's secret — `401` when it is missing or
//! wrong, never a silent `200` — and only a push to a tracked ref rings the repository's doorbell.

mod provider;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use serde_json::json;

pub use provider::{Event, Provider, Rejection};

use super::{Doorbell, Reason, Rung};
use crate::metrics::Metrics;
use crate::secret::Secret;

/// The largest body accepted by default: GitHub caps its own deliveries at 25 MB, so any push a
/// forge sends fits. A body is read up to this and no further.
pub const DEFAULT_BODY_LIMIT: usize = 25 * 1024 * 1024;

/// How one repository receives webhooks.
#[derive(Clone, Debug)]
pub struct Receiver {
    /// The forge sending them.
    pub provider: Provider,
    /// The shared secret (HMAC key or token). Never empty.
    pub secret: Secret,
    /// The full names of the refs a push must touch to trigger a fetch.
    pub refs: BTreeSet<String>,
    /// Where a push rings.
    pub doorbell: Doorbell,
}

/// The receivers, by the repository name used in the URL.
#[derive(Clone, Default)]
pub struct Receivers {
    by_name: HashMap<String, Receiver>,
    metrics: Option<Arc<Metrics>>,
}

/// A receiver configured without a secret.
#[derive(Debug, thiserror::Error)]
#[error("the webhook of repository `{0}` has no secret; plumb refuses unauthenticated webhooks")]
pub struct MissingSecret(pub String);

impl Receivers {
    /// Adds the receiver of `repository`.
    pub fn insert(&mut self, repository: &str, receiver: Receiver) -> Result<(), MissingSecret> {
        if receiver.secret.is_empty() {
            return Err(MissingSecret(repository.to_owned()));
        }
        self.by_name.insert(repository.to_owned(), receiver);
        Ok(())
    }

    /// Counts every delivery in `metrics`, by provider and result.
    pub fn counted(mut self, metrics: Arc<Metrics>) -> Receivers {
        self.metrics = Some(metrics);
        self
    }
}

/// The routes, to mount on the agent's HTTP server (or serve alone).
pub fn router(receivers: Receivers, body_limit: usize) -> Router {
    Router::new()
        .route("/hooks/{repository}", post(receive))
        // The body is read here, within the limit, so an oversized one is answered like the rest.
        .layer(DefaultBodyLimit::disable())
        .with_state((Arc::new(receivers), body_limit))
}

async fn receive(
    State((receivers, limit)): State<(Arc<Receivers>, usize)>,
    Path(repository): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let provider = receivers
        .by_name
        .get(&repository)
        .map_or("unknown", |r| r.provider.name());
    // A body declared too large is refused from its headers, before it is sent (a client
    // waiting for `100 Continue` gets the answer at once); one that only turns out too large
    // is read up to the limit and no further.
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let collected = match declared {
        Some(length) if length > limit as u64 => None,
        _ => match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit)).await {
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => None,
            read => Some(read),
        },
    };
    let response = match collected {
        Some(Ok(collected)) => deliver(&receivers, &repository, &headers, &collected.to_bytes()),
        None => {
            tracing::warn!(
                repository,
                provider,
                limit,
                "Refused a webhook delivery over the body limit."
            );
            answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                "error",
                &format!("the body is over the limit of {limit} bytes"),
            )
        }
        Some(Err(e)) => {
            tracing::warn!(repository, provider, error = %e, "Could not read a webhook delivery.");
            answer(StatusCode::BAD_REQUEST, "error", "the body could not be read")
        }
    };
    if let Some(metrics) = &receivers.metrics {
        let result = match response.status() {
            StatusCode::ACCEPTED => "accepted",
            StatusCode::OK => "ignored",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            _ => "rejected",
        };
        metrics.webhook(provider, result);
    }
    response
}

fn deliver(receivers: &Receivers, repository: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    let Some(receiver) = receivers.by_name.get(repository) else {
        return answer(StatusCode::NOT_FOUND, "error", "no such repository");
    };
    let provider = receiver.provider.name();
    if let Err(rejection) = receiver.provider.authenticate(headers, body, &receiver.secret) {
        let message = match rejection {
            Rejection::MissingSignature(header) => format!("missing {header}"),
            _ => "signature does not match".to_owned(),
        };
        tracing::warn!(repository, provider, reason = %message, "Refused a webhook.");
        return answer(StatusCode::UNAUTHORIZED, "error", &message);
    }
    let refs = match receiver.provider.event(headers, body) {
        Ok(Event::Ping) => return answer(StatusCode::OK, "pong", "webhook configured"),
        Ok(Event::Other(event)) => {
            return answer(
                StatusCode::OK,
                "ignored",
                &format!("event `{event}` does not trigger a fetch"),
            );
        }
        Ok(Event::Push(refs)) => refs,
        Err(Rejection::Malformed(reason)) => return answer(StatusCode::BAD_REQUEST, "error", &reason),
        Err(_) => return answer(StatusCode::BAD_REQUEST, "error", "malformed request"),
    };
    let tracked: Vec<String> = refs.into_iter().filter(|r| receiver.refs.contains(r)).collect();
    if tracked.is_empty() {
        return answer(StatusCode::OK, "ignored", "the push touches no tracked ref");
    }
    let rung = receiver.doorbell.ring(Reason::Webhook {
        provider,
        refs: tracked.clone(),
    });
    tracing::info!(repository, provider, refs = ?tracked, ?rung, "Webhook rang for a fetch.");
    match rung {
        Rung::Queued => answer(StatusCode::ACCEPTED, "queued", "a fetch is queued"),
        Rung::Coalesced => answer(StatusCode::ACCEPTED, "coalesced", "a fetch was already queued"),
        Rung::Closed => answer(StatusCode::SERVICE_UNAVAILABLE, "error", "shutting down"),
    }
}

fn answer(status: StatusCode, outcome: &str, message: &str) -> Response {
    (status, Json(json!({ "status": outcome, "message": message }))).into_response()
}
