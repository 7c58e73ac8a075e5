//! The `mysql` table: databases (backend credentials and instances) and jobs (the IPs they
//! may log in from and the databases granted to them).
//!
//! This table carries backend passwords: control serves it only to holders of its API token
//! when one is configured, and proxies write their cache file with mode 0600.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::{check_name, Problems, Table, TableError, TableKind};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlTable {
    #[serde(default)]
    pub databases: Vec<MysqlDatabase>,
    #[serde(default)]
    pub jobs: Vec<MysqlJob>,
}

/// One logical database (label `OCEAN_MYSQL_DB=/dept/product/name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlDatabase {
    /// The `OCEAN_MYSQL_DB` name, e.g. `/miui/browser/key`.
    pub name: String,
    /// The current primary, if one is running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<SocketAddr>,
    /// Running replicas.
    #[serde(default)]
    pub replicas: Vec<SocketAddr>,
    /// Running tasks of apps with `OCEAN_MYSQL_ROLE=auto` (or no role): the proxy probes
    /// each for `@@read_only` and routes writes to the writable one (primary discovery).
    /// Never holds the primary or a replica.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<SocketAddr>,
    /// Credentials for read-only sessions; `rw` is used when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ro: Option<Credentials>,
    /// Credentials for read-write sessions.
    pub rw: Credentials,
    /// The schema clients name in their handshake or `USE`.
    pub schema: String,
    /// Idle backend connections the proxy keeps per server and credentials for reuse by
    /// later sessions (`pool_max` in control.toml); 0 turns reuse off; absent: the proxy's
    /// default (100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_max: Option<u32>,
    /// Sessions give their backend connection back between plain reads (`multiplex` in
    /// control.toml; needs `pool_max`); absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplex: Option<bool>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub password: String,
    pub user: String,
}

impl std::fmt::Debug for Credentials {
    // Never print a password, not even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Read-write: sessions go to the primary.
    Rw,
    /// Read-only: sessions go to a replica when one is up, else the primary, as the ro user.
    Ro,
}

/// One job (JOBNAME) that may log in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlJob {
    pub grants: Vec<Grant>,
    /// IPs of the job's running tasks: the only peers allowed to log in as this job.
    pub ips: Vec<IpAddr>,
    /// JOBNAME: label `OCEAN_JOBNAME`, else the app id without its leading slash.
    pub name: String,
    /// An optional password on top of IP + JOBNAME, stored as hashes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<JobPassword>,
    /// When set, the job logs in only over TLS with a client certificate that verifies
    /// against the proxy's `--client-ca` and whose subject CN is exactly this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_cert_cn: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub access: Access,
    /// A database `name` from `databases`.
    pub database: String,
}

/// The hashes a proxy needs to check a password without knowing it: `SHA1(SHA1(pw))` for
/// `mysql_native_password` and `SHA256(SHA256(pw))` for `caching_sha2_password`, hex.
/// Hashes that are not 40 and 64 hex digits refuse the job at the proxy (never a login by
/// IP alone); they do not invalidate the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobPassword {
    pub sha1_sha1: String,
    pub sha256_sha256: String,
}

impl Table for MysqlTable {
    const KIND: TableKind = TableKind::Mysql;

    fn validate(&self) -> Result<(), TableError> {
        let mut p = Problems::default();
        let mut by_name = HashMap::new();
        let mut schemas = HashSet::new();
        for (i, db) in self.databases.iter().enumerate() {
            let entry = format!("databases[{i}] ({})", db.name);
            check_name(&mut p, &entry, &db.name);
            if by_name.insert(db.name.as_str(), db).is_some() {
                p.push(&entry, "duplicate database name");
            }
            if db.schema.is_empty() || db.schema.len() > 64 {
                p.push(&entry, "schema must be 1 to 64 bytes");
            } else if !schemas.insert(db.schema.as_str()) {
                p.push(
                    &entry,
                    format!("schema {:?} belongs to another database", db.schema),
                );
            }
            for (what, c) in std::iter::once(("rw", &db.rw)).chain(db.ro.iter().map(|c| ("ro", c)))
            {
                if c.user.is_empty() || c.user.len() > 80 {
                    p.push(&entry, format!("{what} user must be 1 to 80 bytes"));
                }
            }
            let mut seen = HashSet::new();
            for a in db.primary.iter().chain(&db.replicas).chain(&db.candidates) {
                if a.port() == 0 {
                    p.push(&entry, format!("instance {a} has port 0"));
                }
                if !seen.insert(a) {
                    p.push(&entry, format!("instance {a} is listed twice"));
                }
            }
        }
        let mut jobs = HashSet::new();
        for (i, job) in self.jobs.iter().enumerate() {
            let entry = format!("jobs[{i}] ({})", job.name);
            check_name(&mut p, &entry, &job.name);
            if job.name.len() > 80 {
                p.push(
                    &entry,
                    "job name is longer than 80 bytes (MySQL's user name limit)",
                );
            }
            if !jobs.insert(&job.name) {
                p.push(&entry, "duplicate job name");
            }
            for g in &job.grants {
                if !by_name.contains_key(g.database.as_str()) {
                    p.push(
                        &entry,
                        format!("grant names unknown database {:?}", g.database),
                    );
                }
            }
            // A job whose password hashes are not hex of the right length is not a reason
            // to refuse the whole table (every other job and database would freeze on the
            // last good one): the proxy refuses that one job, fail-closed, and says why.
        }
        p.into_result(TableKind::Mysql)
    }

    fn backend_count(&self) -> usize {
        let instances: usize = self
            .databases
            .iter()
            .map(|d| usize::from(d.primary.is_some()) + d.replicas.len())
            .sum();
        let ips: usize = self.jobs.iter().map(|j| j.ips.len()).sum();
        instances + ips
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(name: &str, schema: &str) -> MysqlDatabase {
        MysqlDatabase {
            name: name.into(),
            schema: schema.into(),
            rw: Credentials {
                user: "rw".into(),
                password: "secret".into(),
            },
            ro: None,
            primary: "127.0.0.1:3306".parse().ok(),
            replicas: vec![],
            candidates: vec![],
            pool_max: None,
            multiplex: None,
        }
    }

    #[test]
    fn grants_must_name_known_databases_and_schemas_are_unique() {
        let t = MysqlTable {
            databases: vec![db("/a/b/key", "key"), db("/a/c/key", "key")],
            jobs: vec![MysqlJob {
                name: "a/web".into(),
                ips: vec![],
                grants: vec![Grant {
                    database: "/nope".into(),
                    access: Access::Ro,
                }],
                password: None,
                require_cert_cn: None,
            }],
        };
        let err = t
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("schema \"key\" belongs to another database"),
            "{err}"
        );
        assert!(
            err.contains("grant names unknown database \"/nope\""),
            "{err}"
        );
    }

    #[test]
    fn credentials_never_print_their_password() {
        let c = Credentials {
            user: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
