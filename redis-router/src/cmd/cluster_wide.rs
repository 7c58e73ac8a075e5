//! Commands for every master: SCAN (the cursor carries the master index), KEYS, DBSIZE,
//! FLUSHALL/FLUSHDB, SCRIPT, FUNCTION (what wipes data or code only with `--allow-flush`).
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncRead;

use super::Session;
use crate::command::CommandSpec;
use crate::connection::{Client, Flow, Out};
use crate::metrics::Family;
use crate::proto::{self, err_reply, int_reply, Protocol, Request};
use crate::route::assemble::array_elements;
use crate::route::RouteOpts;
use crate::route::{self, Target};
use crate::upstream::Cluster;

impl Session {
    pub(super) async fn cluster_wide<R: AsyncRead + Unpin + Send>(
        &mut self,
        c: &mut Client<R>,
        spec: &CommandSpec,
        req: Request,
        family: Family,
    ) -> Flow {
        c.flush_batch().await;
        let started = Instant::now();
        let cluster = c.shared.cluster.clone();
        let ropts = c.shared.opts.route.clone();
        let proto = c.proto;
        let name = spec.name;
        if !c.shared.opts.allow_flush {
            if let Some(what) = wipes(name, &req) {
                c.ready(err_reply(&format!(
                    "ERR {what} is disabled on this router (start it with --allow-flush)"
                )))
                .await;
                return Flow::Continue;
            }
        }
        let bytes = c.encode(&req);
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
            c.shared.metrics.record(family, started, &reply);
            c.ready(reply).await;
        } else {
            c.push(Out::Task(task, family, started)).await;
        }
        Flow::Continue
    }
}

/// The command as the client would name it when it wipes data or code on every master
/// (FLUSHALL, FLUSHDB, SCRIPT FLUSH, FUNCTION FLUSH/DELETE/RESTORE): only with
/// `--allow-flush`. EVAL or FCALL of a script that calls FLUSHALL is the backend ACL's to
/// refuse (docs/redis-router.md says how).
fn wipes(name: &str, req: &Request) -> Option<String> {
    let sub = || {
        req.args
            .get(1)
            .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
    };
    match name {
        "flushall" | "flushdb" => Some(name.to_ascii_uppercase()),
        "script" => sub()
            .filter(|s| s == "FLUSH")
            .map(|s| format!("SCRIPT {s}")),
        "function" => sub()
            .filter(|s| matches!(s.as_str(), "FLUSH" | "DELETE" | "RESTORE"))
            .map(|s| format!("FUNCTION {s}")),
        _ => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req(args: &[&str]) -> Request {
        Request::new(args.iter().map(|a| Bytes::from(a.to_string())))
    }

    #[test]
    fn what_wipes_is_named_and_the_rest_passes() {
        let cases = [
            ("flushall", &["FLUSHALL"][..], Some("FLUSHALL")),
            ("flushdb", &["flushdb", "ASYNC"][..], Some("FLUSHDB")),
            ("script", &["SCRIPT", "flush"][..], Some("SCRIPT FLUSH")),
            ("script", &["SCRIPT", "LOAD", "return 1"][..], None),
            ("script", &["SCRIPT", "EXISTS", "abc"][..], None),
            (
                "function",
                &["FUNCTION", "FLUSH", "SYNC"][..],
                Some("FUNCTION FLUSH"),
            ),
            (
                "function",
                &["function", "delete", "lib"][..],
                Some("FUNCTION DELETE"),
            ),
            (
                "function",
                &["FUNCTION", "RESTORE", "x"][..],
                Some("FUNCTION RESTORE"),
            ),
            ("function", &["FUNCTION", "LIST"][..], None),
            ("function", &["FUNCTION", "LOAD", "#!lua name=l"][..], None),
            ("function", &["FUNCTION"][..], None),
            ("dbsize", &["DBSIZE"][..], None),
        ];
        for (name, args, want) in cases {
            assert_eq!(wipes(name, &req(args)).as_deref(), want, "{args:?}");
        }
    }
}
