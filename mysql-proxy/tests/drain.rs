//! Drain (SIGTERM: the daemon's cancel token) against a real mariadbd: a statement in
//! flight gets its result, an open transaction is let finish, idle sessions are closed,
//! and under sysbench every statement sent before the drain gets its reply.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;
use ocean_core::table::mysql::{Access, MysqlTable};

const JOB: &str = "shop/drain";
const PW: &str = "drain-pw";

async fn proxy_for(
    db: &ocean_tests::servers::MariaDb,
    table_file: std::path::PathBuf,
) -> (
    ocean_mysql_proxy::Running,
    tokio_util::sync::CancellationToken,
) {
    write_table(
        &table_file,
        &MysqlTable {
            databases: vec![database(db.addr(), vec![])],
            jobs: vec![job(JOB, &["192.0.2.77"], Access::Rw, Some(PW))],
        },
    );
    start_proxy(config(table_file)).await
}

async fn connect(addr: std::net::SocketAddr) -> mysql_async::Conn {
    mysql_async::Conn::new(opts(addr, "127.0.0.1", JOB, Some(PW), Some("shop")))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_finishes_the_query_in_flight_and_the_open_transaction_then_closes() {
    log_buffer();
    let (db, _dir, table_file) = prepared_backend().await;
    db.exec_sql("CREATE TABLE IF NOT EXISTS shop.drained (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let (proxy, drain) = proxy_for(&db, table_file).await;

    let mut idle = connect(proxy.addr).await;
    idle.query_drop("SELECT 1").await.unwrap();
    let mut tx = connect(proxy.addr).await;
    tx.query_drop("BEGIN").await.unwrap();
    tx.query_drop("INSERT INTO shop.drained VALUES (1)")
        .await
        .unwrap();
    let mut slow = connect(proxy.addr).await;
    let in_flight = tokio::spawn(async move {
        let r: Option<i64> = slow.query_first("SELECT SLEEP(2)").await.unwrap();
        (r, slow)
    });
    // The slow query is on its way to the backend before the drain.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let drained_at = Instant::now();
    drain.cancel();

    // The statement in flight gets its result.
    let (r, mut slow) = in_flight.await.unwrap();
    assert_eq!(
        r,
        Some(0),
        "SELECT SLEEP(2) must be answered through the drain"
    );
    // The open transaction goes on to its COMMIT.
    tokio::time::sleep(Duration::from_millis(400)).await;
    tx.query_drop("INSERT INTO shop.drained VALUES (2)")
        .await
        .unwrap();
    tx.query_drop("COMMIT").await.unwrap();
    // After that, every session is closed: the next statement of each fails.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for (name, conn) in [
        ("idle", &mut idle),
        ("transaction", &mut tx),
        ("slow", &mut slow),
    ] {
        let after = conn.query_drop("SELECT 1").await;
        assert!(
            after.is_err(),
            "the {name} session is still open after the drain"
        );
    }
    tokio::time::timeout(Duration::from_secs(10), proxy.wait())
        .await
        .expect("the proxy did not stop once its sessions were drained");
    assert!(drained_at.elapsed() < Duration::from_secs(10));
    let rows = db
        .exec_sql("SELECT COUNT(*) FROM shop.drained")
        .await
        .unwrap();
    assert_eq!(rows.trim(), "2", "the transaction's rows must be committed");
    let logs = logs();
    assert!(
        logs.contains("drained: the proxy is shutting down"),
        "no audit of the drained sessions:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_sysbench_every_statement_sent_before_the_drain_is_answered() {
    log_buffer();
    let (db, _dir, table_file) = prepared_backend().await;
    db.exec_sql("CREATE TABLE IF NOT EXISTS shop.counter (id INT PRIMARY KEY, n INT)")
        .await
        .unwrap();
    db.exec_sql("INSERT IGNORE INTO shop.counter VALUES (1, 0), (2, 0), (3, 0), (4, 0)")
        .await
        .unwrap();
    let (proxy, drain) = proxy_for(&db, table_file).await;
    let port = proxy.addr.port();

    let prepare = tokio::process::Command::new("sysbench")
        .args([
            "oltp_point_select",
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
            &format!("--mysql-port={port}"),
            &format!("--mysql-user={JOB}"),
            &format!("--mysql-password={PW}"),
            "--mysql-db=shop",
            "--mysql-ssl=off",
            "--tables=1",
            "--table-size=100",
            "prepare",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        prepare.status.success(),
        "sysbench prepare through the proxy failed:\n{}{}",
        String::from_utf8_lossy(&prepare.stdout),
        String::from_utf8_lossy(&prepare.stderr)
    );

    // Background load: sysbench point selects through the proxy, without end.
    let mut sysbench = tokio::process::Command::new(
        ocean_tests::servers::find_binary("sysbench", "sysbench").unwrap(),
    )
    .args([
        "oltp_point_select",
        "--db-driver=mysql",
        "--mysql-host=127.0.0.1",
        &format!("--mysql-port={port}"),
        &format!("--mysql-user={JOB}"),
        &format!("--mysql-password={PW}"),
        "--mysql-db=shop",
        "--mysql-ssl=off",
        "--tables=1",
        "--table-size=100",
        "--threads=4",
        "--time=0",
        "--events=0",
        "--report-interval=0",
        "run",
    ])
    .kill_on_drop(true)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    // Verifiers: transactions in a loop; each statement is timed.
    let drained_at_ms = Arc::new(AtomicU64::new(u64::MAX));
    let t0 = Instant::now();
    let mut verifiers = Vec::new();
    for id in 1..=4u32 {
        let addr = proxy.addr;
        let drained_at_ms = drained_at_ms.clone();
        verifiers.push(tokio::spawn(async move {
            let mut conn = connect(addr).await;
            let mut done = 0u64;
            loop {
                let stmts = [
                    "BEGIN".to_string(),
                    format!("SELECT n FROM shop.counter WHERE id = {id}"),
                    format!("UPDATE shop.counter SET n = n + 1 WHERE id = {id}"),
                    "COMMIT".to_string(),
                ];
                for (i, s) in stmts.iter().enumerate() {
                    let sent_ms = t0.elapsed().as_millis() as u64;
                    if let Err(e) = conn.query_drop(s).await {
                        let drained = drained_at_ms.load(Ordering::SeqCst);
                        assert!(
                            sent_ms > drained,
                            "{s:?} sent {sent_ms} ms in, before the drain at {drained} ms, failed: {e}"
                        );
                        // A transaction begun before the drain must have been let finish.
                        assert_eq!(i, 0, "{s:?} failed inside a transaction: {e}");
                        return done;
                    }
                }
                done += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        sysbench.try_wait().unwrap().is_none(),
        "sysbench stopped before the drain: no load"
    );
    drained_at_ms.store(t0.elapsed().as_millis() as u64, Ordering::SeqCst);
    drain.cancel();
    let mut total = 0;
    for v in verifiers {
        let done = tokio::time::timeout(Duration::from_secs(10), v)
            .await
            .expect("a verifier was never closed")
            .unwrap();
        assert!(done > 0, "a verifier committed nothing before the drain");
        total += done;
    }
    tokio::time::timeout(Duration::from_secs(10), proxy.wait())
        .await
        .expect("the proxy did not stop");
    let _ = sysbench.kill().await;
    // Every committed transaction is in the table: none was cut half way.
    let sum = db
        .exec_sql("SELECT SUM(n) FROM shop.counter")
        .await
        .unwrap();
    assert_eq!(
        sum.trim().parse::<u64>().unwrap(),
        total,
        "committed transactions vs rows"
    );
}
