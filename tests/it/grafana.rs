//! The Grafana dashboard (`deploy/grafana/plumb.json`) against what the agent exports: every
//! query names metrics of the agent's exposition only, and Prometheus itself parses each one.

use std::collections::BTreeSet;

use serde_json::Value;

/// The sample names of an OpenMetrics exposition's families, as a query names them.
fn exported(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (family, kind) = rest.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "info" => &["_info"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
    }
    names
}

/// The metric names `query` uses: its identifiers starting with `plumb_`.
fn named(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find("plumb_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The exposition of an agent's metrics once each family holds a sample (a family without one
/// is not exposed), recorded as the agent records them.
fn every_family() -> String {
    let metrics = plumb::metrics::Metrics::default();
    metrics.attempt(
        "production",
        plumb::ledger::Trigger::Commit,
        "blueGreen",
        &plumb::ledger::Outcome::Succeeded,
        Some(1.5),
    );
    metrics.blocked("production", "fetch", true);
    metrics.approval_refused("forged");
    metrics.notification("slack", "delivered");
    metrics.notification_queue("slack", 2);
    metrics.window("production", true);
    metrics.rollback("production", "automatic");
    metrics.commit("production", "3f1c", Some("alice"));
    metrics.drift("production", [("api", true)]);
    metrics.weights("production", [("api", "blue", 90), ("api", "green", 10)]);
    metrics.restarts("production", [("api", "blue", 1)]);
    metrics.steps("production", 3);
    metrics.refused("unsigned");
    metrics.fetch("fetched");
    metrics.webhook("github", "accepted");
    metrics.encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_names_a_metric_the_agent_exports() {
    let dashboard: Value = serde_json::from_str(include_str!("../../deploy/grafana/plumb.json")).unwrap();
    let exported = exported(&every_family());
    assert!(exported.contains("plumb_attempts_total"), "{exported:?}");
    let mut queries: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap().iter())
        .map(|target| target["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(queries.len() >= 14, "{queries:?}");
    // The template variables' queries (Grafana's `label_values`) name metrics too.
    let variables: Vec<String> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["query"]["query"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(variables.len(), 1, "{variables:?}");
    for query in queries.iter().chain(&variables) {
        let names = named(query);
        assert!(!names.is_empty(), "{query} names no metric of plumb's");
        for name in names {
            assert!(
                exported.contains(&name),
                "{query}: `{name}` is not a metric the agent exports"
            );
        }
    }
    // Each panel's query is PromQL Prometheus accepts, once Grafana's variables are put in.
    let prometheus: std::net::SocketAddr = crate::prometheus::url().trim_start_matches("http://").parse().unwrap();
    for query in queries.drain(..) {
        let promql = query.replace("$__rate_interval", "5m").replace("$environment", ".*");
        let encoded: String = form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let answer = crate::http::get(prometheus, &format!("/api/v1/query?query={encoded}")).await;
        let body: Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(
            body["status"], "success",
            "Prometheus refuses {promql}: {}",
            answer.body
        );
    }
}
