//! What every page of the dashboard shares: the document around it, and how commits, times
//! and outcomes read.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use crate::ledger::Outcome;

/// A whole page: `title`, the trail of links above it, and `body`.
pub(super) fn document(title: &str, trail: &[(&str, String)], body: Markup) -> Response {
    answer(StatusCode::OK, title, trail, body)
}

/// A page saying what was not found.
pub(super) fn not_found(what: &str) -> Response {
    answer(StatusCode::NOT_FOUND, "Not found", &[], html! { p { (what) } })
}

fn answer(status: StatusCode, title: &str, trail: &[(&str, String)], body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · plumb" }
                link rel="stylesheet" href="/dashboard.css";
            }
            body {
                header {
                    nav aria-label="Trail" {
                        a href="/" { "plumb" }
                        @for (name, href) in trail {
                            " / " a href=(href) { (name) }
                        }
                    }
                }
                main {
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
