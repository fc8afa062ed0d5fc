//! One value set in a YAML file as a person would set it: the value's own text replaced, or the
//! missing keys added where the map they belong to is written (a line of their own in a block
//! map, `, key: value` in a flow map) — every other byte (comments, order, quoting,
//! indentation) left as written. The result is parsed again and must be the document with that
//! one value changed; anything else (a value shared through an anchor, a block scalar) is
//! refused rather than written.

use std::sync::Arc;

use serde_json::Value;

use super::node::{Kind, Node};
use super::yaml::{self, Limits};

/// `text` (the file `file`) with the value at `path` (keys) set to `value`.
pub fn set(file: &Arc<str>, text: &str, path: &[&str], value: &Value) -> Result<String, String> {
    let root = yaml::parse(file, text.as_bytes(), Limits::default()).map_err(|e| e.to_string())?;
    let lines = Lines::of(text);
    // The deepest node of the path the file writes, and the column of the key that holds it.
    let (mut node, mut depth, mut key_column) = (&root, 0, None);
    while depth < path.len() {
        let Some(member) = node.as_map().and_then(|m| m.get(path[depth])) else {
            break;
        };
        key_column = Some(member.key_at.column as usize - 1);
        node = &member.value;
        depth += 1;
    }
    let written = path[..depth].join(".");
    let edited = if depth == path.len() {
        replace(text, &lines, node, value, &written)?
    } else {
        match &node.kind {
            Kind::Map(_) => insert(text, &lines, node, key_column, &path[depth..], value)?,
            _ if depth == 0 => return Err(format!("{file} does not hold a map")),
            _ => {
                return Err(format!(
                    "`{written}` is a single value, not a map: it cannot hold `{}`",
                    path[depth]
                ));
            }
        }
    };
    let reread = yaml::parse(file, edited.as_bytes(), Limits::default()).map_err(|e| e.to_string())?;
    let mut expected = root.to_json();
    put(&mut expected, path, value.clone());
    if reread.to_json() != expected {
        return Err(format!(
            "`{}` in {file} cannot be changed alone where it is written (an anchor, an alias or a multi-line value): edit it by hand",
            path.join(".")
        ));
    }
    Ok(edited)
}

/// `value` with `path` set to `new`, maps made on the way.
fn put(value: &mut Value, path: &[&str], new: Value) {
    let Some((last, parents)) = path.split_last() else {
        *value = new;
        return;
    };
    let mut here = value;
    for key in parents {
        if !here.is_object() {
            *here = Value::Object(Default::default());
        }
        here = here
            .as_object_mut()
            .expect("an object")
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    if let Value::Object(map) = here {
        map.insert((*last).to_owned(), new);
    }
}

/// Where each line of a text starts.
struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn of(text: &'a str) -> Lines<'a> {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines { text, starts }
    }

    /// The byte offset of 1-based `line` and `column` (in characters).
    fn offset(&self, line: u32, column: u32) -> usize {
        let start = self.starts[(line as usize - 1).min(self.starts.len() - 1)];
        start
            + self.text[start..]
                .char_indices()
                .nth(column as usize - 1)
                .map_or(self.text.len() - start, |(i, _)| i)
    }

    /// Line `index` (0-based), without its end.
    fn line(&self, index: usize) -> &'a str {
        let start = self.starts[index];
        let end = self.starts.get(index + 1).map_or(self.text.len(), |e| e - 1);
        &self.text[start..end]
    }

    fn count(&self) -> usize {
        self.starts.len()
    }
}

/// The text of `node`'s value replaced by `value`'s.
fn replace(text: &str, lines: &Lines, node: &Node, value: &Value, path: &str) -> Result<String, String> {
    let start = lines.offset(node.at.line, node.at.column);
    let rest = &text[start..];
    let in_flow = flow_context(text, start);
    let end = match rest.chars().next() {
        Some('"') => closing_quote(rest, '"').ok_or("an unclosed quote")?,
        Some('\'') => closing_quote(rest, '\'').ok_or("an unclosed quote")?,
        Some('{' | '[') => closing_bracket(rest).ok_or("an unclosed bracket")?,
        Some('|' | '>') => return Err(format!("`{path}` is written as a block scalar: edit it by hand")),
        Some('&' | '*' | '!') => {
            return Err(format!(
                "`{path}` is written with an anchor, alias or tag: edit it by hand"
            ));
        }
        _ if matches!(node.kind, Kind::Map(_) | Kind::Seq(_)) => {
            return Err(format!(
                "`{path}` is a block of values: set its keys one by one, or edit it by hand"
            ));
        }
        _ => plain_end(rest, in_flow),
    };
    let style = rest.chars().next().unwrap_or(' ');
    let mut edited = String::with_capacity(text.len() + 16);
    edited.push_str(&text[..start]);
    edited.push_str(&scalar(value, style, in_flow));
    edited.push_str(&rest[end..]);
    Ok(edited)
}

/// Whether `offset` is inside a flow collection (`{…}` or `[…]`) on its line.
fn flow_context(text: &str, offset: usize) -> bool {
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let mut depth = 0i32;
    let mut quote = None;
    for c in text[line_start..offset].chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '{' | '[') => depth += 1,
            (None, '}' | ']') => depth -= 1,
            _ => {}
        }
    }
    depth > 0
}

/// The length of the quoted scalar `rest` starts with, quotes included.
fn closing_quote(rest: &str, quote: char) -> Option<usize> {
    let mut chars = rest.char_indices().skip(1).peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if quote == '"' => {
                chars.next();
            }
            c if c == quote => {
                if quote == '\'' && chars.peek().is_some_and(|(_, n)| *n == '\'') {
                    chars.next();
                    continue;
                }
                return Some(i + 1);
            }
            _ => {}
        }
    }
    None
}

/// The length of the flow collection `rest` starts with, brackets included.
fn closing_bracket(rest: &str) -> Option<usize> {
    let mut depth = 0;
    let mut quote = None;
    for (i, c) in rest.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '{' | '[') => depth += 1,
            (None, '}' | ']') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The length of the plain scalar `rest` starts with: to the end of its line, a comment, or
/// (in a flow collection) the next separator; trailing blanks left out.
fn plain_end(rest: &str, in_flow: bool) -> usize {
    let line = rest.find('\n').unwrap_or(rest.len());
    let mut end = line;
    let bytes = rest.as_bytes();
    for (i, c) in rest[..line].char_indices() {
        if (c == '#' && i > 0 && bytes[i - 1].is_ascii_whitespace()) || (in_flow && matches!(c, ',' | '}' | ']')) {
            end = i;
            break;
        }
    }
    rest[..end].trim_end().len()
}

/// `value` written as YAML: in the quoting of the value it replaces (`style`: its first
/// character), plain only where plain reads back as the same value.
fn scalar(value: &Value, style: char, in_flow: bool) -> String {
    let Value::String(text) = value else {
        // Numbers, booleans, null; lists and maps in flow style (JSON is YAML).
        return value.to_string();
    };
    match style {
        '\'' => format!("'{}'", text.replace('\'', "''")),
        '"' => Value::String(text.clone()).to_string(),
        _ if reads_plain(text, in_flow) => text.clone(),
        _ => Value::String(text.clone()).to_string(),
    }
}

/// Whether `text`, written plain, reads back as the string `text`.
fn reads_plain(text: &str, in_flow: bool) -> bool {
    if text.is_empty() || text.contains('\n') || text.trim() != text {
        return false;
    }
    let probe = if in_flow {
        format!("k: {{v: {text}}}\n")
    } else {
        format!("k: {text}\n")
    };
    let file: Arc<str> = Arc::from("probe");
    let Ok(node) = yaml::parse(&file, probe.as_bytes(), Limits::default()) else {
        return false;
    };
    let found = if in_flow {
        node.get("k").and_then(|k| k.get("v"))
    } else {
        node.get("k")
    };
    found.is_some_and(|n| n.as_str() == Some(text))
}

/// `keys` (missing from `map`, whose key is at `key_column`) added to `map` with `value`.
fn insert(
    text: &str,
    lines: &Lines,
    map: &Node,
    key_column: Option<usize>,
    keys: &[&str],
    value: &Value,
) -> Result<String, String> {
    let Kind::Map(members) = &map.kind else {
        unreachable!("a map")
    };
    let start = lines.offset(map.at.line, map.at.column);
    if text[start..].starts_with('{') {
        // A flow map: `, key: value` before its closing brace.
        let end = start + closing_bracket(&text[start..]).ok_or("an unclosed bracket")? - 1;
        let inside = text[start + 1..end].trim_end();
        let at = start + 1 + inside.len();
        let separator = if inside.trim().is_empty() { "" } else { ", " };
        let mut edited = text[..at].to_owned();
        edited.push_str(separator);
        edited.push_str(&flow(keys, value));
        edited.push_str(&text[at..]);
        return Ok(edited);
    }
    let Some(first) = members.values().next() else {
        return Err("an empty map written as nothing: edit it by hand".to_owned());
    };
    let indent = first.key_at.column as usize - 1;
    let step = key_column.map_or(2, |owner| indent.saturating_sub(owner).max(1));
    // The map's block ends before the first line, after its last key, written left of its keys
    // (a sequence's `- ` at the keys' own column still belongs to it).
    let last_key = members.values().map(|m| m.key_at.line).max().unwrap_or(map.at.line) as usize - 1;
    let mut last_content = last_key;
    for index in last_key + 1..lines.count() {
        let line = lines.line(index);
        let content = line.trim_start();
        if content.is_empty() {
            continue;
        }
        let column = line.len() - content.len();
        if column > indent || (column == indent && content.starts_with("- ")) {
            last_content = index;
        } else {
            break;
        }
    }
    let mut added = String::new();
    for (depth, key) in keys.iter().enumerate() {
        added.push_str(&" ".repeat(indent + depth * step));
        added.push_str(&key_text(key));
        if depth + 1 == keys.len() {
            added.push_str(": ");
            added.push_str(&scalar(value, ' ', false));
        } else {
            added.push(':');
        }
        added.push('\n');
    }
    let at = lines.starts.get(last_content + 1).copied().unwrap_or(text.len());
    let mut edited = text[..at].to_owned();
    if !edited.ends_with('\n') && !edited.is_empty() {
        edited.push('\n');
    }
    edited.push_str(&added);
    edited.push_str(&text[at..]);
    Ok(edited)
}

/// `keys` nested around `value`, in flow style: `a: {b: value}`.
fn flow(keys: &[&str], value: &Value) -> String {
    let (last, parents) = keys.split_last().expect("a key");
    let mut text = format!("{}: {}", key_text(last), scalar(value, ' ', true));
    for key in parents.iter().rev() {
        text = format!("{}: {{{text}}}", key_text(key));
    }
    text
}

/// A key as written: plain when it reads back as itself.
fn key_text(key: &str) -> String {
    if reads_plain(key, true) && !key.contains(':') {
        key.to_owned()
    } else {
        Value::String(key.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn edit(text: &str, path: &str, value: Value) -> Result<String, String> {
        let path: Vec<&str> = path.split('.').collect();
        set(&Arc::from("t.yaml"), text, &path, &value)
    }

    #[test]
    fn a_value_is_replaced_in_its_own_quoting_and_nothing_else_moves() {
        let text = "# top\na:\n  b: 1   # keep\n  c: \"x\"\n  d: 'y'\n  e: {f: 2, g: plain}\n";
        assert_eq!(
            edit(text, "a.b", json!(40)).unwrap(),
            "# top\na:\n  b: 40   # keep\n  c: \"x\"\n  d: 'y'\n  e: {f: 2, g: plain}\n"
        );
        assert_eq!(
            edit(text, "a.c", json!("z\"q")).unwrap(),
            text.replace("\"x\"", "\"z\\\"q\"")
        );
        assert_eq!(
            edit(text, "a.d", json!("it's")).unwrap(),
            text.replace("'y'", "'it''s'")
        );
        assert_eq!(
            edit(text, "a.e.g", json!("other")).unwrap(),
            text.replace("g: plain", "g: other")
        );
        assert_eq!(
            edit(text, "a.e.f", json!("a, b")).unwrap(),
            text.replace("f: 2", "f: \"a, b\"")
        );
        // A string that would read as another type is quoted.
        assert_eq!(
            edit(text, "a.b", json!("true")).unwrap(),
            text.replace("b: 1 ", "b: \"true\" ")
        );
    }

    #[test]
    fn missing_keys_are_added_where_their_map_is_written() {
        let text = "a:\n  b: 1\n  list:\n  - x\n  # about c\n  c:\n    d: 2\n\nnext: 3\n";
        assert_eq!(
            edit(text, "a.c.e", json!(true)).unwrap(),
            "a:\n  b: 1\n  list:\n  - x\n  # about c\n  c:\n    d: 2\n    e: true\n\nnext: 3\n"
        );
        assert_eq!(
            edit(text, "a.f.g", json!("h")).unwrap(),
            "a:\n  b: 1\n  list:\n  - x\n  # about c\n  c:\n    d: 2\n  f:\n    g: h\n\nnext: 3\n"
        );
        let flow = "a: {b: 1}\n";
        assert_eq!(edit(flow, "a.c.d", json!(2)).unwrap(), "a: {b: 1, c: {d: 2}}\n");
        assert_eq!(edit("a: {}\n", "a.c", json!(2)).unwrap(), "a: {c: 2}\n");
    }

    #[test]
    fn what_cannot_be_changed_alone_is_refused() {
        let shared = "base: &b {pool: 1}\nuse: *b\n";
        assert!(
            edit(shared, "base.pool", json!(2))
                .unwrap_err()
                .contains("edit it by hand")
        );
        let block = "a: |\n  text\n";
        assert!(edit(block, "a", json!("x")).unwrap_err().contains("edit it by hand"));
        assert!(edit("a: 1\n", "a.b", json!(2)).unwrap_err().contains("not a map"));
        assert!(
            edit("a:\n  b: 1\n", "a", json!(2))
                .unwrap_err()
                .contains("set its keys one by one")
        );
    }
}
