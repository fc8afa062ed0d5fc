//! The Compose conformance corpus (`tests/fixtures/compose/`), for the tests that hold plumb to
//! Compose and the benchmark that times both: its projects, and a repository made of one.

use std::path::{Path, PathBuf};

/// The corpus's projects, in order.
pub fn projects() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compose");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Copies `from` into `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Writes into `into` a repository with `project` under `app/` and one environment, `dev`, on
/// the compose target (with the settings of the project's `target.yaml`) naming its Compose
/// files (`compose.yaml`, then `compose.override.yaml` when there is one, as Compose reads
/// them); the folder holding them, where Compose runs.
pub fn repository(project: &Path, into: &Path) -> PathBuf {
    copy_dir(project, &into.join("app"));
    let folder = if project.join("compose.yaml").exists() {
        "app"
    } else {
        "app/deploy"
    };
    let mut files = vec![format!("{folder}/compose.yaml")];
    if into.join(folder).join("compose.override.yaml").exists() {
        files.push(format!("{folder}/compose.override.yaml"));
    }
    std::fs::write(
        into.join("plumb.yaml"),
        "apiVersion: plumb/v1\nkind: Repository\nenvironments: [dev]\n",
    )
    .unwrap();
    std::fs::create_dir_all(into.join("environments")).unwrap();
    // Settings of the compose target the project needs (`build: true`), when it says.
    let settings: String = std::fs::read_to_string(project.join("target.yaml"))
        .unwrap_or_default()
        .lines()
        .map(|line| format!("    {line}\n"))
        .collect();
    std::fs::write(
        into.join("environments/dev.yaml"),
        format!(
            "apiVersion: plumb/v1\nkind: Environment\nname: dev\ntarget:\n  compose:\n    project: conformance\n    files: {files:?}\n{settings}"
        ),
    )
    .unwrap();
    into.join(folder)
}
