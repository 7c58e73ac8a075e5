//! `ocean dns` keeps answering every query while its table is swapped 100 times under load.
//!
//! The server runs in-process on a table file; `dnsperf` (Debian package `dnsperf`) sends a
//! rate-limited load of A and SRV queries for names present in every version of the table,
//! plus names that never exist, while the test renames 100 different tables into place and
//! waits until each one is served. Every query must be answered, with NOERROR for the present
//! names and NXDOMAIN for the absent ones: no loss, no SERVFAIL, no wrong NXDOMAIN.
//!
//! Views are on (issue 14): dnsperf's source, 127.0.0.1, is in a view that answers some of
//! the queried names (and the canary) with records of its own, which change with the table;
//! after each swap the canary is checked from inside the view and from 127.0.0.2 outside it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use ocean_core::subscriber::SubscriberConfig;
use ocean_core::table::dns::{DnsRecords, DnsView, SrvRecord};
use ocean_core::table::DnsTable;
use ocean_tests::dnsperf;
use tokio_util::sync::CancellationToken;

const SWAPS: u32 = 100;
const APPS: u32 = 40;
const TASKS: u32 = 3;
/// dnsperf's run: seconds and queries per second at most (low enough for a shared CI box).
const LOAD_SECONDS: u64 = 8;
const LOAD_QPS: u32 = 5000;
/// The swaps are spread over this much of the load, so that all of them happen under it (the
/// rest of the run is slack for a slow machine).
const SWAP_WINDOW: Duration = Duration::from_secs(4);

fn a(ips: impl IntoIterator<Item = Ipv4Addr>) -> DnsRecords {
    DnsRecords {
        a: ips.into_iter().collect(),
        ..Default::default()
    }
}

/// Version `generation` of the table. The names the queries ask for are in every version
/// (some with other records each time); the churn is in other names.
fn table(generation: u32) -> DnsTable {
    let g = generation;
    let mut names = BTreeMap::new();
    for n in 0..APPS {
        let n8 = n as u8;
        let mut srv = Vec::new();
        for k in 0..TASKS {
            let task = format!("app{n}-t{k}.marathon.mesos.");
            names.insert(task.clone(), a([Ipv4Addr::new(10, 1, n8, k as u8 + 1)]));
            // app1's tasks move to other ports in every version.
            let port = if n == 1 {
                20000 + (g * 7 + k) as u16
            } else {
                31000 + (n * TASKS + k) as u16
            };
            srv.push(SrvRecord {
                priority: 0,
                weight: 1,
                port,
                target: task,
            });
        }
        // app0's addresses change in every version: another subnet, one to four of them.
        let ips: Vec<Ipv4Addr> = if n == 0 {
            (0..=(g % 4) as u8)
                .map(|i| Ipv4Addr::new(10, 2, (g % 250) as u8, i + 1))
                .collect()
        } else {
            (0..TASKS as u8)
                .map(|k| Ipv4Addr::new(10, 1, n8, k + 1))
                .collect()
        };
        names.insert(format!("app{n}.marathon.mesos."), a(ips));
        names.insert(
            format!("_app{n}._tcp.marathon.mesos."),
            DnsRecords {
                srv,
                ..Default::default()
            },
        );
    }
    // The canary: queried by the test itself after each swap.
    names.insert("canary.marathon.mesos.".into(), a([canary_ip(g)]));
    // A name that only this version has, and one that every other version has.
    names.insert(
        format!("extra-{g}.marathon.mesos."),
        a([Ipv4Addr::new(10, 3, 0, 1)]),
    );
    if g % 2 == 1 {
        names.insert(
            "odd.marathon.mesos.".into(),
            a([Ipv4Addr::new(10, 3, 0, 2)]),
        );
    }
    // The view of dnsperf's address: app2 and app3 elsewhere, the canary its own; and a view
    // nobody queries from, so that the lookup has two prefix lengths to try.
    let mut line = BTreeMap::new();
    line.insert("canary.marathon.mesos.".into(), a([view_canary_ip(g)]));
    for n in [2u8, 3] {
        line.insert(
            format!("app{n}.marathon.mesos."),
            a([Ipv4Addr::new(10, 9, n, (g % 250) as u8 + 1)]),
        );
    }
    let views = vec![
        DnsView {
            name: "line".into(),
            networks: vec!["127.0.0.1/32".into()],
            names: line,
        },
        DnsView {
            name: "other".into(),
            networks: vec!["10.0.0.0/8".into()],
            names: BTreeMap::from([(
                "canary.marathon.mesos.".into(),
                a([Ipv4Addr::new(10, 8, 8, 8)]),
            )]),
        },
    ];
    DnsTable {
        names,
        views,
        ..Default::default()
    }
}

/// The canary's address in the view of 127.0.0.1.
fn view_canary_ip(generation: u32) -> Ipv4Addr {
    let ip = canary_ip(generation).octets();
    Ipv4Addr::new(10, 251, ip[2], ip[3])
}

fn canary_ip(generation: u32) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        250,
        (generation / 250) as u8,
        (generation % 250) as u8 + 1,
    )
}

/// Replaces the table file the way an operator should: write aside, rename into place.
fn write_table(path: &Path, generation: u32) -> DnsTable {
    let t = table(generation);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&t).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
    t
}

/// dnsperf's query file: A and SRV names present in every version, and names that never
/// exist (`gone-*`, answered NXDOMAIN).
fn query_file(dir: &Path) -> PathBuf {
    let mut lines = Vec::new();
    for n in 0..APPS {
        lines.push(format!("app{n}.marathon.mesos A"));
        lines.push(format!("app{n}.marathon.mesos A"));
        lines.push(format!("_app{n}._tcp.marathon.mesos SRV"));
        lines.push(format!("app{n}-t{}.marathon.mesos A", n % TASKS));
        if n % 4 == 0 {
            lines.push(format!("gone-{n}.marathon.mesos A"));
        }
    }
    lines.push("canary.marathon.mesos A".into());
    let path = dir.join("queries.txt");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// One A query over UDP from 127.0.0.1 (inside the view); `None` on timeout.
async fn query_a(server: SocketAddr, name: &str) -> Option<Message> {
    query_a_from(server, name, "127.0.0.1").await
}

/// One A query over UDP from `source`; `None` on timeout.
async fn query_a_from(server: SocketAddr, name: &str, source: &str) -> Option<Message> {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let sock = tokio::net::UdpSocket::bind((source, 0)).await.unwrap();
    sock.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(Message::from_vec(&buf[..n]).unwrap())
}

fn ipv4s(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_table_swaps_under_dnsperf_load_lose_no_query() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let table_path = dir.path().join("dns.json");
    let mut current = write_table(&table_path, 0);

    let cancel = CancellationToken::new();
    let mut cfg = ocean_dns::Config::new(SubscriberConfig {
        table_file: Some(table_path.clone()),
        file_poll: Duration::from_millis(20),
        ..Default::default()
    });
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.http = None;
    let running = ocean_dns::server::start(cfg, cancel.clone()).await.unwrap();
    let server = running.dns_addr;

    // Serving the first table.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(m) = query_a(server, "canary.marathon.mesos.").await {
            if m.metadata.response_code == ResponseCode::NoError && ipv4s(&m) == [view_canary_ip(0)]
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "ocean dns did not serve the first table within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The load.
    let queries = query_file(dir.path());
    let out_path = dir.path().join("dnsperf.out");
    let mut child = dnsperf::spawn(server, &queries, LOAD_SECONDS, LOAD_QPS, &out_path);
    let load_started = Instant::now();
    // Let it get going before the first swap.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 100 swaps, each one served before the next is written.
    let mut swap_times = Vec::new();
    for g in 1..=SWAPS {
        let due = load_started + Duration::from_millis(300) + SWAP_WINDOW * g / SWAPS;
        tokio::time::sleep_until(due.into()).await;
        let t0 = Instant::now();
        let expected = write_table(&table_path, g);
        assert_ne!(expected, current);
        current = expected;
        let deadline = t0 + Duration::from_secs(5);
        loop {
            let loaded = running.zone.load_full();
            if loaded.as_ref().is_some_and(|z| z.table.table == current) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "swap {g}: table not loaded within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // And answered over the wire.
        loop {
            if let Some(m) = query_a(server, "canary.marathon.mesos.").await {
                assert_eq!(
                    m.metadata.response_code,
                    ResponseCode::NoError,
                    "swap {g}: {m:?}"
                );
                if ipv4s(&m) == [view_canary_ip(g)] {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "swap {g}: canary not answered with {} (the view's) within 5 s",
                view_canary_ip(g)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Outside the view, the same table answers the table's own record.
        let outside = query_a_from(server, "canary.marathon.mesos.", "127.0.0.2")
            .await
            .unwrap_or_else(|| panic!("swap {g}: no answer to 127.0.0.2"));
        assert_eq!(ipv4s(&outside), [canary_ip(g)], "swap {g}: {outside:?}");
        swap_times.push(t0.elapsed());
        // All swaps must happen under load.
        if let Some(status) = child.0.as_mut().unwrap().try_wait().unwrap() {
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            panic!(
                "dnsperf exited ({status}) before swap {g} of {SWAPS} was done, {:?} after it \
                 started; swaps took (ms) {:?}:\n{}",
                load_started.elapsed(),
                swap_times
                    .iter()
                    .map(Duration::as_millis)
                    .collect::<Vec<_>>(),
                &text[text.find("Statistics:").unwrap_or(0)..]
            );
        }
    }
    let swaps_done = load_started.elapsed();

    // The load ends by itself.
    let (r, tail) = dnsperf::finish(child, &out_path).await;
    let tail = tail.as_str();

    r.assert_every_answer_right(tail);

    let mut sorted = swap_times.clone();
    sorted.sort();
    eprintln!(
        "{SWAPS} swaps in {:.1} s under {} queries ({} completed, {} lost, {:?}); swap served after p50 {:?}, max {:?}; test {:.1} s",
        swaps_done.as_secs_f64(),
        r.sent,
        r.completed,
        r.lost,
        r.rcodes,
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
        started.elapsed().as_secs_f64()
    );
    cancel.cancel();
    running.wait().await;
}
