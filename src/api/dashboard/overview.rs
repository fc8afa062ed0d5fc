//! `/`: every environment on one screen — what it runs and what its head is, who signed it,
//! whether it is synced, what drifts, how the last attempt went, what holds the head back — and
//! the ledger's verification. It follows the agent live, as an environment's page does.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::html;

use super::page;
use crate::api::{Api, environments, snapshot};

pub(super) async fn page(State(api): State<Api>, headers: HeaderMap) -> Response {
    if !page::readable(&api, &headers) {
        return page::to_sign_in();
    }
    let mut rows = Vec::new();
    for name in environments(&api) {
        let (status, last) = snapshot(&api, &name).await;
        rows.push((name, status, last));
    }
    let ledger = page::ledger(&api).await;
    let body = html! {
        @if rows.is_empty() {
            p { "This agent applies no environment yet." }
        } @else {
            table.environments {
                caption { "Every environment this agent applies" }
                thead {
                    tr {
                        th scope="col" { "Environment" }
                        th scope="col" { "State" }
                        th scope="col" { "Runs" }
                        th scope="col" { "Head" }
                        th scope="col" { "Signed by" }
                        th scope="col" { "Last attempt" }
                        th scope="col" { "Waiting for" }
                    }
                }
                tbody {
                    @for (name, status, last) in &rows {
                        @let synced = status.applied.is_some() && status.applied == status.head && status.drift.is_empty();
                        tr {
                            th scope="row" { a href={ "/environments/" (name) } { (name) } }
                            td {
                                @if !status.blocked.is_empty() {
                                    span.badge.bad title=(status.blocked.values().cloned().collect::<Vec<_>>().join("; ")) { "blocked" }
                                } @else if synced {
                                    span.badge.good { "synced" }
                                } @else if !status.drift.is_empty() {
                                    span.badge.warn { (status.drift.len()) " drifting" }
                                } @else {
                                    span.badge.warn { "out of sync" }
                                }
                                @if status.busy { " " span.badge.running { "applying" } }
                            }
                            td { (page::commit(status.applied.as_deref())) (page::subject(status, status.applied.as_deref())) }
                            td {
                                @if status.head != status.applied {
                                    (page::commit(status.head.as_deref())) (page::subject(status, status.head.as_deref()))
                                } @else {
                                    span.none { "the same" }
                                }
                                @if let Some(refused) = &status.refused {
                                    div.reason { "not applied: " (refused) }
                                }
                            }
                            td { (status.signer.as_deref().unwrap_or("—")) }
                            td {
                                @match last {
                                    Some(last) => {
                                        (page::outcome(last.outcome.as_ref())) " "
                                        (last.attempt.strategy) " · "
                                        (page::time(&last.started))
                                        @if let Some(why) = page::reason(last.outcome.as_ref()) {
                                            div.reason { (why) }
                                        }
                                    }
                                    None => span.none { "none yet" },
                                }
                            }
                            td { (status.waiting.as_deref().unwrap_or("—")) }
                        }
                    }
                }
            }
        }
        (ledger)
    };
    page::live_document(
        "Environments",
        &[],
        page::Viewer::of(&api, &headers).as_ref(),
        "/live",
        body,
    )
}
