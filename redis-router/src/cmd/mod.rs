//! What to do with each command: the command layer behind [`crate::connection`].
//!
//! [`Session`] is one client's command state (authenticated or not, its name, its id) and
//! implements [`Handler`]: [`Session::dispatch`] looks the command up in
//! [`crate::command`] and sends it down one of the paths below.
//!
//! - single-slot and keyless commands: [`Client::forward`] (batched per node);
//! - `local`: answered by the router;
//! - `multikey`: split by slot and merged;
//! - `cluster_wide`: every master;
//! - `blocking`, `transaction`, `pubsub`: stateful modes on a dedicated connection.

mod blocking;
mod cluster_wide;
mod local;
mod multikey;
mod pubsub;
mod transaction;

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncRead;

use crate::command::{self, Flags, Split};
use crate::connection::{Client, Flow, Handler};
use crate::metrics::Family;
use crate::proto::{err_reply, Request};
use crate::route::{self, Target};
use crate::upstream::{BackendError, Lease};
use blocking::is_blocking;

/// One client's command state.
#[derive(Debug)]
pub struct Session {
    /// The client's id (`CLIENT ID`, `HELLO`).
    id: u64,
    /// Whether the client may run commands (no `--password`, or `AUTH` done).
    authed: bool,
    /// `CLIENT SETNAME`.
    name: Option<Bytes>,
    /// The last slot picked for a keyless command.
    any: u16,
}

impl Session {
    /// A new client's state: authenticated when no password is set.
    pub fn new(id: u64, authed: bool) -> Session {
        Session {
            id,
            authed,
            name: None,
            any: 0,
        }
    }

    /// Some slot, spread over the cluster, for keyless commands.
    fn any_slot(&mut self) -> u16 {
        self.any = (self.any.wrapping_add(4099)) % crate::slot::SLOTS;
        self.any
    }

    /// Sends one request down its path.
    pub async fn dispatch<R: AsyncRead + Unpin + Send>(
        &mut self,
        c: &mut Client<R>,
        req: Request,
    ) -> Flow {
        let Some(spec) = command::lookup(req.name()) else {
            if !self.authed {
                c.ready(err_reply("NOAUTH Authentication required.")).await;
                return Flow::Continue;
            }
            // Unknown to us: the backend's own error (or a newer command) is the answer.
            let slot = self.any_slot();
            c.forward(&req, Target::Slot(slot), Family::Other, false)
                .await;
            return Flow::Continue;
        };
        if !self.authed && !matches!(spec.name, "auth" | "hello" | "quit") {
            c.ready(err_reply("NOAUTH Authentication required.")).await;
            return Flow::Continue;
        }
        if spec.flags.contains(Flags::PROXY) {
            return self.local(c, spec, req).await;
        }
        let family = Family::of(spec);
        let keys = match command::keys_for(spec, &req.args) {
            Ok(k) => k,
            Err(e) => {
                c.ready(err_reply(&e.to_string())).await;
                return Flow::Continue;
            }
        };
        let slot = match c
            .shared
            .cluster
            .with_placement(|p| command::same_slot(keys.clone(), p))
        {
            Ok(s) => s,
            Err(cross) if spec.split == Split::SameSlot => {
                c.ready(err_reply(&cross.to_string())).await;
                return Flow::Continue;
            }
            Err(_) => {
                self.split(c, spec, &req, family).await;
                return Flow::Continue;
            }
        };
        if spec.flags.contains(Flags::TRANSACTION) {
            return self.transaction(c, req).await;
        }
        if spec.flags.contains(Flags::PUBSUB) {
            match spec.name {
                "subscribe" | "psubscribe" | "ssubscribe" => {
                    return self.pubsub(c, req, slot).await;
                }
                _ => {
                    let s = slot
                        .or_else(|| req.args.get(1).map(|k| c.shared.cluster.slot_of(k)))
                        .unwrap_or(0);
                    c.forward(
                        &req,
                        Target::Slot(s),
                        family,
                        spec.flags.contains(Flags::READONLY),
                    )
                    .await;
                    return Flow::Continue;
                }
            }
        }
        if spec.flags.contains(Flags::BLOCKING) && is_blocking(spec, &req) {
            let s = match slot {
                Some(s) => s,
                None => self.any_slot(),
            };
            return self.blocking(c, req, s).await;
        }
        if spec.flags.contains(Flags::ALL_NODES) {
            return self.cluster_wide(c, spec, req, family).await;
        }
        if spec.flags.contains(Flags::ADMIN) {
            c.ready(err_reply(&format!(
                "ERR command '{}' is not available through the router",
                spec.name
            )))
            .await;
            return Flow::Continue;
        }
        let s = match slot {
            Some(s) => s,
            None => self.any_slot(),
        };
        c.forward(
            &req,
            Target::Slot(s),
            family,
            spec.flags.contains(Flags::READONLY),
        )
        .await;
        Flow::Continue
    }

    fn node_for<R: AsyncRead + Unpin + Send>(
        &mut self,
        c: &mut Client<R>,
        slot: Option<u16>,
    ) -> Option<Arc<crate::upstream::Node>> {
        let s = match slot {
            Some(s) => s,
            None => self.any_slot(),
        };
        c.shared.cluster.with_slot(s, |n| n.cloned())
    }

    async fn lease<R: AsyncRead + Unpin + Send>(
        &mut self,
        c: &mut Client<R>,
        slot: Option<u16>,
    ) -> Result<Lease, Bytes> {
        let Some(node) = self.node_for(c, slot) else {
            c.shared.cluster.request_refresh();
            return Err(route::error_reply(&BackendError::Unserved));
        };
        let proto = c.proto;
        c.shared
            .cluster
            .lease(node, proto)
            .await
            .map_err(|e| route::error_reply(&e))
    }
}

impl<R: AsyncRead + Unpin + Send> Handler<R> for Session {
    async fn handle(&mut self, client: &mut Client<R>, req: Request) -> Flow {
        self.dispatch(client, req).await
    }
}

fn lower(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_lowercase()
}

/// For tests and the benchmark: the family of a command name.
pub fn family_of(name: &[u8]) -> Option<Family> {
    command::lookup(name).map(Family::of)
}
