//! The tables: one full snapshot per proxy kind, produced by control and consumed by proxies.
//!
//! A table is plain serde data. Its ETag is the SHA-256 of its canonical JSON (object keys
//! sorted, no whitespace), so every control replica computes the same ETag for the same
//! state, and a proxy can tell "same table" without comparing bodies.
//!
//! Every table has a `validate()` that a proxy runs before swapping a table in; an invalid
//! table is refused as a whole with the list of entries at fault.

pub mod delta;
pub mod dns;
pub mod etag;
pub mod gzip;
pub mod incremental;
pub mod keyed;
pub mod lvs;
pub mod memcached;
pub mod mysql;
pub mod redis;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use dns::DnsTable;
pub use lvs::LvsTable;
pub use memcached::MemcachedTable;
pub use mysql::MysqlTable;
pub use redis::RedisTable;

/// The five kinds of table, one per proxy kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Dns,
    Redis,
    Memcached,
    Mysql,
    Lvs,
}

impl TableKind {
    /// Every kind, in the order control derives and lists them.
    pub const ALL: [TableKind; 5] = [
        TableKind::Dns,
        TableKind::Redis,
        TableKind::Memcached,
        TableKind::Mysql,
        TableKind::Lvs,
    ];

    /// The name used in URLs (`/v1/tables/{kind}`), cache file names and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TableKind::Dns => "dns",
            TableKind::Redis => "redis",
            TableKind::Memcached => "memcached",
            TableKind::Mysql => "mysql",
            TableKind::Lvs => "lvs",
        }
    }
}

impl fmt::Display for TableKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TableKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TableKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// A kind name that is not one of the five tables.
#[derive(Debug, thiserror::Error)]
#[error("unknown table kind {0:?} (expected one of dns, redis, memcached, mysql, lvs)")]
pub struct UnknownKind(pub String);

/// One reason a table is invalid: which entry, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalid {
    /// Path of the entry at fault, e.g. `clusters[2] (cache-a)` or `names["x.mesos."]`.
    pub entry: String,
    pub reason: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.entry, self.reason)
    }
}

/// Why a table was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TableError {
    #[error("{kind} table is not valid JSON for its type: {message}")]
    Parse { kind: TableKind, message: String },
    #[error("{kind} table is invalid: {}", join(.problems))]
    Invalid {
        kind: TableKind,
        problems: Vec<Invalid>,
    },
}

fn join(problems: &[Invalid]) -> String {
    const SHOWN: usize = 5;
    let mut s = problems
        .iter()
        .take(SHOWN)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > SHOWN {
        s.push_str(&format!("; and {} more", problems.len() - SHOWN));
    }
    s
}

/// Collects [`Invalid`] entries while a table is checked.
#[derive(Debug, Default)]
pub struct Problems(Vec<Invalid>);

impl Problems {
    pub fn push(&mut self, entry: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Invalid {
            entry: entry.into(),
            reason: reason.into(),
        });
    }

    pub fn into_result(self, kind: TableKind) -> Result<(), TableError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(TableError::Invalid {
                kind,
                problems: self.0,
            })
        }
    }
}

/// What every table type provides.
pub trait Table:
    Serialize + DeserializeOwned + Clone + fmt::Debug + PartialEq + Default + Send + Sync + 'static
{
    const KIND: TableKind;

    /// Whether control serves this kind as deltas to a subscriber that says what it runs
    /// (`?since=`); see [`delta`].
    const DELTAS: bool = false;

    /// Checks everything a proxy relies on. Returns every problem found, not just the first.
    fn validate(&self) -> Result<(), TableError>;

    /// The number of backends (addresses, records, real servers) this table routes to; what
    /// control's drop guard compares between versions.
    fn backend_count(&self) -> usize;

    /// The table's canonical JSON, written directly (about 10x faster than going through
    /// `serde_json::Value` at control's scale). This is canonical because every table struct
    /// declares its fields in sorted order and keeps maps in `BTreeMap`s; the test
    /// `direct_serialization_is_canonical` holds every table type to it.
    fn canonical_body(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// What changed since `old`, for control to serve as a delta (see [`delta`]); `None`
    /// for the kinds that are always served whole.
    fn changes_since(&self, _old: &Self) -> Option<Result<delta::Changes, serde_json::Error>> {
        None
    }

    /// The canonical body, built from `previous` (the last version and its encoding) for
    /// the entries that did not change, with the changes since `previous` (see
    /// [`incremental`]), in `buffers` (those of an encoding no longer used, or none). Kinds
    /// that take no deltas serialize whole and report no changes.
    ///
    /// # Errors
    /// A value that does not serialize (not possible for table types).
    fn encode_after(
        &self,
        _previous: Option<(&Self, &incremental::Encoded)>,
        _buffers: incremental::Buffers,
    ) -> Result<(incremental::Encoded, Option<delta::Changes>), serde_json::Error> {
        Ok((incremental::Encoded::whole(self.canonical_body()?), None))
    }

    /// [`encode_after`](Self::encode_after) `previous`, when the caller knows that the two
    /// differ in at most the entries `hint` names (see [`incremental::encode_hinted`]);
    /// the kinds without entries ignore the hint.
    ///
    /// # Errors
    /// A value that does not serialize (not possible for table types).
    fn encode_hinted(
        &self,
        previous: (&Self, &incremental::Encoded),
        _hint: &std::collections::BTreeSet<String>,
        buffers: incremental::Buffers,
    ) -> Result<(incremental::Encoded, Option<delta::Changes>), serde_json::Error> {
        self.encode_after(Some(previous), buffers)
    }

    /// Validates this table, which is `previous` (valid) with `changes` applied: keyed kinds
    /// whose header stayed check the changed entries only.
    ///
    /// # Errors
    /// What [`validate`](Self::validate) finds.
    fn validate_after(
        &self,
        _previous: &Self,
        _changes: &delta::Changes,
    ) -> Result<(), TableError> {
        self.validate()
    }

    /// Applies a delta document to this table (whose ETag is `etag` and body `encoded`) and
    /// checks the result; `None` for the kinds that take no deltas.
    fn apply_delta(
        &self,
        _etag: &str,
        _encoded: &incremental::Encoded,
        _doc: &[u8],
    ) -> Option<Result<delta::Applied<Self>, delta::DeltaError>> {
        None
    }

    /// Parses and validates a table body.
    fn from_json(body: &[u8]) -> Result<Self, TableError> {
        let table: Self = serde_json::from_slice(body).map_err(|e| TableError::Parse {
            kind: Self::KIND,
            message: e.to_string(),
        })?;
        table.validate()?;
        Ok(table)
    }
}

/// The canonical JSON of a value: object keys sorted, no insignificant whitespace.
///
/// Going through `serde_json::Value` sorts keys (its map is a `BTreeMap` because the
/// `preserve_order` feature is off), so field order in Rust structs does not matter.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let v = serde_json::to_value(value)?;
    serde_json::to_vec(&v)
}

/// The ETag of a canonical JSON body: hex of the first 16 bytes of its SHA-256.
pub fn etag_of(canonical: &[u8]) -> String {
    let digest = Sha256::digest(canonical);
    hex::encode(&digest[..16])
}

/// A table together with its ETag and canonical body, shared by reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub etag: String,
    pub table: T,
    /// The canonical JSON the ETag was computed from (what `/table` and caches serve).
    pub body: bytes::Bytes,
    /// The same body with where each entry lies in it: a delta's result copies the entries
    /// it did not change from here (see [`incremental`]).
    pub encoded: Arc<incremental::Encoded>,
    /// When this table was made by a delta: from which table, and which entries it
    /// touched, so that a proxy may update only those (`ocean dns` re-encodes only them).
    pub delta: Option<Arc<DeltaOrigin>>,
}

/// What a delta changed: the ETag of the table it was applied to and the keys of the
/// entries it set or removed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaOrigin {
    pub from: String,
    pub changed: Vec<String>,
}

impl<T: Table> Versioned<T> {
    /// Computes the canonical body and ETag of `table`.
    pub fn new(table: T) -> Result<Arc<Self>, serde_json::Error> {
        let (mut encoded, _) = table.encode_after(None, incremental::Buffers::default())?;
        Ok(Arc::new(Versioned {
            etag: encoded.hash_etag(None),
            table,
            body: encoded.body.clone(),
            encoded: Arc::new(encoded),
            delta: None,
        }))
    }
}

/// Quotes an ETag for an HTTP header (`"abc"`), and strips the quotes (and a weak `W/`) back.
pub fn quote_etag(etag: &str) -> String {
    format!("\"{etag}\"")
}

/// Inverse of [`quote_etag`]; tolerant of missing quotes.
pub fn unquote_etag(header: &str) -> &str {
    let h = header.trim();
    let h = h.strip_prefix("W/").unwrap_or(h);
    h.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(h)
}

/// Why `name` cannot identify an entry (cluster, pool, replica set, job), if it cannot:
/// empty, longer than 255 bytes, or containing whitespace or control characters. Control
/// applies the same rule to labels, so a bad label leaves out one app, not the whole table.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("name is empty".into())
    } else if name.len() > 255 {
        Some("name is longer than 255 bytes".into())
    } else if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some(format!(
            "name {name:?} contains whitespace or control characters"
        ))
    } else {
        None
    }
}

/// Records [`name_problem`] for an entry.
pub(crate) fn check_name(p: &mut Problems, entry: &str, name: &str) {
    if let Some(reason) = name_problem(name) {
        p.push(entry, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_round_trips_through_its_name() {
        for k in TableKind::ALL {
            assert_eq!(k.as_str().parse::<TableKind>().ok(), Some(k));
        }
        assert!("nope".parse::<TableKind>().is_err());
    }

    #[test]
    fn canonical_json_sorts_keys_so_etags_agree() {
        #[derive(Serialize)]
        struct A {
            z: u8,
            a: u8,
        }
        #[derive(Serialize)]
        struct B {
            a: u8,
            z: u8,
        }
        let a = canonical_json(&A { z: 1, a: 2 }).unwrap_or_default();
        let b = canonical_json(&B { a: 2, z: 1 }).unwrap_or_default();
        assert_eq!(a, b"{\"a\":2,\"z\":1}");
        assert_eq!(etag_of(&a), etag_of(&b));
        assert_eq!(etag_of(&a).len(), 32);
    }

    #[test]
    fn etag_is_a_pure_function_of_the_bytes() {
        // Fixed vector: guards against an accidental change of hash or truncation, which
        // would make old and new control replicas disagree.
        assert_eq!(etag_of(b"{}"), "44136fa355b3678a1146ad16f7e8649e");
    }

    /// Tables serialized directly must equal their canonical (key-sorted) JSON: a field added
    /// out of alphabetical order would make the ETag depend on declaration order.
    #[test]
    fn direct_serialization_is_canonical() {
        fn check<T: Table>(body: &str) {
            let t: T = serde_json::from_str(body).unwrap_or_else(|e| panic!("{}: {e}", T::KIND));
            let direct = t.canonical_body().unwrap_or_default();
            let sorted = canonical_json(&t).unwrap_or_default();
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&sorted),
                "{}",
                T::KIND
            );
        }
        check::<DnsTable>(
            r#"{"domain":"mesos","ttl":60,"soa":{"mname":"ns1.mesos.","rname":"root.ns1.mesos.","refresh_s":60,"retry_s":600,"expire_s":86400},
            "names":{"a.mesos.":{"a":["10.0.0.1"],"aaaa":["::1"],"srv":[{"priority":0,"weight":1,"port":80,"target":"a.mesos."}]}}}"#,
        );
        check::<RedisTable>(
            r#"{"clusters":[{"name":"c","listen_port":1,"nodes":["10.0.0.1:7000"]}]}"#,
        );
        check::<MemcachedTable>(
            r#"{"pools":[{"name":"p","listen_port":1,"hash":"md5","replicas":[{"name":"a","servers":[{"addr":"10.0.0.1:11211","weight":2}]}]}]}"#,
        );
        check::<MysqlTable>(
            r#"{"databases":[{"name":"/a/b/c","schema":"c","rw":{"user":"u","password":"p"},"ro":{"user":"r","password":"q"},
            "primary":"10.0.0.1:3306","replicas":["10.0.0.2:3306"]}],
            "jobs":[{"name":"j","ips":["10.0.0.3"],"grants":[{"database":"/a/b/c","access":"ro"}],
            "password":{"sha1_sha1":"00","sha256_sha256":"11"}}]}"#,
        );
        check::<LvsTable>(
            r#"{"services":[{"vip":"10.1.0.1","port":80,"protocol":"tcp","scheduler":"wrr","persistence_s":30,
            "reals":[{"ip":"10.0.0.1","port":80,"weight":1,"forward":"nat"}]}]}"#,
        );
    }

    #[test]
    fn etag_quoting() {
        assert_eq!(quote_etag("ab"), "\"ab\"");
        assert_eq!(unquote_etag("\"ab\""), "ab");
        assert_eq!(unquote_etag("W/\"ab\""), "ab");
        assert_eq!(unquote_etag("ab"), "ab");
    }
}
