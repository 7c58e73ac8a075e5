//! PROXY protocol v2 (the binary form HAProxy and L4 balancers send), accepted only from
//! `--trusted-proxy` networks, to learn the client address behind the balancer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::BytesMut;

/// The 12 bytes every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family, length.
pub const HEADER_LEN: usize = 16;

/// A header that is not PROXY v2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("PROXY protocol v2: missing signature (a trusted proxy must send PROXY v2)")]
    NoSignature,
    #[error("PROXY protocol v2: not version 2")]
    NotVersion2,
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The client's address; `None` for LOCAL (health checks) or address families other
    /// than TCP over IPv4/IPv6: the peer address then stands.
    pub source: Option<SocketAddr>,
}

/// Checks the fixed part; returns the body length.
fn fixed(buf: &[u8]) -> Result<Option<usize>, ProxyError> {
    let Some(head) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    if head.get(..12) != Some(&SIGNATURE[..]) {
        return Err(ProxyError::NoSignature);
    }
    match head {
        [.., ver_cmd, _, l1, l2] => {
            if ver_cmd >> 4 != 2 {
                return Err(ProxyError::NotVersion2);
            }
            Ok(Some(usize::from(u16::from_be_bytes([*l1, *l2]))))
        }
        _ => Ok(None),
    }
}

/// How many more bytes [`decode`] needs (0: call it now). The body length is a u16, so
/// at most 64 KiB is ever asked for.
pub fn needed(buf: &[u8]) -> usize {
    match fixed(buf) {
        Ok(None) => HEADER_LEN - buf.len(),
        Ok(Some(len)) => (HEADER_LEN + len).saturating_sub(buf.len()),
        Err(_) => 0,
    }
}

/// Takes a whole v2 header off the front of `buf`; `Ok(None)` means more bytes are needed.
///
/// # Errors
/// Not a v2 header (known from the first 16 bytes).
pub fn decode(buf: &mut BytesMut) -> Result<Option<Header>, ProxyError> {
    let Some(len) = fixed(buf)? else {
        return Ok(None);
    };
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    let head = buf.split_to(HEADER_LEN);
    let body = buf.split_to(len);
    let (ver_cmd, family) = match &head[..] {
        [.., v, f, _, _] => (*v, *f),
        _ => return Ok(None),
    };
    if ver_cmd & 0x0f == 0 {
        return Ok(Some(Header { source: None })); // LOCAL
    }
    let source = match (family, &body[..]) {
        // TCP over IPv4: src addr, dst addr, src port, dst port.
        (0x11, [a, b, c, d, _, _, _, _, p1, p2, ..]) => Some(SocketAddr::new(
            Ipv4Addr::new(*a, *b, *c, *d).into(),
            u16::from_be_bytes([*p1, *p2]),
        )),
        (0x21, body) if body.len() >= 36 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(body.get(..16).unwrap_or(&[0; 16]));
            let port = match body.get(32..34) {
                Some(&[p1, p2]) => u16::from_be_bytes([p1, p2]),
                _ => 0,
            };
            Some(SocketAddr::new(Ipv6Addr::from(o).into(), port))
        }
        _ => None,
    };
    Ok(Some(Header { source }))
}

/// A v2 header announcing `src` -> `dst` (tests, and clients that want to send one).
pub fn header_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = SIGNATURE.to_vec();
    h.push(0x21);
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            h.push(0x11);
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&d.ip().octets());
            h.extend_from_slice(&s.port().to_be_bytes());
            h.extend_from_slice(&d.port().to_be_bytes());
        }
        _ => {
            let (s6, d6) = (to_v6(src.ip()), to_v6(dst.ip()));
            h.push(0x21);
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&s6.octets());
            h.extend_from_slice(&d6.octets());
            h.extend_from_slice(&src.port().to_be_bytes());
            h.extend_from_slice(&dst.port().to_be_bytes());
        }
    }
    h
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Option<Header>, ProxyError> {
        decode(&mut BytesMut::from(bytes))
    }

    #[test]
    fn header_round_trips() {
        let src: SocketAddr = "10.9.8.7:4000".parse().unwrap();
        let h = header_v2(src, "10.0.0.1:3307".parse().unwrap());
        assert_eq!(decode_all(&h).unwrap().unwrap().source, Some(src));
        let src6: SocketAddr = "[fd00::5]:4000".parse().unwrap();
        let h = header_v2(src6, "[fd00::1]:3307".parse().unwrap());
        assert_eq!(decode_all(&h).unwrap().unwrap().source, Some(src6));
        assert_eq!(
            decode_all(b"GET / HTTP/1.1\r\n\r\n"),
            Err(ProxyError::NoSignature)
        );
    }

    #[test]
    fn needs_exactly_the_header_and_leaves_what_follows() {
        let src: SocketAddr = "10.9.8.7:4000".parse().unwrap();
        let mut h = header_v2(src, "10.0.0.1:3307".parse().unwrap());
        assert_eq!(needed(&h[..3]), 13);
        assert_eq!(needed(&h[..16]), 12);
        assert_eq!(needed(&h), 0);
        h.extend_from_slice(b"rest");
        let mut buf = BytesMut::from(&h[..]);
        assert_eq!(decode(&mut buf).unwrap().unwrap().source, Some(src));
        assert_eq!(&buf[..], b"rest");
        // LOCAL: no address.
        let mut local = SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(decode_all(&local).unwrap().unwrap().source, None);
        let mut v1 = SIGNATURE.to_vec();
        v1.extend_from_slice(&[0x11, 0x11, 0, 0]);
        assert_eq!(decode_all(&v1), Err(ProxyError::NotVersion2));
        // A short body for its family: the peer address stands.
        let mut short = SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 2, 1, 2]);
        assert_eq!(decode_all(&short).unwrap().unwrap().source, None);
    }
}
