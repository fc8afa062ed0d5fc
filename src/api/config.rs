//! Each service's configuration over the API, as the environment's rollback point renders it:
//! `GET …/services/{svc}/config` (all of it, or a part with `?path=database.pool`) with an
//! entity tag for conditional reads (`If-None-Match` → 304), and `GET …/config/events`, a
//! Server-Sent Events stream of every change applied from then on (`configurationChanged`: path,
//! old and new value, commit, signer), resumed after the last event a client saw
//! (`Last-Event-ID`). Encrypted values are masked (`***`), but to the service's own read token.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};

use super::{Api, error, known, unknown};
use crate::appconfig::token::Holder;
use crate::appconfig::{Served, at_path, etag};
use crate::error::chain;
use crate::ledger::{self, ConfigEvent};

/// How many event streams may be open at once.
const STREAMS: usize = 256;

/// The most events replayed to a client resuming; it resumes again for the rest.
const REPLAY: usize = 1000;

/// How often an idle stream says it is alive (so proxies keep it open).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

static OPEN_STREAMS: std::sync::LazyLock<Arc<Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(Semaphore::new(STREAMS)));

#[derive(Deserialize)]
pub(super) struct Part {
    path: Option<String>,
}

/// Why a service's configuration is not served.
enum Unserved {
    /// No such environment here.
    Environment,
    /// Nothing applied there yet.
    Nothing,
    /// No such service at the rollback point (its first digits).
    Service(String),
}

impl Unserved {
    fn answer(&self, env: &str, svc: &str) -> Response {
        match self {
            Unserved::Environment => unknown(env),
            Unserved::Nothing => {
                let mut answer = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("nothing is applied in `{env}` yet"),
                );
                answer
                    .headers_mut()
                    .insert(header::RETRY_AFTER, "5".parse().expect("a number"));
                answer
            }
            Unserved::Service(commit) => error(
                StatusCode::NOT_FOUND,
                &format!("`{env}` runs no service `{svc}` at {commit}"),
            ),
        }
    }
}

/// What `env` serves for `svc` now, or why nothing.
fn served(api: &Api, env: &str, svc: &str) -> Result<Arc<Served>, Unserved> {
    if !known(api, env) {
        return Err(Unserved::Environment);
    }
    let served = {
        let board = api.board.read().unwrap_or_else(|e| e.into_inner());
        board.get(env).and_then(|s| s.configs.clone())
    };
    let served = served.ok_or(Unserved::Nothing)?;
    if !served.services.contains_key(svc) {
        return Err(Unserved::Service(served.commit.chars().take(12).collect()));
    }
    Ok(served)
}

/// Whether `path` is the configuration of `holder`'s service, or its events: all a read token
/// reads.
pub(super) fn reads_own(path: &str, holder: &Holder) -> bool {
    let own = format!(
        "/api/v1/environments/{}/services/{}/config",
        holder.environment, holder.service
    );
    path.strip_prefix(&own)
        .is_some_and(|rest| rest.is_empty() || rest == "/events")
}

/// `GET /api/v1/environments/{env}/services/{svc}/config[?path=a.b]`.
pub(super) async fn read(
    State(api): State<Api>,
    Path((env, svc)): Path<(String, String)>,
    Query(part): Query<Part>,
    headers: HeaderMap,
) -> Response {
    let served = match served(&api, &env, &svc) {
        Ok(served) => served,
        Err(unserved) => return unserved.answer(&env, &svc),
    };
    let path = part.path.unwrap_or_default();
    // Clear values for the service's own token, masked for everyone else.
    let whole = match super::bearer(&headers).and_then(|b| api.tokens.holder(b)) {
        Some(holder) if holder.environment == env && holder.service == svc => served.clear[&svc].value(),
        _ => &served.services[&svc],
    };
    let Some(value) = at_path(whole, &path) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("the configuration of `{svc}` in `{env}` has nothing at `{path}`"),
        );
    };
    let tag = etag(&served.commit, value);
    let seen = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if seen {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response();
    }
    let body = json!({
        "environment": env,
        "service": svc,
        "commit": served.commit,
        "path": path,
        "value": value,
    });
    ([(header::ETAG, tag)], axum::Json(body)).into_response()
}

#[derive(Deserialize)]
pub(super) struct Resume {
    /// The last event seen, for clients that cannot send `Last-Event-ID`.
    after: Option<i64>,
}

/// `GET /api/v1/environments/{env}/services/{svc}/config/events`.
pub(super) async fn events(
    State(api): State<Api>,
    Path((env, svc)): Path<(String, String)>,
    Query(resume): Query<Resume>,
    headers: HeaderMap,
) -> Response {
    if let Err(unserved) = served(&api, &env, &svc) {
        return unserved.answer(&env, &svc);
    }
    let Ok(permit) = OPEN_STREAMS.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{STREAMS} event streams are open already"),
        );
    };
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(resume.after);
    // Listening before reading what was missed: nothing falls between the two.
    let live = api.config_events.subscribe();
    let replay = match last_seen {
        Some(after) => {
            let (e, s) = (env.clone(), svc.clone());
            match ledger::read(api.ledger.clone(), move |l| {
                l.config_events_after(&e, &s, after, REPLAY)
            })
            .await
            {
                Ok(missed) => missed,
                Err(e) => {
                    tracing::error!(environment = %env, service = %svc, error = %chain(&e), "Cannot read the configuration changes.");
                    return error(StatusCode::INTERNAL_SERVER_ERROR, &chain(&e));
                }
            }
        }
        None => Vec::new(),
    };
    let last = replay.last().map(|e| e.id).or(last_seen).unwrap_or(0);
    let stream = Stream {
        replay: replay.into(),
        live,
        last,
        environment: env,
        service: svc,
        stop: api.stop.clone(),
        _permit: permit,
    };
    let body = futures_util::stream::unfold(stream, Stream::next);
    let hello = futures_util::stream::once(async { Ok(Bytes::from_static(b"retry: 2000\n\n")) });
    let body = futures_util::StreamExt::chain(hello, body);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// One client's stream: what it missed, then what comes.
struct Stream {
    replay: VecDeque<ConfigEvent>,
    live: broadcast::Receiver<ConfigEvent>,
    /// The newest event sent.
    last: i64,
    environment: String,
    service: String,
    stop: tokio_util::sync::CancellationToken,
    _permit: OwnedSemaphorePermit,
}

impl Stream {
    async fn next(mut self) -> Option<(Result<Bytes, std::convert::Infallible>, Stream)> {
        if let Some(event) = self.replay.pop_front() {
            return Some((Ok(frame(&event)), self));
        }
        let keep_alive = tokio::time::sleep(KEEP_ALIVE);
        tokio::pin!(keep_alive);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                _ = &mut keep_alive => return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), self)),
                received = self.live.recv() => match received {
                    Ok(event) if event.environment == self.environment && event.service == self.service && event.id > self.last => {
                        self.last = event.id;
                        return Some((Ok(frame(&event)), self));
                    }
                    Ok(_) => {}
                    // Too far behind, or the agent stops: the client resumes from `last`.
                    Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }
}

/// An event as the stream sends it.
fn frame(event: &ConfigEvent) -> Bytes {
    let data = json!({
        "path": event.change.path,
        "oldValue": event.change.old_value,
        "newValue": event.change.new_value,
        "commit": event.commit,
        "signer": event.signer,
        "at": event.at,
    });
    Bytes::from(format!(
        "id: {}\nevent: configurationChanged\ndata: {data}\n\n",
        event.id
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_token_reads_its_services_configuration_and_events_only() {
        let holder = Holder {
            environment: "dev".to_owned(),
            service: "web".to_owned(),
        };
        assert!(reads_own("/api/v1/environments/dev/services/web/config", &holder));
        assert!(reads_own(
            "/api/v1/environments/dev/services/web/config/events",
            &holder
        ));
        for other in [
            "/api/v1/environments/dev/services/web-2/config",
            "/api/v1/environments/dev/services/web/configx",
            "/api/v1/environments/dev/services/web",
            "/api/v1/environments/dev2/services/web/config",
            "/api/v1/status",
        ] {
            assert!(!reads_own(other, &holder), "{other}");
        }
    }
}
