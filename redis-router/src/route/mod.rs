//! Sending one request to the cluster and getting its final reply: MOVED (refresh, retry on
//! the named owner), ASK (`ASKING` + command back to back on one connection), TRYAGAIN and
//! CLUSTERDOWN (wait, retry), and unreachable nodes (refresh, retry while the request was
//! never sent), all bounded.

pub mod assemble;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::oneshot;

use crate::proto::Protocol;
use crate::upstream::{BackendError, Cluster, Job, JobResult};

/// Routing limits.
#[derive(Debug, Clone)]
pub struct RouteOpts {
    /// MOVED/ASK redirects followed per request.
    pub max_redirects: u8,
    /// How long a request may keep retrying (unreachable node, TRYAGAIN, CLUSTERDOWN).
    pub retry_timeout: Duration,
}

impl Default for RouteOpts {
    fn default() -> Self {
        RouteOpts {
            max_redirects: 5,
            retry_timeout: Duration::from_secs(5),
        }
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The master of this slot.
    Slot(u16),
    /// This node.
    Node(SocketAddr),
}

/// A request on its way: the receiver of its first reply and what is needed to retry it.
#[derive(Debug)]
pub struct Flight {
    /// First reply.
    pub rx: oneshot::Receiver<JobResult>,
    /// The encoded request.
    pub req: Bytes,
    /// Its original target.
    pub target: Target,
    /// The client's protocol.
    pub proto: Protocol,
    /// Whether it only reads, so it may be sent again after its connection broke.
    pub read_only: bool,
}

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

/// Queues `req` for `target` on a shared connection.
pub async fn send(
    cluster: &Cluster,
    target: Target,
    req: &Bytes,
    proto: Protocol,
    asking: bool,
) -> oneshot::Receiver<JobResult> {
    let bytes = if asking {
        let mut b = BytesMut::with_capacity(ASKING.len() + req.len());
        b.put_slice(ASKING);
        b.put_slice(req);
        b.freeze()
    } else {
        req.clone()
    };
    send_job(cluster, target, bytes, 1, asking, proto).await
}

/// Queues `replies` requests written back to back for `target`; their replies come back
/// together.
pub async fn send_job(
    cluster: &Cluster,
    target: Target,
    bytes: Bytes,
    replies: u32,
    skip_first: bool,
    proto: Protocol,
) -> oneshot::Receiver<JobResult> {
    let (tx, rx) = oneshot::channel();
    let job = Job {
        bytes,
        replies,
        skip_first,
        tx,
    };
    let conn = match target {
        Target::Slot(slot) => {
            // Fast path: queue without touching reference counts.
            let left = cluster.with_slot(slot, |node| match node {
                Some(n) => n.shared(proto).try_send(job).map(|j| (j, Some(n.clone()))),
                None => Some((job, None)),
            });
            match left {
                None => return rx,
                Some((job, Some(node))) => (job, node),
                Some((job, None)) => {
                    cluster.request_refresh();
                    // The requester may be gone (its client left): nothing to deliver then.
                    let _ = job.tx.send(Err(BackendError::Unserved));
                    return rx;
                }
            }
        }
        Target::Node(addr) => (job, cluster.node(addr)),
    };
    let (job, node) = conn;
    node.shared(proto).send(job).await;
    rx
}

/// Sends and waits for the final reply.
pub async fn call(
    cluster: &Cluster,
    opts: &RouteOpts,
    target: Target,
    req: Bytes,
    proto: Protocol,
) -> Bytes {
    let rx = send(cluster, target, &req, proto, false).await;
    let first = rx
        .await
        .unwrap_or(Err(BackendError::Lost(([0, 0, 0, 0], 0).into())));
    finish(
        cluster,
        opts,
        first,
        Flight {
            rx: oneshot::channel().1,
            req,
            target,
            proto,
            read_only: false,
        },
    )
    .await
}

/// Whether a first reply is final (the common case) or needs [`finish`].
pub fn is_final(r: &JobResult) -> bool {
    match r {
        Ok(b) => {
            b.first() != Some(&b'-')
                || !(b.starts_with(b"-MOVED ")
                    || b.starts_with(b"-ASK ")
                    || b.starts_with(b"-TRYAGAIN")
                    || b.starts_with(b"-CLUSTERDOWN")
                    || b.starts_with(b"-LOADING"))
        }
        Err(_) => false,
    }
}

fn redirect(reply: &[u8]) -> Option<(bool, SocketAddr)> {
    let text = std::str::from_utf8(reply).ok()?.trim_end();
    let mut parts = text.split(' ');
    let kind = parts.next()?;
    let _slot = parts.next()?;
    let addr = parts.next()?.parse().ok()?;
    Some((kind == "-MOVED", addr))
}

/// An error reply for a backend failure.
pub fn error_reply(e: &BackendError) -> Bytes {
    match e {
        BackendError::Unserved => Bytes::from_static(b"-CLUSTERDOWN Hash slot not served\r\n"),
        e => Bytes::from(format!("-ERR {e}\r\n").into_bytes()),
    }
}

/// Turns a first reply into the final one, following redirects and retrying.
pub async fn finish(cluster: &Cluster, opts: &RouteOpts, first: JobResult, f: Flight) -> Bytes {
    let deadline = Instant::now() + opts.retry_timeout;
    let mut redirects = 0u8;
    let mut result = first;
    loop {
        let (target, asking) = match &result {
            Ok(reply) if is_final(&result) => return reply.clone(),
            Ok(reply) if reply.starts_with(b"-MOVED ") || reply.starts_with(b"-ASK ") => {
                let Some((moved, addr)) = redirect(reply) else {
                    return reply.clone();
                };
                if redirects >= opts.max_redirects {
                    return reply.clone();
                }
                redirects += 1;
                if moved {
                    metrics::counter!("ocean_redis_redirects_total", "kind" => "moved")
                        .increment(1);
                    cluster.request_refresh();
                } else {
                    metrics::counter!("ocean_redis_redirects_total", "kind" => "ask").increment(1);
                }
                (Target::Node(addr), !moved)
            }
            Ok(reply) => {
                // TRYAGAIN (a multi-key request during a slot migration) or CLUSTERDOWN.
                if Instant::now() >= deadline {
                    return reply.clone();
                }
                if reply.starts_with(b"-CLUSTERDOWN") {
                    cluster.request_refresh();
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
                (f.target, false)
            }
            Err(e)
                if (e.not_sent() || (f.read_only && matches!(e, BackendError::Lost(_))))
                    && Instant::now() < deadline =>
            {
                metrics::counter!("ocean_redis_retries_total").increment(1);
                cluster.wait_refresh(Duration::from_millis(200)).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                (f.target, false)
            }
            Err(e) => return error_reply(e),
        };
        let rx = send(cluster, target, &f.req, f.proto, asking).await;
        result = rx
            .await
            .unwrap_or(Err(BackendError::Lost(([0, 0, 0, 0], 0).into())));
    }
}

/// Sends `req` to every master and collects the final replies in master order.
pub async fn call_all(cluster: &Arc<Cluster>, req: Bytes, proto: Protocol) -> Vec<Bytes> {
    let masters: Vec<SocketAddr> = cluster.map().masters.iter().map(|n| n.addr).collect();
    let mut rxs = Vec::with_capacity(masters.len());
    for addr in &masters {
        rxs.push((
            *addr,
            send(cluster, Target::Node(*addr), &req, proto, false).await,
        ));
    }
    let mut out = Vec::with_capacity(rxs.len());
    for (addr, rx) in rxs {
        let r = rx.await.unwrap_or(Err(BackendError::Lost(addr)));
        out.push(match r {
            Ok(b) => b,
            Err(e) => error_reply(&e),
        });
    }
    out
}
