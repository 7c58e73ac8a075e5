//! The `redis` table: apps labelled `OCEAN_REDIS_CLUSTER=name` are nodes of that cluster.
//!
//! A cluster name is a shared thing: the router sends AUTH to every node and believes their
//! slot maps. Only apps its `[redis.clusters."name"] apps` rule covers may add nodes; without
//! a rule every claimant must share one top-level group, else the name is refused for all
//! (see [`crate::ownership`]). A listen port wanted by two clusters goes to the one with a
//! rule in control.toml when it is the only one; otherwise to neither.

use ocean_core::table::redis::{RedisCluster, RedisTable};
use ocean_core::table::{name_problem, TableKind};

use super::{judge_claims, listen_port, port_losers, task_addrs, Problem};
use crate::ownership::Owners;
use crate::state::{App, State};

pub fn derive(state: &State, owners: &Owners, problems: &mut Vec<Problem>) -> RedisTable {
    let mut claims: Vec<(String, &App)> = Vec::new();
    for app in &state.apps {
        let Some(name) = app.labels.get("OCEAN_REDIS_CLUSTER") else {
            continue;
        };
        let name = name.trim();
        if let Some(reason) = name_problem(name) {
            problems.push(Problem::app(
                app,
                TableKind::Redis,
                format!("OCEAN_REDIS_CLUSTER: {reason}"),
            ));
            continue;
        }
        claims.push((name.to_string(), app));
    }
    let claims = judge_claims(
        "OCEAN_REDIS_CLUSTER",
        "redis.clusters",
        TableKind::Redis,
        claims,
        |n| owners.redis(n),
        problems,
    );
    // One cluster per accepted name: (cluster, its apps, whether control.toml names it).
    let mut clusters: Vec<(RedisCluster, Vec<&App>, bool)> = Vec::new();
    for claim in claims {
        let name = claim.name;
        let mut c: Option<(RedisCluster, Vec<&App>)> = None;
        for app in claim.apps {
            let port = match listen_port(app) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(Problem::app(app, TableKind::Redis, e));
                    continue;
                }
            };
            match &mut c {
                Some((cluster, apps)) if cluster.listen_port != port => {
                    problems.push(Problem::app(
                        app,
                        TableKind::Redis,
                        format!(
                            "OCEAN_REDIS_CLUSTER={name}: the cluster listens on {} (app {}); this app says {port}",
                            cluster.listen_port, apps[0].id
                        ),
                    ));
                }
                Some((cluster, apps)) => {
                    cluster.nodes.extend(task_addrs(app));
                    apps.push(app);
                }
                None => {
                    let cluster = RedisCluster {
                        name: name.clone(),
                        listen_port: port,
                        nodes: task_addrs(app),
                    };
                    c = Some((cluster, vec![app]));
                }
            }
        }
        if let Some((cluster, apps)) = c {
            clusters.push((cluster, apps, claim.configured));
        }
    }
    let wants: Vec<(u16, &str, bool)> = clusters
        .iter()
        .map(|(c, _, configured)| (c.listen_port, c.name.as_str(), *configured))
        .collect();
    let losers = port_losers(&wants);
    let mut out = Vec::new();
    for (mut c, apps, _) in clusters {
        if let Some(others) = losers.get(&c.name) {
            for app in apps {
                problems.push(Problem::app(
                    app,
                    TableKind::Redis,
                    format!(
                        "OCEAN_REDIS_CLUSTER={}: conflict: listen port {} is also wanted by cluster {}; a contested port goes only to the one cluster with a [redis.clusters] rule in control.toml, so this cluster is left out",
                        c.name,
                        c.listen_port,
                        others.join(", ")
                    ),
                ));
            }
            continue;
        }
        c.nodes.sort();
        c.nodes.dedup();
        if c.nodes.is_empty() {
            problems.push(Problem {
                app: None,
                table: Some(TableKind::Redis),
                message: format!("redis cluster {:?} has no running nodes; left out", c.name),
            });
            continue;
        }
        out.push(c);
    }
    RedisTable { clusters: out }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::fixtures::{state, task};
    use ocean_core::table::Table;

    #[test]
    fn nodes_of_several_apps_form_one_cluster_and_bad_ports_are_reported() {
        let json = format!(
            r#"{{"apps":[
            {{"id":"/cache/redis-a","labels":{{"OCEAN_REDIS_CLUSTER":"sessions"}},"portDefinitions":[{{"port":6390}}],
              "tasks":[{},{}]}},
            {{"id":"/cache/redis-b","labels":{{"OCEAN_REDIS_CLUSTER":"sessions"}},"portDefinitions":[{{"port":6390}}],
              "tasks":[{}]}},
            {{"id":"/cache/feeds","labels":{{"OCEAN_REDIS_CLUSTER":"feeds","OCEAN_PORT":"6391"}},"tasks":[{}]}},
            {{"id":"/cache/bad","labels":{{"OCEAN_REDIS_CLUSTER":"bad","OCEAN_PORT":"99999"}},"tasks":[{}]}}
            ]}}"#,
            task("a.1", "10.0.0.1", &[31000]),
            task("a.2", "10.0.0.2", &[31000]),
            task("b.1", "10.0.0.3", &[31001]),
            task("f.1", "10.0.0.4", &[31002]),
            task("x.1", "10.0.0.5", &[31003]),
        );
        let mut problems = Vec::new();
        let t = derive(&state(&json), &Owners::default(), &mut problems);
        t.validate().unwrap();
        assert_eq!(t.clusters.len(), 2);
        let feeds = &t.clusters[0];
        assert_eq!((feeds.name.as_str(), feeds.listen_port), ("feeds", 6391));
        let sessions = &t.clusters[1];
        assert_eq!(sessions.listen_port, 6390);
        let nodes: Vec<String> = sessions.nodes.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            nodes,
            vec!["10.0.0.1:31000", "10.0.0.2:31000", "10.0.0.3:31001"]
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].app.as_deref(), Some("/cache/bad"));
        assert!(problems[0].message.contains("OCEAN_PORT=\"99999\""));
    }
}

#[cfg(test)]
mod label_names {
    use super::*;
    use crate::derive::fixtures::{state, task};
    use ocean_core::table::Table;

    #[test]
    fn a_name_the_table_would_refuse_leaves_out_only_its_app() {
        let long = "c".repeat(300);
        let json = format!(
            r#"{{"apps":[
            {{"id":"/a","labels":{{"OCEAN_REDIS_CLUSTER":"{long}"}},"portDefinitions":[{{"port":6390}}],"tasks":[{}]}},
            {{"id":"/b","labels":{{"OCEAN_REDIS_CLUSTER":"ok"}},"portDefinitions":[{{"port":6391}}],"tasks":[{}]}}
            ]}}"#,
            task("a.1", "10.0.0.1", &[7000]),
            task("b.1", "10.0.0.2", &[7000]),
        );
        let mut problems = Vec::new();
        let t = derive(&state(&json), &Owners::default(), &mut problems);
        t.validate().unwrap();
        assert_eq!(t.clusters.len(), 1);
        assert!(
            problems[0].message.contains("longer than 255 bytes"),
            "{problems:?}"
        );
    }
}

#[cfg(test)]
mod ownership_rules {
    use super::*;
    use crate::derive::fixtures::{state, task};
    use crate::ownership::AppPrefix;
    use ocean_core::table::Table;

    fn apps() -> String {
        format!(
            r#"{{"apps":[
            {{"id":"/cache/sessions","labels":{{"OCEAN_REDIS_CLUSTER":"sessions"}},"portDefinitions":[{{"port":6390}}],"tasks":[{}]}},
            {{"id":"/evil/seed","labels":{{"OCEAN_REDIS_CLUSTER":"sessions"}},"portDefinitions":[{{"port":6390}}],"tasks":[{}]}},
            {{"id":"/evil/port","labels":{{"OCEAN_REDIS_CLUSTER":"mine"}},"portDefinitions":[{{"port":6390}}],"tasks":[{}]}}
            ]}}"#,
            task("s.1", "10.0.0.1", &[7000]),
            task("e.1", "10.6.6.1", &[7000]),
            task("e.2", "10.6.6.2", &[7000]),
        )
    }

    #[test]
    fn without_a_rule_a_name_claimed_across_groups_is_refused_for_all() {
        let mut problems = Vec::new();
        let t = derive(&state(&apps()), &Owners::default(), &mut problems);
        t.validate().unwrap();
        // "sessions" is a conflict; "mine" then has port 6390 to itself.
        let names: Vec<&str> = t.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["mine"]);
        let refused: Vec<&str> = problems
            .iter()
            .filter(|p| {
                p.message
                    .contains("conflict: claimed by apps of several top-level groups")
            })
            .filter_map(|p| p.app.as_deref())
            .collect();
        assert_eq!(
            refused,
            vec!["/cache/sessions", "/evil/seed"],
            "{problems:?}"
        );
    }

    #[test]
    fn with_a_rule_the_owner_keeps_its_cluster_and_its_port() {
        let mut owners = Owners::default();
        owners.redis_clusters.insert(
            "sessions".into(),
            vec![AppPrefix::parse("/cache/").unwrap()],
        );
        let mut problems = Vec::new();
        let t = derive(&state(&apps()), &owners, &mut problems);
        t.validate().unwrap();
        assert_eq!(t.clusters.len(), 1);
        assert_eq!(t.clusters[0].name, "sessions");
        assert_eq!(
            t.clusters[0].nodes,
            vec!["10.0.0.1:7000".parse().unwrap()],
            "the thief's task is no seed"
        );
        let msg = |app: &str| {
            problems
                .iter()
                .find(|p| p.app.as_deref() == Some(app))
                .map(|p| p.message.clone())
                .unwrap_or_default()
        };
        assert!(
            msg("/evil/seed")
                .contains("refused by [redis.clusters.\"sessions\"] apps = [\"/cache/\"]"),
            "{problems:?}"
        );
        assert!(
            msg("/evil/port")
                .contains("conflict: listen port 6390 is also wanted by cluster sessions"),
            "{problems:?}"
        );
    }
}
