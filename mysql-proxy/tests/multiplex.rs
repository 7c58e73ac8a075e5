//! Multiplexed sessions (`multiplex = true`, `pool_max`), against a real mariadbd: 500 open
//! sessions run plain reads on at most 20 backend connections (counted in the server's
//! PROCESSLIST); a session with a user variable, an open transaction or a temporary table
//! keeps its connection, is counted under that reason, and nobody else's statement runs
//! on it; when every connection is busy past `--pool-wait`, a login gets ERR 1040; an
//! empty command packet pins and is refused by the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mysql_async::prelude::*;
use ocean_core::table::mysql::{Access, MysqlTable};

const JOB: &str = "shop/mux";
const PW: &str = "mux-pw";

fn table(db: &ocean_tests::servers::MariaDb, pool_max: u32) -> MysqlTable {
    let mut database = database(db.addr(), vec![]);
    database.pool_max = Some(pool_max);
    database.multiplex = Some(true);
    MysqlTable {
        databases: vec![database],
        jobs: vec![job(JOB, &["192.0.2.77"], Access::Rw, Some(PW))],
    }
}

/// [`table`] with the database named `name`: metrics are per process, and a test that
/// reads them needs series no other test here writes.
fn table_named(db: &ocean_tests::servers::MariaDb, pool_max: u32, name: &str) -> MysqlTable {
    let mut t = table(db, pool_max);
    t.databases[0].name = name.into();
    t.jobs[0].grants[0].database = name.into();
    t
}

async fn session(addr: std::net::SocketAddr) -> mysql_async::Result<mysql_async::Conn> {
    mysql_async::Conn::new(opts(addr, "127.0.0.1", JOB, Some(PW), Some("shop"))).await
}

/// Two pinned sessions: one inside a transaction that inserted into `shop.mux_tx`, one with
/// the temporary table `shop.mux_tmp`.
async fn tx_and_temp_table(addr: std::net::SocketAddr) -> (mysql_async::Conn, mysql_async::Conn) {
    let mut tx = session(addr).await.unwrap();
    tx.query_drop("BEGIN").await.unwrap();
    tx.query_drop("INSERT INTO shop.mux_tx VALUES (1)")
        .await
        .unwrap();
    let mut tmp = session(addr).await.unwrap();
    tmp.query_drop("CREATE TEMPORARY TABLE shop.mux_tmp (x INT)")
        .await
        .unwrap();
    (tx, tmp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_sessions_share_at_most_twenty_backend_connections() {
    let (db, _dir, table_file) = prepared_backend().await;
    write_table(&table_file, &table(&db, 20));
    let mut c = config(table_file);
    // 500 logins at once from one address.
    c.max_prelogin_per_ip = 0;
    let (proxy, _cancel) = start_proxy(c).await;

    // The server's view, sampled while the sessions run.
    let done = AtomicBool::new(false);
    let peak = AtomicUsize::new(0);
    let sampler = async {
        while !done.load(Ordering::SeqCst) {
            peak.fetch_max(backend_sessions(&db).await, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // 500 sessions open at once, each running plain reads while all the others are open.
    let sessions = async {
        let all_open = Arc::new(tokio::sync::Barrier::new(500));
        let mut tasks = Vec::new();
        for i in 0..500u32 {
            let all_open = all_open.clone();
            let addr = proxy.addr;
            tasks.push(tokio::spawn(async move {
                let mut conn = session(addr).await.unwrap();
                all_open.wait().await;
                for round in 0..3u32 {
                    let id = 1 + (i + round) % 2;
                    let name: Option<String> = conn
                        .query_first(format!("SELECT name FROM shop.items WHERE id = {id}"))
                        .await
                        .unwrap();
                    let want = if id == 1 { "apple" } else { "pear" };
                    assert_eq!(name.as_deref(), Some(want));
                }
                conn
            }));
        }
        let mut conns = Vec::new();
        for t in tasks {
            conns.push(t.await.unwrap());
        }
        done.store(true, Ordering::SeqCst);
        conns
    };
    let ((), conns) = tokio::join!(sampler, sessions);
    // Every session is still open, and the server holds at most pool_max connections.
    let now = backend_sessions(&db).await;
    let peak = peak.load(Ordering::SeqCst);
    println!("500 open sessions: {now} backend connections now, {peak} at the peak");
    assert!(now <= 20, "{now} backend connections for 500 sessions");
    assert!(peak <= 20, "{peak} backend connections at the peak");
    assert_eq!(proxy.sessions(), 500);
    for c in conns {
        c.disconnect().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_with_state_keeps_its_connection_and_shares_it_with_nobody() {
    let (db, _dir, table_file) = prepared_backend().await;
    db.exec_sql("CREATE TABLE IF NOT EXISTS shop.mux_tx (id INT PRIMARY KEY)")
        .await
        .unwrap();
    const BUSY_DB: &str = "/dept/shop/busy";
    write_table(&table_file, &table_named(&db, 3, BUSY_DB));
    let mut c = config(table_file);
    c.pool_wait = Duration::from_millis(500);
    c.admin = Some("127.0.0.1:0".parse().unwrap());
    let (proxy, _cancel) = start_proxy(c).await;
    let admin = proxy.admin_addr.unwrap();
    let busy = || async move {
        let text = ocean_tests::metrics::scrape(admin).await.unwrap();
        let line = format!("ocean_mysql_pool_busy{{database=\"{BUSY_DB}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(line.as_str())?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };

    // A user variable, an open transaction, a temporary table: three pinned sessions.
    let mut var = session(proxy.addr).await.unwrap();
    var.query_drop("SET @mine = 7").await.unwrap();
    let (mut tx, mut tmp) = tx_and_temp_table(proxy.addr).await;
    // Each holds its connection: all three of pool_max are busy.
    assert_eq!(busy().await, 3.0);
    // And each is counted under what pinned it.
    let text = ocean_tests::metrics::scrape(admin).await.unwrap();
    for reason in ["user_var", "transaction", "temp_table"] {
        let line =
            format!("ocean_mysql_pinned_total{{job=\"{JOB}\",database=\"{BUSY_DB}\",reason=\"{reason}\"}} 1\n");
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }

    // pool_max 3 and three pinned sessions: no connection is free, and a pinned one is
    // never lent out, so new sessions wait --pool-wait and are refused with 1040.
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(tokio::spawn(session(proxy.addr)));
    }
    for o in others {
        let refused = o
            .await
            .unwrap()
            .expect_err("a login with every pool_max connection pinned was served");
        assert!(refused.to_string().contains("1040"), "{refused}");
    }

    // The pinned sessions still see their own state, statement after statement.
    for _ in 0..20 {
        let v: Option<i64> = var.query_first("SELECT @mine").await.unwrap();
        assert_eq!(v, Some(7));
        let n: Option<i64> = tx
            .query_first("SELECT COUNT(*) FROM shop.mux_tx")
            .await
            .unwrap();
        assert_eq!(n, Some(1));
        tmp.query_drop("SELECT * FROM shop.mux_tmp").await.unwrap();
    }
    tx.query_drop("ROLLBACK").await.unwrap();
    for c in [var, tx, tmp] {
        c.disconnect().await.unwrap();
    }
    // Given back as the sessions end.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while busy().await != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "connections still busy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A shared plain read the server refuses is counted as an error, and pins nothing.
    let mut plain = session(proxy.addr).await.unwrap();
    let missing = plain.query_drop("SELECT * FROM shop.no_such_table").await;
    assert!(missing.is_err(), "{missing:?}");
    let one: Option<u8> = plain.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    plain.disconnect().await.unwrap();
    let text = ocean_tests::metrics::scrape(admin).await.unwrap();
    let errors = format!(
        "ocean_mysql_query_errors_total{{job=\"{JOB}\",database=\"{BUSY_DB}\",command=\"query\"}} 1\n"
    );
    assert!(text.contains(&errors), "{errors} missing:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpinned_sessions_never_run_on_a_pinned_connection() {
    let (db, _dir, table_file) = prepared_backend().await;
    db.exec_sql("CREATE TABLE IF NOT EXISTS shop.mux_tx (id INT PRIMARY KEY)")
        .await
        .unwrap();
    write_table(&table_file, &table(&db, 4));
    let (proxy, _cancel) = start_proxy(config(table_file)).await;
    let (mut tx, mut tmp) = tx_and_temp_table(proxy.addr).await;
    // Two slots left for 6 sessions of plain reads, many rounds each.
    let mut readers = Vec::new();
    for _ in 0..6 {
        let addr = proxy.addr;
        readers.push(tokio::spawn(async move {
            let mut c = session(addr).await.unwrap();
            for _ in 0..30 {
                let n: Option<i64> = c
                    .query_first("SELECT COUNT(*) FROM shop.mux_tx")
                    .await
                    .unwrap();
                assert_eq!(n, Some(0), "an uncommitted row leaked to another session");
                let err = c.query_drop("SELECT * FROM shop.mux_tmp").await;
                assert!(
                    err.is_err(),
                    "another session's temporary table is visible: ran on its connection"
                );
            }
            c.disconnect().await.unwrap();
        }));
    }
    for r in readers {
        r.await.unwrap();
    }
    let n: Option<i64> = tx
        .query_first("SELECT COUNT(*) FROM shop.mux_tx")
        .await
        .unwrap();
    assert_eq!(n, Some(1), "the transaction sees its own row");
    tx.query_drop("COMMIT").await.unwrap();
    tmp.query_drop("SELECT * FROM shop.mux_tmp").await.unwrap();
    assert!(backend_sessions(&db).await <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_answers_the_read_in_flight_and_closes_idle_multiplexed_sessions() {
    let (db, _dir, table_file) = prepared_backend().await;
    write_table(&table_file, &table(&db, 4));
    let (proxy, drain) = start_proxy(config(table_file)).await;
    let mut idle = session(proxy.addr).await.unwrap();
    idle.query_drop("SELECT 1").await.unwrap();
    let mut slow = session(proxy.addr).await.unwrap();
    let in_flight = tokio::spawn(async move {
        let r: Option<i64> = slow.query_first("SELECT SLEEP(1)").await.unwrap();
        (r, slow)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drain.cancel();
    let (r, mut slow) = in_flight.await.unwrap();
    assert_eq!(
        r,
        Some(0),
        "the read in flight is answered through the drain"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        idle.query_drop("SELECT 1").await.is_err(),
        "idle session still open"
    );
    assert!(
        slow.query_drop("SELECT 1").await.is_err(),
        "drained session still open"
    );
    tokio::time::timeout(Duration::from_secs(10), proxy.wait())
        .await
        .expect("the proxy did not stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_command_packet_pins_and_gets_the_servers_answer() {
    use mysql_common::constants::MariadbCapabilities;
    use ocean_mysql_proxy::proto::Decoder;
    use ocean_mysql_proxy::wire::read_packet;
    use tokio::io::AsyncWriteExt;
    let (db, _dir, table_file) = prepared_backend().await;
    const EMPTY_DB: &str = "/dept/shop/empty-packet";
    write_table(&table_file, &table_named(&db, 2, EMPTY_DB));
    let mut c = config(table_file);
    c.admin = Some("127.0.0.1:0".parse().unwrap());
    let (proxy, _cancel) = start_proxy(c).await;

    // A packet of length 0 has no command byte: the proxy must not take the next
    // packet's first byte for one, nor slice past the packet. It pins (`command`) and
    // relays it; the server refuses it with an ERR.
    // A query right behind it, in the same segment.
    let mut s = raw_session(proxy.addr, JOB, PW, MariadbCapabilities::empty())
        .await
        .unwrap();
    s.write_all(b"\0\0\0\0\x09\0\0\0\x03SELECT 7")
        .await
        .unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        read_packet(&mut s, Decoder::new(1 << 20)),
    )
    .await
    .expect("no answer to an empty packet");
    match answer {
        Ok(p) => assert_eq!(p.payload.first(), Some(&0xff), "{:?}", p.payload),
        Err(e) => panic!("the session was cut: {e}"),
    }
    // The query behind it is answered as the query it is: one column, then its
    // definition, ..., a row "7".
    let mut answer = Vec::new();
    while !answer.iter().any(|p: &Vec<u8>| p == b"\x017") {
        let p = tokio::time::timeout(
            Duration::from_secs(5),
            read_packet(&mut s, Decoder::new(1 << 20)),
        )
        .await
        .expect("no answer to the query behind the empty packet")
        .expect("the session was cut after the empty packet");
        answer.push(p.payload.to_vec());
    }
    assert_eq!(answer[0], b"\x01", "{answer:?}");
    let text = ocean_tests::metrics::scrape(proxy.admin_addr.unwrap())
        .await
        .unwrap();
    let line = format!(
        "ocean_mysql_pinned_total{{job=\"{JOB}\",database=\"{EMPTY_DB}\",reason=\"command\"}} 1\n"
    );
    assert!(text.contains(&line), "{line} missing:\n{text}");

    // Everybody else is served.
    let mut other = session(proxy.addr).await.unwrap();
    let one: Option<u8> = other.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    other.disconnect().await.unwrap();
}
