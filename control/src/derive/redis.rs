//! The `redis` table: apps labelled `OCEAN_REDIS_CLUSTER=name` are nodes of that cluster.

use std::collections::BTreeMap;

use ocean_core::table::redis::{RedisCluster, RedisTable};
use ocean_core::table::{name_problem, TableKind};

use super::{listen_port, task_addrs, Problem};
use crate::state::State;

pub fn derive(state: &State, problems: &mut Vec<Problem>) -> RedisTable {
    let mut clusters: BTreeMap<String, RedisCluster> = BTreeMap::new();
    let mut port_owner: BTreeMap<u16, String> = BTreeMap::new();
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
        let port = match listen_port(app) {
            Ok(p) => p,
            Err(e) => {
                problems.push(Problem::app(app, TableKind::Redis, e));
                continue;
            }
        };
        if let Some(owner) = port_owner.get(&port).filter(|o| o.as_str() != name) {
            problems.push(Problem::app(
                app,
                TableKind::Redis,
                format!("listen port {port} is already used by redis cluster {owner:?}"),
            ));
            continue;
        }
        match clusters.get_mut(name) {
            Some(c) if c.listen_port != port => {
                problems.push(Problem::app(
                    app,
                    TableKind::Redis,
                    format!("cluster {name:?} listens on {} (from an earlier app); this app says {port}", c.listen_port),
                ));
                continue;
            }
            Some(c) => c.nodes.extend(task_addrs(app)),
            None => {
                port_owner.insert(port, name.to_string());
                clusters.insert(
                    name.to_string(),
                    RedisCluster {
                        name: name.to_string(),
                        listen_port: port,
                        nodes: task_addrs(app),
                    },
                );
            }
        }
    }
    let mut out = Vec::new();
    for (name, mut c) in clusters {
        c.nodes.sort();
        c.nodes.dedup();
        if c.nodes.is_empty() {
            problems.push(Problem {
                app: None,
                table: Some(TableKind::Redis),
                message: format!("redis cluster {name:?} has no running nodes; left out"),
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
        let t = derive(&state(&json), &mut problems);
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
        let t = derive(&state(&json), &mut problems);
        t.validate().unwrap();
        assert_eq!(t.clusters.len(), 1);
        assert!(
            problems[0].message.contains("longer than 255 bytes"),
            "{problems:?}"
        );
    }
}
