//! The `lvs` table: apps labelled `OCEAN_ELB=vip:port/proto,...` make their live tasks the
//! real servers of those IPVS virtual services.
//!
//! Labels: `OCEAN_ELB` (IPv6 as `[addr]:port/tcp`; proto defaults to tcp),
//! `OCEAN_ELB_SCHEDULER` (default `wrr`), `OCEAN_ELB_FORWARD` (`dr` default, `nat`, `tunnel`),
//! `OCEAN_ELB_PERSISTENCE` (seconds), `OCEAN_ELB_WEIGHT` (default 1). An SCTP item
//! (`vip:port/sctp`) is refused on its own with a problem line (lvs-sync never manages SCTP);
//! the label's other items still count.
//! For DR and tunnel the real server port is the virtual port (the kernel ignores any other);
//! for NAT it is the task's first port.
//!
//! `OCEAN_ELB_VIEW_<VIEW>=vip:port/proto,...` (a `[dns.views]` view, upper-cased, `-` as
//! `_`) adds the VIPs that view's clients are given by DNS (`OCEAN_DNS_NAMES`): each is a
//! virtual service like those of `OCEAN_ELB`, with the same real servers and settings.
//!
//! A VIP is claimed only inside a `[lvs] vips = [{ cidr, apps }]` range of control.toml whose
//! `apps` covers the app (the most specific containing range decides; no range, no VIP).
//! Several apps may serve one virtual service when they declare it alike; when they differ
//! (scheduler, persistence) the service is a conflict, reported for each, and left out.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ocean_core::table::lvs::{
    Forward, LvsTable, Protocol, RealServer, VirtualService, MAX_WEIGHT, SCHEDULERS,
};
use ocean_core::table::TableKind;

use super::dns::ViewSettings;
use super::Problem;
use crate::ownership::{self, VipRange};
use crate::state::{App, State};

/// The label's TCP/UDP services, and the items refused one by one (SCTP) as problem lines;
/// any other bad item refuses the whole label.
type ParsedElb = (Vec<(IpAddr, u16, Protocol)>, Vec<String>);

/// Parses the value of `key` (`OCEAN_ELB` or an `OCEAN_ELB_VIEW_*`).
fn parse_elb(key: &str, label: &str) -> Result<ParsedElb, String> {
    let mut out = Vec::new();
    let mut refused = Vec::new();
    for item in label.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (addr, proto) = match item.rsplit_once('/') {
            Some((a, "tcp")) => (a, Protocol::Tcp),
            Some((a, "udp")) => (a, Protocol::Udp),
            // lvs-sync reads SCTP services but never manages them: say so for this item and
            // keep the app's TCP/UDP ones.
            Some((_, p)) if p.eq_ignore_ascii_case("sctp") => {
                refused.push(format!(
                    "{key}={item}: SCTP virtual services are not managed by Ocean"
                ));
                continue;
            }
            Some((_, p)) => return Err(format!("{item:?}: protocol {p:?} is not tcp or udp")),
            None => (item, Protocol::Tcp),
        };
        let sa: SocketAddr = addr
            .parse()
            .map_err(|_| format!("{item:?} is not VIP:PORT/PROTO (IPv6 as [addr]:port)"))?;
        if sa.port() == 0 {
            return Err(format!("{item:?}: port 0"));
        }
        out.push((sa.ip(), sa.port(), proto));
    }
    if out.is_empty() && refused.is_empty() {
        return Err("no virtual service given".into());
    }
    Ok((out, refused))
}

/// One virtual service an app declares: VIP, port, protocol.
pub(crate) type Service = (IpAddr, u16, Protocol);

/// An app's ELB labels, parsed.
pub(crate) struct AppElb {
    pub services: Vec<Service>,
    /// Per view (index into the configured views, its label, its services), from
    /// `OCEAN_ELB_VIEW_*`.
    pub views: Vec<(usize, String, Vec<Service>)>,
    /// Items or view labels refused one by one, each a problem line.
    pub refused: Vec<String>,
    scheduler: String,
    forward: Forward,
    persistence_s: Option<u32>,
    weight: u32,
}

const VIEW_PREFIX: &str = "OCEAN_ELB_VIEW_";

/// Parses an app's `OCEAN_ELB*` labels; `Ok(None)` when it has no `OCEAN_ELB`. `views` are
/// the configured DNS views, in order.
pub(crate) fn parse_app(app: &App, views: &[ViewSettings]) -> Result<Option<AppElb>, String> {
    let view_labels = app
        .labels
        .iter()
        .filter(|(k, _)| k.starts_with(VIEW_PREFIX));
    let Some(elb) = app.labels.get("OCEAN_ELB") else {
        // A view's VIPs are an alternative to the app's own; alone they mean nothing.
        if let Some((k, _)) = view_labels.clone().next() {
            return Err(format!("{k} needs OCEAN_ELB on the same app"));
        }
        return Ok(None);
    };
    let (services, mut refused) =
        parse_elb("OCEAN_ELB", elb).map_err(|e| format!("OCEAN_ELB: {e}"))?;
    let mut by_view = Vec::new();
    for (key, value) in view_labels {
        let Some(i) = views.iter().position(|v| &v.label() == key) else {
            let known: Vec<String> = views.iter().map(|v| v.name.clone()).collect();
            refused.push(format!(
                "{key}: no such view in control.toml [dns.views] (configured: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
            continue;
        };
        match parse_elb(key, value) {
            Ok((s, r)) => {
                refused.extend(r);
                by_view.push((i, key.clone(), s));
            }
            // A bad view label costs that view only: the app's own services still count.
            Err(e) => refused.push(format!("{key}: {e}")),
        }
    }
    let scheduler = app
        .labels
        .get("OCEAN_ELB_SCHEDULER")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "wrr".into());
    if !SCHEDULERS.contains(&scheduler.as_str()) {
        return Err(format!(
            "OCEAN_ELB_SCHEDULER={scheduler:?} is not a kernel scheduler ({})",
            SCHEDULERS.join(", ")
        ));
    }
    let forward = match app.labels.get("OCEAN_ELB_FORWARD").map(|s| s.trim()) {
        None | Some("dr") => Forward::Dr,
        Some("nat") => Forward::Nat,
        Some("tunnel") => Forward::Tunnel,
        Some(other) => {
            return Err(format!(
                "OCEAN_ELB_FORWARD={other:?} is not dr, nat or tunnel"
            ))
        }
    };
    let persistence_s = match app.labels.get("OCEAN_ELB_PERSISTENCE") {
        None => None,
        Some(p) => Some(
            p.trim()
                .parse::<u32>()
                .map_err(|_| format!("OCEAN_ELB_PERSISTENCE={p:?} is not seconds"))?,
        ),
    };
    let weight = match app.labels.get("OCEAN_ELB_WEIGHT") {
        None => 1,
        Some(w) => match w.trim().parse::<u32>() {
            Ok(w) if w <= MAX_WEIGHT => w,
            _ => return Err(format!("OCEAN_ELB_WEIGHT={w:?} is not 0-{MAX_WEIGHT}")),
        },
    };
    Ok(Some(AppElb {
        services,
        views: by_view,
        refused,
        scheduler,
        forward,
        persistence_s,
        weight,
    }))
}

/// Whether `app` may claim `vip`: the most specific `[lvs] vips` ranges that contain it
/// must cover the app. The error names the rule that refused it.
pub(crate) fn judge_vip(ranges: &[VipRange], app: &App, vip: IpAddr) -> Result<(), String> {
    let owners = ownership::vip_owners(ranges, vip);
    if owners.is_empty() {
        return Err(format!(
            "refused: {vip} lies in no [lvs] vips range of control.toml (no range, no VIP)"
        ));
    }
    if owners
        .iter()
        .any(|r| ownership::any_covers(&r.apps, &app.id))
    {
        return Ok(());
    }
    let rules: Vec<String> = owners
        .iter()
        .map(|r| {
            format!(
                "{{ cidr = \"{}\", apps = [{}] }}",
                r.cidr,
                ownership::list(&r.apps)
            )
        })
        .collect();
    Err(format!(
        "refused by [lvs] vips {}, which does not cover this app",
        rules.join(", ")
    ))
}

fn elb_item(key: &str, vip: IpAddr, port: u16, protocol: Protocol) -> String {
    let p = match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    format!("{key}={}/{p}", SocketAddr::new(vip, port))
}

/// Derives the virtual services; `views` are the configured DNS views (for
/// `OCEAN_ELB_VIEW_*`).
pub fn derive(
    state: &State,
    ranges: &[VipRange],
    views: &[ViewSettings],
    problems: &mut Vec<Problem>,
) -> LvsTable {
    type Key = (IpAddr, u16, Protocol);
    // Every accepted claim per virtual service, in app order, with the label that made it.
    let mut claims: BTreeMap<Key, Vec<(&App, &AppElb, &str)>> = BTreeMap::new();
    let parsed: Vec<(&App, AppElb)> = state
        .apps
        .iter()
        .filter_map(|app| match parse_app(app, views) {
            Ok(Some(e)) => Some((&**app, e)),
            Ok(None) => None,
            Err(e) => {
                problems.push(Problem::app(app, TableKind::Lvs, e));
                None
            }
        })
        .collect();
    for (app, elb) in &parsed {
        for why in &elb.refused {
            problems.push(Problem::app(app, TableKind::Lvs, why.clone()));
        }
        let own = elb.services.iter().map(|s| ("OCEAN_ELB", s));
        let viewed = elb
            .views
            .iter()
            .flat_map(|(_, key, s)| s.iter().map(move |s| (key.as_str(), s)));
        for (key, (vip, port, protocol)) in own.chain(viewed) {
            let vip = ownership::canonical(*vip);
            if let Err(why) = judge_vip(ranges, app, vip) {
                problems.push(Problem::app(
                    app,
                    TableKind::Lvs,
                    format!("{}: {why}", elb_item(key, vip, *port, *protocol)),
                ));
                continue;
            }
            let c = claims.entry((vip, *port, *protocol)).or_default();
            // A view may repeat the app's own service: one claim per app.
            if !c.iter().any(|(a, _, _)| a.id == app.id) {
                c.push((app, elb, key));
            }
        }
    }
    let mut services = Vec::new();
    for ((vip, port, protocol), claimants) in claims {
        let Some((_, first, _)) = claimants.first() else {
            continue;
        };
        let agree = claimants.iter().all(|(_, e, _)| {
            e.scheduler == first.scheduler && e.persistence_s == first.persistence_s
        });
        if !agree {
            // Owners that disagree: neither wins by order; the service is left out and the
            // kernel's entry, if lvs-sync made one, is drained by lvs-sync as usual.
            let who: Vec<String> = claimants
                .iter()
                .map(|(a, e, _)| format!("{} (scheduler {})", a.id, e.scheduler))
                .collect();
            for (app, _, key) in &claimants {
                problems.push(Problem::app(
                    app,
                    TableKind::Lvs,
                    format!(
                        "{}: conflict: declared differently by {}; left out until they agree",
                        elb_item(key, vip, port, protocol),
                        who.join(", ")
                    ),
                ));
            }
            continue;
        }
        let mut vs = VirtualService {
            vip,
            port,
            protocol,
            scheduler: first.scheduler.clone(),
            persistence_s: first.persistence_s,
            reals: Vec::new(),
        };
        for (app, elb, _) in &claimants {
            for t in app.live_tasks() {
                let Some(ip) = t.ip else { continue };
                if ip.is_ipv4() != vip.is_ipv4() {
                    continue;
                }
                let rport = match elb.forward {
                    Forward::Nat => match t.ports.first() {
                        Some(p) if *p != 0 => *p,
                        _ => continue,
                    },
                    Forward::Dr | Forward::Tunnel => port,
                };
                vs.reals.push(RealServer {
                    ip,
                    port: rport,
                    weight: elb.weight,
                    forward: elb.forward,
                });
            }
        }
        vs.reals.sort_by_key(|r| (r.ip, r.port));
        vs.reals.dedup_by_key(|r| (r.ip, r.port));
        services.push(vs);
    }
    LvsTable { services }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::fixtures::{state, task};
    use ocean_core::table::Table;

    /// One range that lets every app claim any IPv4 VIP.
    fn open_ranges() -> Vec<VipRange> {
        vec![VipRange {
            cidr: "0.0.0.0/0".parse().unwrap(),
            apps: vec![crate::ownership::AppPrefix::parse("/").unwrap()],
        }]
    }

    #[test]
    fn virtual_services_from_labels() {
        let json = format!(
            r#"{{"apps":[
            {{"id":"/web","labels":{{"OCEAN_ELB":"10.10.0.1:80/tcp,10.10.0.2:53/udp","OCEAN_ELB_FORWARD":"dr"}},"tasks":[{},{}]}},
            {{"id":"/api","labels":{{"OCEAN_ELB":"10.10.0.3:443","OCEAN_ELB_FORWARD":"nat","OCEAN_ELB_SCHEDULER":"rr"}},"tasks":[{}]}},
            {{"id":"/bad","labels":{{"OCEAN_ELB":"not-an-ip:80/tcp"}},"tasks":[{}]}},
            {{"id":"/bad2","labels":{{"OCEAN_ELB":"10.10.0.9:80/tcp","OCEAN_ELB_SCHEDULER":"fastest"}},"tasks":[]}}
            ]}}"#,
            task("w.1", "10.0.0.1", &[31000]),
            task("w.2", "10.0.0.2", &[31001]),
            task("a.1", "10.0.0.3", &[31002]),
            task("b.1", "10.0.0.4", &[31003]),
        );
        let mut problems = Vec::new();
        let t = derive(&state(&json), &open_ranges(), &[], &mut problems);
        t.validate().unwrap();
        assert_eq!(t.services.len(), 3);
        let web = &t.services[0];
        assert_eq!(
            (web.port, web.protocol, web.scheduler.as_str()),
            (80, Protocol::Tcp, "wrr")
        );
        assert!(web
            .reals
            .iter()
            .all(|r| r.port == 80 && r.forward == Forward::Dr));
        let api = t.services.iter().find(|s| s.port == 443).unwrap();
        assert_eq!(api.reals[0].port, 31002);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].message.contains("not-an-ip"));
        assert!(problems[1].message.contains("fastest"));
    }

    #[test]
    fn ipv6_vips_parse() {
        let (v, _) = parse_elb("OCEAN_ELB", "[fd00::1]:80/tcp").unwrap();
        assert_eq!(v[0].1, 80);
        assert!(v[0].0.is_ipv6());
        assert!(parse_elb("OCEAN_ELB", "10.0.0.1:80/quic").is_err());
        assert!(parse_elb("OCEAN_ELB", "10.0.0.1:0").is_err());
    }

    #[test]
    fn sctp_items_are_refused_one_by_one_and_the_apps_tcp_udp_items_still_count() {
        let json = format!(
            r#"{{"apps":[
            {{"id":"/sig","labels":{{"OCEAN_ELB":"10.10.0.1:80/tcp, 10.10.0.1:2905/sctp,10.10.0.2:53/udp"}},"tasks":[{}]}},
            {{"id":"/only","labels":{{"OCEAN_ELB":"[fd00::1]:3868/SCTP"}},"tasks":[{}]}}
            ]}}"#,
            task("s.1", "10.0.0.1", &[31000]),
            task("o.1", "10.0.0.2", &[31001]),
        );
        let mut problems = Vec::new();
        let t = derive(&state(&json), &open_ranges(), &[], &mut problems);
        t.validate().unwrap();
        let got: Vec<(String, Protocol)> = t
            .services
            .iter()
            .map(|s| (format!("{}:{}", s.vip, s.port), s.protocol))
            .collect();
        assert_eq!(
            got,
            vec![
                ("10.10.0.1:80".into(), Protocol::Tcp),
                ("10.10.0.2:53".into(), Protocol::Udp),
            ]
        );
        // In app order (the state sorts apps by id).
        let msgs: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.app.as_deref().unwrap_or("-"), p.message))
            .collect();
        assert_eq!(
            msgs,
            vec![
                "/only: OCEAN_ELB=[fd00::1]:3868/SCTP: SCTP virtual services are not managed by Ocean",
                "/sig: OCEAN_ELB=10.10.0.1:2905/sctp: SCTP virtual services are not managed by Ocean",
            ]
        );
    }
}

#[cfg(test)]
mod ownership_rules {
    use super::*;
    use crate::derive::fixtures::{state, task};
    use crate::ownership::AppPrefix;
    use ocean_core::table::Table;

    #[test]
    fn a_vip_thief_gets_nothing_and_the_owner_keeps_its_vip() {
        let ranges = vec![
            VipRange {
                cidr: "10.99.0.0/24".parse().unwrap(),
                apps: vec![AppPrefix::parse("/lb/").unwrap()],
            },
            VipRange {
                cidr: "10.99.1.0/24".parse().unwrap(),
                apps: vec![AppPrefix::parse("/evil/").unwrap()],
            },
        ];
        let json = format!(
            r#"{{"apps":[
            {{"id":"/lb/web","labels":{{"OCEAN_ELB":"10.99.0.1:80/tcp","OCEAN_ELB_SCHEDULER":"wrr"}},"tasks":[{}]}},
            {{"id":"/evil/thief","labels":{{"OCEAN_ELB":"10.99.0.1:80/tcp,10.0.0.1:22/tcp,10.99.1.9:80","OCEAN_ELB_SCHEDULER":"rr"}},"tasks":[{}]}},
            {{"id":"/lb/a","labels":{{"OCEAN_ELB":"10.99.0.2:80","OCEAN_ELB_SCHEDULER":"rr"}},"tasks":[{}]}},
            {{"id":"/lb/b","labels":{{"OCEAN_ELB":"10.99.0.2:80","OCEAN_ELB_SCHEDULER":"lc"}},"tasks":[{}]}}
            ]}}"#,
            task("w.1", "10.0.5.1", &[31000]),
            task("e.1", "10.6.6.1", &[31000]),
            task("a.1", "10.0.5.2", &[31000]),
            task("b.1", "10.0.5.3", &[31000]),
        );
        let mut problems = Vec::new();
        let t = derive(&state(&json), &ranges, &[], &mut problems);
        t.validate().unwrap();
        let got: Vec<(String, String, Vec<String>)> = t
            .services
            .iter()
            .map(|s| {
                (
                    format!("{}:{}", s.vip, s.port),
                    s.scheduler.clone(),
                    s.reals.iter().map(|r| r.ip.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("10.99.0.1:80".into(), "wrr".into(), vec!["10.0.5.1".into()]),
                ("10.99.1.9:80".into(), "rr".into(), vec!["10.6.6.1".into()]),
            ],
            "{problems:?}"
        );
        let msgs: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.app.as_deref().unwrap_or("-"), p.message))
            .collect();
        let has = |s: &str| msgs.iter().any(|m| m.contains(s));
        assert!(has("/evil/thief: OCEAN_ELB=10.99.0.1:80/tcp: refused by [lvs] vips { cidr = \"10.99.0.0/24\", apps = [\"/lb/\"] }"), "{msgs:?}");
        assert!(has("/evil/thief: OCEAN_ELB=10.0.0.1:22/tcp: refused: 10.0.0.1 lies in no [lvs] vips range"), "{msgs:?}");
        assert!(has("/lb/a: OCEAN_ELB=10.99.0.2:80/tcp: conflict: declared differently by /lb/a (scheduler rr), /lb/b (scheduler lc)"), "{msgs:?}");
        assert!(
            has("/lb/b: OCEAN_ELB=10.99.0.2:80/tcp: conflict"),
            "{msgs:?}"
        );
        assert_eq!(msgs.len(), 4, "{msgs:?}");
    }

    #[test]
    fn no_range_no_vip() {
        let json = format!(
            r#"{{"apps":[{{"id":"/lb/web","labels":{{"OCEAN_ELB":"10.99.0.1:80/tcp"}},"tasks":[{}]}}]}}"#,
            task("w.1", "10.0.5.1", &[31000]),
        );
        let mut problems = Vec::new();
        let t = derive(&state(&json), &[], &[], &mut problems);
        assert!(t.services.is_empty());
        assert!(
            problems[0].message.contains("no range, no VIP"),
            "{problems:?}"
        );
    }
}

#[cfg(test)]
mod views {
    use super::*;
    use crate::derive::fixtures::{state, task};
    use crate::ownership::AppPrefix;
    use ocean_core::table::Table;

    fn views() -> Vec<ViewSettings> {
        ["unicom", "china-telecom"]
            .iter()
            .map(|n| ViewSettings {
                name: n.to_string(),
                networks: vec!["10.1.0.0/16".parse().unwrap()],
            })
            .collect()
    }

    #[test]
    fn view_vips_are_virtual_services_with_the_apps_real_servers() {
        let ranges = vec![VipRange {
            cidr: "10.99.0.0/16".parse().unwrap(),
            apps: vec![AppPrefix::parse("/lb/").unwrap()],
        }];
        let json = format!(
            r#"{{"apps":[
            {{"id":"/lb/api","labels":{{"OCEAN_ELB":"10.99.0.1:80/tcp","OCEAN_ELB_FORWARD":"nat","OCEAN_ELB_SCHEDULER":"rr",
              "OCEAN_ELB_WEIGHT":"5","OCEAN_ELB_VIEW_UNICOM":"10.99.1.1:80,10.50.0.1:80",
              "OCEAN_ELB_VIEW_CHINA_TELECOM":"10.99.0.1:80,10.99.2.1:8080/udp","OCEAN_ELB_VIEW_MARS":"10.99.3.1:80",
              "OCEAN_ELB_VIEW_unicom":"10.99.4.1:80"}},"tasks":[{},{}]}},
            {{"id":"/lb/other","labels":{{"OCEAN_ELB":"10.99.9.9:80","OCEAN_ELB_VIEW_UNICOM":"10.99.1.1:80","OCEAN_ELB_SCHEDULER":"wrr"}},"tasks":[{}]}},
            {{"id":"/lb/viewonly","labels":{{"OCEAN_ELB_VIEW_UNICOM":"10.99.5.1:80"}},"tasks":[]}}
            ]}}"#,
            task("a.1", "10.0.0.1", &[31000]),
            task("a.2", "10.0.0.2", &[31001]),
            task("o.1", "10.0.0.3", &[31002]),
        );
        let mut problems = Vec::new();
        let t = derive(&state(&json), &ranges, &views(), &mut problems);
        t.validate().unwrap();
        let got: Vec<String> = t
            .services
            .iter()
            .map(|s| {
                let reals: Vec<String> = s
                    .reals
                    .iter()
                    .map(|r| format!("{}:{}/{}/{:?}", r.ip, r.port, r.weight, r.forward))
                    .collect();
                format!(
                    "{}:{}/{:?} {} {}",
                    s.vip,
                    s.port,
                    s.protocol,
                    s.scheduler,
                    reals.join(",")
                )
            })
            .collect();
        let api = "10.0.0.1:31000/5/Nat,10.0.0.2:31001/5/Nat";
        assert_eq!(
            got,
            vec![
                format!("10.99.0.1:80/Tcp rr {api}"),
                format!("10.99.2.1:8080/Udp rr {api}"),
                "10.99.9.9:80/Tcp wrr 10.0.0.3:80/1/Dr".to_string(),
            ],
            "{problems:?}"
        );
        let msgs: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.app.as_deref().unwrap_or("-"), p.message))
            .collect();
        assert_eq!(
            msgs,
            vec![
                "/lb/viewonly: OCEAN_ELB_VIEW_UNICOM needs OCEAN_ELB on the same app",
                "/lb/api: OCEAN_ELB_VIEW_MARS: no such view in control.toml [dns.views] (configured: unicom, china-telecom)",
                "/lb/api: OCEAN_ELB_VIEW_unicom: no such view in control.toml [dns.views] (configured: unicom, china-telecom)",
                "/lb/api: OCEAN_ELB_VIEW_UNICOM=10.50.0.1:80/tcp: refused: 10.50.0.1 lies in no [lvs] vips range of control.toml (no range, no VIP)",
                "/lb/api: OCEAN_ELB_VIEW_UNICOM=10.99.1.1:80/tcp: conflict: declared differently by /lb/api (scheduler rr), /lb/other (scheduler wrr); left out until they agree",
                "/lb/other: OCEAN_ELB_VIEW_UNICOM=10.99.1.1:80/tcp: conflict: declared differently by /lb/api (scheduler rr), /lb/other (scheduler wrr); left out until they agree",
            ]
        );
    }
}
