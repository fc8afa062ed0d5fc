//! The demo's notification receiver: a webhook on loopback that checks each message's
//! signature, as a real receiver would, and keeps its summary for the tour to print — so the
//! tour shows what a team's chat or pager would be told. (The tour prints from the thread that
//! holds standard output; the receiver only hands lines over.)

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::secret::{Secret, constant_time_eq};

/// What the receiver was told, one line per message, until taken.
#[derive(Clone, Default)]
pub struct Told(Arc<Mutex<Vec<String>>>);

impl Told {
    /// The lines received since the last call.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn push(&self, line: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
}

/// Starts the receiver on a loopback port until `stop`; returns its URL and what it is told.
pub async fn start(secret: Secret, stop: CancellationToken) -> anyhow::Result<(String, Told)> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let told = Told::default();
    let routes = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state((secret, told.clone()));
    tokio::spawn(async move {
        let served = axum::serve(listener, routes).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = served.await {
            eprintln!("The demo's notification receiver stopped: {e}");
        }
    });
    Ok((url, told))
}

async fn receive(State((secret, told)): State<(Secret, Told)>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let said = headers
        .get("x-plumb-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let expected = format!(
        "sha256={}",
        crate::notify::webhook::signature(secret.expose().as_bytes(), &body)
    );
    if !constant_time_eq(said.as_bytes(), expected.as_bytes()) {
        told.push("   ✉ webhook: a message with a wrong signature, refused".to_owned());
        return StatusCode::UNAUTHORIZED;
    }
    let notice: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    told.push(format!(
        "   ✉ webhook: {} (signed; delivery {})",
        notice["summary"].as_str().unwrap_or("?"),
        notice["delivery"]
            .as_str()
            .unwrap_or("?")
            .chars()
            .take(8)
            .collect::<String>()
    ));
    StatusCode::NO_CONTENT
}
