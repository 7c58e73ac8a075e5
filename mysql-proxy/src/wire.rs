//! Packets on a stream during login: [`proto`](crate::proto)'s decoders fed with exactly
//! the bytes they ask for, so nothing past a packet is read (after an SSLRequest the TLS
//! ClientHello stays in the socket for the TLS acceptor). The relay after login does not
//! use this: it moves bytes in bulk.

use std::io;

use bytes::BytesMut;
use ocean_core::daemon::{write_all_within, WriteError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proto::proxy_v2::{self, ProxyError};
use crate::proto::{encode, DecodeError, Decoder, Packet};

/// A packet that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("login {0}")]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
}

/// Reads one packet (continuations joined) of at most `decoder`'s limit.
///
/// # Errors
/// I/O errors (EOF mid-packet included), or a packet the decoder refuses, known from its
/// header before the payload is read.
pub async fn read_packet<R: AsyncRead + Unpin>(
    r: &mut R,
    decoder: Decoder,
) -> Result<Packet, ReadError> {
    let mut buf = BytesMut::new();
    loop {
        if let Some(p) = decoder.decode(&mut buf)? {
            return Ok(p);
        }
        let n = decoder.needed(&buf);
        read_more(r, &mut buf, n).await?;
    }
}

/// Reads a PROXY protocol v2 header; its client address, if it names one.
///
/// # Errors
/// I/O errors, or what is sent is not a v2 header.
pub async fn read_proxy_header<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<std::net::SocketAddr>, ReadError> {
    let mut buf = BytesMut::new();
    loop {
        if let Some(h) = proxy_v2::decode(&mut buf)? {
            return Ok(h.source);
        }
        let n = proxy_v2::needed(&buf);
        read_more(r, &mut buf, n).await?;
    }
}

/// Appends exactly `n` bytes (at least one) from `r` to `buf`.
async fn read_more<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    n: usize,
) -> io::Result<()> {
    let start = buf.len();
    buf.resize(start + n.max(1), 0);
    match buf.get_mut(start..) {
        Some(tail) => r.read_exact(tail).await.map(|_| ()),
        None => Ok(()),
    }
}

/// Writes `payload` as a packet with sequence id `seq` and flushes.
///
/// # Errors
/// I/O errors.
pub async fn write_packet<W: AsyncWrite + Unpin>(
    w: &mut W,
    seq: u8,
    payload: &[u8],
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(payload.len() + 4);
    encode(seq, payload, &mut buf);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Writes `payload` as a packet with sequence id `seq` and flushes, all within `timeout`
/// (`--write-timeout`): a client that does not read cannot hold the task.
///
/// # Errors
/// I/O errors, or [`WriteError::Timeout`].
pub async fn write_packet_within<W: AsyncWrite + Unpin>(
    w: &mut W,
    seq: u8,
    payload: &[u8],
    timeout: std::time::Duration,
) -> Result<(), WriteError> {
    let mut buf = Vec::with_capacity(payload.len() + 4);
    encode(seq, payload, &mut buf);
    write_all_within(w, &buf, timeout).await
}
