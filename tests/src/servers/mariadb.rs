//! `mariadbd` with a fresh datadir, its `mariadb` client, and primary/replica pairs.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::process::{NotReady, ServerProcess};
use super::{find_binary, free_port, is_root, loopback, server_dir, READY_TIMEOUT, START_ATTEMPTS};

/// Longest a `mariadb` client or `mariadb-install-db` run may take.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`MariaDb::sync_with`] waits for a replica to catch up.
pub const REPLICA_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// User and password a replica logs in to its primary with.
const REPL_USER: &str = "ocean_repl";
const REPL_PASSWORD: &str = "ocean_repl";

/// Unix socket paths longer than this do not fit `sockaddr_un`.
const MAX_SOCKET_PATH: usize = 107;

/// Server ids handed out in this process; every server gets its own, so any of them can
/// be a primary of any other.
static NEXT_SERVER_ID: AtomicU32 = AtomicU32::new(1);

/// A `mariadbd` on 127.0.0.1 with its own datadir in a temp dir.
///
/// The datadir is made by `mariadb-install-db --auth-root-authentication-method=normal
/// --skip-test-db`, so `root@localhost` has no password; the server runs with grant
/// tables (so tests can create users and grants), `--skip-name-resolve` (grant to
/// `'user'@'127.0.0.1'` or `'user'@'%'`), `utf8mb4`, small InnoDB buffers and no fsync,
/// and the binary log on (`--log-bin --binlog-format=ROW`, a unique `--server-id`) so any
/// server can be a primary for [`start_replica_of`](Self::start_replica_of).
///
/// Dropping it stops the server (SIGTERM, then SIGKILL after 2 s) and removes the datadir.
#[derive(Debug)]
pub struct MariaDb {
    // Field order matters: the process is stopped before its directory is removed.
    process: ServerProcess,
    addr: SocketAddr,
    socket: PathBuf,
    server_id: u32,
    replica: bool,
    dir: TempDir,
}

impl MariaDb {
    /// Initialises a datadir, starts `mariadbd` on a free port and waits until it sends
    /// its greeting on TCP and its unix socket exists (about a second).
    ///
    /// # Errors
    /// When `mariadbd`, `mariadb-install-db` (package mariadb-server) or `mariadb`
    /// (package mariadb-client) is not installed, the datadir cannot be initialised, or
    /// the server does not become ready within 20 s (the error quotes its error log).
    pub async fn start() -> Result<Self> {
        Self::start_inner(false).await
    }

    /// Starts a new server as a read-only replica (`--read-only`) of `primary`:
    /// creates the replication user on the primary if needed, runs `CHANGE MASTER TO ...
    /// MASTER_USE_GTID=slave_pos; START SLAVE` and waits until the replica has applied
    /// everything in the primary's binary log, users and grants included.
    ///
    /// Root (and the replication thread) can still write on the replica; other users
    /// cannot. Writes on the primary reach the replica asynchronously: call
    /// [`sync_with`](Self::sync_with) before reading them there.
    ///
    /// # Errors
    /// As [`start`](Self::start), or when replication does not start or catch up.
    pub async fn start_replica_of(primary: &MariaDb) -> Result<Self> {
        primary
            .exec_sql(&format!(
                "CREATE USER IF NOT EXISTS '{REPL_USER}'@'127.0.0.1' IDENTIFIED BY '{REPL_PASSWORD}'; \
                 GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'127.0.0.1'"
            ))
            .await
            .context("creating the replication user on the primary")?;
        let replica = Self::start_inner(true).await?;
        replica
            .exec_sql(&format!(
                "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, \
                 MASTER_USER='{REPL_USER}', MASTER_PASSWORD='{REPL_PASSWORD}', \
                 MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE",
                primary.addr.port()
            ))
            .await
            .context("starting replication")?;
        replica.sync_with(primary).await?;
        Ok(replica)
    }

    async fn start_inner(replica: bool) -> Result<Self> {
        let mariadbd = find_binary("mariadbd", "mariadb-server")?;
        let install_db = find_binary("mariadb-install-db", "mariadb-server")?;
        // The client is needed by exec_sql; fail now rather than in the middle of a test.
        find_binary("mariadb", "mariadb-client")?;

        let dir = server_dir("ocean-mariadb-")?;
        let data = dir.path().join("data");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).context("creating the mariadb tmpdir")?;
        let socket = dir.path().join("mysql.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "socket path {} is longer than {MAX_SOCKET_PATH} bytes: set TMPDIR shorter",
                socket.display()
            );
        }
        install_datadir(&install_db, &data, &tmp, dir.path()).await?;

        let server_id = NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed);
        let error_log = dir.path().join("error.log");
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let addr = loopback(port);
            let mut args: Vec<OsString> = vec![
                // --no-defaults must come first: no /etc/mysql config is read.
                "--no-defaults".into(),
                path_arg("--datadir=", &data),
                path_arg("--socket=", &socket),
                format!("--port={port}").into(),
                "--bind-address=127.0.0.1".into(),
                path_arg("--pid-file=", &dir.path().join("mariadbd.pid")),
                path_arg("--log-error=", &error_log),
                path_arg("--tmpdir=", &tmp),
                format!("--server-id={server_id}").into(),
                "--log-bin=mysql-bin".into(),
                "--binlog-format=ROW".into(),
                "--skip-name-resolve".into(),
                "--character-set-server=utf8mb4".into(),
                "--collation-server=utf8mb4_general_ci".into(),
                "--performance-schema=OFF".into(),
                "--innodb-buffer-pool-size=16M".into(),
                "--innodb-log-file-size=4M".into(),
                "--innodb-flush-log-at-trx-commit=0".into(),
                "--innodb-doublewrite=0".into(),
                // io_uring/libaio need locked memory that parallel servers can exhaust.
                "--innodb-use-native-aio=0".into(),
                "--max-connections=500".into(),
            ];
            if replica {
                args.push("--read-only".into());
                args.push("--relay-log=relay-bin".into());
            }
            if is_root() {
                // mariadbd refuses to run as root unless told to.
                args.push("--user=root".into());
            }
            let mut process = ServerProcess::spawn(
                format!("mariadbd {addr}"),
                mariadbd.clone(),
                args,
                dir.path(),
                dir.path().join("mariadbd.out"),
                vec![error_log.clone()],
            )?;
            match wait_mariadb_ready(&mut process, addr, &socket).await {
                Ok(()) => {
                    return Ok(MariaDb {
                        process,
                        addr,
                        socket,
                        server_id,
                        replica,
                        dir,
                    })
                }
                Err(NotReady::AddrInUse(e)) => last = Some(e),
                Err(NotReady::Failed(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("mariadbd: no start attempt made")))
    }

    /// The TCP address (`127.0.0.1:port`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The unix socket root can log in on without a password.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// This server's `server_id`, unique among servers this process started.
    pub fn server_id(&self) -> u32 {
        self.server_id
    }

    /// Whether this server was started by [`start_replica_of`](Self::start_replica_of).
    pub fn is_replica(&self) -> bool {
        self.replica
    }

    /// The server's temp directory: `data/`, `error.log`, `mysql.sock`, ...
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `sql` (one or more `;`-separated statements) as root over the unix socket with
    /// `mariadb -N -B -e`, and returns stdout without its final newline: one line per
    /// row, columns separated by tabs, no header.
    ///
    /// # Errors
    /// When the client fails; the error quotes its stderr, e.g. `ERROR 1064 (42000)`.
    pub async fn exec_sql(&self, sql: &str) -> Result<String> {
        let mut args: Vec<OsString> = vec![
            "--no-defaults".into(),
            "--protocol=SOCKET".into(),
            path_arg("--socket=", &self.socket),
            "--user=root".into(),
        ];
        args.extend(["-N", "-B", "-e"].map(OsString::from));
        args.push(sql.into());
        run_client(&args, sql).await
    }

    /// Waits until this replica has applied everything `primary` had written to its
    /// binary log when this was called (`MASTER_GTID_WAIT` on `@@gtid_binlog_pos`).
    ///
    /// # Errors
    /// When replication is broken or does not catch up within 30 s; the error quotes
    /// `SHOW SLAVE STATUS`.
    pub async fn sync_with(&self, primary: &MariaDb) -> Result<()> {
        let pos = primary.exec_sql("SELECT @@GLOBAL.gtid_binlog_pos").await?;
        if pos.is_empty() {
            return Ok(());
        }
        let waited = self
            .exec_sql(&format!(
                "SELECT MASTER_GTID_WAIT('{pos}', {})",
                REPLICA_SYNC_TIMEOUT.as_secs()
            ))
            .await?;
        if waited != "0" {
            let status = self
                .exec_sql("SHOW SLAVE STATUS\\G")
                .await
                .unwrap_or_else(|e| format!("(SHOW SLAVE STATUS failed: {e:#})"));
            bail!(
                "replica {} did not reach primary {} position {pos} within {REPLICA_SYNC_TIMEOUT:?}:\n{status}",
                self.addr,
                primary.addr
            );
        }
        Ok(())
    }

    /// Starts the server again on the same port and datadir after [`stop`](Self::stop) or
    /// [`kill`](Self::kill); a replica resumes replicating.
    ///
    /// # Errors
    /// When it is still running or does not come back (its port may have been taken).
    pub async fn restart(&mut self) -> Result<()> {
        self.process.respawn()?;
        wait_mariadb_ready(&mut self.process, self.addr, &self.socket)
            .await
            .map_err(NotReady::into_error)
    }

    /// [`restart`](Self::restart) with `extra` server options added (kept for later
    /// restarts): for settings mariadbd reads only at start, such as `--ssl-cert`.
    ///
    /// # Errors
    /// As [`restart`](Self::restart).
    pub async fn restart_with(&mut self, extra: &[OsString]) -> Result<()> {
        self.process.respawn_with_args(extra)?;
        wait_mariadb_ready(&mut self.process, self.addr, &self.socket)
            .await
            .map_err(NotReady::into_error)
    }
}

super::impl_process_controls!(MariaDb);

/// Runs the `mariadb` client over TCP as `user` and returns stdout as
/// [`MariaDb::exec_sql`] does. Point it at a server or at a MySQL proxy under test: it is
/// a real client, so it checks the proxy's handshake and packets. `password` empty means
/// none is sent; `database` is the default schema (`-D`). SSL is off (`--skip-ssl`).
///
/// # Errors
/// When login or a statement fails; the error quotes stderr, e.g.
/// `ERROR 1045 (28000): Access denied for user ...`.
pub async fn mariadb_query(
    addr: SocketAddr,
    user: &str,
    password: &str,
    database: Option<&str>,
    sql: &str,
) -> Result<String> {
    let mut args: Vec<OsString> = vec![
        "--no-defaults".into(),
        "--protocol=TCP".into(),
        format!("--host={}", addr.ip()).into(),
        format!("--port={}", addr.port()).into(),
        format!("--user={user}").into(),
        "--skip-ssl".into(),
        "--connect-timeout=10".into(),
    ];
    if !password.is_empty() {
        args.push(format!("--password={password}").into());
    }
    if let Some(db) = database {
        args.push(format!("--database={db}").into());
    }
    args.extend(["-N", "-B", "-e"].map(OsString::from));
    args.push(sql.into());
    run_client(&args, sql).await
}

fn path_arg(flag: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(flag);
    arg.push(path.as_os_str());
    arg
}

async fn run_client(args: &[OsString], sql: &str) -> Result<String> {
    let client = find_binary("mariadb", "mariadb-client")?;
    let output = tokio::time::timeout(
        CLIENT_TIMEOUT,
        tokio::process::Command::new(client)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow!("mariadb -e {sql:?} timed out after {CLIENT_TIMEOUT:?}"))?
    .context("running mariadb")?;
    if !output.status.success() {
        bail!(
            "mariadb -e {sql:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let mut out = String::from_utf8(output.stdout).context("mariadb printed non-UTF-8")?;
    if out.ends_with('\n') {
        out.pop();
    }
    Ok(out)
}

/// Runs `mariadb-install-db`. Its own `--tmpdir` matters: bootstraps running in parallel
/// with the shared `/tmp` collide on temporary table names and fail with
/// `ERROR: 1051 Unknown table 'mysql.tmp_user_sys'`.
async fn install_datadir(install_db: &Path, data: &Path, tmp: &Path, dir: &Path) -> Result<()> {
    let mut cmd = tokio::process::Command::new(install_db);
    cmd.arg("--no-defaults")
        .arg(path_arg("--datadir=", data))
        .arg(path_arg("--tmpdir=", tmp))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg("--skip-name-resolve")
        .arg("--innodb-buffer-pool-size=16M")
        .arg("--innodb-log-file-size=4M")
        .arg("--innodb-use-native-aio=0")
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if is_root() {
        cmd.arg("--user=root");
    }
    let output = tokio::time::timeout(CLIENT_TIMEOUT, cmd.output())
        .await
        .map_err(|_| anyhow!("mariadb-install-db timed out after {CLIENT_TIMEOUT:?}"))?
        .context("running mariadb-install-db")?;
    if !output.status.success() {
        bail!(
            "mariadb-install-db --datadir={} failed with {}:\n{}{}",
            data.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

async fn wait_mariadb_ready(
    process: &mut ServerProcess,
    addr: SocketAddr,
    socket: &Path,
) -> Result<(), NotReady> {
    let socket = socket.to_path_buf();
    process
        .wait_ready(READY_TIMEOUT, move || {
            let socket = socket.clone();
            async move {
                read_greeting(addr).await?;
                if !socket.exists() {
                    bail!("{} not created yet", socket.display());
                }
                Ok(())
            }
        })
        .await
}

/// Connects and reads the server's first packet: a handshake (protocol 10) means ready;
/// an ERR packet (0xff) is reported with its message.
async fn read_greeting(addr: SocketAddr) -> Result<()> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let mut header = [0u8; 4];
    stream
        .read_exact(&mut header)
        .await
        .context("reading the greeting header")?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut payload = vec![0u8; len.min(1024)];
    stream
        .read_exact(&mut payload)
        .await
        .context("reading the greeting")?;
    match payload.first() {
        Some(10) => Ok(()),
        Some(0xff) => bail!(
            "greeting is an error: {}",
            String::from_utf8_lossy(payload.get(3..).unwrap_or_default())
        ),
        other => bail!("unexpected greeting byte {other:?}"),
    }
}
