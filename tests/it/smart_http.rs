//! Fetching over HTTP and HTTPS with a token from git's own `git http-backend`, run as a CGI
//! program behind a small loopback server that demands HTTP basic authentication, as forges do
//! (for HTTPS, nginx terminates TLS in front of it with a certificate from a private authority).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use plumb::secret::Secret;
use plumb::source::{Auth, Cache, Remote, SourceError, TrackedRef};
use tokio::io::AsyncWriteExt;

use crate::harness::TestRepo;

const TOKEN: &str = "glpat-test-token";

struct Backend {
    root: PathBuf,
    expected: String,
}

/// Serves the repositories under `root` at `http://addr/<name>` for user `bot` with `TOKEN`.
async fn serve(root: PathBuf) -> SocketAddr {
    let backend = Arc::new(Backend {
        root,
        expected: format!("Basic {}", base64(format!("bot:{TOKEN}").as_bytes())),
    });
    let app = axum::Router::new().fallback(cgi).with_state(backend);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn cgi(State(backend): State<Arc<Backend>>, request: Request) -> Response {
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(backend.expected.as_str());
    if !authorized {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, "Basic realm=\"git\"")
            .body(Body::empty())
            .unwrap();
    }
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    let content_type = header_value(&parts.headers, header::CONTENT_TYPE);
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", &backend.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", content_type)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", "bot")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("git http-backend runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&body).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let split = output
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("CGI headers end");
    let head = String::from_utf8_lossy(&output.stdout[..split]).into_owned();
    let mut response = Response::builder().status(StatusCode::OK);
    for line in head.lines() {
        let (name, value) = line.split_once(':').unwrap();
        if name.eq_ignore_ascii_case("status") {
            let code: u16 = value.trim()[..3].parse().unwrap();
            response = response.status(code);
        } else {
            response = response.header(name.trim(), value.trim());
        }
    }
    response.body(Body::from(output.stdout[split + 4..].to_vec())).unwrap()
}

fn header_value(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_over_http_with_a_token_and_refuses_a_wrong_one() {
    let mut upstream = TestRepo::example();
    let head = upstream.commit("Example");
    let reference = {
        let head = upstream.git().find_reference("HEAD").unwrap();
        TrackedRef::new(head.symbolic_target().unwrap().unwrap())
    };
    let addr = serve(upstream.path().parent().unwrap().to_owned()).await;
    let name = upstream.path().file_name().unwrap().to_str().unwrap().to_owned();
    let remote = |token: &str| Remote {
        auth: Auth::Token {
            username: "bot".to_owned(),
            token: Secret::new(token),
        },
        ..Remote::anonymous(format!("http://{addr}/{name}"))
    };
    let fetch = move |remote: Remote, reference: TrackedRef| {
        tokio::task::spawn_blocking(move || {
            let dir = tempfile::tempdir().unwrap();
            let mut cache = Cache::open(dir.path(), remote)?;
            cache.fetch(&[reference]).map(|f| f.heads[0].2.to_string())
        })
    };

    let fetched = fetch(remote(TOKEN), reference.clone()).await.unwrap().unwrap();
    assert_eq!(fetched, head);

    let refused = fetch(remote("wrong"), reference.clone()).await.unwrap().unwrap_err();
    assert!(matches!(refused, SourceError::Refused { .. }), "{refused:?}");
    let anonymous = fetch(Remote::anonymous(format!("http://{addr}/{name}")), reference)
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        anonymous.to_string().contains("not configured for this repository"),
        "{anonymous}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_over_https_from_a_host_with_a_private_authority() {
    let mut upstream = TestRepo::example();
    let head = upstream.commit("Example");
    let reference = {
        let head = upstream.git().find_reference("HEAD").unwrap();
        TrackedRef::new(head.symbolic_target().unwrap().unwrap())
    };
    let backend = serve(upstream.path().parent().unwrap().to_owned()).await;
    let certs = tempfile::tempdir().unwrap();
    crate::tls::certificates(certs.path());
    let tls = crate::tls::Terminator::start(certs.path(), backend);
    let name = upstream.path().file_name().unwrap().to_str().unwrap().to_owned();
    let remote = Remote {
        auth: Auth::Token {
            username: "bot".to_owned(),
            token: Secret::new(TOKEN),
        },
        ..Remote::anonymous(format!("https://127.0.0.1:{}/{name}", tls.addr.port()))
    };
    let fetch = move |remote: Remote, reference: TrackedRef| {
        tokio::task::spawn_blocking(move || {
            let dir = tempfile::tempdir().unwrap();
            let mut cache = Cache::open(dir.path(), remote)?;
            cache.fetch(&[reference]).map(|f| f.heads[0].2.to_string())
        })
    };

    // Not trusted yet: the host's certificate is refused, nothing is fetched.
    let refused = fetch(remote.clone(), reference.clone()).await.unwrap().unwrap_err();
    let said = refused.to_string();
    assert!(
        said.starts_with("cannot fetch from https://127.0.0.1") && said.to_lowercase().contains("certificate"),
        "{said}"
    );

    // With the authority trusted (the agent's `caFile`), the fetch goes through TLS with the token.
    plumb::source::trust_authorities(&certs.path().join("ca.pem")).unwrap();
    let fetched = fetch(remote, reference).await.unwrap().unwrap();
    assert_eq!(fetched, head);
}
