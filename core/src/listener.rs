//! Listening sockets with the options Ocean's daemons need.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds a TCP listener with `SO_REUSEADDR` (restart without waiting for TIME_WAIT) and,
/// when `reuse_port` is set, `SO_REUSEPORT` (several sockets sharing one port).
pub fn bind_tcp(addr: SocketAddr, reuse_port: bool) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::from_std(bind_tcp_std(addr, reuse_port)?)
}

/// [`bind_tcp`] as a non-blocking std listener, for a worker thread that registers it with
/// its own runtime later.
pub fn bind_tcp_std(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Binds a UDP socket, optionally with `SO_REUSEPORT`.
pub fn bind_udp(addr: SocketAddr, reuse_port: bool) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reuse_port_lets_two_sockets_share_a_port() -> std::io::Result<()> {
        let a = bind_tcp("127.0.0.1:0".parse().map_err(std::io::Error::other)?, true)?;
        let port = a.local_addr()?;
        let b = bind_tcp(port, true)?;
        assert_eq!(b.local_addr()?, port);
        Ok(())
    }
}
