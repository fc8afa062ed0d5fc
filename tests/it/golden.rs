//! Golden tests: the overlay merge rules case by case, the diagnostics of a broken repository,
//! and the pull-request diff of the example repository.

use std::sync::Arc;

use plumb::spec::merge::merge;
use plumb::spec::yaml::{Limits, parse};

use crate::harness::{TestRepo, golden, plumb, project};

#[test]
fn every_merge_rule_matches_its_golden_case() {
    let root = project().join("tests/fixtures/merge");
    let mut cases: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    assert!(cases.len() >= 8, "the merge rules have their cases");
    for case in cases {
        let read = |name: &str| {
            let path = case.join(name);
            parse(
                &Arc::from(path.to_string_lossy().as_ref()),
                &std::fs::read(&path).unwrap(),
                Limits::default(),
            )
            .unwrap()
        };
        let mut errors = Vec::new();
        let merged = merge(&read("base.yaml"), &read("overlay.yaml"), "", &mut errors);
        assert!(errors.is_empty(), "{}: {errors:?}", case.display());
        assert_eq!(merged.to_json(), read("expected.yaml").to_json(), "{}", case.display());
    }
}

#[test]
fn merged_values_keep_the_line_that_wrote_them() {
    let base = parse(&Arc::from("base.yaml"), b"a:\n  b: 1\n  c: 2\n", Limits::default()).unwrap();
    let overlay = parse(&Arc::from("overlay.yaml"), b"a:\n  c: 3\n", Limits::default()).unwrap();
    let merged = merge(&base, &overlay, "", &mut Vec::new());
    let a = merged.get("a").unwrap();
    assert_eq!(
        (&*a.get("b").unwrap().at.file, a.get("b").unwrap().at.line),
        ("base.yaml", 2)
    );
    assert_eq!(
        (&*a.get("c").unwrap().at.file, a.get("c").unwrap().at.line),
        ("overlay.yaml", 2)
    );
}

#[test]
fn a_broken_repository_reports_every_problem_with_its_position() {
    let repo = project().join("tests/fixtures/invalid");
    let run = plumb(&["validate", "--repo", repo.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    golden(&project().join("tests/fixtures/invalid.expected.txt"), &run.stdout);
}

#[test]
fn a_pull_request_diff_calls_out_images_strategies_and_config_keys() {
    let mut repo = TestRepo::example();
    repo.commit("Start from the example");
    repo.edit("services/twikit-backend.yaml", "backend:1.4.2", "backend:1.5.0")
        .edit("environments/staging.yaml", "level: info", "level: debug")
        .edit("environments/staging.yaml", "pause: 5m", "pause: 10m")
        .edit(
            "environments/production.yaml",
            "blueGreen:\n        warmup: 1m\n        switchover: 30s\n        keepOldVersion: 30m",
            "canary:\n        steps: [{weight: 5, pause: 10m}, {weight: 50, pause: 10m}]\n        \
             prometheus: {url: \"http://prometheus:9090\", query: \"plumb:success_rate\"}",
        )
        .edit(
            "environments/production.yaml",
            "kubernetes: {namespace: twikit-production}",
            "kubernetes: {namespace: twikit-production, gateway: {name: public, domain: twikit.example.com}}",
        )
        .edit(
            "environments/production.yaml",
            "pool: {min: 10, max: 50}",
            "pool: {min: 10, max: 80}",
        )
        .edit(
            "environments/production.yaml",
            &sealed_in(&repo, "environments/production.yaml"),
            "ENC[age,cm90YXRlZCBwcm9kdWN0aW9uIHBhc3N3b3Jk]",
        )
        .edit(
            "environments/development.yaml",
            "twikit-worker:\n    strategy:",
            "twikit-worker:\n    replicas: 2\n    strategy:",
        );
    repo.commit("Release 1.5.0");
    let dir = repo.path().to_str().unwrap();
    let run = plumb(&[
        "diff", "--repo", dir, "--from", "HEAD~1", "--to", "HEAD", "--output", "markdown",
    ]);
    assert_eq!(run.code, 1, "a change exits 1: {}", run.stderr);
    assert!(!run.stdout.contains("cm90YXRl"), "ciphertexts are never printed");
    golden(&project().join("tests/fixtures/diff.expected.md"), &run.stdout);

    let same = plumb(&["diff", "--repo", dir, "--from", "HEAD", "--to", "HEAD"]);
    assert_eq!(same.code, 0, "{}", same.stdout);
    assert!(same.stdout.contains("production: no change"));
}

/// The encrypted value (`ENC[…]`) `file` of `repo` holds.
fn sealed_in(repo: &TestRepo, file: &str) -> String {
    let text = std::fs::read_to_string(repo.path().join(file)).unwrap();
    let start = text.find("ENC[").unwrap();
    let end = start + text[start..].find(']').unwrap() + 1;
    text[start..end].to_owned()
}
