//! The daemon: flags, config, workers, listeners, and table mode.
//!
//! Runtime shape: `--threads N` workers, each an OS thread with its own `current_thread`
//! runtime, its own `SO_REUSEPORT` listener per cluster, its own slot map and its own
//! shared backend connections (so nothing on the data path is shared across threads).
//! `threads = 0` runs one worker on the caller's runtime (tests, embedding).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use ocean_core::secret::Secret;
use ocean_core::subscriber::{SubscriberArgs, SubscriberConfig, TableWatch};
use ocean_core::table::redis::RedisTable;
use tokio_util::sync::CancellationToken;

use crate::backend::BackendOpts;
use crate::client::{self, ClientOpts, Shared};
use crate::cluster::{Cluster, ClusterOpts};
use crate::metrics::FamilyMetrics;
use crate::proto::{Limits, ReplyLimits};
use crate::route::RouteOpts;

/// `ocean redis-router` flags. `Debug` shows no password (they are [`Secret`]s).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Standalone mode: the address clients connect to (needs at least one --seed).
    #[arg(long, value_name = "ADDR", requires = "seed")]
    pub listen: Option<SocketAddr>,
    /// Standalone mode: a cluster node to fetch the slot map from; repeat for more.
    #[arg(long = "seed", value_name = "ADDR")]
    pub seed: Vec<SocketAddr>,
    /// Table mode: where the `redis` table comes from.
    #[command(flatten)]
    pub table: SubscriberArgs,
    /// Table mode: the address every cluster's listen_port is bound on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Worker threads, each with a current_thread runtime and its own SO_REUSEPORT
    /// listener and backend connections (0: run on the caller's runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Multiplexed connections per backend node, per worker and client protocol.
    #[arg(long, default_value_t = 1)]
    pub conns_per_node: usize,
    /// Dedicated backend connections (MULTI/WATCH, blocking, pub/sub) per node and
    /// worker at most.
    #[arg(long, default_value_t = 512)]
    pub max_dedicated: usize,
    /// Password clients must AUTH with (user `default`). Prefer --password-file: a flag
    /// shows in the process list.
    #[arg(long, env = "OCEAN_REDIS_PASSWORD", hide_env_values = true, value_name = "PW", value_parser = parse_secret)]
    pub password: Option<Secret>,
    /// File holding the password clients must AUTH with (a trailing newline is not part
    /// of it).
    #[arg(
        long,
        env = "OCEAN_REDIS_PASSWORD_FILE",
        value_name = "FILE",
        conflicts_with = "password"
    )]
    pub password_file: Option<PathBuf>,
    /// ACL user the router authenticates as on backends (with --backend-password or
    /// --backend-password-file).
    #[arg(long, requires = "backend_auth")]
    pub backend_user: Option<String>,
    /// Password the router authenticates with on backends. Prefer
    /// --backend-password-file: a flag shows in the process list.
    #[arg(long, env = "OCEAN_REDIS_BACKEND_PASSWORD", hide_env_values = true, value_name = "PW", value_parser = parse_secret, group = "backend_auth")]
    pub backend_password: Option<Secret>,
    /// File holding the password the router authenticates with on backends (a trailing
    /// newline is not part of it).
    #[arg(
        long,
        env = "OCEAN_REDIS_BACKEND_PASSWORD_FILE",
        value_name = "FILE",
        conflicts_with = "backend_password",
        group = "backend_auth"
    )]
    pub backend_password_file: Option<PathBuf>,
    /// Longest wait for a backend connection (TCP connect plus AUTH/HELLO).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Longest wait for a backend reply (not for blocking commands); then the connection
    /// is closed and the requests on it get an error.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub command_timeout: Duration,
    /// How long a request keeps retrying while its node is unreachable, the cluster is
    /// down, or the backend says TRYAGAIN (failover, resharding).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub retry_timeout: Duration,
    /// MOVED/ASK redirects followed per request.
    #[arg(long, default_value_t = 5)]
    pub max_redirects: u8,
    /// How often the slot map is refreshed without a MOVED.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub refresh_interval: Duration,
    /// Longest bulk string in a client request.
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    pub max_bulk_len: usize,
    /// Most arguments in one client request.
    #[arg(long, default_value_t = 256 * 1024)]
    pub max_array_len: usize,
    /// Replies one client may have outstanding before the router stops reading from it.
    #[arg(long, default_value_t = 1024)]
    pub max_pending: usize,
    /// Send read-only commands to the replicas of the slot's master (round robin), with
    /// READONLY on backend connections; reads may then see slightly stale data.
    #[arg(long)]
    pub read_from_replicas: bool,
    /// Pass FLUSHALL/FLUSHDB to every master (refused otherwise).
    #[arg(long)]
    pub allow_flush: bool,
    /// Serve /metrics and /healthz here.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// TLS for clients: the certificate chain (PEM); the listeners then accept TLS only.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS for clients: the private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Connect to backends with TLS (needs --backend-ca); node certificates must name the
    /// node's IP address (an IP SAN).
    #[arg(long, requires = "backend_ca")]
    pub backend_tls: bool,
    /// The CA certificates (PEM) that backend node certificates are checked against.
    #[arg(long, value_name = "FILE", requires = "backend_tls")]
    pub backend_ca: Option<PathBuf>,
}

/// Where the clusters come from.
#[derive(Debug, Clone)]
pub enum Mode {
    /// One cluster on one address.
    Standalone {
        /// Client address (port 0 picks one; see [`Running::listen_addr`]).
        listen: SocketAddr,
        /// Nodes to fetch the slot map from.
        seeds: Vec<SocketAddr>,
    },
    /// One listener per cluster of the `redis` table.
    Table {
        /// The table source.
        subscriber: SubscriberConfig,
        /// Address the listen ports are bound on.
        bind: IpAddr,
    },
}

/// Everything the router needs; build it in code or from [`Args`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Standalone or table mode.
    pub mode: Mode,
    /// Worker threads (0: the caller's runtime).
    pub threads: usize,
    /// Client-side settings.
    pub client: ClientOpts,
    /// Backend-side settings.
    pub cluster: ClusterOpts,
    /// Admin HTTP address.
    pub admin: Option<SocketAddr>,
}

impl Config {
    /// A standalone config with defaults, on `listen`, for `seeds`.
    pub fn standalone(listen: SocketAddr, seeds: Vec<SocketAddr>) -> Config {
        Config {
            mode: Mode::Standalone { listen, seeds },
            threads: 0,
            client: ClientOpts::default(),
            cluster: ClusterOpts::default(),
            admin: None,
        }
    }
}

impl Args {
    /// The config these flags describe.
    ///
    /// # Errors
    /// When neither --listen nor a table source is given, or a file cannot be read.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let table_mode = !self.table.control.is_empty() || self.table.table_file.is_some();
        let mode = match (self.listen, table_mode) {
            (Some(listen), false) => {
                anyhow::ensure!(!self.seed.is_empty(), "--listen needs at least one --seed");
                Mode::Standalone {
                    listen,
                    seeds: self.seed,
                }
            }
            (None, true) => Mode::Table {
                subscriber: self.table.into_config()?,
                bind: self.bind,
            },
            (Some(_), true) => {
                anyhow::bail!("--listen (standalone) and --control/--table-file (table mode) exclude each other")
            }
            (None, false) => anyhow::bail!(
                "give --listen ADDR --seed ADDR (standalone) or --control/--table-file (table mode)"
            ),
        };
        let client_tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
            _ => None,
        };
        let backend_tls = match (&self.backend_ca, self.backend_tls) {
            (Some(ca), true) => Some(crate::tls::connector(ca)?),
            _ => None,
        };
        let password = match (self.password, &self.password_file) {
            (Some(p), _) => Some(p),
            (None, Some(f)) => Some(read_secret_file(f, "--password-file")?),
            (None, None) => None,
        };
        let backend_password = match (self.backend_password, &self.backend_password_file) {
            (Some(p), _) => Some(p),
            (None, Some(f)) => Some(read_secret_file(f, "--backend-password-file")?),
            (None, None) => None,
        };
        let backend = BackendOpts {
            user: self.backend_user,
            password: backend_password,
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
            reply_limits: ReplyLimits::default(),
            readonly: self.read_from_replicas,
            tls: backend_tls,
        };
        Ok(Config {
            mode,
            threads: self.threads,
            client: ClientOpts {
                limits: Limits {
                    max_bulk_len: self.max_bulk_len,
                    max_array_len: self.max_array_len,
                    ..Limits::default()
                },
                max_pending: self.max_pending.max(1),
                password,
                allow_flush: self.allow_flush,
                route: RouteOpts {
                    max_redirects: self.max_redirects,
                    retry_timeout: self.retry_timeout,
                },
                tls: client_tls,
            },
            cluster: ClusterOpts {
                conns_per_node: self.conns_per_node.max(1),
                max_dedicated: self.max_dedicated.max(1),
                refresh_interval: self.refresh_interval,
                read_from_replicas: self.read_from_replicas,
                backend: Arc::new(backend),
                ..ClusterOpts::default()
            },
            admin: self.admin,
        })
    }
}

/// A password given inline (flag or environment).
fn parse_secret(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(s.to_string()))
}

/// Reads a password file for `flag`: the whole file, less one trailing newline (`\n` or
/// `\r\n`); leading and inner whitespace is part of the password.
///
/// # Errors
/// The file cannot be read, is not UTF-8, or holds an empty password; the message names
/// the flag and the file, never the contents.
pub fn read_secret_file(path: &std::path::Path, flag: &str) -> anyhow::Result<Secret> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))?;
    let value = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    anyhow::ensure!(
        !value.is_empty(),
        "{flag} {}: the file holds no password",
        path.display()
    );
    Ok(Secret::new(value.to_string()))
}

/// Clusters with a bound listener, by name (table mode), shared with tests.
pub type Bound = Arc<Mutex<HashMap<String, SocketAddr>>>;

/// A started router.
#[derive(Debug)]
pub struct Running {
    /// Standalone mode: the bound client address.
    pub listen_addr: Option<SocketAddr>,
    /// The bound admin address.
    pub admin_addr: Option<SocketAddr>,
    /// Table mode: each cluster's bound address (worker 0's view).
    pub bound: Bound,
    threads: Vec<std::thread::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Waits for every worker to stop (after cancellation).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Starts the router and waits until it is cancelled.
///
/// # Errors
/// As [`start`].
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let running = start(config, cancel.clone()).await?;
    cancel.cancelled().await;
    running.wait().await;
    Ok(())
}

/// A worker's listener: SO_REUSEPORT so that every worker accepts on the same port.
fn bind_std(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    ocean_core::listener::bind_tcp_std(addr, true)
}

enum WorkerJob {
    Standalone(std::net::TcpListener, Vec<SocketAddr>),
    Table(TableWatch<RedisTable>, IpAddr),
}

/// Binds everything and starts the workers.
///
/// # Errors
/// When a listener cannot be bound or a worker thread cannot start.
pub async fn start(config: Config, cancel: CancellationToken) -> anyhow::Result<Running> {
    let workers = config.threads.max(1);
    let bound: Bound = Arc::new(Mutex::new(HashMap::new()));
    let mut jobs = Vec::new();
    let mut listen_addr = None;
    let mut tasks = Vec::new();
    let mut table_watch = None;
    match &config.mode {
        Mode::Standalone { listen, seeds } => {
            let first = bind_std(*listen).with_context(|| format!("binding {listen}"))?;
            let addr = first.local_addr()?;
            listen_addr = Some(addr);
            jobs.push(WorkerJob::Standalone(first, seeds.clone()));
            for _ in 1..workers {
                let l = bind_std(addr).with_context(|| format!("binding {addr}"))?;
                jobs.push(WorkerJob::Standalone(l, seeds.clone()));
            }
        }
        Mode::Table { subscriber, bind } => {
            let (watch, handle) =
                ocean_core::subscriber::spawn::<RedisTable>(subscriber.clone(), cancel.clone());
            tasks.push(handle);
            for _ in 0..workers {
                jobs.push(WorkerJob::Table(watch.clone(), *bind));
            }
            table_watch = Some(watch);
        }
    }
    let mut threads = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let config = config.clone();
        let cancel = cancel.clone();
        let bound = if i == 0 { Some(bound.clone()) } else { None };
        if config.threads == 0 {
            tasks.push(tokio::spawn(worker(config, job, bound, cancel)));
        } else {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a worker runtime")?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("redis-router-{i}"))
                    .spawn(move || rt.block_on(worker(config, job, bound, cancel)))
                    .context("starting a worker thread")?,
            );
        }
    }
    let admin_addr = match config.admin {
        Some(addr) => {
            let listener = ocean_core::listener::bind_tcp(addr, false)
                .with_context(|| format!("binding --admin {addr}"))?;
            let local = listener.local_addr()?;
            // Table mode: starting / stale / ok from the table source.
            let health = Arc::new(move || match &table_watch {
                Some(w) => w.health(),
                None => ocean_core::admin::Health {
                    status: "ok",
                    reason: None,
                },
            });
            let router = ocean_core::admin::router(health, None);
            let cancel = cancel.clone();
            tasks.push(tokio::spawn(async move {
                let _ = ocean_core::admin::serve(listener, router, cancel).await;
            }));
            Some(local)
        }
        None => None,
    };
    Ok(Running {
        listen_addr,
        admin_addr,
        bound,
        threads,
        tasks,
    })
}

fn new_cluster(name: &str, seeds: Vec<SocketAddr>, config: &Config) -> Shared {
    let cluster = Cluster::new(name.to_string(), seeds, config.cluster.clone());
    Shared {
        cluster,
        opts: Arc::new(config.client.clone()),
        metrics: Arc::new(FamilyMetrics::new(name)),
    }
}

async fn worker(config: Config, job: WorkerJob, bound: Option<Bound>, cancel: CancellationToken) {
    match job {
        WorkerJob::Standalone(listener, seeds) => {
            let shared = new_cluster("standalone", seeds, &config);
            shared.cluster.spawn_refresher(cancel.clone());
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => accept_loop(l, shared, cancel).await,
                Err(e) => tracing::error!(error = %e, "redis-router listener"),
            }
        }
        WorkerJob::Table(watch, bind) => table_worker(config, watch, bind, bound, cancel).await,
    }
}

/// Longest wait for a client's TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn accept_loop(listener: tokio::net::TcpListener, shared: Shared, cancel: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let cancel = cancel.clone();
        match shared.opts.tls.clone() {
            None => {
                tokio::spawn(async move {
                    tokio::select! {
                        _ = client::serve(stream, shared) => {}
                        _ = cancel.cancelled() => {}
                    }
                });
            }
            Some(tls) => {
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.0.accept(stream));
                    let stream = tokio::select! {
                        r = handshake => match r {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                metrics::counter!("ocean_redis_tls_handshake_errors_total").increment(1);
                                tracing::debug!(error = %e, "client TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                metrics::counter!("ocean_redis_tls_handshake_errors_total").increment(1);
                                tracing::debug!("client TLS handshake timed out");
                                return;
                            }
                        },
                        _ = cancel.cancelled() => return,
                    };
                    tokio::select! {
                        _ = client::serve_tls(stream, shared) => {}
                        _ = cancel.cancelled() => {}
                    }
                });
            }
        }
    }
}

struct Served {
    port: u16,
    shared: Shared,
    /// Stops the listener and the refresher; clients of a re-seeded cluster keep going.
    stop: CancellationToken,
}

async fn table_worker(
    config: Config,
    mut watch: TableWatch<RedisTable>,
    bind: IpAddr,
    bound: Option<Bound>,
    cancel: CancellationToken,
) {
    let mut served: HashMap<String, Served> = HashMap::new();
    let mut table = tokio::select! {
        _ = cancel.cancelled() => return,
        t = watch.first() => t,
    };
    loop {
        let Some(t) = table else { return };
        let wanted: HashMap<&str, _> = t
            .table
            .clusters
            .iter()
            .map(|c| (c.name.as_str(), c))
            .collect();
        served.retain(|name, s| {
            let keep = wanted
                .get(name.as_str())
                .is_some_and(|c| c.listen_port == s.port);
            if !keep {
                tracing::info!(cluster = %name, "redis-router: cluster removed");
                s.stop.cancel();
                if let Some(b) = &bound {
                    if let Ok(mut b) = b.lock() {
                        b.remove(name);
                    }
                }
            }
            keep
        });
        for (name, c) in &wanted {
            if let Some(s) = served.get(*name) {
                // Same port: only the seeds may have changed; the clients stay.
                s.shared.cluster.set_seeds(c.nodes.clone());
                continue;
            }
            let addr = SocketAddr::new(bind, c.listen_port);
            let listener = match bind_std(addr).and_then(tokio::net::TcpListener::from_std) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(cluster = %name, %addr, error = %e, "cannot bind cluster port");
                    continue;
                }
            };
            let shared = new_cluster(name, c.nodes.clone(), &config);
            let stop = cancel.child_token();
            shared.cluster.spawn_refresher(stop.clone());
            tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
            if let Some(b) = &bound {
                if let Ok(mut b) = b.lock() {
                    b.insert(name.to_string(), addr);
                }
            }
            tracing::info!(cluster = %name, %addr, "redis-router: cluster added");
            served.insert(
                name.to_string(),
                Served {
                    port: c.listen_port,
                    shared,
                    stop,
                },
            );
        }
        table = tokio::select! {
            _ = cancel.cancelled() => return,
            t = watch.changed() => t,
        };
    }
}

/// The default table-mode bind address.
pub const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn flags_parse_into_configs() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "127.0.0.1:6380",
            "--seed",
            "127.0.0.1:7000",
            "--seed",
            "127.0.0.1:7001",
            "--threads",
            "2",
            "--read-from-replicas",
            "--command-timeout",
            "250ms",
        ])
        .unwrap();
        let c = cli.args.into_config().unwrap();
        assert!(matches!(c.mode, Mode::Standalone { ref seeds, .. } if seeds.len() == 2));
        assert_eq!(c.threads, 2);
        assert!(c.cluster.read_from_replicas && c.cluster.backend.readonly);
        assert_eq!(
            c.cluster.backend.command_timeout,
            Duration::from_millis(250)
        );

        let cli =
            Cli::try_parse_from(["x", "--table-file", "/tmp/redis.json", "--bind", "0.0.0.0"])
                .unwrap();
        let c = cli.args.into_config().unwrap();
        assert!(matches!(c.mode, Mode::Table { bind, .. } if bind.is_unspecified()));

        assert!(Cli::try_parse_from(["x", "--listen", "127.0.0.1:1"]).is_err());
        let neither = Cli::try_parse_from(["x"]).unwrap();
        assert!(neither.args.into_config().is_err());

        // TLS flags come in pairs; missing files are errors, not plain fallbacks.
        let base = [
            "x",
            "--listen",
            "127.0.0.1:6380",
            "--seed",
            "127.0.0.1:7000",
        ];
        let with = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra));
        assert!(with(&["--tls-cert", "/nonexistent.pem"]).is_err());
        assert!(with(&["--backend-tls"]).is_err());
        assert!(with(&["--backend-ca", "/nonexistent.pem"]).is_err());
        let c = with(&["--backend-tls", "--backend-ca", "/nonexistent.pem"]).unwrap();
        assert!(c.args.into_config().is_err());
        let c = with(&[
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            "/nonexistent.pem",
        ])
        .unwrap();
        assert!(c.args.into_config().is_err());
        let c = with(&[]).unwrap().args.into_config().unwrap();
        assert!(c.client.tls.is_none() && c.cluster.backend.tls.is_none());
    }

    #[test]
    fn password_files_and_no_secret_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let client_pw = dir.path().join("client.pw");
        let backend_pw = dir.path().join("backend.pw");
        std::fs::write(&client_pw, " client secret 1\n").unwrap();
        std::fs::write(&backend_pw, "backend-secret-2\r\n").unwrap();
        let base = [
            "x",
            "--listen",
            "127.0.0.1:6380",
            "--seed",
            "127.0.0.1:7000",
        ];
        let with = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra));
        let (cf, bf) = (client_pw.to_str().unwrap(), backend_pw.to_str().unwrap());

        // From files: one trailing newline dropped, other whitespace kept.
        let cli = with(&[
            "--password-file",
            cf,
            "--backend-user",
            "router",
            "--backend-password-file",
            bf,
        ])
        .unwrap();
        let shown_args = format!("{cli:?} {cli:#?}");
        let c = cli.args.into_config().unwrap();
        assert_eq!(
            c.client.password.as_ref().map(Secret::expose),
            Some(" client secret 1")
        );
        assert_eq!(
            c.cluster.backend.password.as_ref().map(Secret::expose),
            Some("backend-secret-2")
        );
        let shown = format!("{shown_args} {c:?} {c:#?}");
        assert!(
            !shown.contains("client secret") && !shown.contains("backend-secret"),
            "{shown}"
        );
        assert!(shown.contains("redacted"), "{shown}");

        // Inline flags: the same redaction in Args and Config.
        let cli = with(&[
            "--password",
            "inline-client-pw",
            "--backend-password",
            "inline-backend-pw",
        ])
        .unwrap();
        let shown_args = format!("{cli:?}");
        let c = cli.args.into_config().unwrap();
        let shown = format!("{shown_args} {c:?} {c:#?}");
        assert!(!shown.contains("inline-"), "{shown}");
        assert_eq!(
            c.client.password.as_ref().map(Secret::expose),
            Some("inline-client-pw")
        );

        // Inline and file forms exclude each other; a backend user needs one of them.
        assert!(with(&["--password", "a", "--password-file", cf]).is_err());
        assert!(with(&["--backend-password", "a", "--backend-password-file", bf]).is_err());
        assert!(with(&["--backend-user", "router"]).is_err());
        assert!(with(&["--backend-user", "router", "--backend-password", "a"]).is_ok());

        // An empty or missing file is an error naming the flag, never an empty password.
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let err = with(&["--password-file", empty.to_str().unwrap()])
            .unwrap()
            .args
            .into_config()
            .unwrap_err();
        assert!(format!("{err:#}").contains("--password-file"), "{err:#}");
        let err = with(&["--backend-password-file", "/nonexistent/pw"])
            .unwrap()
            .args
            .into_config()
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("--backend-password-file /nonexistent/pw"),
            "{err:#}"
        );
    }
}
