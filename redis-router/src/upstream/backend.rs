//! Connections to cluster nodes.
//!
//! - [`SharedConn`]: one multiplexed, pipelined connection used by every client of a worker.
//!   Its writer drains all queued [`Job`]s into one buffer and writes it with one syscall;
//!   replies come back in order and are matched FIFO. It connects lazily (on the first job)
//!   and reconnects on the next job after a failure.
//! - [`DedicatedConn`]: a plain connection for a client in a stateful mode (MULTI/WATCH,
//!   blocking commands, pub/sub), taken from and given back to a bounded per-node pool.
//! - [`Reach`]: what the shared connections tell about a node's reachability (the last
//!   connect or connection failed, and none succeeded since), read by `/healthz`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ocean_core::secret::SecretFile;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::proto::{Protocol, ReplyLimits, ReplyScanner, Request};
use crate::tls::{Connector, Stream};

/// How the router talks to backends.
#[derive(Debug, Clone)]
pub struct BackendOpts {
    /// ACL user for `AUTH`/`HELLO AUTH` (with `password`).
    pub user: Option<String>,
    /// Password sent on every new backend connection (`Debug` redacts it); from
    /// `--backend-password-file`, SIGHUP re-reads it for the connections made after.
    pub password: Option<Arc<SecretFile>>,
    /// Longest wait for a TCP connect plus the AUTH/HELLO handshake.
    pub connect_timeout: Duration,
    /// Longest wait for a reply on a shared connection; then the connection is closed and
    /// every request waiting on it fails.
    pub command_timeout: Duration,
    /// Bounds on backend replies.
    pub reply_limits: ReplyLimits,
    /// Send `READONLY` on every new connection (replica reads).
    pub readonly: bool,
    /// TLS to backends (`--backend-tls`); the node's IP is the checked server name.
    pub tls: Option<Connector>,
}

impl Default for BackendOpts {
    fn default() -> Self {
        BackendOpts {
            user: None,
            password: None,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(5),
            reply_limits: ReplyLimits::default(),
            readonly: false,
            tls: None,
        }
    }
}

/// Why a request got no reply from a backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The connection could not be made; the request was not sent (safe to retry).
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, String),
    /// The connection broke after the request may have been sent.
    #[error("connection to {0} lost")]
    Lost(SocketAddr),
    /// No reply within the command timeout.
    #[error("{0} did not answer within {1:?}")]
    Timeout(SocketAddr, Duration),
    /// The backend sent something that is not RESP.
    #[error("{0} sent an invalid reply")]
    Protocol(SocketAddr),
    /// No node serves the slot (yet).
    #[error("Hash slot not served")]
    Unserved,
}

impl BackendError {
    /// Whether the request never reached the backend, so sending it again is safe.
    pub fn not_sent(&self) -> bool {
        matches!(self, BackendError::Connect(..) | BackendError::Unserved)
    }
}

/// A node's reachability as its shared connections see it: failed from the first connect
/// error or lost connection until a connect succeeds again. Every failure also asks the
/// cluster's refresher for a refresh (which probes the node, so a connection the node
/// merely closed, e.g. redis's idle `timeout`, is made again at once and clears it).
#[derive(Debug)]
pub struct Reach {
    failed: Mutex<Option<Failure>>,
    refresh: Arc<Notify>,
}

/// Since when a node has been failing, and its last error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The first failure since the node last connected.
    pub since: Instant,
    /// The latest error.
    pub error: String,
}

impl Reach {
    /// A reachable node whose failures wake `refresh`.
    pub fn new(refresh: Arc<Notify>) -> Arc<Reach> {
        Arc::new(Reach {
            failed: Mutex::new(None),
            refresh,
        })
    }

    /// A connection to the node succeeded.
    pub fn connected(&self) {
        if let Ok(mut f) = self.failed.lock() {
            *f = None;
        }
    }

    /// A connect failed or a connection was lost: keeps the first failure's time.
    pub fn failed(&self, error: &BackendError) {
        if let Ok(mut f) = self.failed.lock() {
            let since = f.as_ref().map_or_else(Instant::now, |f| f.since);
            *f = Some(Failure {
                since,
                error: error.to_string(),
            });
        }
        self.refresh.notify_one();
    }

    /// The current failure, if the node is failing.
    pub fn failure(&self) -> Option<Failure> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }
}

/// What a shared connection hands back.
pub type JobResult = Result<Bytes, BackendError>;

/// One unit of work for a shared connection: bytes holding `replies` requests written
/// back to back. Their replies are delivered together, as one contiguous `Bytes` (a client's
/// pipelined batch costs one channel message, not one per request); with `skip_first` the
/// first reply (`ASKING`'s `+OK`) is dropped and not counted in `replies`.
#[derive(Debug)]
pub struct Job {
    /// Encoded request(s).
    pub bytes: Bytes,
    /// How many replies are delivered.
    pub replies: u32,
    /// Whether an `ASKING` reply comes first and is dropped.
    pub skip_first: bool,
    /// Where the replies go.
    pub tx: oneshot::Sender<JobResult>,
}

/// A handle to one multiplexed backend connection.
#[derive(Debug, Clone)]
pub struct SharedConn {
    tx: mpsc::Sender<Job>,
}

/// Jobs queued per shared connection before senders wait.
const QUEUE: usize = 8192;
/// Most bytes gathered into one write.
const MAX_BATCH: usize = 256 * 1024;

impl SharedConn {
    /// Spawns the connection's task on the current runtime. It connects on the first job
    /// and ends when every handle is dropped; connects and failures are told to `reach`.
    pub fn spawn(
        addr: SocketAddr,
        proto: Protocol,
        opts: Arc<BackendOpts>,
        reach: Arc<Reach>,
    ) -> SharedConn {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(shared_task(addr, proto, opts, reach, rx));
        SharedConn { tx }
    }

    /// Queues a job without waiting; gives it back when the queue is full.
    pub fn try_send(&self, job: Job) -> Option<Job> {
        match self.tx.try_send(job) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(job)) => Some(job),
            Err(mpsc::error::TrySendError::Closed(job)) => {
                // The requester may be gone (its client left): nothing to deliver then.
                let _ = job.tx.send(Err(BackendError::Unserved));
                None
            }
        }
    }

    /// Queues a job; fails it (not sent) if the task has ended.
    pub async fn send(&self, job: Job) {
        let job = match self.tx.try_send(job) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(job)) => job,
            Err(mpsc::error::TrySendError::Closed(job)) => {
                // The requester may be gone (its client left): nothing to deliver then.
                let _ = job.tx.send(Err(BackendError::Unserved));
                return;
            }
        };
        if let Err(mpsc::error::SendError(job)) = self.tx.send(job).await {
            // The requester may be gone (its client left): nothing to deliver then.
            let _ = job.tx.send(Err(BackendError::Unserved));
        }
    }
}

struct Waiting {
    replies_left: u32,
    skip_first: bool,
    sent: Instant,
    tx: oneshot::Sender<JobResult>,
}

fn fail_all(pending: &Mutex<VecDeque<Waiting>>, err: &BackendError) {
    let drained: Vec<Waiting> = match pending.lock() {
        Ok(mut p) => p.drain(..).collect(),
        Err(_) => return,
    };
    for w in drained {
        // The requester may be gone (its client left): nothing to deliver then.
        let _ = w.tx.send(Err(err.clone()));
    }
}

async fn shared_task(
    addr: SocketAddr,
    proto: Protocol,
    opts: Arc<BackendOpts>,
    reach: Arc<Reach>,
    mut rx: mpsc::Receiver<Job>,
) {
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        let stream = match connect(addr, proto, &opts).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%addr, error = %e, "backend connect failed");
                reach.failed(&e);
                // The requester may be gone (its client left): nothing to deliver then.
                let _ = first.tx.send(Err(e.clone()));
                // Fail what queued up meanwhile too: the node is down, the callers retry
                // after a slot-map refresh.
                while let Ok(job) = rx.try_recv() {
                    // The requester may be gone (its client left): nothing to deliver then.
                    let _ = job.tx.send(Err(e.clone()));
                }
                continue;
            }
        };
        reach.connected();
        let gauge = metrics::gauge!("ocean_redis_backend_connections", "kind" => "shared");
        gauge.increment(1.0);
        metrics::counter!("ocean_redis_backend_connects_total", "kind" => "shared").increment(1);
        let err = match stream {
            Stream::Plain(s) => {
                let (rd, wr) = s.into_split();
                run_shared(rd, wr, addr, first, &mut rx, &opts).await
            }
            Stream::Tls(s) => {
                let (rd, wr) = tokio::io::split(*s);
                run_shared(rd, wr, addr, first, &mut rx, &opts).await
            }
        };
        gauge.decrement(1.0);
        if let Some(err) = err {
            tracing::debug!(%addr, error = %err, "shared backend connection closed");
            reach.failed(&err);
        } else {
            return;
        }
    }
}

/// Runs one connection until it fails (`Some(error)`) or every handle is gone and every
/// request written has its reply (`None`): a node that leaves the map (a reshard, a
/// reload of a sharded pool) answers what it was sent before its connection closes.
async fn run_shared<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut rd: R,
    mut wr: W,
    addr: SocketAddr,
    first: Job,
    rx: &mut mpsc::Receiver<Job>,
    opts: &BackendOpts,
) -> Option<BackendError> {
    let pending: Mutex<VecDeque<Waiting>> = Mutex::new(VecDeque::new());
    // Every handle is gone: the reader ends once nothing is pending.
    let closed = AtomicBool::new(false);
    let writer = async {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut next = Some(first);
        loop {
            let job = match next.take() {
                Some(j) => j,
                None => match rx.recv().await {
                    Some(j) => j,
                    None => {
                        closed.store(true, Ordering::Relaxed);
                        if pending.lock().map_or(true, |p| p.is_empty()) {
                            return None;
                        }
                        // The reader ends the connection after the last reply.
                        return std::future::pending().await;
                    }
                },
            };
            buf.clear();
            {
                let now = Instant::now();
                let Ok(mut p) = pending.lock() else {
                    return Some(BackendError::Lost(addr));
                };
                let mut job = job;
                loop {
                    buf.extend_from_slice(&job.bytes);
                    p.push_back(Waiting {
                        replies_left: job.replies.max(1),
                        skip_first: job.skip_first,
                        sent: now,
                        tx: job.tx,
                    });
                    if buf.len() >= MAX_BATCH {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(j) => job = j,
                        Err(_) => break,
                    }
                }
            }
            // flush: TLS may keep records back after write_all (a no-op on plain TCP).
            if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
                return Some(BackendError::Lost(addr));
            }
        }
    };
    let reader = async {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut scanner = ReplyScanner::new();
        let mut acc = 0usize;
        let tick = (opts.command_timeout / 4).max(Duration::from_millis(10));
        loop {
            let n = match tokio::time::timeout(tick, rd.read_buf(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => return Some(BackendError::Lost(addr)),
                Err(_) => {
                    let oldest = pending.lock().ok().and_then(|p| p.front().map(|w| w.sent));
                    if oldest.is_some_and(|t| t.elapsed() > opts.command_timeout) {
                        return Some(BackendError::Timeout(addr, opts.command_timeout));
                    }
                    continue;
                }
            };
            if n == 0 {
                return Some(BackendError::Lost(addr));
            }
            loop {
                // Replies of the front job accumulate in `buf[..acc]` until all are in.
                let rest = buf.get(acc..).unwrap_or_default();
                match scanner.check(rest, &opts.reply_limits) {
                    Ok(Some(len)) => {
                        if rest.first() == Some(&b'>') {
                            // A RESP3 push (no request asked for it): not ours to deliver.
                            let mut tail = buf.split_off(acc);
                            // Measured above: these bytes are consumed.
                            let _ = tail.split_to(len);
                            buf.unsplit(tail);
                            continue;
                        }
                        let Ok(mut p) = pending.lock() else {
                            return Some(BackendError::Lost(addr));
                        };
                        let Some(front) = p.front_mut() else {
                            return Some(BackendError::Protocol(addr));
                        };
                        if front.skip_first {
                            front.skip_first = false;
                            // ASKING's reply is first in the job: nothing accumulated yet.
                            let _ = buf.split_to(len);
                            continue;
                        }
                        acc += len;
                        front.replies_left -= 1;
                        if front.replies_left == 0 {
                            let reply = buf.split_to(acc).freeze();
                            acc = 0;
                            if let Some(w) = p.pop_front() {
                                // The requester may be gone (its client left): nothing to deliver then.
                                let _ = w.tx.send(Ok(reply));
                            }
                            if p.is_empty() && closed.load(Ordering::Relaxed) {
                                return None;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return Some(BackendError::Protocol(addr)),
                }
            }
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(64 * 1024);
            }
        }
    };
    let result = tokio::select! {
        e = writer => e,
        e = reader => e,
    };
    fail_all(
        &pending,
        &result.clone().unwrap_or(BackendError::Lost(addr)),
    );
    result
}

/// Connects, authenticates and (for RESP3) says `HELLO 3`.
///
/// # Errors
/// [`BackendError::Connect`] with the reason.
pub async fn connect(
    addr: SocketAddr,
    proto: Protocol,
    opts: &BackendOpts,
) -> Result<Stream, BackendError> {
    let fail = |e: String| BackendError::Connect(addr, e);
    let handshake = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| fail(e.to_string()))?;
        // Without TCP_NODELAY only latency suffers.
        let _ = tcp.set_nodelay(true);
        let mut stream = match &opts.tls {
            None => Stream::Plain(tcp),
            Some(c) => {
                let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                let tls =
                    c.0.connect(name, tcp)
                        .await
                        .map_err(|e| fail(format!("TLS: {e}")))?;
                Stream::Tls(Box::new(tls))
            }
        };
        let mut hello: Vec<Bytes> = Vec::new();
        // The password now: one load per connection, a rotation applies from the next.
        let password = opts.password.as_ref().map(|p| p.current());
        match proto {
            Protocol::Resp3 => {
                hello.push(Bytes::from_static(b"HELLO"));
                hello.push(Bytes::from_static(b"3"));
                if let Some(p) = &password {
                    hello.push(Bytes::from_static(b"AUTH"));
                    hello.push(Bytes::from(
                        opts.user.clone().unwrap_or_else(|| "default".into()),
                    ));
                    hello.push(Bytes::copy_from_slice(p.expose().as_bytes()));
                }
            }
            Protocol::Resp2 => {
                if let Some(p) = &password {
                    hello.push(Bytes::from_static(b"AUTH"));
                    if let Some(u) = &opts.user {
                        hello.push(Bytes::from(u.clone()));
                    }
                    hello.push(Bytes::copy_from_slice(p.expose().as_bytes()));
                }
            }
        }
        let mut buf = BytesMut::new();
        let mut replies = 0;
        if !hello.is_empty() {
            Request::new(hello).encode(&mut buf);
            replies += 1;
        }
        if opts.readonly {
            Request::new([Bytes::from_static(b"READONLY")]).encode(&mut buf);
            replies += 1;
        }
        if replies > 0 {
            stream
                .write_all(&buf)
                .await
                .map_err(|e| fail(e.to_string()))?;
            stream.flush().await.map_err(|e| fail(e.to_string()))?;
            let mut rbuf = BytesMut::new();
            for _ in 0..replies {
                let reply = read_one(&mut stream, &mut rbuf, &opts.reply_limits)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                if reply.first() == Some(&b'-') {
                    return Err(fail(String::from_utf8_lossy(&reply).trim_end().to_string()));
                }
            }
        }
        Ok(stream)
    };
    match tokio::time::timeout(opts.connect_timeout, handshake).await {
        Ok(r) => r,
        Err(_) => Err(fail(format!("timed out after {:?}", opts.connect_timeout))),
    }
}

/// Reads exactly one reply (keeping any bytes after it in `buf`).
async fn read_one<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    limits: &ReplyLimits,
) -> std::io::Result<Bytes> {
    let mut scanner = ReplyScanner::new();
    loop {
        match scanner.check(buf, limits) {
            Ok(Some(len)) => return Ok(buf.split_to(len).freeze()),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// One request/reply exchange on a fresh connection (slot-map refreshes, cluster-wide
/// commands' helpers).
///
/// # Errors
/// Connect errors, timeouts, broken replies.
pub async fn one_shot(
    addr: SocketAddr,
    req: Request,
    opts: &BackendOpts,
) -> Result<Bytes, BackendError> {
    let mut conn = DedicatedConn::open(addr, Protocol::Resp2, opts).await?;
    let mut buf = BytesMut::new();
    req.encode(&mut buf);
    match tokio::time::timeout(opts.command_timeout, async {
        conn.send(&buf).await?;
        conn.read_reply(&opts.reply_limits).await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(BackendError::Timeout(addr, opts.command_timeout)),
    }
}

/// A connection owned by one client at a time.
#[derive(Debug)]
pub struct DedicatedConn {
    /// The node.
    pub addr: SocketAddr,
    /// The protocol it speaks.
    pub proto: Protocol,
    stream: Stream,
    buf: BytesMut,
    scanner: ReplyScanner,
    _gauge: DedicatedGauge,
}

#[derive(Debug)]
struct DedicatedGauge;

impl DedicatedGauge {
    fn new() -> Self {
        metrics::gauge!("ocean_redis_backend_connections", "kind" => "dedicated").increment(1.0);
        metrics::counter!("ocean_redis_backend_connects_total", "kind" => "dedicated").increment(1);
        DedicatedGauge
    }
}

impl Drop for DedicatedGauge {
    fn drop(&mut self) {
        metrics::gauge!("ocean_redis_backend_connections", "kind" => "dedicated").decrement(1.0);
    }
}

impl DedicatedConn {
    /// Connects (see [`connect`]).
    ///
    /// # Errors
    /// As [`connect`].
    pub async fn open(
        addr: SocketAddr,
        proto: Protocol,
        opts: &BackendOpts,
    ) -> Result<Self, BackendError> {
        let stream = connect(addr, proto, opts).await?;
        Ok(DedicatedConn {
            addr,
            proto,
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            scanner: ReplyScanner::new(),
            _gauge: DedicatedGauge::new(),
        })
    }

    /// Writes bytes.
    ///
    /// # Errors
    /// [`BackendError::Lost`].
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|_| BackendError::Lost(self.addr))?;
        // TLS may keep records back after write_all (a no-op on plain TCP).
        self.stream
            .flush()
            .await
            .map_err(|_| BackendError::Lost(self.addr))
    }

    /// Reads the next reply. Cancel-safe: bytes read so far stay buffered.
    ///
    /// # Errors
    /// [`BackendError::Lost`] or [`BackendError::Protocol`].
    pub async fn read_reply(&mut self, limits: &ReplyLimits) -> Result<Bytes, BackendError> {
        loop {
            match self.scanner.check(&self.buf, limits) {
                Ok(Some(len)) => return Ok(self.buf.split_to(len).freeze()),
                Ok(None) => {}
                Err(_) => return Err(BackendError::Protocol(self.addr)),
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Err(BackendError::Lost(self.addr)),
                Ok(_) => {}
            }
        }
    }

    /// Whether no unread bytes are buffered (a precondition for reuse).
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty()
    }
}
