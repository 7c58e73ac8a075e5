//! The `mysql` table.
//!
//! - Database apps: `OCEAN_MYSQL_DB=/dept/product/name` and `OCEAN_MYSQL_ROLE=primary|replica`.
//!   Credentials come from control's config (`[mysql.databases."/dept/product/name"]`),
//!   never from labels; a database without configured credentials is left out.
//!   More than one running primary is ambiguous: no primary is published and it is reported.
//! - Client apps: `OCEAN_MYSQL_GRANTS=/a/b/c:rw,/x/y/z:ro`. The job (JOBNAME) may log in from
//!   its live tasks' IPs to the granted databases. Apps with one JOBNAME are merged.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ocean_core::table::mysql::{
    Access, Credentials, Grant, JobPassword, MysqlDatabase, MysqlJob, MysqlTable,
};
use ocean_core::table::{name_problem, TableKind};

use super::{task_addrs, Problem};
use crate::state::State;

/// Backend credentials and job passwords from control's config.
#[derive(Debug, Clone, Default)]
pub struct MysqlSecrets {
    pub databases: BTreeMap<String, DatabaseSecrets>,
    pub jobs: BTreeMap<String, JobPassword>,
}

#[derive(Debug, Clone)]
pub struct DatabaseSecrets {
    /// The schema clients name; default: the last segment of the database name.
    pub schema: Option<String>,
    pub rw: Credentials,
    pub ro: Option<Credentials>,
}

/// Parses `OCEAN_MYSQL_GRANTS`.
fn parse_grants(label: &str) -> Result<Vec<Grant>, String> {
    let mut grants = Vec::new();
    for item in label.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (db, access) = item
            .rsplit_once(':')
            .ok_or_else(|| format!("grant {item:?} is not DATABASE:rw or DATABASE:ro"))?;
        let access = match access {
            "rw" => Access::Rw,
            "ro" => Access::Ro,
            other => return Err(format!("grant {item:?} has access {other:?}, not rw or ro")),
        };
        if !db.starts_with('/') {
            return Err(format!(
                "grant {item:?} does not name a database (/dept/product/name)"
            ));
        }
        grants.push(Grant {
            database: db.to_string(),
            access,
        });
    }
    Ok(grants)
}

pub fn derive(state: &State, secrets: &MysqlSecrets, problems: &mut Vec<Problem>) -> MysqlTable {
    let mut dbs: BTreeMap<String, MysqlDatabase> = BTreeMap::new();
    let mut primaries: BTreeMap<String, Vec<std::net::SocketAddr>> = BTreeMap::new();
    for app in &state.apps {
        let Some(name) = app.labels.get("OCEAN_MYSQL_DB").map(|s| s.trim()) else {
            continue;
        };
        let role = app.labels.get("OCEAN_MYSQL_ROLE").map(|s| s.trim());
        let primary = match role {
            Some("primary") => true,
            Some("replica") => false,
            other => {
                problems.push(Problem::app(
                    app,
                    TableKind::Mysql,
                    format!(
                        "OCEAN_MYSQL_ROLE={}: must be primary or replica",
                        other
                            .map(|r| format!("{r:?}"))
                            .unwrap_or_else(|| "(missing)".into())
                    ),
                ));
                continue;
            }
        };
        let Some(sec) = secrets.databases.get(name) else {
            problems.push(Problem::app(
                app,
                TableKind::Mysql,
                format!("no credentials for database {name:?} in control's config ([mysql.databases.\"{name}\"])"),
            ));
            continue;
        };
        let schema = sec
            .schema
            .clone()
            .unwrap_or_else(|| name.rsplit('/').next().unwrap_or(name).to_string());
        if let Some(other) = dbs.values().find(|d| d.schema == schema && d.name != name) {
            problems.push(Problem::app(
                app,
                TableKind::Mysql,
                format!(
                    "database {name:?} has schema {schema:?}, which database {:?} already has; set `schema` in control's config",
                    other.name
                ),
            ));
            continue;
        }
        let db = dbs
            .entry(name.to_string())
            .or_insert_with(|| MysqlDatabase {
                name: name.to_string(),
                schema,
                rw: sec.rw.clone(),
                ro: sec.ro.clone(),
                primary: None,
                replicas: Vec::new(),
            });
        let addrs = task_addrs(app);
        if primary {
            primaries.entry(name.to_string()).or_default().extend(addrs);
        } else {
            db.replicas.extend(addrs);
        }
    }
    for (name, db) in dbs.iter_mut() {
        let mut p = primaries.remove(name).unwrap_or_default();
        p.sort();
        p.dedup();
        match p.as_slice() {
            [one] => db.primary = Some(*one),
            [] => {}
            many => problems.push(Problem {
                app: None,
                table: Some(TableKind::Mysql),
                message: format!(
                    "database {name:?} has {} running primaries ({}); publishing none until there is one",
                    many.len(),
                    many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                ),
            }),
        }
        db.replicas.sort();
        db.replicas.dedup();
        if let Some(primary) = db.primary {
            db.replicas.retain(|r| *r != primary);
        }
    }

    let mut jobs: BTreeMap<String, MysqlJob> = BTreeMap::new();
    for app in &state.apps {
        let Some(label) = app.labels.get("OCEAN_MYSQL_GRANTS") else {
            continue;
        };
        let grants = match parse_grants(label) {
            Ok(g) => g,
            Err(e) => {
                problems.push(Problem::app(
                    app,
                    TableKind::Mysql,
                    format!("OCEAN_MYSQL_GRANTS: {e}"),
                ));
                continue;
            }
        };
        let jobname = app.jobname().to_string();
        let unusable = name_problem(&jobname).or_else(|| {
            (jobname.len() > 80)
                .then(|| "longer than 80 bytes (MySQL's user name limit)".to_string())
        });
        if let Some(reason) = unusable {
            problems.push(Problem::app(
                app,
                TableKind::Mysql,
                format!("JOBNAME {jobname:?} cannot be a MySQL user name: {reason}"),
            ));
            continue;
        }
        let job = jobs.entry(jobname.clone()).or_insert_with(|| MysqlJob {
            name: jobname.clone(),
            ips: Vec::new(),
            grants: Vec::new(),
            password: secrets.jobs.get(&jobname).cloned(),
        });
        job.ips.extend(app.live_tasks().filter_map(|t| t.ip));
        for g in grants {
            if !dbs.contains_key(&g.database) {
                problems.push(Problem::app(
                    app,
                    TableKind::Mysql,
                    format!("grant of unknown database {:?} ignored", g.database),
                ));
                continue;
            }
            job.grants.push(g);
        }
    }
    let jobs = jobs
        .into_values()
        .map(|mut j| {
            j.ips.sort();
            j.ips.dedup();
            j.grants
                .sort_by(|a, b| (&a.database, a.access).cmp(&(&b.database, b.access)));
            // rw implies ro: keep the strongest grant per database.
            j.grants
                .dedup_by(|later, earlier| later.database == earlier.database);
            j
        })
        .collect();
    MysqlTable {
        databases: dbs.into_values().collect(),
        jobs,
    }
}

/// The hashes a proxy checks a job password against.
pub fn hash_password(password: &str) -> JobPassword {
    use sha1::Sha1;
    use sha2::{Digest, Sha256};
    let s1 = Sha1::digest(Sha1::digest(password.as_bytes()));
    let s2 = Sha256::digest(Sha256::digest(password.as_bytes()));
    JobPassword {
        sha1_sha1: hex::encode(s1),
        sha256_sha256: hex::encode(s2),
    }
}

/// Whether a peer at `ip` may log in as `job` (IP + JOBNAME) according to `table`.
pub fn job_allows(table: &MysqlTable, job: &str, ip: IpAddr) -> bool {
    table
        .jobs
        .iter()
        .any(|j| j.name == job && j.ips.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::fixtures::{state, task};
    use ocean_core::table::Table;

    fn secrets() -> MysqlSecrets {
        let cred = |u: &str| Credentials {
            user: u.into(),
            password: format!("{u}-pw"),
        };
        let mut s = MysqlSecrets::default();
        s.databases.insert(
            "/miui/browser/key".into(),
            DatabaseSecrets {
                schema: None,
                rw: cred("ocean_rw"),
                ro: Some(cred("ocean_ro")),
            },
        );
        s.jobs.insert("browser-web".into(), hash_password("pw"));
        s
    }

    #[test]
    fn databases_jobs_and_grants() {
        let json = format!(
            r#"{{"apps":[
            {{"id":"/db/key-primary","labels":{{"OCEAN_MYSQL_DB":"/miui/browser/key","OCEAN_MYSQL_ROLE":"primary"}},"tasks":[{}]}},
            {{"id":"/db/key-replica","labels":{{"OCEAN_MYSQL_DB":"/miui/browser/key","OCEAN_MYSQL_ROLE":"replica"}},"tasks":[{},{}]}},
            {{"id":"/db/nocreds","labels":{{"OCEAN_MYSQL_DB":"/x/y/z","OCEAN_MYSQL_ROLE":"primary"}},"tasks":[{}]}},
            {{"id":"/db/badrole","labels":{{"OCEAN_MYSQL_DB":"/miui/browser/key","OCEAN_MYSQL_ROLE":"leader"}},"tasks":[]}},
            {{"id":"/miui/browser/web","labels":{{"OCEAN_JOBNAME":"browser-web","OCEAN_MYSQL_GRANTS":"/miui/browser/key:rw,/x/y/z:ro"}},"tasks":[{},{}]}},
            {{"id":"/miui/browser/cron","labels":{{"OCEAN_MYSQL_GRANTS":"/miui/browser/key:ro"}},"tasks":[{}]}},
            {{"id":"/bad/grants","labels":{{"OCEAN_MYSQL_GRANTS":"/miui/browser/key:admin"}},"tasks":[]}}
            ]}}"#,
            task("p.1", "10.0.0.1", &[3306]),
            task("r.1", "10.0.0.2", &[3306]),
            task("r.2", "10.0.0.3", &[3306]),
            task("z.1", "10.0.0.4", &[3306]),
            task("w.1", "10.0.1.1", &[31000]),
            task("w.2", "10.0.1.2", &[31000]),
            task("c.1", "10.0.1.3", &[31000]),
        );
        let mut problems = Vec::new();
        let t = derive(&state(&json), &secrets(), &mut problems);
        t.validate().unwrap();
        assert_eq!(t.databases.len(), 1);
        let db = &t.databases[0];
        assert_eq!(db.schema, "key");
        assert_eq!(db.primary, "10.0.0.1:3306".parse().ok());
        assert_eq!(db.replicas.len(), 2);
        assert_eq!(db.ro.as_ref().map(|c| c.user.as_str()), Some("ocean_ro"));
        let web = t.jobs.iter().find(|j| j.name == "browser-web").unwrap();
        assert_eq!(web.ips.len(), 2);
        assert_eq!(
            web.grants.len(),
            1,
            "the grant of /x/y/z (no credentials) is dropped"
        );
        assert!(web.password.is_some());
        assert!(job_allows(
            &t,
            "miui/browser/cron",
            "10.0.1.3".parse().unwrap()
        ));
        assert!(!job_allows(
            &t,
            "miui/browser/cron",
            "10.0.1.1".parse().unwrap()
        ));
        let msgs: Vec<String> = problems
            .iter()
            .map(|p| format!("{:?}: {}", p.app, p.message))
            .collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("/db/nocreds") && m.contains("no credentials")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("/db/badrole") && m.contains("leader")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("/bad/grants") && m.contains("admin")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("unknown database \"/x/y/z\"")),
            "{msgs:?}"
        );
    }

    #[test]
    fn two_running_primaries_publish_none() {
        let json = format!(
            r#"{{"apps":[{{"id":"/db/p","labels":{{"OCEAN_MYSQL_DB":"/miui/browser/key","OCEAN_MYSQL_ROLE":"primary"}},"tasks":[{},{}]}}]}}"#,
            task("p.1", "10.0.0.1", &[3306]),
            task("p.2", "10.0.0.2", &[3306]),
        );
        let mut problems = Vec::new();
        let t = derive(&state(&json), &secrets(), &mut problems);
        assert_eq!(t.databases[0].primary, None);
        assert!(problems[0].message.contains("2 running primaries"));
    }

    #[test]
    fn password_hashes_are_what_mysql_stores() {
        // mysql> SELECT PASSWORD('pw') gives '*' + upper(hex(SHA1(SHA1('pw')))).
        let h = hash_password("pw");
        assert_eq!(h.sha1_sha1.len(), 40);
        assert_eq!(h.sha256_sha256.len(), 64);
        assert_eq!(h.sha1_sha1, "d821809f681a40a6e379b50d0463efae20bdd122");
    }
}

#[cfg(test)]
mod unusable_labels {
    use super::*;
    use crate::derive::fixtures::{state, task};
    use ocean_core::table::Table;

    #[test]
    fn a_bad_jobname_or_a_shared_schema_is_reported_and_the_table_stays_valid() {
        let mut s = MysqlSecrets::default();
        for name in ["/a/x/key", "/b/y/key"] {
            s.databases.insert(
                name.into(),
                DatabaseSecrets {
                    schema: None,
                    rw: Credentials {
                        user: "u".into(),
                        password: "p".into(),
                    },
                    ro: None,
                },
            );
        }
        let json = format!(
            r#"{{"apps":[
            {{"id":"/db/a","labels":{{"OCEAN_MYSQL_DB":"/a/x/key","OCEAN_MYSQL_ROLE":"primary"}},"tasks":[{}]}},
            {{"id":"/db/b","labels":{{"OCEAN_MYSQL_DB":"/b/y/key","OCEAN_MYSQL_ROLE":"primary"}},"tasks":[{}]}},
            {{"id":"/web","labels":{{"OCEAN_JOBNAME":"has space","OCEAN_MYSQL_GRANTS":"/a/x/key:rw"}},"tasks":[{}]}}
            ]}}"#,
            task("a.1", "10.0.0.1", &[3306]),
            task("b.1", "10.0.0.2", &[3306]),
            task("w.1", "10.0.0.3", &[1]),
        );
        let mut problems = Vec::new();
        let t = derive(&state(&json), &s, &mut problems);
        t.validate().unwrap();
        assert_eq!(t.databases.len(), 1);
        assert!(t.jobs.is_empty());
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
