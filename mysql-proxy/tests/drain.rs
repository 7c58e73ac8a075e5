//! Drain (SIGTERM: the daemon's cancel token) against a real mariadbd: a statement in
//! flight gets its result, an open transaction is let finish, idle sessions are closed.
//! The same under sysbench, with the real SIGTERM to the `ocean` process, is
//! `tests/binary/drain.rs` (`mysql_proxy_drains_on_sigterm_under_sysbench`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

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
