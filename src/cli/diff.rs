//! Printing what a change does to each environment: coloured text on a terminal, Markdown for
//! a pull-request comment, or JSON.

use std::io::Write;

use anstyle::{AnsiColor, Style};
use serde_json::json;

use super::{Format, Outcome, report};
use crate::diff::{self, Change, EnvironmentDiff, show};
use crate::spec::Rendered;

const ADDED: Style = AnsiColor::Green.on_default();
const REMOVED: Style = AnsiColor::Red.on_default();
const HEAD: Style = Style::new().bold();
const CALLOUT: Style = AnsiColor::Yellow.on_default().bold();

/// Prints the difference between two rendered revisions; invalid revisions are reported
/// instead (a pull request that breaks the repository is itself the finding).
pub fn print(
    out: &mut dyn Write,
    before: &Rendered,
    after: &Rendered,
    revs: (&str, &str),
    format: Format,
) -> anyhow::Result<Outcome> {
    for (rendered, rev) in [(before, revs.0), (after, revs.1)] {
        if !rendered.is_valid() {
            if format == Format::Json {
                let report = json!({"valid": false, "revision": rev, "diagnostics": rendered.diagnostics});
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                writeln!(out, "{rev} is not a valid config repository:")?;
                report::validation(out, rendered, Format::Text)?;
            }
            return Ok(Outcome::Found);
        }
    }
    let diffs: Vec<EnvironmentDiff> = diff::environments(&before.environments, &after.environments);
    let changed = diffs.iter().any(|d| !d.is_empty());
    match format {
        Format::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({"valid": true, "changed": changed, "environments": diffs}))?
        )?,
        Format::Markdown => markdown(out, &diffs, revs)?,
        Format::Text => text(out, &diffs)?,
        Format::Manifests => anyhow::bail!("`--output manifests` is for `plumb render`"),
    }
    Ok(if changed { Outcome::Found } else { Outcome::Ok })
}

fn text(out: &mut dyn Write, diffs: &[EnvironmentDiff]) -> std::io::Result<()> {
    for env in diffs {
        if env.is_empty() {
            writeln!(
                out,
                "{}{}{}: no change",
                HEAD.render(),
                env.environment,
                HEAD.render_reset()
            )?;
            continue;
        }
        writeln!(out, "{}{}{}", HEAD.render(), env.environment, HEAD.render_reset())?;
        for change in &env.settings {
            line(out, "  ", change)?;
        }
        for service in &env.services {
            let impact = serde_json::to_value(service.impact).expect("an impact serializes");
            writeln!(
                out,
                "  {}{}{} ({})",
                HEAD.render(),
                service.service,
                HEAD.render_reset(),
                impact.as_str().unwrap_or_default()
            )?;
            for h in &service.highlights {
                writeln!(out, "    {}! {h}{}", CALLOUT.render(), CALLOUT.render_reset())?;
            }
            for change in &service.changes {
                line(out, "    ", change)?;
            }
        }
    }
    Ok(())
}

fn line(out: &mut dyn Write, indent: &str, c: &Change) -> std::io::Result<()> {
    match (&c.before, &c.after) {
        (None, Some(a)) => writeln!(
            out,
            "{indent}{}+ {}: {}{}",
            ADDED.render(),
            c.path,
            show(Some(a)),
            ADDED.render_reset()
        ),
        (Some(b), None) => writeln!(
            out,
            "{indent}{}- {}: {}{}",
            REMOVED.render(),
            c.path,
            show(Some(b)),
            REMOVED.render_reset()
        ),
        (b, a) => writeln!(
            out,
            "{indent}~ {}: {}{}{} → {}{}{}{}",
            c.path,
            REMOVED.render(),
            show(b.as_ref()),
            REMOVED.render_reset(),
            ADDED.render(),
            show(a.as_ref()),
            ADDED.render_reset(),
            if b == a { " (encrypted value changed)" } else { "" }
        ),
    }
}

fn markdown(out: &mut dyn Write, diffs: &[EnvironmentDiff], revs: (&str, &str)) -> std::io::Result<()> {
    writeln!(out, "### plumb: `{}` → `{}`\n", revs.0, revs.1)?;
    for env in diffs {
        if env.is_empty() {
            writeln!(out, "**{}**: no change\n", env.environment)?;
            continue;
        }
        writeln!(out, "#### {}\n", env.environment)?;
        for change in &env.settings {
            writeln!(out, "- {}", cell(change))?;
        }
        if !env.settings.is_empty() {
            // A blank line ends the list, or the next paragraph would continue its last item.
            writeln!(out)?;
        }
        for service in &env.services {
            let impact = serde_json::to_value(service.impact).expect("an impact serializes");
            writeln!(
                out,
                "**{}** — {}\n",
                service.service,
                impact.as_str().unwrap_or_default()
            )?;
            for h in &service.highlights {
                writeln!(out, "> ⚠️ {}", escape(h))?;
            }
            if !service.highlights.is_empty() {
                writeln!(out)?;
            }
            writeln!(out, "| field | before | after |\n|---|---|---|")?;
            for c in &service.changes {
                let note = if c.before == c.after { " (changed)" } else { "" };
                writeln!(
                    out,
                    "| `{}` | {} | {}{note} |",
                    c.path,
                    value_cell(c.before.as_ref()),
                    value_cell(c.after.as_ref())
                )?;
            }
            writeln!(out)?;
        }
    }
    Ok(())
}

fn cell(c: &Change) -> String {
    format!(
        "`{}`: {} → {}",
        c.path,
        value_cell(c.before.as_ref()),
        value_cell(c.after.as_ref())
    )
}

fn value_cell(v: Option<&serde_json::Value>) -> String {
    match v {
        None => "—".into(),
        Some(v) => format!("`{}`", escape(&show(Some(v)))),
    }
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace('`', "'").replace('\n', " ")
}
