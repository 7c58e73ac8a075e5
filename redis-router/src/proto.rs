//! The RESP codec: client requests (RESP2/RESP3 multibulk and inline commands), replies the
//! proxy makes itself, and a check-only parser for backend replies.
//!
//! Synchronous, no IO, total: every function here returns an error or `None` ("need more
//! bytes") on any input and never panics. Every length read off the wire is checked against
//! [`Limits`] before anything is allocated from it.
//!
//! Requests follow redis's `processMultibulkBuffer` and `processInlineBuffer`
//! (networking.c): the same accepted inputs, the same error strings. Redis closes the
//! connection after any protocol error (the stream cannot be resynchronized), and so must
//! the caller after a [`DecodeError`].

use bytes::{BufMut, Bytes, BytesMut};

/// Bounds checked on client requests before allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string argument, in bytes (redis: `proto-max-bulk-len`, 512 MB).
    pub max_bulk_len: usize,
    /// Most arguments in one multibulk request. Redis itself allows up to `INT_MAX`; a
    /// proxy buffers whole requests, so the default is 1,048,576.
    pub max_array_len: usize,
    /// Longest inline command line and longest `*<count>` / `$<len>` header, in bytes
    /// (redis: `PROTO_INLINE_MAX_SIZE`, 64 KB).
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_array_len: 1024 * 1024,
            max_inline_len: 64 * 1024,
        }
    }
}

/// Arguments preallocated for a multibulk request at most, whatever its header claims
/// (redis does the same: `min(multibulklen, 1024)`).
const PREALLOC_ARGS: usize = 1024;

/// One client command: its arguments, each a slice of the input buffer (no copy), except
/// inline arguments that needed unescaping.
#[derive(Debug, Clone, Eq)]
pub struct Request {
    /// The command name followed by its arguments; never empty.
    pub args: Vec<Bytes>,
    /// Whether it came as an inline command rather than a multibulk array.
    pub inline: bool,
    /// The request's own bytes when they are canonical RESP (a multibulk array whose
    /// payloads all end in CRLF), so it can be forwarded without re-encoding.
    pub raw: Option<Bytes>,
}

/// Equal when the arguments and the form are; `raw` is a cache of the bytes.
impl PartialEq for Request {
    fn eq(&self, other: &Request) -> bool {
        self.args == other.args && self.inline == other.inline
    }
}

impl Request {
    /// Builds a request from arguments (for tests and for commands the proxy makes).
    pub fn new<I, A>(args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<Bytes>,
    {
        Request {
            args: args.into_iter().map(Into::into).collect(),
            inline: false,
            raw: None,
        }
    }

    /// The command name as sent (any case).
    pub fn name(&self) -> &[u8] {
        self.args.first().map_or(&[][..], |a| &a[..])
    }

    /// Encodes the request as a RESP array of bulk strings (how it is sent to a backend).
    pub fn encode(&self, out: &mut BytesMut) {
        write_array_header(out, self.args.len());
        for a in &self.args {
            write_bulk(out, a);
        }
    }
}

/// A client sent something redis would refuse; reply with [`DecodeError::reply`] and close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// An inline line longer than [`Limits::max_inline_len`].
    #[error("ERR Protocol error: too big inline request")]
    TooBigInline,
    /// Inline quoting that `sdssplitargs` refuses.
    #[error("ERR Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A `*<count>` line longer than [`Limits::max_inline_len`].
    #[error("ERR Protocol error: too big mbulk count string")]
    TooBigMbulkCount,
    /// A `*<count>` that is not a number or exceeds [`Limits::max_array_len`].
    #[error("ERR Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// A `$<len>` line longer than [`Limits::max_inline_len`].
    #[error("ERR Protocol error: too big bulk count string")]
    TooBigBulkCount,
    /// An array element that is not a bulk string.
    #[error("ERR Protocol error: expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    /// A `$<len>` that is not a number, is negative or exceeds [`Limits::max_bulk_len`].
    #[error("ERR Protocol error: invalid bulk length")]
    InvalidBulkLength,
}

impl DecodeError {
    /// The complete RESP error reply to send before closing (`-ERR Protocol error: ...\r\n`).
    ///
    /// For [`DecodeError::ExpectedBulk`] the offending byte is sent raw, as redis's `%c`
    /// does (the `Display` text renders a non-ASCII byte as a Latin-1 character instead).
    pub fn reply(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            DecodeError::ExpectedBulk(b) => {
                // CR/LF become spaces, as in redis's addReplyErrorFormat.
                let shown = if matches!(b, b'\r' | b'\n') { b' ' } else { *b };
                out.put_slice(b"-ERR Protocol error: expected '$', got '");
                out.put_u8(shown);
                out.put_slice(b"'\r\n");
            }
            other => write_error(&mut out, &other.to_string()),
        }
        out.freeze()
    }
}

/// Decodes one request from the front of `buf`, removing its bytes.
///
/// Returns `Ok(None)` when `buf` holds no complete request yet (nothing is consumed then).
/// Empty requests (`*0`, `*-1`, blank inline lines) are consumed and skipped, as redis does.
///
/// # Errors
/// A [`DecodeError`] with redis's message; the connection must be closed after replying.
///
/// Stateless: an incomplete request is rescanned from its start on the next call. A
/// connection should keep a [`Decoder`], which resumes instead.
pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Request>, DecodeError> {
    Decoder::new().decode(buf, limits)
}

/// A resumable [`decode`]: remembers the arguments already found in an incomplete
/// multibulk request, so a big request arriving in many reads is scanned once.
///
/// Contract: between calls `buf` may only grow at its end (the connection appends reads);
/// the decoder removes a request's bytes when it returns it. After an error, close the
/// connection.
#[derive(Debug, Default)]
pub struct Decoder {
    partial: Option<Partial>,
}

/// Progress through an incomplete multibulk request.
#[derive(Debug)]
struct Partial {
    count: usize,
    /// Where the next argument's `$` is.
    pos: usize,
    ranges: Vec<(usize, usize)>,
}

impl Decoder {
    /// A decoder at the start of a request.
    pub fn new() -> Self {
        Decoder::default()
    }

    /// As [`decode`], resuming a partially scanned request.
    ///
    /// # Errors
    /// As [`decode`].
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Request>, DecodeError> {
        loop {
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            let parsed = if first == b'*' {
                decode_multibulk(buf, limits, &mut self.partial)
            } else {
                decode_inline(buf, limits)
            };
            match parsed {
                Err(e) => {
                    self.partial = None;
                    return Err(e);
                }
                Ok(Parsed::Incomplete) => return Ok(None),
                Ok(Parsed::Empty) => continue,
                Ok(Parsed::Request(r)) => return Ok(Some(r)),
            }
        }
    }
}

enum Parsed {
    Incomplete,
    Empty,
    Request(Request),
}

/// Parses a decimal `i64` the way redis's `string2ll` does: optional `-`, no `+`, no
/// leading zeros, no spaces, not empty.
fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || (digits.len() > 1 && digits.first() == Some(&b'0')) {
        return None;
    }
    if neg && digits == b"0" {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        v = if neg {
            v.checked_mul(10)?.checked_sub(d)?
        } else {
            v.checked_mul(10)?.checked_add(d)?
        };
    }
    Some(v)
}

/// Finds the `\r` ending a header line starting at `start`; `Ok(None)` when it is not all
/// there yet (the `\n` after `\r` must be buffered too, as in redis).
fn header_line(
    buf: &[u8],
    start: usize,
    max: usize,
    too_big: DecodeError,
) -> Result<Option<usize>, DecodeError> {
    let rest = buf.get(start..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\r') {
        None => {
            if rest.len() > max {
                Err(too_big)
            } else {
                Ok(None)
            }
        }
        Some(cr) if cr > max => Err(too_big),
        // Redis requires the byte after `\r` to be buffered but does not check it.
        Some(cr) if cr + 2 > rest.len() => Ok(None),
        Some(cr) => Ok(Some(start + cr)),
    }
}

fn decode_multibulk(
    buf: &mut BytesMut,
    limits: &Limits,
    partial: &mut Option<Partial>,
) -> Result<Parsed, DecodeError> {
    let (count, mut pos, mut ranges) = match partial.take() {
        Some(p) => (p.count, p.pos, p.ranges),
        None => {
            let Some(cr) =
                header_line(buf, 0, limits.max_inline_len, DecodeError::TooBigMbulkCount)?
            else {
                return Ok(Parsed::Incomplete);
            };
            let count = parse_i64(buf.get(1..cr).unwrap_or_default())
                .ok_or(DecodeError::InvalidMultibulkLength)?;
            if count > i64::from(i32::MAX) || count > limits.max_array_len as i64 {
                return Err(DecodeError::InvalidMultibulkLength);
            }
            let pos = cr + 2;
            if count <= 0 {
                let _ = buf.split_to(pos);
                return Ok(Parsed::Empty);
            }
            let count = count as usize;
            (count, pos, Vec::with_capacity(count.min(PREALLOC_ARGS)))
        }
    };
    macro_rules! incomplete {
        () => {{
            *partial = Some(Partial { count, pos, ranges });
            return Ok(Parsed::Incomplete);
        }};
    }
    while ranges.len() < count {
        let Some(&tag) = buf.get(pos) else {
            incomplete!();
        };
        if tag != b'$' {
            return Err(DecodeError::ExpectedBulk(tag));
        }
        let Some(cr) = header_line(
            buf,
            pos,
            limits.max_inline_len,
            DecodeError::TooBigBulkCount,
        )?
        else {
            incomplete!();
        };
        let len = parse_i64(buf.get(pos + 1..cr).unwrap_or_default())
            .ok_or(DecodeError::InvalidBulkLength)?;
        if len < 0 || len as u64 > limits.max_bulk_len as u64 {
            return Err(DecodeError::InvalidBulkLength);
        }
        let start = cr + 2;
        let end = start + len as usize;
        // Like redis, the two bytes after the payload are skipped, not checked.
        if buf.len() < end + 2 {
            incomplete!();
        }
        ranges.push((start, end));
        pos = end + 2;
    }
    let canonical = ranges
        .iter()
        .all(|&(_, e)| buf.get(e..e + 2) == Some(b"\r\n".as_slice()));
    let frame = buf.split_to(pos).freeze();
    let args = ranges.into_iter().map(|(s, e)| frame.slice(s..e)).collect();
    Ok(Parsed::Request(Request {
        args,
        inline: false,
        raw: canonical.then_some(frame),
    }))
}

fn decode_inline(buf: &mut BytesMut, limits: &Limits) -> Result<Parsed, DecodeError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_inline_len {
            return Err(DecodeError::TooBigInline);
        }
        return Ok(Parsed::Incomplete);
    };
    if nl > limits.max_inline_len {
        return Err(DecodeError::TooBigInline);
    }
    let line_end = if nl > 0 && buf.get(nl - 1) == Some(&b'\r') {
        nl - 1
    } else {
        nl
    };
    let frame = buf.split_to(nl + 1).freeze();
    let args = split_args(&frame, line_end)?;
    if args.is_empty() {
        return Ok(Parsed::Empty);
    }
    Ok(Parsed::Request(Request {
        args,
        inline: true,
        raw: None,
    }))
}

/// C's `isspace` in the "C" locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits `frame[..end]` into arguments exactly as redis's `sdssplitargs`: whitespace
/// separates arguments; `"..."` understands `\xHH`, `\n`, `\r`, `\t`, `\b`, `\a` and `\<c>`;
/// `'...'` understands `\'`; a closing quote must be followed by whitespace or the end. A
/// NUL byte ends the line (redis works on a C string). Unquoted arguments and quoted ones
/// without escapes are slices of `frame`.
pub fn split_args(frame: &Bytes, end: usize) -> Result<Vec<Bytes>, DecodeError> {
    let line = frame.get(..end).unwrap_or_default();
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => line.get(..nul).unwrap_or_default(),
        None => line,
    };
    let at = |i: usize| line.get(i).copied();
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while at(p).is_some_and(is_space) {
            p += 1;
        }
        let Some(c) = at(p) else {
            return Ok(args);
        };
        match c {
            b'"' => {
                p += 1;
                let start = p;
                let mut owned: Option<Vec<u8>> = None;
                loop {
                    match at(p) {
                        None => return Err(DecodeError::UnbalancedQuotes),
                        Some(b'"') => {
                            if at(p + 1).is_some_and(|b| !is_space(b)) {
                                return Err(DecodeError::UnbalancedQuotes);
                            }
                            args.push(match owned {
                                Some(v) => Bytes::from(v),
                                None => frame.slice(start..p),
                            });
                            p += 1;
                            break;
                        }
                        Some(b'\\') if at(p + 1).is_some() => {
                            let v = owned.get_or_insert_with(|| {
                                line.get(start..p).unwrap_or_default().to_vec()
                            });
                            let hex = match (
                                at(p + 1),
                                at(p + 2).and_then(hex_val),
                                at(p + 3).and_then(hex_val),
                            ) {
                                (Some(b'x'), Some(h), Some(l)) => Some(h * 16 + l),
                                _ => None,
                            };
                            if let Some(byte) = hex {
                                v.push(byte);
                                p += 4;
                            } else {
                                let e = at(p + 1).unwrap_or(b'\\');
                                v.push(match e {
                                    b'n' => b'\n',
                                    b'r' => b'\r',
                                    b't' => b'\t',
                                    b'b' => 0x08,
                                    b'a' => 0x07,
                                    other => other,
                                });
                                p += 2;
                            }
                        }
                        Some(b) => {
                            if let Some(v) = owned.as_mut() {
                                v.push(b);
                            }
                            p += 1;
                        }
                    }
                }
            }
            b'\'' => {
                p += 1;
                let start = p;
                let mut owned: Option<Vec<u8>> = None;
                loop {
                    match at(p) {
                        None => return Err(DecodeError::UnbalancedQuotes),
                        Some(b'\\') if at(p + 1) == Some(b'\'') => {
                            owned
                                .get_or_insert_with(|| {
                                    line.get(start..p).unwrap_or_default().to_vec()
                                })
                                .push(b'\'');
                            p += 2;
                        }
                        Some(b'\'') => {
                            if at(p + 1).is_some_and(|b| !is_space(b)) {
                                return Err(DecodeError::UnbalancedQuotes);
                            }
                            args.push(match owned {
                                Some(v) => Bytes::from(v),
                                None => frame.slice(start..p),
                            });
                            p += 1;
                            break;
                        }
                        Some(b) => {
                            if let Some(v) = owned.as_mut() {
                                v.push(b);
                            }
                            p += 1;
                        }
                    }
                }
            }
            _ => {
                // Unquoted: ends at ' ', '\n', '\r', '\t' (not at '\v' or '\f', as in
                // redis); a quote inside starts a quoted part of the same argument.
                let start = p;
                let mut owned: Option<Vec<u8>> = None;
                let mut quote_seen = false;
                while let Some(b) = at(p) {
                    if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                        break;
                    }
                    if b == b'"' || b == b'\'' {
                        quote_seen = true;
                        break;
                    }
                    p += 1;
                }
                if quote_seen {
                    // Rare: `foo"bar"` continues in quotes. Reparse this argument slowly.
                    let mut v = line.get(start..p).unwrap_or_default().to_vec();
                    p = split_mixed(line, p, &mut v)?;
                    owned = Some(v);
                }
                args.push(match owned {
                    Some(v) => Bytes::from(v),
                    None => frame.slice(start..p),
                });
            }
        }
    }
}

/// The general `sdssplitargs` state machine for one argument starting (or continuing) at
/// `p`; returns the position after it.
fn split_mixed(line: &[u8], mut p: usize, cur: &mut Vec<u8>) -> Result<usize, DecodeError> {
    let at = |i: usize| line.get(i).copied();
    let (mut inq, mut insq) = (false, false);
    loop {
        let c = at(p);
        if inq {
            match c {
                None => return Err(DecodeError::UnbalancedQuotes),
                Some(b'\\')
                    if at(p + 1) == Some(b'x')
                        && at(p + 2).and_then(hex_val).is_some()
                        && at(p + 3).and_then(hex_val).is_some() =>
                {
                    let h = at(p + 2).and_then(hex_val).unwrap_or(0);
                    let l = at(p + 3).and_then(hex_val).unwrap_or(0);
                    cur.push(h * 16 + l);
                    p += 3;
                }
                Some(b'\\') if at(p + 1).is_some() => {
                    p += 1;
                    cur.push(match at(p).unwrap_or(b'\\') {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                }
                Some(b'"') => {
                    if at(p + 1).is_some_and(|b| !is_space(b)) {
                        return Err(DecodeError::UnbalancedQuotes);
                    }
                    return Ok(p + 1);
                }
                Some(b) => cur.push(b),
            }
        } else if insq {
            match c {
                None => return Err(DecodeError::UnbalancedQuotes),
                Some(b'\\') if at(p + 1) == Some(b'\'') => {
                    p += 1;
                    cur.push(b'\'');
                }
                Some(b'\'') => {
                    if at(p + 1).is_some_and(|b| !is_space(b)) {
                        return Err(DecodeError::UnbalancedQuotes);
                    }
                    return Ok(p + 1);
                }
                Some(b) => cur.push(b),
            }
        } else {
            match c {
                None | Some(b' ' | b'\n' | b'\r' | b'\t') => return Ok(p),
                Some(b'"') => inq = true,
                Some(b'\'') => insq = true,
                Some(b) => cur.push(b),
            }
        }
        p += 1;
    }
}

// ---------------------------------------------------------------------------------------
// Replies the proxy makes itself.

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

// ---------------------------------------------------------------------------------------
// Backend replies: check only, so they can be relayed byte for byte.

/// Bounds on backend replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLimits {
    /// Longest bulk/verbatim/blob error payload.
    pub max_bulk_len: usize,
    /// Longest simple line (simple string, error, integer, double, big number, headers).
    pub max_line_len: usize,
    /// Deepest aggregate nesting.
    pub max_depth: usize,
}

impl Default for ReplyLimits {
    fn default() -> Self {
        ReplyLimits {
            max_bulk_len: 512 * 1024 * 1024,
            max_line_len: 1024 * 1024,
            max_depth: 128,
        }
    }
}

/// A backend sent something that is not RESP; the backend connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// An unknown type byte.
    #[error("invalid RESP type byte 0x{0:02x} at offset {1}")]
    InvalidType(u8, usize),
    /// A length or count that is not a number or is out of range.
    #[error("invalid RESP length at offset {0}")]
    InvalidLength(usize),
    /// A line longer than [`ReplyLimits::max_line_len`].
    #[error("RESP line too long at offset {0}")]
    LineTooLong(usize),
    /// A payload longer than [`ReplyLimits::max_bulk_len`].
    #[error("RESP bulk too long at offset {0}")]
    BulkTooLong(usize),
    /// Nesting deeper than [`ReplyLimits::max_depth`].
    #[error("RESP nesting deeper than {0}")]
    TooDeep(usize),
    /// A missing `\r\n`.
    #[error("RESP missing CRLF at offset {0}")]
    MissingCrlf(usize),
    /// A malformed boolean or streaming element.
    #[error("malformed RESP value at offset {0}")]
    Malformed(usize),
}

/// One open aggregate while checking a reply.
#[derive(Debug, Clone, Copy)]
enum Open {
    /// Elements still expected; `attribute` when it is an attribute map, which does not
    /// count as an element of its parent.
    Count { left: u64, attribute: bool },
    /// A streamed aggregate (`*?`), ended by `.\r\n`.
    Streamed,
}

/// Reads a line starting at `start`; returns (content end, next position).
fn reply_line(buf: &[u8], start: usize, max: usize) -> Result<Option<(usize, usize)>, ReplyError> {
    let rest = buf.get(start..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\r') {
        None if rest.len() > max => Err(ReplyError::LineTooLong(start)),
        None => Ok(None),
        Some(cr) if cr > max => Err(ReplyError::LineTooLong(start)),
        Some(cr) => match rest.get(cr + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((start + cr, start + cr + 2))),
            Some(_) => Err(ReplyError::MissingCrlf(start + cr)),
        },
    }
}

/// A resumable [`decode_reply`]: remembers how far it got in an incomplete reply, so a big
/// reply arriving in many reads is scanned once, not once per read.
///
/// Contract: between calls the buffer may only grow at its end; after `Ok(Some(n))` the
/// caller removes the first `n` bytes and the scanner starts afresh. After an error, drop
/// the connection (and the scanner, or call [`ReplyScanner::reset`]).
#[derive(Debug, Default, Clone)]
pub struct ReplyScanner {
    /// Where the next unscanned element starts.
    pos: usize,
    /// Aggregates open at `pos`.
    stack: Vec<Open>,
}

impl ReplyScanner {
    /// A scanner at the start of a reply.
    pub fn new() -> Self {
        ReplyScanner::default()
    }

    /// Forgets any partial progress.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.stack.clear();
    }

    /// As [`decode_reply`], resuming where the previous `Ok(None)` stopped.
    ///
    /// # Errors
    /// As [`decode_reply`].
    pub fn check(&mut self, buf: &[u8], limits: &ReplyLimits) -> Result<Option<usize>, ReplyError> {
        let result = scan_reply(buf, limits, self);
        if !matches!(result, Ok(None)) {
            self.reset();
        }
        result
    }
}

/// Checks that `buf` starts with one complete reply and returns its length, so the caller
/// can `split_to` it and relay the bytes unchanged. `Ok(None)`: not complete yet.
///
/// Understands RESP2 and RESP3: `+ - : $ *` and `_ , # ! = ( % ~ | >`, attributes (which
/// precede the reply they annotate and are included in its range), and streamed strings
/// (`$?` with `;` chunks) and aggregates (`*?`, `%?`, `~?`, `>?` ended by `.`).
///
/// # Errors
/// A [`ReplyError`] when the bytes are not RESP or break a [`ReplyLimits`] bound.
pub fn decode_reply(buf: &[u8], limits: &ReplyLimits) -> Result<Option<usize>, ReplyError> {
    scan_reply(buf, limits, &mut ReplyScanner::new())
}

fn scan_reply(
    buf: &[u8],
    limits: &ReplyLimits,
    state: &mut ReplyScanner,
) -> Result<Option<usize>, ReplyError> {
    let mut stack = std::mem::take(&mut state.stack);
    let mut pos = state.pos;
    // An incomplete element: resume at its start next time.
    macro_rules! line {
        ($l:lifetime, $resume:expr, $at:expr) => {
            match reply_line(buf, $at, limits.max_line_len)? {
                Some(v) => v,
                None => break $l $resume,
            }
        };
    }
    let resume_at = 'scan: loop {
        let Some(&tag) = buf.get(pos) else {
            break 'scan pos;
        };
        let start = pos;
        // `true` when one element was completed at this step.
        let mut done = true;
        match tag {
            b'+' | b'-' | b':' | b'(' | b',' => {
                let (end, next) = line!('scan, start, pos + 1);
                let body = buf.get(pos + 1..end).unwrap_or_default();
                if tag == b':' && parse_i64(body).is_none() {
                    return Err(ReplyError::InvalidLength(start));
                }
                pos = next;
            }
            b'_' => {
                let (end, next) = line!('scan, start, pos + 1);
                if end != pos + 1 {
                    return Err(ReplyError::Malformed(start));
                }
                pos = next;
            }
            b'#' => {
                let (end, next) = line!('scan, start, pos + 1);
                if !matches!(buf.get(pos + 1..end), Some(b"t" | b"f")) {
                    return Err(ReplyError::Malformed(start));
                }
                pos = next;
            }
            b'$' | b'!' | b'=' => {
                let (end, next) = line!('scan, start, pos + 1);
                let body = buf.get(pos + 1..end).unwrap_or_default();
                if tag == b'$' && body == b"?" {
                    // Streamed string: `;<len>\r\n<data>\r\n` chunks until `;0\r\n`.
                    pos = next;
                    loop {
                        match buf.get(pos) {
                            None => break 'scan start,
                            Some(b';') => {}
                            Some(_) => return Err(ReplyError::Malformed(pos)),
                        }
                        let (end, next) = line!('scan, start, pos + 1);
                        let len = parse_i64(buf.get(pos + 1..end).unwrap_or_default())
                            .filter(|&n| n >= 0)
                            .ok_or(ReplyError::InvalidLength(pos))?;
                        if len == 0 {
                            pos = next;
                            break;
                        }
                        pos = skip_payload(buf, pos, next, len, limits)?.unwrap_or(usize::MAX);
                        if pos == usize::MAX {
                            break 'scan start;
                        }
                    }
                } else {
                    let len = parse_i64(body).ok_or(ReplyError::InvalidLength(start))?;
                    if len == -1 && tag == b'$' {
                        pos = next;
                    } else if len < 0 {
                        return Err(ReplyError::InvalidLength(start));
                    } else {
                        match skip_payload(buf, start, next, len, limits)? {
                            Some(p) => pos = p,
                            None => break 'scan start,
                        }
                    }
                }
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let (end, next) = line!('scan, start, pos + 1);
                let body = buf.get(pos + 1..end).unwrap_or_default();
                pos = next;
                if body == b"?" && tag != b'|' {
                    if stack.len() >= limits.max_depth {
                        return Err(ReplyError::TooDeep(limits.max_depth));
                    }
                    stack.push(Open::Streamed);
                    done = false;
                } else {
                    let n = parse_i64(body).ok_or(ReplyError::InvalidLength(start))?;
                    if n == -1 && tag == b'*' {
                        // Null array: one element.
                    } else if n < 0 {
                        return Err(ReplyError::InvalidLength(start));
                    } else {
                        let per = if matches!(tag, b'%' | b'|') { 2 } else { 1 };
                        let left = (n as u64).saturating_mul(per);
                        if left > 0 {
                            if stack.len() >= limits.max_depth {
                                return Err(ReplyError::TooDeep(limits.max_depth));
                            }
                            stack.push(Open::Count {
                                left,
                                attribute: tag == b'|',
                            });
                            done = false;
                        } else if tag == b'|' {
                            // An empty attribute annotates the next value.
                            done = false;
                        }
                    }
                }
            }
            b'.' => {
                let (end, next) = line!('scan, start, pos + 1);
                if end != pos + 1 || !matches!(stack.last(), Some(Open::Streamed)) {
                    return Err(ReplyError::Malformed(start));
                }
                stack.pop();
                pos = next;
            }
            other => return Err(ReplyError::InvalidType(other, start)),
        }
        if !done {
            continue;
        }
        // One element completed: close every aggregate it completes.
        loop {
            match stack.last_mut() {
                None => return Ok(Some(pos)),
                Some(Open::Streamed) => break,
                Some(Open::Count { left, attribute }) => {
                    *left -= 1;
                    if *left > 0 {
                        break;
                    }
                    let was_attribute = *attribute;
                    stack.pop();
                    if was_attribute {
                        // The attribute is done; the value it annotates follows and is
                        // the element that counts.
                        break;
                    }
                }
            }
        }
    };
    state.pos = resume_at;
    state.stack = stack;
    Ok(None)
}

/// Skips `len` payload bytes starting at `data` plus the CRLF; `Ok(None)` if incomplete.
fn skip_payload(
    buf: &[u8],
    header: usize,
    data: usize,
    len: i64,
    limits: &ReplyLimits,
) -> Result<Option<usize>, ReplyError> {
    if len as u64 > limits.max_bulk_len as u64 {
        return Err(ReplyError::BulkTooLong(header));
    }
    let end = data + len as usize;
    match buf.get(end..end + 2) {
        None => Ok(None),
        Some(b"\r\n") => Ok(Some(end + 2)),
        Some(_) => Err(ReplyError::MissingCrlf(end)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(input: &[u8]) -> Result<Option<Request>, DecodeError> {
        let mut buf = BytesMut::from(input);
        decode(&mut buf, &Limits::default())
    }

    fn args(input: &[u8]) -> Vec<Vec<u8>> {
        match dec(input) {
            Ok(Some(r)) => r.args.iter().map(|a| a.to_vec()).collect(),
            other => panic!("{:?} -> {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn err(input: &[u8]) -> String {
        match dec(input) {
            Err(e) => e.to_string(),
            other => panic!("{:?} -> {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn v(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk() {
        assert_eq!(args(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n"), v(&["GET", "a"]));
        assert_eq!(args(b"*1\r\n$0\r\n\r\n"), v(&[""]));
        assert_eq!(
            args(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n")[2],
            b"a\r\nb"
        );
        // Empty arrays are skipped.
        assert_eq!(args(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n"), v(&["PING"]));
        assert!(matches!(dec(b"*0\r\n"), Ok(None)));
    }

    #[test]
    fn zero_copy() {
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"[..]);
        let base = buf.as_ptr() as usize;
        let r = decode(&mut buf, &Limits::default()).unwrap().unwrap();
        assert_eq!(r.args[1].as_ptr() as usize, base + 17);
        assert!(buf.is_empty());
    }

    #[test]
    fn incomplete_consumes_nothing() {
        let full = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut buf, &Limits::default()), Ok(None), "cut {cut}");
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn pipelined_split_at_every_boundary() {
        let input: &[u8] = b"*1\r\n$4\r\nPING\r\nSET a \"b c\"\r\n*0\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\nGET k\n\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n";
        let want = vec![
            v(&["PING"]),
            v(&["SET", "a", "b c"]),
            v(&["SET", "k", "hello"]),
            v(&["GET", "k"]),
            v(&["ECHO", ""]),
        ];
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let mut buf = BytesMut::new();
                let mut got = Vec::new();
                for chunk in [&input[..a], &input[a..b], &input[b..]] {
                    buf.extend_from_slice(chunk);
                    while let Some(r) = decode(&mut buf, &Limits::default()).unwrap() {
                        got.push(r.args.iter().map(|x| x.to_vec()).collect::<Vec<_>>());
                    }
                }
                assert_eq!(got, want, "split at {a},{b}");
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn decoder_resumes_at_every_boundary() {
        let input: &[u8] = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\nGET k\r\n*0\r\n*2\r\n$3\r\nGET\r\n$2\r\nab\r\n";
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let mut d = Decoder::new();
                let mut buf = BytesMut::new();
                let mut got = Vec::new();
                for chunk in [&input[..a], &input[a..b], &input[b..]] {
                    buf.extend_from_slice(chunk);
                    while let Some(r) = d.decode(&mut buf, &Limits::default()).unwrap() {
                        got.push(r.args.iter().map(|x| x.to_vec()).collect::<Vec<_>>());
                    }
                }
                assert_eq!(
                    got,
                    vec![
                        v(&["SET", "k", "hello"]),
                        v(&["GET", "k"]),
                        v(&["GET", "ab"])
                    ]
                );
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn decoder_big_request_in_pieces() {
        let mut all = b"*1000000\r\n".to_vec();
        for _ in 0..1_000_000 {
            all.extend_from_slice(b"$1\r\nk\r\n");
        }
        let mut d = Decoder::new();
        let mut buf = BytesMut::new();
        let mut got = None;
        for chunk in all.chunks(16 * 1024) {
            buf.extend_from_slice(chunk);
            if let Some(r) = d.decode(&mut buf, &Limits::default()).unwrap() {
                got = Some(r.args.len());
            }
        }
        assert_eq!(got, Some(1_000_000));
        assert!(buf.is_empty());
    }

    #[test]
    fn malformed_multibulk() {
        assert_eq!(
            err(b"*x\r\n"),
            "ERR Protocol error: invalid multibulk length"
        );
        assert_eq!(
            err(b"*\r\n"),
            "ERR Protocol error: invalid multibulk length"
        );
        assert_eq!(
            err(b"*01\r\n"),
            "ERR Protocol error: invalid multibulk length"
        );
        assert_eq!(
            err(b"*+1\r\n"),
            "ERR Protocol error: invalid multibulk length"
        );
        assert_eq!(
            err(b"*2147483648\r\n"),
            "ERR Protocol error: invalid multibulk length"
        );
        assert_eq!(err(b"*1\r\nx"), "ERR Protocol error: expected '$', got 'x'");
        assert_eq!(
            err(b"*1\r\n:1\r\n"),
            "ERR Protocol error: expected '$', got ':'"
        );
        assert_eq!(
            err(b"*1\r\n$-1\r\n"),
            "ERR Protocol error: invalid bulk length"
        );
        assert_eq!(
            err(b"*1\r\n$a\r\n"),
            "ERR Protocol error: invalid bulk length"
        );
        assert_eq!(
            err(b"*1\r\n$99999999999999999999\r\n"),
            "ERR Protocol error: invalid bulk length"
        );
        let long = [b"*1".as_slice(), &[b'1'; 70_000]].concat();
        assert_eq!(err(&long), "ERR Protocol error: too big mbulk count string");
        let long = [b"*1\r\n$1".as_slice(), &[b'1'; 70_000]].concat();
        assert_eq!(err(&long), "ERR Protocol error: too big bulk count string");
        assert_eq!(
            DecodeError::ExpectedBulk(0xff).reply(),
            Bytes::from_static(b"-ERR Protocol error: expected '$', got '\xff'\r\n")
        );
        assert_eq!(
            DecodeError::ExpectedBulk(b'\n').reply(),
            Bytes::from_static(b"-ERR Protocol error: expected '$', got ' '\r\n")
        );
        assert_eq!(
            DecodeError::InvalidBulkLength.reply(),
            Bytes::from_static(b"-ERR Protocol error: invalid bulk length\r\n")
        );
    }

    #[test]
    fn one_gigabyte_bulk_rejected_without_allocating() {
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$1073741824\r\nabc"[..]);
        let cap = buf.capacity();
        assert_eq!(
            decode(&mut buf, &Limits::default()),
            Err(DecodeError::InvalidBulkLength)
        );
        assert_eq!(buf.capacity(), cap);
        // Within a raised limit it is merely incomplete: nothing is allocated up front.
        let limits = Limits {
            max_bulk_len: 2 << 30,
            ..Limits::default()
        };
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$1073741824\r\nabc"[..]);
        assert_eq!(decode(&mut buf, &limits), Ok(None));
        assert_eq!(buf.capacity(), cap);
    }

    #[test]
    fn million_element_array_header() {
        // Under the default limit (2^20) the header is accepted and simply incomplete.
        assert_eq!(dec(b"*1000000\r\n$3\r\nGET\r\n"), Ok(None));
        let limits = Limits {
            max_array_len: 999_999,
            ..Limits::default()
        };
        let mut buf = BytesMut::from(&b"*1000000\r\n"[..]);
        assert_eq!(
            decode(&mut buf, &limits),
            Err(DecodeError::InvalidMultibulkLength)
        );
        assert_eq!(
            err(b"*2000000\r\n"),
            "ERR Protocol error: invalid multibulk length"
        );
        // A complete one decodes.
        let mut big = BytesMut::from(&b"*1000000\r\n"[..]);
        for _ in 0..1_000_000 {
            big.extend_from_slice(b"$1\r\nk\r\n");
        }
        let r = decode(&mut big, &Limits::default()).unwrap().unwrap();
        assert_eq!(r.args.len(), 1_000_000);
    }

    #[test]
    fn inline() {
        assert_eq!(args(b"PING\r\n"), v(&["PING"]));
        assert_eq!(args(b"PING\n"), v(&["PING"]));
        assert_eq!(args(b"  SET  a   b \r\n"), v(&["SET", "a", "b"]));
        assert_eq!(args(b"\r\n\n  \r\nPING\r\n"), v(&["PING"]));
        assert!(dec(b"PING").unwrap().is_none());
        assert!(dec(b"PING\r\n").unwrap().unwrap().inline);
    }

    #[test]
    fn inline_quoting() {
        assert_eq!(args(b"SET k \"a b\"\r\n"), v(&["SET", "k", "a b"]));
        assert_eq!(
            args(b"SET k \"\\x41\\x7a\\n\\r\\t\\b\\a\\\"\\\\\\q\"\r\n")[2],
            b"Az\n\r\t\x08\x07\"\\q"
        );
        assert_eq!(args(b"SET k \"\\x4\"\r\n")[2], b"x4");
        assert_eq!(args(b"SET k \"\\xZZ\"\r\n")[2], b"xZZ");
        assert_eq!(args(b"SET k 'a \\' \"b'\r\n")[2], b"a ' \"b");
        assert_eq!(args(b"SET k 'a\\nb'\r\n")[2], b"a\\nb");
        assert_eq!(args(b"SET k \"\"\r\n")[2], b"");
        assert_eq!(args(b"SET k ''\r\n")[2], b"");
        assert_eq!(args(b"a\"b c\"\r\n"), v(&["ab c"]));
        assert_eq!(args(b"a'b c'\r\n"), v(&["ab c"]));
        assert_eq!(args(b"a\x0bb\r\n"), v(&["a\x0bb"]));
        assert_eq!(args(b"\"a\"\x0bb\r\n"), v(&["a", "b"]));
        // A NUL ends the line, as in redis's C string handling.
        assert_eq!(args(b"GET a\0b\r\n"), v(&["GET", "a"]));
        let unbalanced = "ERR Protocol error: unbalanced quotes in request";
        assert_eq!(err(b"SET k \"abc\r\n"), unbalanced);
        assert_eq!(err(b"SET k 'abc\r\n"), unbalanced);
        assert_eq!(err(b"SET k \"a\"b\r\n"), unbalanced);
        assert_eq!(err(b"SET k 'a'b\r\n"), unbalanced);
        assert_eq!(err(b"SET k \"a\\\"\r\n"), unbalanced);
        assert_eq!(err(b"SET k \"a\0\"\r\n"), unbalanced);
        assert_eq!(err(b"x\"a\"b\r\n"), unbalanced);
    }

    #[test]
    fn too_big_inline() {
        let long = vec![b'a'; 64 * 1024 + 1];
        assert_eq!(err(&long), "ERR Protocol error: too big inline request");
        let mut line = vec![b'a'; 70_000];
        line.extend_from_slice(b"\r\n");
        assert_eq!(err(&line), "ERR Protocol error: too big inline request");
        assert!(dec(&vec![b'a'; 64 * 1024]).unwrap().is_none());
    }

    #[test]
    fn parse_i64_like_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

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
        assert_eq!(
            enc(|o| Request::new(["GET", "k"]).encode(o)),
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        );
    }

    fn check(input: &[u8]) -> Result<Option<usize>, ReplyError> {
        decode_reply(input, &ReplyLimits::default())
    }

    const REPLIES: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR bad\r\n",
        b":-12\r\n",
        b"$3\r\nfoo\r\n",
        b"$0\r\n\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*2\r\n$1\r\na\r\n:1\r\n",
        b"*2\r\n*1\r\n+x\r\n*0\r\n",
        b"_\r\n",
        b",1.5\r\n",
        b",inf\r\n",
        b"#t\r\n",
        b"#f\r\n",
        b"!5\r\nERR x\r\n",
        b"=7\r\ntxt:a\r\n\r\n",
        b"(3492890328409238509324850943850943825024385\r\n",
        b"%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n_\r\n",
        b"%0\r\n",
        b"~2\r\n+a\r\n+b\r\n",
        b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
        b"|1\r\n+ttl\r\n:3600\r\n*2\r\n:1\r\n:2\r\n",
        b"*2\r\n|1\r\n+k\r\n+v\r\n:1\r\n:2\r\n",
        b"|0\r\n+OK\r\n",
        b"$?\r\n;4\r\nHell\r\n;1\r\no\r\n;0\r\n",
        b"*?\r\n:1\r\n:2\r\n.\r\n",
        b"%?\r\n+a\r\n:1\r\n.\r\n",
        b"*?\r\n*?\r\n.\r\n*1\r\n:1\r\n.\r\n",
    ];

    #[test]
    fn reply_every_type_and_every_cut() {
        for r in REPLIES {
            assert_eq!(
                check(r),
                Ok(Some(r.len())),
                "{:?}",
                String::from_utf8_lossy(r)
            );
            for cut in 0..r.len() {
                assert_eq!(
                    check(&r[..cut]),
                    Ok(None),
                    "{:?} cut {cut}",
                    String::from_utf8_lossy(r)
                );
            }
            // Followed by another reply: only the first is measured.
            let two = [*r, b"+NEXT\r\n"].concat();
            assert_eq!(check(&two), Ok(Some(r.len())));
        }
    }

    #[test]
    fn reply_pipeline_split_everywhere() {
        let all: Vec<u8> = REPLIES.concat();
        for cut in 0..=all.len() {
            let mut buf = BytesMut::new();
            let mut n = 0;
            for chunk in [&all[..cut], &all[cut..]] {
                buf.extend_from_slice(chunk);
                while let Some(len) = check(&buf).unwrap() {
                    let _ = buf.split_to(len);
                    n += 1;
                }
            }
            assert_eq!(n, REPLIES.len(), "cut {cut}");
        }
    }

    #[test]
    fn reply_scanner_resumes_byte_by_byte() {
        let all: Vec<u8> = REPLIES.concat();
        let limits = ReplyLimits::default();
        let mut scanner = ReplyScanner::new();
        let mut buf = BytesMut::new();
        let mut lens = Vec::new();
        for &b in &all {
            buf.extend_from_slice(&[b]);
            while let Some(n) = scanner.check(&buf, &limits).unwrap() {
                lens.push(n);
                let _ = buf.split_to(n);
            }
        }
        let want: Vec<usize> = REPLIES.iter().map(|r| r.len()).collect();
        assert_eq!(lens, want);
        // Splits at every pair of points with one scanner.
        for a in 0..=all.len() {
            for b in (a..=all.len()).step_by(7) {
                let mut scanner = ReplyScanner::new();
                let mut buf = BytesMut::new();
                let mut n = 0;
                for chunk in [&all[..a], &all[a..b], &all[b..]] {
                    buf.extend_from_slice(chunk);
                    while let Some(len) = scanner.check(&buf, &limits).unwrap() {
                        let _ = buf.split_to(len);
                        n += 1;
                    }
                }
                assert_eq!(n, REPLIES.len(), "cuts {a},{b}");
            }
        }
    }

    #[test]
    fn reply_scanner_big_array_in_pieces() {
        let mut all = b"*100000\r\n".to_vec();
        for i in 0..100_000 {
            all.extend_from_slice(format!("${}\r\n{i}\r\n", i.to_string().len()).as_bytes());
        }
        let limits = ReplyLimits::default();
        let mut scanner = ReplyScanner::new();
        let mut buf = BytesMut::new();
        let mut done = None;
        for chunk in all.chunks(997) {
            buf.extend_from_slice(chunk);
            if let Some(n) = scanner.check(&buf, &limits).unwrap() {
                done = Some(n);
            }
        }
        assert_eq!(done, Some(all.len()));
    }

    #[test]
    fn reply_malformed() {
        assert!(matches!(
            check(b"?x\r\n"),
            Err(ReplyError::InvalidType(b'?', 0))
        ));
        assert!(matches!(
            check(b":abc\r\n"),
            Err(ReplyError::InvalidLength(0))
        ));
        assert!(matches!(
            check(b"$-2\r\n"),
            Err(ReplyError::InvalidLength(0))
        ));
        assert!(matches!(
            check(b"$3\r\nfooXY"),
            Err(ReplyError::MissingCrlf(7))
        ));
        assert!(matches!(check(b"+OK\rX"), Err(ReplyError::MissingCrlf(3))));
        assert!(matches!(check(b"#x\r\n"), Err(ReplyError::Malformed(0))));
        assert!(matches!(check(b".\r\n"), Err(ReplyError::Malformed(0))));
        assert!(matches!(
            check(b"*1\r\n.\r\n"),
            Err(ReplyError::Malformed(4))
        ));
        assert!(matches!(
            check(b"%-1\r\n"),
            Err(ReplyError::InvalidLength(0))
        ));
        assert!(matches!(
            check(b"$1073741824\r\n"),
            Err(ReplyError::BulkTooLong(0))
        ));
        let deep = b"*1\r\n".repeat(200);
        assert!(matches!(check(&deep), Err(ReplyError::TooDeep(128))));
        let ok_deep = [b"*1\r\n".repeat(128), b":1\r\n".to_vec()].concat();
        assert_eq!(check(&ok_deep), Ok(Some(ok_deep.len())));
        // A huge aggregate count is just incomplete: nothing is allocated from it.
        assert_eq!(check(b"*9223372036854775807\r\n:1\r\n"), Ok(None));
        assert_eq!(check(b"%9223372036854775807\r\n"), Ok(None));
        let long = vec![b'+'; 2 * 1024 * 1024];
        assert!(matches!(check(&long), Err(ReplyError::LineTooLong(1))));
    }
}
