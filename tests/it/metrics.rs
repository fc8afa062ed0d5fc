//! The metrics exposition read back by Prometheus' own OpenMetrics parser (the Python client's,
//! strict about the format), so what a scraper sees is what the tests check.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = []
for family in text_string_to_metric_families(sys.stdin.read()):
    samples = [{"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples]
    families.append({"name": family.name, "type": family.type, "samples": samples})
print(json.dumps(families))
"#;

/// The families of an OpenMetrics exposition; panics (with the parser's complaint) when the
/// text is not valid OpenMetrics.
pub fn parse(text: &str) -> Vec<Value> {
    let mut parser = Command::new("/usr/bin/python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (package python3-prometheus-client)");
    parser.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = parser.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "not valid OpenMetrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let families: Value = serde_json::from_slice(&output.stdout).unwrap();
    families.as_array().unwrap().clone()
}

/// The value of the sample `name` whose labels include every one of `labels`.
pub fn value(families: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families
        .iter()
        .flat_map(|f| f["samples"].as_array().into_iter().flatten())
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
}

/// The type of family `name`.
pub fn kind(families: &[Value], name: &str) -> Option<String> {
    families
        .iter()
        .find(|f| f["name"] == name)
        .and_then(|f| f["type"].as_str().map(str::to_owned))
}
