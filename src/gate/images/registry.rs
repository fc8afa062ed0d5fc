//! What the image gate reads from a registry, over the OCI distribution API: an image's
//! manifest (its digest computed from the bytes, never taken on the registry's word), the
//! cosign signature manifest stored beside it (`sha256-<hex>.sig`), the index of the artifacts
//! that refer to it (the referrers API), and blobs, each checked against its digest, followed
//! through the redirects registries send blobs by. Anonymous pulls,
//! with the bearer token a registry hands out for them (`WWW-Authenticate: Bearer realm=…`,
//! fetched over HTTPS and sent to the registry alone), or with the registry's login (`Basic`, or
//! sent to the token realm for a token) when the registry asks for one.

use sha2::{Digest, Sha256};

use super::logins::{Login, Logins, NoLogin};
use super::reference::{Reference, is_loopback};
use crate::notify::http::{Client, Fetched};

/// The most bytes a manifest or a signature's payload may have.
const LIMIT: usize = 4 << 20;

/// The most redirects followed for one blob.
const REDIRECTS: usize = 5;

/// The manifest kinds asked for: an index (several platforms) or one image's.
const MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// The pages of the referrers API read, and why it stopped before the last, when it did.
#[derive(Default)]
pub struct Listing {
    /// Each page's body.
    pub pages: Vec<Vec<u8>>,
    /// Why a later page could not be read.
    pub stopped: Option<String>,
}

/// What the referrers API answers with.
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The most pages of the referrers API read.
const PAGES: usize = 4;

/// Why a registry could not be read: it is unavailable (try again later), or it answered
/// something that settles the matter (the image is not there).
#[derive(Debug)]
pub enum Unread {
    /// Not reachable, or an error on its side.
    Unavailable(String),
    /// The answer settles it.
    Refused(String),
}

/// One repository of one registry, with the `Authorization` it asked for.
pub struct Registry<'a> {
    client: &'a Client,
    logins: &'a Logins,
    /// The registry's host, as logins are kept by.
    host: String,
    base: String,
    repository: String,
    authorization: Option<String>,
    /// Whether `authorization` was made with the registry's login.
    logged_in: bool,
}

impl<'a> Registry<'a> {
    /// The repository `reference` names, read with the registry's login in `logins` when it
    /// asks for one.
    pub fn new(client: &'a Client, reference: &Reference, logins: &'a Logins) -> Registry<'a> {
        Registry {
            client,
            logins,
            host: reference.registry.clone(),
            base: reference.base_url(),
            repository: reference.repository.clone(),
            authorization: None,
            logged_in: false,
        }
    }

    /// The manifest `reference` (a tag or a digest) names, and its digest; `None` when the
    /// registry has none.
    pub async fn manifest(&mut self, reference: &str) -> Result<Option<(String, Vec<u8>)>, Unread> {
        let url = format!("{}/v2/{}/manifests/{reference}", self.base, self.repository);
        let answer = self.get(&url, Some(MANIFESTS)).await?;
        match answer.status {
            200 => {
                let digest = sha256(&answer.body);
                if reference.starts_with("sha256:") && reference != digest {
                    return Err(Unread::Refused(format!(
                        "the registry answered {reference} with a manifest whose digest is {digest}"
                    )));
                }
                Ok(Some((digest, answer.body.to_vec())))
            }
            404 => Ok(None),
            status => Err(said(status, &url)),
        }
    }

    /// The pages of the image index the registry's referrers API lists the artifacts that
    /// refer to the manifest `digest` in (OCI distribution 1.1), following its `Link` to the
    /// next page a few times (on this registry only); `None` when the registry has no such API
    /// (it answers 404, 400 or 406, or with something other than an index, as clients take it).
    pub async fn referrers(&mut self, digest: &str) -> Result<Option<Listing>, Unread> {
        let mut url = format!("{}/v2/{}/referrers/{digest}", self.base, self.repository);
        let mut listing = Listing::default();
        let pages = &mut listing.pages;
        while pages.len() < PAGES {
            let answer = self.get(&url, Some(INDEX)).await?;
            let kind = answer.headers.get("content-type").and_then(|v| v.to_str().ok());
            let index = kind.is_some_and(|k| k.split(';').next().is_some_and(|k| k.trim() == INDEX));
            let stopped = match answer.status {
                200 if index => None,
                200 | 400 | 404 | 406 if pages.is_empty() => return Ok(None),
                200 => Some(Unread::Refused(format!(
                    "{url} answered with `{}`, not an image index",
                    kind.unwrap_or("no content type")
                ))),
                status => Some(said(status, &url)),
            };
            // A later page that settles nothing ends the listing with the pages read; one the
            // registry cannot serve now holds the check back.
            match stopped {
                None => {}
                Some(Unread::Refused(why)) if !pages.is_empty() => {
                    listing.stopped = Some(why);
                    break;
                }
                Some(unread) => return Err(unread),
            }
            let next = answer
                .headers
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(next_page);
            pages.push(answer.body.to_vec());
            // Only pages of this registry: its token goes nowhere else.
            match next.map(|next| self.follow(&url, &next)) {
                Some(Ok(next)) if next.starts_with(&format!("{}/", self.base)) => url = next,
                _ => break,
            }
        }
        Ok(Some(listing))
    }

    /// The blob `digest`, checked against it. Registries often send blobs from elsewhere (a
    /// CDN) by redirect: followed a few times, the registry's token sent only to the registry.
    pub async fn blob(&mut self, digest: &str) -> Result<Vec<u8>, Unread> {
        let mut url = format!("{}/v2/{}/blobs/{digest}", self.base, self.repository);
        let mut answer = self.get(&url, None).await?;
        for _ in 0..REDIRECTS {
            if !(300..400).contains(&answer.status) {
                break;
            }
            let Some(location) = answer.headers.get("location").and_then(|v| v.to_str().ok()) else {
                break;
            };
            url = self.follow(&url, location)?;
            answer = if url.starts_with(&format!("{}/", self.base)) {
                self.get(&url, None).await?
            } else {
                self.client
                    .fetch(&url, &[], LIMIT)
                    .await
                    .map_err(|e| Unread::Unavailable(format!("{url}: {e}")))?
            };
        }
        if answer.status != 200 {
            return Err(said(answer.status, &url));
        }
        let found = sha256(&answer.body);
        if found != digest {
            return Err(Unread::Refused(format!(
                "the blob {digest} the registry sent hashes to {found}"
            )));
        }
        Ok(answer.body.to_vec())
    }

    /// `GET url`, authorizing first as the registry asks when it wants that.
    async fn get(&mut self, url: &str, accept: Option<&str>) -> Result<Fetched, Unread> {
        let mut retried = false;
        loop {
            let mut headers = Vec::new();
            if let Some(accept) = accept {
                headers.push(("accept", accept));
            }
            if let Some(authorization) = &self.authorization {
                headers.push(("authorization", authorization.as_str()));
            }
            let answer = self
                .client
                .fetch(url, &headers, LIMIT)
                .await
                .map_err(|e| Unread::Unavailable(format!("{url}: {e}")))?;
            if matches!(answer.status, 401 | 403) && (retried || answer.status == 403) {
                return Err(self.denied(answer.status, url));
            }
            if answer.status != 401 {
                return Ok(answer);
            }
            let challenge = answer
                .headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            self.authorization = Some(self.authorize(&challenge).await?);
            retried = true;
        }
    }

    /// Why `by` answering `status` (401 or 403) settles it. With no login to send, the image is
    /// refused: it may not exist, or be private. A login sent and refused, or one written that
    /// plumb cannot send, is the agent's operator's to mend: the commit waits.
    fn denied(&self, status: u16, by: &str) -> Unread {
        let what = format!("{by} answered HTTP {status}");
        match (self.logged_in, self.logins.of(&self.host)) {
            (true, _) if status == 401 => {
                Unread::Unavailable(format!("{what}: it refused the login for {}", self.host))
            }
            (true, _) => Unread::Unavailable(format!(
                "{what}: the login for {} may not pull {}",
                self.host, self.repository
            )),
            (false, Err(NoLogin::Unusable(why))) => Unread::Unavailable(format!("{what}: {why}")),
            (false, Err(NoLogin::None(why))) => Unread::Refused(format!(
                "{what}: the image does not exist, or cannot be pulled without a login, and {why}"
            )),
            (false, Ok(_)) => Unread::Refused(format!(
                "{what}: the image does not exist, or cannot be pulled anonymously"
            )),
        }
    }

    /// The `Authorization` that answers `challenge`: the registry's login with `Basic`, or a
    /// token from the realm a `Bearer` challenge names (schemes in any case, as HTTP has them).
    async fn authorize(&mut self, challenge: &str) -> Result<String, Unread> {
        let (scheme, params) = challenge.trim().split_once(' ').unwrap_or((challenge.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(login) = self.logins.of(&self.host) else {
                return Err(self.denied(401, &self.base));
            };
            self.logged_in = true;
            return Ok(login.basic());
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            return Ok(format!("Bearer {}", self.token(params, challenge).await?));
        }
        Err(Unread::Refused(format!(
            "the registry {} asks for credentials plumb does not send (`{challenge}`)",
            self.base
        )))
    }

    /// Where a redirect from `from` to `location` goes: an absolute URL, or a path on the same
    /// registry; over HTTPS unless the registry itself is on the loopback address.
    fn follow(&self, from: &str, location: &str) -> Result<String, Unread> {
        let to = if location.starts_with('/') {
            let origin_end = from.find("://").map_or(0, |i| i + 3);
            let origin = from[origin_end..].find('/').map_or(from, |i| &from[..origin_end + i]);
            format!("{origin}{location}")
        } else {
            location.to_owned()
        };
        if secure(&to) {
            Ok(to)
        } else {
            Err(Unread::Refused(format!(
                "{from} redirects to `{to}`, which is not an HTTPS URL"
            )))
        }
    }

    /// A pull token from the realm a `Bearer` challenge's `params` name: with the registry's
    /// login when there is one, anonymous otherwise.
    async fn token(&mut self, params: &str, challenge: &str) -> Result<String, Unread> {
        let param = |name: &str| {
            params.split(',').find_map(|p| {
                let (key, value) = p.trim().split_once('=')?;
                (key == name).then(|| value.trim_matches('"').to_owned())
            })
        };
        let realm = param("realm").ok_or_else(|| Unread::Refused(format!("`{challenge}` names no realm")))?;
        // The login and the token go over HTTPS (plain HTTP only on the loopback address).
        if !secure(&realm) {
            return Err(Unread::Refused(format!(
                "the registry {} hands out tokens at `{realm}`, which is not an HTTPS URL",
                self.base
            )));
        }
        let scope = param("scope").unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        let separator = if realm.contains('?') { '&' } else { '?' };
        let mut url = format!(
            "{realm}{separator}scope={}",
            form_urlencoded::byte_serialize(scope.as_bytes()).collect::<String>()
        );
        if let Some(service) = param("service") {
            url.push_str("&service=");
            url.extend(form_urlencoded::byte_serialize(service.as_bytes()));
        }
        let basic = self.logins.of(&self.host).ok().map(Login::basic);
        let headers: Vec<(&str, &str)> = basic.iter().map(|b| ("authorization", b.as_str())).collect();
        let answer = self
            .client
            .fetch(&url, &headers, 64 * 1024)
            .await
            .map_err(|e| Unread::Unavailable(format!("{realm}: {e}")))?;
        self.logged_in = basic.is_some();
        if matches!(answer.status, 401 | 403) {
            return Err(self.denied(answer.status, &realm));
        }
        if answer.status != 200 {
            return Err(said(answer.status, &realm));
        }
        let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| Unread::Refused(format!("{realm} handed out no token")))
    }
}

/// Whether a login or a token may go to `url`: over HTTPS, or plain HTTP on the loopback
/// address.
fn secure(url: &str) -> bool {
    match url.strip_prefix("http://") {
        Some(rest) => is_loopback(rest.split(['/', '?', '#']).next().unwrap_or(rest)),
        None => url.starts_with("https://"),
    }
}

/// The URL a `Link` header names as the next page (`<url>; rel="next"`).
fn next_page(link: &str) -> Option<String> {
    link.split(',').find_map(|item| {
        let (target, params) = item.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"")
            .then(|| target.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
    })
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn said(status: u16, url: &str) -> Unread {
    let what = format!("{url} answered HTTP {status}");
    match status {
        // Only where a registry sent a blob by redirect: its own answers are `denied`.
        401 | 403 => Unread::Refused(format!("{what}: the blob's store denied it")),
        300..=399 | 408 | 429 | 500..=599 => Unread::Unavailable(what),
        _ => Unread::Refused(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_go_over_https_unless_the_registry_is_on_loopback() {
        let client = Client::new(None).unwrap();
        let logins = Logins::default();
        let remote = Reference::parse("ghcr.io/acme/web:1").unwrap();
        let registry = Registry::new(&client, &remote, &logins);
        let from = "https://ghcr.io/v2/acme/web/blobs/sha256:00";
        assert_eq!(
            registry
                .follow(from, "https://cdn.example.net/blob?sig=1")
                .ok()
                .as_deref(),
            Some("https://cdn.example.net/blob?sig=1")
        );
        assert_eq!(
            registry.follow(from, "/v2/acme/web/blobs/elsewhere").ok().as_deref(),
            Some("https://ghcr.io/v2/acme/web/blobs/elsewhere")
        );
        assert!(matches!(
            registry.follow(from, "http://169.254.169.254/latest"),
            Err(Unread::Refused(_))
        ));
        let local = Reference::parse("localhost:5000/web:1").unwrap();
        let registry = Registry::new(&client, &local, &logins);
        assert!(
            registry
                .follow("http://localhost:5000/v2/web/blobs/x", "http://localhost:5000/y")
                .is_ok()
        );
        // A registry on the loopback address does not make plain HTTP elsewhere safe.
        assert!(
            registry
                .follow("http://localhost:5000/x", "http://cdn.example.net/y")
                .is_err()
        );
        assert!(secure("https://auth.docker.io/token") && secure("http://127.0.0.1:5000/token?x=1"));
        assert!(!secure("http://auth.example.com/token") && !secure("http://localhost.example.com/token"));
    }

    /// The token exchange as Docker Hub and GitHub's registry run it, which no registry
    /// packaged here does (the distribution registry's token mode needs a token server beside
    /// it): a `Bearer` challenge (its scheme in lower case), the login sent to the realm with
    /// `Basic`, the token it hands out sent to the registry.
    #[tokio::test]
    async fn a_login_is_exchanged_at_the_realm_for_a_token() {
        use axum::http::{HeaderMap, StatusCode, header};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let basic = format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:s3cret")
        );
        let challenge = format!(r#"bearer realm="http://{addr}/token",service="test",scope="repository:web:pull""#);
        let app = axum::Router::new()
            .route(
                "/token",
                axum::routing::get(move |headers: HeaderMap| async move {
                    match headers.get(header::AUTHORIZATION) {
                        Some(sent) if *sent == *basic => (StatusCode::OK, r#"{"token": "pull-web"}"#),
                        _ => (StatusCode::UNAUTHORIZED, "{}"),
                    }
                }),
            )
            .route(
                "/v2/web/manifests/1",
                axum::routing::get(move |headers: HeaderMap| async move {
                    match headers.get(header::AUTHORIZATION) {
                        Some(sent) if sent == "Bearer pull-web" => {
                            (StatusCode::OK, [(header::WWW_AUTHENTICATE, String::new())], "{}")
                        }
                        _ => (
                            StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, challenge.clone())],
                            "{}",
                        ),
                    }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let logins = |auth: &str| {
            let file = dir.path().join("config.json");
            let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, auth);
            std::fs::write(&file, format!(r#"{{"auths": {{"{addr}": {{"auth": "{auth}"}}}}}}"#)).unwrap();
            Logins::read(&file).unwrap()
        };
        let client = Client::new(None).unwrap();
        let reference = Reference::parse(&format!("{addr}/web:1")).unwrap();

        let alice = logins("alice:s3cret");
        let found = Registry::new(&client, &reference, &alice).manifest("1").await;
        assert!(matches!(found, Ok(Some(_))), "{found:?}");
        let wrong = logins("alice:wrong");
        match Registry::new(&client, &reference, &wrong).manifest("1").await {
            Err(Unread::Unavailable(why)) => assert!(why.contains("it refused the login for"), "{why}"),
            other => panic!("{other:?}"),
        }
        let none = Logins::default();
        match Registry::new(&client, &reference, &none).manifest("1").await {
            Err(Unread::Refused(why)) => assert!(why.contains("cannot be pulled without a login"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
