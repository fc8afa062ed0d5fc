//! The API's contract: answers are checked against the OpenAPI description in `docs/openapi.json`
//! (status codes documented, JSON bodies valid against their schemas).

use serde_json::{Value, json};

use crate::harness::project;

fn document() -> Value {
    let text = std::fs::read_to_string(project().join("docs/openapi.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Checks that `status` is documented for `method` on `path` (as written in the document, with
/// `{env}`), and that `body` matches the documented JSON schema, if there is one.
pub fn conforms(path: &str, method: &str, status: u16, body: &str) {
    let doc = document();
    let operation = &doc["paths"][path][method];
    assert!(operation.is_object(), "{method} {path} is not documented");
    let mut response = operation["responses"][status.to_string()].clone();
    assert!(
        response.is_object(),
        "{method} {path} answered {status}, which is not documented: {body}"
    );
    if let Some(reference) = response["$ref"].as_str() {
        let pointer = reference.trim_start_matches('#');
        response = doc.pointer(pointer).cloned().unwrap();
    }
    let Some(schema) = response.pointer("/content/application~1json/schema") else {
        return;
    };
    let root = json!({ "allOf": [schema], "components": doc["components"] });
    let validator = jsonschema::validator_for(&root).unwrap();
    let value: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body}"));
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{method} {path} {status}: {errors:?}\n{body}");
}

#[test]
fn the_served_description_is_the_checked_in_one_and_is_well_formed() {
    assert_eq!(
        plumb::api::OPENAPI,
        std::fs::read_to_string(project().join("docs/openapi.json")).unwrap()
    );
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    // Every schema reference resolves.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let target = &reference[..reference.find('"').unwrap()];
        assert!(
            doc.pointer(target.trim_start_matches('#')).is_some(),
            "{target} does not resolve"
        );
    }
}

#[test]
fn the_checker_catches_shapes_and_statuses_that_are_not_documented() {
    let wrong_shape = std::panic::catch_unwind(|| conforms("/api/v1/status", "get", 200, r#"{"environment": []}"#));
    assert!(wrong_shape.is_err());
    let undocumented = std::panic::catch_unwind(|| conforms("/api/v1/status", "get", 418, "{}"));
    assert!(undocumented.is_err());
    conforms("/api/v1/status", "get", 200, r#"{"environments": []}"#);
}
