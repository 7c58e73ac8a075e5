//! The `mysql` table.
//!
//! - Database apps: `OCEAN_MYSQL_DB=/dept/product/name` and `OCEAN_MYSQL_ROLE=primary|replica`,
//!   or `auto` (the default): candidates the proxy probes for the writable one.
//!   Credentials come from control's config (`[mysql.databases."/dept/product/name"]`),
//!   never from labels; a database without configured credentials is left out. Only apps
//!   its `apps` rule covers may declare its servers (default: apps under the database
//!   name's top-level group). More than one running primary is ambiguous: no primary is
//!   published and every app that claims one is reported.
//! - Client apps: `OCEAN_MYSQL_GRANTS=/a/b/c:rw,/x/y/z:ro` asks; the database's `allow` list
//!   (default: jobs under its top-level group, `rw`; label `OCEAN_MYSQL_ALLOW` on a declaring
//!   app adds to it) decides. A grant beyond what is allowed is cut down to `ro` or refused;
//!   an `ro` grant on a database without `ro` credentials is refused. The job (JOBNAME) may
//!   log in from its live tasks' IPs; apps with one JOBNAME are merged only when they share
//!   an owner (see [`crate::ownership::judge_jobname`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ocean_core::table::mysql::{
    Access, Credentials, Grant, JobPassword, MysqlDatabase, MysqlJob, MysqlTable,
};
use ocean_core::table::{name_problem, TableKind};

use super::{task_addrs, Problem};
use crate::ownership::{self, AllowRule, AppPrefix};
use crate::state::{App, State};

/// Databases, job passwords and job owners from control's config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MysqlConfig {
    pub databases: BTreeMap<String, DatabaseConfig>,
    /// `[mysql.jobs."JOBNAME"]` passwords, hashed.
    pub jobs: BTreeMap<String, JobPassword>,
    /// `[mysql.jobs."JOBNAME"] apps`: the apps that may run as that job.
    pub job_owners: BTreeMap<String, Vec<AppPrefix>>,
    /// `[mysql.jobs."JOBNAME"] require_cert_cn`: the client-certificate CN the job's
    /// logins must present (carried to the proxy in the job's table entry).
    pub job_cert_cns: BTreeMap<String, String>,
}

/// One `[mysql.databases."NAME"]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseConfig {
    /// The schema clients name; default: the last segment of the database name.
    pub schema: Option<String>,
    pub rw: Credentials,
    pub ro: Option<Credentials>,
    /// App-id prefixes that may declare this database's servers; `None`: the database
    /// name's top-level group.
    pub apps: Option<Vec<AppPrefix>>,
    /// Which jobs may be granted the database, and at most what; `None`: jobs under the
    /// database name's top-level group, `rw`.
    pub allow: Option<Vec<AllowRule>>,
    /// mysql-proxy's idle connections kept per server (`pool_max`); `None`: its default.
    pub pool_max: Option<u32>,
    /// mysql-proxy multiplexes sessions over the pool (`multiplex`).
    pub multiplex: Option<bool>,
}

impl DatabaseConfig {
    /// Credentials only, default ownership (tests and benches).
    pub fn new(rw: Credentials, ro: Option<Credentials>) -> DatabaseConfig {
        DatabaseConfig {
            schema: None,
            rw,
            ro,
            apps: None,
            allow: None,
            pool_max: None,
            multiplex: None,
        }
    }

    fn declaring_apps(&self, name: &str) -> (Vec<AppPrefix>, String) {
        match &self.apps {
            Some(a) => (
                a.clone(),
                format!("[mysql.databases.{name:?}] apps = [{}]", ownership::list(a)),
            ),
            None => {
                let g = AppPrefix::group_of(name);
                let rule = format!(
                    "the default rule (no `apps` in [mysql.databases.{name:?}]: apps under {g})"
                );
                (vec![g], rule)
            }
        }
    }

    fn allow_rules(&self, name: &str) -> (Vec<AllowRule>, String) {
        match &self.allow {
            Some(a) => (
                a.clone(),
                format!(
                    "[mysql.databases.{name:?}] allow = [{}]",
                    a.iter()
                        .map(|r| format!("\"{r}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            None => {
                let g = AppPrefix::group_of(name);
                let rule = format!(
                    "the default rule (no `allow` in [mysql.databases.{name:?}]: jobs under {g}, rw)"
                );
                (
                    vec![AllowRule {
                        apps: g,
                        max: Access::Rw,
                    }],
                    rule,
                )
            }
        }
    }
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

/// Parses `OCEAN_MYSQL_ALLOW` (`/miui/report/:ro,/miui/ops/:rw`).
fn parse_allow(label: &str) -> Result<Vec<AllowRule>, String> {
    label
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(AllowRule::parse)
        .collect()
}

/// A database being assembled: the table entry, its allow list and who claimed what.
struct DbBuild {
    db: MysqlDatabase,
    /// The `allow` rules in force (config or default, plus labels) and how to name them.
    allow: Vec<AllowRule>,
    allow_rule: String,
    /// Primary addresses with the app that declared each.
    primaries: Vec<(SocketAddr, String)>,
}

/// What an app's tasks are to its database (`OCEAN_MYSQL_ROLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Primary,
    Replica,
    /// `auto` or no label: a candidate the proxy probes for `@@read_only`, so an outside
    /// orchestrator's failover is followed without a Marathon change.
    Auto,
}

fn role(app: &App) -> Result<Role, String> {
    match app.labels.get("OCEAN_MYSQL_ROLE").map(|s| s.trim()) {
        Some("primary") => Ok(Role::Primary),
        Some("replica") => Ok(Role::Replica),
        Some("auto") | None => Ok(Role::Auto),
        Some(other) => Err(format!(
            "OCEAN_MYSQL_ROLE={other:?}: must be primary, replica or auto"
        )),
    }
}

fn derive_databases(
    state: &State,
    config: &MysqlConfig,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, DbBuild> {
    let mut dbs: BTreeMap<String, DbBuild> = BTreeMap::new();
    for app in &state.apps {
        let Some(name) = app.labels.get("OCEAN_MYSQL_DB").map(|s| s.trim()) else {
            continue;
        };
        let mut refuse = |m: String| problems.push(Problem::app(app, TableKind::Mysql, m));
        let role = match role(app) {
            Ok(r) => r,
            Err(e) => {
                refuse(e);
                continue;
            }
        };
        let Some(cfg) = config.databases.get(name) else {
            refuse(format!("OCEAN_MYSQL_DB={name}: no credentials for this database in control's config ([mysql.databases.\"{name}\"])"));
            continue;
        };
        let (owners, rule) = cfg.declaring_apps(name);
        if !ownership::any_covers(&owners, &app.id) {
            refuse(format!(
                "OCEAN_MYSQL_DB={name}: refused by {rule}, which does not cover this app; it may not declare this database's servers"
            ));
            continue;
        }
        let schema = cfg
            .schema
            .clone()
            .unwrap_or_else(|| name.rsplit('/').next().unwrap_or(name).to_string());
        if let Some(other) = dbs
            .values()
            .find(|d| d.db.schema == schema && d.db.name != name)
        {
            refuse(format!(
                "OCEAN_MYSQL_DB={name}: schema {schema:?} belongs to database {:?} already; set `schema` in control's config",
                other.db.name
            ));
            continue;
        }
        let extra_allow = match app.labels.get("OCEAN_MYSQL_ALLOW").map(|l| parse_allow(l)) {
            None => Vec::new(),
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                // The servers still count; only the extra allow entries are dropped.
                refuse(format!("OCEAN_MYSQL_ALLOW: {e}; its entries are ignored"));
                Vec::new()
            }
        };
        let b = dbs.entry(name.to_string()).or_insert_with(|| {
            let (allow, allow_rule) = cfg.allow_rules(name);
            DbBuild {
                db: MysqlDatabase {
                    name: name.to_string(),
                    schema,
                    rw: cfg.rw.clone(),
                    ro: cfg.ro.clone(),
                    primary: None,
                    replicas: Vec::new(),
                    candidates: Vec::new(),
                    pool_max: cfg.pool_max,
                    multiplex: cfg.multiplex,
                },
                allow,
                allow_rule,
                primaries: Vec::new(),
            }
        });
        if !extra_allow.is_empty() {
            b.allow_rule.push_str(&format!(
                " plus OCEAN_MYSQL_ALLOW of {} ({})",
                app.id,
                extra_allow
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ));
            b.allow.extend(extra_allow);
        }
        let addrs = task_addrs(app);
        match role {
            Role::Primary => b
                .primaries
                .extend(addrs.into_iter().map(|a| (a, app.id.clone()))),
            Role::Replica => b.db.replicas.extend(addrs),
            Role::Auto => b.db.candidates.extend(addrs),
        }
    }
    for (name, b) in dbs.iter_mut() {
        let mut addrs: Vec<SocketAddr> = b.primaries.iter().map(|(a, _)| *a).collect();
        addrs.sort();
        addrs.dedup();
        match addrs.as_slice() {
            [one] => b.db.primary = Some(*one),
            [] => {}
            many => {
                let mut apps: Vec<&str> = b.primaries.iter().map(|(_, a)| a.as_str()).collect();
                apps.sort();
                apps.dedup();
                let msg = format!(
                    "OCEAN_MYSQL_ROLE=primary: conflict: database {name:?} has {} running primaries ({}) declared by {}; publishing none until there is one",
                    many.len(),
                    many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                    apps.join(", ")
                );
                for app in apps {
                    problems.push(Problem {
                        app: Some(app.to_string()),
                        table: Some(TableKind::Mysql),
                        message: msg.clone(),
                    });
                }
            }
        }
        b.db.replicas.sort();
        b.db.replicas.dedup();
        if let Some(primary) = b.db.primary {
            b.db.replicas.retain(|r| *r != primary);
        }
        // A declared role wins over being a candidate.
        b.db.candidates.sort();
        b.db.candidates.dedup();
        let declared: Vec<SocketAddr> =
            b.db.primary.iter().chain(&b.db.replicas).copied().collect();
        b.db.candidates.retain(|c| !declared.contains(c));
    }
    dbs
}

/// What one requested grant becomes under the database's rules.
fn judge_grant(app: &App, g: Grant, b: &DbBuild) -> Result<(Grant, Option<String>), String> {
    let label = format!("OCEAN_MYSQL_GRANTS={}:{}", g.database, access_str(g.access));
    let Some(max) = ownership::allowed_access(&b.allow, &app.id) else {
        return Err(format!(
            "{label}: refused by {}, which does not cover this app",
            b.allow_rule
        ));
    };
    let mut note = None;
    let access = if g.access == Access::Rw && max == Access::Ro {
        note = Some(format!("{label}: cut down to ro by {}", b.allow_rule));
        Access::Ro
    } else {
        g.access
    };
    if access == Access::Ro && b.db.ro.is_none() {
        return Err(format!(
            "{label}: refused: an ro grant needs ro credentials, and [mysql.databases.{:?}] has no ro_user/ro_password (the rw account is never lent to ro sessions)",
            g.database
        ));
    }
    Ok((
        Grant {
            database: g.database,
            access,
        },
        note,
    ))
}

fn access_str(a: Access) -> &'static str {
    match a {
        Access::Rw => "rw",
        Access::Ro => "ro",
    }
}

pub fn derive(state: &State, config: &MysqlConfig, problems: &mut Vec<Problem>) -> MysqlTable {
    let dbs = derive_databases(state, config, problems);

    // Who may claim each JOBNAME, among the apps that ask for grants.
    let claimants = ownership::by_name(
        state
            .apps
            .iter()
            .filter(|a| a.labels.contains_key("OCEAN_MYSQL_GRANTS"))
            .map(|a| (a.jobname().to_string(), a.id.as_str())),
    );
    let mut refused_job_apps: BTreeMap<&str, String> = BTreeMap::new();
    for (jobname, ids) in &claimants {
        let rule = config.job_owners.get(jobname).map(Vec::as_slice);
        for (id, why) in ownership::judge_jobname(jobname, rule, ids).refused {
            refused_job_apps.insert(id, why);
        }
    }

    let mut jobs: BTreeMap<String, MysqlJob> = BTreeMap::new();
    for app in &state.apps {
        let Some(label) = app.labels.get("OCEAN_MYSQL_GRANTS") else {
            continue;
        };
        if let Some(why) = refused_job_apps.get(app.id.as_str()) {
            problems.push(Problem::app(app, TableKind::Mysql, why.clone()));
            continue;
        }
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
            password: config.jobs.get(&jobname).cloned(),
            require_cert_cn: config.job_cert_cns.get(&jobname).cloned(),
        });
        job.ips.extend(app.live_tasks().filter_map(|t| t.ip));
        for g in grants {
            let Some(b) = dbs.get(&g.database) else {
                problems.push(Problem::app(
                    app,
                    TableKind::Mysql,
                    format!(
                        "OCEAN_MYSQL_GRANTS: grant of unknown database {:?} ignored (no running server declared by an app allowed to, or no [mysql.databases] section)",
                        g.database
                    ),
                ));
                continue;
            };
            match judge_grant(app, g, b) {
                Ok((g, note)) => {
                    if let Some(n) = note {
                        problems.push(Problem::app(app, TableKind::Mysql, n));
                    }
                    job.grants.push(g);
                }
                Err(e) => problems.push(Problem::app(app, TableKind::Mysql, e)),
            }
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
        databases: dbs.into_values().map(|b| b.db).collect(),
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

    fn cred(u: &str) -> Credentials {
        Credentials {
            user: u.into(),
            password: format!("{u}-pw"),
        }
    }

    fn prefixes(v: &[&str]) -> Vec<AppPrefix> {
        v.iter().map(|p| AppPrefix::parse(p).unwrap()).collect()
    }

    fn secrets() -> MysqlConfig {
        let mut s = MysqlConfig::default();
        let mut db = DatabaseConfig::new(cred("ocean_rw"), Some(cred("ocean_ro")));
        db.apps = Some(prefixes(&["/db/"]));
        s.databases.insert("/miui/browser/key".into(), db);
        s.jobs.insert("browser-web".into(), hash_password("pw"));
        s
    }

    fn messages(problems: &[Problem]) -> Vec<String> {
        problems
            .iter()
            .map(|p| format!("{}: {}", p.app.as_deref().unwrap_or("-"), p.message))
            .collect()
    }

    #[test]
    fn auto_role_and_no_role_make_candidates_and_declared_roles_win() {
        let json = format!(
            r#"{{"apps":[
            {{"id":"/db/key-a","labels":{{"OCEAN_MYSQL_DB":"/miui/browser/key","OCEAN_MYSQL_ROLE":"auto"}},"tasks":[{},{}]}},
            {{"id":"/db/key-b","labels":{{"OCEAN_MYSQL_DB":"/miui/browser/key"}},"tasks":[{}]}},
            {{"id":"/db/key-r","labels":{{"OCEAN_MYSQL_DB":"/miui/browser/key","OCEAN_MYSQL_ROLE":"replica"}},"tasks":[{}]}},
            {{"id":"/evil/key","labels":{{"OCEAN_MYSQL_DB":"/miui/browser/key","OCEAN_MYSQL_ROLE":"auto"}},"tasks":[{}]}}
            ]}}"#,
            task("a.1", "10.0.0.2", &[3306]),
            task("a.2", "10.0.0.1", &[3306]),
            task("b.1", "10.0.0.3", &[3306]),
            // Declared a replica too: the declared role wins.
            task("r.1", "10.0.0.3", &[3306]),
            task("e.1", "10.6.6.6", &[3306]),
        );
        let mut problems = Vec::new();
        let t = derive(&state(&json), &secrets(), &mut problems);
        t.validate().unwrap();
        let db = &t.databases[0];
        assert_eq!(
            db.primary, None,
            "auto candidates never make a primary in control"
        );
        assert_eq!(db.replicas, vec!["10.0.0.3:3306".parse().unwrap()]);
        assert_eq!(
            db.candidates,
            vec![
                "10.0.0.1:3306".parse().unwrap(),
                "10.0.0.2:3306".parse().unwrap()
            ],
            "sorted, the declared replica left out, the app outside `apps` refused"
        );
        let msgs = messages(&problems);
        assert!(
            msgs.iter()
                .any(|m| m.contains("/evil/key") && m.contains("refused")),
            "{msgs:?}"
        );
        assert_eq!(msgs.len(), 1, "{msgs:?}");
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
        let mut secrets = secrets();
        secrets
            .job_cert_cns
            .insert("browser-web".into(), "browser-web-client".into());
        let t = derive(&state(&json), &secrets, &mut problems);
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
        assert_eq!(web.require_cert_cn.as_deref(), Some("browser-web-client"));
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
        let msgs = messages(&problems);
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
    fn two_running_primaries_publish_none_and_name_both_apps() {
        let json = format!(
            r#"{{"apps":[
            {{"id":"/db/p","labels":{{"OCEAN_MYSQL_DB":"/miui/browser/key","OCEAN_MYSQL_ROLE":"primary"}},"tasks":[{}]}},
            {{"id":"/db/q","labels":{{"OCEAN_MYSQL_DB":"/miui/browser/key","OCEAN_MYSQL_ROLE":"primary"}},"tasks":[{}]}}
            ]}}"#,
            task("p.1", "10.0.0.1", &[3306]),
            task("p.2", "10.0.0.2", &[3306]),
        );
        let mut problems = Vec::new();
        let t = derive(&state(&json), &secrets(), &mut problems);
        assert_eq!(t.databases[0].primary, None);
        let msgs = messages(&problems);
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[0].starts_with("/db/p: ") && msgs[0].contains("2 running primaries"));
        assert!(msgs[1].starts_with("/db/q: ") && msgs[1].contains("conflict"));
    }

    /// The attacks of issue 12, one app each, against a database owned by `/miui/`.
    #[test]
    fn a_tenant_cannot_grant_itself_or_serve_another_teams_database() {
        let mut config = MysqlConfig::default();
        config.databases.insert(
            "/miui/browser/key".into(),
            DatabaseConfig::new(cred("key_rw"), Some(cred("key_ro"))),
        );
        // No ro credentials: an ro grant must never borrow the rw account.
        config.databases.insert(
            "/miui/feeds/rank".into(),
            DatabaseConfig::new(cred("rank_rw"), None),
        );
        let json = format!(
            r#"{{"apps":[
            {{"id":"/miui/db/key","labels":{{"OCEAN_MYSQL_DB":"/miui/browser/key","OCEAN_MYSQL_ROLE":"primary"}},"tasks":[{}]}},
            {{"id":"/miui/db/rank","labels":{{"OCEAN_MYSQL_DB":"/miui/feeds/rank","OCEAN_MYSQL_ROLE":"primary"}},"tasks":[{}]}},
            {{"id":"/evil/replica","labels":{{"OCEAN_MYSQL_DB":"/miui/browser/key","OCEAN_MYSQL_ROLE":"replica"}},"tasks":[{}]}},
            {{"id":"/evil/primary","labels":{{"OCEAN_MYSQL_DB":"/miui/browser/key","OCEAN_MYSQL_ROLE":"primary"}},"tasks":[{}]}},
            {{"id":"/evil/grantee","labels":{{"OCEAN_MYSQL_GRANTS":"/miui/browser/key:rw"}},"tasks":[{}]}},
            {{"id":"/evil/impostor","labels":{{"OCEAN_JOBNAME":"miui/browser/web","OCEAN_MYSQL_GRANTS":"/miui/browser/key:ro"}},"tasks":[{}]}},
            {{"id":"/miui/browser/web","labels":{{"OCEAN_MYSQL_GRANTS":"/miui/browser/key:rw,/miui/feeds/rank:ro"}},"tasks":[{}]}}
            ]}}"#,
            task("k.1", "10.0.0.1", &[3306]),
            task("r.1", "10.0.0.2", &[3306]),
            task("e.1", "10.6.6.1", &[3306]),
            task("e.2", "10.6.6.2", &[3306]),
            task("e.3", "10.6.6.3", &[1]),
            task("e.4", "10.6.6.4", &[1]),
            task("w.1", "10.0.1.1", &[1]),
        );
        let mut problems = Vec::new();
        let t = derive(&state(&json), &config, &mut problems);
        t.validate().unwrap();
        let key = t
            .databases
            .iter()
            .find(|d| d.name == "/miui/browser/key")
            .unwrap();
        assert_eq!(
            key.primary,
            "10.0.0.1:3306".parse().ok(),
            "the owner's primary stays"
        );
        assert!(key.replicas.is_empty(), "{:?}", key.replicas);
        let grants_of = |job: &str| {
            t.jobs
                .iter()
                .find(|j| j.name == job)
                .map(|j| j.grants.len())
        };
        assert_eq!(grants_of("evil/grantee"), Some(0), "asked, never allowed");
        assert_eq!(grants_of("evil/impostor"), None, "{:?}", t.jobs);
        let web = t
            .jobs
            .iter()
            .find(|j| j.name == "miui/browser/web")
            .unwrap();
        assert_eq!(
            web.ips,
            vec!["10.0.1.1".parse::<IpAddr>().unwrap()],
            "the impostor's IP is not the job's"
        );
        assert_eq!(
            web.grants,
            vec![Grant {
                database: "/miui/browser/key".into(),
                access: Access::Rw
            }],
            "the ro grant on a database without ro credentials is refused"
        );
        let msgs = messages(&problems);
        let has = |app: &str, what: &str| {
            msgs.iter()
                .any(|m| m.starts_with(&format!("{app}: ")) && m.contains(what))
        };
        assert!(
            has(
                "/evil/replica",
                "OCEAN_MYSQL_DB=/miui/browser/key: refused by the default rule"
            ),
            "{msgs:?}"
        );
        assert!(has("/evil/primary", "apps under /miui/"), "{msgs:?}");
        assert!(
            has(
                "/evil/grantee",
                "OCEAN_MYSQL_GRANTS=/miui/browser/key:rw: refused by the default rule (no `allow`"
            ),
            "{msgs:?}"
        );
        assert!(
            has(
                "/evil/impostor",
                "OCEAN_JOBNAME=miui/browser/web: the job belongs to app /miui/browser/web"
            ),
            "{msgs:?}"
        );
        assert!(
            has(
                "/miui/browser/web",
                "OCEAN_MYSQL_GRANTS=/miui/feeds/rank:ro: refused: an ro grant needs ro credentials"
            ),
            "{msgs:?}"
        );
    }

    #[test]
    fn allow_lists_cut_grants_down_and_labels_add_to_them() {
        let mut config = MysqlConfig::default();
        let mut db = DatabaseConfig::new(cred("rw"), Some(cred("ro")));
        db.apps = Some(prefixes(&["/dba/"]));
        db.allow = Some(vec![
            AllowRule::parse("/miui/browser/:rw").unwrap(),
            AllowRule::parse("/miui/report/:ro").unwrap(),
        ]);
        config.databases.insert("/miui/browser/key".into(), db);
        config.job_owners.insert(
            "shared-job".into(),
            prefixes(&["/shop/a/", "/miui/browser/"]),
        );
        let json = format!(
            r#"{{"apps":[
            {{"id":"/dba/key","labels":{{"OCEAN_MYSQL_DB":"/miui/browser/key","OCEAN_MYSQL_ROLE":"primary","OCEAN_MYSQL_ALLOW":"/shop/a/:ro"}},"tasks":[{}]}},
            {{"id":"/miui/browser/web","labels":{{"OCEAN_MYSQL_GRANTS":"/miui/browser/key:rw"}},"tasks":[{}]}},
            {{"id":"/miui/report/daily","labels":{{"OCEAN_MYSQL_GRANTS":"/miui/browser/key:rw"}},"tasks":[{}]}},
            {{"id":"/shop/a/x","labels":{{"OCEAN_JOBNAME":"shared-job","OCEAN_MYSQL_GRANTS":"/miui/browser/key:ro"}},"tasks":[{}]}},
            {{"id":"/miui/browser/y","labels":{{"OCEAN_JOBNAME":"shared-job","OCEAN_MYSQL_GRANTS":"/miui/browser/key:ro"}},"tasks":[{}]}},
            {{"id":"/shop/b/z","labels":{{"OCEAN_MYSQL_GRANTS":"/miui/browser/key:ro"}},"tasks":[{}]}}
            ]}}"#,
            task("k.1", "10.0.0.1", &[3306]),
            task("w.1", "10.0.1.1", &[1]),
            task("d.1", "10.0.1.2", &[1]),
            task("x.1", "10.0.1.3", &[1]),
            task("y.1", "10.0.1.4", &[1]),
            task("z.1", "10.0.1.5", &[1]),
        );
        let mut problems = Vec::new();
        let t = derive(&state(&json), &config, &mut problems);
        t.validate().unwrap();
        let access = |job: &str| {
            t.jobs
                .iter()
                .find(|j| j.name == job)
                .map(|j| j.grants.iter().map(|g| g.access).collect::<Vec<_>>())
        };
        assert_eq!(access("miui/browser/web"), Some(vec![Access::Rw]));
        assert_eq!(
            access("miui/report/daily"),
            Some(vec![Access::Ro]),
            "cut down"
        );
        assert_eq!(
            access("shared-job"),
            Some(vec![Access::Ro]),
            "OCEAN_MYSQL_ALLOW adds /shop/a/"
        );
        assert_eq!(
            t.jobs
                .iter()
                .find(|j| j.name == "shared-job")
                .map(|j| j.ips.len()),
            Some(2),
            "[mysql.jobs] apps lets two groups share one job"
        );
        assert_eq!(access("shop/b/z"), Some(vec![]));
        let msgs = messages(&problems);
        assert!(msgs.iter().any(|m| m.starts_with("/miui/report/daily: ") && m.contains("cut down to ro by [mysql.databases.\"/miui/browser/key\"] allow = [\"/miui/browser/:rw\", \"/miui/report/:ro\"]")), "{msgs:?}");
        assert!(
            msgs.iter().any(|m| m.starts_with("/shop/b/z: ")
                && m.contains("plus OCEAN_MYSQL_ALLOW of /dba/key (/shop/a/:ro)")),
            "{msgs:?}"
        );
    }

    /// `OCEAN_MYSQL_ALLOW` counts only on an app allowed to declare the database: a tenant
    /// cannot allow itself in by labelling its own app a server of another team's database.
    #[test]
    fn an_allow_label_on_a_refused_declaring_app_allows_nobody() {
        let mut config = MysqlConfig::default();
        config.databases.insert(
            "/miui/browser/key".into(),
            DatabaseConfig::new(cred("key_rw"), Some(cred("key_ro"))),
        );
        let json = format!(
            r#"{{"apps":[
            {{"id":"/miui/db/key","labels":{{"OCEAN_MYSQL_DB":"/miui/browser/key","OCEAN_MYSQL_ROLE":"primary"}},"tasks":[{}]}},
            {{"id":"/evil/db","labels":{{"OCEAN_MYSQL_DB":"/miui/browser/key","OCEAN_MYSQL_ROLE":"replica","OCEAN_MYSQL_ALLOW":"/evil/:rw"}},"tasks":[{}]}},
            {{"id":"/evil/web","labels":{{"OCEAN_MYSQL_GRANTS":"/miui/browser/key:rw"}},"tasks":[{}]}}
            ]}}"#,
            task("k.1", "10.0.0.1", &[3306]),
            task("e.1", "10.6.6.1", &[3306]),
            task("e.2", "10.6.6.2", &[1]),
        );
        let mut problems = Vec::new();
        let t = derive(&state(&json), &config, &mut problems);
        t.validate().unwrap();
        let evil = t.jobs.iter().find(|j| j.name == "evil/web").unwrap();
        assert!(evil.grants.is_empty(), "{:?}", evil.grants);
        let msgs = messages(&problems);
        assert!(
            msgs.iter().any(|m| m.starts_with("/evil/web: ")
                && m.contains("refused by the default rule (no `allow`")
                && !m.contains("OCEAN_MYSQL_ALLOW")),
            "{msgs:?}"
        );
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
        let mut s = MysqlConfig::default();
        for name in ["/a/x/key", "/b/y/key"] {
            let mut db = DatabaseConfig::new(
                Credentials {
                    user: "u".into(),
                    password: "p".into(),
                },
                None,
            );
            db.apps = Some(vec![AppPrefix::parse("/db/").unwrap()]);
            db.allow = Some(vec![AllowRule::parse("/:rw").unwrap()]);
            db.pool_max = Some(7);
            db.multiplex = Some(true);
            s.databases.insert(name.into(), db);
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
        assert_eq!(
            t.databases[0].pool_max,
            Some(7),
            "pool_max reaches the table"
        );
        assert_eq!(t.databases[0].multiplex, Some(true), "so does multiplex");
        assert!(t.jobs.is_empty());
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
