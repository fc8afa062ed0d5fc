//! The checked-in schemas must be exactly what the Rust types generate.

use plumb::spec::schema;

use crate::harness::{golden, project};

#[test]
fn checked_in_schemas_are_current() {
    for (name, generated) in schema::generate() {
        let text = format!("{}\n", serde_json::to_string_pretty(&generated).unwrap());
        golden(&project().join("schemas").join(name), &text);
    }
}

#[test]
fn example_documents_point_editors_at_the_schemas() {
    let root = project().join("example-repo");
    for (dir, schema) in [("services", "service"), ("environments", "environment")] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let hint = format!("# yaml-language-server: $schema=../../schemas/{schema}.schema.json");
            assert!(text.starts_with(&hint), "{dir} document without the schema hint");
        }
    }
}
