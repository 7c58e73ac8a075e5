//! Per command family metrics: count, errors and latency, with handles registered once per
//! cluster so the data path does no registry lookups.

use std::time::Instant;

use metrics::{Counter, Histogram};

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
#[derive(Debug)]
pub struct FamilyMetrics {
    handles: Vec<Handles>,
}

impl FamilyMetrics {
    /// Registers the handles for `cluster`.
    pub fn new(cluster: &str) -> FamilyMetrics {
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
        FamilyMetrics { handles }
    }

    /// Counts one reply.
    pub fn record(&self, family: Family, started: Instant, reply: &[u8]) {
        self.record_at(family, started, Instant::now(), reply);
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
