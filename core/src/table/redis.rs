//! The `redis` table: Redis Clusters and the local port a router listens on for each.

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{check_name, Problems, Table, TableError, TableKind};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTable {
    #[serde(default)]
    pub clusters: Vec<RedisCluster>,
}

/// One Redis Cluster (label `OCEAN_REDIS_CLUSTER=name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisCluster {
    /// The port routers listen on for this cluster (the app's first service port or `OCEAN_PORT`).
    pub listen_port: u16,
    pub name: String,
    /// Addresses of the cluster's nodes (running tasks); the router's seeds.
    pub nodes: Vec<SocketAddr>,
}

impl Table for RedisTable {
    const KIND: TableKind = TableKind::Redis;

    fn validate(&self) -> Result<(), TableError> {
        let mut p = Problems::default();
        let mut names = HashSet::new();
        let mut ports = HashSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            let entry = format!("clusters[{i}] ({})", c.name);
            check_name(&mut p, &entry, &c.name);
            if !names.insert(&c.name) {
                p.push(&entry, "duplicate cluster name");
            }
            if c.listen_port == 0 {
                p.push(&entry, "listen_port is 0");
            } else if !ports.insert(c.listen_port) {
                p.push(
                    &entry,
                    format!("listen_port {} is used by another cluster", c.listen_port),
                );
            }
            if c.nodes.is_empty() {
                p.push(&entry, "cluster has no nodes");
            }
            let mut seen = HashSet::new();
            for n in &c.nodes {
                if n.port() == 0 {
                    p.push(&entry, format!("node {n} has port 0"));
                }
                if !seen.insert(n) {
                    p.push(&entry, format!("node {n} is listed twice"));
                }
            }
        }
        p.into_result(TableKind::Redis)
    }

    fn backend_count(&self) -> usize {
        self.clusters.iter().map(|c| c.nodes.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, port: u16, nodes: &[&str]) -> RedisCluster {
        RedisCluster {
            name: name.into(),
            listen_port: port,
            nodes: nodes.iter().filter_map(|n| n.parse().ok()).collect(),
        }
    }

    #[test]
    fn valid_and_invalid_tables() {
        let ok = RedisTable {
            clusters: vec![
                cluster("a", 6380, &["127.0.0.1:7000"]),
                cluster("b", 6381, &["127.0.0.1:7001"]),
            ],
        };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.backend_count(), 2);

        let bad = RedisTable {
            clusters: vec![
                cluster("a", 6380, &["127.0.0.1:7000"]),
                cluster("b", 6380, &[]),
                cluster("a", 0, &["127.0.0.1:7000", "127.0.0.1:7000"]),
            ],
        };
        let err = bad
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("clusters[1] (b): listen_port 6380 is used by another cluster"),
            "{err}"
        );
        assert!(
            err.contains("clusters[1] (b): cluster has no nodes"),
            "{err}"
        );
        assert!(
            err.contains("clusters[2] (a): duplicate cluster name"),
            "{err}"
        );
        assert!(err.contains("listen_port is 0"), "{err}");
        assert!(err.contains("listed twice"), "{err}");
    }

    #[test]
    fn unparsable_addresses_are_a_parse_error_that_names_the_problem() {
        let body = br#"{"clusters":[{"name":"a","listen_port":1,"nodes":["10.0.0.1"]}]}"#;
        let err = RedisTable::from_json(body)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("invalid socket address"), "{err}");
    }
}
