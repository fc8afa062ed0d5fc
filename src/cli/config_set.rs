//! `plumb config set`: the GitOps way to change one value of a service's configuration in one
//! environment. The environment's overlay is edited where the value belongs (only its lines
//! change), the value sealed on request, the repository validated with the change, and the
//! change committed — signed as `git` signs — on a new branch from the base revision, which is
//! pushed; the command prints where to open the pull request. The work tree, the checked-out
//! branch and every existing branch are left as they are.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use git2::{Oid, Repository};
use serde_json::Value;

use super::approve::{git, sign_with_gnupg, sign_with_key};
use super::{Format, Outcome, report};
use crate::source::{Entry, GitTree, SourceError, Tree};
use crate::spec::load::Loaded;
use crate::spec::yaml::{self, Limits};
use crate::spec::{self, edit, sealed};

#[derive(clap::Args)]
pub struct SetArgs {
    /// The clone of the repository (or the config folder inside it).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// The environment.
    #[arg(long)]
    env: String,
    /// The service.
    #[arg(long)]
    service: String,
    /// Where: keys joined by dots (`database.pool.max`).
    path: String,
    /// The value, read as YAML (`80`, `true`, `debug`, `"80"` for a string); `-` reads it from
    /// standard input (for a secret, with `--seal`).
    value: String,
    /// Encrypt the value (`ENC[age,…]`) for the environment's recipients: `--recipient`,
    /// `--recipients-file`, or `<env>.recipients` at the repository's root.
    #[arg(long)]
    seal: bool,
    /// A recipient to seal for (repeat for several).
    #[arg(long = "recipient", value_name = "AGE1…", requires = "seal")]
    recipients: Vec<String>,
    /// A file of recipients, one per line.
    #[arg(long, value_name = "FILE", requires = "seal")]
    recipients_file: Option<PathBuf>,
    /// The revision the change starts from (the branch the pull request goes to).
    #[arg(long, default_value = "HEAD")]
    from: String,
    /// The new branch (made from `--from`; it must not exist here or on the remote).
    #[arg(long)]
    branch: Option<String>,
    /// The commit message.
    #[arg(long, short)]
    message: Option<String>,
    /// An OpenPGP key file (secret key, not passphrase-protected) to sign with, instead of
    /// GnuPG.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// The GnuPG key to sign with; git's `user.signingkey`, else GnuPG's default key.
    #[arg(long, value_name = "KEYID", conflicts_with = "key")]
    gpg_key: Option<String>,
    /// Where the branch is pushed: a remote of the clone; `none` leaves it in the clone.
    #[arg(long, default_value = "origin")]
    push: String,
}

pub fn set(args: &SetArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let repo = Repository::discover(&args.repo)
        .with_context(|| format!("{} is not in a git repository", args.repo.display()))?;
    let workdir = repo
        .workdir()
        .context("a bare repository has no work tree: use a clone")?
        .to_owned();
    let folder = config_folder(&workdir, &args.repo)?;
    let base = repo
        .revparse_single(&args.from)
        .and_then(|o| o.peel_to_commit())
        .with_context(|| format!("`{}` names no commit", args.from))?;
    let target = base_branch(&repo, &args.from);

    // The file that sets the environment's values: its overlay.
    let tree = GitTree::at(Repository::open(repo.path())?, base.id(), &folder)?;
    let loaded = Loaded::read(&tree, Limits::default())?;
    let Some((_, environment)) = loaded.environments.iter().find(|(name, _)| name == &args.env) else {
        bail!("the repository declares no environment `{}` at {}", args.env, args.from);
    };
    let file: Arc<str> = environment.at.file.clone();
    let text = String::from_utf8(
        tree.read(&file, Limits::default().max_bytes)?
            .context("the overlay is gone")?,
    )
    .with_context(|| format!("{file} is not UTF-8"))?;

    let value = value(args, &workdir.join(&folder))?;
    let mut path = vec!["services", args.service.as_str(), "config", "values"];
    path.extend(args.path.split('.'));
    let edited = edit::set(&file, &text, &path, &value).map_err(|e| anyhow::anyhow!("{e}"))?;

    // The repository as it would be: valid, or refused at the line that is wrong.
    let changed = Changed {
        base: &tree,
        file: file.to_string(),
        text: edited.clone(),
    };
    let rendered = spec::render(&changed, Some(&args.env))?;
    if !rendered.is_valid() {
        report::validation(&mut anstream::stderr().lock(), &rendered, Format::Text)?;
        return Ok(Outcome::Found);
    }

    let branch = args.branch.clone().unwrap_or_else(|| {
        let key: String = args
            .path
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!(
            "plumb/{}/{}/{key}-{}",
            args.env,
            args.service,
            chrono::Utc::now().format("%Y%m%d%H%M%S")
        )
    });
    if repo.find_branch(&branch, git2::BranchType::Local).is_ok() {
        bail!("branch `{branch}` exists already: name another with --branch");
    }
    if args.push != "none" && remote_has(&workdir, &args.push, &branch)? {
        bail!(
            "`{}` has a branch `{branch}` already: name another with --branch",
            args.push
        );
    }
    let shown = if args.seal {
        "(sealed)".to_owned()
    } else {
        value.to_string()
    };
    let message = args
        .message
        .clone()
        .unwrap_or_else(|| format!("{}: set {} of {} to {shown}", args.env, args.path, args.service));
    let commit = commit(&repo, &base, &folder, &file, &edited, &message, args)?;
    repo.branch(&branch, &repo.find_commit(commit)?, false)?;
    writeln!(out, "{file}: {} of {} set to {shown}", args.path, args.service)?;
    writeln!(
        out,
        "committed {} on branch {branch} (from {})",
        &commit.to_string()[..12],
        args.from
    )?;
    if args.push == "none" {
        return Ok(Outcome::Ok);
    }
    git(
        &workdir,
        &[
            "push",
            "--quiet",
            &args.push,
            &format!("refs/heads/{branch}:refs/heads/{branch}"),
        ],
    )?;
    let url = repo
        .find_remote(&args.push)
        .ok()
        .and_then(|r| r.url().ok().map(str::to_owned));
    match url
        .as_deref()
        .and_then(|u| pull_request(u, target.as_deref().unwrap_or("main"), &branch))
    {
        Some(page) => writeln!(out, "pushed to {}; open the pull request: {page}", args.push)?,
        None => writeln!(out, "pushed to {}; open a pull request from {branch}", args.push)?,
    }
    Ok(Outcome::Ok)
}

/// The config folder inside the clone at `workdir`, as `repo` names it (`""`: the root).
fn config_folder(workdir: &Path, repo: &Path) -> anyhow::Result<String> {
    let (workdir, repo) = (workdir.canonicalize()?, repo.canonicalize()?);
    let inside = repo.strip_prefix(&workdir).unwrap_or(Path::new(""));
    Ok(inside.to_string_lossy().trim_matches('/').to_owned())
}

/// The branch `from` names (`HEAD`: the branch checked out), for the pull request's target.
fn base_branch(repo: &Repository, from: &str) -> Option<String> {
    let reference = repo.resolve_reference_from_short_name(from).ok()?;
    let reference = if reference.is_branch() || reference.is_remote() {
        reference
    } else {
        repo.head().ok().filter(|_| from == "HEAD")?
    };
    let name = reference.shorthand().ok()?.to_owned();
    // `origin/main` → `main`.
    Some(match reference.is_remote() {
        true => name.split_once('/').map_or(name.clone(), |(_, b)| b.to_owned()),
        false => name,
    })
}

/// The value to write: VALUE read as YAML (or standard input for `-`), sealed when asked.
fn value(args: &SetArgs, root: &Path) -> anyhow::Result<Value> {
    let given = if args.value == "-" {
        let mut text = String::new();
        std::io::stdin()
            .take(sealed::MAX_CLEAR + 1)
            .read_to_string(&mut text)
            .context("the value on standard input must be UTF-8 text")?;
        text.strip_suffix('\n').unwrap_or(&text).to_owned()
    } else {
        args.value.clone()
    };
    if args.seal {
        let recipients = recipients(args, root)?;
        let sealed = sealed::seal(&recipients, &given).map_err(|e| anyhow::anyhow!("cannot seal the value: {e}"))?;
        return Ok(Value::String(sealed));
    }
    let file: Arc<str> = Arc::from("VALUE");
    let node = yaml::parse(&file, format!("v: {given}\n").as_bytes(), Limits::default())
        .map_err(|e| anyhow::anyhow!("the value is not YAML: {e}"))?;
    Ok(node.get("v").map_or(Value::Null, |v| v.to_json()))
}

/// The recipients to seal for.
fn recipients(args: &SetArgs, root: &Path) -> anyhow::Result<Vec<String>> {
    let mut recipients = args.recipients.clone();
    let default = root.join(format!("{}.recipients", args.env));
    let file = args
        .recipients_file
        .clone()
        .or_else(|| default.exists().then_some(default));
    if let Some(file) = file {
        let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        recipients.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    if recipients.is_empty() {
        bail!(
            "--seal needs recipients: --recipient, --recipients-file, or {}.recipients in the repository",
            args.env
        );
    }
    Ok(recipients)
}

/// Whether `remote` has branch `branch`.
fn remote_has(workdir: &Path, remote: &str, branch: &str) -> anyhow::Result<bool> {
    let output = std::process::Command::new("git")
        .args(["ls-remote", "--heads", remote, &format!("refs/heads/{branch}")])
        .current_dir(workdir)
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run git")?;
    if !output.status.success() {
        bail!(
            "git ls-remote {remote}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(!output.stdout.is_empty())
}

/// The signed commit of `base` with `file` (in `folder`) holding `text`.
fn commit(
    repo: &Repository,
    base: &git2::Commit,
    folder: &str,
    file: &str,
    text: &str,
    message: &str,
    args: &SetArgs,
) -> anyhow::Result<Oid> {
    let blob = repo.blob(text.as_bytes())?;
    let full = if folder.is_empty() {
        file.to_owned()
    } else {
        format!("{folder}/{file}")
    };
    let parts: Vec<&str> = full.split('/').collect();
    let tree = replaced(repo, Some(&base.tree()?), &parts, blob)?;
    let tree = repo.find_tree(tree)?;
    let person = repo
        .signature()
        .context("git does not know who you are: set user.name and user.email")?;
    let buffer = repo.commit_create_buffer(&person, &person, message, &tree, &[base])?;
    let buffer = buffer.as_str().context("the commit is not UTF-8")?;
    let signing_key = repo.config().ok().and_then(|c| c.get_string("user.signingkey").ok());
    let signature = match &args.key {
        Some(file) => sign_with_key(file, buffer.as_bytes())?,
        None => sign_with_gnupg(args.gpg_key.as_deref().or(signing_key.as_deref()), buffer.as_bytes())?,
    };
    Ok(repo.commit_signed(buffer, &signature, None)?)
}

/// `tree` with the file at `parts` replaced by `blob`, as a new tree.
fn replaced(repo: &Repository, tree: Option<&git2::Tree>, parts: &[&str], blob: Oid) -> anyhow::Result<Oid> {
    let mut builder = repo.treebuilder(tree)?;
    match parts {
        [name] => {
            let mode = tree.and_then(|t| t.get_name(name)).map_or(0o100644, |e| e.filemode());
            builder.insert(name, blob, mode)?;
        }
        [folder, rest @ ..] => {
            let inner = tree
                .and_then(|t| t.get_name(folder))
                .map(|e| repo.find_tree(e.id()))
                .transpose()?;
            let inner = replaced(repo, inner.as_ref(), rest, blob)?;
            builder.insert(folder, inner, 0o040000)?;
        }
        [] => bail!("no file to replace"),
    }
    Ok(builder.write()?)
}

/// The page that opens a pull request from `branch` into `target` on the forge of `remote`:
/// GitHub, GitLab, Gitea (and Forgejo, Codeberg) and Bitbucket, told by the host's name.
pub fn pull_request(remote: &str, target: &str, branch: &str) -> Option<String> {
    let (host, project) = forge_path(remote)?;
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let lower = host.to_ascii_lowercase();
    Some(if lower == "github.com" || lower.starts_with("github.") {
        format!("https://{host}/{project}/compare/{}...{}?expand=1", target, branch)
    } else if lower.contains("gitlab") {
        format!(
            "https://{host}/{project}/-/merge_requests/new?merge_request%5Bsource_branch%5D={}&merge_request%5Btarget_branch%5D={}",
            encode(branch),
            encode(target)
        )
    } else if lower == "bitbucket.org" {
        format!(
            "https://{host}/{project}/pull-requests/new?source={}&dest={}",
            encode(branch),
            encode(target)
        )
    } else if lower.contains("gitea") || lower.contains("forgejo") || lower == "codeberg.org" {
        format!("https://{host}/{project}/compare/{}...{}", target, branch)
    } else {
        return None;
    })
}

/// The host and the project's path (`owner/name`, or GitLab's groups) of a remote's URL, in
/// any of git's forms; credentials and `.git` left out.
fn forge_path(remote: &str) -> Option<(String, String)> {
    let (host, path) = if let Some((scheme, rest)) = remote.split_once("://") {
        if !matches!(scheme, "https" | "http" | "ssh" | "git") {
            return None;
        }
        let (authority, path) = rest.split_once('/')?;
        let host = authority.rsplit('@').next()?;
        let host = host.split(':').next()?;
        (host.to_owned(), path.to_owned())
    } else {
        // scp-like: `git@github.com:owner/name.git`.
        let (authority, path) = remote.split_once(':')?;
        if authority.contains('/') {
            return None;
        }
        (authority.rsplit('@').next()?.to_owned(), path.to_owned())
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    (!host.is_empty() && path.contains('/')).then(|| (host, path.to_owned()))
}

/// The base revision's files with one of them changed.
struct Changed<'a> {
    base: &'a GitTree,
    file: String,
    text: String,
}

impl Tree for Changed<'_> {
    fn list(&self, dir: &str) -> Result<Vec<String>, SourceError> {
        self.base.list(dir)
    }

    fn read(&self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, SourceError> {
        if path == self.file {
            return Ok(Some(self.text.as_bytes().iter().take(limit + 1).copied().collect()));
        }
        self.base.read(path, limit)
    }

    fn commit(&self) -> Option<Oid> {
        None
    }

    fn entries(&self, dir: &str) -> Result<Vec<Entry>, SourceError> {
        self.base.entries(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_forge_gets_its_pull_request_page() {
        let cases = [
            (
                "git@github.com:twikit/config.git",
                "https://github.com/twikit/config/compare/main...plumb/x?expand=1",
            ),
            (
                "https://token@gitlab.com/platform/infra/config.git",
                "https://gitlab.com/platform/infra/config/-/merge_requests/new?merge_request%5Bsource_branch%5D=plumb%2Fx&merge_request%5Btarget_branch%5D=main",
            ),
            (
                "ssh://git@gitea.example.com:2222/ops/config.git",
                "https://gitea.example.com/ops/config/compare/main...plumb/x",
            ),
            (
                "https://bitbucket.org/twikit/config.git",
                "https://bitbucket.org/twikit/config/pull-requests/new?source=plumb%2Fx&dest=main",
            ),
        ];
        for (remote, page) in cases {
            assert_eq!(
                pull_request(remote, "main", "plumb/x").as_deref(),
                Some(page),
                "{remote}"
            );
        }
        assert_eq!(pull_request("/srv/git/config.git", "main", "plumb/x"), None);
        assert_eq!(
            pull_request("https://git.example.com/config.git", "main", "plumb/x"),
            None
        );
    }
}
