//! The dashboard: the agent's state as web pages, served beside the API and read with the same
//! rights as its reads; a signed-in identity acts from it with its role ([`actions`]). Rendered
//! on the server (maud templates, checked at compile time) and whole without JavaScript; one
//! small script only makes the pages follow the agent live ([`live`]). Light and
//! dark from the browser's preference; every link and control keyboard reachable.
//!
//! - `/`: every environment at a glance ([`overview`]);
//! - `/environments/{env}`: one environment: its state, the last attempt step by step, its
//!   history, each service's configuration at the rollback point, encrypted values masked
//!   ([`environment`]); what syncing it would do now ([`plan`]).

mod actions;
mod environment;
mod live;
mod overview;
mod page;
mod plan;
mod session;

pub use page::Verified;
pub use session::Sessions;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use super::Api;

/// The dashboard's routes: each decides who may read and act, with the API's access rules.
pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/", get(overview::page))
        .route("/environments/{env}", get(environment::page))
        .route("/sign-in", get(actions::sign_in_page).post(actions::sign_in))
        .route("/sign-out", post(actions::sign_out))
        .route("/environments/{env}/sync", post(actions::sync))
        .route("/environments/{env}/rollback", post(actions::rollback))
        .route("/environments/{env}/approve", post(actions::approve))
        .route("/environments/{env}/live", get(live::events))
        .route("/live", get(live::overview_events))
        .route("/environments/{env}/plan", get(plan::page))
        .route("/dashboard.css", get(style))
        .route("/dashboard.js", get(script))
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

/// The one script: the environment's page follows the agent without a reload.
async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("dashboard.js"),
    )
}
