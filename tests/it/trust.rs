//! Commit authentication on real repositories with real signatures made in-process: every
//! refusal reason, merges, policy rotation, the persisted trust state, and `plumb verify`.

use git2::Oid;
use plumb::trust::{self, Decision, Outcome, Policy, TrustRoot, TrustState};
use sequoia_openpgp::Packet;
use sequoia_openpgp::types::HashAlgorithm;

use crate::harness::{TestRepo, plumb};
use crate::keys::{ALL, TestKey, policy, policy_entries};

const POLICY: &str = "openpgp-policy.toml";

/// A repository whose root commit holds a policy: alice may do everything, bob may only sign
/// commits; carol's key expires, dave's is retired (soft), erin's compromised (hard) — each
/// after the root commit was made.
struct Fixture {
    repo: TestRepo,
    root: String,
    /// When the root commit was made and signed.
    root_time: i64,
    alice: TestKey,
    bob: TestKey,
    carol: TestKey,
    dave: TestKey,
    erin: TestKey,
    mallory: TestKey,
}

impl Fixture {
    fn new() -> Fixture {
        let mut repo = TestRepo::new();
        let root_time = repo.next_time();
        let alice = TestKey::new("alice");
        let bob = TestKey::new("bob");
        let carol = TestKey::expiring_at("carol", root_time + 30);
        let dave = TestKey::new("dave").revoked(false, root_time + 30);
        let erin = TestKey::new("erin").revoked(true, root_time + 100_000);
        let signers: &[&str] = &["sign_commit"];
        repo.write(
            POLICY,
            &policy(&[
                (&alice, ALL),
                (&bob, signers),
                (&carol, signers),
                (&dave, signers),
                (&erin, signers),
            ]),
        );
        repo.write("README.md", "config\n");
        let root = repo.commit_signed("Add the signing policy", &alice);
        Fixture {
            repo,
            root,
            root_time,
            alice,
            bob,
            carol,
            dave,
            erin,
            mallory: TestKey::new("mallory"),
        }
    }

    fn authenticate(&self, head: &str) -> trust::Report {
        let root = TrustRoot::Commit(Oid::from_str(&self.root).unwrap());
        trust::authenticate(self.repo.git(), &root, Oid::from_str(head).unwrap()).unwrap()
    }

    fn touch(&self, n: usize) {
        self.repo.write("README.md", &format!("change {n}\n"));
    }
}

fn refusal_kind(report: &trust::Report) -> Option<&'static str> {
    report.refusal.as_ref().map(|(_, r)| r.kind())
}

#[test]
fn every_refusal_reason() {
    type Make = fn(&mut Fixture) -> String;
    let cases: &[(&str, Make)] = &[
        ("unsigned", |f| f.repo.commit("No signature")),
        ("unknown_signer", |f| {
            let mallory = f.mallory.clone();
            f.repo.commit_signed("Signed by a stranger", &mallory)
        }),
        ("bad_signature", |f| {
            let alice = f.alice.clone();
            f.repo.commit_with("Tampered after signing", |data, time| {
                let mut altered = data.to_vec();
                altered.extend_from_slice(b"\n");
                Some(alice.sign(&altered, time, HashAlgorithm::SHA512))
            })
        }),
        ("weak_algorithm", |f| {
            let alice = f.alice.clone();
            f.repo.commit_with("Signed with SHA-1", |data, time| {
                Some(alice.sign(data, time, HashAlgorithm::SHA1))
            })
        }),
        ("expired_key", |f| {
            let carol = f.carol.clone();
            f.repo.commit_signed("Signed after the key expired", &carol)
        }),
        ("revoked_key", |f| {
            let dave = f.dave.clone();
            f.repo.commit_signed("Signed after the key was retired", &dave)
        }),
        ("revoked_key", |f| {
            let erin = f.erin.clone();
            f.repo.commit_signed("Signed before the key was compromised", &erin)
        }),
        ("not_authorized", |f| {
            let (alice, bob, mallory) = (f.alice.clone(), f.bob.clone(), f.mallory.clone());
            let signers: &[&str] = &["sign_commit"];
            f.repo
                .write(POLICY, &policy(&[(&alice, ALL), (&bob, signers), (&mallory, signers)]));
            f.repo.commit_signed("Bob adds mallory without add_user", &bob)
        }),
        ("bad_policy", |f| {
            let alice = f.alice.clone();
            f.repo.write(POLICY, "[authorization.alice\nkeyring = 1");
            f.repo.commit_signed("Break the policy file", &alice)
        }),
    ];
    for (i, (kind, make)) in cases.iter().enumerate() {
        let mut fixture = Fixture::new();
        fixture.touch(i);
        let head = make(&mut fixture);
        let report = fixture.authenticate(&head);
        assert_eq!(refusal_kind(&report), Some(*kind), "case {i}: {:?}", report.refusal);
        assert_eq!(
            report.refusal.as_ref().unwrap().0.to_string(),
            head,
            "case {i} names the head"
        );
    }
}

#[test]
fn a_chain_of_good_commits_is_authenticated_commit_by_commit() {
    let mut f = Fixture::new();
    f.touch(1);
    f.repo.commit_signed("One", &f.alice.clone());
    f.touch(2);
    f.repo.commit_signed("Two", &f.bob.clone());
    // Signatures made before a soft revocation or an expiry stay good.
    let later = TestKey::new("frank").revoked(false, f.repo.next_time() + 1_000_000);
    let expiring = TestKey::expiring_at("grace", f.repo.next_time() + 1_000_000);
    let signers: &[&str] = &["sign_commit"];
    f.repo.write(
        POLICY,
        &policy(&[
            (&f.alice, ALL),
            (&f.bob, signers),
            (&later, signers),
            (&expiring, signers),
        ]),
    );
    f.repo.commit_signed("Alice adds frank and grace", &f.alice.clone());
    f.touch(3);
    f.repo.commit_signed("By frank", &later);
    f.touch(4);
    let head = f.repo.commit_signed("By grace", &expiring);
    let report = f.authenticate(&head);
    assert!(report.is_authenticated(), "{:?}", report.refusal);
    let signers: Vec<&str> = report
        .commits
        .iter()
        .map(|c| match &c.outcome {
            Outcome::Authenticated { signer, .. } => signer.as_str(),
            Outcome::Refused(r) => panic!("{} refused: {r}", c.summary),
        })
        .collect();
    assert_eq!(signers, ["alice", "bob", "alice", "frank", "grace"]);
}

#[test]
fn a_refused_commit_taints_its_descendants_and_is_named_as_the_cause() {
    let mut f = Fixture::new();
    f.touch(1);
    let unsigned = f.repo.commit("Unsigned");
    f.touch(2);
    let head = f.repo.commit_signed("Signed on top", &f.alice.clone());
    let report = f.authenticate(&head);
    let (culprit, refusal) = report.refusal.clone().unwrap();
    assert_eq!(culprit.to_string(), unsigned);
    assert_eq!(refusal.kind(), "unsigned");
    assert_eq!(
        report.commits.last().unwrap().outcome,
        Outcome::Refused(trust::Refusal::ParentRefused)
    );
}

#[test]
fn a_merge_needs_one_authenticated_path() {
    let mut f = Fixture::new();
    f.touch(1);
    let main = f.repo.commit_signed("Main line", &f.alice.clone());
    f.repo.set_branch(&f.root);
    f.repo.write("contrib.txt", "outside work\n");
    let outside = f.repo.commit("Unsigned outside contribution");
    f.repo.set_branch(&main);
    let merge = f.repo.commit_on(
        "Merge the contribution",
        &[main.clone(), outside.clone()],
        |data, time| Some(f.alice.sign(data, time, HashAlgorithm::SHA512)),
    );
    let report = f.authenticate(&merge);
    assert!(report.is_authenticated(), "{:?}", report.refusal);
    let refused: Vec<String> = report
        .commits
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Refused(_)))
        .map(|c| c.id.to_string())
        .collect();
    assert_eq!(refused, [outside]);

    let unsigned_merge = f.repo.commit_on("Unsigned merge", &[merge, main], |_, _| None);
    assert_eq!(refusal_kind(&f.authenticate(&unsigned_merge)), Some("unsigned"));
}

#[test]
fn the_policy_rotates_through_a_signed_commit() {
    let mut f = Fixture::new();
    let signers: &[&str] = &["sign_commit"];
    // Alice (add_user, retire_user) adds mallory and retires bob.
    f.repo.write(POLICY, &policy(&[(&f.alice, ALL), (&f.mallory, signers)]));
    f.repo
        .commit_signed("Rotate: add mallory, retire bob", &f.alice.clone());
    f.touch(1);
    let by_mallory = f.repo.commit_signed("Mallory signs now", &f.mallory.clone());
    assert!(f.authenticate(&by_mallory).is_authenticated());
    f.touch(2);
    let by_bob = f.repo.commit_signed("Bob was retired", &f.bob.clone());
    assert_eq!(refusal_kind(&f.authenticate(&by_bob)), Some("unknown_signer"));
}

#[test]
fn granting_a_capability_needs_add_user_and_the_capability() {
    let mut f = Fixture::new();
    let admin: &[&str] = &["sign_commit", "add_user"];
    // Bob holds sign_commit only: he may not grant himself add_user.
    f.repo.write(POLICY, &policy(&[(&f.alice, ALL), (&f.bob, admin)]));
    let head = f.repo.commit_signed("Bob promotes himself", &f.bob.clone());
    let report = f.authenticate(&head);
    let Some((_, trust::Refusal::NotAuthorized { signer, capability, .. })) = report.refusal else {
        panic!("{:?}", report.refusal);
    };
    assert_eq!((signer.as_str(), capability.name()), ("bob", "add_user"));
    // Deleting the policy retires everybody: only someone with retire_user (and every right
    // held) may do it.
    let mut f = Fixture::new();
    std::fs::remove_file(f.repo.path().join(POLICY)).unwrap();
    let head = f.repo.commit_signed("Bob deletes the policy", &f.bob.clone());
    assert_eq!(refusal_kind(&f.authenticate(&head)), Some("not_authorized"));
}

#[test]
fn an_initial_policy_judges_the_first_commit() {
    let mut f = Fixture::new();
    f.touch(1);
    let head = f.repo.commit_signed("Second", &f.bob.clone());
    let initial = Policy::parse(&policy(&[(&f.alice, ALL)])).unwrap();
    let report = trust::authenticate(f.repo.git(), &TrustRoot::Policy(initial), Oid::from_str(&head).unwrap()).unwrap();
    assert!(report.is_authenticated(), "{:?}", report.refusal);
    assert_eq!(report.commits.len(), 2);
    let stranger = Policy::parse(&policy(&[(&f.mallory, ALL)])).unwrap();
    let report = trust::authenticate(
        f.repo.git(),
        &TrustRoot::Policy(stranger),
        Oid::from_str(&head).unwrap(),
    )
    .unwrap();
    assert_eq!(refusal_kind(&report), Some("unknown_signer"));
}

#[test]
fn trust_state_refuses_rewrites_and_rollbacks_and_never_retries_a_refused_head() {
    let mut f = Fixture::new();
    let state_dir = tempfile::tempdir().unwrap();
    let path = state_dir.path().join("trust.json");
    let root = TrustRoot::Commit(Oid::from_str(&f.root).unwrap());
    let reference = "refs/heads/main";
    let decide = |f: &Fixture, head: &str| {
        let mut state = TrustState::load(&path).unwrap();
        state
            .decide(f.repo.git(), &root, reference, Oid::from_str(head).unwrap())
            .unwrap()
    };

    f.touch(1);
    let first = f.repo.commit_signed("First", &f.alice.clone());
    assert!(matches!(decide(&f, &first), Decision::Authenticated(_)));
    assert!(matches!(decide(&f, &first), Decision::Unchanged));

    f.touch(2);
    let bad = f.repo.commit("Unsigned");
    let Decision::Refused(report) = decide(&f, &bad) else {
        panic!()
    };
    assert_eq!(report.refusal.unwrap().1.kind(), "unsigned");
    let Decision::AlreadyRefused(refused) = decide(&f, &bad) else {
        panic!("a refused head is not retried")
    };
    assert_eq!(
        (refused.commit.as_str(), refused.kind.as_str()),
        (bad.as_str(), "unsigned")
    );

    // A rollback to an older authenticated commit is refused.
    let Decision::Refused(report) = decide(&f, &f.root) else {
        panic!()
    };
    assert_eq!(report.refusal.unwrap().1.kind(), "rollback");

    // A force-push that drops `first` is refused even though it is well signed.
    f.repo.set_branch(&f.root);
    f.touch(3);
    let rewritten = f.repo.commit_signed("Rewritten history", &f.alice.clone());
    let Decision::Refused(report) = decide(&f, &rewritten) else {
        panic!()
    };
    assert_eq!(report.refusal.unwrap().1.kind(), "history_rewritten");

    // The range starts from the last authenticated commit, which the state remembers.
    f.repo.set_branch(&first);
    f.touch(4);
    let next = f.repo.commit_signed("Next", &f.bob.clone());
    let Decision::Authenticated(report) = decide(&f, &next) else {
        panic!()
    };
    assert_eq!(report.commits.len(), 1);
    assert_eq!(
        TrustState::load(&path).unwrap().anchor(reference).authenticated,
        Some(next)
    );
}

#[test]
fn verify_command_reports_each_commit_and_exits_by_verdict() {
    let mut f = Fixture::new();
    f.touch(1);
    f.repo.commit_signed("Good change", &f.bob.clone());
    let repo = f.repo.path().to_str().unwrap().to_owned();
    let ok = plumb(&["verify", "--repo", &repo, "--trust-root", &f.root]);
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    assert!(
        ok.stdout.contains("ok       Good change  (signed by bob)"),
        "{}",
        ok.stdout
    );
    assert!(ok.stdout.contains("authenticated (1 commit checked)"), "{}", ok.stdout);

    f.touch(2);
    let bad = f.repo.commit_signed("Stranger", &f.mallory.clone());
    let refused = plumb(&["verify", "--repo", &repo, "--trust-root", &f.root, "--output", "json"]);
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    let json: serde_json::Value = serde_json::from_str(&refused.stdout).unwrap();
    assert_eq!(json["authenticated"], false);
    assert_eq!(json["refusal"]["commit"], bad.as_str());
    assert_eq!(json["refusal"]["kind"], "unknown_signer");
    assert_eq!(json["commits"][0]["signer"], "bob");

    let policy_file = f.repo.path().join("initial.toml");
    std::fs::write(&policy_file, policy(&[(&f.alice, ALL)])).unwrap();
    let from_policy = plumb(&[
        "verify",
        "--repo",
        &repo,
        "--policy-file",
        policy_file.to_str().unwrap(),
        "--rev",
        "HEAD~1",
    ]);
    assert_eq!(from_policy.code, 0, "{}{}", from_policy.stdout, from_policy.stderr);

    let missing = plumb(&["verify", "--repo", &repo, "--trust-root", "no-such-rev"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("revision `no-such-rev` does not name a commit"),
        "{}",
        missing.stderr
    );
}

#[test]
fn a_key_listed_under_another_user_does_not_shadow_its_owner() {
    // `ci` may only sign commits; its certificate also carries neal's signing subkey, unbound
    // (anyone may add packets to a certificate). `ci` sorts first, but neal still signs as neal.
    let mut repo = TestRepo::new();
    let neal = TestKey::new("neal");
    let ci = TestKey::new("ci");
    let stolen = neal.cert.keys().subkeys().next().unwrap().key().clone();
    let ci_with_stolen = TestKey {
        name: "ci".to_owned(),
        cert: ci
            .cert
            .clone()
            .insert_packets(vec![Packet::from(stolen.clone())])
            .unwrap()
            .0,
    };
    let signers: &[&str] = &["sign_commit"];
    let text = policy(&[(&ci_with_stolen, signers), (&neal, ALL)]);
    let parsed = Policy::parse(&text).unwrap();
    assert!(
        parsed.users["ci"].certs[0]
            .keys()
            .any(|k| k.key().fingerprint() == stolen.fingerprint()),
        "the policy really lists neal's subkey under ci"
    );
    repo.write(POLICY, &text);
    let root = repo.commit_signed("Policy", &neal);
    repo.write("README.md", "by neal\n");
    let head = repo.commit_signed("Neal signs", &neal);
    let report = trust::authenticate(
        repo.git(),
        &TrustRoot::Commit(Oid::from_str(&root).unwrap()),
        Oid::from_str(&head).unwrap(),
    )
    .unwrap();
    assert!(report.is_authenticated(), "{:?}", report.refusal);
    let Outcome::Authenticated { signer, .. } = &report.commits[0].outcome else {
        panic!()
    };
    assert_eq!(signer, "neal");
}

#[test]
fn a_retired_key_stays_retired() {
    // Dave's key was retired 30 s after the root. He cannot sign with a backdated signature…
    let mut f = Fixture::new();
    f.repo.advance(3600);
    f.touch(1);
    f.repo.commit_signed("Alice, an hour later", &f.alice.clone());
    let dave = f.dave.clone();
    let revoked_at = f.root_time + 30;
    f.touch(2);
    let backdated = f.repo.commit_with("Dave, backdated", |data, _| {
        Some(dave.sign(data, revoked_at - 10, HashAlgorithm::SHA512))
    });
    assert_eq!(refusal_kind(&f.authenticate(&backdated)), Some("backdated_signature"));

    // …nor bring the key back with a fresher self-signature in the commit's own policy.
    let mut f = Fixture::new();
    let refreshed = f.dave.with_user_id("Dave Again <dave@example.com>", f.repo.next_time());
    let signers: &[&str] = &["sign_commit"];
    f.repo.write(
        POLICY,
        &policy(&[(&f.alice, ALL), (&f.bob, signers), (&refreshed, signers)]),
    );
    let head = f.repo.commit_signed("Dave refreshes his key", &refreshed);
    let report = f.authenticate(&head);
    let Some((_, trust::Refusal::Signature(trust::SignatureError::Revoked { hard, .. }))) = report.refusal else {
        panic!("{:?}", report.refusal)
    };
    assert!(!hard);
}

#[test]
fn a_compromised_subkey_voids_signatures_made_before_its_revocation() {
    let mut f = Fixture::new();
    f.touch(1);
    let by_alice = f.repo.commit_signed("Alice signs", &f.alice.clone());
    let compromised = f.alice.subkey_compromised(f.repo.next_time());
    let signers: &[&str] = &["sign_commit"];
    f.repo.write(POLICY, &policy(&[(&compromised, ALL), (&f.bob, signers)]));
    let head = f
        .repo
        .commit_signed("Bob publishes alice's subkey revocation", &f.bob.clone());
    let report = f.authenticate(&head);
    let (culprit, refusal) = report.refusal.unwrap();
    assert_eq!((culprit.to_string(), refusal.kind()), (by_alice, "revoked_key"));
}

#[test]
fn adding_a_certificate_to_a_user_needs_that_users_capabilities() {
    let mut f = Fixture::new();
    let admin: &[&str] = &["sign_commit", "add_user"];
    let bob_admin = policy_entries(&[("alice", ALL, vec![&f.alice]), ("bob", admin, vec![&f.bob])]);
    f.repo.write(POLICY, &bob_admin);
    f.repo.commit_signed("Alice makes bob an admin", &f.alice.clone());
    // Bob may add users, but slipping his own key under alice would give him audit and more.
    let grab = policy_entries(&[("alice", ALL, vec![&f.alice, &f.mallory]), ("bob", admin, vec![&f.bob])]);
    f.repo.write(POLICY, &grab);
    let head = f.repo.commit_signed("Bob adds a key under alice", &f.bob.clone());
    let report = f.authenticate(&head);
    let Some((_, trust::Refusal::NotAuthorized { signer, capability, .. })) = report.refusal else {
        panic!("{:?}", report.refusal)
    };
    assert_eq!(signer, "bob");
    assert_ne!(capability.name(), "add_user");
}

#[test]
fn a_trusted_commit_missing_from_the_remote_means_rewritten_history() {
    let f = Fixture::new();
    let gone = Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap();
    let report = trust::authenticate(f.repo.git(), &TrustRoot::Commit(gone), Oid::from_str(&f.root).unwrap()).unwrap();
    assert_eq!(refusal_kind(&report), Some("history_rewritten"));
}

#[test]
fn a_new_trust_root_starts_over() {
    let mut f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trust.json");
    let reference = "refs/heads/main";
    f.touch(1);
    let first = f.repo.commit_signed("First", &f.alice.clone());
    let old_root = TrustRoot::Commit(Oid::from_str(&f.root).unwrap());
    let mut state = TrustState::load(&path).unwrap();
    let decided = state.decide(f.repo.git(), &old_root, reference, Oid::from_str(&first).unwrap());
    assert!(matches!(decided.unwrap(), Decision::Authenticated(_)));
    // The operator moves the root to `first` itself: the anchor from the old root is dropped,
    // and the same head is simply the new root.
    let new_root = TrustRoot::Commit(Oid::from_str(&first).unwrap());
    let mut state = TrustState::load(&path).unwrap();
    let Decision::Authenticated(report) = state
        .decide(f.repo.git(), &new_root, reference, Oid::from_str(&first).unwrap())
        .unwrap()
    else {
        panic!()
    };
    assert!(report.commits.is_empty());
}

/// The fixture's policy, goodlisting `commits`.
fn goodlisting(f: &Fixture, commits: &[&str]) -> String {
    let signers: &[&str] = &["sign_commit"];
    let listed: Vec<String> = commits.iter().map(|c| format!("\"{c}\"")).collect();
    policy(&[
        (&f.alice, ALL),
        (&f.bob, signers),
        (&f.carol, signers),
        (&f.dave, signers),
        (&f.erin, signers),
    ])
    .replace(
        "commit_goodlist = []",
        &format!("commit_goodlist = [{}]", listed.join(", ")),
    )
}

#[test]
fn a_goodlisted_commit_outlives_its_signers_compromise_when_an_auditor_vouches() {
    // Erin's key is revoked as compromised: everything she signed is void...
    let mut f = Fixture::new();
    f.touch(1);
    let by_erin = f
        .repo
        .commit_signed("Signed before the key was compromised", &f.erin.clone());
    let report = f.authenticate(&by_erin);
    assert_eq!(refusal_kind(&report), Some("revoked_key"));

    // ...until alice, an auditor, goodlists the commit she knows to be good.
    f.repo.write(POLICY, &goodlisting(&f, &[&by_erin]));
    let vouched = f.repo.commit_signed("Goodlist erin's good commit", &f.alice.clone());
    let report = f.authenticate(&vouched);
    assert_eq!(
        report.refusal.as_ref().map(|(_, r)| r.kind()),
        None,
        "{:?}",
        report.refusal
    );
    assert!(
        report
            .commits
            .iter()
            .all(|c| matches!(c.outcome, Outcome::Authenticated { .. }))
    );
}

#[test]
fn a_goodlist_counts_only_from_an_authenticated_policy_and_only_against_compromise() {
    // Bob may sign commits but not audit: his goodlist is refused, and so it forgives nothing.
    let mut f = Fixture::new();
    f.touch(1);
    let by_erin = f
        .repo
        .commit_signed("Signed before the key was compromised", &f.erin.clone());
    f.repo.write(POLICY, &goodlisting(&f, &[&by_erin]));
    let head = f.repo.commit_signed("Bob goodlists erin's commit", &f.bob.clone());
    let report = f.authenticate(&head);
    let (culprit, refusal) = report.refusal.clone().unwrap();
    assert_eq!((culprit.to_string(), refusal.kind()), (by_erin.clone(), "revoked_key"));

    // A goodlist forgives a compromised key, not a stranger's signature.
    let mut f = Fixture::new();
    f.touch(2);
    let by_mallory = f.repo.commit_signed("Signed by a stranger", &f.mallory.clone());
    f.repo.write(POLICY, &goodlisting(&f, &[&by_mallory]));
    let head = f
        .repo
        .commit_signed("Alice goodlists a stranger's commit", &f.alice.clone());
    let report = f.authenticate(&head);
    let (culprit, refusal) = report.refusal.clone().unwrap();
    assert_eq!((culprit.to_string(), refusal.kind()), (by_mallory, "unknown_signer"));

    // Nor a retired key's signature made after its retirement.
    let mut f = Fixture::new();
    f.touch(3);
    f.repo.advance(60);
    let by_dave = f
        .repo
        .commit_signed("Signed after the key was retired", &f.dave.clone());
    f.repo.write(POLICY, &goodlisting(&f, &[&by_dave]));
    let head = f.repo.commit_signed("Alice goodlists it", &f.alice.clone());
    let report = f.authenticate(&head);
    assert_eq!(refusal_kind(&report), Some("revoked_key"));
    let Some((_, trust::Refusal::Signature(trust::SignatureError::Revoked { hard, .. }))) = report.refusal else {
        panic!("{:?}", report.refusal)
    };
    assert!(!hard);
}
