//! The built-in HTTP router of the local target: it listens on a service's stable port and
//! forwards each request to a replica of one of two slots, split by weight, so blue-green is a
//! weight flip (atomic: the next request goes to the new slot) and canary a 10/90 split. It
//! counts each slot's answers by status class and latency, which canary analysis reads.
//!
//! Slots are chosen by smooth weighted round-robin (as nginx does), not at random: 10/90 sends
//! exactly one request in ten to the first slot, and the counts are reproducible.

mod stats;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::body::HttpBody;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

pub use stats::{SlotStats, StatusClass};

/// Where one slot's replicas listen, and its share of traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// The slot's name (`blue`, `green`).
    pub slot: String,
    /// Its share, relative to the other backends' (0 takes no traffic).
    pub weight: u32,
    /// Its replicas' addresses, served round-robin.
    pub replicas: Vec<SocketAddr>,
}

/// The routing table and the counters, shared by the request handlers.
struct Table {
    backends: Vec<Backend>,
    /// Smooth weighted round-robin state, one per backend.
    current: Vec<i64>,
    /// Round-robin position per backend.
    next_replica: Vec<usize>,
    stats: std::collections::BTreeMap<String, SlotStats>,
}

/// A running router.
#[derive(Clone)]
pub struct Router {
    table: Arc<Mutex<Table>>,
    addr: SocketAddr,
}

/// The answers per slot of several routers (one service's ports), added up.
pub fn total(routers: &[Router]) -> std::collections::BTreeMap<String, SlotStats> {
    let mut total: std::collections::BTreeMap<String, SlotStats> = std::collections::BTreeMap::new();
    for router in routers {
        for (slot, stats) in router.stats() {
            total.entry(slot).or_default().add(&stats);
        }
    }
    total
}

/// Why a router could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

#[derive(Clone)]
struct Shared {
    table: Arc<Mutex<Table>>,
    client: Client<HttpConnector, Body>,
}

impl Router {
    /// Listens on `addr` (port 0 picks one) and serves until `cancel`.
    pub async fn bind(addr: SocketAddr, cancel: CancellationToken) -> Result<Router, BindError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| BindError { addr, source })?;
        let addr = listener.local_addr().map_err(|source| BindError { addr, source })?;
        let table = Arc::new(Mutex::new(Table {
            backends: Vec::new(),
            current: Vec::new(),
            next_replica: Vec::new(),
            stats: Default::default(),
        }));
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
        connector.set_nodelay(true);
        let shared = Shared {
            table: table.clone(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        };
        let app = axum::Router::new().fallback(forward).with_state(shared);
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(%addr, error = %e, "The router stopped.");
            }
        });
        Ok(Router { table, addr })
    }

    /// Where the router listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the routing table at once: the next request follows the new weights.
    pub fn route(&self, backends: Vec<Backend>) {
        let mut table = self.table.lock().expect("the router's lock is never poisoned");
        table.current = vec![0; backends.len()];
        table.next_replica = vec![0; backends.len()];
        table.backends = backends;
    }

    /// The current routing table.
    pub fn backends(&self) -> Vec<Backend> {
        self.table
            .lock()
            .expect("the router's lock is never poisoned")
            .backends
            .clone()
    }

    /// Each slot's counters since the router started (or since [`Router::reset_stats`]).
    pub fn stats(&self) -> std::collections::BTreeMap<String, SlotStats> {
        self.table
            .lock()
            .expect("the router's lock is never poisoned")
            .stats
            .clone()
    }

    /// Starts the counters over (at the start of a canary step).
    pub fn reset_stats(&self) {
        self.table
            .lock()
            .expect("the router's lock is never poisoned")
            .stats
            .clear();
    }
}

impl Table {
    /// The next backend by smooth weighted round-robin, and the next of its replicas.
    fn pick(&mut self) -> Option<(String, SocketAddr)> {
        let total: i64 = self
            .backends
            .iter()
            .filter(|b| !b.replicas.is_empty())
            .map(|b| b.weight as i64)
            .sum();
        if total == 0 {
            return None;
        }
        let mut best: Option<usize> = None;
        for (i, backend) in self.backends.iter().enumerate() {
            if backend.replicas.is_empty() || backend.weight == 0 {
                continue;
            }
            self.current[i] += backend.weight as i64;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let chosen = best?;
        self.current[chosen] -= total;
        let backend = &self.backends[chosen];
        let replica = backend.replicas[self.next_replica[chosen] % backend.replicas.len()];
        self.next_replica[chosen] = self.next_replica[chosen].wrapping_add(1);
        Some((backend.slot.clone(), replica))
    }
}

async fn forward(State(shared): State<Shared>, request: Request) -> Response {
    // A request without a body that only reads (GET, HEAD) is tried once more, on the replica
    // picked next, when its replica does not answer: one that was leaving (its slot just
    // retired) as the request reached it goes unnoticed by the client.
    let retry =
        matches!(request.method(), &Method::GET | &Method::HEAD) && request.body().size_hint().exact() == Some(0);
    let again = retry.then(|| {
        let mut copy = Request::new(Body::empty());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.headers_mut() = request.headers().clone();
        copy
    });
    match send(&shared, request).await {
        Err(Unanswered(e)) if again.is_some() => {
            tracing::debug!(error = %e, "A replica did not answer; trying the next one.");
            answer(send(&shared, again.expect("checked")).await)
        }
        sent => answer(sent),
    }
}

/// A replica took the request but gave no answer.
struct Unanswered(hyper_util::client::legacy::Error);

/// The answer to give the client.
fn answer(sent: Result<Response, Unanswered>) -> Response {
    sent.unwrap_or_else(|Unanswered(e)| {
        tracing::warn!(error = %e, "A replica did not answer.");
        (StatusCode::BAD_GATEWAY, "the replica did not answer\n").into_response()
    })
}

/// Sends `request` to the next replica, counting its answer for its slot.
async fn send(shared: &Shared, mut request: Request) -> Result<Response, Unanswered> {
    let picked = shared.table.lock().expect("the router's lock is never poisoned").pick();
    let Some((slot, replica)) = picked else {
        return Ok((StatusCode::SERVICE_UNAVAILABLE, "no slot takes traffic\n").into_response());
    };
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let uri: Uri = match format!("http://{replica}{path}").parse() {
        Ok(uri) => uri,
        Err(_) => return Ok((StatusCode::BAD_REQUEST, "bad request path\n").into_response()),
    };
    *request.uri_mut() = uri;
    let started = Instant::now();
    let result = shared.client.request(request).await;
    let elapsed = started.elapsed();
    let mut table = shared.table.lock().expect("the router's lock is never poisoned");
    let stats = table.stats.entry(slot).or_default();
    match result {
        Ok(response) => {
            stats.record(Some(response.status().as_u16()), elapsed);
            Ok(response.map(Body::new))
        }
        Err(e) => {
            stats.record(None, elapsed);
            Err(Unanswered(e))
        }
    }
}
