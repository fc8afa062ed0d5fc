//! The HTTP client the channels post with (and the image gate reads registries with): HTTPS
//! through rustls with the system's certificate authorities (and a channel's own CA file), a
//! deadline on every request, answers read up to a limit, and each answer sorted into
//! delivered, to retry (when, if the receiver says) and refused for good.

use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long one request may take, connection included.
const DEADLINE: Duration = Duration::from_secs(15);

/// The most of an answer's body kept (for the status and `plumb notify test`).
const ANSWER_LIMIT: usize = 64 * 1024;

/// The longest wait a receiver's `Retry-After` is taken for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The system's certificate authorities, read once.
static SYSTEM_ROOTS: LazyLock<rustls::RootCertStore> = LazyLock::new(|| {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!("No system certificate authority was found: https:// channels need their own `caFile`.");
    }
    roots
});

/// A client for one channel.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// A receiver's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// How long the receiver asks to wait before trying again (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// The body, up to 64 KiB.
    pub body: String,
}

/// How a try went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sent {
    /// The receiver took it; what it said.
    Delivered(String),
    /// Not now: why, and when the receiver asks to be tried again.
    Retry(String, Option<Duration>),
    /// The receiver refused it for good.
    Rejected(String),
}

impl Answer {
    /// The status and the start of the body, in one line.
    pub fn said(&self) -> String {
        let body: String = self.body.chars().take(300).collect();
        let body = body.split_whitespace().collect::<Vec<_>>().join(" ");
        if body.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            format!("HTTP {}: {body}", self.status)
        }
    }

    /// Delivered on 2xx; tried again on 408, 425, 429 and 5xx (after `Retry-After` when
    /// given); refused for good on any other answer.
    pub fn sorted(&self) -> Sent {
        match self.status {
            200..=299 => Sent::Delivered(self.said()),
            408 | 425 | 429 | 500..=599 => Sent::Retry(self.said(), self.retry_after),
            _ => Sent::Rejected(self.said()),
        }
    }
}

/// Whether `url` can be posted to: `https://` or `http://` with a host, no credentials in it.
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: axum::http::Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("https" | "http") => {}
        _ => return Err(format!("`{url}` must start with https:// (or http://)")),
    }
    let authority = uri.authority().ok_or_else(|| format!("`{url}` names no host"))?;
    if authority.as_str().contains('@') {
        return Err("a URL must not hold credentials: give them in a file".to_owned());
    }
    Ok(())
}

impl Client {
    /// A client trusting the system's authorities and those in `ca_file`.
    pub fn new(ca_file: Option<&Path>) -> Result<Client, String> {
        let mut roots = SYSTEM_ROOTS.clone();
        if let Some(file) = ca_file {
            for root in crate::tls::roots(file)?.roots {
                roots.roots.push(root);
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(Arc::new(roots))
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(DEADLINE));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Client {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Sends `method url` with `headers` and `body`; the answer, or why there is none.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(url)
            .header("user-agent", concat!("plumb/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("cannot make the request: {e}"))?;
        let exchange = async {
            let response = self.inner.request(request).await.map_err(|e| crate::error::chain(&e))?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(retry_after);
            // A receiver that says more than the limit is cut off: its status is what counts.
            let body = match Limited::new(response.into_body(), ANSWER_LIMIT).collect().await {
                Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
                Err(_) => String::new(),
            };
            Ok(Answer {
                status,
                retry_after,
                body,
            })
        };
        match tokio::time::timeout(DEADLINE, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {} s", DEADLINE.as_secs())),
        }
    }
}

/// An answer read whole (up to a limit), with its headers: what a registry says.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: axum::http::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Client {
    /// `GET url` with `headers`, its body read up to `limit` bytes (a longer one is an error:
    /// a registry's manifests and signatures are small, and a truncated one would not hash).
    pub async fn fetch(&self, url: &str, headers: &[(&str, &str)], limit: usize) -> Result<Fetched, String> {
        let mut request = axum::http::Request::builder()
            .method("GET")
            .uri(url)
            .header("user-agent", concat!("plumb/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("cannot make the request: {e}"))?;
        let exchange = async {
            let response = self.inner.request(request).await.map_err(|e| crate::error::chain(&e))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| format!("the answer is cut off: {e}"))?
                .to_bytes();
            Ok(Fetched { status, headers, body })
        };
        match tokio::time::timeout(DEADLINE, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {} s", DEADLINE.as_secs())),
        }
    }
}

/// A `Retry-After` value (seconds, or an HTTP date) as a wait, at most an hour.
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_sorted_by_status() {
        let answer = |status, retry_after| Answer {
            status,
            retry_after,
            body: "  said\n so ".to_owned(),
        };
        assert_eq!(
            answer(204, None).sorted(),
            Sent::Delivered("HTTP 204: said so".to_owned())
        );
        let later = Some(Duration::from_secs(3));
        assert_eq!(
            answer(429, later).sorted(),
            Sent::Retry("HTTP 429: said so".to_owned(), later)
        );
        assert!(matches!(answer(503, None).sorted(), Sent::Retry(_, None)));
        assert!(matches!(answer(404, None).sorted(), Sent::Rejected(_)));
        assert!(matches!(answer(401, None).sorted(), Sent::Rejected(_)));
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_capped() {
        assert_eq!(retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(retry_after("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn urls_must_be_http_without_credentials() {
        assert!(check_url("https://hooks.example.com/plumb").is_ok());
        assert!(check_url("http://127.0.0.1:8080/x").is_ok());
        assert!(check_url("ftp://example.com/").is_err());
        assert!(check_url("https://user:pw@example.com/").is_err());
        assert!(check_url("not a url").is_err());
    }
}
