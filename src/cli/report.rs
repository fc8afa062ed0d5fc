//! Printing validation results: each problem with its file, line, column and JSON path, the
//! line itself with a caret under the column, and a hint; or one JSON document.

use std::io::Write;

use anstyle::{AnsiColor, Style};
use serde_json::json;

use super::Format;
use crate::spec::Rendered;

/// The style of error labels.
pub const ERROR: Style = AnsiColor::Red.on_default().bold();
const HINT: Style = AnsiColor::Cyan.on_default().bold();
const DIM: Style = AnsiColor::Blue.on_default().bold();
const GOOD: Style = AnsiColor::Green.on_default().bold();

/// Prints the outcome of validating a repository.
pub fn validation(out: &mut dyn Write, rendered: &Rendered, format: Format) -> std::io::Result<()> {
    if format == Format::Json {
        let report = json!({
            "valid": rendered.is_valid(),
            "environments": rendered.environments.iter().map(|(name, d)| json!({
                "name": name,
                "commit": d.commit,
                "target": d.target.name(),
                "services": d.services.len(),
            })).collect::<Vec<_>>(),
            "diagnostics": rendered.diagnostics,
        });
        return writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&report).expect("a report serializes")
        );
    }
    for d in &rendered.diagnostics {
        writeln!(out, "{}error:{} {d}", ERROR.render(), ERROR.render_reset())?;
        let line = rendered
            .sources
            .get(d.file.as_str())
            .and_then(|text| text.lines().nth(d.line.saturating_sub(1) as usize));
        if let Some((line, column)) = line.and_then(|l| excerpt(l, d.column as usize)) {
            let number = d.line.to_string();
            let pad = " ".repeat(number.len());
            writeln!(out, "{}{number} |{} {line}", DIM.render(), DIM.render_reset())?;
            let caret = " ".repeat(column.saturating_sub(1));
            writeln!(
                out,
                "{}{pad} |{} {caret}{}^{}",
                DIM.render(),
                DIM.render_reset(),
                ERROR.render(),
                ERROR.render_reset()
            )?;
        }
        if let Some(hint) = &d.hint {
            writeln!(out, "  {}hint:{} {hint}", HINT.render(), HINT.render_reset())?;
        }
    }
    if rendered.is_valid() {
        let summary: Vec<String> = rendered
            .environments
            .iter()
            .map(|(name, d)| format!("{name} ({} services, {})", d.services.len(), d.target.name()))
            .collect();
        writeln!(
            out,
            "{}valid:{} {}",
            GOOD.render(),
            GOOD.render_reset(),
            summary.join(", ")
        )
    } else {
        let n = rendered.diagnostics.len();
        writeln!(
            out,
            "{}invalid:{} {n} problem{}",
            ERROR.render(),
            ERROR.render_reset(),
            if n == 1 { "" } else { "s" }
        )
    }
}

/// At most 100 characters of `line` around `column`, and the column within them; `None` for
/// lines with control characters, which a terminal should not be sent.
fn excerpt(line: &str, column: usize) -> Option<(String, usize)> {
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return None;
    }
    let chars: Vec<char> = line.chars().map(|c| if c == '\t' { ' ' } else { c }).collect();
    let start = column.saturating_sub(60).min(chars.len());
    let end = (start + 100).min(chars.len());
    let mut text: String = chars[start..end].iter().collect();
    let mut column = column - start;
    if start > 0 {
        text.insert(0, '…');
        column += 1;
    }
    if end < chars.len() {
        text.push('…');
    }
    Some((text, column))
}
