//! The agent's API as the client reads it: the configuration (conditionally), and the event
//! stream. HTTP/1.1 over TCP, or TLS with the system's certificate authorities.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as Legacy;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The most of a configuration read.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The configuration as the agent serves it.
pub struct Served {
    pub commit: String,
    pub value: Value,
    pub etag: Option<String>,
}

#[derive(Clone)]
pub struct Client {
    inner: Legacy<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    url: String,
    token: Option<String>,
}

impl Client {
    pub fn new(url: String, token: Option<String>) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let tls =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Client {
            inner: Legacy::builder(TokioExecutor::new()).build(connector),
            url,
            token,
        }
    }

    fn request(&self, url: &str, headers: &[(&str, String)]) -> Result<Request<Empty<Bytes>>, String> {
        let mut request = Request::get(url);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.body(Empty::new()).map_err(|e| e.to_string())
    }

    /// The configuration now; `None` when it is still `etag`.
    pub async fn read(&self, etag: Option<&str>) -> Result<Option<Served>, String> {
        let headers: Vec<(&str, String)> = etag.map(|t| ("if-none-match", t.to_owned())).into_iter().collect();
        let answer = self
            .inner
            .request(self.request(&self.url, &headers)?)
            .await
            .map_err(|e| format!("the agent at {}: {}", self.url, chain(&e)))?;
        let status = answer.status();
        if status == hyper::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        let etag = answer
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = Limited::new(answer.into_body(), BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| format!("the agent at {}: {e}", self.url))?
            .to_bytes();
        let body: Value = serde_json::from_slice(&body).map_err(|e| format!("the agent at {}: {e}", self.url))?;
        if !status.is_success() {
            let said = body["error"].as_str().unwrap_or_default();
            return Err(format!("the agent at {}: {status}: {said}", self.url));
        }
        Ok(Some(Served {
            commit: body["commit"].as_str().unwrap_or_default().to_owned(),
            value: body["value"].clone(),
            etag,
        }))
    }

    /// The event stream, resumed after `last` when given.
    pub async fn events(&self, last: Option<i64>) -> Result<Incoming, String> {
        let url = format!("{}/events", self.url);
        let mut headers = vec![("accept", "text/event-stream".to_owned())];
        headers.extend(last.map(|id| ("last-event-id", id.to_string())));
        let answer = self
            .inner
            .request(self.request(&url, &headers)?)
            .await
            .map_err(|e| format!("the agent at {url}: {}", chain(&e)))?;
        if !answer.status().is_success() {
            return Err(format!("the event stream at {url} answered {}", answer.status()));
        }
        Ok(answer.into_body())
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut said = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        said = format!("{said}: {cause}");
        source = cause.source();
    }
    said
}
