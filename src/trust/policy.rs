//! The signing policy kept in the repository as `openpgp-policy.toml`, in sequoia-git's format so
//! the same file checks pull requests in CI with `sq-git`: who may sign commits, and who may
//! change the policy itself. A commit is judged by its parent's policy; a commit that changes the
//! policy must be signed by someone the parent's policy allows to make that change.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use sequoia_openpgp::cert::{Cert, CertParser};
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::serialize::Serialize;
use sequoia_openpgp::{Fingerprint, Packet};
use serde::Deserialize;

/// Where the policy lives in a commit's tree.
pub const POLICY_FILE: &str = "openpgp-policy.toml";

/// What a policy can allow someone to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Capability {
    /// Sign commits.
    SignCommit,
    /// Sign tags.
    SignTag,
    /// Sign release archives.
    SignArchive,
    /// Add users, certificates, or grant capabilities one holds.
    AddUser,
    /// Remove users, certificates, or capabilities one holds.
    RetireUser,
    /// Change the policy's version and its list of explicitly good commits.
    Audit,
}

impl Capability {
    /// The name used in `openpgp-policy.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Capability::SignCommit => "sign_commit",
            Capability::SignTag => "sign_tag",
            Capability::SignArchive => "sign_archive",
            Capability::AddUser => "add_user",
            Capability::RetireUser => "retire_user",
            Capability::Audit => "audit",
        }
    }

    const ALL: [Capability; 6] = [
        Capability::SignCommit,
        Capability::SignTag,
        Capability::SignArchive,
        Capability::AddUser,
        Capability::RetireUser,
        Capability::Audit,
    ];
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The file as written: unknown keys are ignored, as sequoia-git's format asks of readers.
#[derive(Deserialize, Default)]
#[serde(default)]
struct File {
    version: i64,
    commit_goodlist: BTreeSet<String>,
    authorization: BTreeMap<String, FileUser>,
}

#[derive(Deserialize)]
struct FileUser {
    #[serde(default)]
    sign_commit: bool,
    #[serde(default)]
    sign_tag: bool,
    #[serde(default)]
    sign_archive: bool,
    #[serde(default)]
    add_user: bool,
    #[serde(default)]
    retire_user: bool,
    #[serde(default)]
    audit: bool,
    keyring: String,
}

/// One named entry of a policy.
#[derive(Clone, Debug)]
pub struct User {
    /// What the user may do.
    pub capabilities: BTreeSet<Capability>,
    /// The user's certificates.
    pub certs: Vec<Cert>,
}

/// A parsed signing policy.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// The format version (0).
    pub version: i64,
    /// Commits an auditor declared good although their signer's key was later revoked as
    /// compromised: such a commit is forgiven the hard revocation (see `chain`). Changing the
    /// list needs `audit`.
    pub commit_goodlist: BTreeSet<String>,
    /// The users, by name.
    pub users: BTreeMap<String, User>,
    /// Every certificate once, copies listed under several users merged (so a revocation
    /// carried by any copy counts).
    merged: Vec<Cert>,
}

/// Why a policy file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The TOML is malformed or a field has the wrong type.
    #[error("{POLICY_FILE} is not a valid policy: {0}")]
    Syntax(String),
    /// A user's keyring holds something that is not an OpenPGP certificate.
    #[error("{POLICY_FILE}: the keyring of `{user}` cannot be read: {reason}")]
    Keyring {
        /// The user.
        user: String,
        /// The parser's message.
        reason: String,
    },
}

impl Policy {
    /// Parses the text of an `openpgp-policy.toml`. An absent file is the empty policy, which
    /// authorizes nobody.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let file: File = toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        let mut users = BTreeMap::new();
        for (name, entry) in file.authorization {
            let mut certs = Vec::new();
            if !entry.keyring.trim().is_empty() {
                for cert in CertParser::from_bytes(entry.keyring.as_bytes()).map_err(|e| PolicyError::Keyring {
                    user: name.clone(),
                    reason: e.to_string(),
                })? {
                    certs.push(cert.map_err(|e| PolicyError::Keyring {
                        user: name.clone(),
                        reason: e.to_string(),
                    })?);
                }
            }
            let flags = [
                entry.sign_commit,
                entry.sign_tag,
                entry.sign_archive,
                entry.add_user,
                entry.retire_user,
                entry.audit,
            ];
            let capabilities = Capability::ALL
                .into_iter()
                .zip(flags)
                .filter_map(|(c, on)| on.then_some(c))
                .collect();
            users.insert(name, User { capabilities, certs });
        }
        let mut merged: Vec<Cert> = Vec::new();
        for cert in users.values().flat_map(|u| u.certs.iter()) {
            match merged.iter_mut().find(|c| c.fingerprint() == cert.fingerprint()) {
                Some(known) => {
                    let combined = known
                        .clone()
                        .merge_public(cert.clone())
                        .map_err(|e| PolicyError::Keyring {
                            user: "(several users)".to_owned(),
                            reason: e.to_string(),
                        })?;
                    *known = combined;
                }
                None => merged.push(cert.clone()),
            }
        }
        Ok(Policy {
            version: file.version,
            commit_goodlist: file.commit_goodlist,
            users,
            merged,
        })
    }

    /// The users (name, entry) holding a certificate with `fingerprint` as its primary key.
    pub fn holders<'a>(&'a self, fingerprint: &'a Fingerprint) -> impl Iterator<Item = (&'a str, &'a User)> + 'a {
        self.users
            .iter()
            .filter(move |(_, user)| user.certs.iter().any(|c| &c.fingerprint() == fingerprint))
            .map(|(name, user)| (name.as_str(), user))
    }

    /// Every certificate of the policy, each once.
    pub fn certs(&self) -> impl Iterator<Item = &Cert> {
        self.merged.iter()
    }

    /// The capabilities a signer needs to turn `self` (the parent's policy) into `next`, beyond
    /// `sign_commit`; each with the change that needs it, for the refusal message.
    pub fn changes_to(&self, next: &Policy) -> Vec<(Capability, String)> {
        let mut needs = Vec::new();
        if self.version != next.version {
            needs.push((
                Capability::Audit,
                format!("changes the policy version to {}", next.version),
            ));
        }
        if self.commit_goodlist != next.commit_goodlist {
            needs.push((Capability::Audit, "changes commit_goodlist".to_owned()));
        }
        let empty = User {
            capabilities: BTreeSet::new(),
            certs: Vec::new(),
        };
        let names: BTreeSet<&String> = self.users.keys().chain(next.users.keys()).collect();
        for name in names {
            let before = self.users.get(name);
            let after = next.users.get(name);
            match (before, after) {
                (None, Some(_)) => needs.push((Capability::AddUser, format!("adds user `{name}`"))),
                (Some(_), None) => needs.push((Capability::RetireUser, format!("removes user `{name}`"))),
                _ => {}
            }
            let (before, after) = (before.unwrap_or(&empty), after.unwrap_or(&empty));
            for &granted in after.capabilities.difference(&before.capabilities) {
                // Only a holder of a capability may hand it on.
                needs.push((Capability::AddUser, format!("grants {granted} to `{name}`")));
                needs.push((granted, format!("grants {granted} to `{name}`")));
            }
            for &removed in before.capabilities.difference(&after.capabilities) {
                needs.push((Capability::RetireUser, format!("removes {removed} from `{name}`")));
                needs.push((removed, format!("removes {removed} from `{name}`")));
            }
            keyring_changes(name, &before.certs, after, &mut needs);
        }
        needs
    }
}

/// Certificates added need `add_user` and every capability of the user they are added to (a
/// certificate added to a user gains that user's powers); removed need `retire_user`; a
/// certificate may grow (new subkeys, an extended expiry) freely, but dropping its own
/// signatures needs `retire_user`.
fn keyring_changes(name: &str, before: &[Cert], user: &User, needs: &mut Vec<(Capability, String)>) {
    let after = &user.certs;
    for cert in after {
        if !before.iter().any(|c| c.fingerprint() == cert.fingerprint()) {
            let change = format!("adds certificate {} to `{name}`", cert.fingerprint());
            needs.push((Capability::AddUser, change.clone()));
            needs.extend(user.capabilities.iter().map(|&c| (c, change.clone())));
        }
    }
    for cert in before {
        let Some(next) = after.iter().find(|c| c.fingerprint() == cert.fingerprint()) else {
            needs.push((
                Capability::RetireUser,
                format!("removes certificate {} from `{name}`", cert.fingerprint()),
            ));
            continue;
        };
        let kept: BTreeSet<Vec<u8>> = packets(next).map(|(bytes, _)| bytes).collect();
        let first_party_removed = packets(cert).any(|(bytes, packet)| {
            !kept.contains(&bytes)
                && matches!(&packet, Packet::Signature(sig)
                    if sig.get_issuers().iter().any(|issuer| issuer.aliases(cert.key_handle())))
        });
        if first_party_removed {
            needs.push((
                Capability::RetireUser,
                format!(
                    "removes self-signatures from certificate {} of `{name}`",
                    cert.fingerprint()
                ),
            ));
        }
    }
}

fn packets(cert: &Cert) -> impl Iterator<Item = (Vec<u8>, Packet)> {
    cert.clone().into_packets().filter_map(|packet| {
        let mut bytes = Vec::new();
        packet.serialize(&mut bytes).ok()?;
        Some((bytes, packet))
    })
}
