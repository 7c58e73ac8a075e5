//! The client's command stream after login. Almost everything passes to the backend
//! untouched, in pieces as it arrives (a 16 MB packet is never held whole); the
//! [`Scanner`] finds the packet boundaries and stops at the commands the proxy handles
//! itself: COM_INIT_DB (checked against the grants again), COM_CHANGE_USER (refused) and
//! COM_QUIT (the session ends; the backend connection may go back to the pool).

/// The client says goodbye.
pub const COM_QUIT: u8 = 0x01;
/// `USE schema`.
pub const COM_INIT_DB: u8 = 0x02;
/// A text query.
pub const COM_QUERY: u8 = 0x03;
pub const COM_FIELD_LIST: u8 = 0x04;
pub const COM_REFRESH: u8 = 0x07;
pub const COM_STATISTICS: u8 = 0x09;
pub const COM_PROCESS_KILL: u8 = 0x0c;
pub const COM_DEBUG: u8 = 0x0d;
pub const COM_PING: u8 = 0x0e;
/// Change user on an open connection.
pub const COM_CHANGE_USER: u8 = 0x11;
/// The binary protocol's prepared statements.
pub const COM_STMT_PREPARE: u8 = 0x16;
pub const COM_STMT_EXECUTE: u8 = 0x17;
pub const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
pub const COM_STMT_CLOSE: u8 = 0x19;
pub const COM_STMT_RESET: u8 = 0x1a;
/// Multi-statements on or off for the session.
pub const COM_SET_OPTION: u8 = 0x1b;
pub const COM_STMT_FETCH: u8 = 0x1c;
pub const COM_RESET_CONNECTION: u8 = 0x1f;
/// Longest intercepted command packet kept whole (a schema name is at most 64 chars).
pub const INTERCEPT_LIMIT: usize = 64 * 1024;

const HEADER_LEN: usize = 4;

/// The client's stream cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("oversized COM_INIT_DB/COM_CHANGE_USER/COM_QUIT")]
    Oversized { len: usize },
}

/// Where the scanner is in the client's packet stream.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Bytes of the current packet (header included) still to pass through.
    passthrough: usize,
    /// The last packet had a 0xFF_FFFF payload: the next one continues it.
    continuing: bool,
}

/// A command packet the proxy handles itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intercept {
    /// Its sequence id; the answer takes the next one.
    pub seq: u8,
    /// The payload, command byte first.
    pub payload: Vec<u8>,
    /// Bytes it takes in the stream, header included.
    pub total: usize,
}

/// What an intercepted packet asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// COM_INIT_DB into this schema (raw bytes).
    InitDb(&'a [u8]),
    ChangeUser,
    Quit,
}

impl Intercept {
    /// The command it carries.
    pub fn command(&self) -> Command<'_> {
        match self.payload.split_first() {
            Some((&COM_INIT_DB, schema)) => Command::InitDb(schema),
            Some((&COM_QUIT, _)) => Command::Quit,
            _ => Command::ChangeUser,
        }
    }
}

impl Scanner {
    /// Returns how many leading bytes of `buf` can be forwarded as they are, and a command
    /// packet right after them that the proxy must handle (then skip its `total` bytes).
    ///
    /// # Errors
    /// An intercepted command longer than [`INTERCEPT_LIMIT`].
    pub fn scan(&mut self, buf: &[u8]) -> Result<(usize, Option<Intercept>), ScanError> {
        let mut pos = 0;
        loop {
            if self.passthrough > 0 {
                let take = self.passthrough.min(buf.len().saturating_sub(pos));
                pos += take;
                self.passthrough -= take;
                if self.passthrough > 0 {
                    return Ok((pos, None));
                }
                continue;
            }
            let rest = buf.get(pos..).unwrap_or_default();
            let Some(&[a, b, c, seq]) = rest.get(..HEADER_LEN) else {
                return Ok((pos, None));
            };
            let len = usize::from(a) | usize::from(b) << 8 | usize::from(c) << 16;
            if !self.continuing && len > 0 {
                let Some(&cmd) = rest.get(HEADER_LEN) else {
                    return Ok((pos, None));
                };
                if cmd == COM_INIT_DB || cmd == COM_CHANGE_USER || cmd == COM_QUIT {
                    if len > INTERCEPT_LIMIT {
                        return Err(ScanError::Oversized { len });
                    }
                    let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
                        return Ok((pos, None));
                    };
                    return Ok((
                        pos,
                        Some(Intercept {
                            seq,
                            payload: payload.to_vec(),
                            total: HEADER_LEN + len,
                        }),
                    ));
                }
            }
            self.continuing = len == crate::proto::frame::MAX_PAYLOAD;
            self.passthrough = HEADER_LEN + len;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::proto::frame::{encode, MAX_PAYLOAD};

    fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode(seq, payload, &mut v);
        v
    }

    #[test]
    fn scanner_passes_queries_and_stops_at_init_db() {
        let mut s = Scanner::default();
        let mut buf = pkt(0, b"\x03SELECT 1");
        buf.extend(pkt(0, b"\x02other"));
        let (fwd, ic) = s.scan(&buf).unwrap();
        assert_eq!(fwd, 13);
        let ic = ic.unwrap();
        assert_eq!(ic.payload, b"\x02other");
        assert_eq!(ic.total, 10);
        assert_eq!(ic.command(), Command::InitDb(b"other"));
    }

    #[test]
    fn scanner_does_not_mistake_continuation_packets_for_commands() {
        let mut s = Scanner::default();
        // A 16 MB payload's header, then part of its body.
        let mut buf = vec![0xff, 0xff, 0xff, 0, 0x03];
        buf.extend(vec![b'x'; 100]);
        let (fwd, ic) = s.scan(&buf).unwrap();
        assert_eq!(fwd, buf.len());
        assert!(ic.is_none());
        // The rest of the body, then a continuation packet starting with 0x11.
        let rest = MAX_PAYLOAD + 4 - buf.len();
        let mut buf2 = vec![b'y'; rest];
        buf2.extend(pkt(1, b"\x11continuation"));
        let (fwd, ic) = s.scan(&buf2).unwrap();
        assert_eq!(fwd, buf2.len());
        assert!(ic.is_none());
        // After the short continuation, the next packet is a command again.
        let (fwd, ic) = s.scan(&pkt(0, b"\x11change")).unwrap();
        assert_eq!(fwd, 0);
        assert_eq!(ic.unwrap().command(), Command::ChangeUser);
    }

    #[test]
    fn scanner_stops_at_com_quit_after_a_query() {
        let mut s = Scanner::default();
        let mut buf = pkt(0, b"\x03SELECT 1");
        buf.extend(pkt(0, &[COM_QUIT]));
        let (fwd, ic) = s.scan(&buf).unwrap();
        assert_eq!(fwd, 13);
        let ic = ic.unwrap();
        assert_eq!(ic.total, 5);
        assert_eq!(ic.command(), Command::Quit);
    }

    #[test]
    fn scanner_waits_for_whole_headers() {
        let mut s = Scanner::default();
        assert_eq!(s.scan(&[5, 0]).unwrap().0, 0);
        assert_eq!(s.scan(&[5, 0, 0, 0]).unwrap().0, 0);
        assert_eq!(s.scan(&[5, 0, 0, 0, 3]).unwrap().0, 5);
    }

    #[test]
    fn oversized_intercepts_are_refused_and_garbage_never_panics() {
        let mut s = Scanner::default();
        let big = [0x00, 0x00, 0x02, 0x00, COM_INIT_DB];
        assert_eq!(s.scan(&big), Err(ScanError::Oversized { len: 0x20000 }));
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut s = Scanner::default();
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 48) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
            match s.scan(&bytes) {
                Ok((fwd, ic)) => {
                    assert!(fwd <= bytes.len());
                    if let Some(ic) = ic {
                        assert!(fwd + ic.total <= bytes.len());
                    }
                }
                Err(_) => s = Scanner::default(),
            }
        }
    }
}
