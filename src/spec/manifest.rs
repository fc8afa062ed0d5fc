//! Plain Kubernetes manifests an environment declares beside its services
//! (`target.kubernetes.manifests`): YAML files of the repository, each holding one or more
//! objects, applied as they are in the environment's namespace. Each object is checked here —
//! its `apiVersion`, `kind` and `metadata.name`; no other namespace; no Secret, whose values
//! would sit in clear text in the repository; no Namespace; no object declared twice — and every
//! problem names the file and line.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::diagnostic::Diagnostic;
use super::node::{Kind, Node};
use crate::target::workload::digest;

/// One object of a manifest file.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// `<apiVersion>/<kind>/<name>`: what the object is, across commits.
    pub object: String,
    /// The file declaring it.
    pub file: String,
    /// Where in the file it starts.
    pub line: u32,
    /// The object as written.
    #[serde(skip)]
    pub document: Value,
    /// A digest of `document`: a changed object is applied again.
    pub digest: String,
}

impl Manifest {
    /// The object's `apiVersion`, `kind` and name, from [`Manifest::object`].
    pub fn identity(object: &str) -> Option<(&str, &str, &str)> {
        let (rest, name) = object.rsplit_once('/')?;
        let (api_version, kind) = rest.rsplit_once('/')?;
        Some((api_version, kind, name))
    }
}

/// The objects of `files` (parsed, by path) for an environment in `namespace`; problems go to
/// `out`.
pub fn manifests(
    files: &[String],
    parsed: &HashMap<String, Result<Vec<Node>, Diagnostic>>,
    namespace: &str,
    out: &mut Vec<Diagnostic>,
) -> Vec<Manifest> {
    let mut found: Vec<Manifest> = Vec::new();
    for file in files {
        let documents = match parsed.get(file) {
            Some(Ok(documents)) => documents,
            Some(Err(problem)) => {
                out.push(problem.clone());
                continue;
            }
            None => continue,
        };
        for document in documents.iter().filter(|d| !matches!(d.kind, Kind::Null)) {
            let Some(manifest) = manifest(file, document, namespace, out) else {
                continue;
            };
            if let Some(first) = found.iter().find(|m| m.object == manifest.object) {
                out.push(
                    Diagnostic::new(&document.at, format!("`{}` is declared twice", manifest.object))
                        .hint(format!("first at {}:{}", first.file, first.line)),
                );
                continue;
            }
            found.push(manifest);
        }
    }
    found
}

fn manifest(file: &str, document: &Node, namespace: &str, out: &mut Vec<Diagnostic>) -> Option<Manifest> {
    if document.as_map().is_none() {
        out.push(Diagnostic::new(
            &document.at,
            "a manifest is a map with `apiVersion`, `kind` and `metadata`",
        ));
        return None;
    }
    let text = |key: &str, node: Option<&Node>, out: &mut Vec<Diagnostic>| -> Option<String> {
        match node.and_then(Node::as_str).filter(|s| !s.is_empty()) {
            Some(value) => Some(value.to_owned()),
            None => {
                let at = node.map_or(&document.at, |n| &n.at);
                out.push(Diagnostic::new(at, format!("`{key}` must be a non-empty string")));
                None
            }
        }
    };
    let api_version = text("apiVersion", document.get("apiVersion"), out);
    let kind = text("kind", document.get("kind"), out);
    let metadata = document.get("metadata");
    let name = text("metadata.name", metadata.and_then(|m| m.get("name")), out);
    let (api_version, kind, name) = (api_version?, kind?, name?);
    if let Some(other) = metadata.and_then(|m| m.get("namespace"))
        && other.as_str() != Some(namespace)
    {
        out.push(
            Diagnostic::new(&other.at, format!("`{kind}/{name}` names another namespace")).hint(format!(
                "an environment's manifests go to its own namespace, `{namespace}`; leave `metadata.namespace` out"
            )),
        );
        return None;
    }
    let refused = match kind.as_str() {
        "Secret" => Some("a Secret in the repository would hold its values in clear text"),
        "Namespace" => Some("the environment's namespace is plumb's to create; other namespaces are no environment's"),
        _ => None,
    };
    if let Some(reason) = refused {
        out.push(Diagnostic::new(
            &document.at,
            format!("`{kind}/{name}` is refused: {reason}"),
        ));
        return None;
    }
    let json = document.to_json();
    Some(Manifest {
        object: format!("{api_version}/{kind}/{name}"),
        file: file.to_owned(),
        line: document.at.line,
        digest: digest(json.to_string().as_bytes()),
        document: json,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::spec::yaml::{Limits, parse_documents};

    fn read(text: &str) -> (Vec<Manifest>, Vec<Diagnostic>) {
        let file: Arc<str> = Arc::from("k8s/extra.yaml");
        let nodes = parse_documents(&file, text.as_bytes(), Limits::default()).unwrap();
        let parsed = HashMap::from([("k8s/extra.yaml".to_owned(), Ok(nodes))]);
        let mut out = Vec::new();
        let found = manifests(&["k8s/extra.yaml".to_owned()], &parsed, "shop", &mut out);
        (found, out)
    }

    #[test]
    fn objects_are_read_one_per_document_with_their_line() {
        let (found, problems) = read(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: '1'}\n---\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: worker, namespace: shop}\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let objects: Vec<(&str, u32)> = found.iter().map(|m| (m.object.as_str(), m.line)).collect();
        assert_eq!(objects, [("v1/ConfigMap/settings", 1), ("v1/ServiceAccount/worker", 7)]);
        assert_eq!(
            Manifest::identity("apps/v1/StatefulSet/db"),
            Some(("apps/v1", "StatefulSet", "db"))
        );
    }

    #[test]
    fn every_problem_names_its_line() {
        let (found, problems) = read(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: token}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: other}\n---\nkind: ConfigMap\nmetadata: {name: b}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
        );
        assert_eq!(found.len(), 1);
        let lines: Vec<(u32, &str)> = problems.iter().map(|d| (d.line, d.message.as_str())).collect();
        assert_eq!(lines[0].0, 1);
        assert!(lines[0].1.contains("Secret/token` is refused"), "{lines:?}");
        assert_eq!(lines[1].0, 7);
        assert!(lines[1].1.contains("another namespace"), "{lines:?}");
        assert_eq!(lines[2].0, 9);
        assert!(lines[2].1.contains("`apiVersion` must be"), "{lines:?}");
        assert_eq!(lines[3].0, 16);
        assert!(lines[3].1.contains("declared twice"), "{lines:?}");
    }
}
