//! PROXY protocol v2 (the binary form HAProxy and L4 balancers send), accepted only from
//! `--trusted-proxy` networks, to learn the client address behind the balancer.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

fn bad(msg: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("PROXY protocol v2: {msg}"),
    )
}

/// Reads a v2 header; returns the client's address (`None` for LOCAL, e.g. health checks,
/// or address families other than TCP over IPv4/IPv6: the peer address then stands).
pub async fn read_v2<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<SocketAddr>> {
    let mut head = [0u8; 16];
    r.read_exact(&mut head).await?;
    if head[..12] != SIGNATURE {
        return Err(bad(
            "missing signature (a trusted proxy must send PROXY v2)",
        ));
    }
    let ver_cmd = head[12];
    if ver_cmd >> 4 != 2 {
        return Err(bad("not version 2"));
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    if ver_cmd & 0x0f == 0 {
        return Ok(None); // LOCAL
    }
    Ok(match head[13] {
        // TCP over IPv4: src addr, dst addr, src port, dst port.
        0x11 if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        0x21 if body.len() >= 36 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&body[..16]);
            let ip = Ipv6Addr::from(o);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        _ => None,
    })
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
mod tests {
    use super::*;

    #[tokio::test]
    async fn header_round_trips() {
        let src: SocketAddr = "10.9.8.7:4000".parse().unwrap();
        let h = header_v2(src, "10.0.0.1:3307".parse().unwrap());
        assert_eq!(read_v2(&mut &h[..]).await.unwrap(), Some(src));
        let src6: SocketAddr = "[fd00::5]:4000".parse().unwrap();
        let h = header_v2(src6, "[fd00::1]:3307".parse().unwrap());
        assert_eq!(read_v2(&mut &h[..]).await.unwrap(), Some(src6));
        assert!(read_v2(&mut &b"GET / HTTP/1.1\r\n\r\n"[..]).await.is_err());
    }
}
