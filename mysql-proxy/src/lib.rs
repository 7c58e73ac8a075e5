//! `ocean mysql-proxy`: clients log in as their JOBNAME from an IP of a running task of
//! that job, only into databases granted to the job; the proxy logs in to the database's
//! current primary (or a replica for `ro` grants) with credentials only it holds.
//!
//! Modules: [`packet`] framing, [`auth`] password checks and scrambles, [`access`] the
//! table indexed for logins, [`session`] one client connection, [`backend`] the proxy's
//! own login to MySQL, [`relay`] the byte relay after login, [`registry`] open sessions
//! (limits, failover, revocation), [`prelogin`] logins in progress per client IP,
//! [`tls`] rustls for clients and backends.

pub mod access;
pub mod auth;
pub mod backend;
pub mod packet;
pub mod prelogin;
pub mod proxy_protocol;
pub mod registry;
pub mod relay;
pub mod session;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use ocean_core::subscriber::{self, SubscriberArgs, SubscriberConfig, TableWatch};
use ocean_core::table::mysql::MysqlTable;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{PasswordHashes, Plugin};

use access::Index;
use prelogin::PreLogin;
use registry::Registry;

/// `ocean mysql-proxy` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address clients connect to.
    #[arg(long, default_value = "127.0.0.1:3307")]
    pub listen: SocketAddr,
    /// Admin HTTP address for /metrics, /healthz and /table (off when absent).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    #[command(flatten)]
    pub subscriber: SubscriberArgs,
    /// This host's addresses: a client at 127.0.0.1 or ::1 counts as coming from each of
    /// them (repeatable; default: every non-loopback address of this host).
    #[arg(long = "host-ip", value_name = "IP")]
    pub host_ip: Vec<IpAddr>,
    /// PEM certificate chain for TLS to clients (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS to clients.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Refuse clients that do not switch to TLS (needs --tls-cert).
    #[arg(long, requires = "tls_cert")]
    pub require_tls: bool,
    /// How long sessions on a database's old primary live after a table moves it.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// Close open sessions of jobs that lose the right to log in (IP gone, grant gone).
    #[arg(long)]
    pub kick_revoked: bool,
    /// Most client connections at once, logins in progress included (0 = no limit).
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Most sessions per job at once (0 = no limit).
    #[arg(long, default_value_t = 512)]
    pub max_connections_per_job: usize,
    /// Connections from one client IP that have not finished logging in, at most; more
    /// are answered with error 1040 at once and closed (0 = no limit). Logged-in sessions
    /// do not count.
    #[arg(long, default_value_t = 16)]
    pub max_prelogin_per_ip: usize,
    /// Longest a client login may take (the pre-login timeout: PROXY header, greeting to
    /// handshake response, TLS, auth), and separately the backend connect and login.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Close sessions with no bytes either way for this long (0s = never; the backend's
    /// wait_timeout still applies).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// The auth plugin the greeting names: mysql_native_password or
    /// caching_sha2_password. Clients answering with either are checked as they answered.
    #[arg(long, default_value = "mysql_native_password")]
    pub default_auth: Plugin,
    /// Networks of L4 balancers allowed to send a PROXY protocol v2 header (repeatable);
    /// peers in them must send one, and the address in it is the client's.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxy: Vec<proxy_protocol::Cidr>,
    /// Server version in the greeting (default: the last backend's, until then 8.0.0-ocean).
    #[arg(long)]
    pub server_version: Option<String>,
    /// Require TLS to every backend: logins to a backend that does not offer TLS, or
    /// whose certificate does not verify against --backend-ca for its IP, fail.
    #[arg(long, requires = "backend_ca")]
    pub backend_tls: bool,
    /// PEM CA certificate(s) verifying backend certificates (with --backend-tls); a
    /// backend's certificate must name its IP as an IP subject alternative name.
    #[arg(long, value_name = "FILE", requires = "backend_tls")]
    pub backend_ca: Option<PathBuf>,
}

/// Everything `start` needs; tests and `ocean up` build it in code.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub subscriber: SubscriberConfig,
    pub host_ips: Vec<IpAddr>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub require_tls: bool,
    pub drain: Duration,
    pub kick_revoked: bool,
    pub max_connections: usize,
    pub max_connections_per_job: usize,
    /// Logins in progress per client IP (0 = no limit).
    pub max_prelogin_per_ip: usize,
    pub connect_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub default_auth: Plugin,
    pub server_version: Option<String>,
    pub trusted_proxies: Vec<proxy_protocol::Cidr>,
    /// `--backend-ca` when `--backend-tls`: TLS to every backend, verified with this CA.
    pub backend_tls: Option<PathBuf>,
}

impl Config {
    /// Defaults for everything but the listen address and table source.
    pub fn new(listen: SocketAddr, subscriber: SubscriberConfig) -> Config {
        Config {
            listen,
            admin: None,
            subscriber,
            host_ips: host_addresses(),
            tls: None,
            require_tls: false,
            drain: Duration::ZERO,
            kick_revoked: false,
            max_connections: 4096,
            max_connections_per_job: 512,
            max_prelogin_per_ip: 16,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: None,
            default_auth: Plugin::Native,
            server_version: None,
            trusted_proxies: Vec::new(),
            backend_tls: None,
        }
    }
}

impl Args {
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut c = Config::new(self.listen, self.subscriber.into_config()?);
        if !self.host_ip.is_empty() {
            c.host_ips = self.host_ip;
        }
        c.admin = self.admin;
        c.tls = self.tls_cert.zip(self.tls_key);
        c.require_tls = self.require_tls;
        anyhow::ensure!(
            !c.require_tls || c.tls.is_some(),
            "--require-tls needs --tls-cert and --tls-key"
        );
        c.drain = self.drain;
        c.kick_revoked = self.kick_revoked;
        c.max_connections = self.max_connections;
        c.max_connections_per_job = self.max_connections_per_job;
        c.max_prelogin_per_ip = self.max_prelogin_per_ip;
        c.connect_timeout = self.connect_timeout;
        c.idle_timeout = (!self.idle_timeout.is_zero()).then_some(self.idle_timeout);
        c.default_auth = self.default_auth;
        c.server_version = self.server_version;
        c.trusted_proxies = self.trusted_proxy;
        anyhow::ensure!(
            self.backend_tls == self.backend_ca.is_some(),
            "--backend-tls and --backend-ca go together"
        );
        c.backend_tls = self.backend_ca;
        Ok(c)
    }
}

/// This host's non-loopback addresses.
pub fn host_addresses() -> Vec<IpAddr> {
    if_addrs::get_if_addrs()
        .map(|v| {
            v.into_iter()
                .map(|i| i.ip())
                .filter(|ip| !ip.is_loopback())
                .collect()
        })
        .unwrap_or_default()
}

/// State shared by every connection.
pub(crate) struct Shared {
    config: Config,
    index: ArcSwapOption<Index>,
    registry: Arc<Registry>,
    prelogin: Arc<PreLogin>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    backend_tls: Option<tokio_rustls::TlsConnector>,
    next_conn_id: AtomicU32,
    rr: AtomicUsize,
    server_version: ArcSwap<String>,
    connections: AtomicUsize,
}

/// A running proxy.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
}

impl Running {
    /// Open (logged-in) sessions.
    pub fn sessions(&self) -> usize {
        self.shared.registry.len()
    }

    /// Client connections, logins in progress included.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Connections from `ip` that have not finished logging in.
    pub fn logins_in_progress(&self, ip: IpAddr) -> usize {
        self.shared.prelogin.in_progress(ip)
    }

    /// The ETag of the table in use.
    pub fn table_etag(&self) -> Option<String> {
        self.shared.index.load().as_ref().map(|i| i.etag.clone())
    }

    /// Waits until every task has stopped (after cancellation).
    pub async fn wait(self) {
        self.tracker.wait().await;
    }
}

/// Runs until `cancel` fires.
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    start(config, cancel).await?.wait().await;
    Ok(())
}

/// Binds the listener (and admin), starts the table subscriber, returns once listening.
pub async fn start(config: Config, cancel: CancellationToken) -> anyhow::Result<Running> {
    ocean_core::metrics::handle();
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let backend_tls = match &config.backend_tls {
        Some(ca) => Some(tls::connector(ca)?),
        None => None,
    };
    let listener = ocean_core::listener::bind_tcp(config.listen, false)
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (--listen): {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let tracker = TaskTracker::new();
    let shared = Arc::new(Shared {
        index: ArcSwapOption::empty(),
        registry: Arc::new(Registry::default()),
        prelogin: PreLogin::new(config.max_prelogin_per_ip),
        tls,
        backend_tls,
        next_conn_id: AtomicU32::new(1),
        rr: AtomicUsize::new(0),
        server_version: ArcSwap::from_pointee(
            config
                .server_version
                .clone()
                .unwrap_or_else(|| "8.0.0-ocean".into()),
        ),
        connections: AtomicUsize::new(0),
        config,
    });

    let (watch, _sub) =
        subscriber::spawn::<MysqlTable>(shared.config.subscriber.clone(), cancel.clone());
    tracker.spawn(apply_tables(watch.clone(), shared.clone(), cancel.clone()));
    tracker.spawn(accept_loop(
        listener,
        shared.clone(),
        cancel.clone(),
        tracker.clone(),
    ));

    let admin_addr = match shared.config.admin {
        Some(a) => {
            let l = ocean_core::listener::bind_tcp(a, false)
                .map_err(|e| anyhow::anyhow!("cannot listen on {a} (--admin): {e}"))?;
            let local = l.local_addr()?;
            let (w1, w2) = (watch.clone(), watch.clone());
            let health = Arc::new(move || w1.health());
            // The table carries backend passwords: /table shows it redacted.
            let table = Arc::new(move || {
                w2.load().map(|v| {
                    let mut t = serde_json::to_value(&v.table).unwrap_or_default();
                    redact(&mut t);
                    serde_json::json!({"etag": v.etag, "table": t})
                })
            });
            let router = ocean_core::admin::router(health, Some(table));
            let c = cancel.clone();
            tracker.spawn(async move {
                if let Err(e) = ocean_core::admin::serve(l, router, c).await {
                    tracing::error!(error = %e, "admin HTTP failed");
                }
            });
            Some(local)
        }
        None => None,
    };
    tracker.close();
    tracing::info!(listen = %addr, admin = ?admin_addr, tls = shared.tls.is_some(), backend_tls = shared.backend_tls.is_some(), "ocean mysql-proxy listening");
    Ok(Running {
        addr,
        admin_addr,
        shared,
        tracker,
    })
}

/// Replaces every `password` string in the table's JSON.
fn redact(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if k == "password" && v.is_string() {
                    *v = serde_json::Value::String("<redacted>".into());
                } else {
                    redact(v);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Indexes every new table and applies it to open sessions.
async fn apply_tables(
    mut watch: TableWatch<MysqlTable>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            t = watch.changed() => t,
            () = cancel.cancelled() => return,
        };
        let Some(v) = next else { return };
        let index = Index::build(&v.etag, &v.table);
        shared.registry.sweep(
            &index,
            &shared.config.host_ips,
            shared.config.drain,
            shared.config.kick_revoked,
        );
        tracing::info!(etag = %v.etag, jobs = index.jobs.len(), databases = index.databases.len(), "mysql table applied");
        shared.index.store(Some(Arc::new(index)));
    }
}

/// Decrements the connection count when a connection ends.
struct ConnSlot(Arc<Shared>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = cancel.cancelled() => return,
        };
        let (mut tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let n = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = ConnSlot(shared.clone());
        let limit = shared.config.max_connections;
        if limit > 0 && n > limit {
            tracing::info!(target: "audit", job = "", ip = %peer.ip(), schema = "", result = "denied", reason = "too many connections", "mysql login");
            metrics::counter!("ocean_mysql_logins_total", "job" => "", "result" => "too_many_connections").increment(1);
            tokio::spawn(async move {
                let _slot = slot;
                let p = packet::err_payload(1040, b"08004", "Too many connections");
                let _ = packet::write_packet(&mut tcp, 0, &p).await;
            });
            continue;
        }
        let shared = shared.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _slot = slot;
            tokio::select! {
                () = session::serve(tcp, peer, shared) => {}
                () = cancel.cancelled() => {}
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn backend_tls_and_backend_ca_go_together() {
        Cli::command().debug_assert();
        let base = ["ocean", "--table-file", "/tmp/mysql.json"];
        let with = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra.iter()));
        assert!(with(&["--backend-tls"]).is_err());
        assert!(with(&["--backend-ca", "/tmp/ca.pem"]).is_err());
        let cli = with(&["--backend-tls", "--backend-ca", "/tmp/ca.pem"]).unwrap();
        let c = cli.args.into_config().unwrap();
        assert_eq!(c.backend_tls, Some(PathBuf::from("/tmp/ca.pem")));
        let c = with(&[]).unwrap().args.into_config().unwrap();
        assert_eq!(c.backend_tls, None);
    }

    #[test]
    fn max_prelogin_per_ip_flag_and_default() {
        let base = ["ocean", "--table-file", "/tmp/mysql.json"];
        let c = Cli::try_parse_from(base)
            .unwrap()
            .args
            .into_config()
            .unwrap();
        assert_eq!(c.max_prelogin_per_ip, 16);
        let c = Cli::try_parse_from(base.iter().chain(&["--max-prelogin-per-ip", "3"]))
            .unwrap()
            .args
            .into_config()
            .unwrap();
        assert_eq!(c.max_prelogin_per_ip, 3);
    }

    /// The proxy holds secrets in its config (control's API token) and in every route
    /// (backend passwords): none may show in debug output or logs.
    #[test]
    fn debug_output_holds_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "control-token-secret\n").unwrap();
        let cli = Cli::try_parse_from([
            "ocean",
            "--control",
            "http://127.0.0.1:1",
            "--control-token-file",
            token.to_str().unwrap(),
        ])
        .unwrap();
        let c = cli.args.into_config().unwrap();
        assert!(c.subscriber.token.is_some());
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("control-token-secret"), "{shown}");

        use ocean_core::table::mysql::{Access, Credentials, MysqlDatabase};
        let db = Arc::new(MysqlDatabase {
            name: "/a/b/shop".into(),
            primary: None,
            replicas: vec![],
            ro: Some(Credentials {
                user: "ro".into(),
                password: "ro-backend-secret".into(),
            }),
            rw: Credentials {
                user: "rw".into(),
                password: "rw-backend-secret".into(),
            },
            schema: "shop".into(),
        });
        for access in [Access::Rw, Access::Ro] {
            let route = access::Route::new(&db, access).unwrap();
            let shown = format!("{route:?} {route:#?}");
            assert!(!shown.contains("backend-secret"), "{shown}");
        }
    }
}
