//! Putting replies back together: a batch of one client's requests that went to one node
//! as one job, and a multi-key command split by slot, merged into the one reply the client
//! expects. Redirects and failures inside a batch are finished per request.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use super::{error_reply, finish, is_final, Flight, RouteOpts, Target};
use crate::command::Split;
use crate::metrics::{Family, FamilyMetrics};
use crate::proto::{self, Protocol};
use crate::upstream::{BackendError, Cluster, JobResult};

/// Consecutive requests of one client for one node, sent as one job.
pub struct BatchFlight {
    pub rx: oneshot::Receiver<JobResult>,
    /// Each request's bytes, slot, read-only flag and family, in order.
    pub reqs: Vec<Queued>,
    pub proto: Protocol,
}

/// One request of a batch: its bytes, slot, read-only flag and family.
pub struct Queued {
    pub bytes: Bytes,
    pub slot: u16,
    pub read_only: bool,
    pub family: Family,
}

/// A split command's parts for one node: node identity, first slot, the parts' bytes,
/// the parts, and their indices.
pub type NodeParts = (usize, u16, BytesMut, Vec<Queued>, Vec<usize>);

/// A split multi-key command in flight.
pub struct Merge {
    pub split: Split,
    /// One job per node, each with the parts (sub-commands) it carries, by part index.
    pub jobs: Vec<(BatchFlight, Vec<usize>)>,
    /// How many parts there are.
    pub nparts: usize,
    /// For MGET: each part's keys' positions in the reply.
    pub positions: Vec<Vec<usize>>,
    pub total: usize,
}

/// A batch whose replies need a look: each reply is checked and, where it is a redirect
/// or a failure, finished on its own.
pub async fn finish_batch(
    cluster: &Cluster,
    ropts: &RouteOpts,
    metrics: &FamilyMetrics,
    first: JobResult,
    b: BatchFlight,
    started: Instant,
) -> Bytes {
    let replies = job_replies(cluster, ropts, first, &b.reqs, b.proto).await;
    let mut out = BytesMut::new();
    for (q, reply) in b.reqs.iter().zip(&replies) {
        metrics.record(q.family, started, reply);
        out.extend_from_slice(reply);
    }
    out.freeze()
}

/// The final reply of each request of a job, given the job's first result.
pub async fn job_replies(
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
                        if is_final(&r) {
                            one
                        } else {
                            finish(cluster, ropts, r, flight()).await
                        }
                    }
                    _ => error_reply(&BackendError::Protocol(([0, 0, 0, 0], 0).into())),
                }
            }
            Err(e) => finish(cluster, ropts, Err(e.clone()), flight()).await,
        };
        out.push(reply);
    }
    out
}

/// Splits `*N\r\n` + N elements into its elements.
pub fn array_elements(reply: &Bytes) -> Option<Vec<Bytes>> {
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

pub async fn merge(cluster: &Cluster, ropts: &RouteOpts, m: Merge) -> Bytes {
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
            proto::int_reply(sum)
        }
        Split::AllOk | Split::SameSlot => replies
            .into_iter()
            .next()
            .unwrap_or_else(|| Bytes::from_static(b"+OK\r\n")),
    }
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
}
