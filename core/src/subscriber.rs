//! The table subscriber: how every proxy gets its table.
//!
//! Sources, in the order a proxy is configured with them:
//! - **control** (`--control URL`, repeatable): long-poll `GET /v1/tables/{kind}` with
//!   `If-None-Match` and `?wait=`. Each poll also reports which ETag this proxy runs and the
//!   last table it refused and why (`running=`, `refused=`, `reason=`), so control's
//!   `/v1/subscribers` shows who lags. With several URLs it polls the first listed among
//!   the replicas with the newest view of Marathon, probes the others' `/healthz`, and never
//!   takes a table from a replica behind another (see [`crate::replicas`]); on failure it
//!   moves on and backs off with full jitter. For the kinds that take deltas (`dns`) the poll also says
//!   `since=` the running ETag; a delta answer is applied to the running table and kept
//!   only if the result has the ETag the delta names, else the whole table is fetched (see
//!   [`crate::table::delta`]). `https://` URLs are checked against `--control-ca` when given (and
//!   then only against it), else against the system's trust store.
//! - **file** (`--table-file FILE`): read at start, re-read when its contents change.
//! - **cache** (`--table-cache DIR`): every accepted table is written atomically to
//!   `DIR/{kind}.json`; at start, when no control URL answers, the cached table is loaded so a
//!   proxy serves even when control and Marathon are down.
//!
//! Every candidate is parsed and validated before it is published; a refused table is
//! logged, counted (`ocean_table_updates_total{result="refused"}`) and the old table stays.
//! Publishing is one `ArcSwapOption::store` (for lock-free reads on the data path) and one
//! `watch` send (to wake the proxy's rebuild task).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwapOption;
use rand::Rng;
use reqwest::StatusCode;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::replicas::{lag_of, Replicas};
use crate::secret::Secret;
use crate::table::{quote_etag, Table, TableError, Versioned};
use crate::tls::{PemFile, TlsError};

/// Where and how a subscriber gets its table.
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    /// Control base URLs, tried in order; empty when `table_file` is used.
    pub controls: Vec<Url>,
    /// A static table file, re-read when it changes.
    pub table_file: Option<PathBuf>,
    /// Directory for the last good table (`{kind}.json`).
    pub cache_dir: Option<PathBuf>,
    /// How long control may hold a long-poll before answering 304.
    pub wait: Duration,
    /// Bearer token for control's API.
    pub token: Option<Secret>,
    /// CA certificates (PEM) that `https://` control URLs must chain to, instead of the
    /// system's trust store (`--control-ca`).
    pub control_ca: Option<PathBuf>,
    /// How this proxy names itself to control (`/v1/subscribers`).
    pub subscriber_id: String,
    /// How often the table file is checked for changes.
    pub file_poll: Duration,
    /// Upper bound of the retry backoff after a failure.
    pub backoff_max: Duration,
    /// With several controls: how often each is asked how current it is (`/healthz`), to
    /// move to the first listed of the newest ones (see [`crate::replicas`]).
    pub probe_every: Duration,
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        SubscriberConfig {
            controls: Vec::new(),
            table_file: None,
            cache_dir: None,
            wait: Duration::from_secs(30),
            token: None,
            control_ca: None,
            subscriber_id: default_subscriber_id(),
            file_poll: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
            probe_every: Duration::from_secs(5),
        }
    }
}

/// `hostname:pid`, what a subscriber calls itself unless configured otherwise.
pub fn default_subscriber_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host}:{}", std::process::id())
}

/// Configuration problems found before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("give either --control or --table-file, not both")]
    BothSources,
    #[error("no table source: give --control URL or --table-file FILE")]
    NoSource,
    #[error("--control {0}: only http and https URLs are supported")]
    BadScheme(Url),
    #[error(transparent)]
    ControlCa(#[from] TlsError),
    #[error("HTTP client for control: {0}")]
    Client(reqwest::Error),
}

impl SubscriberConfig {
    /// Checks that exactly one kind of source is configured.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (self.controls.is_empty(), self.table_file.is_some()) {
            (false, true) => return Err(ConfigError::BothSources),
            (true, false) => return Err(ConfigError::NoSource),
            _ => {}
        }
        if let Some(u) = self
            .controls
            .iter()
            .find(|u| !matches!(u.scheme(), "http" | "https"))
        {
            return Err(ConfigError::BadScheme(u.clone()));
        }
        if let Some(ca) = &self.control_ca {
            crate::tls::cert_chain(PemFile::new("--control-ca", ca))?;
        }
        Ok(())
    }

    /// The HTTP client that polls control: trusts `control_ca` alone when given, else the
    /// system's trust store, for `https://` URLs.
    ///
    /// # Errors
    /// An unusable `control_ca` file, or a client reqwest cannot build.
    pub fn client(&self) -> Result<reqwest::Client, ConfigError> {
        let mut b = crate::http::client_builder(Duration::from_secs(2))
            .timeout(self.wait + Duration::from_secs(10));
        if let Some(ca) = &self.control_ca {
            b = crate::http::trust_only(b, PemFile::new("--control-ca", ca))?;
        }
        b.build().map_err(ConfigError::Client)
    }
}

/// What the subscriber knows about itself, for `/healthz` and `/table`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SubscriberStatus {
    /// Where the running table came from: `control <url>`, `file <path>`, `cache <path>`.
    pub source: Option<String>,
    /// The last failure to reach a source, cleared on success.
    pub last_error: Option<String>,
    /// The ETag and reason of the last refused table.
    pub last_refused: Option<Refusal>,
    pub accepted: u64,
    pub refused: u64,
    /// When the running table was accepted (Unix seconds).
    pub applied_unix: Option<u64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Refusal {
    pub etag: String,
    pub reason: String,
}

/// The read side: what a proxy holds to read the current table and hear of new ones.
pub struct TableWatch<T> {
    current: Arc<ArcSwapOption<Versioned<T>>>,
    rx: watch::Receiver<Option<Arc<Versioned<T>>>>,
    status: Arc<Mutex<SubscriberStatus>>,
}

impl<T> Clone for TableWatch<T> {
    fn clone(&self) -> Self {
        TableWatch {
            current: self.current.clone(),
            rx: self.rx.clone(),
            status: self.status.clone(),
        }
    }
}

impl<T: Table> TableWatch<T> {
    /// The current table, if one has been accepted. Lock-free; do not hold across `.await`.
    pub fn load(&self) -> Option<Arc<Versioned<T>>> {
        self.current.load_full()
    }

    /// Waits until a table newer than the last one seen by this watch is published.
    /// Returns `None` when the subscriber has stopped.
    pub async fn changed(&mut self) -> Option<Arc<Versioned<T>>> {
        self.rx.changed().await.ok()?;
        self.rx.borrow_and_update().clone()
    }

    /// Waits for the first table (returns at once if there is one).
    pub async fn first(&mut self) -> Option<Arc<Versioned<T>>> {
        loop {
            if let Some(t) = self.rx.borrow_and_update().clone() {
                return Some(t);
            }
            self.rx.changed().await.ok()?;
        }
    }

    /// A copy of the subscriber's status.
    pub fn status(&self) -> SubscriberStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The running table as the status page shows it (`None` before the first one).
    pub fn applied(&self) -> Option<crate::admin::AppliedTable> {
        let t = self.load()?;
        let s = self.status();
        Some(crate::admin::AppliedTable {
            kind: T::KIND.as_str().to_string(),
            etag: t.etag.clone(),
            source: s.source,
            applied_unix: s.applied_unix,
            last_error: s.last_error,
            last_refused: s.last_refused.map(|r| (r.etag, r.reason)),
        })
    }

    /// The `/healthz` answer of a daemon serving this table: `starting` until the first
    /// table, `stale` while the source fails (the last good table is still served), else
    /// `ok`.
    pub fn health(&self) -> crate::admin::Health {
        match (self.load(), self.status().last_error) {
            (None, _) => crate::admin::Health {
                status: "starting",
                reason: Some(format!("no {} table yet", T::KIND)),
            },
            (Some(_), Some(e)) => crate::admin::Health {
                status: "stale",
                reason: Some(e),
            },
            (Some(_), None) => crate::admin::Health {
                status: "ok",
                reason: None,
            },
        }
    }
}

/// The write side, owned by the subscriber task.
struct Publisher<T> {
    current: Arc<ArcSwapOption<Versioned<T>>>,
    tx: watch::Sender<Option<Arc<Versioned<T>>>>,
    status: Arc<Mutex<SubscriberStatus>>,
    cache_dir: Option<PathBuf>,
}

/// What happened to one candidate table.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Unchanged,
    Refused,
}

impl<T: Table> Publisher<T> {
    fn running_etag(&self) -> Option<String> {
        self.current.load().as_ref().map(|v| v.etag.clone())
    }

    fn set_status(&self, f: impl FnOnce(&mut SubscriberStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    /// Parses, validates and (if new) publishes a table body.
    fn offer(&self, body: &[u8], source: &str, write_cache: bool) -> Outcome {
        let kind = T::KIND.as_str();
        let parsed = T::from_json(body).and_then(|t| {
            Versioned::new(t).map_err(|e| TableError::Parse {
                kind: T::KIND,
                message: e.to_string(),
            })
        });
        match parsed {
            Ok(v) => self.accept(v, source, write_cache),
            Err(e) => {
                let etag = crate::table::etag_of(body);
                tracing::error!(kind, etag, source, error = %e, "table refused; keeping the current one");
                metrics::counter!("ocean_table_updates_total", "kind" => kind, "result" => "refused").increment(1);
                self.set_status(|s| {
                    s.last_refused = Some(Refusal {
                        etag,
                        reason: e.to_string(),
                    });
                    s.refused += 1;
                });
                Outcome::Refused
            }
        }
    }
}

impl<T: Table> Publisher<T> {
    /// Publishes a parsed and validated table (if it is not the running one).
    fn accept(&self, v: Arc<Versioned<T>>, source: &str, write_cache: bool) -> Outcome {
        let kind = T::KIND.as_str();
        if self.running_etag().as_deref() == Some(v.etag.as_str()) {
            metrics::counter!("ocean_table_updates_total", "kind" => kind, "result" => "unchanged")
                .increment(1);
            return Outcome::Unchanged;
        }
        if write_cache {
            if let Some(dir) = &self.cache_dir {
                if let Err(e) = write_cache_file(dir, kind, &v.body) {
                    tracing::warn!(kind, dir = %dir.display(), error = %e, "could not write table cache");
                }
            }
        }
        tracing::info!(kind, etag = %v.etag, backends = v.table.backend_count(), source, "table accepted");
        metrics::counter!("ocean_table_updates_total", "kind" => kind, "result" => "accepted")
            .increment(1);
        metrics::gauge!("ocean_table_backends", "kind" => kind).set(v.table.backend_count() as f64);
        metrics::gauge!("ocean_table_etag_prefix", "kind" => kind).set(etag_prefix(&v.etag));
        metrics::gauge!("ocean_table_accepted_timestamp_seconds", "kind" => kind).set(unix_now());
        self.current.store(Some(v.clone()));
        // systemd: READY=1 with the first table (the proxy's table worker picks it up from
        // the watch at once), STATUS= with every later ETag.
        crate::notify::table_applied(kind, &v.etag);
        self.tx.send_replace(Some(v));
        self.set_status(|s| {
            s.source = Some(source.to_string());
            s.accepted += 1;
            s.applied_unix = Some(crate::status_page::unix_now());
        });
        Outcome::Accepted
    }

    /// Applies a delta from control to the running table (off the async threads: at 100k
    /// names the check re-serializes and hashes the whole table). `Err` means the full table
    /// must be fetched: no running table, or a delta that does not make the table it names.
    async fn offer_delta(&self, doc: bytes::Bytes, source: &str) -> Result<Outcome, String> {
        let kind = T::KIND.as_str();
        let running = self
            .current
            .load_full()
            .ok_or_else(|| "a delta came but no table runs yet".to_string())?;
        let from = running.etag.clone();
        let applied = tokio::task::spawn_blocking(move || {
            running
                .table
                .apply_delta(&running.etag, &running.encoded, &doc)
                .map(|r| r.map_err(|e| e.to_string()))
                .unwrap_or_else(|| Err(format!("the {kind} table takes no deltas")))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        match applied {
            Ok(a) => {
                metrics::counter!("ocean_table_deltas_total", "kind" => kind, "result" => "applied")
                    .increment(1);
                tracing::debug!(kind, etag = %a.etag, changed = a.changed.len(), "delta applied");
                let v = Arc::new(Versioned {
                    etag: a.etag,
                    table: a.table,
                    body: a.encoded.body.clone(),
                    encoded: Arc::new(a.encoded),
                    delta: Some(Arc::new(crate::table::DeltaOrigin {
                        from,
                        changed: a.changed,
                    })),
                });
                Ok(self.accept(v, source, true))
            }
            Err(e) => {
                metrics::counter!("ocean_table_deltas_total", "kind" => kind, "result" => "refused")
                    .increment(1);
                tracing::warn!(kind, source, error = %e, "delta refused; fetching the whole table");
                Err(e)
            }
        }
    }
}

/// The first 8 hex digits of an ETag as a number, so dashboards can see versions change.
fn etag_prefix(etag: &str) -> f64 {
    u32::from_str_radix(etag.get(..8).unwrap_or("0"), 16).unwrap_or(0) as f64
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The cache file of a kind in a cache directory.
pub fn cache_path(dir: &Path, kind: &str) -> PathBuf {
    dir.join(format!("{kind}.json"))
}

/// Writes `body` to `DIR/{kind}.json` atomically (temp file, fsync, rename), mode 0600: the
/// mysql table holds passwords.
pub fn write_cache_file(dir: &Path, kind: &str, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    let path = cache_path(dir, kind);
    let tmp = dir.join(format!(".{kind}.json.{}.tmp", std::process::id()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    // Make the rename durable too; a failure here only weakens crash safety.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Starts a subscriber for table type `T`. The returned watch has no table until the first
/// one is accepted; the task ends when `cancel` fires.
pub fn spawn<T: Table>(
    config: SubscriberConfig,
    cancel: CancellationToken,
) -> (TableWatch<T>, tokio::task::JoinHandle<()>) {
    crate::metrics::handle();
    let current = Arc::new(ArcSwapOption::empty());
    let (tx, rx) = watch::channel(None);
    let status = Arc::new(Mutex::new(SubscriberStatus::default()));
    let publisher = Publisher {
        current: current.clone(),
        tx,
        status: status.clone(),
        cache_dir: config.cache_dir.clone(),
    };
    let handle = tokio::spawn(async move {
        if let Some(file) = config.table_file.clone() {
            run_file(publisher, file, config.file_poll, cancel).await;
        } else {
            run_control(publisher, config, cancel).await;
        }
    });
    (
        TableWatch {
            current,
            rx,
            status,
        },
        handle,
    )
}

async fn run_file<T: Table>(
    publisher: Publisher<T>,
    file: PathBuf,
    poll: Duration,
    cancel: CancellationToken,
) {
    let kind = T::KIND.as_str();
    let source = format!("file {}", file.display());
    let mut last_seen: Option<Vec<u8>> = None;
    loop {
        match tokio::fs::read(&file).await {
            Ok(body) => {
                if last_seen.as_deref() != Some(body.as_slice()) {
                    publisher.offer(&body, &source, true);
                    publisher.set_status(|s| s.last_error = None);
                    last_seen = Some(body);
                }
            }
            Err(e) => {
                if last_seen.is_some()
                    || publisher
                        .status
                        .lock()
                        .map(|s| s.last_error.is_none())
                        .unwrap_or(true)
                {
                    tracing::warn!(kind, file = %file.display(), error = %e, "cannot read table file; keeping the current table");
                }
                metrics::counter!("ocean_table_source_errors_total", "kind" => kind, "source" => "file").increment(1);
                publisher.set_status(|s| s.last_error = Some(format!("{}: {e}", file.display())));
                last_seen = None;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Why one poll of control failed.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("control answered HTTP {0}")]
    Status(StatusCode),
    #[error("unreadable table body: {0}")]
    Body(String),
}

async fn run_control<T: Table>(
    publisher: Publisher<T>,
    config: SubscriberConfig,
    cancel: CancellationToken,
) {
    let kind = T::KIND.as_str();
    let client = match config.client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(kind, error = %e, "cannot build HTTP client; subscriber stopped");
            return;
        }
    };
    let backoff_min = Duration::from_millis(100);
    let mut backoff = backoff_min;
    let replicas = Arc::new(Mutex::new(Replicas::new(config.controls.len())));
    // Which replica the long-poll is on, and a wake-up when a probe prefers another.
    let polling = Arc::new(AtomicUsize::new(0));
    let switch = Arc::new(tokio::sync::Notify::new());
    if config.controls.len() > 1 {
        tokio::spawn(probe_replicas(
            client.clone(),
            config.clone(),
            replicas.clone(),
            polling.clone(),
            switch.clone(),
            cancel.clone(),
        ));
    }
    let mut idx = 0usize;
    // The ETag of the last table control sent us, accepted or not: what we tell control we
    // already have, so a refused table is not sent again and again.
    let mut seen: Option<String> = None;
    let mut failures_in_a_row = 0usize;
    let mut tried_cache = false;
    // Set when a delta did not make the table it named: the next poll asks for the whole
    // table.
    let mut want_full = false;
    loop {
        let (next, every_one_down) = {
            let r = lock(&replicas);
            (r.preferred(idx), r.all_down())
        };
        if next != idx {
            // While every replica fails they are tried in turn: the failures are logged.
            if every_one_down {
                tracing::debug!(kind, to = %config.controls[next], "trying the next control replica");
            } else {
                tracing::info!(kind, from = %config.controls[idx], to = %config.controls[next], "polling another control replica");
                metrics::counter!("ocean_table_control_switches_total", "kind" => kind)
                    .increment(1);
            }
            // Another replica's table: nothing it sent is known yet.
            seen = None;
            idx = next;
        }
        polling.store(idx, Ordering::Relaxed);
        let Some(base) = config.controls.get(idx) else {
            return;
        };
        // The first poll of all is quick: at start we want a table now, or the cache.
        let wait = if seen.is_none() && publisher.running_etag().is_none() {
            Duration::ZERO
        } else {
            config.wait
        };
        let refusal = publisher
            .status
            .lock()
            .ok()
            .and_then(|s| s.last_refused.clone());
        let running = publisher.running_etag();
        // A delta is asked for only from the table we run, and only when that is also the
        // last one control sent (after a refusal, control's table is not ours to patch).
        let since = running
            .as_deref()
            .filter(|r| T::DELTAS && !want_full && seen.as_deref() == Some(*r));
        // `seen` is also what `If-None-Match` says: after a switch, the running table's ETag
        // (replicas agree on ETags), so an unchanged table is a 304.
        let seen_or_running = seen.as_deref().or(running.as_deref());
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            // A probe found a better replica: leave this long-poll.
            _ = switch.notified() => continue,
            r = poll_once(&client, base, kind, &config, Poll { wait, seen: seen_or_running, since, running: running.as_deref(), refusal: refusal.as_ref() }) => r,
        };
        let behind = match &result {
            Ok((_, lag)) => {
                let mut r = lock(&replicas);
                r.answered(idx, *lag, Instant::now());
                // Never a step back in time: a replica behind another that answers is left
                // before its table is taken.
                r.behind(idx)
            }
            Err(_) => false,
        };
        match result {
            Ok(_) if behind => {
                tracing::info!(kind, control = %base, "this control replica is behind another; its table is not taken");
            }
            Ok((Polled::Delta { etag, doc }, _)) => {
                let source = format!("control {base}");
                match publisher.offer_delta(doc, &source).await {
                    Ok(_) => seen = Some(etag),
                    Err(_) => want_full = true,
                }
                failures_in_a_row = 0;
                backoff = backoff_min;
                publisher.set_status(|s| s.last_error = None);
            }
            Ok((Polled::Full { etag, body }, _)) => {
                want_full = false;
                let source = format!("control {base}");
                // A refusal is reported to control on every later poll (from the status).
                let outcome = publisher.offer(&body, &source, true);
                if outcome == Outcome::Refused && !tried_cache && publisher.running_etag().is_none()
                {
                    // Nothing to serve and control's table is unusable: the cache is better
                    // than nothing until control sends a valid table.
                    tried_cache = true;
                    load_cache(&publisher).await;
                }
                seen = Some(etag);
                failures_in_a_row = 0;
                backoff = backoff_min;
                publisher.set_status(|s| s.last_error = None);
            }
            Ok((Polled::NotModified, _)) => {
                if seen.is_none() {
                    seen = running;
                }
                failures_in_a_row = 0;
                backoff = backoff_min;
                publisher.set_status(|s| s.last_error = None);
            }
            Err(e) => {
                lock(&replicas).failed(idx);
                failures_in_a_row += 1;
                metrics::counter!("ocean_table_source_errors_total", "kind" => kind, "source" => "control").increment(1);
                if failures_in_a_row <= config.controls.len() {
                    tracing::warn!(kind, control = %base, error = %e, "control unreachable; trying the next one");
                } else {
                    tracing::debug!(kind, control = %base, error = %e, "control still unreachable");
                }
                publisher.set_status(|s| s.last_error = Some(format!("{base}: {e}")));
                if !tried_cache
                    && failures_in_a_row >= config.controls.len()
                    && publisher.running_etag().is_none()
                {
                    tried_cache = true;
                    load_cache(&publisher).await;
                }
                let sleep = rand::rng().random_range(Duration::ZERO..=backoff);
                backoff = (backoff * 2).min(config.backoff_max);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(sleep) => {}
                }
            }
        }
    }
}

/// `path` under a control base URL (which may have a path of its own).
fn at(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    url.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
    url
}

fn lock(replicas: &Mutex<Replicas>) -> std::sync::MutexGuard<'_, Replicas> {
    replicas.lock().unwrap_or_else(|p| p.into_inner())
}

/// With several controls: asks each, every `probe_every`, how current it is (`/healthz`
/// and its [`crate::replicas::LAG_HEADER`]), and wakes the long-poll when another replica is preferred to
/// the one it is on (a failed one came back, or the polled one fell behind).
async fn probe_replicas(
    client: reqwest::Client,
    config: SubscriberConfig,
    replicas: Arc<Mutex<Replicas>>,
    polling: Arc<AtomicUsize>,
    switch: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
) {
    let timeout = config.probe_every.max(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(config.probe_every) => {}
        }
        let probes = config.controls.iter().enumerate().map(|(i, base)| {
            let req = client.get(at(base, "/healthz")).timeout(timeout).send();
            async move { (i, req.await) }
        });
        for (i, answer) in futures_util::future::join_all(probes).await {
            let mut r = lock(&replicas);
            match answer {
                // A control without tables yet (503 `starting`) sends no lag: not usable.
                Ok(resp) => match lag_of(resp.headers()) {
                    Some(lag) => r.answered(i, Some(lag), Instant::now()),
                    None if resp.status().is_success() => r.answered(i, None, Instant::now()),
                    None => r.failed(i),
                },
                Err(_) => r.failed(i),
            }
        }
        let current = polling.load(Ordering::Relaxed);
        if lock(&replicas).preferred(current) != current {
            switch.notify_one();
        }
    }
}

async fn load_cache<T: Table>(publisher: &Publisher<T>) {
    let kind = T::KIND.as_str();
    let Some(dir) = &publisher.cache_dir else {
        return;
    };
    let path = cache_path(dir, kind);
    match tokio::fs::read(&path).await {
        Ok(body) => {
            tracing::warn!(kind, cache = %path.display(), "control unreachable at start: serving the cached table");
            publisher.offer(&body, &format!("cache {}", path.display()), false);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(kind, cache = %path.display(), "control unreachable at start and no cached table yet");
        }
        Err(e) => {
            tracing::error!(kind, cache = %path.display(), error = %e, "cannot read the table cache")
        }
    }
}

/// What one long-poll asks with.
struct Poll<'a> {
    wait: Duration,
    /// The ETag of the last table control sent (`If-None-Match`).
    seen: Option<&'a str>,
    /// The ETag to get a delta from (`?since=`), if any.
    since: Option<&'a str>,
    running: Option<&'a str>,
    refusal: Option<&'a Refusal>,
}

/// What one long-poll brought.
enum Polled {
    /// 304: nothing new.
    NotModified,
    /// A whole table.
    Full { etag: String, body: bytes::Bytes },
    /// A delta document from the table we run to the one with ETag `etag`.
    Delta { etag: String, doc: bytes::Bytes },
}

/// The response header that marks a delta (its value: the ETag the delta starts from).
pub const DELTA_HEADER: &str = "x-ocean-delta-from";

/// One long-poll.
async fn poll_once(
    client: &reqwest::Client,
    base: &Url,
    kind: &str,
    config: &SubscriberConfig,
    poll: Poll<'_>,
) -> Result<(Polled, Option<Duration>), PollError> {
    let Poll {
        wait,
        seen,
        since,
        running,
        refusal,
    } = poll;
    let mut url = at(base, &format!("/v1/tables/{kind}"));
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("wait", &format!("{}ms", wait.as_millis()));
        q.append_pair("subscriber", &config.subscriber_id);
        if let Some(r) = running {
            q.append_pair("running", r);
        }
        if let Some(s) = since {
            q.append_pair("since", s);
        }
        if let Some(r) = refusal {
            q.append_pair("refused", &r.etag);
            // Keep the URL small: the first 200 bytes of the reason say enough.
            let reason: String = r.reason.chars().take(200).collect();
            q.append_pair("reason", &reason);
        }
    }
    let started = Instant::now();
    // Full tables come gzip-compressed (reqwest here does not inflate by itself).
    let mut req = client
        .get(url)
        .header(reqwest::header::ACCEPT_ENCODING, "gzip");
    if let Some(etag) = seen {
        req = req.header(reqwest::header::IF_NONE_MATCH, quote_etag(etag));
    }
    if let Some(token) = &config.token {
        req = req.bearer_auth(token.expose());
    }
    let resp = req.send().await?;
    let lag = lag_of(resp.headers());
    let polled = match resp.status() {
        StatusCode::NOT_MODIFIED => {
            tracing::trace!(
                kind,
                waited_ms = started.elapsed().as_millis() as u64,
                "no change"
            );
            Polled::NotModified
        }
        StatusCode::OK => {
            let etag = resp
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(|v| crate::table::unquote_etag(v).to_string());
            let gzipped = resp
                .headers()
                .get(reqwest::header::CONTENT_ENCODING)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
            let delta = resp.headers().contains_key(DELTA_HEADER);
            let body = resp.bytes().await?;
            let body = if gzipped {
                // Inflating a large table takes tens of ms: off the runtime's threads.
                tokio::task::spawn_blocking(move || {
                    crate::table::gzip::inflate(&body, crate::table::gzip::MAX_INFLATED)
                })
                .await
                .map_err(|e| PollError::Body(e.to_string()))?
                .map_err(|e| PollError::Body(format!("gzip: {e}")))?
                .into()
            } else {
                body
            };
            if delta {
                let etag = etag.ok_or_else(|| PollError::Body("a delta without ETag".into()))?;
                Polled::Delta { etag, doc: body }
            } else {
                let etag = etag.unwrap_or_else(|| crate::table::etag_of(&body));
                Polled::Full { etag, body }
            }
        }
        s => return Err(PollError::Status(s)),
    };
    Ok((polled, lag))
}

/// Where a proxy gets its table; shared by every proxy subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct SubscriberArgs {
    /// Control base URL; repeat for several control instances (tried in order).
    #[arg(long = "control", value_name = "URL", conflicts_with = "table_file")]
    pub control: Vec<url::Url>,
    /// A static table file (the JSON control serves), re-read when it changes.
    #[arg(long, value_name = "FILE")]
    pub table_file: Option<PathBuf>,
    /// Directory for the last good table; used at start when no control answers.
    #[arg(long, value_name = "DIR")]
    pub table_cache: Option<PathBuf>,
    /// File with control's API bearer token.
    #[arg(long = "control-token-file", value_name = "FILE")]
    pub control_token_file: Option<PathBuf>,
    /// CA certificates (PEM) an `https://` control must chain to; without it, the system's
    /// trust store.
    #[arg(long = "control-ca", value_name = "FILE")]
    pub control_ca: Option<PathBuf>,
    /// How long one long-poll may wait for a change.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub long_poll_wait: Duration,
    /// How this proxy names itself to control (default: hostname:pid).
    #[arg(long)]
    pub subscriber_id: Option<String>,
    /// With several --control: how often each is asked how current its view of Marathon
    /// is; the proxy polls the first listed among the newest.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub control_probe_interval: Duration,
}

impl SubscriberArgs {
    /// The subscriber config these flags describe (reads the token file).
    pub fn into_config(self) -> anyhow::Result<SubscriberConfig> {
        let mut c = SubscriberConfig {
            controls: self.control,
            table_file: self.table_file,
            cache_dir: self.table_cache,
            wait: self.long_poll_wait,
            control_ca: self.control_ca,
            probe_every: self.control_probe_interval,
            ..Default::default()
        };
        if let Some(id) = self.subscriber_id {
            c.subscriber_id = id;
        }
        if let Some(f) = self.control_token_file {
            let t = std::fs::read_to_string(&f)
                .with_context(|| format!("--control-token-file {}", f.display()))?;
            let t = t.trim();
            anyhow::ensure!(
                !t.is_empty(),
                "--control-token-file {}: the file is empty",
                f.display()
            );
            c.token = Some(Secret::new(t.to_string()));
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_ca_is_checked_at_validate_and_the_client_builds_either_way() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.cert.pem()).unwrap();
        let mut c = SubscriberConfig {
            controls: vec![Url::parse("https://127.0.0.1:1/").unwrap()],
            ..Default::default()
        };
        // No CA: reqwest's default verifier (the system's roots).
        c.validate().unwrap();
        c.client().unwrap();
        c.control_ca = Some(ca_path);
        c.validate().unwrap();
        c.client().unwrap();
        c.control_ca = Some(dir.path().join("missing.pem"));
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("--control-ca") && e.contains("missing.pem"),
            "{e}"
        );
        c.token = Some(Secret::new("tok-123".into()));
        assert!(!format!("{c:?}").contains("tok-123"));
    }
    use crate::table::redis::{RedisCluster, RedisTable};

    fn table(port: u16) -> Vec<u8> {
        let t = RedisTable {
            clusters: vec![RedisCluster {
                name: "c".into(),
                listen_port: port,
                nodes: vec![std::net::SocketAddr::from(([127, 0, 0, 1], 7000))],
            }],
        };
        serde_json::to_vec(&t).unwrap_or_default()
    }

    #[tokio::test]
    async fn health_is_starting_until_the_first_table_then_ok() -> anyhow::Result<()> {
        // A control that does not answer and nothing cached: starting, naming the kind.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let cancel = CancellationToken::new();
        let config = SubscriberConfig {
            controls: vec![Url::parse(&format!("http://127.0.0.1:{port}"))?],
            ..Default::default()
        };
        let (w, task) = spawn::<RedisTable>(config, cancel.clone());
        let h = w.health();
        assert_eq!(h.status, "starting");
        assert_eq!(h.reason.as_deref(), Some("no redis table yet"));
        cancel.cancel();
        let _ = task.await;

        let dir = tempfile::tempdir()?;
        let file = dir.path().join("redis.json");
        std::fs::write(&file, table(6380))?;
        let cancel = CancellationToken::new();
        let config = SubscriberConfig {
            table_file: Some(file),
            ..Default::default()
        };
        let (mut w, task) = spawn::<RedisTable>(config, cancel.clone());
        w.first().await.ok_or_else(|| anyhow::anyhow!("no table"))?;
        let h = w.health();
        assert_eq!((h.status, h.reason), ("ok", None));
        cancel.cancel();
        let _ = task.await;
        Ok(())
    }

    #[tokio::test]
    async fn table_file_is_loaded_reloaded_and_bad_versions_are_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("redis.json");
        std::fs::write(&file, table(6380))?;
        let cancel = CancellationToken::new();
        let config = SubscriberConfig {
            table_file: Some(file.clone()),
            cache_dir: Some(dir.path().join("cache")),
            file_poll: Duration::from_millis(20),
            ..Default::default()
        };
        let (mut w, task) = spawn::<RedisTable>(config, cancel.clone());
        let first = w.first().await.ok_or_else(|| anyhow::anyhow!("no table"))?;
        assert_eq!(first.table.clusters[0].listen_port, 6380);

        // An invalid table (port 0) is refused and the old one stays.
        std::fs::write(&file, table(0))?;
        tokio::time::timeout(Duration::from_secs(5), async {
            while w.status().refused == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await?;
        assert_eq!(
            w.load().map(|t| t.table.clusters[0].listen_port),
            Some(6380)
        );
        let refusal = w
            .status()
            .last_refused
            .map(|r| r.reason)
            .unwrap_or_default();
        assert!(refusal.contains("listen_port is 0"), "{refusal}");

        // A good new table replaces it and lands in the cache.
        std::fs::write(&file, table(6390))?;
        let next = tokio::time::timeout(Duration::from_secs(5), w.changed()).await?;
        assert_eq!(next.map(|t| t.table.clusters[0].listen_port), Some(6390));
        let cached = std::fs::read(cache_path(&dir.path().join("cache"), "redis"))?;
        assert_eq!(
            RedisTable::from_json(&cached)?.clusters[0].listen_port,
            6390
        );
        cancel.cancel();
        task.await?;
        Ok(())
    }

    #[test]
    fn exactly_one_source_is_required() {
        let mut c = SubscriberConfig::default();
        assert!(matches!(c.validate(), Err(ConfigError::NoSource)));
        c.table_file = Some("x".into());
        assert!(c.validate().is_ok());
        c.controls
            .push(Url::parse("http://127.0.0.1:7070").unwrap_or_else(|_| unreachable!()));
        assert!(matches!(c.validate(), Err(ConfigError::BothSources)));
    }
}
