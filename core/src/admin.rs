//! The admin HTTP endpoints every daemon serves on its `--admin` address:
//! `/metrics` (Prometheus text), `/healthz` and `/table` (the running table and where it
//! came from).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

/// A daemon's answer to `/healthz`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    /// `ok`, `stale` (serving, but a source is failing) or `starting` (nothing to serve yet);
    /// a daemon may name its own reason for not serving (redis-router: `uncovered`).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Health {
    /// Whether `/healthz` answers 200: only `ok` and `stale` do (`stale` still serves the
    /// last good table, so it must not make an orchestrator kill the process); `starting`
    /// and any other status answer 503.
    pub fn serving(&self) -> bool {
        matches!(self.status, "ok" | "stale")
    }
}

type HealthFn = Arc<dyn Fn() -> Health + Send + Sync>;
type TableFn = Arc<dyn Fn() -> Option<serde_json::Value> + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    health: HealthFn,
    table: Option<TableFn>,
}

/// Builds the admin router. `table` returns the running table (already redacted where it
/// carries secrets) with its ETag and status.
pub fn router(health: HealthFn, table: Option<TableFn>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/table", get(table_view))
        .with_state(AdminState { health, table })
}

async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}

async fn healthz(State(s): State<AdminState>) -> Response {
    let h = (s.health)();
    let code = if h.serving() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(h)).into_response()
}

async fn table_view(State(s): State<AdminState>) -> Response {
    match s.table.as_ref().and_then(|f| f()) {
        Some(v) => axum::Json(v).into_response(),
        None => (StatusCode::NOT_FOUND, "no table loaded\n").into_response(),
    }
}

/// Serves `router` on `listener` until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}
