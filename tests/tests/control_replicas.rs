//! Control replicas (issue 17, must-show 2): two controls on one Marathon publish the same
//! ETag for every table after each of 20 random changes (a table's ETag is the hash of its
//! canonical body, so replicas agree without talking to each other); a proxy given both
//! `--control` URLs keeps following changes when the first is killed and moves back to it
//! when it returns. A replica whose view of Marathon falls behind says so on `/healthz`
//! (`--max-lag`), and the proxy moves to the newer replica without ever stepping back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ocean_control::engine::{start, Running};
use ocean_control::Config;
use ocean_core::subscriber::{self, SubscriberConfig};
use ocean_core::table::DnsTable;
use ocean_tests::fake_marathon::{app, task, FakeMarathon, Mode};
use ocean_tests::lcg::Lcg;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const KINDS: [&str; 5] = ["dns", "redis", "memcached", "mysql", "lvs"];

fn config(marathon: &FakeMarathon, listen: SocketAddr) -> Config {
    let mut c = marathon.control_config();
    c.listen = listen;
    c
}

async fn control(m: &FakeMarathon, listen: SocketAddr) -> (Running, CancellationToken) {
    let cancel = CancellationToken::new();
    let running = start(config(m, listen), cancel.clone()).await.unwrap();
    (running, cancel)
}

/// Every table's ETag as `addr` publishes it (`None` for a table not published yet).
async fn etags(addr: SocketAddr) -> BTreeMap<&'static str, Option<String>> {
    let mut out = BTreeMap::new();
    for kind in KINDS {
        let resp = reqwest::get(format!("http://{addr}/v1/tables/{kind}"))
            .await
            .unwrap();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        out.insert(kind, etag);
    }
    out
}

fn app_id(k: u64) -> String {
    format!("/shop/svc-{k}")
}

fn put(m: &FakeMarathon, k: u64) {
    m.put_app(app(
        &app_id(k),
        json!({"OCEAN_REDIS_CLUSTER": format!("cache-{k}")}),
        7000 + k as u16,
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_publish_the_same_etags_after_each_of_20_random_changes() {
    let m = FakeMarathon::start().await.unwrap();
    // Each app has tasks: (app, task number) -> host.
    let mut tasks: BTreeMap<(u64, u32), String> = BTreeMap::new();
    for k in 0..3 {
        put(&m, k);
        m.add_task(
            &app_id(k),
            task(&app_id(k), 1, &format!("127.0.{k}.1"), &[31000]),
        );
        tasks.insert((k, 1), format!("127.0.{k}.1"));
    }
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (a, cancel_a) = control(&m, any).await;
    let (b, cancel_b) = control(&m, any).await;

    let mut rng = Lcg(0x0cea_0017);
    let mut previous = etags(a.addr).await;
    let mut next_task = 2u32;
    for change in 0..20 {
        // Every change moves a task, so the dns table changes with it.
        let what = match rng.next(4) {
            0 | 1 => {
                let k = rng.next(4);
                if k == 3 && !tasks.keys().any(|(a, _)| *a == 3) {
                    put(&m, 3);
                }
                let host = format!("127.0.{k}.{next_task}");
                m.add_task(&app_id(k), task(&app_id(k), next_task, &host, &[31000]));
                tasks.insert((k, next_task), host.clone());
                next_task += 1;
                format!("add task {host} to {}", app_id(k))
            }
            2 if tasks.len() > 1 => {
                let i = rng.next(tasks.len() as u64) as usize;
                let (k, n) = *tasks.keys().nth(i).unwrap();
                let id = task(&app_id(k), n, "x", &[]);
                m.kill_task(&app_id(k), id["id"].as_str().unwrap());
                tasks.remove(&(k, n));
                format!("kill task {n} of {}", app_id(k))
            }
            _ => {
                let k = rng.next(3);
                let host = format!("127.0.{k}.{next_task}");
                put(&m, k);
                m.add_task(&app_id(k), task(&app_id(k), next_task, &host, &[31000]));
                tasks.insert((k, next_task), host.clone());
                next_task += 1;
                format!("relabel {} and add {host}", app_id(k))
            }
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (ea, eb) = (etags(a.addr).await, etags(b.addr).await);
            if ea == eb && ea["dns"] != previous["dns"] && ea.values().all(Option::is_some) {
                previous = ea;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "change {change} ({what}): the replicas did not agree within 10 s:\nA {ea:?}\nB {eb:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // A and B patched their dns names after each change (the dns index); a replica that
    // starts now derives them whole, and publishes the same ETags.
    let (c, cancel_c) = control(&m, any).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ec = etags(c.addr).await;
        if ec == previous {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a fresh replica's tables differ from the patched ones:\nA {previous:?}\nC {ec:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel_a.cancel();
    cancel_b.cancel();
    cancel_c.cancel();
}

fn ips(t: &DnsTable) -> Vec<String> {
    let mut out: Vec<String> = t
        .names
        .get("svc-0-shop.marathon.mesos.")
        .map(|r| r.a.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    out.sort();
    out
}

async fn subscriber_polls(control: SocketAddr, id: &str) -> u64 {
    let Ok(resp) = reqwest::get(format!("http://{control}/v1/subscribers")).await else {
        return 0;
    };
    let subs: Value = resp.json().await.unwrap_or(Value::Null);
    subs.as_array()
        .map(|list| {
            list.iter()
                .filter(|s| s["id"] == id)
                .map(|s| s["polls"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

const TEN_S: Duration = Duration::from_secs(10);

/// Waits up to `within` until the subscriber `id` has polled `control` `n` times; else fails
/// saying `what`.
async fn wait_polls(control: SocketAddr, id: &str, n: u64, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while subscriber_polls(control, id).await < n {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits up to `within` until the proxy's table gives `svc-0` the addresses `want`; else
/// fails saying `what`.
async fn wait_ips(
    w: &subscriber::TableWatch<DnsTable>,
    want: &[&str],
    within: Duration,
    what: &str,
) {
    let deadline = Instant::now() + within;
    while ips(&w.load().unwrap().table) != want {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A dns subscriber, as a proxy runs one, on both replicas (listed in that order), with
/// short waits and probes; returns once it has the first table (task 127.0.0.11).
async fn proxy_of(
    controls: [SocketAddr; 2],
    id: &str,
) -> (subscriber::TableWatch<DnsTable>, CancellationToken) {
    let sub = SubscriberConfig {
        controls: controls
            .iter()
            .map(|a| url::Url::parse(&format!("http://{a}")).unwrap())
            .collect(),
        wait: Duration::from_secs(1),
        backoff_max: Duration::from_millis(200),
        subscriber_id: id.into(),
        probe_every: Duration::from_millis(200),
        ..Default::default()
    };
    let proxy = CancellationToken::new();
    let (mut w, _task) = subscriber::spawn::<DnsTable>(sub, proxy.clone());
    let first = tokio::time::timeout(Duration::from_secs(5), w.first())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ips(&first.table), ["127.0.0.11"]);
    (w, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_follows_the_second_replica_and_moves_back_to_the_first() {
    let m = FakeMarathon::start().await.unwrap();
    put(&m, 0);
    m.add_task(&app_id(0), task(&app_id(0), 1, "127.0.0.11", &[31000]));
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (a, cancel_a) = control(&m, any).await;
    let (b, cancel_b) = control(&m, any).await;
    let a_addr = a.addr;
    let (w, proxy) = proxy_of([a_addr, b.addr], "replica-test").await;

    // The first replica dies; a change still reaches the proxy, through the second.
    cancel_a.cancel();
    tokio::time::timeout(Duration::from_secs(5), a.wait())
        .await
        .expect("control A stops");
    m.add_task(&app_id(0), task(&app_id(0), 2, "127.0.0.12", &[31000]));
    wait_ips(
        &w,
        &["127.0.0.11", "127.0.0.12"],
        TEN_S,
        "the change did not reach the proxy through the second replica",
    )
    .await;

    // The first replica returns at its address: the proxy polls it again.
    let (a2, cancel_a2) = control(&m, a_addr).await;
    wait_polls(
        a2.addr,
        "replica-test",
        2,
        TEN_S,
        "the proxy did not move back to the first replica within 10 s",
    )
    .await;
    // And it follows changes through it once the second one is gone.
    cancel_b.cancel();
    m.add_task(&app_id(0), task(&app_id(0), 3, "127.0.0.13", &[31000]));
    wait_ips(
        &w,
        &["127.0.0.11", "127.0.0.12", "127.0.0.13"],
        TEN_S,
        "the change did not reach the proxy through the first replica",
    )
    .await;
    proxy.cancel();
    cancel_a2.cancel();
}

/// Waits until `control`'s `/healthz` satisfies `ok`; returns (status code, body).
async fn wait_health(
    control: SocketAddr,
    what: &str,
    ok: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = reqwest::get(format!("http://{control}/healthz"))
            .await
            .unwrap();
        let code = resp.status().as_u16();
        let lag_header: Option<u64> = resp
            .headers()
            .get("x-ocean-lag-ms")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let body: Value = resp.json().await.unwrap();
        // The header and the body say the same (read in one answer).
        assert_eq!(lag_header, body["lag_ms"].as_u64(), "{body}");
        if ok(code, &body) {
            return (code, body);
        }
        assert!(
            Instant::now() < deadline,
            "{what}: /healthz said {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_moves_to_the_newer_replica_and_never_steps_back() {
    // Two Marathons with the same apps stand for one Marathon that replica A loses
    // (a partition): A keeps its old tables while B follows the change.
    let (m1, m2) = (
        FakeMarathon::start().await.unwrap(),
        FakeMarathon::start().await.unwrap(),
    );
    for m in [&m1, &m2] {
        put(m, 0);
        m.add_task(&app_id(0), task(&app_id(0), 1, "127.0.0.11", &[31000]));
    }
    let cancel = CancellationToken::new();
    let mut config_a = config(&m1, "127.0.0.1:0".parse().unwrap());
    config_a.max_lag = Some(Duration::from_secs(3));
    let a = start(config_a, cancel.clone()).await.unwrap();
    let b = start(config(&m2, "127.0.0.1:0".parse().unwrap()), cancel.clone())
        .await
        .unwrap();
    let (w, proxy) = proxy_of([a.addr, b.addr], "newest-test").await;
    // Both current: the first listed is polled.
    let (code, _) = wait_health(a.addr, "A current", |c, b| c == 200 && b["lag_ms"] == 0).await;
    assert_eq!(code, 200);
    wait_polls(
        a.addr,
        "newest-test",
        2,
        Duration::from_secs(5),
        "the proxy does not poll the first replica",
    )
    .await;

    // A loses Marathon: its event stream drops and every re-list fails. B sees a change.
    m1.set_mode(Mode::Error500);
    m1.cut_event_streams();
    m2.add_task(&app_id(0), task(&app_id(0), 2, "127.0.0.12", &[31000]));
    let started = Instant::now();
    wait_ips(
        &w,
        &["127.0.0.11", "127.0.0.12"],
        Duration::from_secs(15),
        "the change did not reach the proxy through the newer replica",
    )
    .await;
    // It came once A was SAME_VIEW behind B, not before.
    assert!(
        started.elapsed() >= ocean_core::replicas::SAME_VIEW - Duration::from_secs(1),
        "moved after {:?}",
        started.elapsed()
    );
    // A says it lags: 503 `lagging` past its --max-lag; B is current.
    let (code, body) = wait_health(a.addr, "A lagging", |c, _| c == 503).await;
    assert_eq!(body["status"], "lagging", "{body}");
    assert!(body["lag_ms"].as_u64().unwrap() >= 3000, "{body}");
    let (code_b, _) = wait_health(b.addr, "B current", |_, b| b["lag_ms"] == 0).await;
    assert_eq!((code, code_b), (503, 200));

    // Never a step back: A still serves the table without the new task, and the proxy
    // neither polls A nor loses the task while A is behind.
    let polls_a = subscriber_polls(a.addr, "newest-test").await;
    for _ in 0..15 {
        assert_eq!(ips(&w.load().unwrap().table), ["127.0.0.11", "127.0.0.12"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(subscriber_polls(a.addr, "newest-test").await, polls_a);

    // A gets Marathon back and the same change: current again, first listed, polled again.
    m1.set_mode(Mode::Normal);
    m1.add_task(&app_id(0), task(&app_id(0), 2, "127.0.0.12", &[31000]));
    wait_health(a.addr, "A current again", |c, b| {
        c == 200 && b["lag_ms"] == 0
    })
    .await;
    wait_polls(
        a.addr,
        "newest-test",
        polls_a + 2,
        TEN_S,
        "the proxy did not move back to the first replica once it was current",
    )
    .await;
    assert_eq!(ips(&w.load().unwrap().table), ["127.0.0.11", "127.0.0.12"]);
    proxy.cancel();
    cancel.cancel();
}
