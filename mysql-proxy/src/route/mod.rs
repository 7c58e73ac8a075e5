//! Who may log in where, and to which backend: the `mysql` table indexed for the login
//! path ([`Index`], built off the hot path and swapped in whole), the [`Route`] of a
//! session (database, access, backend credentials), the backends to try in order, and the
//! [`registry`] of open sessions that a new table is applied to.

pub mod registry;

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
    pub password: PasswordCheck,
    /// The subject CN a verified client certificate must carry (`require_cert_cn`).
    pub require_cert_cn: Option<String>,
}

impl JobEntry {
    /// Whether a login with this verified client-certificate CN (`None`: no TLS, or no
    /// certificate) meets the job's `require_cert_cn`.
    ///
    /// # Errors
    /// [`Refusal::CertRequired`] when the job requires a CN the login does not carry.
    pub fn check_cert(&self, client_cn: Option<&str>) -> Result<(), Refusal> {
        match (&self.require_cert_cn, client_cn) {
            (None, _) => Ok(()),
            (Some(want), Some(got)) if want == got => Ok(()),
            (Some(_), Some(_)) => Err(Refusal::CertRequired { presented: true }),
            (Some(_), None) => Err(Refusal::CertRequired { presented: false }),
        }
    }
}

/// What a job's password entry in the table asks of a login.
pub enum PasswordCheck {
    /// No password: IP + JOBNAME only.
    None,
    /// The client's scramble must match these hashes.
    Hashes(PasswordHashes),
    /// The table has a password for the job but its hashes do not decode: the job is
    /// refused until the entry is fixed (never let in by IP alone).
    Unparsable,
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
    /// The job's password hashes in the table do not decode.
    BrokenPassword,
    /// An `ro` grant on a database that has no `ro` credentials: the `rw` ones are never
    /// used instead.
    NoRoCredentials,
    /// The job requires a verified client certificate with its CN (`require_cert_cn`):
    /// none was presented (or no TLS), or its CN is another.
    CertRequired {
        presented: bool,
    },
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::UnknownJob => "unknown job",
            Refusal::IpNotAllowed => "peer IP is not a running task of the job",
            Refusal::BadPassword => "wrong or missing job password",
            Refusal::SchemaNotGranted => "schema not granted to the job (or nonexistent)",
            Refusal::BrokenPassword => {
                "the table's password entry for the job is unparsable: job refused until it is fixed"
            }
            Refusal::NoRoCredentials => {
                "ro grant on a database with no ro credentials (the rw ones are never used for ro)"
            }
            Refusal::CertRequired { presented: false } => {
                "the job requires a verified client certificate (require_cert_cn): none presented over TLS"
            }
            Refusal::CertRequired { presented: true } => {
                "the job requires a verified client certificate (require_cert_cn): the certificate's CN is another"
            }
        }
    }

    /// The `result` label of `ocean_mysql_logins_total` for this refusal.
    pub fn metric(&self) -> &'static str {
        match self {
            Refusal::UnknownJob => "unknown_job",
            Refusal::IpNotAllowed => "ip_not_allowed",
            Refusal::BadPassword => "bad_password",
            Refusal::SchemaNotGranted => "schema_not_granted",
            Refusal::BrokenPassword => "broken_password",
            Refusal::NoRoCredentials => "no_ro_credentials",
            Refusal::CertRequired { .. } => "cert_required",
        }
    }
}

/// Where an authorized session goes, and as whom the proxy logs in there.
#[derive(Debug, Clone)]
pub struct Route {
    pub database: Arc<MysqlDatabase>,
    pub access: Access,
    /// `rw` for rw grants, `ro` for ro grants; chosen once, here (see [`Route::new`]).
    pub credentials: Credentials,
}

impl Route {
    /// The route for `access` on `database`.
    ///
    /// # Errors
    /// [`Refusal::NoRoCredentials`] for `ro` on a database without `ro` credentials: a
    /// read-only grant never borrows the read-write user (fail closed, whatever control sent).
    pub fn new(database: &Arc<MysqlDatabase>, access: Access) -> Result<Route, Refusal> {
        let credentials = match access {
            Access::Rw => database.rw.clone(),
            Access::Ro => database.ro.clone().ok_or(Refusal::NoRoCredentials)?,
        };
        Ok(Route {
            database: database.clone(),
            access,
            credentials,
        })
    }
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
        let mut broken = 0usize;
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
                let password = match &j.password {
                    None => PasswordCheck::None,
                    Some(p) => match PasswordHashes::from_hex(&p.sha1_sha1, &p.sha256_sha256) {
                        Some(h) => PasswordCheck::Hashes(h),
                        None => {
                            broken += 1;
                            tracing::error!(job = %j.name, etag, "mysql table: the job's password hashes do not decode; the job is refused until the entry is fixed");
                            PasswordCheck::Unparsable
                        }
                    },
                };
                let entry = JobEntry {
                    ips: j.ips.iter().map(|ip| ip.to_canonical()).collect(),
                    grants,
                    password,
                    require_cert_cn: j.require_cert_cn.clone(),
                };
                (j.name.clone(), entry)
            })
            .collect();
        metrics::gauge!("ocean_mysql_jobs_broken_password").set(broken as f64);
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

    /// Whether `peer` may log in as `job`, before any schema is looked at: the job exists,
    /// the peer is one of its tasks, and the job's password (if the table sets one) checks
    /// out with `verify`, which is given the job's hashes.
    ///
    /// # Errors
    /// The [`Refusal`] to answer with (all of them 1045 to the client).
    pub fn admit(
        &self,
        job: &str,
        peer: IpAddr,
        host_ips: &[IpAddr],
        verify: impl FnOnce(&PasswordHashes) -> bool,
    ) -> Result<&JobEntry, Refusal> {
        let entry = self.jobs.get(job).ok_or(Refusal::UnknownJob)?;
        if !Index::ip_allowed(entry, peer, host_ips) {
            return Err(Refusal::IpNotAllowed);
        }
        match &entry.password {
            PasswordCheck::None => {}
            PasswordCheck::Hashes(h) => {
                if !verify(h) {
                    return Err(Refusal::BadPassword);
                }
            }
            PasswordCheck::Unparsable => return Err(Refusal::BrokenPassword),
        }
        Ok(entry)
    }

    /// The route for `schema`.
    ///
    /// # Errors
    /// [`Refusal::SchemaNotGranted`] when the schema is unknown or its database is not
    /// granted to the job; [`Refusal::NoRoCredentials`] for an `ro` grant on a database
    /// without `ro` credentials.
    pub fn route(&self, job: &JobEntry, schema: &str) -> Result<Route, Refusal> {
        let database = self.schemas.get(schema).ok_or(Refusal::SchemaNotGranted)?;
        let access = *job
            .grants
            .get(&database.name)
            .ok_or(Refusal::SchemaNotGranted)?;
        Route::new(database, access)
    }

    /// The route of a login that names no schema: the first usable grant by database name,
    /// `ro` ones first.
    ///
    /// # Errors
    /// [`Refusal::NoRoCredentials`] when every grant is an `ro` one without `ro`
    /// credentials, else [`Refusal::SchemaNotGranted`] when nothing is usable.
    pub fn default_route(&self, job: &JobEntry) -> Result<Route, Refusal> {
        let mut granted: Vec<(&String, &Access)> = job.grants.iter().collect();
        granted.sort_by_key(|(name, access)| (**access != Access::Ro, *name));
        let mut refusal = Refusal::SchemaNotGranted;
        for (name, access) in granted {
            let Some(database) = self.databases.get(name) else {
                continue;
            };
            match Route::new(database, *access) {
                Ok(r) => return Ok(r),
                Err(e) => refusal = e,
            }
        }
        Err(refusal)
    }
}

/// The backend addresses to try for a route, in order (log in with `route.credentials`).
pub fn backends(route: &Route, rr: &AtomicUsize) -> Vec<SocketAddr> {
    let db = &route.database;
    match route.access {
        Access::Rw => db.primary.into_iter().collect(),
        Access::Ro => {
            let mut out = Vec::with_capacity(db.replicas.len() + 1);
            if !db.replicas.is_empty() {
                let start = rr.fetch_add(1, Ordering::Relaxed);
                for i in 0..db.replicas.len() {
                    out.push(db.replicas[(start + i) % db.replicas.len()]);
                }
            }
            out.extend(db.primary);
            out
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
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ocean_core::table::mysql::{Grant, JobPassword, MysqlJob};

    fn creds(user: &str) -> Credentials {
        Credentials {
            user: user.into(),
            password: format!("{user}-pw"),
        }
    }

    fn db(name: &str, schema: &str, ro: Option<Credentials>) -> MysqlDatabase {
        MysqlDatabase {
            name: name.into(),
            primary: "127.0.0.1:3306".parse().ok(),
            replicas: vec!["127.0.0.1:3307".parse().unwrap()],
            candidates: vec![],
            ro,
            rw: creds("rw"),
            schema: schema.into(),
            pool_max: None,
            multiplex: None,
        }
    }

    fn job(name: &str, grants: &[(&str, Access)], password: Option<JobPassword>) -> MysqlJob {
        MysqlJob {
            name: name.into(),
            ips: vec!["10.0.0.5".parse().unwrap()],
            grants: grants
                .iter()
                .map(|(d, a)| Grant {
                    database: (*d).into(),
                    access: *a,
                })
                .collect(),
            password,
            require_cert_cn: None,
        }
    }

    fn table() -> MysqlTable {
        MysqlTable {
            databases: vec![
                db("/a/b/shop", "shop", Some(creds("ro"))),
                db("/a/b/logs", "logs", None),
            ],
            jobs: vec![
                job("web", &[("/a/b/shop", Access::Ro)], None),
                job(
                    "reader",
                    &[("/a/b/logs", Access::Ro), ("/a/b/shop", Access::Rw)],
                    None,
                ),
                job("only-logs", &[("/a/b/logs", Access::Ro)], None),
                job(
                    "broken",
                    &[("/a/b/shop", Access::Rw)],
                    Some(JobPassword {
                        sha1_sha1: "not hex at all".into(),
                        sha256_sha256: "zz".into(),
                    }),
                ),
            ],
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
    fn ro_routes_prefer_replicas_then_primary_as_the_ro_user() {
        let idx = Index::build("e", &table());
        let route = idx.route(&idx.jobs["web"], "shop").unwrap();
        let addrs = backends(&route, &AtomicUsize::new(0));
        assert_eq!(addrs.len(), 2);
        assert_eq!(addrs[0].port(), 3307);
        assert_eq!(route.credentials.user, "ro");
        assert_eq!(
            idx.route(&idx.jobs["web"], "nope").unwrap_err(),
            Refusal::SchemaNotGranted
        );
        // rw grants log in as the rw user, on the primary only.
        let route = idx.route(&idx.jobs["reader"], "shop").unwrap();
        assert_eq!(route.credentials.user, "rw");
        assert_eq!(backends(&route, &AtomicUsize::new(0)).len(), 1);
    }

    #[test]
    fn ro_grant_on_a_database_without_ro_credentials_is_refused_never_rw() {
        let idx = Index::build("e", &table());
        let err = idx.route(&idx.jobs["reader"], "logs").unwrap_err();
        assert_eq!(err, Refusal::NoRoCredentials);
        assert!(
            err.reason().contains("no ro credentials"),
            "{}",
            err.reason()
        );
        // No schema: the usable rw grant is taken, never the ro one with rw credentials.
        let route = idx.default_route(&idx.jobs["reader"]).unwrap();
        assert_eq!(route.database.name, "/a/b/shop");
        assert_eq!(route.credentials.user, "rw");
        // Nothing usable at all: the refusal says why.
        assert_eq!(
            idx.default_route(&idx.jobs["only-logs"]).unwrap_err(),
            Refusal::NoRoCredentials
        );
        // And the Route type cannot be built that way.
        let logs = idx.databases["/a/b/logs"].clone();
        assert_eq!(
            Route::new(&logs, Access::Ro).unwrap_err(),
            Refusal::NoRoCredentials
        );
    }

    #[test]
    fn a_job_with_unparsable_password_hashes_is_refused_even_without_a_password() {
        let idx = Index::build("e", &table());
        let peer = "10.0.0.5".parse().unwrap();
        // The verifier would accept anything: the broken entry is refused before it runs.
        let err = idx.admit("broken", peer, &[], |_| true).err().unwrap();
        assert_eq!(err, Refusal::BrokenPassword);
        assert_eq!(err.metric(), "broken_password");
        assert!(err.reason().contains("unparsable"), "{}", err.reason());
        // From another IP it is an IP refusal, as for any job.
        let err = idx
            .admit("broken", "10.0.0.6".parse().unwrap(), &[], |_| true)
            .err()
            .unwrap();
        assert_eq!(err, Refusal::IpNotAllowed);
        // A job without a password is admitted by IP + JOBNAME; unknown jobs are not.
        assert!(idx.admit("web", peer, &[], |_| false).is_ok());
        assert_eq!(
            idx.admit("nobody", peer, &[], |_| true).err().unwrap(),
            Refusal::UnknownJob
        );
    }

    #[test]
    fn a_job_with_a_password_must_match_it() {
        let h = PasswordHashes::of("pw");
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut t = table();
        t.jobs.push(job(
            "secure",
            &[("/a/b/shop", Access::Rw)],
            Some(JobPassword {
                sha1_sha1: hex(&h.sha1_sha1),
                sha256_sha256: hex(&h.sha256_sha256),
            }),
        ));
        let idx = Index::build("e", &t);
        let peer = "10.0.0.5".parse().unwrap();
        assert_eq!(
            idx.admit("secure", peer, &[], |_| false).err().unwrap(),
            Refusal::BadPassword
        );
        assert!(idx
            .admit("secure", peer, &[], |got| got.sha1_sha1 == h.sha1_sha1)
            .is_ok());
    }

    /// Every route carries backend passwords: none may show in debug output or logs.
    #[test]
    fn route_debug_holds_no_secret() {
        let db = Arc::new(MysqlDatabase {
            name: "/a/b/shop".into(),
            primary: None,
            replicas: vec![],
            candidates: vec![],
            ro: Some(Credentials {
                user: "ro".into(),
                password: "ro-backend-secret".into(),
            }),
            rw: Credentials {
                user: "rw".into(),
                password: "rw-backend-secret".into(),
            },
            schema: "shop".into(),
            pool_max: None,
            multiplex: None,
        });
        for access in [Access::Rw, Access::Ro] {
            let route = Route::new(&db, access).unwrap();
            let shown = format!("{route:?} {route:#?}");
            assert!(!shown.contains("backend-secret"), "{shown}");
        }
    }

    #[test]
    fn require_cert_cn_needs_that_cn_from_a_verified_certificate() {
        let mut t = table();
        t.jobs[0].require_cert_cn = Some("web-client".into());
        let idx = Index::build("e1", &t);
        let entry = idx
            .jobs
            .values()
            .find(|j| j.require_cert_cn.is_some())
            .unwrap();
        assert!(entry.check_cert(Some("web-client")).is_ok());
        assert_eq!(
            entry.check_cert(Some("other")),
            Err(Refusal::CertRequired { presented: true })
        );
        let none = entry.check_cert(None).err().unwrap();
        assert_eq!(none.metric(), "cert_required");
        assert!(
            none.reason().contains("none presented"),
            "{}",
            none.reason()
        );
        let free = idx.jobs.values().find(|j| j.require_cert_cn.is_none());
        assert!(free.is_none_or(|j| j.check_cert(None).is_ok()));
    }
}
