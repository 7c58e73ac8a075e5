//! The kernel backend: IPVS over generic netlink.
//!
//! The socket is `netlink-sys` (a small, safe wrapper over the `AF_NETLINK` socket, part of
//! the rust-netlink project); the messages are encoded and parsed by hand in [`wire`],
//! because IPVS needs only nine commands and a few dozen attributes, and hand-written bytes
//! can be checked line by line against `linux/ip_vs.h`. `netlink-packet-generic` has no
//! IPVS messages, and `neli` would add a large typed layer for the same nine commands. The
//! `ipvs` crate on crates.io (0.1.1, LGPL-3.0, about 300 lines, "just reserved a name" in
//! its own description) is not usable.
//!
//! Calls are blocking and short (the kernel answers at once); the daemon runs them on a
//! blocking thread.

pub mod wire;

#[cfg(test)]
mod tests;

use std::io;

use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr as NlAddr};

use crate::model::{Ipvs, IpvsError, ServiceEntry};
use crate::plan::{IpvsWrite, Op};

const EEXIST: i32 = 17;
const ESRCH: i32 = 3;
const ENOENT: i32 = 2;
const EINVAL: i32 = 22;
const RECV_BUF: usize = 256 * 1024;
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// `MSG_TRUNC`: recv returns a datagram's real length even when it did not fit, so a
/// truncated reply is an error instead of silently lost messages.
const MSG_TRUNC: i32 = 0x20;

/// A netlink failure that is not one of the kernel's IPVS answers to a write.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Parse(#[from] wire::ParseError),
    #[error(
        "the kernel has no IPVS generic netlink family (load the ip_vs module: modprobe ip_vs)"
    )]
    NoIpvs,
    #[error("kernel answered errno {errno} ({})", io::Error::from_raw_os_error(*errno))]
    Errno { errno: i32 },
}

/// An open IPVS netlink connection.
pub struct NetlinkIpvs {
    sock: Socket,
    family: u16,
    seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for NetlinkIpvs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetlinkIpvs")
            .field("family", &self.family)
            .finish()
    }
}

impl NetlinkIpvs {
    /// Opens a generic netlink socket and resolves the `IPVS` family id via `nlctrl`.
    ///
    /// # Errors
    /// [`NetlinkError::NoIpvs`] when the kernel has no IPVS; socket errors otherwise.
    pub fn open() -> Result<Self, NetlinkError> {
        let mut sock = Socket::new(NETLINK_GENERIC)?;
        sock.bind_auto()?;
        sock.connect(&NlAddr::new(0, 0))?;
        // The kernel answers at once; a bound keeps a lost answer from hanging the daemon.
        socket2::SockRef::from(&sock).set_read_timeout(Some(READ_TIMEOUT))?;
        let mut me = NetlinkIpvs {
            sock,
            family: 0,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        };
        let replies = match me.transact(wire::get_family, false) {
            Ok(r) => r,
            Err(NetlinkError::Errno { errno: ENOENT }) => return Err(NetlinkError::NoIpvs),
            Err(e) => return Err(e),
        };
        let Some(payload) = replies.first() else {
            return Err(NetlinkError::NoIpvs);
        };
        me.family = wire::parse_family(payload)?;
        Ok(me)
    }

    /// The resolved family id.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        loop {
            match self.sock.send(msg, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn recv(&mut self) -> io::Result<usize> {
        loop {
            self.buf.clear();
            match self.sock.recv(&mut self.buf, MSG_TRUNC) {
                Ok(n) if n > self.buf.len() => {
                    return Err(io::Error::other(format!(
                        "netlink datagram of {n} bytes truncated to {}",
                        self.buf.len()
                    )))
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends the request `build(seq)` and collects the payloads of its reply messages: for a
    /// dump until `NLMSG_DONE`, otherwise until the ACK (`NLMSG_ERROR` with 0). Multipart
    /// replies span several datagrams; messages of other sequence numbers (late answers to
    /// an earlier request) are skipped.
    fn transact(
        &mut self,
        build: impl FnOnce(u32) -> Vec<u8>,
        dump: bool,
    ) -> Result<Vec<Vec<u8>>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.send(&build(seq))?;
        let mut out = Vec::new();
        loop {
            let n = self.recv()?;
            let data = self.buf[..n].to_vec();
            for m in wire::messages(&data)? {
                if m.seq != seq {
                    continue;
                }
                match m.kind {
                    wire::NLMSG_ERROR => {
                        let errno = wire::error_code(m.payload)?;
                        if errno == 0 {
                            return Ok(out);
                        }
                        return Err(NetlinkError::Errno { errno });
                    }
                    wire::NLMSG_DONE => {
                        let errno = wire::error_code(m.payload).unwrap_or(0);
                        if errno != 0 {
                            return Err(NetlinkError::Errno { errno });
                        }
                        return Ok(out);
                    }
                    _ => {
                        out.push(m.payload.to_vec());
                        if !dump && m.flags & wire::NLM_F_MULTI == 0 {
                            // A plain answer; its ACK follows when one was asked for.
                            continue;
                        }
                    }
                }
            }
        }
    }

    /// The raw datagrams of a services dump and of a destinations dump of `key` (the
    /// first service when `None`), for capturing real replies as test fixtures.
    ///
    /// # Errors
    /// Socket errors.
    pub fn raw_dumps(&mut self) -> Result<Vec<Vec<u8>>, NetlinkError> {
        let family = self.family;
        let mut out = self.raw(|seq| wire::get_services(family, seq))?;
        let table = self.read()?;
        if let Some(key) = table.keys().next().copied() {
            out.extend(self.raw(|seq| wire::get_dests(family, seq, &key))?);
        }
        Ok(out)
    }

    fn raw(&mut self, build: impl FnOnce(u32) -> Vec<u8>) -> Result<Vec<Vec<u8>>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.send(&build(seq))?;
        let mut out = Vec::new();
        loop {
            let n = self.recv()?;
            let data = self.buf[..n].to_vec();
            let done = wire::messages(&data)?.iter().any(|m| {
                m.seq == seq && (m.kind == wire::NLMSG_DONE || m.kind == wire::NLMSG_ERROR)
            });
            out.push(data);
            if done {
                return Ok(out);
            }
        }
    }

    /// Reads the whole table: a dump of services, then a dump of each one's destinations.
    ///
    /// # Errors
    /// Socket and parse errors; a service deleted between the two dumps is left out.
    pub fn read(&mut self) -> Result<Ipvs, NetlinkError> {
        let family = self.family;
        let mut table = Ipvs::new();
        for payload in self.transact(|seq| wire::get_services(family, seq), true)? {
            if let Some(service) = wire::parse_service(&payload)? {
                table.insert(
                    service.key,
                    ServiceEntry {
                        service,
                        dests: Default::default(),
                    },
                );
            }
        }
        let keys: Vec<_> = table.keys().copied().collect();
        for key in keys {
            let replies = match self.transact(|seq| wire::get_dests(family, seq, &key), true) {
                Ok(r) => r,
                Err(NetlinkError::Errno { errno: ESRCH }) => {
                    table.remove(&key);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut dests = std::collections::BTreeMap::new();
            for payload in replies {
                if let Some(d) = wire::parse_dest(&payload, key.is_ipv6())? {
                    dests.insert(d.addr, d);
                }
            }
            if let Some(e) = table.get_mut(&key) {
                e.dests = dests;
            }
        }
        Ok(table)
    }

    /// Applies one operation and waits for the kernel's answer.
    ///
    /// # Errors
    /// The kernel's answer as [`IpvsError`]: EEXIST, ESRCH, ENOENT (for destinations) map to
    /// their variants, so [`crate::plan::apply_plan`] can turn them into their idempotent
    /// counterparts; anything else is [`IpvsError::Other`].
    pub fn apply_op(&mut self, op: &Op) -> Result<(), IpvsError> {
        let family = self.family;
        let key = *op.key();
        match self.transact(|seq| wire::op_message(family, seq, op), false) {
            Ok(_) => Ok(()),
            Err(NetlinkError::Errno { errno }) => Err(match (errno, op) {
                (EEXIST, Op::AddService(_)) => IpvsError::ServiceExists(key),
                (EEXIST, Op::AddDest(_, d)) => IpvsError::DestExists(key, d.addr),
                (ESRCH, _) => IpvsError::NoService(key),
                (ENOENT, Op::EditDest(_, d) | Op::AddDest(_, d)) => IpvsError::NoDest(key, d.addr),
                (ENOENT, Op::DelDest(_, a)) => IpvsError::NoDest(key, *a),
                (ENOENT, Op::AddService(s) | Op::EditService(s)) => IpvsError::Other(format!(
                    "{op}: the kernel has no scheduler {:?} (ENOENT; load ip_vs_{})",
                    s.scheduler, s.scheduler
                )),
                (EINVAL, _) => IpvsError::Invalid(key, "the kernel refused the arguments"),
                (errno, _) => {
                    IpvsError::Other(format!("{op}: {}", io::Error::from_raw_os_error(errno)))
                }
            }),
            Err(e) => Err(IpvsError::Other(format!("{op}: {e}"))),
        }
    }
}

impl IpvsWrite for NetlinkIpvs {
    fn apply(&mut self, op: &Op) -> Result<(), IpvsError> {
        self.apply_op(op)
    }
}
