//! Multiplexed sessions (`multiplex = true` with `pool_max`, issue 16): between commands a
//! session holds no backend connection. Each command that cannot change the session's
//! state on the server (a plain `SELECT`, see [`plain_read`]) takes a connection of the
//! pool (waiting up to `--pool-wait` when all `pool_max` of its server are busy, then ERR
//! 1040), runs, and gives it back as it is. The first command that could change state
//! (anything else: a write, `SET`, `BEGIN`, `USE`, a prepared statement, a user variable,
//! `GET_LOCK` ...) **pins** the session: it keeps that connection to its end, relayed as an
//! unmultiplexed session is.
//!
//! Deciding from the SQL text is conservative on purpose: a statement the check does not
//! know to be harmless pins. The server's session-state tracking would let more sessions
//! stay shared, but not every client negotiates `CLIENT_SESSION_TRACK` (mysql_async does
//! not), and its OK packets would have to be rewritten for those.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use mysql_common::constants::CapabilityFlags;
use ocean_core::daemon::write_all_within;
use ocean_core::drain::{DrainWatch, Read};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pinning::{plain_read, PinReason};
use super::relay::{Counters, End, Timeouts};
use super::Shared;
use crate::pool::{BusyPermit, PoolKey};
use crate::proto::command::{COM_PING, COM_QUERY, COM_QUIT};
use crate::proto::exchange::Exchange;
use crate::proto::frame::HEADER_LEN;
use crate::proto::reply::{err_payload, ok_payload};
use crate::upstream::{self, Backend, ClientParams};
use crate::wire::write_packet_within;
use ocean_core::table::mysql::Credentials;

/// Largest command read whole while multiplexing; a longer one pins the session.
const PACKET_LIMIT: usize = 64 * 1024;

/// How a multiplexed session opens a backend connection: what its login would send.
pub(super) struct Opener {
    pub(super) shared: Arc<Shared>,
    pub(super) key: PoolKey,
    pub(super) creds: Credentials,
    pub(super) params: ClientParams,
    pub(super) offered: CapabilityFlags,
    /// What the client and the proxy negotiated (the proxy's own OK to a COM_PING).
    pub(super) client_caps: CapabilityFlags,
    /// Idle connections kept per key, and busy ones per server (`pool_max`).
    pub(super) max: usize,
}

/// The error a command is answered with when it gets no connection (code, SQLSTATE,
/// message).
type NoConnection = (u16, &'static [u8; 5], &'static str);

impl Opener {
    /// A connection for one command: pooled, or a new login while fewer than `max` are
    /// busy; else the error to answer the command with.
    async fn checkout(&self) -> Result<(Backend, BusyPermit), NoConnection> {
        let config = &self.shared.config;
        let Some(permit) = self
            .shared
            .pool
            .busy_permit(&self.key, self.max, config.pool_wait)
            .await
        else {
            // Every connection of the server stayed busy for --pool-wait.
            return Err((1040, b"08004", "Too many connections"));
        };
        if let Some(b) = self.shared.pool.take(&self.key) {
            return Ok((b, permit));
        }
        let started = Instant::now();
        let login = upstream::login(
            self.key.addr,
            &self.creds,
            self.key.schema.as_deref(),
            &self.params,
            self.offered,
            self.shared.backend_tls.as_ref(),
        );
        let login = tokio::time::timeout(config.connect_timeout, login).await;
        if let Ok(result) = &login {
            self.shared.backend_caps.note(self.key.addr, result);
        }
        let error = match login {
            Ok(Ok(b)) => {
                // A backend login as a client's is (pool_logins_total counts client logins).
                crate::metrics::backend_login(&self.key.database, started.elapsed());
                return Ok((b, permit));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "backend login timed out".into(),
        };
        tracing::warn!(database = %self.key.database, backend = %self.key.addr, %error, "backend login failed");
        Err((
            1429,
            b"HY000",
            "ocean: cannot reach the database (see the proxy's log)",
        ))
    }

    /// Gives back a connection whose session state no command changed.
    fn give_back(&self, backend: Backend, permit: BusyPermit) {
        self.shared
            .pool
            .put_clean(self.key.clone(), self.max, backend);
        drop(permit);
    }
}

/// How the multiplexed part of a session ended.
pub(super) enum Outcome {
    /// The session is over.
    Ended(End),
    /// The session keeps a connection from now on.
    Pinned(Box<Pinned>),
}

/// A pinned session's connection: relay it with `exchange`, starting with the client bytes
/// in `pending` (not yet sent to the backend).
pub(super) struct Pinned {
    pub(super) backend: Backend,
    pub(super) permit: BusyPermit,
    pub(super) exchange: Exchange,
    pub(super) pending: BytesMut,
}

/// Serves the session's commands one at a time on pooled connections until it ends or
/// pins.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run<CR, CW>(
    client_r: &mut CR,
    client_w: &mut CW,
    opener: &Opener,
    counters: &Counters,
    timeouts: Timeouts,
    cancel: &CancellationToken,
    drain: &mut DrainWatch,
    deprecate_eof: bool,
) -> Outcome
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        // One whole command packet (or the header of one too long to hold).
        let (len, seq) = loop {
            if let Some(&[a, b, c, seq]) = buf.get(..HEADER_LEN) {
                let len = usize::from(a) | usize::from(b) << 8 | usize::from(c) << 16;
                if buf.len() >= HEADER_LEN + len || len > PACKET_LIMIT {
                    break (len, seq);
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096);
            }
            let idle = timeouts.idle.filter(|d| !d.is_zero());
            let at_boundary = buf.is_empty();
            let read = async {
                match idle {
                    Some(limit) => tokio::time::timeout(limit, client_r.read_buf(&mut buf))
                        .await
                        .unwrap_or_else(|_| {
                            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle"))
                        }),
                    None => client_r.read_buf(&mut buf).await,
                }
            };
            let r = tokio::select! {
                r = drain.read(at_boundary, read) => r,
                () = cancel.cancelled() => return Outcome::Ended(End::Kicked),
            };
            match r {
                Read::Done(Ok(0)) => return Outcome::Ended(End::ClientClosed),
                Read::Done(Ok(n)) => counters.to_backend.increment(n as u64),
                Read::Done(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Outcome::Ended(End::Idle)
                }
                Read::Done(Err(e)) => return Outcome::Ended(End::ClientError(e)),
                Read::Again => {}
                Read::Stop => return Outcome::Ended(End::Drained),
            }
        };
        let whole = len <= PACKET_LIMIT;
        // An empty packet has no command byte (what follows is the next packet's).
        let command = if len > 0 {
            buf.get(HEADER_LEN).copied()
        } else {
            None
        };
        match command {
            Some(COM_QUIT) if whole => return Outcome::Ended(End::ClientQuit),
            Some(COM_PING) if whole => {
                buf.advance(HEADER_LEN + len);
                let ok = ok_payload(opener.client_caps);
                let written =
                    write_packet_within(client_w, seq.wrapping_add(1), &ok, timeouts.write).await;
                if let Err(e) = written {
                    return Outcome::Ended(End::ClientError(std::io::Error::other(e.to_string())));
                }
                continue;
            }
            _ => {}
        }
        let shared_read = whole
            && command == Some(COM_QUERY)
            && buf
                .get(HEADER_LEN + 1..HEADER_LEN + len)
                .is_some_and(plain_read);
        // Everything else pins: the relay takes the session from here, this command first.
        let (mut backend, permit) = match opener.checkout().await {
            Ok(got) => got,
            Err((code, state, message)) => {
                if !whole {
                    return Outcome::Ended(End::Kicked);
                }
                buf.advance(HEADER_LEN + len);
                let err = err_payload(code, state, message);
                let written =
                    write_packet_within(client_w, seq.wrapping_add(1), &err, timeouts.write).await;
                if written.is_err() {
                    return Outcome::Ended(End::ClientClosed);
                }
                continue;
            }
        };
        if !shared_read {
            let reason = match (whole, command) {
                (false, _) => PinReason::LargePacket,
                (true, Some(command)) => {
                    let body = buf.get(HEADER_LEN + 1..HEADER_LEN + len).unwrap_or(&[]);
                    PinReason::of_command(command, body)
                }
                // An empty packet: the server answers it.
                (true, None) => PinReason::Command,
            };
            counters.queries.pinned(reason);
            return Outcome::Pinned(Box::new(Pinned {
                backend,
                permit,
                exchange: Exchange::new(deprecate_eof),
                pending: buf,
            }));
        }
        // A plain read on a pooled connection.
        let packet = buf.split_to(HEADER_LEN + len);
        let mut x = Exchange::new(deprecate_eof);
        x.client_sent(&packet);
        let started = Instant::now();
        if let Err(e) = backend.stream.send(&packet).await {
            return Outcome::Ended(End::BackendError(e));
        }
        let mut reply = BytesMut::with_capacity(16 * 1024);
        while x.awaiting().is_some() {
            reply.clear();
            if reply.capacity() < 4096 {
                reply.reserve(16 * 1024);
            }
            let n = tokio::select! {
                r = backend.stream.read_buf(&mut reply) => r,
                () = cancel.cancelled() => return Outcome::Ended(End::Kicked),
            };
            match n {
                Ok(0) => return Outcome::Ended(End::BackendClosed),
                Ok(n) => counters.to_client.increment(n as u64),
                Err(e) => return Outcome::Ended(End::BackendError(e)),
            }
            if let Err(e) = write_all_within(client_w, &reply, timeouts.write).await {
                return Outcome::Ended(End::from_write(e));
            }
            x.server_sent(&reply);
        }
        counters
            .queries
            .record(COM_QUERY, started.elapsed(), x.failed());
        if x.lost() || x.in_transaction() || !x.at_rest() {
            // The server said more than a plain read should: keep the connection.
            let reason = if x.in_transaction() {
                PinReason::Transaction
            } else {
                PinReason::Lost
            };
            counters.queries.pinned(reason);
            return Outcome::Pinned(Box::new(Pinned {
                backend,
                permit,
                exchange: x,
                pending: buf,
            }));
        }
        opener.give_back(backend, permit);
    }
}
