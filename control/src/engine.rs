//! The sync loop: fetch Marathon's apps, normalize, derive, guard, publish.
//!
//! A sync runs at start, after a debounced burst of events, every `resync` while the event
//! stream is up, and every `poll_while_down` while it is down or the last sync failed. A
//! failed sync changes nothing that proxies see: the last good tables stay, `/v1/problems`
//! and `/healthz` say why.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use axum::serve::ListenerExt;
use bytes::Bytes;
use ocean_core::table::incremental::{Buffers, Encoded};
use ocean_core::table::{
    etag_of, DnsTable, LvsTable, MemcachedTable, MysqlTable, RedisTable, TableKind,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api_auth::is_loopback;
use crate::config::{Config, Source};
use crate::derive::dns_index::{Derivation, DnsIndex, Recycled};
use crate::derive::{derive_all, derive_all_patched, Problem};
use crate::freshness::Freshness;
use crate::guard::{Guard, Held, Pools};
use crate::marathon::client::{MarathonClient, MarathonError};
use crate::marathon::model::{parse_apps, ParsedApps};
use crate::pending::Pending;
use crate::reload::{Live, Reloader};
use crate::state::{hostnames, normalize, normalize_patched, HealthMemory, Resolved, State};
use crate::store::{Served, Store};
use crate::subscribers::Subscribers;

pub use crate::shared::{Shared, SyncStatus};

/// A running control: its bound address and a handle to wait for it.
pub struct Running {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    tracker: TaskTracker,
}

impl Running {
    /// Waits until every task has stopped (after the cancel token fired).
    pub async fn wait(self) {
        self.tracker.wait().await;
    }
}

/// Runs control until `cancel` fires.
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let running = start(config, cancel).await?;
    running.wait().await;
    Ok(())
}

/// Binds the API, starts the sync loop and returns at once.
pub async fn start(config: Config, cancel: CancellationToken) -> anyhow::Result<Running> {
    config.validate()?;
    // Install the recorder before anything records, so no early sample is lost.
    ocean_core::metrics::handle();
    crate::metrics::describe();
    // Certificates before binding: a bad file is a config error, not a half-started control.
    let (tls, tls_cert) = match &config.tls {
        Some(files) => {
            let (tls, cert) = files.server_config()?;
            (Some(tls), Some(cert))
        }
        None => (None, None),
    };
    if config.allow_plaintext_secrets && tls.is_none() && !is_loopback(config.listen.ip()) {
        tracing::warn!(
            listen = %config.listen,
            "--allow-plaintext-secrets: the mysql table (backend passwords) is served over plain HTTP to any peer with a token; configure --tls-cert/--tls-key instead"
        );
    }
    let listener = ocean_core::listener::bind_tcp(config.listen, false)
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (--listen): {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let stream_up = Arc::new(AtomicBool::new(false));
    let freshness = Arc::new(Freshness::default());
    let pending = Arc::new(Pending::default());
    let shared = Arc::new(Shared {
        store: Store::new(config.delta_history),
        subscribers: Subscribers::default(),
        status: Mutex::new(SyncStatus::default()),
        problems: ArcSwap::from_pointee(Vec::new()),
        state: ArcSwap::from_pointee(State::default()),
        tokens: ArcSwap::from_pointee(config.tokens.clone()),
        tls: tls.is_some(),
        allow_plaintext_secrets: config.allow_plaintext_secrets,
        max_wait: config.max_wait,
        resync: config.resync,
        stream_up: stream_up.clone(),
        marathon_source: matches!(config.source, Source::Marathon(_)),
        freshness: freshness.clone(),
        max_lag: config.max_lag,
        shutdown: cancel.clone(),
    });
    let tracker = TaskTracker::new();
    let (dirty_tx, dirty_rx) = mpsc::channel(1);
    let live = Arc::new(ArcSwap::from_pointee(Live::of(&config)));
    // SIGHUP: what can change without a new socket (crate::reload).
    let mut reloader = Reloader::new(
        config.clone(),
        live.clone(),
        shared.clone(),
        tls_cert,
        dirty_tx.clone(),
    );
    ocean_core::reload::spawn("control", cancel.clone(), move || reloader.reload());
    let router = crate::server::router(shared.clone());
    let c = cancel.clone();
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => {
            tracker.spawn(async move {
                let served = axum::serve(listener, service)
                    .with_graceful_shutdown(async move { c.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "control API server failed");
                }
            });
        }
        Some(tls) => {
            // `tap_io` is how axum hands `ConnectInfo<SocketAddr>` to a listener of its own
            // (it implements `Connected` for a `TapIo`'s address); the tap itself does nothing.
            let listener = crate::tls::TlsListener::spawn(listener, tls, &tracker, cancel.clone())?
                .tap_io(|_| {});
            tracker.spawn(async move {
                let served = axum::serve(listener, service)
                    .with_graceful_shutdown(async move { c.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "control API server failed");
                }
            });
        }
    }
    let source = match &config.source {
        Source::Marathon(urls) => {
            let client = Arc::new(MarathonClient::new(
                urls.clone(),
                config.marathon_timeout,
                config.marathon_ca.as_deref(),
            )?);
            tracker.spawn(crate::marathon::events::run(
                client.clone(),
                crate::marathon::events::Report {
                    dirty: dirty_tx.clone(),
                    up: stream_up,
                    freshness: freshness.clone(),
                    pending: pending.clone(),
                },
                cancel.clone(),
            ));
            Fetcher::Marathon(client)
        }
        Source::File(path) => {
            // The baseline is read now, before the first sync reads the file: a change made
            // after that sync's read is then always seen as a change (read inside the
            // watcher, its first look could come after the change and take it as the start).
            let baseline = std::fs::read(path).ok().map(|b| etag_of(&b));
            tracker.spawn(watch_file(
                path.clone(),
                baseline,
                config.poll_while_down.min(Duration::from_secs(1)),
                dirty_tx.clone(),
                freshness.clone(),
                cancel.clone(),
            ));
            Fetcher::File(path.clone())
        }
        Source::Static { name, body } => Fetcher::Static(name.clone(), body.clone()),
    };
    tracing::info!(%addr, tls = config.tls.is_some(), tokens = config.tokens.len(), "control listening");
    let published = match &config.state_dir {
        Some(dir) => Published::load(dir),
        None => Published::default(),
    };
    let engine = Engine {
        config,
        live,
        shared: shared.clone(),
        source,
        guard_state: None,
        published,
        memory: HealthMemory::default(),
        resolved: HashMap::new(),
        last_list: None,
        last_normalized: None,
        pending,
        dns_index: DnsIndexSlot::Empty,
        dns_hint_base: None,
        dns_recycled: None,
    };
    tracker.spawn(engine.run(dirty_rx, cancel));
    tracker.close();
    Ok(Running {
        addr,
        shared,
        tracker,
    })
}

enum Fetcher {
    Marathon(Arc<MarathonClient>),
    File(std::path::PathBuf),
    Static(String, Bytes),
}

/// Where a fetch failed: before anything was read (the source is unreachable), or in the
/// apps it answered; or it was cut short by the shutdown, which is no failure.
enum FetchError {
    Unreachable(String),
    Unparsable(String),
    Interrupted,
}

impl Fetcher {
    /// The apps and where they came from. Marathon's list is parsed as it streams in; a
    /// file is read whole (parsing a slice is twice as fast as a reader, and the file is
    /// on local disk) and parsed off the async workers (~150 ms at 100k tasks).
    async fn fetch(&self) -> Result<(ParsedApps, String), FetchError> {
        let (body, origin) = match self {
            Fetcher::Marathon(c) => {
                return match c.fetch_apps().await {
                    Ok((Ok(parsed), url)) => Ok((parsed, format!("marathon {url}"))),
                    Ok((Err(e), url)) => {
                        Err(FetchError::Unparsable(format!("marathon {url}: {e}")))
                    }
                    Err(MarathonError::Interrupted { .. }) => Err(FetchError::Interrupted),
                    Err(e) => Err(FetchError::Unreachable(format!("marathon: {e}"))),
                };
            }
            Fetcher::File(p) => match tokio::fs::read(p).await {
                Ok(b) => (Bytes::from(b), format!("file {}", p.display())),
                Err(e) => {
                    return Err(FetchError::Unreachable(format!(
                        "apps file {}: {e}",
                        p.display()
                    )))
                }
            },
            Fetcher::Static(name, body) => (body.clone(), format!("static {name}")),
        };
        match off_async(move || parse_apps(&body)).await {
            Some(Ok(parsed)) => Ok((parsed, origin)),
            Some(Err(e)) => Err(FetchError::Unparsable(format!("{origin}: {e}"))),
            None => Err(FetchError::Interrupted),
        }
    }
}

/// Marks the state dirty when the apps file's contents change.
///
/// Each period it looks at the file's metadata only; it reads and hashes the contents when
/// the metadata changed (a 66 MB file took ~100 ms of CPU to read and hash, every period).
/// A rewrite that keeps size, inode and timestamps (within one timestamp tick) goes
/// unnoticed here; the sync every `--resync` re-reads the file anyway.
async fn watch_file(
    path: std::path::PathBuf,
    baseline: Option<String>,
    every: Duration,
    dirty: mpsc::Sender<()>,
    freshness: Arc<Freshness>,
    cancel: CancellationToken,
) {
    let mut last = baseline;
    let mut last_stamp: Option<FileStamp> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let stamp = tokio::fs::metadata(&path)
            .await
            .ok()
            .map(|m| FileStamp::of(&m));
        if stamp.is_some() && stamp == last_stamp {
            continue;
        }
        last_stamp = stamp;
        let read = path.clone();
        let now =
            tokio::task::spawn_blocking(move || std::fs::read(read).ok().map(|b| etag_of(&b)))
                .await
                .ok()
                .flatten();
        // A file that appears counts as a change; one that vanishes does not (a sync would
        // only fail and keep the tables).
        if now.is_some() && now != last {
            freshness.doubt();
            // Full means a sync is pending already.
            let _ = dirty.try_send(());
        }
        last = now;
    }
}

/// What changes when a file is written or replaced: its inode (a rename over it), size
/// and modification and change times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(m: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

struct Engine {
    /// As started; its `derive`, `guard` and `tokens` are replaced by reloads: read `live`.
    config: Config,
    /// What a SIGHUP may change, read at each sync.
    live: Arc<ArcSwap<Live>>,
    shared: Arc<Shared>,
    source: Fetcher,
    guard_state: Option<Guard>,
    published: Published,
    memory: HealthMemory,
    resolved: HashMap<String, (IpAddr, Instant)>,
    /// Marathon's apps as of the last sync, patched by the next one when events name only
    /// a few apps.
    last_list: Option<ParsedApps>,
    /// The state normalized from `last_list` and the agent addresses it used: a sync that
    /// patches the list normalizes only the apps it fetched.
    last_normalized: Option<(Arc<State>, Resolved)>,
    /// What the events said changed since the last sync.
    pending: Arc<Pending>,
    /// The dns names of a past sync and where they came from: the next sync derives only
    /// the apps that changed ([`crate::derive::dns_index`]).
    dns_index: DnsIndexSlot,
    /// What the published dns table was derived from, when that table is exactly what
    /// was derived (not held, not refused): a patched derive from this state knows every
    /// name that can differ.
    dns_hint_base: Option<Derivation>,
    /// The dns table published before the current one, when it was exactly what was
    /// derived: the next patched derive rewrites its few stale names instead of copying
    /// all 500k into a new table.
    dns_recycled: Option<Recycled>,
}

/// The dns index, or its build on a blocking thread. A sync that finds none derives the
/// dns names whole and starts a build for the state it published; one that finds a build
/// still running does not wait for it.
#[derive(Default)]
enum DnsIndexSlot {
    #[default]
    Empty,
    Building(tokio::task::JoinHandle<Option<DnsIndex>>),
    Ready(Box<DnsIndex>),
}

/// The tables last published, typed: the guard's baseline.
#[derive(Default)]
struct Published {
    dns: Option<DnsTable>,
    redis: Option<RedisTable>,
    memcached: Option<MemcachedTable>,
    mysql: Option<MysqlTable>,
    lvs: Option<LvsTable>,
    /// The ETags of the tables above that this run published (deltas start from them),
    /// and how it encoded them (the next version copies their unchanged entries, and its
    /// ETag is hashed from the first difference).
    encoded: HashMap<TableKind, (String, Encoded)>,
    /// The encodings the last publish replaced: the next version is built in their
    /// buffers (see [`Buffers`]), once the store and the subscribers let go of them.
    spare: HashMap<TableKind, Encoded>,
}

impl Published {
    /// The tables a previous run published, from `--state-dir`: the guard's baseline after a
    /// restart. A missing or unreadable file leaves that kind without a baseline.
    fn load(dir: &std::path::Path) -> Published {
        fn one<T: ocean_core::table::Table>(dir: &std::path::Path) -> Option<T> {
            let path = ocean_core::subscriber::cache_path(dir, T::KIND.as_str());
            let body = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the state dir");
                    return None;
                }
            };
            match T::from_json(&body) {
                Ok(t) => {
                    tracing::info!(table = %T::KIND, path = %path.display(), "guard baseline from the state dir");
                    Some(t)
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring an invalid table in the state dir");
                    None
                }
            }
        }
        Published {
            dns: one(dir),
            redis: one(dir),
            memcached: one(dir),
            mysql: one(dir),
            lvs: one(dir),
            encoded: HashMap::new(),
            spare: HashMap::new(),
        }
    }
}

/// Where guarded tables go during one sync.
struct Sink<'a> {
    guard: &'a mut Guard,
    now: Instant,
    out: &'a mut Vec<(TableKind, Served)>,
    held: &'a mut Vec<Held>,
    problems: &'a mut Vec<Problem>,
    encoded: &'a mut HashMap<TableKind, (String, Encoded)>,
    spare: &'a mut HashMap<TableKind, Encoded>,
    /// The tables and bodies the new ones replace, freed after the publish (the dns table
    /// may be kept for the next derive instead): its 500k names take tens of ms to free,
    /// which the subscribers need not wait for.
    retired: &'a mut Vec<Box<dyn Send>>,
}

impl Sink<'_> {
    /// Validates a derived table (derive makes valid tables by construction; this keeps a
    /// bug from reaching proxies), guards it, and queues it for publishing.
    ///
    /// Built on the last table this run published (`encoded`): only the entries that
    /// changed are serialized and, when the header stayed, validated; the same walk gives
    /// the delta (see [`ocean_core::table::incremental`]). With a `hint` (the only entries
    /// that can differ from the last table) the walk copies the runs between them whole.
    ///
    /// Returns whether the published table is now `candidate` itself (valid, nothing
    /// held), and the table it replaced, for the caller to retire or reuse.
    fn take<T: Pools>(
        &mut self,
        published: &mut Option<T>,
        candidate: T,
        hint: Option<&BTreeSet<String>>,
    ) -> (bool, Option<T>) {
        let kind = T::KIND;
        let last = self.encoded.get(&kind);
        let previous = published.as_ref().zip(last.map(|(_, e)| e));
        let buffers = self
            .spare
            .remove(&kind)
            .map(Buffers::reclaim)
            .unwrap_or_default();
        if buffers.body_capacity() > 0 {
            metrics::counter!("ocean_control_table_buffers_reused_total", "kind" => kind.as_str())
                .increment(1);
        }
        let encoded = match (hint, previous) {
            (Some(hint), Some(previous)) => candidate.encode_hinted(previous, hint, buffers),
            _ => candidate.encode_after(previous, buffers),
        };
        let valid = match (&encoded, previous) {
            (Ok((_, Some(changes))), Some((old, _))) => candidate.validate_after(old, changes),
            _ => candidate.validate(),
        };
        if let Err(e) = valid {
            let message = format!("derived {kind} table not published (a control bug): {e}");
            tracing::error!(table = %kind, "{message}");
            self.problems.push(Problem {
                app: None,
                table: Some(kind),
                message,
            });
            return (false, None);
        }
        let guarded = self.guard.apply(published.as_ref(), candidate, self.now);
        metrics::gauge!("ocean_control_table_held", "kind" => kind.as_str())
            .set(guarded.held.len() as f64);
        for h in &guarded.held {
            tracing::warn!(table = %kind, pool = %h.pool, published = h.published_backends, candidate = h.candidate_backends, "{}", h.message);
            self.problems.push(Problem {
                app: None,
                table: Some(kind),
                message: h.message.clone(),
            });
        }
        // A held pool makes the table another one than the candidate: encode that.
        let as_derived = guarded.held.is_empty();
        let encoded = if as_derived {
            encoded
        } else {
            guarded.table.encode_after(previous, Buffers::default())
        };
        self.held.extend(guarded.held);
        match encoded {
            Ok((mut encoded, changes)) => {
                let etag = encoded.hash_etag(last.map(|(_, e)| e));
                let mut served = Served::new(
                    etag.clone(),
                    encoded.body.clone(),
                    guarded.table.backend_count(),
                    SystemTime::now(),
                );
                // What changed since the table this run published last, for deltas.
                let base = last.map(|(e, _)| e).filter(|b| **b != etag);
                if let (Some(base), Some(changes)) = (base, changes) {
                    served = served.with_changes(base.clone(), changes);
                }
                self.out.push((kind, served));
                // Only keyed kinds build their body in a buffer; the others serialize
                // whole, and theirs are small.
                match self.encoded.insert(kind, (etag, encoded)) {
                    Some((_, old)) if T::DELTAS => {
                        self.spare.insert(kind, old);
                    }
                    Some(old) => self.retired.push(Box::new(old)),
                    None => {}
                }
                (as_derived, published.replace(guarded.table))
            }
            Err(e) => {
                tracing::error!(table = %kind, error = %e, "cannot serialize table");
                (false, None)
            }
        }
    }

    /// [`Sink::take`] without a hint, the replaced table retired.
    fn take_retiring<T: Pools + Send + 'static>(
        &mut self,
        published: &mut Option<T>,
        candidate: T,
    ) {
        if let (_, Some(old)) = self.take(published, candidate, None) {
            self.retired.push(Box::new(old));
        }
    }
}

/// Runs CPU-heavy work on a blocking thread, so that the async workers keep serving
/// long-polls meanwhile. A panic in `f` goes on as a panic here, as if `f` ran inline;
/// `None` when the runtime is shutting down and did not run it.
async fn off_async<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => Some(r),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

/// Records how long one stage of a sync took, from `since` until now.
fn stage(name: &'static str, since: Instant) {
    metrics::histogram!("ocean_control_sync_stage_seconds", "stage" => name)
        .record(since.elapsed().as_secs_f64());
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Why the sync loop runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// `interval` passed without events.
    Interval,
    /// An event came, then `debounce` passed; the events queued meanwhile are consumed.
    Events,
}

/// When a sync may follow an event.
#[derive(Debug, Clone, Copy)]
enum Settle {
    /// A debounce after the last sync ended (Marathon's events): an event after a quiet
    /// spell is synced at once, as there is nothing to fold it with; the events of a burst
    /// that arrive during a sync or within a debounce after it are one sync, a debounce
    /// after that sync.
    AfterSync(tokio::time::Instant),
    /// A debounce after the event (the apps file: one written in place, not renamed, is
    /// seen mid-write, and the debounce lets the writer finish).
    AfterEvent,
}

/// Waits for the next sync: `interval` without events, or after an event as `settle`
/// says (the events that arrive meanwhile are taken off the queue, not waited for).
/// `None` when `cancel` fires first.
async fn next_sync(
    interval: Duration,
    debounce: Duration,
    settle: Settle,
    dirty: &mut mpsc::Receiver<()>,
    cancel: &CancellationToken,
) -> Option<Wake> {
    tokio::select! {
        _ = cancel.cancelled() => None,
        _ = tokio::time::sleep(interval) => Some(Wake::Interval),
        Some(()) = dirty.recv() => {
            let until = match settle {
                Settle::AfterSync(last_end) => last_end + debounce,
                Settle::AfterEvent => tokio::time::Instant::now() + debounce,
            };
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep_until(until) => {}
            }
            while dirty.try_recv().is_ok() {}
            Some(Wake::Events)
        }
    }
}

impl Engine {
    async fn run(mut self, mut dirty: mpsc::Receiver<()>, cancel: CancellationToken) {
        let mut wake = None;
        loop {
            self.sync(wake).await;
            let settle = match self.source {
                Fetcher::File(_) => Settle::AfterEvent,
                Fetcher::Marathon(_) | Fetcher::Static(..) => {
                    Settle::AfterSync(tokio::time::Instant::now())
                }
            };
            // A failed sync is retried soon even with the event stream up: Marathon may
            // send no event for a long while, and the tables would stay stale (or, at
            // start, unpublished) until the next resync.
            let failing = self
                .shared
                .status
                .lock()
                .map(|s| s.consecutive_failures > 0)
                .unwrap_or(false);
            let interval = match self.source {
                Fetcher::Marathon(_) if !self.shared.stream_up.load(Ordering::Relaxed) => {
                    self.config.poll_while_down
                }
                _ if failing => self.config.poll_while_down,
                _ => self.config.resync,
            };
            let Some(next) =
                next_sync(interval, self.config.debounce, settle, &mut dirty, &cancel).await
            else {
                return;
            };
            tracing::debug!(wake = ?next, "syncing");
            wake = Some(next);
        }
    }

    /// The dns index if there is one, or its build if that has finished.
    async fn take_dns_index(&mut self) -> Option<DnsIndex> {
        match std::mem::take(&mut self.dns_index) {
            DnsIndexSlot::Ready(index) => Some(*index),
            DnsIndexSlot::Building(build) if build.is_finished() => match build.await {
                Ok(index) => index,
                Err(e) => {
                    tracing::error!(error = %e, "building the dns index failed; deriving whole");
                    None
                }
            },
            building => {
                self.dns_index = building;
                None
            }
        }
    }

    async fn resolve(&mut self, hosts: impl IntoIterator<Item = String>) -> Resolved {
        const FRESH: Duration = Duration::from_secs(60);
        let now = Instant::now();
        let todo: Vec<String> = hosts
            .into_iter()
            .filter(|h| {
                self.resolved
                    .get(h)
                    .is_none_or(|(_, at)| now.duration_since(*at) > FRESH)
            })
            .collect();
        let lookups = todo.into_iter().map(|h| async move {
            let addrs: Vec<IpAddr> = match tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::lookup_host((h.as_str(), 0)),
            )
            .await
            {
                Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                _ => Vec::new(),
            };
            let ip = addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .copied();
            (h, ip)
        });
        for (h, ip) in futures_util::future::join_all(lookups).await {
            match ip {
                Some(ip) => {
                    self.resolved.insert(h, (ip, now));
                }
                None => {
                    tracing::warn!(host = %h, "cannot resolve agent host; its tasks are left out")
                }
            }
        }
        self.resolved
            .iter()
            .map(|(h, (ip, _))| (h.clone(), *ip))
            .collect()
    }

    /// Fetches the apps the events named and patches the last list with them
    /// ([`crate::pending`]); `None` when that cannot be done (no list yet, not Marathon, a
    /// fetch failed): then the caller re-lists.
    async fn patch_last_list(&mut self, ids: &[String]) -> Option<(ParsedApps, String)> {
        let Fetcher::Marathon(client) = &self.source else {
            return None;
        };
        let (mut apps, mut bad) = self.last_list.take()?;
        for id in ids {
            let fetched = match client.fetch_app(id).await {
                Ok(body) => body,
                Err(e) => {
                    tracing::debug!(app = %id, error = %e, "fetching one app failed; re-listing");
                    return None;
                }
            };
            metrics::counter!("ocean_control_marathon_fetches_total", "what" => "app").increment(1);
            apps.retain(|a| a.id != *id);
            bad.retain(|b| b.id.as_deref() != Some(id.as_str()));
            match fetched.map(|body| crate::marathon::model::parse_app(&body)) {
                // Marathon has no such app any more.
                None => {}
                Some(Ok(Ok(app))) => apps.push(app),
                Some(Ok(Err(b))) => bad.push(b),
                Some(Err(e)) => {
                    tracing::debug!(app = %id, error = %e, "one app's answer unreadable; re-listing");
                    return None;
                }
            }
        }
        let origin = client
            .current()
            .map_or_else(|| "marathon".to_string(), |u| format!("marathon {u}"));
        Some(((apps, bad), origin))
    }

    async fn sync(&mut self, wake: Option<Wake>) {
        let started = Instant::now();
        // Only after events, and when they named a few apps, are those fetched alone; any
        // other sync re-lists, which covers whatever the events said.
        let named = match (wake, self.pending.take()) {
            (Some(Wake::Events), crate::pending::Fetch::Apps(ids)) => Some(ids),
            _ => None,
        };
        let patched = match &named {
            Some(ids) => self.patch_last_list(ids).await,
            None => None,
        };
        // The apps to normalize again when the rest of the list is the last one's.
        let changed = named.filter(|_| patched.is_some());
        let result = match patched {
            Some(p) => Ok(p),
            None => {
                let fetched = self.source.fetch().await;
                if matches!(self.source, Fetcher::Marathon(_))
                    && matches!(fetched, Ok(_) | Err(FetchError::Unparsable(_)))
                {
                    metrics::counter!("ocean_control_marathon_fetches_total", "what" => "list")
                        .increment(1);
                }
                match fetched {
                    Ok(fetched) => Ok(fetched),
                    Err(FetchError::Unreachable(e) | FetchError::Unparsable(e)) => Err(e),
                    Err(FetchError::Interrupted) => return,
                }
            }
        };
        let now = unix_now();
        let ((apps, bad), origin) = match result {
            Ok(v) => v,
            Err(e) => {
                // Events may have been taken by this sync: the next one re-lists.
                self.pending.all();
                tracing::warn!(error = %e, "sync failed; keeping the last good tables");
                metrics::counter!("ocean_control_syncs_total", "result" => "error").increment(1);
                if let Ok(mut s) = self.shared.status.lock() {
                    s.last_attempt_unix = Some(now);
                    s.last_error = Some(e);
                    s.consecutive_failures += 1;
                }
                return;
            }
        };
        stage("fetch", started);
        let normalize_started = Instant::now();
        let hosts = hostnames(&apps);
        let resolved = self.resolve(hosts).await;
        // The apps the events named alone when the rest is as last normalized; else all of
        // them (~80 ms at 100k tasks). Off the async workers, with the health memory it
        // updates.
        let memory = std::mem::take(&mut self.memory);
        let last = self.last_normalized.take();
        let work = off_async(move || {
            let mut memory = memory;
            let patched = match (changed, last) {
                (Some(ids), Some((last, used))) if used == resolved => {
                    normalize_patched(&last, &apps, &ids, &resolved, &mut memory)
                }
                _ => None,
            };
            let how = if patched.is_some() {
                "patched"
            } else {
                "whole"
            };
            metrics::counter!("ocean_control_normalizes_total", "apps" => how).increment(1);
            let state = patched.unwrap_or_else(|| normalize(&apps, &resolved, &mut memory));
            (Arc::new(state), memory, apps, resolved)
        });
        let Some((state, memory, apps, resolved)) = work.await else {
            return;
        };
        self.memory = memory;
        stage("normalize", normalize_started);
        // Kept for the next events that name a few apps (Marathon only: a file is read
        // whole anyway).
        if matches!(self.source, Fetcher::Marathon(_)) {
            self.last_list = Some((apps, bad.clone()));
            self.last_normalized = Some((Arc::clone(&state), resolved));
        }
        let live = self.live.load_full();
        let derive_started = Instant::now();
        let index = self.take_dns_index().await;
        let recycled = self.dns_recycled.take();
        // Deriving whole takes ~550 ms at 100k tasks (on two threads), patching the dns
        // names after a task change ~20: off the async workers either way.
        let work = {
            let live = live.clone();
            off_async(move || {
                let mut index = index;
                let based_on = index.as_ref().map(|i| Arc::clone(i.base()));
                let patched = index
                    .as_mut()
                    .and_then(|i| derive_all_patched(&state, &live.derive, i, recycled));
                match patched {
                    Some(derived) => (state, derived, index, based_on),
                    // The index declined (new settings, many changes): it is behind now.
                    None => {
                        let derived = derive_all(&state, &live.derive);
                        (state, derived, None, None)
                    }
                }
            })
        };
        let Some((state, mut derived, index, based_on)) = work.await else {
            return;
        };
        // The dns names this derive touched, and the load balancers' names of the table
        // published last, are all that can differ from it when that table was derived from
        // the state the index patched from.
        let hint: Option<BTreeSet<String>> =
            match (derived.dns_touched.take(), based_on, &self.dns_hint_base) {
                (Some(touched), Some(base), Some(published))
                    if Arc::ptr_eq(&base, &published.state) =>
                {
                    let lb = published.lb_names.iter().cloned();
                    Some(touched.into_iter().chain(lb).collect())
                }
                _ => None,
            };
        let dns_lb_names = std::mem::take(&mut derived.dns_lb_names);
        let how = if index.is_some() { "patched" } else { "whole" };
        metrics::counter!("ocean_control_derives_total", "dns" => how).increment(1);
        if derived.dns_recycled {
            metrics::counter!("ocean_control_dns_tables_recycled_total").increment(1);
        }
        metrics::histogram!("ocean_control_derive_seconds")
            .record(derive_started.elapsed().as_secs_f64());
        stage("derive", derive_started);
        if let Some(index) = index {
            self.dns_index = DnsIndexSlot::Ready(Box::new(index));
        }
        let mut problems: Vec<Problem> = bad
            .into_iter()
            .map(|b| Problem {
                app: b.id,
                table: None,
                message: format!("app skipped: {}", b.reason),
            })
            .collect();
        for app in &state.apps {
            for t in app
                .tasks
                .iter()
                .filter(|t| t.running && t.agent_ip.is_none())
            {
                problems.push(Problem {
                    app: Some(app.id.clone()),
                    table: None,
                    message: format!(
                        "task {} left out: cannot resolve agent host {:?}",
                        t.id, t.host
                    ),
                });
            }
        }
        problems.extend(std::mem::take(&mut derived.problems));
        if state.apps.is_empty() {
            problems.push(Problem {
                app: None,
                table: None,
                message: format!("{origin} returned no apps"),
            });
        }

        // Guard, serialize, publish. Serializing and hashing take ~175 ms at 100k tasks
        // (and dropping the table they replace some more): off the async workers.
        let now_i = Instant::now();
        let mut guard = self
            .guard_state
            .take()
            .unwrap_or_else(|| Guard::new(live.guard));
        guard.reconfigure(live.guard);
        let mut p = std::mem::take(&mut self.published);
        let work = off_async(move || {
            let mut out = Vec::new();
            let mut held = Vec::new();
            let mut retired = Vec::new();
            let mut sink = Sink {
                guard: &mut guard,
                now: now_i,
                out: &mut out,
                held: &mut held,
                problems: &mut problems,
                encoded: &mut p.encoded,
                spare: &mut p.spare,
                retired: &mut retired,
            };
            let (dns_as_derived, dns_replaced) = sink.take(&mut p.dns, derived.dns, hint.as_ref());
            sink.take_retiring(&mut p.redis, derived.redis);
            sink.take_retiring(&mut p.memcached, derived.memcached);
            sink.take_retiring(&mut p.mysql, derived.mysql);
            sink.take_retiring(&mut p.lvs, derived.lvs);
            let out = (guard, p, out, held, problems, retired);
            (out, dns_as_derived, dns_replaced)
        });
        let Some(((guard, p, out, held, problems, mut retired), dns_as_derived, dns_replaced)) =
            work.await
        else {
            return;
        };
        // The table just replaced, when it was exactly what was derived from the state
        // `dns_hint_base` names, is the next patched derive's to rewrite.
        let last_base = std::mem::take(&mut self.dns_hint_base);
        match (dns_replaced, last_base) {
            (Some(table), Some(from)) => self.dns_recycled = Some(Recycled { table, from }),
            (Some(table), None) => retired.push(Box::new(table)),
            (None, _) => {}
        }
        // The next patched derive's names are relative to this state: a hint for the
        // publish only while its table is the one published.
        self.dns_hint_base = dns_as_derived.then(|| Derivation {
            state: Arc::clone(&state),
            settings: live.derive.dns.clone(),
            lb_names: dns_lb_names,
        });
        self.guard_state = Some(guard);
        self.published = p;
        let t0 = now_i;
        // Status and problems first: whoever sees the new tables also sees why they are
        // what they are (held pools, skipped apps).
        let tasks = state.apps.iter().map(|a| a.tasks.len()).sum();
        // The tables now hold what the fetch saw; with the event stream down nothing tells
        // us of later changes, so the view ages from the fetch.
        let blind = matches!(self.source, Fetcher::Marathon(_))
            && !self.shared.stream_up.load(Ordering::Relaxed);
        self.shared.freshness.synced(started, blind);
        if let Ok(mut s) = self.shared.status.lock() {
            s.source = origin;
            s.last_attempt_unix = Some(now);
            s.last_success_unix = Some(now);
            s.last_error = None;
            s.consecutive_failures = 0;
            s.apps = state.apps.len();
            s.tasks = tasks;
            s.held = held;
        }
        self.shared.problems.store(Arc::new(problems));
        let replaced = self.shared.state.swap(Arc::clone(&state));
        // Freeing 100k tasks' state, or the tables the new ones replace, takes tens of ms:
        // not on an async worker, and after the publish.
        let replaced = (replaced, retired);
        if matches!(self.dns_index, DnsIndexSlot::Empty) {
            // For the next sync; built after the publish so as not to delay it.
            let settings = live.derive.dns.clone();
            self.dns_index = DnsIndexSlot::Building(tokio::task::spawn_blocking(move || {
                DnsIndex::build(state, &settings)
            }));
        }
        let published = self.shared.store.publish(out);
        stage("publish", now_i);
        tokio::task::spawn_blocking(move || drop(replaced));
        if !published.is_empty() {
            // systemd: READY=1 after the first publish, STATUS= with the tables' ETags.
            let etags = self
                .shared
                .store
                .snapshot()
                .iter()
                .map(|(k, s)| format!("{k}={}", s.etag.get(..12).unwrap_or(&s.etag)))
                .collect::<Vec<_>>()
                .join(" ");
            ocean_core::notify::table_applied("control", &etags);
        }
        if let (Some(dir), false) = (self.config.state_dir.clone(), published.is_empty()) {
            // Off the async threads: the dns table can be large.
            let written = tokio::task::spawn_blocking(move || {
                for (kind, served) in published {
                    if let Err(e) =
                        ocean_core::subscriber::write_cache_file(&dir, kind.as_str(), &served.body)
                    {
                        tracing::warn!(table = %kind, dir = %dir.display(), error = %e, "cannot write the state dir");
                    }
                }
            });
            if let Err(e) = written.await {
                tracing::warn!(error = %e, "state dir writer failed");
            }
        }
        metrics::counter!("ocean_control_syncs_total", "result" => "ok").increment(1);
        metrics::histogram!("ocean_control_sync_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::gauge!("ocean_control_last_sync_timestamp_seconds").set(now as f64);
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            publish_ms = t0.elapsed().as_millis() as u64,
            "synced"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::time::Instant as TokioInstant;

    const INTERVAL: Duration = Duration::from_secs(60);
    const DEBOUNCE: Duration = Duration::from_secs(1);

    /// The apps file watcher wakes a sync when the contents change (a rename over the file,
    /// or a write in place), and not for a rewrite of the same bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_file_watcher_wakes_a_sync_for_new_contents_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("apps.json");
        std::fs::write(&path, b"{\"apps\":[]}").unwrap();
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let cancel = CancellationToken::new();
        let watcher = tokio::spawn(watch_file(
            path.clone(),
            Some(etag_of(b"{\"apps\":[]}")),
            Duration::from_millis(20),
            tx,
            Arc::new(Freshness::default()),
            cancel.clone(),
        ));
        // In-place writes go over the old bytes in one write: `fs::write` truncates first,
        // and a poll between the truncation and the write sees an empty file, which is new
        // contents and wakes a sync of its own.
        let overwrite = |path: &std::path::Path, bytes: &[u8]| {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            file.write_all(bytes).unwrap();
        };
        let woken = |rx: &mut mpsc::Receiver<()>| {
            let got = rx.try_recv().is_ok();
            while rx.try_recv().is_ok() {}
            got
        };
        let settle = || tokio::time::sleep(Duration::from_millis(150));
        settle().await;
        assert!(!woken(&mut rx), "the baseline woke a sync");
        // The same bytes written again: new timestamps, same contents.
        overwrite(&path, b"{\"apps\":[]}");
        settle().await;
        assert!(!woken(&mut rx), "a rewrite of the same bytes woke a sync");
        // New contents renamed over the file.
        let tmp = dir.path().join("apps.json.new");
        std::fs::write(&tmp, b"{\"apps\":[{}]}").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        // A wake is waited for (up to 10 s on a loaded machine), the absence of one for
        // seven periods.
        let wake = tokio::time::timeout(Duration::from_secs(10), rx.recv());
        assert!(
            wake.await.is_ok(),
            "new contents renamed over the file woke nothing"
        );
        settle().await;
        woken(&mut rx);
        // The same size written in place.
        overwrite(&path, b"{\"apps\":[[]]}");
        let wake = tokio::time::timeout(Duration::from_secs(10), rx.recv());
        assert!(
            wake.await.is_ok(),
            "new contents written in place woke nothing"
        );
        settle().await;
        assert!(!woken(&mut rx), "an unchanged file woke a sync");
        cancel.cancel();
        watcher.await.unwrap();
    }

    /// `next_sync` with the tests' interval and debounce, not cancelled: how it woke and
    /// after how long.
    async fn wake(settle: Settle, rx: &mut mpsc::Receiver<()>) -> (Option<Wake>, Duration) {
        let t0 = TokioInstant::now();
        let wake = next_sync(INTERVAL, DEBOUNCE, settle, rx, &CancellationToken::new()).await;
        (wake, t0.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn without_events_the_next_sync_is_after_the_interval() {
        let (_tx, mut rx) = mpsc::channel::<()>(1);
        let last_end = TokioInstant::now();
        let got = wake(Settle::AfterSync(last_end), &mut rx).await;
        assert_eq!(got, (Some(Wake::Interval), INTERVAL));
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_after_a_quiet_spell_is_synced_at_once() {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let last_end = TokioInstant::now();
        tokio::time::sleep(DEBOUNCE * 3).await;
        tx.try_send(()).unwrap();
        let got = wake(Settle::AfterSync(last_end), &mut rx).await;
        assert_eq!(got, (Some(Wake::Events), Duration::ZERO));
        // One that comes half a debounce after a sync waits out the other half.
        let last_end = TokioInstant::now();
        tokio::time::sleep(DEBOUNCE / 2).await;
        tx.try_send(()).unwrap();
        let got = wake(Settle::AfterSync(last_end), &mut rx).await;
        assert_eq!(got, (Some(Wake::Events), DEBOUNCE / 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_change_is_synced_a_debounce_after_it_even_after_quiet() {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        tokio::time::sleep(DEBOUNCE * 3).await;
        tx.try_send(()).unwrap();
        let got = wake(Settle::AfterEvent, &mut rx).await;
        assert_eq!(got, (Some(Wake::Events), DEBOUNCE));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_right_after_a_sync_is_one_sync_a_debounce_after_it() {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        // The first event of the burst came during the sync that just ended.
        tx.try_send(()).unwrap();
        // More events during the debounce: folded into the same sync, not extending it.
        let more = tx.clone();
        let sender = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(DEBOUNCE / 10).await;
                let _full_is_fine = more.try_send(());
            }
        });
        let last_end = TokioInstant::now();
        let got = wake(Settle::AfterSync(last_end), &mut rx).await;
        assert_eq!(
            got,
            (Some(Wake::Events), DEBOUNCE),
            "one debounce after the sync"
        );
        sender.await.unwrap();
        assert!(rx.try_recv().is_err(), "the burst's events were consumed");
        // Quiet afterwards: the next wake is the interval again.
        let last_end = TokioInstant::now();
        let got = wake(Settle::AfterSync(last_end), &mut rx).await;
        assert_eq!(got, (Some(Wake::Interval), INTERVAL));
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_during_the_debounce_stops_at_once() {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        tx.try_send(()).unwrap();
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(DEBOUNCE / 2).await;
            c.cancel();
        });
        let t0 = TokioInstant::now();
        assert_eq!(
            next_sync(INTERVAL, DEBOUNCE, Settle::AfterSync(t0), &mut rx, &cancel).await,
            None
        );
        assert_eq!(t0.elapsed(), DEBOUNCE / 2);
    }
}
