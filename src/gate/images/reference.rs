//! Image references as Docker reads them: `[registry/]repository[:tag][@digest]`, with Docker
//! Hub (`docker.io`, `library/` for one-part names) and the tag `latest` when absent.

use std::fmt;

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The registry's host (and port): `ghcr.io`, `localhost:5000`, `docker.io`.
    pub registry: String,
    /// The repository inside it: `library/nginx`, `acme/web`.
    pub repository: String,
    /// The tag, when written (or `latest` when neither tag nor digest is).
    pub tag: Option<String>,
    /// The digest, when written (`sha256:…`).
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `image`; why it is not a reference otherwise.
    pub fn parse(image: &str) -> Result<Reference, String> {
        let image = image.trim();
        if image.is_empty() || image.len() > 512 || image.chars().any(char::is_whitespace) {
            return Err(format!("`{image}` is not an image reference"));
        }
        let (rest, digest) = match image.split_once('@') {
            Some((rest, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| format!("`{image}`: only sha256 digests are read"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
                    return Err(format!("`{image}`: `{digest}` is not a sha256 digest"));
                }
                (rest, Some(digest.to_owned()))
            }
            None => (image, None),
        };
        // A tag follows the last `:` after the last `/` (a registry's port comes before it).
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_owned())),
            None => (rest, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_owned(), rest.to_owned())
            }
            Some(_) => ("docker.io".to_owned(), name.to_owned()),
            None => ("docker.io".to_owned(), name.to_owned()),
        };
        // Docker Hub's names, as Docker normalizes them: `index.docker.io` is `docker.io`, and
        // an official image's one-part name lives under `library/`.
        let registry = if registry == "index.docker.io" {
            "docker.io".to_owned()
        } else {
            registry
        };
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
        };
        // A tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
        let valid_tag = |tag: &str| {
            !tag.is_empty()
                && tag.len() <= 128
                && !tag.starts_with(['.', '-'])
                && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        };
        if !valid(&repository) || tag.as_deref().is_some_and(|t| !valid_tag(t)) {
            return Err(format!("`{image}` is not an image reference"));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_owned())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry's base URL: plain HTTP for a registry on the loopback address (as Docker
    /// allows without configuration), HTTPS otherwise; Docker Hub's API host for `docker.io`.
    pub fn base_url(&self) -> String {
        if is_loopback(&self.registry) {
            format!("http://{}", self.registry)
        } else if self.registry == "docker.io" {
            "https://registry-1.docker.io".to_owned()
        } else {
            format!("https://{}", self.registry)
        }
    }

    /// What the manifest is asked for by: the digest when written, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Whether `host` (with its port, if any) is the loopback address: `localhost`, `127.0.0.1`,
/// `[::1]`.
pub fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => name,
        _ => host,
    };
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_read_as_docker_reads_them() {
        let r = Reference::parse("nginx").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "library/nginx", Some("latest"))
        );
        let r = Reference::parse("acme/web:1.2").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "acme/web", Some("1.2"))
        );
        let r = Reference::parse("localhost:5000/team/web:r2").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("localhost:5000", "team/web", Some("r2"))
        );
        assert_eq!(r.base_url(), "http://localhost:5000");
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("ghcr.io/acme/web@{digest}")).unwrap();
        assert_eq!((r.tag.as_deref(), r.digest.as_deref()), (None, Some(digest.as_str())));
        assert_eq!(r.base_url(), "https://ghcr.io");
        assert_eq!(r.manifest_ref(), digest);
        let r = Reference::parse("docker.io/nginx:1.27").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/nginx")
        );
        assert_eq!(r.base_url(), "https://registry-1.docker.io");
        let r = Reference::parse("index.docker.io/acme/web").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("docker.io", "acme/web"));
        for bad in [
            "",
            "Web:1",
            "a b",
            "web@sha256:12",
            "web@md5:00",
            "web:",
            "web:a#b",
            "web:-x",
            "web:a?b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
