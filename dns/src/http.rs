//! The HTTP side of `ocean dns`: Mesos-DNS's API (`/v1/...`, same paths and JSON shapes)
//! and the admin endpoints (`/metrics`, `/healthz`, `/table`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ocean_core::subscriber::TableWatch;
use ocean_core::table::DnsTable;

use crate::config::Config;
use crate::server::SharedZone;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct ApiState {
    pub zone: SharedZone,
    pub watch: TableWatch<DnsTable>,
    pub config: Config,
}

pub fn router(state: ApiState) -> Router {
    let state = Arc::new(state);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(|| async { ocean_core::metrics::render() }))
        .route("/table", get(table))
        .with_state(state)
}

async fn healthz(State(s): State<Arc<ApiState>>) -> Response {
    let zone = s.zone.load_full();
    let status = s.watch.status();
    match zone {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "starting", "reason": status.last_error.unwrap_or_else(|| "no table yet".into())})),
        )
            .into_response(),
        Some(z) => {
            let body = match &status.last_error {
                Some(e) => serde_json::json!({"status": "stale", "reason": e, "etag": z.table.etag, "serial": z.serial}),
                None => serde_json::json!({"status": "ok", "etag": z.table.etag, "serial": z.serial, "source": status.source}),
            };
            Json(body).into_response()
        }
    }
}

async fn table(State(s): State<Arc<ApiState>>) -> Response {
    match s.zone.load_full() {
        Some(z) => (
            [(axum::http::header::ETAG, format!("\"{}\"", z.table.etag))],
            Json(&z.table.table),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no table loaded\n").into_response(),
    }
}
