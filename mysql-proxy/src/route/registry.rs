//! Open sessions: counted per job for limits, closed when a table change moves their
//! database's primary (after `--drain`) or revokes their job (`--kick-revoked`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ocean_core::table::mysql::Access;
use tokio_util::sync::CancellationToken;

use super::{still_placed, Index, PasswordCheck};

/// What the registry knows about one session.
struct Entry {
    job: String,
    database: String,
    access: Access,
    backend: SocketAddr,
    peer: IpAddr,
    closer: Arc<Closer>,
    draining: bool,
}

/// How the proxy closes a session, and why.
#[derive(Default)]
pub struct Closer {
    pub token: CancellationToken,
    pub reason: OnceLock<&'static str>,
}

impl Closer {
    pub fn close(&self, reason: &'static str) {
        // The first reason wins: a session closed twice keeps why it was closed first.
        let _first_reason_wins = self.reason.set(reason);
        self.token.cancel();
    }
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    sessions: HashMap<u64, Entry>,
    per_job: HashMap<String, usize>,
}

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

/// Removes its session from the registry when dropped.
pub struct SessionGuard {
    registry: Arc<Registry>,
    id: u64,
    pub closer: Arc<Closer>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.registry.inner.lock() {
            if let Some(e) = inner.sessions.remove(&self.id) {
                if let Some(n) = inner.per_job.get_mut(&e.job) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        inner.per_job.remove(&e.job);
                    }
                }
            }
        }
    }
}

pub struct NewSession<'a> {
    pub job: &'a str,
    pub database: &'a str,
    pub access: Access,
    pub backend: SocketAddr,
    pub peer: IpAddr,
}

impl Registry {
    /// Registers a session unless its job already has `per_job_limit` (0 = no limit).
    pub fn register(
        self: &Arc<Self>,
        s: NewSession<'_>,
        per_job_limit: usize,
    ) -> Option<SessionGuard> {
        let mut inner = self.inner.lock().ok()?;
        let count = inner.per_job.get(s.job).copied().unwrap_or(0);
        if per_job_limit > 0 && count >= per_job_limit {
            return None;
        }
        *inner.per_job.entry(s.job.to_string()).or_insert(0) += 1;
        inner.next_id += 1;
        let id = inner.next_id;
        let closer = Arc::new(Closer::default());
        inner.sessions.insert(
            id,
            Entry {
                job: s.job.to_string(),
                database: s.database.to_string(),
                access: s.access,
                backend: s.backend,
                peer: s.peer,
                closer: closer.clone(),
                draining: false,
            },
        );
        Some(SessionGuard {
            registry: self.clone(),
            id,
            closer,
        })
    }

    /// Sessions of `job` now.
    pub fn job_sessions(&self, job: &str) -> usize {
        self.inner
            .lock()
            .map(|i| i.per_job.get(job).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// All open sessions.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.sessions.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies a new table to open sessions: sessions whose backend is no longer where
    /// their database lives are closed after `drain`; sessions whose job lost the right to
    /// log in (IP, grant, job gone) are closed at once when `kick_revoked`.
    pub fn sweep(&self, index: &Index, host_ips: &[IpAddr], drain: Duration, kick_revoked: bool) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        for e in inner.sessions.values_mut() {
            if kick_revoked {
                let allowed = index.jobs.get(&e.job).is_some_and(|j| {
                    Index::ip_allowed(j, e.peer, host_ips)
                        && j.grants.contains_key(&e.database)
                        && !matches!(j.password, PasswordCheck::Unparsable)
                });
                if !allowed {
                    tracing::info!(target: "audit", job = %e.job, ip = %e.peer, database = %e.database, result = "closed", reason = "job revoked", "session closed");
                    e.closer.close("job revoked");
                    continue;
                }
            }
            if !e.draining
                && !still_placed(
                    index.databases.get(&e.database).map(|d| &**d),
                    e.access,
                    e.backend,
                )
            {
                e.draining = true;
                tracing::info!(job = %e.job, database = %e.database, backend = %e.backend, drain = ?drain, "database moved: closing session after drain");
                let closer = e.closer.clone();
                if drain.is_zero() {
                    closer.close("database moved");
                } else {
                    tokio::spawn(async move {
                        tokio::select! {
                            () = tokio::time::sleep(drain) => closer.close("database moved"),
                            () = closer.token.cancelled() => {}
                        }
                    });
                }
            }
        }
    }
}
