//! Connection limits (overall and per job) and the idle timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use mysql_async::prelude::*;
use ocean_core::table::mysql::{Access, MysqlTable};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_job_and_overall_limits_and_idle_timeout() {
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
    cfg.max_connections_per_job = 2;
    cfg.max_connections = 3;
    cfg.idle_timeout = Some(Duration::from_millis(700));
    cfg.admin = Some("127.0.0.1:0".parse().unwrap());
    let (proxy, cancel) = start_proxy(cfg).await;
    let addr = proxy.addr;
    let web = || mysql_async::Conn::new(opts(addr, "127.0.0.2", "shop/web", None, Some("shop")));

    let mut a = web().await.unwrap();
    let mut b = web().await.unwrap();
    let err = web().await.err().unwrap().to_string();
    assert!(
        err.contains("1203") || err.contains("more than 2 active connections"),
        "{err}"
    );
    // Another job still gets in: the third connection overall.
    let mut c = mysql_async::Conn::new(opts(addr, "127.0.0.3", "shop/other", None, Some("shop")))
        .await
        .unwrap();
    // The fourth connection overall is refused before the greeting.
    let err = mysql_async::Conn::new(opts(addr, "127.0.0.3", "shop/other", None, Some("shop")))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("Too many connections"), "{err}");

    // Sessions that stay busy live on; idle ones are closed after 700 ms.
    for _ in 0..6 {
        let _: Option<u8> = a.query_first("SELECT 1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r: Result<Option<u8>, _> = b.query_first("SELECT 1").await;
    println!("idle session after 1.2 s: {r:?}");
    assert!(r.is_err());
    let _ = c.query_first::<u8, _>("SELECT 1").await;
    drop((a, b, c));
    // Slots are given back: the job logs in again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = web().await.unwrap();
    let one: Option<u8> = again.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    assert!(logs().contains("idle timeout"));

    // Metrics per job and database on the admin port.
    let metrics = http_get(proxy.admin_addr.unwrap(), "/metrics").await;
    for needle in [
        r#"ocean_mysql_sessions{job="shop/web",database="/dept/shop/main"} 1"#,
        r#"ocean_mysql_logins_total{job="shop/web",result="job_limit"} 1"#,
        r#"ocean_mysql_logins_total{job="",result="too_many_connections"} 1"#,
        r#"ocean_mysql_sessions_closed_total{job="shop/web",database="/dept/shop/main",reason="idle"}"#,
        r#"ocean_mysql_bytes_total{job="shop/web",database="/dept/shop/main",direction="to_client"}"#,
    ] {
        assert!(
            metrics.contains(needle),
            "/metrics lacks {needle}:\n{metrics}"
        );
    }
    let table = http_get(proxy.admin_addr.unwrap(), "/table").await;
    assert!(
        !table.contains(RW_PASSWORD) && table.contains("<redacted>"),
        "{table}"
    );
    cancel.cancel();
    proxy.wait().await;
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
