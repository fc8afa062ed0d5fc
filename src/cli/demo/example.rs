//! The example repository the demo deploys: `example-repo` as built into the binary, rewritten
//! for the stage the demo plays on — its environments' targets, what each service runs there,
//! timings shortened for a tour of a few minutes, encrypted values sealed for the demo's agent.

use std::path::Path;

use super::stage::Stage;
use crate::spec::sealed;

/// `example-repo`, built into the binary so the demo runs from anywhere.
const EXAMPLE: [(&str, &str); 8] = [
    ("plumb.yaml", include_str!("../../../example-repo/plumb.yaml")),
    (
        "environments/development.yaml",
        include_str!("../../../example-repo/environments/development.yaml"),
    ),
    (
        "environments/staging.yaml",
        include_str!("../../../example-repo/environments/staging.yaml"),
    ),
    (
        "environments/production.yaml",
        include_str!("../../../example-repo/environments/production.yaml"),
    ),
    (
        "services/twikit-backend.yaml",
        include_str!("../../../example-repo/services/twikit-backend.yaml"),
    ),
    (
        "services/twikit-worker.yaml",
        include_str!("../../../example-repo/services/twikit-worker.yaml"),
    ),
    (
        "schemas/twikit-backend.schema.json",
        include_str!("../../../example-repo/schemas/twikit-backend.schema.json"),
    ),
    (
        "schemas/twikit-worker.schema.json",
        include_str!("../../../example-repo/schemas/twikit-worker.schema.json"),
    ),
];

/// Writes `example-repo` to `to` for `stage`: every service running `plumb example-app`, each
/// encrypted value sealed anew for `recipient`, timings shortened.
pub(super) fn copy(to: &Path, stage: &Stage, recipient: &str) -> anyhow::Result<()> {
    let commands = Commands::of(stage);
    for (relative, text) in EXAMPLE {
        let environment = relative
            .strip_prefix("environments/")
            .and_then(|f| f.strip_suffix(".yaml"))
            .unwrap_or_default();
        let mut out = String::with_capacity(text.len());
        let mut release = None;
        let mut local_indent = None;
        for line in text.lines() {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            if let Some(line) = rewrite(stage, &commands, environment, line, &mut local_indent, &mut release) {
                out.push_str(&line);
                out.push('\n');
            }
            // A container's release is told by a variable: the image stays the demo's.
            if indent.is_empty()
                && trimmed == "env:"
                && let Some(release) = release.take()
            {
                out.push_str(&format!("  - name: EXAMPLE_RELEASE\n    value: {release}\n"));
            }
        }
        let mut text = out;
        let mut from = 0;
        while let Some(found) = text[from..].find("ENC[") {
            let start = from + found;
            let end = text[start..].find(']').map_or(text.len(), |e| start + e + 1);
            let value = sealed::seal(&[recipient.to_owned()], "demo-password-sealed-for-the-tour")?;
            text.replace_range(start..end, &value);
            from = start + value.len();
        }
        // The kubelet probes in whole seconds.
        let interval = if matches!(stage, Stage::Kubernetes { .. }) {
            "interval: 1s"
        } else {
            "interval: 200ms"
        };
        for (long, short) in [
            ("interval: 5s", interval),
            ("progressDeadline: 10m", "progressDeadline: 30s"),
            ("pause: 5m", "pause: 6s"),
            ("warmup: 1m", "warmup: 2s"),
            ("switchover: 30s", "switchover: 1s"),
            ("keepOldVersion: 30m", "keepOldVersion: 5s"),
            ("soak: 2m", "soak: 3s"),
        ] {
            text = text.replace(long, short);
        }
        let path = to.join(relative);
        std::fs::create_dir_all(path.parent().expect("a file has a folder"))?;
        std::fs::write(&path, text)?;
    }
    Ok(())
}

/// `line` of the example as `stage` runs it (`None`: left out). `local_indent` holds the
/// indentation of a `local:` target until its `portOffset` line; `release` takes the tag of a
/// service's image on a container stage.
fn rewrite(
    stage: &Stage,
    commands: &Commands,
    environment: &str,
    line: &str,
    local_indent: &mut Option<String>,
    release: &mut Option<String>,
) -> Option<String> {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    let local = matches!(stage, Stage::Local { .. });
    let kubernetes = matches!(stage, Stage::Kubernetes { .. });
    // What only Kubernetes carries out stays on Kubernetes, but for the resources a small
    // machine's node would not have; the production's sync window is left out (the tour runs on
    // any day).
    if line.ends_with("# not in the demo")
        || line.ends_with("# kubernetes only") && (!kubernetes || trimmed.starts_with("resources:"))
    {
        return None;
    }
    if trimmed == "local:" {
        *local_indent = Some(indent.to_owned());
        return None;
    }
    if let Some(offset) = trimmed.strip_prefix("portOffset: ")
        && let Some(indent) = local_indent.take()
    {
        return Some(format!("{indent}{}", stage.target(environment, offset.parse().ok()?)));
    }
    // The example's production runs on Kubernetes; elsewhere below the ephemeral port range.
    if trimmed.starts_with("kubernetes: {namespace: twikit-production}") {
        return Some(format!("{indent}{}", stage.target(environment, 27000)));
    }
    // The compose target checks containers over the network: the database check connects.
    if matches!(stage, Stage::Compose { .. }) {
        if trimmed == "exec:" {
            return Some(format!("{indent}tcp: {{port: http}}"));
        }
        if trimmed.starts_with("command: [twikit-backend, check") {
            return None;
        }
    }
    let line = if trimmed.starts_with("command: [twikit-backend, migrate") {
        format!("{indent}command: {}", commands.migrate_up)
    } else if trimmed.starts_with("rollbackCommand:") {
        format!("{indent}rollbackCommand: {}", commands.migrate_down)
    } else if trimmed.starts_with("command: [twikit-backend, check") {
        format!("{indent}command: {}", commands.check)
    } else if trimmed.starts_with("command: [twikit-") {
        format!("{indent}command: {}", commands.app)
    } else if let Some(image) = trimmed.strip_prefix("image: registry.example.com/twikit/")
        && !local
    {
        *release = Some(image.to_owned());
        format!("{indent}image: {}", stage.image())
    } else if trimmed == "successThreshold: 95" && kubernetes {
        // No Prometheus runs beside the demo's cluster: its canary moves on health alone.
        format!("{indent}successThreshold: 0")
    } else {
        line.to_owned()
    };
    Some(line)
}

/// What the example's commands become on a stage (flow sequences).
struct Commands {
    migrate_up: String,
    migrate_down: String,
    check: String,
    app: String,
}

impl Commands {
    fn of(stage: &Stage) -> Commands {
        match stage {
            Stage::Local { exe } => Commands {
                migrate_up: "[sh, -c, \"echo migrating up; sleep 1\"]".to_owned(),
                migrate_down: "[sh, -c, \"echo migrating down\"]".to_owned(),
                check: "[\"true\"]".to_owned(),
                app: format!("[{:?}, example-app]", exe.display().to_string()),
            },
            // The image holds plumb alone: its `--version` stands for a command that succeeds.
            _ => Commands {
                migrate_up: "[/plumb, --version]".to_owned(),
                migrate_down: "[/plumb, --version]".to_owned(),
                check: "[/plumb, --version]".to_owned(),
                app: "[/plumb, example-app]".to_owned(),
            },
        }
    }
}
