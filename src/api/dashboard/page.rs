//! What every page of the dashboard shares: the document around it, and how commits, times
//! and outcomes read.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use crate::api::Api;
use crate::ledger::Outcome;

/// Who is signed in, for the page's header and its forms.
pub(super) struct Viewer {
    /// The identity's name.
    pub name: String,
    /// The session's anti-forgery token, which each form carries.
    pub csrf: String,
}

impl Viewer {
    /// The identity signed in with the request's session, if any.
    pub fn of(api: &Api, headers: &HeaderMap) -> Option<Viewer> {
        api.sessions.of(headers).map(|s| Viewer {
            name: s.name,
            csrf: s.csrf,
        })
    }

    /// The hidden field that carries the anti-forgery token.
    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf); }
    }
}

/// A whole page: `title`, the trail of links above it, who is signed in, and `body`.
pub(super) fn document(title: &str, trail: &[(&str, String)], viewer: Option<&Viewer>, body: Markup) -> Response {
    answer(StatusCode::OK, title, trail, viewer, None, body)
}

/// A page that follows what the events at `live` say changed.
pub(super) fn live_document(
    title: &str,
    trail: &[(&str, String)],
    viewer: Option<&Viewer>,
    live: &str,
    body: Markup,
) -> Response {
    answer(StatusCode::OK, title, trail, viewer, Some(live), body)
}

/// A page saying what was not found.
pub(super) fn not_found(what: &str) -> Response {
    answer(
        StatusCode::NOT_FOUND,
        "Not found",
        &[],
        None,
        None,
        html! { p { (what) } },
    )
}

fn answer(
    status: StatusCode,
    title: &str,
    trail: &[(&str, String)],
    viewer: Option<&Viewer>,
    live: Option<&str>,
    body: Markup,
) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · plumb" }
                link rel="stylesheet" href="/dashboard.css";
                script src="/dashboard.js" defer {}
            }
            body {
                header {
                    nav aria-label="Trail" {
                        a href="/" { "plumb" }
                        @for (name, href) in trail {
                            " / " a href=(href) { (name) }
                        }
                    }
                    div.viewer {
                        @match viewer {
                            Some(viewer) => {
                                "Signed in as " strong { (viewer.name) } " "
                                form.inline method="post" action="/sign-out" {
                                    (viewer.csrf_field())
                                    button type="submit" { "Sign out" }
                                }
                            }
                            None => a href="/sign-in" { "Sign in" },
                        }
                    }
                }
                main data-live=[live] {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // Nothing but the agent's own style sheet, script and forms; never in a frame.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        markup.into_string(),
    )
        .into_response()
}

/// A commit's first 12 hex digits, its whole id in the title.
pub(super) fn commit(id: Option<&str>) -> Markup {
    match id {
        Some(id) => html! { code title=(id) { (&id[..id.len().min(12)]) } },
        None => html! { span.none { "none" } },
    }
}

/// An RFC 3339 time as `2026-12-07 00:41:06 UTC`, in a `time` element.
pub(super) fn time(at: &str) -> Markup {
    let shown = at
        .get(..19)
        .map_or_else(|| at.to_owned(), |t| format!("{} UTC", t.replace('T', " ")));
    html! { time datetime=(at) { (shown) } }
}

/// How an attempt ended (or that it runs), as a badge.
pub(super) fn outcome(outcome: Option<&Outcome>) -> Markup {
    let (class, word) = match outcome {
        None => ("running", "running"),
        Some(Outcome::Succeeded) => ("good", "succeeded"),
        Some(Outcome::RolledBack(_)) => ("bad", "rolled back"),
        Some(Outcome::Failed(_)) => ("bad", "failed"),
        Some(Outcome::Refused(_)) => ("bad", "refused"),
        Some(Outcome::Interrupted) => ("warn", "interrupted"),
    };
    html! { span class={ "badge " (class) } { (word) } }
}

/// Why an attempt ended as it did, when it says.
pub(super) fn reason(outcome: Option<&Outcome>) -> Option<&str> {
    match outcome? {
        Outcome::RolledBack(why) | Outcome::Failed(why) | Outcome::Refused(why) => Some(why),
        Outcome::Succeeded | Outcome::Interrupted => None,
    }
}

/// How long from `started` to `finished` (RFC 3339), as `850 ms`, `12.4 s` or `3 min 5 s`.
pub(super) fn duration(started: &str, finished: Option<&str>) -> Option<String> {
    let parse = |at: &str| chrono::DateTime::parse_from_rfc3339(at).ok();
    let took = parse(finished?)? - parse(started)?;
    let ms = took.num_milliseconds().max(0);
    Some(match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
    })
}

/// Whether the request may read the dashboard: always, unless the access configuration protects
/// reads; then only with a session whose token may read.
pub(super) fn readable(api: &Api, headers: &HeaderMap) -> bool {
    let session = api.sessions.of(headers);
    let token = session.as_ref().map(|s| s.token.expose());
    let access = api.access.read().unwrap_or_else(|e| e.into_inner());
    access.authorize(token, None, crate::access::Action::Read, None).is_ok()
}

/// The answer to a read the access configuration refuses: to the sign-in page.
pub(super) fn to_sign_in() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/sign-in")]).into_response()
}

/// The subject of `commit` (the rollback point or the head of `status`), on a line of its own.
pub(super) fn subject(status: &crate::agent::Status, commit: Option<&str>) -> Markup {
    html! {
        @if let Some(subject) = commit.and_then(|c| status.subjects.get(c)) {
            div.subject { (subject) }
        }
    }
}

/// How long a verification of the ledger is shown before the chain is checked again (pages
/// that follow the agent render often; the check reads every entry).
const VERIFIED_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// The ledger's state as last checked, and when.
#[derive(Default)]
pub struct Verified(std::sync::Mutex<Option<(std::time::Instant, Markup)>>);

/// The ledger's state: its hash chain checked entry by entry (`verified`, how many entries, the
/// newest hash; or `altered` and the first entry that does not hold), at most every 5 seconds.
pub(super) async fn ledger(api: &Api) -> Markup {
    let cached = api.verified.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some((_, shown)) = cached.filter(|(at, _)| at.elapsed() < VERIFIED_FOR) {
        return shown;
    }
    let verified = crate::ledger::read(api.ledger.clone(), |l| l.verify()).await;
    let shown = html! {
        section aria-labelledby="ledger" {
            h2 #ledger { "Ledger" }
            @match &verified {
                Ok(Ok((entries, head))) => p {
                    span.badge.good { "verified" } " "
                    (entries) " entries, each hash chained to the one before; the newest is "
                    code title=(head) { (&head[..head.len().min(16)]) } "."
                },
                Ok(Err(tamper)) => p.refused role="alert" {
                    span.badge.bad { "altered" } " entry " (tamper.seq) ": " (tamper.reason)
                },
                Err(e) => p.refused role="alert" { "The ledger cannot be read: " (crate::error::chain(e)) },
            }
        }
    };
    *api.verified.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((std::time::Instant::now(), shown.clone()));
    shown
}
