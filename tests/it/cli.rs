//! The command line on the example repository: exit codes, formats, reading revisions from
//! git's object database.

use serde_json::Value;

use crate::harness::{TestRepo, plumb, project};

fn example() -> String {
    project().join("example-repo").to_string_lossy().into_owned()
}

#[test]
fn the_example_repository_is_valid() {
    let run = plumb(&["validate", "--repo", &example()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("production (2 services, kubernetes)"),
        "{}",
        run.stdout
    );

    let json: Value =
        serde_json::from_str(&plumb(&["validate", "--repo", &example(), "--output", "json"]).stdout).unwrap();
    assert_eq!(json["valid"], true);
    assert_eq!(json["environments"].as_array().unwrap().len(), 3);
}

#[test]
fn render_shows_production_overrides_with_secrets_masked() {
    let run = plumb(&[
        "render",
        "--env",
        "production",
        "--repo",
        &example(),
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let desired: Value = serde_json::from_str(&run.stdout).unwrap();
    let backend = &desired["services"]["twikit-backend"];
    assert_eq!(backend["replicas"], 3);
    assert_eq!(backend["strategy"]["blueGreen"]["keepOldVersion"], "30m");
    assert_eq!(backend["config"]["values"]["env"], "production");
    assert_eq!(backend["config"]["values"]["database"]["pool"]["max"], 50);
    assert_eq!(
        backend["config"]["values"]["database"]["port"], 5432,
        "base values stay"
    );
    assert_eq!(backend["config"]["values"]["database"]["password"], "<encrypted:age>");
    assert_eq!(desired["sync"]["automatic"], false);
    assert!(!run.stdout.contains("ENC["), "no ciphertext in the output");

    let text = plumb(&[
        "render",
        "--env",
        "production",
        "--repo",
        &example(),
        "--service",
        "twikit-worker",
    ]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("replicas: 3\n"), "{}", text.stdout);
}

#[test]
fn an_unknown_environment_is_refused_with_a_suggestion() {
    let run = plumb(&["render", "--env", "prod", "--repo", &example()]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no environment named `prod`"), "{}", run.stderr);
    assert!(run.stderr.contains("did you mean `production`?"), "{}", run.stderr);
}

#[test]
fn revisions_are_read_from_the_object_database_not_the_work_tree() {
    let mut repo = TestRepo::example();
    let good = repo.commit("Good");
    repo.edit("environments/production.yaml", "replicas: 3", "replicas: many");
    let bad = repo.commit("Bad");
    // The work tree is changed again after the commits: only the object database is read.
    std::fs::remove_dir_all(repo.path().join("services")).unwrap();
    let dir = repo.path().to_str().unwrap();

    let run = plumb(&["validate", "--repo", dir, "--rev", &good]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let run = plumb(&["validate", "--repo", dir, "--rev", &bad[..12], "--env", "production"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("environments/production.yaml:"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("$.replicas: expected an integer, found the string \"many\""),
        "{}",
        run.stdout
    );
    let run = plumb(&["validate", "--repo", dir]);
    assert_eq!(run.code, 1, "the work tree has no services now");
}

#[test]
fn a_config_folder_inside_a_larger_repository_is_read_at_a_revision() {
    let mut repo = TestRepo::new();
    let example = crate::harness::project().join("example-repo");
    let config = repo.path().join("deploy/config");
    std::fs::create_dir_all(&config).unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .args(["plumb.yaml", "services", "environments", "schemas"].map(|e| example.join(e)))
        .arg(&config)
        .status()
        .unwrap();
    assert!(copied.success());
    repo.write("src/main.rs", "fn main() {}\n");
    let commit = repo.commit("Application and its deployment config");
    std::fs::remove_dir_all(repo.path().join("deploy/config/services")).unwrap();
    let folder = repo.path().join("deploy/config");
    let folder = folder.to_str().unwrap();
    let run = plumb(&[
        "render",
        "--repo",
        folder,
        "--rev",
        &commit,
        "--env",
        "production",
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["commit"], commit.as_str());
    assert!(json["services"]["twikit-backend"].is_object(), "{}", run.stdout);
}

#[test]
fn errors_that_are_not_findings_exit_2() {
    let run = plumb(&["validate", "--repo", "/nonexistent/plumb-repo"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("/nonexistent/plumb-repo"), "{}", run.stderr);
    let repo = TestRepo::example();
    let run = plumb(&[
        "validate",
        "--repo",
        repo.path().to_str().unwrap(),
        "--rev",
        "no-such-branch",
    ]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("revision `no-such-branch` does not name a commit"),
        "{}",
        run.stderr
    );
}

#[test]
fn schemas_are_written_for_editors() {
    let dir = tempfile::tempdir().unwrap();
    let run = plumb(&["schemas", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(run.code, 0);
    for name in ["repository", "service", "environment"] {
        let text = std::fs::read_to_string(dir.path().join(format!("{name}.schema.json"))).unwrap();
        let schema: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    }
}

#[test]
fn config_get_says_which_file_and_line_wrote_each_value() {
    let run = plumb(&[
        "config",
        "get",
        "--repo",
        &example(),
        "--env",
        "production",
        "--service",
        "twikit-backend",
        "database",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<Vec<&str>> = run.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    // The overlay's values and the base's, each from its own line; the password masked.
    assert!(
        lines.contains(&vec!["database.pool.max", "=", "50", "environments/production.yaml:54"]),
        "{}",
        run.stdout
    );
    assert!(
        lines.contains(&vec!["database.port", "=", "5432", "services/twikit-backend.yaml:40"]),
        "{}",
        run.stdout
    );
    assert!(
        lines.contains(&vec![
            "database.password",
            "=",
            "\"***\"",
            "environments/production.yaml:53"
        ]),
        "{}",
        run.stdout
    );
    for (number, line) in [(54, "pool: {min: 10, max: 50}"), (40, "port: 5432")] {
        let file = if number == 54 {
            "environments/production.yaml"
        } else {
            "services/twikit-backend.yaml"
        };
        let text = std::fs::read_to_string(project().join("example-repo").join(file)).unwrap();
        assert!(text.lines().nth(number - 1).unwrap().contains(line), "{file}:{number}");
    }

    // With the identity that opens them, encrypted values in clear.
    let identity = crate::sealed::Identity::new();
    let repo = TestRepo::example();
    for file in [
        "services/twikit-backend.yaml",
        "environments/production.yaml",
        "environments/staging.yaml",
    ] {
        let path = repo.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut resealed = String::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("ENC[") {
            let end = start + rest[start..].find(']').unwrap() + 1;
            resealed.push_str(&rest[..start]);
            resealed.push_str(&identity.seal(&format!("s3cret of {file}")));
            rest = &rest[end..];
        }
        resealed.push_str(rest);
        std::fs::write(&path, resealed).unwrap();
    }
    let dir = repo.path().to_string_lossy().into_owned();
    let key = identity.file.to_string_lossy().into_owned();
    let args = [
        "config",
        "get",
        "--repo",
        &dir,
        "--env",
        "production",
        "--service",
        "twikit-backend",
    ];
    let opened = plumb(
        &[
            &args[..],
            &["database.password", "--identity", &key, "--output", "json"],
        ]
        .concat(),
    );
    assert_eq!(opened.code, 0, "{}", opened.stderr);
    let body: Value = serde_json::from_str(&opened.stdout).unwrap();
    assert_eq!(body["value"], "s3cret of environments/production.yaml");
    assert_eq!(body["leaves"][0]["file"], "environments/production.yaml");
    assert_eq!(body["leaves"][0]["line"], 53);

    // Nothing there, or no such service: said, exit 2.
    let missing = plumb(&[&args[..], &["database.nope"]].concat());
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("has nothing at `database.nope`"),
        "{}",
        missing.stderr
    );
    let unknown = plumb(&[
        "config",
        "get",
        "--repo",
        &dir,
        "--env",
        "production",
        "--service",
        "nope",
    ]);
    assert!(
        unknown.stderr.contains("no enabled service named `nope`"),
        "{}",
        unknown.stderr
    );
}
