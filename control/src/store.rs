//! The published tables. Long-poll handlers wait on the `watch` channel and wake together
//! when a table changes; bodies are serialized once per change and shared.
//!
//! For the kinds that take deltas the store also keeps the changes of the last
//! `--delta-history` versions, so that a subscriber a few versions behind gets the entries
//! that changed since its version instead of the whole table (see
//! [`ocean_core::table::delta`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use ocean_core::table::delta::Changes;
use ocean_core::table::TableKind;
use tokio::sync::watch;

/// One published table.
#[derive(Debug)]
pub struct Served {
    pub etag: String,
    pub body: Bytes,
    pub backends: usize,
    pub published_at: SystemTime,
    /// `body` gzip-compressed, made by the first subscriber that asks and then shared.
    gzip: tokio::sync::OnceCell<Bytes>,
    /// What changed since the table published before this one (kinds that take deltas).
    changes: Option<(String, Arc<Changes>)>,
    /// Delta documents to this table by the ETag they start from, made on first request.
    deltas: Mutex<HashMap<String, Bytes>>,
}

impl Served {
    pub fn new(etag: String, body: Bytes, backends: usize, published_at: SystemTime) -> Served {
        Served {
            etag,
            body,
            backends,
            published_at,
            gzip: tokio::sync::OnceCell::new(),
            changes: None,
            deltas: Mutex::new(HashMap::new()),
        }
    }

    /// The same table, with what changed since the table with ETag `base`.
    pub fn with_changes(mut self, base: String, changes: Changes) -> Served {
        self.changes = Some((base, Arc::new(changes)));
        self
    }

    /// The body gzip-compressed (once per published table; the subscribers that ask
    /// meanwhile wait for that one). Compressed on a blocking thread: a 131 MB table takes
    /// seconds, which would stall the async worker and every request on it.
    pub async fn gzipped(&self) -> Bytes {
        self.gzip
            .get_or_init(|| async {
                let body = self.body.clone();
                let compress = move || Bytes::from(ocean_core::table::gzip::compress(&body));
                match tokio::task::spawn_blocking(compress).await {
                    Ok(gz) => gz,
                    // The blocking pool is gone (shutting down): compress here.
                    Err(_) => Bytes::from(ocean_core::table::gzip::compress(&self.body)),
                }
            })
            .await
            .clone()
    }
}

pub type Snapshot = Arc<BTreeMap<TableKind, Arc<Served>>>;

/// One version step of a table: from ETag `from` to `to`.
#[derive(Debug)]
struct Step {
    from: String,
    to: String,
    changes: Arc<Changes>,
}

/// A step this small is kept whatever the table's size.
const MAX_SMALL_STEP: usize = 64 << 10;

/// The default of `--delta-history`.
pub const DEFAULT_DELTA_HISTORY: usize = 32;

#[derive(Debug)]
pub struct Store {
    tx: watch::Sender<Snapshot>,
    /// Per kind, the last version steps, oldest first; the last one ends at the published
    /// table.
    history: Mutex<HashMap<TableKind, VecDeque<Step>>>,
    /// How many steps are kept per kind (0: no deltas).
    history_len: usize,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(DEFAULT_DELTA_HISTORY)
    }
}

impl Store {
    /// A store that keeps `history_len` version steps per kind for deltas.
    pub fn new(history_len: usize) -> Store {
        Store {
            tx: watch::channel(Arc::new(BTreeMap::new())).0,
            history: Mutex::new(HashMap::new()),
            history_len,
        }
    }

    /// The delta document from the table with ETag `since` to `current` (the published
    /// table of `kind`), if the history still reaches back to `since`. Made once per
    /// (`since`, `current`) and shared.
    pub fn delta(&self, kind: TableKind, since: &str, current: &Served) -> Option<Bytes> {
        if let Some(doc) = current.deltas.lock().ok()?.get(since) {
            return Some(doc.clone());
        }
        let joined = {
            let history = self.history.lock().ok()?;
            let steps = history.get(&kind)?;
            // The steps from `since` up to the table being served (newer ones may have been
            // published since this request took its snapshot).
            let end = steps.iter().rposition(|s| s.to == current.etag)?;
            let start = steps.iter().take(end + 1).rposition(|s| s.from == since)?;
            Changes::join(
                steps
                    .iter()
                    .skip(start)
                    .take(end + 1 - start)
                    .map(|s| &*s.changes),
            )?
        };
        let doc: Bytes = joined.encode(since, &current.etag).into();
        if let Ok(mut cache) = current.deltas.lock() {
            cache.insert(since.to_string(), doc.clone());
        }
        Some(doc)
    }

    pub fn get(&self, kind: TableKind) -> Option<Arc<Served>> {
        self.tx.borrow().get(&kind).cloned()
    }

    pub fn snapshot(&self) -> Snapshot {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.tx.subscribe()
    }

    /// Publishes the tables in `changed` (all at once: waiters wake once). Returns the
    /// tables that differed from what was published.
    pub fn publish(&self, changed: Vec<(TableKind, Served)>) -> Vec<(TableKind, Arc<Served>)> {
        let current = self.snapshot();
        let news: Vec<_> = changed
            .into_iter()
            .filter(|(k, s)| current.get(k).map(|c| c.etag != s.etag).unwrap_or(true))
            .collect();
        if news.is_empty() {
            return Vec::new();
        }
        let mut published = Vec::with_capacity(news.len());
        let mut next = (*current).clone();
        for (k, s) in news {
            tracing::info!(table = %k, etag = %s.etag, backends = s.backends, bytes = s.body.len(), "table published");
            metrics::gauge!("ocean_control_table_backends", "kind" => k.as_str())
                .set(s.backends as f64);
            metrics::gauge!("ocean_control_table_bytes", "kind" => k.as_str())
                .set(s.body.len() as f64);
            metrics::gauge!("ocean_control_table_etag_prefix", "kind" => k.as_str())
                .set(u32::from_str_radix(s.etag.get(..8).unwrap_or("0"), 16).unwrap_or(0) as f64);
            metrics::counter!("ocean_control_table_publishes_total", "kind" => k.as_str())
                .increment(1);
            self.record_step(k, current.get(&k).map(|c| c.etag.as_str()), &s);
            let s = Arc::new(s);
            published.push((k, s.clone()));
            next.insert(k, s);
        }
        self.tx.send_replace(Arc::new(next));
        published
    }

    /// Keeps the step from the published table (ETag `from`) to `next` for deltas, when
    /// `next` carries changes from exactly that table; else the history of the kind starts
    /// over (a subscriber behind it gets the whole table).
    fn record_step(&self, kind: TableKind, from: Option<&str>, next: &Served) {
        let Ok(mut history) = self.history.lock() else {
            return;
        };
        let steps = history.entry(kind).or_default();
        match (&next.changes, from) {
            // A change of most of a large table (a new domain, say) is not kept: the whole
            // table, gzip-compressed, is the better answer, and 32 such steps would hold 32
            // tables' worth of entries.
            (Some((base, changes)), Some(from))
                if base == from
                    && self.history_len > 0
                    && changes.size() <= (next.body.len() / 2).max(MAX_SMALL_STEP) =>
            {
                if steps.len() >= self.history_len {
                    steps.pop_front();
                }
                steps.push_back(Step {
                    from: from.to_string(),
                    to: next.etag.clone(),
                    changes: changes.clone(),
                });
            }
            _ => steps.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use ocean_core::table::dns::DnsRecords;
    use ocean_core::table::{etag_of, DnsTable, Table};

    use super::*;

    fn a(ip: Ipv4Addr) -> DnsRecords {
        DnsRecords {
            a: vec![ip],
            ..Default::default()
        }
    }

    /// Version `n` of a dns table: `a.mesos.` points at 10.0.0.n.
    fn version(n: u8) -> DnsTable {
        let mut t = DnsTable::default();
        t.names
            .insert("a.mesos.".into(), a(Ipv4Addr::new(10, 0, 0, n)));
        t.names.insert("b.mesos.".into(), a(Ipv4Addr::LOCALHOST));
        t
    }

    fn served(t: &DnsTable, base: Option<&DnsTable>) -> Served {
        let body = t.canonical_body().unwrap_or_default();
        let s = Served::new(etag_of(&body), body.into(), 1, SystemTime::now());
        match base {
            Some(b) => {
                let from = etag_of(&b.canonical_body().unwrap_or_default());
                s.with_changes(from, Changes::between(b, t).unwrap_or_default())
            }
            None => s,
        }
    }

    fn etag(t: &DnsTable) -> String {
        etag_of(&t.canonical_body().unwrap_or_default())
    }

    /// Publishes versions 1..=n, each with its changes from the one before.
    fn store_with(history: usize, n: u8) -> Store {
        let store = Store::new(history);
        store.publish(vec![(TableKind::Dns, served(&version(1), None))]);
        for v in 2..=n {
            store.publish(vec![(
                TableKind::Dns,
                served(&version(v), Some(&version(v - 1))),
            )]);
        }
        store
    }

    fn delta_from(store: &Store, v: u8) -> Option<DnsTable> {
        let current = store.get(TableKind::Dns)?;
        let doc = store.delta(TableKind::Dns, &etag(&version(v)), &current)?;
        let base = version(v);
        let encoded = base.encode_after(None, Default::default()).unwrap().0;
        let applied = ocean_core::table::delta::apply(&base, &etag(&base), &encoded, &doc)
            .unwrap_or_else(|e| panic!("{e}"));
        Some(applied.table)
    }

    #[test]
    fn deltas_reach_back_as_far_as_the_history() {
        let store = store_with(3, 5);
        // One, two and three versions behind: a delta that makes version 5.
        for v in [4, 3, 2] {
            assert_eq!(delta_from(&store, v), Some(version(5)), "from {v}");
        }
        // Four behind is past the history: no delta (the whole table is served).
        assert_eq!(delta_from(&store, 1), None);
        // An ETag never published: no delta.
        let current = store
            .get(TableKind::Dns)
            .unwrap_or_else(|| panic!("no table"));
        assert!(store.delta(TableKind::Dns, "feed", &current).is_none());
    }

    #[test]
    fn a_table_without_changes_starts_the_history_over() {
        let store = store_with(8, 3);
        assert_eq!(delta_from(&store, 2), Some(version(3)));
        // Published without changes (say, its base was not the published table).
        store.publish(vec![(TableKind::Dns, served(&version(4), None))]);
        assert_eq!(delta_from(&store, 3), None);
        // Changes based on a table other than the published one are not kept either.
        store.publish(vec![(
            TableKind::Dns,
            served(&version(5), Some(&version(1))),
        )]);
        assert_eq!(delta_from(&store, 4), None);
        // A zero history keeps nothing.
        let store = store_with(0, 3);
        assert_eq!(delta_from(&store, 2), None);
        // Nor is a step that changes most of a large table.
        let large = |prefix: &str| {
            let mut t = version(1);
            for i in 0..5000 {
                t.names
                    .insert(format!("{prefix}-{i}.mesos."), a(Ipv4Addr::LOCALHOST));
            }
            t
        };
        let (before, renamed) = (large("a"), large("b"));
        let store = Store::new(8);
        store.publish(vec![(TableKind::Dns, served(&before, None))]);
        store.publish(vec![(TableKind::Dns, served(&renamed, Some(&before)))]);
        let current = store
            .get(TableKind::Dns)
            .unwrap_or_else(|| panic!("no table"));
        assert!(store
            .delta(TableKind::Dns, &etag(&before), &current)
            .is_none());
        // While a small change of the same large table is.
        let mut grown = renamed.clone();
        grown
            .names
            .insert("c.mesos.".into(), a(Ipv4Addr::LOCALHOST));
        store.publish(vec![(TableKind::Dns, served(&grown, Some(&renamed)))]);
        let current = store
            .get(TableKind::Dns)
            .unwrap_or_else(|| panic!("no table"));
        assert!(store
            .delta(TableKind::Dns, &etag(&renamed), &current)
            .is_some());
    }

    #[test]
    fn delta_documents_are_made_once() {
        let store = store_with(4, 3);
        let current = store
            .get(TableKind::Dns)
            .unwrap_or_else(|| panic!("no table"));
        let a = store.delta(TableKind::Dns, &etag(&version(2)), &current);
        let b = store.delta(TableKind::Dns, &etag(&version(2)), &current);
        assert!(a.is_some());
        // The same shared bytes, not a second encoding.
        assert_eq!(
            a.map(|d| d.as_ptr() as usize),
            b.map(|d| d.as_ptr() as usize)
        );
    }
}
