//! Commit authentication: plumb applies a commit only when an unbroken chain of signed commits
//! leads to it from a trust root the operator chose, each commit signed by someone its parent's
//! signing policy (`openpgp-policy.toml`, sequoia-git's format) authorizes. This module reads
//! commits and policies; it never reads configuration semantics.

mod chain;
mod policy;
mod signature;
mod state;

use std::fmt;

use git2::{Oid, Repository};

pub use policy::{Capability, POLICY_FILE, Policy, PolicyError};
pub use signature::{Compromise, SignatureError, Signer, verify as verify_signature};
pub use state::{Anchor, Decision, RefusedHead, StateError, TrustState};

/// Where authentication starts: chosen by the operator, never taken from the repository alone.
#[derive(Clone, Debug)]
pub enum TrustRoot {
    /// A commit taken as authenticated (its own signature is not checked, as in sequoia-git).
    Commit(Oid),
    /// A policy that judges the repository's first commits (a keyring with an initial policy).
    Policy(Policy),
}

impl TrustRoot {
    /// A stable name for this root, to notice when the configuration changes it.
    pub fn identity(&self) -> String {
        match self {
            TrustRoot::Commit(id) => format!("commit:{id}"),
            TrustRoot::Policy(policy) => {
                let users: Vec<String> = policy
                    .users
                    .iter()
                    .map(|(name, user)| {
                        let capabilities: Vec<&str> = user.capabilities.iter().map(|c| c.name()).collect();
                        let certs: Vec<String> = user.certs.iter().map(|c| c.fingerprint().to_hex()).collect();
                        format!("{name}={}:{}", capabilities.join("+"), certs.join("+"))
                    })
                    .collect();
                format!("policy:{}", users.join(","))
            }
        }
    }
}

/// Why a commit was refused. Each variant has a bounded [`Refusal::kind`] for metric labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The signature does not vouch for the commit.
    Signature(SignatureError),
    /// The signer is in the policy but lacks a capability the commit needs.
    NotAuthorized {
        /// The policy's name for the signer.
        signer: String,
        /// The capability missing.
        capability: Capability,
        /// What the commit does that needs it.
        change: String,
    },
    /// The signature is dated well before its parent's: it was backdated.
    Backdated {
        /// When the commit says it was signed.
        signed: std::time::SystemTime,
        /// When its parent was signed.
        parent_signed: std::time::SystemTime,
    },
    /// A policy file on the way cannot be parsed.
    BadPolicy {
        /// The commit holding it.
        commit: Oid,
        /// The parser's message.
        reason: String,
    },
    /// No parent of the commit is authenticated: it builds on a refused commit, or on history
    /// that does not lead back to the trust root.
    ParentRefused,
    /// The new head does not descend from the last authenticated commit: history was rewritten
    /// (a force-push).
    HistoryRewritten {
        /// The last authenticated commit.
        trusted: Oid,
    },
    /// The new head is an ancestor of the last authenticated commit: the ref moved backwards,
    /// as in a rollback or freeze attack.
    Rollback {
        /// The last authenticated commit.
        trusted: Oid,
    },
}

impl Refusal {
    /// A short, bounded name for metrics and JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Signature(SignatureError::Unsigned) => "unsigned",
            Refusal::Signature(SignatureError::Malformed(_)) => "malformed_signature",
            Refusal::Signature(SignatureError::WeakAlgorithm(_)) => "weak_algorithm",
            Refusal::Signature(SignatureError::UnknownSigner(_)) => "unknown_signer",
            Refusal::Signature(SignatureError::Expired(_)) => "expired_key",
            Refusal::Signature(SignatureError::Revoked { .. }) => "revoked_key",
            Refusal::Signature(SignatureError::UnusableCertificate { .. }) => "unusable_certificate",
            Refusal::Signature(SignatureError::BadSignature(_)) => "bad_signature",
            Refusal::NotAuthorized { .. } => "not_authorized",
            Refusal::Backdated { .. } => "backdated_signature",
            Refusal::BadPolicy { .. } => "bad_policy",
            Refusal::ParentRefused => "parent_refused",
            Refusal::HistoryRewritten { .. } => "history_rewritten",
            Refusal::Rollback { .. } => "rollback",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Signature(e) => write!(f, "{e}"),
            Refusal::NotAuthorized {
                signer,
                capability,
                change,
            } => write!(
                f,
                "`{signer}` may not do this: the commit {change}, which needs {capability} in the parent's policy"
            ),
            Refusal::Backdated { signed, parent_signed } => {
                let seconds = parent_signed.duration_since(*signed).unwrap_or_default().as_secs();
                write!(
                    f,
                    "the signature is dated {seconds} s before its parent's: it was backdated"
                )
            }
            Refusal::BadPolicy { commit, reason } => {
                write!(f, "the signing policy of {commit} is unreadable: {reason}")
            }
            Refusal::ParentRefused => f.write_str("no parent of this commit is authenticated"),
            Refusal::HistoryRewritten { trusted } => write!(
                f,
                "history was rewritten: the new head does not descend from the last authenticated commit {trusted}"
            ),
            Refusal::Rollback { trusted } => write!(
                f,
                "the ref moved backwards: the new head is an ancestor of the last authenticated commit {trusted}"
            ),
        }
    }
}

/// What happened to one commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A parent's policy accepted it.
    Authenticated {
        /// The policy's name for the signer.
        signer: String,
        /// The signer's certificate.
        fingerprint: sequoia_openpgp::Fingerprint,
        /// When the signature was made.
        signed: std::time::SystemTime,
    },
    /// No parent's policy accepted it.
    Refused(Refusal),
}

/// One commit of a range and its outcome.
#[derive(Clone, Debug)]
pub struct CommitReport {
    /// The commit.
    pub id: Oid,
    /// Its subject line.
    pub summary: String,
    /// What happened.
    pub outcome: Outcome,
}

/// The result of authenticating a range, oldest commit first.
#[derive(Clone, Debug)]
pub struct Report {
    /// The commit asked about.
    pub head: Oid,
    /// Every commit of the range, parents before children.
    pub commits: Vec<CommitReport>,
    /// Why the head is not authenticated: the commit to fix and the reason. `None` when it is.
    pub refusal: Option<(Oid, Refusal)>,
}

impl Report {
    /// Whether the head is authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.refusal.is_none()
    }
}

/// Why authentication could not be carried out at all (as opposed to a refusal).
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The range holds more commits than plumb authenticates at once.
    #[error("more than {commits} commits to authenticate; move the trust root closer to the head")]
    TooMuchHistory {
        /// The limit.
        commits: usize,
    },
    /// The range holds more distinct signing policies than plumb reads at once.
    #[error("more than {policies} distinct signing policies to read; move the trust root closer to the head")]
    TooManyPolicies {
        /// The limit.
        policies: usize,
    },
    /// The repository could not be read.
    #[error("cannot read the history of {commit}")]
    Git {
        /// The head being authenticated.
        commit: Oid,
        /// The cause.
        #[source]
        source: git2::Error,
    },
}

/// Authenticates every commit from `root` (exclusive) to `head` (inclusive). `head` is
/// authenticated when a path of accepted commits leads to it from the root.
pub fn authenticate(repo: &Repository, root: &TrustRoot, head: Oid) -> Result<Report, TrustError> {
    chain::authenticate(repo, root, head)
}
