//! Ownership: which app may claim which shared thing.
//!
//! A Marathon label is written by whoever may deploy that app, which is not always whoever
//! owns the database, cluster, pool or VIP the label names. Every claim a label makes is
//! therefore checked against a rule from `control.toml`, or a default that stays inside the
//! app's own top-level group:
//!
//! | claim | rule in control.toml | default |
//! |---|---|---|
//! | `OCEAN_MYSQL_DB` | `[mysql.databases.N] apps` | apps under the database name's top-level group |
//! | `OCEAN_MYSQL_GRANTS` | `[mysql.databases.N] allow` (+ `OCEAN_MYSQL_ALLOW`) | jobs under that group, `rw` |
//! | `OCEAN_REDIS_CLUSTER` | `[redis.clusters.N] apps` | every claimant in one top-level group |
//! | `OCEAN_MEMCACHED_POOL` | `[memcached.pools.N] apps` | every claimant in one top-level group |
//! | `OCEAN_ELB` | `[lvs] vips = [{cidr, apps}]` | none: no range, no VIP |
//! | `OCEAN_ELB_VIEW_<VIEW>` | `[lvs] vips`, as `OCEAN_ELB` | none: no range, no VIP |
//! | `OCEAN_DNS_NAMES` | `[dns.zones."ZONE"] apps` (the longest zone holding the name) | none: no zone, no name |
//! | `OCEAN_JOBNAME` | — | the app named by the JOBNAME owns it, else one top-level group |
//!
//! This module holds the rule types and the decisions; each `derive` module applies them
//! and turns every refusal into a [`Problem`](crate::derive::Problem). A conflict between
//! owners is never settled by "first" or "lowest id": the claim without a rule fails.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ocean_core::net::Cidr;
use ocean_core::table::mysql::Access;
use serde::Deserialize;

/// The ownership rules of control.toml that are not about MySQL (those live with each
/// database in [`crate::derive::mysql::DatabaseConfig`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Owners {
    /// `[redis.clusters."NAME"] apps`.
    pub redis_clusters: BTreeMap<String, Vec<AppPrefix>>,
    /// `[memcached.pools."NAME"] apps`.
    pub memcached_pools: BTreeMap<String, Vec<AppPrefix>>,
    /// `[lvs] vips`.
    pub vips: Vec<VipRange>,
}

impl Owners {
    /// The rule for a Redis cluster name.
    pub fn redis(&self, name: &str) -> NameRule<'_> {
        self.redis_clusters
            .get(name)
            .map_or(NameRule::SameGroup, |a| NameRule::Configured(a))
    }

    /// The rule for a memcached pool name.
    pub fn memcached(&self, name: &str) -> NameRule<'_> {
        self.memcached_pools
            .get(name)
            .map_or(NameRule::SameGroup, |a| NameRule::Configured(a))
    }
}

/// An app-id prefix from `control.toml`: `"/db/"` covers every app under `/db/`;
/// `"/db/key"` covers the app `/db/key` and the apps under `/db/key/`, not `/db/keyring`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct AppPrefix(String);

impl AppPrefix {
    /// Parses a prefix; it must start with `/` like a Marathon app id.
    pub fn parse(s: &str) -> Result<AppPrefix, String> {
        let s = s.trim();
        if !s.starts_with('/') {
            return Err(format!(
                "{s:?} is not an app-id prefix (it must start with '/', like \"/db/\")"
            ));
        }
        if s.contains("//") {
            return Err(format!("{s:?} has an empty path segment"));
        }
        Ok(AppPrefix(s.to_string()))
    }

    /// The default owner of a shared name: the top-level group of `id` (`/miui/browser/key`
    /// gives `/miui/`), or `id` itself for a root-level id (`/web`).
    pub fn group_of(id: &str) -> AppPrefix {
        AppPrefix(owner_group(id))
    }

    /// Whether `app_id` lies under this prefix.
    pub fn covers(&self, app_id: &str) -> bool {
        let p = self.0.as_str();
        if p.ends_with('/') {
            return app_id.starts_with(p);
        }
        app_id == p
            || app_id
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AppPrefix {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        AppPrefix::parse(&s)
    }
}

impl fmt::Display for AppPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The group that owns `id` by default: `/miui/` for `/miui/browser/web`, the id itself
/// for a root-level app such as `/web` (which therefore shares a group with no other app).
pub fn owner_group(id: &str) -> String {
    let rest = id.strip_prefix('/').unwrap_or(id);
    match rest.split_once('/') {
        Some((top, _)) if !top.is_empty() => format!("/{top}/"),
        _ => format!("/{rest}"),
    }
}

/// Whether any prefix of `set` covers `app_id`.
pub fn any_covers(set: &[AppPrefix], app_id: &str) -> bool {
    set.iter().any(|p| p.covers(app_id))
}

/// `"/a/", "/b/"` for messages.
pub fn list(set: &[AppPrefix]) -> String {
    set.iter()
        .map(|p| format!("{:?}", p.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One entry of a database's `allow` list (`"/miui/report/:ro"`): the jobs of the apps
/// under `apps` may be granted the database, with at most `max` access.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AllowRule {
    pub apps: AppPrefix,
    pub max: Access,
}

impl AllowRule {
    /// Parses `PREFIX:rw` or `PREFIX:ro`.
    pub fn parse(s: &str) -> Result<AllowRule, String> {
        let s = s.trim();
        let (prefix, access) = s.rsplit_once(':').ok_or_else(|| {
            format!("{s:?} is not APP-PREFIX:rw or APP-PREFIX:ro (e.g. \"/miui/report/:ro\")")
        })?;
        let max = match access {
            "rw" => Access::Rw,
            "ro" => Access::Ro,
            other => return Err(format!("{s:?}: access {other:?} is not rw or ro")),
        };
        Ok(AllowRule {
            apps: AppPrefix::parse(prefix)?,
            max,
        })
    }
}

impl TryFrom<String> for AllowRule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        AllowRule::parse(&s)
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = match self.max {
            Access::Rw => "rw",
            Access::Ro => "ro",
        };
        write!(f, "{}:{a}", self.apps)
    }
}

/// The most `app_id` may be granted under `allow`: `rw` beats `ro`; `None` when no entry
/// covers the app.
pub fn allowed_access(allow: &[AllowRule], app_id: &str) -> Option<Access> {
    allow
        .iter()
        .filter(|r| r.apps.covers(app_id))
        .map(|r| r.max)
        .min() // Access orders Rw before Ro.
}

/// A VIP range from `[lvs] vips`: VIPs inside `cidr` may be claimed by the apps under `apps`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipRange {
    pub cidr: Cidr,
    pub apps: Vec<AppPrefix>,
}

/// The ranges that decide who owns `vip`: the most specific ones that contain it (a /28
/// carved out of a /24 belongs to the /28's apps). Empty when no range contains it.
pub fn vip_owners(ranges: &[VipRange], vip: IpAddr) -> Vec<&VipRange> {
    let containing: Vec<&VipRange> = ranges.iter().filter(|r| r.cidr.contains(vip)).collect();
    let Some(best) = containing.iter().map(|r| r.cidr.prefix_len()).max() else {
        return Vec::new();
    };
    containing
        .into_iter()
        .filter(|r| r.cidr.prefix_len() == best)
        .collect()
}

/// `::ffff:10.0.0.1` is `10.0.0.1`: one spelling per address for every comparison.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Who may claim a shared name (a Redis cluster, a memcached pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameRule<'a> {
    /// `apps` from control.toml.
    Configured(&'a [AppPrefix]),
    /// No rule: every claimant must share one top-level group.
    SameGroup,
}

/// The verdict on the claimants of one shared name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NameVerdict<'a> {
    /// Claimants that may use the name, in the order given.
    pub accepted: Vec<&'a str>,
    /// Claimants refused, with why (naming the rule).
    pub refused: Vec<(&'a str, String)>,
}

/// Decides which of `claimants` (app ids) may use the shared name `name` claimed through
/// `label`; `config_key` is where an operator names the owners (`[redis.clusters."x"]`).
pub fn judge_name<'a>(
    label: &str,
    name: &str,
    config_key: &str,
    rule: NameRule<'_>,
    claimants: &[&'a str],
) -> NameVerdict<'a> {
    let mut v = NameVerdict::default();
    match rule {
        NameRule::Configured(apps) => {
            for &id in claimants {
                if any_covers(apps, id) {
                    v.accepted.push(id);
                } else {
                    v.refused.push((
                        id,
                        format!(
                            "{label}={name}: refused by {config_key} apps = [{}], which does not cover this app",
                            list(apps)
                        ),
                    ));
                }
            }
        }
        NameRule::SameGroup => {
            let groups: std::collections::BTreeSet<String> =
                claimants.iter().map(|id| owner_group(id)).collect();
            if groups.len() <= 1 {
                v.accepted.extend(claimants.iter().copied());
            } else {
                let groups: Vec<String> = groups.into_iter().collect();
                for &id in claimants {
                    v.refused.push((
                        id,
                        format!(
                            "{label}={name}: conflict: claimed by apps of several top-level groups ({}); the default rule needs one owner, so the name is refused for all; name the owner with {config_key} apps = [...] in control.toml",
                            groups.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    v
}

/// Settles a listen port wanted by several names: a name with a rule in control.toml keeps
/// it when it is the only such name; otherwise nobody does. Returns the winner, if any.
pub fn port_owner<'a>(contenders: &[(&'a str, bool)]) -> Option<&'a str> {
    match contenders {
        [(one, _)] => Some(one),
        _ => {
            let configured: Vec<&str> = contenders
                .iter()
                .filter(|(_, c)| *c)
                .map(|(n, _)| *n)
                .collect();
            match configured.as_slice() {
                [one] => Some(one),
                _ => None,
            }
        }
    }
}

/// Which apps may claim a JOBNAME: those covered by `[mysql.jobs."JOBNAME"] apps` when
/// the operator set it; otherwise the app whose id is `/JOBNAME` owns it (with its
/// top-level group), and without such an app every claimant must share one top-level group.
pub fn judge_jobname<'a>(
    jobname: &str,
    rule: Option<&[AppPrefix]>,
    claimants: &[&'a str],
) -> NameVerdict<'a> {
    let config_key = format!("[mysql.jobs.{jobname:?}]");
    if let Some(apps) = rule {
        return judge_name(
            "OCEAN_JOBNAME",
            jobname,
            &config_key,
            NameRule::Configured(apps),
            claimants,
        );
    }
    let natural = format!("/{jobname}");
    let mut v = NameVerdict::default();
    if claimants.contains(&natural.as_str()) {
        let group = owner_group(&natural);
        for &id in claimants {
            if owner_group(id) == group {
                v.accepted.push(id);
            } else {
                v.refused.push((
                    id,
                    format!(
                        "OCEAN_JOBNAME={jobname}: the job belongs to app {natural} (group {group}); an app outside that group may not join it"
                    ),
                ));
            }
        }
        return v;
    }
    judge_name(
        "OCEAN_JOBNAME",
        jobname,
        &config_key,
        NameRule::SameGroup,
        claimants,
    )
}

/// Groups claimants by name, keeping app order.
pub fn by_name<T>(items: impl IntoIterator<Item = (String, T)>) -> BTreeMap<String, Vec<T>> {
    let mut m: BTreeMap<String, Vec<T>> = BTreeMap::new();
    for (k, v) in items {
        m.entry(k).or_default().push(v);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> AppPrefix {
        AppPrefix::parse(s).unwrap()
    }

    #[test]
    fn prefixes_cover_whole_segments() {
        assert!(p("/db/").covers("/db/key"));
        assert!(p("/db/").covers("/db/a/b"));
        assert!(!p("/db/").covers("/dbx/key"));
        assert!(!p("/db/").covers("/db"));
        assert!(p("/db/key").covers("/db/key"));
        assert!(p("/db/key").covers("/db/key/replica"));
        assert!(!p("/db/key").covers("/db/keyring"));
        assert!(p("/").covers("/anything"));
        assert!(AppPrefix::parse("db/").is_err());
        assert!(AppPrefix::parse("/a//b").is_err());
    }

    #[test]
    fn owner_groups() {
        assert_eq!(owner_group("/miui/browser/key"), "/miui/");
        assert_eq!(owner_group("/miui/web"), "/miui/");
        assert_eq!(owner_group("/web"), "/web");
        assert_eq!(owner_group("browser-web"), "/browser-web");
        assert!(AppPrefix::group_of("/miui/browser/key").covers("/miui/db/primary"));
        assert!(!AppPrefix::group_of("/miui/browser/key").covers("/evil/x"));
    }

    #[test]
    fn allow_rules_parse_and_rw_beats_ro() {
        let allow = vec![
            AllowRule::parse("/miui/report/:ro").unwrap(),
            AllowRule::parse("/miui/:rw").unwrap(),
        ];
        assert_eq!(allowed_access(&allow, "/miui/report/x"), Some(Access::Rw));
        assert_eq!(
            allowed_access(&allow[..1], "/miui/report/x"),
            Some(Access::Ro)
        );
        assert_eq!(allowed_access(&allow, "/shop/x"), None);
        assert!(AllowRule::parse("/miui/").is_err());
        assert!(AllowRule::parse("/miui/:admin").is_err());
        assert!(AllowRule::parse("miui:ro").is_err());
        assert_eq!(allow[0].to_string(), "/miui/report/:ro");
    }

    #[test]
    fn the_most_specific_vip_range_owns_the_vip() {
        let ranges = vec![
            VipRange {
                cidr: "10.99.0.0/16".parse().unwrap(),
                apps: vec![p("/lb/")],
            },
            VipRange {
                cidr: "10.99.7.0/24".parse().unwrap(),
                apps: vec![p("/shop/lb/")],
            },
        ];
        let o = vip_owners(&ranges, "10.99.7.5".parse().unwrap());
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].apps, vec![p("/shop/lb/")]);
        let o = vip_owners(&ranges, "10.99.1.5".parse().unwrap());
        assert_eq!(o[0].apps, vec![p("/lb/")]);
        assert!(vip_owners(&ranges, "10.98.0.1".parse().unwrap()).is_empty());
        assert_eq!(
            vip_owners(&ranges, "::ffff:10.99.1.5".parse().unwrap()).len(),
            1
        );
    }

    #[test]
    fn a_name_across_groups_is_a_conflict_for_every_claimant() {
        let v = judge_name(
            "OCEAN_REDIS_CLUSTER",
            "sessions",
            "[redis.clusters.\"sessions\"]",
            NameRule::SameGroup,
            &["/cache/a", "/evil/b"],
        );
        assert!(v.accepted.is_empty());
        assert_eq!(v.refused.len(), 2);
        assert!(v.refused[0].1.contains("conflict"), "{:?}", v.refused);
        let v = judge_name(
            "OCEAN_REDIS_CLUSTER",
            "sessions",
            "[redis.clusters.\"sessions\"]",
            NameRule::SameGroup,
            &["/cache/a", "/cache/b"],
        );
        assert_eq!(v.accepted, vec!["/cache/a", "/cache/b"]);
        let rule = [p("/cache/")];
        let v = judge_name(
            "OCEAN_REDIS_CLUSTER",
            "sessions",
            "[redis.clusters.\"sessions\"]",
            NameRule::Configured(&rule),
            &["/cache/a", "/evil/b"],
        );
        assert_eq!(v.accepted, vec!["/cache/a"]);
        assert_eq!(v.refused[0].0, "/evil/b");
        assert!(v.refused[0]
            .1
            .contains("[redis.clusters.\"sessions\"] apps"));
    }

    #[test]
    fn ports_go_to_the_only_configured_contender_or_nobody() {
        assert_eq!(port_owner(&[("a", false)]), Some("a"));
        assert_eq!(port_owner(&[("a", false), ("b", true)]), Some("b"));
        assert_eq!(port_owner(&[("a", false), ("b", false)]), None);
        assert_eq!(port_owner(&[("a", true), ("b", true)]), None);
    }

    #[test]
    fn jobnames_belong_to_the_app_they_name() {
        let v = judge_jobname("miui/browser/web", None, &["/evil/x", "/miui/browser/web"]);
        assert_eq!(v.accepted, vec!["/miui/browser/web"]);
        assert_eq!(v.refused[0].0, "/evil/x");
        let v = judge_jobname(
            "browser-web",
            None,
            &["/miui/browser/web", "/miui/browser/canary"],
        );
        assert_eq!(v.accepted.len(), 2);
        let v = judge_jobname("browser-web", None, &["/miui/browser/web", "/evil/x"]);
        assert!(v.accepted.is_empty());
        assert_eq!(v.refused.len(), 2);
        let rule = [p("/miui/browser/")];
        let v = judge_jobname(
            "browser-web",
            Some(&rule),
            &["/miui/browser/web", "/evil/x"],
        );
        assert_eq!(v.accepted, vec!["/miui/browser/web"]);
        assert!(v.refused[0].1.contains("[mysql.jobs.\"browser-web\"] apps"));
    }
}
