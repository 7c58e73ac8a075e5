//! The UDP hot path. Each worker is an OS thread with its own `SO_REUSEPORT` socket in
//! blocking mode (the kernel spreads datagrams over the sockets). A worker takes every
//! queued datagram, up to [`BATCH`], with one `recvmmsg`, answers each from the pre-built
//! zone, and sends the answers with one `sendmmsg`: a profile of the one-datagram loop was
//! 87% kernel, most of it the two system calls per query that a batch shares.
//!
//! Queries to forward leave the loop through a bounded channel to async tasks
//! ([`forward`]); when it is full the client gets SERVFAIL at once.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};
use ocean_core::net::Cidr;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proto::query::parse;
use crate::route::{
    fit_forwarded_udp, recursion_allowed, refuse_forward, respond, servfail, truncated, Action,
    Client, Settings, Transport,
};
use crate::rrl::{Rrl, Verdict};
use crate::stats::Counters;
use crate::upstream::Forwarder;
use crate::zone::SharedZone;

/// Datagrams taken (and answers sent) per system call. dnsperf's 4 x 200 outstanding
/// queries keep far more than this queued; a larger batch gained nothing measurable.
pub const BATCH: usize = 32;

/// The receive buffer of one datagram: the largest UDP payload, so no query arrives cut.
const MAX_DATAGRAM: usize = 65535;

/// Who a UDP worker forwards for, whose Client Subnet it believes, and how fast it
/// answers one client network.
pub struct UdpPolicy {
    /// `--allow-recursion`.
    pub acl: Arc<[Cidr]>,
    /// `--trust-ecs`.
    pub trust_ecs: Arc<[Cidr]>,
    /// Response rate limiting, shared by every worker; `None` when off.
    pub rrl: Option<Arc<Rrl>>,
}

/// A query to forward, from a UDP worker.
pub struct ForwardJob {
    req: Vec<u8>,
    peer: SocketAddr,
    socket: Arc<std::net::UdpSocket>,
}

/// One worker's socket: `SO_REUSEPORT`, a large receive buffer, and a read timeout so the
/// worker notices shutdown.
///
/// With port 0 the socket is bound first and joins `SO_REUSEPORT` after: Linux lets an
/// auto-bound reuseport socket pick a port that another reuseport socket of the same user
/// already holds (a second `ocean dns` in the same process, or one still shutting down),
/// and the two would then share each other's queries. Bound plain, the kernel picks a port
/// nobody holds; the other workers then join it by number.
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let auto_port = addr.port() == 0;
    if !auto_port {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // One address family per socket: the batch headers rely on it (see `Batch`).
        s.set_only_v6(true)?;
    }
    // Bursts from many clients queue in the kernel instead of being dropped.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into())
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}/udp (--listen): {e}"))?;
    if auto_port {
        s.set_reuse_port(true)?;
    }
    let s: std::net::UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(s)
}

/// The buffers of one worker, allocated once: the datagrams received, the answers to send
/// and the kernel's message headers for both directions.
///
/// The receive headers are reused across calls, and the kernel shrinks each one's address
/// length to the address it wrote; that is sound because a socket only ever sees one
/// address family (`bind` sets `IPV6_V6ONLY`), so every address has the same length.
struct Batch {
    queries: [Vec<u8>; BATCH],
    /// Length and source of each datagram of the last receive.
    received: [(usize, Option<SocketAddr>); BATCH],
    answers: [Vec<u8>; BATCH],
    /// Where each answer goes; `answers[i]` and `to[i]` for `i < sends` are the batch to send.
    to: [Option<SockaddrStorage>; BATCH],
    sends: usize,
    recv_headers: MultiHeaders<SockaddrStorage>,
    send_headers: MultiHeaders<SockaddrStorage>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            queries: std::array::from_fn(|_| vec![0; MAX_DATAGRAM]),
            received: [(0, None); BATCH],
            answers: std::array::from_fn(|_| Vec::with_capacity(4096)),
            to: [None; BATCH],
            sends: 0,
            recv_headers: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Waits for at least one datagram (up to the socket's read timeout), then takes what
    /// else is queued without waiting. Returns how many arrived.
    fn receive(&mut self, fd: RawFd) -> Result<usize, Errno> {
        let mut iovs = self
            .queries
            .each_mut()
            .map(|q| [IoSliceMut::new(q.as_mut_slice())]);
        let msgs = recvmmsg(
            fd,
            &mut self.recv_headers,
            iovs.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )?;
        let mut n = 0;
        for (slot, m) in self.received.iter_mut().zip(msgs) {
            *slot = (m.bytes, m.address.as_ref().and_then(std_addr));
            n += 1;
        }
        self.sends = 0;
        Ok(n)
    }

    /// Sends the answers queued with [`Batch::queue`], in as few calls as the kernel
    /// allows. A datagram the kernel refuses (the first of a call fails) is logged and
    /// skipped, and the rest still go.
    fn send(&mut self, fd: RawFd) {
        let slices = self.answers.each_ref().map(|a| [IoSlice::new(a)]);
        let no_cmsgs: [ControlMessage<'_>; 0] = [];
        let mut at = 0;
        while at < self.sends {
            let (Some(slices), Some(to)) =
                (slices.get(at..self.sends), self.to.get(at..self.sends))
            else {
                return;
            };
            match sendmmsg(
                fd,
                &mut self.send_headers,
                slices,
                to,
                no_cmsgs,
                MsgFlags::empty(),
            ) {
                Ok(sent) => at += sent.count().max(1),
                Err(Errno::EINTR) => {}
                Err(e) => {
                    let peer = to.first().copied().flatten().and_then(|a| std_addr(&a));
                    tracing::debug!(?peer, error = %e, "udp send failed");
                    at += 1;
                }
            }
        }
    }
}

/// A socket address as the kernel wrote it, as std's type.
fn std_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// One UDP worker: receive a batch, answer each query (or hand it to the forwarder, or
/// drop it), send the batch, until `stop`.
pub fn worker(
    socket: Arc<std::net::UdpSocket>,
    zone: SharedZone,
    settings: Settings,
    policy: UdpPolicy,
    fwd: mpsc::Sender<ForwardJob>,
    stop: Arc<AtomicBool>,
) {
    let fd = socket.as_raw_fd();
    let mut batch = Box::new(Batch::new());
    let mut counters = Counters::new();
    let mut n: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        let received = match batch.receive(fd) {
            Ok(k) => k,
            Err(Errno::EAGAIN | Errno::EINTR) => {
                // The read timeout: a quiet moment to publish the counters.
                counters.flush();
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "udp receive failed");
                continue;
            }
        };
        counters.udp_receives += 1;
        // One clock read per batch for the rate limiter.
        let now = policy.rrl.as_ref().map(|r| r.now());
        let guard = zone.load();
        for i in 0..received {
            let Some(&(len, Some(peer))) = batch.received.get(i) else {
                continue;
            };
            let Some(req) = batch.queries.get(i).and_then(|q| q.get(..len)) else {
                continue;
            };
            let Some(out) = batch.answers.get_mut(batch.sends) else {
                continue;
            };
            n = n.wrapping_add(1);
            // Time one query in 64: enough for a latency histogram, free for the rest.
            let started = n.is_multiple_of(64).then(std::time::Instant::now);
            let client = Client {
                addr: peer.ip(),
                trust_ecs: !policy.trust_ecs.is_empty()
                    && recursion_allowed(&policy.trust_ecs, peer.ip()),
            };
            let (mut action, mut outcome) = respond(
                guard.as_deref(),
                client,
                req,
                Transport::Udp,
                settings,
                n,
                out,
            );
            if action == Action::Forward && !recursion_allowed(&policy.acl, peer.ip()) {
                // Not an open resolver: only --allow-recursion clients have names forwarded.
                (action, outcome) = refuse_forward(req, settings, outcome, out);
                counters.refused_recursion();
            }
            if let (Some(rrl), Some(now), Action::Reply | Action::Forward) =
                (&policy.rrl, now, action)
            {
                match rrl.check(peer.ip(), now) {
                    Verdict::Answer => {}
                    Verdict::Slip => {
                        counters.rate_limited(true);
                        if truncated(req, outcome.rcode, settings, out).is_some() {
                            queue(&mut batch, peer);
                        }
                        continue;
                    }
                    Verdict::Drop => {
                        counters.rate_limited(false);
                        continue;
                    }
                }
            }
            if let Some(t) = started {
                counters.latency.push(t.elapsed().as_secs_f64());
            }
            counters.count(outcome, action);
            match action {
                Action::Reply => queue(&mut batch, peer),
                Action::Forward => {
                    let job = ForwardJob {
                        req: req.to_vec(),
                        peer,
                        socket: socket.clone(),
                    };
                    // Too many forwards in flight: fail fast.
                    if fwd.try_send(job).is_err() && servfail(req, settings, out).is_some() {
                        queue(&mut batch, peer);
                    }
                }
                Action::Drop => {}
            }
        }
        drop(guard);
        batch.send(fd);
    }
    counters.flush();
}

/// Queues the answer just written to `answers[sends]` for `peer`.
fn queue(batch: &mut Batch, peer: SocketAddr) {
    if let Some(to) = batch.to.get_mut(batch.sends) {
        *to = Some(SockaddrStorage::from(peer));
        batch.sends += 1;
    }
}

/// Forwards the queries the UDP workers hand over, at most `max_inflight` at once, and
/// sends each answer (fitted to the client's payload size) from the worker's socket.
pub async fn forward(
    mut rx: mpsc::Receiver<ForwardJob>,
    forwarder: Arc<Forwarder>,
    settings: Settings,
    max_inflight: usize,
    cancel: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(max_inflight.max(1)));
    let tasks = TaskTracker::new();
    loop {
        let job = tokio::select! {
            _ = cancel.cancelled() => break,
            j = rx.recv() => match j { Some(j) => j, None => break },
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let forwarder = forwarder.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let mut out = Vec::new();
            let answer = match parse(&job.req) {
                Ok(q) => forwarder.forward(&job.req, q.name(), Transport::Udp).await,
                Err(_) => return,
            };
            let reply = match answer {
                // An answer larger than the client takes goes out truncated (TC, no
                // records): the client retries over TCP.
                Ok(a) => match fit_forwarded_udp(&job.req, &a, settings, &mut out) {
                    Some(false) => a,
                    Some(true) => {
                        metrics::counter!("ocean_dns_truncated_total").increment(1);
                        out
                    }
                    None => return,
                },
                Err(e) => {
                    tracing::debug!(error = %e, "forwarding failed");
                    if servfail(&job.req, settings, &mut out).is_none() {
                        return;
                    }
                    out
                }
            };
            // A blocking std socket, but UDP sends do not block for long.
            if let Err(e) = job.socket.send_to(&reply, job.peer) {
                tracing::debug!(peer = %job.peer, error = %e, "udp send failed");
            }
        });
    }
    tasks.close();
    tasks.wait().await;
}
