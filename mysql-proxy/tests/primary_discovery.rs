//! Primary discovery (issue 16): a database whose servers are candidates
//! (`OCEAN_MYSQL_ROLE=auto`, no declared primary) has its writes sent to the one that
//! answers `@@read_only = 0`. An outside orchestrator's failover (read_only flipped, no
//! table change) is followed within two seconds; reads keep working throughout; nothing is
//! written to the read-only server; two writable servers keep the current primary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;
use ocean_core::table::mysql::{Access, MysqlTable};
use ocean_tests::servers::mariadb::MariaDb;

/// One write attempt through the proxy: when, and the server that took it or the error.
type Attempt = (Instant, Result<u32, String>);

/// A new session that inserts row `id` and says which server took it.
async fn write_once(addr: std::net::SocketAddr, id: u32) -> Result<u32, String> {
    async {
        let mut c =
            mysql_async::Conn::new(opts(addr, "127.0.0.2", "shop/web", None, Some("shop"))).await?;
        c.exec_drop(
            "INSERT INTO items (id, name) VALUES (?, 'discovery')",
            (id,),
        )
        .await?;
        let server: Option<u32> = c.query_first("SELECT @@server_id").await?;
        c.disconnect().await?;
        Ok::<_, mysql_async::Error>(server.unwrap_or(0))
    }
    .await
    .map_err(|e| e.to_string())
}

/// The admin status page (`GET /`).
async fn status_page(admin: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// Rows the test wrote on `db`.
async fn written(db: &MariaDb) -> u32 {
    db.exec_sql("SELECT COUNT(*) FROM shop.items WHERE name = 'discovery'")
        .await
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_read_only_flips_without_a_table_change() {
    log_buffer();
    // Two independent servers with the same schema and users; "b" starts read-only, as a
    // replica an orchestrator manages would.
    let a = MariaDb::start().await.unwrap();
    let b = MariaDb::start().await.unwrap();
    prepare_backend(&a).await;
    prepare_backend(&b).await;
    b.exec_sql("SET GLOBAL read_only = 1").await.unwrap();
    let (aid, bid) = (a.server_id(), b.server_id());

    let dir = tempfile::tempdir().unwrap();
    let table_file = dir.path().join("mysql.json");
    let mut db = database(a.addr(), vec![]);
    db.primary = None;
    db.candidates = vec![a.addr(), b.addr()];
    db.candidates.sort();
    write_table(
        &table_file,
        &MysqlTable {
            databases: vec![db],
            jobs: vec![
                job("shop/web", &["127.0.0.2"], Access::Rw, None),
                job("shop/report", &["127.0.0.6"], Access::Ro, None),
            ],
        },
    );
    let mut cfg = config(table_file);
    cfg.probe_interval = Duration::from_millis(500);
    let (proxy, _cancel) = start_proxy(cfg).await;
    let addr = proxy.addr;
    let etag = proxy.table_etag().unwrap();

    // Writes land on a once discovery has run.
    let next_id = Arc::new(AtomicU32::new(1000));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = write_once(addr, next_id.fetch_add(1, Ordering::Relaxed)).await;
        if r == Ok(aid) {
            break;
        }
        assert!(Instant::now() < deadline, "no write reached a: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A writer and a reader run through the failover.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, next_id) = (stop.clone(), next_id.clone());
        tokio::spawn(async move {
            let mut seen: Vec<Attempt> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = write_once(addr, next_id.fetch_add(1, Ordering::Relaxed)).await;
                seen.push((Instant::now(), r));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        })
    };
    let reader = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen: Vec<Result<u32, String>> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = async {
                    let mut c = mysql_async::Conn::new(opts(
                        addr,
                        "127.0.0.6",
                        "shop/report",
                        None,
                        Some("shop"),
                    ))
                    .await?;
                    let n: Option<u32> = c.query_first("SELECT COUNT(*) FROM items").await?;
                    c.disconnect().await?;
                    Ok::<_, mysql_async::Error>(n.unwrap_or(0))
                }
                .await
                .map_err(|e| e.to_string());
                seen.push(r);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The orchestrator's failover: a read-only, then b writable.
    let b_before = written(&b).await;
    a.exec_sql("SET GLOBAL read_only = 1").await.unwrap();
    let flipped = Instant::now();
    // Counted once a refuses writes: from here on nothing may land there, also while it
    // is writable again below.
    let a_before = written(&a).await;
    b.exec_sql("SET GLOBAL read_only = 0").await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Split brain: a writable again as well. Writes stay on b, the current primary.
    a.exec_sql("SET GLOBAL read_only = 0").await.unwrap();
    let both = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    let reads = reader.await.unwrap();

    let first_b = writes
        .iter()
        .find(|(t, r)| *t > flipped && r.as_ref().ok() == Some(&bid))
        .map(|(t, _)| t.duration_since(flipped))
        .expect("no write reached the new primary");
    let errors: Vec<&String> = writes
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    println!(
        "first write on the new primary {first_b:?} after the flip; {} writes, {} refused during the switch: {errors:?}",
        writes.len(),
        errors.len()
    );
    assert!(first_b < Duration::from_secs(2), "{first_b:?}");
    let after: Vec<&Attempt> = writes
        .iter()
        .filter(|(t, _)| *t > flipped + first_b)
        .collect();
    assert!(
        after.iter().all(|(_, r)| r.as_ref().ok() == Some(&bid)),
        "after the switch every write goes to b, also while a is writable again: {after:?}"
    );
    assert!(
        writes
            .iter()
            .any(|(t, r)| *t > both && r.as_ref().ok() == Some(&bid)),
        "writes continued during the split brain"
    );
    // Nothing was written to a after it turned read-only: the writes refused during the
    // switch were refused by a itself (read_only binds our non-SUPER user), and none went
    // there while it was writable again.
    assert_eq!(
        written(&a).await,
        a_before,
        "rows written to the read-only a"
    );
    assert!(written(&b).await > b_before);
    let read_errors: Vec<_> = reads.iter().filter(|r| r.is_err()).collect();
    assert!(reads.len() > 20, "{} reads", reads.len());
    assert!(
        read_errors.is_empty(),
        "reads kept working through the failover: {read_errors:?}"
    );
    // No table change was involved.
    assert_eq!(proxy.table_etag().unwrap(), etag);
    let logs = logs();
    assert!(
        logs.contains("discovered primary changed"),
        "the switch is logged"
    );
    assert!(
        logs.contains("more than one candidate is writable"),
        "the split brain is reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_writable_candidate_refuses_writes_and_serves_reads() {
    log_buffer();
    let (a, dir, table_file) = prepared_backend().await;
    a.exec_sql("SET GLOBAL read_only = 1").await.unwrap();
    let mut db = database(a.addr(), vec![]);
    db.primary = None;
    db.candidates = vec![a.addr()];
    write_table(
        &table_file,
        &MysqlTable {
            databases: vec![db],
            jobs: vec![
                job("shop/web", &["127.0.0.2"], Access::Rw, None),
                job("shop/report", &["127.0.0.6"], Access::Ro, None),
            ],
        },
    );
    let mut cfg = config(table_file);
    cfg.probe_interval = Duration::from_millis(200);
    cfg.admin = Some("127.0.0.1:0".parse().unwrap());
    let (proxy, _cancel) = start_proxy(cfg).await;
    let addr = proxy.addr;
    // The read-only candidate serves reads once probed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = async {
            let mut c =
                mysql_async::Conn::new(opts(addr, "127.0.0.6", "shop/report", None, Some("shop")))
                    .await?;
            let id: Option<u32> = c.query_first("SELECT @@server_id").await?;
            Ok::<_, mysql_async::Error>(id.unwrap_or(0))
        }
        .await;
        if r.as_ref().ok() == Some(&a.server_id()) {
            break;
        }
        assert!(Instant::now() < deadline, "reads never reached a: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // rw logins find no primary: refused at login, nothing reaches the server.
    let r = write_once(addr, 1).await;
    let e = r.expect_err("a write with no writable candidate");
    assert!(
        e.contains("1429") && e.contains("has no running primary"),
        "{e}"
    );
    println!("rw login with no writable candidate: {e}");
    assert_eq!(written(&a).await, 0);
    // The admin page shows what discovery found.
    let page = status_page(proxy.admin_addr.unwrap()).await;
    let row = format!("{}", a.addr());
    assert!(
        page.contains(&row) && page.contains("replica (discovered)"),
        "{page}"
    );
    assert!(
        page.contains("databases without a primary") && page.contains("/dept/shop/main"),
        "{page}"
    );
    drop(dir);
}
