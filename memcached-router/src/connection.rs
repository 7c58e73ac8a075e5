//! One client connection: read what is there, decode every complete request, send each to
//! its backends at once, then collect the replies in request order, write them in one
//! batch, and read again.
//!
//! # Bounds (issue 18)
//! - **Reply bytes** (`--max-client-reply-bytes`, a [`ReplyBudget`]): the replies the router
//!   holds for the client (framed by a backend reader, or in the write buffer) stay under
//!   the budget. Decoding stops while the replies held, plus an estimate of those still
//!   coming, reach it; the write buffer is written as soon as it holds half the budget,
//!   mid-batch if need be; a backend reply that does not fit is dropped and answered
//!   `SERVER_ERROR out of memory writing get response` (see [`crate::budget`]). A normal
//!   client's batch is still written once.
//! - **Writes** (`--write-timeout`): every write must be taken within the timeout, or the
//!   client (which does not read) is closed.
//! - **Idle** (`--idle-timeout`): a client with no request in progress for that long is
//!   closed. Bytes of an incomplete request do not count as progress (a slowloris sending
//!   `get a` a byte at a time is closed like a silent one).
//!
//! Routing (see `docs/memcached-router.md`):
//! - reads (`get`/`gets`/`gat`/`gats`, `mg`, `me`) go to the first replica set, grouped by
//!   server and fanned out; a part whose server fails (or is down) is sent to the next set;
//!   with miss-failover, missed keys too;
//! - writes (storage commands, `delete`, `incr`/`decr`, `touch`, `ms`, `md`, `ma`) go to
//!   every set; the reply is the first set's (the next one's when it failed) or, with
//!   `--write-policy all`, the worst;
//! - `cas` and meta commands with a `C` (compare cas) flag go to the first set only and
//!   never fail over: a cas token is valid only where it was issued;
//! - `noreply` requests and meta quiet mode are sent with an `mn` behind them, so their end
//!   is known; a client's `mn` is answered in order, after every earlier reply.

use ocean_core::drain::{DrainWatch, Read};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use ocean_core::daemon::write_all_within;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::budget::ReplyBudget;
use crate::config::WritePolicy;
use crate::proto::{discard, Command, Decoder, Request};
use crate::reply::{count_values, value_blocks, write_severity, Expect};
use crate::route::{PoolRoute, Routes};
use crate::stats::RouterStats;
use crate::upstream::{Sent, UpstreamError};

/// Requests decoded from one read before their replies are collected.
const MAX_BATCH: usize = 512;

/// What a client connection shares with its listener.
pub struct ClientContext {
    /// The pool's current routes (swapped on table changes; loaded once per batch).
    pub route: Arc<ArcSwap<Routes>>,
    /// Counters for `stats`.
    pub stats: Arc<RouterStats>,
}

/// A request sent, waiting for its replies.
enum Pending {
    Reply(&'static [u8]),
    Owned(Bytes),
    Nothing,
    Quit,
    Read(ReadOp),
    Write(WriteOp),
    /// A `get` whose keys select several routes (mcrouter's `PrefixSelectorRoute`): one
    /// read per route, answered as one (every value, one `END`).
    Split(Vec<ReadOp>),
}

/// A read: its parts (one per server) in flight.
struct ReadOp {
    /// The index of its route in [`Routes`].
    route: usize,
    req: Request,
    parts: Vec<Part>,
    quiet: bool,
}

struct Part {
    set: usize,
    keys: Vec<usize>,
    sent: Sent,
}

/// A write sent to every set (or the first only, for cas).
struct WriteOp {
    /// The index of its route in [`Routes`] (its write policy answers).
    route: usize,
    sends: Vec<Sent>,
    noreply: bool,
    quiet: bool,
    invalidate: Option<Invalidate>,
}

/// Deletes for the other replica sets after a cas the first set took.
struct Invalidate {
    request: Bytes,
    servers: Vec<Arc<crate::upstream::Server>>,
}

impl Invalidate {
    fn send(self, slot: usize) {
        for server in self.servers {
            // Nobody waits: the request ends with `mn`, so the reply is framed and dropped.
            drop(server.send(
                slot,
                self.request.clone(),
                Expect::UntilMn,
                true,
                false,
                None,
            ));
        }
    }
}

/// Who a request is for: the client's backend connection slot and its reply budget.
#[derive(Clone, Copy)]
struct Client<'a> {
    slot: usize,
    budget: &'a Arc<ReplyBudget>,
}

impl Pending {
    /// Keys whose values the reply may carry (0 for a request whose reply is a line).
    fn read_keys(&self) -> usize {
        match self {
            Pending::Read(op) => op.req.keys().len(),
            Pending::Split(ops) => ops.iter().map(|op| op.req.keys().len()).sum(),
            _ => 0,
        }
    }
}

/// How a client connection ended, for the log line and the metric.
fn closed(reason: &'static str) {
    tracing::debug!(reason, "client connection closed");
    metrics::counter!("ocean_memcached_client_closed_total", "reason" => reason).increment(1);
}

/// Serves one client until it quits, disconnects, sends what cannot be resynchronized,
/// stays idle for `--idle-timeout`, does not take its replies within `--write-timeout`, or
/// `cancel` fires.
pub async fn serve(
    mut stream: TcpStream,
    ctx: Arc<ClientContext>,
    slot: usize,
    cancel: CancellationToken,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "set_nodelay");
    }
    let mut rbuf = BytesMut::with_capacity(16 << 10);
    let mut wbuf = BytesMut::with_capacity(16 << 10);
    let mut skip: u64 = 0;
    let mut batch: Vec<Pending> = Vec::new();
    let mut route = ctx.route.load_full();
    let mut decoder = Decoder::new();
    let budget = ReplyBudget::new(route.settings().max_client_reply_bytes);
    let client = Client {
        slot,
        budget: &budget,
    };
    // Reply bytes per key this client's reads have brought lately (the largest seen, refused
    // replies included, decaying by 1/8 per read), to estimate what a batch of reads will
    // bring. A new client is assumed to read values of the largest size it may store, so
    // its first batch cannot ask for many budgets' worth at once; a client of small values
    // reaches full pipelining within a few dozen reads.
    let mut bytes_per_key: usize = route.settings().limits.max_value_bytes;
    // One idle timer for the connection's life, re-armed only when it fires early: a new
    // timer per read registered and removed a wheel entry per request (about 5% of the
    // router's instructions per get, callgrind).
    let mut last_active = tokio::time::Instant::now();
    let idle = tokio::time::sleep_until(last_active + route.settings().idle_timeout);
    tokio::pin!(idle);
    let mut drain = DrainWatch::new(cancel);
    loop {
        // Decode what is buffered, sending each request on at once, while the replies held
        // and expected fit in the budget.
        let mut close = false;
        let mut expected: usize = 0;
        loop {
            if skip > 0 {
                discard(&mut rbuf, &mut skip);
                if skip > 0 {
                    break;
                }
            }
            if !batch.is_empty() && budget.held().saturating_add(expected) >= budget.max() {
                break;
            }
            match decoder.decode(&mut rbuf, &route.settings().limits) {
                Ok(Some(req)) => {
                    let p = dispatch(&route, &ctx.stats, req, client);
                    expected = expected.saturating_add(p.read_keys().saturating_mul(bytes_per_key));
                    let quit = matches!(p, Pending::Quit);
                    batch.push(p);
                    if quit {
                        close = true;
                        break;
                    }
                    if batch.len() >= MAX_BATCH {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "bad request");
                    batch.push(Pending::Reply(e.reply()));
                    if e.closes_connection() {
                        close = true;
                        break;
                    }
                    skip = e.swallow();
                }
            }
        }
        if batch.is_empty() && !close {
            if rbuf.capacity() - rbuf.len() < 4096 {
                rbuf.reserve(16 << 10);
            }
            // Cancel safety: `read_buf` and the timers are cancel safe; a read that loses
            // the race has consumed nothing. A drain (SIGTERM, or the pool leaving the
            // table) stops at a request boundary once what was sent before it is served.
            let at_boundary = rbuf.is_empty() && skip == 0;
            let n = tokio::select! {
                () = &mut idle => {
                    let deadline = last_active + route.settings().idle_timeout;
                    if deadline > tokio::time::Instant::now() {
                        idle.as_mut().reset(deadline);
                        continue;
                    }
                    closed("idle");
                    break;
                }
                r = drain.read(at_boundary, stream.read_buf(&mut rbuf)) => match r {
                    Read::Done(r) => r,
                    Read::Again => continue,
                    Read::Stop => break,
                },
            };
            match n {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // A new batch sees the newest route (table swaps reach open connections here).
            route = ctx.route.load_full();
            continue;
        }
        // Collect the replies in request order; write them in one go, or as soon as they
        // fill half the budget (so that replies still arriving find room).
        let write_timeout = route.settings().write_timeout;
        let flush_at = budget.max() / 2;
        let mut failed = false;
        for p in batch.drain(..) {
            let keys = p.read_keys();
            let before = wbuf.len();
            finish(p, &route, &ctx.stats, client, &mut wbuf).await;
            let brought = wbuf.len().saturating_sub(before).max(budget.take_refused());
            if let Some(per_key) = brought.checked_div(keys) {
                bytes_per_key = per_key.max(bytes_per_key - bytes_per_key / 8);
            }
            budget.set_unwritten(wbuf.len());
            if wbuf.len() >= flush_at {
                if let Err(e) = write_all_within(&mut stream, &wbuf, write_timeout).await {
                    failed = true;
                    write_failed(&e);
                    break;
                }
                wbuf.clear();
                budget.set_unwritten(0);
            }
        }
        if failed {
            break;
        }
        if !wbuf.is_empty() {
            if let Err(e) = write_all_within(&mut stream, &wbuf, write_timeout).await {
                write_failed(&e);
                break;
            }
            wbuf.clear();
            budget.set_unwritten(0);
        }
        if wbuf.capacity() > budget.max() {
            // One big batch must not keep its buffer for the connection's life.
            wbuf = BytesMut::with_capacity(16 << 10);
        }
        last_active = tokio::time::Instant::now();
        if close {
            break;
        }
    }
}

fn write_failed(e: &ocean_core::daemon::WriteError) {
    match e {
        ocean_core::daemon::WriteError::Timeout(_) => closed("write_timeout"),
        ocean_core::daemon::WriteError::Io(e) => {
            tracing::debug!(error = %e, "client write failed");
        }
    }
}

/// A quiet delete of `key` (decoded) for the other replica sets after a cas: `delete k
/// noreply`, or `md <base64> b q` for a meta command whose key was base64 on the wire.
fn invalidation(req: &Request, key: &Bytes) -> Bytes {
    use base64::Engine;
    let mut out = BytesMut::new();
    if req.meta().is_some_and(|m| m.base64_key) {
        out.extend_from_slice(b"md ");
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(key)
                .as_bytes(),
        );
        out.extend_from_slice(b" b q\r\n");
    } else if req.command().is_meta() {
        out.extend_from_slice(b"md ");
        out.extend_from_slice(key);
        out.extend_from_slice(b" q\r\n");
    } else {
        out.extend_from_slice(b"delete ");
        out.extend_from_slice(key);
        out.extend_from_slice(b" noreply\r\n");
    }
    out.freeze()
}

/// Whether a meta command carries a flag starting with `C` (compare cas).
fn has_compare_cas(req: &Request) -> bool {
    req.meta()
        .is_some_and(|m| m.tokens.iter().any(|t| t.first() == Some(&b'C')))
}

/// The index of the route for a request: by its first key (every command but a
/// multi-key `get` has one key, or none).
fn route_of(routes: &Routes, req: &Request) -> usize {
    match req.keys().first() {
        Some(key) if !routes.is_single() => routes.select(key),
        _ => 0,
    }
}

/// A read of all of `req`'s keys from route `index`.
fn read(routes: &Routes, index: usize, req: Request, client: Client<'_>, quiet: bool) -> ReadOp {
    let all: Vec<usize> = (0..req.keys().len()).collect();
    let parts = send_keys(routes.get(index), &req, client, 0, &all, true);
    ReadOp {
        route: index,
        req,
        parts,
        quiet,
    }
}

/// The keys of `req` at `indices` grouped by `group_of` (a route, a server), groups in the
/// order first seen, keys in request order within each; indices out of range are skipped.
fn group_keys(
    req: &Request,
    indices: impl IntoIterator<Item = usize>,
    group_of: impl Fn(&[u8]) -> usize,
) -> Vec<(usize, Vec<usize>)> {
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for i in indices {
        let Some(key) = req.keys().get(i) else {
            continue;
        };
        let g = group_of(key);
        match groups.iter_mut().find(|(known, _)| *known == g) {
            Some((_, keys)) => keys.push(i),
            None => groups.push((g, vec![i])),
        }
    }
    groups
}

/// A multi-key `get` whose keys select several routes: one request per route with its
/// keys, in their order. `None` when they all select one route.
fn split_by_route(routes: &Routes, req: &Request) -> Option<Vec<(usize, Request)>> {
    if routes.is_single() {
        return None;
    }
    let groups = group_keys(req, 0..req.keys().len(), |key| routes.select(key));
    if groups.len() < 2 {
        return None;
    }
    groups
        .into_iter()
        .map(|(r, keys)| req.retrieval_subset(&keys).map(|sub| (r, sub)))
        .collect()
}

fn dispatch(routes: &Routes, stats: &RouterStats, req: Request, client: Client<'_>) -> Pending {
    let slot = client.slot;
    let index = route_of(routes, &req);
    let route = routes.get(index);
    match req.command() {
        Command::Get | Command::Gets | Command::Gat | Command::Gats => {
            stats
                .cmd_get
                .fetch_add(req.keys().len() as u64, Ordering::Relaxed);
            match split_by_route(routes, &req) {
                Some(subs) => Pending::Split(
                    subs.into_iter()
                        .map(|(r, sub)| read(routes, r, sub, client, false))
                        .collect(),
                ),
                None => Pending::Read(read(routes, index, req, client, false)),
            }
        }
        Command::MetaGet | Command::MetaDebug => {
            if req.command() == Command::MetaGet {
                stats.cmd_get.fetch_add(1, Ordering::Relaxed);
            }
            let quiet = req.meta().is_some_and(|m| m.quiet);
            Pending::Read(read(routes, index, req, client, quiet))
        }
        Command::Set
        | Command::Add
        | Command::Replace
        | Command::Append
        | Command::Prepend
        | Command::Cas
        | Command::Delete
        | Command::Incr
        | Command::Decr
        | Command::Touch
        | Command::MetaSet
        | Command::MetaDelete
        | Command::MetaArithmetic => {
            if req.command().has_data() {
                stats.cmd_set.fetch_add(1, Ordering::Relaxed);
            }
            let first_only = req.command() == Command::Cas || has_compare_cas(&req);
            let quiet = req.meta().is_some_and(|m| m.quiet);
            let noreply = req.noreply();
            let (expect, append_mn) = if noreply || quiet {
                (Expect::UntilMn, true)
            } else if req.command().is_meta() {
                (Expect::Meta, false)
            } else {
                (Expect::Line, false)
            };
            let Some(key) = req.keys().first() else {
                return Pending::Reply(b"ERROR\r\n");
            };
            let sets = if first_only { 1 } else { route.sets.len() };
            // The other sets cannot check a cas token: once the first set has taken the
            // cas, their copy is dropped rather than left stale (fire and forget).
            let invalidate = first_only.then(|| Invalidate {
                request: invalidation(&req, key),
                servers: route
                    .sets
                    .iter()
                    .skip(1)
                    .filter_map(|set| set.server(set.server_index(key)).cloned())
                    .collect(),
            });
            let sends = route
                .sets
                .iter()
                .take(sets)
                .filter_map(|set| set.server(set.server_index(key)))
                .map(|server| {
                    server.send(slot, req.raw().clone(), expect, append_mn, !noreply, None)
                })
                .collect();
            if noreply {
                if let Some(inv) = invalidate {
                    inv.send(client.slot);
                }
                return Pending::Nothing;
            }
            Pending::Write(WriteOp {
                route: index,
                sends,
                noreply,
                quiet,
                invalidate,
            })
        }
        Command::MetaNoop => Pending::Reply(b"MN\r\n"),
        Command::Version => Pending::Owned(Bytes::from(format!(
            "VERSION ocean-memcached-router-{}\r\n",
            env!("CARGO_PKG_VERSION")
        ))),
        Command::Verbosity => {
            if req.noreply() {
                Pending::Nothing
            } else {
                Pending::Reply(b"OK\r\n")
            }
        }
        Command::Quit => Pending::Quit,
        Command::Stats => {
            let mut out = BytesMut::new();
            stats.render(&mut out);
            Pending::Owned(out.freeze())
        }
        Command::FlushAll => {
            if !routes.settings().allow_flush {
                return Pending::Reply(b"SERVER_ERROR flush_all is disabled\r\n");
            }
            let noreply = req.noreply();
            let (expect, append_mn) = if noreply {
                (Expect::UntilMn, true)
            } else {
                (Expect::Line, false)
            };
            // Every server of every route, once (routes may share a pool's servers).
            let mut seen = std::collections::HashSet::new();
            let sends: Vec<Sent> = routes
                .all()
                .iter()
                .flat_map(PoolRoute::all_servers)
                .filter(|s| seen.insert(s.addr()))
                .map(|s| s.send(slot, req.raw().clone(), expect, append_mn, !noreply, None))
                .collect();
            if noreply {
                return Pending::Nothing;
            }
            Pending::Write(WriteOp {
                route: 0,
                sends,
                noreply,
                quiet: false,
                invalidate: None,
            })
        }
    }
}

/// Sends the keys at `indices` of a read to their servers in replica set `set`, one part
/// per server. `whole` says `indices` are all the request's keys, so a request that lands
/// on one server is forwarded as received.
fn send_keys(
    route: &PoolRoute,
    req: &Request,
    client: Client<'_>,
    set: usize,
    indices: &[usize],
    whole: bool,
) -> Vec<Part> {
    let Some(set_route) = route.sets.get(set) else {
        return Vec::new();
    };
    let quiet = req.meta().is_some_and(|m| m.quiet);
    let (expect, append_mn) = if req.command().is_retrieval() {
        (Expect::Retrieval, false)
    } else if quiet {
        (Expect::UntilMn, true)
    } else {
        (Expect::Meta, false)
    };
    let groups = group_keys(req, indices.iter().copied(), |key| {
        set_route.server_index(key)
    });
    let single = groups.len() == 1;
    groups
        .into_iter()
        .filter_map(|(s, keys)| {
            let server = set_route.server(s)?;
            let bytes = if whole && single {
                req.raw().clone()
            } else {
                let mut out = BytesMut::new();
                req.encode_retrieval(&keys, &mut out);
                out.freeze()
            };
            Some(Part {
                set,
                keys,
                sent: server.send(
                    client.slot,
                    bytes,
                    expect,
                    append_mn,
                    true,
                    Some(client.budget),
                ),
            })
        })
        .collect()
}

fn server_error(out: &mut BytesMut, e: &UpstreamError) {
    out.extend_from_slice(format!("SERVER_ERROR {e}\r\n").as_bytes());
}

fn strip_mn(reply: Bytes) -> Bytes {
    if reply.ends_with(b"MN\r\n") {
        reply.slice(..reply.len() - 4)
    } else {
        reply
    }
}

async fn finish(
    p: Pending,
    routes: &Routes,
    stats: &RouterStats,
    client: Client<'_>,
    out: &mut BytesMut,
) {
    match p {
        Pending::Reply(r) => out.extend_from_slice(r),
        Pending::Owned(r) => out.extend_from_slice(&r),
        Pending::Nothing | Pending::Quit => {}
        Pending::Read(op) if op.req.command().is_retrieval() => {
            let route = routes.get(op.route);
            finish_retrieval(op, route, stats, client, out).await;
        }
        Pending::Read(op) => {
            let route = routes.get(op.route);
            finish_meta_read(op, route, stats, client, out).await;
        }
        Pending::Write(op) => {
            let route = routes.get(op.route);
            finish_write(op, route, stats, client, out).await;
        }
        Pending::Split(ops) => finish_split(ops, routes, stats, client, out).await,
    }
}

/// The reads of one `get` split by route, answered as one: every value found, then one
/// `END`. As within one route, a part whose servers all failed counts as misses when
/// another part answered, and its `SERVER_ERROR` answers when none did; an error line that
/// answers a whole request (the client's reply budget, a server refusing the request)
/// answers this one.
async fn finish_split(
    ops: Vec<ReadOp>,
    routes: &Routes,
    stats: &RouterStats,
    client: Client<'_>,
    out: &mut BytesMut,
) {
    let mut values = BytesMut::new();
    let mut answered = false;
    let mut failed: Option<BytesMut> = None;
    let mut whole: Option<BytesMut> = None;
    for op in ops {
        let route = routes.get(op.route);
        let mut one = BytesMut::new();
        // Every part is awaited, whatever the others brought: their replies are owed.
        match finish_retrieval(op, route, stats, client, &mut one).await {
            Retrieved::Answered => {
                answered = true;
                values.extend_from_slice(one.strip_suffix(b"END\r\n").unwrap_or(&one));
            }
            Retrieved::Failed => {
                failed.get_or_insert(one);
            }
            Retrieved::WholeRequest => {
                whole.get_or_insert(one);
            }
        }
    }
    match (whole, answered, failed) {
        (Some(line), _, _) | (None, false, Some(line)) => out.extend_from_slice(&line),
        _ => {
            out.extend_from_slice(&values);
            out.extend_from_slice(b"END\r\n");
        }
    }
}

/// How a retrieval was answered: what a `get` split by route needs to join the parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retrieved {
    /// Values (maybe none) and `END`.
    Answered,
    /// Every server it needed failed: a `SERVER_ERROR` line.
    Failed,
    /// An error line that answers the whole request (the server refused it, or the
    /// client's reply budget ran out).
    WholeRequest,
}

async fn finish_retrieval(
    op: ReadOp,
    route: &PoolRoute,
    stats: &RouterStats,
    client: Client<'_>,
    out: &mut BytesMut,
) -> Retrieved {
    let ReadOp { req, parts, .. } = op;
    let miss_failover = route.settings.miss_failover && route.sets.len() > 1;
    let mut queue: std::collections::VecDeque<Part> = parts.into();
    // Fast path: one server answered for all keys.
    if queue.len() == 1 && !miss_failover {
        if let Some(part) = queue.pop_front() {
            let server = part.sent.server().clone();
            match part.sent.reply().await {
                Ok(reply) => {
                    let n = req.keys().len() as u64;
                    let hits = if n == 1 {
                        u64::from(reply.starts_with(b"VALUE "))
                    } else {
                        count_values(&reply).unwrap_or(0) as u64
                    };
                    server.record_lookups(hits, n.saturating_sub(hits));
                    stats.get_hits.fetch_add(hits, Ordering::Relaxed);
                    stats
                        .get_misses
                        .fetch_add(n.saturating_sub(hits), Ordering::Relaxed);
                    out.extend_from_slice(&reply);
                    // O(1): a reply with values ends with END, an error line does not
                    // (and says so first).
                    let error_line =
                        reply.starts_with(b"SERVER_ERROR") || reply.starts_with(b"CLIENT_ERROR");
                    return if reply.ends_with(b"END\r\n") && !error_line {
                        Retrieved::Answered
                    } else {
                        Retrieved::WholeRequest
                    };
                }
                Err(e @ UpstreamError::ClientBudget) => {
                    server_error(out, &e);
                    return Retrieved::WholeRequest;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "read failed, failing over");
                    stats.backend_errors.fetch_add(1, Ordering::Relaxed);
                    if part.set + 1 < route.sets.len() {
                        queue.extend(send_keys(
                            route,
                            &req,
                            client,
                            part.set + 1,
                            &part.keys,
                            true,
                        ));
                    } else {
                        server_error(out, &e);
                        return Retrieved::Failed;
                    }
                }
            }
        }
    }
    let mut found: Vec<Option<Bytes>> = vec![None; req.keys().len()];
    // Keys the first set answered as misses (not failures): what a warm fill may store
    // (kept only when there is one to do).
    let warm_fill_exptime = route.settings.warm_fill.filter(|_| miss_failover);
    let mut cold_miss = if warm_fill_exptime.is_some() {
        vec![false; req.keys().len()]
    } else {
        Vec::new()
    };
    let mut failed: Option<UpstreamError> = None;
    let mut answered = false;
    while let Some(part) = queue.pop_front() {
        let server = part.sent.server().clone();
        match part.sent.reply().await {
            Ok(reply) => {
                let Some(blocks) = value_blocks(&reply) else {
                    // An error line from the server: it answers for the whole request.
                    out.extend_from_slice(&reply);
                    return Retrieved::WholeRequest;
                };
                answered = true;
                let mut blocks = blocks.peekable();
                // The keys to try on the next set (only collected when misses fail over).
                let retry_misses = miss_failover && part.set + 1 < route.sets.len();
                let mut missed = Vec::new();
                let mut misses = 0;
                for &i in &part.keys {
                    let key = req.keys().get(i);
                    match blocks.peek() {
                        Some(b) if Some(&b.key) == key => {
                            if let (Some(slot), Some(b)) = (found.get_mut(i), blocks.next()) {
                                *slot = Some(b.block);
                            }
                        }
                        _ => {
                            misses += 1;
                            if part.set == 0 {
                                if let Some(m) = cold_miss.get_mut(i) {
                                    *m = true;
                                }
                            }
                            if retry_misses {
                                missed.push(i);
                            }
                        }
                    }
                }
                server.record_lookups((part.keys.len() - misses) as u64, misses as u64);
                if !missed.is_empty() {
                    queue.extend(send_keys(route, &req, client, part.set + 1, &missed, false));
                }
            }
            Err(e @ UpstreamError::ClientBudget) => {
                // The client's own doing: the whole read answers it, nothing fails over.
                server_error(out, &e);
                return Retrieved::WholeRequest;
            }
            Err(e) => {
                tracing::debug!(error = %e, "read failed, failing over");
                stats.backend_errors.fetch_add(1, Ordering::Relaxed);
                if part.set + 1 < route.sets.len() {
                    queue.extend(send_keys(
                        route,
                        &req,
                        client,
                        part.set + 1,
                        &part.keys,
                        false,
                    ));
                } else {
                    failed = Some(e);
                }
            }
        }
    }
    if let (false, Some(e)) = (answered, &failed) {
        server_error(out, e);
        return Retrieved::Failed;
    }
    if let Some(exptime) = warm_fill_exptime {
        warm_fill(route, &req, client, &found, &cold_miss, exptime, stats);
    }
    // Keys whose every set failed count as misses when other keys were answered.
    let mut hits = 0;
    for block in found.iter().flatten() {
        out.extend_from_slice(block);
        hits += 1;
    }
    stats.get_hits.fetch_add(hits, Ordering::Relaxed);
    stats
        .get_misses
        .fetch_add(found.len() as u64 - hits, Ordering::Relaxed);
    out.extend_from_slice(b"END\r\n");
    Retrieved::Answered
}

/// mcrouter's WarmUpRoute: every value found past a miss on the first (cold) set is
/// stored there with `add` (never overwriting what a client set meanwhile), without
/// waiting for the reply.
fn warm_fill(
    route: &PoolRoute,
    req: &Request,
    client: Client<'_>,
    found: &[Option<Bytes>],
    cold_miss: &[bool],
    exptime: u32,
    stats: &RouterStats,
) {
    let Some(cold) = route.sets.first() else {
        return;
    };
    for (i, block) in found.iter().enumerate() {
        let (Some(block), true, Some(key)) = (block, cold_miss[i], req.keys().get(i)) else {
            continue;
        };
        let Some((flags, data)) = crate::reply::value_parts(block) else {
            continue;
        };
        let Some(server) = cold.server(cold.server_index(key)) else {
            continue;
        };
        let mut add = BytesMut::with_capacity(block.len() + 32);
        add.extend_from_slice(b"add ");
        add.extend_from_slice(key);
        add.extend_from_slice(format!(" {flags} {exptime} {}\r\n", data.len()).as_bytes());
        add.extend_from_slice(data);
        add.extend_from_slice(b"\r\n");
        drop(server.send(client.slot, add.freeze(), Expect::Line, false, false, None));
        stats.warm_fills.fetch_add(1, Ordering::Relaxed);
    }
}

fn is_meta_miss(reply: &[u8]) -> bool {
    reply.is_empty() || reply.starts_with(b"EN")
}

async fn finish_meta_read(
    op: ReadOp,
    route: &PoolRoute,
    stats: &RouterStats,
    client: Client<'_>,
    out: &mut BytesMut,
) {
    let ReadOp {
        req, parts, quiet, ..
    } = op;
    let miss_failover = route.settings.miss_failover && req.command() == Command::MetaGet;
    let mut queue: std::collections::VecDeque<Part> = parts.into();
    let mut last: Option<Result<Bytes, UpstreamError>> = None;
    while let Some(part) = queue.pop_front() {
        let server = part.sent.server().clone();
        let more = part.set + 1 < route.sets.len();
        match part.sent.reply().await {
            Ok(reply) => {
                let reply = if quiet { strip_mn(reply) } else { reply };
                let miss = is_meta_miss(&reply);
                if req.command() == Command::MetaGet {
                    server.record_lookups(u64::from(!miss), u64::from(miss));
                }
                if miss && miss_failover && more {
                    queue.extend(send_keys(
                        route,
                        &req,
                        client,
                        part.set + 1,
                        &part.keys,
                        true,
                    ));
                    last = Some(Ok(reply));
                    continue;
                }
                if req.command() == Command::MetaGet {
                    let counter = if miss {
                        &stats.get_misses
                    } else {
                        &stats.get_hits
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                out.extend_from_slice(&reply);
                return;
            }
            Err(e @ UpstreamError::ClientBudget) => {
                server_error(out, &e);
                return;
            }
            Err(e) => {
                stats.backend_errors.fetch_add(1, Ordering::Relaxed);
                if more {
                    queue.extend(send_keys(
                        route,
                        &req,
                        client,
                        part.set + 1,
                        &part.keys,
                        true,
                    ));
                }
                if !matches!(last, Some(Ok(_))) {
                    last = Some(Err(e));
                }
            }
        }
    }
    match last {
        Some(Ok(reply)) => out.extend_from_slice(&reply),
        Some(Err(e)) => server_error(out, &e),
        None => out.extend_from_slice(b"SERVER_ERROR no server for key\r\n"),
    }
}

async fn finish_write(
    op: WriteOp,
    route: &PoolRoute,
    stats: &RouterStats,
    client: Client<'_>,
    out: &mut BytesMut,
) {
    let WriteOp {
        sends,
        noreply,
        quiet,
        invalidate,
        ..
    } = op;
    if let Some(inv) = invalidate {
        // cas: the first set only, no failover.
        let Some(sent) = sends.into_iter().next() else {
            out.extend_from_slice(b"SERVER_ERROR no server for key\r\n");
            return;
        };
        match sent.reply().await {
            Ok(r) => {
                let r = if quiet { strip_mn(r) } else { r };
                if write_severity(&r) == 0 {
                    inv.send(client.slot);
                }
                out.extend_from_slice(&r);
            }
            Err(e) => {
                stats.backend_errors.fetch_add(1, Ordering::Relaxed);
                server_error(out, &e);
            }
        }
        return;
    }
    if noreply {
        return;
    }
    let clean = |r: Bytes| if quiet { strip_mn(r) } else { r };
    match route.settings.write_policy {
        WritePolicy::First => {
            let mut first_err = None;
            for sent in sends {
                match sent.reply().await {
                    Ok(r) => {
                        out.extend_from_slice(&clean(r));
                        return;
                    }
                    Err(e) => {
                        stats.backend_errors.fetch_add(1, Ordering::Relaxed);
                        first_err.get_or_insert(e);
                    }
                }
            }
            match first_err {
                Some(e) => server_error(out, &e),
                None => out.extend_from_slice(b"SERVER_ERROR no server for key\r\n"),
            }
        }
        WritePolicy::All => {
            let mut worst: Option<(u8, Result<Bytes, UpstreamError>)> = None;
            for sent in sends {
                let r = sent.reply().await;
                let severity = match &r {
                    Ok(b) => write_severity(b),
                    Err(_) => {
                        stats.backend_errors.fetch_add(1, Ordering::Relaxed);
                        3
                    }
                };
                if worst.as_ref().is_none_or(|(s, _)| severity > *s) {
                    worst = Some((severity, r));
                }
            }
            match worst {
                Some((_, Ok(r))) => out.extend_from_slice(&clean(r)),
                Some((_, Err(e))) => server_error(out, &e),
                None => out.extend_from_slice(b"SERVER_ERROR no server for key\r\n"),
            }
        }
    }
}
