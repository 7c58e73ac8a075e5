//! The router's own counters, answered to the `stats` command: shared by the listeners,
//! client connections and backend servers (so none of them imports another for it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Instant;

use bytes::BytesMut;

/// The router's own counters, for `stats`.
#[derive(Debug)]
pub struct RouterStats {
    started: Instant,
    /// Open client connections.
    pub curr_connections: AtomicU64,
    /// Client connections accepted.
    pub total_connections: AtomicU64,
    pub(crate) cmd_get: AtomicU64,
    pub(crate) cmd_set: AtomicU64,
    pub(crate) get_hits: AtomicU64,
    pub(crate) get_misses: AtomicU64,
    pub(crate) backend_errors: AtomicU64,
    /// Values stored in the cold set by a warm fill (WarmUpRoute).
    pub(crate) warm_fills: AtomicU64,
    /// Servers marked down now (summed over workers).
    pub servers_down: AtomicU64,
    /// Times a server was marked down.
    pub tko_events: AtomicU64,
    /// Tables applied (summed over workers).
    pub table_swaps: AtomicU64,
    /// Every worker's backend servers, for the status page; dropped servers fall out.
    servers: Mutex<Vec<Weak<dyn ServerStatus>>>,
}

/// A backend server as the status page sees it (upstream's `Server` implements this, so
/// that this module needs nothing from upstream).
pub trait ServerStatus: std::fmt::Debug + Send + Sync {
    /// Its pool, replica set and address.
    fn name(&self) -> (&str, &str, SocketAddr);
    /// Whether it is marked down (TKO).
    fn is_down(&self) -> bool;
}

/// One server over every worker: each worker has its own connections and TKO state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRow {
    pub pool: String,
    pub replica_set: String,
    pub addr: SocketAddr,
    /// Workers that have this server.
    pub workers: usize,
    /// Of those, the workers that have it marked down.
    pub down_in: usize,
}

impl Default for RouterStats {
    fn default() -> Self {
        RouterStats {
            started: Instant::now(),
            curr_connections: AtomicU64::new(0),
            total_connections: AtomicU64::new(0),
            cmd_get: AtomicU64::new(0),
            cmd_set: AtomicU64::new(0),
            get_hits: AtomicU64::new(0),
            get_misses: AtomicU64::new(0),
            backend_errors: AtomicU64::new(0),
            warm_fills: AtomicU64::new(0),
            servers_down: AtomicU64::new(0),
            tko_events: AtomicU64::new(0),
            table_swaps: AtomicU64::new(0),
            servers: Mutex::new(Vec::new()),
        }
    }
}

impl RouterStats {
    /// Lists `server` on the status page while it lives.
    pub fn register_server(&self, server: Weak<dyn ServerStatus>) {
        if let Ok(mut list) = self.servers.lock() {
            list.retain(|w| w.strong_count() > 0);
            list.push(server);
        }
    }

    /// The live servers, merged over workers, by pool, replica set and address.
    pub fn servers(&self) -> Vec<ServerRow> {
        let live: Vec<_> = match self.servers.lock() {
            Ok(mut list) => {
                list.retain(|w| w.strong_count() > 0);
                list.iter().filter_map(Weak::upgrade).collect()
            }
            Err(_) => return Vec::new(),
        };
        let mut rows: BTreeMap<(String, String, SocketAddr), (usize, usize)> = BTreeMap::new();
        for s in live {
            let (pool, set, addr) = s.name();
            let e = rows
                .entry((pool.to_string(), set.to_string(), addr))
                .or_default();
            e.0 += 1;
            e.1 += usize::from(s.is_down());
        }
        rows.into_iter()
            .map(
                |((pool, replica_set, addr), (workers, down_in))| ServerRow {
                    pool,
                    replica_set,
                    addr,
                    workers,
                    down_in,
                },
            )
            .collect()
    }

    /// The `stats` reply: `STAT <name> <value>` lines and `END`.
    pub(crate) fn render(&self, out: &mut BytesMut) {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let lines = [
            ("pid", u64::from(std::process::id())),
            ("uptime", self.started.elapsed().as_secs()),
            ("curr_connections", v(&self.curr_connections)),
            ("total_connections", v(&self.total_connections)),
            ("cmd_get", v(&self.cmd_get)),
            ("cmd_set", v(&self.cmd_set)),
            ("get_hits", v(&self.get_hits)),
            ("get_misses", v(&self.get_misses)),
            ("backend_errors", v(&self.backend_errors)),
            ("warm_fills", v(&self.warm_fills)),
            ("servers_down", v(&self.servers_down)),
            ("tko_events", v(&self.tko_events)),
            ("table_swaps", v(&self.table_swaps)),
        ];
        for (name, value) in lines {
            out.extend_from_slice(format!("STAT {name} {value}\r\n").as_bytes());
        }
        out.extend_from_slice(
            format!("STAT version {}\r\nEND\r\n", env!("CARGO_PKG_VERSION")).as_bytes(),
        );
    }
}

/// The prefix of every per-server series (`{pool, replica_set, server}` labels), removed
/// together when the server leaves the table.
pub const SERVER_METRICS: &str = "ocean_memcached_server_";

/// Describes the router's Prometheus metrics (`# HELP`); called once at start. The list is
/// docs/metrics.md's memcached-router section.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "ocean_memcached_server_requests_total",
        Unit::Count,
        "Requests sent to a backend server, per pool, replica set and server."
    );
    describe_counter!(
        "ocean_memcached_server_errors_total",
        Unit::Count,
        "Requests to a server that failed (connection lost, timeout), per pool, replica set and server."
    );
    describe_counter!(
        "ocean_memcached_server_hits_total",
        Unit::Count,
        "Keys a server returned to get-like requests, per pool, replica set and server."
    );
    describe_counter!(
        "ocean_memcached_server_misses_total",
        Unit::Count,
        "Keys a server did not have, per pool, replica set and server."
    );
    describe_histogram!(
        "ocean_memcached_server_latency_seconds",
        Unit::Seconds,
        "Time from sending a request to a server to its complete reply, per pool, replica set and server."
    );
    describe_gauge!(
        "ocean_memcached_server_up",
        Unit::Count,
        "1 while a server takes requests, 0 while it is marked down (TKO), per pool, replica set and server."
    );
    describe_counter!(
        "ocean_memcached_server_tko_total",
        Unit::Count,
        "Times a server was marked down after --tko-after consecutive failures, per pool, replica set and server."
    );
    describe_counter!(
        "ocean_memcached_table_swaps_total",
        Unit::Count,
        "Memcached tables applied."
    );
    describe_counter!(
        "ocean_memcached_client_closed_total",
        Unit::Count,
        "Client connections the router closed, per reason (idle, write_timeout)."
    );
    describe_counter!(
        "ocean_memcached_client_replies_dropped_total",
        Unit::Count,
        "Replies not delivered because the client was over its reply budget."
    );
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;

    #[derive(Debug)]
    struct Fake(SocketAddr, AtomicBool);

    impl ServerStatus for Fake {
        fn name(&self) -> (&str, &str, SocketAddr) {
            ("pages", "a", self.0)
        }
        fn is_down(&self) -> bool {
            self.1.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn servers_merge_over_workers_and_leave_when_dropped() {
        let stats = RouterStats::default();
        let addr: SocketAddr = "127.0.0.1:11211".parse().unwrap();
        let worker1 = Arc::new(Fake(addr, AtomicBool::new(false)));
        let worker2 = Arc::new(Fake(addr, AtomicBool::new(true)));
        let (w1, w2): (Weak<Fake>, Weak<Fake>) =
            (Arc::downgrade(&worker1), Arc::downgrade(&worker2));
        stats.register_server(w1);
        stats.register_server(w2);
        let rows = stats.servers();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].workers, rows[0].down_in), (2, 1));
        drop(worker2);
        assert_eq!(stats.servers()[0].down_in, 0);
        drop(worker1);
        assert!(stats.servers().is_empty());
    }
}
