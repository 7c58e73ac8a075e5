//! The `memcached` table: apps labelled `OCEAN_MEMCACHED_POOL=name` are one replica set
//! (`OCEAN_MEMCACHED_REPLICA`, default the app id) of that pool. Optional labels:
//! `OCEAN_MEMCACHED_HASH=fnv1a_64|md5`, `OCEAN_PORT`.

use std::collections::BTreeMap;

use ocean_core::table::memcached::{
    MemcachedHash, MemcachedPool, MemcachedServer, MemcachedTable, ReplicaSet,
};
use ocean_core::table::{name_problem, TableKind};

use super::{listen_port, task_addrs, Problem};
use crate::state::State;

pub fn derive(state: &State, problems: &mut Vec<Problem>) -> MemcachedTable {
    let mut pools: BTreeMap<String, MemcachedPool> = BTreeMap::new();
    for app in &state.apps {
        let Some(name) = app.labels.get("OCEAN_MEMCACHED_POOL") else {
            continue;
        };
        let name = name.trim();
        if let Some(reason) = name_problem(name) {
            problems.push(Problem::app(
                app,
                TableKind::Memcached,
                format!("OCEAN_MEMCACHED_POOL: {reason}"),
            ));
            continue;
        }
        let replica = app
            .labels
            .get("OCEAN_MEMCACHED_REPLICA")
            .map(|r| r.trim().to_string())
            .unwrap_or_else(|| app.id.clone());
        if let Some(reason) = name_problem(&replica) {
            problems.push(Problem::app(
                app,
                TableKind::Memcached,
                format!("OCEAN_MEMCACHED_REPLICA: {reason}"),
            ));
            continue;
        }
        let hash = match app.labels.get("OCEAN_MEMCACHED_HASH").map(|h| h.trim()) {
            None | Some("fnv1a_64") => MemcachedHash::Fnv1a64,
            Some("md5") => MemcachedHash::Md5,
            Some(other) => {
                problems.push(Problem::app(
                    app,
                    TableKind::Memcached,
                    format!("OCEAN_MEMCACHED_HASH={other:?} is not fnv1a_64 or md5"),
                ));
                continue;
            }
        };
        let port = match listen_port(app) {
            Ok(p) => p,
            Err(e) => {
                problems.push(Problem::app(app, TableKind::Memcached, e));
                continue;
            }
        };
        let pool = pools
            .entry(name.to_string())
            .or_insert_with(|| MemcachedPool {
                name: name.to_string(),
                listen_port: port,
                hash,
                replicas: Vec::new(),
            });
        if pool.listen_port != port || pool.hash != hash {
            problems.push(Problem::app(
                app,
                TableKind::Memcached,
                format!(
                    "pool {name:?} already listens on {} with hash {:?}; this app disagrees",
                    pool.listen_port, pool.hash
                ),
            ));
            continue;
        }
        let servers = task_addrs(app)
            .into_iter()
            .map(|addr| MemcachedServer { addr, weight: 1 });
        match pool.replicas.iter_mut().find(|r| r.name == replica) {
            Some(r) => r.servers.extend(servers),
            None => pool.replicas.push(ReplicaSet {
                name: replica,
                servers: servers.collect(),
            }),
        }
    }
    let mut out = Vec::new();
    let mut ports = BTreeMap::new();
    for (name, mut pool) in pools {
        pool.replicas.sort_by(|a, b| a.name.cmp(&b.name));
        pool.replicas.retain_mut(|r| {
            r.servers.sort_by_key(|s| s.addr);
            r.servers.dedup_by_key(|s| s.addr);
            if r.servers.is_empty() {
                problems.push(Problem {
                    app: None,
                    table: Some(TableKind::Memcached),
                    message: format!(
                        "replica set {:?} of pool {name:?} has no running servers; left out",
                        r.name
                    ),
                });
            }
            !r.servers.is_empty()
        });
        if pool.replicas.is_empty() {
            continue;
        }
        if let Some(other) = ports.insert(pool.listen_port, name.clone()) {
            problems.push(Problem {
                app: None,
                table: Some(TableKind::Memcached),
                message: format!(
                    "pool {name:?} wants listen port {} of pool {other:?}; left out",
                    pool.listen_port
                ),
            });
            continue;
        }
        out.push(pool);
    }
    MemcachedTable { pools: out }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::fixtures::{state, task};
    use ocean_core::table::Table;

    #[test]
    fn two_apps_are_two_replica_sets_of_one_pool() {
        let json = format!(
            r#"{{"apps":[
            {{"id":"/mc/pages-b","labels":{{"OCEAN_MEMCACHED_POOL":"pages","OCEAN_MEMCACHED_REPLICA":"b"}},
              "portDefinitions":[{{"port":11212}}],"tasks":[{},{}]}},
            {{"id":"/mc/pages-a","labels":{{"OCEAN_MEMCACHED_POOL":"pages","OCEAN_MEMCACHED_REPLICA":"a"}},
              "portDefinitions":[{{"port":11212}}],"tasks":[{}]}},
            {{"id":"/mc/md5","labels":{{"OCEAN_MEMCACHED_POOL":"m","OCEAN_MEMCACHED_HASH":"crc"}},
              "portDefinitions":[{{"port":11213}}],"tasks":[{}]}}
            ]}}"#,
            task("b.1", "10.0.0.2", &[31000]),
            task("b.2", "10.0.0.3", &[31000]),
            task("a.1", "10.0.0.1", &[31000]),
            task("m.1", "10.0.0.9", &[31000]),
        );
        let mut problems = Vec::new();
        let t = derive(&state(&json), &mut problems);
        t.validate().unwrap();
        assert_eq!(t.pools.len(), 1);
        let p = &t.pools[0];
        assert_eq!(
            (p.name.as_str(), p.listen_port, p.hash),
            ("pages", 11212, MemcachedHash::Fnv1a64)
        );
        let names: Vec<&str> = p.replicas.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(p.replicas[1].servers.len(), 2);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("OCEAN_MEMCACHED_HASH=\"crc\""));
    }
}
