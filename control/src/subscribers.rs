//! Which proxies subscribe to which table, the ETag each runs and its last refusal — what an
//! operator reads at `/v1/subscribers` to see who lags (like xDS ACK/NACK).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use ocean_core::table::TableKind;
use serde::Serialize;

use crate::store::Snapshot;

/// What a poll told us about a subscriber.
#[derive(Debug, Clone)]
pub struct Report {
    pub kind: TableKind,
    pub id: String,
    pub addr: Option<SocketAddr>,
    pub running: Option<String>,
    pub refused: Option<String>,
    pub reason: Option<String>,
    /// The ETag control served when the report came in: a subscriber running it is in sync.
    pub current: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    addr: Option<SocketAddr>,
    running: Option<String>,
    refused: Option<String>,
    reason: Option<String>,
    last_seen: SystemTime,
    first_seen: SystemTime,
    /// The last report in which it ran the ETag control served then.
    in_sync_at: Option<SystemTime>,
    polls: u64,
}

/// One row of `/v1/subscribers`.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriberView {
    pub kind: TableKind,
    pub id: String,
    pub addr: Option<String>,
    /// The ETag the subscriber runs (`null` before its first table).
    pub running: Option<String>,
    /// The ETag control serves now.
    pub current: Option<String>,
    pub lagging: bool,
    pub last_refused: Option<String>,
    pub last_refusal_reason: Option<String>,
    pub last_seen_s_ago: u64,
    /// Seconds since it last reported running the ETag control served at that moment
    /// (`null`: never, since control started or first heard of it).
    pub in_sync_s_ago: Option<u64>,
    /// While lagging: for how long it has been behind the current table, counted from the
    /// later of its last in-sync report (or first report) and the current table's
    /// publication. `null` when in sync.
    pub behind_s: Option<u64>,
    pub polls: u64,
}

/// Subscribers not heard from for this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Default)]
pub struct Subscribers {
    entries: Mutex<BTreeMap<(TableKind, String), Entry>>,
}

impl Subscribers {
    pub fn report(&self, r: Report) {
        let now = SystemTime::now();
        let Ok(mut map) = self.entries.lock() else {
            return;
        };
        let e = map.entry((r.kind, r.id)).or_insert_with(|| Entry {
            addr: None,
            running: None,
            refused: None,
            reason: None,
            last_seen: now,
            first_seen: now,
            in_sync_at: None,
            polls: 0,
        });
        e.addr = r.addr.or(e.addr);
        if r.current.is_some() && r.running == r.current {
            e.in_sync_at = Some(now);
        }
        e.running = r.running;
        if r.refused.is_some() {
            e.refused = r.refused;
            e.reason = r.reason;
        }
        e.last_seen = now;
        e.polls += 1;
        map.retain(|_, e| now.duration_since(e.last_seen).unwrap_or_default() < FORGET_AFTER);
    }

    /// All subscribers, with whether each runs the ETag of its kind in `tables`.
    pub fn list(&self, tables: &Snapshot) -> Vec<SubscriberView> {
        let now = SystemTime::now();
        let Ok(map) = self.entries.lock() else {
            return Vec::new();
        };
        let secs = |t: SystemTime| now.duration_since(t).unwrap_or_default().as_secs();
        map.iter()
            .map(|((kind, id), e)| {
                let served = tables.get(kind);
                let cur = served.map(|s| s.etag.clone());
                let lagging = cur.is_some() && e.running != cur;
                let behind_s = served.filter(|_| lagging).map(|s| {
                    let since = e.in_sync_at.unwrap_or(e.first_seen);
                    secs(since.max(s.published_at))
                });
                SubscriberView {
                    kind: *kind,
                    id: id.clone(),
                    addr: e.addr.map(|a| a.to_string()),
                    lagging,
                    running: e.running.clone(),
                    current: cur,
                    last_refused: e.refused.clone(),
                    last_refusal_reason: e.reason.clone(),
                    last_seen_s_ago: now
                        .duration_since(e.last_seen)
                        .unwrap_or_default()
                        .as_secs(),
                    in_sync_s_ago: e.in_sync_at.map(secs),
                    behind_s,
                    polls: e.polls,
                }
            })
            .collect()
    }

    /// Total polls and subscriber count per kind (for metrics).
    pub fn counts(&self) -> BTreeMap<TableKind, usize> {
        let mut out = BTreeMap::new();
        if let Ok(map) = self.entries.lock() {
            for (kind, _) in map.keys() {
                *out.entry(*kind).or_default() += 1;
            }
        }
        out
    }
}
