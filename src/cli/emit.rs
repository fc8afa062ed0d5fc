//! Writing a JSON value as block-style YAML for people to read. Strings that YAML would read
//! as something else (numbers, booleans, `null`, text with `: ` or `#`) are double-quoted, so
//! the output reads back to the same value.

use serde_json::Value;

/// `value` as a YAML document.
pub fn yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    out
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&string(key));
        out.push(':');
        write_child(out, value, indent);
    }
}

fn write_seq(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first member shares the dash's line; the rest align under it.
                let mut nested = String::new();
                write_map(&mut nested, map, indent + 2);
                out.push(' ');
                out.push_str(&nested[indent + 2..]);
            }
            _ => write_child(out, item, indent),
        }
    }
}

fn write_child(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => match flow(items) {
            Some(line) => {
                out.push(' ');
                out.push_str(&line);
                out.push('\n');
            }
            None => {
                out.push('\n');
                write_seq(out, items, indent + 2);
            }
        },
        scalar => {
            out.push(' ');
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
}

/// A short list of scalars on one line (`[a, b, c]`), as people write commands.
fn flow(items: &[Value]) -> Option<String> {
    if items.iter().any(|i| i.is_object() || i.is_array()) {
        return None;
    }
    let parts: Vec<String> = items
        .iter()
        .map(|i| match i {
            Value::String(s) if s.contains([',', '[', ']', '{', '}']) => Value::String(s.clone()).to_string(),
            other => inline(other),
        })
        .collect();
    let line = format!("[{}]", parts.join(", "));
    (line.len() <= 80).then_some(line)
}

fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn string(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || " _-./@${}()+=,<>:".contains(c))
        && !s.starts_with([' ', '-', '{', '}', '$', '@', '<', '>', ':', ',', '.'])
        && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.contains(" #")
        && s.parse::<f64>().is_err()
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "null" | "true" | "false" | "~" | "yes" | "no" | "on" | "off"
        )
        && !s.starts_with("0x")
        && !s.starts_with("0o");
    if plain {
        s.to_owned()
    } else {
        Value::String(s.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::yaml::{Limits, parse};
    use serde_json::json;

    #[test]
    fn output_reads_back_to_the_same_value() {
        let value = json!({
            "a": "plain", "b": "3000", "c": "true", "d": "x: y", "e": [1, {"k": "v", "l": [true, null]}, []],
            "f": {}, "g": "ENC[age,xx]", "h": "${PORT}", "i": "-1", "j": "", "k": "a #b", "l": 1.5,
            "m": [{"n": {"o": 1}}], "twikit:": "key:", "p": "0x1f", "q": "yes"
        });
        let text = yaml(&value);
        let back = parse(&"t.yaml".into(), text.as_bytes(), Limits::default())
            .unwrap()
            .to_json();
        assert_eq!(back, value, "{text}");
    }
}
