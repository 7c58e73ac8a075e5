//! The drop guard: a pool (a Redis cluster, a memcached pool, a MySQL database or job, an
//! IPVS service; for DNS the whole zone) that would lose more than `max_drop` of its
//! backends at once, or all of them, keeps its last published version until the drop has
//! persisted for `drop_hold`. The rest of the table is published as derived.
//!
//! Marathon sometimes answers with too little (a leader election, a half-loaded state, an
//! empty list); proxies must not empty their pools because of it. A real scale-down that
//! persists is published after the hold.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ocean_core::table::lvs::{LvsTable, Protocol};
use ocean_core::table::{DnsTable, MemcachedTable, MysqlTable, RedisTable, Table, TableKind};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardConfig {
    /// Fraction of backends (0..1) a pool may lose at once.
    pub max_drop: f64,
    /// How long a larger drop must persist before it is published.
    pub drop_hold: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            max_drop: 0.5,
            drop_hold: Duration::from_secs(120),
        }
    }
}

/// A pool being held, for logs, metrics and `/v1/problems`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Held {
    pub table: TableKind,
    pub pool: String,
    pub published_backends: usize,
    pub candidate_backends: usize,
    pub held_for_s: u64,
    pub publishes_in_s: u64,
    pub message: String,
}

/// A table split into pools, each with a backend count, whose pools can be taken from an
/// older version of the table.
pub trait Pools: Table {
    /// Pool key -> backend count.
    fn pools(&self) -> BTreeMap<String, usize>;
    /// Puts pool `key` of `old` into `self` (replacing or adding it), keeping the table's order.
    fn keep_pool(&mut self, old: &Self, key: &str);
}

/// What the guard lets through: the table to publish and the pools it held back.
#[derive(Debug)]
pub struct Guarded<T> {
    pub table: T,
    pub held: Vec<Held>,
}

#[derive(Debug, Default)]
pub struct Guard {
    config: GuardConfig,
    since: BTreeMap<(TableKind, String), Instant>,
}

impl Guard {
    pub fn new(config: GuardConfig) -> Self {
        Guard {
            config,
            since: BTreeMap::new(),
        }
    }

    /// Takes new settings (a reload of control.toml); pools being held keep their start time,
    /// so a shorter `drop_hold` can release them at the next sync.
    pub fn reconfigure(&mut self, config: GuardConfig) {
        self.config = config;
    }

    /// Guards one candidate table against the published one (`None`: nothing published yet,
    /// anything goes).
    pub fn apply<T: Pools>(
        &mut self,
        published: Option<&T>,
        candidate: T,
        now: Instant,
    ) -> Guarded<T> {
        let kind = T::KIND;
        let Some(old) = published else {
            self.since.retain(|(k, _), _| *k != kind);
            return Guarded {
                table: candidate,
                held: Vec::new(),
            };
        };
        let new_pools = candidate.pools();
        let mut table = candidate;
        let mut held = Vec::new();
        let mut suspicious = BTreeSet::new();
        for (key, published) in old.pools().into_iter().filter(|(_, n)| *n > 0) {
            let count = new_pools.get(&key).copied().unwrap_or(0);
            let drop = published.saturating_sub(count) as f64 / published as f64;
            if count > 0 && drop <= self.config.max_drop {
                continue;
            }
            suspicious.insert(key.clone());
            let since = *self.since.entry((kind, key.clone())).or_insert(now);
            let held_for = now.saturating_duration_since(since);
            if held_for >= self.config.drop_hold {
                tracing::warn!(table = %kind, pool = %key, published, candidate = count, held_s = held_for.as_secs(), "drop persisted past the hold; publishing it");
                suspicious.remove(&key);
                continue;
            }
            let publishes_in = self.config.drop_hold - held_for;
            table.keep_pool(old, &key);
            held.push(Held {
                table: kind,
                pool: key.clone(),
                published_backends: published,
                candidate_backends: count,
                held_for_s: held_for.as_secs(),
                publishes_in_s: publishes_in.as_secs(),
                message: format!(
                    "{kind} table held: {key} would drop {:.0}% of its backends ({published} -> {count}, limit {:.0}%); \
                     keeping the last good version, publishing in {}s if Marathon still says so",
                    drop * 100.0,
                    self.config.max_drop * 100.0,
                    publishes_in.as_secs()
                ),
            });
        }
        self.since
            .retain(|(k, key), _| *k != kind || suspicious.contains(key));
        // Pools kept from the old table may clash with the new one (a port now used by
        // another cluster, a grant of a database that is gone): then hold the whole table.
        if !held.is_empty() {
            if let Err(e) = table.validate() {
                let pools: Vec<String> = held.iter().map(|h| h.pool.clone()).collect();
                held.push(Held {
                    table: kind,
                    pool: "*".into(),
                    published_backends: old.backend_count(),
                    candidate_backends: new_pools.values().sum(),
                    held_for_s: 0,
                    publishes_in_s: held.iter().map(|h| h.publishes_in_s).max().unwrap_or(0),
                    message: format!(
                        "{kind} table held whole: keeping held pools ({}) in the new table makes it invalid: {e}",
                        pools.join(", ")
                    ),
                });
                table = old.clone();
            }
        }
        Guarded { table, held }
    }
}

/// Replaces or inserts the item of `old` whose key is `key`, or keeps nothing when `old`
/// has none; then sorts by key.
fn keep_by_key<I: Clone, K: Ord>(items: &mut Vec<I>, old: &[I], key: impl Fn(&I) -> K, want: &K) {
    items.retain(|i| key(i) != *want);
    if let Some(o) = old.iter().find(|i| key(i) == *want) {
        items.push(o.clone());
    }
    items.sort_by_key(&key);
}

impl Pools for DnsTable {
    // The zone is one pool: names come and go with every deployment, and a name without
    // records is what a scaled-down app should get.
    fn pools(&self) -> BTreeMap<String, usize> {
        BTreeMap::from([("zone".to_string(), self.backend_count())])
    }
    fn keep_pool(&mut self, old: &Self, _key: &str) {
        *self = old.clone();
    }
}

impl Pools for RedisTable {
    fn pools(&self) -> BTreeMap<String, usize> {
        self.clusters
            .iter()
            .map(|c| (format!("cluster {}", c.name), c.nodes.len()))
            .collect()
    }
    fn keep_pool(&mut self, old: &Self, key: &str) {
        let name = key.trim_start_matches("cluster ").to_string();
        keep_by_key(&mut self.clusters, &old.clusters, |c| c.name.clone(), &name);
    }
}

impl Pools for MemcachedTable {
    fn pools(&self) -> BTreeMap<String, usize> {
        self.pools
            .iter()
            .map(|p| {
                (
                    format!("pool {}", p.name),
                    p.replicas.iter().map(|r| r.servers.len()).sum(),
                )
            })
            .collect()
    }
    fn keep_pool(&mut self, old: &Self, key: &str) {
        let name = key.trim_start_matches("pool ").to_string();
        keep_by_key(&mut self.pools, &old.pools, |p| p.name.clone(), &name);
    }
}

impl Pools for MysqlTable {
    fn pools(&self) -> BTreeMap<String, usize> {
        let dbs = self.databases.iter().map(|d| {
            (
                format!("database {}", d.name),
                usize::from(d.primary.is_some()) + d.replicas.len(),
            )
        });
        let jobs = self
            .jobs
            .iter()
            .map(|j| (format!("job {}", j.name), j.ips.len()));
        dbs.chain(jobs).collect()
    }
    fn keep_pool(&mut self, old: &Self, key: &str) {
        if let Some(name) = key.strip_prefix("database ") {
            keep_by_key(
                &mut self.databases,
                &old.databases,
                |d| d.name.clone(),
                &name.to_string(),
            );
        } else if let Some(name) = key.strip_prefix("job ") {
            keep_by_key(
                &mut self.jobs,
                &old.jobs,
                |j| j.name.clone(),
                &name.to_string(),
            );
        }
    }
}

fn service_key(vip: std::net::IpAddr, port: u16, protocol: Protocol) -> String {
    let proto = match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    format!("service {}/{proto}", std::net::SocketAddr::new(vip, port))
}

impl Pools for LvsTable {
    fn pools(&self) -> BTreeMap<String, usize> {
        self.services
            .iter()
            .map(|s| (service_key(s.vip, s.port, s.protocol), s.reals.len()))
            .collect()
    }
    fn keep_pool(&mut self, old: &Self, key: &str) {
        self.services
            .retain(|s| service_key(s.vip, s.port, s.protocol) != key);
        if let Some(o) = old
            .services
            .iter()
            .find(|s| service_key(s.vip, s.port, s.protocol) == key)
        {
            self.services.push(o.clone());
        }
        self.services.sort_by_key(|s| (s.vip, s.port, s.protocol));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ocean_core::table::redis::RedisCluster;

    fn redis(clusters: &[(&str, u16, usize)]) -> RedisTable {
        RedisTable {
            clusters: clusters
                .iter()
                .map(|(name, port, n)| RedisCluster {
                    name: name.to_string(),
                    listen_port: *port,
                    nodes: (0..*n)
                        .map(|i| std::net::SocketAddr::from(([10, 0, 0, i as u8 + 1], 7000)))
                        .collect(),
                })
                .collect(),
        }
    }

    fn guard() -> Guard {
        Guard::new(GuardConfig {
            max_drop: 0.5,
            drop_hold: Duration::from_secs(120),
        })
    }

    #[test]
    fn small_drops_pass_and_a_collapsing_pool_keeps_its_old_version_while_others_update() {
        let mut g = guard();
        let t0 = Instant::now();
        let old = redis(&[("a", 6380, 10), ("b", 6381, 4)]);
        // First publication: anything goes.
        assert!(g.apply(None, redis(&[]), t0).held.is_empty());
        // a loses half (allowed), b grows.
        let out = g.apply(Some(&old), redis(&[("a", 6380, 5), ("b", 6381, 6)]), t0);
        assert!(out.held.is_empty());
        // a collapses to 1 node while b changes: a is held, b goes through.
        let out = g.apply(Some(&old), redis(&[("a", 6380, 1), ("b", 6381, 6)]), t0);
        assert_eq!(out.held.len(), 1);
        assert_eq!(out.held[0].pool, "cluster a");
        assert_eq!(out.table.clusters[0].nodes.len(), 10);
        assert_eq!(out.table.clusters[1].nodes.len(), 6);
        out.table.validate().unwrap();
        // a disappears entirely: held (kept in the table) until the hold ends.
        let out = g.apply(
            Some(&old),
            redis(&[("b", 6381, 4)]),
            t0 + Duration::from_secs(60),
        );
        assert_eq!(out.table.clusters.len(), 2);
        let out = g.apply(
            Some(&old),
            redis(&[("b", 6381, 4)]),
            t0 + Duration::from_secs(121),
        );
        assert!(out.held.is_empty());
        assert_eq!(out.table.clusters.len(), 1);
    }

    #[test]
    fn recovery_clears_the_hold_and_a_new_drop_starts_a_new_one() {
        let mut g = guard();
        let t0 = Instant::now();
        let old = redis(&[("a", 6380, 10)]);
        assert_eq!(g.apply(Some(&old), redis(&[]), t0).held.len(), 1);
        assert!(g
            .apply(
                Some(&old),
                redis(&[("a", 6380, 10)]),
                t0 + Duration::from_secs(10)
            )
            .held
            .is_empty());
        assert_eq!(
            g.apply(Some(&old), redis(&[]), t0 + Duration::from_secs(130))
                .held
                .len(),
            1
        );
    }

    #[test]
    fn a_kept_pool_that_clashes_holds_the_whole_table() {
        let mut g = guard();
        let t0 = Instant::now();
        let old = redis(&[("a", 6380, 10)]);
        // a vanishes and a new cluster takes its port: keeping a would clash.
        let out = g.apply(Some(&old), redis(&[("c", 6380, 3)]), t0);
        assert_eq!(out.table, old);
        assert!(out.held.iter().any(|h| h.pool == "*"), "{:?}", out.held);
    }

    #[test]
    fn the_dns_zone_is_one_pool() {
        let mut g = guard();
        let mut old = DnsTable::default();
        old.names.insert(
            "a.marathon.mesos.".into(),
            ocean_core::table::dns::DnsRecords {
                a: vec![std::net::Ipv4Addr::LOCALHOST],
                ..Default::default()
            },
        );
        let out = g.apply(Some(&old), DnsTable::default(), Instant::now());
        assert_eq!(out.table, old);
        assert_eq!(out.held[0].pool, "zone");
    }
}
