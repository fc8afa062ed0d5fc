//! What a signed-in identity does from the dashboard: sign in with an access token, sync an
//! environment, roll it back (to the commit before its rollback point, or one it ran before),
//! hand over a signed approval, sign out. Every action is a form posted with the session's anti-forgery token and authorized
//! exactly as the API authorizes it, with the session's token: without a session it is refused
//! (401), with a forged or missing anti-forgery token too (403), and without the role or the
//! environment as the API refuses it.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use tokio::sync::oneshot;

use super::page::{self, Viewer};
use super::session::{Session, set_cookie};
use crate::access::{Action, Refused};
use crate::agent::{Done, Input, Received, RolledBack};
use crate::api::{Api, command_status};
use crate::error::chain;
use crate::secret::Secret;

/// How long an action's page waits for the worker's answer before saying the action started.
const PATIENCE: Duration = Duration::from_secs(3);

/// The sign-in form.
pub(super) async fn sign_in_page(State(api): State<Api>, headers: HeaderMap) -> Response {
    let viewer = Viewer::of(&api, &headers);
    page::document("Sign in", &[], viewer.as_ref(), sign_in_form(None))
}

fn sign_in_form(error: Option<&str>) -> maud::Markup {
    html! {
        @if let Some(error) = error { p.refused role="alert" { (error) } }
        form method="post" action="/sign-in" {
            p {
                label for="token" { "Access token" }
                br;
                input #token type="password" name="token" autocomplete="current-password" required;
            }
            p { button type="submit" { "Sign in" } }
        }
        p.none { "An identity's token from the agent's access configuration (or its API token). Signed in, you act with its role." }
    }
}

/// Signs in with the posted token: a session cookie, then the overview.
pub(super) async fn sign_in(State(api): State<Api>, body: Bytes) -> Response {
    let token = form(&body, "token").unwrap_or_default();
    let name = api
        .access
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .caller(&token)
        .map(|identity| identity.name.clone());
    let Some(name) = name else {
        let body = sign_in_form(Some("That token is not one of this agent's identities."));
        return with_status(StatusCode::UNAUTHORIZED, page::document("Sign in", &[], None, body));
    };
    match api.sessions.open(&name, Secret::new(token)) {
        Ok(id) => {
            tracing::info!(identity = %name, "Signed in to the dashboard.");
            redirect("/", Some(set_cookie(&id, api.tls)))
        }
        Err(e) => failed(&format!("cannot make a session: {e}")),
    }
}

/// Signs out: the session ends, the cookie goes.
pub(super) async fn sign_out(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    let session = match acting(&api, &headers, &body) {
        Ok(session) => session,
        Err((status, why)) => return refused(status, &why),
    };
    api.sessions.close(&headers);
    tracing::info!(identity = %session.name, "Signed out of the dashboard.");
    redirect("/", Some(set_cookie("", api.tls)))
}

/// Syncs the environment: applies its head now.
pub(super) async fn sync(State(api): State<Api>, Path(env): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let by = match acting_as(&api, &headers, &body, Action::Sync, &env) {
        Ok(by) => by,
        Err((status, why)) => return refused(status, &why),
    };
    let (reply, answer) = oneshot::channel();
    let input = Input::Sync {
        by,
        skip_migrations: false,
        reply,
    };
    run(&api, &headers, &env, "Sync", input, answer).await
}

/// Rolls the environment back: to the posted commit, else the one before its rollback point.
pub(super) async fn rollback(
    State(api): State<Api>,
    Path(env): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let by = match acting_as(&api, &headers, &body, Action::Rollback, &env) {
        Ok(by) => by,
        Err((status, why)) => return refused(status, &why),
    };
    let (reply, answer) = oneshot::channel();
    let input = Input::Rollback {
        to: form(&body, "to").filter(|to| !to.is_empty()),
        by,
        skip_migrations: false,
        reply,
    };
    run(&api, &headers, &env, "Rollback", input, answer).await
}

/// Hands the posted approval — the signed tag object `plumb approve --print` prints — to the
/// environment's worker, which verifies it under the signing policy as the API's approvals are
/// verified; the identity is recorded as who handed it over.
pub(super) async fn approve(
    State(api): State<Api>,
    Path(env): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let by = match acting_as(&api, &headers, &body, Action::Approve, &env) {
        Ok(by) => by,
        Err((status, why)) => return refused(status, &why),
    };
    // A browser's textarea sends CRLF line ends; the signed object has LF alone.
    let raw = form(&body, "approval").unwrap_or_default().replace("\r\n", "\n");
    if raw.trim().is_empty() {
        return refused(
            StatusCode::BAD_REQUEST,
            "Paste the approval that `plumb approve --print` printed.",
        );
    }
    let (reply, answer) = oneshot::channel();
    let input = Input::Approve { raw, by, reply };
    run(&api, &headers, &env, "Approval", input, answer).await
}

/// The session of a posted action, its anti-forgery token checked; or the refusal.
fn acting(api: &Api, headers: &HeaderMap, body: &Bytes) -> Result<Session, Refusal> {
    let Some(session) = api.sessions.of(headers) else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "Sign in first: acting needs a session.".to_owned(),
        ));
    };
    if session.forged(form(body, "csrf").as_deref()) {
        return Err((
            StatusCode::FORBIDDEN,
            "This form does not carry the session's anti-forgery token: reload the page and act from it.".to_owned(),
        ));
    }
    Ok(session)
}

/// The name of the identity taking `action` on `env`: the session's, its anti-forgery token
/// checked, authorized as the API authorizes its token.
fn acting_as(api: &Api, headers: &HeaderMap, body: &Bytes, action: Action, env: &str) -> Result<String, Refusal> {
    let session = acting(api, headers, body)?;
    authorize(api, &session, action, env)
}

/// Why an action is refused: the status and the words.
type Refusal = (StatusCode, String);

/// The identity's name when the session's token may take `action` on `env`, as the API decides.
fn authorize(api: &Api, session: &Session, action: Action, env: &str) -> Result<String, Refusal> {
    let access = api.access.read().unwrap_or_else(|e| e.into_inner());
    match access.authorize(Some(session.token.expose()), None, action, Some(env)) {
        Ok(Some(identity)) => Ok(identity.name.clone()),
        Ok(None) => Ok(session.name.clone()),
        Err(Refused::Unauthenticated(why)) => Err((StatusCode::UNAUTHORIZED, why)),
        Err(Refused::Forbidden(why)) => Err((StatusCode::FORBIDDEN, why)),
    }
}

/// Hands `input` to `env`'s worker; the page says how it ended, or that it started when it
/// takes longer than [`PATIENCE`] (the environment's page then shows it running).
async fn run<T: Answer + Send + 'static>(
    api: &Api,
    headers: &HeaderMap,
    env: &str,
    what: &str,
    input: Input,
    mut answer: oneshot::Receiver<Result<T, crate::agent::CommandError>>,
) -> Response {
    let worker = api.workers.read().unwrap_or_else(|e| e.into_inner()).get(env).cloned();
    let Some(worker) = worker else {
        return page::not_found(&format!("This agent applies no environment named `{env}`."));
    };
    if worker.send(input).await.is_err() {
        return failed("the environment's worker stopped");
    }
    let viewer = Viewer::of(api, headers);
    let trail = [(env, format!("/environments/{env}"))];
    let title = format!("{what} of {env}");
    let answered = tokio::time::timeout(PATIENCE, &mut answer).await;
    let body = match answered {
        Ok(Ok(Ok(done))) => html! {
            (done.said())
            p { a href={ "/environments/" (env) } { "Back to " (env) } }
        },
        Ok(Ok(Err(refused))) => {
            let status = command_status(&refused);
            let body = html! {
                p.refused role="alert" { (chain(&refused)) }
                p { a href={ "/environments/" (env) } { "Back to " (env) } }
            };
            return with_status(status, page::document(&title, &trail, viewer.as_ref(), body));
        }
        Ok(Err(_)) => return failed("the environment's worker stopped"),
        Err(_) => {
            // Still running: its outcome goes to the ledger, as every attempt's does.
            tokio::spawn(async move {
                let _ = answer.await;
            });
            html! {
                p { "Started; it is still running." }
                p { a href={ "/environments/" (env) } { "Follow it on " (env) "'s page" } }
            }
        }
    };
    page::document(&title, &trail, viewer.as_ref(), body)
}

/// What the page says of an action that ended.
trait Answer {
    fn said(&self) -> maud::Markup;
}

impl Answer for Done {
    fn said(&self) -> maud::Markup {
        html! { p { "Done: " (self.outcome) } }
    }
}

impl Answer for RolledBack {
    fn said(&self) -> maud::Markup {
        html! {
            (self.done.said())
            @if let Some(revert) = &self.revert {
                p { "Make git agree with what runs: open this as a pull request." }
                pre { (revert) }
            }
        }
    }
}

impl Answer for Received {
    fn said(&self) -> maud::Markup {
        let approval = &self.approval;
        html! {
            p {
                "Received: " (approval.user) "'s approval of " (page::commit(Some(&self.commit)))
                ", signed " (page::time(&approval.signed)) " with key " code { (approval.fingerprint) }
                ", stored at " code { (self.reference) } "."
            }
            p { "Whether it lets the commit through is judged with the environment's other approvals." }
        }
    }
}

/// Field `name` of a form-encoded body.
fn form(body: &Bytes, name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn refused(status: StatusCode, why: &str) -> Response {
    let body = html! { p.refused role="alert" { (why) } p { a href="/sign-in" { "Sign in" } } };
    with_status(status, page::document("Refused", &[], None, body))
}

fn failed(why: &str) -> Response {
    tracing::error!(error = why, "A dashboard action failed.");
    with_status(
        StatusCode::SERVICE_UNAVAILABLE,
        page::document("Failed", &[], None, html! { p.refused role="alert" { (why) } }),
    )
}

fn with_status(status: StatusCode, page: Response) -> Response {
    let (mut parts, body) = page.into_parts();
    parts.status = status;
    Response::from_parts(parts, body)
}

fn redirect(to: &str, cookie: Option<String>) -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response();
    if let Some(cookie) = cookie
        && let Ok(value) = cookie.parse()
    {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
