//! The `memcached` table: apps labelled `OCEAN_MEMCACHED_POOL=name` are one replica set
//! (`OCEAN_MEMCACHED_REPLICA`, default the app id) of that pool. Optional labels:
//! `OCEAN_MEMCACHED_HASH=fnv1a_64|md5`, `OCEAN_PORT`.
//!
//! A pool name is a shared thing (writes go to every replica set): only apps its
//! `[memcached.pools."name"] apps` rule covers may join; without a rule every claimant must
//! share one top-level group, else the name is refused for all. A listen port wanted by two
//! pools goes to the one with a rule in control.toml when it is the only one; else neither.

use ocean_core::table::memcached::{
    MemcachedHash, MemcachedPool, MemcachedServer, MemcachedTable, ReplicaSet,
};
use ocean_core::table::{name_problem, TableKind};

use super::{judge_claims, listen_port, port_losers, task_addrs, Problem};
use crate::ownership::Owners;
use crate::state::{App, State};

/// What one app declares for its pool.
fn parse_app(app: &App) -> Result<(String, MemcachedHash, u16), String> {
    let replica = app
        .labels
        .get("OCEAN_MEMCACHED_REPLICA")
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|| app.id.clone());
    if let Some(reason) = name_problem(&replica) {
        return Err(format!("OCEAN_MEMCACHED_REPLICA: {reason}"));
    }
    let hash = match app.labels.get("OCEAN_MEMCACHED_HASH").map(|h| h.trim()) {
        None | Some("fnv1a_64") => MemcachedHash::Fnv1a64,
        Some("md5") => MemcachedHash::Md5,
        Some(other) => {
            return Err(format!(
                "OCEAN_MEMCACHED_HASH={other:?} is not fnv1a_64 or md5"
            ))
        }
    };
    Ok((replica, hash, listen_port(app)?))
}

pub fn derive(state: &State, owners: &Owners, problems: &mut Vec<Problem>) -> MemcachedTable {
    let mut claims: Vec<(String, &App)> = Vec::new();
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
        claims.push((name.to_string(), app));
    }
    let claims = judge_claims(
        "OCEAN_MEMCACHED_POOL",
        "memcached.pools",
        TableKind::Memcached,
        claims,
        |n| owners.memcached(n),
        problems,
    );
    let mut pools: Vec<(MemcachedPool, Vec<&App>, bool)> = Vec::new();
    for claim in claims {
        let name = claim.name;
        let mut pool: Option<(MemcachedPool, Vec<&App>)> = None;
        for app in claim.apps {
            let (replica, hash, port) = match parse_app(app) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(Problem::app(app, TableKind::Memcached, e));
                    continue;
                }
            };
            let (p, apps) = pool.get_or_insert_with(|| {
                (
                    MemcachedPool {
                        name: name.clone(),
                        listen_port: port,
                        hash,
                        replicas: Vec::new(),
                    },
                    Vec::new(),
                )
            });
            if p.listen_port != port || p.hash != hash {
                problems.push(Problem::app(
                    app,
                    TableKind::Memcached,
                    format!(
                        "OCEAN_MEMCACHED_POOL={name}: the pool listens on {} with hash {:?} (app {}); this app disagrees",
                        p.listen_port,
                        p.hash,
                        apps.first().map(|a| a.id.as_str()).unwrap_or("?")
                    ),
                ));
                continue;
            }
            apps.push(app);
            let servers = task_addrs(app)
                .into_iter()
                .map(|addr| MemcachedServer { addr, weight: 1 });
            match p.replicas.iter_mut().find(|r| r.name == replica) {
                Some(r) => r.servers.extend(servers),
                None => p.replicas.push(ReplicaSet {
                    name: replica,
                    servers: servers.collect(),
                }),
            }
        }
        if let Some((p, apps)) = pool {
            pools.push((p, apps, claim.configured));
        }
    }
    let mut out = Vec::new();
    let mut kept: Vec<(MemcachedPool, Vec<&App>, bool)> = Vec::new();
    for (mut pool, apps, configured) in pools {
        let name = pool.name.clone();
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
        if !pool.replicas.is_empty() {
            kept.push((pool, apps, configured));
        }
    }
    let wants: Vec<(u16, &str, bool)> = kept
        .iter()
        .map(|(p, _, c)| (p.listen_port, p.name.as_str(), *c))
        .collect();
    let losers = port_losers(&wants);
    for (pool, apps, _) in kept {
        if let Some(others) = losers.get(&pool.name) {
            for app in apps {
                problems.push(Problem::app(
                    app,
                    TableKind::Memcached,
                    format!(
                        "OCEAN_MEMCACHED_POOL={}: conflict: listen port {} is also wanted by pool {}; a contested port goes only to the one pool with a [memcached.pools] rule in control.toml, so this pool is left out",
                        pool.name,
                        pool.listen_port,
                        others.join(", ")
                    ),
                ));
            }
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
        let t = derive(&state(&json), &Owners::default(), &mut problems);
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

#[cfg(test)]
mod ownership_rules {
    use super::*;
    use crate::derive::fixtures::{state, task};
    use crate::ownership::AppPrefix;
    use ocean_core::table::Table;

    #[test]
    fn a_replica_set_from_another_team_is_refused() {
        let json = format!(
            r#"{{"apps":[
            {{"id":"/cache/pages-a","labels":{{"OCEAN_MEMCACHED_POOL":"pages","OCEAN_MEMCACHED_REPLICA":"a"}},"portDefinitions":[{{"port":11212}}],"tasks":[{}]}},
            {{"id":"/evil/pages-b","labels":{{"OCEAN_MEMCACHED_POOL":"pages","OCEAN_MEMCACHED_REPLICA":"b"}},"portDefinitions":[{{"port":11212}}],"tasks":[{}]}}
            ]}}"#,
            task("a.1", "10.0.0.1", &[31000]),
            task("b.1", "10.6.6.1", &[31000]),
        );
        let mut problems = Vec::new();
        let t = derive(&state(&json), &Owners::default(), &mut problems);
        t.validate().unwrap();
        assert!(
            t.pools.is_empty(),
            "a conflict without a rule refuses the name"
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().all(|p| p.message.contains("conflict")));

        let mut owners = Owners::default();
        owners
            .memcached_pools
            .insert("pages".into(), vec![AppPrefix::parse("/cache/").unwrap()]);
        let mut problems = Vec::new();
        let t = derive(&state(&json), &owners, &mut problems);
        t.validate().unwrap();
        assert_eq!(t.pools.len(), 1);
        let sets: Vec<&str> = t.pools[0]
            .replicas
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(sets, vec!["a"], "writes never reach the thief's set");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].app.as_deref(), Some("/evil/pages-b"));
        assert!(problems[0]
            .message
            .contains("refused by [memcached.pools.\"pages\"] apps = [\"/cache/\"]"));
    }
}
