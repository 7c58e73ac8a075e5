//! Marathon's event stream (`GET /v2/events`, server-sent events).
//!
//! Events only mark the state dirty: after a short debounce the engine re-lists every app
//! (as marathon-lb does), so a lost or reordered event can never leave a table wrong. While
//! the stream is down the engine polls instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client::{join, MarathonClient};
use crate::freshness::Freshness;
use crate::pending::Pending;

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (Marathon's event type), `message` when absent.
    pub event: String,
    pub data: String,
}

/// The stream broke the SSE framing or a limit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("event line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("event larger than {0} bytes")]
    EventTooLarge(usize),
}

/// An incremental SSE parser: feed it chunks as they arrive, get complete events back.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    event: Option<String>,
    data: String,
    /// Whether a `data:` line was seen (`data` alone cannot tell: it may be empty).
    has_data: bool,
    max: usize,
}

impl SseParser {
    /// `max` bounds both one line and one event's data.
    pub fn new(max: usize) -> Self {
        SseParser {
            line: Vec::new(),
            event: None,
            data: String::new(),
            has_data: false,
            max,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut out = Vec::new();
        for &b in chunk {
            if b != b'\n' {
                if self.line.len() >= self.max {
                    return Err(SseError::LineTooLong(self.max));
                }
                self.line.push(b);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if std::mem::take(&mut self.has_data) || self.event.is_some() {
                    out.push(SseEvent {
                        event: self.event.take().unwrap_or_else(|| "message".into()),
                        data: std::mem::take(&mut self.data),
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue; // comment / keep-alive
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (&*line, ""),
            };
            match field {
                "event" => self.event = Some(value.to_string()),
                "data" => {
                    if self.data.len() + value.len() + 1 > self.max {
                        return Err(SseError::EventTooLarge(self.max));
                    }
                    // Lines join with LF, empty ones included (`data:\ndata:` is "\n").
                    if self.has_data {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                    self.has_data = true;
                }
                _ => {} // id, retry: not used
            }
        }
        Ok(out)
    }
}

/// Event types that do not change apps or tasks.
const IGNORED: &[&str] = &[
    "event_stream_attached",
    "event_stream_detached",
    "subscribe_event",
    "unsubscribe_event",
    "framework_message_event",
    "add_health_check_event",
    "remove_health_check_event",
    "failed_health_check_event",
    "pod_created_event",
    "pod_updated_event",
    "pod_deleted_event",
];

/// Whether an event may change what control derives.
pub fn relevant(event: &SseEvent) -> bool {
    !IGNORED.contains(&event.event.as_str())
}

/// Where the event stream reports what it sees.
pub struct Report {
    /// Wakes the sync loop (full: a sync is already pending).
    pub dirty: mpsc::Sender<()>,
    /// Whether the stream is attached (the sync loop polls while it is not).
    pub up: Arc<AtomicBool>,
    pub freshness: Arc<Freshness>,
    /// Which apps the events named (see [`crate::pending`]).
    pub pending: Arc<Pending>,
}

impl Report {
    /// Something may have changed: `app` when the event names the one app it is about.
    fn changed(&self, app: Option<&str>) {
        self.freshness.doubt();
        match app {
            Some(id) => self.pending.app(id),
            None => self.pending.all(),
        }
        // Full means a sync is already pending, which covers this event too.
        let _ = self.dirty.try_send(());
    }
}

/// The one app an event is about, when it names one: `appId` (task status, health, app
/// terminated), `runSpecId` (instance events), `appDefinition.id` (an app posted or
/// updated). Deployments and group changes name none: they may touch many apps.
pub fn app_of(event: &SseEvent) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Named {
        app_id: Option<String>,
        run_spec_id: Option<String>,
        app_definition: Option<Definition>,
    }
    #[derive(serde::Deserialize)]
    struct Definition {
        id: Option<String>,
    }
    if event.event.starts_with("deployment") || event.event.starts_with("group") {
        return None;
    }
    let named: Named = serde_json::from_str(&event.data).ok()?;
    named
        .app_id
        .or(named.run_spec_id)
        .or(named.app_definition.and_then(|d| d.id))
        // Only what can be an app id goes into the one-app URL.
        .filter(|id| id.starts_with('/') && !id.contains(['?', '#', '%']) && !id.contains(".."))
}

/// Keeps an event stream open to the current Marathon instance; reports every relevant
/// event (with the app it names) and, after each (re)connect, that anything may have
/// changed. `up` tells the engine whether to poll.
pub async fn run(client: Arc<MarathonClient>, report: Report, cancel: CancellationToken) {
    let min = Duration::from_millis(200);
    let max = Duration::from_secs(10);
    let mut backoff = min;
    loop {
        let Some(base) = client.current().cloned() else {
            return;
        };
        let url = join(&base, "/v2/events");
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = stream_once(&client, url.clone(), &report, &mut backoff, min) => r,
        };
        report.up.store(false, Ordering::Relaxed);
        // Changes from now on go unannounced until the stream is back and a sync ran.
        report.freshness.doubt();
        metrics::gauge!("ocean_control_event_stream_up").set(0.0);
        match result {
            Ok(()) => tracing::info!(marathon = %base, "event stream ended; reconnecting"),
            Err(e) => {
                tracing::warn!(marathon = %base, error = %e, "event stream failed; polling until it is back")
            }
        }
        client.rotate();
        let sleep = rand::rng().random_range(min..=backoff.max(min));
        backoff = (backoff * 2).min(max);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error("{0}")]
    Sse(#[from] SseError),
}

async fn stream_once(
    client: &MarathonClient,
    url: url::Url,
    report: &Report,
    backoff: &mut Duration,
    min: Duration,
) -> Result<(), StreamError> {
    // A request timeout would cut the stream: this request has none; reqwest's per-client
    // timeout is overridden with a very long one, and TCP keepalive detects dead peers.
    let mut resp = client
        .http()
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .timeout(Duration::from_secs(365 * 24 * 3600))
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(StreamError::Status(resp.status()));
    }
    report.up.store(true, Ordering::Relaxed);
    metrics::gauge!("ocean_control_event_stream_up").set(1.0);
    tracing::info!(marathon = %url, "event stream attached");
    // Events may have been missed while the stream was down.
    report.changed(None);
    let mut parser = SseParser::new(4 << 20);
    while let Some(chunk) = resp.chunk().await? {
        for ev in parser.feed(&chunk)? {
            *backoff = min;
            metrics::counter!("ocean_control_marathon_events_total", "type" => ev.event.clone())
                .increment(1);
            if relevant(&ev) {
                tracing::debug!(event = %ev.event, "marathon event");
                report.changed(app_of(&ev).as_deref());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_app_and_deployments_name_none() {
        let ev = |event: &str, data: &str| SseEvent {
            event: event.into(),
            data: data.into(),
        };
        let cases = [
            (
                ev(
                    "status_update_event",
                    r#"{"appId":"/shop/web","taskId":"t1"}"#,
                ),
                Some("/shop/web"),
            ),
            (
                ev("instance_changed_event", r#"{"runSpecId":"/shop/db"}"#),
                Some("/shop/db"),
            ),
            (
                ev("api_post_event", r#"{"appDefinition":{"id":"/shop/new"}}"#),
                Some("/shop/new"),
            ),
            (
                ev(
                    "deployment_success",
                    r#"{"id":"d1","plan":{"id":"p"},"appId":"/x"}"#,
                ),
                None,
            ),
            (ev("group_change_success", r#"{"groupId":"/shop"}"#), None),
            (ev("status_update_event", "not json"), None),
            (ev("status_update_event", r#"{"appId":"relative"}"#), None),
            (ev("status_update_event", r#"{"appId":"/a?embed=x"}"#), None),
            (
                ev("status_update_event", r#"{"appId":"/a/../../v2/info"}"#),
                None,
            ),
            (
                ev("status_update_event", r#"{"appId":"/a%2F..%2Finfo"}"#),
                None,
            ),
        ];
        for (event, want) in cases {
            assert_eq!(app_of(&event).as_deref(), want, "{event:?}");
        }
    }

    #[test]
    fn parses_events_split_across_chunks() {
        let mut p = SseParser::new(1024);
        let mut got = p
            .feed(b"event: status_update_event\r\ndata: {\"a\":")
            .unwrap();
        assert!(got.is_empty());
        got.extend(
            p.feed(b"1}\r\n\r\n: keepalive\n\nevent: x\ndata: 1\ndata: 2\n\n")
                .unwrap(),
        );
        assert_eq!(
            got,
            vec![
                SseEvent {
                    event: "status_update_event".into(),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: "x".into(),
                    data: "1\n2".into()
                }
            ]
        );
    }

    /// Found by the property test in tests/marathon_props.rs: empty data lines were
    /// dropped, so `data:\ndata:` read as "" instead of "\n" (the SSE rule: every data line
    /// appends its value and a LF, the last LF removed).
    #[test]
    fn empty_data_lines_count() {
        let mut p = SseParser::new(64);
        let got = p
            .feed(b"event: a\ndata:\ndata:\n\ndata:\n\ndata: x\ndata:\n\n")
            .unwrap();
        let ev = |event: &str, data: &str| SseEvent {
            event: event.into(),
            data: data.into(),
        };
        assert_eq!(
            got,
            vec![ev("a", "\n"), ev("message", ""), ev("message", "x\n")]
        );
    }

    #[test]
    fn limits_hold() {
        let mut p = SseParser::new(8);
        assert_eq!(p.feed(b"data: 0123456789"), Err(SseError::LineTooLong(8)));
        let mut p = SseParser::new(10);
        assert_eq!(
            p.feed(b"data:12345\ndata:67890\n"),
            Err(SseError::EventTooLarge(10))
        );
    }

    #[test]
    fn stream_housekeeping_is_not_relevant() {
        let ev = |t: &str| SseEvent {
            event: t.into(),
            data: String::new(),
        };
        assert!(!relevant(&ev("event_stream_attached")));
        assert!(relevant(&ev("status_update_event")));
        assert!(relevant(&ev("health_status_changed_event")));
    }
}
