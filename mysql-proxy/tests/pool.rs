//! Backend connections kept between sessions (`pool_max`), against a real mariadbd: short
//! sessions one after another share a few backend connections, each reset before the next
//! session gets it; a session that ends inside a transaction never gives its connection
//! back; reuse is off without `pool_max`; a table that stops routing there closes them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;
use ocean_core::table::mysql::{Access, MysqlTable};

const JOB: &str = "shop/pool";
const PW: &str = "pool-pw";

fn table(db: &ocean_tests::servers::MariaDb, pool_max: Option<u32>) -> MysqlTable {
    let mut database = database(db.addr(), vec![]);
    database.pool_max = pool_max;
    MysqlTable {
        databases: vec![database],
        jobs: vec![job(JOB, &["192.0.2.77"], Access::Rw, Some(PW))],
    }
}

async fn session(addr: std::net::SocketAddr) -> mysql_async::Conn {
    mysql_async::Conn::new(opts(addr, "127.0.0.1", JOB, Some(PW), Some("shop")))
        .await
        .unwrap()
}

async fn connection_id(conn: &mut mysql_async::Conn) -> u64 {
    conn.query_first("SELECT CONNECTION_ID()")
        .await
        .unwrap()
        .unwrap()
}

/// Waits until `db` has exactly `n` sessions of the proxy's backend users.
async fn until_backend_sessions(db: &ocean_tests::servers::MariaDb, n: usize) {
    let t = Instant::now();
    loop {
        let now = backend_sessions(db).await;
        if now == n {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{now} backend sessions, waiting for {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_sessions_share_a_few_backend_connections_reset_between_them() {
    let (db, _dir, table_file) = prepared_backend().await;
    write_table(&table_file, &table(&db, Some(4)));
    let (proxy, _cancel) = start_proxy(config(table_file)).await;

    // 200 short sessions, one after another (connect, one query, COM_QUIT).
    let mut ids = HashSet::new();
    for _ in 0..200 {
        let mut conn = session(proxy.addr).await;
        ids.insert(connection_id(&mut conn).await);
        conn.disconnect().await.unwrap();
    }
    println!(
        "200 sessions used {} backend connections: {ids:?}",
        ids.len()
    );
    assert!(
        ids.len() <= 4,
        "200 sequential sessions used {} backend connections (pool_max 4)",
        ids.len()
    );
    let kept = backend_sessions(&db).await;
    assert!(
        (1..=4).contains(&kept),
        "{kept} backend connections idle after the sessions (pool_max 4)"
    );

    // What one session leaves behind is gone for the next one on the same connection.
    let mut a = session(proxy.addr).await;
    let id_a = connection_id(&mut a).await;
    a.query_drop("SET @left_behind = 42").await.unwrap();
    a.query_drop("CREATE TEMPORARY TABLE shop.tmp_pool (x INT)")
        .await
        .unwrap();
    a.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
        .await
        .unwrap();
    a.disconnect().await.unwrap();
    // The reset runs after the session; give it a moment, then take the same connection
    // (the most recently returned is handed out first).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut b = session(proxy.addr).await;
    let id_b = connection_id(&mut b).await;
    assert_eq!(
        id_b, id_a,
        "the next session did not get the pooled connection"
    );
    let left: Option<Option<i64>> = b.query_first("SELECT @left_behind").await.unwrap();
    assert_eq!(
        left,
        Some(None),
        "a user variable survived into the next session"
    );
    let err = b
        .query_drop("SELECT * FROM shop.tmp_pool")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("1146"),
        "the temporary table survived into the next session: {err}"
    );
    let mode: Option<String> = b.query_first("SELECT @@SESSION.sql_mode").await.unwrap();
    assert!(
        !mode.unwrap_or_default().contains("ANSI_QUOTES"),
        "a session variable survived into the next session"
    );
    let schema: Option<String> = b.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(schema.as_deref(), Some("shop"));
    b.disconnect().await.unwrap();

    // A table that turns reuse off closes the idle connections.
    let etag = proxy.table_etag().unwrap();
    let table_file = _dir.path().join("mysql.json");
    write_table(&table_file, &table(&db, Some(0)));
    wait_table_change(&proxy, &etag).await;
    until_backend_sessions(&db, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_quits_inside_a_transaction_keeps_nothing_for_the_next() {
    let (db, _dir, table_file) = prepared_backend().await;
    db.exec_sql("CREATE TABLE IF NOT EXISTS shop.pool_tx (id INT PRIMARY KEY)")
        .await
        .unwrap();
    write_table(&table_file, &table(&db, Some(4)));
    let (proxy, _cancel) = start_proxy(config(table_file)).await;

    let mut a = session(proxy.addr).await;
    let id_a = connection_id(&mut a).await;
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("INSERT INTO shop.pool_tx VALUES (1)")
        .await
        .unwrap();
    // COM_QUIT with the transaction open: the connection is closed, not pooled.
    a.disconnect().await.unwrap();
    until_backend_sessions(&db, 0).await;
    let mut b = session(proxy.addr).await;
    assert_ne!(connection_id(&mut b).await, id_a);
    let rows: Option<i64> = b
        .query_first("SELECT COUNT(*) FROM shop.pool_tx")
        .await
        .unwrap();
    assert_eq!(rows, Some(0), "the uncommitted insert must be rolled back");
    b.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pool_max_every_session_logs_in_anew() {
    let (db, _dir, table_file) = prepared_backend().await;
    write_table(&table_file, &table(&db, None));
    let (proxy, _cancel) = start_proxy(config(table_file)).await;
    let mut ids = HashSet::new();
    for _ in 0..3 {
        let mut conn = session(proxy.addr).await;
        ids.insert(connection_id(&mut conn).await);
        conn.disconnect().await.unwrap();
    }
    assert_eq!(ids.len(), 3, "reuse is off without pool_max: {ids:?}");
    until_backend_sessions(&db, 0).await;
}
