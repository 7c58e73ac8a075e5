//! MySQL packet framing: a 3-byte little-endian payload length and a sequence id, then the
//! payload. A payload of exactly 0xFF_FFFF bytes means "more of this message follows".

use std::io;

use mysql_common::constants::CapabilityFlags;
use mysql_common::packets::{ErrPacket, ServerError, SqlState};
use mysql_common::proto::MySerialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest payload of one physical packet.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// Longest packet accepted during login (handshake responses, auth data): anything larger
/// is garbage or an attack.
pub const LOGIN_PACKET_LIMIT: usize = 64 * 1024;

/// Reads one physical packet during login. Refuses packets over `limit` (and split ones).
pub async fn read_packet<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).await?;
    let len = payload_len(&header);
    if len > limit || len == MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("login packet of {len} bytes is over the {limit}-byte limit"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok((header[3], payload))
}

/// Writes one packet (payloads built by the proxy are far below 16 MB) and flushes.
pub async fn write_packet<W: AsyncWrite + Unpin>(
    w: &mut W,
    seq: u8,
    payload: &[u8],
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(payload.len() + 4);
    frame(seq, payload, &mut buf);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Appends `payload` as one packet with sequence id `seq`.
pub fn frame(seq: u8, payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len().min(MAX_PAYLOAD);
    out.extend_from_slice(&[len as u8, (len >> 8) as u8, (len >> 16) as u8, seq]);
    out.extend_from_slice(&payload[..len]);
}

/// The payload length in a packet header.
pub fn payload_len(header: &[u8]) -> usize {
    match header {
        [a, b, c, ..] => usize::from(*a) | usize::from(*b) << 8 | usize::from(*c) << 16,
        _ => 0,
    }
}

/// The payload of an ERR packet (protocol 4.1 form, with SQL state).
pub fn err_payload(code: u16, state: &[u8; 5], message: &str) -> Vec<u8> {
    let err = ErrPacket::Error(ServerError::new(
        code,
        Some(SqlState::new(*state)),
        message.as_bytes(),
    ));
    let mut buf = Vec::with_capacity(message.len() + 9);
    // ErrPacket serializes only the body: header byte and code come first.
    buf.push(0xff);
    buf.extend_from_slice(&code.to_le_bytes());
    if let ErrPacket::Error(e) = &err {
        e.serialize(&mut buf);
    }
    buf
}

/// A minimal OK packet payload: no rows affected, no insert id, autocommit.
pub fn ok_payload(caps: CapabilityFlags) -> Vec<u8> {
    let mut p = vec![0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00];
    if caps.contains(CapabilityFlags::CLIENT_SESSION_TRACK) {
        // Empty info string (lenenc) for clients that expect session-track fields.
        p.push(0x00);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_packet_layout() {
        let p = err_payload(1045, b"28000", "denied");
        assert_eq!(p[0], 0xff);
        assert_eq!(u16::from_le_bytes([p[1], p[2]]), 1045);
        assert_eq!(&p[3..9], b"#28000");
        assert_eq!(&p[9..], b"denied");
    }

    #[test]
    fn frames_carry_length_and_seq() {
        let mut out = Vec::new();
        frame(3, b"abc", &mut out);
        assert_eq!(out, [3, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(payload_len(&out), 3);
    }
}
