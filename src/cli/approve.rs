//! `plumb approve`: approve one commit for one environment. Writes the approval — a signed tag
//! object naming the environment and the commit, signed with the user's GnuPG as `git tag -s`
//! signs (or with an OpenPGP key file) — at `refs/plumb/approvals/<env>/<commit>/<fingerprint>`
//! in a clone of the config repository, and pushes that reference to its remote with `git`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use git2::Repository;
use sequoia_openpgp::cert::Cert;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::policy::StandardPolicy;
use sequoia_openpgp::serialize::stream::{Armorer, Message, Signer};
use sequoia_openpgp::{KeyHandle, PacketPile};

use super::Outcome;
use crate::gate::approval;

/// `plumb approve`'s flags.
#[derive(clap::Args)]
pub struct ApproveArgs {
    /// The environment the commit is approved for.
    #[arg(long)]
    env: String,
    /// A clone of the config repository, or its URL (then cloned, bare, into a temporary
    /// folder).
    #[arg(long, default_value = ".")]
    repo: String,
    /// The commit approved (a revision: `HEAD`, a branch, an id); the repository's `HEAD` by
    /// default. Always recorded as its full id.
    commit: Option<String>,
    /// An OpenPGP key file (secret key, not passphrase-protected) to sign with, instead of
    /// GnuPG.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The GnuPG key to sign with (as `git config user.signingkey`); GnuPG's default key
    /// otherwise.
    #[arg(long, value_name = "KEYID")]
    gpg_key: Option<String>,
    /// Print the signed approval itself (the tag object) instead of its reference: to paste
    /// into the dashboard or hand to the API where the agent cannot fetch approvals.
    #[arg(long)]
    print: bool,
    /// Where the approval is pushed: a remote of the clone, or a URL; `origin` by default (and
    /// the URL itself when `--repo` is one). `--push none` leaves it in the clone.
    #[arg(long)]
    push: Option<String>,
}

impl ApproveArgs {
    /// Approving the head of the clone `repo` for `env` with the key file `key`, pushing
    /// nowhere (the demo's agent fetches that very repository).
    pub fn with_key(env: &str, repo: &Path, key: &Path) -> ApproveArgs {
        ApproveArgs {
            env: env.to_owned(),
            repo: repo.display().to_string(),
            commit: None,
            key: Some(key.to_owned()),
            gpg_key: None,
            print: false,
            push: Some("none".to_owned()),
        }
    }
}

/// Makes, stores and pushes the approval; prints its reference.
pub fn approve(args: &ApproveArgs, out: &mut impl Write) -> anyhow::Result<Outcome> {
    let mut _clone = None;
    let (dir, default_push) = if Path::new(&args.repo).is_dir() {
        (PathBuf::from(&args.repo), "origin".to_owned())
    } else {
        let clone = TempClone::new();
        git(
            Path::new("."),
            &[
                "clone",
                "--quiet",
                "--bare",
                &args.repo,
                clone.0.to_str().unwrap_or_default(),
            ],
        )?;
        let dir = clone.0.clone();
        _clone = Some(clone);
        (dir, args.repo.clone())
    };
    let repo = Repository::open(&dir).with_context(|| format!("{} is not a git repository", dir.display()))?;
    let revision = args.commit.as_deref().unwrap_or("HEAD");
    let commit = repo
        .revparse_single(revision)
        .and_then(|o| o.peel_to_commit())
        .with_context(|| format!("`{revision}` names no commit in {}", dir.display()))?
        .id()
        .to_string();
    let tagger = repo
        .signature()
        .map(|s| {
            format!(
                "{} <{}>",
                s.name().unwrap_or("plumb"),
                s.email().unwrap_or("plumb@localhost")
            )
        })
        .unwrap_or_else(|_| "plumb <plumb@localhost>".to_owned());
    let now = chrono::Utc::now().timestamp();
    let payload = approval::payload(&args.env, &commit, &tagger, now);
    let signature = match &args.key {
        Some(file) => sign_with_key(file, payload.as_bytes())?,
        None => sign_with_gnupg(args.gpg_key.as_deref(), payload.as_bytes())?,
    };
    let fingerprint = issuer(&signature)?;
    let raw = format!("{payload}{signature}");
    let reference = approval::store(&repo, &args.env, &commit, &fingerprint, raw.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot store the approval in {}: {e}", dir.display()))?;
    if args.print {
        out.write_all(raw.as_bytes())?;
    } else {
        writeln!(out, "approved {commit} for {} as {reference}", args.env)?;
    }
    let push = args.push.clone().unwrap_or(default_push);
    if push == "none" {
        return Ok(Outcome::Ok);
    }
    if args.push.is_none() && Path::new(&args.repo).is_dir() && repo.find_remote(&push).is_err() {
        let said = format!("no remote `{push}` to push to: the approval stays in {}", dir.display());
        if args.print {
            eprintln!("{said}");
        } else {
            writeln!(out, "{said}")?;
        }
        return Ok(Outcome::Ok);
    }
    git(&dir, &["push", "--quiet", &push, &format!("{reference}:{reference}")])?;
    if args.print {
        eprintln!("pushed to {push}");
    } else {
        writeln!(out, "pushed to {push}")?;
    }
    Ok(Outcome::Ok)
}

/// A bare clone in the temporary folder, removed when dropped.
struct TempClone(PathBuf);

impl TempClone {
    fn new() -> TempClone {
        TempClone(std::env::temp_dir().join(format!("plumb-approve-{}-{}", std::process::id(), fastrand::u64(..))))
    }
}

impl Drop for TempClone {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `git ARGS` in `dir`; its failure, with what it said.
pub(super) fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("cannot run git")?;
    if !output.status.success() {
        bail!("git {}: {}", args[0], String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// An armored detached signature over `data` by GnuPG, as git asks for one.
pub(super) fn sign_with_gnupg(key: Option<&str>, data: &[u8]) -> anyhow::Result<String> {
    let mut command = Command::new("gpg");
    command.args(["--batch", "--armor", "--detach-sign"]);
    if let Some(key) = key {
        command.args(["--local-user", key]);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run gpg (or give --key FILE)")?;
    child
        .stdin
        .take()
        .context("gpg's input")?
        .write_all(data)
        .context("cannot hand the approval to gpg")?;
    let output = child.wait_with_output().context("gpg did not finish")?;
    if !output.status.success() {
        bail!("gpg could not sign: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    String::from_utf8(output.stdout).context("gpg's signature is not text")
}

/// An armored detached signature over `data` by the signing key in `file`.
pub(super) fn sign_with_key(file: &Path, data: &[u8]) -> anyhow::Result<String> {
    let cert = Cert::from_file(file).with_context(|| format!("{} is not an OpenPGP key", file.display()))?;
    let policy = StandardPolicy::new();
    let key = cert
        .keys()
        .with_policy(&policy, None)
        .alive()
        .revoked(false)
        .for_signing()
        .secret()
        .next()
        .with_context(|| format!("{} holds no secret key that may sign now", file.display()))?;
    let keypair = key.key().clone().into_keypair().with_context(|| {
        format!(
            "the key in {} is passphrase-protected: sign with GnuPG instead",
            file.display()
        )
    })?;
    let mut armored = Vec::new();
    {
        let message = Message::new(&mut armored);
        let message = Armorer::new(message)
            .kind(sequoia_openpgp::armor::Kind::Signature)
            .build()?;
        let mut signer = Signer::new(message, keypair)?.detached().build()?;
        signer.write_all(data)?;
        signer.finalize()?;
    }
    String::from_utf8(armored).context("the signature is not text")
}

/// The fingerprint (or key id) of the key that made `signature`, for the approval's name.
fn issuer(signature: &str) -> anyhow::Result<String> {
    let pile = PacketPile::from_bytes(signature.as_bytes()).context("the signature cannot be read")?;
    let issuer = pile
        .descendants()
        .find_map(|packet| match packet {
            sequoia_openpgp::Packet::Signature(sig) => sig.get_issuers().into_iter().next(),
            _ => None,
        })
        .context("the signature names no key")?;
    Ok(match issuer {
        KeyHandle::Fingerprint(fingerprint) => fingerprint.to_hex(),
        KeyHandle::KeyID(id) => id.to_hex(),
    })
}
