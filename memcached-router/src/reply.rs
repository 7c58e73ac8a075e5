//! Framing of backend replies (synchronous, total): how many bytes at the front of a
//! buffer make one complete reply of the kind a request expects, so replies can be matched
//! to requests in order on a pipelined connection.

use bytes::Bytes;

/// What reply a request forwarded to a backend expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// One line (`STORED`, `DELETED`, a number, `VERSION ..`, `OK`, an error line).
    Line,
    /// One meta reply: a line, plus a data block when it starts with `VA <size>`.
    Meta,
    /// `VALUE` blocks up to `END` (or one error line).
    Retrieval,
    /// Any meta replies or lines up to and including `MN`: the router appends `mn` to a
    /// request that may not answer (noreply, meta quiet mode), so that the end of its reply
    /// is always known.
    UntilMn,
}

/// A reply the router cannot frame: the connection cannot be trusted any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed reply from backend: {0}")]
pub struct BadReply(pub &'static str);

/// The longest reply line we wait for (`VALUE <250-byte key> <flags> <len> <cas>` or a meta
/// line with its flags fits easily).
const MAX_LINE: usize = 8192;

/// Returns the length of the complete reply of kind `expect` at the front of `buf`,
/// `Ok(None)` when more bytes are needed.
///
/// # Errors
/// [`BadReply`] when the bytes cannot be a reply of that kind.
pub fn reply_len(buf: &[u8], expect: Expect) -> Result<Option<usize>, BadReply> {
    let mut resume = 0;
    match frame_reply(buf, expect, &mut resume)? {
        Framed::Complete(len) => Ok(Some(len)),
        Framed::Partial => Ok(None),
    }
}

/// What [`frame_reply`] found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    /// One whole reply of this many bytes.
    Complete(usize),
    /// More bytes are needed.
    Partial,
}

/// [`reply_len`] that resumes where the previous call on the same (grown) buffer stopped:
/// `resume` is where the first incomplete part of a multi-part reply (a `VALUE` block, a
/// meta reply before `MN`) starts, so a large reply arriving over many reads is scanned
/// once instead of once per read. Start it at 0 for each new reply.
///
/// # Errors
/// [`BadReply`] when the bytes cannot be a reply of that kind.
pub fn frame_reply(buf: &[u8], expect: Expect, resume: &mut usize) -> Result<Framed, BadReply> {
    let done = |len: Option<usize>| len.map_or(Framed::Partial, Framed::Complete);
    match expect {
        Expect::Line => Ok(done(line_len(buf)?)),
        Expect::Meta => Ok(done(meta_len(buf)?)),
        Expect::Retrieval => loop {
            let at = *resume;
            let Some(rest) = buf.get(at..) else {
                return Ok(Framed::Partial);
            };
            let Some(l) = line_len(rest)? else {
                return Ok(Framed::Partial);
            };
            let line = trim_eol(rest.get(..l).unwrap_or_default());
            let Some(header) = line.strip_prefix(b"VALUE ") else {
                // END or an error line both end the reply.
                return Ok(Framed::Complete(at + l));
            };
            let size = nth_number(header, 2).ok_or(BadReply("VALUE without length"))?;
            match data_end(rest, l, size)? {
                Some(end) => *resume = at + end,
                None => return Ok(Framed::Partial),
            }
        },
        Expect::UntilMn => loop {
            let at = *resume;
            let Some(rest) = buf.get(at..) else {
                return Ok(Framed::Partial);
            };
            let Some(l) = meta_len(rest)? else {
                return Ok(Framed::Partial);
            };
            *resume = at + l;
            if rest.starts_with(b"MN\r\n") || rest.starts_with(b"MN\n") {
                return Ok(Framed::Complete(at + l));
            }
        },
    }
}

fn meta_len(buf: &[u8]) -> Result<Option<usize>, BadReply> {
    let Some(l) = line_len(buf)? else {
        return Ok(None);
    };
    let line = trim_eol(buf.get(..l).unwrap_or_default());
    if let Some(header) = line.strip_prefix(b"VA ") {
        let size = nth_number(header, 0).ok_or(BadReply("VA without length"))?;
        return data_end(buf, l, size);
    }
    Ok(Some(l))
}

/// The end of a data block of `size` bytes (plus `\r\n`) starting at `start`.
fn data_end(buf: &[u8], start: usize, size: u64) -> Result<Option<usize>, BadReply> {
    let size = usize::try_from(size).map_err(|_| BadReply("data length"))?;
    let end = start
        .checked_add(size)
        .and_then(|e| e.checked_add(2))
        .ok_or(BadReply("data length"))?;
    match buf.get(end - 2..end) {
        None => Ok(None),
        Some(b"\r\n") => Ok(Some(end)),
        Some(_) => Err(BadReply("data block not followed by \\r\\n")),
    }
}

fn line_len(buf: &[u8]) -> Result<Option<usize>, BadReply> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(nl) => Ok(Some(nl + 1)),
        None if buf.len() > MAX_LINE => Err(BadReply("line too long")),
        None => Ok(None),
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The `n`th space-separated token of a header line as a decimal number. Hand-rolled: it
/// runs for every `VALUE` block of every reply (a profile of multi-gets showed the
/// split/UTF-8/`parse` version at 1.5% of the router's CPU).
fn nth_number(s: &[u8], n: usize) -> Option<u64> {
    let mut tokens = s.split(|&b| b == b' ').filter(|t| !t.is_empty());
    let token = tokens.nth(n)?;
    if token.is_empty() || token.len() > 20 {
        return None;
    }
    token.iter().try_fold(0u64, |acc, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Skips one reply of a kind without buffering it: [`feed`](SkipReply::feed) it the bytes as
/// they arrive, drop what it consumed, until it says the reply is over. For a reply too
/// large to hold (a client's whole reply budget), on a connection that must stay in step.
#[derive(Debug, Clone)]
pub struct SkipReply {
    expect: Expect,
    /// Bytes of the current data block (with its `\r\n`) still to skip.
    data_left: u64,
}

impl SkipReply {
    /// Skips a reply of kind `expect` from its first byte.
    pub fn new(expect: Expect) -> SkipReply {
        SkipReply {
            expect,
            data_left: 0,
        }
    }

    /// Consumes what belongs to the reply from the front of `buf`: returns how many bytes to
    /// drop and whether the reply is over. A partial line is not consumed (it is at most
    /// 8 KiB, then an error).
    ///
    /// # Errors
    /// [`BadReply`] when the bytes cannot be a reply of that kind.
    pub fn feed(&mut self, buf: &[u8]) -> Result<(usize, bool), BadReply> {
        let mut at = 0;
        loop {
            if self.data_left > 0 {
                let avail = buf.len().saturating_sub(at);
                let n = usize::try_from(self.data_left).map_or(avail, |d| d.min(avail));
                at += n;
                self.data_left -= n as u64;
                if self.data_left > 0 {
                    return Ok((at, false));
                }
                if self.expect == Expect::Meta {
                    return Ok((at, true));
                }
                continue;
            }
            let rest = buf.get(at..).unwrap_or_default();
            let Some(l) = line_len(rest)? else {
                return Ok((at, false));
            };
            let line = trim_eol(rest.get(..l).unwrap_or_default());
            at += l;
            let block = |header: &[u8], n: usize, what| {
                nth_number(header, n)
                    .and_then(|size| size.checked_add(2))
                    .ok_or(BadReply(what))
            };
            match self.expect {
                Expect::Line => return Ok((at, true)),
                Expect::Meta => match line.strip_prefix(b"VA ") {
                    Some(h) => self.data_left = block(h, 0, "VA without length")?,
                    None => return Ok((at, true)),
                },
                Expect::Retrieval => match line.strip_prefix(b"VALUE ") {
                    Some(h) => self.data_left = block(h, 2, "VALUE without length")?,
                    None => return Ok((at, true)),
                },
                Expect::UntilMn => {
                    if line == b"MN" {
                        return Ok((at, true));
                    }
                    if let Some(h) = line.strip_prefix(b"VA ") {
                        self.data_left = block(h, 0, "VA without length")?;
                    }
                }
            }
        }
    }
}

/// One `VALUE` block of a retrieval reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueBlock {
    /// The key it is for.
    pub key: Bytes,
    /// The whole block: `VALUE ...\r\n<data>\r\n`.
    pub block: Bytes,
}

/// The `VALUE` blocks of a complete retrieval reply, in order, or `None` when the reply is
/// an error line rather than `VALUE`s and `END`. Lazy, so a multi-get's parts are matched to
/// their keys without a vector per part.
pub fn value_blocks(reply: &Bytes) -> Option<ValueBlocks<'_>> {
    if reply.starts_with(b"VALUE ") || reply.starts_with(b"END") {
        Some(ValueBlocks { reply, at: 0 })
    } else {
        None
    }
}

/// Iterator of [`value_blocks`]: stops at `END` (or at anything that is not a whole block,
/// which framing has already refused).
#[derive(Debug)]
pub struct ValueBlocks<'a> {
    reply: &'a Bytes,
    at: usize,
}

impl Iterator for ValueBlocks<'_> {
    type Item = ValueBlock;

    fn next(&mut self) -> Option<ValueBlock> {
        let at = self.at;
        let rest = self.reply.get(at..)?;
        let l = line_len(rest).ok()??;
        let header = trim_eol(rest.get(..l)?).strip_prefix(b"VALUE ")?;
        let key_len = header.iter().position(|&b| b == b' ')?;
        let size = nth_number(header, 2)?;
        let end = data_end(rest, l, size).ok()??;
        self.at = at + end;
        Some(ValueBlock {
            key: self.reply.slice(at + 6..at + 6 + key_len),
            block: self.reply.slice(at..at + end),
        })
    }
}

/// The flags and the data of one `VALUE <key> <flags> <bytes> [<cas>]\r\n<data>\r\n`
/// block (what storing the value elsewhere needs).
pub fn value_parts(block: &[u8]) -> Option<(u32, &[u8])> {
    let l = line_len(block).ok()??;
    let header = trim_eol(block.get(..l)?).strip_prefix(b"VALUE ")?;
    let flags = u32::try_from(nth_number(header, 1)?).ok()?;
    let size = usize::try_from(nth_number(header, 2)?).ok()?;
    let data = block.get(l..l.checked_add(size)?)?;
    Some((flags, data))
}

/// How many `VALUE` blocks a complete retrieval reply holds (hits), or `None` for an error
/// line.
pub fn count_values(reply: &[u8]) -> Option<usize> {
    let mut n = 0;
    let mut at = 0;
    loop {
        let rest = reply.get(at..)?;
        let l = line_len(rest).ok()??;
        let line = trim_eol(rest.get(..l)?);
        if line == b"END" {
            return Some(n);
        }
        let header = line.strip_prefix(b"VALUE ")?;
        let size = nth_number(header, 2)?;
        at += data_end(rest, l, size).ok()??;
        n += 1;
    }
}

/// Whether a reply line says the operation failed on the server (`ERROR`, `CLIENT_ERROR`,
/// `SERVER_ERROR`), as opposed to a normal outcome.
pub fn is_error_line(reply: &[u8]) -> bool {
    reply.starts_with(b"ERROR")
        || reply.starts_with(b"CLIENT_ERROR")
        || reply.starts_with(b"SERVER_ERROR")
}

/// How bad a write's reply is, for `--write-policy all` (higher is worse): 0 success,
/// 1 a normal refusal (`NOT_STORED`, `EXISTS`, `NOT_FOUND`, meta `NS`/`EX`/`NF`), 2 an
/// error line.
pub fn write_severity(reply: &[u8]) -> u8 {
    if is_error_line(reply) {
        2
    } else if [
        &b"NOT_STORED"[..],
        b"EXISTS",
        b"NOT_FOUND",
        b"NS",
        b"EX",
        b"NF",
    ]
    .iter()
    .any(|p| reply.starts_with(p))
    {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        assert_eq!(reply_len(b"STORED\r\n", Expect::Line), Ok(Some(8)));
        assert_eq!(reply_len(b"STOR", Expect::Line), Ok(None));
        let r = b"VALUE a 0 2\r\nab\r\nVALUE b 5 3 99\r\nEND\r\nEND\r\n";
        assert_eq!(reply_len(r, Expect::Retrieval), Ok(Some(r.len())));
        for cut in 0..r.len() {
            assert_eq!(reply_len(&r[..cut], Expect::Retrieval), Ok(None), "{cut}");
        }
        assert_eq!(
            reply_len(b"SERVER_ERROR out of memory\r\nmore", Expect::Retrieval),
            Ok(Some(28))
        );
        assert!(reply_len(b"VALUE a 0 2\r\nabc\r\n", Expect::Retrieval).is_err());
        let m = b"VA 2 f1\r\nMN\r\nMN\r\n";
        assert_eq!(reply_len(m, Expect::Meta), Ok(Some(13)));
        assert_eq!(reply_len(m, Expect::UntilMn), Ok(Some(m.len())));
        assert_eq!(reply_len(b"MN\r\n", Expect::UntilMn), Ok(Some(4)));
        assert_eq!(reply_len(b"HD\r\nMN", Expect::UntilMn), Ok(None));
        assert!(reply_len(&[b'x'; 9000], Expect::Line).is_err());
    }

    #[test]
    fn resumed_framing_matches_framing_from_the_start() {
        let replies: [(Expect, &[u8]); 4] = [
            (
                Expect::Retrieval,
                b"VALUE a 0 2\r\nab\r\nVALUE bb 5 3 99\r\nxyz\r\nEND\r\n",
            ),
            (Expect::Retrieval, b"SERVER_ERROR busy\r\n"),
            (Expect::UntilMn, b"HD\r\nVA 2 f1\r\nab\r\nEN\r\nMN\r\n"),
            (Expect::Meta, b"VA 3\r\nabc\r\n"),
        ];
        for (expect, reply) in replies {
            let mut stream = reply.to_vec();
            stream.extend_from_slice(b"END\r\n");
            // The buffer grows by `step` bytes per read; the resume point carries over.
            for step in 1..=reply.len() {
                let mut resume = 0;
                let mut seen = None;
                for end in (step..stream.len() + step).step_by(step) {
                    let buf = &stream[..end.min(stream.len())];
                    let framed = frame_reply(buf, expect, &mut resume).unwrap();
                    assert!(resume <= buf.len());
                    assert_eq!(
                        framed == Framed::Partial,
                        reply_len(buf, expect) == Ok(None)
                    );
                    if let Framed::Complete(len) = framed {
                        seen = Some(len);
                        break;
                    }
                }
                assert_eq!(seen, Some(reply.len()), "{expect:?} in {step}-byte reads");
            }
        }
    }

    #[test]
    fn header_numbers() {
        assert_eq!(nth_number(b"key 0 12 99", 2), Some(12));
        assert_eq!(nth_number(b"key  0   12", 2), Some(12));
        assert_eq!(nth_number(b"key 0 18446744073709551615", 2), Some(u64::MAX));
        assert_eq!(nth_number(b"key 0 18446744073709551616", 2), None);
        assert_eq!(nth_number(b"key 0 +12", 2), None);
        assert_eq!(nth_number(b"key 0 1x", 2), None);
        assert_eq!(nth_number(b"key 0", 2), None);
    }

    #[test]
    fn blocks_and_counts() {
        let r = Bytes::from_static(b"VALUE a 0 2\r\nab\r\nVALUE bb 5 3 99\r\nEND\r\nEND\r\n");
        let blocks: Vec<_> = value_blocks(&r).unwrap().collect();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[1].key.as_ref(), b"bb");
        assert_eq!(blocks[0].block.as_ref(), b"VALUE a 0 2\r\nab\r\n");
        assert_eq!(count_values(&r), Some(2));
        assert_eq!(count_values(b"END\r\n"), Some(0));
        assert_eq!(count_values(b"SERVER_ERROR x\r\n"), None);
        assert_eq!(write_severity(b"STORED\r\n"), 0);
        assert_eq!(write_severity(b"NOT_STORED\r\n"), 1);
        assert_eq!(write_severity(b"SERVER_ERROR x\r\n"), 2);
    }

    #[test]
    fn skipping_ends_where_framing_does() {
        let cases: [(Expect, &[u8]); 7] = [
            (Expect::Line, b"STORED\r\n"),
            (
                Expect::Retrieval,
                b"VALUE a 0 3\r\nabc\r\nVALUE b 1 0\r\n\r\nEND\r\n",
            ),
            (Expect::Retrieval, b"SERVER_ERROR busy\r\n"),
            (Expect::Meta, b"VA 4 f1\r\nab\r\n\r\n"),
            (Expect::Meta, b"EN\r\n"),
            (Expect::UntilMn, b"HD\r\nVA 2\r\nMN\r\nMN\r\n"),
            (Expect::UntilMn, b"MN\r\n"),
        ];
        for (expect, reply) in cases {
            let mut stream = reply.to_vec();
            stream.extend_from_slice(b"NEXT\r\n");
            assert_eq!(reply_len(&stream, expect), Ok(Some(reply.len())));
            for chunk in [1, 3, reply.len()] {
                let mut skip = SkipReply::new(expect);
                let mut buf = Vec::new();
                let mut consumed = 0;
                let mut done = false;
                for piece in stream.chunks(chunk) {
                    buf.extend_from_slice(piece);
                    let (n, over) = skip.feed(&buf).unwrap();
                    buf.drain(..n);
                    consumed += n;
                    if over {
                        done = true;
                        break;
                    }
                }
                assert!(done, "{expect:?} {reply:?} in {chunk}-byte pieces");
                assert_eq!(consumed, reply.len(), "{expect:?} {reply:?}");
            }
        }
        // A huge value is skipped without holding it.
        let mut skip = SkipReply::new(Expect::Retrieval);
        assert_eq!(skip.feed(b"VALUE k 0 5000000000\r\nxx"), Ok((24, false)));
        assert!(
            skip.feed(b"VALUE k 0 x\r\n").is_ok(),
            "inside the block: data"
        );
        assert!(SkipReply::new(Expect::Retrieval)
            .feed(b"VALUE k 0 x\r\n")
            .is_err());
    }
}
