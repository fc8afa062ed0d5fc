//! `/environments/{env}`: one environment — its state, the running attempt's traffic as it
//! moves, each service's slots with their health checks' last results, the last attempt step
//! by step, the attempts before it, the ledger's verification, and each service's
//! configuration at the rollback point as a tree (encrypted values masked, as the API serves
//! them to everyone but the service).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{Markup, html};
use serde_json::Value;

use super::page;
use crate::agent::{Status, Traffic};
use crate::api::{Api, known, snapshot};
use crate::ledger::{self, AttemptRecord};

/// How many earlier attempts the page lists.
const HISTORY: usize = 20;

/// Which services the page shows: those whose name holds `service` (every one without it).
#[derive(serde::Deserialize, Default)]
pub(super) struct Filter {
    service: Option<String>,
}

impl Filter {
    fn shows(&self, service: &str) -> bool {
        self.service.as_deref().is_none_or(|part| service.contains(part.trim()))
    }
}

pub(super) async fn page(
    State(api): State<Api>,
    Path(env): Path<String>,
    Query(filter): Query<Filter>,
    headers: HeaderMap,
) -> Response {
    if !page::readable(&api, &headers) {
        return page::to_sign_in();
    }
    if !known(&api, &env) {
        return page::not_found(&format!("This agent applies no environment named `{env}`."));
    }
    let (status, last) = snapshot(&api, &env).await;
    let name = env.clone();
    let history = ledger::read(api.ledger.clone(), move |l| l.history(&name, HISTORY)).await;
    let viewer = page::Viewer::of(&api, &headers);
    let ledger = page::ledger(&api).await;
    let body = html! {
        @if let Some(viewer) = &viewer {
            (actions(&env, viewer, &status, history.as_deref().unwrap_or_default()))
        }
        section aria-labelledby="state" {
            h2 #state { "State" }
            dl.facts {
                dt { "Runs (rollback point)" }
                dd { (page::commit(status.applied.as_deref())) (page::subject(&status, status.applied.as_deref())) }
                dt { "Head" }
                dd {
                    (page::commit(status.head.as_deref()))
                    " · " a href={ "/environments/" (env) "/plan" } { "what syncing would do now" }
                    (page::subject(&status, status.head.as_deref()))
                }
                dt { "Signed by" } dd { (status.signer.as_deref().unwrap_or("—")) }
                @if let Some(refused) = &status.refused {
                    dt { "Head not applied" } dd { (refused) }
                }
                @if let Some(waiting) = &status.waiting {
                    dt { "Waiting for" } dd { (waiting) }
                }
                @for (cause, why) in &status.blocked {
                    dt { "Blocked (" (cause) ")" } dd.refused { (why) }
                }
                dt { "Drift" }
                dd {
                    @if status.drift.is_empty() { "none at the last check" }
                    @else { ul { @for line in &status.drift { li { (line) } } } }
                }
                @for (service, position) in &status.migrated {
                    dt { "Migrated: " (service) } dd { (position) }
                }
                @for (service, restarts) in &status.restarts {
                    dt { "Restarts: " (service) } dd { (restarts) }
                }
            }
        }
        @if status.busy && !status.traffic.is_empty() {
            section aria-labelledby="traffic" {
                h2 #traffic { "Traffic now" }
                (traffic(&status.traffic, &filter))
            }
        }
        section aria-labelledby="services" {
            h2 #services { "Services" }
            form.filter method="get" action={ "/environments/" (env) } {
                label for="service-filter" { "Services whose name holds " }
                input #service-filter type="search" name="service" value=[filter.service.as_deref()];
                " " button type="submit" { "Show" }
            }
            @match &status.running {
                Some(running) => (services(running, &filter)),
                None => p { "Not observed yet: the agent looks at each drift check." },
            }
        }
        section aria-labelledby="attempt" {
            h2 #attempt { "Last attempt" }
            @match &last {
                Some(last) => (attempt(last, &filter)),
                None => p { "None yet." },
            }
        }
        section aria-labelledby="history" {
            h2 #history { "History" }
            @match &history {
                Ok(attempts) if attempts.is_empty() => p { "No attempt recorded." },
                Ok(attempts) => (timeline(attempts)),
                Err(e) => p.refused { "The ledger cannot be read: " (crate::error::chain(e)) },
            }
        }
        (ledger)
        section aria-labelledby="configuration" {
            h2 #configuration { "Configuration" }
            @match &status.configs {
                Some(served) => {
                    p { "At the rollback point " (page::commit(Some(&served.commit))) "; encrypted values show as ***." }
                    @for (service, config) in served.services.iter().filter(|(name, _)| filter.shows(name)) {
                        details open {
                            summary { (service) }
                            @if config.as_object().is_some_and(|o| o.is_empty()) {
                                p.none { "no configuration" }
                            } @else {
                                (tree(config))
                            }
                        }
                    }
                }
                None => p { "Nothing applied yet." },
            }
        }
    };
    page::live_document(
        &env,
        &[(env.as_str(), format!("/environments/{env}"))],
        viewer.as_ref(),
        &format!("/environments/{env}/live"),
        body,
    )
}

/// What the signed-in identity may ask (the agent decides with its role): sync the head now;
/// roll back to the commit before the rollback point, or to an earlier one the environment ran
/// healthy; when the head waits for approvals, hand over one, an OpenPGP-signed tag `plumb
/// approve --print` made with the approver's key (a browser holds no key to sign with).
fn actions(env: &str, viewer: &page::Viewer, status: &Status, history: &[AttemptRecord]) -> Markup {
    let applied = status.applied.as_deref();
    let mut earlier: Vec<&str> = Vec::new();
    for record in history {
        let commit = record.attempt.commit.as_str();
        if record.outcome == Some(crate::ledger::Outcome::Succeeded)
            && Some(commit) != applied
            && !earlier.contains(&commit)
        {
            earlier.push(commit);
        }
    }
    html! {
        section aria-labelledby="actions" {
            h2 #actions { "Actions" }
            div.actions {
                form method="post" action={ "/environments/" (env) "/sync" } {
                    (viewer.csrf_field())
                    button type="submit" { "Sync now" }
                }
                form method="post" action={ "/environments/" (env) "/rollback" } {
                    (viewer.csrf_field())
                    label for="rollback-to" { "Roll back to " }
                    select #rollback-to name="to" {
                        option value="" { "the commit before the rollback point" }
                        @for commit in &earlier {
                            option value=(commit) { (&commit[..commit.len().min(12)]) }
                        }
                    }
                    " "
                    button type="submit" { "Roll back" }
                }
            }
            @if status.awaiting.contains(&"approval") {
            form.approve method="post" action={ "/environments/" (env) "/approve" } {
                (viewer.csrf_field())
                p {
                    label for="approval" { "Hand over an approval" }
                    br;
                    span.none #approval-help {
                        "An approval is a signed tag the approver makes with their own key: "
                        code { "plumb approve --env " (env) " --print " (status.head.as_deref().unwrap_or("COMMIT")) }
                        " prints it; paste it here."
                    }
                    br;
                    textarea #approval name="approval" rows="4" cols="72" spellcheck="false" aria-describedby="approval-help" required {}
                }
                p { button type="submit" { "Hand over" } }
            }
            }
        }
    }
}

/// Each service's slots as the target ran them: version, replicas (of those the rollback point
/// declares) and their states, the share of traffic each slot takes, and its health checks'
/// results.
fn services(running: &crate::agent::Running, filter: &Filter) -> Markup {
    html! {
        p.none { "As the target ran them at " (page::time(&running.at)) " (the last drift check)." }
        table.services {
            thead {
                tr {
                    th scope="col" { "Service" }
                    th scope="col" { "Slot" }
                    th scope="col" { "Version" }
                    th scope="col" { "Replicas" }
                    th scope="col" { "Traffic" }
                    th scope="col" { "Health checks" }
                }
            }
            tbody {
                @for (service, (declared, slots)) in running.services.iter().filter(|(name, _)| filter.shows(name)) {
                    @for (slot, live) in slots {
                        tr {
                            th scope="row" { (service) }
                            td { (slot.name()) }
                            td { code title=(live.version) { (&live.version[..live.version.len().min(16)]) } }
                            td {
                                (live.replicas.len())
                                @if let Some(declared) = declared { " of " (declared) }
                                @if !live.replicas.is_empty() { ": " (states(&live.replicas)) }
                                @if live.failed > 0 { " · " span.refused { (live.failed) " failed" } }
                                @if live.restarts > 0 { " · restarted " (live.restarts) "×" }
                            }
                            td {
                                progress max="100" value=(live.weight) aria-label={ (service) " " (slot.name()) " traffic" } {}
                                " " (live.weight) " %"
                            }
                            td { (checks(running.health.get(service).and_then(|h| h.get(slot)))) }
                        }
                    }
                }
            }
        }
    }
}

/// The running attempt's traffic, per service it routes: each slot's weight as set, and what it
/// answered as the canary's analysis last counted (requests, the share answered without a
/// server error, the server errors and the unanswered).
fn traffic(routed: &BTreeMap<String, Traffic>, filter: &Filter) -> Markup {
    html! {
        p.none { "As the running attempt sets and counts it." }
        table.traffic {
            thead {
                tr {
                    th scope="col" { "Service" }
                    th scope="col" { "Slot" }
                    th scope="col" { "Weight" }
                    th scope="col" { "Answers" }
                }
            }
            tbody {
                @for (service, traffic) in routed.iter().filter(|(name, _)| filter.shows(name)) {
                    @for (slot, weight) in &traffic.weights {
                        tr {
                            th scope="row" { (service) }
                            td { (slot.name()) }
                            td {
                                progress max="100" value=(weight) aria-label={ (service) " " (slot.name()) " weight" } {}
                                " " (weight) " %"
                            }
                            td {
                                @match traffic.answers.get(slot.name()) {
                                    Some(stats) if stats.requests > 0 => {
                                        (stats.requests) " requests, "
                                        (format!("{:.1}", stats.success_rate().unwrap_or(1.0) * 100.0)) " % successful"
                                        @if stats.server_errors > 0 { " · " (stats.server_errors) " server errors" }
                                        @if stats.unanswered > 0 { " · " (stats.unanswered) " unanswered" }
                                    }
                                    _ => span.none { "none counted yet" },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A slot's health checks as probed at the drift check: each passing or failing, and why.
fn checks(probed: Option<&Vec<crate::agent::Probed>>) -> Markup {
    html! {
        @match probed {
            None => span.none { "none probed by plumb" },
            Some(results) => ul.checks {
                @for (name, result) in results {
                    li {
                        @match result {
                            Ok(()) => { span.badge.good { "passing" } " " code { (name) } }
                            Err(why) => { span.badge.bad { "failing" } " " code { (name) } ": " span.reason { (why) } }
                        }
                    }
                }
            },
        }
    }
}

/// Replica states counted: `2 running, 1 restarting after exit 1`.
fn states(replicas: &[String]) -> String {
    let mut counted: Vec<(&str, usize)> = Vec::new();
    for state in replicas {
        match counted.iter_mut().find(|(s, _)| *s == state.as_str()) {
            Some((_, n)) => *n += 1,
            None => counted.push((state, 1)),
        }
    }
    counted
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An attempt: what, who and when, then each step with its times and result (only those of the
/// services `filter` shows).
fn attempt(record: &AttemptRecord, filter: &Filter) -> Markup {
    // A filtered page shows the steps of the services it shows (and those of no service).
    let steps: Vec<&ledger::StepRecord> = record
        .steps
        .iter()
        .filter(|step| {
            step.name
                .split_once(": ")
                .is_none_or(|(service, _)| filter.shows(service))
        })
        .collect();
    html! {
        p {
            (page::outcome(record.outcome.as_ref())) " "
            (page::commit(Some(&record.attempt.commit))) " · "
            (record.attempt.strategy) " · "
            (trigger(record))
            " · started " (page::time(&record.started))
            @if let Some(took) = page::duration(&record.started, record.finished.as_deref()) { " · took " (took) }
        }
        @if let Some(why) = page::reason(record.outcome.as_ref()) {
            p.reason { (why) }
        }
        @if steps.len() < record.steps.len() {
            p.none { (steps.len()) " of its " (record.steps.len()) " steps: those of the services shown." }
        }
        ol.steps {
            @for step in steps {
                @let class = match &step.error {
                    None => "running",
                    Some(None) => "good",
                    Some(Some(_)) => "bad",
                };
                li class=(class) {
                    span.step { (step.name) }
                    " " (page::time(&step.started))
                    @if let Some(took) = page::duration(&step.started, step.finished.as_deref()) { " · " (took) }
                    @if let Some(Some(error)) = &step.error { div.reason { (error) } }
                    @if let Some(output) = &step.output { pre { (output) } }
                }
            }
        }
    }
}

/// What started an attempt, and who when a person did.
fn trigger(record: &AttemptRecord) -> String {
    let what = serde_json::to_value(record.attempt.trigger)
        .ok()
        .and_then(|t| t.as_str().map(str::to_owned))
        .unwrap_or_default();
    match &record.attempt.by {
        Some(by) => format!("{what} by {by}"),
        None => what,
    }
}

/// The attempts, newest first.
fn timeline(attempts: &[AttemptRecord]) -> Markup {
    html! {
        table.history {
            thead {
                tr {
                    th scope="col" { "Started" }
                    th scope="col" { "Commit" }
                    th scope="col" { "Strategy" }
                    th scope="col" { "Trigger" }
                    th scope="col" { "Steps" }
                    th scope="col" { "Took" }
                    th scope="col" { "Outcome" }
                }
            }
            tbody {
                @for record in attempts {
                    tr {
                        td { (page::time(&record.started)) }
                        td { (page::commit(Some(&record.attempt.commit))) }
                        td { (record.attempt.strategy) }
                        td { (trigger(record)) }
                        td { (record.steps.len()) }
                        td.took { (page::duration(&record.started, record.finished.as_deref()).unwrap_or_default()) }
                        td {
                            (page::outcome(record.outcome.as_ref()))
                            @if let Some(why) = page::reason(record.outcome.as_ref()) { div.reason { (why) } }
                        }
                    }
                }
            }
        }
    }
}

/// A configuration as nested lists: a key per item, its value or the keys under it.
fn tree(value: &Value) -> Markup {
    match value {
        Value::Object(map) => html! {
            ul.tree {
                @for (key, value) in map {
                    li {
                        span.key { (key) }
                        @if value.is_object() || value.is_array() { (tree(value)) }
                        @else { " " code { (leaf(value)) } }
                    }
                }
            }
        },
        Value::Array(items) => html! {
            ol.tree start="0" {
                @for value in items {
                    li {
                        @if value.is_object() || value.is_array() { (tree(value)) }
                        @else { code { (leaf(value)) } }
                    }
                }
            }
        },
        other => html! { code { (leaf(other)) } },
    }
}

/// A scalar as JSON writes it, strings without their quotes.
fn leaf(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}
