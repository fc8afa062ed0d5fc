//! Compose's variable interpolation, as the Compose Specification and Compose v2 do it:
//! `$NAME`, `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?error}`,
//! `${NAME?error}`, `${NAME:+other}`, `${NAME+other}`, nested in each other's arguments, and
//! `$$` for a literal `$`. A `$` that starts none of these stays as written.
//!
//! One difference, on purpose: a variable that is not set and has no default is refused where
//! Compose warns and puts an empty string (write `${NAME:-}` for that), since a release must not
//! run with a value nobody wrote.

use std::fmt;

/// Why a text cannot be interpolated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// `${` not closed, an empty or malformed name, an unknown operator.
    Invalid,
    /// `${NAME:?message}` or `${NAME?message}` with `NAME` unset (or empty, with `:`).
    Required { name: String, message: String },
    /// `$NAME` or `${NAME}` with `NAME` unset and no default.
    Unset(Vec<String>),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Invalid => write!(f, "is not a valid interpolation (write `$$` for a literal `$`)"),
            Problem::Required { name, message } if message.is_empty() => {
                write!(f, "needs variable `{name}`, which is not set")
            }
            Problem::Required { name, message } => {
                write!(f, "needs variable `{name}`, which is not set: {message}")
            }
            Problem::Unset(names) => {
                let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
                write!(
                    f,
                    "uses {} {}, not set and without a default",
                    if names.len() == 1 { "variable" } else { "variables" },
                    names.join(", ")
                )
            }
        }
    }
}

/// `text` with its variables replaced by what `lookup` gives.
pub fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, Problem> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let parts = parse(text)?;
    let mut unset = Vec::new();
    let value = evaluate(&parts, lookup, &mut unset)?;
    if unset.is_empty() {
        Ok(value)
    } else {
        unset.dedup();
        Err(Problem::Unset(unset))
    }
}

/// A piece of a template.
#[derive(Debug)]
enum Part {
    Text(String),
    Variable {
        name: String,
        operator: Option<(Operator, Vec<Part>)>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    /// `-`: the argument when unset; with `:` when unset or empty.
    Default { or_empty: bool },
    /// `?`: refused when unset; with `:` when unset or empty.
    Required { or_empty: bool },
    /// `+`: the argument when set; with `:` when set and not empty.
    Alternative { or_empty: bool },
}

/// How deep `${…}` may nest in an argument: deeper is refused (Compose has no use for it, and
/// it would grow the stack without bound).
const DEEPEST: usize = 32;

fn parse(text: &str) -> Result<Vec<Part>, Problem> {
    let chars: Vec<char> = text.chars().collect();
    let mut at = 0;
    let parts = parse_until(&chars, &mut at, false, 0)?;
    Ok(parts)
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// Parses from `at` to the end, or (in an argument) to its closing brace, consumed: braces
/// opened inside the argument are matched first.
fn parse_until(chars: &[char], at: &mut usize, in_argument: bool, depth: usize) -> Result<Vec<Part>, Problem> {
    if depth > DEEPEST {
        return Err(Problem::Invalid);
    }
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut braces = 0usize;
    while *at < chars.len() {
        let c = chars[*at];
        match c {
            '}' if in_argument && braces == 0 => {
                *at += 1;
                push_text(&mut parts, &mut text);
                return Ok(parts);
            }
            '}' if in_argument => {
                braces -= 1;
                text.push(c);
                *at += 1;
            }
            '{' if in_argument => {
                braces += 1;
                text.push(c);
                *at += 1;
            }
            '$' => match chars.get(*at + 1) {
                Some('$') => {
                    text.push('$');
                    *at += 2;
                }
                Some('{') => {
                    *at += 2;
                    push_text(&mut parts, &mut text);
                    parts.push(braced(chars, at, depth)?);
                }
                Some(&n) if is_name_start(n) => {
                    *at += 1;
                    let name = name(chars, at);
                    push_text(&mut parts, &mut text);
                    parts.push(Part::Variable { name, operator: None });
                }
                _ => {
                    text.push('$');
                    *at += 1;
                }
            },
            c => {
                text.push(c);
                *at += 1;
            }
        }
    }
    if in_argument {
        return Err(Problem::Invalid);
    }
    push_text(&mut parts, &mut text);
    Ok(parts)
}

fn push_text(parts: &mut Vec<Part>, text: &mut String) {
    if !text.is_empty() {
        parts.push(Part::Text(std::mem::take(text)));
    }
}

fn name(chars: &[char], at: &mut usize) -> String {
    let start = *at;
    while *at < chars.len() && is_name(chars[*at]) {
        *at += 1;
    }
    chars[start..*at].iter().collect()
}

/// What follows `${`: a name, then `}` or an operator, its argument and `}`.
fn braced(chars: &[char], at: &mut usize, depth: usize) -> Result<Part, Problem> {
    if !chars.get(*at).is_some_and(|&c| is_name_start(c)) {
        return Err(Problem::Invalid);
    }
    let name = name(chars, at);
    let or_empty = chars.get(*at) == Some(&':');
    if or_empty {
        *at += 1;
    }
    let operator = match chars.get(*at) {
        Some('}') if !or_empty => {
            *at += 1;
            return Ok(Part::Variable { name, operator: None });
        }
        Some('-') => Operator::Default { or_empty },
        Some('?') => Operator::Required { or_empty },
        Some('+') => Operator::Alternative { or_empty },
        _ => return Err(Problem::Invalid),
    };
    *at += 1;
    let argument = parse_until(chars, at, true, depth + 1)?;
    Ok(Part::Variable {
        name,
        operator: Some((operator, argument)),
    })
}

/// The value of `parts`; the names used while unset are added to `unset`. Arguments are
/// evaluated whether used or not, as Compose does (a missing required variable in an unused
/// default is refused), but an unset variable counts only where its value is used.
fn evaluate(
    parts: &[Part],
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
) -> Result<String, Problem> {
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Variable { name, operator: None } => match lookup(name) {
                Some(value) => out.push_str(&value),
                None => unset.push(name.clone()),
            },
            Part::Variable {
                name,
                operator: Some((operator, argument)),
            } => {
                let mut argument_unset = Vec::new();
                let argument = evaluate(argument, lookup, &mut argument_unset)?;
                let value = lookup(name);
                let empty = value.as_deref().is_none_or(str::is_empty);
                let (chosen, argument_used) = match *operator {
                    Operator::Default { or_empty } => {
                        if value.is_none() || (or_empty && empty) {
                            (argument, true)
                        } else {
                            (value.unwrap_or_default(), false)
                        }
                    }
                    Operator::Alternative { or_empty } => {
                        if value.is_some() && !(or_empty && empty) {
                            (argument, true)
                        } else {
                            (value.unwrap_or_default(), false)
                        }
                    }
                    Operator::Required { or_empty } => {
                        if value.is_none() || (or_empty && empty) {
                            return Err(Problem::Required {
                                name: name.clone(),
                                message: argument,
                            });
                        }
                        (value.unwrap_or_default(), false)
                    }
                };
                if argument_used {
                    unset.extend(argument_unset);
                }
                out.push_str(&chosen);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(text: &str) -> Result<String, Problem> {
        let lookup = |name: &str| match name {
            "SET" => Some("value".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        interpolate(text, &lookup)
    }

    #[test]
    fn every_form_of_the_specification() {
        for (text, expected) in [
            ("$SET", "value"),
            ("${SET}", "value"),
            ("${UNSET:-def}", "def"),
            ("${EMPTY:-def}", "def"),
            ("${EMPTY-def}", ""),
            ("${UNSET-def}", "def"),
            ("${SET:+alt}", "alt"),
            ("${EMPTY:+alt}", ""),
            ("${EMPTY+alt}", "alt"),
            ("${UNSET+alt}", ""),
            ("$$SET", "$SET"),
            ("${UNSET:-${SET:-x}}", "value"),
            ("a$SET.b", "avalue.b"),
            ("${SET}x", "valuex"),
            ("$$(cat /x)", "$(cat /x)"),
            ("${UNSET:-a}}", "a}"),
            ("${UNSET:-}", ""),
            ("${SET:?must}", "value"),
            ("$ 5", "$ 5"),
            ("$", "$"),
            ("$1abc", "$1abc"),
            ("${UNSET:-a:-b}", "a:-b"),
            ("${UN-SET}", "SET"),
            ("${UNSET:-{x}}", "{x}"),
            ("${SET:+${UNSET:-n}}", "n"),
            ("${SET:-$UNSET}", "value"),
            ("$${SET}", "${SET}"),
            ("$$$SET", "$value"),
            ("${EMPTY?x}", ""),
        ] {
            assert_eq!(with(text).as_deref(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn what_compose_refuses_is_refused_and_an_unset_variable_too() {
        for text in ["${}", "${SET", "${1abc}", "${SET.x}", "${SET:x}", "${SET:-${}}"] {
            assert_eq!(with(text), Err(Problem::Invalid), "{text}");
        }
        assert_eq!(
            with("${UNSET?oops ${SET}}"),
            Err(Problem::Required {
                name: "UNSET".into(),
                message: "oops value".into()
            })
        );
        // An unused argument is still evaluated, as Compose does.
        assert!(matches!(with("${SET:-${UNSET:?boom}}"), Err(Problem::Required { .. })));
        assert_eq!(
            with("$UNSET and ${OTHER}"),
            Err(Problem::Unset(vec!["UNSET".into(), "OTHER".into()]))
        );
        // Nesting without end is refused, not followed until the stack runs out.
        let deep = format!("{}x{}", "${A:-".repeat(100_000), "}".repeat(100_000));
        assert_eq!(with(&deep), Err(Problem::Invalid));
    }
}
