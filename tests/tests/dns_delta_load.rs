//! `ocean dns` follows control through 100 deltas under dnsperf load and loses no query
//! (issue 17, must-show 3).
//!
//! A control on a fake Marathon and an `ocean dns` subscribed to it run in this process.
//! dnsperf (Debian package `dnsperf`) asks for names present in every version and for
//! names that never exist, while the test adds and kills tasks of one app 100 times and
//! waits, after each change, until `ocean dns` serves control's new table. Each change must
//! reach the DNS server as a delta (`ocean_table_deltas_total{result="applied"}`) and be
//! loaded as an update of the running zone (`ocean_dns_zone_loads_total{how="update"}`;
//! `zone::update`'s tests hold an update to what a full build makes), the zone's table
//! must equal control's, and every query must be answered with the right rcode.
//! This test is alone in its binary, so the process-wide metrics are its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use ocean_control::engine::start;
use ocean_core::subscriber::SubscriberConfig;
use ocean_core::table::{DnsTable, Table, TableKind};
use ocean_tests::dnsperf;
use ocean_tests::fake_marathon::{app, task, FakeMarathon};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const CHANGES: u32 = 100;
const STATIC_APPS: u32 = 40;
const APP: &str = "/shop/churn";
const LOAD_SECONDS: u64 = 15;
const LOAD_QPS: u32 = 3000;

/// The number in the series `name{labels}` (0 before the first).
fn counter(name: &str, labels: &[&str]) -> f64 {
    let text = ocean_core::metrics::render();
    ocean_tests::metrics::value(&text, name, labels).unwrap_or(0.0)
}

/// `ocean_table_deltas_total{kind="dns",result=...}`.
fn deltas(result: &str) -> f64 {
    counter(
        "ocean_table_deltas_total",
        &["kind=\"dns\"", &format!("result=\"{result}\"")],
    )
}

/// `ocean_dns_zone_loads_total{how=...}`.
fn zone_loads(how: &str) -> f64 {
    counter("ocean_dns_zone_loads_total", &[&format!("how=\"{how}\"")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_follows_100_deltas_under_dnsperf_load_and_loses_no_query() {
    let m = FakeMarathon::start().await.unwrap();
    m.put_static_apps(STATIC_APPS, 2);
    m.put_app(app(APP, json!({}), 10000));
    m.add_task(APP, task(APP, 0, "127.2.0.1", &[31000]));

    let cancel = CancellationToken::new();
    let mut c = m.control_config();
    c.debounce = Duration::from_millis(10);
    let control = start(c, cancel.clone()).await.unwrap();
    let control_table = || {
        let s = control.shared.store.get(TableKind::Dns)?;
        Some((s.etag.clone(), DnsTable::from_json(&s.body).unwrap()))
    };

    let mut cfg = ocean_dns::Config::new(SubscriberConfig {
        controls: vec![url::Url::parse(&format!("http://{}", control.addr)).unwrap()],
        wait: Duration::from_secs(10),
        subscriber_id: "dns-delta-load".into(),
        ..Default::default()
    });
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.http = None;
    let dns = ocean_dns::server::start(cfg, cancel.clone()).await.unwrap();

    // Serving control's first table.
    let serves = |etag: &str| dns.zone.load_full().is_some_and(|z| z.table.etag == etag);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut etag, first) = loop {
        if let Some((e, t)) = control_table() {
            if serves(&e) {
                break (e, t);
            }
        }
        assert!(
            Instant::now() < deadline,
            "ocean dns did not serve control's first table within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    // The queries: every name of the static apps (A and SRV), the churning app's name (it
    // always has a task), and names that never exist.
    let mut lines: Vec<String> = first
        .names
        .iter()
        .filter(|(name, _)| name.contains("static"))
        .flat_map(|(name, r)| {
            let name = name.trim_end_matches('.');
            let a = (!r.a.is_empty()).then(|| format!("{name} A"));
            let srv = (!r.srv.is_empty()).then(|| format!("{name} SRV"));
            a.into_iter().chain(srv)
        })
        .collect();
    assert!(lines.len() > STATIC_APPS as usize, "{lines:?}");
    lines.push("churn-shop.marathon.mesos A".into());
    for n in 0..20 {
        lines.push(format!("gone-{n}.marathon.mesos A"));
    }
    let dir = tempfile::tempdir().unwrap();
    let queries = dir.path().join("queries.txt");
    std::fs::write(&queries, lines.join("\n") + "\n").unwrap();
    let out_path = dir.path().join("dnsperf.out");
    let mut child = dnsperf::spawn(dns.dns_addr, &queries, LOAD_SECONDS, LOAD_QPS, &out_path);
    let load_started = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 100 changes, each served before the next.
    let applied_before = deltas("applied");
    let updates_before = zone_loads("update");
    let mut live = vec![0u32];
    let mut times = Vec::new();
    for n in 1..=CHANGES {
        let t0 = Instant::now();
        if n % 3 == 0 && live.len() > 1 {
            let gone = live.remove(0);
            let id = task(APP, gone, "x", &[]);
            m.kill_task(APP, id["id"].as_str().unwrap());
        } else {
            let host = format!("127.2.{}.{}", n / 250, n % 250 + 1);
            m.add_task(APP, task(APP, n, &host, &[31000]));
            live.push(n);
        }
        let deadline = t0 + Duration::from_secs(10);
        let (next, table) = loop {
            if let Some((e, t)) = control_table() {
                if e != etag && serves(&e) {
                    break (e, t);
                }
            }
            assert!(
                Instant::now() < deadline,
                "change {n}: ocean dns did not serve control's new table within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        assert_eq!(
            dns.zone.load_full().unwrap().table.table,
            table,
            "change {n}: the zone's table differs from control's"
        );
        let ips = table.names["churn-shop.marathon.mesos."].a.len();
        assert_eq!(ips, live.len(), "change {n}: the churning app's addresses");
        etag = next;
        times.push(t0.elapsed());
        assert!(
            child.0.as_mut().unwrap().try_wait().unwrap().is_none(),
            "dnsperf ended before change {n} of {CHANGES} ({:?} into the load)",
            load_started.elapsed()
        );
    }
    let applied = deltas("applied") - applied_before;
    assert!(
        applied >= f64::from(CHANGES),
        "only {applied} of {CHANGES} changes came as deltas (refused: {})",
        deltas("refused")
    );
    assert_eq!(deltas("refused"), 0.0);
    // And each made the zone by re-encoding only what it touched.
    let updates = zone_loads("update") - updates_before;
    assert!(
        updates >= f64::from(CHANGES),
        "only {updates} of {CHANGES} zones were updates of the running one (builds: {})",
        zone_loads("build")
    );

    // The load ends by itself.
    let (r, tail) = dnsperf::finish(child, &out_path).await;
    r.assert_every_answer_right(&tail);
    times.sort();
    eprintln!(
        "{CHANGES} deltas under {} queries ({} lost, {:?}); change served after p50 {:?}, max {:?}",
        r.sent,
        r.lost,
        r.rcodes,
        times[times.len() / 2],
        times[times.len() - 1]
    );
    cancel.cancel();
    dns.wait().await;
}
