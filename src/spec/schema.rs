//! JSON Schema: generating plumb's own schemas from the Rust types, and checking a document
//! tree against a schema (plumb's or an application's) so that every error comes back at
//! once with the line it was written on. It does not know how documents are merged.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use jsonschema::{ValidationError, Validator};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::Value;

use super::diagnostic::{Diagnostic, closest};
use super::model::scalar::is_encrypted;
use super::model::{Environment, Repository, Service, UNIONS};
use super::node::{Kind, Node, Path, Step};

/// plumb's schemas, by the file name they are published under in `schemas/`.
pub fn generate() -> Vec<(&'static str, Value)> {
    vec![
        ("repository.schema.json", schema_of::<Repository>()),
        ("service.schema.json", schema_of::<Service>()),
        ("environment.schema.json", schema_of::<Environment>()),
        ("agent.schema.json", schema_of::<crate::agent::config::AgentConfig>()),
        ("notification.schema.json", schema_of::<crate::notify::Notice>()),
    ]
}

/// The JSON Schema (draft 2020-12) of `T`.
pub fn schema_of<T: JsonSchema>() -> Value {
    let schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>();
    schema.to_value()
}

/// A compiled schema and the property names it knows, for "did you mean" hints.
pub struct Schema {
    validator: Validator,
    vocabulary: BTreeSet<String>,
}

/// The compiled schemas of plumb's documents, built once.
pub struct Builtin {
    /// For `plumb.yaml`.
    pub repository: Schema,
    /// For a service as rendered for an environment.
    pub service: Schema,
    /// For an environment document.
    pub environment: Schema,
}

/// plumb's own schemas, compiled on first use from the files published in `schemas/`, which
/// `cargo test` checks are exactly what [`generate`] makes of the types (generating them again
/// at every start ran schemars for nothing: a third of a megabyte of code made resident).
pub static BUILTIN: LazyLock<Builtin> = LazyLock::new(|| {
    let compile = |text: &str| {
        let schema: Value = serde_json::from_str(text).expect("plumb's published schemas are JSON");
        Schema::compile(&schema).expect("plumb's published schemas are valid")
    };
    Builtin {
        repository: compile(include_str!("../../schemas/repository.schema.json")),
        service: compile(include_str!("../../schemas/service.schema.json")),
        environment: compile(include_str!("../../schemas/environment.schema.json")),
    }
});

impl Schema {
    /// Compiles a schema; the error says why it is not a valid schema.
    pub fn compile(schema: &Value) -> Result<Schema, String> {
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(schema)
            .map_err(|e| e.to_string())?;
        let mut vocabulary = BTreeSet::new();
        collect_properties(schema, &mut vocabulary);
        Ok(Schema { validator, vocabulary })
    }

    /// Checks `node` (whose JSON form is `json`) and adds one diagnostic per problem, located
    /// at the line that wrote the offending value. Encrypted values are skipped: they are only
    /// checked once decrypted.
    pub fn check(&self, node: &Node, json: &Value, out: &mut Vec<Diagnostic>) {
        self.check_with(node, json, false, out);
    }

    /// Checks `node` as [`Schema::check`] does, where `json` holds the encrypted values of
    /// `node` decrypted: their problems are reported without them. A problem at a value that
    /// is, or holds, an encrypted one names the keyword it fails and shows no value, unless
    /// its message never quotes one (an unknown field, a missing one, a wrong type).
    pub fn check_decrypted(&self, node: &Node, json: &Value, out: &mut Vec<Diagnostic>) {
        self.check_with(node, json, true, out);
    }

    fn check_with(&self, node: &Node, json: &Value, decrypted: bool, out: &mut Vec<Diagnostic>) {
        // Most documents are valid: the boolean check is several times cheaper than collecting
        // errors, which is only worth doing when there are some.
        if self.validator.is_valid(json) {
            return;
        }
        for error in self.validator.iter_errors(json) {
            let mut findings = Vec::new();
            explain(&error, &mut findings);
            let quotes_no_value = matches!(
                error.kind(),
                ValidationErrorKind::AdditionalProperties { .. }
                    | ValidationErrorKind::UnevaluatedProperties { .. }
                    | ValidationErrorKind::Required { .. }
                    | ValidationErrorKind::Type { .. }
            );
            for mut f in findings {
                let (found, key_at) = node.locate(&f.path.0);
                let sealed = matches!(&found.kind, Kind::Str(s) if is_encrypted(s));
                if sealed && !decrypted {
                    continue;
                }
                if decrypted && !quotes_no_value && holds_encrypted(found) {
                    let keyword = error.kind().keyword();
                    f.message = if sealed {
                        format!("the decrypted value does not satisfy the schema's `{keyword}` (it is not shown)")
                    } else {
                        format!("does not satisfy the schema's `{keyword}` (not shown: it holds a decrypted value)")
                    };
                    f.hint = None;
                    f.misspelt = None;
                }
                // A collection starts at its first member; its key's line reads better.
                let collection = matches!(found.kind, Kind::Map(_) | Kind::Seq(_));
                let at = if f.about_key || collection {
                    key_at.unwrap_or(&found.at)
                } else {
                    &found.at
                };
                let mut d = Diagnostic::new(at, f.message).path(&f.path);
                let hint = match &f.misspelt {
                    Some(word) => closest(word, self.vocabulary.iter().map(String::as_str))
                        .map(|k| format!("did you mean `{k}`?")),
                    None => f.hint,
                };
                if let Some(hint) = hint {
                    d = d.hint(hint);
                }
                out.push(d);
            }
        }
    }
}

/// Whether `node` is, or holds, an encrypted value.
fn holds_encrypted(node: &Node) -> bool {
    match &node.kind {
        Kind::Str(s) => is_encrypted(s),
        Kind::Map(map) => map.values().any(|m| holds_encrypted(&m.value)),
        Kind::Seq(items) => items.iter().any(holds_encrypted),
        _ => false,
    }
}

fn collect_properties(schema: &Value, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get("properties") {
                out.extend(props.keys().cloned());
            }
            map.values().for_each(|v| collect_properties(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_properties(v, out)),
        _ => {}
    }
}

/// One problem, as a path into the document and words for a person.
struct Finding {
    path: Path,
    /// The problem is the key itself (an unknown field), not its value.
    about_key: bool,
    message: String,
    hint: Option<String>,
    /// A key that may be a misspelling of a known one.
    misspelt: Option<String>,
}

impl Finding {
    fn at(path: Path, message: String) -> Self {
        Finding {
            path,
            about_key: false,
            message,
            hint: None,
            misspelt: None,
        }
    }
}

fn path_of(error: &ValidationError) -> Path {
    Path(
        error
            .instance_path()
            .iter()
            .map(|segment| match segment {
                LocationSegment::Property(p) => Step::Key(p.into_owned()),
                LocationSegment::Index(i) => Step::Index(i),
            })
            .collect(),
    )
}

fn explain(error: &ValidationError, out: &mut Vec<Finding>) {
    let path = path_of(error);
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            for key in unexpected {
                out.push(Finding {
                    path: path.key(key),
                    about_key: true,
                    message: format!("unknown field `{key}`"),
                    hint: None,
                    misspelt: Some(key.clone()),
                });
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            out.push(Finding::at(path, format!("missing required field `{name}`")));
        }
        ValidationErrorKind::Type { kind } => {
            out.push(Finding::at(
                path,
                format!("expected {}, found {}", expected(kind), type_name(error.instance())),
            ));
        }
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            explain_alternatives(error, &path, context, out);
        }
        ValidationErrorKind::Enum { options } => {
            let options: Vec<String> = options
                .as_array()
                .map(|o| o.iter().map(|v| v.to_string()).collect())
                .unwrap_or_default();
            out.push(Finding::at(
                path,
                format!("{} is not one of {}", error.instance(), options.join(", ")),
            ));
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => {
            out.push(union_finding(path, error.instance(), "set only one of"));
        }
        _ => {
            let mut message = error.to_string();
            if message.len() > 200 {
                message.truncate(message.floor_char_boundary(200));
                message.push('…');
            }
            out.push(Finding::at(path, message));
        }
    }
}

/// A value matched none of a `oneOf`/`anyOf`. When exactly one alternative fits its shape
/// (its errors are all deeper than the value itself), or else exactly one is of its type, its
/// errors are the ones to show: a canary step weight of 150 is reported as such, not as
/// "matches no strategy".
fn explain_alternatives(
    error: &ValidationError,
    path: &Path,
    context: &[Vec<ValidationError<'static>>],
    out: &mut Vec<Finding>,
) {
    let here = error.instance_path();
    let shaped: Vec<_> = context
        .iter()
        .filter(|branch| {
            !branch.iter().any(|e| {
                e.instance_path() == here
                    && matches!(
                        e.kind(),
                        ValidationErrorKind::Required { .. }
                            | ValidationErrorKind::AdditionalProperties { .. }
                            | ValidationErrorKind::Type { .. }
                            | ValidationErrorKind::Constant { .. }
                            | ValidationErrorKind::Enum { .. }
                    )
            })
        })
        .collect();
    // Failing that, the one alternative of the value's type: an optional map (`X` or `null`)
    // reports a misspelt key of `X`.
    let typed: Vec<_> = context
        .iter()
        .filter(|branch| {
            !branch
                .iter()
                .any(|e| e.instance_path() == here && matches!(e.kind(), ValidationErrorKind::Type { .. }))
        })
        .collect();
    if let [branch] = shaped.as_slice() {
        branch.iter().for_each(|e| explain(e, out));
    } else if let ([], [branch]) = (shaped.as_slice(), typed.as_slice()) {
        branch.iter().for_each(|e| explain(e, out));
    } else {
        out.push(union_finding(path.clone(), error.instance(), "set exactly one of"));
    }
}

/// A finding for a value that must hold exactly one member of a union (`strategy`, a health
/// check's probe, `target`).
fn union_finding(path: Path, instance: &Value, verb: &str) -> Finding {
    let keys: Vec<&str> = instance
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let union = UNIONS.iter().find(|u| keys.iter().any(|k| u.members.contains(k)));
    match union {
        Some(u) => {
            let set: Vec<&str> = keys.iter().copied().filter(|k| u.members.contains(k)).collect();
            let list = u
                .members
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let found = if set.is_empty() {
                "none".into()
            } else {
                set.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
            };
            // Point at the member that conflicts: the last one set.
            let (path, about_key) = match set.last() {
                Some(last) if set.len() > 1 => (path.key(last), true),
                _ => (path, false),
            };
            let mut f = Finding::at(path, format!("{verb} {list} (found {found})"));
            f.about_key = about_key;
            f.hint = Some("an overlay that names another member replaces the one it inherits".into());
            f
        }
        None => {
            let expected = UNIONS
                .iter()
                .find(|u| path.0.last() == Some(&Step::Key(u.field.into())));
            let message = match expected {
                Some(u) => format!(
                    "{verb} {}",
                    u.members
                        .iter()
                        .map(|m| format!("`{m}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => format!("{} matches none of the allowed forms", type_name(instance)),
            };
            Finding::at(path, message)
        }
    }
}

fn expected(kind: &TypeKind) -> String {
    match kind {
        TypeKind::Single(t) => a_type(&t.to_string()),
        TypeKind::Multiple(set) => set
            .iter()
            .map(|t| a_type(&t.to_string()))
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

fn a_type(name: &str) -> String {
    match name {
        "object" => "a map".into(),
        "array" => "a list".into(),
        "integer" => "an integer".into(),
        "null" => "null".into(),
        other => format!("a {other}"),
    }
}

fn type_name(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() <= 40 => format!("the string {:?}", s),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a map".into(),
    }
}
