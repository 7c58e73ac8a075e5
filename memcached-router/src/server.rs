//! Listeners and workers: [`start`] binds everything and returns [`Running`]; [`run`]
//! waits until cancelled.
//!
//! A *worker* is one set of accept loops, client tasks and backend connections on one
//! runtime: `threads = 0` runs one worker on the caller's runtime; `threads = N` runs N
//! workers, each on its own thread with a single-threaded runtime and its own
//! `SO_REUSEPORT` listener per pool (the kernel spreads clients over them) and its own
//! backend connections and TKO state.
//!
//! In table mode each worker follows the `memcached` table: a new pool gets a listener on
//! `bind:listen_port`; a changed pool gets a new route, swapped in with one `ArcSwap::store`
//! that open client connections pick up at their next batch; a removed pool's listener
//! closes (its open clients keep the last route until they disconnect).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use ocean_core::daemon::{self, Conn, Limits};
use ocean_core::subscriber::{self, TableWatch};
use ocean_core::table::memcached::MemcachedTable;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Mode, PoolSpec, PrefixPool, Settings};
use crate::connection::{serve, ClientContext};
use crate::route::{Registry, Routes};
use crate::stats::RouterStats;

/// A started router.
pub struct Running {
    /// Standalone mode: the address clients connect to (port 0 resolved).
    pub listen_addr: Option<SocketAddr>,
    /// The admin HTTP address, when configured.
    pub admin_addr: Option<SocketAddr>,
    /// The router's counters (`stats`), shared by all workers.
    pub stats: Arc<RouterStats>,
    tracker: TaskTracker,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Waits for every task and worker thread to stop (after cancellation).
    pub async fn wait(self) {
        self.tracker.close();
        self.tracker.wait().await;
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                if t.join().is_err() {
                    tracing::error!("a memcached-router worker thread panicked");
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::error!("joining memcached-router workers failed");
        }
    }
}

/// Starts the router and waits until `cancel` fires and everything has stopped.
///
/// # Errors
/// As [`start`].
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    start(config, cancel).await?.wait().await;
    Ok(())
}

/// The standalone pool and the pools of key prefixes (mcrouter's `PrefixSelectorRoute`).
type StandaloneSpec = (PoolSpec, Vec<PrefixPool>);

/// What a worker starts from.
enum WorkerSource {
    Standalone {
        listener: std::net::TcpListener,
        spec: StandaloneSpec,
        /// New pools from a reload of `--nutcracker-config` or `--mcrouter-config`.
        updates: tokio::sync::watch::Receiver<StandaloneSpec>,
    },
    Table {
        bind: std::net::IpAddr,
        watch: TableWatch<MemcachedTable>,
    },
}

/// Validates `config`, binds the listeners (standalone) or starts the table subscriber
/// (table mode), starts the workers and the admin server, and returns once listening.
///
/// # Errors
/// Invalid config, an address that cannot be bound, a worker thread that cannot start.
pub async fn start(config: Config, cancel: CancellationToken) -> anyhow::Result<Running> {
    config.validate()?;
    // The process-wide recorder must exist before servers create their metric handles.
    ocean_core::metrics::handle();
    crate::stats::describe();
    let tracker = TaskTracker::new();
    // The standalone pool, which a reload of its file replaces.
    let standalone_pool: StandaloneSpec = match &config.mode {
        Mode::Standalone { pool, prefixes, .. } => (pool.clone(), prefixes.clone()),
        Mode::Table { .. } => (
            PoolSpec {
                name: String::new(),
                hash: crate::ketama::KeyHash::Fnv1a64,
                replica_sets: Vec::new(),
                placement: crate::config::KeyPlacement::default(),
            },
            Vec::new(),
        ),
    };
    let (pool_tx, pool_rx) = tokio::sync::watch::channel(standalone_pool);
    // SIGHUP: a --nutcracker-config or --mcrouter-config file is re-read and its servers
    // applied; otherwise every setting is a flag and the table comes from its subscriber,
    // so there is nothing to re-read, and the reload is still answered (log, metric,
    // systemd READY=1).
    match config.pool_file.clone() {
        Some(file) => ocean_core::reload::spawn("memcached-router", cancel.clone(), move || {
            reload_pool_file(&file, &pool_tx)
        }),
        None => ocean_core::reload::spawn("memcached-router", cancel.clone(), || Ok(Vec::new())),
    }
    let stats = Arc::new(RouterStats::default());
    let settings = Arc::new(config.settings.clone());
    let workers = config.threads.max(1);
    let mut sources = Vec::new();
    let mut listen_addr = None;
    let mut table_watch = None;
    match &config.mode {
        Mode::Standalone {
            listen,
            pool,
            prefixes,
        } => {
            let first = ocean_core::listener::bind_tcp(*listen, true)
                .with_context(|| format!("cannot listen on {listen} (--listen)"))?;
            let addr = first.local_addr()?;
            listen_addr = Some(addr);
            let mut listeners = vec![first.into_std()?];
            for _ in 1..workers {
                listeners.push(
                    ocean_core::listener::bind_tcp(addr, true)
                        .with_context(|| format!("cannot listen on {addr}"))?
                        .into_std()?,
                );
            }
            for listener in listeners {
                sources.push(WorkerSource::Standalone {
                    listener,
                    spec: (pool.clone(), prefixes.clone()),
                    updates: pool_rx.clone(),
                });
            }
            // No table to wait for: bound is ready (systemd READY=1).
            ocean_core::notify::table_applied("memcached", "standalone");
        }
        Mode::Table { bind, subscriber } => {
            let (watch, sub) =
                subscriber::spawn::<MemcachedTable>(subscriber.clone(), cancel.clone());
            tracker.spawn(async move {
                if let Err(e) = sub.await {
                    tracing::error!(error = %e, "table subscriber failed");
                }
            });
            table_watch = Some(watch.clone());
            for _ in 0..workers {
                sources.push(WorkerSource::Table {
                    bind: *bind,
                    watch: watch.clone(),
                });
            }
        }
    }

    let mut threads = Vec::new();
    for (i, source) in sources.into_iter().enumerate() {
        let worker = worker(source, settings.clone(), stats.clone(), cancel.clone());
        if config.threads == 0 {
            tracker.spawn(worker);
        } else {
            let handle = std::thread::Builder::new()
                .name(format!("memcached-router-{i}"))
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(worker),
                        Err(e) => tracing::error!(error = %e, "cannot build worker runtime"),
                    }
                })
                .context("spawning a worker thread")?;
            threads.push(handle);
        }
    }

    let admin_addr = match config.admin {
        Some(addr) => {
            let listener = ocean_core::listener::bind_tcp(addr, false)
                .with_context(|| format!("cannot listen on {addr} (--admin)"))?;
            let bound = listener.local_addr()?;
            let health_watch = table_watch.clone();
            let health = Arc::new(move || match &health_watch {
                None => ocean_core::admin::Health {
                    status: "ok",
                    reason: None,
                },
                Some(w) => w.health(),
            });
            let table_fn = table_watch.clone().map(|w| {
                Arc::new(move || {
                    w.load().map(|t| {
                        serde_json::json!({
                            "etag": t.etag,
                            "table": serde_json::from_slice::<serde_json::Value>(&t.body).ok(),
                            "status": w.status(),
                        })
                    })
                }) as Arc<dyn Fn() -> Option<serde_json::Value> + Send + Sync>
            });
            let status_watch = table_watch.clone();
            let status_stats = stats.clone();
            let status = Arc::new(move || {
                let v =
                    |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                ocean_core::admin::DaemonStatus {
                    table: status_watch.as_ref().and_then(|w| w.applied()),
                    connections: Some(v(&status_stats.curr_connections)),
                    backends: status_stats
                        .servers()
                        .into_iter()
                        .map(|s| ocean_core::admin::BackendStatus {
                            group: format!("{} / {}", s.pool, s.replica_set),
                            addr: s.addr.to_string(),
                            state: if s.down_in > 0 {
                                ocean_core::admin::BackendState::Tko
                            } else {
                                ocean_core::admin::BackendState::Up
                            },
                            detail: (s.down_in > 0).then(|| {
                                format!("marked down by {} of {} workers", s.down_in, s.workers)
                            }),
                        })
                        .collect(),
                    facts: vec![
                        (
                            "servers down (TKO)".into(),
                            v(&status_stats.servers_down).to_string(),
                        ),
                        ("TKO events".into(), v(&status_stats.tko_events).to_string()),
                        (
                            "tables applied".into(),
                            v(&status_stats.table_swaps).to_string(),
                        ),
                    ],
                }
            });
            let router = ocean_core::admin::router(ocean_core::admin::Admin {
                daemon: "memcached-router",
                health,
                table: table_fn,
                status: Some(status),
            });
            let cancel = cancel.clone();
            tracker.spawn(async move {
                if let Err(e) = ocean_core::admin::serve(listener, router, cancel).await {
                    tracing::error!(error = %e, "admin server failed");
                }
            });
            Some(bound)
        }
        None => None,
    };
    tracing::info!(listen = ?listen_addr, threads = config.threads, "memcached router started");
    Ok(Running {
        listen_addr,
        admin_addr,
        stats,
        tracker,
        threads,
    })
}

async fn worker(
    source: WorkerSource,
    settings: Arc<Settings>,
    stats: Arc<RouterStats>,
    cancel: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let mut registry = Registry::new(stats.clone());
    // Server connections outlive the drain of client connections: the replies owed to
    // clients come through them. Closed once every client connection has ended.
    let backends = CancellationToken::new();
    match source {
        WorkerSource::Standalone {
            listener,
            spec,
            mut updates,
        } => {
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cannot use listener");
                    return;
                }
            };
            let route = Arc::new(ArcSwap::from_pointee(standalone_routes(
                &mut registry,
                &spec,
                &settings,
                &backends,
            )));
            let ctx = Arc::new(ClientContext { route, stats });
            tracker.spawn(accept_loop(
                listener,
                ctx.clone(),
                &settings,
                &tracker,
                cancel.clone(),
            ));
            updates.mark_unchanged();
            // A reloaded pool: servers that stay keep their connections and TKO state, as
            // in a table swap; clients pick the new ring up at their next batch.
            while tokio::select! {
                () = cancel.cancelled() => false,
                changed = updates.changed() => changed.is_ok(),
            } {
                let spec = updates.borrow_and_update().clone();
                let routes = standalone_routes(&mut registry, &spec, &settings, &backends);
                registry.retain(&routes.all().iter().collect::<Vec<_>>());
                ctx.route.store(Arc::new(routes));
            }
        }
        WorkerSource::Table { bind, watch } => {
            follow_table(
                bind,
                watch,
                &mut registry,
                settings,
                stats,
                &tracker,
                &cancel,
                &backends,
            )
            .await;
        }
    }
    tracker.close();
    tracker.wait().await;
    backends.cancel();
}

/// The standalone routes: the pool, and a route of its own per key prefix, each with the
/// behaviour its mcrouter route gives it.
fn standalone_routes(
    registry: &mut Registry,
    (pool, prefixes): &StandaloneSpec,
    settings: &Arc<Settings>,
    backends: &CancellationToken,
) -> Routes {
    let main = registry.build(pool, settings, backends);
    if prefixes.is_empty() {
        return Routes::single(main);
    }
    let prefixed = prefixes
        .iter()
        .map(|p| {
            let own = Arc::new(p.settings(settings));
            (
                p.prefix.clone(),
                registry.build(&p.route.pool, &own, backends),
            )
        })
        .collect();
    Routes::with_prefixes(main, prefixed)
}

/// SIGHUP with `--nutcracker-config` or `--mcrouter-config`: re-reads the file and hands
/// its servers to the workers. What needs a restart (the listen address, timing, the
/// route's behaviour) is logged and kept; a file that no longer loads keeps the running
/// pool.
fn reload_pool_file(
    file: &crate::config::PoolFile,
    pool_tx: &tokio::sync::watch::Sender<StandaloneSpec>,
) -> anyhow::Result<Vec<String>> {
    use crate::config::PoolFileKind;
    let (pool, kept) = match &file.kind {
        PoolFileKind::Nutcracker { pool, loaded: was } => {
            let now = crate::nutcracker::load(&file.path, pool.as_deref())?;
            let kept = vec![
                ("listen", now.file.listen != was.file.listen),
                ("timeout", now.file.timeout != was.file.timeout),
                (
                    "server_failure_limit",
                    now.file.server_failure_limit != was.file.server_failure_limit,
                ),
                (
                    "server_retry_timeout",
                    now.file.server_retry_timeout != was.file.server_retry_timeout,
                ),
                (
                    "server_connections",
                    now.file.server_connections != was.file.server_connections,
                ),
                (
                    "auto_eject_hosts",
                    now.file.auto_eject_hosts != was.file.auto_eject_hosts,
                ),
            ];
            ((now.pool, Vec::new()), kept)
        }
        PoolFileKind::Mcrouter { loaded: was } => {
            let now = crate::mcrouter::load(&file.path)?;
            let kept = vec![
                ("route type (write policy)", now.write_all != was.write_all),
                (
                    "route type (miss failover)",
                    now.miss_failover != was.miss_failover,
                ),
                ("WarmUpRoute exptime", now.warm_fill != was.warm_fill),
            ];
            // The prefixes' routes are rebuilt whole, behaviour included.
            let prefixes = PrefixPool::of_mcrouter(&now);
            ((now.pool, prefixes), kept)
        }
    };
    for (key, _) in kept.iter().filter(|(_, changed)| *changed) {
        tracing::warn!(
            file = %file.path.display(),
            key,
            "reload: {key} changed in the file; it needs a restart, the running value is kept"
        );
    }
    let applied = pool_tx.send_if_modified(|running| {
        if *running == pool {
            return false;
        }
        *running = pool.clone();
        true
    });
    Ok(if applied {
        tracing::info!(file = %file.path.display(), pool = %pool.0.name, prefixes = pool.1.len(), "reload: servers applied");
        vec![format!("{} servers", file.path.display())]
    } else {
        Vec::new()
    })
}

struct PoolListener {
    port: u16,
    ctx: Arc<ClientContext>,
    stop: CancellationToken,
}

// The worker's pieces, each its own concern; a struct for one caller would only rename them.
#[allow(clippy::too_many_arguments)]
async fn follow_table(
    bind: std::net::IpAddr,
    mut watch: TableWatch<MemcachedTable>,
    registry: &mut Registry,
    settings: Arc<Settings>,
    stats: Arc<RouterStats>,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    backends: &CancellationToken,
) {
    let mut pools: HashMap<String, PoolListener> = HashMap::new();
    let mut next = tokio::select! {
        () = cancel.cancelled() => return,
        t = watch.first() => t,
    };
    while let Some(table) = next {
        let specs: Vec<(PoolSpec, u16)> = table
            .table
            .pools
            .iter()
            .map(|p| (PoolSpec::from_table(p), p.listen_port))
            .collect();
        let routes: Vec<_> = specs
            .iter()
            .map(|(spec, _)| Arc::new(Routes::single(registry.build(spec, &settings, backends))))
            .collect();
        let wanted: std::collections::HashSet<&str> =
            specs.iter().map(|(s, _)| s.name.as_str()).collect();
        pools.retain(|name, l| {
            let keep = wanted.contains(name.as_str());
            if !keep {
                l.stop.cancel();
            }
            keep
        });
        for ((spec, port), route) in specs.iter().zip(&routes) {
            match pools.get(&spec.name) {
                Some(l) if l.port == *port => l.ctx.route.store(route.clone()),
                _ => {
                    if let Some(old) = pools.remove(&spec.name) {
                        old.stop.cancel();
                    }
                    let addr = SocketAddr::new(bind, *port);
                    let listener = match ocean_core::listener::bind_tcp(addr, true) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(pool = %spec.name, %addr, error = %e, "cannot listen");
                            continue;
                        }
                    };
                    let ctx = Arc::new(ClientContext {
                        route: Arc::new(ArcSwap::new(route.clone())),
                        stats: stats.clone(),
                    });
                    let stop = cancel.child_token();
                    tracker.spawn(accept_loop(
                        listener,
                        ctx.clone(),
                        &settings,
                        tracker,
                        stop.clone(),
                    ));
                    pools.insert(
                        spec.name.clone(),
                        PoolListener {
                            port: *port,
                            ctx,
                            stop,
                        },
                    );
                }
            }
        }
        let refs: Vec<&crate::route::PoolRoute> = routes.iter().flat_map(|r| r.all()).collect();
        registry.retain(&refs);
        tracing::info!(etag = %table.etag, pools = specs.len(), "memcached table applied");
        metrics::counter!("ocean_memcached_table_swaps_total").increment(1);
        stats.table_swaps.fetch_add(1, Ordering::Relaxed);
        next = tokio::select! {
            () = cancel.cancelled() => return,
            t = watch.changed() => t,
        };
    }
}

/// What a client past `--max-clients` is told (memcached's own words are `ERROR Too many
/// open connections`; a router's fault is a `SERVER_ERROR`).
const REFUSAL: &[u8] = b"SERVER_ERROR too many open connections\r\n";

fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ClientContext>,
    settings: &Settings,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut limits = Limits::new("memcached-router", REFUSAL);
    limits.max_clients = settings.max_clients;
    // The connection loop applies both (it knows when a client is idle); the skeleton
    // carries them for every daemon alike.
    limits.idle_timeout = settings.idle_timeout;
    limits.write_timeout = settings.write_timeout;
    daemon::accept_loop(
        listener,
        Arc::new(limits),
        tracker.clone(),
        cancel,
        move |conn: Conn| {
            let ctx = ctx.clone();
            async move {
                ctx.stats.curr_connections.fetch_add(1, Ordering::Relaxed);
                ctx.stats.total_connections.fetch_add(1, Ordering::Relaxed);
                // The id picks this client's backend connection among the pool's.
                let slot = usize::try_from(conn.id).unwrap_or(usize::MAX);
                serve(conn.stream, ctx.clone(), slot, conn.cancel).await;
                ctx.stats.curr_connections.fetch_sub(1, Ordering::Relaxed);
            }
        },
    )
}
