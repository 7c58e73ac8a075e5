//! `ocean lvs-sync`: flags, config, and the loop that reconciles on every new table and
//! every `--resync`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use ocean_core::subscriber::{self, SubscriberArgs, SubscriberConfig};
use ocean_core::table::lvs::LvsTable;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{Backend, BackendKind, Output};
use crate::host::HostAddrs;
use crate::model::Cidr;
use crate::plan::PlanConfig;
use crate::reconcile::{Guard, Reason, ReconcileReport, Reconciler, DEFAULT_MAX_SERVICES};

/// `ocean lvs-sync` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub table: SubscriberArgs,
    /// Where changes go: the kernel (`netlink`), or printed as `ipvsadm` commands
    /// (`dry-run`, reads nothing) or as `ipvsadm-restore` input.
    #[arg(long, value_enum, default_value = "netlink")]
    pub backend: BackendKind,
    /// This director's VIPs (CIDR, repeatable); services outside are refused. Default: all.
    /// Loopback, unspecified, multicast, broadcast and link-local VIPs, and this host's own
    /// addresses outside these ranges, are refused whatever the table says.
    #[arg(long = "vip", value_name = "CIDR")]
    pub vips: Vec<Cidr>,
    /// Most virtual services a table may have: a table with more is refused whole, logged
    /// and counted, and the last good one stays (0 = no cap).
    #[arg(long, default_value_t = DEFAULT_MAX_SERVICES)]
    pub max_services: usize,
    /// File that records the services this daemon created, so a later run may change or
    /// delete them; services neither desired nor recorded are never touched.
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,
    /// How long a leaving real server stays at weight 0 before it is deleted (sooner when
    /// its connections reach 0; at once for UDP).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// Period of the full reconcile that repairs drift.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub resync: Duration,
    /// The most services + real servers one reconcile may remove without --force.
    #[arg(long, default_value_t = 100)]
    pub max_delete: usize,
    /// Remove past --max-delete, and remove everything ours when the table is empty.
    #[arg(long)]
    pub force: bool,
    /// Reconcile once, verify by reading back, and exit: 0 when the table converged.
    #[arg(long)]
    pub once: bool,
    /// Serve /metrics and /healthz on this address.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
}

/// Everything `ocean lvs-sync` runs with; buildable in code by tests and `ocean up`.
#[derive(Debug, Clone)]
pub struct Config {
    pub subscriber: SubscriberConfig,
    pub backend: BackendKind,
    /// Where the printing backends write (stdout by default).
    pub output: Output,
    pub vips: Vec<Cidr>,
    /// `--max-services` (0 = no cap).
    pub max_services: usize,
    /// Where this host's own addresses (never VIPs) come from.
    pub host_addrs: HostAddrs,
    pub state_file: Option<PathBuf>,
    pub plan: PlanConfig,
    pub resync: Duration,
    pub once: bool,
    pub admin: Option<SocketAddr>,
}

impl Config {
    /// A config for `backend` with the defaults of the flags and no table source.
    pub fn new(backend: BackendKind) -> Self {
        Config {
            subscriber: SubscriberConfig::default(),
            backend,
            output: Output::Stdout,
            vips: Vec::new(),
            max_services: DEFAULT_MAX_SERVICES,
            host_addrs: HostAddrs::System,
            state_file: None,
            plan: PlanConfig::default(),
            resync: Duration::from_secs(30),
            once: false,
            admin: None,
        }
    }
}

impl Args {
    /// The config these flags describe.
    ///
    /// # Errors
    /// Bad table-source flags, a zero `--resync`.
    pub fn into_config(self) -> anyhow::Result<Config> {
        anyhow::ensure!(!self.resync.is_zero(), "--resync must be over 0");
        Ok(Config {
            subscriber: self.table.into_config()?,
            backend: self.backend,
            output: Output::Stdout,
            vips: self.vips,
            max_services: self.max_services,
            host_addrs: HostAddrs::System,
            state_file: self.state_file,
            plan: PlanConfig {
                drain: self.drain,
                max_delete: self.max_delete,
                force: self.force,
            },
            resync: self.resync,
            once: self.once,
            admin: self.admin,
        })
    }
}

/// A running `ocean lvs-sync`.
pub struct Running {
    /// The admin address, when `--admin` was given (port 0 resolved).
    pub admin_addr: Option<SocketAddr>,
    /// The last reconcile's report.
    pub last: Arc<Mutex<Option<ReconcileReport>>>,
    tracker: TaskTracker,
}

impl Running {
    /// Waits for every task to stop (after cancellation).
    pub async fn wait(self) {
        self.tracker.wait().await;
    }
}

fn open_reconciler(config: &Config) -> anyhow::Result<Reconciler> {
    let backend =
        Backend::open(config.backend, config.output.clone()).context("opening the IPVS backend")?;
    Reconciler::new(
        backend,
        Guard {
            vips: config.vips.clone(),
            host_addrs: config.host_addrs.clone(),
            max_services: config.max_services,
        },
        config.plan.clone(),
        config.state_file.clone(),
    )
}

/// Runs one reconcile on a blocking thread (netlink calls block) and hands the reconciler
/// back.
async fn reconcile_blocking(
    mut r: Reconciler,
    table: Arc<LvsTable>,
    reason: Reason,
) -> anyhow::Result<(Reconciler, anyhow::Result<ReconcileReport>)> {
    tokio::task::spawn_blocking(move || {
        let rep = r.reconcile(&table, reason).map_err(anyhow::Error::from);
        (r, rep)
    })
    .await
    .context("reconcile task")
}

/// Starts the daemon: the table subscriber, the reconcile loop and the admin server.
///
/// # Errors
/// The backend cannot be opened, the state file is unreadable, the admin address cannot be
/// bound.
pub async fn start(config: Config, cancel: CancellationToken) -> anyhow::Result<Running> {
    ocean_core::metrics::handle();
    crate::metrics::describe();
    let tracker = TaskTracker::new();
    // SIGHUP: every setting is a flag, and the table comes from its subscriber, so there
    // is nothing to re-read; the reload is still answered (log, metric, systemd READY=1).
    ocean_core::reload::spawn("lvs-sync", cancel.clone(), || Ok(Vec::new()));
    let reconciler = tokio::task::spawn_blocking({
        let c = config.clone();
        move || open_reconciler(&c)
    })
    .await
    .context("opening the backend")??;
    let mut tables = table_source(&config, &cancel, &tracker);
    let last: Arc<Mutex<Option<ReconcileReport>>> = Arc::new(Mutex::new(None));

    let admin_addr = match config.admin {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --admin {addr}"))?;
            let bound = listener.local_addr()?;
            let health_last = last.clone();
            let health = Arc::new(move || {
                let rep = health_last.lock().ok().and_then(|l| l.clone());
                match rep {
                    None => ocean_core::admin::Health {
                        status: "starting",
                        reason: Some("no reconcile yet".into()),
                    },
                    Some(ReconcileReport {
                        table_refused: Some(why),
                        ..
                    }) => ocean_core::admin::Health {
                        status: "stale",
                        reason: Some(format!("table refused, the last good one stays: {why}")),
                    },
                    Some(r) if r.converged() => ocean_core::admin::Health {
                        status: "ok",
                        reason: None,
                    },
                    Some(r) => ocean_core::admin::Health {
                        status: "stale",
                        reason: Some(format!(
                            "last reconcile: {} errors, {} changes missing",
                            r.errors.len(),
                            r.unconverged.len()
                        )),
                    },
                }
            });
            let status_last = last.clone();
            let status = Arc::new(move || {
                let rep = status_last.lock().ok().and_then(|l| l.clone());
                let facts = match rep {
                    None => vec![("last reconcile".to_string(), "none yet".to_string())],
                    Some(r) => vec![
                        ("IPVS services".into(), r.services.to_string()),
                        ("real servers".into(), r.destinations.to_string()),
                        ("entries refused".into(), r.refusals.len().to_string()),
                        ("errors".into(), r.errors.len().to_string()),
                        ("changes missing".into(), r.unconverged.len().to_string()),
                        (
                            "table refused".into(),
                            r.table_refused.unwrap_or_else(|| "no".into()),
                        ),
                    ],
                };
                ocean_core::admin::DaemonStatus {
                    facts,
                    ..Default::default()
                }
            });
            let router = ocean_core::admin::router(ocean_core::admin::Admin {
                daemon: "lvs-sync",
                health,
                table: None,
                status: Some(status),
            });
            let c = cancel.clone();
            tracker.spawn(async move {
                if let Err(e) = ocean_core::admin::serve(listener, router, c).await {
                    tracing::error!(error = %e, "admin server failed");
                }
            });
            Some(bound)
        }
        None => None,
    };

    let resync = config.resync;
    let loop_last = last.clone();
    tracker.spawn(async move {
        let mut reconciler = Some(reconciler);
        let mut table: Option<Arc<LvsTable>> = None;
        let mut tick = tokio::time::interval(resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        loop {
            let reason = tokio::select! {
                _ = cancel.cancelled() => break,
                t = tables.recv() => match t {
                    Some(t) => {
                        table = Some(t);
                        tick.reset();
                        Reason::Table
                    }
                    None => break,
                },
                _ = tick.tick() => Reason::Resync,
            };
            let (Some(t), Some(r)) = (table.clone(), reconciler.take()) else {
                continue;
            };
            match reconcile_blocking(r, t, reason).await {
                Ok((r, rep)) => {
                    reconciler = Some(r);
                    match rep {
                        Ok(rep) => {
                            if let Ok(mut l) = loop_last.lock() {
                                *l = Some(rep);
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "reconcile failed");
                            // /healthz says so until a reconcile succeeds
                            if let Ok(mut l) = loop_last.lock() {
                                *l = Some(ReconcileReport {
                                    errors: vec![format!("{e:#}")],
                                    ..ReconcileReport::default()
                                });
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "reconcile task died");
                    break;
                }
            }
        }
    });
    tracker.close();
    Ok(Running {
        admin_addr,
        last,
        tracker,
    })
}

/// New tables, in order. From `--table-file`, the file is polled and parsed here without
/// the whole-table validation of the shared subscriber, so one bad entry is refused on its
/// own (by [`crate::model::desired_from_table`]) and the rest is applied; from control, the
/// subscriber's tables (control publishes only valid ones).
fn table_source(
    config: &Config,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> tokio::sync::mpsc::Receiver<Arc<LvsTable>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let cancel = cancel.clone();
    if let Some(path) = config.subscriber.table_file.clone() {
        let poll = config.subscriber.file_poll;
        tracker.spawn(async move {
            let mut last: Option<Vec<u8>> = None;
            loop {
                match tokio::fs::read(&path).await {
                    Ok(body) if last.as_ref() != Some(&body) => {
                        match serde_json::from_slice::<LvsTable>(&body) {
                            Ok(t) => {
                                tracing::info!(file = %path.display(), services = t.services.len(), "lvs table read");
                                if tx.send(Arc::new(t)).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                metrics::counter!("ocean_lvs_errors_total", "stage" => "table")
                                    .increment(1);
                                tracing::error!(file = %path.display(), error = %e, "lvs table refused; the last one stays");
                            }
                        }
                        last = Some(body);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(file = %path.display(), error = %e, "reading the lvs table"),
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        });
    } else {
        let (mut watch, sub_task) =
            subscriber::spawn::<LvsTable>(config.subscriber.clone(), cancel.clone());
        tracker.spawn(async move {
            let _ = sub_task.await;
        });
        tracker.spawn(async move {
            while let Some(v) = watch.changed().await {
                if tx.send(Arc::new(v.table.clone())).await.is_err() {
                    return;
                }
            }
        });
    }
    rx
}

/// Reads the table for `--once`: a `--table-file` directly (so one bad entry is refused on
/// its own, not the whole table), else the first table the subscriber accepts.
async fn once_table(config: &Config, cancel: &CancellationToken) -> anyhow::Result<LvsTable> {
    if let Some(f) = &config.subscriber.table_file {
        let body = tokio::fs::read(f)
            .await
            .with_context(|| format!("reading --table-file {}", f.display()))?;
        return serde_json::from_slice(&body)
            .with_context(|| format!("--table-file {}: not an lvs table", f.display()));
    }
    let child = cancel.child_token();
    let (mut watch, task) = subscriber::spawn::<LvsTable>(config.subscriber.clone(), child.clone());
    let first = tokio::time::timeout(
        config.subscriber.wait + Duration::from_secs(30),
        watch.first(),
    )
    .await;
    child.cancel();
    let _ = task.await;
    match first {
        Ok(Some(v)) => Ok(v.table.clone()),
        Ok(None) => anyhow::bail!("the table subscriber stopped before a table arrived"),
        Err(_) => anyhow::bail!("no lvs table arrived from the table source"),
    }
}

/// `--once`: reconciles one table and returns the report; an error when the table did not
/// converge.
///
/// # Errors
/// No table, backend errors, a refused plan, failed writes, a failed verification.
pub async fn run_once(
    config: Config,
    cancel: CancellationToken,
) -> anyhow::Result<ReconcileReport> {
    let table = Arc::new(once_table(&config, &cancel).await?);
    let reconciler = tokio::task::spawn_blocking({
        let c = config.clone();
        move || open_reconciler(&c)
    })
    .await
    .context("opening the backend")??;
    let (_, rep) = reconcile_blocking(reconciler, table, Reason::Table).await?;
    let rep = rep?;
    anyhow::ensure!(
        rep.errors.is_empty(),
        "{} IPVS changes failed: {}",
        rep.errors.len(),
        rep.errors.join("; ")
    );
    anyhow::ensure!(
        rep.unconverged.is_empty(),
        "the IPVS table did not converge; still needed: {}",
        rep.unconverged.join("; ")
    );
    Ok(rep)
}

/// Runs `ocean lvs-sync` until `cancel` fires (or, with `once`, one reconcile).
///
/// # Errors
/// See [`start`] and [`run_once`].
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    if config.once {
        run_once(config, cancel).await.map(|_| ())
    } else {
        start(config, cancel).await?.wait().await;
        Ok(())
    }
}
