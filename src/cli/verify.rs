//! `plumb verify`: authenticate a range of commits against the repository's signing policy and
//! print one line per commit — the check a pull request's CI runs before merge.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use git2::Repository;
use serde_json::json;

use super::{Format, Outcome};
use crate::trust::{self, Outcome as CommitOutcome, Policy, Report, TrustRoot};

/// Authenticates `rev` (default `HEAD`) in the repository at `repo`, from `trust_root` (a
/// revision) or, with `policy_file`, from the repository's first commits judged by that policy.
pub fn run(
    out: &mut dyn Write,
    repo: &Path,
    trust_root: Option<&str>,
    policy_file: Option<&Path>,
    rev: &str,
    output: Format,
) -> anyhow::Result<Outcome> {
    skip_certificate_authorities();
    let git =
        Repository::discover(repo).with_context(|| format!("{} is not inside a git repository", repo.display()))?;
    let resolve = |rev: &str| {
        git.revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map(|c| c.id())
            .with_context(|| format!("revision `{rev}` does not name a commit"))
    };
    let root = match (trust_root, policy_file) {
        (Some(root), None) => TrustRoot::Commit(resolve(root)?),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            TrustRoot::Policy(Policy::parse(&text).with_context(|| format!("in {}", file.display()))?)
        }
        _ => anyhow::bail!("give exactly one of --trust-root REV or --policy-file FILE"),
    };
    let head = resolve(rev)?;
    let report = trust::authenticate(&git, &root, head)?;
    match output {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&to_json(&report))?)?,
        Format::Text | Format::Markdown => print(out, &report)?,
        Format::Manifests => anyhow::bail!("`--output manifests` is for `plumb render`"),
    }
    Ok(if report.is_authenticated() {
        Outcome::Ok
    } else {
        Outcome::Found
    })
}

/// `plumb verify` reads a local repository and reaches no server, yet libgit2's start-up loads
/// the machine's whole bundle of certificate authorities for HTTPS (a quarter of the time to
/// verify 500 commits): it is pointed at an empty file for this process.
fn skip_certificate_authorities() {
    // SAFETY: the command line runs `verify` on its only thread, before libgit2 starts; no
    // other thread reads the environment.
    unsafe { std::env::set_var("SSL_CERT_FILE", "/dev/null") }
}

fn print(out: &mut dyn Write, report: &Report) -> std::io::Result<()> {
    for commit in &report.commits {
        let short = &commit.id.to_string()[..12];
        match &commit.outcome {
            CommitOutcome::Authenticated { signer, .. } => {
                writeln!(out, "{short}  ok       {}  (signed by {signer})", commit.summary)?
            }
            CommitOutcome::Refused(refusal) => writeln!(
                out,
                "{short}  refused  {}  ({}: {refusal})",
                commit.summary,
                refusal.kind()
            )?,
        }
    }
    match &report.refusal {
        None => writeln!(
            out,
            "{} authenticated ({} commit{} checked)",
            report.head,
            report.commits.len(),
            if report.commits.len() == 1 { "" } else { "s" }
        ),
        Some((culprit, refusal)) => writeln!(out, "{} refused: commit {culprit}: {refusal}", report.head),
    }
}

fn to_json(report: &Report) -> serde_json::Value {
    let commits: Vec<_> = report
        .commits
        .iter()
        .map(|c| match &c.outcome {
            CommitOutcome::Authenticated {
                signer, fingerprint, ..
            } => json!({
                "commit": c.id.to_string(),
                "summary": c.summary,
                "authenticated": true,
                "signer": signer,
                "fingerprint": fingerprint.to_hex(),
            }),
            CommitOutcome::Refused(refusal) => json!({
                "commit": c.id.to_string(),
                "summary": c.summary,
                "authenticated": false,
                "kind": refusal.kind(),
                "reason": refusal.to_string(),
            }),
        })
        .collect();
    json!({
        "head": report.head.to_string(),
        "authenticated": report.is_authenticated(),
        "refusal": report.refusal.as_ref().map(|(commit, refusal)| json!({
            "commit": commit.to_string(),
            "kind": refusal.kind(),
            "reason": refusal.to_string(),
        })),
        "commits": commits,
    })
}
