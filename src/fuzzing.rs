//! Entry points for the fuzz targets in `fuzz/` (run with `scripts/fuzz`): each takes arbitrary
//! bytes and drives one parser of untrusted input the way the agent does. Whatever the bytes,
//! they must not panic, hang or grow without bound; a refusal is a normal outcome. The inputs
//! that once found a defect are kept in `fuzz/regressions/` and replayed by `cargo test`
//! together with the seeds in `fuzz/seeds/`, on the stable toolchain.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use git2::Oid;

use crate::secret::Secret;
use crate::source::{Entry, EntryKind, SourceError, Tree};
use crate::trigger::webhook::Provider;
use crate::trust::Policy;

/// The files a repository input is split into, in order, at each NUL byte: the repository's
/// settings, two services, two environments (overlays included), a Compose file, an
/// `env_file` that environments may point at, and the Compose project's `.env`.
pub const REPOSITORY_FILES: [&str; 8] = [
    "plumb.yaml",
    "services/api.yaml",
    "services/web.yaml",
    "environments/dev.yaml",
    "environments/prod.yaml",
    "compose.yaml",
    "app.env",
    ".env",
];

/// A repository held in memory.
struct Files(BTreeMap<String, Vec<u8>>);

impl Tree for Files {
    fn list(&self, dir: &str) -> Result<Vec<String>, SourceError> {
        let prefix = format!("{dir}/");
        Ok(self
            .0
            .keys()
            .filter_map(|path| path.strip_prefix(&prefix))
            .filter(|name| !name.contains('/'))
            .map(str::to_owned)
            .collect())
    }

    fn read(&self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, SourceError> {
        Ok(self
            .0
            .get(path)
            .map(|bytes| bytes[..bytes.len().min(limit + 1)].to_vec()))
    }

    fn commit(&self) -> Option<Oid> {
        None
    }

    fn entries(&self, dir: &str) -> Result<Vec<Entry>, SourceError> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut entries: Vec<Entry> = Vec::new();
        for path in self.0.keys() {
            let Some(rest) = path.strip_prefix(&prefix) else {
                continue;
            };
            let entry = match rest.split_once('/') {
                Some((folder, _)) => Entry {
                    name: folder.to_owned(),
                    kind: EntryKind::Folder,
                },
                None => Entry {
                    name: rest.to_owned(),
                    kind: EntryKind::File { executable: false },
                },
            };
            if !entries.contains(&entry) {
                entries.push(entry);
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }
}

/// Renders a repository made of `data`'s NUL-separated parts ([`REPOSITORY_FILES`]): YAML
/// parsing, the Compose loader, overlay merging, schema and model checks. Rendering is
/// deterministic, so a second rendering must say the same.
pub fn repository(data: &[u8]) {
    let files = Files(
        REPOSITORY_FILES
            .iter()
            .zip(data.split(|b| *b == 0))
            .map(|(path, bytes)| ((*path).to_owned(), bytes.to_vec()))
            .collect(),
    );
    let summary = |files: &Files| match crate::spec::render(files, None) {
        Ok(rendered) => {
            let environments: Vec<String> = rendered
                .environments
                .values()
                .map(|desired| desired.to_masked_json().to_string())
                .collect();
            let problems: Vec<String> = rendered.diagnostics.iter().map(ToString::to_string).collect();
            format!("{environments:?} {problems:?}")
        }
        Err(e) => e.to_string(),
    };
    assert_eq!(summary(&files), summary(&files), "rendering is deterministic");
}

/// Hands a delivery made of `data` to a webhook provider as the agent's receiver does: the
/// first byte picks the provider, the second which headers come with it (event kind, content
/// type, a signature that is right or wrong), the rest is the body.
pub fn webhook(data: &[u8]) {
    let [pick, shape, body @ ..] = data else {
        return;
    };
    let providers = [
        Provider::GitHub,
        Provider::GitLab,
        Provider::Gitea,
        Provider::Bitbucket,
        Provider::Generic,
    ];
    let provider = providers[usize::from(*pick) % providers.len()];
    let secret = Secret::new("fuzz-secret");
    let mut headers = HeaderMap::new();
    let event = match (provider, shape % 4) {
        (Provider::GitHub | Provider::Generic, 1) => "ping",
        (Provider::GitLab, 0) => "Push Hook",
        (Provider::GitLab, _) => "Tag Push Hook",
        (Provider::Bitbucket, 0) => "repo:push",
        (Provider::Bitbucket, 1) => "repo:refs_changed",
        (Provider::Bitbucket, _) => "diagnostics:ping",
        (_, 3) => "issues",
        _ => "push",
    };
    let (event_header, signature_header) = match provider {
        Provider::GitHub => ("x-github-event", "x-hub-signature-256"),
        Provider::GitLab => ("x-gitlab-event", "x-gitlab-token"),
        Provider::Gitea => ("x-gitea-event", "x-gitea-signature"),
        Provider::Bitbucket => ("x-event-key", "x-hub-signature"),
        Provider::Generic => ("x-plumb-event", "x-plumb-signature"),
    };
    headers.insert(HeaderName::from_static(event_header), HeaderValue::from_static(event));
    if shape & 4 != 0 {
        headers.insert(
            HeaderName::from_static("content-type"),
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
    }
    let signature = match (provider, shape & 8 != 0) {
        (Provider::GitLab, true) => "fuzz-secret".to_owned(),
        (Provider::Gitea, true) => sign(body),
        (_, true) => format!("sha256={}", sign(body)),
        (_, false) => String::from_utf8_lossy(body.get(..64).unwrap_or(body)).into_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&signature) {
        headers.insert(HeaderName::from_static(signature_header), value);
    }
    let authentic = provider.authenticate(&headers, body, &secret).is_ok();
    if shape & 8 != 0 {
        assert!(authentic, "a delivery signed with the secret is authentic");
    }
    let _ = provider.event(&headers, body);
}

fn sign(body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"fuzz-secret").expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Parses `data` as a repository's signing policy (`openpgp-policy.toml`), as the agent does
/// at every commit it authenticates.
pub fn policy(data: &[u8]) {
    let _ = Policy::parse(&String::from_utf8_lossy(data));
}

/// Reads `data` as Compose reads variables: up to the first NUL, a `.env` file; after it, a
/// template interpolated with that file's variables. Interpolation must not panic, and a
/// template without `$` is its own value.
pub fn interpolation(data: &[u8]) {
    use crate::spec::compose::{dotenv, interpolate};
    let text = String::from_utf8_lossy(data);
    let (env, template) = text.split_once('\0').unwrap_or(("", &text));
    let entries = dotenv::parse(env, &|_| None).unwrap_or_default();
    let lookup = |name: &str| entries.iter().rev().find(|e| e.name == name).map(|e| e.value.clone());
    let value = interpolate::interpolate(template, &lookup);
    if !template.contains('$') {
        assert_eq!(
            value.as_deref(),
            Ok(template),
            "a template without `$` is its own value"
        );
    }
}

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name (as `fuzz/fuzz_targets/` names them).
pub const TARGETS: [(&str, Target); 4] = [
    ("repository", repository),
    ("webhook", webhook),
    ("policy", policy),
    ("interpolation", interpolation),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every seed and every input that once found a defect still passes.
    #[test]
    fn seeds_and_regressions_replay_clean() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut replayed = 0;
        for (name, target) in TARGETS {
            for kind in ["seeds", "regressions"] {
                let dir = root.join(kind).join(name);
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries {
                    let path = entry.unwrap().path();
                    let data = std::fs::read(&path).unwrap();
                    if std::panic::catch_unwind(|| target(&data)).is_err() {
                        panic!("{name}: {} fails again", path.display());
                    }
                    replayed += 1;
                }
            }
        }
        assert!(replayed >= TARGETS.len(), "every target has seeds ({replayed} inputs)");
    }
}
