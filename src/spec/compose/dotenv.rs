//! `.env` and `env_file` files as Compose v2 reads them: `NAME=value` lines, `export` allowed,
//! `#` comments (after a space on a value's line), double quotes with escapes and
//! interpolation, possibly over several lines, single quotes taken literally, unquoted values
//! trimmed and interpolated. A line holding a name alone takes the variable from `lookup`.

use super::interpolate::{Problem, interpolate};

/// One variable of the file and the line it is written on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub value: String,
    pub line: u32,
}

/// A line that cannot be read, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineProblem {
    pub line: u32,
    pub message: String,
}

/// The variables of `text`, in order. A value is interpolated with the variables written
/// above it, or else `lookup`'s.
pub fn parse(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Entry>, LineProblem> {
    let lines: Vec<&str> = text.lines().collect();
    let mut entries: Vec<Entry> = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let line = index as u32 + 1;
        let problem = |message: String| LineProblem { line, message };
        let mut rest = lines[index].trim_start();
        index += 1;
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        if let Some(after) = rest.strip_prefix("export")
            && after.starts_with([' ', '\t'])
        {
            rest = after.trim_start();
        }
        let (name, value) = match rest.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim_start())),
            None => (rest.trim(), None),
        };
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '#' | '$')) {
            return Err(problem(format!("`{name}` is not a variable name")));
        }
        let Some(value) = value else {
            // A name alone: the variable as the environment has it, if it does.
            if let Some(value) = lookup(name) {
                entries.push(Entry {
                    name: name.to_owned(),
                    value,
                    line,
                });
            }
            continue;
        };
        let known = |wanted: &str| {
            lookup(wanted).or_else(|| entries.iter().rev().find(|e| e.name == wanted).map(|e| e.value.clone()))
        };
        let value = if let Some(quoted) = value.strip_prefix('\'') {
            let (inside, after) = closed(quoted, '\'', &lines, &mut index)
                .ok_or_else(|| problem("a single quote is not closed".to_owned()))?;
            trailing(&after).map_err(problem)?;
            inside
        } else if let Some(quoted) = value.strip_prefix('"') {
            let (inside, after) = closed(quoted, '"', &lines, &mut index)
                .ok_or_else(|| problem("a double quote is not closed".to_owned()))?;
            trailing(&after).map_err(problem)?;
            interpolate(&unescape(&inside), &known).map_err(|e| problem(describe(name, &e)))?
        } else {
            let value = match value.find(" #").or_else(|| value.find("\t#")) {
                Some(comment) => &value[..comment],
                None => value,
            };
            interpolate(value.trim_end(), &known).map_err(|e| problem(describe(name, &e)))?
        };
        entries.push(Entry {
            name: name.to_owned(),
            value,
            line,
        });
    }
    Ok(entries)
}

fn describe(name: &str, problem: &Problem) -> String {
    format!("the value of `{name}` {problem}")
}

/// The text up to the closing `quote` (not escaped by `\` in double quotes), reading further
/// lines when needed, and what follows it on its line.
fn closed(first: &str, quote: char, lines: &[&str], index: &mut usize) -> Option<(String, String)> {
    let mut inside = String::new();
    let mut text = first.to_owned();
    loop {
        let mut escaped = false;
        for (at, c) in text.char_indices() {
            if escaped {
                escaped = false;
                continue;
            }
            if c == '\\' && quote == '"' {
                escaped = true;
                continue;
            }
            if c == quote {
                inside.push_str(&text[..at]);
                return Some((inside, text[at + 1..].to_owned()));
            }
        }
        inside.push_str(&text);
        inside.push('\n');
        text = (*lines.get(*index)?).to_owned();
        *index += 1;
    }
}

/// What may follow a closing quote: spaces and a comment.
fn trailing(after: &str) -> Result<(), String> {
    let after = after.trim_start();
    if after.is_empty() || after.starts_with('#') {
        Ok(())
    } else {
        Err(format!("`{after}` follows the closing quote"))
    }
}

/// The escapes of a double-quoted value; `\$` stays a literal `$` through interpolation.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('$') => out.push_str("$$"),
            Some(other @ ('"' | '\\')) => out.push(other),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_as_compose_reads_them() {
        let text = "# comment\nA=plain\nB = spaced\nexport C=exported\nD=\"double ${A} \\n end\"\nE='single ${A} \\n end'\n\
                    F=unquoted ${A} $A\nG=with # comment\nH=hash#inside\nI=\"quoted\" # comment\nJ=\nK\nL=\"multi\nline\"\n\
                    M=${UNDEFINED:-fallback}\nN=${A:+alt}\nO=\"esc \\\"q\\\" \\$A\"\nP=trailing   \nQ=a=b\nR.dotted=yes\nS=`back`\n";
        let lookup = |_: &str| None;
        let entries = parse(text, &lookup).unwrap();
        let found: Vec<(&str, &str)> = entries.iter().map(|e| (e.name.as_str(), e.value.as_str())).collect();
        assert_eq!(
            found,
            [
                ("A", "plain"),
                ("B", "spaced"),
                ("C", "exported"),
                ("D", "double plain \n end"),
                ("E", "single ${A} \\n end"),
                ("F", "unquoted plain plain"),
                ("G", "with"),
                ("H", "hash#inside"),
                ("I", "quoted"),
                ("J", ""),
                ("L", "multi\nline"),
                ("M", "fallback"),
                ("N", "alt"),
                ("O", "esc \"q\" $A"),
                ("P", "trailing"),
                ("Q", "a=b"),
                ("R.dotted", "yes"),
                ("S", "`back`"),
            ]
        );
        assert_eq!(entries.iter().find(|e| e.name == "M").unwrap().line, 15);
    }

    #[test]
    fn a_bad_line_is_refused_with_its_number() {
        let lookup = |_: &str| None;
        let problem = parse("A=1\nT='it''s'\n", &lookup).unwrap_err();
        assert_eq!(problem.line, 2);
        let problem = parse("A=1\nB=\"open\n", &lookup).unwrap_err();
        assert_eq!(
            (problem.line, problem.message.as_str()),
            (2, "a double quote is not closed")
        );
        let problem = parse("A=$MISSING\n", &lookup).unwrap_err();
        assert!(problem.message.contains("`MISSING`"), "{}", problem.message);
    }
}
