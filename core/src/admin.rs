//! The admin HTTP endpoints every daemon serves on its `--admin` address:
//! `/` (the status page: HTML, see [`crate::status_page`]), `/metrics` (Prometheus text),
//! `/healthz` and `/table` (the running table and where it came from).

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

/// The daemon's `/healthz` answer, asked on each request.
pub type HealthFn = Arc<dyn Fn() -> Health + Send + Sync>;
/// The running table as JSON for `/table` (already redacted where it carries secrets).
pub type TableFn = Arc<dyn Fn() -> Option<serde_json::Value> + Send + Sync>;
/// What the status page shows about the daemon, asked on each request.
pub type StatusFn = Arc<dyn Fn() -> DaemonStatus + Send + Sync>;

/// What a daemon gives its admin server.
#[derive(Clone)]
pub struct Admin {
    /// The daemon's name on the status page (`redis-router`, `mysql-proxy`, ...).
    pub daemon: &'static str,
    pub health: HealthFn,
    /// `/table`; `None`: 404 (the daemon runs without a table, or does not show it).
    pub table: Option<TableFn>,
    /// The status page's facts; `None`: the page shows the health alone.
    pub status: Option<StatusFn>,
}

/// A daemon's view of itself on its status page (`/` on the admin port).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DaemonStatus {
    /// The table applied; `None` before the first one or without a table source.
    pub table: Option<AppliedTable>,
    /// Open client connections, where the daemon counts them.
    pub connections: Option<u64>,
    /// Backends the daemon knows the state of (down and TKO ones at least).
    pub backends: Vec<BackendStatus>,
    /// Other numbers worth a glance (`slots uncovered`, `IPVS services`), in order.
    pub facts: Vec<(String, String)>,
}

/// The table a daemon runs.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AppliedTable {
    /// The table kind (`redis`, `mysql`, ...).
    pub kind: String,
    pub etag: String,
    /// Where it came from: `control <url>`, `file <path>`, `cache <path>`.
    pub source: Option<String>,
    /// When it was applied (Unix seconds).
    pub applied_unix: Option<u64>,
    /// The last failure to reach the source, cleared on success.
    pub last_error: Option<String>,
    /// The ETag and reason of the last table refused.
    pub last_refused: Option<(String, String)>,
}

/// The state of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    Up,
    Down,
    /// Marked down after failures and skipped until it is probed again (mcrouter's TKO).
    Tko,
}

/// One backend row of the status page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendStatus {
    /// What it serves: a cluster, pool or database name.
    pub group: String,
    pub addr: String,
    pub state: BackendState,
    /// Why it is down, or anything else to say.
    pub detail: Option<String>,
}

#[derive(Clone)]
struct AdminState {
    daemon: &'static str,
    health: HealthFn,
    table: Option<TableFn>,
    status: Option<StatusFn>,
}

/// Builds the admin router: `/`, `/metrics`, `/healthz`, `/table`.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/table", get(table_view))
        .with_state(AdminState {
            daemon: admin.daemon,
            health: admin.health,
            table: admin.table,
            status: admin.status,
        })
}

async fn status_page(State(s): State<AdminState>) -> Response {
    let health = (s.health)();
    let status = s.status.as_ref().map(|f| f()).unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        render_status(s.daemon, &health, &status),
    )
        .into_response()
}

/// The status page of one daemon: health, the table applied, connections, backends.
pub fn render_status(daemon: &str, health: &Health, status: &DaemonStatus) -> String {
    use crate::status_page::{self as page, Html, Table, Tone};
    let tone = match health.status {
        "ok" => Tone::Ok,
        "stale" => Tone::Warn,
        _ => Tone::Bad,
    };
    let mut subtitle = vec![page::badge(health.status, tone)];
    if let Some(r) = &health.reason {
        subtitle.push(Html::text(&format!(" {r}")));
    }
    let mut overview: Vec<(&str, Html)> = Vec::new();
    match &status.table {
        Some(t) => {
            overview.push(("table", Html::text(&t.kind)));
            overview.push(("ETag", Html::code(&t.etag)));
            overview.push((
                "from",
                Html::text(t.source.as_deref().unwrap_or("(unknown)")),
            ));
            overview.push(("applied", Html::text(&page::ago(t.applied_unix))));
            if let Some(e) = &t.last_error {
                overview.push(("source failing", Html::text(e)));
            }
            if let Some((etag, reason)) = &t.last_refused {
                overview.push((
                    "last refused",
                    Html::text(&format!("{}: {reason}", page::short_etag(etag))),
                ));
            }
        }
        None => overview.push(("table", Html::text("none applied"))),
    }
    if let Some(c) = status.connections {
        overview.push(("client connections", Html::text(&c.to_string())));
    }
    for (k, v) in &status.facts {
        overview.push((k.as_str(), Html::text(v)));
    }
    let mut backends = Table::new(&["group", "backend", "state", "detail"], "no backend known");
    let mut rows: Vec<&BackendStatus> = status.backends.iter().collect();
    // Trouble first.
    rows.sort_by_key(|b| (b.state == BackendState::Up, b.group.clone(), b.addr.clone()));
    for b in rows {
        let (word, tone) = match b.state {
            BackendState::Up => ("up", Tone::Ok),
            BackendState::Down => ("down", Tone::Bad),
            BackendState::Tko => ("TKO", Tone::Bad),
        };
        backends.row(
            if tone == Tone::Ok { Tone::Plain } else { tone },
            vec![
                Html::text(&b.group),
                Html::code(&b.addr),
                page::badge(word, tone),
                Html::text(b.detail.as_deref().unwrap_or("")),
            ],
        );
    }
    let count = |st: BackendState| status.backends.iter().filter(|b| b.state == st).count();
    let heading = format!(
        "Backends: {} up, {} down, {} TKO",
        count(BackendState::Up),
        count(BackendState::Down),
        count(BackendState::Tko)
    );
    let body = page::concat([
        page::section("overview", "Overview", page::facts(&overview)),
        page::section("backends", &heading, backends.render()),
    ]);
    page::page(&format!("ocean {daemon}"), page::concat(subtitle), body, 10)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_page_shows_the_table_and_backends_trouble_first() {
        let status = DaemonStatus {
            table: Some(AppliedTable {
                kind: "memcached".into(),
                etag: "0123456789abcdef".into(),
                source: Some("control http://127.0.0.1:7070/".into()),
                applied_unix: Some(crate::status_page::unix_now()),
                last_error: None,
                last_refused: None,
            }),
            connections: Some(3),
            backends: vec![
                BackendStatus {
                    group: "a".into(),
                    addr: "127.0.0.1:1".into(),
                    state: BackendState::Up,
                    detail: None,
                },
                BackendStatus {
                    group: "<b>".into(),
                    addr: "127.0.0.1:2".into(),
                    state: BackendState::Tko,
                    detail: Some("connection refused".into()),
                },
            ],
            facts: vec![],
        };
        let health = Health {
            status: "ok",
            reason: None,
        };
        let html = render_status("memcached-router", &health, &status);
        assert!(html.contains("<title>ocean memcached-router</title>"));
        assert!(html.contains("0123456789abcdef"));
        assert!(html.contains("Backends: 1 up, 0 down, 1 TKO"));
        assert!(html.find("127.0.0.1:2") < html.find("127.0.0.1:1"));
        assert!(html.contains("&lt;b&gt;") && !html.contains("<b>"));
        assert!(!html.contains("<script"));
    }
}
