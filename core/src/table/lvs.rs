//! The `lvs` table: IPVS virtual services and their real servers.

use std::collections::HashSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Problems, Table, TableError, TableKind};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LvsTable {
    #[serde(default)]
    pub services: Vec<VirtualService>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// How the director forwards to a real server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forward {
    /// Direct routing (`-g`); the real server port is the virtual port.
    #[default]
    Dr,
    /// Masquerading (`-m`).
    Nat,
    /// IP-in-IP tunnelling (`-i`); the real server port is the virtual port.
    Tunnel,
}

/// The schedulers the Linux kernel ships (`ip_vs_*` modules).
pub const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// The largest weight ipvsadm accepts.
pub const MAX_WEIGHT: u32 = 65535;

/// One virtual service, addressed by VIP + port + protocol (`OCEAN_ELB=vip:port/tcp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualService {
    /// Persistence timeout (`ipvsadm -p`), seconds; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence_s: Option<u32>,
    pub port: u16,
    pub protocol: Protocol,
    pub reals: Vec<RealServer>,
    pub scheduler: String,
    pub vip: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealServer {
    #[serde(default)]
    pub forward: Forward,
    pub ip: IpAddr,
    pub port: u16,
    pub weight: u32,
}

impl Table for LvsTable {
    const KIND: TableKind = TableKind::Lvs;

    fn validate(&self) -> Result<(), TableError> {
        let mut p = Problems::default();
        let mut keys = HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let proto = match s.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            let entry = format!("services[{i}] ({}:{}/{proto})", s.vip, s.port);
            if !keys.insert((s.vip, s.port, s.protocol)) {
                p.push(&entry, "duplicate virtual service");
            }
            if s.port == 0 {
                p.push(&entry, "port is 0");
            }
            if !SCHEDULERS.contains(&s.scheduler.as_str()) {
                p.push(&entry, format!("unknown scheduler {:?}", s.scheduler));
            }
            let mut seen = HashSet::new();
            for r in &s.reals {
                if r.ip.is_ipv4() != s.vip.is_ipv4() {
                    p.push(
                        &entry,
                        format!("real server {} is not of the VIP's address family", r.ip),
                    );
                }
                if r.port == 0 {
                    p.push(&entry, format!("real server {} has port 0", r.ip));
                }
                if r.weight > MAX_WEIGHT {
                    p.push(
                        &entry,
                        format!(
                            "real server {} weight {} is over {MAX_WEIGHT}",
                            r.ip, r.weight
                        ),
                    );
                }
                if !seen.insert((r.ip, r.port)) {
                    p.push(
                        &entry,
                        format!("real server {}:{} is listed twice", r.ip, r.port),
                    );
                }
            }
        }
        p.into_result(TableKind::Lvs)
    }

    fn backend_count(&self) -> usize {
        self.services.iter().map(|s| s.reals.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scheduler_port_zero_and_heavy_weights_are_refused() {
        let t = LvsTable {
            services: vec![VirtualService {
                vip: "10.1.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
                port: 0,
                protocol: Protocol::Tcp,
                scheduler: "fastest".into(),
                persistence_s: None,
                reals: vec![RealServer {
                    ip: "10.2.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
                    port: 80,
                    weight: 70000,
                    forward: Forward::Dr,
                }],
            }],
        };
        let err = t
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("port is 0"), "{err}");
        assert!(err.contains("unknown scheduler \"fastest\""), "{err}");
        assert!(err.contains("weight 70000 is over 65535"), "{err}");
    }
}
