//! `plumb config set` on a clone of the example repository: the environment's overlay changed
//! byte for byte where the value is written, validated, committed signed on a new branch pushed
//! to the clone's remote — the work tree and the checked-out branch untouched.

use std::process::Command;

use serde_json::Value;

use crate::governance::secret_key_file;
use crate::harness::{TestRepo, copy_dir, plumb, project, trusted};
use crate::keys::TestKey;

/// A signed clone of the example repository with a bare `origin` it was pushed to.
struct Clone {
    repo: TestRepo,
    root: String,
    base: String,
    origin: tempfile::TempDir,
    key: tempfile::TempDir,
}

impl Clone {
    fn new(alice: &TestKey) -> Clone {
        let (mut repo, root) = trusted(alice);
        copy_dir(&project().join("example-repo"), repo.path());
        let base = repo.commit_signed("The example", alice);
        let mut config = repo.git().config().unwrap();
        config.set_str("user.name", "alice").unwrap();
        config.set_str("user.email", "alice@example.com").unwrap();
        let origin = tempfile::tempdir().unwrap();
        git(origin.path(), &["init", "--quiet", "--bare"]);
        repo.git().remote("origin", origin.path().to_str().unwrap()).unwrap();
        git(repo.path(), &["push", "--quiet", "origin", "HEAD"]);
        let key = tempfile::tempdir().unwrap();
        secret_key_file(alice, &key.path().join("alice.key"));
        Clone {
            repo,
            root,
            base,
            origin,
            key,
        }
    }

    /// `plumb config set` in the clone for production's twikit-backend, signed with alice's key.
    fn set(&self, more: &[&str]) -> crate::harness::Run {
        let dir = self.repo.path().to_str().unwrap();
        let key = self.key.path().join("alice.key");
        let args = [
            &[
                "config",
                "set",
                "--repo",
                dir,
                "--env",
                "production",
                "--service",
                "twikit-backend",
            ][..],
            more,
            &["--key", key.to_str().unwrap()],
        ]
        .concat();
        plumb(&args)
    }

    /// The file `path` on `branch` of the remote.
    fn pushed(&self, branch: &str, path: &str) -> Option<String> {
        let origin = git2::Repository::open_bare(self.origin.path()).unwrap();
        let commit = origin
            .find_reference(&format!("refs/heads/{branch}"))
            .ok()?
            .peel_to_commit()
            .unwrap();
        assert_eq!(
            commit.parent_id(0).unwrap().to_string(),
            self.base,
            "one commit on the base"
        );
        let blob = commit.tree().unwrap().get_path(std::path::Path::new(path)).unwrap();
        let blob = origin.find_blob(blob.id()).unwrap();
        Some(String::from_utf8(blob.content().to_vec()).unwrap())
    }
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let status = Command::new("git").args(args).current_dir(dir).status().unwrap();
    assert!(status.success(), "git {args:?}");
}

/// The lines of `after` that differ from `before`'s, by number: (number, before, after).
fn changed_lines(before: &str, after: &str) -> Vec<(usize, String, String)> {
    let (old, new): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    let mut found = Vec::new();
    let mut offset = 0;
    for (i, line) in old.iter().enumerate() {
        if new.get(i + offset) != Some(line) {
            // A line added here: skip it.
            if new.get(i + offset + 1) == Some(line) {
                found.push((i + offset + 1, String::new(), new[i + offset].to_owned()));
                offset += 1;
                continue;
            }
            found.push((
                i + 1,
                (*line).to_owned(),
                new.get(i + offset).unwrap_or(&"").to_string(),
            ));
        }
    }
    found
}

#[test]
fn config_set_changes_one_line_on_a_signed_branch_and_nothing_else() {
    let alice = TestKey::new("alice");
    let clone = Clone::new(&alice);
    let overlay = "environments/production.yaml";
    let before = std::fs::read_to_string(clone.repo.path().join(overlay)).unwrap();

    // A value the overlay writes in a flow map: only that line changes.
    let run = clone.set(&["database.pool.max", "80", "--branch", "plumb/pool"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("committed "), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("pushed to origin; open a pull request from plumb/pool"),
        "{}",
        run.stdout
    );
    let after = clone.pushed("plumb/pool", overlay).expect("the branch is pushed");
    assert_eq!(
        changed_lines(&before, &after),
        [(
            54,
            "          pool: {min: 10, max: 50}".to_owned(),
            "          pool: {min: 10, max: 80}".to_owned()
        )]
    );
    assert_eq!(after.len(), before.len(), "byte for byte but the digits");

    // A key the overlay does not write yet: one line added, in its map's indentation.
    let run = clone.set(&["features.newTimeline", "true", "--branch", "plumb/timeline"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let after = clone.pushed("plumb/timeline", overlay).unwrap();
    assert_eq!(
        changed_lines(&before, &after),
        [(61, String::new(), "          newTimeline: true".to_owned())]
    );
    let rendered = plumb(&[
        "config",
        "get",
        "--repo",
        clone.repo.path().to_str().unwrap(),
        "--rev",
        "plumb/timeline",
        "--env",
        "production",
        "--service",
        "twikit-backend",
        "features.newTimeline",
        "--output",
        "json",
    ]);
    let rendered: Value = serde_json::from_str(&rendered.stdout).unwrap();
    assert_eq!(rendered["value"], true);
    assert_eq!(rendered["leaves"][0]["line"], 61);

    // Signed as the policy asks: the branch authenticates from the trust root.
    let dir = clone.repo.path().to_str().unwrap();
    let verified = plumb(&[
        "verify",
        "--repo",
        dir,
        "--trust-root",
        &clone.root,
        "--rev",
        "plumb/pool",
    ]);
    assert_eq!(verified.code, 0, "{}{}", verified.stdout, verified.stderr);
    assert!(verified.stdout.contains("(signed by alice)"), "{}", verified.stdout);

    // The work tree, the checked-out branch and the remote's branch are as they were.
    assert_eq!(
        std::fs::read_to_string(clone.repo.path().join(overlay)).unwrap(),
        before
    );
    assert_eq!(clone.repo.head().as_deref(), Some(clone.base.as_str()));
    let origin = git2::Repository::open_bare(clone.origin.path()).unwrap();
    let main = origin
        .find_reference(&clone.repo.branch())
        .unwrap()
        .peel_to_commit()
        .unwrap();
    assert_eq!(main.id().to_string(), clone.base);

    // A value the schema refuses: said at its line, nothing committed.
    let refused = clone.set(&["database.pool.max", "lots", "--branch", "plumb/lots"]);
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("environments/production.yaml:54"),
        "{}",
        refused.stderr
    );
    assert!(clone.pushed("plumb/lots", overlay).is_none());
    assert!(
        clone
            .repo
            .git()
            .find_branch("plumb/lots", git2::BranchType::Local)
            .is_err()
    );

    // A branch that exists is never written to.
    let again = clone.set(&["database.pool.max", "90", "--branch", "plumb/pool"]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("exists already"), "{}", again.stderr);
}

#[test]
fn config_set_seals_a_secret_for_the_recipients() {
    let alice = TestKey::new("alice");
    let clone = Clone::new(&alice);
    let identity = crate::sealed::Identity::new();
    let run = clone.set(&[
        "database.password",
        "a-new-password",
        "--seal",
        "--recipient",
        &identity.recipient,
        "--branch",
        "plumb/password",
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("a-new-password"), "{}", run.stdout);
    let after = clone.pushed("plumb/password", "environments/production.yaml").unwrap();
    assert!(!after.contains("a-new-password"));
    let line = after.lines().nth(52).unwrap();
    let sealed = line.trim().strip_prefix("password: ").expect("the password's line");
    assert!(sealed.starts_with("ENC[age,"), "{line}");
    assert_eq!(identity.keys().open(sealed).unwrap().expose(), "a-new-password");
}

#[test]
fn config_set_signs_with_gnupg_as_git_does() {
    let alice = TestKey::new("alice");
    let clone = Clone::new(&alice);
    // Alice's key in a GnuPG home of her own, named as git's signing key.
    let gnupg = clone.key.path().join("gnupg");
    std::fs::create_dir(&gnupg).unwrap();
    std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let key = clone.key.path().join("alice.key");
    let imported = Command::new("gpg")
        .args(["--batch", "--quiet", "--import", key.to_str().unwrap()])
        .env("GNUPGHOME", &gnupg)
        .output()
        .unwrap();
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let fingerprint = alice.cert.fingerprint().to_hex();
    let mut config = clone.repo.git().config().unwrap();
    config.set_str("user.signingkey", &fingerprint).unwrap();

    let dir = clone.repo.path().to_str().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_plumb"))
        .args([
            "config",
            "set",
            "--repo",
            dir,
            "--env",
            "production",
            "--service",
            "twikit-backend",
        ])
        .args(["logging.level", "debug", "--branch", "plumb/debug", "--push", "none"])
        .env("GNUPGHOME", &gnupg)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let _ = Command::new("gpgconf")
        .args(["--kill", "gpg-agent"])
        .env("GNUPGHOME", &gnupg)
        .status();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    // Left in the clone (`--push none`), signed by alice's key through GnuPG.
    assert!(clone.pushed("plumb/debug", "environments/production.yaml").is_none());
    let verified = plumb(&[
        "verify",
        "--repo",
        dir,
        "--trust-root",
        &clone.root,
        "--rev",
        "plumb/debug",
    ]);
    assert_eq!(verified.code, 0, "{}{}", verified.stdout, verified.stderr);
    assert!(verified.stdout.contains("(signed by alice)"), "{}", verified.stdout);
}
