//! MULTI/EXEC/DISCARD/WATCH/UNWATCH: a dedicated connection from the first keyed command
//! until the transaction and every WATCH have ended.
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncRead;

use super::{lower, Session};
use crate::command::{self};
use crate::connection::{Client, Flow};
use crate::metrics::Family;
use crate::proto::{self, err_reply, Request};
use crate::upstream::Lease;

impl Session {
    /// MULTI/EXEC/WATCH: a dedicated connection from the first keyed command until the
    /// transaction and every WATCH have ended.
    pub(super) async fn transaction<R: AsyncRead + Unpin + Send>(
        &mut self,
        c: &mut Client<R>,
        first: Request,
    ) -> Flow {
        c.barrier().await;
        let max_idle = c.shared.cluster.opts.max_idle_dedicated;
        let mut lease: Option<Lease> = None;
        let (mut in_multi, mut watching, mut multi_pending) = (false, false, false);
        let mut req = first;
        loop {
            let started = Instant::now();
            let name = lower(req.name());
            let spec = command::lookup(req.name());
            if name == "quit" {
                c.ready(Bytes::from_static(b"+OK\r\n")).await;
                return Flow::Close;
            }
            let slot = match spec.map(|s| command::keys_for(s, &req.args)) {
                Some(Ok(keys)) => match c
                    .shared
                    .cluster
                    .with_placement(|p| command::same_slot(keys, p))
                {
                    Ok(s) => s,
                    Err(cross) => {
                        c.ready(err_reply(&cross.to_string())).await;
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
                    _ => match self.lease(c, slot).await {
                        Ok(mut l) => {
                            if multi_pending {
                                multi_pending = false;
                                if let Err(flow) =
                                    c.exchange(&mut l, b"*1\r\n$5\r\nMULTI\r\n").await
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
                    let bytes = { c.encode(&req) };
                    match c.exchange(l, &bytes).await {
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
            c.shared
                .metrics
                .record(Family::Transaction, started, &reply);
            c.ready(reply).await;
            if !in_multi && !watching {
                if let Some(l) = lease.take() {
                    l.release(max_idle);
                }
                return Flow::Continue;
            }
            req = match c.next_request().await {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    c.ready(e).await;
                    return Flow::Close;
                }
                None => return Flow::Gone,
            };
        }
    }
}
