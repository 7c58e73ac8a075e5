//! Writing names and records.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{rtype, CLASS_IN};

/// A growable big-endian writer.
#[derive(Debug, Default, Clone)]
pub struct Writer(Vec<u8>);

impl Writer {
    pub fn new() -> Self {
        Writer(Vec::with_capacity(512))
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

/// A dotted name (`web.mesos.` or `web.mesos`) in lowercase wire format; `None` when a
/// label is empty or longer than 63 bytes or the name longer than 255.
pub fn name_to_wire(name: &str) -> Option<Vec<u8>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut out = Vec::with_capacity(name.len() + 2);
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            out.push(label.len() as u8);
            out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    out.push(0);
    (out.len() <= 255).then_some(out)
}

/// Record data we serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData<'a> {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: &'a [u8],
    },
    Ns(&'a [u8]),
    Soa {
        mname: &'a [u8],
        rname: &'a [u8],
        serial: u32,
        refresh: u32,
        retry: u32,
        expire: u32,
        minimum: u32,
    },
}

impl RData<'_> {
    pub fn rtype(&self) -> u16 {
        match self {
            RData::A(_) => rtype::A,
            RData::Aaaa(_) => rtype::AAAA,
            RData::Srv { .. } => rtype::SRV,
            RData::Ns(_) => rtype::NS,
            RData::Soa { .. } => rtype::SOA,
        }
    }
}

/// How an owner name is written: a pointer to an offset in the message, or in full.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    Pointer(u16),
    Name(&'a [u8]),
}

/// Appends one record (class IN). Names in rdata are written uncompressed.
pub fn record(w: &mut Writer, owner: Owner<'_>, ttl: u32, rdata: &RData<'_>) {
    match owner {
        Owner::Pointer(off) => w.u16(0xC000 | off),
        Owner::Name(n) => w.bytes(n),
    }
    w.u16(rdata.rtype());
    w.u16(CLASS_IN);
    w.u32(ttl);
    let len_at = w.len();
    w.u16(0);
    match rdata {
        RData::A(ip) => w.bytes(&ip.octets()),
        RData::Aaaa(ip) => w.bytes(&ip.octets()),
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => {
            w.u16(*priority);
            w.u16(*weight);
            w.u16(*port);
            w.bytes(target);
        }
        RData::Ns(n) => w.bytes(n),
        RData::Soa {
            mname,
            rname,
            serial,
            refresh,
            retry,
            expire,
            minimum,
        } => {
            w.bytes(mname);
            w.bytes(rname);
            for v in [*serial, *refresh, *retry, *expire, *minimum] {
                w.u32(v);
            }
        }
    }
    let rdlen = (w.len() - len_at - 2) as u16;
    w.0[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
}

/// The OPT pseudo-record of a response: our UDP size, extended rcode bits, DO echoed.
pub fn opt(out: &mut Vec<u8>, udp_size: u16, ext_rcode: u8, dnssec_ok: bool) {
    opt_with_ecs(out, udp_size, ext_rcode, dnssec_ok, None);
}

/// [`opt`] carrying a Client Subnet option (RFC 7871 7.2.1: the query's family, source
/// prefix and address, and the scope the answer depends on).
pub fn opt_with_ecs(
    out: &mut Vec<u8>,
    udp_size: u16,
    ext_rcode: u8,
    dnssec_ok: bool,
    ecs: Option<&crate::proto::ecs::Ecs>,
) {
    out.push(0);
    out.extend_from_slice(&rtype::OPT.to_be_bytes());
    out.extend_from_slice(&udp_size.to_be_bytes());
    out.push(ext_rcode);
    out.push(0); // version 0
    out.extend_from_slice(&(if dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
    match ecs {
        None => out.extend_from_slice(&0u16.to_be_bytes()),
        Some(e) => {
            let addr = e.addr_bytes();
            let data_len = 4 + addr.len() as u16;
            out.extend_from_slice(&(4 + data_len).to_be_bytes());
            out.extend_from_slice(&crate::proto::ecs::OPT_ECS.to_be_bytes());
            out.extend_from_slice(&data_len.to_be_bytes());
            out.extend_from_slice(&e.family.to_be_bytes());
            out.push(e.source_len);
            out.push(e.scope.unwrap_or(0));
            out.extend_from_slice(&addr);
        }
    }
}

/// Bytes [`opt_with_ecs`] writes.
pub fn opt_len(ecs: Option<&crate::proto::ecs::Ecs>) -> usize {
    11 + ecs.map_or(0, |e| 8 + e.addr_bytes().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_to_wire() {
        assert_eq!(name_to_wire("Web.Mesos.").unwrap(), b"\x03web\x05mesos\x00");
        assert_eq!(name_to_wire(".").unwrap(), b"\x00");
        assert!(name_to_wire("a..b").is_none());
        assert!(name_to_wire(&"a".repeat(64)).is_none());
    }
}
