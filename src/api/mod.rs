//! The agent's HTTP API: liveness and readiness, Prometheus metrics, each environment's status
//! (the rollback point, the head and who signed it, why a head was not applied or what it waits
//! for, drift, the last attempt with its steps; the notification channels' queues), its history
//! and migrations, what applying its head would do now, each service's configuration and its
//! changes as they are applied (`config`), and the commands — sync, rollback, resolving an
//! interrupted migration, handing over an approval — each taken only from an identity whose role
//! allows it there ([`crate::access`]). Reads are open unless the access says otherwise. Bodies
//! are limited to 16 KiB.

mod config;
mod dashboard;

pub use dashboard::Sessions;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::access::{Access, Action, Refused};
use crate::agent::{Board, CommandError, Input};
use crate::appconfig::token::is_read_token;
use crate::error::chain;
use crate::ledger::{self, AttemptRecord};
use crate::metrics::Metrics;
use crate::tls::Peer;

/// The largest request body accepted.
const BODY_LIMIT: usize = 16 * 1024;

/// The workers' inputs, by environment.
pub type Workers = Arc<RwLock<BTreeMap<String, mpsc::Sender<Input>>>>;

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    /// Every environment's status.
    pub board: Board,
    /// Every environment's worker.
    pub workers: Workers,
    /// The ledger file, opened read-only per request.
    pub ledger: PathBuf,
    /// Who may call what (the identities, whether reads need one). Replaced on a
    /// configuration reload.
    pub access: Arc<RwLock<Access>>,
    /// The repositories whose first fetch has not been handled yet; ready at zero.
    pub unread: Arc<AtomicUsize>,
    /// The agent's metrics.
    pub metrics: Arc<Metrics>,
    /// The notification channels: name and kind.
    pub channels: Arc<Vec<(String, &'static str)>>,
    /// Each configuration change, once recorded.
    pub config_events: tokio::sync::broadcast::Sender<crate::ledger::ConfigEvent>,
    /// The services' read tokens.
    pub tokens: Arc<crate::appconfig::token::Tokens>,
    /// Cancelled when the agent stops: the event streams end.
    pub stop: tokio_util::sync::CancellationToken,
    /// Who is signed in to the dashboard.
    pub sessions: Arc<dashboard::Sessions>,
    /// The ledger's last verification, as the dashboard shows it.
    pub verified: Arc<dashboard::Verified>,
    /// Whether the API is served over TLS: the dashboard's cookie is then `Secure`.
    pub tls: bool,
}

/// The API's routes.
pub fn router(api: Api) -> Router {
    let reads = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/status", get(status))
        .route("/api/v1/environments/{env}", get(environment))
        .route("/api/v1/environments/{env}/history", get(history))
        .route("/api/v1/environments/{env}/migrations", get(migrations))
        .route("/api/v1/environments/{env}/diff", get(diff))
        .route("/api/v1/environments/{env}/services/{svc}/config", get(config::read))
        .route(
            "/api/v1/environments/{env}/services/{svc}/config/events",
            get(config::events),
        )
        .route_layer(axum::middleware::from_fn_with_state(api.clone(), guard_reads));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(reads)
        .merge(dashboard::routes())
        .route("/api/v1/environments/{env}/sync", post(sync))
        .route("/api/v1/environments/{env}/rollback", post(rollback))
        .route("/api/v1/environments/{env}/migrations/resolve", post(resolve))
        .route("/api/v1/environments/{env}/approvals", post(approve))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(api)
}

/// Refuses a read without an identity when reads need one, and a service's read token
/// anywhere but on its own configuration.
async fn guard_reads(
    State(api): State<Api>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = bearer(request.headers()).filter(|b| is_read_token(b)) {
        return match api.tokens.holder(token) {
            Some(holder) if config::reads_own(request.uri().path(), &holder) => next.run(request).await,
            Some(holder) => error(
                StatusCode::FORBIDDEN,
                &format!(
                    "this token reads the configuration of `{}` in `{}` only",
                    holder.service, holder.environment
                ),
            ),
            None => refusal(Refused::Unauthenticated(
                "this read token was not made by this agent's key".to_owned(),
            )),
        };
    }
    let peer = request.extensions().get::<Peer>().cloned().unwrap_or_default();
    if let Err(refused) = authorized(&api, request.headers(), &peer, Action::Read, None) {
        return refusal(refused);
    }
    next.run(request).await
}

async fn readyz(State(api): State<Api>) -> Response {
    if api.unread.load(Ordering::Relaxed) == 0 {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the first fetch has not been handled yet\n",
        )
            .into_response()
    }
}

/// This API's OpenAPI description (checked in as `docs/openapi.json`).
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn metrics(State(api): State<Api>) -> Response {
    // The running attempts' progress is read at scrape time, from the ledger.
    let busy: Vec<(String, bool)> = {
        let board = api.board.read().unwrap_or_else(|e| e.into_inner());
        board.iter().map(|(name, status)| (name.clone(), status.busy)).collect()
    };
    for (name, busy) in busy {
        let steps = match busy {
            true => newest_attempt(&api, &name).await.map_or(0, |r| r.steps.len()),
            false => 0,
        };
        api.metrics.steps(&name, steps);
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], api.metrics.encode()).into_response()
}

async fn status(State(api): State<Api>) -> Response {
    let names = environments(&api);
    let mut environments = Vec::with_capacity(names.len());
    for name in &names {
        environments.push(describe(&api, name, false).await);
    }
    let mut answer = json!({ "environments": environments });
    if !api.channels.is_empty() {
        answer["notifications"] = notifications(&api).await;
    }
    axum::Json(answer).into_response()
}

/// Each notification channel's outbox: what waits, what went last, what fails.
async fn notifications(api: &Api) -> Value {
    let states = match ledger::read(api.ledger.clone(), |l| l.outbox_state()).await {
        Ok(states) => states,
        Err(e) => {
            tracing::warn!(error = %chain(&e), "Cannot read the outbox.");
            return json!({ "error": chain(&e) });
        }
    };
    let channels: Vec<Value> = api
        .channels
        .iter()
        .map(|(name, kind)| {
            let mut channel = json!({ "channel": name, "kind": kind });
            let state = states.get(name).cloned().unwrap_or_default();
            if let (Value::Object(channel), Ok(Value::Object(state))) = (&mut channel, serde_json::to_value(state)) {
                channel.extend(state);
            }
            channel
        })
        .collect();
    Value::Array(channels)
}

async fn environment(State(api): State<Api>, Path(env): Path<String>) -> Response {
    if !known(&api, &env) {
        return unknown(&env);
    }
    axum::Json(describe(&api, &env, true).await).into_response()
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn history(State(api): State<Api>, Path(env): Path<String>, Query(limit): Query<Limit>) -> Response {
    if !known(&api, &env) {
        return unknown(&env);
    }
    let limit = limit.limit.unwrap_or(20).min(1000);
    let name = env.clone();
    match ledger::read(api.ledger.clone(), move |l| l.history(&name, limit)).await {
        Ok(records) => axum::Json(json!({ "environment": env, "attempts": records })).into_response(),
        Err(e) => {
            tracing::error!(environment = env, error = %chain(&e), "Cannot read the history.");
            error(StatusCode::INTERNAL_SERVER_ERROR, &chain(&e))
        }
    }
}

async fn migrations(State(api): State<Api>, Path(env): Path<String>, Query(limit): Query<Limit>) -> Response {
    if !known(&api, &env) {
        return unknown(&env);
    }
    let limit = limit.limit.unwrap_or(100).min(1000);
    let name = env.clone();
    match ledger::read(api.ledger.clone(), move |l| l.migrations(&name, limit)).await {
        Ok(records) => axum::Json(json!({ "environment": env, "migrations": records })).into_response(),
        Err(e) => {
            tracing::error!(environment = env, error = %chain(&e), "Cannot read the migrations.");
            error(StatusCode::INTERNAL_SERVER_ERROR, &chain(&e))
        }
    }
}

async fn diff(State(api): State<Api>, Path(env): Path<String>) -> Response {
    let (reply, answer) = oneshot::channel();
    command(&api, &env, Input::Plan(reply), answer).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SyncRequest {
    #[serde(default)]
    skip_migrations: bool,
}

async fn sync(
    State(api): State<Api>,
    Path(env): Path<String>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = peer.map(|p| p.0).unwrap_or_default();
    let by = match authorized(&api, &headers, &peer, Action::Sync, Some(&env)) {
        Ok(by) => by,
        Err(refused) => return refusal(refused),
    };
    let request: SyncRequest = match body_of(&body, "{\"skipMigrations\": BOOL}") {
        Ok(request) => request,
        Err(refused) => return error(StatusCode::BAD_REQUEST, &refused),
    };
    let (reply, answer) = oneshot::channel();
    let input = Input::Sync {
        by,
        skip_migrations: request.skip_migrations,
        reply,
    };
    command(&api, &env, input, answer).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RollbackRequest {
    to: Option<String>,
    #[serde(default)]
    skip_migrations: bool,
}

/// A JSON body of `T`, or an empty one for its default; why not, saying what was expected.
fn body_of<T: serde::de::DeserializeOwned + Default>(body: &Bytes, expected: &str) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| format!("the body is not {expected}: {e}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalRequest {
    /// The approval: the text of the signed tag object `plumb approve` makes.
    approval: String,
}

async fn approve(
    State(api): State<Api>,
    Path(env): Path<String>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = peer.map(|p| p.0).unwrap_or_default();
    let by = match authorized(&api, &headers, &peer, Action::Approve, Some(&env)) {
        Ok(by) => by,
        Err(refused) => return refusal(refused),
    };
    let request: ApprovalRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body is not {{\"approval\": SIGNED TAG OBJECT}}: {e}"),
            );
        }
    };
    let (reply, answer) = oneshot::channel();
    let input = Input::Approve {
        raw: request.approval,
        by,
        reply,
    };
    command(&api, &env, input, answer).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveRequest {
    commit: String,
    service: Option<String>,
    #[serde(rename = "as")]
    state: crate::ledger::MigrationState,
    /// Who checked the database, as the caller says.
    by: Option<String>,
}

async fn resolve(
    State(api): State<Api>,
    Path(env): Path<String>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = peer.map(|p| p.0).unwrap_or_default();
    let caller = match authorized(&api, &headers, &peer, Action::Resolve, Some(&env)) {
        Ok(caller) => caller,
        Err(refused) => return refusal(refused),
    };
    let request: ResolveRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            let expected = "{\"commit\": COMMIT, \"as\": \"applied\"|\"rolled-back\", \"service\": NAME, \"by\": NAME}";
            return error(StatusCode::BAD_REQUEST, &format!("the body is not {expected}: {e}"));
        }
    };
    // The identity is who did it; a person named beside it (a shared token) is kept, marked
    // as their word.
    let by = match request
        .by
        .as_deref()
        .map(str::trim)
        .filter(|b| !b.is_empty() && *b != caller)
    {
        Some(name) if name.len() <= 200 => format!("{caller} (said: {name})"),
        Some(_) => return error(StatusCode::BAD_REQUEST, "`by` is longer than 200 bytes"),
        None => caller,
    };
    let (reply, answer) = oneshot::channel();
    let input = Input::Resolve {
        commit: request.commit,
        service: request.service,
        state: request.state,
        by,
        reply,
    };
    command(&api, &env, input, answer).await
}

async fn rollback(
    State(api): State<Api>,
    Path(env): Path<String>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = peer.map(|p| p.0).unwrap_or_default();
    let by = match authorized(&api, &headers, &peer, Action::Rollback, Some(&env)) {
        Ok(by) => by,
        Err(refused) => return refusal(refused),
    };
    let request: RollbackRequest = match body_of(&body, "{\"to\": COMMIT, \"skipMigrations\": BOOL}") {
        Ok(request) => request,
        Err(refused) => return error(StatusCode::BAD_REQUEST, &refused),
    };
    let (reply, answer) = oneshot::channel();
    let input = Input::Rollback {
        to: request.to,
        by,
        skip_migrations: request.skip_migrations,
        reply,
    };
    command(&api, &env, input, answer).await
}

/// Hands `input` to `env`'s worker and answers with its reply.
async fn command<T: serde::Serialize>(
    api: &Api,
    env: &str,
    input: Input,
    answer: oneshot::Receiver<Result<T, CommandError>>,
) -> Response {
    let worker = api.workers.read().unwrap_or_else(|e| e.into_inner()).get(env).cloned();
    let Some(worker) = worker else {
        return unknown(env);
    };
    if worker.send(input).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the environment's worker stopped");
    }
    match answer.await {
        Ok(Ok(done)) => axum::Json(done).into_response(),
        Ok(Err(refused)) => {
            let status = command_status(&refused);
            if status.is_server_error() {
                tracing::error!(environment = env, error = %chain(&refused), "An API command failed.");
            }
            error(status, &chain(&refused))
        }
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the environment's worker stopped"),
    }
}

/// The status that answers a command the worker refused.
fn command_status(refused: &CommandError) -> StatusCode {
    match refused {
        CommandError::NotFound(_) => StatusCode::NOT_FOUND,
        CommandError::Conflict(_) => StatusCode::CONFLICT,
        CommandError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        CommandError::Ledger(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Who may take `action` (on `env`): the identity's name (`anonymous` for an open read), or
/// why not.
fn authorized(
    api: &Api,
    headers: &HeaderMap,
    peer: &Peer,
    action: Action,
    env: Option<&str>,
) -> Result<String, Refused> {
    let access = api.access.read().unwrap_or_else(|e| e.into_inner());
    let identity = access.authorize(bearer(headers), peer.0.as_deref(), action, env)?;
    Ok(identity.map_or_else(|| "anonymous".to_owned(), |i| i.name.clone()))
}

/// The bearer token a call carries.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The answer to a refused call: 401 without a known token, 403 without the role or the
/// environment.
fn refusal(refused: Refused) -> Response {
    match refused {
        Refused::Forbidden(reason) => error(StatusCode::FORBIDDEN, &reason),
        Refused::Unauthenticated(reason) => {
            let mut response = error(StatusCode::UNAUTHORIZED, &reason);
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// Whether `env` is run here, or followed and shown while it cannot start (its first fetch
/// failed).
fn known(api: &Api, env: &str) -> bool {
    api.workers.read().unwrap_or_else(|e| e.into_inner()).contains_key(env)
        || api.board.read().unwrap_or_else(|e| e.into_inner()).contains_key(env)
}

/// One environment's status with its last attempt: in `full`, or summed up (its step count and
/// newest step) for the list of every environment, whose size must not grow with the services.
async fn describe(api: &Api, name: &str, full: bool) -> Value {
    let (status, last) = snapshot(api, name).await;
    let mut value = serde_json::to_value(&status).expect("a status serializes");
    value["name"] = json!(name);
    value["synced"] = json!(status.applied.is_some() && status.applied == status.head && status.drift.is_empty());
    value["lastAttempt"] = match (&last, full) {
        (Some(last), false) => json!({
            "id": last.id,
            "started": last.started,
            "commit": last.attempt.commit,
            "signer": last.attempt.signer,
            "strategy": last.attempt.strategy,
            "trigger": last.attempt.trigger,
            "outcome": last.outcome,
            "finished": last.finished,
            "steps": last.steps.len(),
            "step": last.steps.last().map(|s| &s.name),
        }),
        _ => serde_json::to_value(last.as_deref()).expect("an attempt serializes"),
    };
    value
}

/// Environment `name`'s status, and its last attempt: the one in progress read from the ledger
/// step by step, else the worker's copy of the last one that ended.
async fn snapshot(api: &Api, name: &str) -> (crate::agent::Status, Option<Arc<AttemptRecord>>) {
    let status = api
        .board
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .cloned()
        .unwrap_or_default();
    let last = if status.busy {
        newest_attempt(api, name).await.map(Arc::new)
    } else {
        status.last_attempt.clone()
    };
    (status, last)
}

/// The environments this agent applies, by name.
fn environments(api: &Api) -> Vec<String> {
    api.workers
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .cloned()
        .collect()
}

/// The newest attempt of environment `name`, read from the ledger as it goes; `None` when it
/// cannot be read (the status then shows none).
async fn newest_attempt(api: &Api, name: &str) -> Option<AttemptRecord> {
    let environment = name.to_owned();
    match ledger::read(api.ledger.clone(), move |l| l.history(&environment, 1)).await {
        Ok(mut records) => records.pop(),
        Err(e) => {
            tracing::warn!(environment = name, error = %chain(&e), "Cannot read the attempt in progress.");
            None
        }
    }
}

fn unknown(env: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("no environment named `{env}` is applied by this agent"),
    )
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LedgerError;

    /// An API whose one environment, `dev`, has a worker that answers every request with the
    /// refusal `make` builds.
    fn answering(make: fn() -> CommandError) -> Api {
        let (sender, mut inputs) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(input) = inputs.recv().await {
                if let Input::Sync { reply, .. } = input {
                    let _ = reply.send(Err(make()));
                }
            }
        });
        Api {
            board: Board::default(),
            workers: Arc::new(RwLock::new(BTreeMap::from([("dev".to_owned(), sender)]))),
            ledger: PathBuf::from("/nonexistent/ledger.sqlite"),
            access: Arc::new(RwLock::new(Access::default())),
            unread: Arc::new(AtomicUsize::new(0)),
            metrics: Arc::new(Metrics::default()),
            channels: Arc::default(),
            config_events: tokio::sync::broadcast::channel(1).0,
            tokens: Arc::new(crate::appconfig::token::Tokens::with_key([1; 32])),
            stop: tokio_util::sync::CancellationToken::new(),
            sessions: Arc::default(),
            verified: Arc::default(),
            tls: false,
        }
    }

    async fn sync_answer(make: fn() -> CommandError) -> (StatusCode, String) {
        let api = answering(make);
        let (reply, answer) = oneshot::channel();
        let response = command(
            &api,
            "dev",
            Input::Sync {
                by: "test".to_owned(),
                skip_migrations: false,
                reply,
            },
            answer,
        )
        .await;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), BODY_LIMIT).await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        (status, body["error"].as_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn a_refused_command_is_answered_by_its_kind() {
        let (status, _) = sync_answer(|| CommandError::NotFound("`abc` was never applied".into())).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = sync_answer(|| CommandError::Conflict("no head has been fetched yet".into())).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, message) = sync_answer(|| CommandError::Unavailable("connection refused".into())).await;
        assert_eq!(
            (status, message.as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the target cannot be reached: connection refused"
            )
        );
        // The ledger's failure is the agent's, with its cause in the message.
        let (status, message) = sync_answer(|| {
            CommandError::Ledger(LedgerError::Sql {
                path: "/state/ledger.sqlite".into(),
                source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None),
            })
        })
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            message.starts_with("the ledger /state/ledger.sqlite failed: "),
            "{message}"
        );
        assert!(message.contains("full"), "{message}");
    }

    #[tokio::test]
    async fn a_stopped_worker_is_unavailable_and_an_unknown_environment_not_found() {
        let api = answering(|| unreachable!("no input reaches a dropped worker"));
        let (reply, answer) = oneshot::channel();
        assert_eq!(
            command(
                &api,
                "prod",
                Input::Sync {
                    by: "test".to_owned(),
                    skip_migrations: false,
                    reply
                },
                answer
            )
            .await
            .status(),
            StatusCode::NOT_FOUND
        );
        api.workers
            .write()
            .unwrap()
            .insert("gone".to_owned(), mpsc::channel(1).0);
        let (reply, answer) = oneshot::channel();
        let response = command(
            &api,
            "gone",
            Input::Sync {
                by: "test".to_owned(),
                skip_migrations: false,
                reply,
            },
            answer,
        )
        .await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
