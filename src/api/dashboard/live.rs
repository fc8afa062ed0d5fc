//! `/environments/{env}/live`: Server-Sent Events telling an environment's page that what it
//! shows changed — an attempt started, a step began or ended, the traffic moved, the head moved,
//! drift was found (`/live`: any environment's, for the overview) —
//! so the page fetches itself again and puts the new content in place (`dashboard.js`) without a
//! reload. The agent looks every quarter of a second, from the status it already keeps (and the
//! ledger's newest attempt while one runs); at most 64 pages follow at once; every stream ends
//! when the agent stops.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::page;
use crate::api::{Api, known, snapshot};

/// How many pages may follow their environment at once.
const STREAMS: usize = 64;
static OPEN: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(STREAMS)));
/// How often the environment is looked at.
const EVERY: Duration = Duration::from_millis(250);
/// How often an idle stream says it is alive (so proxies keep it open).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) async fn events(State(api): State<Api>, Path(env): Path<String>, headers: HeaderMap) -> Response {
    if !known(&api, &env) && page::readable(&api, &headers) {
        return StatusCode::NOT_FOUND.into_response();
    }
    follow(api, Some(env), &headers).await
}

/// The overview's events: any environment's change.
pub(super) async fn overview_events(State(api): State<Api>, headers: HeaderMap) -> Response {
    follow(api, None, &headers).await
}

/// A stream of `change` events for one environment, or for all of them (`None`).
async fn follow(api: Api, env: Option<String>, headers: &HeaderMap) -> Response {
    if !page::readable(&api, headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Ok(permit) = OPEN.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many pages follow the agent").into_response();
    };
    let seen = seen(&api, env.as_deref()).await;
    let stream = Follow {
        api,
        env,
        seen,
        _permit: permit,
    };
    let body = futures_util::stream::unfold(stream, Follow::next);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// The fingerprint of `env`, or of every environment.
async fn seen(api: &Api, env: Option<&str>) -> u64 {
    match env {
        Some(env) => fingerprint(api, env).await,
        None => {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            for env in crate::api::environments(api) {
                (fingerprint(api, &env).await, env).hash(&mut hasher);
            }
            hasher.finish()
        }
    }
}

/// One page's stream.
struct Follow {
    api: Api,
    /// The environment followed; every one (the overview) when `None`.
    env: Option<String>,
    /// The fingerprint of what the page was last told about.
    seen: u64,
    _permit: OwnedSemaphorePermit,
}

impl Follow {
    async fn next(mut self) -> Option<(Result<Bytes, std::convert::Infallible>, Follow)> {
        let keep_alive = tokio::time::sleep(KEEP_ALIVE);
        tokio::pin!(keep_alive);
        loop {
            tokio::select! {
                _ = self.api.stop.cancelled() => return None,
                _ = &mut keep_alive => return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), self)),
                _ = tokio::time::sleep(EVERY) => {
                    let now = seen(&self.api, self.env.as_deref()).await;
                    if now != self.seen {
                        self.seen = now;
                        return Some((Ok(Bytes::from(format!("event: change\ndata: {now:x}\n\n"))), self));
                    }
                }
            }
        }
    }
}

/// What the environment's page shows, digested: its status and its last attempt's progress.
async fn fingerprint(api: &Api, env: &str) -> u64 {
    let (status, last) = snapshot(api, env).await;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        &status.applied,
        &status.head,
        &status.refused,
        &status.waiting,
        &status.drift,
        &status.blocked,
        &status.restarts,
        status.busy,
        &status.awaiting,
    )
        .hash(&mut hasher);
    // A rollout's traffic as it moves: the weights set, the answers counted.
    format!("{:?}", status.traffic).hash(&mut hasher);
    // What the target ran, but not when it was looked at: a check that finds the same is no
    // change.
    if let Some(running) = &status.running {
        format!("{:?}{:?}", running.services, running.health).hash(&mut hasher);
    }
    if let Some(last) = &last {
        (last.id, &last.finished, last.steps.len()).hash(&mut hasher);
        if let Some(step) = last.steps.last() {
            (&step.finished, step.error.is_some()).hash(&mut hasher);
        }
    }
    hasher.finish()
}
