//! What each forge sends: how it proves the request comes from it (an HMAC of the body, or a
//! shared token), how it names the event, and where a push lists its refs.

use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::secret::{Secret, constant_time_eq};

/// A forge, or plumb's own generic format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// GitHub and GitHub Enterprise: `X-Hub-Signature-256: sha256=<hmac>`.
    GitHub,
    /// GitLab: `X-Gitlab-Token: <secret>`.
    GitLab,
    /// Gitea, Forgejo and Gogs: `X-Gitea-Signature: <hmac>` (or the Forgejo/Gogs header).
    Gitea,
    /// Bitbucket Cloud and Data Center: `X-Hub-Signature: sha256=<hmac>`.
    Bitbucket,
    /// Anything else: `X-Plumb-Signature: sha256=<hmac>` over `{"ref": "refs/heads/main"}`.
    Generic,
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A test delivery: answer it, fetch nothing.
    Ping,
    /// Refs were pushed (full ref names).
    Push(Vec<String>),
    /// Another event, named.
    Other(String),
}

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The header carrying the signature or token is absent.
    MissingSignature(&'static str),
    /// The signature or token does not match the configured secret.
    BadSignature,
    /// The body or a header is not what the forge sends.
    Malformed(String),
}

impl Provider {
    /// The provider called `name` (as [`Provider::name`] spells it).
    pub fn named(name: &str) -> Option<Provider> {
        [
            Provider::GitHub,
            Provider::GitLab,
            Provider::Gitea,
            Provider::Bitbucket,
            Provider::Generic,
        ]
        .into_iter()
        .find(|p| p.name() == name)
    }

    /// The name used in configuration, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::Gitea => "gitea",
            Provider::Bitbucket => "bitbucket",
            Provider::Generic => "generic",
        }
    }

    /// Checks that the request was made by someone holding `secret`, in constant time.
    pub fn authenticate(self, headers: &HeaderMap, body: &[u8], secret: &Secret) -> Result<(), Rejection> {
        let (header, value) = match self {
            Provider::GitLab => {
                let token = header(headers, "x-gitlab-token").ok_or(Rejection::MissingSignature("X-Gitlab-Token"))?;
                // Equal-length digests compared without early exit: the time taken says nothing
                // about how much of the token was right.
                let given = Sha256::digest(token.as_bytes());
                let expected = Sha256::digest(secret.expose().as_bytes());
                return if constant_time_eq(&given, &expected) {
                    Ok(())
                } else {
                    Err(Rejection::BadSignature)
                };
            }
            Provider::GitHub => ("X-Hub-Signature-256", header(headers, "x-hub-signature-256")),
            Provider::Bitbucket => ("X-Hub-Signature", header(headers, "x-hub-signature")),
            Provider::Generic => ("X-Plumb-Signature", header(headers, "x-plumb-signature")),
            Provider::Gitea => (
                "X-Gitea-Signature",
                header(headers, "x-gitea-signature")
                    .or_else(|| header(headers, "x-forgejo-signature"))
                    .or_else(|| header(headers, "x-gogs-signature")),
            ),
        };
        let value = value.ok_or(Rejection::MissingSignature(header))?;
        let hex_digest = match self {
            Provider::Gitea => value,
            _ => value.strip_prefix("sha256=").ok_or(Rejection::BadSignature)?,
        };
        let digest = hex::decode(hex_digest.trim()).map_err(|_| Rejection::BadSignature)?;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(body);
        mac.verify_slice(&digest).map_err(|_| Rejection::BadSignature)
    }

    /// Reads the event from an authenticated request.
    pub fn event(self, headers: &HeaderMap, body: &[u8]) -> Result<Event, Rejection> {
        let kind = match self {
            Provider::GitHub => header(headers, "x-github-event"),
            Provider::GitLab => header(headers, "x-gitlab-event"),
            Provider::Gitea => header(headers, "x-gitea-event").or_else(|| header(headers, "x-forgejo-event")),
            Provider::Bitbucket => header(headers, "x-event-key"),
            Provider::Generic => header(headers, "x-plumb-event"),
        }
        .unwrap_or("push");
        match (self, kind) {
            (Provider::GitHub | Provider::Generic, "ping") | (Provider::Bitbucket, "diagnostics:ping") => {
                return Ok(Event::Ping);
            }
            (Provider::GitHub | Provider::Gitea | Provider::Generic, "push")
            | (Provider::GitLab, "Push Hook" | "Tag Push Hook")
            | (Provider::Bitbucket, "repo:push" | "repo:refs_changed") => {}
            (_, other) => return Ok(Event::Other(other.to_owned())),
        }
        let payload = payload(self, headers, body)?;
        let refs = match self {
            Provider::Bitbucket => bitbucket_refs(&payload),
            _ => payload["ref"].as_str().map(str::to_owned).into_iter().collect(),
        };
        if refs.is_empty() {
            return Err(Rejection::Malformed("the push names no ref".to_owned()));
        }
        Ok(Event::Push(refs))
    }
}

/// The event's JSON: the body, or its `payload` field when the forge sent the delivery
/// form-encoded (GitHub's default content type, and Gitea's and Bitbucket Server's option). The
/// signature was checked over the body as sent.
fn payload(provider: Provider, headers: &HeaderMap, body: &[u8]) -> Result<Value, Rejection> {
    let form = header(headers, "content-type").is_some_and(|t| {
        t.trim()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    if !form {
        return serde_json::from_slice(body).map_err(|e| Rejection::Malformed(format!("the body is not JSON: {e}")));
    }
    let Some((_, json)) = form_urlencoded::parse(body).find(|(key, _)| key == "payload") else {
        return Err(Rejection::Malformed(format!(
            "the {} delivery is form-encoded without a `payload` field",
            provider.name()
        )));
    };
    serde_json::from_str(&json).map_err(|e| Rejection::Malformed(format!("the `payload` field is not JSON: {e}")))
}

/// Bitbucket Data Center lists `changes[].ref.id`; Bitbucket Cloud `push.changes[].new`.
fn bitbucket_refs(payload: &Value) -> Vec<String> {
    let mut refs = Vec::new();
    for change in payload["changes"].as_array().into_iter().flatten() {
        if let Some(id) = change["ref"]["id"].as_str().or_else(|| change["refId"].as_str()) {
            refs.push(id.to_owned());
        }
    }
    for change in payload["push"]["changes"].as_array().into_iter().flatten() {
        let new = &change["new"];
        match (new["type"].as_str(), new["name"].as_str()) {
            (Some("branch"), Some(name)) => refs.push(format!("refs/heads/{name}")),
            (Some("tag"), Some(name)) => refs.push(format!("refs/tags/{name}")),
            _ => {}
        }
    }
    refs
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn each_forge_signs_its_own_way() {
        let secret = Secret::new("s3cret");
        let body = br#"{"ref":"refs/heads/main"}"#;
        let sig = sign("s3cret", body);
        let cases = [
            (
                Provider::GitHub,
                headers(&[("x-hub-signature-256", format!("sha256={sig}"))]),
            ),
            (Provider::Gitea, headers(&[("x-gitea-signature", sig.clone())])),
            (Provider::Gitea, headers(&[("x-forgejo-signature", sig.clone())])),
            (
                Provider::Bitbucket,
                headers(&[("x-hub-signature", format!("sha256={sig}"))]),
            ),
            (
                Provider::Generic,
                headers(&[("x-plumb-signature", format!("sha256={sig}"))]),
            ),
            (Provider::GitLab, headers(&[("x-gitlab-token", "s3cret".to_owned())])),
        ];
        for (provider, h) in &cases {
            assert_eq!(provider.authenticate(h, body, &secret), Ok(()), "{provider:?}");
            assert_eq!(
                provider.authenticate(h, body, &Secret::new("other")),
                Err(Rejection::BadSignature),
                "{provider:?}"
            );
            assert!(matches!(
                provider.authenticate(&HeaderMap::new(), body, &secret),
                Err(Rejection::MissingSignature(_))
            ));
        }
        // A signature over another body does not carry over.
        let (provider, h) = &cases[0];
        assert_eq!(
            provider.authenticate(h, br#"{"ref":"refs/heads/evil"}"#, &secret),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn events_and_refs() {
        let push = br#"{"ref":"refs/heads/main"}"#;
        let github = |event: &str| headers(&[("x-github-event", event.to_owned())]);
        assert_eq!(Provider::GitHub.event(&github("ping"), b"{}"), Ok(Event::Ping));
        assert_eq!(
            Provider::GitHub.event(&github("push"), push),
            Ok(Event::Push(vec!["refs/heads/main".into()]))
        );
        assert_eq!(
            Provider::GitHub.event(&github("issues"), b"{}"),
            Ok(Event::Other("issues".into()))
        );
        let gitlab = headers(&[("x-gitlab-event", "Tag Push Hook".to_owned())]);
        assert_eq!(
            Provider::GitLab.event(&gitlab, br#"{"ref":"refs/tags/v1"}"#),
            Ok(Event::Push(vec!["refs/tags/v1".into()]))
        );
        let cloud = headers(&[("x-event-key", "repo:push".to_owned())]);
        let body = br#"{"push":{"changes":[{"new":{"type":"branch","name":"main"}},{"new":null}]}}"#;
        assert_eq!(
            Provider::Bitbucket.event(&cloud, body),
            Ok(Event::Push(vec!["refs/heads/main".into()]))
        );
        let server = headers(&[("x-event-key", "repo:refs_changed".to_owned())]);
        let body = br#"{"changes":[{"ref":{"id":"refs/heads/release"}}]}"#;
        assert_eq!(
            Provider::Bitbucket.event(&server, body),
            Ok(Event::Push(vec!["refs/heads/release".into()]))
        );
        assert!(matches!(
            Provider::Generic.event(&HeaderMap::new(), b"not json"),
            Err(Rejection::Malformed(_))
        ));
        // GitHub's default content type: the JSON in a form's `payload` field.
        let form = headers(&[
            ("content-type", "application/x-www-form-urlencoded".to_owned()),
            ("x-github-event", "push".to_owned()),
        ]);
        let encoded: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", r#"{"ref": "refs/heads/main"}"#)
            .finish();
        assert_eq!(
            Provider::GitHub.event(&form, encoded.as_bytes()),
            Ok(Event::Push(vec!["refs/heads/main".into()]))
        );
        assert!(matches!(
            Provider::GitHub.event(&form, b"other=1"),
            Err(Rejection::Malformed(m)) if m.contains("without a `payload` field")
        ));
    }
}
