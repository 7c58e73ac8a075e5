//! The `lvs` table: apps labelled `OCEAN_ELB=vip:port/proto,...` make their live tasks the
//! real servers of those IPVS virtual services.
//!
//! Labels: `OCEAN_ELB` (IPv6 as `[addr]:port/tcp`; proto defaults to tcp),
//! `OCEAN_ELB_SCHEDULER` (default `wrr`), `OCEAN_ELB_FORWARD` (`dr` default, `nat`, `tunnel`),
//! `OCEAN_ELB_PERSISTENCE` (seconds), `OCEAN_ELB_WEIGHT` (default 1).
//! For DR and tunnel the real server port is the virtual port (the kernel ignores any other);
//! for NAT it is the task's first port.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ocean_core::table::lvs::{
    Forward, LvsTable, Protocol, RealServer, VirtualService, MAX_WEIGHT, SCHEDULERS,
};
use ocean_core::table::TableKind;

use super::Problem;
use crate::state::{App, State};

fn parse_elb(label: &str) -> Result<Vec<(IpAddr, u16, Protocol)>, String> {
    let mut out = Vec::new();
    for item in label.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (addr, proto) = match item.rsplit_once('/') {
            Some((a, "tcp")) => (a, Protocol::Tcp),
            Some((a, "udp")) => (a, Protocol::Udp),
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
    if out.is_empty() {
        return Err("no virtual service given".into());
    }
    Ok(out)
}

struct AppElb {
    services: Vec<(IpAddr, u16, Protocol)>,
    scheduler: String,
    forward: Forward,
    persistence_s: Option<u32>,
    weight: u32,
}

fn parse_app(app: &App) -> Result<Option<AppElb>, String> {
    let Some(elb) = app.labels.get("OCEAN_ELB") else {
        return Ok(None);
    };
    let services = parse_elb(elb).map_err(|e| format!("OCEAN_ELB: {e}"))?;
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
        scheduler,
        forward,
        persistence_s,
        weight,
    }))
}

pub fn derive(state: &State, problems: &mut Vec<Problem>) -> LvsTable {
    let mut services: BTreeMap<(IpAddr, u16, Protocol), VirtualService> = BTreeMap::new();
    for app in &state.apps {
        let elb = match parse_app(app) {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(e) => {
                problems.push(Problem::app(app, TableKind::Lvs, e));
                continue;
            }
        };
        for (vip, port, protocol) in &elb.services {
            let key = (*vip, *port, *protocol);
            let vs = services.entry(key).or_insert_with(|| VirtualService {
                vip: *vip,
                port: *port,
                protocol: *protocol,
                scheduler: elb.scheduler.clone(),
                persistence_s: elb.persistence_s,
                reals: Vec::new(),
            });
            if vs.scheduler != elb.scheduler || vs.persistence_s != elb.persistence_s {
                problems.push(Problem::app(
                    app,
                    TableKind::Lvs,
                    format!("{vip}:{port} is already declared with scheduler {} by another app; this app is left out of it", vs.scheduler),
                ));
                continue;
            }
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
                    Forward::Dr | Forward::Tunnel => *port,
                };
                vs.reals.push(RealServer {
                    ip,
                    port: rport,
                    weight: elb.weight,
                    forward: elb.forward,
                });
            }
        }
    }
    let services = services
        .into_values()
        .map(|mut vs| {
            vs.reals.sort_by_key(|r| (r.ip, r.port));
            vs.reals.dedup_by_key(|r| (r.ip, r.port));
            vs
        })
        .collect();
    LvsTable { services }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::fixtures::{state, task};
    use ocean_core::table::Table;

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
        let t = derive(&state(&json), &mut problems);
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
        let v = parse_elb("[fd00::1]:80/tcp").unwrap();
        assert_eq!(v[0].1, 80);
        assert!(v[0].0.is_ipv6());
        assert!(parse_elb("10.0.0.1:80/sctp").is_err());
        assert!(parse_elb("10.0.0.1:0").is_err());
    }
}
