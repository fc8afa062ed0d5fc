//! A minimal HTTP/1.1 client over a real socket, for talking to plumb's servers in tests.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP response: status, headers and body.
pub struct Response {
    pub status: u16,
    /// The status line and the headers, as received.
    pub head: String,
    pub body: String,
}

impl Response {
    /// The value of header `name` (any case), when it was sent.
    #[allow(dead_code)]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Sends `GET path` to `addr` and reads the whole response.
#[allow(dead_code)]
pub async fn get(addr: std::net::SocketAddr, path: &str) -> Response {
    send(addr, "GET", path, &[], b"").await
}

/// Sends `GET path` to `addr`; `None` when nothing listens there, or the connection closes
/// without an answer (a port between two owners).
#[allow(dead_code)]
pub async fn try_get(addr: std::net::SocketAddr, path: &str) -> Option<Response> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let raw = exchange(stream, addr, "GET", path, &[], b"").await;
    (!raw.is_empty()).then(|| parse(raw))
}

/// Sends `GET path` with `headers` to `addr`; `None` when nothing listens there yet.
#[allow(dead_code)]
pub async fn try_get_with(addr: std::net::SocketAddr, path: &str, headers: &[(&str, String)]) -> Option<Response> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let raw = exchange(stream, addr, "GET", path, headers, b"").await;
    (!raw.is_empty()).then(|| parse(raw))
}

/// Sends `GET path` with `headers` to `addr` and reads the whole response.
#[allow(dead_code)]
pub async fn get_with(addr: std::net::SocketAddr, path: &str, headers: &[(&str, String)]) -> Response {
    send(addr, "GET", path, headers, b"").await
}

/// Sends `POST path` with `headers` and `body` to `addr` and reads the whole response.
pub async fn post(addr: std::net::SocketAddr, path: &str, headers: &[(&str, String)], body: &[u8]) -> Response {
    send(addr, "POST", path, headers, body).await
}

/// `PUT path` with `headers` and `body`.
pub async fn put(addr: std::net::SocketAddr, path: &str, headers: &[(&str, String)], body: &[u8]) -> Response {
    send(addr, "PUT", path, headers, body).await
}

async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Response {
    let stream = TcpStream::connect(addr).await.expect("the server accepts");
    parse(exchange(stream, addr, method, path, headers, body).await)
}

async fn exchange(
    mut stream: TcpStream,
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        request.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    // With a body, wait for the server's go-ahead: a server refusing the request from its
    // headers (413) answers at once and closes, and a body sent anyway could make the
    // connection reset before its answer is read.
    if !body.is_empty() {
        request.push_str("Expect: 100-continue\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    if !body.is_empty() {
        let mut chunk = [0u8; 4096];
        while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
            }
        }
        if raw.starts_with(b"HTTP/1.1 100") {
            let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            raw.drain(..end);
            let _ = stream.write_all(body).await;
        }
    }
    let _ = stream.read_to_end(&mut raw).await;
    raw
}

/// The status and body of a whole response.
fn parse(raw: Vec<u8>) -> Response {
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let (head, body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_owned(), b.to_owned()))
        .unwrap_or((text.clone(), String::new()));
    Response { status, head, body }
}
