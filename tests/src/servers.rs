//! Real backend servers for end-to-end tests.
//!
//! The harness starts `redis-server`, `memcached` and `mariadbd` from Debian's packages,
//! each on free loopback ports inside its own temporary directory, waits until the server
//! answers on its port, and stops it when the handle is dropped (SIGTERM, a short grace,
//! then SIGKILL to its process group, then `wait`, so no process and no zombie is left
//! behind). A server never outlives its test process either: when the test is killed
//! (SIGKILL, a CI timeout) and no destructor runs, a watchdog process kills the server's
//! process group ([`spawn_guarded`]).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use ocean_tests::servers::{MariaDb, Memcached, RedisCluster, RedisServer};
//! let redis = RedisServer::start().await?;
//! assert!(redis.cmd(&["SET", "k", "v"]).await?.is_ok());
//! let cluster = RedisCluster::start(3, 1).await?;
//! let masters = cluster.master_addrs();
//! let mc = Memcached::start().await?;
//! let db = MariaDb::start().await?;
//! db.exec_sql("CREATE DATABASE app").await?;
//! # let _ = (masters, mc); Ok(()) }
//! ```
//!
//! # Layout
//! - [`process`]: the child process wrapper shared by every server (spawn with a
//!   watchdog, readiness loop, log tail for error messages, stop/kill/pause, restart).
//! - [`resp`]: a tiny RESP2 client ([`RespClient`], [`Resp`]) used to probe Redis and handy in
//!   tests.
//! - [`redis`], [`memcached`], [`mariadb`]: one handle type per server.
//!
//! # Requirements and failure policy
//! The binaries must be installed (`.ci/run` installs them). A missing binary is an error
//! naming the Debian package to install, never a skipped test. Every function here is
//! `async` and needs a tokio runtime; dropping a handle blocks the current thread for at
//! most a few seconds while the process exits.
//!
//! # Ports
//! Ports are chosen by binding `127.0.0.1:0` and releasing the socket just before the
//! server starts, so another process can take the port in between (tests run in
//! parallel). A server that fails to start because its address is in use is retried on
//! fresh ports, a few times.

/// Adds the process controls every server handle shares; the type needs a
/// `process: ServerProcess` field.
macro_rules! impl_process_controls {
    ($ty:ty) => {
        impl $ty {
            /// Pid of the server process (the newest one after a restart).
            pub fn pid(&self) -> u32 {
                self.process.pid()
            }

            /// Whether the server process is still running.
            pub fn is_running(&mut self) -> bool {
                self.process.is_running()
            }

            /// Stops the server: SIGTERM, up to 2 s to exit, then SIGKILL; reaps it.
            /// Does nothing when it is not running. Blocks the calling thread.
            pub fn stop(&mut self) {
                self.process.stop()
            }

            /// Kills the server with SIGKILL at once, like a crash, and reaps it.
            pub fn kill(&mut self) {
                self.process.kill()
            }

            /// Freezes the server with SIGSTOP: connections stay open, nothing is
            /// answered (a hung backend). Undo with `resume`.
            ///
            /// # Errors
            /// When the server is not running or `kill(1)` fails.
            pub fn pause(&mut self) -> anyhow::Result<()> {
                self.process.pause()
            }

            /// Continues a server frozen by `pause`.
            ///
            /// # Errors
            /// When the server is not running or `kill(1)` fails.
            pub fn resume(&mut self) -> anyhow::Result<()> {
                self.process.resume()
            }

            /// The last lines of the server's logs, for assertion messages.
            pub fn log_tail(&self) -> String {
                self.process.log_tail()
            }

            /// The underlying process, for anything else (signals by name).
            pub fn process_mut(&mut self) -> &mut $crate::servers::ServerProcess {
                &mut self.process
            }
        }
    };
}
pub(crate) use impl_process_controls;

pub mod mariadb;
pub mod memcached;
pub mod nutcracker;
pub mod process;
pub mod redis;
pub mod resp;

pub use mariadb::{mariadb_query, MariaDb};
pub use memcached::Memcached;
pub use nutcracker::start_nutcracker;
pub use process::{
    proc_stat, process_group_members, rss_bytes, spawn_guarded, ProcStat, ServerProcess, Watchdog,
};
pub use redis::{RedisCluster, RedisServer};
pub use resp::{Resp, RespClient};

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How many times a server is started on fresh ports when its address turned out to be
/// taken between choosing the port and the server binding it.
pub const START_ATTEMPTS: usize = 5;

/// Directories searched after `PATH`, because daemons such as `mariadbd` live in
/// `/usr/sbin`, which is often not on a non-root `PATH`.
const EXTRA_BIN_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"];

/// Finds the executable `name` on `PATH`, then in `/usr/sbin`, `/usr/bin`, `/sbin`, `/bin`.
///
/// # Errors
/// When it is not found, the error says which Debian package provides it, e.g.
/// `redis-server not found ...: install the Debian package redis-server (apt-get install
/// redis-server)`. Tests treat this as a failure, not a skip.
pub fn find_binary(name: &str, debian_package: &str) -> Result<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let candidates = path_dirs
        .into_iter()
        .chain(EXTRA_BIN_DIRS.iter().map(PathBuf::from));
    for dir in candidates {
        let path = dir.join(name);
        if is_executable(&path) {
            return Ok(path);
        }
    }
    bail!(
        "{name} not found on PATH or in /usr/sbin, /usr/bin: install the Debian package \
         {debian_package} (apt-get install {debian_package})"
    )
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Ports handed out by [`free_port`] in this process, so two servers started at the same
/// moment never get the same one from us (the kernel could still reuse it for a client).
static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// Race: the port is released before the caller's server binds it; callers retry on
/// "address already in use" (see [`START_ATTEMPTS`]). The same port is never returned
/// twice by one process.
///
/// # Errors
/// When binding `127.0.0.1:0` fails or no fresh port turns up after many tries.
pub fn free_port() -> Result<u16> {
    for _ in 0..64 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding 127.0.0.1:0 to find a free port")?;
        let port = listener.local_addr()?.port();
        drop(listener);
        let mut used = HANDED_OUT
            .lock()
            .map_err(|_| anyhow::anyhow!("free port registry poisoned"))?;
        if !used.contains(&port) {
            used.push(port);
            return Ok(port);
        }
    }
    bail!("no fresh free port on 127.0.0.1 after 64 tries")
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Whether this process runs as root (uid 0). Daemons need extra flags then
/// (`memcached -u root`, `mariadbd --user=root`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// Whether a process with this pid exists (zombies count as existing).
pub fn pid_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A temporary directory for one server. Unix socket paths are limited to 107 bytes, so
/// when `TMPDIR` is long the directory goes to `/tmp` instead.
pub(crate) fn server_dir(prefix: &str) -> Result<tempfile::TempDir> {
    let base = std::env::temp_dir();
    let base = if base.as_os_str().len() > 60 {
        PathBuf::from("/tmp")
    } else {
        base
    };
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .with_context(|| format!("creating a temp dir in {}", base.display()))
}

/// Default time a server gets to answer on its port after it was spawned.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(20);
