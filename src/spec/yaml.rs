//! Reading one YAML file into a [`Node`] tree, within limits that hostile input cannot get past:
//! size, nesting depth, nodes after alias expansion (alias bombs), text encoding. Scalars follow
//! the YAML 1.2 core schema, so `yes`, `no`, `on` and `off` stay strings. It does not know which
//! document a file holds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use granit_parser::{Event, Parser, ScalarStyle, Span, Tag};

use super::node::{Kind, Member, Members, MergeTag, Node, Origin, Text};

/// The limits a file is read within. The defaults are documented in `docs/format.md`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest file, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of sequences and maps.
    pub max_depth: usize,
    /// Most nodes in a document, counting every copy an alias makes.
    pub max_nodes: usize,
    /// Whether the file is read as Compose reads it: its merge tags (`!reset`, `!override`,
    /// refused otherwise) and Go's forms of integers (`0400` is octal, `0b101` binary, `1_000`).
    pub compose: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 8 << 20,
            max_depth: 64,
            max_nodes: 500_000,
            compose: false,
        }
    }
}

/// Why a file could not be read as a YAML document.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct YamlError {
    /// Where reading stopped.
    pub at: Origin,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// Reads `bytes`, the content of `file`, as a single YAML document.
pub fn parse(file: &Arc<str>, bytes: &[u8], limits: Limits) -> Result<Node, YamlError> {
    let mut documents = read(file, bytes, limits, false)?;
    Ok(documents
        .pop()
        .unwrap_or_else(|| Node::new(Kind::Null, Origin::file(file))))
}

/// Reads `bytes`, the content of `file`, as a stream of YAML documents separated by `---` (plain
/// Kubernetes manifests); empty documents are left out. The limits hold for the whole file.
pub fn parse_documents(file: &Arc<str>, bytes: &[u8], limits: Limits) -> Result<Vec<Node>, YamlError> {
    read(file, bytes, limits, true)
}

fn read(file: &Arc<str>, bytes: &[u8], limits: Limits, several: bool) -> Result<Vec<Node>, YamlError> {
    let fail = |at: Origin, message: String, hint: Option<&str>| YamlError {
        at,
        message,
        hint: hint.map(str::to_owned),
    };
    if bytes.len() > limits.max_bytes {
        return Err(fail(
            Origin::file(file),
            format!("file is larger than the limit of {} bytes", limits.max_bytes),
            Some("split the document, or move large data out of the config repository"),
        ));
    }
    if let Some(offset) = bytes.iter().position(|&b| b == 0) {
        return Err(fail(
            origin_of_offset(file, bytes, offset),
            "file holds a NUL byte: it looks binary, not YAML".into(),
            Some("only YAML text files belong in this folder"),
        ));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            return Err(fail(
                origin_of_offset(file, bytes, e.valid_up_to()),
                "file is not valid UTF-8".into(),
                Some("save the file as UTF-8"),
            ));
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    Builder {
        file,
        limits,
        stack: Vec::new(),
        items: Vec::new(),
        members: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        root: None,
        several,
        done: Vec::new(),
    }
    .run(text)
}

/// The position of a byte offset, for errors found before the parser runs.
fn origin_of_offset(file: &Arc<str>, bytes: &[u8], offset: usize) -> Origin {
    let before = &bytes[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
    Origin {
        file: file.clone(),
        line: line as u32,
        column: column as u32,
    }
}

/// A sequence or map being built.
struct Frame {
    at: Origin,
    anchor: usize,
    merge: Option<MergeTag>,
    /// Nodes in this collection so far, itself included.
    size: usize,
    body: Body,
}

/// What a collection holds so far: its items (members) are the builder's from `start` on,
/// so that each collection is made once, at its size, when it ends.
enum Body {
    Seq {
        start: usize,
    },
    Map {
        start: usize,
        key: Option<(Text, Origin)>,
        /// Maps named by `<<` merge keys, applied when the map ends (explicit keys win).
        merges: Vec<Node>,
        /// The keys written so far, once there are enough that looking among the members for a
        /// duplicate would be slow.
        index: Option<HashSet<Text, foldhash::fast::RandomState>>,
    },
}

/// Past this many members, a map being built looks for duplicate keys in a set.
const SCANNED_KEYS: usize = 16;

struct Builder<'f> {
    file: &'f Arc<str>,
    limits: Limits,
    stack: Vec<Frame>,
    /// The items of the sequences being built, innermost last.
    items: Vec<Node>,
    /// The members of the maps being built, innermost last.
    members: Vec<(Text, Member)>,
    anchors: HashMap<usize, (Node, usize)>,
    nodes: usize,
    root: Option<Node>,
    /// Whether several documents may follow each other, and those read so far.
    several: bool,
    done: Vec<Node>,
}

impl Builder<'_> {
    fn run(mut self, text: &str) -> Result<Vec<Node>, YamlError> {
        let options = granit_parser::options! {
            emit_comments: false,
        };
        let mut parser = Parser::new_from_str_with_options(text, options);
        let mut documents = 0;
        while let Some(event) = parser.next_event() {
            let (event, span) = event.map_err(|e| YamlError {
                at: self.origin_of_marker(e.marker().line(), e.marker().col()),
                message: format!("invalid YAML: {}", e.info()),
                hint: None,
            })?;
            match event {
                Event::DocumentStart(..) if self.several => {
                    // Anchors do not reach across documents.
                    self.anchors.clear();
                    self.done.extend(self.root.take());
                }
                Event::DocumentStart(..) => {
                    documents += 1;
                    if documents > 1 {
                        return Err(self.error(
                            span,
                            "a second YAML document in one file",
                            Some("put each document in a file of its own"),
                        ));
                    }
                }
                Event::Scalar(value, style, anchor, tag) => {
                    if self.expects_key() {
                        self.push_key(Text::from(&*value), span);
                    } else {
                        let merge = self.merge_tag(tag.as_deref());
                        let kind = match merge {
                            Some(_) => self.scalar(&value, style, None, span)?,
                            None => self.scalar(&value, style, tag.as_deref(), span)?,
                        };
                        self.count(1, span)?;
                        let mut node = Node::new(kind, self.origin(span));
                        node.merge = merge;
                        self.push_value(node, anchor, 1)?;
                    }
                }
                Event::Alias(id) => {
                    if self.expects_key() {
                        return Err(self.error(span, "an alias cannot be used as a key", None));
                    }
                    let Some((node, size)) = self.anchors.get(&id).cloned() else {
                        return Err(self.error(
                            span,
                            "alias to an anchor that is not complete here",
                            Some("an alias may only refer to an anchor defined earlier, outside the alias itself"),
                        ));
                    };
                    self.count(size, span)?;
                    self.push_value(node, 0, size)?;
                }
                Event::SequenceStart(_, anchor, tag) => {
                    let body = Body::Seq {
                        start: self.items.len(),
                    };
                    self.open(span, anchor, tag.as_deref(), "seq", body)?
                }
                Event::MappingStart(_, anchor, tag) => self.open(
                    span,
                    anchor,
                    tag.as_deref(),
                    "map",
                    Body::Map {
                        start: self.members.len(),
                        key: None,
                        merges: Vec::new(),
                        index: None,
                    },
                )?,
                Event::SequenceEnd | Event::MappingEnd => self.close()?,
                Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
                // Events only when asked for, as the options above do not: anchors' names
                // (presentation, not values), aliases to no anchor (an error by default),
                // comments (a variant only with a feature another crate may turn on).
                Event::Anchor(..) => {}
                Event::UnresolvedAlias(_) => {
                    return Err(self.error(span, "alias to an anchor that is not defined", None));
                }
                _ => {}
            }
        }
        self.done.extend(self.root.take());
        Ok(self.done)
    }

    fn origin(&self, span: Span) -> Origin {
        self.origin_of_marker(span.start.line(), span.start.col())
    }

    fn origin_of_marker(&self, line: usize, col: usize) -> Origin {
        Origin {
            file: self.file.clone(),
            line: line.max(1) as u32,
            column: col as u32 + 1,
        }
    }

    fn error(&self, span: Span, message: &str, hint: Option<&str>) -> YamlError {
        YamlError {
            at: self.origin(span),
            message: message.to_owned(),
            hint: hint.map(str::to_owned),
        }
    }

    fn count(&mut self, nodes: usize, span: Span) -> Result<(), YamlError> {
        self.nodes += nodes;
        if self.nodes > self.limits.max_nodes {
            return Err(YamlError {
                at: self.origin(span),
                message: format!("document expands to more than {} values", self.limits.max_nodes),
                hint: Some(
                    "aliases that copy large anchors multiply a document's size; write the values out or shrink them"
                        .into(),
                ),
            });
        }
        Ok(())
    }

    fn expects_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame {
                body: Body::Map { key: None, .. },
                ..
            })
        )
    }

    fn open(
        &mut self,
        span: Span,
        anchor: usize,
        tag: Option<&Tag>,
        expected: &str,
        body: Body,
    ) -> Result<(), YamlError> {
        if self.expects_key() {
            return Err(self.error(span, "a key must be a plain value, not a sequence or a map", None));
        }
        let merge = self.merge_tag(tag);
        if let Some(tag) = tag
            && !(tag.is_yaml_core_schema() && tag.suffix() == expected)
            && merge.is_none()
        {
            return Err(self.error(
                span,
                &format!("unsupported tag `{tag}`"),
                Some("plumb documents use plain YAML values without tags"),
            ));
        }
        if self.stack.len() >= self.limits.max_depth {
            return Err(self.error(
                span,
                &format!("nesting deeper than {} levels", self.limits.max_depth),
                None,
            ));
        }
        self.count(1, span)?;
        let at = self.origin(span);
        self.stack.push(Frame {
            at,
            anchor,
            merge,
            size: 1,
            body,
        });
        Ok(())
    }

    fn close(&mut self) -> Result<(), YamlError> {
        let frame = self.stack.pop().expect("the parser balances collection events");
        // Made at its size: documents are mostly small maps, and a repository of thousands of
        // them is held whole while it renders.
        let kind = match frame.body {
            Body::Seq { start } => Kind::Seq(self.items.drain(start..).collect()),
            Body::Map { start, merges, .. } => {
                let written = self.members.len() - start;
                // Each key is written once: duplicates were refused as they came.
                let mut members = Members::from_unique(self.members.drain(start..).collect());
                for source in merges {
                    let maps = match source.kind {
                        Kind::Seq(items) => items,
                        _ => vec![source],
                    };
                    for map in maps {
                        let Kind::Map(entries) = map.kind else {
                            return Err(YamlError {
                                at: map.at,
                                message: "a `<<` merge key must name a map or a list of maps".into(),
                                hint: None,
                            });
                        };
                        for (key, member) in entries {
                            members.insert_if_absent(key, member);
                        }
                    }
                }
                if members.len() > written {
                    members.shrink_to_fit();
                }
                Kind::Map(members)
            }
        };
        let mut node = Node::new(kind, frame.at);
        node.merge = frame.merge;
        self.push_value(node, frame.anchor, frame.size)
    }

    fn push_key(&mut self, key: Text, span: Span) {
        let at = self.origin(span);
        if let Some(Frame {
            body: Body::Map { key: pending, .. },
            ..
        }) = self.stack.last_mut()
        {
            *pending = Some((key, at));
        }
    }

    /// Adds a finished value to the collection being built, or makes it the root.
    fn push_value(&mut self, node: Node, anchor: usize, size: usize) -> Result<(), YamlError> {
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        parent.size += size;
        match &mut parent.body {
            Body::Seq { .. } => self.items.push(node),
            Body::Map {
                start,
                key,
                merges,
                index,
            } => {
                let (key, key_at) = key.take().expect("a value in a map follows its key");
                if key == "<<" {
                    merges.push(node);
                    return Ok(());
                }
                if let Some(first) = written_before(&self.members[*start..], index, &key) {
                    let message = format!("duplicate key `{key}` (first written at line {})", first.key_at.line);
                    return Err(YamlError {
                        at: key_at,
                        message,
                        hint: Some("remove one of them".into()),
                    });
                }
                self.members.push((key, Member { key_at, value: node }));
            }
        }
        Ok(())
    }

    /// Compose's merge tag `tag` is, when those are read.
    fn merge_tag(&self, tag: Option<&Tag>) -> Option<MergeTag> {
        let tag = tag.filter(|_| self.limits.compose)?;
        match (tag.handle(), tag.suffix()) {
            ("!", "reset") => Some(MergeTag::Reset),
            ("!", "override") => Some(MergeTag::Override),
            _ => None,
        }
    }

    fn scalar(&self, value: &str, style: ScalarStyle, tag: Option<&Tag>, span: Span) -> Result<Kind, YamlError> {
        let resolved = match tag {
            Some(tag) if tag.is_yaml_core_schema() => match tag.suffix() {
                "str" => Some(Kind::Str(Text::from(value))),
                "null" | "bool" | "int" | "float" => {
                    let kind = resolve_plain(value);
                    let ok = matches!(
                        (tag.suffix(), &kind),
                        ("null", Kind::Null)
                            | ("bool", Kind::Bool(_))
                            | ("int", Kind::Int(_))
                            | ("float", Kind::Float(_) | Kind::Int(_))
                    );
                    if !ok {
                        return Err(self.error(span, &format!("`{value}` is not a valid `{tag}`"), None));
                    }
                    Some(kind)
                }
                _ => None,
            },
            Some(tag) if tag.handle() == "!" && tag.suffix().is_empty() => Some(Kind::Str(Text::from(value))),
            Some(_) => None,
            None if style == ScalarStyle::Plain && self.limits.compose => {
                Some(go_integer(value).map_or_else(|| resolve_plain(value), Kind::Int))
            }
            None if style == ScalarStyle::Plain => Some(resolve_plain(value)),
            None => Some(Kind::Str(Text::from(value))),
        };
        let Some(kind) = resolved else {
            let tag = tag.map(ToString::to_string).unwrap_or_default();
            return Err(self.error(
                span,
                &format!("unsupported tag `{tag}`"),
                Some("plumb documents use plain YAML values without tags"),
            ));
        };
        if let Kind::Float(f) = kind
            && !f.is_finite()
        {
            return Err(self.error(
                span,
                "infinite and NaN numbers are not supported",
                Some("quote the value to keep it as a string"),
            ));
        }
        Ok(kind)
    }
}

/// The member among a map's `written` ones that has `key` already, if any; `index` holds their
/// keys once there are more than a few, and learns `key` when it is new.
fn written_before<'a>(
    written: &'a [(Text, Member)],
    index: &mut Option<HashSet<Text, foldhash::fast::RandomState>>,
    key: &Text,
) -> Option<&'a Member> {
    if index.is_none() && written.len() >= SCANNED_KEYS {
        *index = Some(written.iter().map(|(k, _)| k.clone()).collect());
    }
    let known = match index {
        Some(index) => !index.insert(key.clone()),
        None => true,
    };
    known
        .then(|| written.iter().find(|(k, _)| k == key).map(|(_, m)| m))
        .flatten()
}

/// Resolves a plain (unquoted) scalar by the YAML 1.2 core schema.
fn resolve_plain(value: &str) -> Kind {
    match value {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" => return Kind::Bool(true),
        "false" | "False" | "FALSE" => return Kind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Kind::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Kind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Kind::Float(f64::NAN),
        _ => {}
    }
    let (sign, digits) = match value.as_bytes()[0] {
        b'-' => (-1, &value[1..]),
        b'+' => (1, &value[1..]),
        _ => (1, value),
    };
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match value.parse::<i64>() {
            Ok(i) => Kind::Int(i),
            Err(_) => Kind::Float(value.parse().unwrap_or(f64::INFINITY)),
        };
    }
    let radix = |prefix: &str, radix: u32| {
        value
            .strip_prefix(prefix)
            .filter(|d| !d.is_empty())
            .and_then(|d| i64::from_str_radix(d, radix).ok())
    };
    if let Some(i) = radix("0x", 16).or_else(|| radix("0o", 8)) {
        return Kind::Int(i);
    }
    if is_float(digits)
        && let Ok(f) = value.parse::<f64>()
    {
        return Kind::Float(f * if sign < 0 && f > 0.0 { -1.0 } else { 1.0 });
    }
    Kind::Str(Text::from(value))
}

/// An integer as Go reads one with base 0, as Compose's YAML does: `0400` octal, `0b101`
/// binary, `0x1f` hexadecimal, `0o17` octal, underscores between digits; `None` for what the
/// YAML core schema reads the same (decimal) or is not an integer.
fn go_integer(value: &str) -> Option<i64> {
    let (negative, digits) = match value.as_bytes().first()? {
        b'-' => (true, &value[1..]),
        b'+' => (false, &value[1..]),
        _ => (false, value),
    };
    let digits = digits.replace('_', "");
    let (radix, rest) = if let Some(rest) = digits.strip_prefix("0b").or_else(|| digits.strip_prefix("0B")) {
        (2, rest)
    } else if digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit()) {
        (8, &digits[1..])
    } else if value.contains('_') && digits.bytes().all(|b| b.is_ascii_digit()) {
        (10, digits.as_str())
    } else {
        return None;
    };
    if rest.is_empty() {
        return None;
    }
    let magnitude = i64::from_str_radix(rest, radix).ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` without the sign.
fn is_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => digits(int) && digits(f) && !(int.is_empty() && f.is_empty()),
        None => !int.is_empty() && digits(int),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(text: &str) -> Result<Node, YamlError> {
        parse(&Arc::from("t.yaml"), text.as_bytes(), Limits::default())
    }

    #[test]
    fn core_schema_scalars() {
        let node = read("a: yes\nb: 0x1f\nc: 1.5e3\nd: ~\ne: '1'\nf: -7\ng: True\nh: .5\ni: 1.2.3\n").unwrap();
        assert_eq!(
            node.to_json(),
            json!({"a": "yes", "b": 31, "c": 1500.0, "d": null, "e": "1", "f": -7, "g": true, "h": 0.5, "i": "1.2.3"})
        );
    }

    #[test]
    fn positions_are_one_based() {
        let node = read("top:\n  inner: 3\n").unwrap();
        let map = node.get("top").unwrap().as_map().unwrap();
        let member = &map["inner"];
        assert_eq!((member.key_at.line, member.key_at.column), (2, 3));
        assert_eq!((member.value.at.line, member.value.at.column), (2, 10));
    }

    #[test]
    fn merge_keys_yield_to_explicit_keys() {
        let node = read("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n").unwrap();
        assert_eq!(node.get("other").unwrap().to_json(), json!({"y": 3, "x": 1}));
    }

    #[test]
    fn duplicate_keys_are_refused_with_both_lines() {
        let err = read("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.at.line, 3);
        assert!(err.message.contains("first written at line 1"), "{}", err.message);
    }

    #[test]
    fn a_duplicate_key_is_the_first_problem_when_it_comes_first() {
        // Found as soon as it is written: problems further on, in the same map or below it,
        // are not reached.
        let err = read("name: a\nname: b\nspec: [1, 2\n").unwrap_err();
        assert_eq!(
            (err.at.line, err.message.as_str()),
            (2, "duplicate key `name` (first written at line 1)")
        );
        let err = read("a: 1\na: 2\nb: {x: 1, x: 2}\n").unwrap_err();
        assert_eq!(err.at.line, 2);
        // A map of many keys looks them up in a set, from the first key on.
        let keys: String = (0..40).map(|i| format!("k{i}: {i}\n")).collect();
        let err = read(&format!("{keys}k0: again\nk39: again\n")).unwrap_err();
        assert_eq!(
            (err.at.line, err.message.as_str()),
            (41, "duplicate key `k0` (first written at line 1)")
        );
        let err = read(&format!("{keys}k39: again\n")).unwrap_err();
        assert_eq!(
            (err.at.line, err.message.as_str()),
            (41, "duplicate key `k39` (first written at line 40)")
        );
    }

    #[test]
    fn alias_bombs_stop_at_the_node_limit() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .windows(2)
            .map(|w| (w[0], w[1]))
        {
            text.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let err = read(&text).unwrap_err();
        assert!(err.message.contains("expands to more than"), "{}", err.message);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let block: String = (0..100).map(|depth| format!("{}a:\n", "  ".repeat(depth))).collect();
        let err = read(&block).unwrap_err();
        assert!(err.message.contains("nesting deeper than 64"), "{}", err.message);
        // The scanner refuses very deep flow collections on its own, before a tree is built.
        let flow = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(read(&flow).is_err());
    }

    #[test]
    fn binary_and_non_utf8_files_are_refused_with_a_position() {
        let err = parse(&Arc::from("b.yaml"), b"a: 1\nb: \xff\xfe\n", Limits::default()).unwrap_err();
        assert_eq!(
            (err.at.line, err.at.column, err.message.as_str()),
            (2, 4, "file is not valid UTF-8")
        );
        let err = parse(&Arc::from("b.yaml"), b"a: \x00", Limits::default()).unwrap_err();
        assert!(err.message.contains("NUL byte"));
    }

    #[test]
    fn compose_files_read_integers_and_merge_tags_as_compose_does() {
        let compose = Limits {
            compose: true,
            ..Limits::default()
        };
        let text = b"a: 0400\nb: 0b101\nc: 1_000\nd: 0x1f\ne: 400\nf: '0400'\ng: !reset []\nh: !override {x: 1}\n";
        let node = parse(&Arc::from("compose.yaml"), text, compose).unwrap();
        let json = node.to_json();
        assert_eq!(
            json,
            serde_json::json!({"a": 256, "b": 5, "c": 1000, "d": 31, "e": 400, "f": "0400", "g": [], "h": {"x": 1}})
        );
        assert_eq!(node.get("g").unwrap().merge, Some(MergeTag::Reset));
        assert_eq!(node.get("h").unwrap().merge, Some(MergeTag::Override));
        // plumb's own documents are YAML 1.2 and take no tags.
        let plain = parse(&Arc::from("plumb.yaml"), b"a: 0400\n", Limits::default()).unwrap();
        assert_eq!(plain.to_json(), serde_json::json!({"a": 400}));
        let err = parse(&Arc::from("plumb.yaml"), b"g: !reset []\n", Limits::default()).unwrap_err();
        assert!(err.message.contains("unsupported tag"), "{}", err.message);
    }

    #[test]
    fn oversized_files_are_refused_before_parsing() {
        let limits = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        let err = parse(&Arc::from("big.yaml"), b"a: 123456789012", limits).unwrap_err();
        assert!(err.message.contains("larger than the limit of 10 bytes"));
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = read("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
        assert!(err.at.line >= 1);
    }

    #[test]
    fn one_document_per_file() {
        let err = read("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(err.message.contains("second YAML document"));
    }

    #[test]
    fn unknown_tags_are_refused() {
        assert!(read("a: !custom 1\n").unwrap_err().message.contains("unsupported tag"));
        assert_eq!(read("a: !!str 12\n").unwrap().to_json(), json!({"a": "12"}));
    }
}
