//! Authenticating a range of history: every commit from an authenticated one up to a new head,
//! each by its parent's policy. A commit with several parents needs one authenticated parent
//! whose policy accepts it (sequoia-git's rule), so merges of outside work are fine as long as the
//! merge itself is signed by someone the policy trusts.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use git2::{Oid, Repository, Sort};
use sequoia_openpgp::cert::Cert;
use sequoia_openpgp::packet::signature::subpacket::SubpacketTag;
use sequoia_openpgp::policy::StandardPolicy;
use sequoia_openpgp::types::{RevocationStatus, SignatureType};
use sequoia_openpgp::{Fingerprint, Packet};

use super::policy::{Capability, POLICY_FILE, Policy};
use super::signature::{self, SignatureError};
use super::{CommitReport, Outcome, Refusal, Report, TrustError, TrustRoot};

/// The largest policy file read: a policy lists a few certificates, not megabytes of them.
const MAX_POLICY_BYTES: usize = 1024 * 1024;
/// The most commits authenticated in one range, and the most distinct policies on the way: a
/// bound on the work a hostile push can cause. Beyond them, move the trust root forward.
pub(super) const MAX_RANGE: usize = 200_000;
pub(super) const MAX_POLICIES: usize = 1_000;
/// How far a commit's signature may predate its parent's (clocks differ between machines).
const CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Policies by the id of the blob they were read from (`Oid::ZERO_SHA1` for an absent file).
struct Policies<'r> {
    repo: &'r Repository,
    parsed: HashMap<Oid, Result<Rc<Policy>, String>>,
}

impl<'r> Policies<'r> {
    fn blob_of(&self, commit: Oid) -> Result<Oid, git2::Error> {
        let tree = self.repo.find_commit(commit)?.tree()?;
        Ok(tree
            .get_name(POLICY_FILE)
            .map(|e| e.id())
            .unwrap_or_else(|| Oid::ZERO_SHA1))
    }

    fn get(&mut self, blob: Oid) -> Result<Rc<Policy>, String> {
        if let Some(parsed) = self.parsed.get(&blob) {
            return parsed.clone();
        }
        let parsed = if blob.is_zero() {
            Ok(Rc::new(Policy::default()))
        } else {
            self.repo
                .odb()
                .and_then(|odb| odb.read_header(blob))
                .map_err(|e| e.to_string())
                .and_then(|(size, _)| match size {
                    size if size > MAX_POLICY_BYTES => Err(format!("it is {size} bytes, more than the limit of 1 MiB")),
                    _ => self.repo.find_blob(blob).map_err(|e| e.to_string()),
                })
                .and_then(|b| {
                    std::str::from_utf8(b.content())
                        .map(str::to_owned)
                        .map_err(|e| e.to_string())
                })
                .and_then(|text| Policy::parse(&text).map_err(|e| e.to_string()))
                .map(Rc::new)
        };
        self.parsed.insert(blob, parsed.clone());
        parsed
    }
}

/// Authenticates every commit between `root` and `head`; see [`super::authenticate`].
pub(super) fn authenticate(repo: &Repository, root: &TrustRoot, head: Oid) -> Result<Report, TrustError> {
    let git = |source| TrustError::Git { commit: head, source };
    let mut report = Report {
        head,
        commits: Vec::new(),
        refusal: None,
    };
    let mut policies = Policies {
        repo,
        parsed: HashMap::new(),
    };
    // Authenticated commits, with when they were signed (unknown for the trust root).
    let mut authenticated: HashMap<Oid, Option<SystemTime>> = HashMap::new();
    let mut walk = repo.revwalk().map_err(git)?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE).map_err(git)?;
    walk.push(head).map_err(git)?;
    match root {
        TrustRoot::Commit(root) => {
            if *root == head {
                return Ok(report);
            }
            // A trusted commit the remote no longer has: history was rewritten under it.
            if repo.find_commit(*root).is_err() {
                report.refusal = Some((head, Refusal::HistoryRewritten { trusted: *root }));
                return Ok(report);
            }
            if !repo.graph_descendant_of(head, *root).map_err(git)? {
                let refusal = if repo.graph_descendant_of(*root, head).map_err(git)? {
                    Refusal::Rollback { trusted: *root }
                } else {
                    Refusal::HistoryRewritten { trusted: *root }
                };
                report.refusal = Some((head, refusal));
                return Ok(report);
            }
            authenticated.insert(*root, None);
            walk.hide(*root).map_err(git)?;
        }
        TrustRoot::Policy(_) => {}
    }
    let mut range: Vec<Oid> = Vec::new();
    for commit in walk {
        range.push(commit.map_err(git)?);
        if range.len() > MAX_RANGE {
            return Err(TrustError::TooMuchHistory { commits: MAX_RANGE });
        }
    }

    // A certificate revoked as compromised anywhere in the range voids all its signatures, even
    // those judged by an older policy that predates the revocation.
    let mut blobs = BTreeSet::new();
    for &commit in &range {
        blobs.insert(policies.blob_of(commit).map_err(git)?);
        if blobs.len() > MAX_POLICIES {
            return Err(TrustError::TooManyPolicies { policies: MAX_POLICIES });
        }
    }
    let mut hard_revoked = BTreeSet::new();
    if let TrustRoot::Policy(policy) = root {
        hard_revoked.extend(signature::hard_revocations(policy.certs()));
    }
    for blob in blobs {
        if let Ok(policy) = policies.get(blob) {
            hard_revoked.extend(signature::hard_revocations(policy.certs()));
        }
    }

    for &id in &range {
        let commit = repo.find_commit(id).map_err(git)?;
        let mut parent_policies: Vec<Parent> = Vec::new();
        let mut parent_error = None;
        for parent in commit.parent_ids() {
            let Some(&signed) = authenticated.get(&parent) else {
                continue;
            };
            match policies.blob_of(parent).map_err(git).map(|b| policies.get(b))? {
                Ok(policy) => parent_policies.push(Parent { policy, signed }),
                Err(reason) => parent_error = Some(Refusal::BadPolicy { commit: parent, reason }),
            }
        }
        if let (TrustRoot::Policy(root_policy), 0) = (root, commit.parent_count()) {
            parent_policies.push(Parent {
                policy: Rc::new(root_policy.clone()),
                signed: None,
            });
        }
        let outcome = if parent_policies.is_empty() {
            Outcome::Refused(parent_error.unwrap_or(Refusal::ParentRefused))
        } else {
            let own_blob = policies.blob_of(id).map_err(git)?;
            match policies.get(own_blob) {
                Err(reason) => Outcome::Refused(Refusal::BadPolicy { commit: id, reason }),
                Ok(own) => judge(repo, id, &parent_policies, &own, &hard_revoked),
            }
        };
        if let Outcome::Authenticated { signed, .. } = &outcome {
            authenticated.insert(id, Some(*signed));
        }
        report.commits.push(CommitReport {
            id,
            summary: String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned(),
            outcome,
        });
    }
    if !authenticated.contains_key(&head) {
        report.refusal = Some(root_cause(repo, &report, head));
    }
    Ok(report)
}

/// An authenticated parent: its policy, and when it was signed (`None` for a trust root).
struct Parent {
    policy: Rc<Policy>,
    signed: Option<SystemTime>,
}

/// Judges commit `id` by each authenticated parent's policy in turn; one acceptance suffices.
fn judge(
    repo: &Repository,
    id: Oid,
    parents: &[Parent],
    own: &Rc<Policy>,
    hard_revoked: &BTreeSet<Fingerprint>,
) -> Outcome {
    let (signature, data) = match repo.extract_signature(&id, None) {
        Ok((signature, data)) => (signature, data),
        Err(_) => return Outcome::Refused(Refusal::Signature(SignatureError::Unsigned)),
    };
    let mut refusal = None;
    for parent in parents {
        let policy = &parent.policy;
        // Most commits leave the policy alone: then the parent's certificates serve as they are.
        let unchanged = Rc::ptr_eq(policy, own);
        let updated;
        let certs: Vec<&Cert> = if unchanged {
            policy.certs().collect()
        } else {
            updated = updated_certs(policy, own);
            updated.iter().collect()
        };
        let signers = match signature::verify(&signature, &data, certs.iter().copied(), hard_revoked) {
            Ok(signers) => signers,
            Err(e) => {
                refusal.get_or_insert(Refusal::Signature(e));
                continue;
            }
        };
        let mut changes = vec![(Capability::SignCommit, "signs a commit".to_owned())];
        if !unchanged {
            changes.extend(policy.changes_to(own));
        }
        let mut missing = None;
        for signer in &signers {
            // A signature dated before its parent's was backdated: with a retired key, to slip
            // under the revocation's date.
            if let Some(parent_signed) = parent.signed {
                if signer.time + CLOCK_SKEW < parent_signed {
                    missing.get_or_insert(Refusal::Backdated {
                        signed: signer.time,
                        parent_signed,
                    });
                    continue;
                }
            }
            for (name, user) in policy.holders(&signer.fingerprint) {
                match changes.iter().find(|(needed, _)| !user.capabilities.contains(needed)) {
                    None => {
                        return Outcome::Authenticated {
                            signer: name.to_owned(),
                            fingerprint: signer.fingerprint.clone(),
                            signed: signer.time,
                        };
                    }
                    Some((capability, change)) => {
                        missing.get_or_insert(Refusal::NotAuthorized {
                            signer: name.to_owned(),
                            capability: *capability,
                            change: change.clone(),
                        });
                    }
                }
            }
        }
        if let Some(missing) = missing {
            refusal = Some(missing);
        }
    }
    Outcome::Refused(refusal.unwrap_or(Refusal::ParentRefused))
}

/// The parent's certificates, refreshed with what the commit's own policy adds to them (a new
/// expiry, a new subkey) — but never with revocations, which would let a commit revoke the key
/// that judges it. New certificates are not taken from the commit: only the parent vouches.
///
/// A certificate the parent knows as revoked is not refreshed at all: a newer self-signature
/// would otherwise outrank a soft revocation and bring a retired key back.
fn updated_certs(parent: &Policy, own: &Policy) -> Vec<Cert> {
    let standard = StandardPolicy::new();
    parent
        .certs()
        .map(|cert| {
            if let RevocationStatus::Revoked(_) = cert.revocation_status(&standard, None) {
                return cert.clone();
            }
            let Some(update) = own.certs().find(|c| c.fingerprint() == cert.fingerprint()) else {
                return cert.clone();
            };
            let packets = update.clone().into_packets().filter(|packet| {
                !matches!(packet, Packet::Signature(sig) if matches!(
                    sig.typ(),
                    SignatureType::KeyRevocation | SignatureType::SubkeyRevocation | SignatureType::CertificationRevocation
                ) || sig.subpacket(SubpacketTag::ReasonForRevocation).is_some())
            });
            match Cert::from_packets(packets) {
                Ok(update) => cert.clone().merge_public(update).unwrap_or_else(|_| cert.clone()),
                Err(_) => cert.clone(),
            }
        })
        .collect()
}

/// The refusal to report for a head that was not authenticated: the oldest refused commit on
/// its first-parent line, which is what the engineer has to fix.
fn root_cause(repo: &Repository, report: &Report, head: Oid) -> (Oid, Refusal) {
    let refused: HashMap<Oid, &Refusal> = report
        .commits
        .iter()
        .filter_map(|c| match &c.outcome {
            Outcome::Refused(r) => Some((c.id, r)),
            _ => None,
        })
        .collect();
    let mut cause = (head, Refusal::ParentRefused);
    let mut at = Some(head);
    while let Some(id) = at {
        match refused.get(&id) {
            Some(refusal) if **refusal != Refusal::ParentRefused => cause = (id, (*refusal).clone()),
            Some(_) => {}
            None => break,
        }
        at = repo.find_commit(id).ok().and_then(|c| c.parent_id(0).ok());
    }
    cause
}
