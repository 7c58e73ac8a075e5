//! The reconcile engine: current + desired + ownership + drain state -> the minimal list of
//! operations, and [`apply_plan`], which applies one idempotently.
//!
//! Rules:
//! - Only services in the desired set, or in `owned` (recorded as ours by an earlier run),
//!   are ever touched; every other service is foreign and left byte-for-byte alone. SCTP
//!   services ([`ServiceKey::is_managed`]) are never touched, whatever `owned` says.
//! - Edit in place where the kernel allows: scheduler, persistence, netmask and flags
//!   (`-E`); weight and forwarding method (`-e`). An edit sends back what Ocean does not
//!   manage as the kernel has it (thresholds, tunnel settings, persistence engine), since
//!   the kernel resets whatever an edit omits.
//! - A real server leaving a pool goes to weight 0 first (drain) and is deleted after
//!   `drain`, or at once when its connections are 0 or the service is UDP; it is restored
//!   (desired weight) if it comes back meanwhile.
//! - A plan removing more than `max_delete` services + real servers, or any at all while
//!   the desired table is empty, is refused unless `force`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::model::{Desired, DestKey, InMemoryIpvs, Ipvs, IpvsError, ServiceKey};

pub use crate::model::Op;

/// Services recorded as ours by an earlier run (the state file).
pub type OwnedSet = BTreeSet<ServiceKey>;

/// Real servers being drained (weight 0, waiting for their connections to end), with the
/// time (ms, the caller's monotonic clock) the drain started. Kept across plans; across a
/// restart the reconciler keeps it through the state file (as wall-clock start times,
/// converted back with [`DrainState::insert`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainState {
    since_ms: BTreeMap<(ServiceKey, DestKey), u64>,
}

impl DrainState {
    /// Records that `dest` of `key` has been draining since `since_ms` (a drain restored
    /// after a restart); the next plan keeps it only if the server is still leaving.
    pub fn insert(&mut self, key: ServiceKey, dest: DestKey, since_ms: u64) {
        self.since_ms.insert((key, dest), since_ms);
    }

    /// Every draining real server with its drain's start, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&(ServiceKey, DestKey), &u64)> {
        self.since_ms.iter()
    }

    /// How many real servers are draining.
    pub fn len(&self) -> usize {
        self.since_ms.len()
    }

    /// Whether nothing is draining.
    pub fn is_empty(&self) -> bool {
        self.since_ms.is_empty()
    }

    /// When the drain of `dest` in `key` started, if it is draining.
    pub fn since_ms(&self, key: &ServiceKey, dest: &DestKey) -> Option<u64> {
        self.since_ms.get(&(*key, *dest)).copied()
    }
}

/// Plan settings (`--drain`, `--max-delete`, `--force`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanConfig {
    /// How long a leaving real server stays at weight 0 before it is deleted.
    pub drain: Duration,
    /// The most services + real servers one plan may remove (drain or delete).
    pub max_delete: usize,
    /// Plan removals past `max_delete` and with an empty desired table.
    pub force: bool,
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            drain: Duration::from_secs(30),
            max_delete: 100,
            force: false,
        }
    }
}

/// The operations to apply, in order, and what they mean.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// The services to record as ours once the plan is applied: the desired ones plus
    /// owned ones held back by a refused table entry.
    pub owned: OwnedSet,
    /// Services + real servers this plan starts to remove (services deleted with their
    /// real servers, real servers drained or deleted outright); the finishing delete of a
    /// real server already draining is not counted again.
    pub removals: usize,
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Why a plan was refused; nothing is applied and the drain state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("plan would remove {count} services and real servers, over --max-delete {max}; rerun with --force if this is intended")]
    TooManyRemovals { count: usize, max: usize },
    #[error("the desired table is empty and the plan would remove {count} services and real servers; an empty table never flushes without --force")]
    EmptyDesired { count: usize },
}

/// Plans the minimal operations that take `current` (the kernel's table) to `desired`,
/// touching only desired and `owned` services.
///
/// `now_ms` is the caller's monotonic clock in milliseconds. On success `drain` is updated
/// (drains started, finished, cancelled); on error it is left as it was.
///
/// # Errors
/// [`PlanError::TooManyRemovals`] when more than `config.max_delete` services + real servers
/// would be removed, [`PlanError::EmptyDesired`] when the desired table is empty and anything
/// would be removed; both only without `config.force`.
pub fn plan(
    current: &Ipvs,
    desired: &Desired,
    owned: &OwnedSet,
    drain: &mut DrainState,
    now_ms: u64,
    config: &PlanConfig,
) -> Result<Plan, PlanError> {
    let drain_ms = u64::try_from(config.drain.as_millis()).unwrap_or(u64::MAX);
    let mut ops = Vec::new();
    let mut removals = 0usize;
    let mut next_drain = BTreeMap::new();

    let keys: BTreeSet<&ServiceKey> = desired
        .services
        .keys()
        .chain(owned.iter().filter(|k| current.contains_key(k)))
        .filter(|k| !desired.held_services.contains(k))
        // SCTP is never Ocean's: not even an owned set (a hand-edited state file) or a
        // forced plan touches it.
        .filter(|k| k.is_managed())
        .collect();

    for key in keys {
        match (current.get(key), desired.services.get(key)) {
            (None, Some(want)) => {
                ops.push(Op::AddService(want.service.clone()));
                for d in want.dests.values() {
                    ops.push(Op::AddDest(*key, d.clone()));
                }
            }
            (Some(have), None) => {
                ops.push(Op::DelService(*key));
                removals += 1 + have.dests.len();
            }
            (Some(have), Some(want)) => {
                if !have.service.same_config(&want.service) {
                    ops.push(Op::EditService(
                        want.service.keeping_unmanaged(&have.service),
                    ));
                }
                for d in want.dests.values() {
                    match have.dests.get(&d.addr) {
                        None => ops.push(Op::AddDest(*key, d.clone())),
                        Some(h) if !h.same_config(d) => {
                            ops.push(Op::EditDest(*key, d.keeping_unmanaged(h)))
                        }
                        Some(_) => {}
                    }
                }
                for h in have.dests.values() {
                    if want.dests.contains_key(&h.addr)
                        || desired.held_dests.contains(&(*key, h.addr))
                    {
                        continue;
                    }
                    let since = drain.since_ms(key, &h.addr);
                    let expired = since.is_some_and(|s| now_ms.saturating_sub(s) >= drain_ms);
                    if key.is_udp() || h.conns() == 0 || expired {
                        ops.push(Op::DelDest(*key, h.addr));
                        if since.is_none() {
                            removals += 1;
                        }
                        continue;
                    }
                    if h.weight != 0 {
                        let mut zero = h.clone();
                        zero.weight = 0;
                        zero.active_conns = 0;
                        zero.inactive_conns = 0;
                        ops.push(Op::EditDest(*key, zero));
                    }
                    if since.is_none() {
                        removals += 1;
                    }
                    next_drain.insert((*key, h.addr), since.unwrap_or(now_ms));
                }
            }
            (None, None) => {}
        }
    }

    // Held destinations and services keep their drain, if any, so a later table that drops
    // them again resumes it instead of starting over.
    for (&(k, a), &s) in &drain.since_ms {
        let held = desired.held_services.contains(&k) || desired.held_dests.contains(&(k, a));
        let present = current.get(&k).is_some_and(|e| e.dests.contains_key(&a));
        if held && present {
            next_drain.insert((k, a), s);
        }
    }

    if !config.force {
        if desired.services.is_empty() && removals > 0 {
            return Err(PlanError::EmptyDesired { count: removals });
        }
        if removals > config.max_delete {
            return Err(PlanError::TooManyRemovals {
                count: removals,
                max: config.max_delete,
            });
        }
    }

    let mut next_owned: OwnedSet = desired.services.keys().copied().collect();
    next_owned.extend(
        owned
            .iter()
            .filter(|k| desired.held_services.contains(k) && current.contains_key(k)),
    );
    drain.since_ms = next_drain;
    Ok(Plan {
        ops,
        owned: next_owned,
        removals,
    })
}

/// What [`apply_plan`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Ops applied as planned.
    pub applied: usize,
    /// Ops turned into their idempotent counterpart: an add that met EEXIST became an edit,
    /// an edit that met a missing entry became an add, a delete of something already gone
    /// counted as done.
    pub converted: usize,
    /// Ops that failed even so (e.g. a destination whose service another writer deleted);
    /// the next reconcile repairs them.
    pub errors: Vec<(Op, IpvsError)>,
}

/// Something that applies operations with the kernel's error semantics: the in-memory model,
/// the netlink backend, the printing backends.
pub trait IpvsWrite {
    /// Applies one operation.
    ///
    /// # Errors
    /// The kernel's answer (EEXIST, ESRCH, ENOENT as their [`IpvsError`] variants).
    fn apply(&mut self, op: &Op) -> Result<(), IpvsError>;
}

impl IpvsWrite for InMemoryIpvs {
    fn apply(&mut self, op: &Op) -> Result<(), IpvsError> {
        InMemoryIpvs::apply(self, op)
    }
}

/// Applies `plan` to `ipvs` idempotently: EEXIST on an add is retried as an edit,
/// ENOENT/ESRCH on an edit as an add, ESRCH/ENOENT on a delete is done.
/// Never stops at an error: every op is tried, failures are reported.
pub fn apply_plan<W: IpvsWrite + ?Sized>(ipvs: &mut W, plan: &Plan) -> ApplyReport {
    let mut report = ApplyReport::default();
    for op in &plan.ops {
        let fallback = match ipvs.apply(op) {
            Ok(()) => {
                report.applied += 1;
                continue;
            }
            Err(e) => match (op, &e) {
                (Op::AddService(s), IpvsError::ServiceExists(_)) => Op::EditService(s.clone()),
                (Op::EditService(s), IpvsError::NoService(_)) => Op::AddService(s.clone()),
                (Op::AddDest(k, d), IpvsError::DestExists(..)) => Op::EditDest(*k, d.clone()),
                (Op::EditDest(k, d), IpvsError::NoDest(..)) => Op::AddDest(*k, d.clone()),
                (Op::DelService(_), IpvsError::NoService(_))
                | (Op::DelDest(..), IpvsError::NoDest(..) | IpvsError::NoService(_)) => {
                    report.converted += 1;
                    continue;
                }
                _ => {
                    report.errors.push((op.clone(), e));
                    continue;
                }
            },
        };
        match ipvs.apply(&fallback) {
            Ok(()) => report.converted += 1,
            Err(e) => report.errors.push((op.clone(), e)),
        }
    }
    report
}
