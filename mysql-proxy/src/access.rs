//! Who may log in where: the `mysql` table indexed for the login path.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ocean_core::table::mysql::{Access, Credentials, MysqlDatabase, MysqlTable};

use crate::auth::PasswordHashes;

/// One job's right to log in.
pub struct JobEntry {
    pub ips: HashSet<IpAddr>,
    /// Database name -> access.
    pub grants: HashMap<String, Access>,
    pub password: Option<PasswordHashes>,
}

/// The table, indexed.
pub struct Index {
    pub etag: String,
    pub jobs: HashMap<String, JobEntry>,
    /// Schema -> database.
    pub schemas: HashMap<String, Arc<MysqlDatabase>>,
    /// Database name -> database.
    pub databases: HashMap<String, Arc<MysqlDatabase>>,
}

/// Why a login is refused; each maps to the MySQL error a client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    UnknownJob,
    IpNotAllowed,
    BadPassword,
    /// Not granted, or no such schema: the same error, so names do not leak.
    SchemaNotGranted,
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::UnknownJob => "unknown job",
            Refusal::IpNotAllowed => "peer IP is not a running task of the job",
            Refusal::BadPassword => "wrong or missing job password",
            Refusal::SchemaNotGranted => "schema not granted to the job (or nonexistent)",
        }
    }
}

/// Where an authorized session goes.
#[derive(Debug, Clone)]
pub struct Route {
    pub database: Arc<MysqlDatabase>,
    pub access: Access,
}

impl Index {
    pub fn build(etag: &str, table: &MysqlTable) -> Index {
        let databases: HashMap<String, Arc<MysqlDatabase>> = table
            .databases
            .iter()
            .map(|d| (d.name.clone(), Arc::new(d.clone())))
            .collect();
        let schemas = databases
            .values()
            .map(|d| (d.schema.clone(), d.clone()))
            .collect();
        let jobs = table
            .jobs
            .iter()
            .map(|j| {
                let mut grants = HashMap::new();
                for g in &j.grants {
                    // rw wins when a job is granted both.
                    let e = grants.entry(g.database.clone()).or_insert(g.access);
                    if g.access == Access::Rw {
                        *e = Access::Rw;
                    }
                }
                let entry = JobEntry {
                    ips: j.ips.iter().map(|ip| ip.to_canonical()).collect(),
                    grants,
                    password: j
                        .password
                        .as_ref()
                        .and_then(|p| PasswordHashes::from_hex(&p.sha1_sha1, &p.sha256_sha256)),
                };
                (j.name.clone(), entry)
            })
            .collect();
        Index {
            etag: etag.to_string(),
            jobs,
            schemas,
            databases,
        }
    }

    /// Whether `peer` may log in as `job`: the peer IP itself, or for a loopback peer
    /// at 127.0.0.1/::1 any of this host's addresses, must be an IP of the job's tasks.
    pub fn ip_allowed(job: &JobEntry, peer: IpAddr, host_ips: &[IpAddr]) -> bool {
        let peer = peer.to_canonical();
        if job.ips.contains(&peer) {
            return true;
        }
        let is_local = peer == IpAddr::from([127, 0, 0, 1])
            || peer == IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]);
        is_local
            && host_ips
                .iter()
                .any(|ip| job.ips.contains(&ip.to_canonical()))
    }

    /// The route for `schema`, if the job is granted the database that owns it.
    pub fn route(&self, job: &JobEntry, schema: &str) -> Option<Route> {
        let database = self.schemas.get(schema)?;
        let access = *job.grants.get(&database.name)?;
        Some(Route {
            database: database.clone(),
            access,
        })
    }
}

/// The backend addresses to try for a route, in order, and the credentials to use.
pub fn backends(route: &Route, rr: &AtomicUsize) -> (Vec<SocketAddr>, Credentials) {
    let db = &route.database;
    match route.access {
        Access::Rw => (db.primary.into_iter().collect(), db.rw.clone()),
        Access::Ro => {
            let creds = db.ro.clone().unwrap_or_else(|| db.rw.clone());
            let mut out = Vec::with_capacity(db.replicas.len() + 1);
            if !db.replicas.is_empty() {
                let start = rr.fetch_add(1, Ordering::Relaxed);
                for i in 0..db.replicas.len() {
                    out.push(db.replicas[(start + i) % db.replicas.len()]);
                }
            }
            out.extend(db.primary);
            (out, creds)
        }
    }
}

/// Whether a session on `backend` for `route` still belongs there under the new table:
/// rw sessions must be on the primary; ro sessions on any listed instance.
pub fn still_placed(db: Option<&MysqlDatabase>, access: Access, backend: SocketAddr) -> bool {
    let Some(db) = db else { return false };
    match access {
        Access::Rw => db.primary == Some(backend),
        Access::Ro => db.primary == Some(backend) || db.replicas.contains(&backend),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ocean_core::table::mysql::{Grant, MysqlJob};

    fn table() -> MysqlTable {
        MysqlTable {
            databases: vec![MysqlDatabase {
                name: "/a/b/shop".into(),
                primary: "127.0.0.1:3306".parse().ok(),
                replicas: vec!["127.0.0.1:3307".parse().unwrap()],
                ro: None,
                rw: Credentials {
                    user: "u".into(),
                    password: "p".into(),
                },
                schema: "shop".into(),
            }],
            jobs: vec![MysqlJob {
                name: "web".into(),
                ips: vec!["10.0.0.5".parse().unwrap()],
                grants: vec![Grant {
                    database: "/a/b/shop".into(),
                    access: Access::Ro,
                }],
                password: None,
            }],
        }
    }

    #[test]
    fn loopback_peer_counts_as_host_addresses_only_for_127_0_0_1() {
        let idx = Index::build("e", &table());
        let job = &idx.jobs["web"];
        let host = ["10.0.0.5".parse().unwrap()];
        assert!(Index::ip_allowed(job, "10.0.0.5".parse().unwrap(), &[]));
        assert!(Index::ip_allowed(job, "127.0.0.1".parse().unwrap(), &host));
        assert!(Index::ip_allowed(job, "::1".parse().unwrap(), &host));
        assert!(!Index::ip_allowed(job, "127.0.0.2".parse().unwrap(), &host));
        assert!(!Index::ip_allowed(job, "127.0.0.1".parse().unwrap(), &[]));
        assert!(Index::ip_allowed(
            job,
            "::ffff:10.0.0.5".parse().unwrap(),
            &[]
        ));
    }

    #[test]
    fn ro_routes_prefer_replicas_then_primary() {
        let idx = Index::build("e", &table());
        let route = idx.route(&idx.jobs["web"], "shop").unwrap();
        let (addrs, _) = backends(&route, &AtomicUsize::new(0));
        assert_eq!(addrs.len(), 2);
        assert_eq!(addrs[0].port(), 3307);
        assert!(idx.route(&idx.jobs["web"], "nope").is_none());
    }
}
