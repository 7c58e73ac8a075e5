//! The `dns` table: Mesos-DNS names for Marathon tasks (framework `marathon`).
//!
//! For an app `/group/app` Marathon names its tasks `app.group`; Mesos-DNS publishes that
//! raw name and its label form `app-group`, each as:
//! - `{name}.marathon.{domain}` A/AAAA -> task IPs, `{name}.marathon.slave.{domain}` -> agent IPs;
//! - the canonical per-task `{name}-{hash}-{slaveTail}.marathon[.slave].{domain}`;
//! - SRV `_{name}._{proto}.marathon.{domain}` -> canonical task names with the discovery
//!   (routable) ports, plus `_{portname}._{name}._{proto}` for named ports;
//! - SRV `_{name}._tcp|_udp.marathon.slave.{domain}` -> canonical `.slave.` names with the
//!   host ports Mesos allocated.
//!
//! Unlike Mesos-DNS, tasks failing their health checks are left out unless
//! `include_unhealthy` is set, and a name too long for the per-task label (over 63 bytes)
//! keeps its `{name}.marathon[.slave]` records but gets no per-task names or SRV records
//! (reported as a problem) instead of names no server could answer.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ocean_core::table::dns::{check_fqdn, DnsRecords, DnsTable, DnsView, Soa, SrvRecord};
use ocean_core::table::TableKind;

use ocean_core::net::Cidr;

use super::names::{label, slave_tail, task_hash, task_name};
use super::Problem;
use crate::ownership::AppPrefix;
use crate::state::{State, Task};

/// DNS settings from control's config (`[dns]` and `domain`).
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSettings {
    pub domain: String,
    pub ttl: u32,
    pub soa: Soa,
    /// Mesos masters, for `master.{domain}`, `masterN.{domain}` and `leader.{domain}` (the
    /// first); N counts distinct addresses, in order.
    pub masters: Vec<SocketAddr>,
    /// Labels of at most 24 characters, no leading digits (Mesos-DNS `EnforceRFC952`).
    pub enforce_rfc952: bool,
    /// Publish tasks that fail their health checks (Mesos-DNS behaviour).
    pub include_unhealthy: bool,
    /// SRV weight (Mesos-DNS `SRVRecordDefaultWeight`).
    pub srv_weight: u16,
    /// `[dns.views.NAME]`, in file order (the order the DNS server matches them in).
    pub views: Vec<ViewSettings>,
    /// `[dns.zones."ZONE"] apps`: zones served besides the domain (lowercase, no trailing
    /// dot) and the app-id prefixes whose `OCEAN_DNS_NAMES` may put names in each.
    pub zones: BTreeMap<String, Vec<AppPrefix>>,
}

/// One client view: its name and networks.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewSettings {
    pub name: String,
    pub networks: Vec<Cidr>,
}

impl ViewSettings {
    /// The label that gives this view its VIPs: `OCEAN_ELB_VIEW_` + the name upper-cased,
    /// `-` as `_` (`china-unicom` -> `OCEAN_ELB_VIEW_CHINA_UNICOM`).
    pub fn label(&self) -> String {
        view_label(&self.name)
    }
}

/// See [`ViewSettings::label`].
pub fn view_label(name: &str) -> String {
    format!(
        "OCEAN_ELB_VIEW_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            domain: "mesos".into(),
            ttl: 60,
            soa: Soa::default(),
            masters: Vec::new(),
            enforce_rfc952: false,
            include_unhealthy: false,
            srv_weight: 1,
            views: Vec::new(),
            zones: BTreeMap::new(),
        }
    }
}

impl DnsSettings {
    /// Sets the domain and the SOA names that follow from it (`ns1.<domain>.`).
    pub fn set_domain(&mut self, domain: &str) {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        self.soa.mname = format!("ns1.{d}.");
        self.soa.rname = format!("root.ns1.{d}.");
        self.domain = d;
    }
}

const FRAMEWORK: &str = "marathon";

/// The names being derived. A hash map while building (an app's names are looked up once
/// per task and record, and `entry_ref` copies a key only when it is new); sorted into the
/// table's `BTreeMap` once at the end.
#[derive(Default)]
struct Zone {
    names: hashbrown::HashMap<String, DnsRecords, rustc_hash::FxBuildHasher>,
}

impl Zone {
    fn records(&mut self, name: &str) -> &mut DnsRecords {
        self.names.entry_ref(name).or_default()
    }

    fn ip(&mut self, name: &str, ip: IpAddr) {
        let r = self.records(name);
        match ip {
            IpAddr::V4(v4) => r.a.push(v4),
            IpAddr::V6(v6) => r.aaaa.push(v6),
        }
    }

    /// The valid names, sorted, with sorted, deduplicated records.
    fn into_sorted(self) -> Vec<(String, DnsRecords)> {
        let mut names: Vec<(String, DnsRecords)> = self
            .names
            .into_iter()
            .filter(|(n, _)| check_fqdn(n).is_ok())
            .map(|(n, r)| (n, tidy(r)))
            .collect();
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        names
    }

    fn srv(&mut self, name: &str, target: &str, port: u16, weight: u16) {
        self.records(name).srv.push(SrvRecord {
            priority: 0,
            weight,
            port,
            target: target.to_string(),
        });
    }
}

fn include(task: &Task, s: &DnsSettings) -> bool {
    task.running && (s.include_unhealthy || task.healthy != Some(false))
}

/// The names of `apps` (the state's, or one app on its own), sorted by name, with sorted,
/// deduplicated records; and the problems found.
pub(super) fn derive_apps<A: std::borrow::Borrow<crate::state::App>>(
    apps: &[A],
    s: &DnsSettings,
    tail: &str,
) -> (Vec<(String, DnsRecords)>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut zone = Zone::default();
    for app in apps {
        let app = app.borrow();
        let raw = task_name(&app.id);
        let mangled = label(&raw, s.enforce_rfc952);
        // Mesos-DNS publishes both the raw DiscoveryInfo name and its label form.
        let mut forms = vec![mangled];
        if !forms.contains(&raw) {
            forms.push(raw);
        }
        for name in &forms {
            let app_name = format!("{name}.{FRAMEWORK}");
            if check_fqdn(&format!("{app_name}{tail}")).is_err() {
                problems.push(Problem::app(
                    app,
                    TableKind::Dns,
                    format!("{name:?} does not make a DNS name"),
                ));
                continue;
            }
            let mut reported = false;
            let app_fqdn = format!("{app_name}{tail}");
            let slave_fqdn = format!("{app_name}.slave{tail}");
            let slave_srv =
                ["tcp", "udp"].map(|proto| format!("_{name}._{proto}.{FRAMEWORK}.slave{tail}"));
            for task in app.tasks.iter().filter(|t| include(t, s)) {
                let canonical = format!(
                    "{name}-{}-{}.{FRAMEWORK}",
                    task_hash(&task.id),
                    slave_tail(&task.slave_id)
                );
                let target = format!("{canonical}{tail}");
                let slave_target = format!("{canonical}.slave{tail}");
                // A long name (from about 54 characters) makes a per-task label longer than
                // 63 bytes. Mesos-DNS makes it anyway, but no server can answer it, and an
                // SRV record pointing at it would make the whole table invalid.
                let per_task = check_fqdn(&target).is_ok() && check_fqdn(&slave_target).is_ok();
                if !per_task && !reported {
                    reported = true;
                    problems.push(Problem::app(
                        app,
                        TableKind::Dns,
                        format!(
                            "{target:?} does not make a DNS name: tasks get {app_name}{tail} \
                             but no per-task names or SRV records"
                        ),
                    ));
                }
                for &ip in &task.ips {
                    zone.ip(&app_fqdn, ip);
                    if per_task {
                        zone.ip(&target, ip);
                    }
                }
                if let Some(ip) = task.agent_ip {
                    zone.ip(&slave_fqdn, ip);
                    if per_task {
                        zone.ip(&slave_target, ip);
                    }
                }
                if !per_task {
                    continue;
                }
                for port in task.host_ports.iter().filter(|p| **p != 0) {
                    for srv_name in &slave_srv {
                        zone.srv(srv_name, &slave_target, *port, s.srv_weight);
                    }
                }
                if task.ip.is_none() {
                    continue;
                }
                for (i, port) in task.ports.iter().enumerate().filter(|(_, p)| **p != 0) {
                    let spec = app.port_specs.get(i).cloned().unwrap_or_default();
                    let protos = if spec.protocols.is_empty() {
                        vec!["tcp".to_string()]
                    } else {
                        spec.protocols
                    };
                    let port_name = spec
                        .name
                        .as_deref()
                        .map(|n| label(n, s.enforce_rfc952))
                        .filter(|n| !n.is_empty());
                    for proto in protos.iter().map(|p| label(p, s.enforce_rfc952)) {
                        zone.srv(
                            &format!("_{name}._{proto}.{FRAMEWORK}{tail}"),
                            &target,
                            *port,
                            s.srv_weight,
                        );
                        if let Some(pn) = &port_name {
                            zone.srv(
                                &format!("_{pn}._{name}._{proto}.{FRAMEWORK}{tail}"),
                                &target,
                                *port,
                                s.srv_weight,
                            );
                        }
                    }
                }
            }
        }
    }
    (zone.into_sorted(), problems)
}

/// Two sorted name lists as one; a name in both gets the records of both.
fn merge_sorted(
    a: Vec<(String, DnsRecords)>,
    b: Vec<(String, DnsRecords)>,
) -> Vec<(String, DnsRecords)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((ka, _)), Some((kb, _))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => false,
                std::cmp::Ordering::Equal => {
                    if let (Some((k, mut ra)), Some((_, rb))) = (a.next(), b.next()) {
                        absorb(&mut ra, rb);
                        out.push((k, tidy(ra)));
                    }
                    continue;
                }
            },
        };
        let next = if take_a { a.next() } else { b.next() };
        out.extend(next);
    }
    out
}

/// `from`'s records added to `into`'s, as they come: [`tidy`] them after the last.
pub(super) fn absorb(into: &mut DnsRecords, from: DnsRecords) {
    into.a.extend(from.a);
    into.aaaa.extend(from.aaaa);
    into.srv.extend(from.srv);
}

/// Records sorted and deduplicated: the ETag depends on it.
pub(super) fn tidy(mut r: DnsRecords) -> DnsRecords {
    r.a.sort_unstable();
    r.a.dedup();
    r.aaaa.sort_unstable();
    r.aaaa.dedup();
    r.srv.sort_unstable();
    r.srv.dedup();
    r
}

/// Below this many apps the zone is derived on one thread.
const PARALLEL_FROM_APPS: usize = 512;

/// Derives the zone. With many apps, the two halves of the app list are derived on two
/// threads and their names merged (the result is the same as one pass: names are sorted
/// and records sorted and deduplicated at the end either way).
pub fn derive(state: &State, s: &DnsSettings, problems: &mut Vec<Problem>) -> DnsTable {
    let domain = domain_of(s);
    let tail = format!(".{domain}.");
    let mut names = if state.apps.len() >= PARALLEL_FROM_APPS {
        let (first, second) = state.apps.split_at(state.apps.len() / 2);
        let (a, b) = std::thread::scope(|scope| {
            let other = scope.spawn(|| derive_apps(second, s, &tail));
            let a = derive_apps(first, s, &tail);
            (a, other.join())
        });
        let b = b.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        problems.extend(a.1);
        problems.extend(b.1);
        merge_sorted(a.0, b.0)
    } else {
        let (names, p) = derive_apps(&state.apps, s, &tail);
        problems.extend(p);
        names
    };
    names = merge_sorted(names, master_names(s, &tail));
    table(s, domain, names.into_iter().collect())
}

/// The domain of `s`, as the table holds it (lowercase, no trailing dot).
pub(super) fn domain_of(s: &DnsSettings) -> String {
    s.domain.trim_end_matches('.').to_ascii_lowercase()
}

/// The names of the Mesos masters, sorted: `master.{d}` -> all, `masterN.{d}` -> each,
/// `leader.{d}` -> the first, with SRV. As in Mesos-DNS's masterRecord, a master whose
/// address is already listed (a duplicate, or another port on the same host) takes no
/// masterN of its own.
pub(super) fn master_names(s: &DnsSettings, tail: &str) -> Vec<(String, DnsRecords)> {
    let mut zone = Zone::default();
    let mut listed: Vec<IpAddr> = Vec::with_capacity(s.masters.len());
    for m in &s.masters {
        if listed.contains(&m.ip()) {
            continue;
        }
        let i = listed.len();
        listed.push(m.ip());
        zone.ip(&format!("master{tail}"), m.ip());
        zone.ip(&format!("master{i}{tail}"), m.ip());
        if i == 0 {
            zone.ip(&format!("leader{tail}"), m.ip());
            for proto in ["tcp", "udp"] {
                zone.srv(
                    &format!("_leader._{proto}{tail}"),
                    &format!("leader{tail}"),
                    m.port(),
                    s.srv_weight,
                );
            }
        }
    }
    zone.into_sorted()
}

/// The table of `names` under the settings' SOA, TTL, views (empty until
/// `derive::lb_names` fills them) and zones.
pub(super) fn table(
    s: &DnsSettings,
    domain: String,
    names: BTreeMap<String, DnsRecords>,
) -> DnsTable {
    DnsTable {
        domain,
        ttl: s.ttl,
        soa: s.soa.clone(),
        names,
        // Names per view come from load balancers' labels (`derive::lb_names`).
        views: s
            .views
            .iter()
            .map(|v| DnsView {
                name: v.name.clone(),
                networks: v.networks.iter().map(Cidr::to_string).collect(),
                names: BTreeMap::new(),
            })
            .collect(),
        zones: s.zones.keys().cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::fixtures::state;
    use ocean_core::table::Table;

    /// Derived on two threads (many apps) or one, the zone is the same, names that two
    /// apps share (one in each half) included, and so are the problems.
    #[test]
    fn two_threads_derive_what_one_does() {
        use crate::derive::fixtures::task;
        let apps: Vec<String> = (0..PARALLEL_FROM_APPS as u32 + 11)
            .map(|i| {
                // Apps 300 apart have the same id (Marathon would not allow it, but two
                // ids can make one name, `/a/b-c` and `/a/b/c` in their label form): the
                // pairs fall in different halves of the list.
                let id = format!("/grp/app{}", i % 300);
                let tasks: Vec<String> = (0..2)
                    .map(|k| task(&format!("grp_app{i}.t{k}"), &format!("10.0.{}.{}", i / 200, i % 200 + k), &[31000 + k as u16]))
                    .collect();
                format!(
                    r#"{{"id":"{id}","portDefinitions":[{{"port":10000,"protocol":"tcp","name":"http"}}],"tasks":[{}]}}"#,
                    tasks.join(",")
                )
            })
            .collect();
        let st = state(&format!(r#"{{"apps":[{}]}}"#, apps.join(",")));
        assert!(st.apps.len() >= PARALLEL_FROM_APPS);
        let s = DnsSettings {
            masters: vec!["10.9.0.1:5050".parse().unwrap()],
            ..Default::default()
        };
        let mut problems = Vec::new();
        let both = derive(&st, &s, &mut problems);
        // One thread: the same apps, derived as one slice.
        let (names, one_problems) = derive_apps(&st.apps, &s, ".mesos.");
        let mut one: BTreeMap<String, DnsRecords> = names.into_iter().collect();
        for (k, v) in both
            .names
            .iter()
            .filter(|(k, _)| k.contains("master") || k.contains("leader"))
        {
            one.insert(k.clone(), v.clone());
        }
        assert_eq!(both.names, one);
        assert_eq!(problems, one_problems);
        // Shared names got the records of both halves.
        let shared = &both.names["app5-grp.marathon.mesos."];
        assert!(shared.a.len() >= 4, "{shared:?}");
        both.validate().unwrap();
    }

    fn derive_default(json: &str) -> DnsTable {
        let mut problems = Vec::new();
        let t = derive(&state(json), &DnsSettings::default(), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        t.validate().unwrap();
        t
    }

    fn a(t: &DnsTable, name: &str) -> Vec<String> {
        t.names
            .get(name)
            .map(|r| r.a.iter().map(|i| i.to_string()).collect())
            .unwrap_or_default()
    }

    fn srv(t: &DnsTable, name: &str) -> Vec<String> {
        t.names
            .get(name)
            .map(|r| {
                r.srv
                    .iter()
                    .map(|s| format!("{}:{}", s.target, s.port))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn mesos_dns_names_for_a_nested_group_app() {
        // The worked example of Mesos-DNS's naming: /group/app, task group_app.1bc32344-...,
        // agent tail "0" -> hash 91tus.
        let t = derive_default(
            r#"{"apps":[{"id":"/group/app","portDefinitions":[{"port":10000,"protocol":"tcp","name":"http"}],
            "tasks":[{"id":"group_app.1bc32344-3dda-11e4-a088-c20493233aa5","host":"1.2.3.11","ports":[31000],
            "state":"TASK_RUNNING","slaveId":"20140803-125133-3041283216-5050-2410-0"}]}]}"#,
        );
        assert_eq!(a(&t, "app-group.marathon.mesos."), vec!["1.2.3.11"]);
        assert_eq!(a(&t, "app.group.marathon.mesos."), vec!["1.2.3.11"]);
        assert_eq!(a(&t, "app-group-91tus-0.marathon.mesos."), vec!["1.2.3.11"]);
        assert_eq!(a(&t, "app-group.marathon.slave.mesos."), vec!["1.2.3.11"]);
        assert_eq!(
            a(&t, "app-group-91tus-0.marathon.slave.mesos."),
            vec!["1.2.3.11"]
        );
        assert_eq!(
            srv(&t, "_app-group._tcp.marathon.mesos."),
            vec!["app-group-91tus-0.marathon.mesos.:31000"]
        );
        assert_eq!(
            srv(&t, "_http._app-group._tcp.marathon.mesos."),
            vec!["app-group-91tus-0.marathon.mesos.:31000"]
        );
        assert_eq!(
            srv(&t, "_app-group._udp.marathon.slave.mesos."),
            vec!["app-group-91tus-0.marathon.slave.mesos.:31000"]
        );
        assert!(srv(&t, "_app-group._udp.marathon.mesos.").is_empty());
    }

    #[test]
    fn ip_per_task_apps_answer_container_ips_and_ports() {
        let t = derive_default(
            r#"{"apps":[{"id":"/db/redis","container":{"type":"DOCKER","portMappings":[{"containerPort":6379,"name":"redis"}]},
            "networks":[{"mode":"container","name":"dcos"}],
            "tasks":[{"id":"db_redis.1","host":"10.0.1.3","ports":[],"ipAddresses":[{"ipAddress":"9.0.0.5","protocol":"IPv4"}],
            "state":"TASK_RUNNING","slaveId":"x-S3"}]}]}"#,
        );
        let canonical = format!("redis-db-{}-s3.marathon.mesos.", task_hash("db_redis.1"));
        assert_eq!(a(&t, "redis-db.marathon.mesos."), vec!["9.0.0.5"]);
        assert_eq!(a(&t, "redis-db.marathon.slave.mesos."), vec!["10.0.1.3"]);
        assert_eq!(
            srv(&t, "_redis-db._tcp.marathon.mesos."),
            vec![format!("{canonical}:6379")]
        );
        assert_eq!(
            srv(&t, "_redis._redis-db._tcp.marathon.mesos."),
            vec![format!("{canonical}:6379")]
        );
    }

    #[test]
    fn unhealthy_and_not_running_tasks_are_left_out_unless_asked() {
        let json = r#"{"apps":[{"id":"/web","healthChecks":[{"protocol":"HTTP"}],"tasks":[
            {"id":"web.1","host":"10.0.0.1","ports":[1],"state":"TASK_RUNNING","healthCheckResults":[{"alive":true}]},
            {"id":"web.2","host":"10.0.0.2","ports":[1],"state":"TASK_RUNNING","healthCheckResults":[{"alive":false}]},
            {"id":"web.3","host":"10.0.0.3","ports":[1],"state":"TASK_STAGING"}]}]}"#;
        let t = derive_default(json);
        assert_eq!(a(&t, "web.marathon.mesos."), vec!["10.0.0.1"]);
        let s = DnsSettings {
            include_unhealthy: true,
            ..Default::default()
        };
        let t = derive(&state(json), &s, &mut Vec::new());
        assert_eq!(a(&t, "web.marathon.mesos."), vec!["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn a_name_too_long_for_per_task_names_keeps_its_app_names_and_the_table_valid() {
        // 57 characters: "{name}-{hash}-s0" is 66 bytes, more than a label may hold.
        let json = format!(
            r#"{{"apps":[{{"id":"/{}","portDefinitions":[{{"port":10000,"name":"http"}}],
            "tasks":[{}]}},{{"id":"/short","tasks":[{}]}}]}}"#,
            "a".repeat(57),
            crate::derive::fixtures::task("a.1", "10.0.0.1", &[31000]),
            crate::derive::fixtures::task("short.1", "10.0.0.2", &[31001]),
        );
        let mut problems = Vec::new();
        let t = derive(&state(&json), &DnsSettings::default(), &mut problems);
        t.validate().unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("does not make a DNS name"));
        let long = format!("{}.marathon.mesos.", "a".repeat(57));
        assert_eq!(a(&t, &long), vec!["10.0.0.1"]);
        let per_task = format!("{}-", "a".repeat(57));
        assert!(
            t.names.keys().all(|n| !n.contains(&per_task)),
            "{:?}",
            t.names.keys()
        );
        assert!(srv(&t, &format!("_{}._tcp.marathon.mesos.", "a".repeat(57))).is_empty());
        assert_eq!(a(&t, "short.marathon.mesos."), vec!["10.0.0.2"]);
        assert_eq!(srv(&t, "_short._tcp.marathon.mesos.").len(), 1);
    }

    #[test]
    fn masters_and_leader() {
        let s = DnsSettings {
            masters: vec![
                "10.0.0.8:5050".parse().unwrap(),
                "10.0.0.6:5050".parse().unwrap(),
            ],
            ..Default::default()
        };
        let t = derive(&state(r#"{"apps":[]}"#), &s, &mut Vec::new());
        assert_eq!(a(&t, "master.mesos."), vec!["10.0.0.6", "10.0.0.8"]);
        assert_eq!(a(&t, "master1.mesos."), vec!["10.0.0.6"]);
        assert_eq!(a(&t, "leader.mesos."), vec!["10.0.0.8"]);
        assert_eq!(srv(&t, "_leader._tcp.mesos."), vec!["leader.mesos.:5050"]);
        // As Mesos-DNS: an address listed again takes no masterN of its own.
        let s = DnsSettings {
            masters: [
                "10.0.0.8:5050",
                "10.0.0.8:5050",
                "10.0.0.8:5051",
                "10.0.0.6:5050",
            ]
            .iter()
            .map(|m| m.parse().unwrap())
            .collect(),
            ..Default::default()
        };
        let t = derive(&state(r#"{"apps":[]}"#), &s, &mut Vec::new());
        assert_eq!(a(&t, "master.mesos."), vec!["10.0.0.6", "10.0.0.8"]);
        assert_eq!(a(&t, "master0.mesos."), vec!["10.0.0.8"]);
        assert_eq!(a(&t, "master1.mesos."), vec!["10.0.0.6"]);
        assert!(a(&t, "master2.mesos.").is_empty());
    }
}
