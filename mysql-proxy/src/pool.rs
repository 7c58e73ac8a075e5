//! Backend connections kept between client sessions (issue 16, first step: reuse).
//!
//! A session that ends at rest (COM_QUIT or the client closing, no command waiting for its
//! response, no transaction open) gives its backend connection back. It is reset
//! (COM_RESET_CONNECTION: user and session variables, temporary tables, prepared
//! statements, locks and the transaction state go; see MySQL's and MariaDB's docs) and put
//! back into its own schema (COM_INIT_DB, since a client may have switched), then kept
//! idle under its [`PoolKey`]. The next login with the same key takes it instead of
//! connecting and authenticating again: the connect-heavy case of short-lived task
//! connections costs the backend a reset, not a login.
//!
//! A connection is only ever shared between sessions that would have logged in exactly the
//! same way: same server, same credentials (a rotated password is a new key), same schema,
//! same negotiated capabilities and collation, same TLS. Connection attributes are those of
//! the session that opened it.
//!
//! Bounds: at most `max_idle` idle connections per key (a database's `pool_max`, default
//! [`DEFAULT_POOL_MAX`]: off; 0 turns reuse off), each closed after `idle_timeout`
//! (`--pool-idle-timeout`). A connection the server closed meanwhile (wait_timeout, a
//! restart) is noticed when taken (readable: EOF or stray bytes) and dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use mysql_common::constants::CapabilityFlags;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::proto::frame::{encode, Decoder, HEADER_LEN};
use crate::upstream::{Backend, BackendStream, ClientParams};
use crate::wire::read_packet;

/// Idle connections kept per key when the table names no `pool_max`: none, reuse is
/// opt-in per database for now (a connection's attributes and server-side thread are the
/// first session's; multiplexing, which will want it on by default, is the next step).
pub const DEFAULT_POOL_MAX: usize = 0;

/// Whether `database`'s sessions are multiplexed: `multiplex = true` and a pool to share.
pub fn multiplexed(database: &ocean_core::table::mysql::MysqlDatabase) -> bool {
    database.multiplex == Some(true) && max_idle(database) > 0
}

/// How many idle connections per key `database` keeps (`pool_max`, else the default).
pub fn max_idle(database: &ocean_core::table::mysql::MysqlDatabase) -> usize {
    database.pool_max.map_or(DEFAULT_POOL_MAX, |n| {
        usize::try_from(n).unwrap_or(usize::MAX)
    })
}

/// COM_RESET_CONNECTION.
const COM_RESET_CONNECTION: u8 = 0x1f;
/// COM_INIT_DB.
const COM_INIT_DB: u8 = 0x02;
/// COM_QUIT.
const COM_QUIT: u8 = 0x01;
/// The longest reply to a reset or COM_INIT_DB read (an OK or ERR packet).
const REPLY_LIMIT: Decoder = Decoder::new(64 * 1024);
/// How long giving a connection back (reset and COM_INIT_DB) may take.
const GIVE_BACK_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything a backend login depends on: connections are shared only within one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The table's database name: series are kept per database.
    pub database: String,
    pub addr: SocketAddr,
    pub user: String,
    /// Part of the key so that a rotated password logs in anew.
    pub password: String,
    pub schema: Option<String>,
    /// The capabilities the session asked the backend for (before the server's mask).
    pub capabilities: u32,
    /// MariaDB's extensions likewise: a connection with the metadata cache leaves out
    /// column definitions that a client without it needs.
    pub mariadb: u32,
    pub collation: u8,
    pub tls: bool,
}

impl PoolKey {
    /// The key of a login for `client`, who was `offered` these capabilities.
    pub fn new(
        database: &str,
        addr: SocketAddr,
        creds: &ocean_core::table::mysql::Credentials,
        schema: Option<&str>,
        client: &ClientParams,
        offered: CapabilityFlags,
        tls: bool,
    ) -> PoolKey {
        PoolKey {
            database: database.to_string(),
            addr,
            user: creds.user.clone(),
            password: creds.password.clone(),
            schema: schema.map(str::to_string),
            // Not CLIENT_LONG_PASSWORD: a client sets it or not by whether its greeting
            // offered MariaDB's extensions (it is MariaDB's "MySQL" bit), and the backend
            // login takes it from the server alone.
            capabilities: ((client.capabilities & offered) - CapabilityFlags::CLIENT_LONG_PASSWORD)
                .bits(),
            mariadb: client.mariadb.bits(),
            collation: client.collation,
            tls,
        }
    }
}

struct Idle {
    backend: Backend,
    since: Instant,
}

/// The idle backend connections of the proxy, by key.
pub struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    idle_timeout: Duration,
    /// Multiplexed checkouts per (database, server, user): `pool_max` permits, so that
    /// however many sessions are open, at most that many connections are busy.
    busy: Mutex<HashMap<BusyGroup, (usize, Arc<Semaphore>)>>,
}

/// (database, server, backend user): the connections one `pool_max` bounds.
type BusyGroup = (String, SocketAddr, String);

/// A multiplexed checkout's right to a connection; dropped when it goes back. Counted in
/// `ocean_mysql_pool_busy{database}` while held.
#[derive(Debug)]
pub struct BusyPermit {
    _permit: OwnedSemaphorePermit,
    busy: metrics::Gauge,
}

impl BusyPermit {
    fn new(permit: OwnedSemaphorePermit, database: &str) -> BusyPermit {
        let busy = crate::metrics::pool_busy(database);
        busy.increment(1.0);
        BusyPermit {
            _permit: permit,
            busy,
        }
    }
}

impl Drop for BusyPermit {
    fn drop(&mut self) {
        self.busy.decrement(1.0);
    }
}

/// What became of a connection given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveBack {
    Kept,
    /// Reuse is off for the database (`pool_max = 0`) or its idle list is full.
    Full,
    /// The reset or COM_INIT_DB failed, or took longer than 2 s.
    ResetFailed,
}

impl GiveBack {
    fn label(self) -> &'static str {
        match self {
            GiveBack::Kept => "kept",
            GiveBack::Full => "full",
            GiveBack::ResetFailed => "reset_failed",
        }
    }
}

impl Pool {
    pub fn new(idle_timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::new(HashMap::new()),
            idle_timeout,
            busy: Mutex::new(HashMap::new()),
        }
    }

    /// Waits up to `wait` for one of the `max` busy slots of `key`'s server and user;
    /// `None` when none came free (the caller answers ERR 1040). A changed `max` (a new
    /// table) starts a new set of slots.
    pub async fn busy_permit(
        &self,
        key: &PoolKey,
        max: usize,
        wait: Duration,
    ) -> Option<BusyPermit> {
        let sem = {
            let mut busy = self.busy.lock().ok()?;
            let group = (key.database.clone(), key.addr, key.user.clone());
            let entry = busy
                .entry(group)
                .or_insert_with(|| (max, Arc::new(Semaphore::new(max))));
            if entry.0 != max {
                *entry = (max, Arc::new(Semaphore::new(max)));
            }
            entry.1.clone()
        };
        match sem.clone().try_acquire_owned() {
            Ok(p) => return Some(BusyPermit::new(p, &key.database)),
            Err(_) => crate::metrics::pool_wait(&key.database),
        }
        let permit = tokio::time::timeout(wait, sem.acquire_owned())
            .await
            .ok()?
            .ok()?;
        Some(BusyPermit::new(permit, &key.database))
    }

    /// Puts a connection a multiplexed session used for plain reads back as it is (its
    /// session state did not change, so no reset), if the key has room.
    pub fn put_clean(&self, key: PoolKey, max_idle: usize, backend: Backend) {
        let database = key.database.clone();
        if !self.keep(key, max_idle, backend) {
            crate::metrics::pool_closed(&database, GiveBack::Full.label(), 1);
        }
        self.idle_gauge(&database);
    }

    /// Keeps `backend` idle under `key` if the key holds fewer than `max_idle`; whether it
    /// did (else it is dropped, closing it).
    fn keep(&self, key: PoolKey, max_idle: usize, backend: Backend) -> bool {
        let Ok(mut idle) = self.idle.lock() else {
            return false;
        };
        let list = idle.entry(key).or_default();
        if list.len() >= max_idle {
            return false;
        }
        list.push(Idle {
            backend,
            since: Instant::now(),
        });
        true
    }

    /// An idle connection of `key`, the most recently used first; `None` when there is
    /// none alive.
    pub fn take(&self, key: &PoolKey) -> Option<Backend> {
        let now = Instant::now();
        let mut dropped = 0u64;
        let found = {
            let Ok(mut idle) = self.idle.lock() else {
                return None;
            };
            let list = idle.get_mut(key)?;
            let mut found = None;
            while let Some(c) = list.pop() {
                if now.duration_since(c.since) < self.idle_timeout && alive(&c.backend.stream) {
                    found = Some(c.backend);
                    break;
                }
                dropped += 1;
            }
            if list.is_empty() {
                idle.remove(key);
            }
            found
        };
        self.idle_gauge(&key.database);
        if dropped > 0 {
            crate::metrics::pool_closed(&key.database, "stale", dropped);
        }
        found
    }

    /// Resets `backend` and keeps it under `key` if the key has room for it (`max_idle`).
    pub async fn give_back(&self, key: PoolKey, max_idle: usize, mut backend: Backend) -> GiveBack {
        let room = max_idle > 0
            && self
                .idle
                .lock()
                .map(|idle| idle.get(&key).map_or(0, Vec::len) < max_idle)
                .unwrap_or(false);
        let result = if !room {
            quit(&mut backend.stream).await;
            GiveBack::Full
        } else {
            let reset = tokio::time::timeout(
                GIVE_BACK_TIMEOUT,
                reset(&mut backend.stream, key.schema.as_deref()),
            )
            .await;
            match reset {
                Ok(Ok(ok)) => {
                    backend.ok = ok;
                    // Another session may have filled the list during the reset.
                    if self.keep(key.clone(), max_idle, backend) {
                        GiveBack::Kept
                    } else {
                        GiveBack::Full
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(backend = %key.addr, error = %e, "pool: reset failed, connection closed");
                    GiveBack::ResetFailed
                }
                Err(_) => GiveBack::ResetFailed,
            }
        };
        if result != GiveBack::Kept {
            crate::metrics::pool_closed(&key.database, result.label(), 1);
        }
        self.idle_gauge(&key.database);
        result
    }

    /// Closes the connections idle for longer than the idle timeout.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.close_idle("idle", |_, c| {
            now.duration_since(c.since) < self.idle_timeout
        });
    }

    /// Closes the idle connections whose key `keep` refuses: a new table (or a new primary
    /// found by discovery) no longer routes there.
    pub fn retain(&self, mut keep: impl FnMut(&PoolKey) -> bool) {
        self.close_idle("unrouted", |key, _| keep(key));
    }

    /// Closes the idle connections `keep` refuses, counted under `reason`.
    fn close_idle(&self, reason: &'static str, mut keep: impl FnMut(&PoolKey, &Idle) -> bool) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let mut closed: HashMap<String, u64> = HashMap::new();
        idle.retain(|key, list| {
            let before = list.len();
            list.retain(|c| keep(key, c));
            let gone = before - list.len();
            if gone > 0 {
                *closed.entry(key.database.clone()).or_default() += gone as u64;
            }
            !list.is_empty()
        });
        drop(idle);
        for (database, n) in closed {
            crate::metrics::pool_closed(&database, reason, n);
            self.idle_gauge(&database);
        }
    }

    /// Idle connections of `database`, every server and key.
    pub fn idle_count(&self, database: &str) -> usize {
        self.idle
            .lock()
            .map(|idle| {
                idle.iter()
                    .filter(|(k, _)| k.database == database)
                    .map(|(_, l)| l.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    fn idle_gauge(&self, database: &str) {
        crate::metrics::pool_idle(database, self.idle_count(database));
    }
}

/// Whether an idle connection is still open: nothing to read (no EOF, no stray bytes).
fn alive(stream: &BackendStream) -> bool {
    let tcp = match stream {
        BackendStream::Plain(s) => s,
        BackendStream::Tls(s) => s.get_ref().0,
    };
    let mut probe = [0u8; 1];
    matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// COM_RESET_CONNECTION, then COM_INIT_DB into `schema`; the reset's OK payload.
async fn reset(stream: &mut BackendStream, schema: Option<&str>) -> Result<Vec<u8>, String> {
    match stream {
        BackendStream::Plain(s) => reset_on(s, schema).await,
        BackendStream::Tls(s) => reset_on(s.as_mut(), schema).await,
    }
}

/// Both commands go out in one write (the server answers them in order): one round trip.
async fn reset_on<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    schema: Option<&str>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(64);
    encode(0, &[COM_RESET_CONNECTION], &mut out);
    if let Some(schema) = schema {
        let mut init = Vec::with_capacity(schema.len() + 1);
        init.push(COM_INIT_DB);
        init.extend_from_slice(schema.as_bytes());
        encode(0, &init, &mut out);
    }
    s.write_all(&out).await.map_err(|e| format!("write: {e}"))?;
    s.flush().await.map_err(|e| format!("write: {e}"))?;
    let ok = read_ok(s).await?;
    if schema.is_some() {
        read_ok(s).await?;
    }
    Ok(ok)
}

/// Reads one reply: an OK payload, or the ERR (anything else) as an error.
async fn read_ok<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, String> {
    let reply = read_packet(s, REPLY_LIMIT)
        .await
        .map_err(|e| format!("read: {e}"))?;
    match reply.payload.first() {
        Some(0x00) => Ok(reply.payload.to_vec()),
        Some(0xff) => {
            let err = crate::proto::reply::parse_err(&reply.payload);
            Err(format!("{} {}", err.code, err.message))
        }
        other => Err(format!("unexpected reply starting {other:?}")),
    }
}

/// COM_QUIT, best effort: the server then closes without logging an aborted connection.
pub async fn quit(stream: &mut BackendStream) {
    const QUIT_TIMEOUT: Duration = Duration::from_secs(1);
    let mut packet = Vec::with_capacity(HEADER_LEN + 1);
    encode(0, &[COM_QUIT], &mut packet);
    let _best_effort = tokio::time::timeout(QUIT_TIMEOUT, stream.send(&packet)).await;
}
