//! Hostile input: every file is refused within its limits, with a position, and the rest of
//! the repository is still checked.

use crate::harness::{TestRepo, plumb};

#[test]
fn hostile_files_are_refused_with_positions_and_never_hang() {
    let repo = TestRepo::example();
    let mut bomb =
        String::from("apiVersion: plumb/v1\nkind: Service\nname: bomb\na: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
        .windows(2)
        .map(|w| (w[0], w[1]))
    {
        bomb.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    repo.write("services/bomb.yaml", &bomb);
    let deep: String = (0..200).map(|d| format!("{}k:\n", "  ".repeat(d))).collect();
    repo.write("services/deep.yaml", &deep);
    repo.write("services/huge.yaml", &format!("a: \"{}\"\n", "x".repeat(9 << 20)));
    std::fs::write(repo.path().join("services/binary.yaml"), b"\x7fELF\x02\x01\x01\x00\x00").unwrap();
    std::fs::write(repo.path().join("services/latin1.yaml"), b"name: caf\xe9\n").unwrap();
    repo.write(
        "services/dup.yaml",
        "apiVersion: plumb/v1\nkind: Service\nname: dup\nname: dup\n",
    );

    let run = plumb(&["validate", "--repo", repo.path().to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    for expected in [
        "services/bomb.yaml:",
        "document expands to more than 500000 values",
        "services/deep.yaml:65:",
        "nesting deeper than 64 levels",
        "services/huge.yaml:1:1: file is larger than the limit of 8388608 bytes",
        "services/binary.yaml:1:8: file holds a NUL byte",
        "services/latin1.yaml:1:10: file is not valid UTF-8",
        "services/dup.yaml:4:1: duplicate key `name` (first written at line 3)",
    ] {
        assert!(
            run.stdout.contains(expected),
            "missing {expected:?} in:\n{}",
            &run.stdout[..run.stdout.len().min(4000)]
        );
    }
    for line in run.stdout.lines() {
        assert!(line.chars().count() < 300, "a printed line is cut to a readable length");
    }
}

#[cfg(unix)]
#[test]
fn symbolic_links_are_not_followed() {
    let repo = TestRepo::example();
    std::os::unix::fs::symlink("/etc/passwd", repo.path().join("services/passwd.yaml")).unwrap();
    let run = plumb(&["validate", "--repo", repo.path().to_str().unwrap()]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("`services/passwd.yaml` is a symbolic link"),
        "{}",
        run.stderr
    );
}

/// A file a Compose file names that is not text is refused in words, even an env file that may
/// be absent (`required: false`): read as absent, the service would run without its values.
#[test]
fn a_compose_env_file_that_is_not_text_is_refused() {
    let repo = TestRepo::compose_only(
        "services:\n  web:\n    image: web:1\n    env_file:\n      - {path: extra.env, required: false}\n",
    );
    let path = repo.path().to_str().unwrap();
    let run = plumb(&["validate", "--repo", path]);
    assert_eq!(
        run.code, 0,
        "an optional env file may be absent: {}{}",
        run.stdout, run.stderr
    );
    std::fs::write(repo.path().join("extra.env"), b"GREETING=caf\xe9\n").unwrap();
    let run = plumb(&["validate", "--repo", path]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("`extra.env` is not UTF-8 text: invalid utf-8 sequence"),
        "{}",
        run.stdout
    );
}
