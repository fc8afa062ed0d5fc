//! `/environments/{env}/plan`: what syncing the environment would do now — its head planned
//! against what the target runs, per service (create, roll out with its strategy, reload,
//! scale, retire, delete) and why, changing nothing. Asked of the environment's worker, which
//! observes the target for it: a page of its own, not part of the page that follows the agent.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::html;
use tokio::sync::oneshot;

use super::page;
use crate::agent::Input;
use crate::api::{Api, known};
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
