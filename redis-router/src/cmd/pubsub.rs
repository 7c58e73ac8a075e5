//! SUBSCRIBE/PSUBSCRIBE/SSUBSCRIBE: a dedicated connection until no subscription is left.

use bytes::Bytes;
use tokio::io::AsyncRead;

use super::{lower, Session};
use crate::connection::{Client, Flow};
use crate::proto::{self, err_reply, Request, Value};

impl Session {
    /// SUBSCRIBE/PSUBSCRIBE/SSUBSCRIBE: a dedicated connection until no subscription is
    /// left; then the connection is closed (never reused: it may still carry messages).
    pub(super) async fn pubsub<R: AsyncRead + Unpin + Send>(
        &mut self,
        c: &mut Client<R>,
        first: Request,
        slot: Option<u16>,
    ) -> Flow {
        c.barrier().await;
        let s = slot.or_else(|| first.args.get(1).map(|k| c.shared.cluster.slot_of(k)));
        let mut lease = match self.lease(c, s).await {
            Ok(l) => l,
            Err(e) => {
                c.ready(e).await;
                return Flow::Continue;
            }
        };
        let bytes = c.encode(&first);
        if lease.conn.send(&bytes).await.is_err() {
            c.ready(err_reply("ERR backend connection lost")).await;
            return Flow::Continue;
        }
        let limits = c.shared.cluster.opts.backend.reply_limits.clone();
        loop {
            // Requests already buffered go first.
            loop {
                match c.decode_buffered() {
                    Ok(Some(req)) => {
                        let name = lower(req.name());
                        match name.as_str() {
                            "subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe"
                            | "punsubscribe" | "sunsubscribe" | "ping" | "reset" => {
                                let b = c.encode(&req);
                                if lease.conn.send(&b).await.is_err() {
                                    c.ready(err_reply("ERR backend connection lost")).await;
                                    return Flow::Close;
                                }
                            }
                            "quit" => {
                                c.ready(Bytes::from_static(b"+OK\r\n")).await;
                                return Flow::Close;
                            }
                            other => {
                                c.ready(err_reply(&format!(
                                    "ERR Can't execute '{other}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                                )))
                                .await;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        c.ready(e.reply()).await;
                        return Flow::Close;
                    }
                }
            }
            let got = tokio::select! {
                r = lease.conn.read_reply(&limits) => Some(r),
                n = c.read_more() => match n {
                    Ok(0) | Err(_) => return Flow::Gone,
                    Ok(_) => None,
                },
            };
            match got {
                None => continue,
                Some(Err(_)) => {
                    c.ready(err_reply("ERR backend connection lost")).await;
                    return Flow::Close;
                }
                Some(Ok(reply)) => {
                    let done = subscriptions_ended(&reply);
                    c.ready(reply).await;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
