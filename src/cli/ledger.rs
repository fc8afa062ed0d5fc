//! `plumb history`, `plumb migrations` and `plumb audit verify`: reading the ledger in the state
//! directory.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use super::{Format, Outcome};
use crate::ledger::{self, Ledger};

/// The ledger file inside a state directory.
pub fn path(state: &Path) -> std::path::PathBuf {
    state.join("ledger.sqlite")
}

fn open(state: &Path) -> anyhow::Result<Ledger> {
    let file = path(state);
    anyhow::ensure!(
        file.is_file(),
        "no ledger at {}: nothing was deployed with this state directory",
        file.display()
    );
    Ok(Ledger::open_read_only(&file)?)
}

/// Prints the attempts in `environment`, newest first.
pub fn history(
    out: &mut dyn Write,
    state: &Path,
    environment: &str,
    limit: usize,
    output: Format,
) -> anyhow::Result<Outcome> {
    let ledger = open(state)?;
    let records = ledger.history(environment, limit)?;
    print_history(out, environment, &records, output)
}

/// Prints attempts, newest first, each with its steps.
pub fn print_history(
    out: &mut dyn Write,
    environment: &str,
    records: &[ledger::AttemptRecord],
    output: Format,
) -> anyhow::Result<Outcome> {
    if output == Format::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&records)?)?;
        return Ok(Outcome::Ok);
    }
    if records.is_empty() {
        writeln!(out, "no attempts recorded for `{environment}`")?;
    }
    for record in records {
        let result = record
            .outcome
            .as_ref()
            .map_or_else(|| "unfinished".to_owned(), ToString::to_string);
        let commit = record.attempt.commit.get(..12).unwrap_or(&record.attempt.commit);
        let mut signer = record.attempt.signer.as_deref().unwrap_or("unknown signer").to_owned();
        if let Some(by) = &record.attempt.by {
            signer.push_str(&format!(", asked by {by}"));
        }
        writeln!(
            out,
            "#{} {} {commit} ({signer}, {}): {result}",
            record.id, record.started, record.attempt.strategy
        )?;
        for step in &record.steps {
            let state = match (&step.error, &step.finished) {
                (Some(Some(error)), _) => format!("failed: {error}"),
                (_, None) => "running".to_owned(),
                (_, Some(_)) => "ok".to_owned(),
            };
            writeln!(out, "    {} {}: {state}", step.started, step.name)?;
            for line in step.output.iter().flat_map(|o| o.lines()) {
                writeln!(out, "      | {line}")?;
            }
        }
    }
    Ok(Outcome::Ok)
}

/// Prints the migrations run in `environment`, newest first.
pub fn migrations(
    out: &mut dyn Write,
    state: &Path,
    environment: &str,
    limit: usize,
    output: Format,
) -> anyhow::Result<Outcome> {
    let ledger = open(state)?;
    let records = ledger.migrations(environment, limit)?;
    print_migrations(out, environment, &records, output)
}

/// Prints migrations, newest first: the service, the commit, how it ended and when.
pub fn print_migrations(
    out: &mut dyn Write,
    environment: &str,
    records: &[ledger::MigrationRecord],
    output: Format,
) -> anyhow::Result<Outcome> {
    if output == Format::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&records)?)?;
        return Ok(Outcome::Ok);
    }
    if records.is_empty() {
        writeln!(out, "no migrations recorded for `{environment}`")?;
    }
    for record in records {
        let commit = record.commit.get(..12).unwrap_or(&record.commit);
        let attempt = record.attempt.map(|a| format!(", attempt #{a}")).unwrap_or_default();
        let mut state = match &record.error {
            Some(error) => format!("{}: {error}", record.state),
            None => record.state.clone(),
        };
        if record.interrupted() {
            state.push_str(" — interrupted: `plumb migrations resolve` says what the database has");
        }
        if let Some(by) = &record.resolved_by {
            state.push_str(&format!(" (resolved by {by})"));
        }
        writeln!(
            out,
            "{} {commit} {} (started {}{attempt})",
            record.service, state, record.started
        )?;
    }
    Ok(Outcome::Ok)
}

/// Checks the ledger's hash chain; exit 1 when it was tampered with.
pub fn verify(out: &mut dyn Write, state: &Path, output: Format) -> anyhow::Result<Outcome> {
    let ledger = open(state)?;
    let result = ledger
        .verify()
        .with_context(|| format!("cannot read {}", path(state).display()))?;
    match (result, output) {
        (Ok((entries, head)), Format::Json) => {
            writeln!(
                out,
                "{}",
                serde_json::json!({ "intact": true, "entries": entries, "head": head })
            )?;
            Ok(Outcome::Ok)
        }
        (Ok((entries, head)), _) => {
            writeln!(out, "intact: {entries} entries, newest hash {head}")?;
            writeln!(
                out,
                "(keep the newest hash elsewhere: it also proves no entry was cut off the end)"
            )?;
            Ok(Outcome::Ok)
        }
        (Err(tamper), Format::Json) => {
            writeln!(
                out,
                "{}",
                serde_json::json!({ "intact": false, "entry": tamper.seq, "reason": tamper.reason })
            )?;
            Ok(Outcome::Found)
        }
        (Err(tamper), _) => {
            writeln!(out, "TAMPERED: {tamper}")?;
            Ok(Outcome::Found)
        }
    }
}
