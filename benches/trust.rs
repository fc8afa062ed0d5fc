//! Authenticating chains of 500, 1,000 and 10,000 signed commits (packed, as fetched): plumb
//! in-process and as a `plumb verify` process, beside `git verify-commit` (GnuPG) on the same
//! commits. Prints commits per second and the ratio of the processes.
//!
//! Run: `cargo bench --bench trust` (`PLUMB_BENCH_SIZES=1000` for one size; the GnuPG peer is
//! skipped when `gpg` is missing or `PLUMB_BENCH_NO_PEER=1`). `git verify-commit` starts git and
//! gpg for every commit, so beyond 1,000 commits it runs on a 1,000-commit sample and its rate is
//! reported per commit. `PLUMB_BENCH_WRITE=DIR` writes a 500-commit chain to DIR, prints its
//! trust root and stops (for profiling one `plumb verify`).

#[path = "../tests/it/keys.rs"]
#[allow(dead_code)]
mod keys;

#[path = "support/timing.rs"]
#[allow(dead_code)]
mod timing;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use git2::{Oid, Repository, Signature, Time};
use keys::{ALL, TestKey, policy};
use plumb::trust::{self, TrustRoot};
use sequoia_openpgp::types::HashAlgorithm;
use timing::ms;

const GNUPG_SAMPLE: usize = 1_000;

fn main() {
    if let Some(dir) = std::env::var_os("PLUMB_BENCH_WRITE") {
        let (root, _) = build_chain(Path::new(&dir), &TestKey::new("alice"), 500);
        println!("{root}");
        return;
    }
    let sizes: Vec<usize> = std::env::var("PLUMB_BENCH_SIZES")
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|_| vec![500, 1_000, 10_000]);
    let gnupg = std::env::var_os("PLUMB_BENCH_NO_PEER").is_none()
        && Command::new("gpg")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    println!("commits | plumb in-process   | plumb verify (process) | git verify-commit (GnuPG) | ratio (process)");
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let key = TestKey::new("alice");
        let (root, commits) = build_chain(dir.path(), &key, n);
        let repo = Repository::open(dir.path()).unwrap();
        let head = *commits.last().unwrap();

        // Sequoia remembers good verifications for the life of a process: only the first run
        // checks the cryptography, so it is the one reported.
        let start = Instant::now();
        let report = trust::authenticate(&repo, &TrustRoot::Commit(root), head).unwrap();
        let in_process = start.elapsed();
        assert!(report.is_authenticated());
        assert_eq!(report.commits.len(), n);

        let runs = if n <= 1_000 { 7 } else { 3 };
        let mut times: Vec<Duration> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                let status = Command::new(env!("CARGO_BIN_EXE_plumb"))
                    .args(["verify", "--repo"])
                    .arg(dir.path())
                    .args(["--trust-root", &root.to_string()])
                    .stdout(std::process::Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success());
                start.elapsed()
            })
            .collect();
        times.sort();
        let process = times[times.len() / 2];

        let peer = gnupg.then(|| gnupg_rate(dir.path(), &key, &commits));
        let rate = |d: Duration, count: usize| count as f64 / d.as_secs_f64();
        let ours = rate(in_process, n);
        match peer {
            Some(per_commit) => println!(
                "{n:>7} | {:>8.1} ms {:>7.0}/s | {:>10.1} ms {:>7.0}/s | {:>8.2} ms/commit {:>6.0}/s | {:.0}× faster",
                ms(in_process),
                ours,
                ms(process),
                rate(process, n),
                ms(per_commit),
                1.0 / per_commit.as_secs_f64(),
                rate(process, n) * per_commit.as_secs_f64()
            ),
            None => println!(
                "{n:>7} | {:>8.1} ms {:>7.0}/s | {:>10.1} ms {:>7.0}/s | (skipped)",
                ms(in_process),
                ours,
                ms(process),
                rate(process, n)
            ),
        }
    }
}

/// A repository whose first commit holds a policy trusting `key`, followed by `n` commits each
/// changing one file and signed by `key`. Returns the root and the signed commits.
fn build_chain(dir: &Path, key: &TestKey, n: usize) -> (Oid, Vec<Oid>) {
    let repo = Repository::init(dir).unwrap();
    let policy_blob = repo.blob(policy(&[(key, ALL)]).as_bytes()).unwrap();
    let mut parent: Option<Oid> = None;
    let mut commits = Vec::with_capacity(n + 1);
    for i in 0..=n {
        let file = repo.blob(format!("change {i}\n").as_bytes()).unwrap();
        let mut builder = repo.treebuilder(None).unwrap();
        builder.insert("openpgp-policy.toml", policy_blob, 0o100644).unwrap();
        builder.insert("README.md", file, 0o100644).unwrap();
        let tree = repo.find_tree(builder.write().unwrap()).unwrap();
        let time = 1_700_000_000 + i as i64 * 60;
        let who = Signature::new("Bench", "bench@example.com", &Time::new(time, 0)).unwrap();
        let parents: Vec<git2::Commit> = parent.iter().map(|p| repo.find_commit(*p).unwrap()).collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        let buffer = repo
            .commit_create_buffer(&who, &who, &format!("Change {i}"), &tree, &parents)
            .unwrap();
        let payload = buffer.as_str().unwrap();
        let signature = key.sign(payload.as_bytes(), time, HashAlgorithm::SHA512);
        let id = repo.commit_signed(payload, &signature, None).unwrap();
        parent = Some(id);
        commits.push(id);
    }
    repo.reference("refs/heads/main", parent.unwrap(), true, "bench")
        .unwrap();
    repo.set_head("refs/heads/main").unwrap();
    // Packed, as a fetched repository is.
    let packed = Command::new("git").args(["repack", "-adq"]).current_dir(dir).status();
    assert!(packed.is_ok_and(|s| s.success()), "git repack");
    let root = commits.remove(0);
    (root, commits)
}

/// The time `git verify-commit` takes per commit, over (a sample of) `commits`, with the key
/// imported into a throwaway GnuPG home.
fn gnupg_rate(repo: &Path, key: &TestKey, commits: &[Oid]) -> Duration {
    let home = tempfile::tempdir().unwrap();
    let import = home.path().join("key.asc");
    std::fs::write(&import, key.public()).unwrap();
    let gpg = |args: &[&str]| {
        Command::new("gpg")
            .env("GNUPGHOME", home.path())
            .args(["--batch", "--quiet"])
            .args(args)
            .output()
            .unwrap()
    };
    assert!(gpg(&["--import", import.to_str().unwrap()]).status.success());
    let sample: Vec<&Oid> = commits.iter().take(GNUPG_SAMPLE).collect();
    let start = Instant::now();
    for commit in &sample {
        let status = Command::new("git")
            .env("GNUPGHOME", home.path())
            .arg("-C")
            .arg(repo)
            .args(["verify-commit", &commit.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "git verify-commit {commit}");
    }
    let per_commit = start.elapsed() / sample.len() as u32;
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", home.path())
        .args(["--kill", "all"])
        .status();
    per_commit
}
