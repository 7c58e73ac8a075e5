//! Events that name an app (issue 17, incremental derive's first half): control fetches
//! that app alone (`/v2/apps/{id}?embed=app.tasks`) and patches its last list, instead of
//! re-listing all of Marathon; an event that names no app, a reconnect of the stream or a
//! failed sync re-lists. The patched tables are the ones a full list gives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use ocean_control::engine::{start, Running};
use ocean_tests::fake_marathon::{app, task, FakeMarathon, Mode};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const KINDS: [&str; 5] = ["dns", "redis", "memcached", "mysql", "lvs"];

async fn control(m: &FakeMarathon) -> (Running, CancellationToken) {
    let cancel = CancellationToken::new();
    let running = start(m.control_config(), cancel.clone()).await.unwrap();
    (running, cancel)
}

async fn dns(running: &Running) -> Value {
    reqwest::get(format!("http://{}/v1/tables/dns", running.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The A records of `name` in the dns table, sorted.
async fn a_records(running: &Running, name: &str) -> Vec<String> {
    let t = dns(running).await;
    let mut out: Vec<String> = t["names"][name]["a"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

async fn wait_a(running: &Running, name: &str, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = a_records(running, name).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: {got:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every table's ETag.
async fn etags(running: &Running) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for kind in KINDS {
        let resp = reqwest::get(format!("http://{}/v1/tables/{kind}", running.addr))
            .await
            .unwrap();
        out.push(
            resp.headers()
                .get("etag")
                .map(|v| v.to_str().unwrap().to_string()),
        );
    }
    out
}

/// Waits until the event stream is up and the sync its attach caused is done.
async fn settled(running: &Running, m: &FakeMarathon) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !running.shared.status().event_stream_up {
        assert!(Instant::now() < deadline, "the event stream never came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut last = m.requests().0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = m.requests().0;
        if now == last {
            return;
        }
        last = now;
    }
}

/// `ocean_control_normalizes_total{apps="patched"}` on control's `/metrics` (0 if absent).
async fn normalizes_patched(running: &Running) -> f64 {
    counter(
        running,
        "ocean_control_normalizes_total",
        &["apps=\"patched\""],
    )
    .await
}

/// A counter on control's `/metrics` with these labels (0 if absent).
async fn counter(running: &Running, name: &str, labels: &[&str]) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", running.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    ocean_tests::metrics::value(&text, name, labels).unwrap_or(0.0)
}

const BUFFERS_REUSED: &str = "ocean_control_table_buffers_reused_total";

fn web_task(n: u32) -> Value {
    task("/shop/web", n, &format!("127.0.9.{n}"), &[31000])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_for_one_app_fetches_that_app_alone() {
    let m = FakeMarathon::start().await.unwrap();
    m.put_static_apps(20, 2);
    m.put_app(app(
        "/shop/web",
        json!({"OCEAN_REDIS_CLUSTER": "web"}),
        7001,
    ));
    m.add_task("/shop/web", web_task(1));
    let (c, cancel) = control(&m).await;
    settled(&c, &m).await;
    wait_a(&c, "web-shop.marathon.mesos.", &["127.0.9.1"]).await;
    let lists = m.requests().0;
    let apps = m.app_requests();
    let patched = normalizes_patched(&c).await;
    let recycled = counter(&c, "ocean_control_dns_tables_recycled_total", &[]).await;
    let reused = counter(&c, BUFFERS_REUSED, &["kind=\"dns\""]).await;

    // A task starts, another stops, an app is posted and gets a task: each event names
    // its app, and only that app is fetched.
    m.add_task("/shop/web", web_task(2));
    wait_a(&c, "web-shop.marathon.mesos.", &["127.0.9.1", "127.0.9.2"]).await;
    let id = web_task(1)["id"].as_str().unwrap().to_string();
    m.kill_task("/shop/web", &id);
    wait_a(&c, "web-shop.marathon.mesos.", &["127.0.9.2"]).await;
    m.put_app(app("/shop/api", json!({}), 7002));
    m.add_task("/shop/api", task("/shop/api", 1, "127.0.8.1", &[31000]));
    wait_a(&c, "api-shop.marathon.mesos.", &["127.0.8.1"]).await;
    // An app that goes away: Marathon's 404 for it removes it.
    m.remove_app("/shop/api");
    wait_a(&c, "api-shop.marathon.mesos.", &[]).await;
    assert_eq!(
        m.requests().0,
        lists,
        "no re-list for events that name an app"
    );
    // Five events, four syncs at least (the post and the task of /shop/api may share one).
    assert!(
        m.app_requests() >= apps + 4,
        "{} one-app fetches",
        m.app_requests() - apps
    );
    // And those syncs normalized only the apps they fetched (the other test of this file
    // shares the counter, but makes fewer than 4 such syncs).
    let normalized = normalizes_patched(&c).await - patched;
    assert!(
        normalized >= 4.0,
        "{normalized} syncs normalized only the named apps"
    );
    // From the third patched derive on, the dns table published before the current one
    // is rewritten rather than every name copied; the ETags below prove it right.
    let recycled = counter(&c, "ocean_control_dns_tables_recycled_total", &[]).await - recycled;
    assert!(recycled >= 1.0, "{recycled} dns tables recycled");
    // And the dns body is built in the buffer of the one the last publish replaced, once
    // no response holds it any more.
    let reused = counter(&c, BUFFERS_REUSED, &["kind=\"dns\""]).await - reused;
    assert!(
        reused >= 1.0,
        "{reused} dns bodies built in a retired one's buffer"
    );
    let problems: Value = reqwest::get(format!("http://{}/v1/problems", c.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(problems["sync"]["last_error"].is_null(), "{problems}");

    // The patched tables are what a full list gives: a second control, started now, lists
    // Marathon whole and publishes the same ETags.
    let (fresh, cancel_fresh) = control(&m).await;
    settled(&fresh, &m).await;
    assert_eq!(etags(&c).await, etags(&fresh).await);

    // A reconnect of the stream may have missed events: a re-list.
    m.cut_event_streams();
    let deadline = Instant::now() + Duration::from_secs(5);
    while m.requests().0 < lists + 2 {
        assert!(Instant::now() < deadline, "no re-list after a reconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    cancel_fresh.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_sync_the_next_event_re_lists() {
    let m = FakeMarathon::start().await.unwrap();
    m.put_app(app("/shop/web", json!({}), 7001));
    m.add_task("/shop/web", web_task(1));
    m.put_app(app("/shop/db", json!({}), 7002));
    m.add_task("/shop/db", task("/shop/db", 1, "127.0.7.1", &[31000]));
    let (c, cancel) = control(&m).await;
    settled(&c, &m).await;
    wait_a(&c, "web-shop.marathon.mesos.", &["127.0.9.1"]).await;

    // Marathon fails: the event's one-app fetch fails, and so does the re-list it falls
    // back to; the tables stay.
    m.set_mode(Mode::Error500);
    m.add_task("/shop/db", task("/shop/db", 2, "127.0.7.2", &[31000]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.shared.status().consecutive_failures == 0 {
        assert!(Instant::now() < deadline, "the sync did not fail");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        a_records(&c, "db-shop.marathon.mesos.").await,
        ["127.0.7.1"]
    );
    // Marathon is back, and the next event names another app: the db change it missed
    // must come too, so this sync re-lists rather than fetching /shop/web alone.
    m.set_mode(Mode::Normal);
    let lists = m.requests().0;
    m.add_task("/shop/web", web_task(2));
    wait_a(&c, "web-shop.marathon.mesos.", &["127.0.9.1", "127.0.9.2"]).await;
    wait_a(&c, "db-shop.marathon.mesos.", &["127.0.7.1", "127.0.7.2"]).await;
    assert!(m.requests().0 > lists, "no re-list after the failed sync");
    cancel.cancel();
}
