//! Table deltas (issue 17, must-show 3): a subscriber that asks `?since=` with a version
//! control still keeps gets what changed since, one further behind gets the whole table, and
//! a delta that does not make the table it names is refused and the whole table fetched.
//! (`dns_delta_load.rs` has the third part: DNS answers under load through 100 deltas.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ocean_control::engine::{start, Running};
use ocean_core::subscriber::{self, SubscriberConfig, DELTA_HEADER};
use ocean_core::table::{delta, DnsTable, Table, TableKind};
use ocean_tests::fake_marathon::{app, task, FakeMarathon};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const APP: &str = "/shop/svc";
/// What the app's A records are called in the dns table.
const NAME: &str = "svc-shop.marathon.mesos.";

async fn control(m: &FakeMarathon) -> (Running, CancellationToken) {
    let mut c = m.control_config();
    c.debounce = Duration::from_millis(20);
    let cancel = CancellationToken::new();
    (start(c, cancel.clone()).await.unwrap(), cancel)
}

fn current_etag(c: &Running) -> Option<String> {
    c.shared.store.get(TableKind::Dns).map(|s| s.etag.clone())
}

/// Adds task `n` (on host 127.0.1.n) and waits until control publishes a new dns table;
/// returns that table and its ETag.
async fn add_task(m: &FakeMarathon, c: &Running, n: u32) -> (String, DnsTable) {
    let before = current_etag(c);
    let host = format!("127.0.{}.{}", 1 + n / 250, n % 250 + 1);
    m.add_task(APP, task(APP, n, &host, &[31000 + n as u16]));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = c.shared.store.get(TableKind::Dns) {
            if Some(&s.etag) != before.as_ref() {
                let t = DnsTable::from_json(&s.body).unwrap();
                if t.names
                    .get(NAME)
                    .is_some_and(|r| r.a.iter().any(|a| a.to_string() == host))
                {
                    return (s.etag.clone(), t);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "control did not publish task {n} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Marathon with the app the tests change and 100 apps of 3 tasks that stay (the bulk of
/// the table, which a delta does not carry).
async fn marathon_with_app() -> FakeMarathon {
    let m = FakeMarathon::start().await.unwrap();
    m.put_app(app(APP, json!({}), 10000));
    m.put_static_apps(100, 3);
    m
}

/// `GET /v1/tables/dns?since=E` (no wait): the delta's `from` header (if a delta) and body.
async fn get_since(c: &Running, since: &str) -> (Option<String>, String, bytes::Bytes) {
    let resp = reqwest::get(format!(
        "http://{}/v1/tables/dns?since={since}&wait=0s",
        c.addr
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let header = |h: &str| {
        resp.headers()
            .get(h)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let from = header(DELTA_HEADER);
    let etag = ocean_core::table::unquote_etag(&header("etag").unwrap()).to_string();
    (from, etag, resp.bytes().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_missed_50_versions_gets_the_whole_table() {
    let m = marathon_with_app().await;
    let (c, cancel) = control(&m).await;
    // Version 0 and 50 more, each one task more; control keeps the default 32 steps.
    let mut versions = vec![add_task(&m, &c, 0).await];
    for n in 1..=50 {
        versions.push(add_task(&m, &c, n).await);
    }
    let (last_etag, last) = versions.last().cloned().unwrap();
    assert_eq!(current_etag(&c).as_deref(), Some(last_etag.as_str()));

    // 50 versions behind: past the history, the whole table.
    let (from, etag, body) = get_since(&c, &versions[0].0).await;
    assert_eq!(from, None, "50 versions behind must get the whole table");
    assert_eq!(etag, last_etag);
    assert_eq!(DnsTable::from_json(&body).unwrap(), last);

    // One, ten and 32 versions behind: a delta that makes the current table, and that is
    // much smaller than the table.
    for behind in [1usize, 10, 32] {
        let (base_etag, base) = &versions[versions.len() - 1 - behind];
        let (from, etag, doc) = get_since(&c, base_etag).await;
        assert_eq!(
            from.as_deref(),
            Some(base_etag.as_str()),
            "{behind} behind: a delta"
        );
        assert_eq!(etag, last_etag);
        let encoded = base.encode_after(None, Default::default()).unwrap().0;
        let applied =
            delta::apply(base, base_etag, &encoded, &doc).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(applied.table, last, "{behind} behind");
        assert_eq!(applied.etag, last_etag);
        let full = last.canonical_body().unwrap().len();
        assert!(
            doc.len() * 2 < full,
            "{behind} behind: a delta of {} bytes for a table of {full}",
            doc.len()
        );
    }
    // 33 behind: the oldest step is gone.
    let (from, _, _) = get_since(&c, &versions[versions.len() - 34].0).await;
    assert_eq!(from, None, "33 versions behind is past --delta-history 32");
    // An ETag control never published: the whole table.
    let (from, etag, _) = get_since(&c, "0123456789abcdef0123456789abcdef").await;
    assert_eq!((from, etag), (None, last_etag));
    cancel.cancel();
}

/// A relay between a subscriber and control that logs each answer and spoils the next
/// `spoil` deltas (every A record of the set entries moved to 192.0.2.1).
#[derive(Default)]
struct Relay {
    control: Mutex<Option<SocketAddr>>,
    spoil: AtomicUsize,
    /// Per answer: (asked with `since=`, answered a delta, spoiled it).
    log: Mutex<Vec<(bool, bool, bool)>>,
}

async fn relay(State(relay): State<Arc<Relay>>, req: Request) -> Response {
    let control = relay.control.lock().unwrap().unwrap();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let since = req.uri().query().is_some_and(|q| q.contains("since="));
    let mut out = reqwest::Client::new().get(format!("http://{control}{path}"));
    for h in ["if-none-match", "accept-encoding"] {
        if let Some(v) = req.headers().get(h) {
            out = out.header(h, v.as_bytes());
        }
    }
    let resp = out.send().await.unwrap();
    let status = resp.status();
    let mut headers = HeaderMap::new();
    for h in ["etag", "content-encoding", "content-type", DELTA_HEADER] {
        if let Some(v) = resp.headers().get(h) {
            headers.insert(h, v.clone());
        }
    }
    let is_delta = headers.contains_key(DELTA_HEADER);
    let mut body = resp.bytes().await.unwrap().to_vec();
    let spoiled = is_delta
        && relay
            .spoil
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    if spoiled {
        let mut doc: Value = serde_json::from_slice(&body).unwrap();
        for (_, entry) in doc["set"].as_object_mut().unwrap().iter_mut() {
            if entry.get("a").is_some() {
                entry["a"] = json!(["192.0.2.1"]);
            }
        }
        body = serde_json::to_vec(&doc).unwrap();
    }
    if status != StatusCode::NOT_MODIFIED {
        relay.log.lock().unwrap().push((since, is_delta, spoiled));
    }
    (status, headers, body).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoiled_delta_is_caught_by_its_etag_and_the_whole_table_fetched() {
    let m = marathon_with_app().await;
    let (c, cancel) = control(&m).await;
    add_task(&m, &c, 0).await;
    let state = Arc::new(Relay::default());
    *state.control.lock().unwrap() = Some(c.addr);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(relay)
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let proxy = CancellationToken::new();
    let (mut w, _task) = subscriber::spawn::<DnsTable>(
        SubscriberConfig {
            controls: vec![url::Url::parse(&format!("http://{relay_addr}")).unwrap()],
            wait: Duration::from_secs(5),
            subscriber_id: "delta-test".into(),
            ..Default::default()
        },
        proxy.clone(),
    );
    w.first().await.unwrap();
    // Every table the subscriber publishes, to check that the spoiled one never was.
    let published = Arc::new(Mutex::new(Vec::new()));
    {
        let (mut w, published) = (w.clone(), published.clone());
        tokio::spawn(async move {
            while let Some(t) = w.changed().await {
                published.lock().unwrap().push(t);
            }
        });
    }
    let follows = |etag: String| {
        let w = w.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while w.load().map(|t| t.etag.clone()) != Some(etag.clone()) {
                assert!(
                    Instant::now() < deadline,
                    "the subscriber did not get {etag} within 10 s"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };

    // Three changes: three deltas.
    let mut expected = Vec::new();
    for n in 1..=3 {
        let (etag, t) = add_task(&m, &c, n).await;
        follows(etag.clone()).await;
        assert_eq!(w.load().unwrap().table, t);
        expected.push(etag);
    }
    let log = state.log.lock().unwrap().clone();
    assert_eq!(
        &log[log.len() - 3..],
        [(true, true, false); 3],
        "each change comes as a delta: {log:?}"
    );

    // A spoiled delta: refused by its ETag, and the whole table fetched at once.
    state.spoil.store(1, Ordering::SeqCst);
    let before = state.log.lock().unwrap().len();
    let (etag, t) = add_task(&m, &c, 4).await;
    follows(etag.clone()).await;
    assert_eq!(w.load().unwrap().table, t);
    let log = state.log.lock().unwrap().clone();
    assert_eq!(
        &log[before..],
        [(true, true, true), (false, false, false)],
        "a spoiled delta, then the whole table asked for without since=: {log:?}"
    );
    // And the next change is a delta again.
    let (etag, t) = add_task(&m, &c, 5).await;
    follows(etag.clone()).await;
    assert_eq!(w.load().unwrap().table, t);
    assert_eq!(state.log.lock().unwrap().last(), Some(&(true, true, false)));
    // Nothing the subscriber published ever held the spoiled address.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let spoiled: Vec<String> = published
        .lock()
        .unwrap()
        .iter()
        .filter(|t| {
            t.table
                .names
                .values()
                .any(|r| r.a.iter().any(|a| a.to_string() == "192.0.2.1"))
        })
        .map(|t| t.etag.clone())
        .collect();
    assert!(spoiled.is_empty(), "spoiled tables published: {spoiled:?}");
    assert!(published.lock().unwrap().len() >= 5);
    proxy.cancel();
    cancel.cancel();
}
