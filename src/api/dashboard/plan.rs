//! `/environments/{env}/plan`: what syncing the environment would do now — its head planned
//! against what the target runs, per service (create, roll out with its strategy, reload,
//! scale, retire, delete) and why, changing nothing. Asked of the environment's worker, which
//! observes the target for it: a page of its own, not part of the page that follows the agent.
//! Below the plan, the head's desired state against the rollback point's, field by field, as
//! `plumb diff` prints it for a pull request (images, commands and strategies called out,
//! encrypted values masked).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{Markup, html};
use tokio::sync::oneshot;

use super::page;
use crate::agent::Input;
use crate::api::{Api, known};
use crate::diff::{Change, EnvironmentDiff, show};
use crate::error::chain;

pub(super) async fn page(State(api): State<Api>, Path(env): Path<String>, headers: HeaderMap) -> Response {
    if !page::readable(&api, &headers) {
        return page::to_sign_in();
    }
    if !known(&api, &env) {
        return page::not_found(&format!("This agent applies no environment named `{env}`."));
    }
    let worker = api.workers.read().unwrap_or_else(|e| e.into_inner()).get(&env).cloned();
    let (reply, answer) = oneshot::channel();
    let planned = match worker {
        Some(worker) if worker.send(Input::Plan(reply)).await.is_ok() => answer.await.ok(),
        _ => None,
    };
    let body = match planned {
        Some(Ok(pending)) => {
            let lines = pending.plan.summary();
            html! {
                p {
                    "The head " (page::commit(Some(&pending.commit)))
                    " against what the target runs (the rollback point is "
                    (page::commit(pending.applied.as_deref())) ")."
                }
                @if lines.is_empty() {
                    p { "Nothing: the environment runs its head." }
                } @else {
                    ul.plan { @for line in &lines { li { (line) } } }
                }
                h2 { "What changes, field by field" }
                (changes(&pending.changes, pending.applied.is_some()))
            }
        }
        Some(Err(refused)) => html! { p.refused role="alert" { (chain(&refused)) } },
        None => html! { p.refused role="alert" { "The environment's worker stopped." } },
    };
    let trail = [
        (env.as_str(), format!("/environments/{env}")),
        ("plan", format!("/environments/{env}/plan")),
    ];
    page::document(
        &format!("What syncing {env} would do"),
        &trail,
        page::Viewer::of(&api, &headers).as_ref(),
        body,
    )
}

/// The field-by-field difference of the head from the rollback point: the environment's own
/// settings, then each service with what the change does to it, its called-out changes and a
/// table of its fields.
fn changes(diff: &EnvironmentDiff, applied: bool) -> Markup {
    html! {
        @if diff.is_empty() {
            p { "None: the head declares what the rollback point declares." }
        } @else {
            @if !applied {
                p { "Nothing was applied healthy yet: everything the head declares is new." }
            }
            @if !diff.settings.is_empty() {
                (fields("The environment's settings", &diff.settings))
            }
            @for service in &diff.services {
                @let impact = serde_json::to_value(service.impact).unwrap_or_default();
                section.service-diff {
                    h3 { code { (service.service) } " — " (impact.as_str().unwrap_or_default()) }
                    @if !service.highlights.is_empty() {
                        ul.highlights { @for h in &service.highlights { li { strong { (h) } } } }
                    }
                    (fields(&format!("The fields of {} that change", service.service), &service.changes))
                }
            }
        }
    }
}

/// A table of changed fields: where, before, after (an encrypted value that changed shows
/// masked on both sides, and says so).
fn fields(caption: &str, changes: &[Change]) -> Markup {
    html! {
        table.changes {
            caption { (caption) }
            thead { tr { th scope="col" { "Field" } th scope="col" { "Applied" } th scope="col" { "Head" } } }
            tbody {
                @for c in changes {
                    tr {
                        th scope="row" { code { (c.path) } }
                        td.removed { @if c.before.is_some() { code { (show(c.before.as_ref())) } } @else { span.none { "absent" } } }
                        td.added {
                            @if c.after.is_some() { code { (show(c.after.as_ref())) } } @else { span.none { "removed" } }
                            @if c.before.is_some() && c.before == c.after { " (encrypted value changed)" }
                        }
                    }
                }
            }
        }
    }
}
