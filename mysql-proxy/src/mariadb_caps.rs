//! MariaDB's extended capabilities: which the proxy offers clients.
//!
//! The proxy relays a backend's replies as they are, so a client may use an extension only
//! if the backend serving it speaks it too. The one offered is the metadata cache
//! (`MARIADB_CLIENT_CACHE_METADATA`, MariaDB 10.6+): a prepared statement's column
//! definitions are sent again only when they change, which saves the server building them
//! and the client parsing them on every execute. The greeting is sent before the client
//! says which database it wants, so the proxy offers the cache only while every backend
//! server it has logged in to offered it (learnt from each login's greeting: sessions,
//! the pool and the primary probes), and not before the first login.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use mysql_common::constants::MariadbCapabilities;

use crate::upstream::{Backend, BackendError};

/// The extensions the proxy can relay: those that change no reply beyond what
/// [`crate::proto::exchange`] follows.
const RELAYED: MariadbCapabilities = MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA;

/// What each backend server offered at its last login.
#[derive(Debug, Default)]
pub struct BackendCaps {
    servers: Mutex<HashMap<SocketAddr, MariadbCapabilities>>,
    /// Every server known offers [`RELAYED`] (and one is known).
    all_cache: AtomicBool,
}

impl BackendCaps {
    /// What the greeting offers now.
    pub fn offered(&self) -> MariadbCapabilities {
        if self.all_cache.load(Ordering::Relaxed) {
            RELAYED
        } else {
            MariadbCapabilities::empty()
        }
    }

    /// Records what the server at `addr` offered in the greeting of this `login`; a
    /// login that failed before learning it changes nothing.
    pub fn note(&self, addr: SocketAddr, login: &Result<Backend, BackendError>) {
        let offered = match login {
            Ok(b) => b.server_mariadb,
            Err(e) => match e.server_mariadb() {
                Some(c) => c,
                None => return,
            },
        };
        let Ok(mut servers) = self.servers.lock() else {
            return;
        };
        if servers.get(&addr) == Some(&offered) {
            return;
        }
        if !offered.contains(RELAYED) {
            tracing::info!(backend = %addr, "backend does not offer MariaDB's metadata cache: clients are no longer offered it");
        }
        servers.insert(addr, offered);
        let all = servers.values().all(|c| c.contains(RELAYED));
        self.all_cache.store(all, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn refused(server: MariadbCapabilities) -> Result<Backend, BackendError> {
        Err(BackendError::Mariadb {
            server,
            wanted: RELAYED,
        })
    }

    #[test]
    fn the_cache_is_offered_only_while_every_known_server_offers_it() {
        let caps = BackendCaps::default();
        assert!(caps.offered().is_empty(), "no server known yet");
        let a: SocketAddr = "127.0.0.1:3306".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:3306".parse().unwrap();
        // A failure that did not get to the greeting teaches nothing.
        caps.note(a, &Err(BackendError::Protocol("x".into())));
        assert!(caps.offered().is_empty());
        caps.note(
            a,
            &refused(RELAYED | MariadbCapabilities::MARIADB_CLIENT_PROGRESS),
        );
        assert_eq!(caps.offered(), RELAYED);
        // A MySQL server (or an older MariaDB) joins: no longer offered.
        caps.note(b, &refused(MariadbCapabilities::empty()));
        assert!(caps.offered().is_empty());
        // It was upgraded.
        caps.note(b, &refused(RELAYED));
        assert_eq!(caps.offered(), RELAYED);
    }
}
