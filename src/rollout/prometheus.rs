//! Canary analysis by a Prometheus query: the query, with the service, slot and environment put
//! in, is asked of Prometheus' HTTP API (`GET /api/v1/query`), and its one value is taken as the
//! canary's success rate in percent. Prometheus unreachable, an error, several series: the
//! canary cannot be judged good, so it fails. No data at all (or NaN, a rate over no requests)
//! is not judged, like a canary that answered too few requests.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::spec::model::service::PrometheusGate;

/// How long Prometheus has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read: one series is a few hundred bytes.
const MOST: usize = 1024 * 1024;

/// Where the query is asked about.
pub struct Subject<'a> {
    /// The service.
    pub service: &'a str,
    /// The canary's slot.
    pub slot: &'a str,
    /// The environment.
    pub environment: &'a str,
}

/// `gate`'s query for `subject`.
pub fn query(gate: &PrometheusGate, subject: &Subject) -> String {
    gate.query
        .replace("{{service}}", subject.service)
        .replace("{{slot}}", subject.slot)
        .replace("{{environment}}", subject.environment)
}

/// The success rate `gate` reports for `subject`, in percent; `None` when Prometheus has no
/// data for it.
pub async fn success_rate(gate: &PrometheusGate, subject: &Subject<'_>) -> Result<Option<f64>, String> {
    let query = query(gate, subject);
    let url = format!(
        "{}/api/v1/query?query={}",
        gate.url.trim_end_matches('/'),
        percent_encoded(&query)
    );
    let request = axum::http::Request::get(&url)
        .body(Empty::<axum::body::Bytes>::new())
        .map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let asked = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MOST)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(TIMEOUT, asked)
        .await
        .map_err(|_| format!("Prometheus at {} did not answer within {TIMEOUT:?}", gate.url))?
        .map_err(|e| format!("cannot ask Prometheus at {}: {e}", gate.url))?;
    let answer: Value =
        serde_json::from_slice(&body).map_err(|e| format!("Prometheus answered {status} with no JSON: {e}"))?;
    if answer["status"] != "success" {
        return Err(format!(
            "Prometheus refused `{query}`: {}",
            answer["error"].as_str().unwrap_or("no reason given")
        ));
    }
    value(&answer["data"]).map_err(|e| format!("`{query}`: {e}"))
}

/// The one value of a query's `data`.
fn value(data: &Value) -> Result<Option<f64>, String> {
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
            Some([]) => return Ok(None),
            Some([one]) => &one["value"],
            Some(many) => return Err(format!("returns {} series; it must return one", many.len())),
            None => return Err("returns no result list".to_owned()),
        },
        other => return Err(format!("returns a {}, not a single value", other.unwrap_or("nothing"))),
    };
    let text = sample[1].as_str().ok_or("returns a sample without a value")?;
    let rate: f64 = text.parse().map_err(|_| format!("returns `{text}`, not a number"))?;
    Ok((!rate.is_nan()).then_some(rate))
}

/// `text` for a URL's query string.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_value_is_read_from_a_vector_or_a_scalar() {
        let vector = json!({"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "97.5"]}]});
        assert_eq!(value(&vector), Ok(Some(97.5)));
        assert_eq!(
            value(&json!({"resultType": "scalar", "result": [1.0, "42"]})),
            Ok(Some(42.0))
        );
        assert_eq!(value(&json!({"resultType": "vector", "result": []})), Ok(None));
        assert_eq!(
            value(&json!({"resultType": "scalar", "result": [1.0, "NaN"]})),
            Ok(None)
        );
        let two = json!({"resultType": "vector", "result": [{"value": [1, "1"]}, {"value": [1, "2"]}]});
        assert!(value(&two).unwrap_err().contains("2 series"));
    }

    #[test]
    fn the_query_names_its_subject_and_travels_encoded() {
        let gate = PrometheusGate {
            url: "http://prometheus:9090".to_owned(),
            query: r#"ok{service="{{service}}",slot="{{slot}}",env="{{environment}}"}"#.to_owned(),
        };
        let subject = Subject {
            service: "api",
            slot: "green",
            environment: "prod",
        };
        let query = query(&gate, &subject);
        assert_eq!(query, r#"ok{service="api",slot="green",env="prod"}"#);
        assert_eq!(percent_encoded("a b{\"}"), "a%20b%7B%22%7D");
    }
}
