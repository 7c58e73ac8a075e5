//! Backend replies: checked, not parsed, so they can be relayed byte for byte
//! ([`decode_reply`], [`ReplyScanner`]); the same scan builds a [`Value`] for the few
//! replies the router must read ([`parse`]). One RESP reply grammar, in one place.

use bytes::Bytes;

use super::num::parse_i64;

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
        let result = scan_reply(buf, limits, self, &mut ());
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
    scan_reply(buf, limits, &mut ReplyScanner::new(), &mut ())
}

/// What the scanner found, in order, for a caller that builds values ([`parse`]).
/// Offsets index the scanned buffer. The check-only path passes `()`, which ignores them
/// (and compiles to nothing).
#[derive(Debug, Clone, Copy)]
enum Event {
    /// `+ - : ( , #`: the line's body.
    Line { tag: u8, start: usize, end: usize },
    /// `_` or `$-1`.
    Null,
    /// `*-1`.
    NullArray,
    /// `$ ! =`: the payload.
    Blob { tag: u8, start: usize, end: usize },
    /// `$?`: a streamed string starts; [`Event::Chunk`]s and an [`Event::Close`] follow.
    StreamedString,
    /// One chunk of a streamed string.
    Chunk { start: usize, end: usize },
    /// An aggregate of `len` elements (maps and attributes: twice their pairs); `None`
    /// when streamed (ended by [`Event::Close`]).
    Open { tag: u8, len: Option<u64> },
    /// The end of a streamed string or aggregate.
    Close,
}

/// Receives the scanner's [`Event`]s.
trait Visit {
    fn event(&mut self, e: Event);
}

impl Visit for () {
    #[inline(always)]
    fn event(&mut self, _: Event) {}
}

fn scan_reply<V: Visit>(
    buf: &[u8],
    limits: &ReplyLimits,
    state: &mut ReplyScanner,
    visit: &mut V,
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
                visit.event(Event::Line {
                    tag,
                    start: pos + 1,
                    end,
                });
                pos = next;
            }
            b'_' => {
                let (end, next) = line!('scan, start, pos + 1);
                if end != pos + 1 {
                    return Err(ReplyError::Malformed(start));
                }
                visit.event(Event::Null);
                pos = next;
            }
            b'#' => {
                let (end, next) = line!('scan, start, pos + 1);
                if !matches!(buf.get(pos + 1..end), Some(b"t" | b"f")) {
                    return Err(ReplyError::Malformed(start));
                }
                visit.event(Event::Line {
                    tag,
                    start: pos + 1,
                    end,
                });
                pos = next;
            }
            b'$' | b'!' | b'=' => {
                let (end, next) = line!('scan, start, pos + 1);
                let body = buf.get(pos + 1..end).unwrap_or_default();
                if tag == b'$' && body == b"?" {
                    // Streamed string: `;<len>\r\n<data>\r\n` chunks until `;0\r\n`.
                    visit.event(Event::StreamedString);
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
                            visit.event(Event::Close);
                            pos = next;
                            break;
                        }
                        pos = skip_payload(buf, pos, next, len, limits)?.unwrap_or(usize::MAX);
                        if pos == usize::MAX {
                            break 'scan start;
                        }
                        visit.event(Event::Chunk {
                            start: next,
                            end: pos - 2,
                        });
                    }
                } else {
                    let len = parse_i64(body).ok_or(ReplyError::InvalidLength(start))?;
                    if len == -1 && tag == b'$' {
                        visit.event(Event::Null);
                        pos = next;
                    } else if len < 0 {
                        return Err(ReplyError::InvalidLength(start));
                    } else {
                        match skip_payload(buf, start, next, len, limits)? {
                            Some(p) => {
                                visit.event(Event::Blob {
                                    tag,
                                    start: next,
                                    end: p - 2,
                                });
                                pos = p;
                            }
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
                    visit.event(Event::Open { tag, len: None });
                    done = false;
                } else {
                    let n = parse_i64(body).ok_or(ReplyError::InvalidLength(start))?;
                    if n == -1 && tag == b'*' {
                        // Null array: one element.
                        visit.event(Event::NullArray);
                    } else if n < 0 {
                        return Err(ReplyError::InvalidLength(start));
                    } else {
                        let per = if matches!(tag, b'%' | b'|') { 2 } else { 1 };
                        let left = (n as u64).saturating_mul(per);
                        visit.event(Event::Open {
                            tag,
                            len: Some(left),
                        });
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
                visit.event(Event::Close);
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

// ---------------------------------------------------------------------------------------
// A parsed view of the few replies the router reads rather than relays (slot maps,
// SCAN/KEYS/DBSIZE merging, pub/sub subscription counts), built from the same scan.

/// One RESP2/RESP3 value. RESP3 aggregates map onto [`Value::Array`] (maps flattened to
/// key, value, key, value), scalars onto the nearest RESP2 type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+...`
    Simple(Bytes),
    /// `-...` and `!...` (without the sign)
    Error(Bytes),
    /// `:n`, and `#t`/`#f` as 1/0.
    Int(i64),
    /// `$n` / `=n` (without its `txt:`) / `,` / `(` / streamed strings; `None` for nulls
    /// (`$-1`, `_`).
    Bulk(Option<Bytes>),
    /// `*n`, `%n`, `~n`, `>n` and streamed aggregates; `None` for `*-1`.
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The value as bytes when it is a string of any kind.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Simple(b) | Value::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }

    /// The value as an integer (integers, or strings holding one).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            v => std::str::from_utf8(v.as_bytes()?).ok()?.parse().ok(),
        }
    }

    /// The elements when it is an aggregate.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(Some(v)) => Some(v),
            _ => None,
        }
    }
}

/// Parses the one complete reply at the start of `buf` (within the default
/// [`ReplyLimits`]); `None` when it is incomplete or not valid RESP. Attributes are
/// skipped.
pub fn parse(buf: &Bytes) -> Option<Value> {
    let mut b = Builder {
        buf,
        stack: Vec::new(),
        done: None,
    };
    match scan_reply(
        buf,
        &ReplyLimits::default(),
        &mut ReplyScanner::new(),
        &mut b,
    ) {
        Ok(Some(_)) => b.done,
        _ => None,
    }
}

/// An aggregate or streamed string being built.
enum Frame {
    Aggregate {
        items: Vec<Value>,
        /// Elements still expected; `None` when streamed.
        left: Option<u64>,
        attribute: bool,
    },
    String(Vec<u8>),
}

/// Builds a [`Value`] from the scanner's events. The scanner has already checked every
/// length, so this only assembles.
struct Builder<'a> {
    buf: &'a Bytes,
    stack: Vec<Frame>,
    done: Option<Value>,
}

impl Builder<'_> {
    fn slice(&self, start: usize, end: usize) -> Bytes {
        if start <= end && end <= self.buf.len() {
            self.buf.slice(start..end)
        } else {
            Bytes::new()
        }
    }

    /// One finished value: into its aggregate, closing every aggregate it completes.
    fn push(&mut self, mut v: Value) {
        loop {
            let Some(Frame::Aggregate {
                items,
                left,
                attribute,
            }) = self.stack.last_mut()
            else {
                if self.stack.is_empty() && self.done.is_none() {
                    self.done = Some(v);
                }
                return;
            };
            items.push(v);
            match left {
                Some(l) if *l > 1 => {
                    *l -= 1;
                    return;
                }
                Some(_) => {
                    let attribute = *attribute;
                    let items = std::mem::take(items);
                    self.stack.pop();
                    if attribute {
                        // An attribute annotates the value that follows: dropped, and not
                        // an element of its parent.
                        return;
                    }
                    v = Value::Array(Some(items));
                }
                None => return,
            }
        }
    }
}

impl Visit for Builder<'_> {
    fn event(&mut self, e: Event) {
        match e {
            Event::Line { tag, start, end } => {
                let body = self.slice(start, end);
                let v = match tag {
                    b'+' => Value::Simple(body),
                    b'-' => Value::Error(body),
                    b':' => Value::Int(parse_i64(&body).unwrap_or(0)),
                    b'#' => Value::Int(i64::from(&body[..] == b"t")),
                    _ => Value::Bulk(Some(body)),
                };
                self.push(v);
            }
            Event::Null => self.push(Value::Bulk(None)),
            Event::NullArray => self.push(Value::Array(None)),
            Event::Blob { tag, start, end } => {
                let data = self.slice(start, end);
                self.push(match tag {
                    b'!' => Value::Error(data),
                    // Verbatim strings carry a `txt:` prefix.
                    b'=' if data.len() >= 4 => Value::Bulk(Some(data.slice(4..))),
                    _ => Value::Bulk(Some(data)),
                });
            }
            Event::StreamedString => self.stack.push(Frame::String(Vec::new())),
            Event::Chunk { start, end } => {
                let chunk = self.slice(start, end);
                if let Some(Frame::String(s)) = self.stack.last_mut() {
                    s.extend_from_slice(&chunk);
                }
            }
            Event::Open { tag, len } => {
                if len == Some(0) {
                    if tag != b'|' {
                        self.push(Value::Array(Some(Vec::new())));
                    }
                    return;
                }
                let hint = len.map_or(0, |n| n.min(1024) as usize);
                self.stack.push(Frame::Aggregate {
                    items: Vec::with_capacity(hint),
                    left: len,
                    attribute: tag == b'|',
                });
            }
            Event::Close => match self.stack.pop() {
                Some(Frame::String(s)) => self.push(Value::Bulk(Some(Bytes::from(s)))),
                Some(Frame::Aggregate { items, .. }) => self.push(Value::Array(Some(items))),
                None => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

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
                    // Measured above: these bytes are consumed.
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
                // Measured above: these bytes are consumed.
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
                        // Measured above: these bytes are consumed.
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

    #[test]
    fn parses_resp2_and_resp3_values() {
        let v = parse(&Bytes::from_static(b"*3\r\n$3\r\nfoo\r\n:5\r\n$-1\r\n")).unwrap();
        assert_eq!(
            v,
            Value::Array(Some(vec![
                Value::Bulk(Some(Bytes::from_static(b"foo"))),
                Value::Int(5),
                Value::Bulk(None)
            ]))
        );
        let v = parse(&Bytes::from_static(b"%1\r\n+a\r\n#t\r\n")).unwrap();
        assert_eq!(v.as_array().map(|a| a.len()), Some(2));
        assert_eq!(v.as_array().and_then(|a| a[1].as_int()), Some(1));
        assert!(parse(&Bytes::from_static(b"*2\r\n:1\r\n")).is_none());
        assert!(parse(&Bytes::from_static(b"$5\r\nab\r\n")).is_none());
        // Attributes are skipped, at the top and inside aggregates.
        let v = parse(&Bytes::from_static(
            b"|1\r\n+ttl\r\n:3600\r\n*2\r\n:1\r\n:2\r\n",
        ))
        .unwrap();
        assert_eq!(v, Value::Array(Some(vec![Value::Int(1), Value::Int(2)])));
        let v = parse(&Bytes::from_static(b"*2\r\n|1\r\n+k\r\n+v\r\n:1\r\n:2\r\n")).unwrap();
        assert_eq!(v, Value::Array(Some(vec![Value::Int(1), Value::Int(2)])));
        // Streamed strings and aggregates, verbatim strings, blob errors, null arrays.
        let v = parse(&Bytes::from_static(
            b"$?\r\n;4\r\nHell\r\n;1\r\no\r\n;0\r\n",
        ))
        .unwrap();
        assert_eq!(v.as_bytes().map(|b| &b[..]), Some(&b"Hello"[..]));
        let v = parse(&Bytes::from_static(b"*?\r\n:1\r\n*0\r\n.\r\n")).unwrap();
        assert_eq!(
            v,
            Value::Array(Some(vec![Value::Int(1), Value::Array(Some(vec![]))]))
        );
        let v = parse(&Bytes::from_static(b"=7\r\ntxt:a\r\n\r\n")).unwrap();
        assert_eq!(v.as_bytes().map(|b| &b[..]), Some(&b"a\r\n"[..]));
        assert_eq!(
            parse(&Bytes::from_static(b"!5\r\nERR x\r\n")),
            Some(Value::Error(Bytes::from_static(b"ERR x")))
        );
        assert_eq!(
            parse(&Bytes::from_static(b"*-1\r\n")),
            Some(Value::Array(None))
        );
        // Every reply the scanner accepts parses.
        for r in REPLIES {
            assert!(parse(&Bytes::from_static(r)).is_some(), "{r:?}");
        }
    }
}
