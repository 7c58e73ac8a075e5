//! Parsing queries.

use super::ecs::{Ecs, OPT_ECS};
use super::{rtype, HEADER_LEN};

/// Longest name in wire format (RFC 1035 2.3.4).
pub const MAX_NAME: usize = 255;
/// Compression pointers followed in one name before it is called a loop.
const MAX_POINTERS: usize = 32;

/// EDNS(0) as the client sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// The client's UDP payload size.
    pub udp_size: u16,
    /// The DNSSEC OK bit, echoed in the answer.
    pub dnssec_ok: bool,
    pub version: u8,
    /// The EDNS Client Subnet option (RFC 7871), the first one if several.
    pub ecs: Option<Ecs>,
}

/// A parsed query. The name is kept lowercased in wire format for lookups; the original
/// question bytes are at `question` in the request buffer.
#[derive(Clone)]
pub struct Query {
    pub id: u16,
    /// Header flags word of the request (RD, CD, ... are echoed from it).
    pub flags: u16,
    /// Lowercased name in wire format (labels, terminated by the root label).
    name: [u8; MAX_NAME],
    name_len: usize,
    pub qtype: u16,
    pub qclass: u16,
    /// Byte range of the whole question (name, type, class) in the request.
    pub question: std::ops::Range<usize>,
    /// Whether the question name used compression (then it cannot be copied verbatim).
    pub question_compressed: bool,
    pub edns: Option<Edns>,
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Query")
            .field("id", &self.id)
            .field("name", &display_name(self.name()))
            .field("qtype", &self.qtype)
            .field("qclass", &self.qclass)
            .field("edns", &self.edns)
            .finish()
    }
}

impl Query {
    /// The lowercased wire-format name.
    pub fn name(&self) -> &[u8] {
        &self.name[..self.name_len]
    }

    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xf) as u8
    }

    pub fn recursion_desired(&self) -> bool {
        self.flags & 0x0100 != 0
    }
}

/// Why a message is not a query we can answer normally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not even a header: nothing to answer.
    #[error("message shorter than a DNS header")]
    TooShort,
    /// A response (QR set): never answered, so reflection loops cannot form.
    #[error("message is a response")]
    NotAQuery,
    /// Malformed: answer FORMERR with this id and flags.
    #[error("malformed query: {reason}")]
    FormErr {
        id: u16,
        flags: u16,
        reason: &'static str,
    },
    /// An opcode other than QUERY: answer NOTIMP.
    #[error("opcode {opcode} not implemented")]
    NotImp { id: u16, flags: u16, opcode: u8 },
}

fn be16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]))
}

/// Reads a possibly compressed name starting at `start`; writes it lowercased into `out`.
/// Returns (bytes written to out, offset just past the name in `buf`, compressed?).
pub fn read_name(
    buf: &[u8],
    start: usize,
    out: &mut [u8; MAX_NAME],
) -> Result<(usize, usize, bool), &'static str> {
    let mut pos = start;
    let mut len = 0usize;
    let mut end = None;
    let mut pointers = 0;
    loop {
        let &b = buf.get(pos).ok_or("name runs past the message")?;
        match b & 0xC0 {
            0x00 => {
                let n = b as usize;
                if len + 1 + n > MAX_NAME {
                    return Err("name longer than 255 bytes");
                }
                let label = buf
                    .get(pos + 1..pos + 1 + n)
                    .ok_or("label runs past the message")?;
                out[len] = b;
                for (i, c) in label.iter().enumerate() {
                    out[len + 1 + i] = c.to_ascii_lowercase();
                }
                len += 1 + n;
                pos += 1 + n;
                if n == 0 {
                    return Ok((len, end.unwrap_or(pos), end.is_some()));
                }
            }
            0xC0 => {
                let target =
                    (be16(buf, pos).ok_or("pointer runs past the message")? & 0x3FFF) as usize;
                // Only backwards: a pointer to itself or forward could loop.
                if target >= pos {
                    return Err("compression pointer does not point backwards");
                }
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return Err("too many compression pointers");
                }
                if end.is_none() {
                    end = Some(pos + 2);
                }
                pos = target;
            }
            _ => return Err("unknown label type"),
        }
    }
}

/// Skips one resource record starting at `pos`; returns (type, class, ttl, rdata range, next).
fn read_rr(
    buf: &[u8],
    pos: usize,
) -> Result<(u16, u16, u32, std::ops::Range<usize>, usize), &'static str> {
    let mut scratch = [0u8; MAX_NAME];
    let (_, after, _) = read_name(buf, pos, &mut scratch)?;
    let fixed = buf
        .get(after..after + 10)
        .ok_or("record header runs past the message")?;
    let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let class = u16::from_be_bytes([fixed[2], fixed[3]]);
    let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
    let rdata = after + 10..after + 10 + rdlen;
    if rdata.end > buf.len() {
        return Err("record data runs past the message");
    }
    Ok((rtype, class, ttl, rdata.clone(), rdata.end))
}

/// Parses a query: exactly one question, no answer or authority records, at most one OPT.
pub fn parse(buf: &[u8]) -> Result<Query, ParseError> {
    if buf.len() < HEADER_LEN {
        return Err(ParseError::TooShort);
    }
    let id = u16::from_be_bytes([buf[0], buf[1]]);
    let flags = u16::from_be_bytes([buf[2], buf[3]]);
    if flags & 0x8000 != 0 {
        return Err(ParseError::NotAQuery);
    }
    let form = |reason| ParseError::FormErr { id, flags, reason };
    let opcode = ((flags >> 11) & 0xf) as u8;
    if opcode != 0 {
        return Err(ParseError::NotImp { id, flags, opcode });
    }
    let qd = u16::from_be_bytes([buf[4], buf[5]]);
    let an = u16::from_be_bytes([buf[6], buf[7]]);
    let ns = u16::from_be_bytes([buf[8], buf[9]]);
    let ar = u16::from_be_bytes([buf[10], buf[11]]);
    if qd != 1 {
        return Err(form("a query has exactly one question"));
    }
    if an != 0 || ns != 0 {
        return Err(form("a query has no answer or authority records"));
    }
    let mut name = [0u8; MAX_NAME];
    let (name_len, after, compressed) = read_name(buf, HEADER_LEN, &mut name).map_err(form)?;
    let qtype = be16(buf, after).ok_or(form("question runs past the message"))?;
    let qclass = be16(buf, after + 2).ok_or(form("question runs past the message"))?;
    let question = HEADER_LEN..after + 4;
    let mut pos = question.end;
    let mut edns = None;
    for _ in 0..ar {
        let (rt, class, ttl, rdata, next) = read_rr(buf, pos).map_err(form)?;
        if rt == rtype::OPT {
            if edns.is_some() {
                return Err(form("more than one OPT record"));
            }
            // The OPT owner must be the root name.
            if buf.get(pos) != Some(&0) {
                return Err(form("OPT record not owned by the root"));
            }
            // Client subnet is read (RFC 7871; a malformed one is FORMERR); other options
            // (cookies, padding) are ignored (RFC 6891 6.1.2): only their framing is checked.
            let mut o = rdata.start;
            let mut ecs = None;
            while o < rdata.end {
                let code = be16(buf, o).ok_or(form("EDNS option header truncated"))?;
                let olen = be16(buf, o + 2).ok_or(form("EDNS option header truncated"))? as usize;
                if code == OPT_ECS && ecs.is_none() {
                    let data = buf
                        .get(o + 4..o + 4 + olen)
                        .filter(|_| o + 4 + olen <= rdata.end)
                        .ok_or(form("EDNS option runs past its record"))?;
                    ecs = Some(Ecs::parse(data).map_err(form)?);
                }
                o += 4 + olen;
            }
            if o != rdata.end {
                return Err(form("EDNS option runs past its record"));
            }
            edns = Some(Edns {
                udp_size: class,
                dnssec_ok: ttl & 0x8000 != 0,
                version: ((ttl >> 16) & 0xff) as u8,
                ecs,
            });
        }
        pos = next;
    }
    Ok(Query {
        id,
        flags,
        name,
        name_len,
        qtype,
        qclass,
        question,
        question_compressed: compressed,
        edns,
    })
}

/// A wire-format name as dotted text (`web.mesos.`), for logs and errors.
pub fn display_name(wire: &[u8]) -> String {
    let mut out = String::new();
    let mut pos = 0;
    while let Some(&n) = wire.get(pos) {
        if n == 0 {
            break;
        }
        let label = wire.get(pos + 1..pos + 1 + n as usize).unwrap_or(&[]);
        for &c in label {
            if c.is_ascii_graphic() && c != b'.' && c != b'\\' {
                out.push(c as char);
            } else {
                out.push_str(&format!("\\{c:03}"));
            }
        }
        out.push('.');
        pos += 1 + n as usize;
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::encode::{name_to_wire, Writer};

    fn query(name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut w = Writer::new();
        w.u16(0x1234);
        w.u16(0x0100);
        w.u16(1);
        w.u16(0);
        w.u16(0);
        w.u16(u16::from(edns.is_some()));
        w.bytes(&name_to_wire(name).unwrap());
        w.u16(qtype);
        w.u16(1);
        if let Some(size) = edns {
            w.bytes(&[0, 0, 41]);
            w.u16(size);
            w.bytes(&[0, 0, 0x80, 0, 0, 0]);
        }
        w.into_vec()
    }

    #[test]
    fn parses_a_query_lowercasing_the_name() {
        let q = parse(&query("WeB.Marathon.mesos.", rtype::A, None)).unwrap();
        assert_eq!(q.id, 0x1234);
        assert!(q.recursion_desired());
        assert_eq!(display_name(q.name()), "web.marathon.mesos.");
        assert_eq!(q.qtype, rtype::A);
        assert!(q.edns.is_none());
        let q = parse(&query("a.mesos.", rtype::SRV, Some(4096))).unwrap();
        assert_eq!(
            q.edns,
            Some(Edns {
                udp_size: 4096,
                dnssec_ok: true,
                version: 0,
                ecs: None,
            })
        );
    }

    /// A query for `a.mesos.` A whose OPT carries `option` (code, data).
    fn with_option(code: u16, data: &[u8]) -> Vec<u8> {
        let mut q = query("a.mesos.", rtype::A, None);
        q[11] = 1; // ARCOUNT
        q.push(0);
        q.extend_from_slice(&rtype::OPT.to_be_bytes());
        q.extend_from_slice(&1232u16.to_be_bytes());
        q.extend_from_slice(&[0, 0, 0, 0]);
        q.extend_from_slice(&((4 + data.len()) as u16).to_be_bytes());
        q.extend_from_slice(&code.to_be_bytes());
        q.extend_from_slice(&(data.len() as u16).to_be_bytes());
        q.extend_from_slice(data);
        q
    }

    #[test]
    fn client_subnet_is_read_and_malformed_ones_are_form_errors() {
        // 10.20.30.0/24, with a stray bit past the prefix that is cleared.
        let q = parse(&with_option(OPT_ECS, &[0, 1, 24, 0, 10, 20, 30])).unwrap();
        let ecs = q.edns.unwrap().ecs.unwrap();
        assert_eq!((ecs.family, ecs.source_len), (1, 24));
        assert_eq!(ecs.addr, "10.20.30.0".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(ecs.addr_bytes(), vec![10, 20, 30]);
        let q = parse(&with_option(OPT_ECS, &[0, 1, 20, 0, 10, 20, 31])).unwrap();
        assert_eq!(q.edns.unwrap().ecs.unwrap().addr.to_string(), "10.20.16.0");
        let q = parse(&with_option(
            OPT_ECS,
            &[0, 2, 48, 0, 0x20, 1, 0xd, 0xb8, 0, 1],
        ))
        .unwrap();
        assert_eq!(
            q.edns.unwrap().ecs.unwrap().addr.to_string(),
            "2001:db8:1::"
        );
        // Family 0 source 0: the resolver hides the client; a zero-length address.
        assert!(parse(&with_option(OPT_ECS, &[0, 3, 0, 0])).is_err());
        for bad in [
            &[0, 1, 24][..],                   // shorter than 4 bytes
            &[0, 1, 33, 0, 1, 2, 3, 4, 5][..], // prefix longer than IPv4
            &[0, 1, 24, 0, 10, 20][..],        // address shorter than the prefix
            &[0, 1, 8, 0, 10, 20][..],         // longer
        ] {
            assert!(
                matches!(
                    parse(&with_option(OPT_ECS, bad)),
                    Err(ParseError::FormErr { .. })
                ),
                "{bad:?}"
            );
        }
        // Other options are skipped.
        assert!(parse(&with_option(10, &[1, 2, 3, 4, 5, 6, 7, 8]))
            .unwrap()
            .edns
            .unwrap()
            .ecs
            .is_none());
    }

    #[test]
    fn malformed_queries_are_form_errors_not_panics() {
        assert_eq!(parse(&[0; 5]).unwrap_err(), ParseError::TooShort);
        let good = query("a.mesos.", rtype::A, None);
        // Every truncation of a valid query is handled.
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
        }
        // Two questions.
        let mut two = good.clone();
        two[5] = 2;
        assert!(matches!(parse(&two), Err(ParseError::FormErr { .. })));
        // A compression loop: the name is a pointer to itself.
        let mut lp = good[..12].to_vec();
        lp.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert!(matches!(
            parse(&lp),
            Err(ParseError::FormErr {
                reason: "compression pointer does not point backwards",
                ..
            })
        ));
        // 300 labels.
        let mut long = good[..12].to_vec();
        for _ in 0..300 {
            long.extend_from_slice(&[1, b'a']);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(matches!(
            parse(&long),
            Err(ParseError::FormErr {
                reason: "name longer than 255 bytes",
                ..
            })
        ));
        // A response is never answered.
        let mut resp = good.clone();
        resp[2] |= 0x80;
        assert_eq!(parse(&resp).unwrap_err(), ParseError::NotAQuery);
        // NOTIFY.
        let mut notify = good;
        notify[2] = 0x20;
        assert!(matches!(
            parse(&notify),
            Err(ParseError::NotImp { opcode: 4, .. })
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9E3779B97F4A7C15;
        for _ in 0..20_000 {
            let len = (x % 80) as usize;
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            if buf.len() > 2 {
                buf[2] &= 0x07; // mostly queries, opcode 0
            }
            let _ = parse(&buf);
        }
    }
}
