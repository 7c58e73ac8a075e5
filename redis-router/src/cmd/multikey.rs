//! MGET/MSET/DEL/UNLINK/EXISTS/TOUCH across slots: one sub-command per slot, the parts
//! for one node sent as one job, merged back by [`crate::route::assemble::merge`].
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncRead;

use super::Session;
use crate::command::{self, CommandSpec, Flags, Split};
use crate::connection::{Client, Out};
use crate::metrics::Family;
use crate::proto::Request;
use crate::route::assemble::{BatchFlight, Merge, NodeParts, Queued};
use crate::route::{self, Target};

impl Session {
    /// MGET/MSET/DEL/UNLINK/EXISTS/TOUCH across slots: one sub-command per slot.
    pub(super) async fn split<R: AsyncRead + Unpin + Send>(
        &mut self,
        c: &mut Client<R>,
        spec: &CommandSpec,
        req: &Request,
        family: Family,
    ) {
        // Earlier requests reach their nodes before the parts do.
        c.flush_batch().await;
        let started = Instant::now();
        let Ok(keys) = command::keys_for(spec, &req.args) else {
            return;
        };
        let groups = c
            .shared
            .cluster
            .with_placement(|p| command::group_by_slot(&keys, p));
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
            let bytes = c.encode_args(args);
            let node = c
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
                &c.shared.cluster,
                Target::Slot(slot),
                bytes.freeze(),
                reqs.len() as u32,
                false,
                c.proto,
            )
            .await;
            jobs.push((
                BatchFlight {
                    rx,
                    reqs,
                    proto: c.proto,
                },
                parts,
            ));
        }
        c.push(Out::Merge(
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
}
