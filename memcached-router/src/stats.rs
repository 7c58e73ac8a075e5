//! The router's own counters, answered to the `stats` command: shared by the listeners,
//! client connections and backend servers (so none of them imports another for it).

use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Servers marked down now (summed over workers).
    pub servers_down: AtomicU64,
    /// Times a server was marked down.
    pub tko_events: AtomicU64,
    /// Tables applied (summed over workers).
    pub table_swaps: AtomicU64,
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
            servers_down: AtomicU64::new(0),
            tko_events: AtomicU64::new(0),
            table_swaps: AtomicU64::new(0),
        }
    }
}

impl RouterStats {
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
