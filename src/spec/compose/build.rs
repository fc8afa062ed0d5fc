//! Compose's `build`: an image built from a folder of the repository as of the commit applied.
//! The context's files (less those its `.dockerignore` leaves out) travel with the service, and
//! the image is tagged by a digest of everything that goes into the build, so the agent builds
//! a content once and a change to it is a new version. Only where the environment allows it
//! (`target.compose.build: true`): building runs the Dockerfile's steps on the agent's engine.

use sha2::{Digest, Sha256};

use super::service::{folder_files, text_map};
use super::{FolderEntry, Found, Project, Settings, map, pairs, scalar, text};
use crate::spec::diagnostic::Diagnostic;
use crate::spec::node::{Kind, Member, Node};

/// What `build` may say besides what plumb carries out, and why each is refused.
const REFUSED: &[(&str, &str)] = &[
    ("dockerfile_inline", "write the Dockerfile as a file of the context"),
    ("ssh", "the agent lends no SSH agent to a build"),
    ("secrets", "the agent lends no secrets to a build"),
    ("cache_from", "plumb builds from the engine's own cache only"),
    ("cache_to", "plumb builds from the engine's own cache only"),
    (
        "additional_contexts",
        "the build's only context is its folder of the repository",
    ),
    ("network", "builds run on the engine's default network"),
    ("extra_hosts", "builds run on the engine's default network"),
    ("shm_size", "builds run with the engine's defaults"),
    ("ulimits", "builds run with the engine's defaults"),
    ("isolation", "builds run with the engine's defaults"),
    ("privileged", "builds run with the engine's defaults"),
    ("entitlements", "builds run with the engine's defaults"),
    ("platforms", "the image is built for the engine's own platform"),
    ("tags", "the image is tagged by its content"),
    ("pull", "the engine's base images are used as they are"),
    ("no_cache", "a content is built once and reused"),
];

/// The build of Compose service `name` (`build`, and its `image` if any) as plumb's `Build`
/// and the image's tag; `None`, said, when it is refused.
pub(super) fn translate(
    name: &str,
    node: &Node,
    image: Option<&Node>,
    settings: &Settings<'_>,
    project: &Project<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<(Node, Node)> {
    let at = &node.at;
    if !settings.build {
        out.push(
            Diagnostic::new(
                at,
                format!("`build` of Compose service `{name}` is refused: this environment does not build images"),
            )
            .hint("set `target.compose.build: true` in the environment to build from the repository at each commit, or name a built image in `image`"),
        );
        return None;
    }
    let mut context = ".".to_owned();
    let mut dockerfile = "Dockerfile".to_owned();
    let mut fields = Vec::new();
    match &node.kind {
        Kind::Map(members) => {
            for (key, member) in members {
                let value = &member.value;
                match key.as_str() {
                    "context" => context = scalar(value).unwrap_or_default(),
                    "dockerfile" => dockerfile = scalar(value).unwrap_or_default(),
                    "target" => fields.push(("target", value.clone())),
                    "args" => fields.push(("args", args(value, project, out))),
                    "labels" => fields.push(("labels", text_map(value, "label", out))),
                    key if key.starts_with("x-") => {}
                    key => {
                        let why = REFUSED
                            .iter()
                            .find(|(k, _)| *k == key)
                            .map_or("plumb's compose target does not carry it out", |(_, why)| why);
                        out.push(Diagnostic::new(
                            &member.key_at,
                            format!("`{key}` of the build of `{name}` is refused: {why}"),
                        ));
                    }
                }
            }
        }
        _ => match scalar(node) {
            Some(path) => context = path,
            None => {
                out.push(Diagnostic::new(at, "`build` is a path or a map".to_owned()));
                return None;
            }
        },
    }
    if context.contains("://") || context.starts_with("git@") {
        out.push(Diagnostic::new(
            at,
            format!(
                "the build context `{context}` is not in the repository: plumb builds the repository's own content"
            ),
        ));
        return None;
    }
    let Some(path) = project
        .path_in(&at.file, &context)
        .filter(|_| !context.starts_with(['/', '~']))
    else {
        out.push(Diagnostic::new(
            at,
            format!("the build context `{context}` is outside the repository"),
        ));
        return None;
    };
    let entries = match (project.look)(&path) {
        Found::Folder(entries) => entries,
        Found::File(..) => {
            out.push(Diagnostic::new(
                at,
                format!("the build context `{context}` is a file, not a folder"),
            ));
            return None;
        }
        Found::Absent => {
            out.push(Diagnostic::new(
                at,
                format!("the build context `{context}` is not in the repository (`{path}`)"),
            ));
            return None;
        }
        Found::Unreadable(why) => {
            out.push(Diagnostic::new(
                at,
                format!("the build context `{context}` cannot be read: {why}"),
            ));
            return None;
        }
    };
    let dockerfile = dockerfile.trim_start_matches("./").to_owned();
    let entries = kept(entries, &dockerfile);
    if !entries.iter().any(|e| e.path == dockerfile) {
        out.push(Diagnostic::new(
            at,
            format!("the Dockerfile `{dockerfile}` is not in the build context `{context}`"),
        ));
        return None;
    }
    let digest = digest(&entries, &dockerfile, &fields);
    let repository = match image.and_then(scalar) {
        Some(image) => untagged(&image).to_owned(),
        None => format!("{}-{name}", settings.project),
    };
    let tag = format!("{repository}:build-{}", &digest[..16]);
    let mut build = vec![
        (
            "context",
            map(
                vec![
                    ("source", text(&path, at)),
                    ("target", text("/", at)),
                    ("files", folder_files(entries, at)),
                ],
                at,
            ),
        ),
        ("dockerfile", text(dockerfile, at)),
    ];
    build.extend(fields);
    Some((map(build, at), text(tag, image.map_or(at, |i| &i.at))))
}

/// Build arguments: a map, or `NAME=value` lines; a name without a value takes the project's
/// variable of that name, and is left out (the Dockerfile's default) when there is none, as
/// Compose does.
fn args(node: &Node, project: &Project<'_>, out: &mut Vec<Diagnostic>) -> Node {
    let members = pairs(node, "build argument", out)
        .into_iter()
        .filter_map(|(key, value, at)| {
            let value = value.or_else(|| project.lookup(&key).map(|v| text(v, &at)))?;
            Some((key, Member { key_at: at, value }))
        })
        .collect();
    Node::new(Kind::Map(members), node.at.clone())
}

/// `image` without its tag or digest.
fn untagged(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

/// A digest of what goes into the build: each file's path, mode and bytes, the Dockerfile,
/// and the other settings as they will be written.
fn digest(entries: &[FolderEntry], dockerfile: &str, fields: &[(&str, Node)]) -> String {
    let mut hash = Sha256::new();
    for entry in entries {
        hash.update(entry.path.as_bytes());
        hash.update([0, u8::from(entry.executable)]);
        hash.update((entry.bytes.len() as u64).to_be_bytes());
        hash.update(&entry.bytes);
    }
    hash.update(dockerfile.as_bytes());
    hash.update([0]);
    for (key, value) in fields {
        hash.update(key.as_bytes());
        hash.update([0]);
        hash.update(serde_json::to_vec(&value.to_json()).unwrap_or_default());
        hash.update([0]);
    }
    hex::encode(hash.finalize())
}

/// The context's files less those its `.dockerignore` leaves out; the Dockerfile and the
/// `.dockerignore` itself always go (the engine reads them), as Docker sends them.
fn kept(entries: Vec<FolderEntry>, dockerfile: &str) -> Vec<FolderEntry> {
    let Some(ignore) = entries.iter().find(|e| e.path == ".dockerignore") else {
        return entries;
    };
    let patterns = patterns(&String::from_utf8_lossy(&ignore.bytes));
    entries
        .into_iter()
        .filter(|e| e.path == dockerfile || e.path == ".dockerignore" || !ignored(&patterns, &e.path))
        .collect()
}

/// The patterns of a `.dockerignore`: each with whether it is an exception (`!`).
fn patterns(text: &str) -> Vec<(bool, Vec<String>)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (exception, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let segments = pattern
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(str::to_owned)
                .collect();
            (exception, segments)
        })
        .collect()
}

/// Whether `path` is left out: the last pattern matching it or one of its folders decides.
fn ignored(patterns: &[(bool, Vec<String>)], path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let mut out = false;
    for (exception, pattern) in patterns {
        let matched = (1..=parts.len()).any(|n| segments_match(pattern, &parts[..n]));
        if matched {
            out = !exception;
        }
    }
    out
}

/// Whether path segments match pattern segments; `**` matches any number of segments.
fn segments_match(pattern: &[String], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((first, rest)) if first == "**" => (0..=parts.len()).any(|skip| segments_match(rest, &parts[skip..])),
        Some((first, rest)) => match parts.split_first() {
            Some((part, others)) => glob(first.as_bytes(), part.as_bytes()) && segments_match(rest, others),
            None => false,
        },
    }
}

/// One segment against a glob: `*` any run of characters, `?` one, `\` escapes the next.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((b'\\', rest)) if !rest.is_empty() => text.first() == Some(&rest[0]) && glob(&rest[1..], &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dockerignore_leaves_out_what_docker_leaves_out() {
        let patterns = patterns("# comment\n*.log\nnode_modules\n**/tmp\n!keep.log\ndocs/*.md\n");
        for (path, out) in [
            ("app.log", true),
            ("keep.log", false),
            ("src/app.log", false),
            ("node_modules/x/index.js", true),
            ("a/b/tmp/file", true),
            ("tmp/file", true),
            ("docs/readme.md", true),
            ("docs/sub/readme.md", false),
            ("src/main.rs", false),
        ] {
            assert_eq!(ignored(&patterns, path), out, "{path}");
        }
    }

    #[test]
    fn an_image_loses_its_tag_not_its_registry_port() {
        assert_eq!(untagged("registry:5000/app:1.2"), "registry:5000/app");
        assert_eq!(untagged("registry:5000/app"), "registry:5000/app");
        assert_eq!(untagged("app@sha256:abc"), "app");
        assert_eq!(untagged("app"), "app");
    }
}
