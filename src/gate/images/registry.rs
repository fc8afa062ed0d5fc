//! What the image gate reads from a registry, over the OCI distribution API: an image's
//! manifest (its digest computed from the bytes, never taken on the registry's word), the
//! cosign signature manifest stored beside it (`sha256-<hex>.sig`), and blobs, each checked
//! against its digest, followed through the redirects registries send blobs by. Anonymous pulls,
//! with the bearer token a registry hands out for them (`WWW-Authenticate: Bearer realm=…`,
//! fetched over HTTPS and sent to the registry alone), or with the registry's login (`Basic`, or
//! sent to the token realm for a token) when the registry asks for one.

use sha2::{Digest, Sha256};

use super::logins::Logins;
use super::reference::Reference;
use crate::notify::http::{Client, Fetched};

/// The most bytes a manifest or a signature's payload may have.
const LIMIT: usize = 4 << 20;

/// The most redirects followed for one blob.
const REDIRECTS: usize = 5;

/// The manifest kinds asked for: an index (several platforms) or one image's.
const MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

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

    /// Why `url` answering `status` (401 or 403) once authorized settles it.
    fn denied(&self, status: u16, url: &str) -> Unread {
        let what = format!("{url} answered HTTP {status}");
        Unread::Refused(match (self.logged_in, self.logins.of(&self.host)) {
            (true, _) if status == 401 => format!("{what}: the registry refused the login for {}", self.host),
            (true, _) => format!("{what}: the login for {} may not pull {}", self.host, self.repository),
            (false, Err(why)) => format!("{what}: the image cannot be pulled without a login, and {why}"),
            (false, Ok(_)) => format!("{what}: the image cannot be pulled anonymously"),
        })
    }

    /// The `Authorization` that answers `challenge`: the registry's login with `Basic`, or a
    /// token from the realm a `Bearer` challenge names.
    async fn authorize(&mut self, challenge: &str) -> Result<String, Unread> {
        if challenge.starts_with("Basic ") || challenge == "Basic" {
            let login = self
                .logins
                .of(&self.host)
                .map_err(|why| Unread::Refused(format!("the registry {} asks for a login: {why}", self.host)))?;
            self.logged_in = true;
            return Ok(login.basic());
        }
        Ok(format!("Bearer {}", self.token(challenge).await?))
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
        if to.starts_with("https://") || (to.starts_with("http://") && self.base.starts_with("http://")) {
            Ok(to)
        } else {
            Err(Unread::Refused(format!(
                "{from} redirects to `{to}`, which is not an HTTPS URL"
            )))
        }
    }

    /// A pull token from the realm `challenge` names: with the registry's login when there is
    /// one, anonymous otherwise.
    async fn token(&mut self, challenge: &str) -> Result<String, Unread> {
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            return Err(Unread::Refused(format!(
                "the registry {} asks for credentials plumb does not send (`{challenge}`)",
                self.base
            )));
        };
        let param = |name: &str| {
            params.split(',').find_map(|p| {
                let (key, value) = p.trim().split_once('=')?;
                (key == name).then(|| value.trim_matches('"').to_owned())
            })
        };
        let realm = param("realm").ok_or_else(|| Unread::Refused(format!("`{challenge}` names no realm")))?;
        // The token comes over HTTPS (plain HTTP only beside a registry on the loopback address).
        if !(realm.starts_with("https://") || (realm.starts_with("http://") && self.base.starts_with("http://"))) {
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
        // The login goes to the realm its own registry names, over HTTPS as checked above.
        let basic = self.logins.of(&self.host).ok().map(|login| login.basic());
        let headers: Vec<(&str, &str)> = basic.iter().map(|b| ("authorization", b.as_str())).collect();
        self.logged_in = basic.is_some();
        let answer = self
            .client
            .fetch(&url, &headers, 64 * 1024)
            .await
            .map_err(|e| Unread::Unavailable(format!("{realm}: {e}")))?;
        if matches!(answer.status, 401 | 403) {
            let why = match self.logins.of(&self.host) {
                Ok(_) => format!("it refused the login for {}", self.host),
                Err(none) => format!("it hands out no token without a login, and {none}"),
            };
            return Err(Unread::Refused(format!(
                "{realm} answered HTTP {}: {why}",
                answer.status
            )));
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

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn said(status: u16, url: &str) -> Unread {
    let what = format!("{url} answered HTTP {status}");
    match status {
        401 | 403 => Unread::Refused(format!("{what}: access denied")),
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
    }
}
