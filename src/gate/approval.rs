//! Approvals: OpenPGP-signed statements that a person approves one commit for one environment.
//! Each is a signed git tag object — made by `plumb approve`, signed as `git tag -s` signs —
//! whose target is the commit and whose message names the environment and the commit; it lives
//! in the config repository at `refs/plumb/approvals/<environment>/<commit>/<fingerprint>`, so it
//! travels with the repository and needs no forge. It counts when its signature is good by a
//! user of the signing policy in force at the approved commit who holds `sign_tag` and whose key
//! is still valid now, that user is one of the rule's approvers, and (unless allowed) not the
//! commit's own signer. The same person counts once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use git2::{ObjectType, Oid, Repository};
use sequoia_openpgp::cert::Cert;
use sequoia_openpgp::policy::StandardPolicy;
use sequoia_openpgp::types::RevocationStatus;

use crate::spec::model::gates::ApprovalRule;
use crate::trust::{Capability, Compromise, POLICY_FILE, Policy, verify_signature};

/// Where approvals live in the config repository.
pub const NAMESPACE: &str = "refs/plumb/approvals";

/// The largest approval object read (a tag with one signature is well under 4 KiB).
pub const MAX_BYTES: usize = 16 * 1024;

/// The reference an approval of `commit` for `environment` by key `fingerprint` is stored at.
pub fn reference(environment: &str, commit: &str, fingerprint: &str) -> String {
    format!("{NAMESPACE}/{environment}/{commit}/{fingerprint}")
}

/// The message an approval signs: what it approves, and nothing else.
pub fn statement(environment: &str, commit: &str) -> String {
    format!("plumb approval\n\nenvironment: {environment}\ncommit: {commit}\n")
}

/// The tag object an approval signs, before its signature, as git writes a tag.
pub fn payload(environment: &str, commit: &str, tagger: &str, unix: i64) -> String {
    format!(
        "object {commit}\ntype commit\ntag plumb-approval-{environment}\ntagger {tagger} {unix} +0000\n\n{}",
        statement(environment, commit)
    )
}

/// An approval that counts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Approved {
    /// The policy's name for the approver.
    pub user: String,
    /// The key's certificate fingerprint.
    pub fingerprint: String,
    /// When it was signed (RFC 3339, UTC).
    pub signed: String,
}

/// Why an approval does not count.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// Not a tag object of the expected shape.
    #[error("malformed: {0}")]
    Malformed(String),
    /// It approves another commit than the one its reference names.
    #[error("it approves {0}, not this commit")]
    WrongCommit(String),
    /// It approves the commit for another environment.
    #[error("it approves the commit for `{0}`, not this environment")]
    WrongEnvironment(String),
    /// Its signature is bad, unknown, or by a revoked or expired key.
    #[error("its signature does not hold: {0}")]
    Signature(String),
    /// Its signer may not approve here.
    #[error("{0}")]
    NotAuthorized(String),
}

impl Refused {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Refused::Malformed(_) => "malformed",
            Refused::WrongCommit(_) => "wrong_commit",
            Refused::WrongEnvironment(_) => "wrong_environment",
            Refused::Signature(_) => "bad_signature",
            Refused::NotAuthorized(_) => "not_authorized",
        }
    }
}

/// What the approvals of a commit add up to.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Those that count, one per person.
    pub counted: Vec<Approved>,
    /// Those that do not, with their reference and why.
    pub refused: Vec<(String, Refused)>,
}

/// The signing policy in force at `commit` (its tree's `openpgp-policy.toml`).
pub fn policy_at(repo: &Repository, commit: Oid) -> Result<Policy, String> {
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(|e| format!("cannot read {commit}: {}", e.message()))?;
    let entry = tree
        .get_path(std::path::Path::new(POLICY_FILE))
        .map_err(|_| format!("{commit} has no {POLICY_FILE}"))?;
    let blob = repo
        .find_blob(entry.id())
        .map_err(|e| format!("cannot read {POLICY_FILE} at {commit}: {}", e.message()))?;
    let text = std::str::from_utf8(blob.content()).map_err(|_| format!("{POLICY_FILE} at {commit} is not UTF-8"))?;
    Policy::parse(text).map_err(|e| format!("{POLICY_FILE} at {commit}: {e}"))
}

/// The policy's names for whoever signed `commit` with a good signature.
pub fn signers_of(repo: &Repository, commit: Oid, policy: &Policy) -> Vec<String> {
    let Ok((signature, data)) = repo.extract_signature(&commit, None) else {
        return Vec::new();
    };
    let none = BTreeSet::new();
    verify_signature(
        &signature,
        &data,
        certs(policy).iter().copied(),
        Compromise::Voids(&none),
    )
    .map(|signers| {
        signers
            .iter()
            .flat_map(|s| policy.holders(&s.fingerprint).map(|(name, _)| name.to_owned()))
            .collect()
    })
    .unwrap_or_default()
}

/// Checks the raw tag object `raw` as an approval of `commit` for `environment` under `policy`
/// (the one in force at the commit): the approver's name and key when it holds.
pub fn verify(raw: &[u8], environment: &str, commit: &str, policy: &Policy) -> Result<Approved, Refused> {
    if raw.len() > MAX_BYTES {
        return Err(Refused::Malformed(format!("larger than {MAX_BYTES} bytes")));
    }
    let text = std::str::from_utf8(raw).map_err(|_| Refused::Malformed("not UTF-8".to_owned()))?;
    let at = text
        .find("-----BEGIN PGP SIGNATURE-----")
        .ok_or_else(|| Refused::Malformed("it is not signed".to_owned()))?;
    let (data, armored) = text.split_at(at);
    let (headers, message) = data
        .split_once("\n\n")
        .ok_or_else(|| Refused::Malformed("no message".to_owned()))?;
    let header = |name: &str| {
        headers
            .lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
    };
    let object = header("object").ok_or_else(|| Refused::Malformed("no object".to_owned()))?;
    if header("type") != Some("commit") {
        return Err(Refused::Malformed("it does not point to a commit".to_owned()));
    }
    if object != commit {
        return Err(Refused::WrongCommit(object.to_owned()));
    }
    let field = |name: &str| {
        message
            .lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(": ")))
    };
    if !message.starts_with("plumb approval\n") {
        return Err(Refused::Malformed("its message is not a plumb approval".to_owned()));
    }
    match field("environment") {
        Some(named) if named == environment => {}
        Some(named) => return Err(Refused::WrongEnvironment(named.to_owned())),
        None => return Err(Refused::Malformed("it names no environment".to_owned())),
    }
    if field("commit") != Some(commit) {
        return Err(Refused::WrongCommit(field("commit").unwrap_or("nothing").to_owned()));
    }
    let none = BTreeSet::new();
    let signers = verify_signature(
        armored.as_bytes(),
        data.as_bytes(),
        certs(policy).iter().copied(),
        Compromise::Voids(&none),
    )
    .map_err(|e| Refused::Signature(e.to_string()))?;
    let signer = &signers[0];
    let cert = policy
        .certs()
        .find(|c| c.fingerprint() == signer.fingerprint)
        .ok_or_else(|| Refused::Signature("its key is not in the policy".to_owned()))?;
    if !valid_now(cert) {
        return Err(Refused::Signature(format!(
            "certificate {} is revoked or expired now",
            signer.fingerprint
        )));
    }
    let user = policy
        .holders(&signer.fingerprint)
        .find(|(_, user)| user.capabilities.contains(&Capability::SignTag))
        .map(|(name, _)| name.to_owned())
        .ok_or_else(|| {
            Refused::NotAuthorized(format!(
                "certificate {} belongs to no user of the policy holding sign_tag",
                signer.fingerprint
            ))
        })?;
    Ok(Approved {
        user,
        fingerprint: signer.fingerprint.to_hex(),
        signed: chrono::DateTime::<chrono::Utc>::from(signer.time)
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string(),
    })
}

/// The policy's certificates, each once.
fn certs(policy: &Policy) -> Vec<&Cert> {
    policy.certs().collect()
}

/// Whether `cert` is usable now: not revoked, not expired.
fn valid_now(cert: &Cert) -> bool {
    let policy = StandardPolicy::new();
    cert.with_policy(&policy, SystemTime::now())
        .is_ok_and(|valid| valid.alive().is_ok() && !matches!(valid.revocation_status(), RevocationStatus::Revoked(_)))
}

/// The approvals of `commit` for `environment` stored in `repo`, judged by `rule` and the
/// policy in force at the commit; `signers` are the commit's own.
pub fn tally(repo: &Repository, environment: &str, commit: Oid, rule: &ApprovalRule) -> Result<Tally, String> {
    let policy = policy_at(repo, commit)?;
    let signers = signers_of(repo, commit, &policy);
    let commit_id = commit.to_string();
    let prefix = format!("{NAMESPACE}/{environment}/{commit_id}/");
    let mut tally = Tally::default();
    let mut seen: BTreeMap<String, Approved> = BTreeMap::new();
    let references = repo
        .references_glob(&format!("{prefix}*"))
        .map_err(|e| format!("cannot list approvals: {}", e.message()))?;
    for reference in references.flatten() {
        let name = reference.name().unwrap_or_default().to_owned();
        let judged = reference
            .target()
            .ok_or_else(|| Refused::Malformed("a symbolic reference".to_owned()))
            .and_then(|oid| raw_tag(repo, oid))
            .and_then(|raw| verify(&raw, environment, &commit_id, &policy))
            .and_then(|approved| allowed(approved, rule, &signers));
        match judged {
            Ok(approved) => {
                seen.entry(approved.user.clone()).or_insert(approved);
            }
            Err(refused) => tally.refused.push((name, refused)),
        }
    }
    tally.counted = seen.into_values().collect();
    Ok(tally)
}

/// The raw content of tag object `oid`; its size is checked before it is read, so a huge
/// object pushed under the approvals' references is refused without loading it.
fn raw_tag(repo: &Repository, oid: Oid) -> Result<Vec<u8>, Refused> {
    let odb = repo.odb().map_err(|e| Refused::Malformed(e.message().to_owned()))?;
    let (size, kind) = odb
        .read_header(oid)
        .map_err(|e| Refused::Malformed(e.message().to_owned()))?;
    if kind != ObjectType::Tag {
        return Err(Refused::Malformed("not a tag object".to_owned()));
    }
    if size > MAX_BYTES {
        return Err(Refused::Malformed(format!("larger than {MAX_BYTES} bytes")));
    }
    let object = odb.read(oid).map_err(|e| Refused::Malformed(e.message().to_owned()))?;
    Ok(object.data().to_vec())
}

/// `approved` if `rule` lets its user approve: one of its approvers, and not the commit's
/// signer unless self-approval is allowed.
fn allowed(approved: Approved, rule: &ApprovalRule, signers: &[String]) -> Result<Approved, Refused> {
    if !rule.approvers.is_empty() && !rule.approvers.contains(&approved.user) {
        return Err(Refused::NotAuthorized(format!(
            "`{}` is not one of the approvers ({})",
            approved.user,
            rule.approvers.join(", ")
        )));
    }
    if !rule.allow_self_approval && signers.contains(&approved.user) {
        return Err(Refused::NotAuthorized(format!(
            "`{}` signed the commit; approving one's own commit does not count here",
            approved.user
        )));
    }
    Ok(approved)
}

/// Writes the approval `raw` (already verified) into `repo` at its reference; returns the
/// reference.
pub fn store(
    repo: &Repository,
    environment: &str,
    commit: &str,
    fingerprint: &str,
    raw: &[u8],
) -> Result<String, String> {
    let odb = repo.odb().map_err(|e| e.message().to_owned())?;
    let oid = odb.write(ObjectType::Tag, raw).map_err(|e| e.message().to_owned())?;
    let name = reference(environment, commit, fingerprint);
    repo.reference(&name, oid, true, "plumb approval")
        .map_err(|e| e.message().to_owned())?;
    Ok(name)
}
