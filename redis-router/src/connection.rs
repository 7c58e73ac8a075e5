//! One client connection: the framed IO loop.
//!
//! The reader decodes requests and hands each to the command layer (a [`Handler`]), which
//! starts it at once (pipelining); the writer task gets, in request order, either a ready
//! reply or a handle to one in flight, and writes replies in that order, flushing whenever
//! it would otherwise wait. Consecutive requests for one node are gathered into one job
//! ([`Client::forward`]). Stateful modes (MULTI/WATCH, blocking commands, pub/sub) first
//! wait until every earlier reply is out ([`Client::barrier`]).
//!
//! This module knows nothing of commands: [`crate::cmd`] says what to do with each.

use ocean_core::drain::{DrainWatch, Read};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ocean_core::daemon::{self, WriteError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::ClientOpts;
use crate::metrics::{Family, FamilyMetrics};
use crate::proto::{DecodeError, Decoder, Protocol, Request};
use crate::route::assemble::{self, BatchFlight, Merge, Queued};
use crate::route::{self, Flight, Target};
use crate::upstream::{BackendError, Cluster, Lease};

/// Everything a connection needs.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The cluster.
    pub cluster: Arc<Cluster>,
    /// Settings.
    pub opts: Arc<ClientOpts>,
    /// Metric handles.
    pub metrics: Arc<FamilyMetrics>,
}

/// What the writer gets, in request order.
pub enum Out {
    /// A reply made already.
    Ready(Bytes),
    /// Replies of a batch of requests for one node.
    Batch(Box<BatchFlight>, Instant),
    /// One request in flight.
    Wait(Flight, Family, Instant),
    /// A split multi-key command, merged when all parts are in.
    Merge(Box<Merge>, Family, Instant),
    /// A reply computed by a task (cluster-wide commands).
    Task(tokio::task::JoinHandle<Bytes>, Family, Instant),
    /// Fires when every earlier reply has been written.
    Barrier(oneshot::Sender<()>),
}

/// Requests being gathered for one node.
struct Batch {
    /// Identity of the node (its `Arc` pointer).
    node: usize,
    bytes: BytesMut,
    reqs: Vec<Queued>,
    started: Instant,
}

/// Most requests gathered into one job.
const MAX_BATCH_REQS: usize = 256;
/// Most bytes gathered into one job.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// What the connection does after a request.
pub enum Flow {
    /// Read the next request.
    Continue,
    /// Send what is queued, then close.
    Close,
    /// The client is gone.
    Gone,
}

/// The command layer: what to do with each request of a client.
pub trait Handler<R>: Send {
    /// Handles one request; replies go through `client` ([`Client::ready`],
    /// [`Client::forward`], ...), in request order.
    fn handle(&mut self, client: &mut Client<R>, req: Request)
        -> impl Future<Output = Flow> + Send;
}

/// Serves one plain-TCP client until it leaves, with `handler` saying what each request
/// does.
pub async fn serve<H>(stream: TcpStream, shared: Shared, handler: H, drain: DrainWatch)
where
    H: Handler<tokio::net::tcp::OwnedReadHalf>,
{
    if let Err(e) = stream.set_nodelay(true) {
        // Only latency suffers; the connection still works.
        tracing::debug!(error = %e, "TCP_NODELAY");
    }
    let (rd, wr) = stream.into_split();
    serve_halves(rd, wr, shared, handler, drain).await;
}

/// Serves one TLS client (handshake done) until it leaves.
pub async fn serve_tls<H>(
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    shared: Shared,
    handler: H,
    drain: DrainWatch,
) where
    H: Handler<tokio::io::ReadHalf<tokio_rustls::server::TlsStream<TcpStream>>>,
{
    if let Err(e) = stream.get_ref().0.set_nodelay(true) {
        // Only latency suffers; the connection still works.
        tracing::debug!(error = %e, "TCP_NODELAY");
    }
    let (rd, wr) = tokio::io::split(stream);
    serve_halves(rd, wr, shared, handler, drain).await;
}

async fn serve_halves<R, W, H>(rd: R, wr: W, shared: Shared, mut handler: H, drain: DrainWatch)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    H: Handler<R>,
{
    let cluster = shared.cluster.clone();
    cluster.clients.fetch_add(1, Ordering::Relaxed);
    let gauge = metrics::gauge!("ocean_redis_client_connections");
    gauge.increment(1.0);
    let (tx, rx) = mpsc::channel(shared.opts.max_pending.max(1));
    let budget = Arc::new(Budget::new(shared.opts.max_reply_bytes));
    // Fired by the writer when the client does not take its replies: the reader stops too.
    let closed = CancellationToken::new();
    let writer = tokio::spawn(write_loop(
        wr,
        rx,
        shared.clone(),
        budget.clone(),
        closed.clone(),
    ));
    let mut dec = Decoder::with_limits(shared.opts.limits);
    if shared.opts.password.is_some() {
        dec.set_pre_auth(Some(shared.opts.pre_auth));
    }
    let mut client = Client {
        shared,
        proto: Protocol::Resp2,
        tx,
        rd,
        buf: BytesMut::with_capacity(16 * 1024),
        dec,
        enc: BytesMut::with_capacity(16 * 1024),
        read_at: Instant::now(),
        batch: None,
        queued: 0,
        budget,
        drain,
    };
    // Read, decode, hand each request to the command layer; replies are queued in order.
    let serve = async {
        loop {
            let req = match client.next_request().await {
                Some(Ok(r)) => r,
                Some(Err(reply)) => {
                    client.push(Out::Ready(reply)).await;
                    break;
                }
                None => break,
            };
            match handler.handle(&mut client, req).await {
                Flow::Continue => {}
                Flow::Close | Flow::Gone => break,
            }
        }
        client.flush_batch().await;
    };
    tokio::select! {
        () = serve => {}
        () = closed.cancelled() => {}
    }
    drop(client);
    if writer.await.is_err() {
        tracing::debug!("client writer task failed");
    }
    cluster.clients.fetch_sub(1, Ordering::Relaxed);
    gauge.decrement(1.0);
}

/// Writes replies in request order; see the module doc. Ends when the reader is done, or
/// when the client does not take its replies within `--write-timeout` (then `closed`
/// fires so the reader stops too).
async fn write_loop<W: AsyncWrite + Unpin>(
    wr: W,
    mut rx: mpsc::Receiver<Out>,
    shared: Shared,
    budget: Arc<Budget>,
    closed: CancellationToken,
) {
    let mut w = Writer {
        wr,
        out: BytesMut::with_capacity(16 * 1024),
        dead: false,
        timeout: shared.opts.write_timeout,
        budget,
        closed,
    };
    let cluster = &shared.cluster;
    let ropts = &shared.opts.route;
    // One clock read per wake-up, not per reply.
    let mut now = Instant::now();
    loop {
        if w.dead {
            break;
        }
        let item = match rx.try_recv() {
            Ok(i) => i,
            Err(mpsc::error::TryRecvError::Empty) => {
                w.flush().await;
                let i = match rx.recv().await {
                    Some(i) => i,
                    None => break,
                };
                now = Instant::now();
                i
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        let replies = item.replies();
        let reply = match item {
            Out::Ready(b) => b,
            Out::Barrier(tx) => {
                w.flush().await;
                // The reader may have stopped waiting (it is gone): nothing to tell.
                let _ = tx.send(());
                continue;
            }
            Out::Wait(mut f, family, started) => {
                let first = match f.rx.try_recv() {
                    Ok(r) => r,
                    Err(oneshot::error::TryRecvError::Empty) => {
                        w.flush().await;
                        let r = (&mut f.rx).await.unwrap_or(Err(BackendError::Unserved));
                        now = Instant::now();
                        r
                    }
                    Err(oneshot::error::TryRecvError::Closed) => Err(BackendError::Unserved),
                };
                let reply = if route::is_final(&first) {
                    match first {
                        Ok(b) => b,
                        Err(e) => route::error_reply(&e),
                    }
                } else {
                    w.flush().await;
                    let r = route::finish(cluster, ropts, first, f).await;
                    now = Instant::now();
                    r
                };
                shared.metrics.record_at(family, started, now, &reply);
                reply
            }
            Out::Batch(mut b, started) => {
                let first = match b.rx.try_recv() {
                    Ok(r) => r,
                    Err(oneshot::error::TryRecvError::Empty) => {
                        w.flush().await;
                        let r = (&mut b.rx).await.unwrap_or(Err(BackendError::Unserved));
                        now = Instant::now();
                        r
                    }
                    Err(oneshot::error::TryRecvError::Closed) => Err(BackendError::Unserved),
                };
                match first {
                    // No error reply in there: relay the whole batch as it came.
                    Ok(bytes) if !bytes.contains(&b'-') => {
                        shared.metrics.record_batch_at(
                            b.reqs.iter().map(|q| q.family),
                            started,
                            now,
                        );
                        bytes
                    }
                    other => {
                        w.flush().await;
                        let r = assemble::finish_batch(
                            cluster,
                            ropts,
                            &shared.metrics,
                            other,
                            *b,
                            started,
                        )
                        .await;
                        now = Instant::now();
                        r
                    }
                }
            }
            Out::Merge(m, family, started) => {
                w.flush().await;
                let reply = assemble::merge(cluster, ropts, *m).await;
                now = Instant::now();
                shared.metrics.record_at(family, started, now, &reply);
                reply
            }
            Out::Task(t, family, started) => {
                w.flush().await;
                let reply = t
                    .await
                    .unwrap_or_else(|_| Bytes::from_static(b"-ERR internal error\r\n"));
                now = Instant::now();
                shared.metrics.record_at(family, started, now, &reply);
                reply
            }
        };
        w.budget.took(replies, reply.len());
        if !w.dead {
            w.out.extend_from_slice(&reply);
            w.budget.unwritten.store(w.out.len(), Ordering::Release);
            if w.out.len() >= 64 * 1024 {
                w.flush().await;
            }
        }
    }
    w.flush().await;
    if !w.dead {
        // The client may already be gone; the socket closes when this task ends anyway.
        let _ = w.wr.shutdown().await;
    }
}

/// The writer's half of a client: its socket, the replies gathered for one write, and
/// the deadline every write must meet.
struct Writer<W> {
    wr: W,
    out: BytesMut,
    /// The client stopped taking replies (or its socket failed): nothing more is written.
    dead: bool,
    timeout: std::time::Duration,
    budget: Arc<Budget>,
    closed: CancellationToken,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// Writes what is gathered, within `--write-timeout`, and tells a waiting reader there
    /// is room again.
    async fn flush(&mut self) {
        if !self.out.is_empty() && !self.dead {
            self.budget
                .unwritten
                .store(self.out.len(), Ordering::Release);
            // write_all + flush (TLS may keep records back; a no-op on plain TCP).
            match daemon::write_all_within(&mut self.wr, &self.out, self.timeout).await {
                Ok(()) => {}
                Err(WriteError::Timeout(t)) => {
                    metrics::counter!("ocean_redis_clients_closed_total", "reason" => "write_timeout")
                        .increment(1);
                    tracing::debug!(
                        timeout_ms = t.as_millis() as u64,
                        "client does not read its replies; closing"
                    );
                    self.die();
                }
                Err(WriteError::Io(e)) => {
                    tracing::debug!(error = %e, "client write failed");
                    self.die();
                }
            }
        }
        self.out.clear();
        self.budget.unwritten.store(0, Ordering::Release);
        self.budget.room.notify_one();
    }

    fn die(&mut self) {
        self.dead = true;
        self.closed.cancel();
    }
}

/// What one client has buffered in the router, shared by its reader and its writer: the
/// reader stops reading while it is over `--max-pending` replies or
/// `--max-client-reply-bytes` (replies not yet written, counted exactly once the writer
/// has them and estimated from the client's recent replies before).
#[derive(Debug)]
struct Budget {
    /// Replies the writer has taken off its queue (the reader counts those it queued).
    taken: AtomicU64,
    /// Reply bytes taken and not yet written to the client.
    unwritten: AtomicUsize,
    /// The size of one reply, from this client's recent ones: starts at 1/16 of the byte
    /// budget (a first burst of 16 requests whatever their size), follows a bigger reply
    /// at once and a smaller one slowly.
    estimate: AtomicUsize,
    /// Wakes a reader waiting for room.
    room: Notify,
}

impl Budget {
    fn new(max_reply_bytes: usize) -> Budget {
        Budget {
            taken: AtomicU64::new(0),
            unwritten: AtomicUsize::new(0),
            estimate: AtomicUsize::new((max_reply_bytes / 16).max(MIN_REPLY_ESTIMATE)),
            room: Notify::new(),
        }
    }

    /// The writer took `replies` replies of `bytes` bytes in all.
    fn took(&self, replies: u64, bytes: usize) {
        if replies == 0 {
            return;
        }
        self.taken.fetch_add(replies, Ordering::Release);
        let per = bytes / replies as usize;
        let est = self.estimate.load(Ordering::Relaxed);
        let next = if per >= est {
            per
        } else {
            (est - (est - per) / 16).max(MIN_REPLY_ESTIMATE)
        };
        self.estimate.store(next, Ordering::Relaxed);
    }
}

/// The smallest reply estimate (a `+OK\r\n` is 5 bytes).
const MIN_REPLY_ESTIMATE: usize = 16;

/// One client's IO state: its read half and buffer, decoder, the queue to its writer, and
/// the requests being gathered for one node.
pub struct Client<R> {
    /// The cluster, settings and metrics.
    pub shared: Shared,
    /// The protocol the client negotiated (`HELLO`).
    pub proto: Protocol,
    tx: mpsc::Sender<Out>,
    rd: R,
    buf: BytesMut,
    dec: Decoder,
    enc: BytesMut,
    /// When the last read from the client completed: the start of every request in it
    /// (one clock read per read, not per request).
    read_at: Instant,
    /// Requests gathered for one node, sent when a request for elsewhere comes, before
    /// anything else is queued, and before the next read.
    batch: Option<Batch>,
    /// Replies queued for the writer so far (see [`Budget`]).
    queued: u64,
    budget: Arc<Budget>,
    /// SIGTERM (or the cluster leaving the table): stop at a request boundary, after
    /// serving what the client sent before it.
    drain: DrainWatch,
}

/// Waits until the client closes its side, buffering what it sends meanwhile (bounded).
async fn client_eof<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) {
    loop {
        if buf.len() > 1024 * 1024 {
            std::future::pending::<()>().await;
        }
        match rd.read_buf(buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

impl Out {
    /// How many client replies this item stands for.
    fn replies(&self) -> u64 {
        match self {
            Out::Ready(_) | Out::Wait(..) | Out::Merge(..) | Out::Task(..) => 1,
            Out::Batch(b, _) => b.reqs.len() as u64,
            Out::Barrier(_) => 0,
        }
    }
}

impl<R: AsyncRead + Unpin + Send> Client<R> {
    /// Queues `out` for the writer, counting the replies it stands for.
    async fn send_out(&mut self, out: Out) {
        self.queued += out.replies();
        if self.tx.send(out).await.is_err() {
            // The writer is gone: the client is being closed; nothing more to write.
        }
    }

    /// Waits while the client's replies in flight or not yet written are over its budget
    /// (`--max-pending`, `--max-client-reply-bytes`): the router then reads nothing more
    /// from it until the writer has written enough. A client that never reads is closed
    /// by the writer's `--write-timeout`.
    async fn wait_for_room(&mut self) {
        let mut paused = false;
        loop {
            let queued = self
                .queued
                .saturating_sub(self.budget.taken.load(Ordering::Acquire));
            // Requests gathered for one node count too: their replies will come.
            let gathered = self.batch.as_ref().map_or(0, |b| b.reqs.len());
            let unwritten = self.budget.unwritten.load(Ordering::Acquire);
            if queued == 0 && gathered == 0 && unwritten == 0 {
                return;
            }
            let in_flight = usize::try_from(queued)
                .unwrap_or(usize::MAX)
                .saturating_add(gathered);
            let estimate = self.budget.estimate.load(Ordering::Relaxed);
            let load = unwritten.saturating_add(in_flight.saturating_mul(estimate));
            let opts = &self.shared.opts;
            if in_flight < opts.max_pending && load <= opts.max_reply_bytes {
                return;
            }
            if gathered > 0 {
                // Send what is gathered first: waiting on replies never asked for would
                // wait for ever.
                self.flush_batch().await;
                continue;
            }
            if !paused {
                paused = true;
                metrics::counter!("ocean_redis_client_read_pauses_total").increment(1);
            }
            self.budget.room.notified().await;
        }
    }

    /// The next request already in the buffer, without reading (`Ok(None)`: none
    /// complete).
    ///
    /// # Errors
    /// A protocol error: reply with it and close.
    pub fn decode_buffered(&mut self) -> Result<Option<Request>, DecodeError> {
        self.dec.decode(&mut self.buf)
    }

    /// Reads more from the client into the buffer; `Ok(0)` at EOF.
    ///
    /// Cancel safe (a `read_buf`): usable in `select!`.
    ///
    /// # Errors
    /// The client's socket failed.
    pub async fn read_more(&mut self) -> std::io::Result<usize> {
        self.rd.read_buf(&mut self.buf).await
    }

    /// Whether the client has authenticated: lifts (or, after `RESET`, restores) the
    /// pre-auth request limits from the next request on.
    pub fn set_authenticated(&mut self, yes: bool) {
        let pre_auth =
            (!yes && self.shared.opts.password.is_some()).then_some(self.shared.opts.pre_auth);
        self.dec.set_pre_auth(pre_auth);
    }

    /// The next request; `Some(Err(reply))` on a protocol error (then close), `None` when
    /// the client is gone.
    pub async fn next_request(&mut self) -> Option<Result<Request, Bytes>> {
        loop {
            self.wait_for_room().await;
            match self.dec.decode(&mut self.buf) {
                Ok(Some(r)) => return Some(Ok(r)),
                Ok(None) => {}
                Err(e) => {
                    metrics::counter!("ocean_redis_protocol_errors_total").increment(1);
                    return Some(Err(e.reply()));
                }
            }
            self.flush_batch().await;
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            let idle = self.shared.opts.idle_timeout;
            let at_boundary = self.buf.is_empty();
            let read = if idle.is_zero() {
                match self
                    .drain
                    .read(at_boundary, self.rd.read_buf(&mut self.buf))
                    .await
                {
                    Read::Done(r) => r,
                    Read::Again => continue,
                    Read::Stop => return None,
                }
            } else {
                // read_buf is cancel safe: a timed-out or drained read loses nothing.
                let read = self
                    .drain
                    .read(at_boundary, self.rd.read_buf(&mut self.buf));
                match tokio::time::timeout(idle, read).await {
                    Ok(Read::Done(r)) => r,
                    Ok(Read::Again) => continue,
                    Ok(Read::Stop) => return None,
                    Err(_) if self.queued > self.budget.taken.load(Ordering::Acquire) => {
                        // Replies still in flight: not idle (a slow backend, a big reply).
                        continue;
                    }
                    Err(_) => {
                        metrics::counter!("ocean_redis_clients_closed_total", "reason" => "idle")
                            .increment(1);
                        tracing::debug!(idle_ms = idle.as_millis() as u64, "idle client closed");
                        return None;
                    }
                }
            };
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => self.read_at = Instant::now(),
            }
        }
    }

    /// Queues a reply (or a handle to one) after everything gathered so far.
    pub async fn push(&mut self, out: Out) {
        self.flush_batch().await;
        self.wait_for_room().await;
        self.send_out(out).await;
    }

    pub async fn ready(&mut self, b: Bytes) {
        self.push(Out::Ready(b)).await;
    }

    /// Sends the gathered requests as one job (or one plain request).
    pub async fn flush_batch(&mut self) {
        let Some(mut b) = self.batch.take() else {
            return;
        };
        let proto = self.proto;
        let cluster = &self.shared.cluster;
        if b.reqs.len() == 1 {
            if let Some(q) = b.reqs.pop() {
                let target = Target::Slot(q.slot);
                let rx = route::send(cluster, target, &q.bytes, proto, false).await;
                let flight = Flight {
                    rx,
                    req: q.bytes,
                    target,
                    proto,
                    read_only: q.read_only,
                };
                self.send_out(Out::Wait(flight, q.family, b.started)).await;
            }
            return;
        }
        let Some(first) = b.reqs.first().map(|q| q.slot) else {
            return;
        };
        let n = b.reqs.len() as u32;
        let rx = route::send_job(
            cluster,
            Target::Slot(first),
            b.bytes.freeze(),
            n,
            false,
            proto,
        )
        .await;
        let flight = BatchFlight {
            rx,
            reqs: b.reqs,
            proto,
        };
        self.send_out(Out::Batch(Box::new(flight), b.started)).await;
    }

    pub async fn barrier(&mut self) {
        let (tx, rx) = oneshot::channel();
        self.push(Out::Barrier(tx)).await;
        // The writer is gone (the client is closing): nothing to wait for.
        let _ = rx.await;
    }

    pub fn encode(&mut self, req: &Request) -> Bytes {
        if let Some(raw) = &req.raw {
            return raw.clone();
        }
        req.encode(&mut self.enc);
        self.enc.split().freeze()
    }

    pub fn encode_args(&mut self, args: Vec<Bytes>) -> Bytes {
        self.encode(&Request::new(args))
    }

    pub async fn forward(
        &mut self,
        req: &Request,
        target: Target,
        family: Family,
        read_only: bool,
    ) {
        let bytes = self.encode(req);
        if let (Target::Slot(slot), true) = (target, read_only) {
            if let Some(replica) = self.shared.cluster.replica_for(slot) {
                // A replica read: sent alone; a retry (MOVED, lost replica) goes to the
                // slot's master.
                self.flush_batch().await;
                let rx = route::send(
                    &self.shared.cluster,
                    Target::Node(replica),
                    &bytes,
                    self.proto,
                    false,
                )
                .await;
                let flight = Flight {
                    rx,
                    req: bytes,
                    target,
                    proto: self.proto,
                    read_only,
                };
                let started = self.read_at;
                self.send_out(Out::Wait(flight, family, started)).await;
                return;
            }
        }
        if let Target::Slot(slot) = target {
            let node = self
                .shared
                .cluster
                .with_slot(slot, |n| n.map(|n| Arc::as_ptr(n) as usize));
            if let Some(node) = node {
                let full = self.batch.as_ref().is_some_and(|b| {
                    b.node != node
                        || b.reqs.len() >= MAX_BATCH_REQS
                        || b.bytes.len() >= MAX_BATCH_BYTES
                });
                if full {
                    self.flush_batch().await;
                }
                let started = self.read_at;
                let b = self.batch.get_or_insert_with(|| Batch {
                    node,
                    bytes: BytesMut::new(),
                    reqs: Vec::new(),
                    started,
                });
                b.bytes.extend_from_slice(&bytes);
                b.reqs.push(Queued {
                    bytes,
                    slot,
                    read_only,
                    family,
                });
                return;
            }
        }
        self.flush_batch().await;
        let started = self.read_at;
        let rx = route::send(&self.shared.cluster, target, &bytes, self.proto, false).await;
        self.push(Out::Wait(
            Flight {
                rx,
                req: bytes,
                target,
                proto: self.proto,
                read_only,
            },
            family,
            started,
        ))
        .await;
    }

    /// Waits for a reply on a dedicated connection, noticing a client that leaves.
    pub async fn exchange(&mut self, lease: &mut Lease, bytes: &[u8]) -> Result<Bytes, Flow> {
        if lease.conn.send(bytes).await.is_err() {
            return Err(Flow::Continue);
        }
        let limits = self.shared.cluster.opts.backend.reply_limits.clone();
        tokio::select! {
            r = lease.conn.read_reply(&limits) => r.map_err(|_| Flow::Continue),
            _ = client_eof(&mut self.rd, &mut self.buf) => Err(Flow::Gone),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The client timeouts on tokio's paused clock: no network, no wall-clock sleeps. The
    //! client is a `duplex` pipe; the handler answers every request itself (or through a
    //! task that takes its time, standing in for a slow backend).

    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf};
    use tokio::time::Instant;

    use super::*;
    use crate::upstream::ClusterOpts;

    /// Answers every request with `reply`; with `delay`, through a task that sleeps first.
    struct Answer {
        reply: Bytes,
        delay: Option<Duration>,
    }

    impl Handler<ReadHalf<DuplexStream>> for Answer {
        async fn handle(
            &mut self,
            client: &mut Client<ReadHalf<DuplexStream>>,
            _req: Request,
        ) -> Flow {
            match self.delay {
                None => client.ready(self.reply.clone()).await,
                Some(d) => {
                    let reply = self.reply.clone();
                    let task = tokio::spawn(async move {
                        tokio::time::sleep(d).await;
                        reply
                    });
                    client
                        .push(Out::Task(task, Family::Local, std::time::Instant::now()))
                        .await;
                }
            }
            Flow::Continue
        }
    }

    /// A connection served on one end of a pipe of `pipe` bytes; the other end is returned
    /// with the serving task.
    fn start(
        opts: ClientOpts,
        handler: Answer,
        pipe: usize,
    ) -> (DuplexStream, tokio::task::JoinHandle<()>) {
        let (ours, theirs) = tokio::io::duplex(pipe);
        let shared = Shared {
            cluster: Cluster::new("test".into(), Vec::new(), ClusterOpts::default()),
            opts: Arc::new(opts),
            metrics: Arc::new(FamilyMetrics::new("test")),
        };
        let (rd, wr) = tokio::io::split(ours);
        let task = tokio::spawn(serve_halves(rd, wr, shared, handler, DrainWatch::never()));
        (theirs, task)
    }

    /// Reads until EOF; what was read.
    async fn read_to_eof(c: &mut DuplexStream) -> Vec<u8> {
        let mut got = Vec::new();
        // A pipe's read fails only when its other end is gone: EOF too.
        let _ = c.read_to_end(&mut got).await;
        got
    }

    fn pong() -> Answer {
        Answer {
            reply: Bytes::from_static(b"+PONG\r\n"),
            delay: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_client_is_closed_after_the_idle_timeout_and_not_before() {
        let opts = ClientOpts {
            idle_timeout: Duration::from_secs(10),
            ..ClientOpts::default()
        };
        let (mut c, task) = start(opts, pong(), 64 * 1024);
        // Each request restarts the idle clock: 3 requests 9 s apart keep it open 27 s.
        let t0 = Instant::now();
        let mut buf = [0u8; 7];
        for _ in 0..3 {
            c.write_all(b"PING\r\n").await.unwrap();
            c.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"+PONG\r\n");
            tokio::time::sleep(Duration::from_secs(9)).await;
        }
        assert!(!task.is_finished(), "closed while the client was active");
        // Half a request, then silence (slowloris): closed 10 s after its last byte.
        c.write_all(b"*2\r\n$3\r\nGET\r\n").await.unwrap();
        let sent = Instant::now();
        assert!(read_to_eof(&mut c).await.is_empty());
        let idle = sent.elapsed();
        task.await.unwrap();
        // Every byte restarts the clock, so the 9 s of silence before it do not count.
        assert!(
            idle >= Duration::from_secs(10) && idle <= Duration::from_secs(11),
            "closed {idle:?} after the last byte"
        );
        assert!(t0.elapsed() >= Duration::from_secs(37));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_waiting_for_a_slow_reply_is_not_idle() {
        let opts = ClientOpts {
            idle_timeout: Duration::from_secs(10),
            ..ClientOpts::default()
        };
        let slow = Answer {
            reply: Bytes::from_static(b"+LATE\r\n"),
            delay: Some(Duration::from_secs(30)),
        };
        let (mut c, task) = start(opts, slow, 64 * 1024);
        let t0 = Instant::now();
        c.write_all(b"PING\r\n").await.unwrap();
        let mut buf = [0u8; 7];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"+LATE\r\n");
        let replied = t0.elapsed();
        assert!(replied >= Duration::from_secs(30), "{replied:?}");
        // Now nothing is in flight: idle from here (within one idle period of the reply).
        assert!(read_to_eof(&mut c).await.is_empty());
        task.await.unwrap();
        let closed = t0.elapsed() - replied;
        assert!(
            closed <= Duration::from_secs(10),
            "closed {closed:?} after the reply"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_read_is_closed_after_the_write_timeout() {
        let opts = ClientOpts {
            write_timeout: Duration::from_secs(5),
            ..ClientOpts::default()
        };
        // 1 MB replies through a 64 KB pipe the client never reads.
        let big = Answer {
            reply: Bytes::from(vec![b'x'; 1024 * 1024]),
            delay: None,
        };
        let (mut c, task) = start(opts, big, 64 * 1024);
        let t0 = Instant::now();
        c.write_all(b"PING\r\nPING\r\n").await.unwrap();
        task.await.unwrap();
        let closed = t0.elapsed();
        assert!(
            closed >= Duration::from_secs(5) && closed <= Duration::from_secs(6),
            "closed after {closed:?}"
        );
        // What fitted the pipe is there, then EOF.
        let got = read_to_eof(&mut c).await;
        assert_eq!(got.len(), 64 * 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_late_but_within_the_write_timeout_is_not_closed() {
        let opts = ClientOpts {
            write_timeout: Duration::from_secs(5),
            ..ClientOpts::default()
        };
        // Each 128 KB reply fills the 64 KB pipe twice: the write waits for the client,
        // which reads 4 s later, within the 5 s timeout.
        let reply = Bytes::from(vec![b'y'; 128 * 1024]);
        let (mut c, task) = start(opts, Answer { reply, delay: None }, 64 * 1024);
        for _ in 0..4 {
            c.write_all(b"PING\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_secs(4)).await;
            let mut buf = vec![0u8; 128 * 1024];
            c.read_exact(&mut buf).await.unwrap();
            assert!(buf.iter().all(|&b| b == b'y'));
        }
        assert!(!task.is_finished(), "a client that reads was closed");
        drop(c);
        task.await.unwrap();
    }
}
