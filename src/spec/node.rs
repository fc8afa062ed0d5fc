//! The document tree every plumb file is read into: JSON-shaped values that remember the file,
//! line and column they came from, so that an error found after overlays are merged still points
//! at the line an engineer wrote. It does not parse (see `yaml`) and knows no document kinds.

use std::fmt;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

/// Where a value was written: a file of the repository, a 1-based line and a 1-based column.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    /// Path of the file, relative to the repository root.
    pub file: Arc<str>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
}

impl Origin {
    /// The start of `file`, for errors about a whole file.
    pub fn file(file: &Arc<str>) -> Self {
        Origin {
            file: file.clone(),
            line: 1,
            column: 1,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The value.
    pub kind: Kind,
    /// Where the value starts.
    pub at: Origin,
    /// How a Compose file merges it over an earlier file (`!reset`, `!override`); only the
    /// Compose loader reads these tags.
    pub merge: Option<MergeTag>,
}

/// A Compose merge tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeTag {
    /// `!reset`: the value of earlier files is dropped, and this one too.
    Reset,
    /// `!override`: the value replaces that of earlier files instead of merging with it.
    Override,
}

/// A member of a map: the key's own position is kept to point at misspelt keys.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// Where the key was written.
    pub key_at: Origin,
    /// The value.
    pub value: Node,
}

/// The JSON data model; YAML-only features (anchors, tags) are resolved while parsing.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// `null`, `~` or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    Str(Text),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping with string keys, in the order written.
    Map(Members),
}

pub use super::members::Members;

/// A key or string of a document: held inline up to 24 bytes, as most are, so that copying a
/// document (each environment merges its overlays over a copy) allocates only for the longer
/// ones.
pub type Text = compact_str::CompactString;

/// The documents of an environment's services, by name, in name order.
pub type Declared<'a> = IndexMap<&'a str, &'a Node, foldhash::fast::RandomState>;

impl Node {
    /// A node of `kind` at `at`.
    pub fn new(kind: Kind, at: Origin) -> Self {
        Node { kind, at, merge: None }
    }

    /// The members, when this is a map.
    pub fn as_map(&self) -> Option<&Members> {
        match &self.kind {
            Kind::Map(map) => Some(map),
            _ => None,
        }
    }

    /// The string, when this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The item at `index`, when this is a sequence that long.
    pub fn get_index(&self, index: usize) -> Option<&Node> {
        match &self.kind {
            Kind::Seq(items) => items.get(index),
            _ => None,
        }
    }

    /// The value under `key`, when this is a map that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?.get(key).map(|m| &m.value)
    }

    /// The JSON value, without positions.
    pub fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::from(*i),
            Kind::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Kind::Str(s) => Value::String(s.as_str().to_owned()),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(map) => Value::Object(
                map.iter()
                    .map(|(k, m)| (k.as_str().to_owned(), m.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// Whether `other` holds the same value with the same merge tags, in the same order,
    /// wherever each was written: positions are not compared.
    pub fn same_value(&self, other: &Node) -> bool {
        self.merge == other.merge
            && match (&self.kind, &other.kind) {
                (Kind::Seq(a), Kind::Seq(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.same_value(b)),
                (Kind::Map(a), Kind::Map(b)) => {
                    a.len() == b.len()
                        && a.iter()
                            .zip(b)
                            .all(|((ka, a), (kb, b))| ka == kb && a.value.same_value(&b.value))
                }
                // By their bits: -0.0 is written as such, and is another version than 0.0.
                (Kind::Float(a), Kind::Float(b)) => a.to_bits() == b.to_bits(),
                (a, b) => a == b,
            }
    }

    /// The node a JSON path leads to, and the origin of the key that leads to it, if any.
    /// Stops at the deepest node that exists, so a path into a missing member still finds its
    /// parent.
    pub fn locate<'a>(&'a self, path: &[Step]) -> (&'a Node, Option<&'a Origin>) {
        let mut node = self;
        let mut key_at = None;
        for step in path {
            let next = match (&node.kind, step) {
                (Kind::Map(map), Step::Key(k)) => map.get(k.as_str()).map(|m| (&m.value, Some(&m.key_at))),
                (Kind::Seq(items), Step::Index(i)) => items.get(*i).map(|n| (n, None)),
                _ => None,
            };
            match next {
                Some((n, k)) => {
                    node = n;
                    key_at = k;
                }
                None => break,
            }
        }
        (node, key_at)
    }
}

/// One step of a path into a document.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// A member of a map.
    Key(String),
    /// An item of a sequence.
    Index(usize),
}

/// A path into a document, printed as a JSONPath (`$.strategy.canary.steps[1].weight`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path(pub Vec<Step>);

impl Path {
    /// This path with one more step.
    pub fn join(&self, step: Step) -> Path {
        let mut steps = self.0.clone();
        steps.push(step);
        Path(steps)
    }

    /// This path with one more key.
    pub fn key(&self, key: &str) -> Path {
        self.join(Step::Key(key.to_owned()))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("$")?;
        for step in &self.0 {
            match step {
                Step::Index(i) => write!(f, "[{i}]")?,
                Step::Key(k) if is_identifier(k) => write!(f, ".{k}")?,
                Step::Key(k) => write!(f, "[{}]", Value::String(k.clone()))?,
            }
        }
        Ok(())
    }
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_as_jsonpath() {
        let path = Path(vec![
            Step::Key("strategy".into()),
            Step::Key("canary".into()),
            Step::Key("steps".into()),
            Step::Index(1),
            Step::Key("a.b".into()),
        ]);
        assert_eq!(path.to_string(), r#"$.strategy.canary.steps[1]["a.b"]"#);
        assert_eq!(Path::default().to_string(), "$");
    }

    #[test]
    fn same_value_ignores_positions_only() {
        let file: Arc<str> = Arc::from("a.yaml");
        let at = |line| Origin {
            file: file.clone(),
            line,
            column: 1,
        };
        let map = |line, pairs: &[(&str, i64)]| {
            let members = pairs.iter().map(|&(k, v)| {
                let member = Member {
                    key_at: at(line),
                    value: Node::new(Kind::Int(v), at(line + 1)),
                };
                (k.into(), member)
            });
            Node::new(Kind::Map(members.collect()), at(line))
        };
        assert!(map(1, &[("a", 1), ("b", 2)]).same_value(&map(7, &[("a", 1), ("b", 2)])));
        assert!(!map(1, &[("a", 1), ("b", 2)]).same_value(&map(1, &[("a", 1), ("b", 3)])));
        assert!(!map(1, &[("a", 1), ("b", 2)]).same_value(&map(1, &[("b", 2), ("a", 1)])));
        assert!(!map(1, &[("a", 1)]).same_value(&map(1, &[("a", 1), ("b", 2)])));
        let mut reset = map(1, &[("a", 1)]);
        reset.merge = Some(MergeTag::Reset);
        assert!(!reset.same_value(&map(1, &[("a", 1)])));
    }
}

/// Thousands of documents are held whole while a repository renders: every value's size counts.
#[cfg(all(test, target_pointer_width = "64"))]
mod sizes {
    use super::*;

    #[test]
    fn values_stay_small() {
        assert_eq!(size_of::<Kind>(), 32);
        assert_eq!(size_of::<Node>(), 64);
        assert_eq!(size_of::<Member>(), 88);
    }
}
