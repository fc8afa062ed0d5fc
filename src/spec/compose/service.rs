//! One Compose service as a plumb service document: each key carried over to the field that
//! does the same, or refused at its line, saying why. Nothing is dropped.

use indexmap::IndexMap;

use super::{FolderEntry, Found, Project, Settings, map, pairs, scalar, seq, strings, text, units, words};
use crate::spec::diagnostic::Diagnostic;
use crate::spec::merge::merge_into;
use crate::spec::node::{Kind, Member, Members, Node, Origin};

/// Keys plumb refuses, and why. A key in neither this table nor the translation is refused as
/// not carried out by plumb.
const REFUSED: &[(&str, &str)] = &[
    (
        "volumes_from",
        "it mounts another container's volumes, and plumb's slots are separate containers: name the volume instead",
    ),
    (
        "links",
        "services reach each other by name on the project's networks; `links` would add per-container aliases plumb does not make",
    ),
    (
        "external_links",
        "services reach containers outside the project through an external network it joins",
    ),
];

/// One Compose service as a plumb service document; `None` when its profiles are off.
pub(super) fn translate(
    name: &str,
    service: &Node,
    key_at: &Origin,
    settings: &Settings<'_>,
    project: &Project<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<Node> {
    let Some(members) = service.as_map() else {
        out.push(Diagnostic::new(
            &service.at,
            format!("Compose service `{name}` is not a map"),
        ));
        return None;
    };
    if let Some(wanted) = service.get("profiles") {
        let wanted = strings(wanted, out);
        if !wanted.is_empty() && !wanted.iter().any(|(p, _)| settings.profiles.contains(p)) {
            return None;
        }
    }
    let at = &service.at;
    let mut doc = vec![
        ("apiVersion", text("plumb/v1", key_at)),
        ("kind", text("Service", key_at)),
        ("name", text(name, key_at)),
    ];
    if project.tasks.contains(name) {
        doc.push(("task", Node::new(Kind::Bool(true), key_at.clone())));
    }
    let mut container: Vec<(&str, Node)> = Vec::new();
    let mut mounts = Mounts::default();
    let mut network_definitions = Vec::new();
    let mut resources = Resources::default();
    for (key, member) in members {
        let value = &member.value;
        let refuse = |out: &mut Vec<Diagnostic>, why: &str| {
            out.push(Diagnostic::new(
                &member.key_at,
                format!("`{key}` of Compose service `{name}` is refused: {why}"),
            ));
        };
        match key.as_str() {
            "image" if service.get("build").is_none() => doc.push(("image", value.clone())),
            // The image built is tagged by its content (`build`).
            "image" | "build" => {}
            "command" => doc.push(("command", command(value, out))),
            "entrypoint" => container.push(("entrypoint", command(value, out))),
            "environment" | "env_file" | "profiles" | "x-plumb" => {}
            "ports" if service.get("network_mode").is_some() => refuse(
                out,
                "with `network_mode` the program's ports are not published through plumb: with `host` it listens on the host's own ports, with `none` on none",
            ),
            "ports" => {
                let items = match &value.kind {
                    Kind::Seq(items) => items.iter().filter_map(|p| port(p, project, out)).collect(),
                    _ => {
                        out.push(Diagnostic::new(&value.at, "`ports` is a list".to_owned()));
                        Vec::new()
                    }
                };
                doc.push(("ports", seq(items, &value.at)));
            }
            "expose" => container.push((
                "expose",
                seq(
                    strings(value, out).into_iter().map(|(e, at)| text(e, &at)).collect(),
                    &value.at,
                ),
            )),
            "volumes" => match &value.kind {
                Kind::Seq(items) => {
                    for item in items {
                        volume(item, &mut mounts, project, out);
                    }
                }
                _ => out.push(Diagnostic::new(&value.at, "`volumes` is a list".to_owned())),
            },
            "tmpfs" => mounts
                .tmpfs
                .extend(strings(value, out).into_iter().map(|(t, at)| text(t, &at))),
            "networks" if service.get("network_mode").is_some() => refuse(
                out,
                "a service with `network_mode` joins no networks; Compose refuses both together",
            ),
            "networks" => container.push(("networks", networks(value, project, &mut network_definitions, out))),
            "network_mode" => match scalar(value).as_deref() {
                Some(mode @ ("none" | "host")) => container.push(("networkMode", text(mode, &value.at))),
                Some(_) => refuse(
                    out,
                    "sharing another container's network (`service:`, `container:`) would tie each slot to one container; plumb runs `none`, `host` and the project's networks",
                ),
                None => out.push(Diagnostic::new(&value.at, "`network_mode` is a text".to_owned())),
            },
            "healthcheck" => {
                if let Some(check) = healthcheck(value, out) {
                    container.push(("healthcheck", check));
                }
            }
            "depends_on" => doc.push(("dependsOn", depends_on(value, out))),
            "labels" => doc.push(("labels", labels(value, out))),
            "deploy" => {
                // `deploy.restart_policy`, when written, is what Compose runs, over `restart`.
                let mut policy = Vec::new();
                deploy(value, &mut doc, &mut policy, &mut resources, out);
                container.extend(policy);
            }
            "restart" => {
                let overridden = service
                    .get("deploy")
                    .and_then(|d| d.get("restart_policy"))
                    .and_then(|r| r.get("condition"))
                    .is_some();
                if let Some(restart) = restart(value, out)
                    && !overridden
                {
                    container.extend(restart);
                }
            }
            "mem_limit" => resources.limit("memory", memory(value, out)),
            "mem_reservation" => resources.request("memory", memory(value, out)),
            "cpus" => resources.limit("cpu", cpus(value, out)),
            "user" | "hostname" | "working_dir" | "stop_signal" => {
                let field = match key.as_str() {
                    "working_dir" => "workingDir",
                    "stop_signal" => "stopSignal",
                    other => other,
                };
                container.push((field, value.clone()));
            }
            "init" | "read_only" | "tty" | "stdin_open" => {
                let field = match key.as_str() {
                    "read_only" => "readOnly",
                    "stdin_open" => "stdinOpen",
                    other => other,
                };
                container.push((field, value.clone()));
            }
            "stop_grace_period" => {
                if let Some(duration) = duration(value, out) {
                    container.push(("stopGracePeriod", duration));
                }
            }
            "ulimits" => container.push(("ulimits", ulimits(value, out))),
            "sysctls" => container.push(("sysctls", string_map(value, "sysctl", out))),
            "extra_hosts" => container.push(("extraHosts", extra_hosts(value, out))),
            "dns" => container.push((
                "dns",
                seq(
                    strings(value, out).into_iter().map(|(d, at)| text(d, &at)).collect(),
                    &value.at,
                ),
            )),
            "logging" => container.push(("logging", logging(value, out))),
            "container_name" => container.push(("containerName", value.clone())),
            // Checked against what the agent allows the repository (`spec::rights`).
            "cap_add" | "cap_drop" | "devices" | "security_opt" => {
                let field = match key.as_str() {
                    "cap_add" => "capAdd",
                    "cap_drop" => "capDrop",
                    "devices" => "devices",
                    _ => "securityOpt",
                };
                let items = match &value.kind {
                    Kind::Seq(items) => items.iter().filter_map(|item| device_or_text(item, out)).collect(),
                    _ => {
                        out.push(Diagnostic::new(&value.at, format!("`{key}` is a list")));
                        Vec::new()
                    }
                };
                container.push((field, seq(items, &value.at)));
            }
            "privileged" | "pid" | "ipc" => container.push((key.as_str(), value.clone())),
            "secrets" | "configs" => match &value.kind {
                Kind::Seq(items) => {
                    for item in items {
                        if let Some(file) = granted(key == "secrets", item, project, out) {
                            mounts.files.push(file);
                        }
                    }
                }
                _ => out.push(Diagnostic::new(&value.at, format!("`{key}` is a list"))),
            },
            "platform" => container.push(("platform", value.clone())),
            "userns_mode" => match scalar(value).as_deref() {
                Some("host") => container.push(("usernsMode", text("host", &value.at))),
                _ => refuse(
                    out,
                    "the engine takes `host` alone (leaving its user namespace remapping)",
                ),
            },
            // The legacy form of `deploy.replicas`, which Compose refuses to differ from it.
            "scale" => {
                let replicas = service.get("deploy").and_then(|d| d.get("replicas")).and_then(scalar);
                match replicas {
                    Some(replicas) if Some(replicas.clone()) != scalar(value) => refuse(
                        out,
                        &format!("it differs from `deploy.replicas` ({replicas}); Compose refuses distinct values"),
                    ),
                    Some(_) => {}
                    None => doc.push(("replicas", integer(value))),
                }
            }
            "pull_policy" => match scalar(value).as_deref() {
                Some(policy @ ("always" | "missing" | "never")) => {
                    container.push(("pullPolicy", text(policy, &value.at)))
                }
                Some("if_not_present") => container.push(("pullPolicy", text("missing", &value.at))),
                // Built images are built when their content changes, and only then.
                Some("build") if service.get("build").is_some() => {}
                Some(other) => refuse(
                    out,
                    &format!(
                        "`{other}` is not carried out: plumb pulls always, when missing, or never (`build` with `build`)"
                    ),
                ),
                None => out.push(Diagnostic::new(&value.at, "`pull_policy` is a text".to_owned())),
            },
            "shm_size" => {
                if let Some(bytes) = memory(value, out) {
                    container.push(("shmSize", bytes));
                }
            }
            key if key.starts_with("x-") => {}
            key => match REFUSED.iter().find(|(k, _)| *k == key) {
                Some((_, why)) => refuse(out, why),
                None => out.push(
                    Diagnostic::new(
                        &member.key_at,
                        format!("`{key}` of Compose service `{name}` is not carried out by plumb's compose target"),
                    )
                    .hint("plumb refuses what it would otherwise drop; `x-plumb` holds plumb's own settings"),
                ),
            },
        }
    }
    if let Some(env) = environment(service, project, out) {
        doc.push(("env", seq(env, at)));
    }
    for (field, items) in [
        ("volumes", mounts.volumes),
        ("tmpfs", mounts.tmpfs),
        ("files", mounts.files),
        ("folders", mounts.folders),
        ("hostMounts", mounts.host),
        ("externalVolumes", mounts.external),
    ] {
        if !items.is_empty() {
            container.push((field, seq(items, at)));
        }
    }
    for (field, definitions) in [
        ("networkDefinitions", network_definitions),
        ("volumeDefinitions", mounts.definitions),
    ] {
        if !definitions.is_empty() {
            let members = definitions
                .into_iter()
                .map(|(name, value)| {
                    let key_at = value.at.clone();
                    (name.into(), Member { key_at, value })
                })
                .collect();
            container.push((field, Node::new(Kind::Map(members), at.clone())));
        }
    }
    if let Some(build) = service.get("build") {
        let image = service.get("image");
        if let Some((build, image)) = super::build::translate(name, build, image, settings, project, out) {
            doc.push(("image", image));
            container.push(("build", build));
        }
    }
    if let Some(resources) = resources.node(at) {
        doc.push(("resources", resources));
    }
    if !container.is_empty() {
        doc.push(("container", map(container, at)));
    }
    let mut translated = map(doc, at);
    if let Some(extra) = service.get("x-plumb") {
        merge_into(&mut translated, extra, "", out);
    }
    Some(translated)
}

/// A secret or config a service is granted (`name`, or `{source, target}`), as a file mounted
/// read-only: a secret at `/run/secrets/<name>`, a config at `/<name>` unless a target is
/// given. Its content comes from the top-level definition: a `file` of the repository (a
/// secret's may be an encrypted value, `ENC[…]`, which the agent opens), a config's inline
/// `content`, or a project variable (`environment`).
fn granted(secret: bool, item: &Node, project: &Project<'_>, out: &mut Vec<Diagnostic>) -> Option<Node> {
    let what = if secret { "secret" } else { "config" };
    // The owner and mode of the file the agent writes.
    let mut owner = Vec::new();
    let (source, target) = match &item.kind {
        Kind::Map(members) => {
            for (key, member) in members {
                match key.as_str() {
                    "source" | "target" => {}
                    "uid" | "gid" => match scalar(&member.value).and_then(|id| id.parse::<u32>().ok()) {
                        Some(id) => {
                            owner.push((key.as_str(), Node::new(Kind::Int(id.into()), member.value.at.clone())))
                        }
                        None => out.push(Diagnostic::new(
                            &member.value.at,
                            format!("`{key}` of a {what} is a number (a user or group id)"),
                        )),
                    },
                    "mode" => match file_mode(&member.value) {
                        Some(mode) => owner.push(("mode", Node::new(Kind::Int(mode.into()), member.value.at.clone()))),
                        None => out.push(Diagnostic::new(
                            &member.value.at,
                            format!("`mode` of a {what} is a file mode in octal, at most 0777"),
                        )),
                    },
                    _ => out.push(Diagnostic::new(
                        &member.key_at,
                        format!("`{key}` of a {what} is not carried out by plumb's compose target"),
                    )),
                }
            }
            let Some(source) = item.get("source").and_then(scalar) else {
                out.push(Diagnostic::new(&item.at, format!("a {what} needs its `source`")));
                return None;
            };
            (source, item.get("target").and_then(scalar))
        }
        _ => match scalar(item) {
            Some(source) => (source, None),
            None => {
                out.push(Diagnostic::new(&item.at, format!("a {what} is a name or a map")));
                return None;
            }
        },
    };
    let target = match target {
        Some(target) if target.starts_with('/') => target,
        Some(target) if secret => format!("/run/secrets/{target}"),
        Some(target) => format!("/{target}"),
        None if secret => format!("/run/secrets/{source}"),
        None => format!("/{source}"),
    };
    let known = if secret { &project.secrets } else { &project.configs };
    let Some(definition) = known.get(&source) else {
        out.push(Diagnostic::new(
            &item.at,
            format!("{what} `{source}` is not defined at the top level"),
        ));
        return None;
    };
    let mut content = None;
    let mut origin = format!("{what} {source}");
    let reported = out.len();
    for (key, member) in definition.as_map().into_iter().flatten() {
        let value = &member.value;
        match key.as_str() {
            "file" => {
                let file = scalar(value).unwrap_or_default();
                match project
                    .path_in(&value.at.file, &file)
                    .and_then(|path| Some((project.read)(&path)?.1).map(|text| (path, text)))
                {
                    Some((path, text)) => {
                        origin = path;
                        content = Some(text);
                    }
                    None => out.push(Diagnostic::new(
                        &value.at,
                        format!("the {what}'s file `{file}` is not a text file of the repository"),
                    )),
                }
            }
            "content" if !secret => content = scalar(value),
            "environment" => {
                let name = scalar(value).unwrap_or_default();
                match project.lookup(&name) {
                    Some(text) => content = Some(text),
                    None => out.push(Diagnostic::new(
                        &value.at,
                        format!("the {what} takes variable `{name}`, which is not set"),
                    )),
                }
            }
            "name" => {}
            other => out.push(Diagnostic::new(
                &member.key_at,
                format!("`{other}` of {what} `{source}` is not carried out by plumb's compose target"),
            )),
        }
    }
    let Some(mut content) = content else {
        if out.len() == reported {
            out.push(Diagnostic::new(
                &definition.at,
                format!(
                    "{what} `{source}` says where its content comes from: `file`, `environment` or (a config) `content`"
                ),
            ));
        }
        return None;
    };
    // An encrypted secret is one value, whatever line ending its file has.
    if crate::spec::model::scalar::is_encrypted(content.trim()) {
        content = content.trim().to_owned();
    }
    let mut fields = vec![
        ("source", text(origin, &item.at)),
        ("target", text(target, &item.at)),
        ("content", text(content, &item.at)),
        ("readOnly", Node::new(Kind::Bool(true), item.at.clone())),
    ];
    fields.extend(owner);
    Some(map(fields, &item.at))
}

/// A file mode as Compose reads it: an integer (`0400`, read as octal by Compose's YAML) or
/// octal digits in a text (`"0440"`, `"0o440"`).
fn file_mode(node: &Node) -> Option<u32> {
    let mode = match &node.kind {
        Kind::Int(mode) => u32::try_from(*mode).ok()?,
        Kind::Str(text) => u32::from_str_radix(text.trim_start_matches("0o"), 8).ok()?,
        _ => return None,
    };
    (mode <= 0o777).then_some(mode)
}

/// An item of `cap_add`, `security_opt`… as text; a device in the long form
/// (`{source, target, permissions}`) as `source:target:permissions`.
fn device_or_text(item: &Node, out: &mut Vec<Diagnostic>) -> Option<Node> {
    if item.as_map().is_some() {
        let source = item.get("source").and_then(scalar);
        let target = item.get("target").and_then(scalar).or_else(|| source.clone());
        let permissions = item
            .get("permissions")
            .and_then(scalar)
            .unwrap_or_else(|| "rwm".to_owned());
        let Some(source) = source else {
            out.push(Diagnostic::new(&item.at, "a device needs its `source`".to_owned()));
            return None;
        };
        return Some(text(
            format!("{source}:{}:{permissions}", target.unwrap_or_default()),
            &item.at,
        ));
    }
    scalar(item).map(|s| text(s, &item.at))
}

/// A command or entrypoint: a string split into words as Compose does (no shell), or a list.
fn command(node: &Node, out: &mut Vec<Diagnostic>) -> Node {
    let items = match &node.kind {
        Kind::Str(line) => match words(line) {
            Some(words) => words.into_iter().map(|w| text(w, &node.at)).collect(),
            None => {
                out.push(Diagnostic::new(&node.at, format!("a quote is not closed in `{line}`")));
                Vec::new()
            }
        },
        _ => strings(node, out).into_iter().map(|(w, at)| text(w, &at)).collect(),
    };
    seq(items, &node.at)
}

/// The variables of `env_file` then `environment`, as plumb's `env` list; `None` when none.
fn environment(service: &Node, project: &Project<'_>, out: &mut Vec<Diagnostic>) -> Option<Vec<Node>> {
    let mut env: IndexMap<String, Node> = IndexMap::new();
    if let Some(files) = service.get("env_file") {
        for (file, file_at, required) in env_files(files, out) {
            let Some((origin, content)) = project
                .path_in(&file_at.file, &file)
                .and_then(|path| (project.read)(&path))
            else {
                if required {
                    out.push(Diagnostic::new(
                        &file_at,
                        format!(
                            "env_file `{file}` is not in the repository (paths start from the Compose file's folder)"
                        ),
                    ));
                }
                continue;
            };
            match super::dotenv::parse(&content, &|name| project.lookup(name)) {
                Ok(entries) => {
                    for entry in entries {
                        let at = Origin {
                            file: origin.clone(),
                            line: entry.line,
                            column: 1,
                        };
                        env.insert(entry.name, text(entry.value, &at));
                    }
                }
                Err(problem) => out.push(Diagnostic::new(
                    &Origin {
                        file: origin.clone(),
                        line: problem.line,
                        column: 1,
                    },
                    problem.message,
                )),
            }
        }
    }
    if let Some(environment) = service.get("environment") {
        for (key, value, at) in pairs(environment, "variable", out) {
            // A name alone takes the variable's value from the project's variables, as Compose
            // takes it from its shell.
            match value.or_else(|| project.lookup(&key).map(|v| text(v, &at))) {
                Some(value) => {
                    env.insert(key.to_string(), value);
                }
                None => out.push(
                    Diagnostic::new(
                        &at,
                        format!("variable `{key}` has no value here and none is given to the project"),
                    )
                    .hint("write `NAME=value`, or give it in `target.compose.variables` or the `.env` file"),
                ),
            }
        }
    }
    if env.is_empty() {
        return None;
    }
    Some(
        env.into_iter()
            .map(|(key, value)| {
                let at = value.at.clone();
                map(vec![("name", text(key, &at)), ("value", value)], &at)
            })
            .collect(),
    )
}

/// The files of `env_file`: a path, a list of paths, or of `{path, required}`.
fn env_files(node: &Node, out: &mut Vec<Diagnostic>) -> Vec<(String, Origin, bool)> {
    let items: Vec<&Node> = match &node.kind {
        Kind::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    let mut files = Vec::new();
    for item in items {
        for (key, member) in item.as_map().into_iter().flatten() {
            if !["path", "required"].contains(&key.as_str()) {
                out.push(Diagnostic::new(
                    &member.key_at,
                    format!("`{key}` of an env_file is not carried out: plumb reads it as a `.env` file"),
                ));
            }
        }
        let path = match &item.kind {
            Kind::Map(_) => item.get("path").and_then(scalar),
            _ => scalar(item),
        };
        let Some(path) = path else {
            out.push(Diagnostic::new(
                &item.at,
                "an env_file is a path, or a map with `path`".to_owned(),
            ));
            continue;
        };
        let required = !matches!(item.get("required").map(|n| &n.kind), Some(Kind::Bool(false)));
        files.push((path, item.at.clone(), required));
    }
    files
}

/// A port as `[ip:]published:target[/protocol]`, or the long form, named `p<published>`
/// (`p<published>-udp` for UDP, so a TCP and a UDP port may share a number).
fn port(node: &Node, project: &Project<'_>, out: &mut Vec<Diagnostic>) -> Option<Node> {
    let (host_ip, published, target, protocol) = match &node.kind {
        Kind::Map(members) => {
            for key in members.keys() {
                if ![
                    "target",
                    "published",
                    "host_ip",
                    "protocol",
                    "mode",
                    "name",
                    "app_protocol",
                ]
                .contains(&key.as_str())
                {
                    out.push(Diagnostic::new(
                        &members[key].key_at,
                        format!("`{key}` of a port is not carried out by plumb's compose target"),
                    ));
                }
            }
            if let Some(mode) = node.get("mode").and_then(scalar)
                && mode != "ingress"
                && mode != "host"
            {
                out.push(Diagnostic::new(
                    &node.at,
                    format!("port mode `{mode}` is neither `ingress` nor `host`"),
                ));
            }
            (
                node.get("host_ip").and_then(scalar),
                node.get("published").and_then(scalar),
                node.get("target").and_then(scalar),
                node.get("protocol")
                    .and_then(scalar)
                    .unwrap_or_else(|| "tcp".to_owned()),
            )
        }
        _ => {
            let spec = scalar(node)?;
            let (spec, protocol) = match spec.split_once('/') {
                Some((spec, protocol)) => (spec.to_owned(), protocol.to_owned()),
                None => (spec, "tcp".to_owned()),
            };
            // An IPv6 host address is written in brackets: `[::1]:80:80`.
            let (host_ip, rest) = match spec.strip_prefix('[').and_then(|s| s.split_once("]:")) {
                Some((ip, rest)) => (Some(ip.to_owned()), rest.to_owned()),
                None => (None, spec.clone()),
            };
            let parts: Vec<&str> = rest.split(':').collect();
            match (host_ip, parts.as_slice()) {
                (host_ip, [published, target]) => (
                    host_ip,
                    Some((*published).to_owned()),
                    Some((*target).to_owned()),
                    protocol,
                ),
                (None, [ip, published, target]) => (
                    Some((*ip).to_owned()),
                    (!published.is_empty()).then(|| (*published).to_owned()),
                    Some((*target).to_owned()),
                    protocol,
                ),
                (host_ip, [target]) => (host_ip, None, Some((*target).to_owned()), protocol),
                _ => {
                    out.push(Diagnostic::new(&node.at, format!("`{spec}` is not a port")));
                    return None;
                }
            }
        }
    };
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "tcp" => "TCP",
        "udp" => "UDP",
        other => {
            out.push(Diagnostic::new(
                &node.at,
                format!("port protocol `{other}` is neither tcp nor udp"),
            ));
            return None;
        }
    };
    if let Some(ip) = &host_ip
        && ip != project.address
    {
        out.push(
            Diagnostic::new(
                &node.at,
                format!(
                    "the port is published on host address {ip}, but this environment serves its ports on {}",
                    project.address
                ),
            )
            .hint("set `target.compose.address` to the address the ports are served on"),
        );
        return None;
    }
    let (Some(published), Some(target)) = (published, target) else {
        out.push(
            Diagnostic::new(
                &node.at,
                "a port needs a published port: plumb serves it there".to_owned(),
            )
            .hint("write `published:target`, as `8080:80`; a port only other services reach belongs in `expose`"),
        );
        return None;
    };
    let (Ok(published), Ok(target)) = (published.parse::<u16>(), target.parse::<u16>()) else {
        out.push(Diagnostic::new(
            &node.at,
            format!("ports are numbers: `{published}:{target}` (ranges are not supported)"),
        ));
        return None;
    };
    let at = &node.at;
    let suffix = if protocol == "UDP" { "-udp" } else { "" };
    Some(map(
        vec![
            ("name", text(format!("p{published}{suffix}"), at)),
            ("port", Node::new(Kind::Int(published.into()), at.clone())),
            ("targetPort", Node::new(Kind::Int(target.into()), at.clone())),
            ("protocol", text(protocol, at)),
        ],
        at,
    ))
}

/// Where a service's mounts go, by kind.
#[derive(Default)]
struct Mounts {
    volumes: Vec<Node>,
    /// The external volumes among them.
    external: Vec<Node>,
    /// The settings of the project's own volumes among them, by name.
    definitions: Vec<(String, Node)>,
    tmpfs: Vec<Node>,
    files: Vec<Node>,
    folders: Vec<Node>,
    /// Paths of the agent's host.
    host: Vec<Node>,
}

/// A volume: a named one (`name:/path[:ro]`, or the long form) into `volumes`, an anonymous
/// one (`/path`) there too, a `tmpfs` into `tmpfs`, a file or folder of the repository into
/// `files` or `folders` with its content, an absolute host path into `host` (which the agent
/// must allow: `spec::rights`).
fn volume(node: &Node, mounts: &mut Mounts, project: &Project<'_>, out: &mut Vec<Diagnostic>) {
    let mut propagation = None;
    let (kind, source, target, read_only) = match &node.kind {
        Kind::Map(members) => {
            for (key, member) in members {
                // `consistency` is for Docker Desktop's file sharing; Compose ignores it here too.
                let carried = match key.as_str() {
                    "type" | "source" | "target" | "read_only" | "consistency" => true,
                    "bind" => {
                        for (option, value) in member.value.as_map().into_iter().flatten() {
                            match (option.as_str(), &value.value.kind) {
                                ("propagation", _) => propagation = scalar(&value.value),
                                // What the engine does for a bind it is given as text.
                                ("create_host_path", Kind::Bool(true)) => {}
                                _ => out.push(Diagnostic::new(
                                    &value.key_at,
                                    format!("`{option}` of a bind mount is not carried out by plumb's compose target"),
                                )),
                            }
                        }
                        true
                    }
                    // Options of each kind (`nocopy`, a tmpfs's `size`…).
                    "volume" | "tmpfs" => member.value.as_map().is_none_or(Members::is_empty),
                    _ => false,
                };
                if !carried {
                    out.push(Diagnostic::new(
                        &member.key_at,
                        format!("`{key}` of a volume is not carried out by plumb's compose target"),
                    ));
                }
            }
            let read_only = matches!(node.get("read_only").map(|n| &n.kind), Some(Kind::Bool(true)));
            (
                node.get("type").and_then(scalar).unwrap_or_else(|| "volume".to_owned()),
                node.get("source").and_then(scalar),
                node.get("target").and_then(scalar),
                read_only,
            )
        }
        _ => {
            let Some(spec) = scalar(node) else {
                out.push(Diagnostic::new(&node.at, "a volume is a text or a map".to_owned()));
                return;
            };
            let parts: Vec<&str> = spec.split(':').collect();
            let (source, target, mode) = match parts.as_slice() {
                [target] => (None, (*target).to_owned(), ""),
                [source, target] => (Some((*source).to_owned()), (*target).to_owned(), ""),
                [source, target, mode] => (Some((*source).to_owned()), (*target).to_owned(), *mode),
                _ => {
                    out.push(Diagnostic::new(&node.at, format!("`{spec}` is not a volume")));
                    return;
                }
            };
            let modes: Vec<&str> = mode.split(',').filter(|m| !m.is_empty()).collect();
            for mode in &modes {
                match *mode {
                    "ro" | "rw" => {}
                    "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {
                        propagation = Some((*mode).to_owned());
                    }
                    unknown => out.push(Diagnostic::new(
                        &node.at,
                        format!("volume mode `{unknown}` is not carried out by plumb's compose target"),
                    )),
                }
            }
            let host = source.as_deref().is_some_and(|s| s.starts_with(['.', '/', '~']));
            (
                if host { "bind" } else { "volume" }.to_owned(),
                source,
                Some(target),
                modes.contains(&"ro"),
            )
        }
    };
    let Some(target) = target else {
        out.push(Diagnostic::new(&node.at, "a volume needs a `target` path".to_owned()));
        return;
    };
    let host = kind == "bind" && source.as_deref().is_some_and(|s| s.starts_with('/'));
    if let Some(propagation) = propagation.as_ref().filter(|_| !host) {
        out.push(Diagnostic::new(
            &node.at,
            format!("mount propagation `{propagation}` applies to paths of the host; this mount is not one"),
        ));
    }
    match (kind.as_str(), source) {
        ("volume", None) => mounts.volumes.push(text(target, &node.at)),
        ("volume", Some(source)) => {
            let suffix = if read_only { ":ro" } else { "" };
            let source = if let Some(engine_name) = project.external_volumes.get(&source) {
                mounts.external.push(text(engine_name, &node.at));
                engine_name.clone()
            } else if let Some(definition) = project.volumes.get(&source) {
                if definition.as_map().is_some_and(|m| !m.is_empty()) {
                    mounts.definitions.push((source.clone(), definition.clone()));
                }
                source
            } else {
                out.push(Diagnostic::new(
                    &node.at,
                    format!("volume `{source}` is not defined in the top-level `volumes`; Compose refuses it"),
                ));
                return;
            };
            mounts
                .volumes
                .push(text(format!("{source}:{target}{suffix}"), &node.at));
        }
        ("tmpfs", _) => mounts.tmpfs.push(text(target, &node.at)),
        ("bind", Some(source)) if source.starts_with('/') => {
            let mut fields = vec![
                ("source", text(source, &node.at)),
                ("target", text(target, &node.at)),
                ("readOnly", Node::new(Kind::Bool(read_only), node.at.clone())),
            ];
            if let Some(propagation) = propagation {
                fields.push(("propagation", text(propagation, &node.at)));
            }
            mounts.host.push(map(fields, &node.at));
        }
        ("bind", Some(source)) if source.starts_with('~') => out.push(
            Diagnostic::new(
                &node.at,
                format!("`{source}` is a path in the home folder of whoever runs Compose; plumb mounts no such path"),
            )
            .hint("write the absolute host path (which the agent must allow), or mount a file of the repository"),
        ),
        ("bind", Some(source)) => {
            let Some(path) = project.path_in(&node.at.file, &source) else {
                out.push(
                    Diagnostic::new(
                        &node.at,
                        format!("`{source}` is a host path outside the repository: it leaves the repository's folder"),
                    )
                    .hint(
                        "write the absolute host path (which the agent must allow), or mount a file of the repository",
                    ),
                );
                return;
            };
            match content(&path, &source, &target, read_only, project, &node.at, out) {
                Some(Content::File(file)) => mounts.files.push(file),
                Some(Content::Folder(folder)) => mounts.folders.push(folder),
                None => {}
            }
        }
        (other, _) => out.push(Diagnostic::new(
            &node.at,
            format!("a volume of type `{other}` is not carried out by plumb's compose target"),
        )),
    }
}

/// A file or folder of the repository, with its content as of the commit.
enum Content {
    File(Node),
    Folder(Node),
}

/// The repository's `path` (written `source`) mounted at `target`: a file (text, or bytes in
/// base64) or a folder with all its files; `None`, said, when there is none to mount.
fn content(
    path: &str,
    source: &str,
    target: &str,
    read_only: bool,
    project: &Project<'_>,
    at: &Origin,
    out: &mut Vec<Diagnostic>,
) -> Option<Content> {
    let read_only = Node::new(Kind::Bool(read_only), at.clone());
    match (project.look)(path) {
        Found::File(bytes, _) => {
            let (content, encoding) = encoded(bytes);
            let mut fields = vec![
                ("source", text(path, at)),
                ("target", text(target, at)),
                ("content", text(content, at)),
                ("readOnly", read_only),
            ];
            if let Some(encoding) = encoding {
                fields.push(("encoding", text(encoding, at)));
            }
            Some(Content::File(map(fields, at)))
        }
        Found::Folder(entries) => Some(Content::Folder(map(
            vec![
                ("source", text(path, at)),
                ("target", text(target, at)),
                ("files", folder_files(entries, at)),
                ("readOnly", read_only),
            ],
            at,
        ))),
        Found::Absent => {
            out.push(
                Diagnostic::new(at, format!("`{source}` is not in the repository (`{path}`) at this commit")).hint(
                    "plumb mounts files and folders of the repository; a host path is written absolute and allowed by the agent",
                ),
            );
            None
        }
        Found::Unreadable(why) => {
            out.push(Diagnostic::new(at, format!("`{source}` cannot be mounted: {why}")));
            None
        }
    }
}

/// A file's content as written in a document: its text, or its bytes in base64.
pub(super) fn encoded(bytes: Vec<u8>) -> (String, Option<&'static str>) {
    match String::from_utf8(bytes) {
        Ok(text) => (text, None),
        Err(e) => {
            use base64::Engine as _;
            (
                base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                Some("base64"),
            )
        }
    }
}

/// The files of a folder, as plumb's `FolderFile` list.
pub(super) fn folder_files(entries: Vec<FolderEntry>, at: &Origin) -> Node {
    let files = entries
        .into_iter()
        .map(|entry| {
            let (content, encoding) = encoded(entry.bytes);
            let mut fields = vec![("path", text(entry.path, at)), ("content", text(content, at))];
            if let Some(encoding) = encoding {
                fields.push(("encoding", text(encoding, at)));
            }
            if entry.executable {
                fields.push(("executable", Node::new(Kind::Bool(true), at.clone())));
            }
            map(fields, at)
        })
        .collect();
    seq(files, at)
}

/// The networks a service joins: a list of names, or a map of names to settings (aliases, a
/// fixed address), an external one with its name on the engine, each defined at the top level
/// (the settings of the project's own go into `definitions`). `default` is left out: every
/// service joins the project's default network.
fn networks(
    node: &Node,
    project: &Project<'_>,
    definitions: &mut Vec<(String, Node)>,
    out: &mut Vec<Diagnostic>,
) -> Node {
    // Every service joins the project's default network as it is.
    if let Some(default) = node.as_map().and_then(|m| m.get("default"))
        && default.value.as_map().is_some_and(|m| !m.is_empty())
    {
        out.push(Diagnostic::new(
            &default.key_at,
            "settings of the `default` network (aliases, an address) are not carried out".to_owned(),
        ));
    }
    let joined: Vec<(String, Origin, Option<&Node>)> = match &node.kind {
        Kind::Map(members) => members
            .iter()
            .map(|(name, member)| (name.to_string(), member.key_at.clone(), Some(&member.value)))
            .collect(),
        _ => strings(node, out)
            .into_iter()
            .map(|(name, at)| (name, at, None))
            .collect(),
    };
    let mut items = Vec::new();
    for (name, at, settings) in joined {
        if name == "default" {
            continue;
        }
        let mut entries = vec![("name", text(&name, &at))];
        if let Some(engine_name) = project.external_networks.get(&name) {
            entries.push(("engineName", text(engine_name, &at)));
        } else if let Some(definition) = project.networks.get(&name) {
            if definition.as_map().is_some_and(|m| !m.is_empty()) {
                definitions.push((name.clone(), definition.clone()));
            }
        } else {
            out.push(Diagnostic::new(
                &at,
                format!("network `{name}` is not defined in the top-level `networks`; Compose refuses it"),
            ));
            continue;
        }
        for (key, setting) in settings.and_then(Node::as_map).into_iter().flatten() {
            match key.as_str() {
                "aliases" => entries.push((
                    "aliases",
                    seq(
                        strings(&setting.value, out)
                            .into_iter()
                            .map(|(a, at)| text(a, &at))
                            .collect(),
                        &setting.value.at,
                    ),
                )),
                "ipv4_address" => entries.push(("ipv4Address", setting.value.clone())),
                other => out.push(Diagnostic::new(
                    &setting.key_at,
                    format!("`{other}` of network `{name}` is not carried out by plumb's compose target"),
                )),
            }
        }
        items.push(if entries.len() == 1 {
            text(name, &at)
        } else {
            map(entries, &at)
        });
    }
    seq(items, &node.at)
}

/// The services depended on. Compose's conditions `service_started` and `service_healthy` are
/// what plumb's deploy order gives (a service is rolled out, health-checked, before those that
/// depend on it); `service_completed_successfully` names a one-off task, refused.
fn depends_on(node: &Node, out: &mut Vec<Diagnostic>) -> Node {
    let names = match &node.kind {
        Kind::Map(members) => members
            .iter()
            .map(|(name, member)| {
                if let Some(settings) = member.value.as_map() {
                    for (key, setting) in settings {
                        match (key.as_str(), scalar(&setting.value).as_deref()) {
                            // A service awaited to complete is a task (`tasks`): it runs to the
                            // end before this one rolls out, as the others are rolled out first.
                            (
                                "condition",
                                Some("service_started" | "service_healthy" | "service_completed_successfully"),
                            ) => {}
                            ("restart", Some("false")) | ("required", Some("true")) => {}
                            _ => out.push(Diagnostic::new(
                                &setting.key_at,
                                format!(
                                    "`{key}` of the dependency on `{name}` is not carried out by plumb's compose target"
                                ),
                            )),
                        }
                    }
                }
                text(name.as_str(), &member.key_at)
            })
            .collect(),
        _ => strings(node, out).into_iter().map(|(n, at)| text(n, &at)).collect(),
    };
    seq(names, &node.at)
}

/// Labels as a map; a label without a value is empty, as Compose makes it.
fn labels(node: &Node, out: &mut Vec<Diagnostic>) -> Node {
    text_map(node, "label", out)
}

/// `NAME=value` lines or a map (labels, options) as a map of texts; a name without a value is
/// empty, as Compose makes it.
pub(super) fn text_map(node: &Node, what: &str, out: &mut Vec<Diagnostic>) -> Node {
    let members = pairs(node, what, out)
        .into_iter()
        .map(|(key, value, at)| {
            let value = value.unwrap_or_else(|| text("", &at));
            (key, Member { key_at: at, value })
        })
        .collect();
    Node::new(Kind::Map(members), node.at.clone())
}

/// `NAME=value` or a map, as a map of texts.
fn string_map(node: &Node, what: &str, out: &mut Vec<Diagnostic>) -> Node {
    let members = pairs(node, what, out)
        .into_iter()
        .filter_map(|(key, value, at)| match value {
            Some(value) => Some((key, Member { key_at: at, value })),
            None => {
                out.push(Diagnostic::new(&at, format!("{what} `{key}` has no value")));
                None
            }
        })
        .collect();
    Node::new(Kind::Map(members), node.at.clone())
}

/// `host:address` lines, from a list (`host:address` or `host=address`) or a map.
fn extra_hosts(node: &Node, out: &mut Vec<Diagnostic>) -> Node {
    let items = match &node.kind {
        // A host may have several addresses: one line each.
        Kind::Map(members) => members
            .iter()
            .flat_map(|(host, member)| {
                strings(&member.value, out)
                    .into_iter()
                    .map(move |(address, at)| text(format!("{host}:{address}"), &at))
            })
            .collect(),
        Kind::Seq(items) => items
            .iter()
            .filter_map(|item| {
                let line = scalar(item)?;
                Some(text(line.replacen('=', ":", 1), &item.at))
            })
            .collect(),
        _ => {
            out.push(Diagnostic::new(&node.at, "`extra_hosts` is a list or a map".to_owned()));
            Vec::new()
        }
    };
    seq(items, &node.at)
}

/// `ulimits`: a name to a number (soft and hard alike) or to `{soft, hard}`.
fn ulimits(node: &Node, out: &mut Vec<Diagnostic>) -> Node {
    let Some(members) = node.as_map() else {
        out.push(Diagnostic::new(&node.at, "`ulimits` is a map".to_owned()));
        return node.clone();
    };
    let members = members
        .iter()
        .map(|(name, member)| {
            let value = &member.value;
            let limit = match &value.kind {
                Kind::Map(_) => value.clone(),
                _ => {
                    let number = integer(value);
                    map(vec![("soft", number.clone()), ("hard", number)], &value.at)
                }
            };
            (
                name.clone(),
                Member {
                    key_at: member.key_at.clone(),
                    value: limit,
                },
            )
        })
        .collect();
    Node::new(Kind::Map(members), node.at.clone())
}

/// A logging driver and its options.
fn logging(node: &Node, out: &mut Vec<Diagnostic>) -> Node {
    let mut entries = Vec::new();
    if let Some(members) = node.as_map() {
        for (key, member) in members {
            match key.as_str() {
                "driver" => entries.push(("driver", member.value.clone())),
                "options" => entries.push(("options", string_map(&member.value, "logging option", out))),
                other => out.push(Diagnostic::new(
                    &member.key_at,
                    format!("`{other}` of `logging` is not carried out by plumb's compose target"),
                )),
            }
        }
    }
    if !entries.iter().any(|(k, _)| *k == "driver") {
        entries.push(("driver", text("json-file", &node.at)));
    }
    map(entries, &node.at)
}

/// The engine's restart policy from `restart` (`no`, `always`, `on-failure[:n]`,
/// `unless-stopped`).
fn restart(node: &Node, out: &mut Vec<Diagnostic>) -> Option<Vec<(&'static str, Node)>> {
    let policy = scalar(node).unwrap_or_default();
    let policy = match policy.as_str() {
        "no" | "false" => "no",
        "always" => "always",
        "unless-stopped" => "unless-stopped",
        "on-failure" => "on-failure",
        other if other.starts_with("on-failure:") => {
            let Ok(count) = other["on-failure:".len()..].parse::<u32>() else {
                out.push(Diagnostic::new(
                    &node.at,
                    format!("`{other}` is not a restart policy: the count is a whole number"),
                ));
                return None;
            };
            return Some(vec![
                ("restart", text("on-failure", &node.at)),
                ("restartRetries", Node::new(Kind::Int(count.into()), node.at.clone())),
            ]);
        }
        other => {
            out.push(Diagnostic::new(&node.at, format!("`{other}` is not a restart policy")));
            return None;
        }
    };
    Some(vec![("restart", text(policy, &node.at))])
}

/// A Compose health check as the engine's; `None` when disabled.
fn healthcheck(node: &Node, out: &mut Vec<Diagnostic>) -> Option<Node> {
    let at = &node.at;
    // Disabled, the image's own check is off too: the engine is told `NONE`, as Compose tells it.
    let none = || Some(map(vec![("test", seq(vec![text("NONE", at)], at))], at));
    if matches!(node.get("disable").map(|n| &n.kind), Some(Kind::Bool(true))) {
        return none();
    }
    let test = match node.get("test") {
        Some(test) => match &test.kind {
            Kind::Str(command) => seq(
                vec![text("CMD-SHELL", &test.at), text(command.as_str(), &test.at)],
                &test.at,
            ),
            _ => test.clone(),
        },
        None => {
            out.push(Diagnostic::new(at, "a health check needs `test`".to_owned()));
            return None;
        }
    };
    if test.get_index(0).and_then(scalar).as_deref() == Some("NONE") {
        return none();
    }
    let mut entries = vec![("test", test)];
    for (key, member) in node.as_map().into_iter().flatten() {
        let value = &member.value;
        match key.as_str() {
            "test" | "disable" => {}
            "retries" => entries.push(("retries", integer(value))),
            "interval" | "timeout" | "start_period" => {
                if let Some(duration) = duration(value, out) {
                    entries.push((
                        if key == "start_period" {
                            "startPeriod"
                        } else {
                            key.as_str()
                        },
                        duration,
                    ));
                }
            }
            other => out.push(Diagnostic::new(
                &member.key_at,
                format!("`{other}` of a health check is not carried out by plumb's compose target"),
            )),
        }
    }
    Some(map(entries, at))
}

/// `deploy`: `replicas`, `resources` (limits and reservations of CPUs and memory),
/// `restart_policy.condition`, and `mode: replicated`; the rest is Swarm's, refused by name.
fn deploy(
    node: &Node,
    doc: &mut Vec<(&str, Node)>,
    restart: &mut Vec<(&'static str, Node)>,
    resources: &mut Resources,
    out: &mut Vec<Diagnostic>,
) {
    for (key, member) in node.as_map().into_iter().flatten() {
        let value = &member.value;
        match key.as_str() {
            "replicas" => doc.push(("replicas", integer(value))),
            "mode" if scalar(value).as_deref() == Some("replicated") => {}
            "resources" => {
                for (kind, amounts) in value.as_map().into_iter().flatten() {
                    let request = match kind.as_str() {
                        "limits" => false,
                        "reservations" => true,
                        other => {
                            out.push(Diagnostic::new(
                                &amounts.key_at,
                                format!("`deploy.resources.{other}` is not carried out by plumb's compose target"),
                            ));
                            continue;
                        }
                    };
                    for (what, amount) in amounts.value.as_map().into_iter().flatten() {
                        let converted = match what.as_str() {
                            "cpus" => ("cpu", cpus(&amount.value, out)),
                            "memory" => ("memory", memory(&amount.value, out)),
                            other => {
                                out.push(Diagnostic::new(
                                    &amount.key_at,
                                    format!(
                                        "`deploy.resources.{kind}.{other}` is not carried out by plumb's compose target"
                                    ),
                                ));
                                continue;
                            }
                        };
                        if request {
                            resources.request(converted.0, converted.1);
                        } else {
                            resources.limit(converted.0, converted.1);
                        }
                    }
                }
            }
            "restart_policy" => {
                for (what, setting) in value.as_map().into_iter().flatten() {
                    match (what.as_str(), scalar(&setting.value).as_deref()) {
                        ("condition", Some(condition)) => {
                            let policy = match condition {
                                "none" => "no",
                                "on-failure" => "on-failure",
                                "any" => "always",
                                other => {
                                    out.push(Diagnostic::new(
                                        &setting.value.at,
                                        format!("`{other}` is not a restart condition (none, on-failure, any)"),
                                    ));
                                    continue;
                                }
                            };
                            restart.push(("restart", text(policy, &setting.value.at)));
                        }
                        // The engine's most restarts after failures, as Compose hands it over.
                        ("max_attempts", Some(_)) => restart.push(("restartRetries", integer(&setting.value))),
                        _ => out.push(Diagnostic::new(
                            &setting.key_at,
                            format!(
                                "`deploy.restart_policy.{what}` is not carried out: it is Swarm's; the engine restarts at once"
                            ),
                        )),
                    }
                }
            }
            other => out.push(Diagnostic::new(
                &member.key_at,
                format!("`deploy.{other}` is not carried out by plumb's compose target (it is Swarm's)"),
            )),
        }
    }
}

/// The CPU and memory amounts gathered from `deploy.resources`, `cpus`, `mem_limit` and
/// `mem_reservation`.
#[derive(Default)]
struct Resources {
    limits: Vec<(&'static str, Node)>,
    requests: Vec<(&'static str, Node)>,
}

impl Resources {
    fn limit(&mut self, what: &'static str, amount: Option<Node>) {
        if let Some(amount) = amount {
            self.limits.retain(|(w, _)| *w != what);
            self.limits.push((what, amount));
        }
    }

    fn request(&mut self, what: &'static str, amount: Option<Node>) {
        if let Some(amount) = amount {
            self.requests.retain(|(w, _)| *w != what);
            self.requests.push((what, amount));
        }
    }

    fn node(self, at: &Origin) -> Option<Node> {
        let mut entries = Vec::new();
        if !self.limits.is_empty() {
            entries.push(("limits", map(self.limits, at)));
        }
        if !self.requests.is_empty() {
            entries.push(("requests", map(self.requests, at)));
        }
        (!entries.is_empty()).then(|| map(entries, at))
    }
}

/// A CPU amount (`0.5`, `2`) as plumb writes one.
fn cpus(node: &Node, out: &mut Vec<Diagnostic>) -> Option<Node> {
    match scalar(node).and_then(|c| c.parse::<f64>().ok()) {
        Some(cpus) if cpus > 0.0 => Some(text(format!("{}m", (cpus * 1000.0).round() as u64), &node.at)),
        _ => {
            out.push(Diagnostic::new(
                &node.at,
                "CPUs are a positive number (`0.5`)".to_owned(),
            ));
            None
        }
    }
}

/// A byte size (`512m`, `1gb`, a number of bytes) as plumb writes one.
fn memory(node: &Node, out: &mut Vec<Diagnostic>) -> Option<Node> {
    match scalar(node).and_then(|m| units::bytes(&m)) {
        Some(bytes) => Some(text(bytes.to_string(), &node.at)),
        None => {
            out.push(Diagnostic::new(
                &node.at,
                "a size is a number of bytes, or one with a unit: `512m`, `1g`".to_owned(),
            ));
            None
        }
    }
}

/// A duration as plumb writes one.
fn duration(node: &Node, out: &mut Vec<Diagnostic>) -> Option<Node> {
    match scalar(node).and_then(|d| units::duration(&d)) {
        Some(duration) => Some(text(duration, &node.at)),
        None => {
            out.push(Diagnostic::new(
                &node.at,
                "a duration is written `1m30s`, `10s`, `500ms` (whole milliseconds)".to_owned(),
            ));
            None
        }
    }
}

/// A number written as text (as interpolation leaves `${REPLICAS:-2}`) made a number again.
fn integer(node: &Node) -> Node {
    match &node.kind {
        Kind::Str(s) => match s.trim().parse::<i64>() {
            Ok(n) => Node::new(Kind::Int(n), node.at.clone()),
            Err(_) => node.clone(),
        },
        _ => node.clone(),
    }
}
