//! Bad input and bad backends: garbage at login, 16 MB+ packets through the relay, a client
//! that vanishes mid-result, a backend that is down or hangs at login. The proxy answers
//! with MySQL errors or closes, never panics, leaks no session, and audits each case.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;
use ocean_core::table::mysql::{Access, MysqlTable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(bind: &str, addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{bind}:0").parse().unwrap()).unwrap();
    s.connect(addr).await.unwrap()
}

/// Reads one packet (header + payload); None when the connection closed.
async fn read_packet(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await.ok()?;
    let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).await.ok()?;
    Some(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_big_packets_vanishing_clients_and_bad_backends() {
    log_buffer();
    let (db, _dir, table_file) = prepared_backend().await;
    let table = MysqlTable {
        databases: vec![database(db.addr(), vec![])],
        jobs: vec![job("shop/web", &["127.0.0.2"], Access::Rw, None)],
    };
    write_table(&table_file, &table);
    let mut cfg = config(table_file.clone());
    cfg.connect_timeout = Duration::from_secs(1);
    let (proxy, cancel) = start_proxy(cfg).await;
    let addr = proxy.addr;

    // 1. Garbage handshake responses: an error packet or a close, and the proxy lives on.
    for garbage in [
        vec![5u8, 0, 0, 1, 1, 2, 3, 4, 5], // a short, meaningless payload
        vec![40, 0, 0, 1].into_iter().chain([0xffu8; 40]).collect(), // caps all set, junk
        vec![0xff, 0xff, 0xff, 1, 0],      // claims a 16 MB login packet
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), // not MySQL at all
    ] {
        let mut s = connect_from("127.0.0.2", addr).await;
        let greeting = read_packet(&mut s).await.unwrap();
        assert_eq!(greeting[0], 10);
        s.write_all(&garbage).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), read_packet(&mut s))
            .await
            .unwrap();
        if let Some(p) = &reply {
            assert_eq!(p[0], 0xff, "{p:?}");
        }
        println!(
            "garbage {:?}... -> {:?}",
            &garbage[..garbage.len().min(8)],
            reply.map(|p| String::from_utf8_lossy(&p[3..]).into_owned())
        );
    }
    assert_eq!(
        cli(addr, "127.0.0.2", "shop/web", &[], Some("shop"), "SELECT 1")
            .await
            .unwrap(),
        "1"
    );

    // 2. 16 MB+ packets both ways through the relay: a 17 MB query, a 17 MB result.
    let mut conn = mysql_async::Conn::new(
        opts(addr, "127.0.0.2", "shop/web", None, Some("shop"))
            .max_allowed_packet(Some(64 * 1024 * 1024)),
    )
    .await
    .unwrap();
    let big = "x".repeat(17 * 1024 * 1024);
    let len: Option<u64> = conn
        .query_first(format!("SELECT LENGTH('{big}')"))
        .await
        .unwrap();
    assert_eq!(len, Some(big.len() as u64));
    let len: Option<u64> = conn
        .exec_first("SELECT LENGTH(?)", (big.as_str(),))
        .await
        .unwrap();
    assert_eq!(len, Some(big.len() as u64));
    let back: Option<Vec<u8>> = conn
        .query_first("SELECT REPEAT('y', 17*1024*1024 + 5)")
        .await
        .unwrap();
    assert_eq!(back.unwrap().len(), 17 * 1024 * 1024 + 5);
    let one: Option<u8> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    conn.disconnect().await.unwrap();

    // 3. A client that disconnects in the middle of a large result.
    let from_web = via("127.0.0.2", addr);
    let mut child = tokio::process::Command::new("mariadb")
        .args([
            "--no-defaults",
            "--protocol=tcp",
            "--host=127.0.0.1",
            &format!("--port={}", from_web.port()),
            "--user=shop/web",
            "--skip-ssl",
            "--quick",
            "-N",
            "-B",
            "shop",
            "-e",
            "SELECT seq, REPEAT('z', 500) FROM seq_1_to_2000000",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < 1024 * 1024 {
        let n = out.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        got += n;
    }
    child.kill().await.unwrap();
    drop(out);
    let t = Instant::now();
    while (proxy.sessions() > 0 || backend_sessions(&db).await > 0)
        && t.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "client killed mid-result: proxy sessions {} and backend sessions {} after {:?}",
        proxy.sessions(),
        backend_sessions(&db).await,
        t.elapsed()
    );
    assert_eq!(proxy.sessions(), 0);
    assert_eq!(backend_sessions(&db).await, 0);

    // 4. Backend down: a MySQL error, quickly.
    let etag = proxy.table_etag().unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    write_table(
        &table_file,
        &MysqlTable {
            databases: vec![database(dead, vec![])],
            jobs: table.jobs.clone(),
        },
    );
    wait_table_change(&proxy, &etag).await;
    let err = cli(addr, "127.0.0.2", "shop/web", &[], Some("shop"), "SELECT 1")
        .await
        .unwrap_err();
    println!("backend down: {err}");
    assert!(err.contains("ERROR 1429"), "{err}");

    // 5. Backend hangs at login (SIGSTOP): an error after --connect-timeout, not a hang.
    let etag = proxy.table_etag().unwrap();
    write_table(&table_file, &table);
    wait_table_change(&proxy, &etag).await;
    let mut db = db;
    db.pause().unwrap();
    let t = Instant::now();
    let err = cli(addr, "127.0.0.2", "shop/web", &[], Some("shop"), "SELECT 1")
        .await
        .unwrap_err();
    let took = t.elapsed();
    db.resume().unwrap();
    println!("backend stopped: {err} after {took:?}");
    assert!(err.contains("ERROR"), "{err}");
    assert!(took < Duration::from_secs(10));
    assert_eq!(
        cli(addr, "127.0.0.2", "shop/web", &[], Some("shop"), "SELECT 1")
            .await
            .unwrap(),
        "1"
    );

    // Nothing leaked; everything audited.
    let t = Instant::now();
    while (proxy.connections() > 0 || backend_sessions(&db).await > 0)
        && t.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(proxy.sessions(), 0);
    assert_eq!(proxy.connections(), 0);
    assert_eq!(backend_sessions(&db).await, 0);
    let logs = logs();
    for needle in [
        "unparsable handshake response",
        "login packet of",
        "backend",
        "timed out",
    ] {
        assert!(logs.contains(needle), "audit log lacks {needle:?}:\n{logs}");
    }
    cancel.cancel();
    proxy.wait().await;
}
