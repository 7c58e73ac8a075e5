//! What control believes Marathon holds: apps and tasks normalized into the facts derive
//! needs (which tasks count, their routable IP and ports), independent of Marathon's version.
//!
//! Rules (see `docs/control.md`):
//! - A task counts when it is `TASK_RUNNING` (or has no state but has started: Marathon 1.4)
//!   and, where the app has health checks, every result is alive. A task with no results yet
//!   keeps its last known result ([`HealthMemory`]): after a leader election Marathon
//!   answers "unknown" for a while and that must not empty every pool.
//! - A task's IP is its `ipAddresses` entry when the app has an IP per task (a `container`
//!   network, a 1.4 `ipAddress`, Docker `USER` network), with the container ports; otherwise
//!   it is its agent's address with the host ports. A Docker bridge task also lists an
//!   `ipAddresses` entry, but that is the bridge-local address no other host can reach.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::marathon::model;

/// The normalized Marathon state, apps sorted by id.
///
/// Each app is shared: a sync after events normalizes only the apps they named and takes
/// the others from the last state as they are ([`normalize_patched`]), and the derive's
/// dns index tells an unchanged app by its pointer.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct State {
    pub apps: Vec<Arc<App>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct App {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// Service ports, in port-index order (0 where Marathon assigns none).
    pub service_ports: Vec<u16>,
    /// Per port index: name and protocols (`tcp`, `udp`), as declared.
    pub port_specs: Vec<PortSpec>,
    pub ip_per_task: bool,
    pub has_health_checks: bool,
    pub tasks: Vec<Task>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PortSpec {
    pub name: Option<String>,
    pub protocols: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Task {
    pub id: String,
    pub slave_id: String,
    /// The agent's hostname as Marathon reports it.
    pub host: String,
    /// The agent's address (resolved when `host` is a name).
    pub agent_ip: Option<IpAddr>,
    /// The address other hosts reach the task at.
    pub ip: Option<IpAddr>,
    /// Every address DNS publishes for the task: `ip`, plus the first address of the other
    /// family for an IP-per-task task that has both (as Mesos-DNS does).
    pub ips: Vec<IpAddr>,
    /// Ports on `ip`, in port-index order.
    pub ports: Vec<u16>,
    /// Host ports Mesos allocated (the `resources.ports` Mesos-DNS uses for `.slave.` SRV).
    pub host_ports: Vec<u16>,
    pub state: String,
    pub running: bool,
    /// `None` when the app has no health checks.
    pub healthy: Option<bool>,
}

impl Task {
    /// Whether the task is a backend: running, healthy where checked, and addressable.
    pub fn counts(&self) -> bool {
        self.running && self.healthy != Some(false) && self.ip.is_some()
    }
}

/// Last known health result per task id, kept across syncs.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HealthMemory(FxHashMap<String, bool>);

impl HealthMemory {
    /// Remembers results of the current tasks and forgets tasks that are gone.
    fn update(&mut self, seen: &FxHashMap<String, bool>, present: &FxHashSet<&str>) {
        self.0.retain(|id, _| present.contains(id.as_str()));
        for (id, alive) in seen {
            self.0.insert(id.clone(), *alive);
        }
    }
}

/// Resolved agent hostnames (hostname -> address); built before [`normalize`] so that it
/// stays pure.
pub type Resolved = HashMap<String, IpAddr>;

/// Agent hostnames in `apps` that are not literal IPs and need resolving.
pub fn hostnames(apps: &[model::App]) -> HashSet<String> {
    apps.iter()
        .flat_map(|a| a.tasks.iter().flatten())
        .filter(|t| !t.host.is_empty() && t.host.parse::<IpAddr>().is_err())
        .map(|t| t.host.clone())
        .collect()
}

fn port(p: Option<u32>) -> u16 {
    p.and_then(|p| u16::try_from(p).ok()).unwrap_or(0)
}

fn protocols(p: Option<&str>) -> Vec<String> {
    let mut v: Vec<String> = p
        .unwrap_or("tcp")
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    if v.is_empty() {
        v.push("tcp".into());
    }
    v
}

fn port_mappings(app: &model::App) -> Option<&Vec<model::PortMapping>> {
    let c = app.container.as_ref()?;
    c.port_mappings
        .as_ref()
        .or_else(|| c.docker.as_ref().and_then(|d| d.port_mappings.as_ref()))
}

fn is_ip_per_task(app: &model::App) -> bool {
    let container_network = app
        .networks
        .iter()
        .flatten()
        .any(|n| n.mode.as_deref() == Some("container"));
    let docker_user = app
        .container
        .as_ref()
        .and_then(|c| c.docker.as_ref())
        .and_then(|d| d.network.as_deref())
        == Some("USER");
    container_network || docker_user || app.ip_address.is_some()
}

/// Builds the normalized state. Pure but for `memory`, which it reads and updates.
pub fn normalize(apps: &[model::App], resolved: &Resolved, memory: &mut HealthMemory) -> State {
    let (mut out, seen_health, present) = normalize_each(apps, resolved, memory);
    memory.update(&seen_health, &present);
    out.sort_by(|a, b| a.id.cmp(&b.id));
    State { apps: out }
}

/// [`normalize`] after events named a few apps: `apps` is the list `last` was normalized
/// from (with the same `resolved`) but for the apps named in `changed`, so the others are
/// taken over from `last` as they are and only the named ones are normalized again. At
/// 100k tasks that is ~1 ms instead of ~80.
///
/// `None` when the lists do not line up that way or a named id is not unique in either
/// (`normalize` keeps every copy of a duplicate id, which a patch by id cannot tell
/// apart): the caller then normalizes whole.
pub fn normalize_patched(
    last: &State,
    apps: &[model::App],
    changed: &[String],
    resolved: &Resolved,
    memory: &mut HealthMemory,
) -> Option<State> {
    let changed: BTreeSet<&str> = changed.iter().map(String::as_str).collect();
    let mut fresh: Vec<&model::App> = apps
        .iter()
        .filter(|a| changed.contains(a.id.as_str()))
        .collect();
    fresh.sort_by(|a, b| a.id.cmp(&b.id));
    let gone: Vec<&Arc<App>> = last
        .apps
        .iter()
        .filter(|a| changed.contains(a.id.as_str()))
        .collect();
    if fresh.windows(2).any(|w| w[0].id == w[1].id)
        || gone.windows(2).any(|w| w[0].id == w[1].id)
        || last.apps.len() - gone.len() + fresh.len() != apps.len()
    {
        return None;
    }
    let (normalized, seen_health, present) = normalize_each(fresh, resolved, memory);
    // The memory forgets the named apps' tasks that are gone and keeps the others', as the
    // whole update does (task ids are unique across apps: Marathon's embed the app id).
    for old in &gone {
        for t in &old.tasks {
            if !present.contains(t.id.as_str()) {
                memory.0.remove(&t.id);
            }
        }
    }
    for (id, alive) in seen_health {
        memory.0.insert(id, alive);
    }
    let mut out: Vec<Arc<App>> = last
        .apps
        .iter()
        .filter(|a| !changed.contains(a.id.as_str()))
        .cloned()
        .collect();
    out.extend(normalized);
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Some(State { apps: out })
}

/// Normalizes each of `apps`; returns them (in the same order) with their tasks' health
/// results and ids, for the health memory's update.
fn normalize_each<'a>(
    apps: impl IntoIterator<Item = &'a model::App>,
    resolved: &Resolved,
    memory: &HealthMemory,
) -> (Vec<Arc<App>>, FxHashMap<String, bool>, FxHashSet<&'a str>) {
    // One entry per task (100k at platform scale): FxHash, not std's SipHash (3% of a
    // sync under load). Task ids come from Marathon, with a UUID it makes.
    let mut seen_health = FxHashMap::default();
    let mut present = FxHashSet::default();
    let out = apps
        .into_iter()
        .map(|app| {
            Arc::new(normalize_app(
                app,
                resolved,
                memory,
                &mut seen_health,
                &mut present,
            ))
        })
        .collect();
    (out, seen_health, present)
}

/// One app of [`normalize`]; notes its tasks' health results in `seen_health` and their
/// ids in `present`, for the health memory's update.
fn normalize_app<'a>(
    app: &'a model::App,
    resolved: &Resolved,
    memory: &HealthMemory,
    seen_health: &mut FxHashMap<String, bool>,
    present: &mut FxHashSet<&'a str>,
) -> App {
    {
        let ip_per_task = is_ip_per_task(app);
        let mappings = port_mappings(app);
        // Marathon 1.4 IP-per-task apps declare their ports (names, protocols) as discovery ports.
        let discovery: Vec<&model::DiscoveryPort> = app
            .ip_address
            .iter()
            .flat_map(|i| i.discovery.iter())
            .flat_map(|d| &d.ports)
            .collect();
        let (service_ports, port_specs): (Vec<u16>, Vec<PortSpec>) = if let Some(pm) = mappings {
            pm.iter()
                .map(|m| {
                    (
                        port(m.service_port),
                        PortSpec {
                            name: m.name.clone(),
                            protocols: protocols(m.protocol.as_deref()),
                        },
                    )
                })
                .unzip()
        } else if mappings.is_none() && !discovery.is_empty() {
            discovery
                .iter()
                .map(|d| {
                    (
                        0,
                        PortSpec {
                            name: d.name.clone(),
                            protocols: protocols(d.protocol.as_deref()),
                        },
                    )
                })
                .unzip()
        } else if let Some(pd) = &app.port_definitions {
            pd.iter()
                .map(|d| {
                    (
                        port(d.port),
                        PortSpec {
                            name: d.name.clone(),
                            protocols: protocols(d.protocol.as_deref()),
                        },
                    )
                })
                .unzip()
        } else {
            app.ports
                .iter()
                .flatten()
                .map(|p| {
                    (
                        port(Some(*p)),
                        PortSpec {
                            name: None,
                            protocols: vec!["tcp".into()],
                        },
                    )
                })
                .unzip()
        };
        // Ports of an IP-per-task app: container ports of its mappings, or the 1.4 discovery ports.
        let container_ports: Vec<u16> = match (mappings, &app.ip_address) {
            (Some(pm), _) => pm.iter().map(|m| port(m.container_port)).collect(),
            (None, Some(spec)) => spec
                .discovery
                .iter()
                .flat_map(|d| &d.ports)
                .map(|p| port(p.number))
                .collect(),
            _ => Vec::new(),
        };
        let has_health_checks = app.health_checks.as_ref().is_some_and(|h| !h.is_empty());
        let mut tasks = Vec::new();
        for t in app.tasks.iter().flatten() {
            present.insert(t.id.as_str());
            let state = t.state.clone().unwrap_or_else(|| {
                if t.started_at.is_some() {
                    "TASK_RUNNING".into()
                } else {
                    "TASK_STAGING".into()
                }
            });
            let running = state == "TASK_RUNNING";
            let healthy = if has_health_checks {
                match t.health_check_results.as_deref() {
                    Some(r) if !r.is_empty() => {
                        let alive = r.iter().all(|h| h.alive);
                        seen_health.insert(t.id.clone(), alive);
                        Some(alive)
                    }
                    // No result: the last one we saw, else "not checked yet" = not healthy.
                    _ => Some(memory.0.get(&t.id).copied().unwrap_or(false)),
                }
            } else {
                None
            };
            let agent_ip = t
                .host
                .parse::<IpAddr>()
                .ok()
                .or_else(|| resolved.get(&t.host).copied());
            let host_ports: Vec<u16> = t.ports.iter().flatten().map(|p| port(Some(*p))).collect();
            let task_ips: Vec<IpAddr> = t
                .ip_addresses
                .iter()
                .flatten()
                .filter_map(|a| a.ip_address.parse::<IpAddr>().ok())
                .collect();
            let task_ip = task_ips.first().copied();
            let (ip, ports) = match (ip_per_task, task_ip) {
                (true, Some(ip)) => {
                    let ports = if container_ports.iter().any(|p| *p != 0) {
                        container_ports.clone()
                    } else {
                        host_ports.clone()
                    };
                    (Some(ip), ports)
                }
                _ => (agent_ip, host_ports.clone()),
            };
            let mut ips: Vec<IpAddr> = ip.into_iter().collect();
            if ip_per_task {
                if let Some(other) = task_ips
                    .iter()
                    .find(|a| a.is_ipv4() != ip.is_some_and(|i| i.is_ipv4()))
                {
                    ips.push(*other);
                }
            }
            tasks.push(Task {
                id: t.id.clone(),
                slave_id: t.slave_id.clone().unwrap_or_default(),
                host: t.host.clone(),
                agent_ip,
                ip,
                ips,
                ports,
                host_ports,
                state,
                running,
                healthy,
            });
        }
        tasks.sort_by(|a, b| a.id.cmp(&b.id));
        App {
            id: app.id.clone(),
            labels: app.labels.clone(),
            service_ports,
            port_specs,
            ip_per_task,
            has_health_checks,
            tasks,
        }
    }
}

impl App {
    /// The app's JOBNAME: label `OCEAN_JOBNAME`, else the id without its leading slash.
    pub fn jobname(&self) -> &str {
        self.labels
            .get("OCEAN_JOBNAME")
            .map(String::as_str)
            .unwrap_or_else(|| self.id.trim_start_matches('/'))
    }

    /// Tasks that are backends (see [`Task::counts`]).
    pub fn live_tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.iter().filter(|t| t.counts())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marathon::model::parse_apps;

    fn state(json: &str, memory: &mut HealthMemory) -> State {
        let (apps, bad) = parse_apps(json.as_bytes()).unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        normalize(&apps, &Resolved::new(), memory)
    }

    #[test]
    fn host_bridge_and_ip_per_task_addresses() {
        let json = r#"{"apps":[
          {"id":"/host","portDefinitions":[{"port":10000,"protocol":"tcp","name":"http"}],
           "tasks":[{"id":"host.1","host":"10.0.1.1","ports":[31000],"state":"TASK_RUNNING","slaveId":"x-S1"}]},
          {"id":"/bridge","container":{"type":"DOCKER","portMappings":[{"containerPort":80,"hostPort":0,"servicePort":10001}]},
           "networks":[{"mode":"container/bridge"}],
           "tasks":[{"id":"bridge.1","host":"10.0.1.2","ports":[31001],"ipAddresses":[{"ipAddress":"172.17.0.2","protocol":"IPv4"}],"state":"TASK_RUNNING"}]},
          {"id":"/ippt","container":{"type":"DOCKER","portMappings":[{"containerPort":6379,"servicePort":10002}]},
           "networks":[{"mode":"container","name":"dcos"}],
           "tasks":[{"id":"ippt.1","host":"10.0.1.3","ports":[],"ipAddresses":[{"ipAddress":"9.0.0.5","protocol":"IPv4"}],"state":"TASK_RUNNING"}]}
        ]}"#;
        let s = state(json, &mut HealthMemory::default());
        let by_id = |id: &str| s.apps.iter().find(|a| a.id == id).unwrap();
        let host = &by_id("/host").tasks[0];
        assert_eq!(
            (host.ip, host.ports.clone()),
            ("10.0.1.1".parse().ok(), vec![31000])
        );
        assert_eq!(by_id("/host").service_ports, vec![10000]);
        let bridge = &by_id("/bridge").tasks[0];
        assert_eq!(
            (bridge.ip, bridge.ports.clone()),
            ("10.0.1.2".parse().ok(), vec![31001])
        );
        assert_eq!(by_id("/bridge").service_ports, vec![10001]);
        let ippt = &by_id("/ippt").tasks[0];
        assert!(by_id("/ippt").ip_per_task);
        assert_eq!(
            (ippt.ip, ippt.ports.clone()),
            ("9.0.0.5".parse().ok(), vec![6379])
        );
        assert_eq!(ippt.agent_ip, "10.0.1.3".parse().ok());
    }

    #[test]
    fn health_results_missing_after_an_election_keep_the_last_known_value() {
        let with = |alive: &str| {
            format!(
                r#"{{"apps":[{{"id":"/a","healthChecks":[{{"protocol":"HTTP"}}],"tasks":[
                {{"id":"a.1","host":"10.0.0.1","ports":[1],"state":"TASK_RUNNING"{alive}}}]}}]}}"#
            )
        };
        let mut memory = HealthMemory::default();
        // Never checked: not healthy yet.
        let s = state(&with(""), &mut memory);
        assert_eq!(s.apps[0].tasks[0].healthy, Some(false));
        // Checked alive, then Marathon forgets (leader election): still healthy.
        let s = state(
            &with(r#","healthCheckResults":[{"alive":true}]"#),
            &mut memory,
        );
        assert_eq!(s.apps[0].tasks[0].healthy, Some(true));
        let s = state(&with(r#","healthCheckResults":[]"#), &mut memory);
        assert_eq!(s.apps[0].tasks[0].healthy, Some(true));
        assert!(s.apps[0].tasks[0].counts());
        // Failing: not counted.
        let s = state(
            &with(r#","healthCheckResults":[{"alive":false}]"#),
            &mut memory,
        );
        assert!(!s.apps[0].tasks[0].counts());
    }

    #[test]
    fn dual_stack_tasks_and_marathon_14_discovery_ports() {
        let json = r#"{"apps":[{"id":"/db","ipAddress":{"discovery":{"ports":[{"number":53,"name":"dns","protocol":"udp"}]}},
            "portDefinitions":[],
            "tasks":[{"id":"db.1","host":"10.0.0.1","ports":[],"state":"TASK_RUNNING",
              "ipAddresses":[{"ipAddress":"9.0.0.1","protocol":"IPv4"},{"ipAddress":"fd01::1","protocol":"IPv6"},{"ipAddress":"9.0.0.2","protocol":"IPv4"}]}]}]}"#;
        let s = state(json, &mut HealthMemory::default());
        let t = &s.apps[0].tasks[0];
        assert_eq!(
            t.ips,
            vec![
                "9.0.0.1".parse::<IpAddr>().unwrap(),
                "fd01::1".parse().unwrap()
            ]
        );
        assert_eq!(t.ports, vec![53]);
        assert_eq!(s.apps[0].port_specs[0].name.as_deref(), Some("dns"));
        assert_eq!(s.apps[0].port_specs[0].protocols, vec!["udp"]);
    }

    #[test]
    fn task_states_and_marathon_14_tasks_without_state() {
        let json = r#"{"apps":[{"id":"/a","tasks":[
            {"id":"a.1","host":"10.0.0.1","ports":[1],"state":"TASK_STAGING"},
            {"id":"a.2","host":"10.0.0.2","ports":[1],"startedAt":"2017-01-01T00:00:00Z"},
            {"id":"a.3","host":"10.0.0.3","ports":[1],"state":"TASK_KILLING"}]}]}"#;
        let s = state(json, &mut HealthMemory::default());
        let live: Vec<&str> = s.apps[0].live_tasks().map(|t| t.id.as_str()).collect();
        assert_eq!(live, vec!["a.2"]);
    }

    #[test]
    fn jobname_comes_from_the_label_or_the_id() {
        let s = state(
            r#"{"apps":[{"id":"/miui/web"},{"id":"/x","labels":{"OCEAN_JOBNAME":"job-x"}}]}"#,
            &mut HealthMemory::default(),
        );
        assert_eq!(s.apps[0].jobname(), "miui/web");
        assert_eq!(s.apps[1].jobname(), "job-x");
    }
}
