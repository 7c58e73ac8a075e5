//! Control's HTTP API.
//!
//! - `GET /v1/tables/{kind}`: the table with its `ETag`. With `If-None-Match: "<etag>"` and
//!   `?wait=30s` the request blocks until the table differs (200) or the wait ends (304).
//!   Subscribers add `subscriber=`, `running=`, `refused=` and `reason=` to report themselves.
//!   With `?since=<etag>` (kinds that take deltas) the answer is what changed since that
//!   table, marked `X-Ocean-Delta-From`, while control still keeps the versions since it
//!   (`--delta-history`); else the whole table.
//! - `GET /v1/subscribers`, `/v1/state`, `/v1/problems`, and `/v1/status` (what the status
//!   page shows, as JSON: `ocean status` reads it).
//! - `GET /` and `/ui`: the status page (HTML, see [`crate::status_page`]).
//! - `GET /healthz`, `/metrics` (no token needed).
//!
//! With a token configured every `/v1/` request needs `Authorization: Bearer <token>`:
//! without a right one it is 401 (`ocean_control_unauthorized_total`); a token scoped to
//! some tables gets 403 for any other table and for the endpoints other than
//! `/v1/tables/` (`ocean_control_forbidden_total{kind, reason="scope"}`). Without TLS, the
//! `mysql` table (backend passwords) goes to loopback peers only, unless
//! `--allow-plaintext-secrets` (else 403, `reason="plaintext"`). See [`crate::api_auth`].
//!
//! The status page reads every table's metadata, the apps, the problems and the
//! subscribers, so it needs what `/v1/state` needs: an unscoped token (none when no token
//! is configured). Besides `Authorization: Bearer <token>` it takes HTTP Basic credentials
//! with the token as the password (any user name), so that a browser, answered 401 with
//! `WWW-Authenticate: Basic`, asks for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ocean_core::table::{quote_etag, unquote_etag, TableKind};
use serde::Deserialize;

use crate::api_auth::{self, Access, Resource};
use crate::shared::Shared;
use crate::subscribers::Report;

/// The API router; serve it with `into_make_service_with_connect_info::<SocketAddr>()`
/// (subscriber addresses come from the connection).
pub fn router(shared: Arc<Shared>) -> Router {
    let v1 = Router::new()
        .route("/v1/tables/{kind}", get(table))
        .route("/v1/subscribers", get(subscribers))
        .route("/v1/state", get(state))
        .route("/v1/problems", get(problems))
        .route("/v1/status", get(status_json))
        .layer(middleware::from_fn_with_state(shared.clone(), auth));
    let pages = Router::new()
        .route("/", get(status_page))
        .route("/ui", get(status_page))
        .layer(middleware::from_fn_with_state(shared.clone(), page_auth));
    Router::new()
        .merge(v1)
        .merge(pages)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(shared.clone(), lag_header))
        .with_state(shared)
}

/// Every answer says how old control's view of Marathon is (taken as the answer leaves, so
/// a long-poll's 304 reports the lag at its end): subscribers with several replicas prefer
/// the newest ([`ocean_core::replicas`]). None before the first sync.
async fn lag_header(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    if resp.headers().contains_key(crate::freshness::LAG_HEADER) {
        return resp;
    }
    if let Some(lag) = shared.freshness.lag() {
        resp.headers_mut().insert(
            crate::freshness::LAG_HEADER,
            HeaderValue::from(crate::freshness::millis(lag)),
        );
    }
    resp
}

async fn auth(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let resource = Resource::of_path(req.uri().path());
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match api_auth::check(&shared.tokens.load(), authorization, resource) {
        Access::Open | Access::Granted => {}
        Access::Unauthorized => {
            metrics::counter!("ocean_control_unauthorized_total").increment(1);
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or wrong bearer token\n",
            )
                .into_response();
        }
        Access::Forbidden { may_read } => {
            metrics::counter!("ocean_control_forbidden_total", "kind" => resource.label(), "reason" => "scope")
                .increment(1);
            return (
                StatusCode::FORBIDDEN,
                api_auth::forbidden_message(resource, &may_read),
            )
                .into_response();
        }
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if !api_auth::plaintext_allowed(resource, shared.tls, shared.allow_plaintext_secrets, peer) {
        metrics::counter!("ocean_control_forbidden_total", "kind" => resource.label(), "reason" => "plaintext")
            .increment(1);
        return (StatusCode::FORBIDDEN, api_auth::PLAINTEXT_MESSAGE).into_response();
    }
    next.run(req).await
}

/// The status page's check: [`api_auth::check`] for [`Resource::Api`], with the token
/// taken from `Bearer` or from the password of `Basic` credentials; a 401 asks for Basic.
async fn page_auth(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_or_basic);
    match api_auth::check(&shared.tokens.load(), bearer.as_deref(), Resource::Api) {
        Access::Open | Access::Granted => next.run(req).await,
        Access::Unauthorized => {
            metrics::counter!("ocean_control_unauthorized_total").increment(1);
            (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    "Basic realm=\"ocean control: the API token as password\", charset=\"UTF-8\"",
                )],
                "the status page needs the API token: Authorization: Bearer <token>, \
                 or Basic with the token as password\n",
            )
                .into_response()
        }
        Access::Forbidden { may_read } => {
            metrics::counter!("ocean_control_forbidden_total", "kind" => "api", "reason" => "scope")
                .increment(1);
            (
                StatusCode::FORBIDDEN,
                api_auth::forbidden_message(Resource::Api, &may_read),
            )
                .into_response()
        }
    }
}

/// `Bearer <token>` as it is; `Basic base64(user:token)` as `Bearer <token>`.
fn bearer_or_basic(authorization: &str) -> Option<String> {
    use base64::Engine as _;
    if authorization.starts_with("Bearer ") {
        return Some(authorization.to_string());
    }
    let encoded = authorization.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, token) = text.split_once(':')?;
    Some(format!("Bearer {token}"))
}

async fn status_page(State(shared): State<Arc<Shared>>) -> Response {
    let (_, health) = health(&shared);
    let html = crate::status_page::render(&crate::status_page::collect(&shared, health));
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

async fn status_json(State(shared): State<Arc<Shared>>) -> Response {
    let (_, health) = health(&shared);
    Json(crate::status_page::collect(&shared, health)).into_response()
}

#[derive(Debug, Deserialize)]
struct TableQuery {
    wait: Option<String>,
    subscriber: Option<String>,
    running: Option<String>,
    refused: Option<String>,
    reason: Option<String>,
    /// The ETag the subscriber runs, to get a delta from (kinds that take deltas).
    since: Option<String>,
}

fn parse_wait(s: &str) -> Option<Duration> {
    humantime::parse_duration(s)
        .ok()
        .or_else(|| s.parse::<u64>().ok().map(Duration::from_secs))
}

async fn table(
    State(shared): State<Arc<Shared>>,
    Path(kind): Path<String>,
    Query(q): Query<TableQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let Ok(kind) = kind.parse::<TableKind>() else {
        return (
            StatusCode::NOT_FOUND,
            format!("unknown table kind {kind:?} (dns, redis, memcached, mysql, lvs)\n"),
        )
            .into_response();
    };
    let wait = match q.wait.as_deref().map(parse_wait) {
        None => Duration::ZERO,
        Some(Some(w)) => w.min(shared.max_wait),
        Some(None) => {
            return (
                StatusCode::BAD_REQUEST,
                "wait must be a duration like 30s or 500ms\n",
            )
                .into_response()
        }
    };
    if let Some(id) = q.subscriber.filter(|s| !s.is_empty()) {
        let clip = |s: Option<String>, n: usize| s.map(|s| s.chars().take(n).collect::<String>());
        shared.subscribers.report(Report {
            kind,
            id: clip(Some(id), 200).unwrap_or_default(),
            addr: Some(peer),
            running: clip(q.running, 64),
            refused: clip(q.refused, 64),
            reason: clip(q.reason, 500),
            current: shared.store.get(kind).map(|t| t.etag.clone()),
        });
    }
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(ocean_core::table::gzip::accepts_gzip);
    let since = q.since.filter(|s| !s.is_empty());
    let have = since.clone().or_else(|| {
        headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(|v| unquote_etag(v).to_string())
    });
    let deadline = tokio::time::Instant::now() + wait;
    let mut rx = shared.store.subscribe();
    loop {
        let current = rx.borrow_and_update().get(&kind).cloned();
        match current {
            Some(t) if have.as_deref() != Some(t.etag.as_str()) => {
                metrics::counter!("ocean_control_table_requests_total", "kind" => kind.as_str(), "status" => "200").increment(1);
                let etag = HeaderValue::from_str(&quote_etag(&t.etag))
                    .unwrap_or(HeaderValue::from_static("\"\""));
                // What changed since the subscriber's table, while the history reaches it.
                if let Some((from, doc)) = since
                    .as_deref()
                    .and_then(|from| Some((from, shared.store.delta(kind, from, &t)?)))
                {
                    metrics::counter!("ocean_control_table_bytes_sent_total", "kind" => kind.as_str(), "encoding" => "delta")
                        .increment(doc.len() as u64);
                    metrics::counter!("ocean_control_table_deltas_total", "kind" => kind.as_str(), "result" => "delta").increment(1);
                    let from = HeaderValue::from_str(from).unwrap_or(HeaderValue::from_static(""));
                    return (
                        StatusCode::OK,
                        [
                            (header::ETAG, etag),
                            (
                                header::CONTENT_TYPE,
                                HeaderValue::from_static("application/json"),
                            ),
                            (
                                header::HeaderName::from_static(
                                    ocean_core::subscriber::DELTA_HEADER,
                                ),
                                from,
                            ),
                        ],
                        doc,
                    )
                        .into_response();
                }
                if since.is_some() {
                    metrics::counter!("ocean_control_table_deltas_total", "kind" => kind.as_str(), "result" => "full").increment(1);
                }
                // Full tables go gzip-compressed to those who accept it.
                let (body, encoding) = if gzip {
                    (t.gzipped().await, "gzip")
                } else {
                    (t.body.clone(), "identity")
                };
                metrics::counter!("ocean_control_table_bytes_sent_total", "kind" => kind.as_str(), "encoding" => encoding)
                    .increment(body.len() as u64);
                let mut resp = (
                    StatusCode::OK,
                    [
                        (header::ETAG, etag),
                        (
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        ),
                        (header::VARY, HeaderValue::from_static("Accept-Encoding")),
                    ],
                    body,
                )
                    .into_response();
                if gzip {
                    resp.headers_mut()
                        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                return resp;
            }
            _ => {}
        }
        let timed_out = tokio::select! {
            changed = rx.changed() => changed.is_err(),
            _ = tokio::time::sleep_until(deadline) => true,
            // Shutting down: answer now so the graceful drain does not wait for long-polls.
            _ = shared.shutdown.cancelled() => true,
        };
        if timed_out {
            return match shared.store.get(kind) {
                Some(t) => {
                    metrics::counter!("ocean_control_table_requests_total", "kind" => kind.as_str(), "status" => "304").increment(1);
                    let etag = HeaderValue::from_str(&quote_etag(&t.etag))
                        .unwrap_or(HeaderValue::from_static("\"\""));
                    (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response()
                }
                None => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "control has not synced with Marathon yet\n",
                )
                    .into_response(),
            };
        }
    }
}

/// Lagging first; `?kind=`, `?lagging=`, `?offset=`, `?limit=` page through a large fleet,
/// `X-Total-Count` says how many rows match.
async fn subscribers(
    State(shared): State<Arc<Shared>>,
    Query(page): Query<crate::subscribers::Page>,
) -> Response {
    let (total, rows) = page.select(shared.subscribers.list(&shared.store.snapshot()));
    ([("x-total-count", total.to_string())], Json(rows)).into_response()
}

async fn state(State(shared): State<Arc<Shared>>) -> Response {
    Json(&**shared.state.load()).into_response()
}

async fn problems(State(shared): State<Arc<Shared>>) -> Response {
    let status = shared.status();
    Json(serde_json::json!({
        "sync": status,
        "problems": &**shared.problems.load(),
    }))
    .into_response()
}

/// `ok`; `stale` (Marathon failing or silent: the last good tables are served); `held` (a
/// table is held back by the drop guard); `starting` (no sync has succeeded yet: 503); or,
/// with `--max-lag`, `lagging` (503) once the view of Marathon is older than that. Stale is
/// 200 so that an orchestrator does not restart every control instance while Marathon is
/// down: they still serve the last good tables. Every answer but `starting` has `lag_ms`.
pub fn health(shared: &Shared) -> (StatusCode, serde_json::Value) {
    let (code, mut body) = health_without_lag(shared);
    if let Some(lag) = shared.freshness.lag() {
        body["lag_ms"] = crate::freshness::millis(lag).into();
        if let Some(max) = shared.max_lag.filter(|max| lag > *max) {
            body["status"] = "lagging".into();
            body["reason"] = format!(
                "the view of Marathon is {:.1}s old, more than --max-lag {}",
                lag.as_secs_f64(),
                humantime::format_duration(max)
            )
            .into();
            return (StatusCode::SERVICE_UNAVAILABLE, body);
        }
    }
    (code, body)
}

fn health_without_lag(shared: &Shared) -> (StatusCode, serde_json::Value) {
    let s = shared.status();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let Some(ok_at) = s.last_success_unix else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "starting", "reason": s.last_error.unwrap_or_else(|| "no sync yet".into())}),
        );
    };
    let age = now.saturating_sub(ok_at);
    let stale_after = shared.resync.as_secs() * 3 + 5;
    let reason = match (&s.last_error, age > stale_after) {
        (Some(e), _) => Some(format!(
            "last sync failed ({} in a row): {e}; tables are {age}s old",
            s.consecutive_failures
        )),
        (None, true) => Some(format!("no sync for {age}s")),
        _ => None,
    };
    let held: Vec<&str> = s.held.iter().map(|h| h.message.as_str()).collect();
    match (reason, held.is_empty()) {
        (Some(r), _) => (
            StatusCode::OK,
            serde_json::json!({"status": "stale", "reason": r, "held": held}),
        ),
        (None, false) => (
            StatusCode::OK,
            serde_json::json!({"status": "held", "reason": "a table is held by the drop guard", "age_s": age, "held": held}),
        ),
        (None, true) => (
            StatusCode::OK,
            serde_json::json!({"status": "ok", "age_s": age}),
        ),
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let (code, body) = health(&shared);
    // The header says what the body says (the middleware would take the lag again).
    let lag = body["lag_ms"].as_u64();
    let mut resp = (code, Json(body)).into_response();
    if let Some(lag) = lag {
        resp.headers_mut()
            .insert(crate::freshness::LAG_HEADER, HeaderValue::from(lag));
    }
    resp
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let s = shared.status();
    if let Some(t) = s.last_success_unix {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        metrics::gauge!("ocean_control_marathon_sync_age_seconds")
            .set(now.saturating_sub(t) as f64);
    }
    metrics::gauge!("ocean_control_marathon_consecutive_failures")
        .set(s.consecutive_failures as f64);
    if let Some(lag) = shared.freshness.lag() {
        metrics::gauge!("ocean_control_view_lag_seconds").set(lag.as_secs_f64());
    }
    let list = shared.subscribers.list(&shared.store.snapshot());
    for kind in TableKind::ALL {
        let n = list.iter().filter(|v| v.kind == kind).count();
        let lagging = list.iter().filter(|v| v.kind == kind && v.lagging).count();
        metrics::gauge!("ocean_control_subscribers", "kind" => kind.as_str()).set(n as f64);
        metrics::gauge!("ocean_control_subscribers_lagging", "kind" => kind.as_str())
            .set(lagging as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ocean_core::metrics::render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

    use arc_swap::ArcSwap;
    use axum::body::Body;
    use ocean_core::secret::Secret;
    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt;

    use super::*;
    use crate::api_auth::ApiToken;
    use crate::store::{Served, Store};
    use crate::subscribers::Subscribers;

    fn shared(tls: bool, allow_plaintext_secrets: bool) -> Arc<Shared> {
        let store = Store::default();
        let served = |body: &'static str| {
            Served::new(
                ocean_core::table::etag_of(body.as_bytes()),
                body.into(),
                0,
                SystemTime::now(),
            )
        };
        store.publish(vec![
            (TableKind::Mysql, served("{\"databases\":[]}")),
            (TableKind::Dns, served("{\"domain\":\"mesos\"}")),
        ]);
        Arc::new(Shared {
            store,
            subscribers: Subscribers::default(),
            status: Mutex::new(Default::default()),
            problems: ArcSwap::from_pointee(Vec::new()),
            state: ArcSwap::from_pointee(Default::default()),
            tokens: ArcSwap::from_pointee(vec![ApiToken::new(
                "test",
                &Secret::new("t".into()),
                None,
            )
            .unwrap()]),
            tls,
            allow_plaintext_secrets,
            max_wait: Duration::from_secs(1),
            resync: Duration::from_secs(60),
            stream_up: Arc::new(AtomicBool::new(false)),
            marathon_source: false,
            freshness: Default::default(),
            max_lag: None,
            shutdown: CancellationToken::new(),
        })
    }

    async fn status(shared: Arc<Shared>, path: &str, peer: &str) -> (StatusCode, String) {
        let peer: SocketAddr = peer.parse().unwrap();
        let mut req = Request::builder()
            .uri(path)
            .header(header::AUTHORIZATION, "Bearer t")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        let resp = router(shared).oneshot(req).await.unwrap();
        let code = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_mysql_table_goes_in_clear_to_loopback_peers_only() {
        let remote = "192.0.2.7:40000";
        let (code, body) = status(shared(false, false), "/v1/tables/mysql", remote).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert!(body.contains("--tls-cert/--tls-key"), "{body}");
        // Other tables are fine in clear; loopback peers get mysql too.
        let (code, _) = status(shared(false, false), "/v1/tables/dns", remote).await;
        assert_eq!(code, StatusCode::OK);
        for local in ["127.0.0.1:40000", "[::1]:40000", "[::ffff:127.0.0.1]:40000"] {
            let (code, _) = status(shared(false, false), "/v1/tables/mysql", local).await;
            assert_eq!(code, StatusCode::OK, "{local}");
        }
        // Over TLS, or when the operator allows it, remote peers get it.
        let (code, _) = status(shared(true, false), "/v1/tables/mysql", remote).await;
        assert_eq!(code, StatusCode::OK);
        let (code, _) = status(shared(false, true), "/v1/tables/mysql", remote).await;
        assert_eq!(code, StatusCode::OK);
    }
}
