//! sysbench (libmariadb) through the proxy: oltp_read_only and oltp_read_write complete
//! without errors, logged in as a job from 127.0.0.1 (this host's address).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ocean_core::table::mysql::{Access, MysqlTable};

async fn sysbench(port: u16, args: &[&str]) -> String {
    let out = tokio::process::Command::new("sysbench")
        .args(args)
        .args([
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
            &format!("--mysql-port={port}"),
            "--mysql-user=shop/bench",
            "--mysql-password=bench-pw",
            "--mysql-db=shop",
            "--mysql-ssl=off",
            "--tables=2",
            "--table-size=2000",
            "--threads=4",
            "--time=3",
            "--report-interval=0",
        ])
        .output()
        .await
        .expect("cannot run sysbench: install the Debian package sysbench");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "sysbench {args:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_oltp_through_the_proxy() {
    log_buffer();
    let (db, _dir, table_file) = prepared_backend().await;
    write_table(
        &table_file,
        &MysqlTable {
            databases: vec![database(db.addr(), vec![])],
            jobs: vec![job(
                "shop/bench",
                &["192.0.2.77"],
                Access::Rw,
                Some("bench-pw"),
            )],
        },
    );
    let (proxy, cancel) = start_proxy(config(table_file)).await;
    let port = proxy.addr.port();
    sysbench(port, &["oltp_read_write", "prepare"]).await;
    for test in ["oltp_read_only", "oltp_read_write"] {
        let out = sysbench(port, &[test, "run"]).await;
        let line = |k: &str| {
            out.lines()
                .find(|l| l.contains(k))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        println!(
            "{test}: {} | {} | {}",
            line("queries:"),
            line("ignored errors:"),
            line("95th percentile:")
        );
        // sysbench retries its own transactions' deadlocks (1213) and lock wait timeouts
        // (1205) and counts them as "ignored errors"; any other error is FATAL.
        assert!(!out.contains("FATAL"), "{out}");
        assert!(line("queries:").contains("per sec"), "{out}");
    }
    // Which auth plugin sysbench's client library (libmariadb) answered with:
    let logs = logs();
    let login = logs
        .lines()
        .find(|l| l.contains("shop/bench") && l.contains("result=\"ok\""))
        .expect("no audit line for sysbench's logins");
    println!("sysbench login: {login}");
    assert!(login.contains("plugin mysql_native_password"), "{login}");
    sysbench(port, &["oltp_read_write", "cleanup"]).await;
    cancel.cancel();
    proxy.wait().await;
}
