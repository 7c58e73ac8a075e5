//! Table deltas: what changed between two versions of a table, entry by entry.
//!
//! A subscriber that runs the table with ETag `E` asks control for `?since=E` and, when
//! control still knows the versions since `E` (`--delta-history`), gets a delta instead of
//! the whole table:
//!
//! ```json
//! {"from":"E","header":{..the new table without its entries..},
//!  "removed":["gone.marathon.mesos."],"set":{"web.marathon.mesos.":{"a":["10.0.0.7"]}},"to":"F"}
//! ```
//!
//! The subscriber applies it to its running table and computes the ETag of the result: a
//! result whose ETag is not `to` is thrown away and the full table fetched. So a wrong delta
//! (a control bug, a corrupted table in memory) costs one full fetch, never a wrong table.
//!
//! Only tables whose bulk is one keyed map take deltas ([`Keyed`]): the `dns` table, which
//! holds one entry per name and is the large one (16 MB at 10k apps). The others are small
//! (one entry per claim) and are always served whole.

use std::collections::BTreeMap;

use serde::Deserialize;

pub use super::keyed::{Changes, Keyed};

/// A delta document as a subscriber reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(bound = "T: Keyed")]
pub struct Delta<T: Keyed> {
    pub from: String,
    pub header: T,
    #[serde(default)]
    pub removed: Vec<String>,
    #[serde(default)]
    pub set: BTreeMap<String, T::Entry>,
    pub to: String,
}

/// Why a delta was not applied (the subscriber then fetches the whole table).
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("not a delta document: {0}")]
    Parse(String),
    #[error("the delta is from {from}, the running table is {running}")]
    WrongBase { from: String, running: String },
    #[error("the table the delta makes is invalid: {0}")]
    Invalid(String),
    #[error("the table the delta makes has ETag {got}, the delta says {want}")]
    Mismatch { got: String, want: String },
}

/// A table made by a delta: the table, its canonical body (with where each entry lies, for
/// the next delta) and ETag (checked against the delta's), and the keys the delta touched.
#[derive(Debug)]
pub struct Applied<T> {
    pub table: T,
    pub encoded: super::incremental::Encoded,
    pub etag: String,
    pub changed: Vec<String>,
}

/// Applies a delta document to `running` (whose ETag is `running_etag`, and whose body
/// `running_encoded` is), checks the result and returns it. The result's body copies the
/// entries that did not change from the running body (see [`super::incremental`]).
///
/// # Errors
/// A document that does not parse, is based on another version, or whose result is invalid
/// or does not have the ETag the delta names.
pub fn apply<T: Keyed>(
    running: &T,
    running_etag: &str,
    running_encoded: &super::incremental::Encoded,
    doc: &[u8],
) -> Result<Applied<T>, DeltaError> {
    let delta: Delta<T> =
        serde_json::from_slice(doc).map_err(|e| DeltaError::Parse(e.to_string()))?;
    if delta.from != running_etag {
        return Err(DeltaError::WrongBase {
            from: delta.from,
            running: running_etag.to_string(),
        });
    }
    let same_header = delta.header == running.header();
    let mut table = delta.header;
    *table.entries_mut() = running.entries().clone();
    let mut changed = Vec::with_capacity(delta.removed.len() + delta.set.len());
    for key in delta.removed {
        table.entries_mut().remove(&key);
        changed.push(key);
    }
    for (key, entry) in delta.set {
        changed.push(key.clone());
        table.entries_mut().insert(key, entry);
    }
    // The running table is valid: with the same header only the changed entries can
    // make the new one invalid.
    if same_header {
        table.validate_changed(&changed)
    } else {
        table.validate()
    }
    .map_err(|e| DeltaError::Invalid(e.to_string()))?;
    let (mut encoded, _) =
        super::incremental::encode(&table, Some((running, running_encoded)), Default::default())
            .map_err(|e| DeltaError::Invalid(e.to_string()))?;
    let etag = encoded.hash_etag(Some(running_encoded));
    if etag != delta.to {
        return Err(DeltaError::Mismatch {
            got: etag,
            want: delta.to,
        });
    }
    Ok(Applied {
        table,
        encoded,
        etag,
        changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{etag_of, Problems, Table, TableError, TableKind};
    use serde::Serialize;

    /// A keyed table of its own, so that these tests hold for any table kind: names to
    /// numbers, where a name must not be empty and a number not zero.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Numbers {
        #[serde(default)]
        names: BTreeMap<String, u32>,
        ttl: u32,
    }

    impl Table for Numbers {
        const KIND: TableKind = TableKind::Dns;

        fn validate(&self) -> Result<(), TableError> {
            let mut p = Problems::default();
            for (k, v) in &self.names {
                if k.is_empty() || *v == 0 {
                    p.push(format!("names[{k:?}]"), "empty name or zero");
                }
            }
            p.into_result(Self::KIND)
        }

        fn backend_count(&self) -> usize {
            self.names.len()
        }
    }

    impl Keyed for Numbers {
        type Entry = u32;

        fn entries(&self) -> &BTreeMap<String, u32> {
            &self.names
        }

        fn entries_mut(&mut self) -> &mut BTreeMap<String, u32> {
            &mut self.names
        }

        fn header(&self) -> Self {
            Numbers {
                names: BTreeMap::new(),
                ttl: self.ttl,
            }
        }
    }

    fn table(names: &[(&str, u32)]) -> Numbers {
        Numbers {
            names: names.iter().map(|(k, v)| ((*k).to_string(), *v)).collect(),
            ttl: 60,
        }
    }

    fn encoded(t: &Numbers) -> super::super::incremental::Encoded {
        super::super::incremental::encode(t, None, Default::default())
            .unwrap()
            .0
    }

    fn etag(t: &Numbers) -> String {
        etag_of(&t.canonical_body().unwrap_or_default())
    }

    #[test]
    fn a_delta_takes_the_old_table_to_the_new_one() {
        let old = table(&[("a", 1), ("b", 2), ("c", 3)]);
        let mut new = table(&[("b", 2), ("c", 9), ("d", 4)]);
        new.ttl = 5;
        let changes = Changes::between(&old, &new).unwrap_or_default();
        // a removed, c changed, d added; b untouched is not carried.
        assert_eq!(changes.entries.keys().collect::<Vec<_>>(), ["a", "c", "d"]);
        let doc = changes.encode(&etag(&old), &etag(&new));
        let applied =
            apply(&old, &etag(&old), &encoded(&old), &doc).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(applied.table, new);
        assert_eq!(applied.etag, etag(&new));
        let mut changed = applied.changed.clone();
        changed.sort();
        assert_eq!(changed, ["a", "c", "d"]);
    }

    #[test]
    fn joined_changes_skip_the_versions_between() {
        let v1 = table(&[("a", 1), ("b", 2)]);
        let v2 = table(&[("a", 5), ("c", 3)]);
        let v3 = table(&[("a", 1), ("c", 4), ("b", 2)]);
        let s1 = Changes::between(&v1, &v2).unwrap_or_default();
        let s2 = Changes::between(&v2, &v3).unwrap_or_default();
        let joined = Changes::join([&s1, &s2]).unwrap_or_default();
        let doc = joined.encode(&etag(&v1), &etag(&v3));
        let applied = apply(&v1, &etag(&v1), &encoded(&v1), &doc).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(applied.table, v3);
        assert!(Changes::join([]).is_none());
    }

    #[test]
    fn a_wrong_result_is_refused_by_its_etag() {
        let old = table(&[("a", 1)]);
        let new = table(&[("a", 2)]);
        let mut changes = Changes::between(&old, &new).unwrap_or_default();
        // A delta that lost its change.
        changes.entries.clear();
        let doc = changes.encode(&etag(&old), &etag(&new));
        assert!(matches!(
            apply(&old, &etag(&old), &encoded(&old), &doc),
            Err(DeltaError::Mismatch { .. })
        ));
        // Based on another version.
        let doc = Changes::between(&old, &new)
            .unwrap_or_default()
            .encode("0000", &etag(&new));
        assert!(matches!(
            apply(&old, &etag(&old), &encoded(&old), &doc),
            Err(DeltaError::WrongBase { .. })
        ));
        // Not a delta at all, or one that makes an invalid table.
        assert!(matches!(
            apply(&old, &etag(&old), &encoded(&old), b"{\"names\":{}}"),
            Err(DeltaError::Parse(_))
        ));
        let bad = table(&[("a", 2), ("", 1)]);
        let doc = Changes::between(&old, &bad)
            .unwrap_or_default()
            .encode(&etag(&old), &etag(&bad));
        assert!(matches!(
            apply(&old, &etag(&old), &encoded(&old), &doc),
            Err(DeltaError::Invalid(_))
        ));
    }

    #[test]
    fn keys_that_need_escaping_survive_the_document() {
        let old = table(&[]);
        let new = table(&[("we\"ird\\name", 1)]);
        let doc = Changes::between(&old, &new)
            .unwrap_or_default()
            .encode(&etag(&old), &etag(&new));
        let d: Delta<Numbers> = serde_json::from_slice(&doc).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.set.get("we\"ird\\name"), Some(&1));
    }
}
