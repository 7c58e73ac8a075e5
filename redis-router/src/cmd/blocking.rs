//! Blocking commands (BLPOP, ..., XREAD BLOCK): one dedicated connection for the one
//! command, MOVED/ASK followed.
use std::time::Instant;

use tokio::io::AsyncRead;

use super::Session;
use crate::command::CommandSpec;
use crate::connection::{Client, Flow};
use crate::metrics::Family;
use crate::proto::{err_reply, Request};
use crate::route::{self};

impl Session {
    /// Blocking commands: one dedicated connection for the duration of the command.
    pub(super) async fn blocking<R: AsyncRead + Unpin + Send>(
        &mut self,
        c: &mut Client<R>,
        req: Request,
        slot: u16,
    ) -> Flow {
        c.barrier().await;
        let started = Instant::now();
        let bytes = c.encode(&req);
        let mut target: Option<std::net::SocketAddr> = None;
        let mut asking = false;
        let max_idle = c.shared.cluster.opts.max_idle_dedicated;
        for _ in 0..=c.shared.opts.route.max_redirects {
            let lease = match target {
                None => self.lease(c, Some(slot)).await,
                Some(addr) => {
                    let node = c.shared.cluster.node(addr);
                    c.shared
                        .cluster
                        .lease(node, c.proto)
                        .await
                        .map_err(|e| route::error_reply(&e))
                }
            };
            let mut lease = match lease {
                Ok(l) => l,
                Err(e) => {
                    c.ready(e).await;
                    return Flow::Continue;
                }
            };
            if asking {
                let limits = c.shared.cluster.opts.backend.reply_limits.clone();
                if lease.conn.send(b"*1\r\n$6\r\nASKING\r\n").await.is_err()
                    || lease.conn.read_reply(&limits).await.is_err()
                {
                    c.ready(err_reply("ERR backend connection lost")).await;
                    return Flow::Continue;
                }
            }
            let reply = match c.exchange(&mut lease, &bytes).await {
                Ok(r) => r,
                Err(Flow::Gone) => return Flow::Gone,
                Err(_) => {
                    c.ready(err_reply("ERR backend connection lost")).await;
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
                        c.shared.cluster.request_refresh();
                    }
                    target = Some(a);
                    continue;
                }
            }
            c.shared.metrics.record(Family::Blocking, started, &reply);
            c.ready(reply).await;
            return Flow::Continue;
        }
        c.ready(err_reply("ERR too many redirects")).await;
        Flow::Continue
    }
}

/// XREAD/XREADGROUP block only with a BLOCK option; the B* commands always.
pub(super) fn is_blocking(spec: &CommandSpec, req: &Request) -> bool {
    if !matches!(spec.name, "xread" | "xreadgroup") {
        return true;
    }
    req.args
        .iter()
        .take_while(|a| !a.eq_ignore_ascii_case(b"streams"))
        .any(|a| a.eq_ignore_ascii_case(b"block"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command;
    use bytes::Bytes;

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
