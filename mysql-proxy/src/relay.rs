//! After login: frames relayed both ways as they come, without re-encoding. Backend to
//! client is a plain byte copy; client to backend is scanned packet by packet so that
//! COM_INIT_DB is checked against the grants again and COM_CHANGE_USER is refused. Split
//! packets (16 MB payloads) pass through in pieces, never buffered whole.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::packet::{err_payload, frame, payload_len, MAX_PAYLOAD};

const COM_INIT_DB: u8 = 0x02;
const COM_CHANGE_USER: u8 = 0x11;
/// Longest intercepted command packet kept whole (a schema name is at most 64 chars).
const INTERCEPT_LIMIT: usize = 64 * 1024;
const READ_CHUNK: usize = 32 * 1024;

/// How the relay decides about an intercepted COM_INIT_DB.
pub trait InitDbCheck: Sync {
    /// `Ok(())` forwards the command; `Err((code, state, message))` answers it with an error.
    fn check(&self, schema: &str) -> Result<(), (u16, [u8; 5], String)>;
}

/// Why a relay ended.
#[derive(Debug)]
pub enum End {
    ClientClosed,
    BackendClosed,
    Idle,
    Kicked,
    ClientError(io::Error),
    BackendError(io::Error),
    Protocol(&'static str),
}

impl End {
    pub fn reason(&self) -> String {
        match self {
            End::ClientClosed => "client closed".into(),
            End::BackendClosed => "backend closed".into(),
            End::Idle => "idle timeout".into(),
            End::Kicked => "closed by the proxy".into(),
            End::ClientError(e) => format!("client i/o: {e}"),
            End::BackendError(e) => format!("backend i/o: {e}"),
            End::Protocol(p) => format!("protocol: {p}"),
        }
    }
}

/// Byte counters for one session.
pub struct Counters {
    pub to_backend: metrics::Counter,
    pub to_client: metrics::Counter,
}

/// Where the scanner is in the client's packet stream.
#[derive(Default)]
struct Scanner {
    /// Bytes of the current packet (header included) still to pass through.
    passthrough: usize,
    /// The last packet had a 0xFF_FFFF payload: the next one continues it.
    continuing: bool,
}

struct Intercept {
    seq: u8,
    payload: Vec<u8>,
    total: usize,
}

impl Scanner {
    /// Returns how many leading bytes of `buf` can be forwarded as they are, and a command
    /// packet right after them that must be handled by the proxy.
    fn scan(&mut self, buf: &[u8]) -> Result<(usize, Option<Intercept>), &'static str> {
        let mut pos = 0;
        loop {
            if self.passthrough > 0 {
                let take = self.passthrough.min(buf.len() - pos);
                pos += take;
                self.passthrough -= take;
                if self.passthrough > 0 {
                    return Ok((pos, None));
                }
                continue;
            }
            let rest = &buf[pos..];
            if rest.len() < 4 {
                return Ok((pos, None));
            }
            let len = payload_len(rest);
            if !self.continuing && len > 0 {
                let Some(&cmd) = rest.get(4) else {
                    return Ok((pos, None));
                };
                if cmd == COM_INIT_DB || cmd == COM_CHANGE_USER {
                    if len > INTERCEPT_LIMIT {
                        return Err("oversized COM_INIT_DB/COM_CHANGE_USER");
                    }
                    if rest.len() < 4 + len {
                        return Ok((pos, None));
                    }
                    return Ok((
                        pos,
                        Some(Intercept {
                            seq: rest[3],
                            payload: rest[4..4 + len].to_vec(),
                            total: 4 + len,
                        }),
                    ));
                }
            }
            self.continuing = len == MAX_PAYLOAD;
            self.passthrough = 4 + len;
        }
    }
}

/// Milliseconds since `start` of the last byte seen in either direction.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Relays until either side closes, the session idles out, or `cancel` fires.
#[allow(clippy::too_many_arguments)]
pub async fn relay<CR, CW, BR, BW>(
    mut client_r: CR,
    mut client_w: CW,
    mut backend_r: BR,
    mut backend_w: BW,
    init_db: &dyn InitDbCheck,
    counters: &Counters,
    idle_timeout: Option<Duration>,
    cancel: &CancellationToken,
) -> End
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    BR: AsyncRead + Unpin,
    BW: AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    // Errors the proxy answers itself go through the backend-to-client writer, so they
    // land between packets, never inside one.
    let (inject_tx, mut inject_rx) = mpsc::channel::<Vec<u8>>(4);

    let c2s = async {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut scanner = Scanner::default();
        loop {
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(READ_CHUNK);
            }
            match client_r.read_buf(&mut buf).await {
                Ok(0) => return End::ClientClosed,
                Ok(n) => {
                    counters.to_backend.increment(n as u64);
                    activity.touch();
                }
                Err(e) => return End::ClientError(e),
            }
            loop {
                let (fwd, intercept) = match scanner.scan(&buf) {
                    Ok(r) => r,
                    Err(p) => return End::Protocol(p),
                };
                if fwd > 0 {
                    if let Err(e) = backend_w.write_all(&buf[..fwd]).await {
                        return End::BackendError(e);
                    }
                    buf.advance(fwd);
                }
                let Some(ic) = intercept else { break };
                buf.advance(ic.total);
                let reply = match ic.payload.first() {
                    Some(&COM_INIT_DB) => {
                        let schema = String::from_utf8_lossy(&ic.payload[1..]);
                        match init_db.check(&schema) {
                            Ok(()) => {
                                let mut pkt = Vec::with_capacity(ic.total);
                                frame(ic.seq, &ic.payload, &mut pkt);
                                if let Err(e) = backend_w.write_all(&pkt).await {
                                    return End::BackendError(e);
                                }
                                continue;
                            }
                            Err((code, state, msg)) => err_payload(code, &state, &msg),
                        }
                    }
                    _ => err_payload(
                        1235,
                        b"42000",
                        "ocean mysql-proxy does not support COM_CHANGE_USER: open a new \
                         connection as the other job",
                    ),
                };
                let mut pkt = Vec::with_capacity(reply.len() + 4);
                frame(ic.seq.wrapping_add(1), &reply, &mut pkt);
                if inject_tx.send(pkt).await.is_err() {
                    return End::ClientClosed;
                }
            }
        }
    };

    let s2c = async {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            if buf.capacity() < 4096 {
                buf.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                r = backend_r.read_buf(&mut buf) => match r {
                    Ok(0) => return End::BackendClosed,
                    Ok(n) => {
                        counters.to_client.increment(n as u64);
                        activity.touch();
                        if let Err(e) = client_w.write_all(&buf).await {
                            return End::ClientError(e);
                        }
                        if let Err(e) = client_w.flush().await {
                            return End::ClientError(e);
                        }
                        buf.clear();
                    }
                    Err(e) => return End::BackendError(e),
                },
                Some(pkt) = inject_rx.recv() => {
                    if let Err(e) = client_w.write_all(&pkt).await {
                        return End::ClientError(e);
                    }
                    if let Err(e) = client_w.flush().await {
                        return End::ClientError(e);
                    }
                }
            }
        }
    };

    let idle = async {
        match idle_timeout {
            Some(limit) if !limit.is_zero() => loop {
                let idle = activity.idle_for();
                if idle >= limit {
                    return;
                }
                tokio::time::sleep(limit - idle).await;
            },
            _ => std::future::pending().await,
        }
    };

    tokio::select! {
        e = c2s => e,
        e = s2c => e,
        () = idle => End::Idle,
        () = cancel.cancelled() => End::Kicked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        frame(seq, payload, &mut v);
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
        assert!(ic.is_some());
    }

    #[test]
    fn scanner_waits_for_whole_headers() {
        let mut s = Scanner::default();
        assert_eq!(s.scan(&[5, 0]).unwrap().0, 0);
        assert_eq!(s.scan(&[5, 0, 0, 0]).unwrap().0, 0);
        assert_eq!(s.scan(&[5, 0, 0, 0, 3]).unwrap().0, 5);
    }
}
