//! `plumb review`: what a pull request's CI runs on a config repository, in one step — the pull
//! request's commits authenticated against the signing policy at its base, its head validated,
//! and what the change does to each environment — written as one Markdown comment (its first
//! line marks it, so the forge step updates it instead of adding another) and as annotations the
//! forge shows on the lines: GitHub's workflow commands on standard output, or a GitLab Code
//! Quality report.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use git2::Repository;
use serde_json::json;

use super::{Format, Outcome, RepoArgs};
use crate::spec::{Diagnostic, Rendered};
use crate::trust::{self, Outcome as CommitOutcome, Report, TrustRoot};

/// The first line of the comment: what the forge step finds it by.
pub const MARKER: &str = "<!-- plumb review -->";

#[derive(clap::Args)]
pub struct ReviewArgs {
    /// The clone (or the config folder inside it).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// The pull request's base (the branch it merges into, as a revision).
    #[arg(long)]
    base: String,
    /// The pull request's head.
    #[arg(long, default_value = "HEAD")]
    head: String,
    /// Where authentication starts; the base by default (its signing policy judges the pull
    /// request's commits).
    #[arg(long)]
    trust_root: Option<String>,
    /// Write the comment (Markdown) to this file.
    #[arg(long, value_name = "FILE")]
    comment: Option<PathBuf>,
    /// Print GitHub's workflow commands for each problem (annotations on the lines).
    #[arg(long)]
    github_annotations: bool,
    /// Write a GitLab Code Quality report of the problems to this file.
    #[arg(long, value_name = "FILE")]
    code_quality: Option<PathBuf>,
    /// Post the comment on the pull request (updating the one posted before), with the forge's
    /// API, from the variables its CI sets.
    #[arg(long, value_name = "FORGE")]
    post: Option<super::forge_comment::Forge>,
    /// The pull (or merge) request's number, when the CI's variables do not say it.
    #[arg(long, value_name = "NUMBER", requires = "post")]
    pull: Option<u64>,
}

pub fn review(args: &ReviewArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let git = Repository::discover(&args.repo)
        .with_context(|| format!("{} is not inside a git repository", args.repo.display()))?;
    let resolve = |rev: &str| {
        git.revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map(|c| c.id())
            .with_context(|| format!("revision `{rev}` does not name a commit"))
    };
    let (base, head) = (resolve(&args.base)?, resolve(&args.head)?);
    let root = resolve(args.trust_root.as_deref().unwrap_or(&args.base))?;
    let report = trust::authenticate(&git, &TrustRoot::Commit(root), head)?;
    let at = |rev: git2::Oid| RepoArgs {
        repo: args.repo.clone(),
        rev: Some(rev.to_string()),
        identities: Vec::new(),
    };
    let after = super::render(&at(head), None)?;
    let before = super::render(&at(base), None)?;
    // Paths in annotations are the repository's, the config folder included.
    let folder = folder(&git, &args.repo);

    let mut comment = Vec::new();
    write_comment(&mut comment, &report, &before, &after, (&args.base, &args.head))?;
    if let Some(file) = &args.comment {
        std::fs::write(file, &comment).with_context(|| format!("cannot write {}", file.display()))?;
    }
    if args.github_annotations {
        github_annotations(out, &report, &after, &folder)?;
    }
    if let Some(file) = &args.code_quality {
        let report = code_quality(&report, &after, &folder);
        std::fs::write(file, format!("{}\n", serde_json::to_string_pretty(&report)?))
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    if let Some(forge) = args.post {
        // The verdict is the review's: a comment that cannot be posted (a fork's read-only
        // token) is a warning, not a failed check.
        let text = String::from_utf8_lossy(&comment);
        match super::forge_comment::post(forge, args.pull, &text) {
            Ok(done) => eprintln!("plumb review: {done}"),
            Err(e) if args.github_annotations => {
                writeln!(
                    out,
                    "::warning title=plumb review::cannot post the comment: {}",
                    crate::error::chain(e.as_ref())
                )?;
            }
            Err(e) => eprintln!(
                "plumb review: cannot post the comment: {}",
                crate::error::chain(e.as_ref())
            ),
        }
    } else if args.comment.is_none() {
        out.write_all(&comment)?;
    }
    Ok(if report.is_authenticated() && after.is_valid() {
        Outcome::Ok
    } else {
        Outcome::Found
    })
}

/// The config folder inside the clone, with a trailing slash (`""` at the root).
fn folder(git: &Repository, repo: &Path) -> String {
    let inside = git
        .workdir()
        .and_then(|w| w.canonicalize().ok())
        .zip(repo.canonicalize().ok())
        .and_then(|(w, r)| r.strip_prefix(w).ok().map(Path::to_owned))
        .unwrap_or_default();
    let inside = inside.to_string_lossy().trim_matches('/').to_owned();
    if inside.is_empty() {
        inside
    } else {
        format!("{inside}/")
    }
}

fn write_comment(
    out: &mut dyn Write,
    report: &Report,
    before: &Rendered,
    after: &Rendered,
    revs: (&str, &str),
) -> anyhow::Result<()> {
    let (authenticated, valid) = (report.is_authenticated(), after.is_valid());
    writeln!(out, "{MARKER}")?;
    let verdict = match (authenticated, valid) {
        (true, true) => "✅ signed and valid",
        (false, true) => "❌ a commit is not authenticated",
        (true, false) => "❌ the repository is invalid",
        (false, false) => "❌ a commit is not authenticated, and the repository is invalid",
    };
    writeln!(out, "## plumb: {verdict}\n")?;

    let count = report.commits.len();
    writeln!(
        out,
        "**Signatures** ({count} commit{}):\n",
        if count == 1 { "" } else { "s" }
    )?;
    for commit in &report.commits {
        let short = &commit.id.to_string()[..12];
        let summary = commit.summary.replace('|', "\\|");
        match &commit.outcome {
            CommitOutcome::Authenticated { signer, .. } => {
                writeln!(out, "- ✅ `{short}` {summary} — signed by {signer}")?
            }
            CommitOutcome::Refused(refusal) => {
                writeln!(out, "- ❌ `{short}` {summary} — {} ({refusal})", refusal.kind())?
            }
        }
    }
    writeln!(out)?;

    if valid {
        writeln!(out, "**Validation**: every document is valid.\n")?;
    } else {
        writeln!(out, "**Validation**: {} problems.\n", after.diagnostics.len())?;
        for d in &after.diagnostics {
            let hint = d.hint.as_ref().map(|h| format!(" _({h})_")).unwrap_or_default();
            writeln!(out, "- `{}:{}:{}` {}{hint}", d.file, d.line, d.column, message(d))?;
        }
        writeln!(out)?;
    }

    if valid && before.is_valid() {
        // A commit id as a forge shows it.
        let short = |rev: &str| {
            let commit = rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit());
            if commit { rev[..12].to_owned() } else { rev.to_owned() }
        };
        let mut diff = Vec::new();
        super::diff::print(
            &mut diff,
            before,
            after,
            (&short(revs.0), &short(revs.1)),
            Format::Markdown,
        )?;
        out.write_all(&diff)?;
    } else if valid {
        writeln!(out, "The base is not valid: what the change does is not shown.")?;
    }
    Ok(())
}

/// A problem in one line: where in the document, what, and in which environments.
fn message(d: &Diagnostic) -> String {
    let mut said = match &d.path {
        Some(path) => format!("{path}: {}", d.message),
        None => d.message.clone(),
    };
    if !d.environments.is_empty() {
        said.push_str(&format!(" (in {})", d.environments.join(", ")));
    }
    said
}

/// GitHub's workflow commands: one `::error` per problem, on its file and line.
fn github_annotations(out: &mut dyn Write, report: &Report, after: &Rendered, folder: &str) -> std::io::Result<()> {
    // Workflow commands escape these in values, and more in properties.
    let data = |s: &str| s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A");
    let property = |s: &str| data(s).replace(':', "%3A").replace(',', "%2C");
    if let Some((commit, refusal)) = &report.refusal {
        writeln!(
            out,
            "::error title={}::{}",
            property("plumb verify"),
            data(&format!("commit {commit} is refused: {} ({refusal})", refusal.kind()))
        )?;
    }
    for d in &after.diagnostics {
        writeln!(
            out,
            "::error file={},line={},col={},title={}::{}",
            property(&format!("{folder}{}", d.file)),
            d.line,
            d.column,
            property("plumb validate"),
            data(&message(d))
        )?;
    }
    Ok(())
}

/// GitLab's Code Quality report: each problem with its file and line.
fn code_quality(report: &Report, after: &Rendered, folder: &str) -> serde_json::Value {
    let fingerprint = |text: &str| crate::target::workload::digest(text.as_bytes());
    let mut issues: Vec<serde_json::Value> = after
        .diagnostics
        .iter()
        .map(|d| {
            let description = message(d);
            let path = format!("{folder}{}", d.file);
            json!({
                "description": description,
                "check_name": "plumb-validate",
                "fingerprint": fingerprint(&format!("{path}:{}:{description}", d.line)),
                "severity": "blocker",
                "location": {"path": path, "lines": {"begin": d.line}},
            })
        })
        .collect();
    if let Some((commit, refusal)) = &report.refusal {
        let description = format!("commit {commit} is refused: {} ({refusal})", refusal.kind());
        issues.push(json!({
            "description": description,
            "check_name": "plumb-verify",
            "fingerprint": fingerprint(&description),
            "severity": "blocker",
            "location": {"path": format!("{folder}openpgp-policy.toml"), "lines": {"begin": 1}},
        }));
    }
    serde_json::Value::Array(issues)
}
