//! Backend servers: a few pipelined connections per server shared by every client, replies
//! matched to requests in order, and failure detection (TKO) with probes.
//!
//! # Connections
//! A connection is two tasks: a writer that takes many clients' requests off a bounded
//! channel and writes them in one batch (one syscall for many requests), and a reader that
//! frames replies ([`crate::reply`]) and hands each to the request at the front of the
//! in-flight queue. The writer queues a request before writing it, so a reply never arrives
//! before its request is queued. When either side fails, every request in flight and
//! queued gets [`UpstreamError`], and the next request opens a new connection.
//!
//! # Failure detection
//! A dead connection (connect error, IO error, malformed reply) and a reply timeout each
//! count one failure; a reply resets the count. After `tko_after` failures in a row the
//! server is *down*: its connections are closed, requests fail over at once, and a probe
//! task sends `version` after `probe_interval`, growing x1.5 up to `probe_interval_max`,
//! until one answers.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use metrics::{Counter, Gauge, Histogram};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::budget::{HeldReply, ReplyBudget};
use crate::config::Settings;
use crate::reply::{frame_reply, Expect, Framed, SkipReply};
use crate::stats::{RouterStats, ServerStatus};

/// Requests queued per connection before senders are refused (`SERVER_ERROR`).
const QUEUE_DEPTH: usize = 4096;
/// Bytes written per batch before the writer flushes.
const WRITE_BATCH_BYTES: usize = 256 << 10;

/// Why a backend request got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The server is marked down (TKO).
    #[error("server {0} is down")]
    Down(SocketAddr),
    /// The connection failed or closed before the reply.
    #[error("connection to {0} failed")]
    Connection(SocketAddr),
    /// The server did not answer within the request timeout.
    #[error("timeout from {0}")]
    Timeout(SocketAddr),
    /// Too many requests queued for the server.
    #[error("queue to {0} is full")]
    Overloaded(SocketAddr),
    /// The reply would take the client past `--max-client-reply-bytes` (the client is not
    /// reading its replies, or asked for more at once than the budget): dropped. Not the
    /// server's fault, and no other replica would do better: never failed over. The text is
    /// memcached's own for a reply it cannot buffer.
    #[error("out of memory writing get response")]
    ClientBudget,
}

/// The reply of one forwarded request.
pub type ReplyResult = Result<Bytes, UpstreamError>;

/// A reply as the backend reader hands it over: counted against its client's budget until
/// taken.
type Delivered = Result<HeldReply, UpstreamError>;

/// One request for a backend connection.
struct Op {
    bytes: Bytes,
    /// Append `mn\r\n` (the reply then ends with `MN`).
    append_mn: bool,
    expect: Expect,
    reply: Option<oneshot::Sender<Delivered>>,
    /// The client's reply budget (reads only; write replies are one line).
    budget: Option<Arc<ReplyBudget>>,
}

struct InFlight {
    expect: Expect,
    reply: Option<oneshot::Sender<Delivered>>,
    budget: Option<Arc<ReplyBudget>>,
}

struct ConnHandle {
    tx: mpsc::Sender<Op>,
    close: CancellationToken,
}

/// Metrics of one server, labelled by pool, replica set and address.
struct ServerMetrics {
    requests: Counter,
    errors: Counter,
    hits: Counter,
    misses: Counter,
    latency: Histogram,
    up: Gauge,
    tko: Counter,
}

/// One backend memcached server with its shared connections and TKO state.
pub struct Server {
    addr: SocketAddr,
    pool: String,
    replica_set: String,
    conns: Vec<Mutex<Option<ConnHandle>>>,
    failures: AtomicU32,
    down: AtomicBool,
    settings: Arc<Settings>,
    metrics: ServerMetrics,
    stats: Arc<RouterStats>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("down", &self.is_down())
            .finish()
    }
}

impl ServerStatus for Server {
    fn name(&self) -> (&str, &str, SocketAddr) {
        (&self.pool, &self.replica_set, self.addr)
    }

    fn is_down(&self) -> bool {
        Server::is_down(self)
    }
}

/// A request sent to a server: await [`Sent::reply`].
pub struct Sent {
    server: Arc<Server>,
    rx: Result<oneshot::Receiver<Delivered>, UpstreamError>,
    started: Instant,
}

impl Sent {
    /// Waits for the reply (at most the request timeout). Failures are counted towards the
    /// server's TKO; the latency of a reply is recorded.
    pub async fn reply(self) -> ReplyResult {
        let rx = self.rx?;
        let out = match tokio::time::timeout(self.server.settings.request_timeout, rx).await {
            Ok(Ok(r)) => r.map(HeldReply::take),
            Ok(Err(_)) => Err(UpstreamError::Connection(self.server.addr)),
            Err(_) => {
                self.server.record_failure();
                Err(UpstreamError::Timeout(self.server.addr))
            }
        };
        match &out {
            Ok(_) => self
                .server
                .metrics
                .latency
                .record(self.started.elapsed().as_secs_f64()),
            Err(UpstreamError::ClientBudget) => {
                metrics::counter!("ocean_memcached_client_replies_dropped_total").increment(1);
            }
            Err(_) => self.server.metrics.errors.increment(1),
        }
        out
    }

    /// The server it went to.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }
}

impl Server {
    /// A server of `pool`/`replica_set`; connections open on first use, on the runtime of
    /// the caller, and close when `cancel` fires.
    pub fn new(
        addr: SocketAddr,
        pool: &str,
        replica_set: &str,
        settings: Arc<Settings>,
        stats: Arc<RouterStats>,
        cancel: CancellationToken,
    ) -> Arc<Server> {
        let labels = [
            ("pool", pool.to_owned()),
            ("replica_set", replica_set.to_owned()),
            ("server", addr.to_string()),
        ];
        let metrics = ServerMetrics {
            requests: metrics::counter!("ocean_memcached_server_requests_total", &labels),
            errors: metrics::counter!("ocean_memcached_server_errors_total", &labels),
            hits: metrics::counter!("ocean_memcached_server_hits_total", &labels),
            misses: metrics::counter!("ocean_memcached_server_misses_total", &labels),
            latency: metrics::histogram!("ocean_memcached_server_latency_seconds", &labels),
            up: metrics::gauge!("ocean_memcached_server_up", &labels),
            // Registered with the others: a TKO after the server left the table must not
            // bring its series back (see `route::Registry::retain`).
            tko: metrics::counter!("ocean_memcached_server_tko_total", &labels),
        };
        metrics.up.set(1.0);
        let conns = (0..settings.backend_connections.max(1))
            .map(|_| Mutex::new(None))
            .collect();
        let server = Arc::new(Server {
            addr,
            pool: pool.to_owned(),
            replica_set: replica_set.to_owned(),
            conns,
            failures: AtomicU32::new(0),
            down: AtomicBool::new(false),
            settings,
            metrics,
            stats,
            cancel,
        });
        let weak: std::sync::Weak<Server> = Arc::downgrade(&server);
        server.stats.register_server(weak);
        server
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the server's connections (it left the pool).
    pub fn close(&self) {
        self.cancel.cancel();
    }

    /// Whether the server is marked down (TKO).
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Counts hits and misses of a read.
    pub fn record_lookups(&self, hits: u64, misses: u64) {
        self.metrics.hits.increment(hits);
        self.metrics.misses.increment(misses);
    }

    /// Sends `bytes` on the connection `slot` picks (one client always uses the same
    /// connection, so its requests to one server stay in order). With `append_mn` the
    /// router adds `mn` and the reply ends at `MN`. With `want_reply` false nobody waits.
    /// With a `budget`, the reply counts against it and is refused
    /// ([`UpstreamError::ClientBudget`]) when it does not fit.
    pub fn send(
        self: &Arc<Self>,
        slot: usize,
        bytes: Bytes,
        expect: Expect,
        append_mn: bool,
        want_reply: bool,
        budget: Option<&Arc<ReplyBudget>>,
    ) -> Sent {
        let started = Instant::now();
        self.metrics.requests.increment(1);
        let (tx, rx) = if want_reply {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Ok(rx))
        } else {
            (None, Err(UpstreamError::Connection(self.addr)))
        };
        let op = Op {
            bytes,
            append_mn,
            expect,
            reply: tx,
            budget: budget.cloned(),
        };
        let rx = match self.enqueue(slot, op) {
            Ok(()) => rx,
            Err(e) => Err(e),
        };
        Sent {
            server: self.clone(),
            rx,
            started,
        }
    }

    fn enqueue(self: &Arc<Self>, slot: usize, op: Op) -> Result<(), UpstreamError> {
        if self.is_down() {
            return Err(UpstreamError::Down(self.addr));
        }
        let Some(cell) = self.conns.get(slot % self.conns.len()) else {
            return Err(UpstreamError::Connection(self.addr));
        };
        let mut guard = cell
            .lock()
            .map_err(|_| UpstreamError::Connection(self.addr))?;
        let op = match guard.as_ref() {
            Some(h) => match h.tx.try_send(op) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(UpstreamError::Overloaded(self.addr))
                }
                Err(mpsc::error::TrySendError::Closed(op)) => op,
            },
            None => op,
        };
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let close = self.cancel.child_token();
        let result = tx
            .try_send(op)
            .map_err(|_| UpstreamError::Connection(self.addr));
        *guard = Some(ConnHandle {
            tx,
            close: close.clone(),
        });
        drop(guard);
        tokio::spawn(run_connection(self.clone(), rx, close));
        result
    }

    fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts one failure; marks the server down (and starts probing it) at `tko_after`.
    pub fn record_failure(self: &Arc<Self>) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.settings.tko_after && !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(server = %self.addr, failures = n, "memcached server marked down");
            self.metrics.up.set(0.0);
            self.stats.servers_down.fetch_add(1, Ordering::Relaxed);
            self.stats.tko_events.fetch_add(1, Ordering::Relaxed);
            self.metrics.tko.increment(1);
            for cell in &self.conns {
                if let Some(h) = cell.lock().ok().and_then(|mut g| g.take()) {
                    h.close.cancel();
                }
            }
            tokio::spawn(probe(self.clone()));
        }
    }
}

/// Probes a down server with `version` until it answers, then marks it up.
async fn probe(server: Arc<Server>) {
    let mut wait = server.settings.probe_interval;
    loop {
        tokio::select! {
            () = server.cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        if probe_once(
            server.addr,
            server.settings.connect_timeout,
            server.settings.request_timeout,
        )
        .await
        {
            server.failures.store(0, Ordering::Relaxed);
            server.down.store(false, Ordering::Relaxed);
            server.metrics.up.set(1.0);
            server.stats.servers_down.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(server = %server.addr, "memcached server is back up");
            return;
        }
        tracing::debug!(server = %server.addr, next_probe_in = ?wait, "probe failed");
        wait = wait.mul_f64(1.5).min(server.settings.probe_interval_max);
    }
}

async fn probe_once(addr: SocketAddr, connect: Duration, request: Duration) -> bool {
    let Ok(Ok(mut stream)) = tokio::time::timeout(connect, TcpStream::connect(addr)).await else {
        return false;
    };
    let exchange = async {
        stream.write_all(b"version\r\n").await?;
        let mut buf = Vec::new();
        while !buf.ends_with(b"\r\n") {
            if stream.read_buf(&mut buf).await? == 0 {
                break;
            }
        }
        Ok::<_, std::io::Error>(buf.starts_with(b"VERSION "))
    };
    matches!(tokio::time::timeout(request, exchange).await, Ok(Ok(true)))
}

/// A connection: connect, then a writer and a reader until either fails or `close` fires.
async fn run_connection(server: Arc<Server>, mut rx: mpsc::Receiver<Op>, close: CancellationToken) {
    let in_flight: Arc<Mutex<VecDeque<InFlight>>> = Arc::default();
    let connected = tokio::select! {
        () = close.cancelled() => None,
        r = tokio::time::timeout(server.settings.connect_timeout, TcpStream::connect(server.addr)) => {
            match r {
                Ok(Ok(s)) => Some(s),
                Ok(Err(e)) => {
                    tracing::debug!(server = %server.addr, error = %e, "connect failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(server = %server.addr, "connect timed out");
                    None
                }
            }
        }
    };
    if let Some(stream) = connected {
        // Small requests must not wait for Nagle.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay");
        }
        let (read, write) = stream.into_split();
        let reader = read_replies(read, server.clone(), in_flight.clone());
        let writer = write_requests(write, &mut rx, in_flight.clone());
        tokio::select! {
            () = close.cancelled() => {}
            () = reader => {}
            () = writer => {}
        }
    }
    if !close.is_cancelled() {
        // A failure of this connection (the close token fires only on TKO or shutdown).
        server.record_failure();
    }
    close.cancel();
    rx.close();
    let err = UpstreamError::Connection(server.addr);
    while let Ok(op) = rx.try_recv() {
        if let Some(tx) = op.reply {
            // The client may have given up already; nothing to do then.
            let _ignored = tx.send(Err(err.clone()));
        }
    }
    let pending: Vec<InFlight> = in_flight
        .lock()
        .map(|mut q| q.drain(..).collect())
        .unwrap_or_default();
    for p in pending {
        if let Some(tx) = p.reply {
            let _ignored = tx.send(Err(err.clone()));
        }
    }
}

async fn write_requests(
    mut write: tokio::net::tcp::OwnedWriteHalf,
    rx: &mut mpsc::Receiver<Op>,
    in_flight: Arc<Mutex<VecDeque<InFlight>>>,
) {
    let mut buf = BytesMut::with_capacity(16 << 10);
    while let Some(first) = rx.recv().await {
        buf.clear();
        let mut next = Some(first);
        while let Some(op) = next.take() {
            buf.extend_from_slice(&op.bytes);
            if op.append_mn {
                buf.extend_from_slice(b"mn\r\n");
            }
            let Ok(mut q) = in_flight.lock() else { return };
            q.push_back(InFlight {
                expect: op.expect,
                reply: op.reply,
                budget: op.budget,
            });
            drop(q);
            if buf.len() < WRITE_BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if write.write_all(&buf).await.is_err() {
            return;
        }
    }
}

async fn read_replies(
    mut read: tokio::net::tcp::OwnedReadHalf,
    server: Arc<Server>,
    in_flight: Arc<Mutex<VecDeque<InFlight>>>,
) {
    let mut buf = BytesMut::with_capacity(16 << 10);
    // A reply being skipped: it outgrew its client's whole budget before it was complete.
    let mut skipping: Option<SkipReply> = None;
    // Where framing of the front reply resumes (the start of its first incomplete part).
    let mut resume = 0;
    loop {
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            if let Some(skip) = skipping.as_mut() {
                match skip.feed(&buf) {
                    Ok((n, over)) => {
                        buf.advance(n);
                        if !over {
                            break;
                        }
                        skipping = None;
                        server.record_success();
                    }
                    Err(e) => {
                        tracing::warn!(server = %server.addr, error = %e, "closing backend connection");
                        return;
                    }
                }
            }
            let Ok(mut q) = in_flight.lock() else { return };
            let Some(front) = q.front() else {
                if buf.is_empty() {
                    break;
                }
                tracing::warn!(server = %server.addr, "unsolicited bytes from backend");
                return;
            };
            let len = match frame_reply(&buf, front.expect, &mut resume) {
                Ok(Framed::Complete(len)) => len,
                Ok(Framed::Partial) => {
                    // Incomplete, and already more than its client may hold: answer the
                    // client now and skip the rest as it comes, instead of buffering a
                    // reply that may be gigabytes (`get big big big ...`).
                    let over = front.budget.as_ref().filter(|b| buf.len() > b.max());
                    let Some(budget) = over else {
                        break;
                    };
                    budget.note_refused(buf.len());
                    let expect = front.expect;
                    let done = q.pop_front();
                    drop(q);
                    tracing::debug!(server = %server.addr, "reply over the client's budget; skipping it");
                    if let Some(tx) = done.and_then(|d| d.reply) {
                        // The client may be gone already.
                        let _ignored = tx.send(Err(UpstreamError::ClientBudget));
                    }
                    skipping = Some(SkipReply::new(expect));
                    resume = 0;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(server = %server.addr, error = %e, "closing backend connection");
                    return;
                }
            };
            let done = q.pop_front();
            drop(q);
            resume = 0;
            let reply = buf.split_to(len).freeze();
            server.record_success();
            if let Some(InFlight {
                reply: Some(tx),
                budget,
                ..
            }) = done
            {
                let delivered = match budget {
                    Some(b) => b.admit(reply).ok_or(UpstreamError::ClientBudget),
                    None => Ok(HeldReply::unbudgeted(reply)),
                };
                // The client may have timed out or gone: the reply is dropped (and leaves
                // the budget with it).
                let _ignored = tx.send(delivered);
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 << 10);
        }
    }
}
