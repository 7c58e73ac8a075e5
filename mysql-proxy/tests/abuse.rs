//! Abuse against a real mariadbd, with a normal client beside the abuser that keeps getting
//! right answers (issue 18): a connection flood past `--max-connections` (`--max-clients`),
//! a client that asks for a 256 MB result and never reads it, and a slowloris.
//!
//! The proxy runs in this process, so its memory is this process's: VmRSS from
//! /proc/self/status, sampled while the abuse goes on. The descriptor test (400 connections
//! under `ulimit -n 256`) runs the proxy in a child process instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;
use ocean_core::table::mysql::{Access, MysqlTable};
use ocean_tests::abuse::{self, LimitedChild, NOFILE};
use ocean_tests::servers::mariadb::MariaDb;
use ocean_tests::servers::rss_bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const NORMAL_IP: &str = "127.0.0.2";
const ABUSER_IP: &str = "127.0.0.3";

async fn connect_from(bind: &str, addr: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{bind}:0").parse().unwrap()).unwrap();
    s.connect(addr).await.unwrap()
}

/// Reads one packet: (sequence id, payload); None when the connection closed first.
async fn read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await.ok()?;
    let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).await.ok()?;
    Some((h[3], p))
}

fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut v = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
    v.extend_from_slice(payload);
    v
}

/// Logs in as `user` into `shop` with a hand-made handshake response (no password, the
/// greeting's plugin), as a client that will never read again would.
async fn raw_login(bind: &str, addr: SocketAddr, user: &str) -> TcpStream {
    let mut s = connect_from(bind, addr).await;
    let (_, greeting) = read_packet(&mut s).await.expect("greeting");
    assert_eq!(greeting[0], 10);
    // PROTOCOL_41 | SECURE_CONNECTION | CONNECT_WITH_DB | PLUGIN_AUTH | LONG_PASSWORD |
    // TRANSACTIONS | MULTI_RESULTS
    let caps: u32 = 0x0200 | 0x8000 | 0x0008 | 0x0008_0000 | 0x0001 | 0x2000 | 0x0002_0000;
    let mut resp = Vec::new();
    resp.extend_from_slice(&caps.to_le_bytes());
    resp.extend_from_slice(&(64u32 << 20).to_le_bytes());
    resp.push(45);
    resp.extend_from_slice(&[0u8; 23]);
    resp.extend_from_slice(user.as_bytes());
    resp.push(0);
    resp.push(0); // no auth data
    resp.extend_from_slice(b"shop\0mysql_native_password\0");
    s.write_all(&packet(1, &resp)).await.unwrap();
    let (_, ok) = read_packet(&mut s).await.expect("login answer");
    assert_eq!(ok[0], 0x00, "login OK, got {ok:?}");
    s
}

/// The ERR packet's code and message.
fn err_of(payload: &[u8]) -> (u16, String) {
    assert_eq!(payload[0], 0xff, "an ERR packet: {payload:?}");
    let code = u16::from_le_bytes([payload[1], payload[2]]);
    let msg = payload.get(9..).unwrap_or_default();
    (code, String::from_utf8_lossy(msg).into_owned())
}

/// A normal client's query and its answer: must stay right whatever the abuser does.
async fn normal_query(conn: &mut mysql_async::Conn) {
    let name: Option<String> = tokio::time::timeout(
        Duration::from_secs(10),
        conn.query_first("SELECT name FROM shop.items WHERE id = 2"),
    )
    .await
    .expect("the normal client is answered within 10 s")
    .expect("the normal client is served");
    assert_eq!(name.as_deref(), Some("pear"));
}

async fn normal_client(addr: SocketAddr) -> mysql_async::Conn {
    let mut c = mysql_async::Conn::new(opts(addr, NORMAL_IP, "shop/web", None, Some("shop")))
        .await
        .unwrap();
    normal_query(&mut c).await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_never_reading_client_and_slowloris() {
    log_buffer();
    let (db, _dir, table_file) = prepared_backend().await;
    write_table(
        &table_file,
        &MysqlTable {
            databases: vec![database(db.addr(), vec![])],
            jobs: vec![
                job("shop/web", &[NORMAL_IP], Access::Rw, None),
                job("shop/abuser", &[ABUSER_IP], Access::Rw, None),
            ],
        },
    );

    flood(&table_file).await;
    never_reads(&table_file, &db).await;
    slowloris(&table_file).await;
}

/// 8 clients at most: 1 normal session and 7 silent connections fill it; 50 more each
/// read ERR 1040 `Too many connections` as their first packet, then EOF; the normal
/// session keeps answering; a freed slot is used again.
async fn flood(table_file: &std::path::Path) {
    let mut cfg = config(table_file.to_path_buf());
    cfg.max_connections = 8;
    // No silent connection times out while the test runs.
    cfg.connect_timeout = Duration::from_secs(60);
    let (proxy, cancel) = start_proxy(cfg).await;
    let addr = proxy.addr;
    let mut normal = normal_client(addr).await;

    let mut held = Vec::new();
    for _ in 0..7 {
        let mut s = connect_from(ABUSER_IP, addr).await;
        let (seq, greeting) = read_packet(&mut s)
            .await
            .expect("a greeting inside the cap");
        assert_eq!((seq, greeting[0]), (0, 10));
        held.push(s);
    }
    for i in 0..50 {
        let mut s = connect_from(ABUSER_IP, addr).await;
        let (seq, payload) = read_packet(&mut s)
            .await
            .unwrap_or_else(|| panic!("refused connection {i} got no ERR packet"));
        let (code, message) = err_of(&payload);
        assert_eq!((seq, code), (0, 1040), "{message}");
        assert_eq!(message, "Too many connections");
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .expect("closed after the refusal")
            .unwrap_or(0);
        assert_eq!(n, 0, "nothing after the ERR packet");
        if i % 10 == 0 {
            normal_query(&mut normal).await;
        }
    }
    normal_query(&mut normal).await;
    assert_eq!(proxy.connections(), 8);

    // A freed slot is a slot again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = connect_from(ABUSER_IP, addr).await;
        let (_, first) = read_packet(&mut s).await.unwrap();
        if first[0] == 10 {
            break;
        }
        assert!(Instant::now() < deadline, "slots never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    normal.disconnect().await.unwrap();
    cancel.cancel();
    proxy.wait().await;
}

/// A client asks for 16 rows of 16 MiB (256 MiB, every row split by the 16 MB
/// continuation rule) and never reads: the proxy's memory stays within 64 MiB of idle,
/// the client is closed after `--write-timeout` (1 s here) and its backend connection
/// is gone from the processlist; the normal session answers throughout.
async fn never_reads(table_file: &std::path::Path, db: &MariaDb) {
    let mut cfg = config(table_file.to_path_buf());
    cfg.write_timeout = Duration::from_secs(1);
    let (proxy, cancel) = start_proxy(cfg).await;
    let addr = proxy.addr;
    let mut normal = normal_client(addr).await;
    assert_eq!(backend_sessions(db).await, 1);

    let idle = rss_bytes(None).expect("VmRSS of this process") / 1024;
    let peak = Arc::new(AtomicU64::new(idle));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(
                    rss_bytes(None).expect("VmRSS of this process") / 1024,
                    Ordering::Relaxed,
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let mut abuser = raw_login(ABUSER_IP, addr, "shop/abuser").await;
    assert_eq!(proxy.sessions(), 2);
    let sql = "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 16) \
               SELECT REPEAT('x', 16*1024*1024) FROM s";
    let mut q = vec![0x03];
    q.extend_from_slice(sql.as_bytes());
    abuser.write_all(&packet(0, &q)).await.unwrap();
    let started = Instant::now();

    // The abuser's session ends (write timeout) while the normal one answers on.
    while proxy.sessions() > 1 {
        normal_query(&mut normal).await;
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the abuser was never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let closed_after = started.elapsed();
    println!("the never-reading client was closed after {closed_after:?}");
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed before the write timeout: {closed_after:?}"
    );
    // Its backend connection is released: only the normal session's is left.
    let deadline = Instant::now() + Duration::from_secs(20);
    while backend_sessions(db).await > 1 {
        assert!(
            Instant::now() < deadline,
            "the abuser's backend connection is still in the processlist"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    normal_query(&mut normal).await;
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let grew_mib = peak.load(Ordering::Relaxed).saturating_sub(idle) / 1024;
    println!(
        "VmRSS idle {} MiB, growth during the abuse {grew_mib} MiB",
        idle / 1024
    );
    assert!(
        grew_mib < 64,
        "the proxy buffered what the client did not read: +{grew_mib} MiB"
    );
    // The abuser reads at last: what the kernel held, then EOF (the proxy closed it).
    let mut sink = vec![0u8; 1 << 20];
    let mut got = 0usize;
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match abuser.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the abuser's socket was not closed");
    assert!(
        got < 64 << 20,
        "{got} bytes reached a client that never read (socket buffers only)"
    );
    assert!(
        logs().contains("write timeout"),
        "the session end is audited with its reason"
    );
    normal.disconnect().await.unwrap();
    cancel.cancel();
    proxy.wait().await;
}

/// Connections that connect and then send nothing (before or after reading the
/// greeting) are closed by the pre-login timeout (`--connect-timeout`, 1 s here).
async fn slowloris(table_file: &std::path::Path) {
    let mut cfg = config(table_file.to_path_buf());
    cfg.connect_timeout = Duration::from_secs(1);
    let (proxy, cancel) = start_proxy(cfg).await;
    let addr = proxy.addr;
    let mut normal = normal_client(addr).await;
    let base = proxy.connections();

    let started = Instant::now();
    let mut silent = Vec::new();
    for i in 0..10 {
        let mut s = connect_from(ABUSER_IP, addr).await;
        if i % 2 == 0 {
            let (_, greeting) = read_packet(&mut s).await.unwrap();
            assert_eq!(greeting[0], 10);
        }
        silent.push(s);
    }
    normal_query(&mut normal).await;
    for mut s in silent {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
            .await
            .expect("a silent connection was never closed")
            .unwrap_or(0);
    }
    let closed_after = started.elapsed();
    println!("slowloris connections closed after {closed_after:?}");
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed before the pre-login timeout: {closed_after:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.connections() > base {
        assert!(Instant::now() < deadline, "slots not given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    normal_query(&mut normal).await;
    assert!(logs().contains("handshake response timed out"));
    normal.disconnect().await.unwrap();
    cancel.cancel();
    proxy.wait().await;
}

/// The child proxy of the descriptor test: does nothing unless `OCEAN_ABUSE_CHILD_TABLE`
/// names a `mysql` table file; then raises `RLIMIT_NOFILE` as the `ocean` binary does,
/// serves that table, prints `LISTEN <addr> NOFILE <n>` once it is loaded and runs until
/// killed.
#[tokio::test]
async fn proxy_child_process() {
    let Ok(table) = std::env::var("OCEAN_ABUSE_CHILD_TABLE") else {
        return;
    };
    let nofile = ocean_core::daemon::raise_nofile_limit().unwrap();
    let mut cfg = config(table.into());
    // No flood connection is closed by the pre-login timeout while the test runs: the
    // limit stays reached.
    cfg.connect_timeout = Duration::from_secs(60);
    // The flood comes from one address: without this, all but 16 of its connections would
    // be refused by `--max-prelogin-per-ip` before descriptors ran out.
    cfg.max_prelogin_per_ip = 0;
    let (proxy, _cancel) = start_proxy(cfg).await;
    println!("LISTEN {} NOFILE {nofile}", proxy.addr);
    std::future::pending::<()>().await;
}

/// 400 connections against a proxy whose `RLIMIT_NOFILE` is 256 (soft and hard; the proxy
/// runs in a child process, this test binary re-run as `proxy_child_process` under
/// `sh -c 'ulimit -n 256; exec ...'` by `ocean_tests::abuse`): it does not spin while out
/// of descriptors, keeps serving the session it has, and logs in a new client once the
/// flood is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_proxy_idles_then_serves_again() -> anyhow::Result<()> {
    let (db, _dir, table_file) = prepared_backend().await;
    write_table(
        &table_file,
        &MysqlTable {
            databases: vec![database(db.addr(), vec![])],
            jobs: vec![job("shop/web", &[NORMAL_IP], Access::Rw, None)],
        },
    );
    let child = LimitedChild::spawn(
        "proxy_child_process",
        &[("OCEAN_ABUSE_CHILD_TABLE", table_file.display().to_string())],
    )
    .await?;
    let addr = child.addr;
    // `LISTEN <addr> NOFILE <n>`: raising the soft limit to the hard one left it at 256.
    assert_eq!(
        child.extra.get(1).map(String::as_str),
        Some("256"),
        "the child's RLIMIT_NOFILE after raising"
    );
    let words = child.nofile_line()?;
    assert_eq!(
        words.get(3..5),
        Some(&["256".to_string(), "256".to_string()][..]),
        "child: {words:?}"
    );

    let mut normal = normal_client(addr).await;
    // The flood: 400 connections (the listen backlog completes them all; the proxy can take
    // only what its 256 descriptors allow).
    let flood = abuse::flood(addr, abuse::FLOOD).await?;
    // Wait until accepting has hit the limit: the proxy's descriptors stop growing (its
    // count of clients is in this child, not on the wire).
    let fds = abuse::settle(async || child.open_fds()).await?;
    assert!(
        fds as u64 <= NOFILE,
        "{fds} descriptors open under a limit of 256"
    );
    // At the limit (the backlog holds the connections it cannot accept): no spinning.
    let ticks = child.cpu_ticks_over(Duration::from_secs(2)).await?;
    // The session it has is still served.
    normal_query(&mut normal).await;
    println!(
        "descriptors: {fds} open under RLIMIT_NOFILE 256 (soft and hard); CPU at the limit \
         {ticks} ticks in 2 s ({}%)",
        ticks / 2
    );
    assert!(
        ticks < 20,
        "{ticks} ticks in 2 s: over 10% CPU at the limit"
    );
    // The flood leaves; a new client logs in and is answered again.
    drop(flood);
    let took = abuse::served_again(async || {
        let mut c =
            mysql_async::Conn::new(opts(addr, NORMAL_IP, "shop/web", None, Some("shop"))).await?;
        let name: Option<String> = c
            .query_first("SELECT name FROM shop.items WHERE id = 2")
            .await?;
        anyhow::ensure!(name.as_deref() == Some("pear"), "got {name:?}");
        c.disconnect().await?;
        Ok(())
    })
    .await?;
    println!("after the flood: a new client served {took:?} after it closed");
    normal_query(&mut normal).await;
    normal.disconnect().await?;
    child.kill().await?;
    Ok(())
}
