//! After login: frames relayed both ways as they come, without re-encoding. Backend to
//! client is a plain byte copy; client to backend is scanned packet by packet so that
//! COM_INIT_DB is checked against the grants again and COM_CHANGE_USER is refused. Split
//! packets (16 MB payloads) pass through in pieces, never buffered whole.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use bytes::{Buf, BytesMut};
use ocean_core::daemon::{write_all_within, WriteError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::pinning::PinReason;
use crate::proto::command::{
    Command, ScanError, Scanner, COM_QUERY, COM_STMT_EXECUTE, COM_STMT_PREPARE,
};
use crate::proto::encode;
use crate::proto::exchange::Exchange;
use crate::proto::reply::err_payload;
use ocean_core::drain::{DrainWatch, Read};

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
    /// COM_QUIT: not passed on, so that the backend connection can serve another session.
    ClientQuit,
    BackendClosed,
    Idle,
    Kicked,
    /// The daemon drains (SIGTERM) and the session came to rest: no command waiting for
    /// its response, no transaction open.
    Drained,
    ClientError(io::Error),
    /// A write to the client took nothing for `--write-timeout`: it does not read.
    WriteTimeout(Duration),
    BackendError(io::Error),
    Protocol(ScanError),
}

impl End {
    pub fn reason(&self) -> String {
        match self {
            End::ClientClosed => "client closed".into(),
            End::ClientQuit => "client quit".into(),
            End::BackendClosed => "backend closed".into(),
            End::Idle => "idle timeout".into(),
            End::Kicked => "closed by the proxy".into(),
            End::Drained => "drained: the proxy is shutting down".into(),
            End::ClientError(e) => format!("client i/o: {e}"),
            End::WriteTimeout(t) => {
                format!("write timeout: the client took nothing for {t:?} (--write-timeout)")
            }
            End::BackendError(e) => format!("backend i/o: {e}"),
            End::Protocol(p) => format!("protocol: {p}"),
        }
    }
}

/// Byte counters and the query statistics of one session.
pub struct Counters {
    pub to_backend: metrics::Counter,
    pub to_client: metrics::Counter,
    pub queries: QueryStats,
}

/// Per command kind (query, execute, prepare, other), each series registered on its first
/// use in the session:
/// - `ocean_mysql_query_seconds{job, database, command}`: from a command's first byte
///   sent to the backend to the last byte of its response relayed;
/// - `ocean_mysql_query_errors_total{job, database, command}`: responses that were, or
///   ended in, an ERR packet;
///
/// and, for a multiplexed session, `ocean_mysql_pinned_total{job, database, reason}`.
pub struct QueryStats {
    job: String,
    database: String,
    latency: [std::sync::OnceLock<metrics::Histogram>; 4],
    errors: [std::sync::OnceLock<metrics::Counter>; 4],
}

impl QueryStats {
    pub fn new(job: &str, database: &str) -> QueryStats {
        QueryStats {
            job: job.to_string(),
            database: database.to_string(),
            latency: Default::default(),
            errors: Default::default(),
        }
    }

    /// A multiplexed session keeps its connection from now on
    /// (`ocean_mysql_pinned_total{job, database, reason}`).
    pub(super) fn pinned(&self, reason: PinReason) {
        crate::metrics::pinned(&self.job, &self.database, reason.as_str());
    }

    /// One command answered: `failed` when the answer was an ERR.
    pub(super) fn record(&self, command: u8, took: Duration, failed: bool) {
        let (i, kind) = match command {
            COM_QUERY => (0, "query"),
            COM_STMT_EXECUTE => (1, "execute"),
            COM_STMT_PREPARE => (2, "prepare"),
            _ => (3, "other"),
        };
        if let Some(slot) = self.latency.get(i) {
            slot.get_or_init(|| {
                metrics::histogram!("ocean_mysql_query_seconds", "job" => self.job.clone(), "database" => self.database.clone(), "command" => kind)
            })
            .record(took.as_secs_f64());
        }
        if failed {
            if let Some(slot) = self.errors.get(i) {
                slot.get_or_init(|| {
                    metrics::counter!("ocean_mysql_query_errors_total", "job" => self.job.clone(), "database" => self.database.clone(), "command" => kind)
                })
                .increment(1);
            }
        }
    }
}

/// The exchange, and when the command it awaits a response to was sent.
struct Followed {
    x: Exchange,
    sent: Option<(u8, Instant)>,
}

impl Followed {
    fn client_sent(&mut self, bytes: &[u8]) {
        self.x.client_sent(bytes);
        if self.sent.is_none() {
            self.sent = self.x.awaiting().map(|c| (c, Instant::now()));
        }
    }

    /// The command just answered, how long it took and whether it failed, if one was.
    fn server_sent(&mut self, bytes: &[u8]) -> Option<(u8, Duration, bool)> {
        self.x.server_sent(bytes);
        if self.x.lost() {
            self.sent = None;
            return None;
        }
        match self.sent {
            Some((c, at)) if self.x.awaiting().is_none() => {
                self.sent = None;
                Some((c, at.elapsed(), self.x.failed()))
            }
            _ => None,
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

/// How long a session may sit idle or stall a write.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// No bytes either way for this long closes the session (`None`: never).
    pub idle: Option<Duration>,
    /// A write to the client that is not taken within this closes the session.
    pub write: Duration,
}

impl End {
    pub(super) fn from_write(e: WriteError) -> End {
        match e {
            WriteError::Timeout(t) => End::WriteTimeout(t),
            WriteError::Io(e) => End::ClientError(e),
        }
    }
}

/// How a relay ended, and whether the backend connection was left at rest (no command
/// waiting for its response, no transaction open): only then may it serve another session.
pub struct Ended {
    pub end: End,
    pub backend_at_rest: bool,
}

/// Relays until either side closes, the session idles out, a write to the client is not
/// taken within `timeouts.write` (each write is one chunk of at most 32 KiB read from the
/// backend, or an error the proxy answers), `cancel` fires (a kick), or `drain` fires and
/// the session comes to rest (see [`Exchange`]): replies owed are written, an open
/// transaction is let finish.
///
/// Memory is bounded whatever the client does: backend bytes are read 32 KiB at a time
/// and the next read waits until the client has taken the last; a client that takes
/// nothing is closed after `timeouts.write`, and its backend connection with it.
#[allow(clippy::too_many_arguments)]
pub async fn relay<CR, CW, BR, BW>(
    mut client_r: CR,
    mut client_w: CW,
    mut backend_r: BR,
    mut backend_w: BW,
    init_db: &dyn InitDbCheck,
    counters: &Counters,
    timeouts: Timeouts,
    cancel: &CancellationToken,
    mut drain: DrainWatch,
    exchange: Exchange,
    pending: BytesMut,
) -> Ended
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
    // Both directions update the exchange; the server side wakes a draining client side
    // when the session comes to rest.
    let exchange = Mutex::new(Followed {
        x: exchange,
        sent: None,
    });
    let at_rest = || exchange.lock().map(|f| f.x.at_rest()).unwrap_or(true);
    let rest = Notify::new();

    let c2s = async {
        // Client bytes already read (a multiplexed session that pinned) go first.
        let mut unread = !pending.is_empty();
        let mut buf = pending;
        let mut scanner = Scanner::default();
        loop {
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(READ_CHUNK);
            }
            // What is already there is scanned before reading more.
            if !std::mem::take(&mut unread) {
                let resting = buf.is_empty() && at_rest();
                let read = if drain.draining() && !resting {
                    // A command in flight or a transaction open: read on (COMMIT is coming),
                    // and look again when the server's side comes to rest.
                    tokio::select! {
                        r = client_r.read_buf(&mut buf) => Read::Done(r),
                        () = rest.notified() => Read::Again,
                    }
                } else {
                    drain.read(resting, client_r.read_buf(&mut buf)).await
                };
                match read {
                    Read::Done(Ok(0)) => return End::ClientClosed,
                    Read::Done(Ok(n)) => {
                        counters.to_backend.increment(n as u64);
                        activity.touch();
                    }
                    Read::Done(Err(e)) => return End::ClientError(e),
                    Read::Again => continue,
                    Read::Stop => return End::Drained,
                }
            }
            loop {
                let (fwd, intercept) = match scanner.scan(&buf) {
                    Ok(r) => r,
                    Err(p) => return End::Protocol(p),
                };
                if fwd > 0 {
                    if let Ok(mut x) = exchange.lock() {
                        x.client_sent(&buf[..fwd]);
                    }
                    if let Err(e) = backend_w.write_all(&buf[..fwd]).await {
                        return End::BackendError(e);
                    }
                    buf.advance(fwd);
                }
                let Some(ic) = intercept else { break };
                buf.advance(ic.total);
                let reply = match ic.command() {
                    Command::InitDb(schema) => {
                        let schema = String::from_utf8_lossy(schema);
                        match init_db.check(&schema) {
                            Ok(()) => {
                                let mut pkt = Vec::with_capacity(ic.total);
                                encode(ic.seq, &ic.payload, &mut pkt);
                                if let Ok(mut x) = exchange.lock() {
                                    x.client_sent(&pkt);
                                }
                                if let Err(e) = backend_w.write_all(&pkt).await {
                                    return End::BackendError(e);
                                }
                                continue;
                            }
                            Err((code, state, msg)) => err_payload(code, &state, &msg),
                        }
                    }
                    Command::Quit => return End::ClientQuit,
                    Command::ChangeUser => err_payload(
                        1235,
                        b"42000",
                        "ocean mysql-proxy does not support COM_CHANGE_USER: open a new \
                         connection as the other job",
                    ),
                };
                let mut pkt = Vec::with_capacity(reply.len() + 4);
                encode(ic.seq.wrapping_add(1), &reply, &mut pkt);
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
            // Cancel safety: both branches are (`read_buf` keeps what it read in `buf`,
            // `recv` loses nothing); the writes run outside the select.
            tokio::select! {
                biased;
                r = backend_r.read_buf(&mut buf) => match r {
                    Ok(0) => return End::BackendClosed,
                    Ok(n) => {
                        counters.to_client.increment(n as u64);
                        activity.touch();
                        if let Err(e) = write_all_within(&mut client_w, &buf, timeouts.write).await {
                            return End::from_write(e);
                        }
                        // After the write: a drain that stops at rest must not cut it.
                        let (resting, answered) = match exchange.lock() {
                            Ok(mut f) => {
                                let answered = f.server_sent(&buf);
                                (f.x.at_rest(), answered)
                            }
                            Err(_) => (true, None),
                        };
                        if let Some((command, took, failed)) = answered {
                            counters.queries.record(command, took, failed);
                        }
                        if resting {
                            rest.notify_one();
                        }
                        buf.clear();
                    }
                    Err(e) => return End::BackendError(e),
                },
                Some(pkt) = inject_rx.recv() => {
                    if let Err(e) = write_all_within(&mut client_w, &pkt, timeouts.write).await {
                        return End::from_write(e);
                    }
                }
            }
        }
    };

    let idle = async {
        match timeouts.idle {
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

    let end = tokio::select! {
        e = c2s => e,
        e = s2c => e,
        () = idle => End::Idle,
        () = cancel.cancelled() => End::Kicked,
    };
    Ended {
        backend_at_rest: at_rest(),
        end,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::io::{duplex, split, DuplexStream};

    struct AllowAll;

    impl InitDbCheck for AllowAll {
        fn check(&self, _schema: &str) -> Result<(), (u16, [u8; 5], String)> {
            Ok(())
        }
    }

    fn counters() -> Counters {
        Counters {
            to_backend: metrics::Counter::noop(),
            to_client: metrics::Counter::noop(),
            queries: QueryStats::new("job", "db"),
        }
    }

    /// Runs the relay between two in-memory pipes; returns why it ended and when.
    async fn run(
        client: DuplexStream,
        backend: DuplexStream,
        timeouts: Timeouts,
    ) -> (End, Duration) {
        let (cr, cw) = split(client);
        let (br, bw) = split(backend);
        let start = tokio::time::Instant::now();
        let cancel = CancellationToken::new();
        let end = relay(
            cr,
            cw,
            br,
            bw,
            &AllowAll,
            &counters(),
            timeouts,
            &cancel,
            DrainWatch::never(),
            Exchange::new(true),
            BytesMut::new(),
        )
        .await
        .end;
        (end, start.elapsed())
    }

    /// The backend sends without end; the client never reads.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_reads_is_closed_at_the_write_timeout() {
        let (client, _client_never_reads) = duplex(64 * 1024);
        let (backend, mut backend_peer) = duplex(64 * 1024);
        let feeder = tokio::spawn(async move {
            let chunk = vec![b'x'; 64 * 1024];
            while backend_peer.write_all(&chunk).await.is_ok() {}
        });
        let timeouts = Timeouts {
            idle: Some(Duration::from_secs(60)),
            write: Duration::from_secs(5),
        };
        let (end, after) = run(client, backend, timeouts).await;
        assert!(
            matches!(end, End::WriteTimeout(t) if t == Duration::from_secs(5)),
            "{end:?}"
        );
        assert!(
            after >= Duration::from_secs(5) && after < Duration::from_secs(6),
            "{after:?}"
        );
        // The backend side is released with the relay: the feeder's writes fail.
        feeder.await.unwrap();
    }

    /// A client that reads slowly (4 KiB every 500 ms, so each 32 KiB chunk the relay
    /// writes is taken in 4 s), but within the write timeout (5 s), is kept.
    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_within_the_write_timeout_is_kept() {
        let (client, mut client_peer) = duplex(4 * 1024);
        let (backend, mut backend_peer) = duplex(64 * 1024);
        tokio::spawn(async move {
            backend_peer
                .write_all(&vec![b'x'; 64 * 1024])
                .await
                .unwrap();
            // Then the backend closes: the relay ends as BackendClosed.
        });
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 4 * 1024];
            let mut got = 0;
            while got < 64 * 1024 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                got += client_peer.read(&mut buf).await.unwrap();
            }
            client_peer
        });
        let timeouts = Timeouts {
            idle: None,
            write: Duration::from_secs(5),
        };
        let (end, after) = run(client, backend, timeouts).await;
        assert!(matches!(end, End::BackendClosed), "{end:?}");
        assert!(after >= Duration::from_secs(7), "{after:?}");
        drop(reader.await.unwrap());
    }

    /// Nothing either way: closed at the idle timeout, not before.
    #[tokio::test(start_paused = true)]
    async fn a_silent_session_is_closed_at_the_idle_timeout() {
        let (client, _client_peer) = duplex(1024);
        let (backend, _backend_peer) = duplex(1024);
        let timeouts = Timeouts {
            idle: Some(Duration::from_secs(300)),
            write: Duration::from_secs(30),
        };
        let (end, after) = run(client, backend, timeouts).await;
        assert!(matches!(end, End::Idle), "{end:?}");
        assert!(
            after >= Duration::from_secs(300) && after < Duration::from_secs(301),
            "{after:?}"
        );
    }
}
