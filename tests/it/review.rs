//! `plumb review`, the pull-request check of a config repository, on a copy of the example
//! repository: a good pull request and a bad one, with the comment the forge step posts and the
//! annotations GitHub and GitLab show on the lines.

use serde_json::Value;

use crate::harness::{copy_dir, plumb, project, trusted};
use crate::keys::TestKey;

#[test]
fn a_pull_request_is_authenticated_validated_and_described_in_one_comment() {
    let alice = TestKey::new("alice");
    let mallory = TestKey::new("mallory");
    let (mut repo, _) = trusted(&alice);
    copy_dir(&project().join("example-repo"), repo.path());
    let base = repo.commit_signed("The example", &alice);
    let dir = repo.path().to_str().unwrap().to_owned();
    let out = tempfile::tempdir().unwrap();
    let (comment, quality) = (out.path().join("comment.md"), out.path().join("quality.json"));
    let review = |head: &str| {
        plumb(&[
            "review",
            "--repo",
            &dir,
            "--base",
            &base,
            "--head",
            head,
            "--comment",
            comment.to_str().unwrap(),
            "--github-annotations",
            "--code-quality",
            quality.to_str().unwrap(),
        ])
    };

    // A good pull request: signed by someone the policy knows, valid; the comment says what
    // changes in production.
    repo.edit(
        "environments/production.yaml",
        "  twikit-worker:\n    replicas: 3",
        "  twikit-worker:\n    replicas: 4",
    );
    let good = repo.commit_signed("More workers in production", &alice);
    let run = review(&good);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, "", "no annotation");
    let text = std::fs::read_to_string(&comment).unwrap();
    assert!(
        text.starts_with("<!-- plumb review -->\n## plumb: ✅ signed and valid\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "- ✅ `{}` More workers in production — signed by alice",
            &good[..12]
        )),
        "{text}"
    );
    assert!(text.contains("**Validation**: every document is valid."), "{text}");
    assert!(text.contains("#### production"), "{text}");
    assert!(
        text.contains(&format!("### plumb: `{}` → `{}`", &base[..12], &good[..12])),
        "{text}"
    );
    assert!(text.contains("**twikit-worker** — scale"), "{text}");
    assert!(text.contains("| `replicas` | `3` | `4` |"), "{text}");
    assert!(text.contains("**development**: no change"), "{text}");
    let issues: Value = serde_json::from_str(&std::fs::read_to_string(&quality).unwrap()).unwrap();
    assert_eq!(issues, serde_json::json!([]));

    // A bad one: signed by a stranger, and a document the schema refuses.
    repo.edit("environments/production.yaml", "    replicas: 4", "    replicas: four");
    let bad = repo.commit_signed("Workers, spelled out", &mallory);
    let run = review(&bad);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let text = std::fs::read_to_string(&comment).unwrap();
    assert!(
        text.starts_with(
            "<!-- plumb review -->\n## plumb: ❌ a commit is not authenticated, and the repository is invalid\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!("- ❌ `{}` Workers, spelled out — unknown_signer", &bad[..12])),
        "{text}"
    );
    assert!(text.contains("- `environments/production.yaml:62:15`"), "{text}");
    // GitHub's workflow commands: one for the refused commit, one on the line.
    let annotations: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(annotations.len(), 2, "{}", run.stdout);
    assert!(
        annotations[0].starts_with(&format!(
            "::error title=plumb verify::commit {bad} is refused: unknown_signer"
        )),
        "{}",
        annotations[0]
    );
    assert!(
        annotations[1].starts_with("::error file=environments/production.yaml,line=62,col=15,title=plumb validate::"),
        "{}",
        annotations[1]
    );
    // GitLab's Code Quality report: the same two, each with a location.
    let issues: Value = serde_json::from_str(&std::fs::read_to_string(&quality).unwrap()).unwrap();
    let located: Vec<(&str, u64)> = issues
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["location"]["path"].as_str().unwrap(),
                i["location"]["lines"]["begin"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        located,
        [("environments/production.yaml", 62), ("openpgp-policy.toml", 1)]
    );
}
