//! Client requests: RESP2/RESP3 multibulk arrays and inline commands, decoded with the
//! bounds of [`Limits`] (and, until the client authenticates, [`PreAuthLimits`]).
//!
//! Requests follow redis's `processMultibulkBuffer` and `processInlineBuffer`
//! (networking.c): the same accepted inputs, the same error strings. Redis closes the
//! connection after any protocol error (the stream cannot be resynchronized), and so must
//! the caller after a [`DecodeError`].

use bytes::{BufMut, Bytes, BytesMut};

use super::encode::{write_array_header, write_bulk, write_error};
use super::num::parse_i64;

/// Bounds checked on client requests before allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// The tighter bounds of a client that has not authenticated yet (`--password` set, no
/// `AUTH` yet), as redis has them since 6.2.6 (CVE-2021-32675): a connection that has not
/// proved anything cannot make the process buffer a large request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreAuthLimits {
    /// Longest bulk argument (redis: 16384, `unauthenticated bulk length`).
    pub max_bulk_len: usize,
    /// Most arguments in one multibulk request (redis: 10, `unauthenticated multibulk
    /// length`; `HELLO 3 AUTH user pass SETNAME name` is 7).
    pub max_array_len: usize,
}

impl Default for PreAuthLimits {
    fn default() -> Self {
        PreAuthLimits {
            max_bulk_len: 16 * 1024,
            max_array_len: 10,
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
    /// A `*<count>` over [`PreAuthLimits::max_array_len`] before `AUTH`.
    #[error("ERR Protocol error: unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    /// A `$<len>` over [`PreAuthLimits::max_bulk_len`] before `AUTH`.
    #[error("ERR Protocol error: unauthenticated bulk length")]
    UnauthenticatedBulkLength,
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
    Decoder::with_limits(*limits).decode(buf)
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
    limits: Limits,
    pre_auth: Option<PreAuthLimits>,
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
    /// A decoder at the start of a request, with the default [`Limits`].
    pub fn new() -> Self {
        Decoder::default()
    }

    /// A decoder with `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        Decoder {
            limits,
            ..Decoder::default()
        }
    }

    /// Sets (`Some`, the client is not authenticated) or lifts (`None`) the pre-auth
    /// limits. Call it between requests (after the one that authenticated), never with a
    /// request half decoded: the new limits apply from the next request on.
    pub fn set_pre_auth(&mut self, pre_auth: Option<PreAuthLimits>) {
        self.pre_auth = pre_auth;
    }

    /// As [`decode`], resuming a partially scanned request: one complete request off the
    /// front of `buf`, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// As [`decode`], plus the `unauthenticated` errors while pre-auth limits are set.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, DecodeError> {
        let limits = &self.limits;
        loop {
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            let parsed = if first == b'*' {
                decode_multibulk(buf, limits, self.pre_auth.as_ref(), &mut self.partial)
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
    pre_auth: Option<&PreAuthLimits>,
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
            // Redis checks this after the general bound, so the general error wins.
            if pre_auth.is_some_and(|p| count > p.max_array_len as i64) {
                return Err(DecodeError::UnauthenticatedMultibulkLength);
            }
            let pos = cr + 2;
            if count <= 0 {
                // Measured above: these bytes are consumed.
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
        if pre_auth.is_some_and(|p| len as u64 > p.max_bulk_len as u64) {
            return Err(DecodeError::UnauthenticatedBulkLength);
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
                    while let Some(r) = d.decode(&mut buf).unwrap() {
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
            if let Some(r) = d.decode(&mut buf).unwrap() {
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
    fn encodes_requests_for_backends() {
        let mut out = BytesMut::new();
        Request::new(["GET", "k"]).encode(&mut out);
        assert_eq!(&out[..], b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    #[test]
    fn pre_auth_limits_like_redis() {
        let mut d = Decoder::new();
        d.set_pre_auth(Some(PreAuthLimits::default()));
        let mut buf = BytesMut::from(&b"*11\r\n"[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(DecodeError::UnauthenticatedMultibulkLength)
        );
        assert_eq!(
            DecodeError::UnauthenticatedMultibulkLength.reply(),
            Bytes::from_static(b"-ERR Protocol error: unauthenticated multibulk length\r\n")
        );
        let mut d = Decoder::new();
        d.set_pre_auth(Some(PreAuthLimits::default()));
        let mut buf = BytesMut::from(&b"*2\r\n$4\r\nAUTH\r\n$16385\r\n"[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(DecodeError::UnauthenticatedBulkLength)
        );
        // The general bound is checked first, as in redis.
        let mut d = Decoder::new();
        d.set_pre_auth(Some(PreAuthLimits::default()));
        let mut buf = BytesMut::from(&b"*2000000\r\n"[..]);
        assert_eq!(d.decode(&mut buf), Err(DecodeError::InvalidMultibulkLength));
        // Within the bounds, and lifted after AUTH for the next request.
        let mut d = Decoder::new();
        d.set_pre_auth(Some(PreAuthLimits::default()));
        let mut buf = BytesMut::from(&b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*11\r\n"[..]);
        assert_eq!(d.decode(&mut buf).unwrap().unwrap().args.len(), 2);
        d.set_pre_auth(None);
        assert_eq!(d.decode(&mut buf), Ok(None));
    }
}
