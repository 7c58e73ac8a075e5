//! `/metrics` people can use (issue 13): backend login time is a Prometheus histogram per
//! database, commands and their errors are counted per job, database and kind, every
//! metric has `# HELP`, and a database or job removed from the table takes its series with
//! it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use mysql_async::prelude::*;
use ocean_core::table::mysql::{Access, Grant, MysqlTable};
use ocean_tests::metrics::{scrape, series, undescribed};

const MAIN: &str = "/dept/shop/main";
const OLD: &str = "/dept/shop/old";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_histograms_help_and_removed_databases() {
    let (db, _dir, table_file) = prepared_backend().await;
    let mut old_db = database(db.addr(), vec![]);
    old_db.name = OLD.into();
    old_db.schema = "other".into();
    let mut old_job = job("shop/old", &["127.0.0.3"], Access::Rw, None);
    old_job.grants = vec![Grant {
        database: OLD.into(),
        access: Access::Rw,
    }];
    let web = job("shop/web", &["127.0.0.2"], Access::Rw, None);
    write_table(
        &table_file,
        &MysqlTable {
            databases: vec![database(db.addr(), vec![]), old_db],
            jobs: vec![web.clone(), old_job],
        },
    );
    let mut cfg = config(table_file.clone());
    cfg.admin = Some("127.0.0.1:0".parse().unwrap());
    let (proxy, cancel) = start_proxy(cfg).await;
    let admin = proxy.admin_addr.unwrap();

    for (ip, job, schema) in [
        ("127.0.0.2", "shop/web", "shop"),
        ("127.0.0.3", "shop/old", "other"),
    ] {
        let mut c = mysql_async::Conn::new(opts(proxy.addr, ip, job, None, Some(schema)))
            .await
            .unwrap();
        let one: Option<u8> = c.query_first("SELECT 1").await.unwrap();
        assert_eq!(one, Some(1));
        // A prepared statement: one prepare, then executes.
        for _ in 0..3 {
            let two: Option<u8> = c.exec_first("SELECT ? + 1", (1,)).await.unwrap();
            assert_eq!(two, Some(2));
        }
        // Errors the server answers: a missing table, a statement that does not parse.
        let missing = c.query_drop("SELECT * FROM no_such_table").await;
        assert!(missing.is_err(), "{missing:?}");
        let unparsed = c.prep("SELEC ?").await;
        assert!(unparsed.is_err(), "{unparsed:?}");
        c.disconnect().await.unwrap();
    }

    let text = scrape(admin).await.unwrap();
    assert_eq!(undescribed(&text), Vec::<String>::new(), "{text}");
    assert!(text.contains("# TYPE ocean_mysql_backend_login_seconds histogram\n"));
    for database in [MAIN, OLD] {
        let first = format!(
            "ocean_mysql_backend_login_seconds_bucket{{database=\"{database}\",le=\"0.0001\"}}"
        );
        assert!(text.contains(&first), "{first} missing:\n{text}");
        let count = format!("ocean_mysql_backend_login_seconds_count{{database=\"{database}\"}} 1");
        assert!(text.contains(&count), "{count} missing:\n{text}");
    }
    // Query latency per job, database and command, in seconds buckets up to 10 s.
    assert!(text.contains("# TYPE ocean_mysql_query_seconds histogram\n"));
    let web_main = format!("job=\"shop/web\",database=\"{MAIN}\"");
    for (command, at_least) in [("query", 1.0), ("prepare", 1.0), ("execute", 3.0)] {
        let labels = format!("{web_main},command=\"{command}\"");
        let count = format!("ocean_mysql_query_seconds_count{{{labels}}} ");
        let line = text
            .lines()
            .find(|l| l.starts_with(&count))
            .unwrap_or_else(|| panic!("{count} missing:\n{text}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= at_least, "{line}");
        let top = format!("ocean_mysql_query_seconds_bucket{{{labels},le=\"10\"}}");
        assert!(text.contains(&top), "{top} missing:\n{text}");
    }
    // Commands the server refused, per kind; the executes all succeeded.
    for command in ["query", "prepare"] {
        let line =
            format!("ocean_mysql_query_errors_total{{{web_main},command=\"{command}\"}} 1\n");
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
    assert!(series(
        &text,
        "ocean_mysql_query_errors_total",
        &["command=\"execute\""]
    )
    .is_empty());
    let old_labels = format!("database=\"{OLD}\"");
    assert!(!series(&text, "ocean_mysql_query_seconds", &[&old_labels]).is_empty());
    assert!(!series(&text, "ocean_mysql_query_errors_total", &[&old_labels]).is_empty());
    assert!(!series(&text, "ocean_mysql_bytes_total", &[&old_labels]).is_empty());
    assert!(!series(&text, "ocean_mysql_sessions", &[&old_labels]).is_empty());
    let old_job_label = "job=\"shop/old\"";
    assert!(!series(&text, "ocean_mysql_logins_total", &[old_job_label]).is_empty());

    // The old database and its job leave the table: their series go, the others stay.
    let etag = proxy.table_etag().unwrap();
    write_table(
        &table_file,
        &MysqlTable {
            databases: vec![database(db.addr(), vec![])],
            jobs: vec![web],
        },
    );
    wait_table_change(&proxy, &etag).await;
    let text = scrape(admin).await.unwrap();
    let left: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&old_labels) || l.contains(old_job_label))
        .collect();
    assert!(
        left.is_empty(),
        "series of the removed database or job remain: {left:#?}"
    );
    let main_labels = format!("database=\"{MAIN}\"");
    assert!(!series(&text, "ocean_mysql_backend_login_seconds", &[&main_labels]).is_empty());
    assert!(!series(&text, "ocean_mysql_bytes_total", &[&main_labels]).is_empty());
    assert!(!series(&text, "ocean_mysql_query_errors_total", &[&main_labels]).is_empty());
    assert!(!series(&text, "ocean_mysql_logins_total", &["job=\"shop/web\""]).is_empty());
    assert_eq!(undescribed(&text), Vec::<String>::new());

    cancel.cancel();
    proxy.wait().await;
}
