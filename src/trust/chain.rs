//! Authenticating a range of history: every commit from an authenticated one up to a new head,
//! each by its parent's policy. A commit with several parents needs one authenticated parent
//! whose policy accepts it (sequoia-git's rule), so merges of outside work are fine as long as the
//! merge itself is signed by someone the policy trusts. A key revoked as compromised voids every
//! signature it made, except on commits an authenticated policy goodlists (`commit_goodlist`).

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
use super::signature::{self, Compromise, SignatureError};
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
    let mut history = repo.revwalk().map_err(git)?;
    history.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE).map_err(git)?;
    history.push(head).map_err(git)?;
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
            history.hide(*root).map_err(git)?;
        }
        TrustRoot::Policy(_) => {}
    }
    let mut range: Vec<Oid> = Vec::new();
    for commit in history {
        range.push(commit.map_err(git)?);
        if range.len() > MAX_RANGE {
            return Err(TrustError::TooMuchHistory { commits: MAX_RANGE });
        }
    }

    // A certificate revoked as compromised anywhere in the range voids all its signatures, even
    // those judged by an older policy that predates the revocation.
    let mut blobs = BTreeSet::new();
    // Each commit with the blob of its policy.
    let mut policy_of = Vec::with_capacity(range.len());
    for &commit in &range {
        let blob = policies.blob_of(commit).map_err(git)?;
        blobs.insert(blob);
        policy_of.push((commit, blob));
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

    // Goodlisted commits are forgiven a hard revocation — provided a policy that lists them is
    // itself authenticated, which can only be known after the walk: walk again without the
    // entries no authenticated policy backs, until every forgiven commit is backed.
    let goodlists = goodlists(root, &policy_of, &mut policies).map_err(git)?;
    let mut forgiven: BTreeSet<Oid> = goodlists.keys().copied().collect();
    let (commits, authenticated) = loop {
        let walked = walk(repo, root, &range, &mut policies, &hard_revoked, &forgiven)?;
        let backed = |commit: &Oid| {
            goodlists[commit]
                .iter()
                .any(|carrier| carrier.is_none_or(|c| walked.1.contains_key(&c)))
        };
        let unbacked: Vec<Oid> = forgiven.iter().copied().filter(|c| !backed(c)).collect();
        if unbacked.is_empty() {
            break walked;
        }
        for commit in unbacked {
            forgiven.remove(&commit);
        }
    };
    report.commits = commits;
    if !authenticated.contains_key(&head) {
        report.refusal = Some(root_cause(repo, &report, head));
    }
    Ok(report)
}

/// Authenticated commits, with when they were signed (unknown for the trust root).
type Authenticated = HashMap<Oid, Option<SystemTime>>;

/// Each commit of the range that a policy on the way goodlists, with the commits whose policy
/// lists it (`None` for a trust root given as a policy); `policy_of` pairs each commit of the
/// range with the blob of its policy.
fn goodlists(
    root: &TrustRoot,
    policy_of: &[(Oid, Oid)],
    policies: &mut Policies,
) -> Result<HashMap<Oid, Vec<Option<Oid>>>, git2::Error> {
    let mut carriers: Vec<(Rc<Policy>, Option<Oid>)> = Vec::new();
    match root {
        TrustRoot::Policy(policy) => carriers.push((Rc::new(policy.clone()), None)),
        TrustRoot::Commit(commit) => {
            if let Ok(policy) = policies.get(policies.blob_of(*commit)?) {
                carriers.push((policy, Some(*commit)));
            }
        }
    }
    for &(commit, blob) in policy_of {
        if let Ok(policy) = policies.get(blob) {
            carriers.push((policy, Some(commit)));
        }
    }
    let mut listed: HashMap<Oid, Vec<Option<Oid>>> = HashMap::new();
    if carriers.iter().all(|(policy, _)| policy.commit_goodlist.is_empty()) {
        return Ok(listed);
    }
    let in_range: BTreeSet<Oid> = policy_of.iter().map(|(commit, _)| *commit).collect();
    for (policy, carrier) in &carriers {
        for entry in &policy.commit_goodlist {
            if let Ok(commit) = Oid::from_str(entry)
                && in_range.contains(&commit)
            {
                listed.entry(commit).or_default().push(*carrier);
            }
        }
    }
    Ok(listed)
}

/// Judges every commit of `range` in order, each by its authenticated parents' policies, the
/// `forgiven` ones spared hard revocations; returns the reports and the commits authenticated
/// (the trust root among them), with when they were signed.
fn walk(
    repo: &Repository,
    root: &TrustRoot,
    range: &[Oid],
    policies: &mut Policies,
    hard_revoked: &BTreeSet<Fingerprint>,
    forgiven: &BTreeSet<Oid>,
) -> Result<(Vec<CommitReport>, Authenticated), TrustError> {
    let git = |commit: Oid| move |source| TrustError::Git { commit, source };
    let mut commits = Vec::with_capacity(range.len());
    let mut authenticated = Authenticated::new();
    if let TrustRoot::Commit(root) = root {
        authenticated.insert(*root, None);
    }
    for &id in range {
        let commit = repo.find_commit(id).map_err(git(id))?;
        let mut parent_policies: Vec<Parent> = Vec::new();
        let mut parent_error = None;
        for parent in commit.parent_ids() {
            let Some(&signed) = authenticated.get(&parent) else {
                continue;
            };
            match policies.blob_of(parent).map_err(git(id)).map(|b| policies.get(b))? {
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
            let own_blob = policies.blob_of(id).map_err(git(id))?;
            match policies.get(own_blob) {
                Err(reason) => Outcome::Refused(Refusal::BadPolicy { commit: id, reason }),
                Ok(own) => {
                    let compromise = if forgiven.contains(&id) {
                        Compromise::Forgiven
                    } else {
                        Compromise::Voids(hard_revoked)
                    };
                    judge(repo, id, &parent_policies, &own, compromise)
                }
            }
        };
        if let Outcome::Authenticated { signed, .. } = &outcome {
            authenticated.insert(id, Some(*signed));
        }
        commits.push(CommitReport {
            id,
            summary: String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned(),
            outcome,
        });
    }
    Ok((commits, authenticated))
}

/// An authenticated parent: its policy, and when it was signed (`None` for a trust root).
struct Parent {
    policy: Rc<Policy>,
    signed: Option<SystemTime>,
}

/// Judges commit `id` by each authenticated parent's policy in turn; one acceptance suffices.
fn judge(repo: &Repository, id: Oid, parents: &[Parent], own: &Rc<Policy>, compromise: Compromise<'_>) -> Outcome {
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
        let signers = match signature::verify(&signature, &data, certs.iter().copied(), compromise) {
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
            if let Some(parent_signed) = parent.signed
                && signer.time + CLOCK_SKEW < parent_signed
            {
                missing.get_or_insert(Refusal::Backdated {
                    signed: signer.time,
                    parent_signed,
                });
                continue;
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
