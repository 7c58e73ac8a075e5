//! Slot coverage for `/healthz` and `/metrics`: which slots of each cluster have no
//! reachable master, over every worker.
//!
//! Each worker keeps its own [`Cluster`] (map, connections, refresher), so each has its own
//! view; a slot is uncovered when any worker's view says so (the worker that saw a
//! connection fail knows first, and its refresher probes until it reconnects). What
//! "reachable" means is in [`crate::upstream::cluster`]'s module docs.
//!
//! `/healthz` answers 503 `uncovered` naming each cluster's uncovered ranges (`0-5460`)
//! and its unreachable masters; `ocean_redis_slots_uncovered{cluster}` is the count.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use ocean_core::admin::Health;
use tokio_util::sync::CancellationToken;

use crate::slot::SLOTS;
use crate::upstream::{Cluster, Failure};

/// The `/healthz` status when a slot has no reachable master (answered with 503).
pub const UNCOVERED: &str = "uncovered";

/// Every worker's clusters, for coverage reports.
#[derive(Debug, Default)]
pub struct Coverage {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// A cluster counts while its token is live (it leaves the table: cancelled).
    clusters: Vec<(CancellationToken, Weak<Cluster>)>,
    /// Clusters whose gauge was set, so a cluster that left is set back to 0.
    reported: HashSet<String>,
}

/// One cluster's coverage, merged over workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCoverage {
    /// The cluster's name (`standalone` outside table mode).
    pub name: String,
    /// Whether some worker has a slot map yet.
    pub mapped: bool,
    /// Slots without a reachable master.
    pub uncovered: usize,
    /// Those slots as inclusive ranges, ascending.
    pub ranges: Vec<(u16, u16)>,
    /// Masters counted unreachable, with their failure (the earliest seen by any worker).
    pub down: Vec<(SocketAddr, Failure)>,
}

impl Coverage {
    /// An empty registry.
    pub fn new() -> Arc<Coverage> {
        Arc::new(Coverage::default())
    }

    /// Counts `cluster` (one worker's) until `live` is cancelled or the cluster is dropped.
    pub fn register(&self, cluster: &Arc<Cluster>, live: CancellationToken) {
        if let Ok(mut inner) = self.inner.lock() {
            inner
                .clusters
                .retain(|(t, c)| !t.is_cancelled() && c.strong_count() > 0);
            inner.clusters.push((live, Arc::downgrade(cluster)));
        }
    }

    /// Each cluster's coverage now, sorted by name; sets `ocean_redis_slots_uncovered`.
    pub fn report(&self) -> Vec<ClusterCoverage> {
        let now = Instant::now();
        let clusters: Vec<Arc<Cluster>> = match self.inner.lock() {
            Ok(mut inner) => {
                inner
                    .clusters
                    .retain(|(t, c)| !t.is_cancelled() && c.strong_count() > 0);
                inner
                    .clusters
                    .iter()
                    .filter_map(|(_, c)| c.upgrade())
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        // name -> (mapped, uncovered slots, down masters)
        type Merged = (bool, Vec<bool>, BTreeMap<SocketAddr, Failure>);
        let mut merged: BTreeMap<String, Merged> = BTreeMap::new();
        for c in &clusters {
            let map = c.map();
            let (slots, down) = map.uncovered(now, c.opts.down_after);
            let e = merged
                .entry(c.name.clone())
                .or_insert_with(|| (false, vec![false; usize::from(SLOTS)], BTreeMap::new()));
            // A sharded pool's map is built from its servers, never fetched.
            e.0 |=
                c.refreshes.load(std::sync::atomic::Ordering::Relaxed) > 0 || map.shards.is_some();
            for (acc, s) in e.1.iter_mut().zip(slots) {
                *acc |= s;
            }
            for (addr, f) in down {
                let keep = e.2.get(&addr).is_some_and(|old| old.since <= f.since);
                if !keep {
                    e.2.insert(addr, f);
                }
            }
        }
        let out: Vec<ClusterCoverage> = merged
            .into_iter()
            .map(|(name, (mapped, slots, down))| ClusterCoverage {
                name,
                mapped,
                uncovered: slots.iter().filter(|&&s| s).count(),
                ranges: ranges(&slots),
                down: down.into_iter().collect(),
            })
            .collect();
        if let Ok(mut inner) = self.inner.lock() {
            let now_names: HashSet<String> = out.iter().map(|c| c.name.clone()).collect();
            for gone in inner.reported.difference(&now_names) {
                // The cluster left the table: its series goes (issue 13), not a stale 0.
                ocean_core::metrics::remove_series(
                    "ocean_redis_slots_uncovered",
                    &[("cluster", gone.as_str())],
                );
            }
            for c in &out {
                metrics::gauge!("ocean_redis_slots_uncovered", "cluster" => c.name.clone())
                    .set(c.uncovered as f64);
            }
            inner.reported = now_names;
        }
        out
    }
}

/// The `true` runs of `slots` as inclusive ranges.
pub fn ranges(slots: &[bool]) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &s) in slots.iter().enumerate() {
        let Ok(i) = u16::try_from(i) else { break };
        match (s, start) {
            (true, None) => start = Some(i),
            (false, Some(b)) => {
                out.push((b, i - 1));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(b) = start {
        let last = u16::try_from(slots.len().saturating_sub(1)).unwrap_or(u16::MAX);
        out.push((b, last));
    }
    out
}

/// `0-5460,10923-16383` (a single slot as `42`).
pub fn format_ranges(ranges: &[(u16, u16)]) -> String {
    let mut s = String::new();
    for (i, (a, b)) in ranges.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        // Writing to a String cannot fail.
        let _ = if a == b {
            write!(s, "{a}")
        } else {
            write!(s, "{a}-{b}")
        };
    }
    s
}

/// The `/healthz` answer: `table`'s when it is `starting` or every slot is covered;
/// otherwise [`UNCOVERED`] (503), naming per cluster the uncovered ranges and the
/// unreachable masters, after the table's own reason if it has one (`stale`).
pub fn combine(table: Health, coverage: &[ClusterCoverage]) -> Health {
    if table.status == "starting" {
        return table;
    }
    let bad: Vec<&ClusterCoverage> = coverage.iter().filter(|c| c.uncovered > 0).collect();
    if bad.is_empty() {
        return table;
    }
    let now = Instant::now();
    let mut reason = String::new();
    if let Some(r) = &table.reason {
        // Writing to a String cannot fail.
        let _ = write!(reason, "table {}: {r}; ", table.status);
    }
    for (i, c) in bad.iter().enumerate() {
        if i > 0 {
            reason.push_str("; ");
        }
        let _ = write!(
            reason,
            "cluster {}: {} slots without a reachable master: {}",
            c.name,
            c.uncovered,
            format_ranges(&c.ranges)
        );
        if !c.mapped {
            reason.push_str(" (no slot map yet)");
        }
        for (addr, f) in &c.down {
            let _ = write!(
                reason,
                " ({addr} unreachable for {} ms: {})",
                now.saturating_duration_since(f.since).as_millis(),
                f.error
            );
        }
    }
    Health {
        status: UNCOVERED,
        reason: Some(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_their_text() {
        let mut slots = vec![false; 16384];
        for s in slots.iter_mut().take(5461) {
            *s = true;
        }
        slots[7000] = true;
        slots[16383] = true;
        let r = ranges(&slots);
        assert_eq!(r, vec![(0, 5460), (7000, 7000), (16383, 16383)]);
        assert_eq!(format_ranges(&r), "0-5460,7000,16383");
        assert_eq!(ranges(&[true; 4]), vec![(0, 3)]);
        assert!(ranges(&[false; 4]).is_empty());
    }

    fn cov(name: &str, ranges: Vec<(u16, u16)>) -> ClusterCoverage {
        ClusterCoverage {
            name: name.into(),
            mapped: true,
            uncovered: ranges.iter().map(|(a, b)| usize::from(b - a) + 1).sum(),
            ranges,
            down: Vec::new(),
        }
    }

    #[test]
    fn table_health_combined_with_coverage() {
        let ok = Health {
            status: "ok",
            reason: None,
        };
        let starting = Health {
            status: "starting",
            reason: Some("no table yet".into()),
        };
        let stale = Health {
            status: "stale",
            reason: Some("control unreachable".into()),
        };
        let covered = [cov("a", vec![])];
        let holes = [cov("a", vec![]), cov("b", vec![(0, 5460)])];
        assert_eq!(combine(ok.clone(), &covered).status, "ok");
        assert_eq!(combine(starting.clone(), &holes).status, "starting");
        assert_eq!(combine(stale.clone(), &covered).status, "stale");
        let h = combine(stale, &holes);
        assert_eq!(h.status, UNCOVERED);
        assert_eq!(
            h.reason.as_deref(),
            Some(
                "table stale: control unreachable; \
                 cluster b: 5461 slots without a reachable master: 0-5460"
            )
        );
        let h = combine(ok, &holes);
        assert!(!h.serving());
    }
}
