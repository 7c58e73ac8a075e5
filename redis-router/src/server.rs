//! The daemon: workers, listeners, and table following.
//!
//! Runtime shape: `--threads N` workers, each an OS thread with its own `current_thread`
//! runtime, its own `SO_REUSEPORT` listener per cluster, its own slot map and its own
//! shared backend connections (so nothing on the data path is shared across threads).
//! `threads = 0` runs one worker on the caller's runtime (tests, embedding).

use ocean_core::drain::DrainWatch;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::Context;
use ocean_core::daemon::{self, Conn, Limits};
use ocean_core::placement::ketama::Ring;
use ocean_core::subscriber::TableWatch;
use ocean_core::table::redis::RedisTable;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cmd::Session;
use crate::config::{Config, Mode, Sharding};
use crate::connection::{self, Shared};
use crate::health::Coverage;
use crate::metrics::FamilyMetrics;
use crate::slot::Shards;
use crate::upstream::Cluster;

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
            if let Err(e) = t.await {
                tracing::error!(error = %e, "redis-router task failed");
            }
        }
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                if t.join().is_err() {
                    tracing::error!("redis-router worker thread panicked");
                }
            }
        })
        .await;
        if let Err(e) = joined {
            tracing::error!(error = %e, "joining the worker threads");
        }
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

/// How often `ocean_redis_slots_uncovered` is brought up to date without a `/healthz`.
const COVERAGE_GAUGE_INTERVAL: Duration = Duration::from_millis(500);

enum WorkerJob {
    Standalone(
        std::net::TcpListener,
        Vec<SocketAddr>,
        Option<Arc<Mutex<Pool>>>,
    ),
    Table(TableWatch<RedisTable>, IpAddr),
}

/// The standalone sharded pool as it runs, and every worker's cluster over it: a worker
/// builds its cluster from it (under the lock, so none misses a reload), and a SIGHUP that
/// finds the pool changed in its file reshards each one.
#[derive(Debug)]
struct Pool {
    /// The servers' addresses, in the order of `sharding.servers`.
    servers: Vec<SocketAddr>,
    /// Their names and weights, and the placement.
    sharding: Sharding,
    /// Each worker's cluster (a worker that stopped has dropped its own).
    clusters: Vec<Weak<Cluster>>,
}

/// Binds everything and starts the workers.
///
/// # Errors
/// An invalid config ([`Config::validate`]), a listener that cannot be bound, or a worker
/// thread that cannot start.
pub async fn start(config: Config, cancel: CancellationToken) -> anyhow::Result<Running> {
    config.validate()?;
    // The recorder must exist before the clusters register their metric handles.
    ocean_core::metrics::handle();
    crate::metrics::describe();
    let workers = config.threads.max(1);
    let bound: Bound = Arc::new(Mutex::new(HashMap::new()));
    let mut jobs = Vec::new();
    let mut listen_addr = None;
    let mut tasks = Vec::new();
    let mut table_watch = None;
    let pool = match (&config.mode, &config.sharding) {
        (Mode::Standalone { seeds, .. }, Some(sharding)) => Some(Arc::new(Mutex::new(Pool {
            servers: seeds.clone(),
            sharding: sharding.clone(),
            clusters: Vec::new(),
        }))),
        _ => None,
    };
    match &config.mode {
        Mode::Standalone { listen, seeds } => {
            let first = bind_std(*listen).with_context(|| format!("binding {listen}"))?;
            let addr = first.local_addr()?;
            listen_addr = Some(addr);
            jobs.push(WorkerJob::Standalone(first, seeds.clone(), pool.clone()));
            for _ in 1..workers {
                let l = bind_std(addr).with_context(|| format!("binding {addr}"))?;
                jobs.push(WorkerJob::Standalone(l, seeds.clone(), pool.clone()));
            }
            // No table to wait for: bound is ready (systemd READY=1).
            ocean_core::notify::table_applied("redis", "standalone");
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
    // SIGHUP: what can change without a new socket: the certificate, the password files
    // (clients' next AUTH, the next backend login), and a --nutcracker-config pool's
    // servers and placement (every worker's cluster resharded). Listen addresses and every
    // other flag need a restart. Each file is tried; any failure keeps that one's old value
    // and fails the reload as a whole (result="error").
    let tls_cert = config.client.tls.as_ref().map(|a| a.cert.clone());
    let passwords: Vec<Arc<ocean_core::secret::SecretFile>> = [
        config.client.password.clone(),
        config.cluster.backend.password.clone(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let pool_file = pool.clone().zip(
        config
            .sharding
            .as_ref()
            .and_then(|s| Some((s.file.clone()?, s.at_start.clone()))),
    );
    ocean_core::reload::spawn("redis-router", cancel.clone(), move || {
        let mut changed = Vec::new();
        let mut failed = Vec::new();
        if let Some((pool, ((path, want), at_start))) = &pool_file {
            match reload_pool(pool, path, want.as_deref(), at_start.as_ref()) {
                Ok(true) => changed.push(format!("{} servers", path.display())),
                Ok(false) => {}
                Err(e) => failed.push(format!("{e:#}")),
            }
        }
        if let Some(cert) = &tls_cert {
            match cert.reload() {
                Ok(true) => changed.push("--tls-cert/--tls-key".to_string()),
                Ok(false) => {}
                Err(e) => failed.push(e.to_string()),
            }
        }
        for p in &passwords {
            match p.reload() {
                Ok(true) => changed.push(p.flag().unwrap_or("password").to_string()),
                Ok(false) => {}
                Err(e) => failed.push(format!("{e:#}")),
            }
        }
        if !failed.is_empty() {
            anyhow::bail!(
                "{} (applied: {})",
                failed.join("; "),
                if changed.is_empty() {
                    "nothing".to_string()
                } else {
                    changed.join(", ")
                }
            );
        }
        Ok(changed)
    });
    let mut threads = Vec::new();
    // One --max-clients over every worker and every cluster's listener.
    let permits = Arc::new(Semaphore::new(config.client.max_clients));
    let coverage = Coverage::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let config = config.clone();
        let cancel = cancel.clone();
        let bound = if i == 0 { Some(bound.clone()) } else { None };
        let permits = permits.clone();
        let coverage = coverage.clone();
        if config.threads == 0 {
            tasks.push(tokio::spawn(worker(
                config, job, bound, permits, coverage, cancel,
            )));
        } else {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a worker runtime")?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("redis-router-{i}"))
                    .spawn(move || {
                        rt.block_on(worker(config, job, bound, permits, coverage, cancel))
                    })
                    .context("starting a worker thread")?,
            );
        }
    }
    // The gauge follows coverage even when nobody asks /healthz.
    {
        let coverage = coverage.clone();
        let cancel = cancel.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(COVERAGE_GAUGE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = tick.tick() => {
                        coverage.report();
                    }
                }
            }
        }));
    }
    let admin_addr = match config.admin {
        Some(addr) => {
            let listener = ocean_core::listener::bind_tcp(addr, false)
                .with_context(|| format!("binding --admin {addr}"))?;
            let local = listener.local_addr()?;
            // The status page: the table, clients holding a permit, masters down.
            let (status_watch, status_coverage) = (table_watch.clone(), coverage.clone());
            let (status_permits, max_clients) = (permits.clone(), config.client.max_clients);
            let status = Arc::new(move || {
                let mut backends = Vec::new();
                let mut facts = Vec::new();
                for c in status_coverage.report() {
                    facts.push((
                        format!("cluster {} slots uncovered", c.name),
                        if c.mapped {
                            c.uncovered.to_string()
                        } else {
                            "no slot map yet".to_string()
                        },
                    ));
                    for (addr, f) in c.down {
                        backends.push(ocean_core::admin::BackendStatus {
                            group: c.name.clone(),
                            addr: addr.to_string(),
                            state: ocean_core::admin::BackendState::Down,
                            detail: Some(format!(
                                "for {}: {}",
                                ocean_core::status_page::human_age(f.since.elapsed()),
                                f.error
                            )),
                        });
                    }
                }
                ocean_core::admin::DaemonStatus {
                    table: status_watch.as_ref().and_then(|w| w.applied()),
                    connections: Some(
                        max_clients.saturating_sub(status_permits.available_permits()) as u64,
                    ),
                    backends,
                    facts,
                }
            });
            // Table mode: starting / stale / ok from the table source; then 503
            // `uncovered` while a slot has no reachable master (see `health`).
            let health = Arc::new(move || {
                let table = match &table_watch {
                    Some(w) => w.health(),
                    None => ocean_core::admin::Health {
                        status: "ok",
                        reason: None,
                    },
                };
                crate::health::combine(table, &coverage.report())
            });
            let router = ocean_core::admin::router(ocean_core::admin::Admin {
                daemon: "redis-router",
                health,
                table: None,
                status: Some(status),
            });
            let cancel = cancel.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = ocean_core::admin::serve(listener, router, cancel).await {
                    tracing::error!(error = %e, "redis-router admin server failed");
                }
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

/// SIGHUP with `--nutcracker-config`: reads the pool again as at start and, when its
/// servers or placement changed, reshards every worker's cluster (`true`). What needs a new
/// socket or a restart (`listen`, `redis_auth`, `timeout`, `server_connections`) is logged
/// and kept. A file that no longer loads, or a pool that would be refused at start, keeps
/// the running pool (the error).
fn reload_pool(
    pool: &Mutex<Pool>,
    path: &std::path::Path,
    want: Option<&str>,
    at_start: Option<&(SocketAddr, crate::config::FromNutcracker)>,
) -> anyhow::Result<bool> {
    let now = crate::config::load_nutcracker(path, want)?;
    if let Some((listen, settings)) = at_start {
        for (key, changed) in [
            ("listen", now.listen != *listen),
            ("redis_auth", now.settings.redis_auth != settings.redis_auth),
            ("timeout", now.settings.timeout != settings.timeout),
            (
                "server_connections",
                now.settings.server_connections != settings.server_connections,
            ),
        ] {
            if changed {
                tracing::warn!(
                    file = %path.display(),
                    key,
                    "reload: {key} changed in the file; it needs a restart, the running value is kept"
                );
            }
        }
    }
    let mut running = pool
        .lock()
        .map_err(|_| anyhow::anyhow!("the running pool is unavailable (a worker panicked)"))?;
    if now.servers == running.servers && now.sharding.same_placement(&running.sharding) {
        return Ok(false);
    }
    running.clusters.retain(|c| c.strong_count() > 0);
    for cluster in running.clusters.iter().filter_map(Weak::upgrade) {
        cluster.reshard(&now.servers, shards(&now.sharding));
    }
    running.servers = now.servers;
    running.sharding = now.sharding;
    tracing::info!(
        file = %path.display(),
        servers = ?running.servers,
        workers = running.clusters.len(),
        "reload: servers applied"
    );
    Ok(true)
}

/// A sharded pool's placement, for one cluster.
fn shards(sh: &Sharding) -> Arc<Shards> {
    Arc::new(Shards {
        ring: Ring::with_distribution(&sh.servers, sh.hash, sh.distribution),
        hash_tag: sh.hash_tag,
    })
}

/// One worker's cluster: a Redis Cluster from `seeds`, or a sharded pool, from `pool` as
/// it runs now (registered there for reloads) or else from the config.
fn new_cluster(
    name: &str,
    seeds: Vec<SocketAddr>,
    config: &Config,
    pool: Option<&Mutex<Pool>>,
) -> Shared {
    let opts = config.cluster.clone();
    let cluster = match (pool.and_then(|p| p.lock().ok()), &config.sharding) {
        (Some(mut running), _) => {
            let c = Cluster::sharded(
                name.to_string(),
                running.servers.clone(),
                shards(&running.sharding),
                opts,
            );
            running.clusters.push(Arc::downgrade(&c));
            c
        }
        (None, Some(sh)) => Cluster::sharded(name.to_string(), seeds, shards(sh), opts),
        (None, None) => Cluster::new(name.to_string(), seeds, opts),
    };
    Shared {
        cluster,
        opts: Arc::new(config.client.clone()),
        metrics: Arc::new(FamilyMetrics::new(name)),
    }
}

async fn worker(
    config: Config,
    job: WorkerJob,
    bound: Option<Bound>,
    permits: Arc<Semaphore>,
    coverage: Arc<Coverage>,
    cancel: CancellationToken,
) {
    // This worker's connections: waited for after cancellation, so none is detached.
    let tracker = TaskTracker::new();
    match job {
        WorkerJob::Standalone(listener, seeds, pool) => {
            let shared = new_cluster("standalone", seeds, &config, pool.as_deref());
            coverage.register(&shared.cluster, cancel.clone());
            shared.cluster.spawn_refresher(cancel.clone());
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => accept(l, shared, permits, &tracker, cancel.clone()).await,
                Err(e) => tracing::error!(error = %e, "redis-router listener"),
            }
        }
        WorkerJob::Table(watch, bind) => {
            let ctx = TableCtx {
                config,
                bind,
                bound,
                permits,
                coverage,
            };
            table_worker(ctx, watch, &tracker, cancel).await
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// Longest wait for a client's TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a client past `--max-clients` is told: redis's own words (networking.c).
const REFUSAL: &[u8] = b"-ERR max number of clients reached\r\n";

/// Accepts clients of one cluster through the daemon skeleton: a permit of the shared
/// `--max-clients` before each (the refused get [`REFUSAL`]), accept errors backed off,
/// and each connection in a span with its id, tracked by `tracker`, ended by `cancel`.
fn accept(
    listener: tokio::net::TcpListener,
    shared: Shared,
    permits: Arc<Semaphore>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut limits = Limits::new("redis-router", REFUSAL);
    limits.max_clients = shared.opts.max_clients;
    limits.idle_timeout = shared.opts.idle_timeout;
    limits.write_timeout = shared.opts.write_timeout;
    daemon::accept_loop_shared(
        listener,
        Arc::new(limits),
        permits,
        tracker.clone(),
        cancel,
        move |conn: Conn| serve_conn(conn, shared.clone()),
    )
}

/// One client: the TLS handshake if any, then the connection until it ends or the
/// listener is cancelled (drain, or its cluster left the table).
async fn serve_conn(conn: Conn, shared: Shared) {
    let Conn { stream, cancel, .. } = conn;
    let session = Session::new(shared.cluster.client_id(), shared.opts.password.is_none());
    let Some(tls) = shared.opts.tls.clone() else {
        // Drain (or the cluster leaving the table) ends the connection at a request
        // boundary, once the replies owed are written.
        connection::serve(stream, shared, session, DrainWatch::new(cancel)).await;
        return;
    };
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.tls.accept(stream));
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
        () = cancel.cancelled() => return,
    };
    connection::serve_tls(stream, shared, session, DrainWatch::new(cancel)).await;
}

struct Served {
    port: u16,
    shared: Shared,
    /// Stops the listener and the refresher; clients of a re-seeded cluster keep going.
    stop: CancellationToken,
}

/// What a table worker serves its clusters with.
struct TableCtx {
    config: Config,
    bind: IpAddr,
    bound: Option<Bound>,
    permits: Arc<Semaphore>,
    coverage: Arc<Coverage>,
}

async fn table_worker(
    ctx: TableCtx,
    mut watch: TableWatch<RedisTable>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) {
    let TableCtx {
        config,
        bind,
        bound,
        permits,
        coverage,
    } = ctx;
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
            let shared = new_cluster(name, c.nodes.clone(), &config, None);
            let stop = cancel.child_token();
            coverage.register(&shared.cluster, stop.clone());
            shared.cluster.spawn_refresher(stop.clone());
            tracker.spawn(accept(
                listener,
                shared.clone(),
                permits.clone(),
                tracker,
                stop.clone(),
            ));
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
