//! Replies the proxy makes itself (RESP2 or RESP3, as the client negotiated), and the
//! request encoding used towards backends.

use bytes::{BufMut, Bytes, BytesMut};

/// The protocol a client negotiated: RESP2 by default, RESP3 after `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2.
    #[default]
    Resp2,
    /// RESP3.
    Resp3,
}

fn write_int_line(out: &mut BytesMut, tag: u8, n: i64) {
    out.put_u8(tag);
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let neg = n < 0;
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        if let Some(slot) = tmp.get_mut(i) {
            *slot = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if neg {
        out.put_u8(b'-');
    }
    out.put_slice(tmp.get(i..).unwrap_or_default());
    out.put_slice(b"\r\n");
}

/// Strips `\r` and `\n`, which a simple string or error line cannot carry (redis replaces
/// them with spaces).
fn put_line(out: &mut BytesMut, s: &[u8]) {
    for &b in s {
        out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    out.put_slice(b"\r\n");
}

/// `+OK\r\n`-style simple string.
pub fn write_simple(out: &mut BytesMut, s: &str) {
    out.put_u8(b'+');
    put_line(out, s.as_bytes());
}

/// An error reply; `msg` starts with its code (`ERR ...`, `CROSSSLOT ...`).
pub fn write_error(out: &mut BytesMut, msg: &str) {
    out.put_u8(b'-');
    put_line(out, msg.as_bytes());
}

/// An error reply as bytes: `-<msg>\r\n`.
pub fn err_reply(msg: &str) -> Bytes {
    let mut out = BytesMut::new();
    write_error(&mut out, msg);
    out.freeze()
}

/// An integer reply as bytes: `:<n>\r\n`.
pub fn int_reply(n: i64) -> Bytes {
    let mut out = BytesMut::new();
    write_integer(&mut out, n);
    out.freeze()
}

/// `:<n>\r\n`.
pub fn write_integer(out: &mut BytesMut, n: i64) {
    write_int_line(out, b':', n);
}

/// `$<len>\r\n<data>\r\n`.
pub fn write_bulk(out: &mut BytesMut, data: &[u8]) {
    write_int_line(out, b'$', data.len() as i64);
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// The null reply: `$-1` in RESP2, `_` in RESP3.
pub fn write_null(out: &mut BytesMut, proto: Protocol) {
    match proto {
        Protocol::Resp2 => out.put_slice(b"$-1\r\n"),
        Protocol::Resp3 => out.put_slice(b"_\r\n"),
    }
}

/// The null array: `*-1` in RESP2, `_` in RESP3.
pub fn write_null_array(out: &mut BytesMut, proto: Protocol) {
    match proto {
        Protocol::Resp2 => out.put_slice(b"*-1\r\n"),
        Protocol::Resp3 => out.put_slice(b"_\r\n"),
    }
}

/// `*<n>\r\n`; the caller writes the `n` elements.
pub fn write_array_header(out: &mut BytesMut, n: usize) {
    write_int_line(out, b'*', n as i64);
}

/// A map of `pairs` key/value pairs: `%<n>` in RESP3, an array of `2n` in RESP2.
pub fn write_map_header(out: &mut BytesMut, pairs: usize, proto: Protocol) {
    match proto {
        Protocol::Resp2 => write_int_line(out, b'*', (pairs as i64).saturating_mul(2)),
        Protocol::Resp3 => write_int_line(out, b'%', pairs as i64),
    }
}

/// A set: `~<n>` in RESP3, an array in RESP2.
pub fn write_set_header(out: &mut BytesMut, n: usize, proto: Protocol) {
    let tag = if proto == Protocol::Resp3 { b'~' } else { b'*' };
    write_int_line(out, tag, n as i64);
}

/// A push message (pub/sub): `><n>` in RESP3, an array in RESP2.
pub fn write_push_header(out: &mut BytesMut, n: usize, proto: Protocol) {
    let tag = if proto == Protocol::Resp3 { b'>' } else { b'*' };
    write_int_line(out, tag, n as i64);
}

/// A boolean: `#t`/`#f` in RESP3, `:1`/`:0` in RESP2.
pub fn write_bool(out: &mut BytesMut, v: bool, proto: Protocol) {
    match proto {
        Protocol::Resp2 => write_integer(out, i64::from(v)),
        Protocol::Resp3 => out.put_slice(if v { b"#t\r\n" } else { b"#f\r\n" }),
    }
}

/// A double: `,<v>` in RESP3, a bulk string in RESP2 (`inf`, `-inf`, `nan` as redis
/// spells them).
pub fn write_double(out: &mut BytesMut, v: f64, proto: Protocol) {
    let text = if v.is_nan() {
        "nan".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        format!("{v}")
    };
    match proto {
        Protocol::Resp2 => write_bulk(out, text.as_bytes()),
        Protocol::Resp3 => {
            out.put_u8(b',');
            put_line(out, text.as_bytes());
        }
    }
}

/// Verbatim text (INFO): `=<len>\r\n<fmt>:<data>` in RESP3, a bulk string in RESP2.
/// `format` is three bytes such as `txt`.
pub fn write_verbatim(out: &mut BytesMut, format: &[u8; 3], data: &[u8], proto: Protocol) {
    match proto {
        Protocol::Resp2 => write_bulk(out, data),
        Protocol::Resp3 => {
            write_int_line(out, b'=', data.len() as i64 + 4);
            out.put_slice(format);
            out.put_u8(b':');
            out.put_slice(data);
            out.put_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl Fn(&mut BytesMut)) -> Vec<u8> {
        let mut out = BytesMut::new();
        f(&mut out);
        out.to_vec()
    }

    #[test]
    fn encoder() {
        use Protocol::*;
        assert_eq!(enc(|o| write_simple(o, "OK")), b"+OK\r\n");
        assert_eq!(enc(|o| write_error(o, "ERR a\r\nb")), b"-ERR a  b\r\n");
        assert_eq!(enc(|o| write_integer(o, -42)), b":-42\r\n");
        assert_eq!(
            enc(|o| write_integer(o, i64::MIN)),
            b":-9223372036854775808\r\n"
        );
        assert_eq!(enc(|o| write_integer(o, 0)), b":0\r\n");
        assert_eq!(enc(|o| write_bulk(o, b"a\r\n")), b"$3\r\na\r\n\r\n");
        assert_eq!(enc(|o| write_null(o, Resp2)), b"$-1\r\n");
        assert_eq!(enc(|o| write_null(o, Resp3)), b"_\r\n");
        assert_eq!(enc(|o| write_null_array(o, Resp2)), b"*-1\r\n");
        assert_eq!(enc(|o| write_array_header(o, 2)), b"*2\r\n");
        assert_eq!(enc(|o| write_map_header(o, 2, Resp2)), b"*4\r\n");
        assert_eq!(enc(|o| write_map_header(o, 2, Resp3)), b"%2\r\n");
        assert_eq!(enc(|o| write_set_header(o, 1, Resp3)), b"~1\r\n");
        assert_eq!(enc(|o| write_set_header(o, 1, Resp2)), b"*1\r\n");
        assert_eq!(enc(|o| write_push_header(o, 3, Resp3)), b">3\r\n");
        assert_eq!(enc(|o| write_push_header(o, 3, Resp2)), b"*3\r\n");
        assert_eq!(enc(|o| write_bool(o, true, Resp3)), b"#t\r\n");
        assert_eq!(enc(|o| write_bool(o, false, Resp2)), b":0\r\n");
        assert_eq!(enc(|o| write_double(o, 1.5, Resp3)), b",1.5\r\n");
        assert_eq!(enc(|o| write_double(o, f64::INFINITY, Resp3)), b",inf\r\n");
        assert_eq!(enc(|o| write_double(o, 3.0, Resp2)), b"$1\r\n3\r\n");
        assert_eq!(
            enc(|o| write_verbatim(o, b"txt", b"hi", Resp3)),
            b"=6\r\ntxt:hi\r\n"
        );
        assert_eq!(
            enc(|o| write_verbatim(o, b"txt", b"hi", Resp2)),
            b"$2\r\nhi\r\n"
        );
    }
}
