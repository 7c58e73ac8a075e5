//! Derive: pure functions from the normalized Marathon [`State`] to one table per kind.
//!
//! Each function returns its table and the problems it found. An app whose labels cannot be
//! used for a table is left out of that table and reported; every other app still counts.

pub mod dns;
pub mod lvs;
pub mod memcached;
pub mod mysql;
pub mod names;
pub mod redis;

use std::net::SocketAddr;

use ocean_core::table::{DnsTable, LvsTable, MemcachedTable, MysqlTable, RedisTable, TableKind};
use serde::Serialize;

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
        Problem {
            app: Some(app.id.clone()),
            table: Some(table),
            message: message.into(),
        }
    }
}

/// Settings derive needs beyond Marathon's state.
#[derive(Debug, Clone)]
pub struct DeriveConfig {
    pub dns: dns::DnsSettings,
    pub mysql: mysql::MysqlSecrets,
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
}

/// Derives every table.
pub fn derive_all(state: &State, config: &DeriveConfig) -> Derived {
    let mut problems = Vec::new();
    let dns = dns::derive(state, &config.dns, &mut problems);
    let redis = redis::derive(state, &mut problems);
    let memcached = memcached::derive(state, &mut problems);
    let mysql = mysql::derive(state, &config.mysql, &mut problems);
    let lvs = lvs::derive(state, &mut problems);
    Derived {
        dns,
        redis,
        memcached,
        mysql,
        lvs,
        problems,
    }
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
