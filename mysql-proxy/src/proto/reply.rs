//! ERR and OK packets: what the proxy answers itself, and a backend's refusal read back.

use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{ErrPacket, ServerError, SqlState};
use mysql_common::proto::MySerialize;

use crate::proto::frame::encode;

/// An error a server sent: its code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerErr {
    pub code: u16,
    pub message: String,
}

/// The payload of an ERR packet (protocol 4.1 form, with SQL state).
pub fn err_payload(code: u16, state: &[u8; 5], message: &str) -> Vec<u8> {
    let err = ErrPacket::Error(ServerError::new(
        code,
        Some(SqlState::new(*state)),
        message.as_bytes(),
    ));
    let mut buf = Vec::with_capacity(message.len() + 9);
    err.serialize(&mut buf);
    buf
}

/// A whole ERR packet with sequence id `seq`, ready to write.
pub fn err_packet(seq: u8, code: u16, state: &[u8; 5], message: &str) -> Vec<u8> {
    let payload = err_payload(code, state, message);
    let mut out = Vec::with_capacity(payload.len() + 4);
    encode(seq, &payload, &mut out);
    out
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

/// Reads an ERR payload: with or without the SQL state (servers omit it before the
/// handshake); whatever does not parse is kept as the message.
pub fn parse_err(payload: &[u8]) -> ServerErr {
    let caps = if payload.get(3) == Some(&b'#') {
        CapabilityFlags::CLIENT_PROTOCOL_41
    } else {
        CapabilityFlags::empty()
    };
    match ParseBuf(payload).parse::<ErrPacket<'_>>(caps) {
        Ok(ErrPacket::Error(e)) => ServerErr {
            code: e.error_code(),
            message: e.message_str().into_owned(),
        },
        _ => ServerErr {
            code: match payload {
                [_, a, b, ..] => u16::from_le_bytes([*a, *b]),
                _ => 0,
            },
            message: String::from_utf8_lossy(payload.get(3..).unwrap_or_default()).into_owned(),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn err_packet_layout_and_parse_back() {
        let p = err_payload(1045, b"28000", "denied");
        assert_eq!(p[0], 0xff);
        assert_eq!(u16::from_le_bytes([p[1], p[2]]), 1045);
        assert_eq!(&p[3..9], b"#28000");
        assert_eq!(&p[9..], b"denied");
        assert_eq!(
            parse_err(&p),
            ServerErr {
                code: 1045,
                message: "denied".into()
            }
        );
        let framed = err_packet(0, 1040, b"08004", "Too many connections");
        assert_eq!(&framed[3..5], &[0, 0xff]);
        assert_eq!(
            &framed[4..],
            &err_payload(1040, b"08004", "Too many connections")[..]
        );
    }

    #[test]
    fn err_without_state_and_garbage() {
        let mut p = vec![0xff, 0x69, 0x04];
        p.extend_from_slice(b"Host is blocked");
        assert_eq!(
            parse_err(&p),
            ServerErr {
                code: 1129,
                message: "Host is blocked".into()
            }
        );
        assert_eq!(parse_err(&[]).code, 0);
        assert_eq!(parse_err(&[0xff]).code, 0);
        let _ = parse_err(&[0xff, 1, 2, b'#', b'1']);
    }
}
