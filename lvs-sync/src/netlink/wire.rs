//! The bytes: netlink + generic netlink headers and the IPVS attributes of `linux/ip_vs.h`,
//! encoded and parsed by hand (small, exact, and testable against hand-derived vectors).
//!
//! Layout reminders (all integers native-endian unless noted, as the kernel's `nla_put_u*`):
//! - `nlmsghdr`: len u32, type u16, flags u16, seq u32, pid u32 (16 bytes);
//! - `genlmsghdr`: cmd u8, version u8, reserved u16 (4 bytes);
//! - `nlattr`: len u16 (header + payload, unpadded), type u16, payload padded to 4 bytes.
//!
//! IPVS specifics: addresses are `union nf_inet_addr` (16 bytes, an IPv4 address in the first
//! 4), ports are big-endian (`nla_put_be16`), the service netmask is the kernel's `__be32`
//! as stored (an IPv4 mask in network order; an IPv6 prefix length as a plain number), flags
//! are `struct ip_vs_flags { u32 flags; u32 mask; }`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::model::{
    Dest, Forward, Protocol, Service, ServiceKey, SVC_F_ONEPACKET, SVC_F_PERSISTENT, SVC_F_SCHED1,
    SVC_F_SCHED2, SVC_F_SCHED3,
};
use crate::plan::Op;

// netlink (linux/netlink.h)
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

// generic netlink controller (linux/genetlink.h)
pub const GENL_ID_CTRL: u16 = 0x10;
pub const CTRL_CMD_GETFAMILY: u8 = 3;
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;

// linux/ip_vs.h
pub const IPVS_GENL_NAME: &str = "IPVS";
pub const IPVS_GENL_VERSION: u8 = 1;
pub const IPVS_CMD_NEW_SERVICE: u8 = 1;
pub const IPVS_CMD_SET_SERVICE: u8 = 2;
pub const IPVS_CMD_DEL_SERVICE: u8 = 3;
pub const IPVS_CMD_GET_SERVICE: u8 = 4;
pub const IPVS_CMD_NEW_DEST: u8 = 5;
pub const IPVS_CMD_SET_DEST: u8 = 6;
pub const IPVS_CMD_DEL_DEST: u8 = 7;
pub const IPVS_CMD_GET_DEST: u8 = 8;

pub const IPVS_CMD_ATTR_SERVICE: u16 = 1;
pub const IPVS_CMD_ATTR_DEST: u16 = 2;

pub const IPVS_SVC_ATTR_AF: u16 = 1;
pub const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
pub const IPVS_SVC_ATTR_ADDR: u16 = 3;
pub const IPVS_SVC_ATTR_PORT: u16 = 4;
pub const IPVS_SVC_ATTR_FWMARK: u16 = 5;
pub const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
pub const IPVS_SVC_ATTR_FLAGS: u16 = 7;
pub const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
pub const IPVS_SVC_ATTR_NETMASK: u16 = 9;
pub const IPVS_SVC_ATTR_PE_NAME: u16 = 11;

pub const IPVS_DEST_ATTR_ADDR: u16 = 1;
pub const IPVS_DEST_ATTR_PORT: u16 = 2;
pub const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
pub const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
pub const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
pub const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
pub const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
pub const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
pub const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
pub const IPVS_DEST_ATTR_TUN_TYPE: u16 = 13;
pub const IPVS_DEST_ATTR_TUN_PORT: u16 = 14;
pub const IPVS_DEST_ATTR_TUN_FLAGS: u16 = 15;

/// `IP_VS_CONN_F_*` forwarding methods and their mask.
pub const IP_VS_CONN_F_MASQ: u32 = 0;
pub const IP_VS_CONN_F_TUNNEL: u32 = 2;
pub const IP_VS_CONN_F_DROUTE: u32 = 3;
pub const IP_VS_CONN_F_FWD_MASK: u32 = 7;
/// `IP_VS_SVC_F_HASHED`: internal, reported by the kernel in every service's flags.
pub const IP_VS_SVC_F_HASHED: u32 = 0x0002;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;
pub const IPPROTO_UDP: u16 = 17;
pub const IPPROTO_SCTP: u16 = 132;

/// The service flags this crate models; everything else the kernel reports is ignored.
const MODELED_FLAGS: u32 = SVC_F_ONEPACKET | SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3;

/// Appends one attribute (header + payload + padding).
pub fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len() + pad(len) - len, 0);
}

/// Appends a nested attribute holding `inner` (already encoded attributes).
pub fn put_nested(buf: &mut Vec<u8>, kind: u16, inner: &[u8]) {
    put_attr(buf, kind | NLA_F_NESTED, inner);
}

fn pad(len: usize) -> usize {
    (len + 3) & !3
}

fn family(ipv6: bool) -> u16 {
    if ipv6 {
        AF_INET6
    } else {
        AF_INET
    }
}

fn inet_addr(ip: IpAddr) -> [u8; 16] {
    let mut a = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => a[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => a = v6.octets(),
    }
    a
}

/// A whole message: `nlmsghdr` + `genlmsghdr` + attributes.
pub fn message(kind: u16, flags: u16, seq: u32, cmd: u8, version: u8, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills in ours
    m.push(cmd);
    m.push(version);
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(attrs);
    m
}

/// `CTRL_CMD_GETFAMILY` for "IPVS": the reply carries the family id to address IPVS with.
pub fn get_family(seq: u32) -> Vec<u8> {
    let mut attrs = Vec::new();
    put_attr(&mut attrs, CTRL_ATTR_FAMILY_NAME, b"IPVS\0");
    message(
        GENL_ID_CTRL,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        CTRL_CMD_GETFAMILY,
        1,
        &attrs,
    )
}

/// The attributes inside `IPVS_CMD_ATTR_SERVICE` that name a service (AF + fwmark, or
/// AF + protocol + address + port).
fn service_key_attrs(buf: &mut Vec<u8>, key: &ServiceKey) {
    put_attr(buf, IPVS_SVC_ATTR_AF, &family(key.is_ipv6()).to_ne_bytes());
    match key {
        ServiceKey::Fwmark { mark, .. } => put_attr(buf, IPVS_SVC_ATTR_FWMARK, &mark.to_ne_bytes()),
        ServiceKey::Addr { protocol, addr } => {
            let p = match protocol {
                Protocol::Tcp => IPPROTO_TCP,
                Protocol::Udp => IPPROTO_UDP,
            };
            put_attr(buf, IPVS_SVC_ATTR_PROTOCOL, &p.to_ne_bytes());
            put_attr(buf, IPVS_SVC_ATTR_ADDR, &inet_addr(addr.ip()));
            put_attr(buf, IPVS_SVC_ATTR_PORT, &addr.port().to_be_bytes());
        }
        ServiceKey::Sctp { addr } => {
            put_attr(buf, IPVS_SVC_ATTR_PROTOCOL, &IPPROTO_SCTP.to_ne_bytes());
            put_attr(buf, IPVS_SVC_ATTR_ADDR, &inet_addr(addr.ip()));
            put_attr(buf, IPVS_SVC_ATTR_PORT, &addr.port().to_be_bytes());
        }
    }
}

/// The nested `IPVS_CMD_ATTR_SERVICE`: the key, and with `full` the settings (scheduler,
/// flags with mask ~0, timeout, netmask, and the persistence engine when there is one: the
/// kernel clears an engine that a `SET_SERVICE` omits).
pub fn service_attr(buf: &mut Vec<u8>, svc: &Service, full: bool) {
    let mut inner = Vec::new();
    service_key_attrs(&mut inner, &svc.key);
    if full {
        let mut name = svc.scheduler.as_bytes().to_vec();
        name.push(0);
        put_attr(&mut inner, IPVS_SVC_ATTR_SCHED_NAME, &name);
        let mut flags = svc.flags & MODELED_FLAGS;
        if svc.persistence_s.is_some() {
            flags |= SVC_F_PERSISTENT;
        }
        let mut f = Vec::with_capacity(8);
        f.extend_from_slice(&flags.to_ne_bytes());
        f.extend_from_slice(&u32::MAX.to_ne_bytes());
        put_attr(&mut inner, IPVS_SVC_ATTR_FLAGS, &f);
        put_attr(
            &mut inner,
            IPVS_SVC_ATTR_TIMEOUT,
            &svc.persistence_s.unwrap_or(0).to_ne_bytes(),
        );
        put_attr(&mut inner, IPVS_SVC_ATTR_NETMASK, &netmask_bytes(svc));
        if let Some(pe) = &svc.pe_name {
            let mut name = pe.as_bytes().to_vec();
            name.push(0);
            put_attr(&mut inner, IPVS_SVC_ATTR_PE_NAME, &name);
        }
    }
    put_nested(buf, IPVS_CMD_ATTR_SERVICE, &inner);
}

fn netmask_bytes(svc: &Service) -> [u8; 4] {
    if svc.key.is_ipv6() {
        svc.netmask.to_ne_bytes()
    } else {
        svc.netmask.to_be_bytes()
    }
}

fn key_only(key: &ServiceKey) -> Service {
    Service::new(*key, "")
}

/// The nested `IPVS_CMD_ATTR_DEST`: address, port and family, and with `full` the
/// forwarding method, weight, thresholds and, when any is set, the tunnel settings.
///
/// The kernel sets every one of these from a `SET_DEST` (`__ip_vs_update_dest`; an omitted
/// tunnel attribute is 0), so the thresholds and tunnel settings sent are the ones `d`
/// carries, which the plan copied from the kernel's destination.
pub fn dest_attr(buf: &mut Vec<u8>, d: &Dest, full: bool) {
    let mut inner = Vec::new();
    put_attr(&mut inner, IPVS_DEST_ATTR_ADDR, &inet_addr(d.addr.ip()));
    put_attr(
        &mut inner,
        IPVS_DEST_ATTR_PORT,
        &d.addr.port().to_be_bytes(),
    );
    if full {
        let fwd = match d.forward {
            Forward::Dr => IP_VS_CONN_F_DROUTE,
            Forward::Nat => IP_VS_CONN_F_MASQ,
            Forward::Tunnel => IP_VS_CONN_F_TUNNEL,
        };
        put_attr(&mut inner, IPVS_DEST_ATTR_FWD_METHOD, &fwd.to_ne_bytes());
        put_attr(&mut inner, IPVS_DEST_ATTR_WEIGHT, &d.weight.to_ne_bytes());
        put_attr(
            &mut inner,
            IPVS_DEST_ATTR_U_THRESH,
            &d.u_threshold.to_ne_bytes(),
        );
        put_attr(
            &mut inner,
            IPVS_DEST_ATTR_L_THRESH,
            &d.l_threshold.to_ne_bytes(),
        );
        // Sent only when set, so kernels before 5.3 (no tunnel attributes) see what they know.
        if d.tun_type != 0 || d.tun_port != 0 || d.tun_flags != 0 {
            put_attr(&mut inner, IPVS_DEST_ATTR_TUN_TYPE, &[d.tun_type]);
            put_attr(
                &mut inner,
                IPVS_DEST_ATTR_TUN_PORT,
                &d.tun_port.to_be_bytes(),
            );
            put_attr(
                &mut inner,
                IPVS_DEST_ATTR_TUN_FLAGS,
                &d.tun_flags.to_ne_bytes(),
            );
        }
    }
    put_attr(
        &mut inner,
        IPVS_DEST_ATTR_ADDR_FAMILY,
        &family(d.addr.is_ipv6()).to_ne_bytes(),
    );
    put_nested(buf, IPVS_CMD_ATTR_DEST, &inner);
}

/// The request that applies `op`, acknowledged (`NLM_F_ACK`) so every write gets an answer.
pub fn op_message(family_id: u16, seq: u32, op: &Op) -> Vec<u8> {
    let mut attrs = Vec::new();
    let cmd = match op {
        Op::AddService(s) => {
            service_attr(&mut attrs, s, true);
            IPVS_CMD_NEW_SERVICE
        }
        Op::EditService(s) => {
            service_attr(&mut attrs, s, true);
            IPVS_CMD_SET_SERVICE
        }
        Op::DelService(k) => {
            service_attr(&mut attrs, &key_only(k), false);
            IPVS_CMD_DEL_SERVICE
        }
        Op::AddDest(k, d) => {
            service_attr(&mut attrs, &key_only(k), false);
            dest_attr(&mut attrs, d, true);
            IPVS_CMD_NEW_DEST
        }
        Op::EditDest(k, d) => {
            service_attr(&mut attrs, &key_only(k), false);
            dest_attr(&mut attrs, d, true);
            IPVS_CMD_SET_DEST
        }
        Op::DelDest(k, a) => {
            service_attr(&mut attrs, &key_only(k), false);
            dest_attr(&mut attrs, &Dest::new(*a, 0, Forward::Dr), false);
            IPVS_CMD_DEL_DEST
        }
    };
    message(
        family_id,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        cmd,
        IPVS_GENL_VERSION,
        &attrs,
    )
}

/// `IPVS_CMD_GET_SERVICE` as a dump: every service.
pub fn get_services(family_id: u16, seq: u32) -> Vec<u8> {
    message(
        family_id,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        IPVS_CMD_GET_SERVICE,
        IPVS_GENL_VERSION,
        &[],
    )
}

/// `IPVS_CMD_GET_DEST` as a dump: every destination of one service.
pub fn get_dests(family_id: u16, seq: u32, key: &ServiceKey) -> Vec<u8> {
    let mut attrs = Vec::new();
    service_attr(&mut attrs, &key_only(key), false);
    message(
        family_id,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        IPVS_CMD_GET_DEST,
        IPVS_GENL_VERSION,
        &attrs,
    )
}

/// A reply that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed netlink reply: {0}")]
pub struct ParseError(pub String);

fn perr<T>(what: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(what.into()))
}

/// One netlink message of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the 16-byte `nlmsghdr`.
    pub payload: &'a [u8],
}

/// Splits a datagram into its netlink messages.
pub fn messages(mut buf: &[u8]) -> Result<Vec<Msg<'_>>, ParseError> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            return perr(format!(
                "message length {len} with {} bytes left",
                buf.len()
            ));
        }
        out.push(Msg {
            kind: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: &buf[16..len],
        });
        buf = &buf[pad(len).min(buf.len())..];
    }
    Ok(out)
}

/// The errno of an `NLMSG_ERROR` payload (0 is an ACK), as a positive number.
pub fn error_code(payload: &[u8]) -> Result<i32, ParseError> {
    match payload.get(..4) {
        // The kernel sends -errno; i32::MIN has no positive counterpart (and no errno).
        Some(b) => match i32::from_ne_bytes([b[0], b[1], b[2], b[3]]).checked_neg() {
            Some(errno) => Ok(errno),
            None => perr("NLMSG_ERROR code out of range"),
        },
        None => perr("short NLMSG_ERROR"),
    }
}

/// Attributes as (type without flags, payload).
pub fn attrs(mut buf: &[u8]) -> Result<Vec<(u16, &[u8])>, ParseError> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return perr(format!(
                "attribute length {len} with {} bytes left",
                buf.len()
            ));
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[pad(len).min(buf.len())..];
    }
    Ok(out)
}

fn find<'a>(list: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    list.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

fn u16_of(b: Option<&[u8]>, what: &str) -> Result<u16, ParseError> {
    match b {
        Some(b) if b.len() >= 2 => Ok(u16::from_ne_bytes([b[0], b[1]])),
        _ => perr(format!("missing or short {what}")),
    }
}

fn u32_of(b: Option<&[u8]>, what: &str) -> Result<u32, ParseError> {
    match b {
        Some(b) if b.len() >= 4 => Ok(u32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
        _ => perr(format!("missing or short {what}")),
    }
}

/// An optional attribute: absent is `None`, present but short is an error.
fn opt_u32_of(b: Option<&[u8]>, what: &str) -> Result<Option<u32>, ParseError> {
    b.map(|b| u32_of(Some(b), what)).transpose()
}

fn opt_u16_of(b: Option<&[u8]>, what: &str) -> Result<Option<u16>, ParseError> {
    b.map(|b| u16_of(Some(b), what)).transpose()
}

fn port_of(b: Option<&[u8]>, what: &str) -> Result<u16, ParseError> {
    match b {
        Some(b) if b.len() >= 2 => Ok(u16::from_be_bytes([b[0], b[1]])),
        _ => perr(format!("missing or short {what}")),
    }
}

fn addr_of(b: Option<&[u8]>, af: u16, what: &str) -> Result<IpAddr, ParseError> {
    match (b, af) {
        (Some(b), AF_INET) if b.len() >= 4 => Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        (Some(b), AF_INET6) if b.len() >= 16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[..16]);
            Ok(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => perr(format!("missing or short {what} (family {af})")),
    }
}

/// The generic netlink payload's attributes, after the 4-byte `genlmsghdr`.
pub fn genl_attrs(payload: &[u8]) -> Result<Vec<(u16, &[u8])>, ParseError> {
    match payload.get(4..) {
        Some(rest) => attrs(rest),
        None => perr("short genlmsghdr"),
    }
}

/// The family id in a `CTRL_CMD_GETFAMILY` reply.
pub fn parse_family(payload: &[u8]) -> Result<u16, ParseError> {
    let a = genl_attrs(payload)?;
    u16_of(find(&a, CTRL_ATTR_FAMILY_ID), "CTRL_ATTR_FAMILY_ID")
}

/// A service from one `IPVS_CMD_GET_SERVICE` reply message; `None` for a protocol this crate
/// does not know (neither TCP, UDP nor SCTP), left out of the read. SCTP services are read
/// as [`ServiceKey::Sctp`], which no plan ever touches.
pub fn parse_service(payload: &[u8]) -> Result<Option<Service>, ParseError> {
    let top = genl_attrs(payload)?;
    let Some(nested) = find(&top, IPVS_CMD_ATTR_SERVICE) else {
        return perr("no IPVS_CMD_ATTR_SERVICE");
    };
    let a = attrs(nested)?;
    let af = u16_of(find(&a, IPVS_SVC_ATTR_AF), "IPVS_SVC_ATTR_AF")?;
    if af != AF_INET && af != AF_INET6 {
        return perr(format!("unknown address family {af}"));
    }
    let key = match find(&a, IPVS_SVC_ATTR_FWMARK) {
        Some(m) if u32_of(Some(m), "fwmark")? != 0 => ServiceKey::Fwmark {
            mark: u32_of(Some(m), "fwmark")?,
            ipv6: af == AF_INET6,
        },
        _ => {
            let proto = u16_of(find(&a, IPVS_SVC_ATTR_PROTOCOL), "IPVS_SVC_ATTR_PROTOCOL")?;
            let protocol = match proto {
                IPPROTO_TCP => Some(Protocol::Tcp),
                IPPROTO_UDP => Some(Protocol::Udp),
                IPPROTO_SCTP => None,
                _ => return Ok(None),
            };
            let ip = addr_of(find(&a, IPVS_SVC_ATTR_ADDR), af, "IPVS_SVC_ATTR_ADDR")?;
            let port = port_of(find(&a, IPVS_SVC_ATTR_PORT), "IPVS_SVC_ATTR_PORT")?;
            let addr = SocketAddr::new(ip, port);
            match protocol {
                Some(protocol) => ServiceKey::Addr { protocol, addr },
                None => ServiceKey::Sctp { addr },
            }
        }
    };
    let sched = match find(&a, IPVS_SVC_ATTR_SCHED_NAME) {
        Some(b) => {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        }
        None => return perr("no IPVS_SVC_ATTR_SCHED_NAME"),
    };
    let flags = u32_of(find(&a, IPVS_SVC_ATTR_FLAGS), "IPVS_SVC_ATTR_FLAGS")?;
    let timeout = u32_of(find(&a, IPVS_SVC_ATTR_TIMEOUT), "IPVS_SVC_ATTR_TIMEOUT")?;
    let netmask = match find(&a, IPVS_SVC_ATTR_NETMASK) {
        Some(b) if b.len() >= 4 => {
            let raw = [b[0], b[1], b[2], b[3]];
            if af == AF_INET6 {
                u32::from_ne_bytes(raw)
            } else {
                u32::from_be_bytes(raw)
            }
        }
        _ => return perr("missing or short IPVS_SVC_ATTR_NETMASK"),
    };
    let pe_name = find(&a, IPVS_SVC_ATTR_PE_NAME).and_then(|b| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        // An empty name is no engine, as the kernel reads it.
        (end > 0).then(|| String::from_utf8_lossy(&b[..end]).into_owned())
    });
    let mut svc = Service::new(key, sched);
    svc.persistence_s = (flags & SVC_F_PERSISTENT != 0).then_some(timeout);
    svc.netmask = netmask;
    svc.flags = flags & MODELED_FLAGS & !IP_VS_SVC_F_HASHED;
    svc.pe_name = pe_name;
    Ok(Some(svc))
}

/// A destination from one `IPVS_CMD_GET_DEST` reply message; `None` for a forwarding method
/// this crate does not model (local node), left out of the read.
pub fn parse_dest(payload: &[u8], svc_is_ipv6: bool) -> Result<Option<Dest>, ParseError> {
    let top = genl_attrs(payload)?;
    let Some(nested) = find(&top, IPVS_CMD_ATTR_DEST) else {
        return perr("no IPVS_CMD_ATTR_DEST");
    };
    let a = attrs(nested)?;
    let af = match find(&a, IPVS_DEST_ATTR_ADDR_FAMILY) {
        Some(b) => u16_of(Some(b), "IPVS_DEST_ATTR_ADDR_FAMILY")?,
        None => family(svc_is_ipv6),
    };
    let ip = addr_of(find(&a, IPVS_DEST_ATTR_ADDR), af, "IPVS_DEST_ATTR_ADDR")?;
    let port = port_of(find(&a, IPVS_DEST_ATTR_PORT), "IPVS_DEST_ATTR_PORT")?;
    let fwd = u32_of(
        find(&a, IPVS_DEST_ATTR_FWD_METHOD),
        "IPVS_DEST_ATTR_FWD_METHOD",
    )?;
    let forward = match fwd & IP_VS_CONN_F_FWD_MASK {
        IP_VS_CONN_F_MASQ => Forward::Nat,
        IP_VS_CONN_F_TUNNEL => Forward::Tunnel,
        IP_VS_CONN_F_DROUTE => Forward::Dr,
        _ => return Ok(None),
    };
    let weight = u32_of(find(&a, IPVS_DEST_ATTR_WEIGHT), "IPVS_DEST_ATTR_WEIGHT")?;
    let mut d = Dest::new(SocketAddr::new(ip, port), weight, forward);
    // Kept to be sent back on edits; absent (never, in practice) is 0 as the kernel reads it.
    d.u_threshold =
        opt_u32_of(find(&a, IPVS_DEST_ATTR_U_THRESH), "IPVS_DEST_ATTR_U_THRESH")?.unwrap_or(0);
    d.l_threshold =
        opt_u32_of(find(&a, IPVS_DEST_ATTR_L_THRESH), "IPVS_DEST_ATTR_L_THRESH")?.unwrap_or(0);
    d.tun_type = match find(&a, IPVS_DEST_ATTR_TUN_TYPE) {
        Some(b) => match b.first() {
            Some(t) => *t,
            None => return perr("short IPVS_DEST_ATTR_TUN_TYPE"),
        },
        None => 0,
    };
    d.tun_port = match find(&a, IPVS_DEST_ATTR_TUN_PORT) {
        Some(b) => port_of(Some(b), "IPVS_DEST_ATTR_TUN_PORT")?,
        None => 0,
    };
    d.tun_flags = opt_u16_of(
        find(&a, IPVS_DEST_ATTR_TUN_FLAGS),
        "IPVS_DEST_ATTR_TUN_FLAGS",
    )?
    .unwrap_or(0);
    d.active_conns = u32_of(find(&a, IPVS_DEST_ATTR_ACTIVE_CONNS), "active conns").unwrap_or(0);
    d.inactive_conns = u32_of(find(&a, IPVS_DEST_ATTR_INACT_CONNS), "inactive conns").unwrap_or(0);
    Ok(Some(d))
}
