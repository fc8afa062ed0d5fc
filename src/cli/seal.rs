//! `plumb seal` and `plumb keygen`: encrypting a value for the repository, and making the
//! identity an agent opens values with.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Outcome;
use crate::spec::sealed;

/// `plumb seal`'s flags.
#[derive(clap::Args)]
#[group(required = true, multiple = true)]
pub struct SealArgs {
    /// A recipient (`age1…`) the value is encrypted to (repeat for several: any of them opens it).
    #[arg(long = "recipient", value_name = "AGE1…")]
    recipients: Vec<String>,
    /// A file of recipients, one per line (`#` comments allowed).
    #[arg(long, value_name = "FILE")]
    recipients_file: Option<PathBuf>,
}

/// Reads the value from standard input (one trailing newline dropped) and prints it sealed.
pub fn seal(args: &SealArgs, out: &mut impl Write) -> anyhow::Result<Outcome> {
    let mut recipients = args.recipients.clone();
    if let Some(file) = &args.recipients_file {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        recipients.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    let mut value = String::new();
    std::io::stdin()
        .take(sealed::MAX_CLEAR + 1)
        .read_to_string(&mut value)
        .context("the value on standard input must be UTF-8 text")?;
    anyhow::ensure!(
        value.len() as u64 <= sealed::MAX_CLEAR,
        "the value is longer than 64 KiB"
    );
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    writeln!(out, "{}", sealed::seal(&recipients, &value)?)?;
    Ok(Outcome::Ok)
}

/// Writes a new identity to `file` (mode 0600, never over an existing file) and prints its
/// recipient.
pub fn keygen(file: &Path, out: &mut impl Write) -> anyhow::Result<Outcome> {
    use std::os::unix::fs::OpenOptionsExt;
    let (identity, recipient) = sealed::generate();
    let mut written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot create {}", file.display()))?;
    writeln!(
        written,
        "# created by plumb keygen\n# public key: {recipient}\n{}",
        identity.expose()
    )?;
    writeln!(out, "{recipient}")?;
    Ok(Outcome::Ok)
}
