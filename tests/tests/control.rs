//! `ocean control` end to end: a fake Marathon, a real control, real subscribers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ocean_control::api_auth::ApiToken;
use ocean_control::config::Source;
use ocean_control::engine::{start, Running};
use ocean_control::Config;
use ocean_core::secret::Secret;
use ocean_core::subscriber::{self, SubscriberConfig};
use ocean_core::table::{DnsTable, RedisTable};
use ocean_tests::fake_marathon::{app, task, FakeMarathon, Mode};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

fn config(marathon: &FakeMarathon) -> Config {
    marathon.control_config()
}

async fn control(c: Config) -> (Running, CancellationToken) {
    let cancel = CancellationToken::new();
    let running = start(c, cancel.clone()).await.unwrap();
    (running, cancel)
}

fn base(addr: SocketAddr) -> url::Url {
    url::Url::parse(&format!("http://{addr}")).unwrap()
}

async fn get_json(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sub_config(control: SocketAddr) -> SubscriberConfig {
    SubscriberConfig {
        controls: vec![base(control)],
        wait: Duration::from_secs(30),
        backoff_max: Duration::from_millis(300),
        subscriber_id: "test-proxy".into(),
        ..Default::default()
    }
}

fn web_ips(t: &DnsTable) -> Vec<String> {
    t.names
        .get("web.marathon.mesos.")
        .map(|r| r.a.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

async fn marathon_with_web() -> FakeMarathon {
    let m = FakeMarathon::start().await.unwrap();
    m.put_app(app(
        "/web",
        json!({"OCEAN_REDIS_CLUSTER": "web-cache"}),
        6390,
    ));
    m.add_task("/web", task("/web", 1, "127.0.1.1", &[31001]));
    m
}

#[tokio::test]
async fn an_sse_event_reaches_a_subscriber_within_a_second_without_a_request_storm() {
    let m = marathon_with_web().await;
    let (ctl, cancel) = control(config(&m)).await;
    let shared = ctl.shared.clone();
    eventually("event stream up", Duration::from_secs(5), || {
        let up = shared.status().event_stream_up;
        async move { up }
    })
    .await;
    let (mut w, _task) = subscriber::spawn::<DnsTable>(sub_config(ctl.addr), cancel.clone());
    let first = tokio::time::timeout(Duration::from_secs(5), w.first())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(web_ips(&first.table), vec!["127.0.1.1"]);
    // Let the subscriber settle into its long-poll, then count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let polls = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["polls"].as_u64().unwrap())
            .sum::<u64>()
    };
    let subs_url = format!("http://{}/v1/subscribers", ctl.addr);
    let before_polls = polls(&get_json(subs_url.clone()).await);
    let before = m.requests();

    let t0 = Instant::now();
    m.add_task("/web", task("/web", 2, "127.0.1.2", &[31001]));
    loop {
        let t = tokio::time::timeout(Duration::from_secs(1), w.changed())
            .await
            .expect("no new table within 1 s")
            .unwrap();
        if web_ips(&t.table).contains(&"127.0.1.2".to_string()) {
            break;
        }
    }
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    eprintln!("task added -> subscriber has it: {took:?}");

    // Quiet period: nothing changes, so almost nothing is requested.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = m.requests();
    let after_polls = polls(&get_json(subs_url).await);
    // One re-list (plus its leader check) for the change, no more.
    assert!(
        after.0 - before.0 <= 2,
        "/v2/apps requests: {before:?} -> {after:?}"
    );
    assert_eq!(after.2, before.2, "the event stream was not reopened");
    // The subscriber polled once to get the change and once more to wait: no storm.
    assert!(
        after_polls - before_polls <= 3,
        "subscriber polls {before_polls} -> {after_polls}"
    );
    let subs = get_json(format!("http://{}/v1/subscribers", ctl.addr)).await;
    let me = subs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "dns")
        .unwrap();
    assert_eq!(me["id"], "test-proxy");
    assert_eq!(me["lagging"], false, "{me}");
    assert_eq!(me["running"], me["current"]);
    // Paged and filtered: how many match is in X-Total-Count; a bad parameter is a 400.
    let resp = reqwest::get(format!(
        "http://{}/v1/subscribers?kind=dns&lagging=false&limit=1",
        ctl.addr
    ))
    .await
    .unwrap();
    assert_eq!(resp.headers()["x-total-count"], "1");
    let rows: Value = resp.json().await.unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    let none: Value = reqwest::get(format!(
        "http://{}/v1/subscribers?kind=dns&offset=1",
        ctl.addr
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(none, serde_json::json!([]));
    // A full table, gzip-compressed for a client that accepts it: the same JSON, the same
    // ETag; identity otherwise.
    let url = format!("http://{}/v1/tables/dns", ctl.addr);
    let client = reqwest::Client::new();
    let plain = client.get(&url).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain_etag = plain.headers()["etag"].clone();
    let plain = plain.bytes().await.unwrap();
    let zipped = client
        .get(&url)
        .header("accept-encoding", "gzip, deflate")
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    assert_eq!(zipped.headers()["etag"], plain_etag);
    let zipped = zipped.bytes().await.unwrap();
    let inflated =
        ocean_core::table::gzip::inflate(&zipped, ocean_core::table::gzip::MAX_INFLATED).unwrap();
    assert_eq!(inflated, plain.to_vec());
    for bad in ["kind=nope", "limit=-1", "page=2"] {
        let status = reqwest::get(format!("http://{}/v1/subscribers?{bad}", ctl.addr))
            .await
            .unwrap()
            .status();
        assert_eq!(status, 400, "{bad}");
    }
    cancel.cancel();
}

#[tokio::test]
async fn a_subscriber_keeps_its_table_while_control_restarts_and_reconnects() {
    let m = marathon_with_web().await;
    let (ctl, cancel1) = control(config(&m)).await;
    let addr = ctl.addr;
    let sub_cancel = CancellationToken::new();
    let (mut w, _task) = subscriber::spawn::<RedisTable>(sub_config(addr), sub_cancel.clone());
    let first = tokio::time::timeout(Duration::from_secs(5), w.first())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.table.clusters[0].nodes.len(), 1);

    cancel1.cancel();
    tokio::time::timeout(Duration::from_secs(5), ctl.wait())
        .await
        .expect("control did not stop promptly");
    let w2 = w.clone();
    eventually(
        "subscriber notices control is gone",
        Duration::from_secs(5),
        || {
            let err = w2.status().last_error.is_some();
            async move { err }
        },
    )
    .await;
    assert_eq!(
        w.load().unwrap().etag,
        first.etag,
        "the table stays while control is down"
    );

    m.add_task("/web", task("/web", 2, "127.0.1.2", &[31001]));
    let mut c = config(&m);
    c.listen = addr;
    let (_ctl2, cancel2) = control(c).await;
    let next = tokio::time::timeout(Duration::from_secs(5), w.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.table.clusters[0].nodes.len(), 2);
    assert!(w.status().last_error.is_none());
    cancel2.cancel();
    sub_cancel.cancel();
}

#[tokio::test]
async fn a_restarted_proxy_starts_from_its_table_cache_when_control_is_down() {
    let m = marathon_with_web().await;
    let (ctl, cancel) = control(config(&m)).await;
    let cache = tempfile::tempdir().unwrap();
    let mut sc = sub_config(ctl.addr);
    sc.cache_dir = Some(cache.path().to_path_buf());
    let sub_cancel = CancellationToken::new();
    let (mut w, task1) = subscriber::spawn::<DnsTable>(sc.clone(), sub_cancel.clone());
    let first = tokio::time::timeout(Duration::from_secs(5), w.first())
        .await
        .unwrap()
        .unwrap();
    sub_cancel.cancel();
    task1.await.unwrap();
    cancel.cancel();
    ctl.wait().await;

    // Control is gone; a new proxy process starts with the same cache.
    let (mut w2, _task2) = subscriber::spawn::<DnsTable>(sc, CancellationToken::new());
    let cached = tokio::time::timeout(Duration::from_secs(5), w2.first())
        .await
        .expect("no table from the cache")
        .unwrap();
    assert_eq!(cached.etag, first.etag);
    assert_eq!(web_ips(&cached.table), vec!["127.0.1.1"]);
    let source = w2.status().source.unwrap_or_default();
    assert!(source.starts_with("cache "), "{source}");
}

#[tokio::test]
async fn marathon_failures_leave_tables_unchanged_and_say_why() {
    let m = marathon_with_web().await;
    let mut c = config(&m);
    // Re-list often so each failure mode is exercised quickly.
    c.resync = Duration::from_millis(200);
    c.poll_while_down = Duration::from_millis(200);
    let (ctl, cancel) = control(c).await;
    let api = format!("http://{}", ctl.addr);
    let etag = |api: String| async move {
        let r = reqwest::get(format!("{api}/v1/tables/redis"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["etag"].to_str().unwrap().to_string()
    };
    eventually("first sync", Duration::from_secs(5), || {
        let api = api.clone();
        async move {
            reqwest::get(format!("{api}/v1/tables/redis"))
                .await
                .unwrap()
                .status()
                == 200
        }
    })
    .await;
    let good = etag(api.clone()).await;
    assert_eq!(get_json(format!("{api}/healthz")).await["status"], "ok");

    for (mode, expect) in [
        (Mode::BrokenJson, "not Marathon's apps JSON"),
        (Mode::Error500, "HTTP 500"),
        (Mode::Hang, "/v2/apps"),
    ] {
        m.set_mode(mode);
        eventually(
            &format!("{mode:?} reported"),
            Duration::from_secs(5),
            || {
                let api = api.clone();
                async move {
                    let p = get_json(format!("{api}/v1/problems")).await;
                    p["sync"]["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains(expect))
                }
            },
        )
        .await;
        let h = get_json(format!("{api}/healthz")).await;
        assert_eq!(h["status"], "stale", "{mode:?}: {h}");
        assert!(h["reason"].as_str().unwrap().contains(expect), "{h}");
        assert_eq!(etag(api.clone()).await, good, "{mode:?} changed the table");
        m.set_mode(Mode::Normal);
        eventually("recovery", Duration::from_secs(5), || {
            let api = api.clone();
            async move { get_json(format!("{api}/healthz")).await["status"] == "ok" }
        })
        .await;
    }

    // Marathon answers with nothing: the guard holds every table that would empty.
    m.set_mode(Mode::Empty);
    eventually("empty list held", Duration::from_secs(5), || {
        let api = api.clone();
        async move { get_json(format!("{api}/healthz")).await["status"] == "held" }
    })
    .await;
    let p = get_json(format!("{api}/v1/problems")).await;
    let text = p["problems"].to_string();
    assert!(text.contains("returned no apps"), "{text}");
    assert!(text.contains("redis table held"), "{text}");
    assert_eq!(
        etag(api.clone()).await,
        good,
        "an empty Marathon emptied the table"
    );

    // A Marathon that is not the elected leader is not trusted.
    m.set_mode(Mode::Normal);
    m.set_elected(false);
    eventually("not-leader reported", Duration::from_secs(5), || {
        let api = api.clone();
        async move {
            let h = get_json(format!("{api}/healthz")).await;
            h["status"] == "stale"
                && h["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("not the elected leader")
        }
    })
    .await;
    cancel.cancel();
}

#[tokio::test]
async fn a_refused_table_leaves_the_old_one_and_is_reported_to_control() {
    // A stand-in control that serves a good table, then an invalid one, and records what
    // the subscriber reports on each poll.
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let good = r#"{"clusters":[{"name":"c","listen_port":6380,"nodes":["127.0.0.1:7000"]}]}"#;
    let bad = r#"{"clusters":[{"name":"c","listen_port":6380,"nodes":[]}]}"#;
    let queries: Arc<Mutex<Vec<String>>> = Arc::default();
    let q2 = queries.clone();
    let router = axum::Router::new().route(
        "/v1/tables/redis",
        axum::routing::get(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
                let queries = q2.clone();
                async move {
                    let n = {
                        let mut q = queries.lock().unwrap();
                        q.push(uri.query().unwrap_or("").to_string());
                        q.len()
                    };
                    let inm = headers
                        .get(header::IF_NONE_MATCH)
                        .map(|v| v.to_str().unwrap().to_string());
                    match n {
                        1 => ([(header::ETAG, "\"good\"")], good).into_response(),
                        2 => ([(header::ETAG, "\"bad\"")], bad).into_response(),
                        _ => {
                            assert_eq!(
                                inm.as_deref(),
                                Some("\"bad\""),
                                "the refused table is not asked for again"
                            );
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            StatusCode::NOT_MODIFIED.into_response()
                        }
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let (mut w, _t) = subscriber::spawn::<RedisTable>(sub_config(addr), CancellationToken::new());
    let first = tokio::time::timeout(Duration::from_secs(5), w.first())
        .await
        .unwrap()
        .unwrap();
    let w2 = w.clone();
    eventually("refusal", Duration::from_secs(5), || {
        let n = w2.status().refused;
        async move { n == 1 }
    })
    .await;
    assert_eq!(w.load().unwrap().etag, first.etag, "the old table stays");
    let q2 = queries.clone();
    eventually("refusal reported", Duration::from_secs(5), || {
        let q = q2.lock().unwrap().clone();
        async move {
            q.iter()
                .any(|q| q.contains("refused=") && q.contains("cluster+has+no+nodes"))
        }
    })
    .await;
    let q = queries.lock().unwrap().clone();
    assert!(q[2].contains(&format!("running={}", first.etag)), "{q:?}");
}

#[tokio::test]
async fn the_api_token_is_required_on_v1() {
    let m = marathon_with_web().await;
    let mut c = config(&m);
    c.tokens = vec![ApiToken::new("test", &Secret::new("s3cret".into()), None).unwrap()];
    let (ctl, cancel) = control(c).await;
    let url = format!("http://{}/v1/tables/mysql", ctl.addr);
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 401);
    let client = reqwest::Client::new();
    let wrong = client.get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    eventually("authorized table", Duration::from_secs(5), || {
        let req = client.get(&url).bearer_auth("s3cret").send();
        async move { req.await.unwrap().status() == 200 }
    })
    .await;
    assert_eq!(
        reqwest::get(format!("http://{}/healthz", ctl.addr))
            .await
            .unwrap()
            .status(),
        200
    );
    let mut sc = sub_config(ctl.addr);
    sc.token = Some(Secret::new("s3cret".into()));
    let (mut w, _t) = subscriber::spawn::<ocean_core::table::MysqlTable>(sc, cancel.clone());
    assert!(tokio::time::timeout(Duration::from_secs(5), w.first())
        .await
        .unwrap()
        .is_some());
    let unknown = client
        .get(format!("http://{}/v1/tables/nope", ctl.addr))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    cancel.cancel();
}

#[tokio::test]
async fn long_poll_returns_304_after_the_wait_and_200_on_change() {
    let m = marathon_with_web().await;
    let (ctl, cancel) = control(config(&m)).await;
    let url = format!("http://{}/v1/tables/redis", ctl.addr);
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    let etag = loop {
        let r = client.get(&url).send().await.unwrap();
        if r.status() == 200 {
            break r.headers()["etag"].to_str().unwrap().to_string();
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "no first table");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let t0 = Instant::now();
    let r = client
        .get(format!("{url}?wait=300ms"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert!(t0.elapsed() >= Duration::from_millis(290));
    let pending = tokio::spawn(
        client
            .get(format!("{url}?wait=20s"))
            .header("If-None-Match", etag.clone())
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    m.add_task("/web", task("/web", 3, "127.0.1.3", &[31001]));
    let r = tokio::time::timeout(Duration::from_secs(2), pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(r.headers()["etag"].to_str().unwrap(), etag);
    let bad = client.get(format!("{url}?wait=soon")).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    cancel.cancel();
}

#[tokio::test]
async fn only_the_elected_leader_is_trusted_among_several_marathons() {
    let standby = FakeMarathon::start().await.unwrap();
    standby.set_elected(false);
    // The standby holds a stale view that must never be published.
    standby.put_app(app("/web", json!({"OCEAN_REDIS_CLUSTER": "stale"}), 6390));
    standby.add_task("/web", task("/web", 9, "127.0.9.9", &[31009]));
    let leader = marathon_with_web().await;
    let mut c = config(&leader);
    c.source = Source::Marathon(vec![standby.url(), leader.url()]);
    let (ctl, cancel) = control(c).await;
    let (mut w, _t) = subscriber::spawn::<RedisTable>(sub_config(ctl.addr), cancel.clone());
    let t = tokio::time::timeout(Duration::from_secs(5), w.first())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.table.clusters[0].name, "web-cache");
    let status = ctl.shared.status();
    assert!(
        status.source.contains(&leader.addr().to_string()),
        "{}",
        status.source
    );
    cancel.cancel();
}

#[tokio::test]
async fn a_cut_event_stream_is_reopened_and_changes_keep_flowing() {
    let m = marathon_with_web().await;
    let (ctl, cancel) = control(config(&m)).await;
    let shared = ctl.shared.clone();
    let up = || {
        let s = shared.clone();
        move || {
            let up = s.status().event_stream_up;
            async move { up }
        }
    };
    eventually("event stream up", Duration::from_secs(5), up()).await;
    let (mut w, _t) = subscriber::spawn::<DnsTable>(sub_config(ctl.addr), cancel.clone());
    tokio::time::timeout(Duration::from_secs(5), w.first())
        .await
        .unwrap()
        .unwrap();
    let opened = m.requests().2;
    m.cut_event_streams();
    eventually("event stream reopened", Duration::from_secs(5), || {
        let n = m.requests().2;
        async move { n > opened }
    })
    .await;
    eventually("event stream up again", Duration::from_secs(5), up()).await;
    m.add_task("/web", task("/web", 2, "127.0.1.2", &[31001]));
    let t0 = Instant::now();
    loop {
        let t = tokio::time::timeout(Duration::from_secs(2), w.changed())
            .await
            .unwrap()
            .unwrap();
        if web_ips(&t.table).len() == 2 {
            break;
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    cancel.cancel();
}

#[tokio::test]
async fn a_collapsing_pool_is_held_while_the_rest_of_its_table_moves_on() {
    let m = FakeMarathon::start().await.unwrap();
    m.put_app(app("/cache/a", json!({"OCEAN_REDIS_CLUSTER": "a"}), 6390));
    m.put_app(app("/cache/b", json!({"OCEAN_REDIS_CLUSTER": "b"}), 6391));
    for n in 1..=4 {
        m.add_task(
            "/cache/a",
            task("/cache/a", n, &format!("127.0.2.{n}"), &[7000]),
        );
    }
    m.add_task("/cache/b", task("/cache/b", 1, "127.0.3.1", &[7000]));
    let (ctl, cancel) = control(config(&m)).await;
    let (mut w, _t) = subscriber::spawn::<RedisTable>(sub_config(ctl.addr), cancel.clone());
    let first = tokio::time::timeout(Duration::from_secs(5), w.first())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.table.clusters[0].nodes.len(), 4);

    // Marathon suddenly lists one node of cluster a (3 of 4 gone), and b grows.
    let tasks: Vec<String> = (2..=4)
        .map(|n| {
            task("/cache/a", n, "x", &[])["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for id in &tasks {
        m.kill_task("/cache/a", id);
    }
    m.add_task("/cache/b", task("/cache/b", 2, "127.0.3.2", &[7000]));
    let next = loop {
        let t = tokio::time::timeout(Duration::from_secs(2), w.changed())
            .await
            .unwrap()
            .unwrap();
        if t.table.clusters[1].nodes.len() == 2 {
            break t;
        }
    };
    assert_eq!(next.table.clusters[0].name, "a");
    assert_eq!(
        next.table.clusters[0].nodes.len(),
        4,
        "cluster a keeps its last good nodes"
    );
    let p = get_json(format!("http://{}/v1/problems", ctl.addr)).await;
    let text = p["problems"].to_string();
    assert!(text.contains("cluster a would drop 75%"), "{text}");
    assert_eq!(
        get_json(format!("http://{}/healthz", ctl.addr)).await["status"],
        "held"
    );
    cancel.cancel();
}

#[tokio::test]
async fn a_restarted_control_with_a_state_dir_still_holds_an_empty_marathon() {
    let m = marathon_with_web().await;
    let state = tempfile::tempdir().unwrap();
    let mut c = config(&m);
    c.state_dir = Some(state.path().to_path_buf());
    let (ctl, cancel) = control(c.clone()).await;
    eventually(
        "first publish written to the state dir",
        Duration::from_secs(5),
        || {
            let exists = state.path().join("redis.json").exists();
            async move { exists }
        },
    )
    .await;
    cancel.cancel();
    ctl.wait().await;

    // Marathon comes back empty while control restarts.
    m.set_mode(Mode::Empty);
    let (ctl2, cancel2) = control(c).await;
    let url2 = format!("http://{}/v1/tables/redis", ctl2.addr);
    eventually(
        "first sync after the restart",
        Duration::from_secs(5),
        || {
            let url2 = url2.clone();
            async move { reqwest::get(url2).await.unwrap().status() == 200 }
        },
    )
    .await;
    let t: Value = reqwest::get(&url2).await.unwrap().json().await.unwrap();
    assert_eq!(
        t["clusters"][0]["nodes"].as_array().map(|n| n.len()),
        Some(1),
        "the empty answer emptied the table: {t}"
    );
    assert_eq!(
        get_json(format!("http://{}/healthz", ctl2.addr)).await["status"],
        "held"
    );
    cancel2.cancel();
}

#[tokio::test]
async fn a_proxy_whose_first_table_is_refused_starts_from_its_cache() {
    // A stand-in control that only ever serves an invalid table.
    use axum::http::header;
    use axum::response::IntoResponse;
    let bad = r#"{"clusters":[{"name":"c","listen_port":6380,"nodes":[]}]}"#;
    let router = axum::Router::new().route(
        "/v1/tables/redis",
        axum::routing::get(
            move || async move { ([(header::ETAG, "\"bad\"")], bad).into_response() },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let cache = tempfile::tempdir().unwrap();
    let good = r#"{"clusters":[{"listen_port":6380,"name":"c","nodes":["127.0.0.1:7000"]}]}"#;
    ocean_core::subscriber::write_cache_file(cache.path(), "redis", good.as_bytes()).unwrap();
    let mut sc = sub_config(addr);
    sc.cache_dir = Some(cache.path().to_path_buf());
    let cancel = CancellationToken::new();
    let (mut w, _t) = subscriber::spawn::<RedisTable>(sc, cancel.clone());
    let t = tokio::time::timeout(Duration::from_secs(5), w.first())
        .await
        .expect("no table from the cache")
        .unwrap();
    assert_eq!(t.table.clusters[0].nodes.len(), 1);
    assert!(w.status().source.unwrap_or_default().starts_with("cache "));
    assert_eq!(w.status().refused, 1);
    cancel.cancel();
}
