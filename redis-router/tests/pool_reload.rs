//! SIGHUP applies a `--nutcracker-config` pool (issue 13): the router serves a two-server
//! pool from a nutcracker.yml under continuous SET/GET clients; the file is rewritten to
//! three servers, one of the two replaced, and a reload (what SIGHUP triggers) reshards
//! every worker. No client sees an error or loses its connection; keys written after the
//! reload are where the real nutcracker, started on the new file, looks for them (and
//! those written before, where it looks on the old file); the removed server gets no
//! request. A broken file on the next reload keeps the running pool (result `error`), and
//! a reload that only finds `listen` changed keeps the socket (`unchanged`, logged).
//!
//! And at the cluster level: a request written to a server just before a reshard removes
//! it is answered, then that server's connection closes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use ocean_core::placement::ketama::{Distribution, KeyHash, Ring};
use ocean_redis_router::proto::Protocol;
use ocean_redis_router::route::{self, Target};
use ocean_redis_router::slot::Shards;
use ocean_redis_router::upstream::{Cluster, ClusterOpts};
use ocean_tests::servers::resp::{Resp, RespClient};
use ocean_tests::servers::{free_port, start_nutcracker, RedisServer};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: ocean_redis_router::Args,
}

/// Everything logged in this process (the reloader logs from the runtime's threads).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A pool `pool:` listening on `listen`, with `servers` lines (`ADDR:WEIGHT [NAME]`).
fn nutcracker_yml(listen: SocketAddr, servers: &[String]) -> String {
    let mut conf = format!(
        "pool:\n  listen: {listen}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  \
         timeout: 2000\n  auto_eject_hosts: false\n  servers:\n"
    );
    for s in servers {
        conf.push_str(&format!("   - {s}\n"));
    }
    conf
}

/// `ocean_reloads_total{daemon="redis-router",result}` as the admin port serves it.
async fn reloads(admin: SocketAddr, result: &str) -> u64 {
    let text = ocean_tests::metrics::scrape(admin).await.unwrap();
    let r = format!("result=\"{result}\"");
    ocean_tests::metrics::series(
        &text,
        "ocean_reloads_total",
        &["daemon=\"redis-router\"", &r],
    )
    .into_iter()
    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    .map(|v| v as u64)
    .sum()
}

/// What SIGHUP does, then waits (10 s at most) until the reload is counted as `result`.
async fn reload_and_wait(admin: SocketAddr, result: &str, logs: &Logs) {
    let before = reloads(admin, result).await;
    ocean_core::reload::trigger();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reloads(admin, result).await == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload counted as {result:?} after 10 s:\n{}",
            logs.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The load: phases are even while a pool is settled, odd while a reload is under way.
struct Load {
    phase: Arc<AtomicU64>,
    ops: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<ClientLog>>,
}

#[derive(Debug, Default)]
struct ClientLog {
    /// Errors, dropped connections, and wrong reads within one settled phase.
    errors: Vec<String>,
    /// (phase, key, value) of each SET answered within one settled phase.
    written: Vec<(u64, String, String)>,
    /// GETs that missed their own SET across a reload (the key moved servers): expected.
    moved: u64,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let phase = Arc::new(AtomicU64::new(0));
        let ops = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|id| {
                let (phase, ops, stop) = (phase.clone(), ops.clone(), stop.clone());
                tokio::spawn(async move { client(id, addr, &phase, &ops, &stop).await })
            })
            .collect();
        Load {
            phase,
            ops,
            stop,
            clients,
        }
    }

    /// Waits until the clients have done `n` more SET+GET rounds (60 s at most).
    async fn run(&self, n: u64) {
        let target = self.ops.load(Ordering::SeqCst) + n;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.ops.load(Ordering::SeqCst) < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the clients stalled"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Reloading from here (odd phase) or settled again (even).
    fn next_phase(&self) {
        self.phase.fetch_add(1, Ordering::SeqCst);
    }

    async fn finish(self) -> ClientLog {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = ClientLog::default();
        for c in self.clients {
            let log = c.await.unwrap();
            all.errors.extend(log.errors);
            all.written.extend(log.written);
            all.moved += log.moved;
        }
        all
    }
}

/// One client on one connection for the whole test: SET a fresh key, GET it back.
async fn client(
    id: usize,
    addr: SocketAddr,
    phase: &AtomicU64,
    ops: &AtomicU64,
    stop: &AtomicBool,
) -> ClientLog {
    let mut log = ClientLog::default();
    let mut c = match RespClient::connect(addr).await {
        Ok(c) => c,
        Err(e) => {
            log.errors.push(format!("client {id}: connect: {e:#}"));
            return log;
        }
    };
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("c{id}:{i:x}:{}", i.wrapping_mul(2_654_435_761) % 1000);
        let value = format!("v{id}:{i}");
        let before = phase.load(Ordering::SeqCst);
        match c.command(&["SET", &key, &value]).await {
            Ok(r) if r.is_ok() => {}
            Ok(r) => log.errors.push(format!("SET {key}: {r:?}")),
            Err(e) => {
                log.errors.push(format!("client {id}: SET {key}: {e:#}"));
                return log;
            }
        }
        let got = c.command(&["GET", &key]).await;
        let after = phase.load(Ordering::SeqCst);
        let settled = before == after && before.is_multiple_of(2);
        match got {
            Ok(Resp::Bulk(Some(v))) if v == value.as_bytes() => {}
            Ok(Resp::Bulk(_)) if !settled => log.moved += 1,
            Ok(r) => log
                .errors
                .push(format!("GET {key} (phase {before}): {r:?}")),
            Err(e) => {
                log.errors.push(format!("client {id}: GET {key}: {e:#}"));
                return log;
            }
        }
        if settled {
            log.written.push((before, key, value));
        }
        ops.fetch_add(1, Ordering::SeqCst);
        i += 1;
    }
    log
}

/// The keys of `written` that the real nutcracker, on `servers` (the pool's lines), does
/// not find with their value: each is then not where twemproxy places it.
async fn misplaced(
    dir: &Path,
    servers: &[String],
    written: &[&(u64, String, String)],
) -> Vec<String> {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let sub = tempfile::tempdir_in(dir).unwrap();
    let conf = sub.path().join("oracle.yml");
    std::fs::write(&conf, nutcracker_yml(listen, servers)).unwrap();
    let mut proxy = start_nutcracker(&conf, sub.path(), free_port().unwrap()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut c = loop {
        match RespClient::connect(listen).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "nutcracker never listened: {e:#}\n{}",
                    proxy.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let mut lost = Vec::new();
    for batch in written.chunks(100) {
        let mut args = vec!["MGET".to_string()];
        args.extend(batch.iter().map(|(_, k, _)| k.clone()));
        let Resp::Array(Some(values)) = c.command(&args).await.unwrap() else {
            panic!("MGET through nutcracker: not an array");
        };
        for ((_, k, v), got) in batch.iter().zip(values) {
            if got != Resp::Bulk(Some(v.clone().into_bytes())) {
                lost.push(k.clone());
            }
        }
    }
    proxy.stop();
    lost
}

/// The text of `INFO section` of `addr`.
async fn info(addr: SocketAddr, section: &str) -> String {
    let r = ocean_tests::servers::resp::command(addr, &["INFO", section])
        .await
        .unwrap();
    let Resp::Bulk(Some(text)) = r else {
        panic!("INFO {section}: {r:?}");
    };
    String::from_utf8_lossy(&text).into_owned()
}

/// `INFO commandstats` of `addr`: the `cmdstat_*` lines.
async fn commandstats(addr: SocketAddr) -> Vec<String> {
    info(addr, "commandstats")
        .await
        .lines()
        .filter(|l| l.starts_with("cmdstat_"))
        .map(str::to_string)
        .collect()
}

async fn dbsize(addr: SocketAddr) -> i64 {
    let r = ocean_tests::servers::resp::command(addr, &["DBSIZE"])
        .await
        .unwrap();
    r.as_int().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reshards_the_pool_under_load_and_a_broken_file_keeps_it() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let mut servers = Vec::new();
    for _ in 0..4 {
        servers.push(RedisServer::start().await.unwrap());
    }
    let [a, b, c, d] = [0, 1, 2, 3].map(|i| servers[i].addr());
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nutcracker.yml");
    let old_pool = vec![format!("{a}:1"), format!("{b}:1 shard-b")];
    // b leaves; c (weight 2) and d (named) come in.
    let new_pool = vec![format!("{a}:1"), format!("{c}:2"), format!("{d}:1 shard-d")];
    std::fs::write(&conf, nutcracker_yml(listen, &old_pool)).unwrap();

    let cli = Cli::try_parse_from([
        "ocean".as_ref(),
        "--threads".as_ref(),
        "2".as_ref(),
        "--admin".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--nutcracker-config".as_ref(),
        conf.as_os_str(),
    ])
    .unwrap();
    let config = cli.args.into_config().unwrap();
    let cancel = CancellationToken::new();
    let running = ocean_redis_router::start(config, cancel.clone())
        .await
        .unwrap();
    let admin = running.admin_addr.unwrap();
    assert_eq!(running.listen_addr, Some(listen));

    // Four clients per worker thread (SO_REUSEPORT spreads them over both).
    let load = Load::start(listen, 8);
    load.run(2_000).await;
    // A sharded pool's map is built from its servers: the status page never says "no
    // slot map yet".
    let (status, body) = ocean_tests::metrics::get(admin, "/").await.unwrap();
    assert!(
        status.starts_with("HTTP/1.1 200")
            && body.contains("slots uncovered")
            && !body.contains("no slot map"),
        "the status page of a sharded pool: {status} {body}"
    );

    // The pool changes: b is replaced, two servers come in.
    std::fs::write(&conf, nutcracker_yml(listen, &new_pool)).unwrap();
    load.next_phase();
    reload_and_wait(admin, "ok", &logs).await;
    load.next_phase();
    assert!(
        logs.text().contains("reload: servers applied"),
        "{}",
        logs.text()
    );
    // Requests queued before the reload are answered within milliseconds; from then on b
    // gets nothing.
    load.run(500).await;
    let b_keys = dbsize(b).await;
    let reset = ocean_tests::servers::resp::command(b, &["CONFIG", "RESETSTAT"])
        .await
        .unwrap();
    assert!(reset.is_ok(), "{reset:?}");
    load.run(3_000).await;

    // A broken file: the running pool is kept.
    std::fs::write(&conf, "pool: [").unwrap();
    load.next_phase();
    reload_and_wait(admin, "error", &logs).await;
    load.next_phase();
    load.run(1_000).await;

    // Only the listen address changed: it needs a new socket, so it is kept and said; the
    // pool is unchanged.
    let moved_listen = nutcracker_yml("127.0.0.1:1".parse().unwrap(), &new_pool);
    std::fs::write(&conf, moved_listen).unwrap();
    load.next_phase();
    reload_and_wait(admin, "unchanged", &logs).await;
    load.next_phase();
    assert!(
        logs.text()
            .contains("reload: listen changed in the file; it needs a restart"),
        "{}",
        logs.text()
    );
    load.run(1_000).await;

    let log = load.finish().await;
    assert!(
        log.errors.is_empty(),
        "{} client errors across the reloads (first: {:?})",
        log.errors.len(),
        log.errors.first()
    );

    // Nothing reached b since its reload settled: no command, no probe (the test's own
    // CONFIG RESETSTAT and INFO aside).
    let b_stats = commandstats(b).await;
    assert!(
        b_stats
            .iter()
            .all(|l| l.starts_with("cmdstat_info:") || l.starts_with("cmdstat_config")),
        "the removed server was sent {b_stats:?}"
    );
    assert_eq!(dbsize(b).await, b_keys, "the removed server got keys");

    let before: Vec<&(u64, String, String)> =
        log.written.iter().filter(|(p, _, _)| *p == 0).collect();
    let after: Vec<&(u64, String, String)> =
        log.written.iter().filter(|(p, _, _)| *p >= 2).collect();
    assert!(
        before.len() >= 1_000 && after.len() >= 4_000,
        "{} / {}",
        before.len(),
        after.len()
    );
    // Every server of the new pool got keys (c and d had none before the reload).
    let per_server = [dbsize(a).await, dbsize(c).await, dbsize(d).await];
    assert!(per_server.iter().all(|&n| n > 200), "{per_server:?}");

    let lost = misplaced(dir.path(), &old_pool, &before).await;
    assert!(
        lost.is_empty(),
        "{} of {} keys written before the reload are not where nutcracker puts them on the \
         old pool (first: {:?})",
        lost.len(),
        before.len(),
        lost.first()
    );
    let lost = misplaced(dir.path(), &new_pool, &after).await;
    assert!(
        lost.is_empty(),
        "{} of {} keys written after the reload are not where nutcracker puts them on the \
         new pool (first: {:?})",
        lost.len(),
        after.len(),
        lost.first()
    );

    cancel.cancel();
    running.wait().await;
}

fn pool_of(servers: &[SocketAddr]) -> Arc<Shards> {
    let named: Vec<(String, u32)> = servers.iter().map(|a| (a.to_string(), 1)).collect();
    Arc::new(Shards {
        ring: Ring::with_distribution(&named, KeyHash::Fnv1a64, Distribution::Ketama),
        hash_tag: None,
    })
}

/// `INFO clients` field `name` of `addr`.
async fn clients_field(addr: SocketAddr, name: &str) -> i64 {
    info(addr, "clients")
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:"))?.trim().parse().ok())
        .unwrap()
}

async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_on_a_removed_server_is_answered() {
    let a = RedisServer::start().await.unwrap();
    let b = RedisServer::start().await.unwrap();
    let both = vec![a.addr(), b.addr()];
    let cluster = Cluster::sharded(
        "t".into(),
        both.clone(),
        pool_of(&both),
        ClusterOpts::default(),
    );
    let on_b = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| {
            let slot = cluster.slot_of(k.as_bytes());
            cluster.with_slot(slot, |n| n.map(|n| n.addr)) == Some(b.addr())
        })
        .unwrap();
    // b's only client is then the INFO connection that asks: the harness's readiness
    // check may still be connected for a moment (a count taken then, as this test once
    // did, is one too high for the rest of the test).
    let only_this_one = async || clients_field(b.addr(), "connected_clients").await == 1;
    eventually("b has no client but the one asking", only_this_one).await;
    // BLPOP on an empty list: b holds it for a second, then answers nil.
    let mut req = Vec::new();
    Resp::encode_command(&["BLPOP", on_b.as_str(), "1"], &mut req);
    let rx = route::send(
        &cluster,
        Target::Slot(cluster.slot_of(on_b.as_bytes())),
        &Bytes::from(req),
        Protocol::Resp2,
        false,
    )
    .await;
    eventually("b blocks the BLPOP", async || {
        clients_field(b.addr(), "blocked_clients").await == 1
    })
    .await;

    // b leaves the pool while its reply is owed: the old map (the last holder of b's node)
    // is dropped at once.
    assert!(cluster.reshard(&[a.addr()], pool_of(&[a.addr()])));
    assert_eq!(
        cluster
            .map()
            .masters
            .iter()
            .map(|n| n.addr)
            .collect::<Vec<_>>(),
        vec![a.addr()]
    );
    let reply = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("no reply in 10 s")
        .expect("the request was dropped");
    assert_eq!(reply.map(|b| b.to_vec()), Ok(b"*-1\r\n".to_vec()));
    // Then b's connection closes: the router no longer connects to it.
    eventually("the router's connection to b closes", only_this_one).await;
}
