//! A tiny RESP2 client for tests: enough to probe and drive Redis, not a product codec.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long [`RespClient`] waits for a connection or a reply before giving up, so a test
/// against a hung server fails instead of hanging.
pub const RESP_TIMEOUT: Duration = Duration::from_secs(10);

/// Deepest array nesting accepted in a reply.
const MAX_DEPTH: usize = 16;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    /// `+OK`
    Simple(String),
    /// `-ERR ...` (without the leading `-`).
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`; `None` is the null bulk `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...`; `None` is the null array `*-1`.
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// True for the simple string `OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Resp::Simple(s) if s == "OK")
    }

    /// True for an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Resp::Error(_))
    }

    /// True for a null bulk string or null array.
    pub fn is_null(&self) -> bool {
        matches!(self, Resp::Bulk(None) | Resp::Array(None))
    }

    /// The bytes of a simple string, error or non-null bulk string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Resp::Simple(s) | Resp::Error(s) => Some(s.as_bytes()),
            Resp::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }

    /// [`as_bytes`](Self::as_bytes) as UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The value of an integer reply.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Resp::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The elements of a non-null array.
    pub fn as_array(&self) -> Option<&[Resp]> {
        match self {
            Resp::Array(Some(items)) => Some(items),
            _ => None,
        }
    }

    /// Encodes a command as an array of bulk strings.
    pub fn encode_command<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            let arg = arg.as_ref();
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Parses one reply from the front of `buf`: `Ok(None)` when more bytes are needed,
    /// otherwise the reply and how many bytes it used.
    ///
    /// # Errors
    /// On malformed input or nesting deeper than 16.
    pub fn parse(buf: &[u8]) -> Result<Option<(Resp, usize)>> {
        parse_at(buf, 0, 0)
    }
}

fn line_at(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(pos..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((rest.get(..end)?, pos + end + 2))
}

fn parse_int(bytes: &[u8]) -> Result<i64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad RESP integer {:?}", String::from_utf8_lossy(bytes)))
}

fn parse_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Resp, usize)>> {
    if depth > MAX_DEPTH {
        bail!("RESP reply nested deeper than {MAX_DEPTH}");
    }
    let Some((line, next)) = line_at(buf, pos) else {
        return Ok(None);
    };
    let (&kind, body) = line
        .split_first()
        .ok_or_else(|| anyhow!("empty RESP line"))?;
    let text = || String::from_utf8_lossy(body).into_owned();
    match kind {
        b'+' => Ok(Some((Resp::Simple(text()), next))),
        b'-' => Ok(Some((Resp::Error(text()), next))),
        b':' => Ok(Some((Resp::Integer(parse_int(body)?), next))),
        b'$' => {
            let len = parse_int(body)?;
            if len < 0 {
                return Ok(Some((Resp::Bulk(None), next)));
            }
            let len = usize::try_from(len)?;
            let end = next
                .checked_add(len)
                .ok_or_else(|| anyhow!("bulk too long"))?;
            match (buf.get(next..end), buf.get(end..end + 2)) {
                (Some(data), Some(b"\r\n")) => Ok(Some((Resp::Bulk(Some(data.to_vec())), end + 2))),
                (Some(_), Some(_)) => bail!("bulk string not followed by CRLF"),
                _ => Ok(None),
            }
        }
        b'*' => {
            let count = parse_int(body)?;
            if count < 0 {
                return Ok(Some((Resp::Array(None), next)));
            }
            let mut items = Vec::new();
            let mut at = next;
            for _ in 0..count {
                match parse_at(buf, at, depth + 1)? {
                    Some((item, after)) => {
                        items.push(item);
                        at = after;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Resp::Array(Some(items)), at)))
        }
        other => bail!("unsupported RESP type byte {:?}", other as char),
    }
}

/// A connection to a Redis server (or to a Redis proxy under test) that sends commands
/// and reads replies one at a time. Every step times out after [`RESP_TIMEOUT`].
#[derive(Debug)]
pub struct RespClient {
    stream: TcpStream,
    addr: SocketAddr,
    buf: BytesMut,
}

impl RespClient {
    /// Connects to `addr`.
    ///
    /// # Errors
    /// When the connection is refused or times out.
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = tokio::time::timeout(RESP_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr} timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(RespClient {
            stream,
            addr,
            buf: BytesMut::with_capacity(4096),
        })
    }

    /// The address this client is connected to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one command and reads its reply. An error *reply* (`-ERR ...`) is returned
    /// as `Ok(Resp::Error(..))`, not as `Err`.
    ///
    /// # Errors
    /// On IO errors, timeouts, a closed connection or a malformed reply.
    pub async fn command<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Resp> {
        let mut out = Vec::new();
        Resp::encode_command(args, &mut out);
        self.send_raw(&out).await?;
        self.read_reply().await
    }

    /// Writes raw bytes (several pipelined commands, or deliberately broken input).
    ///
    /// # Errors
    /// On IO errors or a timeout.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        tokio::time::timeout(RESP_TIMEOUT, self.stream.write_all(bytes))
            .await
            .map_err(|_| anyhow!("writing to {} timed out", self.addr))?
            .with_context(|| format!("writing to {}", self.addr))
    }

    /// Reads the next reply.
    ///
    /// # Errors
    /// On IO errors, a timeout, EOF or a malformed reply.
    pub async fn read_reply(&mut self) -> Result<Resp> {
        loop {
            if let Some((reply, used)) = Resp::parse(&self.buf)? {
                self.buf.advance(used);
                return Ok(reply);
            }
            let n = tokio::time::timeout(RESP_TIMEOUT, self.stream.read_buf(&mut self.buf))
                .await
                .map_err(|_| anyhow!("reading from {} timed out", self.addr))?
                .with_context(|| format!("reading from {}", self.addr))?;
            if n == 0 {
                bail!("{} closed the connection", self.addr);
            }
        }
    }
}

/// Connects to `addr`, sends one command and returns its reply.
///
/// # Errors
/// As [`RespClient::connect`] and [`RespClient::command`].
pub async fn command<A: AsRef<[u8]>>(addr: SocketAddr, args: &[A]) -> Result<Resp> {
    RespClient::connect(addr).await?.command(args).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_and_partial() {
        let full = b"*3\r\n$3\r\nfoo\r\n:7\r\n*-1\r\n+OK\r\n";
        let (reply, used) = Resp::parse(full).unwrap().unwrap();
        assert_eq!(
            reply,
            Resp::Array(Some(vec![
                Resp::Bulk(Some(b"foo".to_vec())),
                Resp::Integer(7),
                Resp::Array(None)
            ]))
        );
        assert_eq!(&full[used..], b"+OK\r\n");
        for cut in 0..used {
            assert!(Resp::parse(&full[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        assert!(Resp::parse(b"$3\r\nfooXX").is_err());
        assert!(Resp::parse(b"?x\r\n").is_err());
    }
}
