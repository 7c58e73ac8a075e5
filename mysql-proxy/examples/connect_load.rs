//! The connect-heavy load of `benches/mysql.sh`: N clients each connect, run one point
//! select, and quit, in a loop, for a fixed time; prints connections per second. sysbench
//! 1.0 cannot reconnect per transaction, and this is the load a platform of short-lived
//! task connections puts on a database.
//!
//! `cargo run --release -p ocean-mysql-proxy --example connect_load -- \
//!    ADDR USER PASSWORD SCHEMA [CLIENTS=16] [SECONDS=10] [QUERY]`
//!
//! QUERY is a text query with `{id}` replaced by 1..=1000 (default: sysbench's point
//! select on `sbtest1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: connect_load ADDR USER PASSWORD SCHEMA [CLIENTS] [SECONDS] [QUERY]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[0].parse().expect("ADDR is host:port");
    let (user, password, schema) = (args[1].clone(), args[2].clone(), args[3].clone());
    let clients: usize = args.get(4).map_or(16, |s| s.parse().expect("CLIENTS"));
    let seconds: u64 = args.get(5).map_or(10, |s| s.parse().expect("SECONDS"));
    let query = args
        .get(6)
        .cloned()
        .unwrap_or_else(|| "SELECT c FROM sbtest1 WHERE id = {id}".into());
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(user))
        .pass((!password.is_empty()).then_some(password))
        .db_name(Some(schema))
        .prefer_socket(false);
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (opts, done, errors) = (opts.clone(), done.clone(), errors.clone());
            let query = query.clone();
            tokio::spawn(async move {
                let mut id = i as i64;
                while Instant::now() < end {
                    id = id % 1000 + 1;
                    let sql = query.replace("{id}", &id.to_string());
                    let one = async {
                        let mut conn = mysql_async::Conn::new(opts.clone()).await?;
                        conn.query_drop(sql).await?;
                        conn.disconnect().await
                    };
                    match one.await {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("connect_load: {e}");
                            }
                            0
                        }
                    };
                }
            })
        })
        .collect();
    let start = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let took = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!(
        "connections {n} errors {} seconds {took:.2} per_second {:.0}",
        errors.load(Ordering::Relaxed),
        n as f64 / took
    );
}
