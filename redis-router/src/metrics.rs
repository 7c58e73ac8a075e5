//! Per command family metrics: count, errors and latency, with handles registered once per
//! cluster so the data path does no registry lookups.

use std::time::Instant;

use metrics::{Counter, Histogram};
use ocean_core::metrics::SeriesLease;

use crate::command::{CommandSpec, Flags, Split};

/// How a command is handled, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Single-slot reads.
    Read,
    /// Single-slot writes.
    Write,
    /// Commands split by slot (MGET, MSET, DEL, ...).
    MultiKey,
    /// Blocking commands on a dedicated connection.
    Blocking,
    /// Pub/sub.
    PubSub,
    /// MULTI/EXEC/WATCH.
    Transaction,
    /// Commands run on every master (SCAN, KEYS, DBSIZE, ...).
    ClusterWide,
    /// Answered by the router.
    Local,
    /// Anything else.
    Other,
}

const FAMILIES: [(Family, &str); 9] = [
    (Family::Read, "read"),
    (Family::Write, "write"),
    (Family::MultiKey, "multikey"),
    (Family::Blocking, "blocking"),
    (Family::PubSub, "pubsub"),
    (Family::Transaction, "transaction"),
    (Family::ClusterWide, "cluster_wide"),
    (Family::Local, "local"),
    (Family::Other, "other"),
];

impl Family {
    /// The family of a table entry.
    pub fn of(spec: &CommandSpec) -> Family {
        let f = spec.flags;
        if f.contains(Flags::BLOCKING) {
            Family::Blocking
        } else if f.contains(Flags::PUBSUB) {
            Family::PubSub
        } else if f.contains(Flags::TRANSACTION) {
            Family::Transaction
        } else if f.contains(Flags::ALL_NODES) {
            Family::ClusterWide
        } else if f.contains(Flags::PROXY) {
            Family::Local
        } else if spec.split != Split::SameSlot {
            Family::MultiKey
        } else if f.contains(Flags::WRITE) {
            Family::Write
        } else if f.contains(Flags::READONLY) {
            Family::Read
        } else {
            Family::Other
        }
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        FAMILIES
            .iter()
            .find(|(f, _)| *f == self)
            .map(|(_, l)| *l)
            .unwrap_or("other")
    }
}

#[derive(Debug)]
struct Handles {
    count: Counter,
    errors: Counter,
    latency: Histogram,
}

/// Handles for every family of one cluster.
///
/// Every worker thread serving the cluster holds one; the cluster's `ocean_redis_command*`
/// series are deleted when the last is dropped (the cluster left the table and its
/// clients are gone), not before: a worker still draining keeps them.
#[derive(Debug)]
pub struct FamilyMetrics {
    handles: Vec<Handles>,
    _series: SeriesLease,
}

/// The prefix of the per-cluster command series.
const COMMAND_METRICS: &str = "ocean_redis_command";

impl FamilyMetrics {
    /// Registers the handles for `cluster`.
    pub fn new(cluster: &str) -> FamilyMetrics {
        // The lease first: see `SeriesLease`.
        let series = SeriesLease::new(COMMAND_METRICS, &[("cluster", cluster)]);
        let handles = FAMILIES
            .iter()
            .map(|(_, label)| {
                let labels = [
                    ("cluster", cluster.to_string()),
                    ("family", label.to_string()),
                ];
                Handles {
                    count: metrics::counter!("ocean_redis_commands_total", &labels),
                    errors: metrics::counter!("ocean_redis_command_errors_total", &labels),
                    latency: metrics::histogram!("ocean_redis_command_seconds", &labels),
                }
            })
            .collect();
        FamilyMetrics {
            handles,
            _series: series,
        }
    }

    /// Counts one reply.
    pub fn record(&self, family: Family, started: Instant, reply: &[u8]) {
        self.record_at(family, started, Instant::now(), reply);
    }

    /// Counts a batch's replies, all complete at `now` and none an error: one update of
    /// each handle per run of requests of one family, rather than one per request.
    pub fn record_batch_at(
        &self,
        families: impl IntoIterator<Item = Family>,
        started: Instant,
        now: Instant,
    ) {
        let took = now.saturating_duration_since(started).as_secs_f64();
        let mut run: Option<(Family, usize)> = None;
        for family in families {
            match &mut run {
                Some((f, n)) if *f == family => *n += 1,
                _ => {
                    if let Some((f, n)) = run.replace((family, 1)) {
                        self.record_run(f, n, took);
                    }
                }
            }
        }
        if let Some((f, n)) = run {
            self.record_run(f, n, took);
        }
    }

    fn record_run(&self, family: Family, n: usize, took: f64) {
        let i = FAMILIES.iter().position(|(f, _)| *f == family).unwrap_or(0);
        if let Some(h) = self.handles.get(i) {
            h.count.increment(n as u64);
            h.latency.record_many(took, n);
        }
    }

    /// Counts one reply that was complete at `now` (callers batching clock reads).
    pub fn record_at(&self, family: Family, started: Instant, now: Instant, reply: &[u8]) {
        let i = FAMILIES.iter().position(|(f, _)| *f == family).unwrap_or(0);
        if let Some(h) = self.handles.get(i) {
            h.count.increment(1);
            if reply.first() == Some(&b'-') {
                h.errors.increment(1);
            }
            h.latency
                .record(now.saturating_duration_since(started).as_secs_f64());
        }
    }
}

/// Describes the router's Prometheus metrics (`# HELP`); called once at start. The list is
/// docs/metrics.md's redis-router section.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "ocean_redis_commands_total",
        Unit::Count,
        "Commands answered, per cluster and command family."
    );
    describe_counter!(
        "ocean_redis_command_errors_total",
        Unit::Count,
        "Commands answered with an error reply, per cluster and command family."
    );
    describe_histogram!(
        "ocean_redis_command_seconds",
        Unit::Seconds,
        "Time from reading a command to its complete reply, per cluster and command family."
    );
    describe_counter!(
        "ocean_redis_redirects_total",
        Unit::Count,
        "MOVED and ASK redirections the router followed, per kind."
    );
    describe_counter!(
        "ocean_redis_retries_total",
        Unit::Count,
        "Commands sent again (not sent at all, or read-only on a lost connection) within their deadline."
    );
    describe_counter!(
        "ocean_redis_split_subcommands_total",
        Unit::Count,
        "Per-slot subcommands multi-key commands were split into."
    );
    describe_counter!(
        "ocean_redis_slot_refreshes_total",
        Unit::Count,
        "Slot map refreshes (CLUSTER SLOTS) that succeeded."
    );
    describe_counter!(
        "ocean_redis_slot_refresh_errors_total",
        Unit::Count,
        "Slot map refreshes that failed."
    );
    describe_gauge!(
        "ocean_redis_slots_uncovered",
        Unit::Count,
        "Slots without a reachable master, per cluster."
    );
    describe_gauge!(
        "ocean_redis_backend_connections",
        Unit::Count,
        "Open backend connections, per kind (shared, dedicated)."
    );
    describe_counter!(
        "ocean_redis_backend_connects_total",
        Unit::Count,
        "Backend connections opened, per kind (shared, dedicated)."
    );
    describe_gauge!(
        "ocean_redis_client_connections",
        Unit::Count,
        "Open client connections."
    );
    describe_counter!(
        "ocean_redis_clients_closed_total",
        Unit::Count,
        "Client connections the router closed, per reason (idle, write_timeout)."
    );
    describe_counter!(
        "ocean_redis_client_read_pauses_total",
        Unit::Count,
        "Times the router stopped reading a client over its in-flight or reply budget."
    );
    describe_counter!(
        "ocean_redis_protocol_errors_total",
        Unit::Count,
        "Client connections closed for a RESP protocol error."
    );
    describe_counter!(
        "ocean_redis_tls_handshake_errors_total",
        Unit::Count,
        "Client TLS handshakes that failed or timed out."
    );
}
