//! The published tables. Long-poll handlers wait on the `watch` channel and wake together
//! when a table changes; bodies are serialized once per change and shared.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use ocean_core::table::TableKind;
use tokio::sync::watch;

/// One published table.
#[derive(Debug, Clone)]
pub struct Served {
    pub etag: String,
    pub body: Bytes,
    pub backends: usize,
    pub published_at: SystemTime,
    /// `body` gzip-compressed, made by the first subscriber that asks and then shared.
    gzip: OnceLock<Bytes>,
}

impl Served {
    pub fn new(etag: String, body: Bytes, backends: usize, published_at: SystemTime) -> Served {
        Served {
            etag,
            body,
            backends,
            published_at,
            gzip: OnceLock::new(),
        }
    }

    /// The body gzip-compressed (once per published table).
    pub fn gzipped(&self) -> Bytes {
        self.gzip
            .get_or_init(|| ocean_core::table::gzip::compress(&self.body).into())
            .clone()
    }
}

pub type Snapshot = Arc<BTreeMap<TableKind, Arc<Served>>>;

#[derive(Debug)]
pub struct Store {
    tx: watch::Sender<Snapshot>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            tx: watch::channel(Arc::new(BTreeMap::new())).0,
        }
    }
}

impl Store {
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
            let s = Arc::new(s);
            published.push((k, s.clone()));
            next.insert(k, s);
        }
        self.tx.send_replace(Arc::new(next));
        published
    }
}
