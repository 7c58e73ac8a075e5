//! A fake Marathon for tests: serves `GET /v2/apps?embed=apps.tasks`, `GET /v2/apps/{id}`,
//! `GET /v2/info` and the
//! `GET /v2/events` SSE stream in Marathon's documented JSON shapes, and lets a test add,
//! kill and move tasks (each change emits the event Marathon would send) or make Marathon
//! misbehave (broken JSON, HTTP 500, hang, empty app list, not the leader).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How the fake answers `/v2/apps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// A body cut in the middle.
    BrokenJson,
    /// HTTP 500 with Marathon's error JSON.
    Error500,
    /// Never answers.
    Hang,
    /// `{"apps": []}`, as a Marathon that just lost its state would.
    Empty,
}

#[derive(Debug, Default)]
struct Counters {
    apps: AtomicU64,
    /// `/v2/apps/{id}`.
    app: AtomicU64,
    info: AtomicU64,
    events: AtomicU64,
}

struct Inner {
    /// App id -> app JSON (with its `tasks` array).
    apps: Mutex<BTreeMap<String, Value>>,
    mode: Mutex<Mode>,
    elected: AtomicBool,
    events: broadcast::Sender<(String, String)>,
    counters: Counters,
    /// Cancelled to cut every open event stream.
    streams: Mutex<CancellationToken>,
}

/// A running fake Marathon; stops when dropped.
pub struct FakeMarathon {
    addr: SocketAddr,
    inner: Arc<Inner>,
    cancel: CancellationToken,
}

impl Drop for FakeMarathon {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Marathon's JSON for a host-networking app with one service port.
pub fn app(id: &str, labels: Value, service_port: u16) -> Value {
    json!({
        "id": id,
        "cmd": "sleep infinity",
        "instances": 0,
        "cpus": 0.1,
        "mem": 64,
        "labels": labels,
        "portDefinitions": [{"port": service_port, "protocol": "tcp", "name": "main", "labels": {}}],
        "container": null,
        "healthChecks": [],
        "tasksRunning": 0,
        "tasks": []
    })
}

/// Marathon's JSON for a running task of `app_id` on agent `host` with host `ports`.
pub fn task(app_id: &str, n: u32, host: &str, ports: &[u16]) -> Value {
    let safe = app_id.trim_start_matches('/').replace('/', "_");
    json!({
        "id": format!("{safe}.{n:08x}-3dda-11e4-a088-c20493233aa5"),
        "appId": app_id,
        "host": host,
        "ipAddresses": [{"ipAddress": host, "protocol": "IPv4"}],
        "ports": ports,
        "servicePorts": [],
        "slaveId": format!("db7b40e2-791c-445f-b373-183e2a648a86-S{}", n % 7),
        "stagedAt": "2026-11-27T10:00:00.000Z",
        "startedAt": "2026-11-27T10:00:01.000Z",
        "state": "TASK_RUNNING",
        "version": "2026-11-27T09:59:59.000Z"
    })
}

impl FakeMarathon {
    /// Starts on a free loopback port.
    pub async fn start() -> anyhow::Result<FakeMarathon> {
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            apps: Mutex::new(BTreeMap::new()),
            mode: Mutex::new(Mode::Normal),
            elected: AtomicBool::new(true),
            events,
            counters: Counters::default(),
            streams: Mutex::new(CancellationToken::new()),
        });
        let router = Router::new()
            .route("/v2/apps", get(apps))
            .route("/v2/apps/{*id}", get(one_app))
            .route("/v2/info", get(info))
            .route("/v2/events", get(events_stream))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move { c.cancelled().await })
                .await;
        });
        Ok(FakeMarathon {
            addr,
            inner,
            cancel,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}", self.addr))
            .unwrap_or_else(|_| unreachable!("a socket address is a valid URL host"))
    }

    fn emit(&self, event: &str, data: Value) {
        // No receiver (no stream open) is fine: control polls then.
        let _ = self
            .inner
            .events
            .send((event.to_string(), data.to_string()));
    }

    fn with_apps<R>(&self, f: impl FnOnce(&mut BTreeMap<String, Value>) -> R) -> R {
        let mut apps = self.inner.apps.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut apps)
    }

    /// Adds (or replaces) an app; emits `api_post_event`.
    pub fn put_app(&self, app: Value) {
        let id = app["id"].as_str().unwrap_or_default().to_string();
        self.with_apps(|a| a.insert(id.clone(), app));
        self.emit(
            "api_post_event",
            json!({"eventType": "api_post_event", "appDefinition": {"id": id}}),
        );
    }

    /// Adds `apps` apps (`/static/app-K`, no labels) of `tasks` running tasks each (on
    /// 127.1.K.1, 127.1.K.2, ...): the bulk of a table that a test's changes leave alone.
    pub fn put_static_apps(&self, apps: u32, tasks: u32) {
        for k in 0..apps {
            let id = format!("/static/app-{k}");
            self.put_app(app(&id, json!({}), 11000 + k as u16));
            for n in 0..tasks {
                let host = format!("127.1.{k}.{}", n + 1);
                self.add_task(&id, task(&id, n, &host, &[32000 + n as u16]));
            }
        }
    }

    /// A control config on this Marathon for tests: API on 127.0.0.1:0, 50 ms debounce,
    /// 1 s Marathon timeout, and resync and poll-while-down of 60 s, so that a change
    /// arriving fast proves the event stream carried it.
    pub fn control_config(&self) -> ocean_control::Config {
        let mut c =
            ocean_control::Config::new(ocean_control::config::Source::Marathon(vec![self.url()]));
        c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c.resync = Duration::from_secs(60);
        c.poll_while_down = Duration::from_secs(60);
        c.debounce = Duration::from_millis(50);
        c.marathon_timeout = Duration::from_secs(1);
        c
    }

    /// Removes an app and its tasks; emits `app_terminated_event`.
    pub fn remove_app(&self, id: &str) {
        self.with_apps(|a| a.remove(id));
        self.emit(
            "app_terminated_event",
            json!({"eventType": "app_terminated_event", "appId": id}),
        );
    }

    /// Adds a running task to an app; emits `status_update_event` TASK_RUNNING.
    pub fn add_task(&self, app_id: &str, task: Value) {
        let task_id = task["id"].clone();
        let host = task["host"].clone();
        self.with_apps(|a| {
            if let Some(app) = a.get_mut(app_id) {
                if let Some(tasks) = app["tasks"].as_array_mut() {
                    tasks.push(task);
                }
                let n = app["tasks"].as_array().map(|t| t.len()).unwrap_or(0);
                app["instances"] = json!(n);
                app["tasksRunning"] = json!(n);
            }
        });
        self.emit(
            "status_update_event",
            json!({"eventType": "status_update_event", "appId": app_id, "taskId": task_id, "taskStatus": "TASK_RUNNING", "host": host}),
        );
    }

    /// Kills a task; emits `status_update_event` TASK_KILLED.
    pub fn kill_task(&self, app_id: &str, task_id: &str) {
        self.with_apps(|a| {
            if let Some(tasks) = a
                .get_mut(app_id)
                .and_then(|app| app["tasks"].as_array_mut())
            {
                tasks.retain(|t| t["id"].as_str() != Some(task_id));
            }
        });
        self.emit(
            "status_update_event",
            json!({"eventType": "status_update_event", "appId": app_id, "taskId": task_id, "taskStatus": "TASK_KILLED"}),
        );
    }

    /// Changes how `/v2/apps` answers (no event is sent).
    pub fn set_mode(&self, mode: Mode) {
        *self.inner.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    /// Whether `/v2/info` says this instance is the elected leader.
    pub fn set_elected(&self, elected: bool) {
        self.inner.elected.store(elected, Ordering::Relaxed);
    }

    /// Cuts every open event stream (clients see EOF).
    pub fn cut_event_streams(&self) {
        let mut t = self.inner.streams.lock().unwrap_or_else(|p| p.into_inner());
        t.cancel();
        *t = CancellationToken::new();
    }

    /// `GET /v2/apps/{id}` requests served so far (one app, as control fetches an app that
    /// events named).
    pub fn app_requests(&self) -> u64 {
        self.inner.counters.app.load(Ordering::Relaxed)
    }

    /// Requests served so far: (`/v2/apps`, `/v2/info`, `/v2/events`).
    pub fn requests(&self) -> (u64, u64, u64) {
        let c = &self.inner.counters;
        (
            c.apps.load(Ordering::Relaxed),
            c.info.load(Ordering::Relaxed),
            c.events.load(Ordering::Relaxed),
        )
    }
}

/// `GET /v2/apps/{id}?embed=app.tasks`: `{"app": ...}`, or Marathon's 404. The mode applies
/// as to the list (an emptied Marathon has no such app).
async fn one_app(
    State(inner): State<Arc<Inner>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    inner.counters.app.fetch_add(1, Ordering::Relaxed);
    let id = format!("/{}", id.trim_start_matches('/'));
    let mode = *inner.mode.lock().unwrap_or_else(|p| p.into_inner());
    let app = inner
        .apps
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .cloned();
    match (mode, app) {
        (Mode::Normal, Some(app)) => json_response(json!({ "app": app }).to_string()),
        (Mode::Normal | Mode::Empty, _) => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"message": format!("App '{id}' does not exist")}).to_string(),
        )
            .into_response(),
        (Mode::BrokenJson, app) => {
            let full = json!({ "app": app }).to_string();
            json_response(full[..full.len() / 2].to_string())
        }
        (Mode::Error500, _) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"message":"An unexpected server error occurred."}"#,
        )
            .into_response(),
        (Mode::Hang, _) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}

async fn apps(State(inner): State<Arc<Inner>>) -> Response {
    inner.counters.apps.fetch_add(1, Ordering::Relaxed);
    let mode = *inner.mode.lock().unwrap_or_else(|p| p.into_inner());
    let apps: Vec<Value> = inner
        .apps
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    match mode {
        Mode::Normal => json_response(json!({ "apps": apps }).to_string()),
        Mode::Empty => json_response(r#"{"apps":[]}"#.to_string()),
        Mode::BrokenJson => {
            let full = json!({ "apps": apps }).to_string();
            json_response(full[..full.len() / 2].to_string())
        }
        Mode::Error500 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"message":"An unexpected server error occurred."}"#,
        )
            .into_response(),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}

fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn info(State(inner): State<Arc<Inner>>) -> Response {
    inner.counters.info.fetch_add(1, Ordering::Relaxed);
    let elected = inner.elected.load(Ordering::Relaxed);
    json_response(
        json!({
            "name": "marathon",
            "version": "1.5.0",
            "elected": elected,
            "leader": if elected { Value::from("127.0.0.1:8080") } else { Value::from("10.0.0.99:8080") },
            "frameworkId": "20140730-222531-1863654316-5050-10422-0000",
            "marathon_config": {"master": "zk://127.0.0.1:2181/mesos"},
            "http_config": {"http_port": 8080}
        })
        .to_string(),
    )
}

async fn events_stream(State(inner): State<Arc<Inner>>) -> Response {
    inner.counters.events.fetch_add(1, Ordering::Relaxed);
    let rx = inner.events.subscribe();
    let cut = inner
        .streams
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let attached = format!(
        "event: event_stream_attached\ndata: {}\n\n",
        json!({"remoteAddress": "127.0.0.1", "eventType": "event_stream_attached"})
    );
    let stream = futures_util::stream::unfold(
        (rx, Some(attached), cut),
        |(mut rx, first, cut)| async move {
            if let Some(f) = first {
                return Some((
                    Ok::<_, std::io::Error>(bytes::Bytes::from(f)),
                    (rx, None, cut),
                ));
            }
            loop {
                tokio::select! {
                    _ = cut.cancelled() => return None,
                    ev = rx.recv() => match ev {
                        Ok((event, data)) => {
                            let chunk = format!("event: {event}\ndata: {data}\n\n");
                            return Some((Ok(bytes::Bytes::from(chunk)), (rx, None, cut)));
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        },
    );
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
