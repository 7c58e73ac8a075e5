//! Derive: pure functions from the normalized Marathon [`State`] to one table per kind.
//!
//! Each function returns its table and the problems it found. An app whose labels cannot be
//! used for a table is left out of that table and reported; every other app still counts.

pub mod dns;
pub mod dns_index;
pub mod lb_names;
pub mod lvs;
pub mod memcached;
pub mod mysql;
pub mod names;
pub mod redis;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ocean_core::table::{DnsTable, LvsTable, MemcachedTable, MysqlTable, RedisTable, TableKind};
use serde::Serialize;

use crate::ownership::{self, NameRule, Owners};
use crate::state::{App, State};

/// Why an app (or a whole source) did not make it into a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<TableKind>,
    pub message: String,
}

impl Problem {
    pub fn app(app: &App, table: TableKind, message: impl Into<String>) -> Problem {
        Problem::for_app(&app.id, table, message)
    }

    pub fn for_app(app_id: &str, table: TableKind, message: impl Into<String>) -> Problem {
        Problem {
            app: Some(app_id.to_string()),
            table: Some(table),
            message: message.into(),
        }
    }
}

/// Settings derive needs beyond Marathon's state.
#[derive(Debug, Clone, PartialEq)]
pub struct DeriveConfig {
    pub dns: dns::DnsSettings,
    pub mysql: mysql::MysqlConfig,
    /// Who may claim Redis clusters, memcached pools and VIPs.
    pub owners: Owners,
}

/// Every table derived from one state, and what was wrong.
#[derive(Debug, Clone, Default)]
pub struct Derived {
    pub dns: DnsTable,
    pub redis: RedisTable,
    pub memcached: MemcachedTable,
    pub mysql: MysqlTable,
    pub lvs: LvsTable,
    pub problems: Vec<Problem>,
    /// The dns names that may differ from the table derived from the dns index's last
    /// state (the names it rebuilt, and the load balancers' names added now); `None` for
    /// a whole derive. The load balancers' names of that last table are not in it.
    pub dns_touched: Option<Vec<String>>,
    /// The load balancers' names added to `dns`.
    pub dns_lb_names: Vec<String>,
    /// Whether `dns` is a recycled table rewritten (see [`dns_index::Recycled`]).
    pub dns_recycled: bool,
}

/// Derives every table.
pub fn derive_all(state: &State, config: &DeriveConfig) -> Derived {
    let mut problems = Vec::new();
    let dns = dns::derive(state, &config.dns, &mut problems);
    derive_rest(state, config, dns, problems)
}

/// What [`derive_all`] derives, with the dns names patched by `index` from the state it
/// last held (see [`dns_index`]), in `recycled`'s table when it can; `None` when the index
/// declines, and then it is unchanged. The dns names are nearly all of derive's time; the
/// other tables are derived whole.
pub fn derive_all_patched(
    state: &Arc<State>,
    config: &DeriveConfig,
    index: &mut dns_index::DnsIndex,
    recycled: Option<dns_index::Recycled>,
) -> Option<Derived> {
    let patched = index.patch(state, &config.dns, recycled)?;
    let mut derived = derive_rest(state, config, patched.table, patched.problems);
    let mut touched = patched.touched;
    touched.extend(derived.dns_lb_names.iter().cloned());
    derived.dns_touched = Some(touched);
    derived.dns_recycled = patched.recycled;
    Some(derived)
}

/// Every table but the Mesos-DNS names, given those (`dns`) and their problems.
fn derive_rest(
    state: &State,
    config: &DeriveConfig,
    mut dns: DnsTable,
    mut problems: Vec<Problem>,
) -> Derived {
    let dns_lb_names = lb_names::derive(
        state,
        &config.dns,
        &config.owners.vips,
        &mut dns,
        &mut problems,
    );
    let redis = redis::derive(state, &config.owners, &mut problems);
    let memcached = memcached::derive(state, &config.owners, &mut problems);
    let mysql = mysql::derive(state, &config.mysql, &mut problems);
    let lvs = lvs::derive(state, &config.owners.vips, &config.dns.views, &mut problems);
    Derived {
        dns,
        redis,
        memcached,
        mysql,
        lvs,
        problems,
        dns_touched: None,
        dns_lb_names,
        dns_recycled: false,
    }
}

/// The claimants of one shared name (a Redis cluster, a memcached pool) that its ownership
/// rule accepted, in app order.
pub(crate) struct NameClaim<'a> {
    pub name: String,
    pub apps: Vec<&'a App>,
    /// Whether control.toml names the owners (it then wins a contested listen port).
    pub configured: bool,
}

/// Groups `claims` by name and keeps the apps each name's rule accepts; every refusal
/// becomes a problem naming the app, the label and the rule. `section` is the control.toml
/// table that holds the rules (`redis.clusters`).
pub(crate) fn judge_claims<'a, 'r>(
    label: &str,
    section: &str,
    table: TableKind,
    claims: Vec<(String, &'a App)>,
    rule: impl Fn(&str) -> NameRule<'r>,
    problems: &mut Vec<Problem>,
) -> Vec<NameClaim<'a>> {
    let mut out = Vec::new();
    for (name, apps) in ownership::by_name(claims) {
        let r = rule(&name);
        let configured = matches!(r, NameRule::Configured(_));
        let ids: Vec<&str> = apps.iter().map(|a| a.id.as_str()).collect();
        let verdict =
            ownership::judge_name(label, &name, &format!("[{section}.{name:?}]"), r, &ids);
        for (id, why) in verdict.refused {
            problems.push(Problem::for_app(id, table, why));
        }
        let apps: Vec<&App> = apps
            .into_iter()
            .filter(|a| verdict.accepted.contains(&a.id.as_str()))
            .collect();
        if !apps.is_empty() {
            out.push(NameClaim {
                name,
                apps,
                configured,
            });
        }
    }
    out
}

/// For listen ports wanted by several names: each name that does not get its port, with the
/// other names that wanted it (see [`ownership::port_owner`]).
pub(crate) fn port_losers(wants: &[(u16, &str, bool)]) -> BTreeMap<String, Vec<String>> {
    let mut by_port: BTreeMap<u16, Vec<(&str, bool)>> = BTreeMap::new();
    for (port, name, configured) in wants {
        by_port.entry(*port).or_default().push((name, *configured));
    }
    let mut losers = BTreeMap::new();
    for contenders in by_port.values() {
        let winner = ownership::port_owner(contenders);
        for (name, _) in contenders {
            if Some(*name) != winner {
                let others = contenders
                    .iter()
                    .map(|(n, _)| n.to_string())
                    .filter(|n| n != name)
                    .collect();
                losers.insert(name.to_string(), others);
            }
        }
    }
    losers
}

/// The port a router listens on for an app: label `OCEAN_PORT`, else its first service port.
pub(crate) fn listen_port(app: &App) -> Result<u16, String> {
    if let Some(p) = app.labels.get("OCEAN_PORT") {
        return match p.trim().parse::<u16>() {
            Ok(p) if p != 0 => Ok(p),
            _ => Err(format!("OCEAN_PORT={p:?} is not a port (1-65535)")),
        };
    }
    match app.service_ports.first() {
        Some(p) if *p != 0 => Ok(*p),
        _ => Err("the app has no service port; set one or the label OCEAN_PORT".into()),
    }
}

/// Backend addresses of an app: each live task's IP with its first port.
pub(crate) fn task_addrs(app: &App) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = app
        .live_tasks()
        .filter_map(|t| match (t.ip, t.ports.first()) {
            (Some(ip), Some(port)) if *port != 0 => Some(SocketAddr::new(ip, *port)),
            _ => None,
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::marathon::model::parse_apps;
    use crate::state::{normalize, HealthMemory, Resolved, State};

    /// Normalized state from Marathon JSON.
    pub fn state(json: &str) -> State {
        let (apps, bad) = parse_apps(json.as_bytes()).unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        normalize(&apps, &Resolved::new(), &mut HealthMemory::default())
    }

    /// One running task JSON object.
    pub fn task(id: &str, host: &str, ports: &[u16]) -> String {
        format!(
            r#"{{"id":"{id}","host":"{host}","ports":{ports:?},"state":"TASK_RUNNING","slaveId":"20140803-125133-3041283216-5050-2410-S0"}}"#
        )
    }
}
