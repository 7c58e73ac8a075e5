//! The listener and everything around it: [`start`] binds, follows the `mysql` table
//! (indexed off the hot path, swapped in whole) and serves admin HTTP; [`run`] waits until
//! cancelled.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use ocean_core::daemon::{self, Conn, Limits};
use ocean_core::subscriber::{self, TableWatch};
use ocean_core::table::mysql::MysqlTable;
use ocean_core::tls::{PemFile, ServerCert};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::connection::prelogin::PreLogin;
use crate::connection::{self, Shared};
use crate::discovery::Found;
use crate::proto::reply::err_packet;
use crate::route::registry::Registry;
use crate::route::Index;
use crate::upstream;

/// The daemon's name in the skeleton's metrics and spans.
const DAEMON: &str = "mysql-proxy";

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

/// The TLS config for clients, serving `served`; with `--client-ca`, clients are asked for
/// a certificate that must verify against it when presented (none presented is fine at
/// the TLS layer: `require_cert_cn` decides per job at login).
fn client_tls_config(
    served: Arc<ServerCert>,
    client_ca: Option<&Path>,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let Some(ca) = client_ca else {
        let config = ocean_core::tls::server_config(served)?;
        return Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)));
    };
    let roots = ocean_core::tls::root_store(PemFile::new("--client-ca", ca))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        ocean_core::tls::provider(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| anyhow::anyhow!("--client-ca {}: {e}", ca.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(ocean_core::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(served);
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A file SIGHUP re-reads, with the contents last applied: what is built from it is
/// rebuilt (and swapped in) only when the bytes differ, and only once that succeeded.
struct Reread {
    flag: &'static str,
    path: PathBuf,
    applied: Vec<u8>,
}

impl Reread {
    /// Reads the file as it is now (the contents `start` built from).
    fn new(flag: &'static str, path: &Path) -> anyhow::Result<Reread> {
        let applied =
            std::fs::read(path).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))?;
        Ok(Reread {
            flag,
            path: path.to_path_buf(),
            applied,
        })
    }

    /// Rebuilds with `build` when the file changed; `Ok(true)` once it is applied.
    fn reload(&mut self, build: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<bool> {
        let now = std::fs::read(&self.path)
            .map_err(|e| anyhow::anyhow!("{} {}: {e}", self.flag, self.path.display()))?;
        if now == self.applied {
            return Ok(false);
        }
        build(&self.path)?;
        self.applied = now;
        Ok(true)
    }
}

/// What SIGHUP re-reads: the certificate and key (through their resolver), `--client-ca`
/// (a new client TLS config for the next handshakes), `--rsa-key` (next full
/// authentication) and `--backend-ca` (next backend login). Sessions already open keep
/// what they negotiated. Every file is tried; one that fails keeps its old value and
/// fails the reload (result="error"). Listen addresses and other flags need a restart.
struct Reloader {
    shared: Arc<Shared>,
    cert: Option<Arc<ServerCert>>,
    client_ca: Option<Reread>,
    rsa_key: Option<Reread>,
    backend_ca: Option<Reread>,
}

impl Reloader {
    fn reload(&mut self) -> anyhow::Result<Vec<String>> {
        let mut changed = Vec::new();
        let mut failed = Vec::new();
        let mut note = |flag: &str, r: anyhow::Result<bool>| match r {
            Ok(true) => changed.push(flag.to_string()),
            Ok(false) => {}
            Err(e) => failed.push(format!("{e:#}")),
        };
        if let Some(cert) = &self.cert {
            note(
                "--tls-cert/--tls-key",
                cert.reload().map_err(anyhow::Error::from),
            );
        }
        let shared = &self.shared;
        if let (Some(f), Some(cert), Some(tls)) = (&mut self.client_ca, &self.cert, &shared.tls) {
            note(
                "--client-ca",
                f.reload(|ca| {
                    tls.store(Arc::new(client_tls_config(cert.clone(), Some(ca))?));
                    Ok(())
                }),
            );
        }
        if let (Some(f), Some(rsa)) = (&mut self.rsa_key, &shared.rsa) {
            note(
                "--rsa-key",
                f.reload(|path| {
                    rsa.store(Arc::new(crate::auth::RsaKey::load(path)?));
                    Ok(())
                }),
            );
        }
        if let (Some(f), Some(backend)) = (&mut self.backend_ca, &shared.backend_tls) {
            note(
                "--backend-ca",
                f.reload(|ca| {
                    backend.store(Arc::new(upstream::connector(ca)?));
                    Ok(())
                }),
            );
        }
        if !failed.is_empty() {
            let applied = if changed.is_empty() {
                "nothing".to_string()
            } else {
                changed.join(", ")
            };
            anyhow::bail!("{} (applied: {applied})", failed.join("; "));
        }
        Ok(changed)
    }
}

/// Runs until `cancel` fires.
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    start(config, cancel).await?.wait().await;
    Ok(())
}

/// Binds the listener (and admin), starts the table subscriber, returns once listening.
pub async fn start(config: Config, cancel: CancellationToken) -> anyhow::Result<Running> {
    config.validate()?;
    ocean_core::metrics::handle();
    crate::metrics::describe();
    let tls_cert = match &config.tls {
        Some((cert, key)) => Some(ServerCert::load(
            PemFile::new("--tls-cert", cert),
            PemFile::new("--tls-key", key),
        )?),
        None => None,
    };
    let mut reloader_files = (None, None, None);
    let tls = match &tls_cert {
        Some(served) => {
            if let Some(ca) = &config.client_ca {
                reloader_files.0 = Some(Reread::new("--client-ca", ca)?);
            }
            let acceptor = client_tls_config(served.clone(), config.client_ca.as_deref())?;
            Some(ArcSwap::from_pointee(acceptor))
        }
        None => None,
    };
    let backend_tls = match &config.backend_tls {
        Some(ca) => {
            reloader_files.2 = Some(Reread::new("--backend-ca", ca)?);
            Some(ArcSwap::from_pointee(upstream::connector(ca)?))
        }
        None => None,
    };
    // The RSA key only matters when logins take full authentication; a generated one is
    // made off the runtime (a few CPU seconds at worst).
    let rsa = match (&config.rsa_key, config.caching_sha2_full_auth) {
        (Some(path), _) => {
            reloader_files.1 = Some(Reread::new("--rsa-key", path)?);
            Some(ArcSwap::from_pointee(crate::auth::RsaKey::load(path)?))
        }
        (None, true) => Some(ArcSwap::from_pointee(
            tokio::task::spawn_blocking(crate::auth::RsaKey::generate).await??,
        )),
        (None, false) => None,
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
        rsa,
        rr: AtomicUsize::new(0),
        server_version: ArcSwap::from_pointee(
            config
                .server_version
                .clone()
                .unwrap_or_else(|| "8.0.0-ocean".into()),
        ),
        connections: AtomicUsize::new(0),
        pool: crate::pool::Pool::new(config.pool_idle_timeout),
        backend_caps: crate::mariadb_caps::BackendCaps::default(),
        config,
    });
    // SIGHUP: what can change without a new socket.
    let (client_ca, rsa_key, backend_ca) = reloader_files;
    let mut reloader = Reloader {
        shared: shared.clone(),
        cert: tls_cert,
        client_ca,
        rsa_key,
        backend_ca,
    };
    ocean_core::reload::spawn("mysql-proxy", cancel.clone(), move || reloader.reload());

    let (watch, sub) =
        subscriber::spawn::<MysqlTable>(shared.config.subscriber.clone(), cancel.clone());
    tracker.spawn(async move {
        if let Err(e) = sub.await {
            tracing::error!(error = %e, "table subscriber failed");
        }
    });
    // Primary discovery reports placements; apply_tables lays them over the table.
    let (found_tx, found_rx) = tokio::sync::watch::channel(Arc::new(Found::new()));
    tracker.spawn(crate::discovery::run(
        shared.clone(),
        found_tx,
        cancel.clone(),
    ));
    tracker.spawn(apply_tables(
        watch.clone(),
        found_rx,
        shared.clone(),
        cancel.clone(),
    ));
    tracker.spawn(sweep_pool(shared.clone(), cancel.clone()));
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
            let (w3, status_shared) = (watch.clone(), shared.clone());
            let status = Arc::new(move || {
                let index = status_shared.index.load_full();
                let (backends, facts) = backend_rows(index.as_deref());
                ocean_core::admin::DaemonStatus {
                    table: w3.applied(),
                    connections: Some(status_shared.connections.load(Ordering::Relaxed) as u64),
                    backends,
                    facts,
                }
            });
            let router = ocean_core::admin::router(ocean_core::admin::Admin {
                daemon: "mysql-proxy",
                health,
                table: Some(table),
                status: Some(status),
            });
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

/// The status page's backend rows: each database's primary, replicas and the candidates
/// discovery left out (down, silent, or writable beside the primary); and the databases
/// without a primary, as a fact.
fn backend_rows(
    index: Option<&Index>,
) -> (Vec<ocean_core::admin::BackendStatus>, Vec<(String, String)>) {
    use ocean_core::admin::{BackendState, BackendStatus};
    let Some(index) = index else {
        return (Vec::new(), Vec::new());
    };
    let mut rows = Vec::new();
    let mut no_primary = Vec::new();
    let mut dbs: Vec<_> = index.databases.values().collect();
    dbs.sort_by(|a, b| a.name.cmp(&b.name));
    for db in dbs {
        let row = |addr: std::net::SocketAddr, state, detail: &str| BackendStatus {
            group: db.name.clone(),
            addr: addr.to_string(),
            state,
            detail: Some(detail.to_string()),
        };
        let discovered = |a: &std::net::SocketAddr| db.candidates.contains(a);
        match db.primary {
            Some(p) if discovered(&p) => {
                rows.push(row(p, BackendState::Up, "primary (discovered)"))
            }
            Some(p) => rows.push(row(p, BackendState::Up, "primary")),
            None => no_primary.push(db.name.clone()),
        }
        for r in &db.replicas {
            let detail = if discovered(r) {
                "replica (discovered)"
            } else {
                "replica"
            };
            rows.push(row(*r, BackendState::Up, detail));
        }
        for c in &db.candidates {
            if db.primary != Some(*c) && !db.replicas.contains(c) {
                rows.push(row(
                    *c,
                    BackendState::Down,
                    "candidate without a usable answer to the read_only probe (see the log)",
                ));
            }
        }
    }
    let facts = vec![(
        "databases without a primary".to_string(),
        if no_primary.is_empty() {
            "none".to_string()
        } else {
            no_primary.join(", ")
        },
    )];
    (rows, facts)
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

/// Indexes every new table, or the same table with new discovered placements
/// ([`crate::discovery`]), and applies it to open sessions: the one task that stores the
/// index, so a table and a placement never race.
async fn apply_tables(
    mut watch: TableWatch<MysqlTable>,
    mut found: tokio::sync::watch::Receiver<Arc<Found>>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let mut table = None;
    let mut discovering = true;
    loop {
        tokio::select! {
            t = watch.changed() => {
                let Some(v) = t else { return };
                table = Some(v);
            }
            changed = found.changed(), if discovering => {
                if changed.is_err() {
                    // Discovery ended (shutdown): tables still apply.
                    discovering = false;
                    continue;
                }
            }
            () = cancel.cancelled() => return,
        }
        let Some(v) = &table else { continue };
        let etag = &v.etag;
        let placements = found.borrow_and_update().clone();
        let index = if placements.is_empty() {
            Index::build(etag, &v.table)
        } else {
            Index::build(etag, &crate::discovery::effective(&v.table, &placements))
        };
        shared.registry.sweep(
            &index,
            &shared.config.host_ips,
            shared.config.drain,
            shared.config.kick_revoked,
        );
        tracing::info!(etag = %etag, jobs = index.jobs.len(), databases = index.databases.len(), "mysql table applied");
        // A job or database gone from the table takes its series with it (issue 13).
        crate::metrics::forget_removed(shared.index.load().as_deref(), &index);
        // Pooled connections only to servers this table routes to, as these credentials.
        shared.pool.retain(|key| {
            index.databases.get(&key.database).is_some_and(|db| {
                crate::pool::max_idle(db) > 0
                    && (db.primary == Some(key.addr) || db.replicas.contains(&key.addr))
                    && (db.rw.user == key.user && db.rw.password == key.password
                        || db
                            .ro
                            .as_ref()
                            .is_some_and(|ro| ro.user == key.user && ro.password == key.password))
            })
        });
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

/// The skeleton's limits for the client listener: `--max-connections` (0 = no limit) as
/// the cap, and ERR 1040 `Too many connections` (SQLSTATE 08004, sequence id 0, what a
/// MySQL server past `max_connections` sends) as the refusal, instead of the greeting.
fn limits(config: &Config) -> Limits {
    let mut limits = Limits::new(
        DAEMON,
        err_packet(0, 1040, b"08004", "Too many connections"),
    );
    limits.max_clients = match config.max_connections {
        0 => Semaphore::MAX_PERMITS,
        n => n.min(Semaphore::MAX_PERMITS),
    };
    // Carried for completeness: the session applies both itself (0 = no idle timeout).
    limits.idle_timeout = config.idle_timeout.unwrap_or(Duration::ZERO);
    limits.write_timeout = config.write_timeout;
    limits.on_refusal = Some(refused);
    limits
}

/// The audit line and login metric of a client refused at `--max-connections`.
fn refused(peer: SocketAddr) {
    tracing::info!(target: "audit", job = "", ip = %peer.ip().to_canonical(), schema = "", result = "denied", reason = "too many connections", "mysql login");
    metrics::counter!("ocean_mysql_logins_total", "job" => "", "result" => "too_many_connections")
        .increment(1);
}

/// Accepts through the daemon skeleton (permit before accept, backoff, a span with the
/// connection id, the task tracked) and serves each client until it ends or `cancel`
/// fires.
fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let limits = Arc::new(limits(&shared.config));
    daemon::accept_loop(listener, limits, tracker, cancel, move |conn: Conn| {
        let shared = shared.clone();
        async move {
            shared.connections.fetch_add(1, Ordering::Relaxed);
            let _slot = ConnSlot(shared.clone());
            // The greeting's connection id is 32 bits; it wraps as a server's does.
            let conn_id = conn.id as u32;
            // Drain (SIGTERM) ends each session at rest: replies owed written, open
            // transactions finished (bounded by --drain-timeout).
            let drain = ocean_core::drain::DrainWatch::new(conn.cancel);
            connection::serve(conn.stream, conn.peer, conn_id, shared, drain).await;
        }
    })
}

/// Closes pooled backend connections unused for `--pool-idle-timeout`, checking every
/// tenth of it (at most every 10 s, at least every 100 ms).
async fn sweep_pool(shared: Arc<Shared>, cancel: CancellationToken) {
    let every = (shared.config.pool_idle_timeout / 10)
        .clamp(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => shared.pool.sweep(),
        }
    }
}
