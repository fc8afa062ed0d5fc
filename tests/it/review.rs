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

/// `plumb review --post`: the comment goes on the pull request through the forge's API, from the
/// variables its CI sets — posted once, then updated in place on the next push, never repeated —
/// against a recording server answering as GitHub and GitLab do (GitHub's requests checked against
/// its published OpenAPI description).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_comment_is_posted_once_and_then_updated() {
    use std::sync::{Arc, Mutex};

    use crate::receiver::{Receiver, Script};

    let alice = TestKey::new("alice");
    let mallory = TestKey::new("mallory");
    let (mut repo, _) = trusted(&alice);
    copy_dir(&project().join("example-repo"), repo.path());
    let base = repo.commit_signed("The example", &alice);
    repo.edit(
        "environments/production.yaml",
        "  twikit-worker:\n    replicas: 3",
        "  twikit-worker:\n    replicas: 4",
    );
    let good = repo.commit_signed("More workers in production", &alice);
    repo.edit("environments/production.yaml", "    replicas: 4", "    replicas: four");
    let bad = repo.commit_signed("Workers, spelled out", &mallory);
    let dir = repo.path().to_str().unwrap().to_owned();

    // A forge holding one unrelated comment; the one posted is listed from then on.
    let posted: Arc<Mutex<Option<String>>> = Arc::default();
    let forge = |id_field: &'static str| -> Script {
        let posted = posted.clone();
        Arc::new(move |request, _| {
            let mut listed = vec![serde_json::json!({id_field: 1, "body": "Looks good to me"})];
            if let Some(body) = posted.lock().unwrap().clone() {
                listed.push(serde_json::json!({id_field: 42, "body": body}));
            }
            match request.method.as_str() {
                "GET" => (200, Vec::new(), Value::Array(listed).to_string()),
                _ => {
                    *posted.lock().unwrap() = Some(request.json()["body"].as_str().unwrap().to_owned());
                    let status = if request.method == "POST" { 201 } else { 200 };
                    (status, Vec::new(), serde_json::json!({id_field: 42}).to_string())
                }
            }
        })
    };
    let review = |head: &str, env: Vec<(&'static str, String)>| {
        let (dir, base, head) = (dir.clone(), base.clone(), head.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_plumb"));
            // Only the variables given: a CI running this test sets its own.
            for name in [
                "GITHUB_API_URL",
                "GITHUB_REPOSITORY",
                "GITHUB_EVENT_PATH",
                "GITHUB_TOKEN",
                "GH_TOKEN",
                "CI_API_V4_URL",
                "CI_PROJECT_ID",
                "CI_MERGE_REQUEST_IID",
                "PLUMB_GITLAB_TOKEN",
            ] {
                command.env_remove(name);
            }
            let out = command
                .args(["review", "--repo", &dir, "--base", &base, "--head", &head])
                .args(
                    env.iter()
                        .filter(|(k, _)| *k == "--post")
                        .flat_map(|(k, v)| [k.to_string(), v.clone()]),
                )
                .envs(
                    env.iter()
                        .filter(|(k, _)| !k.starts_with("--"))
                        .map(|(k, v)| (k.to_string(), v.clone())),
                )
                .env("NO_COLOR", "1")
                .output()
                .unwrap();
            (
                out.status.code().unwrap(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };

    // GitHub: the pull request's number from the event, the token from GITHUB_TOKEN.
    let github = Receiver::start(forge("id")).await;
    let event = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        event.path(),
        r#"{"action": "synchronize", "pull_request": {"number": 7}}"#,
    )
    .unwrap();
    let env = vec![
        ("--post", "github".to_owned()),
        ("GITHUB_API_URL", github.url("/api/v3")),
        ("GITHUB_REPOSITORY", "acme/config".to_owned()),
        ("GITHUB_EVENT_PATH", event.path().to_str().unwrap().to_owned()),
        ("GITHUB_TOKEN", "ghs_test".to_owned()),
    ];
    let (code, said) = review(&good, env.clone()).await.unwrap();
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("plumb review: posted the comment"), "{said}");
    let (code, said) = review(&bad, env).await.unwrap();
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("plumb review: updated comment 42"), "{said}");
    let requests = github.received();
    let asked: Vec<(&str, &str)> = requests.iter().map(|r| (r.method.as_str(), r.path.as_str())).collect();
    assert_eq!(
        asked,
        [
            ("GET", "/api/v3/repos/acme/config/issues/7/comments?per_page=100&page=1"),
            ("POST", "/api/v3/repos/acme/config/issues/7/comments"),
            ("GET", "/api/v3/repos/acme/config/issues/7/comments?per_page=100&page=1"),
            ("PATCH", "/api/v3/repos/acme/config/issues/comments/42"),
        ]
    );
    let openapi = crate::notify::github_openapi();
    for request in &requests {
        crate::notify::check_against_github(&openapi, "/api/v3", request);
        assert_eq!(request.header("authorization"), "Bearer ghs_test");
    }
    let first = requests[1].json()["body"].as_str().unwrap().to_owned();
    assert!(
        first.starts_with("<!-- plumb review -->\n## plumb: ✅ signed and valid\n"),
        "{first}"
    );
    let updated = requests[3].json()["body"].as_str().unwrap().to_owned();
    assert!(
        updated.starts_with("<!-- plumb review -->\n## plumb: ❌ a commit is not authenticated"),
        "{updated}"
    );

    // GitLab: the merge request's note, with the project's token.
    *posted.lock().unwrap() = None;
    let gitlab = Receiver::start(forge("id")).await;
    let env = vec![
        ("--post", "gitlab".to_owned()),
        ("CI_API_V4_URL", gitlab.url("/api/v4")),
        ("CI_PROJECT_ID", "12".to_owned()),
        ("CI_MERGE_REQUEST_IID", "3".to_owned()),
        ("PLUMB_GITLAB_TOKEN", "glpat-test".to_owned()),
    ];
    assert_eq!(review(&good, env.clone()).await.unwrap().0, 0);
    assert_eq!(review(&bad, env).await.unwrap().0, 1);
    let requests = gitlab.received();
    let asked: Vec<(&str, &str)> = requests.iter().map(|r| (r.method.as_str(), r.path.as_str())).collect();
    assert_eq!(
        asked,
        [
            ("GET", "/api/v4/projects/12/merge_requests/3/notes?per_page=100&page=1"),
            ("POST", "/api/v4/projects/12/merge_requests/3/notes"),
            ("GET", "/api/v4/projects/12/merge_requests/3/notes?per_page=100&page=1"),
            ("PUT", "/api/v4/projects/12/merge_requests/3/notes/42"),
        ]
    );
    assert!(requests.iter().all(|r| r.header("private-token") == "glpat-test"));

    // Without the forge's variables nothing is posted, and the review says why; its verdict
    // stands.
    let (code, said) = review(&good, vec![("--post", "gitlab".to_owned())]).await.unwrap();
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("cannot post the comment: `CI_API_V4_URL` is not set"),
        "{said}"
    );
}
