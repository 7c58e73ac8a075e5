//! The memcached ASCII and meta request codec for the router (synchronous, total, no IO).
//!
//! [`decode`] takes one complete request off the front of a [`BytesMut`] or says it needs
//! more bytes. A request keeps its raw bytes ([`Request::raw`]) for forwarding unchanged and
//! zero-copy slices of them for its keys; a multi-key retrieval split over several servers
//! is re-encoded with [`Request::encode_retrieval`].
//!
//! # Limits and resynchronization
//! Every limit is checked before the bytes it bounds are waited for, so a client can make
//! the connection buffer grow to at most [`Limits::max_line_bytes`] (or
//! [`Limits::max_multiget_line_bytes`] for `get`/`gets`/`gat`/`gats`) plus
//! [`Limits::max_value_bytes`] + 2.
//!
//! | condition | reply | stream |
//! |---|---|---|
//! | unknown command, empty line, a known command with a number of arguments none of its forms takes (`get`, `incr k`, `touch k`, `verbosity`, `mg`, `set k 0 0`) | `ERROR` | line consumed, continues; **closes** for storage commands and `ms` |
//! | bad key (empty, over 250 bytes; memcached checks only the length, so control characters pass), bad numbers, bad `verbosity` level, `me` without a key | `CLIENT_ERROR bad command line format` | line consumed, continues; **closes** for storage commands and `ms` (the data block length is unknown) |
//! | more keys than [`Limits::max_keys`] (memcached has no such limit) | `CLIENT_ERROR bad command line format` | continues |
//! | `delete <key> <x>`, `<x>` neither `0` nor `noreply` | `CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]` | continues |
//! | bad exptime on `touch`, `gat`, `gats`, `flush_all` | `CLIENT_ERROR invalid exptime argument` | continues |
//! | bad `incr`/`decr` delta | `CLIENT_ERROR invalid numeric delta argument` | continues |
//! | meta `b` key that is not base64 | `CLIENT_ERROR error decoding key` | continues; **closes** for `ms` |
//! | line longer than the limit | `CLIENT_ERROR line too long` | **closes** (memcached closes silently) |
//! | declared length over `INT_MAX - 2` | `CLIENT_ERROR bad command line format` | **closes** |
//! | data block over [`Limits::max_value_bytes`] | `SERVER_ERROR object too large for cache` | the caller discards [`DecodeError::swallow`] bytes (the declared block and its `\r\n`), as memcached's `conn_swallow` does, when it is at most [`Limits::max_swallow_bytes`]; otherwise **closes** |
//! | data block not followed by `\r\n` | `CLIENT_ERROR bad data chunk` | **closes**: the client and the proxy no longer agree where requests start |
//!
//! The reply strings are memcached's (1.6, `proto_text.c`), checked against a real server
//! by `tests/memcached_oracle.rs`. Like memcached, the codec accepts what looks wrong but
//! memcached takes: flags over 32 bits (memcached truncates them), any token after a
//! storage command's length or `incr`/`touch` delta (only `noreply` means anything),
//! arguments after `version`, `quit`, `mn`, `stats`, and a leading `+` on numbers. Meta
//! flags are not checked here: the server answers bad ones itself.
//!
//! ## Deliberate differences from memcached
//! - Where memcached, after an error on a storage command or a bad data chunk, goes on
//!   reading the client's data block as commands (answering `ERROR` to each line), we send
//!   the same error line and close: a proxy must not forward a client's data as commands.
//! - memcached closes silently on a line over 2048 bytes without a newline (except
//!   `get`/`gets`); we reply `CLIENT_ERROR line too long` first, and let `gat`/`gats`
//!   lines grow like `get` lines.
//! - memcached sends `SERVER_ERROR object too large for cache` once the block has been
//!   swallowed; the caller may send ours at once.
//! - A keyless `gat <exptime>` is `ERROR` (memcached answers `END`): there is no key to
//!   route it by.

use std::ops::Range;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};

/// The longest key memcached accepts.
pub const MAX_KEY_BYTES: usize = 250;

/// Bounds on what one request may make the decoder buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest command line (without its newline) for every command but multi-key reads.
    /// memcached uses 2048.
    pub max_line_bytes: usize,
    /// Longest `get`/`gets`/`gat`/`gats` line: memcached lets multigets grow without bound;
    /// we bound them.
    pub max_multiget_line_bytes: usize,
    /// Most keys in one retrieval.
    pub max_keys: usize,
    /// Largest data block (`set` and friends, `ms`), checked before it is waited for.
    pub max_value_bytes: usize,
    /// Largest over-limit data block the connection skips (memcached-style) instead of
    /// closing.
    pub max_swallow_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 2048,
            max_multiget_line_bytes: 4 << 20,
            max_keys: 10_000,
            max_value_bytes: 1 << 20,
            max_swallow_bytes: 16 << 20,
        }
    }
}

/// A request the decoder could not accept. [`DecodeError::reply`] is the line to send the
/// client; [`DecodeError::closes_connection`] says whether the stream can continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The first word is not a command we know (or the line is empty).
    #[error("unknown command")]
    UnknownCommand,
    /// Wrong arguments or a bad key. `resync` is false for storage commands, whose data
    /// block length could not be read.
    #[error("bad command line format: {reason}")]
    BadFormat {
        /// What was wrong, for logs.
        reason: &'static str,
        /// Whether the next byte starts a new request.
        resync: bool,
    },
    /// A known command with a number of arguments none of its forms takes: memcached
    /// answers `ERROR`, as for an unknown command. `resync` is false for storage commands
    /// and `ms`, whose data block length could not be read.
    #[error("wrong number of arguments")]
    WrongArguments {
        /// Whether the next byte starts a new request.
        resync: bool,
    },
    /// `delete <key> <x>` where `<x>` is neither `0` nor `noreply`.
    #[error("bad delete arguments")]
    DeleteUsage,
    /// `touch`, `gat`, `gats` or `flush_all` with an exptime that is not a number.
    #[error("invalid exptime argument")]
    InvalidExptime,
    /// A meta command's `b` (base64) key that does not decode.
    #[error("error decoding key")]
    KeyDecoding {
        /// Whether the next byte starts a new request (false for `ms`).
        resync: bool,
    },
    /// `incr`/`decr` with a delta that is not an unsigned 64-bit number.
    #[error("invalid numeric delta argument")]
    InvalidDelta,
    /// A retrieval with more keys than [`Limits::max_keys`].
    #[error("{count} keys, limit {max}")]
    TooManyKeys {
        /// Keys on the line.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The command line exceeds its limit (reported before its newline arrives).
    #[error("line longer than {max} bytes")]
    LineTooLong {
        /// The limit.
        max: usize,
    },
    /// The declared data block exceeds [`Limits::max_value_bytes`].
    #[error("data block of {declared} bytes, limit {max}")]
    ValueTooLarge {
        /// The declared length.
        declared: u64,
        /// The limit.
        max: usize,
        /// Bytes the caller must discard (block + `\r\n`), or `None` when the connection
        /// must close instead.
        swallow: Option<u64>,
    },
    /// The data block is not followed by `\r\n` (longer or shorter than declared).
    #[error("bad data chunk")]
    BadDataChunk,
}

impl DecodeError {
    /// The reply line memcached sends for this error, `\r\n` included.
    pub fn reply(&self) -> &'static [u8] {
        match self {
            DecodeError::UnknownCommand | DecodeError::WrongArguments { .. } => b"ERROR\r\n",
            DecodeError::DeleteUsage => {
                b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
            }
            DecodeError::InvalidExptime => b"CLIENT_ERROR invalid exptime argument\r\n",
            DecodeError::KeyDecoding { .. } => b"CLIENT_ERROR error decoding key\r\n",
            DecodeError::BadFormat { .. } | DecodeError::TooManyKeys { .. } => {
                b"CLIENT_ERROR bad command line format\r\n"
            }
            DecodeError::InvalidDelta => b"CLIENT_ERROR invalid numeric delta argument\r\n",
            DecodeError::LineTooLong { .. } => b"CLIENT_ERROR line too long\r\n",
            DecodeError::ValueTooLarge { .. } => b"SERVER_ERROR object too large for cache\r\n",
            DecodeError::BadDataChunk => b"CLIENT_ERROR bad data chunk\r\n",
        }
    }

    /// Whether the connection must be closed after the reply.
    pub fn closes_connection(&self) -> bool {
        match self {
            DecodeError::UnknownCommand
            | DecodeError::InvalidDelta
            | DecodeError::DeleteUsage
            | DecodeError::InvalidExptime
            | DecodeError::TooManyKeys { .. } => false,
            DecodeError::BadFormat { resync, .. }
            | DecodeError::WrongArguments { resync }
            | DecodeError::KeyDecoding { resync } => !resync,
            DecodeError::ValueTooLarge { swallow, .. } => swallow.is_none(),
            DecodeError::LineTooLong { .. } | DecodeError::BadDataChunk => true,
        }
    }

    /// Bytes the caller must skip from the stream before decoding again (see [`discard`]).
    pub fn swallow(&self) -> u64 {
        match self {
            DecodeError::ValueTooLarge {
                swallow: Some(n), ..
            } => *n,
            _ => 0,
        }
    }
}

/// Drops up to `*remaining` bytes from the front of `buf`, decreasing `*remaining`; call it
/// on every read until `*remaining` is 0, then resume [`decode`].
pub fn discard(buf: &mut BytesMut, remaining: &mut u64) {
    let n = usize::try_from(*remaining)
        .unwrap_or(usize::MAX)
        .min(buf.len());
    let _dropped = buf.split_to(n);
    *remaining -= n as u64;
}

/// The command of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `get <key>*`
    Get,
    /// `gets <key>*`
    Gets,
    /// `gat <exptime> <key>*`
    Gat,
    /// `gats <exptime> <key>*`
    Gats,
    /// `set <key> <flags> <exptime> <bytes> [noreply]` + data
    Set,
    /// `add ...` + data
    Add,
    /// `replace ...` + data
    Replace,
    /// `append ...` + data
    Append,
    /// `prepend ...` + data
    Prepend,
    /// `cas <key> <flags> <exptime> <bytes> <cas unique> [noreply]` + data
    Cas,
    /// `delete <key> [0] [noreply]`
    Delete,
    /// `incr <key> <delta> [noreply]`
    Incr,
    /// `decr <key> <delta> [noreply]`
    Decr,
    /// `touch <key> <exptime> [noreply]`
    Touch,
    /// `version`
    Version,
    /// `verbosity <level> [noreply]`
    Verbosity,
    /// `quit`
    Quit,
    /// `stats [args]`
    Stats,
    /// `flush_all [delay] [noreply]`
    FlushAll,
    /// `mg <key> <flag>*`
    MetaGet,
    /// `ms <key> <datalen> <flag>*` + data
    MetaSet,
    /// `md <key> <flag>*`
    MetaDelete,
    /// `ma <key> <flag>*`
    MetaArithmetic,
    /// `mn`
    MetaNoop,
    /// `me <key>`
    MetaDebug,
}

impl Command {
    fn from_word(w: &[u8]) -> Option<Command> {
        Some(match w {
            b"get" => Command::Get,
            b"gets" => Command::Gets,
            b"gat" => Command::Gat,
            b"gats" => Command::Gats,
            b"set" => Command::Set,
            b"add" => Command::Add,
            b"replace" => Command::Replace,
            b"append" => Command::Append,
            b"prepend" => Command::Prepend,
            b"cas" => Command::Cas,
            b"delete" => Command::Delete,
            b"incr" => Command::Incr,
            b"decr" => Command::Decr,
            b"touch" => Command::Touch,
            b"version" => Command::Version,
            b"verbosity" => Command::Verbosity,
            b"quit" => Command::Quit,
            b"stats" => Command::Stats,
            b"flush_all" => Command::FlushAll,
            b"mg" => Command::MetaGet,
            b"ms" => Command::MetaSet,
            b"md" => Command::MetaDelete,
            b"ma" => Command::MetaArithmetic,
            b"mn" => Command::MetaNoop,
            b"me" => Command::MetaDebug,
            _ => return None,
        })
    }

    /// The command word as sent on the wire.
    pub fn word(self) -> &'static str {
        match self {
            Command::Get => "get",
            Command::Gets => "gets",
            Command::Gat => "gat",
            Command::Gats => "gats",
            Command::Set => "set",
            Command::Add => "add",
            Command::Replace => "replace",
            Command::Append => "append",
            Command::Prepend => "prepend",
            Command::Cas => "cas",
            Command::Delete => "delete",
            Command::Incr => "incr",
            Command::Decr => "decr",
            Command::Touch => "touch",
            Command::Version => "version",
            Command::Verbosity => "verbosity",
            Command::Quit => "quit",
            Command::Stats => "stats",
            Command::FlushAll => "flush_all",
            Command::MetaGet => "mg",
            Command::MetaSet => "ms",
            Command::MetaDelete => "md",
            Command::MetaArithmetic => "ma",
            Command::MetaNoop => "mn",
            Command::MetaDebug => "me",
        }
    }

    /// `get`, `gets`, `gat`, `gats`: many keys, replies `VALUE` blocks and one `END`.
    pub fn is_retrieval(self) -> bool {
        matches!(
            self,
            Command::Get | Command::Gets | Command::Gat | Command::Gats
        )
    }

    /// Commands followed by a data block.
    pub fn has_data(self) -> bool {
        matches!(
            self,
            Command::Set
                | Command::Add
                | Command::Replace
                | Command::Append
                | Command::Prepend
                | Command::Cas
                | Command::MetaSet
        )
    }

    /// Meta commands (`mg`, `ms`, `md`, `ma`, `mn`, `me`).
    pub fn is_meta(self) -> bool {
        matches!(
            self,
            Command::MetaGet
                | Command::MetaSet
                | Command::MetaDelete
                | Command::MetaArithmetic
                | Command::MetaNoop
                | Command::MetaDebug
        )
    }
}

/// What the router needs from a meta command's flags (all flags stay in the raw bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaFlags {
    /// `b`: the key on the wire is base64; [`Request::keys`] holds it decoded.
    pub base64_key: bool,
    /// `q`: quiet mode (no reply for the common case; `mn` ends the pipeline).
    pub quiet: bool,
    /// `O<opaque>`: echoed in the reply.
    pub opaque: Option<Bytes>,
    /// `k`: the reply carries the key.
    pub return_key: bool,
    /// Every flag token after the key (and the length for `ms`), in order.
    pub tokens: Vec<Bytes>,
}

/// One decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    command: Command,
    raw: Bytes,
    keys: Vec<Bytes>,
    data: Option<Range<usize>>,
    exptime: Option<Bytes>,
    noreply: bool,
    meta: Option<MetaFlags>,
}

impl Request {
    /// The command.
    pub fn command(&self) -> Command {
        self.command
    }

    /// The whole request as received (command line, data block and their line ends), for
    /// forwarding unchanged to one server.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The keys to hash, in request order: the key of a meta command with `b` is decoded.
    /// Empty for `version`, `stats`, `mn` and the like.
    pub fn keys(&self) -> &[Bytes] {
        &self.keys
    }

    /// The data block without its `\r\n`, for storage commands and `ms`.
    pub fn data(&self) -> Option<Bytes> {
        self.data.clone().map(|r| self.raw.slice(r))
    }

    /// Whether the client asked for no reply (`noreply`; for meta commands see
    /// [`MetaFlags::quiet`]).
    pub fn noreply(&self) -> bool {
        self.noreply
    }

    /// The exptime token of `gat`/`gats`.
    pub fn exptime(&self) -> Option<&Bytes> {
        self.exptime.as_ref()
    }

    /// The flags of a meta command.
    pub fn meta(&self) -> Option<&MetaFlags> {
        self.meta.as_ref()
    }

    /// Writes a retrieval of the same kind (and exptime) for the keys at `indices` (into
    /// [`keys`](Self::keys)), e.g. the share of one server in a multiget. Indices out of
    /// range are skipped. Does nothing for commands that are not retrievals.
    pub fn encode_retrieval(&self, indices: &[usize], out: &mut BytesMut) {
        if !self.command.is_retrieval() {
            return;
        }
        out.put_slice(self.command.word().as_bytes());
        if let Some(e) = &self.exptime {
            out.put_u8(b' ');
            out.put_slice(e);
        }
        for key in indices.iter().filter_map(|&i| self.keys.get(i)) {
            out.put_u8(b' ');
            out.put_slice(key);
        }
        out.put_slice(b"\r\n");
    }
}

impl Request {
    /// The same retrieval (and exptime) for the keys at `indices` only, as if received that
    /// way: one route's share of a multiget. `None` for a command that is not a retrieval.
    pub fn retrieval_subset(&self, indices: &[usize]) -> Option<Request> {
        if !self.command.is_retrieval() {
            return None;
        }
        let mut raw = BytesMut::new();
        self.encode_retrieval(indices, &mut raw);
        Some(Request {
            command: self.command,
            raw: raw.freeze(),
            keys: indices
                .iter()
                .filter_map(|&i| self.keys.get(i).cloned())
                .collect(),
            data: None,
            exptime: self.exptime.clone(),
            noreply: false,
            meta: None,
        })
    }
}

fn bad(reason: &'static str) -> DecodeError {
    DecodeError::BadFormat {
        reason,
        resync: true,
    }
}

fn is_multiget_prefix(buf: &[u8]) -> bool {
    let start = buf.iter().position(|&b| b != b' ').unwrap_or(buf.len());
    let rest = buf.get(start..).unwrap_or_default();
    [&b"get "[..], b"gets ", b"gat ", b"gats "]
        .iter()
        .any(|p| rest.starts_with(p))
}

/// memcached checks only a key's length: control characters (anything but a space, which
/// separates tokens, and the newline) pass, so they pass here too.
fn valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_BYTES
}

/// An unsigned number as memcached's `safe_strtoul`/`safe_strtoull` take it: decimal
/// digits, an optional leading `+`, no sign.
fn parse_u64(token: &[u8]) -> Option<u64> {
    let digits = token.strip_prefix(b"+").unwrap_or(token);
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The largest data block length memcached parses (`vlen > INT_MAX - 2` is `CLIENT_ERROR
/// bad command line format`, not `SERVER_ERROR object too large for cache`).
const MAX_DECLARED_LEN: u64 = (i32::MAX - 2) as u64;

fn parse_i64(token: &[u8]) -> Option<i64> {
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// Splits a line on spaces (runs of spaces collapse, as in memcached), as ranges into it.
fn tokenize(line: &[u8], offset: usize) -> Vec<Range<usize>> {
    let mut tokens = Vec::new();
    let mut start = None;
    for (i, &b) in line.iter().enumerate() {
        match (b == b' ', start) {
            (true, Some(s)) => {
                tokens.push(offset + s..offset + i);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        tokens.push(offset + s..offset + line.len());
    }
    tokens
}

/// What the command line says, before the data block is there.
struct Parsed {
    command: Command,
    keys: Vec<Range<usize>>,
    decoded_key: Option<Bytes>,
    data_len: Option<usize>,
    exptime: Option<Range<usize>>,
    noreply: bool,
    meta: Option<(MetaFlagsParsed, Vec<Range<usize>>)>,
}

#[derive(Default)]
struct MetaFlagsParsed {
    base64_key: bool,
    quiet: bool,
    opaque: Option<Range<usize>>,
    return_key: bool,
}

/// Decodes one request from the front of `buf`, scanning the line from its start.
///
/// A connection should keep a [`Decoder`] instead, which resumes the newline search where
/// the previous call stopped; this is `Decoder::default().decode(buf, limits)`.
///
/// # Errors
/// As [`Decoder::decode`].
pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Request>, DecodeError> {
    Decoder::default().decode(buf, limits)
}

/// The request decoder of one connection: [`decode`] with memory of how far the command
/// line has been scanned.
///
/// # Why a scan offset
/// A multi-key read may have a command line of up to
/// [`Limits::max_multiget_line_bytes`] (4 MiB). Searching the whole buffer for its newline
/// on every read would cost O(n²) over a line that arrives in small pieces (4 MiB in 1 KiB
/// reads is 8 GB of scanning). The decoder remembers `scanned`, the number of bytes at the
/// front of the buffer known to hold no newline, and searches only what came after.
///
/// # Contract
/// Between two calls the caller may only **append** to `buf`; `scanned` is reset whenever
/// the decoder consumes bytes itself (a request, or the line of an error). A caller that
/// removes bytes some other way (a new buffer, or [`discard`] after an error, which only
/// happens once `scanned` is already 0) must call [`Decoder::reset`].
#[derive(Debug, Default, Clone)]
pub struct Decoder {
    /// Bytes at the front of the buffer that hold no `\n`.
    scanned: usize,
    /// Bytes examined for a newline over the decoder's life (a test hook for linearity).
    #[cfg(test)]
    examined: usize,
}

impl Decoder {
    /// A decoder for a fresh buffer.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Forgets the scan offset (the buffer was changed other than by appending).
    pub fn reset(&mut self) {
        self.scanned = 0;
    }

    /// Bytes at the front of the buffer already known to hold no newline.
    pub fn scanned(&self) -> usize {
        self.scanned
    }

    /// Decodes one request from the front of `buf`.
    ///
    /// Returns `Ok(None)` when more bytes are needed (nothing is consumed), `Ok(Some(_))`
    /// with the request's bytes removed from `buf`, or an error whose offending line (and
    /// data block, when it was there) has been removed; see the module docs for what to do
    /// next. Each byte of a command line is searched for the newline once, however many
    /// calls the line takes to arrive.
    ///
    /// # Errors
    /// [`DecodeError`], one variant per memcached error reply.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Request>, DecodeError> {
        // A shorter buffer than promised breaks the contract: rescan rather than misread.
        if self.scanned > buf.len() {
            self.scanned = 0;
        }
        let from = self.scanned;
        let found = buf
            .get(from..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'));
        #[cfg(test)]
        {
            self.examined += found.map_or(buf.len() - from, |i| i + 1);
        }
        let Some(nl) = found.map(|i| from + i) else {
            self.scanned = buf.len();
            let line_limit = line_limit(buf, limits);
            if buf.len() > line_limit {
                self.scanned = 0;
                return Err(DecodeError::LineTooLong { max: line_limit });
            }
            return Ok(None);
        };
        // The line is complete: waiting for its data block rescans nothing before `nl`.
        self.scanned = nl;
        let out = decode_line(buf, nl, limits);
        if !matches!(out, Ok(None)) {
            self.scanned = 0;
        }
        out
    }
}

fn line_limit(buf: &[u8], limits: &Limits) -> usize {
    if is_multiget_prefix(buf) {
        limits.max_multiget_line_bytes
    } else {
        limits.max_line_bytes
    }
}

/// Decodes the request whose command line ends with the newline at `nl`.
fn decode_line(
    buf: &mut BytesMut,
    nl: usize,
    limits: &Limits,
) -> Result<Option<Request>, DecodeError> {
    let line_limit = line_limit(buf, limits);
    let line_end = nl + 1;
    if nl > line_limit {
        let _line = buf.split_to(line_end);
        return Err(DecodeError::LineTooLong { max: line_limit });
    }
    let content_end = if nl > 0 && buf.get(nl - 1) == Some(&b'\r') {
        nl - 1
    } else {
        nl
    };
    let parsed = match buf.get(..content_end).map(|line| parse_line(line, limits)) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            let _line = buf.split_to(line_end);
            return Err(e);
        }
        None => return Err(bad("line")),
    };
    let mut total = line_end;
    let mut data = None;
    if let Some(len) = parsed.data_len {
        total = line_end + len + 2;
        if buf.len() < total {
            return Ok(None);
        }
        if buf.get(line_end + len..total) != Some(&b"\r\n"[..]) {
            let _block = buf.split_to(total);
            return Err(DecodeError::BadDataChunk);
        }
        data = Some(line_end..line_end + len);
    }
    let raw = buf.split_to(total).freeze();
    let mut keys: Vec<Bytes> = parsed.keys.iter().map(|r| raw.slice(r.clone())).collect();
    if let (Some(decoded), Some(first)) = (parsed.decoded_key, keys.first_mut()) {
        *first = decoded;
    }
    let meta = parsed.meta.map(|(m, tokens)| MetaFlags {
        base64_key: m.base64_key,
        quiet: m.quiet,
        opaque: m.opaque.map(|r| raw.slice(r)),
        return_key: m.return_key,
        tokens: tokens.into_iter().map(|r| raw.slice(r)).collect(),
    });
    Ok(Some(Request {
        command: parsed.command,
        keys,
        data,
        exptime: parsed.exptime.map(|r| raw.slice(r)),
        noreply: parsed.noreply,
        meta,
        raw,
    }))
}

fn token<'a>(line: &'a [u8], r: &Range<usize>) -> &'a [u8] {
    line.get(r.clone()).unwrap_or_default()
}

fn parse_line(line: &[u8], limits: &Limits) -> Result<Parsed, DecodeError> {
    let tokens = tokenize(line, 0);
    let Some(first) = tokens.first() else {
        return Err(DecodeError::UnknownCommand);
    };
    let command = Command::from_word(token(line, first)).ok_or(DecodeError::UnknownCommand)?;
    let args = tokens.get(1..).unwrap_or_default();
    let arg = |i: usize| args.get(i).map(|r| token(line, r));
    let is_noreply = |i: usize| arg(i) == Some(&b"noreply"[..]);
    // memcached's `set_noreply_maybe`: the last token, whatever its position.
    let last_is_noreply = args.last().is_some_and(|r| token(line, r) == b"noreply");
    let wrong = DecodeError::WrongArguments { resync: true };
    let mut p = Parsed {
        command,
        keys: Vec::new(),
        decoded_key: None,
        data_len: None,
        exptime: None,
        noreply: false,
        meta: None,
    };
    let key_at = |i: usize| -> Result<Range<usize>, DecodeError> {
        match args.get(i) {
            Some(r) if valid_key(token(line, r)) => Ok(r.clone()),
            Some(_) => Err(bad("invalid key")),
            None => Err(bad("missing key")),
        }
    };
    match command {
        Command::Get | Command::Gets | Command::Gat | Command::Gats => {
            let skip = usize::from(matches!(command, Command::Gat | Command::Gats));
            if skip == 1 {
                let e = args.first().ok_or(wrong.clone())?;
                parse_i64(token(line, e)).ok_or(DecodeError::InvalidExptime)?;
                p.exptime = Some(e.clone());
            }
            let keys = args.get(skip..).unwrap_or_default();
            if keys.is_empty() {
                // memcached answers END to a keyless `gat <exptime>`; see the module docs.
                return Err(DecodeError::UnknownCommand);
            }
            if keys.len() > limits.max_keys {
                return Err(DecodeError::TooManyKeys {
                    count: keys.len(),
                    max: limits.max_keys,
                });
            }
            for r in keys {
                if !valid_key(token(line, r)) {
                    return Err(bad("invalid key"));
                }
            }
            p.keys = keys.to_vec();
        }
        Command::Set
        | Command::Add
        | Command::Replace
        | Command::Append
        | Command::Prepend
        | Command::Cas => {
            let fatal = |reason| DecodeError::BadFormat {
                reason,
                resync: false,
            };
            let n = if command == Command::Cas { 5 } else { 4 };
            // One optional token after the fixed ones; only `noreply` means anything.
            if args.len() != n && args.len() != n + 1 {
                return Err(DecodeError::WrongArguments { resync: false });
            }
            p.keys.push(key_at(0).map_err(|_| fatal("invalid key"))?);
            let flags_ok = arg(1).and_then(parse_u64).is_some();
            let exptime_ok = arg(2).and_then(parse_i64).is_some();
            let len = arg(3).and_then(parse_u64);
            let cas_ok = command != Command::Cas || arg(4).and_then(parse_u64).is_some();
            let len = match len {
                Some(len) if flags_ok && exptime_ok && cas_ok && len <= MAX_DECLARED_LEN => len,
                _ => return Err(fatal("bad number")),
            };
            p.data_len = Some(check_len(len, limits)?);
            p.noreply = is_noreply(n);
        }
        Command::Delete => {
            if args.is_empty() || args.len() > 3 {
                return Err(wrong);
            }
            let hold_is_zero = arg(1) == Some(&b"0"[..]);
            p.noreply = last_is_noreply;
            let usage_ok = match args.len() {
                1 => true,
                2 => hold_is_zero || p.noreply,
                _ => hold_is_zero && p.noreply,
            };
            if !usage_ok {
                return Err(DecodeError::DeleteUsage);
            }
            p.keys.push(key_at(0)?);
        }
        Command::Incr | Command::Decr => {
            if args.len() != 2 && args.len() != 3 {
                return Err(wrong);
            }
            p.keys.push(key_at(0)?);
            arg(1)
                .and_then(parse_u64)
                .ok_or(DecodeError::InvalidDelta)?;
            p.noreply = is_noreply(2);
        }
        Command::Touch => {
            if args.len() != 2 && args.len() != 3 {
                return Err(wrong);
            }
            p.keys.push(key_at(0)?);
            arg(1)
                .and_then(parse_i64)
                .ok_or(DecodeError::InvalidExptime)?;
            p.noreply = is_noreply(2);
        }
        // memcached matches these on the command word alone and ignores any arguments.
        Command::Version | Command::Quit | Command::MetaNoop | Command::Stats => {}
        Command::Verbosity => {
            if args.is_empty() || args.len() > 2 {
                return Err(wrong);
            }
            arg(0).and_then(parse_u64).ok_or(bad("bad level"))?;
            p.noreply = last_is_noreply;
        }
        Command::FlushAll => {
            if args.len() > 2 {
                return Err(wrong);
            }
            p.noreply = last_is_noreply;
            if args.len() > usize::from(p.noreply) {
                arg(0)
                    .and_then(parse_i64)
                    .ok_or(DecodeError::InvalidExptime)?;
            }
        }
        Command::MetaGet
        | Command::MetaSet
        | Command::MetaDelete
        | Command::MetaArithmetic
        | Command::MetaDebug => {
            let is_set = command == Command::MetaSet;
            let key_range = match args.first() {
                Some(r) => r,
                // `me` alone is a format error, `mg`/`ms`/`md`/`ma` alone are unknown.
                None if command == Command::MetaDebug => return Err(bad("missing key")),
                None => return Err(DecodeError::WrongArguments { resync: !is_set }),
            };
            let wire_key = token(line, key_range);
            // A bad key on `ms` leaves a data block we could skip, but memcached itself
            // then treats the block as commands; we close instead.
            let key_err = DecodeError::BadFormat {
                reason: "invalid key",
                resync: !is_set,
            };
            // memcached checks the key as sent, base64 or not, before anything else.
            if !valid_key(wire_key) {
                return Err(key_err);
            }
            let flags_from = if is_set {
                let len = arg(1)
                    .and_then(parse_u64)
                    .filter(|&len| len <= MAX_DECLARED_LEN)
                    .ok_or(DecodeError::BadFormat {
                        reason: "bad length",
                        resync: false,
                    })?;
                p.data_len = Some(check_len(len, limits)?);
                2
            } else {
                1
            };
            let flag_tokens = args.get(flags_from..).unwrap_or_default().to_vec();
            let mut m = MetaFlagsParsed::default();
            for r in &flag_tokens {
                match token(line, r).first() {
                    Some(b'b') => m.base64_key = true,
                    Some(b'q') => m.quiet = true,
                    Some(b'k') => m.return_key = true,
                    Some(b'O') => m.opaque = Some(r.start + 1..r.end),
                    _ => {}
                }
            }
            if m.base64_key {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(wire_key)
                    .map_err(|_| DecodeError::KeyDecoding { resync: !is_set })?;
                if !(1..=MAX_KEY_BYTES).contains(&decoded.len()) {
                    return Err(key_err);
                }
                p.decoded_key = Some(Bytes::from(decoded));
            }
            p.keys.push(key_range.clone());
            p.meta = Some((m, flag_tokens));
        }
    }
    if command == Command::MetaNoop {
        p.meta = Some((MetaFlagsParsed::default(), Vec::new()));
    }
    Ok(p)
}

fn check_len(declared: u64, limits: &Limits) -> Result<usize, DecodeError> {
    match usize::try_from(declared) {
        Ok(len) if len <= limits.max_value_bytes => Ok(len),
        _ => Err(DecodeError::ValueTooLarge {
            declared,
            max: limits.max_value_bytes,
            swallow: declared
                .checked_add(2)
                .filter(|&n| n <= limits.max_swallow_bytes),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &[u8]) -> Result<Option<Request>, DecodeError> {
        let mut buf = BytesMut::from(input);
        decode(&mut buf, &Limits::default())
    }

    fn ok(input: &[u8]) -> Request {
        let mut buf = BytesMut::from(input);
        let req = decode(&mut buf, &Limits::default()).unwrap().unwrap();
        assert!(buf.is_empty(), "left over: {buf:?}");
        assert_eq!(req.raw().as_ref(), input);
        req
    }

    fn keys(req: &Request) -> Vec<&[u8]> {
        req.keys().iter().map(|k| k.as_ref()).collect()
    }

    /// Every command, in one pipeline.
    const PIPELINE: &[&[u8]] = &[
        b"get a\r\n",
        b"get a b c\r\n",
        b"gets a  b\r\n",
        b"gat 100 a b\r\n",
        b"gats -1 a\r\n",
        b"set k 5 0 3\r\nabc\r\n",
        b"add k 0 10 0 noreply\r\n\r\n",
        b"replace k 0 0 2\r\n\r\n\r\n",
        b"append k 0 0 1\r\nx\r\n",
        b"prepend k 0 0 1\ny\r\n",
        b"cas k 0 0 3 12345\r\nabc\r\n",
        b"cas k 0 0 3 12345 noreply\r\nabc\r\n",
        b"delete k\r\n",
        b"delete k noreply\r\n",
        b"delete k 0\r\n",
        b"incr k 1\r\n",
        b"decr k 18446744073709551615 noreply\r\n",
        b"touch k 10\r\n",
        b"version\r\n",
        b"verbosity 1\r\n",
        b"verbosity 1 noreply\r\n",
        b"stats\r\n",
        b"stats slabs\r\n",
        b"flush_all\r\n",
        b"flush_all 10 noreply\r\n",
        b"mg k v f t\r\n",
        b"mg a2V5 b v k Oabc q\r\n",
        b"ms k 3 T10 F5\r\nabc\r\n",
        b"md k q\r\n",
        b"ma k N0 J13 D2\r\n",
        b"me k\r\n",
        b"mn\r\n",
        b"quit\r\n",
    ];

    #[test]
    fn every_command() {
        let r = ok(b"get a b c\r\n");
        assert_eq!(r.command(), Command::Get);
        assert_eq!(keys(&r), [b"a", b"b", b"c"]);
        let r = ok(b"gat 100 a b\r\n");
        assert_eq!(r.command(), Command::Gat);
        assert_eq!(r.exptime().unwrap().as_ref(), b"100");
        assert_eq!(keys(&r), [b"a", b"b"]);
        let r = ok(b"gets a  b\r\n");
        assert_eq!((r.command(), keys(&r).len()), (Command::Gets, 2));
        let r = ok(b"set k 5 0 3\r\nabc\r\n");
        assert_eq!(r.command(), Command::Set);
        assert_eq!(keys(&r), [b"k"]);
        assert_eq!(r.data().unwrap().as_ref(), b"abc");
        assert!(!r.noreply());
        let r = ok(b"add k 0 10 0 noreply\r\n\r\n");
        assert_eq!(r.data().unwrap().as_ref(), b"");
        assert!(r.noreply());
        // The data block may hold \r\n itself.
        let r = ok(b"replace k 0 0 2\r\n\r\n\r\n");
        assert_eq!(r.data().unwrap().as_ref(), b"\r\n");
        let r = ok(b"cas k 0 0 3 12345 noreply\r\nabc\r\n");
        assert_eq!((r.command(), r.noreply()), (Command::Cas, true));
        assert_eq!(ok(b"delete k 0\r\n").command(), Command::Delete);
        assert!(ok(b"delete k noreply\r\n").noreply());
        assert_eq!(ok(b"incr k 1\r\n").command(), Command::Incr);
        let r = ok(b"decr k 18446744073709551615 noreply\r\n");
        assert_eq!((r.command(), r.noreply()), (Command::Decr, true));
        assert_eq!(ok(b"touch k 10\r\n").command(), Command::Touch);
        for (line, cmd) in [
            (&b"version\r\n"[..], Command::Version),
            (b"verbosity 1\r\n", Command::Verbosity),
            (b"stats\r\n", Command::Stats),
            (b"stats slabs\r\n", Command::Stats),
            (b"flush_all\r\n", Command::FlushAll),
            (b"quit\r\n", Command::Quit),
            (b"mn\r\n", Command::MetaNoop),
            // A bare \n ends a line too, as in memcached.
            (b"version\n", Command::Version),
        ] {
            let r = ok(line);
            assert_eq!(r.command(), cmd);
            assert!(r.keys().is_empty());
        }
        assert!(ok(b"flush_all 10 noreply\r\n").noreply());
    }

    #[test]
    fn meta_commands() {
        let r = ok(b"mg a2V5 b v k Oabc q\r\n");
        assert_eq!(r.command(), Command::MetaGet);
        assert_eq!(keys(&r), [b"key"], "b: the hashed key is decoded");
        let m = r.meta().unwrap();
        assert!(m.base64_key && m.quiet && m.return_key);
        assert_eq!(m.opaque.as_ref().unwrap().as_ref(), b"abc");
        assert_eq!(m.tokens.len(), 5);
        let r = ok(b"ms k 3 T10 F5\r\nabc\r\n");
        assert_eq!(r.command(), Command::MetaSet);
        assert_eq!(r.data().unwrap().as_ref(), b"abc");
        assert_eq!(r.meta().unwrap().tokens.len(), 2);
        assert!(ok(b"md k q\r\n").meta().unwrap().quiet);
        assert_eq!(ok(b"ma k N0 J13 D2\r\n").command(), Command::MetaArithmetic);
        assert_eq!(ok(b"me k\r\n").command(), Command::MetaDebug);
        // Bad base64.
        let e = one(b"mg !!!! b v\r\n").unwrap_err();
        assert_eq!(e.reply(), b"CLIENT_ERROR error decoding key\r\n");
        assert!(!e.closes_connection());
        // A decoded key over 250 bytes.
        let long = base64::engine::general_purpose::STANDARD.encode([b'k'; 251]);
        let line = format!("mg {long} b v\r\n");
        assert!(matches!(
            one(line.as_bytes()),
            Err(DecodeError::BadFormat { .. })
        ));
        // "mg  b" is the key "b" without flags (spaces collapse).
        assert_eq!(keys(&ok(b"mg  b\r\n")), [b"b"]);
        // ms without a length cannot be resynchronized.
        let e = one(b"ms k\r\nabc\r\n").unwrap_err();
        assert!(e.closes_connection());
    }

    fn decode_all(buf: &mut BytesMut) -> Vec<Request> {
        let mut out = Vec::new();
        while let Some(r) = decode(buf, &Limits::default()).unwrap() {
            out.push(r);
        }
        out
    }

    #[test]
    fn pipeline_whole_and_byte_by_byte() {
        let all: Vec<u8> = PIPELINE.concat();
        let whole = decode_all(&mut BytesMut::from(&all[..]));
        assert_eq!(whole.len(), PIPELINE.len());
        for (r, raw) in whole.iter().zip(PIPELINE) {
            assert_eq!(r.raw().as_ref(), *raw);
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in &all {
            buf.put_u8(b);
            got.extend(decode_all(&mut buf));
        }
        assert!(buf.is_empty());
        assert_eq!(got, whole);
    }

    #[test]
    fn pipeline_split_at_every_boundary() {
        let all: Vec<u8> = PIPELINE.concat();
        let whole = decode_all(&mut BytesMut::from(&all[..]));
        for cut in 0..=all.len() {
            let mut buf = BytesMut::from(&all[..cut]);
            let mut got = decode_all(&mut buf);
            buf.extend_from_slice(&all[cut..]);
            got.extend(decode_all(&mut buf));
            assert_eq!(got, whole, "cut at {cut}");
        }
    }

    #[test]
    fn malformed_lines() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"bogus\r\n", b"ERROR\r\n", false),
            (b"\r\n", b"ERROR\r\n", false),
            (b"get\r\n", b"ERROR\r\n", false),
            (b"GET k\r\n", b"ERROR\r\n", false),
            (b"verbosity\r\n", b"ERROR\r\n", false),
            (
                b"verbosity x\r\n",
                b"CLIENT_ERROR bad command line format\r\n",
                false,
            ),
            (
                b"delete k 5\r\n",
                b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
                false,
            ),
            (b"touch k\r\n", b"ERROR\r\n", false),
            (
                b"touch k x\r\n",
                b"CLIENT_ERROR invalid exptime argument\r\n",
                false,
            ),
            (
                b"gat x k\r\n",
                b"CLIENT_ERROR invalid exptime argument\r\n",
                false,
            ),
            (
                b"flush_all x\r\n",
                b"CLIENT_ERROR invalid exptime argument\r\n",
                false,
            ),
            (
                b"incr k x\r\n",
                b"CLIENT_ERROR invalid numeric delta argument\r\n",
                false,
            ),
            (
                b"incr k -1\r\n",
                b"CLIENT_ERROR invalid numeric delta argument\r\n",
                false,
            ),
            (b"set k 0 0\r\n", b"ERROR\r\n", true),
            (
                b"set k 0 0 -1\r\n",
                b"CLIENT_ERROR bad command line format\r\n",
                true,
            ),
            (
                b"set k x 0 1\r\n",
                b"CLIENT_ERROR bad command line format\r\n",
                true,
            ),
            (
                b"set k -1 0 1\r\n",
                b"CLIENT_ERROR bad command line format\r\n",
                true,
            ),
            (
                b"set k 0 0 2147483646\r\n",
                b"CLIENT_ERROR bad command line format\r\n",
                true,
            ),
            (b"cas k 0 0 1\r\n", b"ERROR\r\n", true),
            (b"set k 0 0 1 noreply x\r\n", b"ERROR\r\n", true),
        ];
        for (input, reply, closes) in cases {
            let mut buf = BytesMut::from(*input);
            buf.extend_from_slice(b"version\r\n");
            let e = decode(&mut buf, &Limits::default()).unwrap_err();
            assert_eq!(e.reply(), *reply, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(e.closes_connection(), *closes, "{e:?}");
            // The bad line is gone; the next request decodes.
            let next = decode(&mut buf, &Limits::default()).unwrap().unwrap();
            assert_eq!(next.command(), Command::Version);
        }
        // Key length: 250 is fine, 251 is not.
        let long = |n: usize| [&b"get "[..], &vec![b'k'; n], b"\r\n"].concat();
        assert_eq!(ok(&long(250)).keys()[0].len(), 250);
        assert!(matches!(
            one(&long(251)),
            Err(DecodeError::BadFormat { .. })
        ));
        // Keys with bytes >= 0x80 are fine, and so are control characters: memcached
        // checks only the length.
        assert_eq!(keys(&ok("get clé\r\n".as_bytes())), ["clé".as_bytes()]);
        assert_eq!(
            keys(&ok(b"get a\x01b c\x7f\r\n")),
            [&b"a\x01b"[..], b"c\x7f"]
        );
        // What memcached accepts although it looks wrong: flags over 32 bits (it truncates
        // them), any token after the length, arguments after `version`.
        assert!(ok(b"set k 4294967296 0 1\r\na\r\n").data().is_some());
        assert!(!ok(b"set k 0 0 1 maybe\r\na\r\n").noreply());
        assert_eq!(ok(b"set k 0 0 +1\r\na\r\n").data().unwrap().as_ref(), b"a");
        assert_eq!(ok(b"version x\r\n").command(), Command::Version);
        assert!(!ok(b"incr k 1 maybe\r\n").noreply());
        assert!(ok(b"flush_all 1 noreply\r\n").noreply());
    }

    #[test]
    fn data_chunk_errors() {
        let e = one(b"set k 0 0 3\r\nabcd\r\n").unwrap_err();
        assert_eq!(e.reply(), b"CLIENT_ERROR bad data chunk\r\n");
        assert!(e.closes_connection());
        let e = one(b"set k 0 0 3\r\nab\r\n\r\n").unwrap_err();
        assert_eq!(e, DecodeError::BadDataChunk);
        // Not there yet: nothing consumed.
        let mut buf = BytesMut::from(&b"set k 0 0 3\r\nab"[..]);
        assert_eq!(decode(&mut buf, &Limits::default()), Ok(None));
        assert_eq!(buf.len(), 15);
    }

    #[test]
    fn two_gigabyte_length_closes_without_allocating() {
        // Past INT_MAX - 2 memcached cannot parse the length at all.
        let mut buf = BytesMut::from(&b"set k 0 0 2147483648\r\nxxxx"[..]);
        let e = decode(&mut buf, &Limits::default()).unwrap_err();
        assert_eq!(e.reply(), b"CLIENT_ERROR bad command line format\r\n");
        assert!(e.closes_connection());
        assert_eq!(e.swallow(), 0);
        assert_eq!(buf.as_ref(), b"xxxx", "only the line was consumed");
        // Up to it, the item is too large, but too much to skip.
        let mut buf = BytesMut::from(&b"set k 0 0 2147483645\r\nxxxx"[..]);
        let e = decode(&mut buf, &Limits::default()).unwrap_err();
        assert_eq!(e.reply(), b"SERVER_ERROR object too large for cache\r\n");
        assert!(e.closes_connection());
        assert_eq!(e.swallow(), 0);
        assert_eq!(buf.as_ref(), b"xxxx", "only the line was consumed");
        let e = one(b"ms k 99999999999999999999999 T0\r\n").unwrap_err();
        assert!(e.closes_connection(), "{e:?}");
    }

    #[test]
    fn too_large_value_is_swallowed() {
        let limits = Limits {
            max_value_bytes: 10,
            ..Limits::default()
        };
        let mut input = b"set k 0 0 20\r\n".to_vec();
        input.extend_from_slice(&[b'v'; 20]);
        input.extend_from_slice(b"\r\nget k\r\n");
        let mut buf = BytesMut::new();
        let mut remaining = 0u64;
        let mut got = Vec::new();
        let mut errors = Vec::new();
        for &b in &input {
            buf.put_u8(b);
            loop {
                if remaining > 0 {
                    discard(&mut buf, &mut remaining);
                    if remaining > 0 {
                        break;
                    }
                }
                match decode(&mut buf, &limits) {
                    Ok(Some(r)) => got.push(r.command()),
                    Ok(None) => break,
                    Err(e) => {
                        assert!(!e.closes_connection());
                        remaining = e.swallow();
                        errors.push(e);
                    }
                }
            }
        }
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].swallow(), 22);
        assert_eq!(got, [Command::Get]);
    }

    #[test]
    fn ten_thousand_keys() {
        let mut line = b"get".to_vec();
        for i in 0..10_000 {
            line.extend_from_slice(format!(" key:{i}").as_bytes());
        }
        line.extend_from_slice(b"\r\n");
        let r = ok(&line);
        assert_eq!(r.keys().len(), 10_000);
        assert_eq!(r.keys()[9_999].as_ref(), b"key:9999");
        let limits = Limits {
            max_keys: 100,
            ..Limits::default()
        };
        let mut buf = BytesMut::from(&line[..]);
        let e = decode(&mut buf, &limits).unwrap_err();
        assert_eq!(
            e,
            DecodeError::TooManyKeys {
                count: 10_000,
                max: 100
            }
        );
        assert!(!e.closes_connection());
        assert!(buf.is_empty());
        // A short multiget line limit: reported before the newline.
        let limits = Limits {
            max_multiget_line_bytes: 1000,
            ..Limits::default()
        };
        let mut buf = BytesMut::from(&line[..2000]);
        let e = decode(&mut buf, &limits).unwrap_err();
        assert!(matches!(e, DecodeError::LineTooLong { max: 1000 }));
    }

    #[test]
    fn unterminated_lines() {
        // A long get line without its newline is waited for...
        let mut buf = BytesMut::from(&[&b"get "[..], &[b'k'; 3000]].concat()[..]);
        assert_eq!(decode(&mut buf, &Limits::default()), Ok(None));
        // ...any other line is refused past 2048 bytes, before its newline arrives.
        let mut buf = BytesMut::from(&[b'x'; 2048][..]);
        assert_eq!(decode(&mut buf, &Limits::default()), Ok(None));
        buf.put_u8(b'x');
        let e = decode(&mut buf, &Limits::default()).unwrap_err();
        assert_eq!(e.reply(), b"CLIENT_ERROR line too long\r\n");
        assert!(e.closes_connection());
        let mut buf = BytesMut::from(&[&b"set k 0 0 1 "[..], &[b' '; 3000], b"\r\n"].concat()[..]);
        assert!(matches!(
            decode(&mut buf, &Limits::default()),
            Err(DecodeError::LineTooLong { .. })
        ));
        // Nothing at all, or a partial line: need more.
        assert_eq!(one(b""), Ok(None));
        assert_eq!(one(b"get k\r"), Ok(None));
    }

    #[test]
    fn a_retrieval_subset_is_the_request_as_if_received_with_those_keys() {
        let r = ok(b"gat 30 a b c\r\n");
        let sub = r.retrieval_subset(&[2, 0]).unwrap();
        assert_eq!(sub, ok(b"gat 30 c a\r\n"));
        assert!(ok(b"set k 0 0 1\r\nx\r\n").retrieval_subset(&[0]).is_none());
    }

    #[test]
    fn encode_retrieval_subsets() {
        let r = ok(b"gats 30 a b c\r\n");
        let mut out = BytesMut::new();
        r.encode_retrieval(&[0, 2, 7], &mut out);
        assert_eq!(out.as_ref(), b"gats 30 a c\r\n");
        let r = ok(b"get a b\r\n");
        let mut out = BytesMut::new();
        r.encode_retrieval(&[1], &mut out);
        assert_eq!(out.as_ref(), b"get b\r\n");
        let mut out = BytesMut::new();
        ok(b"delete a\r\n").encode_retrieval(&[0], &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn never_panics_on_noise() {
        // A cheap stand-in for the fuzz target: every prefix and every byte value.
        let all: Vec<u8> = PIPELINE.concat();
        for i in 0..all.len() {
            for b in [0u8, b' ', b'\r', b'\n', 0x80, 0xff, b'9'] {
                let mut v = all.clone();
                v[i] = b;
                let mut buf = BytesMut::from(&v[..]);
                for _ in 0..100 {
                    match decode(&mut buf, &Limits::default()) {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) if e.closes_connection() => break,
                        Err(e) => {
                            let mut n = e.swallow();
                            discard(&mut buf, &mut n);
                        }
                    }
                }
            }
        }
    }

    /// Feeds `input` to one [`Decoder`] `chunk` bytes at a time, as reads would; returns the
    /// requests and the bytes examined for newlines. While the first `line_len - 1` bytes
    /// (a line without its newline) arrive, checks that everything buffered is scanned.
    fn feed(input: &[u8], chunk: usize, line_len: usize) -> (Vec<Request>, usize) {
        let mut d = Decoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            fed += piece.len();
            while let Some(req) = d.decode(&mut buf, &Limits::default()).unwrap() {
                out.push(req);
            }
            if fed < line_len {
                // Time-free proof of resumption: the next call starts after these bytes.
                assert_eq!(d.scanned(), buf.len());
            }
        }
        assert!(buf.is_empty());
        (out, d.examined)
    }

    #[test]
    fn a_long_line_in_small_pieces_is_scanned_once() {
        // A 2 MB `get` line (10,000 keys of 199 bytes), then a small request behind it.
        let key = vec![b'x'; 199];
        let mut line = b"get".to_vec();
        for _ in 0..10_000 {
            line.push(b' ');
            line.extend_from_slice(&key);
        }
        line.extend_from_slice(b"\r\n");
        assert!(line.len() > 2_000_000);
        let mut input = line.clone();
        input.extend_from_slice(b"set k 0 0 3\r\nabc\r\nmn\r\n");
        for chunk in [1, 1024] {
            let (reqs, examined) = feed(&input, chunk, line.len());
            assert_eq!(reqs.len(), 3);
            assert_eq!(reqs[0].keys().len(), 10_000);
            assert_eq!(reqs[0].raw().len(), line.len());
            assert_eq!(reqs[1].data().as_deref(), Some(&b"abc"[..]));
            // Linear: every byte searched about once (a rescan per read would be
            // ~2 * 10^12 bytes in 1-byte pieces, ~2 * 10^9 in 1 KiB pieces).
            assert!(
                examined <= 2 * input.len(),
                "chunk {chunk}: examined {examined} bytes for {}",
                input.len()
            );
        }
    }

    #[test]
    fn scan_offset_survives_a_waiting_data_block_and_resets_after_a_request() {
        let mut d = Decoder::new();
        let mut buf = BytesMut::from(&b"set k 0 0 5\r\nab"[..]);
        assert_eq!(d.decode(&mut buf, &Limits::default()), Ok(None));
        assert_eq!(d.scanned(), 12, "stops at the line's newline");
        buf.extend_from_slice(b"cde\r\nget k");
        let req = d.decode(&mut buf, &Limits::default()).unwrap().unwrap();
        assert_eq!(req.data().as_deref(), Some(&b"abcde"[..]));
        assert_eq!(d.scanned(), 0);
        assert_eq!(d.decode(&mut buf, &Limits::default()), Ok(None));
        assert_eq!(d.scanned(), 5);
        // A buffer shorter than the offset (the contract broken) is rescanned, not misread.
        let mut other = BytesMut::from(&b"mn\r\n"[..]);
        let req = d.decode(&mut other, &Limits::default()).unwrap().unwrap();
        assert_eq!(req.command(), Command::MetaNoop);
        // An error consumes its line and resets the offset.
        let mut buf = BytesMut::from(&b"bogus\r\nmn\r\n"[..]);
        assert_eq!(
            d.decode(&mut buf, &Limits::default()),
            Err(DecodeError::UnknownCommand)
        );
        assert_eq!(d.scanned(), 0);
        assert!(d.decode(&mut buf, &Limits::default()).unwrap().is_some());
    }
}
