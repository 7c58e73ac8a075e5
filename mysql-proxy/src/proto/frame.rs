//! MySQL packet framing: a 3-byte little-endian payload length and a sequence id, then the
//! payload. A payload of exactly 0xFF_FFFF bytes means "more of this message follows" in
//! the next packet (sequence id one more), until a shorter one: the 16 MB continuation
//! rule. [`Decoder::decode`] joins such packets into one [`Packet`].

use bytes::{Buf, Bytes, BytesMut};

/// Bytes of a packet header.
pub const HEADER_LEN: usize = 4;

/// Largest payload of one physical packet; a payload this long continues in the next one.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// Longest packet accepted during login (handshake responses, auth data, a backend's
/// greeting and OK): anything larger is garbage or an attack.
pub const LOGIN_PACKET_LIMIT: usize = 64 * 1024;

/// One logical packet: the payloads of its physical packets joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The sequence id of the first physical packet.
    pub seq: u8,
    /// The sequence id of the last physical packet; an answer takes the one after it.
    pub last_seq: u8,
    pub payload: Bytes,
}

/// Input that is not a packet the decoder accepts; the stream cannot be resynchronized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload (continuations included) is longer than the decoder's limit.
    #[error("packet of {len} bytes is over the {limit}-byte limit")]
    TooLong { len: usize, limit: usize },
    /// A continuation packet whose sequence id does not follow the previous one.
    #[error("continuation packet with sequence id {got}, expected {expected}")]
    Sequence { expected: u8, got: u8 },
}

/// Decodes packets whose whole payload is at most `limit` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoder {
    limit: usize,
}

/// What the front of a buffer holds.
enum Scan {
    /// A whole packet in `bytes` bytes (headers included) of `parts` physical packets.
    Complete {
        bytes: usize,
        parts: usize,
        payload: usize,
        seq: u8,
        last_seq: u8,
    },
    /// Not yet: this many more bytes finish the current header or physical packet.
    Need(usize),
}

impl Decoder {
    /// A decoder refusing payloads over `limit` bytes.
    pub const fn new(limit: usize) -> Decoder {
        Decoder { limit }
    }

    /// The longest payload accepted.
    pub const fn limit(&self) -> usize {
        self.limit
    }

    fn scan(&self, src: &[u8]) -> Result<Scan, DecodeError> {
        let mut pos = 0usize;
        let mut payload = 0usize;
        let mut parts = 0usize;
        let mut first = None;
        loop {
            let Some(&[a, b, c, seq]) = src.get(pos..pos + HEADER_LEN) else {
                return Ok(Scan::Need(pos + HEADER_LEN - src.len()));
            };
            let len = usize::from(a) | usize::from(b) << 8 | usize::from(c) << 16;
            match first {
                None => first = Some(seq),
                Some(f) => {
                    let expected = f.wrapping_add(parts as u8);
                    if seq != expected {
                        return Err(DecodeError::Sequence { expected, got: seq });
                    }
                }
            }
            payload += len;
            if payload > self.limit {
                return Err(DecodeError::TooLong {
                    len: payload,
                    limit: self.limit,
                });
            }
            parts += 1;
            pos += HEADER_LEN + len;
            if src.len() < pos {
                return Ok(Scan::Need(pos - src.len()));
            }
            if len < MAX_PAYLOAD {
                return Ok(Scan::Complete {
                    bytes: pos,
                    parts,
                    payload,
                    seq: first.unwrap_or(seq),
                    last_seq: seq,
                });
            }
        }
    }

    /// Takes the next whole packet off the front of `src`; `Ok(None)` means more bytes are
    /// needed (nothing is consumed then).
    ///
    /// # Errors
    /// [`DecodeError`] as soon as a header shows the packet cannot be accepted, before its
    /// payload arrives: nothing is ever allocated for an over-limit length.
    pub fn decode(&self, src: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let (bytes, parts, payload, seq, last_seq) = match self.scan(src)? {
            Scan::Need(_) => return Ok(None),
            Scan::Complete {
                bytes,
                parts,
                payload,
                seq,
                last_seq,
            } => (bytes, parts, payload, seq, last_seq),
        };
        let mut whole = src.split_to(bytes);
        if parts == 1 {
            whole.advance(HEADER_LEN);
            return Ok(Some(Packet {
                seq,
                last_seq,
                payload: whole.freeze(),
            }));
        }
        let mut joined = BytesMut::with_capacity(payload);
        while whole.len() >= HEADER_LEN {
            let len = payload_len(&whole).min(whole.len() - HEADER_LEN);
            whole.advance(HEADER_LEN);
            joined.extend_from_slice(&whole.split_to(len));
        }
        Ok(Some(Packet {
            seq,
            last_seq,
            payload: joined.freeze(),
        }))
    }

    /// How many more bytes `decode` needs before it can return a packet or an error (0:
    /// call it now). A reader that reads exactly this much never takes bytes past the
    /// packet: what follows (a TLS ClientHello after an SSLRequest) stays in the socket.
    pub fn needed(&self, src: &[u8]) -> usize {
        match self.scan(src) {
            Ok(Scan::Need(n)) => n,
            Ok(Scan::Complete { .. }) | Err(_) => 0,
        }
    }
}

/// Appends `payload` as packets starting at sequence id `seq`, split by the continuation
/// rule; returns the sequence id of the last packet written.
pub fn encode(seq: u8, payload: &[u8], out: &mut Vec<u8>) -> u8 {
    out.reserve(payload.len() + HEADER_LEN);
    let mut seq = seq;
    let mut rest = payload;
    loop {
        let len = rest.len().min(MAX_PAYLOAD);
        let (part, tail) = rest.split_at(len);
        out.extend_from_slice(&[len as u8, (len >> 8) as u8, (len >> 16) as u8, seq]);
        out.extend_from_slice(part);
        rest = tail;
        if len < MAX_PAYLOAD {
            return seq;
        }
        seq = seq.wrapping_add(1);
    }
}

/// The payload length in a packet header (0 when `header` is shorter than 3 bytes).
pub fn payload_len(header: &[u8]) -> usize {
    match header {
        [a, b, c, ..] => usize::from(*a) | usize::from(*b) << 8 | usize::from(*c) << 16,
        _ => 0,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode(seq, payload, &mut v);
        v
    }

    #[test]
    fn frames_carry_length_and_seq() {
        assert_eq!(packet(3, b"abc"), [3, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(payload_len(&packet(3, b"abc")), 3);
    }

    #[test]
    fn decodes_byte_by_byte_and_needs_exactly_the_rest() {
        let d = Decoder::new(1024);
        let wire = [packet(7, b"hello"), packet(8, b"")].concat();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in &wire {
            assert!(d.needed(&buf) > 0);
            buf.extend_from_slice(&[b]);
            while let Some(p) = d.decode(&mut buf).unwrap() {
                got.push(p);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].seq, &got[0].payload[..]), (7, &b"hello"[..]));
        assert_eq!((got[1].seq, got[1].payload.len()), (8, 0));
        let mut buf = BytesMut::from(&wire[..2]);
        assert_eq!(d.needed(&buf), 2);
        buf.extend_from_slice(&wire[2..6]);
        assert_eq!(
            d.needed(&buf),
            3,
            "header read: the payload's remaining bytes"
        );
    }

    #[test]
    fn over_the_limit_is_refused_from_the_header_alone() {
        let d = Decoder::new(LOGIN_PACKET_LIMIT);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 1][..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(DecodeError::TooLong {
                len: MAX_PAYLOAD,
                limit: LOGIN_PACKET_LIMIT
            })
        );
        assert_eq!(d.needed(&buf), 0, "the error is known now");
    }

    #[test]
    fn continuation_packets_join_and_round_trip() {
        let big: Vec<u8> = (0..MAX_PAYLOAD + 10).map(|i| i as u8).collect();
        let wire = packet(250, &big);
        assert_eq!(wire.len(), big.len() + 2 * HEADER_LEN);
        let d = Decoder::new(32 << 20);
        let mut buf = BytesMut::from(&wire[..]);
        let p = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!((p.seq, p.last_seq), (250, 251));
        assert_eq!(&p.payload[..], &big[..]);
        assert!(buf.is_empty());
        // Exactly 16 MB: an empty packet ends it.
        let exact = vec![b'x'; MAX_PAYLOAD];
        let wire = packet(0, &exact);
        assert_eq!(wire.len(), MAX_PAYLOAD + 2 * HEADER_LEN);
        let p = d.decode(&mut BytesMut::from(&wire[..])).unwrap().unwrap();
        assert_eq!((p.payload.len(), p.last_seq), (MAX_PAYLOAD, 1));
        // Too long across continuations.
        let small = Decoder::new(MAX_PAYLOAD + 5);
        assert!(matches!(
            small.decode(&mut BytesMut::from(&packet(0, &big)[..])),
            Err(DecodeError::TooLong { .. })
        ));
    }

    #[test]
    fn continuations_must_follow_in_sequence() {
        let mut wire = packet(0, &vec![0u8; MAX_PAYLOAD + 1]);
        wire[MAX_PAYLOAD + HEADER_LEN + 3] = 9;
        let d = Decoder::new(32 << 20);
        assert_eq!(
            d.decode(&mut BytesMut::from(&wire[..])),
            Err(DecodeError::Sequence {
                expected: 1,
                got: 9
            })
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let d = Decoder::new(4096);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = d.needed(&buf);
            while let Ok(Some(_)) = d.decode(&mut buf) {}
        }
    }
}
