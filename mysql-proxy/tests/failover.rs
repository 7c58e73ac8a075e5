//! Hot swap: a new table moves the database's primary while clients run; a job whose
//! tasks disappear cannot log in, and with --kick-revoked loses its open sessions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;
use ocean_core::table::mysql::{Access, MysqlTable};
use ocean_tests::servers::mariadb::MariaDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_moves_while_clients_run() {
    log_buffer();
    // Two independent servers with the same schema and users: "a" is the primary, then "b".
    let a = MariaDb::start().await.unwrap();
    let b = MariaDb::start().await.unwrap();
    prepare_backend(&a).await;
    prepare_backend(&b).await;
    let (aid, bid) = (a.server_id(), b.server_id());

    let dir = tempfile::tempdir().unwrap();
    let table_file = dir.path().join("mysql.json");
    let jobs = vec![
        job("shop/web", &["127.0.0.2"], Access::Rw, None),
        job("shop/batch", &["127.0.0.6"], Access::Rw, None),
    ];
    let table_a = MysqlTable {
        databases: vec![database(a.addr(), vec![])],
        jobs: jobs.clone(),
    };
    write_table(&table_file, &table_a);
    let mut cfg = config(table_file.clone());
    cfg.kick_revoked = true;
    let (proxy, cancel) = start_proxy(cfg).await;
    let addr = proxy.addr;

    // An old session that keeps querying, and a loop of new sessions.
    let old_saw = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut old = mysql_async::Conn::new(opts(addr, "127.0.0.2", "shop/web", None, Some("shop")))
        .await
        .unwrap();
    let old_task = {
        let (saw, stop) = (old_saw.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r: Result<Option<u32>, _> = old.query_first("SELECT @@server_id").await;
                let line = match r {
                    Ok(v) => format!("ok server_id={}", v.unwrap()),
                    Err(e) => format!("error: {e}"),
                };
                let failed = line.starts_with("error");
                {
                    let mut s = saw.lock().unwrap();
                    if s.last() != Some(&line) {
                        s.push(line);
                    }
                }
                if failed {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let new_loop = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen: Vec<(Instant, Result<u32, String>)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = async {
                    let mut c = mysql_async::Conn::new(opts(
                        addr,
                        "127.0.0.2",
                        "shop/web",
                        None,
                        Some("shop"),
                    ))
                    .await?;
                    let id: Option<u32> = c.query_first("SELECT @@server_id").await?;
                    c.disconnect().await?;
                    Ok::<_, mysql_async::Error>(id.unwrap())
                }
                .await
                .map_err(|e| e.to_string());
                seen.push((Instant::now(), r));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let etag = proxy.table_etag().unwrap();
    let changed_at = Instant::now();
    write_table(
        &table_file,
        &MysqlTable {
            databases: vec![database(b.addr(), vec![])],
            jobs: jobs.clone(),
        },
    );
    wait_table_change(&proxy, &etag).await;
    let applied_after = changed_at.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = new_loop.await.unwrap();
    old_task.await.unwrap();

    let first_b = seen
        .iter()
        .find(|(t, r)| *t > changed_at && r.as_ref().ok() == Some(&bid))
        .map(|(t, _)| t.duration_since(changed_at))
        .expect("no new session reached the new primary");
    let after_first_b: Vec<_> = seen
        .iter()
        .filter(|(t, _)| *t > changed_at + first_b)
        .collect();
    let errors: Vec<_> = seen.iter().filter_map(|(_, r)| r.as_ref().err()).collect();
    println!(
        "table applied {applied_after:?} after the file changed; first new session on the new primary after {first_b:?}; \
         {} new sessions, {} errors {errors:?}",
        seen.len(),
        errors.len()
    );
    println!("the old session saw: {:?}", old_saw.lock().unwrap());
    assert!(seen
        .iter()
        .any(|(t, r)| *t < changed_at && r.as_ref().ok() == Some(&aid)));
    assert!(
        after_first_b
            .iter()
            .all(|(_, r)| r.as_ref().ok() == Some(&bid)),
        "{seen:?}"
    );
    // Generous: the file is polled every 100 ms in this test; the bound is 1 s.
    assert!(first_b < Duration::from_secs(1), "{first_b:?}");
    let old_lines = old_saw.lock().unwrap().clone();
    assert_eq!(old_lines.first().unwrap(), &format!("ok server_id={aid}"));
    assert!(
        old_lines.last().unwrap().starts_with("error"),
        "{old_lines:?}"
    );
    // Nothing left on the old primary.
    for _ in 0..50 {
        if backend_sessions(&a).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(backend_sessions(&a).await, 0);

    // A batch-job session (on the new primary) for the revocation check.
    let mut batch =
        mysql_async::Conn::new(opts(addr, "127.0.0.6", "shop/batch", None, Some("shop")))
            .await
            .unwrap();
    let _: Option<u8> = batch.query_first("SELECT 1").await.unwrap();

    // The batch job's task is gone: its open session is closed (--kick-revoked), a new
    // login is refused.
    let etag = proxy.table_etag().unwrap();
    write_table(
        &table_file,
        &MysqlTable {
            databases: vec![database(b.addr(), vec![])],
            jobs: vec![jobs[0].clone(), job("shop/batch", &[], Access::Rw, None)],
        },
    );
    wait_table_change(&proxy, &etag).await;
    let r: Result<Option<u8>, _> = batch.query_first("SELECT 1").await;
    println!("revoked session saw: {r:?}");
    assert!(r.is_err());
    let err = mysql_async::Conn::new(opts(addr, "127.0.0.6", "shop/batch", None, Some("shop")))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("Access denied"), "{err}");
    let logs = logs();
    assert!(logs.contains("job revoked"), "{logs}");
    cancel.cancel();
    proxy.wait().await;
}
