//! Which proxies subscribe to which table, the ETag each runs and its last refusal — what an
//! operator reads at `/v1/subscribers` to see who lags (like xDS ACK/NACK).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use ocean_core::table::TableKind;
use serde::{Deserialize, Serialize};

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

/// `GET /v1/subscribers?kind=K&lagging=true&offset=N&limit=M`: which rows, and which page
/// of them. Rows are ordered lagging first (then by kind and id), so that at a thousand
/// subscribers the first page is the one an operator wants.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Only this table kind (`dns`, `redis`, ...).
    pub kind: Option<TableKind>,
    /// Only lagging (`true`) or in-sync (`false`) subscribers.
    pub lagging: Option<bool>,
    /// Rows to skip.
    #[serde(default)]
    pub offset: usize,
    /// At most this many rows (default: all).
    pub limit: Option<usize>,
}

impl Page {
    /// The rows of `list` this page selects, and how many rows match before paging
    /// (the `X-Total-Count` header).
    pub fn select(&self, mut list: Vec<SubscriberView>) -> (usize, Vec<SubscriberView>) {
        list.retain(|v| {
            self.kind.is_none_or(|k| v.kind == k) && self.lagging.is_none_or(|l| v.lagging == l)
        });
        lagging_first(&mut list);
        let total = list.len();
        let rows = list
            .into_iter()
            .skip(self.offset)
            .take(self.limit.unwrap_or(usize::MAX))
            .collect();
        (total, rows)
    }
}

/// Lagging subscribers first, then by kind and id.
pub fn lagging_first(list: &mut [SubscriberView]) {
    list.sort_by(|a, b| (!a.lagging, a.kind, &a.id).cmp(&(!b.lagging, b.kind, &b.id)));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod page_tests {
    use super::*;

    fn view(kind: TableKind, id: &str, lagging: bool) -> SubscriberView {
        SubscriberView {
            kind,
            id: id.into(),
            addr: None,
            lagging,
            running: None,
            current: None,
            last_refused: None,
            last_refusal_reason: None,
            last_seen_s_ago: 0,
            in_sync_s_ago: None,
            behind_s: None,
            polls: 1,
        }
    }

    #[test]
    fn pages_come_lagging_first_filtered_and_counted() {
        let list: Vec<_> = (0..1000)
            .map(|i| {
                let kind = if i % 2 == 0 {
                    TableKind::Dns
                } else {
                    TableKind::Redis
                };
                view(kind, &format!("p{i:04}"), i % 100 == 7)
            })
            .collect();
        let all = Page::default().select(list.clone());
        assert_eq!(all.0, 1000);
        assert_eq!(all.1.len(), 1000);
        assert!(all.1[..10].iter().all(|v| v.lagging));
        assert!(!all.1[10].lagging);

        let page = Page {
            offset: 5,
            limit: Some(3),
            ..Page::default()
        };
        let (total, rows) = page.select(list.clone());
        assert_eq!(total, 1000);
        let ids: Vec<_> = rows.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["p0507", "p0607", "p0707"]);

        let redis_lagging = Page {
            kind: Some(TableKind::Redis),
            lagging: Some(true),
            ..Page::default()
        };
        let (total, rows) = redis_lagging.select(list.clone());
        assert_eq!(total, 10);
        assert!(rows.iter().all(|v| v.lagging && v.kind == TableKind::Redis));

        let past_the_end = Page {
            offset: 5000,
            ..Page::default()
        };
        let (total, rows) = past_the_end.select(list);
        assert_eq!((total, rows.len()), (1000, 0));
    }
}
