//! The proxy fails closed whatever the table says (issue 12): an `ro` grant on a database
//! without `ro` credentials never borrows the `rw` user, a job whose password entry is
//! broken never gets in by IP alone, and connections that never finish logging in are
//! capped per client IP (and timed out).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use mysql_async::prelude::*;
use ocean_core::table::mysql::{Access, JobPassword, MysqlTable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ro_without_ro_credentials_and_broken_password_entries_are_refused() {
    log_buffer();
    let (db, _dir, table_file) = prepared_backend().await;
    // The database has rw credentials only.
    let mut no_ro = database(db.addr(), vec![]);
    no_ro.ro = None;
    let table = MysqlTable {
        databases: vec![no_ro],
        jobs: vec![
            job("shop/web", &["127.0.0.2"], Access::Rw, None),
            job("shop/report", &["127.0.0.4"], Access::Ro, None),
            job("shop/secure", &["127.0.0.5"], Access::Rw, Some("job-pw")),
        ],
    };
    write_table(&table_file, &table);
    let (proxy, cancel) = start_proxy(config(table_file.clone())).await;
    let addr = proxy.addr;

    // (a) The rw job logs in: the rw credentials work.
    let got = cli(
        addr,
        "127.0.0.2",
        "shop/web",
        &[],
        Some("shop"),
        "SELECT CURRENT_USER()",
    )
    .await;
    assert_eq!(got.unwrap(), format!("{RW_USER}@127.0.0.1"));
    // The ro job, from its task's IP, gets 1044: never the rw user.
    let err = cli(
        addr,
        "127.0.0.4",
        "shop/report",
        &[],
        Some("shop"),
        "SELECT CURRENT_USER()",
    )
    .await
    .unwrap_err();
    assert!(
        err.contains(
            "ERROR 1044 (42000): Access denied for user 'shop/report'@'127.0.0.4' to database 'shop'"
        ),
        "{err}"
    );
    // Without a schema too (the only grant is unusable).
    let err = cli(addr, "127.0.0.4", "shop/report", &[], None, "SELECT 1")
        .await
        .unwrap_err();
    assert!(
        err.contains("ERROR 1044 (42000)") && err.contains("to database '(none)'"),
        "{err}"
    );
    let log = logs();
    assert!(
        log.lines().any(|l| l.contains("shop/report")
            && l.contains("denied")
            && l.contains("no ro credentials")),
        "no audit line says why:\n{log}"
    );

    // (b) A job's password entry turns to garbage. The table stays valid (one bad entry
    // must not freeze every other job on the last good table), and the proxy refuses that
    // job outright: 1045 with or without the password, never a login by IP alone; the
    // other jobs keep logging in.
    let etag = proxy.table_etag().unwrap();
    let mut broken = table.clone();
    broken.jobs[2].password = Some(JobPassword {
        sha1_sha1: "garbage".into(),
        sha256_sha256: "not-a-hash".into(),
    });
    write_table(&table_file, &broken);
    for _ in 0..250 {
        if proxy.table_etag().unwrap() != etag {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(
        proxy.table_etag().unwrap(),
        etag,
        "the table was not applied"
    );
    for args in [&[][..], &["--password=job-pw"][..]] {
        let err = cli(
            addr,
            "127.0.0.5",
            "shop/secure",
            args,
            Some("shop"),
            "SELECT 1",
        )
        .await
        .unwrap_err();
        assert!(
            err.contains("ERROR 1045 (28000)")
                && err.contains("Access denied for user 'shop/secure'@'127.0.0.5'"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        cli(addr, "127.0.0.2", "shop/web", &[], Some("shop"), "SELECT 1")
            .await
            .unwrap(),
        "1",
        "the other jobs are unaffected"
    );

    cancel.cancel();
    proxy.wait().await;
}

/// Connects from `bind` to `addr` and reads one packet: `(sequence id, payload)`.
async fn raw_connect(bind: &str, addr: SocketAddr) -> (TcpStream, u8, Vec<u8>) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(bind.parse().unwrap(), 0)).unwrap();
    let mut tcp = s.connect(addr).await.unwrap();
    let (seq, payload) = tokio::time::timeout(Duration::from_secs(10), read_packet(&mut tcp))
        .await
        .expect("no packet from the proxy within 10 s");
    (tcp, seq, payload)
}

async fn read_packet(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 4];
    tcp.read_exact(&mut header).await.unwrap();
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    (header[3], payload)
}

/// The error code and message of an ERR packet's payload.
fn err_packet(payload: &[u8]) -> (u16, String) {
    assert_eq!(payload[0], 0xff, "not an ERR packet: {payload:?}");
    let code = u16::from_le_bytes([payload[1], payload[2]]);
    assert_eq!(&payload[3..9], b"#08004", "{payload:?}");
    (code, String::from_utf8_lossy(&payload[9..]).into_owned())
}

/// Waits (bounded) until the proxy counts `n` logins in progress from `ip`.
async fn wait_in_progress(proxy: &ocean_mysql_proxy::Running, ip: &str, n: usize) {
    let ip: IpAddr = ip.parse().unwrap();
    for _ in 0..250 {
        if proxy.logins_in_progress(ip) == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{} logins in progress from {ip}, expected {n}",
        proxy.logins_in_progress(ip)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prelogin_connections_are_capped_per_ip_and_timed_out() {
    log_buffer();
    let (db, _dir, table_file) = prepared_backend().await;
    write_table(
        &table_file,
        &MysqlTable {
            databases: vec![database(db.addr(), vec![])],
            jobs: vec![
                job("shop/web", &["127.0.0.2"], Access::Rw, None),
                job("shop/other", &["127.0.0.3"], Access::Rw, None),
            ],
        },
    );
    let mut cfg = config(table_file.clone());
    assert_eq!(cfg.max_prelogin_per_ip, 16, "the default");
    // Long enough that no silent connection times out while the test runs.
    cfg.connect_timeout = Duration::from_secs(60);
    cfg.admin = Some("127.0.0.1:0".parse().unwrap());
    let (proxy, cancel) = start_proxy(cfg).await;
    let addr = proxy.addr;

    // A logged-in session from 127.0.0.2 first: it must not count, nor suffer.
    let mut session =
        mysql_async::Conn::new(opts(addr, "127.0.0.2", "shop/web", None, Some("shop")))
            .await
            .unwrap();
    wait_in_progress(&proxy, "127.0.0.2", 0).await;

    // 16 connections from 127.0.0.2 that get the greeting and never answer it.
    let mut silent = Vec::new();
    for _ in 0..16 {
        let (tcp, seq, greeting) = raw_connect("127.0.0.2", addr).await;
        assert_eq!((seq, greeting[0]), (0, 10), "a protocol-10 greeting");
        silent.push(tcp);
    }
    assert_eq!(proxy.logins_in_progress("127.0.0.2".parse().unwrap()), 16);
    // The 17th gets ERR 1040 instead of the greeting, then the connection is closed.
    let (mut tcp, seq, payload) = raw_connect("127.0.0.2", addr).await;
    assert_eq!(seq, 0);
    let (code, message) = err_packet(&payload);
    assert_eq!(code, 1040, "{message}");
    assert!(message.starts_with("Too many connections"), "{message}");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest))
        .await
        .expect("the refused connection stays open")
        .unwrap_or(0);
    assert_eq!(n, 0, "bytes after the ERR packet: {rest:?}");

    // Another IP logs in meanwhile; the logged-in session from 127.0.0.2 works on.
    assert_eq!(
        cli(
            addr,
            "127.0.0.3",
            "shop/other",
            &[],
            Some("shop"),
            "SELECT 'other'"
        )
        .await
        .unwrap(),
        "other"
    );
    let one: Option<u8> = session.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));

    // Once the silent connections close, 127.0.0.2 logs in again.
    drop(silent);
    wait_in_progress(&proxy, "127.0.0.2", 0).await;
    assert_eq!(
        cli(
            addr,
            "127.0.0.2",
            "shop/web",
            &[],
            Some("shop"),
            "SELECT 'web'"
        )
        .await
        .unwrap(),
        "web"
    );
    session.disconnect().await.unwrap();

    // Counted and audited.
    let metrics = http_get(proxy.admin_addr.unwrap(), "/metrics").await;
    assert!(
        metrics.contains(r#"ocean_mysql_logins_total{job="",result="too_many_prelogin"} 1"#),
        "{metrics}"
    );
    assert!(
        logs().lines().any(|l| l.contains("127.0.0.2")
            && l.contains("denied")
            && l.contains("--max-prelogin-per-ip 16")),
        "no audit line for the refused connection"
    );
    cancel.cancel();
    proxy.wait().await;

    // The pre-login timeout: a connection that never answers the greeting is closed after
    // --connect-timeout and its slot comes back.
    let mut cfg = config(table_file.clone());
    cfg.connect_timeout = Duration::from_secs(1);
    cfg.max_prelogin_per_ip = 1;
    let (proxy, cancel) = start_proxy(cfg).await;
    let (mut first, _, greeting) = raw_connect("127.0.0.6", proxy.addr).await;
    assert_eq!(greeting[0], 10);
    let (_second, _, payload) = raw_connect("127.0.0.6", proxy.addr).await;
    assert_eq!(err_packet(&payload).0, 1040);
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(20), first.read_to_end(&mut rest))
        .await
        .expect("the silent connection was not closed by the login timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "{rest:?}");
    assert!(started.elapsed() >= Duration::from_millis(500));
    wait_in_progress(&proxy, "127.0.0.6", 0).await;
    let (_third, _, greeting) = raw_connect("127.0.0.6", proxy.addr).await;
    assert_eq!(greeting[0], 10, "the slot came back");
    cancel.cancel();
    proxy.wait().await;
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
