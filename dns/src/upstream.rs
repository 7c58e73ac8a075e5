//! Forwarding names outside the domain to upstream resolvers, as raw messages over the
//! client's transport with the ID rewritten, trying upstreams in order with a timeout each.

use std::net::SocketAddr;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::proto::encode::name_to_wire;
use crate::route::Transport;

/// Why no upstream answered.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolver configured")]
    NoUpstream,
    #[error("every upstream failed; last: {0}")]
    AllFailed(String),
}

/// Where queries outside the domain go. SIGHUP may [`Forwarder::replace`] the upstreams
/// (a Mesos-DNS config's `resolvers`, `zoneResolvers`, `timeout`); a query takes them once
/// when it starts and keeps them to its end.
#[derive(Debug)]
pub struct Forwarder {
    current: ArcSwap<Upstreams>,
}

#[derive(Debug, PartialEq, Eq)]
struct Upstreams {
    default: Vec<SocketAddr>,
    /// (lowercase wire-format zone, upstream), longest zone first.
    zones: Vec<(Vec<u8>, SocketAddr)>,
    timeout: Duration,
}

/// Whether wire name `name` is `zone` or below it.
fn under(name: &[u8], zone: &[u8]) -> bool {
    let mut pos = 0usize;
    loop {
        if name.get(pos..) == Some(zone) {
            return true;
        }
        match name.get(pos) {
            Some(&0) | None => return false,
            Some(&len) => pos += 1 + len as usize,
        }
    }
}

impl Forwarder {
    pub fn new(
        default: Vec<SocketAddr>,
        zones: &[(String, SocketAddr)],
        timeout: Duration,
    ) -> Self {
        let mut zones: Vec<(Vec<u8>, SocketAddr)> = zones
            .iter()
            .filter_map(|(z, a)| Some((name_to_wire(z)?, *a)))
            .collect();
        zones.sort_by_key(|(z, _)| std::cmp::Reverse(z.len()));
        Forwarder {
            current: ArcSwap::from_pointee(Upstreams {
                default,
                zones,
                timeout,
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        let u = self.current.load();
        !u.default.is_empty() || !u.zones.is_empty()
    }

    /// Whether `other` forwards every name to the same upstreams with the same timeout.
    pub fn same_as(&self, other: &Forwarder) -> bool {
        *self.current.load_full() == *other.current.load_full()
    }

    /// Takes `next`'s upstreams and timeout for the queries that start from now on.
    pub fn replace(&self, next: &Forwarder) {
        self.current.store(next.current.load_full());
    }

    /// Upstreams for a lowercase wire-format name: zone-specific ones first, then the defaults.
    pub fn upstreams_for(&self, name: &[u8]) -> Vec<SocketAddr> {
        self.current.load().upstreams_for(name)
    }

    /// The timeout of one upstream try.
    fn timeout(&self) -> Duration {
        self.current.load().timeout
    }

    /// Forwards `req` (a parsed, valid query) and returns the upstream's answer with the
    /// client's ID restored.
    pub async fn forward(
        &self,
        req: &[u8],
        name: &[u8],
        transport: Transport,
    ) -> Result<Vec<u8>, ForwardError> {
        let (upstreams, timeout) = (self.upstreams_for(name), self.timeout());
        if upstreams.is_empty() {
            return Err(ForwardError::NoUpstream);
        }
        let Some(client_id) = req.get(..2).map(|b| [b[0], b[1]]) else {
            return Err(ForwardError::AllFailed(
                "query shorter than a header".into(),
            ));
        };
        let mut last = String::new();
        for upstream in upstreams {
            let id: u16 = rand::random();
            let mut msg = req.to_vec();
            msg[..2].copy_from_slice(&id.to_be_bytes());
            let started = std::time::Instant::now();
            let r = match transport {
                Transport::Udp => tokio::time::timeout(timeout, udp(&msg, upstream, id)).await,
                Transport::Tcp => tokio::time::timeout(timeout, tcp(&msg, upstream, id)).await,
            };
            match r {
                Ok(Ok(mut answer)) => {
                    answer[..2].copy_from_slice(&client_id);
                    metrics::histogram!("ocean_dns_forward_seconds")
                        .record(started.elapsed().as_secs_f64());
                    return Ok(answer);
                }
                Ok(Err(e)) => last = format!("{upstream}: {e}"),
                Err(_) => last = format!("{upstream}: no answer within {timeout:?}"),
            }
            metrics::counter!("ocean_dns_forward_failures_total").increment(1);
            tracing::debug!(%upstream, error = %last, "upstream failed; trying the next");
        }
        Err(ForwardError::AllFailed(last))
    }
}

impl Upstreams {
    fn upstreams_for(&self, name: &[u8]) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .zones
            .iter()
            .filter(|(z, _)| under(name, z))
            .map(|(_, a)| *a)
            .collect();
        v.extend(self.default.iter().copied());
        v
    }
}

fn is_answer_to(buf: &[u8], id: u16) -> bool {
    buf.len() >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id && buf[2] & 0x80 != 0
}

async fn udp(msg: &[u8], upstream: SocketAddr, id: u16) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(upstream).await?;
    sock.send(msg).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Anything that is not the answer (a stray or spoofed datagram) is ignored.
        if is_answer_to(&buf[..n], id) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp(msg: &[u8], upstream: SocketAddr, id: u16) -> std::io::Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(upstream).await?;
    s.set_nodelay(true)?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    framed.extend_from_slice(msg);
    s.write_all(&framed).await?;
    let len = s.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    if !is_answer_to(&buf, id) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "upstream answered another query",
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_resolvers_come_first_longest_zone_first() {
        let d: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:8600".parse().unwrap();
        let cc: SocketAddr = "127.0.0.1:8601".parse().unwrap();
        let f = Forwarder::new(
            vec![d],
            &[("consul".into(), c), ("dc1.consul.".into(), cc)],
            Duration::from_secs(1),
        );
        assert_eq!(
            f.upstreams_for(&name_to_wire("web.dc1.consul.").unwrap()),
            vec![cc, c, d]
        );
        assert_eq!(
            f.upstreams_for(&name_to_wire("web.consul").unwrap()),
            vec![c, d]
        );
        assert_eq!(
            f.upstreams_for(&name_to_wire("example.com").unwrap()),
            vec![d]
        );
        // "xconsul" is not under "consul".
        assert_eq!(
            f.upstreams_for(&name_to_wire("web.xconsul").unwrap()),
            vec![d]
        );
    }
}
