//! One DNS-over-TCP client (RFC 7766), or DNS over TLS (RFC 7858, the same framing inside
//! TLS): read a length-prefixed query, answer it from the zone
//! or forward it, write the length-prefixed reply; closed on EOF, the idle timeout, a stalled
//! body, a client that does not read within the write timeout, or after a FORMERR.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ocean_core::daemon::{self, Limits};
use ocean_core::net::Cidr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::proto::query::parse;
use crate::proto::rcode;
use crate::route::{
    recursion_allowed, refuse_forward, respond, servfail, Action, Client, Settings, Transport,
};
use crate::stats::Counters;
use crate::upstream::Forwarder;
use crate::zone::SharedZone;

/// Where this connection's out-of-zone queries go, and whether it may send them.
pub(crate) struct Forwarding {
    pub(crate) forwarder: Arc<Forwarder>,
    /// `--allow-recursion`: a client outside it gets REFUSED instead of a forward.
    pub(crate) acl: Arc<[Cidr]>,
    /// `--trust-ecs`: resolvers whose Client Subnet option picks the view.
    pub(crate) trust_ecs: Arc<[Cidr]>,
}

/// Serves one accepted connection (TCP, or TLS over it: the framing is the same) from
/// `peer` until EOF, a timeout or `cancel`.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: IpAddr,
    zone: SharedZone,
    forwarding: Forwarding,
    settings: Settings,
    limits: &Limits,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let idle = limits.idle_timeout;
    let may_recurse = recursion_allowed(&forwarding.acl, peer);
    let client = Client {
        addr: peer,
        trust_ecs: recursion_allowed(&forwarding.trust_ecs, peer),
    };
    let mut out = Vec::with_capacity(4096);
    let mut req = Vec::new();
    let mut framed = Vec::with_capacity(4096);
    let mut n: u32 = 0;
    let mut counters = Counters::new();
    let result = loop {
        // The length prefix: wait up to the idle timeout for the next query.
        let len = tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            r = tokio::time::timeout(idle, stream.read_u16()) => match r {
                Ok(Ok(len)) => len as usize,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
                Ok(Err(e)) => break Err(e),
                Err(_) => break Ok(()), // idle
            },
        };
        req.resize(len, 0);
        // The body must follow promptly: a client that sends a length and stalls is cut.
        match tokio::time::timeout(
            idle.min(Duration::from_secs(5)),
            stream.read_exact(&mut req),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break Err(e),
            Err(_) => break Ok(()),
        }
        n = n.wrapping_add(1);
        let (mut action, mut outcome) = {
            let guard = zone.load();
            respond(
                guard.as_deref(),
                client,
                &req,
                Transport::Tcp,
                settings,
                n,
                &mut out,
            )
        };
        if action == Action::Forward && !may_recurse {
            (action, outcome) = refuse_forward(&req, settings, outcome, &mut out);
            counters.refused_recursion();
        }
        counters.count(outcome, action);
        let reply: &[u8] = match action {
            Action::Reply => &out,
            Action::Drop => break Ok(()),
            Action::Forward => {
                let name = parse(&req).map(|q| q.name().to_vec()).unwrap_or_default();
                match forwarding
                    .forwarder
                    .forward(&req, &name, Transport::Tcp)
                    .await
                {
                    Ok(a) => {
                        out = a;
                        &out
                    }
                    Err(_) => {
                        if servfail(&req, settings, &mut out).is_none() {
                            break Ok(());
                        }
                        &out
                    }
                }
            }
        };
        framed.clear();
        framed.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        framed.extend_from_slice(reply);
        // A client that stops reading is closed after the write timeout, freeing its slot.
        match daemon::write_all_within(&mut stream, &framed, limits.write_timeout).await {
            Ok(()) => {}
            Err(daemon::WriteError::Io(e)) => break Err(e),
            Err(e @ daemon::WriteError::Timeout(_)) => {
                tracing::debug!(error = %e, "tcp client does not read; closed");
                break Ok(());
            }
        }
        if outcome.rcode == rcode::FORMERR && action == Action::Reply {
            // The stream may be out of step after a malformed message.
            break Ok(());
        }
    };
    counters.flush();
    result
}
