//! A recording HTTP receiver on loopback, for the notification channels: it answers each
//! request as its script says (by what was asked and how many came before) and keeps every
//! request with the status it got.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

/// A request as received, and the status it was answered with.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// The path and query.
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// What to answer: status, headers, body.
pub type Answer = (u16, Vec<(&'static str, String)>, String);

/// Answers a request, given it (status not yet set) and how many requests came before it.
pub type Script = Arc<dyn Fn(&Received, usize) -> Answer + Send + Sync>;

#[derive(Clone)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<RwLock<Script>>,
}

/// A receiver listening on a loopback port until dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver answering as `script` says.
    pub async fn start(script: Script) -> Receiver {
        let shared = Shared {
            received: Arc::default(),
            script: Arc::new(RwLock::new(script)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes = axum::Router::new().fallback(answer).with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, routes).await.unwrap();
        });
        Receiver { addr, shared, task }
    }

    /// Answers from now on as `script` says.
    pub fn answer_with(&self, script: Script) {
        *self.shared.script.write().unwrap() = script;
    }

    /// Everything received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The URL of `path` here.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Always `status` with an empty body.
pub fn always(status: u16) -> Script {
    Arc::new(move |_, _| (status, Vec::new(), String::new()))
}

async fn answer(State(shared): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut received = Received {
        method: method.to_string(),
        path: uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect(),
        body: body.to_vec(),
        status: 0,
    };
    let script = shared.script.read().unwrap().clone();
    let before = shared.received.lock().unwrap().len();
    let (status, headers, body) = script(&received, before);
    received.status = status;
    shared.received.lock().unwrap().push(received);
    let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
    for (name, value) in headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}
