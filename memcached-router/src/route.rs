//! A pool's routing state: one ketama ring per replica set over shared [`Server`]s, built
//! off the hot path and swapped in whole.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio_util::sync::CancellationToken;

use crate::config::{KeyPlacement, PoolSpec, Settings};
use crate::ketama::Ring;
use crate::stats::RouterStats;
use crate::upstream::Server;

/// One replica set: its ring and its servers (indexed as the ring's).
#[derive(Debug)]
pub struct SetRoute {
    /// Replica set name.
    pub name: String,
    /// The ring (ketama, modula or ch3, by the pool's hash and distribution).
    pub ring: Ring,
    /// The pool's `distribution` and `hash_tag`.
    pub placement: KeyPlacement,
    /// Servers in configuration order.
    pub servers: Vec<Arc<Server>>,
    /// twemproxy's `auto_eject_hosts`: keys of a server marked down go to a ring of the
    /// servers still up, until it comes back.
    pub eject: Option<Ejection>,
}

/// What a replica set needs to place keys around servers that are down.
#[derive(Debug)]
pub struct Ejection {
    /// `(name, weight)` of every server, as the ring was built from.
    named: Vec<(String, u32)>,
    /// The ring of the servers up when it was built, and which those were.
    live: ArcSwapOption<LiveRing>,
}

#[derive(Debug)]
struct LiveRing {
    /// `down[i]`: server `i` was down when the ring was built.
    down: Vec<bool>,
    ring: Ring,
    /// Index in `ring` -> index in the set.
    servers: Vec<usize>,
}

impl SetRoute {
    /// The server for `key`.
    pub fn server_index(&self, key: &[u8]) -> usize {
        let key = self.placement.hashed(key);
        let i = self.ring.server_for(key);
        match &self.eject {
            Some(e) if self.servers.get(i).is_some_and(|s| s.is_down()) => {
                self.live_index(e, key).unwrap_or(i)
            }
            _ => i,
        }
    }

    /// The server for `key` among those up: twemproxy rebuilds its continuum over the live
    /// servers only (the same point formula over fewer servers), and so does this, once
    /// per change of the set of servers down. `None` when every server is down.
    fn live_index(&self, e: &Ejection, key: &[u8]) -> Option<usize> {
        let current = e.live.load();
        // Every request to a down server's keys comes here: compare in place, and allocate
        // only when the set of servers down has changed.
        let same = |l: &LiveRing| {
            l.down
                .iter()
                .zip(&self.servers)
                .all(|(was, s)| *was == s.is_down())
        };
        let live = match current.as_ref() {
            Some(l) if same(l) => l.clone(),
            _ => {
                let down: Vec<bool> = self.servers.iter().map(|s| s.is_down()).collect();
                let servers: Vec<usize> = (0..down.len()).filter(|&i| !down[i]).collect();
                if servers.is_empty() {
                    return None;
                }
                let named: Vec<(String, u32)> =
                    servers.iter().map(|&i| e.named[i].clone()).collect();
                let built = Arc::new(LiveRing {
                    down,
                    ring: Ring::with_distribution(
                        &named,
                        self.ring.key_hash(),
                        self.placement.distribution,
                    ),
                    servers,
                });
                e.live.store(Some(built.clone()));
                built
            }
        };
        live.servers.get(live.ring.server_for(key)).copied()
    }

    /// The server at `index` (from [`server_index`](Self::server_index)).
    pub fn server(&self, index: usize) -> Option<&Arc<Server>> {
        self.servers.get(index)
    }
}

/// A pool: replica sets in preference order.
#[derive(Debug)]
pub struct PoolRoute {
    /// Pool name.
    pub name: String,
    /// Replica sets; reads prefer the first.
    pub sets: Vec<SetRoute>,
    /// Routing settings.
    pub settings: Arc<Settings>,
}

impl PoolRoute {
    /// Every server of every set (for `flush_all`).
    pub fn all_servers(&self) -> impl Iterator<Item = &Arc<Server>> {
        self.sets.iter().flat_map(|s| s.servers.iter())
    }
}

/// What a listener routes by: one pool, or, from mcrouter's `PrefixSelectorRoute`, one
/// pool per key prefix beside the pool of every other key. Swapped in whole.
#[derive(Debug)]
pub struct Routes {
    /// `routes[0]` takes the keys no prefix selects (mcrouter's `wildcard`).
    routes: Vec<PoolRoute>,
    /// `(prefix, index in routes)`, longest prefix first, so the first match is the longest.
    prefixes: Vec<(Box<[u8]>, usize)>,
}

impl Routes {
    /// One pool for every key.
    pub fn single(route: PoolRoute) -> Routes {
        Routes {
            routes: vec![route],
            prefixes: Vec::new(),
        }
    }

    /// `wildcard` for every key no prefix of `prefixed` selects.
    pub fn with_prefixes(wildcard: PoolRoute, prefixed: Vec<(String, PoolRoute)>) -> Routes {
        let mut routes = vec![wildcard];
        let mut prefixes = Vec::new();
        for (prefix, route) in prefixed {
            prefixes.push((prefix.into_bytes().into_boxed_slice(), routes.len()));
            routes.push(route);
        }
        prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Routes { routes, prefixes }
    }

    /// The index of the route for `key`: the longest prefix it starts with, else 0.
    pub fn select(&self, key: &[u8]) -> usize {
        self.prefixes
            .iter()
            .find(|(p, _)| key.starts_with(p))
            .map_or(0, |(_, i)| *i)
    }

    /// Whether every key takes route 0.
    pub fn is_single(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// The route at `index` (from [`select`](Self::select)); route 0 for an index out of range.
    pub fn get(&self, index: usize) -> &PoolRoute {
        self.routes.get(index).unwrap_or(&self.routes[0])
    }

    /// Every route.
    pub fn all(&self) -> &[PoolRoute] {
        &self.routes
    }

    /// The settings every route shares (limits, timeouts, budgets); only a route's write
    /// policy, miss failover and warm fill may differ.
    pub fn settings(&self) -> &Settings {
        &self.routes[0].settings
    }
}

/// The servers a worker has connections to, kept across table swaps so that a server that
/// stays in a pool keeps its connections and TKO state.
pub struct Registry {
    servers: HashMap<(String, String, SocketAddr), Arc<Server>>,
    stats: Arc<RouterStats>,
}

impl Registry {
    /// An empty registry; its servers report TKO changes to `stats`.
    pub fn new(stats: Arc<RouterStats>) -> Registry {
        Registry {
            servers: HashMap::new(),
            stats,
        }
    }

    /// Builds the route for `spec`, reusing servers already known. Call
    /// [`retain`](Self::retain) after all pools of a table are built.
    pub fn build(
        &mut self,
        spec: &PoolSpec,
        settings: &Arc<Settings>,
        cancel: &CancellationToken,
    ) -> PoolRoute {
        let sets = spec
            .replica_sets
            .iter()
            .map(|rs| {
                let named: Vec<(String, u32)> = rs
                    .servers
                    .iter()
                    .map(|s| (s.name.clone(), s.weight))
                    .collect();
                let servers = rs
                    .servers
                    .iter()
                    .map(|s| {
                        self.servers
                            .entry((spec.name.clone(), rs.name.clone(), s.addr))
                            .or_insert_with(|| {
                                Server::new(
                                    s.addr,
                                    &spec.name,
                                    &rs.name,
                                    settings.clone(),
                                    self.stats.clone(),
                                    cancel.child_token(),
                                )
                            })
                            .clone()
                    })
                    .collect();
                SetRoute {
                    name: rs.name.clone(),
                    ring: Ring::with_distribution(&named, spec.hash, spec.placement.distribution),
                    placement: spec.placement,
                    servers,
                    eject: settings.auto_eject_hosts.then(|| Ejection {
                        named,
                        live: ArcSwapOption::empty(),
                    }),
                }
            })
            .collect();
        PoolRoute {
            name: spec.name.clone(),
            sets,
            settings: settings.clone(),
        }
    }

    /// Forgets servers no route uses any more (their connections close once the last
    /// client holding an old route lets go).
    pub fn retain(&mut self, routes: &[&PoolRoute]) {
        let used: std::collections::HashSet<(String, String, SocketAddr)> = routes
            .iter()
            .flat_map(|r| {
                r.sets.iter().flat_map(move |s| {
                    s.servers
                        .iter()
                        .map(move |srv| (r.name.clone(), s.name.clone(), srv.addr()))
                })
            })
            .collect();
        self.servers.retain(|k, server| {
            let keep = used.contains(k);
            if !keep {
                server.close();
                // Its series go with it: a removed server must not report `up 1` forever.
                let (pool, set, addr) = k;
                let addr = addr.to_string();
                ocean_core::metrics::remove_series(
                    crate::stats::SERVER_METRICS,
                    &[("pool", pool), ("replica_set", set), ("server", &addr)],
                );
            }
            keep
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{KeyPlacement, PoolSpec};
    use crate::pool::{ReplicaSetSpec, ServerSpec};

    fn route(name: &str) -> PoolRoute {
        let spec = PoolSpec {
            name: name.into(),
            hash: crate::ketama::KeyHash::Ch3,
            replica_sets: vec![ReplicaSetSpec {
                name: name.into(),
                servers: vec![ServerSpec {
                    addr: "127.0.0.1:1".parse().unwrap(),
                    name: "127.0.0.1:1".into(),
                    weight: 1,
                }],
            }],
            placement: KeyPlacement::default(),
        };
        // Servers spawn their connection tasks lazily: building needs no runtime.
        let mut registry = Registry::new(Arc::new(RouterStats::default()));
        registry.build(
            &spec,
            &Arc::new(Settings::default()),
            &CancellationToken::new(),
        )
    }

    #[test]
    fn the_longest_prefix_selects_and_other_keys_take_the_wildcard() {
        let r = Routes::with_prefixes(
            route("all"),
            vec![("a".into(), route("a")), ("ab".into(), route("ab"))],
        );
        let name = |key: &str| r.get(r.select(key.as_bytes())).name.clone();
        assert_eq!(name("abcd"), "ab");
        assert_eq!(name("acdc"), "a");
        assert_eq!(name("ab"), "ab");
        assert_eq!(name("bar"), "all");
        assert_eq!(name(""), "all");
        assert!(!r.is_single());
        assert!(Routes::single(route("x")).is_single());
        assert_eq!(r.all().len(), 3);
    }
}
