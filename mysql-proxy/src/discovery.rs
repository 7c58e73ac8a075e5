//! Primary discovery (`OCEAN_MYSQL_ROLE=auto`, the default): a database's candidates are
//! asked `@@read_only` every `--probe-interval`; the writable one takes its writes, the
//! read-only ones its reads, so a failover by an outside orchestrator (which flips
//! `read_only`) is followed without a Marathon change.
//!
//! - [`decide`] is the rule, pure: keep the current primary while it answers writable; else
//!   the one writable candidate; two writable ones and no current one: none (writes are
//!   refused rather than split), reported by `ocean_mysql_writable_candidates`. A candidate
//!   that is down (connection refused, login or query failed) is out at once; one that is
//!   only silent (the probe timed out) keeps its last answer for [`STALE_ROUNDS`] rounds,
//!   so one slow probe neither moves writes nor cuts reads.
//! - [`run`] probes over one persistent login per candidate (the `rw` credentials), and
//!   publishes each database's [`Placement`] when it changes.
//! - [`effective`] lays the placements over the table: a declared primary or replica
//!   (`OCEAN_MYSQL_ROLE=primary|replica`) always stands; discovery fills an empty primary
//!   and adds readable candidates to the replicas.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use ocean_core::table::mysql::{Credentials, MysqlTable};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::connection::Shared;
use crate::proto::Decoder;
use crate::upstream::{self, Backend, BackendStream, ClientParams};
use crate::wire::{read_packet, write_packet};

/// Rounds a candidate that does not answer keeps its last answer.
pub const STALE_ROUNDS: u32 = 3;

/// The question: either flag makes the server refuse writes from ordinary users.
const QUERY: &[u8] = b"SELECT @@global.read_only OR @@global.innodb_read_only";

/// Replies to the probe are a few bytes; anything larger is not what we asked.
const PROBE: Decoder = Decoder::new(64 * 1024);

/// Where one database's sessions go, as discovered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The writable candidate that takes writes.
    pub primary: Option<SocketAddr>,
    /// Read-only candidates (sorted): they take reads.
    pub readable: Vec<SocketAddr>,
    /// Candidates that answered writable (more than one: a split brain to page about).
    pub writable: usize,
}

/// Database name -> placement, for databases that have candidates.
pub type Found = BTreeMap<String, Placement>;

/// One probe's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Writable,
    ReadOnly,
    /// Refused, failed or closed: the server is not usable now.
    Down,
    /// No answer within the interval: nothing learned.
    Silent,
}

/// What is known of one candidate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Known {
    /// The last answer: writable (`true`) or read-only; `None` before the first, or down.
    pub writable: Option<bool>,
    /// Rounds in a row without an answer.
    pub failures: u32,
}

impl Known {
    /// This round's probe folded in.
    pub fn update(&mut self, answer: Answer) {
        match answer {
            Answer::Writable | Answer::ReadOnly => {
                self.writable = Some(answer == Answer::Writable);
                self.failures = 0;
            }
            Answer::Down => {
                self.writable = None;
                self.failures = self.failures.saturating_add(1);
            }
            Answer::Silent => {
                self.failures = self.failures.saturating_add(1);
                if self.failures >= STALE_ROUNDS {
                    self.writable = None;
                }
            }
        }
    }

    fn fresh(&self) -> bool {
        self.failures == 0
    }
}

/// The placement of a database from what is known of its candidates and its current
/// primary (see the module docs for the rule).
pub fn decide(current: Option<SocketAddr>, known: &[(SocketAddr, Known)]) -> Placement {
    let fresh_writable: Vec<SocketAddr> = known
        .iter()
        .filter(|(_, k)| k.fresh() && k.writable == Some(true))
        .map(|(a, _)| *a)
        .collect();
    let current_known = current.and_then(|c| known.iter().find(|(a, _)| *a == c));
    let primary = match (current_known, fresh_writable.as_slice()) {
        // Still writable, or only silent for a round or two: keep it, whatever else answers
        // writable (a failover makes the old primary read-only, or kills it: down).
        (Some((a, k)), _) if k.writable == Some(true) => Some(*a),
        (_, [one]) => Some(*one),
        _ => None,
    };
    // Every other candidate that answered takes reads; a writable one in a split brain
    // too (it has the data; only writes must not be split).
    let mut readable: Vec<SocketAddr> = known
        .iter()
        .filter(|(a, k)| k.writable.is_some() && Some(*a) != primary)
        .map(|(a, _)| *a)
        .collect();
    readable.sort();
    Placement {
        primary,
        readable,
        writable: known
            .iter()
            .filter(|(_, k)| k.writable == Some(true))
            .count(),
    }
}

/// `table` with the discovered placements laid over it: an empty primary is filled, the
/// readable candidates join the replicas. Declared roles are never overridden.
pub fn effective(table: &MysqlTable, found: &Found) -> MysqlTable {
    let mut t = table.clone();
    for db in &mut t.databases {
        let Some(p) = found.get(&db.name) else {
            continue;
        };
        if db.primary.is_none() {
            db.primary = p.primary.filter(|a| db.candidates.contains(a));
        }
        for r in &p.readable {
            if db.candidates.contains(r) && Some(*r) != db.primary && !db.replicas.contains(r) {
                db.replicas.push(*r);
            }
        }
        db.replicas.sort();
    }
    t
}

/// A logged-in probe connection.
struct Probe {
    backend: Backend,
    user: String,
}

/// Probes every candidate of the applied table each `--probe-interval` and sends the
/// placements whenever they change. Ends when `cancel` fires.
pub(crate) async fn run(
    shared: Arc<Shared>,
    found: watch::Sender<Arc<Found>>,
    cancel: CancellationToken,
) {
    let interval = shared.config.probe_interval;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probes: HashMap<SocketAddr, Probe> = HashMap::new();
    let mut known: HashMap<SocketAddr, Known> = HashMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = cancel.cancelled() => return,
        }
        let Some(index) = shared.index.load_full() else {
            continue;
        };
        // (database, candidates, credentials), in name order.
        let mut dbs: Vec<(String, Vec<SocketAddr>, Credentials)> = index
            .databases
            .values()
            .filter(|d| !d.candidates.is_empty())
            .map(|d| (d.name.clone(), d.candidates.clone(), d.rw.clone()))
            .collect();
        dbs.sort_by(|a, b| a.0.cmp(&b.0));
        let wanted: HashMap<SocketAddr, Credentials> = dbs
            .iter()
            .flat_map(|(_, cands, creds)| cands.iter().map(move |a| (*a, creds.clone())))
            .collect();
        probes.retain(|a, p| wanted.get(a).is_some_and(|c| c.user == p.user));
        known.retain(|a, _| wanted.contains_key(a));

        // Every candidate at once, each within the interval.
        let mut round = tokio::task::JoinSet::new();
        for (addr, creds) in &wanted {
            let probe = probes.remove(addr);
            let (addr, creds, shared) = (*addr, creds.clone(), shared.clone());
            round.spawn(async move {
                let answer =
                    tokio::time::timeout(interval, probe_once(&shared, addr, &creds, probe)).await;
                (addr, answer)
            });
        }
        while let Some(done) = round.join_next().await {
            let Ok((addr, answer)) = done else { continue };
            let answer = match answer {
                Ok(Ok((writable, probe))) => {
                    probes.insert(addr, probe);
                    if writable {
                        Answer::Writable
                    } else {
                        Answer::ReadOnly
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(backend = %addr, error = %e, "read_only probe failed");
                    Answer::Down
                }
                Err(_) => {
                    tracing::warn!(backend = %addr, timeout = ?interval, "read_only probe timed out");
                    Answer::Silent
                }
            };
            known.entry(addr).or_default().update(answer);
        }

        let before = found.borrow().clone();
        let mut next = Found::new();
        for (name, cands, _) in &dbs {
            let current = before.get(name).and_then(|p| p.primary);
            let ks: Vec<(SocketAddr, Known)> = cands
                .iter()
                .map(|a| (*a, known.get(a).copied().unwrap_or_default()))
                .collect();
            let p = decide(current, &ks);
            crate::metrics::writable_candidates(name, p.writable);
            if p.writable > 1 {
                tracing::error!(database = %name, primary = ?p.primary, writable = p.writable,
                    "more than one candidate is writable; writes stay with the current primary (none if there was none)");
            }
            if current != p.primary {
                tracing::warn!(database = %name, from = ?current, to = ?p.primary, "discovered primary changed");
                crate::metrics::primary_change(name);
            }
            next.insert(name.clone(), p);
        }
        if *before != next {
            found.send_replace(Arc::new(next));
        }
    }
}

/// Asks `addr` whether it is writable, over `probe` if it is still logged in (else a new
/// login as `creds`); the answer and the connection to keep.
async fn probe_once(
    shared: &Shared,
    addr: SocketAddr,
    creds: &Credentials,
    probe: Option<Probe>,
) -> anyhow::Result<(bool, Probe)> {
    if let Some(mut p) = probe {
        // The kept connection may have been closed by the server (wait_timeout, restart):
        // then a new login decides.
        if let Ok(read_only) = ask_over(&mut p).await {
            return Ok((!read_only, p));
        }
    }
    let mut probe = login(shared, addr, creds).await?;
    let read_only = ask_over(&mut probe).await?;
    Ok((!read_only, probe))
}

/// A new probe connection to `addr` as `creds`, within `--connect-timeout`.
async fn login(shared: &Shared, addr: SocketAddr, creds: &Credentials) -> anyhow::Result<Probe> {
    let caps = CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_TRANSACTIONS;
    let params = ClientParams {
        capabilities: caps,
        // utf8mb4_general_ci
        collation: 45,
        max_packet_size: 16 * 1024 * 1024,
        attributes: None,
        mariadb: MariadbCapabilities::empty(),
    };
    let tls = shared.backend_tls.as_ref();
    let backend = tokio::time::timeout(
        shared.config.connect_timeout,
        upstream::login(addr, creds, None, &params, caps, tls),
    )
    .await
    .map_err(|_| anyhow::anyhow!("login timed out"))?;
    // The probes see every candidate server's greeting first: what clients are offered.
    shared.backend_caps.note(addr, &backend);
    let backend = backend?;
    Ok(Probe {
        backend,
        user: creds.user.clone(),
    })
}

/// [`ask`] over a probe connection.
async fn ask_over(probe: &mut Probe) -> anyhow::Result<bool> {
    let eof = !probe.backend.deprecate_eof;
    match &mut probe.backend.stream {
        BackendStream::Plain(s) => ask(s, eof).await,
        BackendStream::Tls(s) => ask(s.as_mut(), eof).await,
    }
}

/// Sends [`QUERY`] and reads its one-row, one-column text result: whether the server is
/// read-only. `eof`: the column definitions end with an EOF packet (no DEPRECATE_EOF).
async fn ask<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, eof: bool) -> anyhow::Result<bool> {
    let mut q = Vec::with_capacity(QUERY.len() + 1);
    q.push(0x03); // COM_QUERY
    q.extend_from_slice(QUERY);
    write_packet(s, 0, &q).await?;
    let first = read_packet(s, PROBE).await?.payload;
    match first.first() {
        Some(0xff) => anyhow::bail!("{}", error_text(&first)),
        Some(1) => {}
        _ => anyhow::bail!("expected one column, got {first:02x?}"),
    }
    let _column = read_packet(s, PROBE).await?;
    if eof {
        let _eof = read_packet(s, PROBE).await?;
    }
    let row = read_packet(s, PROBE).await?.payload;
    let value = match &row[..] {
        // A length-encoded string of one or a few bytes: "0" or "1".
        [n, rest @ ..] if usize::from(*n) == rest.len() && *n < 0xfb => rest.to_vec(),
        [0xff, ..] => anyhow::bail!("{}", error_text(&row)),
        other => anyhow::bail!("unexpected row {other:02x?}"),
    };
    // The end of the result set (EOF, or OK with DEPRECATE_EOF), or an error.
    let end = read_packet(s, PROBE).await?.payload;
    if end.first() != Some(&0xfe) {
        anyhow::bail!("expected the end of the result, got {end:02x?}");
    }
    match &value[..] {
        b"0" => Ok(false),
        b"1" => Ok(true),
        other => anyhow::bail!("read_only is {:?}", String::from_utf8_lossy(other)),
    }
}

fn error_text(err: &[u8]) -> String {
    let e = crate::proto::reply::parse_err(err);
    format!("backend error {} {}", e.code, e.message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn a(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 3306))
    }

    fn k(writable: Option<bool>, failures: u32) -> Known {
        Known { writable, failures }
    }

    #[test]
    fn the_one_writable_candidate_is_primary_and_read_only_ones_read() {
        let p = decide(None, &[(a(1), k(Some(false), 0)), (a(2), k(Some(true), 0))]);
        assert_eq!(p.primary, Some(a(2)));
        assert_eq!(p.readable, vec![a(1)]);
        assert_eq!(p.writable, 1);
    }

    #[test]
    fn a_failover_moves_the_primary_at_once() {
        // The orchestrator made a(1) read-only and a(2) writable.
        let p = decide(
            Some(a(1)),
            &[(a(1), k(Some(false), 0)), (a(2), k(Some(true), 0))],
        );
        assert_eq!(p.primary, Some(a(2)));
        // a(1) died (down: its last answer is dropped) and a(2) was promoted.
        let mut dead = k(Some(true), 0);
        dead.update(Answer::Down);
        let p = decide(Some(a(1)), &[(a(1), dead), (a(2), k(Some(true), 0))]);
        assert_eq!(p.primary, Some(a(2)));
        assert!(p.readable.is_empty(), "a down candidate takes no reads");
    }

    #[test]
    fn two_writable_keep_the_current_one_or_pick_none() {
        let both = [(a(1), k(Some(true), 0)), (a(2), k(Some(true), 0))];
        let p = decide(Some(a(2)), &both);
        assert_eq!((p.primary, p.writable), (Some(a(2)), 2));
        assert_eq!(p.readable, vec![a(1)], "reads are not cut in a split brain");
        assert_eq!(decide(None, &both).primary, None);
        // The current one silent for a round while the other answers writable: kept.
        let p = decide(
            Some(a(2)),
            &[(a(1), k(Some(true), 0)), (a(2), k(Some(true), 1))],
        );
        assert_eq!(p.primary, Some(a(2)));
    }

    #[test]
    fn a_missed_probe_keeps_the_primary_until_stale() {
        let mut known = k(Some(true), 0);
        for round in 1..STALE_ROUNDS {
            known.update(Answer::Silent);
            let p = decide(Some(a(1)), &[(a(1), known), (a(2), k(Some(false), 0))]);
            assert_eq!(p.primary, Some(a(1)), "round {round}");
        }
        known.update(Answer::Silent);
        let p = decide(Some(a(1)), &[(a(1), known), (a(2), k(Some(false), 0))]);
        assert_eq!(p.primary, None);
        assert_eq!(p.readable, vec![a(2)]);
        // An answer brings it back.
        known.update(Answer::Writable);
        assert_eq!(known, k(Some(true), 0));
    }

    #[test]
    fn effective_fills_only_what_the_table_leaves_open() {
        use ocean_core::table::mysql::MysqlDatabase;
        let creds = Credentials {
            user: "u".into(),
            password: "p".into(),
        };
        let db = |name: &str, primary: Option<SocketAddr>| MysqlDatabase {
            name: name.into(),
            primary,
            replicas: vec![a(9)],
            candidates: vec![a(1), a(2)],
            ro: None,
            rw: creds.clone(),
            schema: name.trim_start_matches('/').into(),
            pool_max: None,
            multiplex: None,
        };
        let table = MysqlTable {
            databases: vec![db("/x/auto", None), db("/x/declared", Some(a(7)))],
            jobs: vec![],
        };
        let placement = Placement {
            primary: Some(a(2)),
            readable: vec![a(1)],
            writable: 1,
        };
        let found: Found = [
            ("/x/auto".to_string(), placement.clone()),
            ("/x/declared".to_string(), placement),
        ]
        .into();
        let t = effective(&table, &found);
        assert_eq!(t.databases[0].primary, Some(a(2)));
        assert_eq!(t.databases[0].replicas, vec![a(1), a(9)]);
        assert_eq!(
            t.databases[1].primary,
            Some(a(7)),
            "a declared primary stands"
        );
        assert_eq!(t.databases[1].replicas, vec![a(1), a(9)]);
        // Nothing discovered: the table as it is.
        assert_eq!(effective(&table, &Found::new()), table);
    }
}
