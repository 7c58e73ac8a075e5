//! The `memcached` table: pools of memcached servers, each with one or more replica sets.

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{check_name, Problems, Table, TableError, TableKind};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemcachedTable {
    #[serde(default)]
    pub pools: Vec<MemcachedPool>,
}

/// The key hash used to place keys on the ketama ring (twemproxy's names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemcachedHash {
    /// twemproxy's default.
    #[default]
    #[serde(rename = "fnv1a_64")]
    Fnv1a64,
    Md5,
}

/// One pool (label `OCEAN_MEMCACHED_POOL=name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemcachedPool {
    #[serde(default)]
    pub hash: MemcachedHash,
    /// The port routers listen on for this pool.
    pub listen_port: u16,
    pub name: String,
    /// Replica sets, in preference order (reads go to the first and fail over).
    pub replicas: Vec<ReplicaSet>,
}

/// One replica set of a pool (label `OCEAN_MEMCACHED_REPLICA=name`): a full copy of the keyspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaSet {
    pub name: String,
    pub servers: Vec<MemcachedServer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemcachedServer {
    pub addr: SocketAddr,
    /// Ketama weight, 1 by default.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl Table for MemcachedTable {
    const KIND: TableKind = TableKind::Memcached;

    fn validate(&self) -> Result<(), TableError> {
        let mut p = Problems::default();
        let mut names = HashSet::new();
        let mut ports = HashSet::new();
        for (i, pool) in self.pools.iter().enumerate() {
            let entry = format!("pools[{i}] ({})", pool.name);
            check_name(&mut p, &entry, &pool.name);
            if !names.insert(&pool.name) {
                p.push(&entry, "duplicate pool name");
            }
            if pool.listen_port == 0 {
                p.push(&entry, "listen_port is 0");
            } else if !ports.insert(pool.listen_port) {
                p.push(
                    &entry,
                    format!("listen_port {} is used by another pool", pool.listen_port),
                );
            }
            if pool.replicas.is_empty() {
                p.push(&entry, "pool has no replica sets");
            }
            let mut replica_names = HashSet::new();
            for (j, rs) in pool.replicas.iter().enumerate() {
                let entry = format!("{entry}.replicas[{j}] ({})", rs.name);
                check_name(&mut p, &entry, &rs.name);
                if !replica_names.insert(&rs.name) {
                    p.push(&entry, "duplicate replica set name");
                }
                if rs.servers.is_empty() {
                    p.push(&entry, "replica set has no servers");
                }
                let mut seen = HashSet::new();
                for s in &rs.servers {
                    if s.addr.port() == 0 {
                        p.push(&entry, format!("server {} has port 0", s.addr));
                    }
                    if s.weight == 0 {
                        p.push(&entry, format!("server {} has weight 0", s.addr));
                    }
                    if !seen.insert(s.addr) {
                        p.push(&entry, format!("server {} is listed twice", s.addr));
                    }
                }
            }
        }
        p.into_result(TableKind::Memcached)
    }

    fn backend_count(&self) -> usize {
        self.pools
            .iter()
            .flat_map(|p| &p.replicas)
            .map(|r| r.servers.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(a: &str) -> MemcachedServer {
        MemcachedServer {
            addr: a
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            weight: 1,
        }
    }

    #[test]
    fn empty_replica_sets_and_zero_weights_are_refused() {
        let t = MemcachedTable {
            pools: vec![MemcachedPool {
                name: "sessions".into(),
                listen_port: 11212,
                hash: MemcachedHash::Fnv1a64,
                replicas: vec![
                    ReplicaSet {
                        name: "a".into(),
                        servers: vec![server("127.0.0.1:11311")],
                    },
                    ReplicaSet {
                        name: "b".into(),
                        servers: vec![],
                    },
                ],
            }],
        };
        let err = t
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("pools[0] (sessions).replicas[1] (b): replica set has no servers"),
            "{err}"
        );
        let mut ok = t.clone();
        ok.pools[0].replicas[1]
            .servers
            .push(server("127.0.0.1:11312"));
        assert!(ok.validate().is_ok());
        ok.pools[0].replicas[1].servers[0].weight = 0;
        assert!(ok.validate().is_err());
    }

    #[test]
    fn weight_defaults_to_one_and_hash_to_fnv1a_64() {
        let body = br#"{"pools":[{"name":"p","listen_port":1,"replicas":[{"name":"a","servers":[{"addr":"127.0.0.1:11211"}]}]}]}"#;
        let t = MemcachedTable::from_json(body).ok().unwrap_or_default();
        assert_eq!(t.pools[0].replicas[0].servers[0].weight, 1);
        assert_eq!(t.pools[0].hash, MemcachedHash::Fnv1a64);
    }
}
