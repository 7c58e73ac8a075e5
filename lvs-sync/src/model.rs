//! IPVS state as data: virtual services, their destinations (real servers), the desired state
//! built from an `lvs` table, and [`InMemoryIpvs`], a model of the kernel's table with the
//! kernel's error semantics, for tests and the dry-run backend.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

pub use ocean_core::table::lvs::{Forward, Protocol};
use ocean_core::table::lvs::{LvsTable, MAX_WEIGHT, SCHEDULERS};

/// Service flag `IP_VS_SVC_F_PERSISTENT`: set by the kernel when a persistence timeout is on;
/// here it is carried by [`Service::persistence_s`] instead.
pub const SVC_F_PERSISTENT: u32 = 0x0001;
/// Service flag `IP_VS_SVC_F_ONEPACKET` (`ipvsadm -o`, UDP one-packet scheduling).
pub const SVC_F_ONEPACKET: u32 = 0x0004;
/// Scheduler flags 1..3 (`ipvsadm -b flag-1,flag-2,flag-3`; `sh-fallback`, `sh-port`, ...).
pub const SVC_F_SCHED1: u32 = 0x0008;
/// See [`SVC_F_SCHED1`].
pub const SVC_F_SCHED2: u32 = 0x0010;
/// See [`SVC_F_SCHED1`].
pub const SVC_F_SCHED3: u32 = 0x0020;

/// How the kernel addresses a virtual service: protocol + VIP + port, or a firewall mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKey {
    /// A TCP or UDP virtual service (`-t`/`-u VIP:PORT`).
    Addr {
        protocol: Protocol,
        addr: SocketAddr,
    },
    /// A firewall-mark service (`-f MARK`, with `-6` for IPv6).
    Fwmark { mark: u32, ipv6: bool },
    /// An SCTP virtual service (`--sctp-service VIP:PORT`, protocol 132). Read from the
    /// kernel so it is seen, never managed: no table can ask for one, it is never owned, and
    /// no plan adds, edits or deletes it (see [`ServiceKey::is_managed`]).
    Sctp { addr: SocketAddr },
}

impl ServiceKey {
    /// A TCP service key.
    pub fn tcp(addr: SocketAddr) -> Self {
        ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr,
        }
    }

    /// A UDP service key.
    pub fn udp(addr: SocketAddr) -> Self {
        ServiceKey::Addr {
            protocol: Protocol::Udp,
            addr,
        }
    }

    /// Whether the service is UDP (its leaving real servers are deleted at once: UDP has no
    /// connections to drain).
    pub fn is_udp(&self) -> bool {
        matches!(
            self,
            ServiceKey::Addr {
                protocol: Protocol::Udp,
                ..
            }
        )
    }

    /// Whether the service is IPv6.
    pub fn is_ipv6(&self) -> bool {
        match self {
            ServiceKey::Addr { addr, .. } | ServiceKey::Sctp { addr } => addr.is_ipv6(),
            ServiceKey::Fwmark { ipv6, .. } => *ipv6,
        }
    }

    /// The virtual port; `None` for a firewall-mark service.
    pub fn port(&self) -> Option<u16> {
        match self {
            ServiceKey::Addr { addr, .. } | ServiceKey::Sctp { addr } => Some(addr.port()),
            ServiceKey::Fwmark { .. } => None,
        }
    }

    /// Whether Ocean may ever own, edit or delete a service of this kind: false for SCTP,
    /// which the `lvs` table cannot express, so a service there is always someone else's.
    pub fn is_managed(&self) -> bool {
        !matches!(self, ServiceKey::Sctp { .. })
    }
}

/// As ipvsadm spells the service: `-t 10.0.0.1:80`, `-u [2001:db8::1]:53`, `-f 7`, `-f 7 -6`,
/// `--sctp-service 10.0.0.1:80`.
impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Addr {
                protocol: Protocol::Tcp,
                addr,
            } => write!(f, "-t {addr}"),
            ServiceKey::Addr {
                protocol: Protocol::Udp,
                addr,
            } => write!(f, "-u {addr}"),
            ServiceKey::Fwmark { mark, ipv6: false } => write!(f, "-f {mark}"),
            ServiceKey::Fwmark { mark, ipv6: true } => write!(f, "-f {mark} -6"),
            ServiceKey::Sctp { addr } => write!(f, "--sctp-service {addr}"),
        }
    }
}

/// One virtual service's settings (what `ipvsadm -A`/`-E` sets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Service {
    pub key: ServiceKey,
    /// Scheduler name (`rr`, `wrr`, `sh`, ...).
    pub scheduler: String,
    /// Persistence timeout in seconds (`-p`); `None` when not persistent.
    pub persistence_s: Option<u32>,
    /// Persistence netmask (`-M`): an IPv4 mask, or the IPv6 prefix length, as the kernel
    /// stores it. See [`Service::default_netmask`].
    pub netmask: u32,
    /// Other service flags ([`SVC_F_ONEPACKET`], [`SVC_F_SCHED1`]..); never
    /// [`SVC_F_PERSISTENT`], which `persistence_s` carries.
    pub flags: u32,
    /// The persistence engine (`ipvsadm --pe sip`), as the kernel reports it. Not managed by
    /// Ocean (no table sets it, [`Service::same_config`] ignores it), but an edit must send
    /// it back: the kernel clears the engine of an `IPVS_CMD_SET_SERVICE` that omits it.
    pub pe_name: Option<String>,
}

impl Service {
    /// A service with no persistence, the default netmask and no flags.
    pub fn new(key: ServiceKey, scheduler: impl Into<String>) -> Self {
        Service {
            key,
            scheduler: scheduler.into(),
            persistence_s: None,
            netmask: Self::default_netmask(&key),
            flags: 0,
            pe_name: None,
        }
    }

    /// Whether `other` has the same managed settings (key, scheduler, persistence, netmask,
    /// flags), ignoring what Ocean keeps but does not manage ([`Service::pe_name`]).
    pub fn same_config(&self, other: &Service) -> bool {
        self.key == other.key
            && self.scheduler == other.scheduler
            && self.persistence_s == other.persistence_s
            && self.netmask == other.netmask
            && self.flags == other.flags
    }

    /// This service's settings with the unmanaged ones taken from `kernel` (what the kernel
    /// has now): what an edit sends, so it changes only what Ocean manages.
    pub fn keeping_unmanaged(&self, kernel: &Service) -> Service {
        Service {
            pe_name: kernel.pe_name.clone(),
            ..self.clone()
        }
    }

    /// The netmask ipvsadm sets when `-M` is absent: 255.255.255.255, or /128 for IPv6.
    pub fn default_netmask(key: &ServiceKey) -> u32 {
        if key.is_ipv6() {
            128
        } else {
            u32::MAX
        }
    }
}

/// A destination is addressed by IP + port inside its service.
pub type DestKey = SocketAddr;

/// One destination (real server) of a service.
///
/// Ocean manages the address, weight and forwarding method. The thresholds and tunnel
/// settings are someone else's (`ipvsadm -x/-y`, `--tun-type`): kept as the kernel reports
/// them, ignored by [`Dest::same_config`], and sent back unchanged on every edit, because
/// the kernel sets every one of them from an `IPVS_CMD_SET_DEST` (an omitted one becomes 0).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dest {
    pub addr: DestKey,
    /// 0..=65535; 0 takes no new connections (drain).
    pub weight: u32,
    pub forward: Forward,
    /// Upper connection threshold (`ipvsadm -x`); 0 = none. Not managed, kept.
    pub u_threshold: u32,
    /// Lower connection threshold (`ipvsadm -y`); 0 = none. Not managed, kept.
    pub l_threshold: u32,
    /// Tunnel type (`--tun-type`: 0 ipip, 1 gue, 2 gre); not managed, kept.
    pub tun_type: u8,
    /// Tunnel (GUE) destination port; not managed, kept.
    pub tun_port: u16,
    /// Tunnel flags (`--tun-*csum`); not managed, kept.
    pub tun_flags: u16,
    /// Connection counters as the kernel reports them; ignored by every comparison of
    /// configuration and never written.
    pub active_conns: u32,
    pub inactive_conns: u32,
}

impl Dest {
    /// A destination with zero connection counts, no thresholds and no tunnel settings.
    pub fn new(addr: DestKey, weight: u32, forward: Forward) -> Self {
        Dest {
            addr,
            weight,
            forward,
            u_threshold: 0,
            l_threshold: 0,
            tun_type: 0,
            tun_port: 0,
            tun_flags: 0,
            active_conns: 0,
            inactive_conns: 0,
        }
    }

    /// Whether `other` has the same configuration (address, weight, forwarding method),
    /// ignoring the connection counts and what Ocean does not manage (thresholds, tunnel).
    pub fn same_config(&self, other: &Dest) -> bool {
        self.addr == other.addr && self.weight == other.weight && self.forward == other.forward
    }

    /// This destination's weight and forwarding method with the unmanaged settings
    /// (thresholds, tunnel) taken from `kernel`, and no connection counts: what an edit
    /// sends, so it changes only what Ocean manages.
    pub fn keeping_unmanaged(&self, kernel: &Dest) -> Dest {
        Dest {
            u_threshold: kernel.u_threshold,
            l_threshold: kernel.l_threshold,
            tun_type: kernel.tun_type,
            tun_port: kernel.tun_port,
            tun_flags: kernel.tun_flags,
            active_conns: 0,
            inactive_conns: 0,
            ..self.clone()
        }
    }

    /// Active + inactive connections.
    pub fn conns(&self) -> u64 {
        u64::from(self.active_conns) + u64::from(self.inactive_conns)
    }
}

/// A service and its destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub service: Service,
    pub dests: BTreeMap<DestKey, Dest>,
}

impl ServiceEntry {
    /// Whether `other` has the same configuration, ignoring connection counts.
    pub fn same_config(&self, other: &ServiceEntry) -> bool {
        self.service.same_config(&other.service)
            && self.dests.len() == other.dests.len()
            && self
                .dests
                .iter()
                .zip(other.dests.iter())
                .all(|((ka, a), (kb, b))| ka == kb && a.same_config(b))
    }
}

/// A whole IPVS table, ordered so plans and dumps are deterministic.
pub type Ipvs = BTreeMap<ServiceKey, ServiceEntry>;

/// What this director should have, built by [`desired_from_table`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// The services to have, exactly (connection counts are zero).
    pub services: Ipvs,
    /// Services whose table entry was refused in a way that says nothing about whether they
    /// should exist (duplicate, unknown scheduler): the plan leaves them as they are in the
    /// kernel instead of deleting them.
    pub held_services: BTreeSet<ServiceKey>,
    /// Destinations refused the same way (weight over the limit, listed twice): left as they
    /// are in the kernel, neither drained nor deleted.
    pub held_dests: BTreeSet<(ServiceKey, DestKey)>,
}

/// One refused table entry: the rest of the table is still applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Which entry, e.g. `services[3] (10.0.0.1:80/tcp)` or
    /// `services[3] (10.0.0.1:80/tcp) real 10.1.0.1:80`.
    pub entry: String,
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.entry, self.reason)
    }
}

/// `--vip` ranges: the one network type of every daemon.
pub use ocean_core::net::Cidr;

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// Why `vip` may never be a virtual service on this director, whatever the table says;
/// `None` when it may be.
///
/// Refused: loopback, unspecified (`0.0.0.0/8`, `::`), multicast, the IPv4 broadcast
/// address, link-local (`169.254.0.0/16`, `fe80::/10`), and this host's own addresses
/// (`host_addrs`), which a service would take over (its SSH port, its agent, ...). A host
/// address inside an explicit `--vip` range (`vips`) is a VIP the director carries (one
/// keepalived or the operator put on an interface) and is allowed; with no `--vip` every
/// host address is refused. IPv4-mapped IPv6 addresses are judged as the IPv4 address.
pub fn refused_vip(vip: IpAddr, vips: &[Cidr], host_addrs: &[IpAddr]) -> Option<String> {
    let ip = vip.to_canonical();
    let kind = match ip {
        IpAddr::V4(v4) => {
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.octets()[0] == 0 {
                Some("unspecified (0.0.0.0/8)")
            } else if v4.is_broadcast() {
                Some("the broadcast address")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if v4.is_link_local() {
                Some("link-local")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if v6.segments()[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else {
                None
            }
        }
    };
    if let Some(kind) = kind {
        return Some(format!("VIP {vip} is {kind}: never a virtual service"));
    }
    let own = host_addrs.iter().any(|h| h.to_canonical() == ip);
    if own && !vips.iter().any(|c| c.contains(ip)) {
        return Some(format!(
            "VIP {vip} is one of this director's own addresses (outside every --vip range): never a virtual service"
        ));
    }
    None
}

/// Builds the desired IPVS state from an `lvs` table.
///
/// `vips` limits this director to its own VIPs (`--vip`, repeatable); an empty slice allows
/// every VIP. `host_addrs` are this host's own addresses. Bad entries are refused one by one
/// and the rest is applied:
/// - a VIP [`refused_vip`] refuses (loopback, unspecified, multicast, broadcast,
///   link-local, this host's own address): never written to the kernel, whatever the table
///   and `--vip` say (not held: an owned service there is removed);
/// - a VIP outside `vips`: the service is not this director's (not held: an owned service
///   whose VIP left `--vip` is removed);
/// - a service listed twice, or with an unknown scheduler: refused and *held* (the kernel's
///   entry, if any, is left alone, since the table says nothing reliable about it);
/// - port 0: refused;
/// - a real server of the other address family, a NAT real server with port 0: refused;
/// - a weight over 65535, a real server listed twice: refused and held.
///
/// For DR and tunnel real servers the port is the virtual port, as ipvsadm sets it in
/// userspace (the kernel would report it so, and the diff would never converge otherwise).
pub fn desired_from_table(
    table: &LvsTable,
    vips: &[Cidr],
    host_addrs: &[IpAddr],
) -> (Desired, Vec<Refusal>) {
    let mut desired = Desired::default();
    let mut refusals = Vec::new();
    let mut counts: HashMap<ServiceKey, usize> = HashMap::new();
    for s in &table.services {
        let key = ServiceKey::Addr {
            protocol: s.protocol,
            addr: SocketAddr::new(s.vip, s.port),
        };
        *counts.entry(key).or_default() += 1;
    }
    for (i, s) in table.services.iter().enumerate() {
        let key = ServiceKey::Addr {
            protocol: s.protocol,
            addr: SocketAddr::new(s.vip, s.port),
        };
        let entry = format!(
            "services[{i}] ({}/{})",
            SocketAddr::new(s.vip, s.port),
            proto_name(s.protocol)
        );
        let mut refuse = |entry: &str, reason: String| {
            refusals.push(Refusal {
                entry: entry.to_string(),
                reason,
            })
        };
        if let Some(reason) = refused_vip(s.vip, vips, host_addrs) {
            refuse(&entry, reason);
            continue;
        }
        if !vips.is_empty() && !vips.iter().any(|c| c.contains(s.vip)) {
            let list: Vec<String> = vips.iter().map(Cidr::to_string).collect();
            refuse(
                &entry,
                format!(
                    "VIP {} is outside this director's --vip ranges ({})",
                    s.vip,
                    list.join(", ")
                ),
            );
            continue;
        }
        let n = counts.get(&key).copied().unwrap_or(0);
        if n > 1 {
            refuse(
                &entry,
                format!("duplicate virtual service (listed {n} times); the kernel's entry is left as it is"),
            );
            desired.held_services.insert(key);
            continue;
        }
        if s.port == 0 {
            refuse(&entry, "port is 0".to_string());
            continue;
        }
        if !SCHEDULERS.contains(&s.scheduler.as_str()) {
            refuse(
                &entry,
                format!(
                    "unknown scheduler {:?} (known: {}); the kernel's entry is left as it is",
                    s.scheduler,
                    SCHEDULERS.join(", ")
                ),
            );
            desired.held_services.insert(key);
            continue;
        }
        let mut service = Service::new(key, s.scheduler.clone());
        service.persistence_s = s.persistence_s;

        // Real servers: map DR/tunnel ports first, then refuse per real.
        let mapped: Vec<SocketAddr> = s
            .reals
            .iter()
            .map(|r| match r.forward {
                Forward::Dr | Forward::Tunnel => SocketAddr::new(r.ip, s.port),
                Forward::Nat => SocketAddr::new(r.ip, r.port),
            })
            .collect();
        let mut dest_counts: HashMap<SocketAddr, usize> = HashMap::new();
        for a in &mapped {
            *dest_counts.entry(*a).or_default() += 1;
        }
        let mut dests = BTreeMap::new();
        for (r, addr) in s.reals.iter().zip(mapped) {
            let rentry = format!("{entry} real {}", SocketAddr::new(r.ip, r.port));
            if r.ip.is_ipv4() != s.vip.is_ipv4() {
                refuse(
                    &rentry,
                    format!("real server {} is not of the VIP's address family", r.ip),
                );
                continue;
            }
            if r.forward == Forward::Nat && r.port == 0 {
                refuse(&rentry, "NAT real server has port 0".to_string());
                continue;
            }
            if r.weight > MAX_WEIGHT {
                refuse(
                    &rentry,
                    format!(
                        "weight {} is over the kernel's limit {MAX_WEIGHT}; the kernel's entry is left as it is",
                        r.weight
                    ),
                );
                desired.held_dests.insert((key, addr));
                continue;
            }
            let dn = dest_counts.get(&addr).copied().unwrap_or(0);
            if dn > 1 {
                refuse(
                    &rentry,
                    format!("real server {addr} is listed {dn} times (DR and tunnel use the virtual port); the kernel's entry is left as it is"),
                );
                desired.held_dests.insert((key, addr));
                continue;
            }
            dests.insert(addr, Dest::new(addr, r.weight, r.forward));
        }
        desired
            .services
            .insert(key, ServiceEntry { service, dests });
    }
    (desired, refusals)
}

/// An IPVS error as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpvsError {
    #[error("service {0} already exists (EEXIST)")]
    ServiceExists(ServiceKey),
    #[error("destination {1} of service {0} already exists (EEXIST)")]
    DestExists(ServiceKey, DestKey),
    #[error("no service {0} (ESRCH)")]
    NoService(ServiceKey),
    #[error("no destination {1} in service {0} (ENOENT)")]
    NoDest(ServiceKey, DestKey),
    #[error("invalid argument for {0}: {1} (EINVAL)")]
    Invalid(ServiceKey, &'static str),
    /// Any other failure of a real backend (socket error, another errno), described.
    #[error("{0}")]
    Other(String),
}

/// The kernel's IPVS table, in memory, with the kernel's semantics: adding what exists is
/// EEXIST, editing or deleting what is missing is ESRCH (service) or ENOENT (destination),
/// edits change weight/forwarding or scheduler/flags in place and keep connection counts.
/// Like the kernel, an edit sets *every* setting from the op, including those Ocean does not
/// manage (a destination's thresholds and tunnel settings, a service's persistence engine):
/// an op that left them at 0 would clear them here as it would in the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InMemoryIpvs {
    services: Ipvs,
}

impl InMemoryIpvs {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// A table holding `services` as they are (connection counts included).
    pub fn from_services(services: Ipvs) -> Self {
        InMemoryIpvs { services }
    }

    /// The whole table, as a read of the kernel would return it.
    pub fn services(&self) -> &Ipvs {
        &self.services
    }

    /// Sets a destination's connection counters (what traffic would do); false when absent.
    pub fn set_conns(
        &mut self,
        key: &ServiceKey,
        dest: &DestKey,
        active: u32,
        inactive: u32,
    ) -> bool {
        match self
            .services
            .get_mut(key)
            .and_then(|e| e.dests.get_mut(dest))
        {
            Some(d) => {
                d.active_conns = active;
                d.inactive_conns = inactive;
                true
            }
            None => false,
        }
    }

    /// Sets every destination's connection counters to zero (all connections closed).
    pub fn zero_all_conns(&mut self) {
        for e in self.services.values_mut() {
            for d in e.dests.values_mut() {
                d.active_conns = 0;
                d.inactive_conns = 0;
            }
        }
    }

    /// Applies one operation as the kernel would.
    ///
    /// # Errors
    /// [`IpvsError::ServiceExists`]/[`IpvsError::DestExists`] on adding what exists,
    /// [`IpvsError::NoService`] on touching a missing service, [`IpvsError::NoDest`] on
    /// editing or deleting a missing destination, [`IpvsError::Invalid`] on a weight over
    /// 65535 or an add/edit whose key does not match. A failed op changes nothing.
    pub fn apply(&mut self, op: &Op) -> Result<(), IpvsError> {
        match op {
            Op::AddService(s) => {
                if self.services.contains_key(&s.key) {
                    return Err(IpvsError::ServiceExists(s.key));
                }
                self.services.insert(
                    s.key,
                    ServiceEntry {
                        service: s.clone(),
                        dests: BTreeMap::new(),
                    },
                );
                Ok(())
            }
            Op::EditService(s) => {
                let e = self
                    .services
                    .get_mut(&s.key)
                    .ok_or(IpvsError::NoService(s.key))?;
                e.service = s.clone();
                Ok(())
            }
            Op::DelService(k) => self
                .services
                .remove(k)
                .map(|_| ())
                .ok_or(IpvsError::NoService(*k)),
            Op::AddDest(k, d) => {
                if d.weight > MAX_WEIGHT {
                    return Err(IpvsError::Invalid(*k, "weight over 65535"));
                }
                let e = self.services.get_mut(k).ok_or(IpvsError::NoService(*k))?;
                if e.dests.contains_key(&d.addr) {
                    return Err(IpvsError::DestExists(*k, d.addr));
                }
                // Everything the op carries but its connection counts, as the kernel takes it.
                e.dests.insert(
                    d.addr,
                    Dest {
                        active_conns: 0,
                        inactive_conns: 0,
                        ..d.clone()
                    },
                );
                Ok(())
            }
            Op::EditDest(k, d) => {
                if d.weight > MAX_WEIGHT {
                    return Err(IpvsError::Invalid(*k, "weight over 65535"));
                }
                let e = self.services.get_mut(k).ok_or(IpvsError::NoService(*k))?;
                let cur = e
                    .dests
                    .get_mut(&d.addr)
                    .ok_or(IpvsError::NoDest(*k, d.addr))?;
                // As the kernel's __ip_vs_update_dest: every setting comes from the op, what
                // it leaves at 0 (thresholds, tunnel) becomes 0; connection counts stay.
                *cur = Dest {
                    active_conns: cur.active_conns,
                    inactive_conns: cur.inactive_conns,
                    ..d.clone()
                };
                Ok(())
            }
            Op::DelDest(k, a) => {
                let e = self.services.get_mut(k).ok_or(IpvsError::NoService(*k))?;
                e.dests
                    .remove(a)
                    .map(|_| ())
                    .ok_or(IpvsError::NoDest(*k, *a))
            }
        }
    }
}

/// One change to the kernel's IPVS table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `ipvsadm -A`: a new service, without destinations.
    AddService(Service),
    /// `ipvsadm -E`: scheduler, persistence, netmask, flags in place (and the persistence
    /// engine, which the plan copies from the kernel: see [`Service::keeping_unmanaged`]).
    EditService(Service),
    /// `ipvsadm -D`: the service and all its destinations.
    DelService(ServiceKey),
    /// `ipvsadm -a` (connection counts in the `Dest` are ignored).
    AddDest(ServiceKey, Dest),
    /// `ipvsadm -e`: weight and forwarding method in place (and the thresholds and tunnel
    /// settings, which the plan copies from the kernel: see [`Dest::keeping_unmanaged`]).
    EditDest(ServiceKey, Dest),
    /// `ipvsadm -d`.
    DelDest(ServiceKey, DestKey),
}

impl Op {
    /// The service the op touches.
    pub fn key(&self) -> &ServiceKey {
        match self {
            Op::AddService(s) | Op::EditService(s) => &s.key,
            Op::DelService(k) | Op::AddDest(k, _) | Op::EditDest(k, _) | Op::DelDest(k, _) => k,
        }
    }

    /// A short name for metrics and logs: `add_service`, `edit_dest`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Op::AddService(_) => "add_service",
            Op::EditService(_) => "edit_service",
            Op::DelService(_) => "del_service",
            Op::AddDest(..) => "add_dest",
            Op::EditDest(..) => "edit_dest",
            Op::DelDest(..) => "del_dest",
        }
    }
}

fn write_service(f: &mut fmt::Formatter<'_>, s: &Service) -> fmt::Result {
    write!(f, "{} -s {}", s.key, s.scheduler)?;
    let mut sched_flags = Vec::new();
    for (bit, name) in [
        (SVC_F_SCHED1, "flag-1"),
        (SVC_F_SCHED2, "flag-2"),
        (SVC_F_SCHED3, "flag-3"),
    ] {
        if s.flags & bit != 0 {
            sched_flags.push(name);
        }
    }
    if !sched_flags.is_empty() {
        write!(f, " -b {}", sched_flags.join(","))?;
    }
    if let Some(p) = s.persistence_s {
        write!(f, " -p {p}")?;
        if s.netmask != Service::default_netmask(&s.key) {
            if s.key.is_ipv6() {
                write!(f, " -M {}", s.netmask)?;
            } else {
                write!(f, " -M {}", std::net::Ipv4Addr::from(s.netmask))?;
            }
        }
    }
    if s.flags & SVC_F_ONEPACKET != 0 {
        write!(f, " -o")?;
    }
    if let Some(pe) = &s.pe_name {
        write!(f, " --pe {pe}")?;
    }
    Ok(())
}

fn write_dest(f: &mut fmt::Formatter<'_>, k: &ServiceKey, d: &Dest) -> fmt::Result {
    let fwd = match d.forward {
        Forward::Dr => "-g",
        Forward::Nat => "-m",
        Forward::Tunnel => "-i",
    };
    write!(f, "{k} -r {} {fwd} -w {}", d.addr, d.weight)?;
    // ipvsadm -e, like the kernel, resets what the command line leaves out: kept settings
    // are spelled out so the printed command keeps them too.
    if d.u_threshold != 0 {
        write!(f, " -x {}", d.u_threshold)?;
    }
    if d.l_threshold != 0 {
        write!(f, " -y {}", d.l_threshold)?;
    }
    match d.tun_type {
        0 => {}
        1 => write!(f, " --tun-type gue --tun-port {}", d.tun_port)?,
        2 => write!(f, " --tun-type gre")?,
        t => write!(f, " --tun-type {t}")?,
    }
    if d.tun_type != 0 {
        for (bit, name) in [(1u16, "--tun-csum"), (2, "--tun-remcsum")] {
            if d.tun_flags & bit != 0 {
                write!(f, " {name}")?;
            }
        }
    }
    Ok(())
}

/// The op as an ipvsadm command line without the program name, e.g.
/// `-A -t 10.0.0.1:80 -s wrr`, `-a -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 1`, `-d -t ... -r ...`.
/// Also valid as a line of `ipvsadm-restore` input.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::AddService(s) => {
                f.write_str("-A ")?;
                write_service(f, s)
            }
            Op::EditService(s) => {
                f.write_str("-E ")?;
                write_service(f, s)
            }
            Op::DelService(k) => write!(f, "-D {k}"),
            Op::AddDest(k, d) => {
                f.write_str("-a ")?;
                write_dest(f, k, d)
            }
            Op::EditDest(k, d) => {
                f.write_str("-e ")?;
                write_dest(f, k, d)
            }
            Op::DelDest(k, a) => write!(f, "-d {k} -r {a}"),
        }
    }
}
