//! One reconcile: read the table, plan, apply idempotently, read back and verify; with the
//! ownership memory and the drains in progress (the state file), logs and metrics around it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use ocean_core::table::lvs::LvsTable;

use crate::backend::{Backend, ReadError};
use crate::host::HostAddrs;
use crate::model::{desired_from_table, Cidr, DestKey, Ipvs, IpvsError, Refusal, ServiceKey};
use crate::plan::{apply_plan, plan, DrainState, IpvsWrite, Op, OwnedSet, PlanConfig, PlanError};

/// Why a reconcile runs (drift is only counted on resyncs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A new table arrived.
    Table,
    /// The periodic `--resync`.
    Resync,
}

/// What one reconcile did.
#[derive(Debug, Clone, Default)]
pub struct ReconcileReport {
    /// Operations planned.
    pub planned: usize,
    /// Writes sent to the backend (an add retried as an edit counts twice).
    pub writes: usize,
    /// Table entries refused (the rest was applied).
    pub refusals: Vec<Refusal>,
    /// Operations that failed even after their idempotent retry.
    pub errors: Vec<String>,
    /// Operations still needed after the read-back (empty when the table converged).
    pub unconverged: Vec<String>,
    /// Operations that repaired drift (on a resync).
    pub drift_repaired: usize,
    /// Owned services and their destinations after the reconcile.
    pub services: usize,
    pub destinations: usize,
    pub duration: Duration,
    /// Why the table given was refused whole (`--max-services`); the reconcile then ran on
    /// the last good table instead.
    pub table_refused: Option<String>,
}

impl ReconcileReport {
    /// Whether the owned part of the kernel's table now equals the desired state.
    pub fn converged(&self) -> bool {
        self.errors.is_empty() && self.unconverged.is_empty()
    }
}

/// A reconcile that could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reading the IPVS table: {0}")]
    Read(#[from] ReadError),
    #[error(transparent)]
    Refused(#[from] PlanError),
    #[error(transparent)]
    State(#[from] StateError),
    /// The table was refused whole and there is no earlier good one: nothing was written.
    #[error("lvs table refused: {0}")]
    TableRefused(String),
}

/// What the reconciler refuses whatever the table says.
#[derive(Debug, Clone)]
pub struct Guard {
    /// `--vip`: this director's VIP ranges (empty: any VIP not refused otherwise).
    pub vips: Vec<Cidr>,
    /// This host's own addresses, which are never VIPs (see [`crate::model::refused_vip`]).
    pub host_addrs: HostAddrs,
    /// `--max-services`: a table with more services is refused whole and the last good
    /// one stays (0 = no cap).
    pub max_services: usize,
}

/// Default of `--max-services`.
pub const DEFAULT_MAX_SERVICES: usize = 4096;

impl Guard {
    /// The daemon's guard: `vips`, the system's addresses, the default service cap.
    pub fn new(vips: Vec<Cidr>) -> Self {
        Guard {
            vips,
            host_addrs: HostAddrs::System,
            max_services: DEFAULT_MAX_SERVICES,
        }
    }
}

/// Counts writes and logs each kernel change as an ipvsadm-style line.
struct Counting<'a> {
    inner: &'a mut Backend,
    writes: usize,
    log: bool,
}

impl IpvsWrite for Counting<'_> {
    fn apply(&mut self, op: &Op) -> Result<(), IpvsError> {
        self.writes += 1;
        let r = self.inner.apply(op);
        match &r {
            Ok(()) if self.log => tracing::info!(
                target: "ocean_lvs_sync::change",
                change = %format!("ipvsadm {op}"),
                "ipvs"
            ),
            Ok(()) => {}
            Err(e) => tracing::debug!(op = %op, error = %e, "ipvs write answered"),
        }
        r
    }
}

/// The reconciler's two clocks: a monotonic one that times drains, and the wall clock that
/// dates their start in the state file, so a drain survives a restart (a new process has a
/// new monotonic origin). Injectable so tests can move time.
pub trait Clock: fmt::Debug + Send {
    /// Monotonic time since an arbitrary origin; never goes back.
    fn monotonic(&self) -> Duration;
    /// Wall-clock time since the Unix epoch (may step; only used across restarts).
    fn unix(&self) -> Duration;
}

/// The system's clocks: [`Instant`] since construction and [`SystemTime`].
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose monotonic origin is now.
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    fn unix(&self) -> Duration {
        // A clock before 1970 dates drains at 0: they end at the first reconcile, never late.
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// A draining real server: its service and address.
pub type DrainKey = (ServiceKey, DestKey);

/// What the state file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// The services Ocean created and may change or delete.
    pub owned: OwnedSet,
    /// Real servers draining, with the wall-clock time (Unix seconds) their drain began.
    pub drains: BTreeMap<DrainKey, u64>,
}

/// A state file that cannot be read, parsed or written. The daemon refuses to start on a
/// bad one (it cannot tell its own services from foreign ones without it).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {}: reading: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {}: writing: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {}:{line}: {reason}: {text:?}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: &'static str,
        text: String,
    },
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The reconcile engine with its memory: owned services and draining real servers.
#[derive(Debug)]
pub struct Reconciler {
    backend: Backend,
    guard: Guard,
    /// This host's addresses as last read (kept when a later read fails).
    host_addrs: Vec<IpAddr>,
    plan_config: PlanConfig,
    state_file: Option<PathBuf>,
    owned: OwnedSet,
    drain: DrainState,
    /// When each drain in `drain` began, wall clock (Unix seconds): what the state file keeps.
    drain_unix: BTreeMap<DrainKey, u64>,
    /// What the state file holds now (written only when this changes).
    saved: State,
    clock: Box<dyn Clock>,
    /// Added to the monotonic clock so a drain restored from before this process began
    /// still has a start >= 0: the drain period. A drain older than that is over anyway, and
    /// its start clamps to 0, which `plan` sees as expired at the first reconcile.
    base_ms: u64,
    last_table: Option<LvsTable>,
}

impl Reconciler {
    /// A reconciler over `backend` with the system clock; see [`Reconciler::with_clock`].
    ///
    /// # Errors
    /// As [`Reconciler::with_clock`].
    pub fn new(
        backend: Backend,
        guard: Guard,
        plan_config: PlanConfig,
        state_file: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        Self::with_clock(
            backend,
            guard,
            plan_config,
            state_file,
            Box::new(SystemClock::new()),
        )
    }

    /// A reconciler over `backend` timed by `clock`; loads the owned services and the drains
    /// in progress from `state_file` if it exists, and reads this host's addresses.
    ///
    /// A restored drain keeps its deadline: it ends `drain` after it began before the
    /// restart, and one already past ends at the first reconcile.
    ///
    /// # Errors
    /// An unreadable or malformed state file ([`StateError`], naming the file); this host's
    /// addresses cannot be read (without them no VIP could be trusted not to be one).
    pub fn with_clock(
        backend: Backend,
        guard: Guard,
        plan_config: PlanConfig,
        state_file: Option<PathBuf>,
        clock: Box<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let state = match &state_file {
            Some(p) => load_state(p)?,
            None => State::default(),
        };
        let host_addrs = guard.host_addrs.read()?;
        tracing::info!(addresses = ?host_addrs, "this host's addresses (never VIPs)");
        let base_ms = ms(plan_config.drain);
        let mut r = Reconciler {
            backend,
            guard,
            host_addrs,
            plan_config,
            state_file,
            owned: state.owned.clone(),
            drain: DrainState::default(),
            drain_unix: BTreeMap::new(),
            saved: state.clone(),
            clock,
            base_ms,
            last_table: None,
        };
        let (now, unix_ms) = (r.now_ms(), ms(r.clock.unix()));
        for (&(k, a), &start_s) in &state.drains {
            let age_ms = unix_ms.saturating_sub(start_s.saturating_mul(1000));
            r.drain.insert(k, a, now.saturating_sub(age_ms));
            r.drain_unix.insert((k, a), start_s);
        }
        if !state.drains.is_empty() {
            tracing::info!(
                draining = state.drains.len(),
                "drains in progress restored from the state file; each keeps its deadline"
            );
        }
        Ok(r)
    }

    /// The services this reconciler owns.
    pub fn owned(&self) -> &OwnedSet {
        &self.owned
    }

    /// The backend (tests read the in-memory table through it).
    pub fn backend_mut(&mut self) -> &mut Backend {
        &mut self.backend
    }

    /// The real servers draining, with when each drain began (wall clock, Unix seconds).
    pub fn draining(&self) -> &BTreeMap<DrainKey, u64> {
        &self.drain_unix
    }

    /// The plan's clock: monotonic ms, offset by `base_ms`.
    fn now_ms(&self) -> u64 {
        self.base_ms.saturating_add(ms(self.clock.monotonic()))
    }

    /// Records `state` in the state file when it differs from what the file holds; never
    /// for the printing backends, which create nothing (a dry run must not claim the
    /// kernel's services as ours).
    fn save(&mut self, state: State) -> Result<(), ReconcileError> {
        if state == self.saved {
            return Ok(());
        }
        if let Some(p) = &self.state_file {
            if self.backend.is_kernel() {
                save_state(p, &state)?;
            }
        }
        self.saved = state;
        Ok(())
    }

    /// Reads, plans, applies, reads back and verifies. Logs and counts metrics.
    ///
    /// # Errors
    /// A failed read, a plan refused by `--max-delete` or the empty-table guard, or a state
    /// file that cannot be written; failed writes are reported in the result instead.
    pub fn reconcile(
        &mut self,
        table: &LvsTable,
        reason: Reason,
    ) -> Result<ReconcileReport, ReconcileError> {
        let started = Instant::now();
        let r = match self.refuse_whole(table) {
            None => self.reconcile_inner(table, reason, started),
            Some(why) => match self.last_table.clone() {
                // The last good table stays: reconcile it (repairing drift as a resync).
                Some(good) => {
                    self.reconcile_inner(&good, Reason::Resync, started)
                        .map(|mut rep| {
                            rep.table_refused = Some(why);
                            rep
                        })
                }
                None => Err(ReconcileError::TableRefused(why)),
            },
        };
        metrics::histogram!("ocean_lvs_reconcile_seconds").record(started.elapsed().as_secs_f64());
        match &r {
            Ok(rep) => {
                metrics::gauge!("ocean_lvs_services").set(rep.services as f64);
                metrics::gauge!("ocean_lvs_destinations").set(rep.destinations as f64);
                metrics::gauge!("ocean_lvs_refused_entries").set(rep.refusals.len() as f64);
                metrics::counter!("ocean_lvs_writes_total").increment(rep.writes as u64);
                metrics::counter!("ocean_lvs_drift_repaired_total")
                    .increment(rep.drift_repaired as u64);
                if !rep.errors.is_empty() {
                    metrics::counter!("ocean_lvs_errors_total", "stage" => "apply")
                        .increment(rep.errors.len() as u64);
                }
                if !rep.unconverged.is_empty() {
                    metrics::counter!("ocean_lvs_errors_total", "stage" => "verify").increment(1);
                }
            }
            Err(e) => {
                let stage = match e {
                    ReconcileError::Read(_) => "read",
                    ReconcileError::Refused(_) => "plan",
                    ReconcileError::State(_) => "state",
                    ReconcileError::TableRefused(_) => "table",
                };
                metrics::counter!("ocean_lvs_errors_total", "stage" => stage).increment(1);
            }
        }
        r
    }

    /// Why `table` is refused whole, counted and logged; `None` when it is not.
    fn refuse_whole(&self, table: &LvsTable) -> Option<String> {
        let (n, max) = (table.services.len(), self.guard.max_services);
        if max == 0 || n <= max {
            return None;
        }
        metrics::counter!("ocean_lvs_tables_refused_total", "reason" => "max_services")
            .increment(1);
        let why = format!("the table has {n} services, over --max-services {max}");
        tracing::error!(
            services = n,
            max_services = max,
            kept_last_good = self.last_table.is_some(),
            "lvs table refused whole: more services than --max-services; the last good table stays"
        );
        Some(why)
    }

    /// Re-reads this host's addresses; keeps the last list when the read fails.
    fn refresh_host_addrs(&mut self) {
        match self.guard.host_addrs.read() {
            Ok(a) => {
                if a != self.host_addrs {
                    tracing::info!(addresses = ?a, "this host's addresses changed (never VIPs)");
                    self.host_addrs = a;
                }
            }
            Err(e) => {
                metrics::counter!("ocean_lvs_errors_total", "stage" => "host_addrs").increment(1);
                tracing::warn!(error = %e, "keeping the last known host addresses");
            }
        }
    }

    fn reconcile_inner(
        &mut self,
        table: &LvsTable,
        reason: Reason,
        started: Instant,
    ) -> Result<ReconcileReport, ReconcileError> {
        let current = match self.backend.read() {
            Ok(c) => c,
            Err(e) => {
                // A netlink socket that failed (timeout, half-read dump) is replaced, so the
                // next reconcile starts clean.
                if let Backend::Netlink(_) = self.backend {
                    match crate::netlink::NetlinkIpvs::open() {
                        Ok(n) => self.backend = Backend::Netlink(n),
                        Err(e) => tracing::warn!(error = %e, "reopening the netlink socket"),
                    }
                }
                return Err(e.into());
            }
        };
        self.refresh_host_addrs();
        let (desired, refusals) = desired_from_table(table, &self.guard.vips, &self.host_addrs);
        for r in &refusals {
            tracing::warn!(entry = %r.entry, reason = %r.reason, "lvs table entry refused");
        }
        let draining_before: BTreeSet<(ServiceKey, std::net::SocketAddr)> = current
            .iter()
            .flat_map(|(k, e)| e.dests.keys().map(move |a| (*k, *a)))
            .filter(|(k, a)| self.drain.since_ms(k, a).is_some())
            .collect();
        let now = self.now_ms();
        let mut drain = self.drain.clone();
        let p = plan(
            &current,
            &desired,
            &self.owned,
            &mut drain,
            now,
            &self.plan_config,
        )?;

        // When each drain began, wall clock: kept for drains already running (restored or
        // earlier), now for the ones this plan starts.
        let unix_s = self.clock.unix().as_secs();
        let drain_unix: BTreeMap<DrainKey, u64> = drain
            .iter()
            .map(|(k, &since)| {
                let start = self
                    .drain_unix
                    .get(k)
                    .copied()
                    .unwrap_or_else(|| unix_s.saturating_sub(now.saturating_sub(since) / 1000));
                (*k, start)
            })
            .collect();

        // Remember new services as ours, and new drains, before creating them, so a crash in
        // between never leaves an owned service that a restart would take for foreign, or a
        // drain that a restart would start over. (Drains this plan ends stay recorded until
        // the read-back: a crash before the delete resumes them, it does not restart them.)
        let mut before = State {
            owned: self.owned.clone(),
            drains: self.drain_unix.clone(),
        };
        before.owned.extend(p.owned.iter().copied());
        before
            .drains
            .extend(drain_unix.iter().map(|(k, v)| (*k, *v)));
        self.save(before)?;
        self.drain = drain;
        self.drain_unix = drain_unix;

        let log = self.backend.is_kernel();
        let mut counting = Counting {
            inner: &mut self.backend,
            writes: 0,
            log,
        };
        let applied = apply_plan(&mut counting, &p);
        let writes = counting.writes;
        for op in &p.ops {
            metrics::counter!("ocean_lvs_operations_total", "kind" => op.kind()).increment(1);
        }
        let errors: Vec<String> = applied
            .errors
            .iter()
            .map(|(op, e)| format!("ipvsadm {op}: {e}"))
            .collect();
        for e in &errors {
            tracing::error!(error = %e, "ipvs change failed");
        }

        let drift_repaired = if reason == Reason::Resync && self.last_table.as_ref() == Some(table)
        {
            p.ops
                .iter()
                .filter(|op| match op {
                    Op::DelDest(k, a) => !draining_before.contains(&(*k, *a)),
                    _ => true,
                })
                .count()
        } else {
            0
        };
        if drift_repaired > 0 {
            tracing::warn!(
                ops = drift_repaired,
                "repaired drift in the kernel's IPVS table"
            );
        }

        // Read back and verify: planning again must find nothing left to do but the end of
        // drains whose connections closed meanwhile.
        // (Nothing planned: the table just read is the one to verify.)
        let back = if p.ops.is_empty() {
            current
        } else {
            self.backend.read()?
        };
        let mut verify_drain = self.drain.clone();
        let force = PlanConfig {
            force: true,
            ..self.plan_config.clone()
        };
        let mut owned_after = p.owned.clone();
        owned_after.extend(self.owned.iter().filter(|k| back.contains_key(k)).copied());
        let unconverged: Vec<String> = match plan(
            &back,
            &desired,
            &owned_after,
            &mut verify_drain,
            now,
            &force,
        ) {
            Ok(again) => again
                .ops
                .iter()
                .filter(|op| match op {
                    Op::DelDest(k, a) => self.drain.since_ms(k, a).is_none(),
                    _ => true,
                })
                .map(|op| format!("ipvsadm {op}"))
                .collect(),
            Err(e) => vec![e.to_string()],
        };
        for u in &unconverged {
            tracing::error!(missing = %u, "IPVS table did not converge");
        }
        self.save(State {
            owned: owned_after.clone(),
            drains: self.drain_unix.clone(),
        })?;
        self.owned = owned_after;
        self.last_table = Some(table.clone());

        let (services, destinations) = count_owned(&back, &self.owned);
        let report = ReconcileReport {
            planned: p.ops.len(),
            writes,
            refusals,
            errors,
            unconverged,
            drift_repaired,
            services,
            destinations,
            duration: started.elapsed(),
            table_refused: None,
        };
        tracing::info!(
            backend = self.backend.name(),
            planned = report.planned,
            writes = report.writes,
            services,
            destinations,
            draining = self.drain.len(),
            ms = report.duration.as_millis() as u64,
            "reconciled"
        );
        Ok(report)
    }
}

fn count_owned(table: &Ipvs, owned: &OwnedSet) -> (usize, usize) {
    let mut s = 0;
    let mut d = 0;
    for (k, e) in table {
        if owned.contains(k) {
            s += 1;
            d += e.dests.len();
        }
    }
    (s, d)
}

/// Parses one state-file line, a service as ipvsadm spells it: `-t 10.0.0.1:80`,
/// `-u [2001:db8::1]:53`, `-f 7`, `-f 7 -6`. (Never `--sctp-service`: SCTP is never owned.)
pub fn parse_service_key(line: &str) -> Option<ServiceKey> {
    let mut it = line.split_whitespace();
    let flag = it.next()?;
    let value = it.next()?;
    let extra = it.next();
    if it.next().is_some() {
        return None;
    }
    match (flag, extra) {
        ("-t", None) => value.parse().ok().map(ServiceKey::tcp),
        ("-u", None) => value.parse().ok().map(ServiceKey::udp),
        ("-f", None) => value
            .parse()
            .ok()
            .map(|mark| ServiceKey::Fwmark { mark, ipv6: false }),
        ("-f", Some("-6")) => value
            .parse()
            .ok()
            .map(|mark| ServiceKey::Fwmark { mark, ipv6: true }),
        _ => None,
    }
}

/// The state-file line of a drain: `drain -t 10.0.0.1:80 -r 10.1.0.1:80 1700000000`.
fn drain_line(key: &ServiceKey, dest: &DestKey, start_s: u64) -> String {
    format!("drain {key} -r {dest} {start_s}")
}

/// Parses a drain line (after `drain `): service, `-r` real server, start (Unix seconds).
fn parse_drain_line(rest: &str) -> Option<(DrainKey, u64)> {
    let (service, real) = rest.rsplit_once(" -r ")?;
    let key = parse_service_key(service)?;
    let mut it = real.split_whitespace();
    let dest: DestKey = it.next()?.parse().ok()?;
    let start_s: u64 = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some(((key, dest), start_s))
}

/// Reads the state file (absent: nothing owned, nothing draining). A file written before
/// drain times were kept (services only) reads as it always did, with no drains.
///
/// # Errors
/// [`StateError::Read`] for an unreadable file, [`StateError::Malformed`] for a line that is
/// neither a service nor a drain; both name the file.
pub fn load_state(path: &Path) -> Result<State, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut state = State::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let malformed = |reason| StateError::Malformed {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
            text: line.to_string(),
        };
        if let Some(rest) = line.strip_prefix("drain ") {
            let (k, start) = parse_drain_line(rest)
                .ok_or_else(|| malformed("not a drain (drain SERVICE -r REAL UNIX_SECONDS)"))?;
            state.drains.insert(k, start);
        } else if line.starts_with("--sctp-service") {
            return Err(malformed("SCTP services are never Ocean's"));
        } else {
            let key = parse_service_key(line).ok_or_else(|| malformed("not a service"))?;
            state.owned.insert(key);
        }
    }
    Ok(state)
}

/// Writes the state atomically (temporary file + rename): the owned services and the drains
/// in progress, in one file, so the two never disagree after a crash.
///
/// # Errors
/// [`StateError::Write`], naming the file.
pub fn save_state(path: &Path, state: &State) -> Result<(), StateError> {
    let mut text = String::from("# services ocean lvs-sync created and may change or delete\n");
    for k in &state.owned {
        text.push_str(&k.to_string());
        text.push('\n');
    }
    if !state.drains.is_empty() {
        text.push_str(
            "# real servers draining: service, real server, drain start (Unix seconds)\n",
        );
        for ((k, a), start) in &state.drains {
            text.push_str(&drain_line(k, a, *start));
            text.push('\n');
        }
    }
    let tmp = path.with_extension("tmp");
    let write_err = |p: &Path| {
        let path = p.to_path_buf();
        move |source| StateError::Write { path, source }
    };
    // Synced before the rename, so a crash leaves the old file or the new one, whole.
    let write = |tmp: &Path| -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    };
    write(&tmp).map_err(write_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(write_err(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use ocean_core::table::lvs::{Forward, Protocol, RealServer, VirtualService};

    use super::*;
    use crate::backend::Output;
    use crate::model::{InMemoryIpvs, Service, ServiceEntry};

    fn vs(vip: &str, port: u16, reals: &[(&str, u32)]) -> VirtualService {
        VirtualService {
            vip: vip.parse().unwrap(),
            port,
            protocol: Protocol::Tcp,
            scheduler: "wrr".into(),
            persistence_s: None,
            reals: reals
                .iter()
                .map(|(ip, w)| RealServer {
                    ip: ip.parse().unwrap(),
                    port,
                    weight: *w,
                    forward: Forward::Dr,
                })
                .collect(),
        }
    }

    /// No --vip, no host addresses, the default cap.
    fn guard() -> Guard {
        Guard {
            host_addrs: HostAddrs::Fixed(vec![]),
            ..Guard::new(vec![])
        }
    }

    fn foreign() -> (ServiceKey, ServiceEntry) {
        let key = ServiceKey::tcp("192.168.50.1:443".parse().unwrap());
        let mut e = ServiceEntry {
            service: Service::new(key, "lc"),
            dests: Default::default(),
        };
        let a = "192.168.60.1:443".parse().unwrap();
        e.dests
            .insert(a, crate::model::Dest::new(a, 5, Forward::Nat));
        (key, e)
    }

    #[test]
    fn a_second_reconcile_with_nothing_changed_makes_zero_writes_and_foreign_stays() {
        let (fk, fe) = foreign();
        let mut start = Ipvs::new();
        start.insert(fk, fe.clone());
        let mem = Arc::new(Mutex::new(InMemoryIpvs::from_services(start)));
        let dir = std::env::temp_dir().join(format!("lvs-sync-state-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let state = dir.join("owned");
        let _ = std::fs::remove_file(&state);
        let mut r = Reconciler::new(
            Backend::Memory(mem.clone()),
            guard(),
            PlanConfig::default(),
            Some(state.clone()),
        )
        .unwrap();
        let table = LvsTable {
            services: vec![
                vs("10.0.0.1", 80, &[("10.1.0.1", 1), ("10.1.0.2", 2)]),
                vs("10.0.0.2", 53, &[("10.1.0.3", 1)]),
            ],
        };
        let first = r.reconcile(&table, Reason::Table).unwrap();
        assert!(first.converged(), "{first:?}");
        assert_eq!(first.writes, 5);
        assert_eq!((first.services, first.destinations), (2, 3));
        let second = r.reconcile(&table, Reason::Resync).unwrap();
        assert_eq!(second.writes, 0, "{second:?}");
        assert_eq!(second.drift_repaired, 0);
        assert_eq!(mem.lock().unwrap().services().get(&fk), Some(&fe));

        // The state file remembers both services; a new reconciler deletes one that left.
        let owned = load_state(&state).unwrap().owned;
        assert_eq!(owned.len(), 2);
        let mut r2 = Reconciler::new(
            Backend::Memory(mem.clone()),
            guard(),
            PlanConfig::default(),
            Some(state.clone()),
        )
        .unwrap();
        let smaller = LvsTable {
            services: vec![table.services[0].clone()],
        };
        let rep = r2.reconcile(&smaller, Reason::Table).unwrap();
        assert!(rep.converged());
        assert_eq!(rep.writes, 1);
        assert_eq!(load_state(&state).unwrap().owned.len(), 1);
        assert_eq!(mem.lock().unwrap().services().len(), 2);
        assert_eq!(mem.lock().unwrap().services().get(&fk), Some(&fe));

        // Drift: someone changes a weight behind our back; the resync repairs it.
        let key = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
        let mut d = crate::model::Dest::new("10.1.0.1:80".parse().unwrap(), 9, Forward::Dr);
        mem.lock()
            .unwrap()
            .apply(&Op::EditDest(key, d.clone()))
            .unwrap();
        let rep = r2.reconcile(&smaller, Reason::Resync).unwrap();
        assert_eq!((rep.writes, rep.drift_repaired), (1, 1));
        d.weight = 1;
        assert!(mem.lock().unwrap().services()[&key].dests[&d.addr].same_config(&d));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dry_run_prints_ipvsadm_commands_from_an_empty_table_then_only_changes() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let backend = Backend::open(
            crate::backend::BackendKind::DryRun,
            Output::Buffer(buf.clone()),
        )
        .unwrap();
        let state = std::env::temp_dir().join(format!("lvs-sync-dry-{}", std::process::id()));
        let _ = std::fs::remove_file(&state);
        let mut r =
            Reconciler::new(backend, guard(), PlanConfig::default(), Some(state.clone())).unwrap();
        let t1 = LvsTable {
            services: vec![vs("10.0.0.1", 80, &[("10.1.0.1", 1)])],
        };
        r.reconcile(&t1, Reason::Table).unwrap();
        assert!(!state.exists(), "a dry run wrote the state file");
        let t2 = LvsTable {
            services: vec![vs("10.0.0.1", 80, &[("10.1.0.1", 4)])],
        };
        r.reconcile(&t2, Reason::Table).unwrap();
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "ipvsadm -A -t 10.0.0.1:80 -s wrr\n\
             ipvsadm -a -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 1\n\
             ipvsadm -e -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 4\n"
        );
    }

    #[test]
    fn ipvsadm_restore_output_is_restore_lines() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let backend = Backend::open(
            crate::backend::BackendKind::IpvsadmRestore,
            Output::Buffer(buf.clone()),
        )
        .unwrap();
        let mut r = Reconciler::new(backend, guard(), PlanConfig::default(), None).unwrap();
        let t1 = LvsTable {
            services: vec![vs("10.0.0.1", 80, &[("10.1.0.1", 1)])],
        };
        r.reconcile(&t1, Reason::Table).unwrap();
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "-A -t 10.0.0.1:80 -s wrr\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 1\n"
        );
    }

    #[test]
    fn a_plan_over_max_delete_is_refused_and_nothing_is_written() {
        let mem = Arc::new(Mutex::new(InMemoryIpvs::new()));
        let config = PlanConfig {
            max_delete: 1,
            ..PlanConfig::default()
        };
        let mut r = Reconciler::new(Backend::Memory(mem.clone()), guard(), config, None).unwrap();
        let t1 = LvsTable {
            services: vec![
                vs("10.0.0.1", 80, &[("10.1.0.1", 1)]),
                vs("10.0.0.2", 80, &[("10.1.0.1", 1)]),
            ],
        };
        r.reconcile(&t1, Reason::Table).unwrap();
        let before = mem.lock().unwrap().clone();
        let t2 = LvsTable {
            services: vec![vs("10.0.0.3", 80, &[])],
        };
        let err = r.reconcile(&t2, Reason::Table).unwrap_err();
        assert!(err.to_string().contains("--max-delete"), "{err}");
        assert_eq!(*mem.lock().unwrap(), before);
    }

    #[test]
    fn scale_1000_services_by_20_reals_through_the_reconciler_then_zero_writes() {
        let services = (0..1000)
            .map(|i| {
                let reals: Vec<(String, u32)> = (0..20)
                    .map(|j| (format!("10.1.{}.{}", j / 250, j % 250 + 1), 1))
                    .collect();
                let refs: Vec<(&str, u32)> = reals.iter().map(|(a, w)| (a.as_str(), *w)).collect();
                vs(&format!("10.0.{}.{}", i / 250, i % 250 + 1), 80, &refs)
            })
            .collect();
        let table = LvsTable { services };
        let mem = Arc::new(Mutex::new(InMemoryIpvs::new()));
        let config = PlanConfig::default();
        let mut r = Reconciler::new(Backend::Memory(mem.clone()), guard(), config, None).unwrap();
        let first = r.reconcile(&table, Reason::Table).unwrap();
        assert!(first.converged());
        assert_eq!(
            (first.writes, first.services, first.destinations),
            (21_000, 1000, 20_000)
        );
        let again = r.reconcile(&table, Reason::Resync).unwrap();
        assert_eq!(again.writes, 0);
        eprintln!(
            "reconcile 1000 services x 20 reals (in-memory, read + plan + apply + read back + verify): from empty {:?}, no-change resync {:?}",
            first.duration, again.duration
        );
    }

    #[test]
    fn state_file_lines_round_trip() {
        for line in ["-t 10.0.0.1:80", "-u [2001:db8::1]:53", "-f 7", "-f 7 -6"] {
            let k = parse_service_key(line).unwrap();
            assert_eq!(k.to_string(), line);
        }
        for bad in ["", "-t", "-x 1.2.3.4:80", "-t 1.2.3.4", "-f x", "-f 7 -6 z"] {
            assert!(parse_service_key(bad).is_none(), "{bad}");
        }
    }
}
