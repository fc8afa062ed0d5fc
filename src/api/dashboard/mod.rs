//! The dashboard: the agent's state as web pages, served beside the API and read with the same
//! rights as its reads. Rendered on the server (maud templates, checked at compile time), whole
//! without JavaScript; light and dark from the browser's preference; every link keyboard
//! reachable.
//!
//! - `/`: every environment at a glance ([`overview`]);
//! - `/environments/{env}`: one environment: its state, the last attempt step by step, its
//!   history, each service's configuration at the rollback point, encrypted values masked
//!   ([`environment`]).

mod environment;
mod overview;
mod page;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::Api;

/// The dashboard's routes (the caller guards them as reads).
pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/", get(overview::page))
        .route("/environments/{env}", get(environment::page))
        .route("/dashboard.css", get(style))
}

/// The one style sheet, built into the binary.
async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("dashboard.css"),
    )
}
