//! Shared test setup: MariaDB servers with the backend users, a table file, the proxy,
//! and clients bound to chosen loopback source addresses.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ocean_core::subscriber::SubscriberConfig;
use ocean_core::table::mysql::{
    Access, Credentials, Grant, JobPassword, MysqlDatabase, MysqlJob, MysqlTable,
};
use ocean_mysql_proxy::{Config, PasswordHashes, Running};
use ocean_tests::servers::mariadb::MariaDb;
use tokio_util::sync::CancellationToken;

pub const RW_USER: &str = "app_rw";
pub const RW_PASSWORD: &str = "rw-secret";
pub const RO_USER: &str = "app_ro";
pub const RO_PASSWORD: &str = "ro-secret";

/// The setup of every test file: a MariaDB primary prepared by [`prepare_backend`], a temp
/// dir that lives as long as the returned handle, and where the table file goes in it.
pub async fn prepared_backend() -> (MariaDb, tempfile::TempDir, PathBuf) {
    let db = MariaDb::start().await.unwrap();
    prepare_backend(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let table_file = dir.path().join("mysql.json");
    (db, dir, table_file)
}

/// Creates the schema `shop` (and `other`, never granted), a table, and the proxy's
/// backend users on `db` (a primary; replicas get them through replication).
pub async fn prepare_backend(db: &MariaDb) {
    db.exec_sql(&format!(
        "CREATE DATABASE IF NOT EXISTS shop; CREATE DATABASE IF NOT EXISTS other; \
         CREATE TABLE IF NOT EXISTS shop.items (id INT PRIMARY KEY, name VARCHAR(64)); \
         INSERT IGNORE INTO shop.items VALUES (1, 'apple'), (2, 'pear'); \
         CREATE USER IF NOT EXISTS '{RW_USER}'@'127.0.0.1' IDENTIFIED BY '{RW_PASSWORD}'; \
         GRANT ALL ON shop.* TO '{RW_USER}'@'127.0.0.1'; \
         GRANT ALL ON other.* TO '{RW_USER}'@'127.0.0.1'; \
         GRANT PROCESS ON *.* TO '{RW_USER}'@'127.0.0.1'; \
         CREATE USER IF NOT EXISTS '{RO_USER}'@'127.0.0.1' IDENTIFIED BY '{RO_PASSWORD}'; \
         GRANT SELECT ON shop.* TO '{RO_USER}'@'127.0.0.1'; \
         SET GLOBAL max_allowed_packet = 64*1024*1024"
    ))
    .await
    .unwrap();
}

pub fn database(primary: SocketAddr, replicas: Vec<SocketAddr>) -> MysqlDatabase {
    MysqlDatabase {
        name: "/dept/shop/main".into(),
        primary: Some(primary),
        replicas,
        candidates: vec![],
        ro: Some(Credentials {
            user: RO_USER.into(),
            password: RO_PASSWORD.into(),
        }),
        rw: Credentials {
            user: RW_USER.into(),
            password: RW_PASSWORD.into(),
        },
        schema: "shop".into(),
        pool_max: None,
        multiplex: None,
    }
}

pub fn job(name: &str, ips: &[&str], access: Access, password: Option<&str>) -> MysqlJob {
    MysqlJob {
        name: name.into(),
        ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
        grants: vec![Grant {
            database: "/dept/shop/main".into(),
            access,
        }],
        password: password.map(|p| {
            let h = PasswordHashes::of(p);
            JobPassword {
                sha1_sha1: hex(&h.sha1_sha1),
                sha256_sha256: hex(&h.sha256_sha256),
            }
        }),
        require_cert_cn: None,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes the table atomically (the subscriber must never read half a file).
pub fn write_table(path: &Path, table: &MysqlTable) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(table).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn config(table_file: PathBuf) -> Config {
    let sub = SubscriberConfig {
        table_file: Some(table_file),
        file_poll: Duration::from_millis(100),
        ..Default::default()
    };
    let mut c = Config::new("127.0.0.1:0".parse().unwrap(), sub);
    // Tests decide what "this host" is: a documentation address, never a real one.
    c.host_ips = vec!["192.0.2.77".parse().unwrap()];
    c.connect_timeout = Duration::from_secs(3);
    c
}

/// Starts the proxy and waits until it has loaded the table.
pub async fn start_proxy(config: Config) -> (Running, CancellationToken) {
    let cancel = CancellationToken::new();
    let running = ocean_mysql_proxy::start(config, cancel.clone())
        .await
        .unwrap();
    for _ in 0..100 {
        if running.table_etag().is_some() {
            return (running, cancel);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the proxy did not load its table");
}

/// Waits until the proxy runs a table other than `old`.
pub async fn wait_table_change(running: &Running, old: &str) {
    for _ in 0..100 {
        if running.table_etag().as_deref() != Some(old) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the proxy did not pick up the new table");
}

/// Runs the `mariadb` CLI against `addr` from source address `bind` (through [`via`]); Ok(stdout) or
/// Err(stderr).
pub async fn cli(
    addr: SocketAddr,
    bind: &str,
    user: &str,
    extra: &[&str],
    database: Option<&str>,
    sql: &str,
) -> Result<String, String> {
    // The mariadb client cannot pick its source address: go through a forwarder.
    let addr = via(bind, addr);
    let mut cmd = tokio::process::Command::new("mariadb");
    cmd.args([
        "--no-defaults",
        "--protocol=tcp",
        &format!("--host={}", addr.ip()),
        &format!("--port={}", addr.port()),
        &format!("--user={user}"),
        "--connect-timeout=10",
        "-N",
        "-B",
    ]);
    if !extra.iter().any(|a| a.starts_with("--ssl")) {
        cmd.arg("--skip-ssl");
    }
    cmd.args(extra);
    if let Some(db) = database {
        cmd.arg(format!("--database={db}"));
    }
    cmd.args(["-e", sql]).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("mariadb timed out")
        .expect("cannot run mariadb: install the Debian package mariadb-client");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim_end().to_string())
    }
}

/// A loopback forwarder that connects to `target` from source address `bind` (mysql_async
/// cannot bind its socket): connect to the returned address instead of `target`.
pub fn via(bind: &str, target: SocketAddr) -> SocketAddr {
    let bind: IpAddr = bind.parse().unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let local = l.local_addr().unwrap();
    let l = tokio::net::TcpListener::from_std(l).unwrap();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let s = tokio::net::TcpSocket::new_v4().unwrap();
                s.bind(SocketAddr::new(bind, 0)).unwrap();
                if let Ok(mut u) = s.connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                }
            });
        }
    });
    local
}

/// mysql_async options for `user` from source address `bind` (through [`via`]).
pub fn opts(
    addr: SocketAddr,
    bind: &str,
    user: &str,
    password: Option<&str>,
    db: Option<&str>,
) -> mysql_async::OptsBuilder {
    let addr = via(bind, addr);
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(user))
        .pass(password)
        .db_name(db)
        .prefer_socket(false)
}

/// Everything logged (all targets), for checking the audit lines.
pub fn log_buffer() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || Tee(b.clone()))
            .try_init();
        buf
    })
    .clone()
}

pub fn logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

struct Tee(Arc<Mutex<Vec<u8>>>);

impl Write for Tee {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        std::io::stderr().write_all(b)?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Connections on `db` from the proxy's backend users (SHOW PROCESSLIST).
pub async fn backend_sessions(db: &MariaDb) -> usize {
    db.exec_sql(&format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER IN ('{RW_USER}', '{RO_USER}')"
    ))
    .await
    .unwrap()
    .parse()
    .unwrap()
}

/// What a lean client sends at login, with MariaDB's extensions `mariadb`. No
/// `CLIENT_DEPRECATE_EOF`: column definitions end with an EOF.
pub fn lean_client(
    mariadb: mysql_common::constants::MariadbCapabilities,
) -> ocean_mysql_proxy::upstream::ClientParams {
    use mysql_common::constants::CapabilityFlags;
    ocean_mysql_proxy::upstream::ClientParams {
        capabilities: CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_TRANSACTIONS
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB,
        collation: 45,
        max_packet_size: 16 << 20,
        attributes: None,
        mariadb,
    }
}

/// A session at `addr` as `job` into schema `shop`, logged in by the proxy's own backend
/// login ([`lean_client`]), for tests that then speak the protocol byte by byte.
pub async fn raw_session(
    addr: SocketAddr,
    job: &str,
    password: &str,
    mariadb: mysql_common::constants::MariadbCapabilities,
) -> Result<tokio::net::TcpStream, ocean_mysql_proxy::upstream::BackendError> {
    use ocean_mysql_proxy::upstream::{self, BackendStream};
    let creds = Credentials {
        user: job.into(),
        password: password.into(),
    };
    let b = upstream::login(
        addr,
        &creds,
        Some("shop"),
        &lean_client(mariadb),
        mysql_common::constants::CapabilityFlags::all(),
        None,
    )
    .await?;
    match b.stream {
        BackendStream::Plain(s) => Ok(s),
        BackendStream::Tls(_) => unreachable!("no TLS configured"),
    }
}
