//! The connect-heavy load of `benches/mysql.sh`: N clients each connect, run one point
//! select, and quit, in a loop, for a fixed time; prints connections per second and the
//! load tool's own CPU per connection. sysbench 1.0 cannot reconnect per transaction, and
//! this is the load a platform of short-lived task connections puts on a database.
//!
//! `cargo run --release -p ocean-mysql-proxy --example connect_load -- \
//!    [--mysql-async] ADDR USER PASSWORD SCHEMA [CLIENTS=16] [SECONDS=10] [QUERY]`
//!
//! QUERY is a text query with `{id}` replaced by 1..=1000 (default: sysbench's point
//! select on `sbtest1`).
//!
//! The default client is lean, as sysbench's C client is: the proxy's own backend login
//! (`upstream::login`: greeting, mysql_native_password or caching_sha2_password, OK), one
//! COM_QUERY whose result set is read to its end, COM_QUIT. Its cost per connection is
//! a fraction of a full driver's, so the figure measures the path to the database rather
//! than the load tool. `--mysql-async` uses the mysql_async driver instead: on connect it
//! also runs `SELECT @@max_allowed_packet, @@wait_timeout`, so every connection is two
//! queries, and its CPU per connection is several times higher (both are printed; see
//! benches/README.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mysql_async::prelude::*;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use ocean_core::table::mysql::Credentials;
use ocean_mysql_proxy::proto::{frame, Decoder};
use ocean_mysql_proxy::upstream::{self, BackendStream, ClientParams};

/// A result set row or column definition may be as long as a packet.
const REPLY: Decoder = Decoder::new(16 << 20);

/// What one connection needs to log in and run its query.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    creds: Credentials,
    schema: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let use_driver = args.first().is_some_and(|a| a == "--mysql-async");
    if use_driver {
        args.remove(0);
    }
    if args.len() < 4 {
        eprintln!(
            "usage: connect_load [--mysql-async] ADDR USER PASSWORD SCHEMA [CLIENTS] [SECONDS] [QUERY]"
        );
        std::process::exit(2);
    }
    let addr: SocketAddr = args[0].parse().expect("ADDR is host:port");
    let target = Target {
        addr,
        creds: Credentials {
            user: args[1].clone(),
            password: args[2].clone(),
        },
        schema: args[3].clone(),
    };
    let clients: usize = args.get(4).map_or(16, |s| s.parse().expect("CLIENTS"));
    let seconds: u64 = args.get(5).map_or(10, |s| s.parse().expect("SECONDS"));
    let query = args
        .get(6)
        .cloned()
        .unwrap_or_else(|| "SELECT c FROM sbtest1 WHERE id = {id}".into());
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(seconds);
    let cpu_before = cpu_seconds();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (target, done, errors) = (target.clone(), done.clone(), errors.clone());
            let query = query.clone();
            tokio::spawn(async move {
                let mut id = i as i64;
                while Instant::now() < end {
                    id = id % 1000 + 1;
                    let sql = query.replace("{id}", &id.to_string());
                    let result = if use_driver {
                        with_driver(&target, sql).await.map_err(|e| e.to_string())
                    } else {
                        lean(&target, &sql).await
                    };
                    match result {
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
    let cpu = cpu_seconds() - cpu_before;
    let n = done.load(Ordering::Relaxed);
    println!(
        "connections {n} errors {} seconds {took:.2} per_second {:.0} client {} client_cpu_us {:.1}",
        errors.load(Ordering::Relaxed),
        n as f64 / took,
        if use_driver { "mysql_async" } else { "lean" },
        cpu * 1e6 / n.max(1) as f64
    );
}

/// One connection through mysql_async.
async fn with_driver(t: &Target, sql: String) -> Result<(), mysql_async::Error> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(t.addr.ip().to_string())
        .tcp_port(t.addr.port())
        .user(Some(t.creds.user.clone()))
        .pass((!t.creds.password.is_empty()).then(|| t.creds.password.clone()))
        .db_name(Some(t.schema.clone()))
        .prefer_socket(false);
    let mut conn = mysql_async::Conn::new(opts).await?;
    conn.query_drop(sql).await?;
    conn.disconnect().await
}

/// One connection through the lean client: login, the query with its whole result set
/// read, COM_QUIT.
async fn lean(t: &Target, sql: &str) -> Result<(), String> {
    let client = ClientParams {
        capabilities: CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_LONG_PASSWORD
            | CapabilityFlags::CLIENT_TRANSACTIONS
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB,
        // utf8mb4_general_ci
        collation: 45,
        max_packet_size: 16 << 20,
        attributes: None,
        mariadb: MariadbCapabilities::empty(),
    };
    let backend = upstream::login(
        t.addr,
        &t.creds,
        Some(&t.schema),
        &client,
        CapabilityFlags::all(),
        None,
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut stream = backend.stream;
    let mut out = Vec::with_capacity(sql.len() + 8);
    let mut payload = Vec::with_capacity(sql.len() + 1);
    payload.push(0x03); // COM_QUERY
    payload.extend_from_slice(sql.as_bytes());
    frame::encode(0, &payload, &mut out);
    stream.send(&out).await.map_err(|e| e.to_string())?;
    read_result(&mut stream).await?;
    out.clear();
    frame::encode(0, &[0x01], &mut out); // COM_QUIT
    stream.send(&out).await.map_err(|e| e.to_string())
}

/// Reads a COM_QUERY's answer to its end: an OK, an ERR (returned as the error), or a
/// text result set (column count, definitions, EOF, rows, EOF).
async fn read_result(stream: &mut BackendStream) -> Result<(), String> {
    enum Next {
        Head,
        Columns(u64),
        ColumnsEof,
        Rows,
    }
    let mut next = Next::Head;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        while let Some(p) = REPLY.decode(&mut buf).map_err(|e| e.to_string())? {
            let first = p.payload.first().copied().unwrap_or(0);
            let eof = first == 0xfe && p.payload.len() < 9;
            if first == 0xff {
                return Err(format!(
                    "query refused: {}",
                    String::from_utf8_lossy(p.payload.get(9..).unwrap_or_default())
                ));
            }
            next = match next {
                Next::Head if first == 0x00 => return Ok(()),
                Next::Head => match first {
                    n @ 1..=0xfa => Next::Columns(u64::from(n)),
                    _ => return Err(format!("unexpected result set head {first:#x}")),
                },
                Next::Columns(1) => Next::ColumnsEof,
                Next::Columns(n) => Next::Columns(n - 1),
                Next::ColumnsEof if eof => Next::Rows,
                Next::ColumnsEof => return Err("no EOF after the column definitions".into()),
                Next::Rows if eof => return Ok(()),
                Next::Rows => Next::Rows,
            };
        }
        if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("the server closed mid-result".into());
        }
    }
}

/// This process's CPU time so far (user + system), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // /proc reports clock ticks of USER_HZ, 100 on Linux (what `getconf CLK_TCK` prints).
    ticks as f64 / 100.0
}
