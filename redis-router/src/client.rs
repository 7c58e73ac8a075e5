//! One client connection.
//!
//! The reader decodes requests and starts each at once (pipelining); the writer task gets,
//! in request order, either a ready reply or a handle to one in flight, and writes replies
//! in that order, flushing whenever it would otherwise wait. Stateful modes (MULTI/WATCH,
//! blocking commands, pub/sub) first wait until every earlier reply is out (a barrier),
//! then pin a dedicated backend connection until the state ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ocean_core::secret::Secret;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::command::{self, CommandSpec, Flags, Split};
use crate::metrics::{Family, FamilyMetrics};
use crate::proto::{self, Decoder, Limits, Protocol, Request, Value};
use crate::route::{self, Flight, RouteOpts, Target};
use crate::slot::key_slot;
use crate::upstream::{BackendError, Cluster, JobResult, Lease};

/// Compares a client's password with ours without returning early at the first
/// differing byte (the length is not hidden).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Client-facing settings.
#[derive(Debug, Clone)]
pub struct ClientOpts {
    /// Request size bounds.
    pub limits: Limits,
    /// Replies a client may have outstanding before the router stops reading from it.
    pub max_pending: usize,
    /// Password clients must `AUTH` with (`Debug` redacts it).
    pub password: Option<Secret>,
    /// Whether FLUSHALL/FLUSHDB are passed to every master.
    pub allow_flush: bool,
    /// Routing limits.
    pub route: RouteOpts,
    /// TLS for clients (`--tls-cert`/`--tls-key`): the listeners then accept TLS only.
    pub tls: Option<crate::tls::Acceptor>,
}

impl Default for ClientOpts {
    fn default() -> Self {
        ClientOpts {
            limits: Limits {
                max_array_len: 256 * 1024,
                ..Limits::default()
            },
            max_pending: 1024,
            password: None,
            allow_flush: false,
            route: RouteOpts::default(),
            tls: None,
        }
    }
}

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

enum Out {
    Ready(Bytes),
    Batch(Box<BatchFlight>, Instant),
    Wait(Flight, Family, Instant),
    Merge(Box<Merge>, Family, Instant),
    Task(tokio::task::JoinHandle<Bytes>, Family, Instant),
    Barrier(oneshot::Sender<()>),
}

/// Consecutive requests of one client for one node, sent as one job.
struct BatchFlight {
    rx: oneshot::Receiver<JobResult>,
    /// Each request's bytes, slot, read-only flag and family, in order.
    reqs: Vec<Queued>,
    proto: Protocol,
}

struct Queued {
    bytes: Bytes,
    slot: u16,
    read_only: bool,
    family: Family,
}

/// Requests being gathered for one node.
struct Batch {
    /// Identity of the node (its `Arc` pointer).
    node: usize,
    bytes: BytesMut,
    reqs: Vec<Queued>,
    started: Instant,
}

/// A split command's parts for one node: node identity, first slot, the parts' bytes,
/// the parts, and their indices.
type NodeParts = (usize, u16, BytesMut, Vec<Queued>, Vec<usize>);

/// Most requests gathered into one job.
const MAX_BATCH_REQS: usize = 256;
/// Most bytes gathered into one job.
const MAX_BATCH_BYTES: usize = 64 * 1024;

struct Merge {
    split: Split,
    /// One job per node, each with the parts (sub-commands) it carries, by part index.
    jobs: Vec<(BatchFlight, Vec<usize>)>,
    /// How many parts there are.
    nparts: usize,
    /// For MGET: each part's keys' positions in the reply.
    positions: Vec<Vec<usize>>,
    total: usize,
}

enum Flow {
    Continue,
    /// Send what is queued, then close.
    Close,
    /// The client is gone.
    Gone,
}

/// Serves one plain-TCP client until it leaves.
pub async fn serve(stream: TcpStream, shared: Shared) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    serve_halves(rd, wr, shared).await;
}

/// Serves one TLS client (handshake done) until it leaves.
pub async fn serve_tls(stream: tokio_rustls::server::TlsStream<TcpStream>, shared: Shared) {
    let _ = stream.get_ref().0.set_nodelay(true);
    let (rd, wr) = tokio::io::split(stream);
    serve_halves(rd, wr, shared).await;
}

async fn serve_halves<R, W>(rd: R, wr: W, shared: Shared)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let cluster = shared.cluster.clone();
    cluster.clients.fetch_add(1, Ordering::Relaxed);
    let gauge = metrics::gauge!("ocean_redis_client_connections");
    gauge.increment(1.0);
    let (tx, rx) = mpsc::channel(shared.opts.max_pending.max(1));
    let writer = tokio::spawn(write_loop(wr, rx, shared.clone()));
    let limits = shared.opts.limits;
    let mut session = Session {
        id: cluster.client_id(),
        authed: shared.opts.password.is_none(),
        shared,
        proto: Protocol::Resp2,
        name: None,
        tx,
        rd,
        buf: BytesMut::with_capacity(16 * 1024),
        dec: Decoder::with_limits(limits),
        enc: BytesMut::with_capacity(16 * 1024),
        any: 0,
        read_at: Instant::now(),
        batch: None,
    };
    session.run().await;
    drop(session);
    let _ = writer.await;
    cluster.clients.fetch_sub(1, Ordering::Relaxed);
    gauge.decrement(1.0);
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Out>, shared: Shared) {
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut dead = false;
    let cluster = &shared.cluster;
    let ropts = &shared.opts.route;
    // One clock read per wake-up, not per reply.
    let mut now = Instant::now();
    loop {
        let item = match rx.try_recv() {
            Ok(i) => i,
            Err(mpsc::error::TryRecvError::Empty) => {
                flush(&mut wr, &mut out, &mut dead).await;
                let i = match rx.recv().await {
                    Some(i) => i,
                    None => break,
                };
                now = Instant::now();
                i
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        let reply = match item {
            Out::Ready(b) => b,
            Out::Barrier(tx) => {
                flush(&mut wr, &mut out, &mut dead).await;
                let _ = tx.send(());
                continue;
            }
            Out::Wait(mut f, family, started) => {
                let first = match f.rx.try_recv() {
                    Ok(r) => r,
                    Err(oneshot::error::TryRecvError::Empty) => {
                        flush(&mut wr, &mut out, &mut dead).await;
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
                    flush(&mut wr, &mut out, &mut dead).await;
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
                        flush(&mut wr, &mut out, &mut dead).await;
                        let r = (&mut b.rx).await.unwrap_or(Err(BackendError::Unserved));
                        now = Instant::now();
                        r
                    }
                    Err(oneshot::error::TryRecvError::Closed) => Err(BackendError::Unserved),
                };
                match first {
                    // No error reply in there: relay the whole batch as it came.
                    Ok(bytes) if !bytes.contains(&b'-') => {
                        for q in &b.reqs {
                            shared.metrics.record_at(q.family, started, now, b"+");
                        }
                        bytes
                    }
                    other => {
                        flush(&mut wr, &mut out, &mut dead).await;
                        let r = finish_batch(&shared, other, *b, started).await;
                        now = Instant::now();
                        r
                    }
                }
            }
            Out::Merge(m, family, started) => {
                flush(&mut wr, &mut out, &mut dead).await;
                let reply = merge(cluster, ropts, *m).await;
                now = Instant::now();
                shared.metrics.record_at(family, started, now, &reply);
                reply
            }
            Out::Task(t, family, started) => {
                flush(&mut wr, &mut out, &mut dead).await;
                let reply = t
                    .await
                    .unwrap_or_else(|_| Bytes::from_static(b"-ERR internal error\r\n"));
                now = Instant::now();
                shared.metrics.record_at(family, started, now, &reply);
                reply
            }
        };
        if !dead {
            out.extend_from_slice(&reply);
            if out.len() >= 64 * 1024 {
                flush(&mut wr, &mut out, &mut dead).await;
            }
        }
    }
    flush(&mut wr, &mut out, &mut dead).await;
    let _ = wr.shutdown().await;
}

async fn flush<W: AsyncWrite + Unpin>(wr: &mut W, out: &mut BytesMut, dead: &mut bool) {
    if out.is_empty() {
        return;
    }
    // flush: TLS may keep records back after write_all (a no-op on plain TCP).
    if !*dead && (wr.write_all(out).await.is_err() || wr.flush().await.is_err()) {
        *dead = true;
    }
    out.clear();
}

/// A batch whose replies need a look: each reply is checked and, where it is a redirect
/// or a failure, finished on its own.
async fn finish_batch(
    shared: &Shared,
    first: JobResult,
    b: BatchFlight,
    started: Instant,
) -> Bytes {
    let replies = job_replies(&shared.cluster, &shared.opts.route, first, &b.reqs, b.proto).await;
    let mut out = BytesMut::new();
    for (q, reply) in b.reqs.iter().zip(&replies) {
        shared.metrics.record(q.family, started, reply);
        out.extend_from_slice(reply);
    }
    out.freeze()
}

/// The final reply of each request of a job, given the job's first result.
async fn job_replies(
    cluster: &Cluster,
    ropts: &RouteOpts,
    first: JobResult,
    reqs: &[Queued],
    proto: Protocol,
) -> Vec<Bytes> {
    let limits = proto::ReplyLimits::default();
    let mut out = Vec::with_capacity(reqs.len());
    let mut pos = 0;
    for q in reqs {
        let flight = || Flight {
            rx: oneshot::channel().1,
            req: q.bytes.clone(),
            target: Target::Slot(q.slot),
            proto,
            read_only: q.read_only,
        };
        let reply = match &first {
            Ok(bytes) => {
                let rest = bytes.get(pos..).unwrap_or_default();
                match proto::decode_reply(rest, &limits) {
                    Ok(Some(len)) => {
                        let one = bytes.slice(pos..pos + len);
                        pos += len;
                        let r: JobResult = Ok(one.clone());
                        if route::is_final(&r) {
                            one
                        } else {
                            route::finish(cluster, ropts, r, flight()).await
                        }
                    }
                    _ => route::error_reply(&BackendError::Protocol(([0, 0, 0, 0], 0).into())),
                }
            }
            Err(e) => route::finish(cluster, ropts, Err(e.clone()), flight()).await,
        };
        out.push(reply);
    }
    out
}

/// Splits `*N\r\n` + N elements into its elements.
fn array_elements(reply: &Bytes) -> Option<Vec<Bytes>> {
    if reply.first() != Some(&b'*') {
        return None;
    }
    let nl = reply.iter().position(|&b| b == b'\n')?;
    let n: usize = std::str::from_utf8(reply.get(1..nl.checked_sub(1)?)?)
        .ok()?
        .parse()
        .ok()?;
    let mut pos = nl + 1;
    let mut out = Vec::with_capacity(n);
    let limits = proto::ReplyLimits::default();
    for _ in 0..n {
        let len = proto::decode_reply(reply.get(pos..)?, &limits).ok()??;
        out.push(reply.slice(pos..pos + len));
        pos += len;
    }
    Some(out)
}

async fn merge(cluster: &Cluster, ropts: &RouteOpts, m: Merge) -> Bytes {
    let mut replies = vec![Bytes::new(); m.nparts];
    for (job, parts) in m.jobs {
        let first = job.rx.await.unwrap_or(Err(BackendError::Unserved));
        let got = job_replies(cluster, ropts, first, &job.reqs, job.proto).await;
        for (reply, i) in got.into_iter().zip(parts) {
            if let Some(r) = replies.get_mut(i) {
                *r = reply;
            }
        }
    }
    if let Some(err) = replies.iter().find(|r| r.first() == Some(&b'-')) {
        return err.clone();
    }
    match m.split {
        Split::ConcatArrays => {
            let mut slots: Vec<Option<Bytes>> = vec![None; m.total];
            for (reply, positions) in replies.iter().zip(&m.positions) {
                let Some(elems) = array_elements(reply) else {
                    return Bytes::from_static(b"-ERR unexpected reply from a cluster node\r\n");
                };
                for (e, &p) in elems.into_iter().zip(positions) {
                    if let Some(s) = slots.get_mut(p) {
                        *s = Some(e);
                    }
                }
            }
            let mut out = BytesMut::new();
            proto::write_array_header(&mut out, m.total);
            for s in slots {
                match s {
                    Some(b) => out.extend_from_slice(&b),
                    None => out.extend_from_slice(b"$-1\r\n"),
                }
            }
            out.freeze()
        }
        Split::SumIntegers => {
            let mut sum = 0i64;
            for r in &replies {
                match proto::parse(r).and_then(|v| v.as_int()) {
                    Some(n) => sum += n,
                    None => return r.clone(),
                }
            }
            int_reply(sum)
        }
        Split::AllOk | Split::SameSlot => replies
            .into_iter()
            .next()
            .unwrap_or_else(|| Bytes::from_static(b"+OK\r\n")),
    }
}

fn int_reply(n: i64) -> Bytes {
    let mut out = BytesMut::new();
    proto::write_integer(&mut out, n);
    out.freeze()
}

fn err_reply(msg: &str) -> Bytes {
    let mut out = BytesMut::new();
    proto::write_error(&mut out, msg);
    out.freeze()
}

fn lower(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_lowercase()
}

struct Session<R> {
    shared: Shared,
    id: u64,
    authed: bool,
    proto: Protocol,
    name: Option<Bytes>,
    tx: mpsc::Sender<Out>,
    rd: R,
    buf: BytesMut,
    dec: Decoder,
    enc: BytesMut,
    any: u16,
    /// When the last read from the client completed: the start of every request in it
    /// (one clock read per read, not per request).
    read_at: Instant,
    /// Requests gathered for one node, sent when a request for elsewhere comes, before
    /// anything else is queued, and before the next read.
    batch: Option<Batch>,
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

impl<R: AsyncRead + Unpin + Send> Session<R> {
    async fn run(&mut self) {
        loop {
            let req = match self.next_request().await {
                Some(Ok(r)) => r,
                Some(Err(reply)) => {
                    self.push(Out::Ready(reply)).await;
                    return;
                }
                None => return,
            };
            match self.dispatch(req).await {
                Flow::Continue => {}
                Flow::Close | Flow::Gone => return,
            }
        }
    }

    /// The next request; `Some(Err(reply))` on a protocol error (then close), `None` when
    /// the client is gone.
    async fn next_request(&mut self) -> Option<Result<Request, Bytes>> {
        loop {
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
            match self.rd.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => self.read_at = Instant::now(),
            }
        }
    }

    async fn push(&mut self, out: Out) {
        self.flush_batch().await;
        let _ = self.tx.send(out).await;
    }

    async fn ready(&mut self, b: Bytes) {
        self.push(Out::Ready(b)).await;
    }

    /// Sends the gathered requests as one job (or one plain request).
    async fn flush_batch(&mut self) {
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
                let _ = self.tx.send(Out::Wait(flight, q.family, b.started)).await;
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
        let _ = self.tx.send(Out::Batch(Box::new(flight), b.started)).await;
    }

    async fn barrier(&mut self) {
        let (tx, rx) = oneshot::channel();
        self.push(Out::Barrier(tx)).await;
        let _ = rx.await;
    }

    fn encode(&mut self, req: &Request) -> Bytes {
        if let Some(raw) = &req.raw {
            return raw.clone();
        }
        req.encode(&mut self.enc);
        self.enc.split().freeze()
    }

    fn encode_args(&mut self, args: Vec<Bytes>) -> Bytes {
        self.encode(&Request::new(args))
    }

    /// Some slot, spread over the cluster, for keyless commands.
    fn any_slot(&mut self) -> u16 {
        self.any = (self.any.wrapping_add(4099)) % crate::slot::SLOTS;
        self.any
    }

    async fn forward(&mut self, req: &Request, target: Target, family: Family, read_only: bool) {
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
                let _ = self.tx.send(Out::Wait(flight, family, self.read_at)).await;
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

    async fn dispatch(&mut self, req: Request) -> Flow {
        let Some(spec) = command::lookup(req.name()) else {
            if !self.authed {
                self.ready(err_reply("NOAUTH Authentication required."))
                    .await;
                return Flow::Continue;
            }
            // Unknown to us: the backend's own error (or a newer command) is the answer.
            let slot = self.any_slot();
            self.forward(&req, Target::Slot(slot), Family::Other, false)
                .await;
            return Flow::Continue;
        };
        if !self.authed && !matches!(spec.name, "auth" | "hello" | "quit") {
            self.ready(err_reply("NOAUTH Authentication required."))
                .await;
            return Flow::Continue;
        }
        if spec.flags.contains(Flags::PROXY) {
            return self.local(spec, req).await;
        }
        let family = Family::of(spec);
        let keys = match command::keys_for(spec, &req.args) {
            Ok(k) => k,
            Err(e) => {
                self.ready(err_reply(&e.to_string())).await;
                return Flow::Continue;
            }
        };
        let slot = match command::same_slot(keys.clone()) {
            Ok(s) => s,
            Err(cross) if spec.split == Split::SameSlot => {
                self.ready(err_reply(&cross.to_string())).await;
                return Flow::Continue;
            }
            Err(_) => {
                self.split(spec, &req, family).await;
                return Flow::Continue;
            }
        };
        if spec.flags.contains(Flags::TRANSACTION) {
            return self.transaction(req).await;
        }
        if spec.flags.contains(Flags::PUBSUB) {
            match spec.name {
                "subscribe" | "psubscribe" | "ssubscribe" => {
                    return self.pubsub(req, slot).await;
                }
                _ => {
                    let s = slot
                        .or_else(|| req.args.get(1).map(|c| key_slot(c)))
                        .unwrap_or(0);
                    self.forward(
                        &req,
                        Target::Slot(s),
                        family,
                        spec.flags.contains(Flags::READONLY),
                    )
                    .await;
                    return Flow::Continue;
                }
            }
        }
        if spec.flags.contains(Flags::BLOCKING) && is_blocking(spec, &req) {
            let s = match slot {
                Some(s) => s,
                None => self.any_slot(),
            };
            return self.blocking(req, s).await;
        }
        if spec.flags.contains(Flags::ALL_NODES) {
            return self.cluster_wide(spec, req, family).await;
        }
        if spec.flags.contains(Flags::ADMIN) {
            self.ready(err_reply(&format!(
                "ERR command '{}' is not available through the router",
                spec.name
            )))
            .await;
            return Flow::Continue;
        }
        let s = match slot {
            Some(s) => s,
            None => self.any_slot(),
        };
        self.forward(
            &req,
            Target::Slot(s),
            family,
            spec.flags.contains(Flags::READONLY),
        )
        .await;
        Flow::Continue
    }

    /// MGET/MSET/DEL/UNLINK/EXISTS/TOUCH across slots: one sub-command per slot.
    async fn split(&mut self, spec: &CommandSpec, req: &Request, family: Family) {
        // Earlier requests reach their nodes before the parts do.
        self.flush_batch().await;
        let started = Instant::now();
        let Ok(keys) = command::keys_for(spec, &req.args) else {
            return;
        };
        let groups = command::group_by_slot(&keys);
        let pairs = spec.split == Split::AllOk;
        let read_only = spec.flags.contains(Flags::READONLY);
        let nparts = groups.len();
        let mut positions = Vec::with_capacity(nparts);
        let total = keys.indices().count();
        // Parts for one node travel as one job: (node, first slot, bytes, parts, indices).
        let mut by_node: Vec<NodeParts> = Vec::new();
        for (part, (slot, idxs)) in groups.into_iter().enumerate() {
            let mut args = Vec::with_capacity(1 + idxs.len() * (1 + usize::from(pairs)));
            args.push(req.args.first().cloned().unwrap_or_default());
            for &i in &idxs {
                args.extend(req.args.get(i).cloned());
                if pairs {
                    args.extend(req.args.get(i + 1).cloned());
                }
            }
            positions.push(idxs.iter().map(|i| i.saturating_sub(1)).collect());
            let bytes = self.encode_args(args);
            let node = self
                .shared
                .cluster
                .with_slot(slot, |n| n.map(|n| Arc::as_ptr(n) as usize))
                .unwrap_or(0);
            let q = Queued {
                bytes: bytes.clone(),
                slot,
                read_only,
                family,
            };
            match by_node.iter_mut().find(|g| g.0 == node) {
                Some(g) => {
                    g.2.extend_from_slice(&bytes);
                    g.3.push(q);
                    g.4.push(part);
                }
                None => by_node.push((node, slot, BytesMut::from(&bytes[..]), vec![q], vec![part])),
            }
        }
        metrics::counter!("ocean_redis_split_subcommands_total").increment(nparts as u64);
        let mut jobs = Vec::with_capacity(by_node.len());
        for (_, slot, bytes, reqs, parts) in by_node {
            let rx = route::send_job(
                &self.shared.cluster,
                Target::Slot(slot),
                bytes.freeze(),
                reqs.len() as u32,
                false,
                self.proto,
            )
            .await;
            jobs.push((
                BatchFlight {
                    rx,
                    reqs,
                    proto: self.proto,
                },
                parts,
            ));
        }
        self.push(Out::Merge(
            Box::new(Merge {
                split: spec.split,
                jobs,
                nparts,
                positions,
                total,
            }),
            family,
            started,
        ))
        .await;
    }

    async fn cluster_wide(&mut self, spec: &CommandSpec, req: Request, family: Family) -> Flow {
        self.flush_batch().await;
        let started = Instant::now();
        let cluster = self.shared.cluster.clone();
        let ropts = self.shared.opts.route.clone();
        let proto = self.proto;
        let name = spec.name;
        if matches!(name, "flushall" | "flushdb") && !self.shared.opts.allow_flush {
            self.ready(err_reply(&format!(
                "ERR {} is disabled on this router (start it with --allow-flush)",
                name.to_ascii_uppercase()
            )))
            .await;
            return Flow::Continue;
        }
        let bytes = self.encode(&req);
        let task = tokio::spawn(async move {
            if name == "scan" {
                return scan(&cluster, &ropts, req, proto).await;
            }
            let replies = route::call_all(&cluster, bytes, proto).await;
            if let Some(e) = replies.iter().find(|r| r.first() == Some(&b'-')) {
                return e.clone();
            }
            match name {
                "dbsize" => int_reply(
                    replies
                        .iter()
                        .filter_map(|r| proto::parse(r).and_then(|v| v.as_int()))
                        .sum(),
                ),
                "keys" => {
                    let mut all = Vec::new();
                    for r in &replies {
                        all.extend(array_elements(r).unwrap_or_default());
                    }
                    let mut out = BytesMut::new();
                    proto::write_array_header(&mut out, all.len());
                    for e in all {
                        out.extend_from_slice(&e);
                    }
                    out.freeze()
                }
                _ => replies
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| Bytes::from_static(b"-CLUSTERDOWN no masters\r\n")),
            }
        });
        if matches!(name, "flushall" | "flushdb" | "script" | "function") {
            // Writes to every node: later requests must see their effect.
            let reply = task
                .await
                .unwrap_or_else(|_| Bytes::from_static(b"-ERR internal error\r\n"));
            self.shared.metrics.record(family, started, &reply);
            self.ready(reply).await;
        } else {
            self.push(Out::Task(task, family, started)).await;
        }
        Flow::Continue
    }

    async fn local(&mut self, spec: &CommandSpec, req: Request) -> Flow {
        let started = Instant::now();
        let arg = |i: usize| req.args.get(i).cloned();
        let argc = req.args.len();
        let mut out = BytesMut::new();
        match spec.name {
            "ping" => match arg(1) {
                None if argc == 1 => proto::write_simple(&mut out, "PONG"),
                Some(m) if argc == 2 => proto::write_bulk(&mut out, &m),
                _ => {
                    proto::write_error(&mut out, "ERR wrong number of arguments for 'ping' command")
                }
            },
            "echo" => match arg(1) {
                Some(m) => proto::write_bulk(&mut out, &m),
                None => {
                    proto::write_error(&mut out, "ERR wrong number of arguments for 'echo' command")
                }
            },
            "quit" => {
                self.ready(Bytes::from_static(b"+OK\r\n")).await;
                return Flow::Close;
            }
            "select" => {
                if arg(1).as_deref() == Some(b"0") {
                    proto::write_simple(&mut out, "OK");
                } else {
                    proto::write_error(&mut out, "ERR SELECT is not allowed in cluster mode");
                }
            }
            "auth" => {
                let (user, pass) = match argc {
                    2 => (Bytes::from_static(b"default"), arg(1).unwrap_or_default()),
                    3 => (arg(1).unwrap_or_default(), arg(2).unwrap_or_default()),
                    _ => {
                        self.ready(err_reply("ERR syntax error")).await;
                        return Flow::Continue;
                    }
                };
                match self.check_auth(&user, &pass) {
                    Ok(()) => proto::write_simple(&mut out, "OK"),
                    Err(e) => proto::write_error(&mut out, e),
                }
            }
            "hello" => self.hello(&req, &mut out),
            "reset" => {
                self.proto = Protocol::Resp2;
                self.name = None;
                self.authed = self.shared.opts.password.is_none();
                proto::write_simple(&mut out, "RESET");
            }
            "client" => self.client_cmd(&req, &mut out),
            "info" => self.info(&mut out),
            "command" => {
                // The table's source of truth is the backend: pass COMMAND (and its
                // COUNT/INFO/DOCS/GETKEYS subcommands) to some node.
                let s = self.any_slot();
                self.forward(&req, Target::Slot(s), Family::Local, true)
                    .await;
                return Flow::Continue;
            }
            other => {
                proto::write_error(
                    &mut out,
                    &format!("ERR command '{other}' is not available through the router"),
                );
            }
        }
        let reply = out.freeze();
        self.shared.metrics.record(Family::Local, started, &reply);
        self.ready(reply).await;
        Flow::Continue
    }

    fn check_auth(&mut self, user: &[u8], pass: &[u8]) -> Result<(), &'static str> {
        match &self.shared.opts.password {
            None => Err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"),
            Some(p) if user == b"default" && constant_time_eq(pass, p.expose().as_bytes()) => {
                self.authed = true;
                Ok(())
            }
            Some(_) => Err("WRONGPASS invalid username-password pair or user is disabled."),
        }
    }

    fn hello(&mut self, req: &Request, out: &mut BytesMut) {
        let mut proto = self.proto;
        let mut i = 1;
        if let Some(v) = req.args.get(1) {
            match &v[..] {
                b"2" => proto = Protocol::Resp2,
                b"3" => proto = Protocol::Resp3,
                _ => {
                    proto::write_error(out, "NOPROTO unsupported protocol version");
                    return;
                }
            }
            i = 2;
        }
        let mut name = None;
        while i < req.args.len() {
            let opt = req.args.get(i).map(|a| lower(a)).unwrap_or_default();
            match opt.as_str() {
                "auth" if i + 2 < req.args.len() => {
                    let user = req.args.get(i + 1).cloned().unwrap_or_default();
                    let pass = req.args.get(i + 2).cloned().unwrap_or_default();
                    if let Err(e) = self.check_auth(&user, &pass) {
                        proto::write_error(out, e);
                        return;
                    }
                    i += 3;
                }
                "setname" if i + 1 < req.args.len() => {
                    name = req.args.get(i + 1).cloned();
                    i += 2;
                }
                _ => {
                    proto::write_error(out, &format!("ERR Syntax error in HELLO option '{opt}'"));
                    return;
                }
            }
        }
        if !self.authed {
            proto::write_error(
                out,
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
            return;
        }
        if name.is_some() {
            self.name = name;
        }
        self.proto = proto;
        proto::write_map_header(out, 7, proto);
        proto::write_bulk(out, b"server");
        proto::write_bulk(out, b"redis");
        proto::write_bulk(out, b"version");
        proto::write_bulk(out, b"7.2.0");
        proto::write_bulk(out, b"proto");
        proto::write_integer(out, if proto == Protocol::Resp3 { 3 } else { 2 });
        proto::write_bulk(out, b"id");
        proto::write_integer(out, self.id as i64);
        proto::write_bulk(out, b"mode");
        proto::write_bulk(out, b"standalone");
        proto::write_bulk(out, b"role");
        proto::write_bulk(out, b"master");
        proto::write_bulk(out, b"modules");
        proto::write_array_header(out, 0);
    }

    fn client_cmd(&mut self, req: &Request, out: &mut BytesMut) {
        let sub = req.args.get(1).map(|a| lower(a)).unwrap_or_default();
        match sub.as_str() {
            "setname" if req.args.len() == 3 => {
                let name = req.args.get(2).cloned().unwrap_or_default();
                if name.iter().any(|&b| b <= b' ' || b > b'~') {
                    proto::write_error(
                        out,
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                } else {
                    self.name = if name.is_empty() { None } else { Some(name) };
                    proto::write_simple(out, "OK");
                }
            }
            "getname" => match &self.name {
                Some(n) => proto::write_bulk(out, n),
                None => proto::write_null(out, self.proto),
            },
            "id" => proto::write_integer(out, self.id as i64),
            "setinfo" => proto::write_simple(out, "OK"),
            "info" => {
                let name = self
                    .name
                    .as_ref()
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .unwrap_or_default();
                let resp = if self.proto == Protocol::Resp3 { 3 } else { 2 };
                let line = format!("id={} name={} db=0 resp={resp}\n", self.id, name);
                proto::write_bulk(out, line.as_bytes());
            }
            _ => proto::write_error(
                out,
                &format!(
                    "ERR CLIENT {} is not supported by the router",
                    sub.to_ascii_uppercase()
                ),
            ),
        }
    }

    fn info(&self, out: &mut BytesMut) {
        let cluster = &self.shared.cluster;
        let map = cluster.map();
        let masters: Vec<String> = map.masters.iter().map(|n| n.addr.to_string()).collect();
        let text = format!(
            "# Server\r\nredis_version:7.2.0\r\nredis_mode:standalone\r\nproxy:ocean-redis-router\r\n\r\n\
             # Proxy\r\ncluster_name:{}\r\nmasters:{}\r\nmaster_addrs:{}\r\nreplicas_read:{}\r\nslots_covered:{}\r\n\
             slot_map_refreshes:{}\r\nconnected_clients:{}\r\n",
            cluster.name,
            masters.len(),
            masters.join(","),
            map.replicas.iter().map(Vec::len).sum::<usize>(),
            map.covered(),
            cluster.refreshes.load(Ordering::Relaxed),
            cluster.clients.load(Ordering::Relaxed),
        );
        if self.proto == Protocol::Resp3 {
            proto::write_verbatim(out, b"txt", text.as_bytes(), self.proto);
        } else {
            proto::write_bulk(out, text.as_bytes());
        }
    }

    /// Waits for a reply on a dedicated connection, noticing a client that leaves.
    async fn exchange(&mut self, lease: &mut Lease, bytes: &[u8]) -> Result<Bytes, Flow> {
        if lease.conn.send(bytes).await.is_err() {
            return Err(Flow::Continue);
        }
        let limits = self.shared.cluster.opts.backend.reply_limits.clone();
        tokio::select! {
            r = lease.conn.read_reply(&limits) => r.map_err(|_| Flow::Continue),
            _ = client_eof(&mut self.rd, &mut self.buf) => Err(Flow::Gone),
        }
    }

    fn node_for(&mut self, slot: Option<u16>) -> Option<Arc<crate::upstream::Node>> {
        let s = match slot {
            Some(s) => s,
            None => self.any_slot(),
        };
        self.shared.cluster.with_slot(s, |n| n.cloned())
    }

    async fn lease(&mut self, slot: Option<u16>) -> Result<Lease, Bytes> {
        let Some(node) = self.node_for(slot) else {
            self.shared.cluster.request_refresh();
            return Err(route::error_reply(&BackendError::Unserved));
        };
        let proto = self.proto;
        self.shared
            .cluster
            .lease(node, proto)
            .await
            .map_err(|e| route::error_reply(&e))
    }

    /// Blocking commands: one dedicated connection for the duration of the command.
    async fn blocking(&mut self, req: Request, slot: u16) -> Flow {
        self.barrier().await;
        let started = Instant::now();
        let bytes = self.encode(&req);
        let mut target: Option<std::net::SocketAddr> = None;
        let mut asking = false;
        let max_idle = self.shared.cluster.opts.max_idle_dedicated;
        for _ in 0..=self.shared.opts.route.max_redirects {
            let lease = match target {
                None => self.lease(Some(slot)).await,
                Some(addr) => {
                    let node = self.shared.cluster.node(addr);
                    self.shared
                        .cluster
                        .lease(node, self.proto)
                        .await
                        .map_err(|e| route::error_reply(&e))
                }
            };
            let mut lease = match lease {
                Ok(l) => l,
                Err(e) => {
                    self.ready(e).await;
                    return Flow::Continue;
                }
            };
            if asking {
                let limits = self.shared.cluster.opts.backend.reply_limits.clone();
                if lease.conn.send(b"*1\r\n$6\r\nASKING\r\n").await.is_err()
                    || lease.conn.read_reply(&limits).await.is_err()
                {
                    self.ready(err_reply("ERR backend connection lost")).await;
                    return Flow::Continue;
                }
            }
            let reply = match self.exchange(&mut lease, &bytes).await {
                Ok(r) => r,
                Err(Flow::Gone) => return Flow::Gone,
                Err(_) => {
                    self.ready(err_reply("ERR backend connection lost")).await;
                    return Flow::Continue;
                }
            };
            lease.release(max_idle);
            if reply.starts_with(b"-MOVED ") || reply.starts_with(b"-ASK ") {
                let text = String::from_utf8_lossy(&reply).into_owned();
                let addr = text
                    .trim_end()
                    .split(' ')
                    .nth(2)
                    .and_then(|a| a.parse().ok());
                if let Some(a) = addr {
                    asking = reply.starts_with(b"-ASK ");
                    if !asking {
                        self.shared.cluster.request_refresh();
                    }
                    target = Some(a);
                    continue;
                }
            }
            self.shared
                .metrics
                .record(Family::Blocking, started, &reply);
            self.ready(reply).await;
            return Flow::Continue;
        }
        self.ready(err_reply("ERR too many redirects")).await;
        Flow::Continue
    }

    /// MULTI/EXEC/WATCH: a dedicated connection from the first keyed command until the
    /// transaction and every WATCH have ended.
    async fn transaction(&mut self, first: Request) -> Flow {
        self.barrier().await;
        let max_idle = self.shared.cluster.opts.max_idle_dedicated;
        let mut lease: Option<Lease> = None;
        let (mut in_multi, mut watching, mut multi_pending) = (false, false, false);
        let mut req = first;
        loop {
            let started = Instant::now();
            let name = lower(req.name());
            let spec = command::lookup(req.name());
            if name == "quit" {
                self.ready(Bytes::from_static(b"+OK\r\n")).await;
                return Flow::Close;
            }
            let slot = match spec.map(|s| command::keys_for(s, &req.args)) {
                Some(Ok(keys)) => match command::same_slot(keys) {
                    Ok(s) => s,
                    Err(cross) => {
                        self.ready(err_reply(&cross.to_string())).await;
                        None
                    }
                },
                _ => None,
            };
            let mut reply: Option<Bytes> = None;
            if lease.is_none() {
                match name.as_str() {
                    "multi" if !in_multi => {
                        in_multi = true;
                        multi_pending = true;
                        reply = Some(Bytes::from_static(b"+OK\r\n"));
                    }
                    "exec" if multi_pending => {
                        in_multi = false;
                        multi_pending = false;
                        let mut out = BytesMut::new();
                        proto::write_array_header(&mut out, 0);
                        reply = Some(out.freeze());
                    }
                    "discard" if multi_pending => {
                        in_multi = false;
                        multi_pending = false;
                        reply = Some(Bytes::from_static(b"+OK\r\n"));
                    }
                    "exec" if !in_multi => reply = Some(err_reply("ERR EXEC without MULTI")),
                    "discard" if !in_multi => reply = Some(err_reply("ERR DISCARD without MULTI")),
                    "unwatch" if !watching => reply = Some(Bytes::from_static(b"+OK\r\n")),
                    _ => match self.lease(slot).await {
                        Ok(mut l) => {
                            if multi_pending {
                                multi_pending = false;
                                if let Err(flow) =
                                    self.exchange(&mut l, b"*1\r\n$5\r\nMULTI\r\n").await
                                {
                                    if let Flow::Gone = flow {
                                        return Flow::Gone;
                                    }
                                    reply = Some(err_reply("ERR backend connection lost"));
                                    in_multi = false;
                                }
                            }
                            lease = Some(l);
                        }
                        Err(e) => {
                            reply = Some(e);
                            in_multi = false;
                            multi_pending = false;
                        }
                    },
                }
            }
            let reply = match (reply, lease.as_mut()) {
                (Some(r), _) => r,
                (None, Some(l)) => {
                    let bytes = {
                        req.encode(&mut self.enc);
                        self.enc.split().freeze()
                    };
                    match self.exchange(l, &bytes).await {
                        Ok(r) => {
                            let ok = r.first() != Some(&b'-');
                            match name.as_str() {
                                "multi" if ok => in_multi = true,
                                "exec" | "discard" => {
                                    in_multi = false;
                                    watching = false;
                                }
                                "watch" if ok => watching = true,
                                "unwatch" if !in_multi => watching = false,
                                _ => {}
                            }
                            r
                        }
                        Err(Flow::Gone) => return Flow::Gone,
                        Err(_) => {
                            lease = None;
                            in_multi = false;
                            watching = false;
                            err_reply("ERR backend connection lost")
                        }
                    }
                }
                (None, None) => err_reply("ERR no backend connection"),
            };
            self.shared
                .metrics
                .record(Family::Transaction, started, &reply);
            self.ready(reply).await;
            if !in_multi && !watching {
                if let Some(l) = lease.take() {
                    l.release(max_idle);
                }
                return Flow::Continue;
            }
            req = match self.next_request().await {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    self.ready(e).await;
                    return Flow::Close;
                }
                None => return Flow::Gone,
            };
        }
    }

    /// SUBSCRIBE/PSUBSCRIBE/SSUBSCRIBE: a dedicated connection until no subscription is
    /// left; then the connection is closed (never reused: it may still carry messages).
    async fn pubsub(&mut self, first: Request, slot: Option<u16>) -> Flow {
        self.barrier().await;
        let s = slot.or_else(|| first.args.get(1).map(|c| key_slot(c)));
        let mut lease = match self.lease(s).await {
            Ok(l) => l,
            Err(e) => {
                self.ready(e).await;
                return Flow::Continue;
            }
        };
        let bytes = self.encode(&first);
        if lease.conn.send(&bytes).await.is_err() {
            self.ready(err_reply("ERR backend connection lost")).await;
            return Flow::Continue;
        }
        let limits = self.shared.cluster.opts.backend.reply_limits.clone();
        loop {
            // Requests already buffered go first.
            loop {
                match self.dec.decode(&mut self.buf) {
                    Ok(Some(req)) => {
                        let name = lower(req.name());
                        match name.as_str() {
                            "subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe"
                            | "punsubscribe" | "sunsubscribe" | "ping" | "reset" => {
                                let b = self.encode(&req);
                                if lease.conn.send(&b).await.is_err() {
                                    self.ready(err_reply("ERR backend connection lost")).await;
                                    return Flow::Close;
                                }
                            }
                            "quit" => {
                                self.ready(Bytes::from_static(b"+OK\r\n")).await;
                                return Flow::Close;
                            }
                            other => {
                                self.ready(err_reply(&format!(
                                    "ERR Can't execute '{other}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                                )))
                                .await;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.ready(e.reply()).await;
                        return Flow::Close;
                    }
                }
            }
            let got = tokio::select! {
                r = lease.conn.read_reply(&limits) => Some(r),
                n = self.rd.read_buf(&mut self.buf) => match n {
                    Ok(0) | Err(_) => return Flow::Gone,
                    Ok(_) => None,
                },
            };
            match got {
                None => continue,
                Some(Err(_)) => {
                    self.ready(err_reply("ERR backend connection lost")).await;
                    return Flow::Close;
                }
                Some(Ok(reply)) => {
                    let done = subscriptions_ended(&reply);
                    self.ready(reply).await;
                    if done {
                        return Flow::Continue;
                    }
                }
            }
        }
    }
}

/// Whether a pub/sub reply says the connection has no subscription left (or was reset).
fn subscriptions_ended(reply: &Bytes) -> bool {
    if reply.starts_with(b"+RESET") {
        return true;
    }
    let Some(Value::Array(Some(items))) = proto::parse(reply) else {
        return false;
    };
    let kind = items
        .first()
        .and_then(Value::as_bytes)
        .map(|b| b.to_ascii_lowercase());
    matches!(
        kind.as_deref(),
        Some(b"unsubscribe" | b"punsubscribe" | b"sunsubscribe")
    ) && items.get(2).and_then(Value::as_int) == Some(0)
}

/// XREAD/XREADGROUP block only with a BLOCK option; the B* commands always.
fn is_blocking(spec: &CommandSpec, req: &Request) -> bool {
    if !matches!(spec.name, "xread" | "xreadgroup") {
        return true;
    }
    req.args
        .iter()
        .take_while(|a| !a.eq_ignore_ascii_case(b"streams"))
        .any(|a| a.eq_ignore_ascii_case(b"block"))
}

/// SCAN across masters: the cursor carries the master's index in its low 10 bits.
async fn scan(cluster: &Arc<Cluster>, ropts: &RouteOpts, req: Request, proto: Protocol) -> Bytes {
    const BITS: u32 = 10;
    let Some(cursor) = req
        .args
        .get(1)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return err_reply("ERR invalid cursor");
    };
    let masters: Vec<std::net::SocketAddr> = cluster.map().masters.iter().map(|n| n.addr).collect();
    let idx = (cursor & ((1 << BITS) - 1)) as usize;
    let node_cursor = cursor >> BITS;
    let Some(addr) = masters.get(idx).copied() else {
        return err_reply("ERR invalid cursor");
    };
    let mut args = req.args.clone();
    if let Some(c) = args.get_mut(1) {
        *c = Bytes::from(node_cursor.to_string());
    }
    let mut enc = BytesMut::new();
    Request::new(args).encode(&mut enc);
    let reply = route::call(cluster, ropts, Target::Node(addr), enc.freeze(), proto).await;
    let Some(elems) = array_elements(&reply) else {
        return reply;
    };
    let (Some(next), Some(keys)) = (elems.first(), elems.get(1)) else {
        return reply;
    };
    let next = proto::parse(next).and_then(|v| v.as_int()).unwrap_or(0) as u64;
    let proxy_next = if next != 0 {
        if next >> (64 - BITS) != 0 {
            return err_reply("ERR cursor too large for the router");
        }
        (next << BITS) | idx as u64
    } else if idx + 1 < masters.len() {
        (idx + 1) as u64
    } else {
        0
    };
    let mut out = BytesMut::new();
    proto::write_array_header(&mut out, 2);
    proto::write_bulk(&mut out, proxy_next.to_string().as_bytes());
    out.extend_from_slice(keys);
    out.freeze()
}

/// For tests and the benchmark: the family of a command name.
pub fn family_of(name: &[u8]) -> Option<Family> {
    command::lookup(name).map(Family::of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_array_replies() {
        let r = Bytes::from_static(b"*3\r\n$1\r\na\r\n$-1\r\n*1\r\n:5\r\n");
        let e = array_elements(&r).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(&e[0][..], b"$1\r\na\r\n");
        assert_eq!(&e[1][..], b"$-1\r\n");
        assert_eq!(&e[2][..], b"*1\r\n:5\r\n");
        assert!(array_elements(&Bytes::from_static(b"-ERR x\r\n")).is_none());
        assert!(array_elements(&Bytes::from_static(b"*2\r\n:1\r\n")).is_none());
    }

    #[test]
    fn notices_the_last_unsubscribe() {
        let last = Bytes::from_static(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:0\r\n");
        let more = Bytes::from_static(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:1\r\n");
        let push = Bytes::from_static(b">3\r\n$12\r\npunsubscribe\r\n$1\r\nc\r\n:0\r\n");
        let msg = Bytes::from_static(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\n0\r\n");
        assert!(subscriptions_ended(&last));
        assert!(!subscriptions_ended(&more));
        assert!(subscriptions_ended(&push));
        assert!(!subscriptions_ended(&msg));
        assert!(subscriptions_ended(&Bytes::from_static(b"+RESET\r\n")));
    }

    #[test]
    fn xread_blocks_only_with_block() {
        let spec = command::lookup(b"xread").unwrap();
        let r = |s: &str| {
            Request::new(
                s.split(' ')
                    .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                    .collect::<Vec<_>>(),
            )
        };
        assert!(is_blocking(spec, &r("XREAD BLOCK 0 STREAMS s 0")));
        assert!(!is_blocking(spec, &r("XREAD COUNT 1 STREAMS block 0")));
        assert!(is_blocking(
            command::lookup(b"blpop").unwrap(),
            &r("BLPOP k 0")
        ));
    }
}
