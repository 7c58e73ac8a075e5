//! The daemon skeleton: the accept loop every TCP proxy shares, so that each daemon keeps
//! only its protocol.
//!
//! What [`accept_loop`] guarantees, whatever the protocol:
//! - **A cap on clients** (`--max-clients`): a permit is taken for every connection and
//!   held until its task ends. A client past the cap is accepted only to be told so in the
//!   protocol's own words ([`Limits::refusal`]: `-ERR max clients` for Redis,
//!   `SERVER_ERROR` for memcached, a MySQL 1040 packet) and closed; refusals in flight are
//!   bounded too, beyond that the socket is closed at once. Both are counted.
//! - **Accept errors back off.** Running out of descriptors (EMFILE, ENFILE) or memory
//!   (ENOBUFS, ENOMEM) pauses accepting, doubling from 10 ms to 1 s, logs at most once a
//!   second and counts; a reset in the backlog (ECONNABORTED) is skipped at once. A listener
//!   never spins a core.
//! - **Every connection has an id and a span** (`conn`, `client.addr`, `local.addr`) and runs
//!   under the daemon's [`TaskTracker`], cancelled by the token that drain (SIGTERM) fires.
//! - **Descriptors.** [`raise_nofile_limit`] lifts the soft `RLIMIT_NOFILE` to the hard
//!   limit at start, so `--max-clients` is not silently bounded by a 1024 soft limit.
//!
//! Idle and write timeouts are per protocol (a connection loop knows when it is idle):
//! [`Limits`] carries them, and [`write_all_within`] is the one way to write with a
//! deadline.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Default `--max-clients` of every daemon.
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;

/// Refusals written at once at most; past it a refused socket is closed without a word.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// How long a refused client gets to take its refusal.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Per-listener limits of one daemon.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The daemon's name in metrics and logs (`redis-router`).
    pub daemon: &'static str,
    /// Connections served at once (`--max-clients`).
    pub max_clients: usize,
    /// What a client past the cap is sent before it is closed, in the protocol's words.
    pub refusal: Bytes,
    /// A connection with nothing in flight for this long is closed (`--idle-timeout`).
    pub idle_timeout: Duration,
    /// A write that makes no progress for this long closes the connection
    /// (`--write-timeout`): a client that never reads cannot hold a slot.
    pub write_timeout: Duration,
    /// Called with the peer of every client refused at the cap, before its refusal is
    /// written (a daemon's own audit line or metric); `None` by default.
    pub on_refusal: Option<fn(SocketAddr)>,
}

impl Limits {
    /// Limits with the defaults every daemon starts from: 10,000 clients, 300 s idle,
    /// 30 s write.
    pub fn new(daemon: &'static str, refusal: impl Into<Bytes>) -> Limits {
        Limits {
            daemon,
            max_clients: DEFAULT_MAX_CLIENTS,
            refusal: refusal.into(),
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(30),
            on_refusal: None,
        }
    }
}

/// One accepted client connection.
#[derive(Debug)]
pub struct Conn {
    /// Unique in the process: the `conn` field of the connection's span.
    pub id: u64,
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Fires when the listener stops (drain): finish the request in flight, then close.
    pub cancel: CancellationToken,
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// A process-unique connection id, for daemons that accept outside [`accept_loop`].
pub fn next_conn_id() -> u64 {
    NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed)
}

/// Accepts on `listener` until `cancel` fires, running `handle` for each connection in its
/// own task under `tracker`, inside a span with the connection's id and addresses.
///
/// The permit of a connection is released when `handle`'s future ends, so the cap counts
/// what is really open. Returns when `cancel` fires; connections already running keep
/// going until they see `cancel` themselves (drain) and the caller waits on `tracker`.
pub async fn accept_loop<H, F>(
    listener: TcpListener,
    limits: Arc<Limits>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    handle: H,
) where
    H: Fn(Conn) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_clients));
    accept_loop_shared(listener, limits, permits, tracker, cancel, handle).await;
}

/// As [`accept_loop`], with the cap's permits given by the caller, so that several
/// listeners (one per worker thread on an `SO_REUSEPORT` port, or one per cluster) share
/// one `--max-clients`. `limits.max_clients` is then only the number the caller sized
/// `permits` with.
pub async fn accept_loop_shared<H, F>(
    listener: TcpListener,
    limits: Arc<Limits>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    handle: H,
) where
    H: Fn(Conn) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let local = listener.local_addr().ok();
    // Registered once (with the recorder installed first): a registration per accept
    // builds and hashes the key each time.
    crate::metrics::handle();
    let daemon = limits.daemon;
    let accepted_total = metrics::counter!("ocean_connections_accepted_total", "daemon" => daemon);
    let open = metrics::gauge!("ocean_connections_open", "daemon" => daemon);
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff.reset();
                x
            }
            Err(e) => {
                let pause = backoff.on_error(&e, limits.daemon);
                if let Some(pause) = pause {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(stream, peer, &limits, &refusals, &tracker);
            continue;
        };
        let id = next_conn_id();
        // A listener on one address accepts on that address: only a wildcard one needs
        // getsockname to learn which address a client reached.
        let local = match local {
            Some(l) if !l.ip().is_unspecified() => l,
            _ => stream.local_addr().ok().or(local).unwrap_or(peer),
        };
        let span = tracing::debug_span!(
            "conn",
            daemon = limits.daemon,
            conn = id,
            client.addr = %peer,
            local.addr = %local
        );
        let conn = Conn {
            id,
            stream,
            peer,
            local,
            cancel: cancel.clone(),
        };
        accepted_total.increment(1);
        open.increment(1.0);
        // A connection's future is large (about 12 KB in mysql-proxy): boxed here it is
        // copied once, where the task's wrapper and cell would move it two more times.
        let fut = Box::pin(handle(conn));
        let open = open.clone();
        tracker.spawn(
            async move {
                fut.await;
                open.decrement(1.0);
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Tells one client past `--max-clients` so, within a second, then closes it.
fn refuse(
    stream: TcpStream,
    peer: SocketAddr,
    limits: &Limits,
    refusals: &Arc<Semaphore>,
    tracker: &TaskTracker,
) {
    let daemon = limits.daemon;
    metrics::counter!("ocean_connections_refused_total", "daemon" => daemon, "reason" => "max_clients")
        .increment(1);
    tracing::debug!(client.addr = %peer, daemon, "refused: --max-clients reached");
    if let Some(observe) = limits.on_refusal {
        observe(peer);
    }
    let Ok(slot) = refusals.clone().try_acquire_owned() else {
        // Too many refusals at once: closing is the only answer that costs nothing.
        drop(stream);
        return;
    };
    let refusal = limits.refusal.clone();
    tracker.spawn(async move {
        let mut stream = stream;
        // The client may be gone or never read; either way it is closed right after.
        if write_all_within(&mut stream, &refusal, REFUSAL_WRITE_TIMEOUT)
            .await
            .is_ok()
        {
            let _shutdown_is_best_effort = stream.shutdown().await;
        }
        drop(slot);
    });
}

/// Why a write did not finish.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("write made no progress for {0:?} (the peer does not read)")]
    Timeout(Duration),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// `write_all` and `flush` with a deadline: the whole buffer must be taken within
/// `timeout`. A peer that stops reading cannot hold a task (and its buffers) for ever.
///
/// Cancel safety: like `write_all`, not cancel safe (part of `buf` may have been written).
pub async fn write_all_within<W: AsyncWrite + Unpin>(
    w: &mut W,
    buf: &[u8],
    timeout: Duration,
) -> Result<(), WriteError> {
    // Fast path: almost every write fits the socket buffer at once, and arming a timer per
    // write costs a measurable share of a proxy's CPU. Try without one; only a socket that
    // pushes back gets the deadline. (`write` is cancel safe: a Pending poll wrote nothing.)
    let mut off = 0;
    while off < buf.len() {
        match w.write(&buf[off..]).now_or_never() {
            Some(Ok(0)) => return Err(WriteError::Io(io::ErrorKind::WriteZero.into())),
            Some(Ok(n)) => off += n,
            Some(Err(e)) => return Err(e.into()),
            None => break,
        }
    }
    if off == buf.len() {
        if let Some(r) = w.flush().now_or_never() {
            return Ok(r?);
        }
    }
    match tokio::time::timeout(timeout, async {
        w.write_all(&buf[off..]).await?;
        w.flush().await
    })
    .await
    {
        Ok(r) => Ok(r?),
        Err(_) => Err(WriteError::Timeout(timeout)),
    }
}

/// The pause after a failed `accept`, and the log line that says so at most once a second.
#[derive(Debug, Default)]
struct AcceptBackoff {
    pause: Option<Duration>,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl AcceptBackoff {
    const MIN: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn reset(&mut self) {
        self.pause = None;
    }

    /// Counts `e` and returns how long to pause before the next accept (`None`: at once).
    fn on_error(&mut self, e: &io::Error, daemon: &'static str) -> Option<Duration> {
        let kind = classify(e);
        metrics::counter!("ocean_accept_errors_total", "daemon" => daemon, "kind" => kind)
            .increment(1);
        if kind == "aborted" {
            // The client reset while in the backlog: nothing is short, accept the next one.
            tracing::debug!(daemon, error = %e, "accept: connection aborted");
            return None;
        }
        let pause = self.pause.map_or(Self::MIN, |p| (p * 2).min(Self::MAX));
        self.pause = Some(pause);
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            tracing::warn!(
                daemon,
                error = %e,
                kind,
                pause_ms = pause.as_millis() as u64,
                errors_since_last_log = self.suppressed,
                "accept failed; pausing the listener"
            );
            self.last_log = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        Some(pause)
    }
}

/// A metric label for an accept error.
fn classify(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(c) if c == nix::libc::EMFILE || c == nix::libc::ENFILE => "no_descriptors",
        Some(c) if c == nix::libc::ENOBUFS || c == nix::libc::ENOMEM => "no_memory",
        Some(c) if c == nix::libc::ECONNABORTED => "aborted",
        _ if e.kind() == io::ErrorKind::ConnectionAborted => "aborted",
        _ => "other",
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the new soft limit.
///
/// Called once at start by every daemon: systemd and most shells start services with a
/// soft limit of 1024, far below `--max-clients` (each client costs one descriptor, and a
/// proxy one more per backend connection).
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
        tracing::debug!(from = soft, to = hard, "raised the open-files limit");
        return Ok(hard);
    }
    Ok(soft)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    /// An accept loop whose connections each get `+HELLO` and are held until `release`.
    struct HelloServer {
        addr: SocketAddr,
        accepting: tokio::task::JoinHandle<()>,
        tracker: TaskTracker,
        cancel: CancellationToken,
        release: CancellationToken,
    }

    impl HelloServer {
        async fn start(limits: Limits) -> HelloServer {
            let (l, addr) = listener().await;
            let (tracker, cancel, release) = (
                TaskTracker::new(),
                CancellationToken::new(),
                CancellationToken::new(),
            );
            let r = release.clone();
            let accepting = tokio::spawn(accept_loop(
                l,
                Arc::new(limits),
                tracker.clone(),
                cancel.clone(),
                move |mut c: Conn| {
                    let r = r.clone();
                    async move {
                        let _ = c.stream.write_all(b"+HELLO\r\n").await;
                        r.cancelled().await;
                    }
                },
            ));
            HelloServer {
                addr,
                accepting,
                tracker,
                cancel,
                release,
            }
        }

        /// A connection and the first 8 bytes it got.
        async fn connect(&self) -> (TcpStream, [u8; 8]) {
            let mut s = TcpStream::connect(self.addr).await.unwrap();
            let mut buf = [0u8; 8];
            s.read_exact(&mut buf).await.unwrap();
            (s, buf)
        }

        async fn stop(self) {
            self.cancel.cancel();
            self.accepting.await.unwrap();
            self.tracker.close();
            self.tracker.wait().await;
        }
    }

    #[tokio::test]
    async fn clients_past_the_cap_get_the_refusal_and_the_others_are_served() {
        let mut limits = Limits::new("test", &b"-ERR max clients\r\n"[..]);
        limits.max_clients = 2;
        let server = HelloServer::start(limits).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let (s, got) = server.connect().await;
            assert_eq!(&got, b"+HELLO\r\n");
            held.push(s);
        }
        let mut third = TcpStream::connect(server.addr).await.unwrap();
        let mut got = Vec::new();
        third.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"-ERR max clients\r\n");
        // A slot freed is a slot usable again.
        server.release.cancel();
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(5);
        while &server.connect().await.1 != b"+HELLO\r\n" {
            assert!(Instant::now() < deadline, "the cap never freed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.stop().await;
    }

    /// The value of one series in `/metrics`, if rendered.
    fn series(name_and_labels: &str) -> Option<f64> {
        crate::metrics::render().lines().find_map(|l| {
            let v = l.strip_prefix(name_and_labels)?.strip_prefix(' ')?;
            v.trim().parse().ok()
        })
    }

    #[tokio::test]
    async fn connections_are_counted_open_while_served_and_closed_after() {
        let server = HelloServer::start(Limits::new("test-gauge", &b"-ERR\r\n"[..])).await;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(server.connect().await.0);
        }
        let open = r#"ocean_connections_open{daemon="test-gauge"}"#;
        let accepted = r#"ocean_connections_accepted_total{daemon="test-gauge"}"#;
        assert_eq!(series(open), Some(3.0));
        assert_eq!(series(accepted), Some(3.0));
        server.release.cancel();
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(5);
        while series(open) != Some(0.0) {
            assert!(
                Instant::now() < deadline,
                "open stayed at {:?}",
                series(open)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(series(accepted), Some(3.0));
        server.stop().await;
    }

    #[test]
    fn emfile_backs_off_and_aborted_does_not() {
        let mut b = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(nix::libc::EMFILE);
        let first = b.on_error(&emfile, "test");
        assert_eq!(first, Some(AcceptBackoff::MIN));
        let mut last = first;
        for _ in 0..20 {
            last = b.on_error(&emfile, "test");
        }
        assert_eq!(last, Some(AcceptBackoff::MAX));
        assert!(b.suppressed > 0, "logged at most once a second");
        let aborted = io::Error::from_raw_os_error(nix::libc::ECONNABORTED);
        assert_eq!(b.on_error(&aborted, "test"), None);
        b.reset();
        assert_eq!(b.on_error(&emfile, "test"), Some(AcceptBackoff::MIN));
    }

    #[tokio::test]
    async fn a_peer_that_never_reads_times_the_write_out() {
        let (l, addr) = listener().await;
        let _peer = TcpStream::connect(addr).await.unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        let big = vec![0u8; 64 << 20];
        let r = write_all_within(&mut s, &big, Duration::from_millis(200)).await;
        assert!(matches!(r, Err(WriteError::Timeout(_))), "{r:?}");
    }

    /// On tokio's paused clock: a peer that never reads fails the write at the write
    /// timeout, not before; one that starts reading just inside it lets the write finish;
    /// a write the buffer takes at once arms no timer at all.
    #[tokio::test(start_paused = true)]
    async fn write_timeout_on_the_paused_clock() {
        let timeout = Duration::from_secs(30);
        let buf = vec![7u8; 4096];

        let (mut w, _never_reads) = tokio::io::duplex(64);
        let t0 = tokio::time::Instant::now();
        let r = write_all_within(&mut w, &buf, timeout).await;
        assert!(
            matches!(r, Err(WriteError::Timeout(t)) if t == timeout),
            "{r:?}"
        );
        assert_eq!(t0.elapsed(), timeout, "failed at the write timeout exactly");

        let (mut w, mut late_reader) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            tokio::time::sleep(timeout - Duration::from_secs(1)).await;
            let mut got = vec![0u8; 4096];
            late_reader.read_exact(&mut got).await.map(|_| got)
        });
        let t0 = tokio::time::Instant::now();
        write_all_within(&mut w, &buf, timeout).await.unwrap();
        assert_eq!(t0.elapsed(), timeout - Duration::from_secs(1));
        assert_eq!(reader.await.unwrap().unwrap(), buf);

        let (mut w, _reader) = tokio::io::duplex(8192);
        let t0 = tokio::time::Instant::now();
        write_all_within(&mut w, &buf, timeout).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }

    #[test]
    fn nofile_soft_limit_reaches_the_hard_limit() {
        let n = raise_nofile_limit().unwrap();
        let (soft, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((n, soft), (hard, hard));
    }
}
