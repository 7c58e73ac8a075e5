//! Tables whose bulk is one map of entries by key ([`Keyed`]), and what changed between
//! two versions of one ([`Changes`]): what deltas ([`super::delta`]) carry and what a
//! body built on the last one ([`super::incremental`]) reuses.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Table;

/// A table whose bulk is one map of entries by key, so that a delta can carry the changed
/// entries and the (small) rest of the table whole.
pub trait Keyed: Table {
    type Entry: Serialize + DeserializeOwned + PartialEq + Clone + Send + Sync;

    /// The entries by key.
    fn entries(&self) -> &BTreeMap<String, Self::Entry>;

    fn entries_mut(&mut self) -> &mut BTreeMap<String, Self::Entry>;

    /// A copy of the table with no entries: what every delta carries whole.
    fn header(&self) -> Self;

    /// Validates a table made by a delta that kept the header and touched only the entries
    /// `changed` of a valid table: only those need checking. The default checks it all.
    fn validate_changed(&self, changed: &[String]) -> Result<(), super::TableError> {
        let _ = changed;
        self.validate()
    }
}

/// What changed between two versions of a table, serialized entry by entry: control keeps a
/// few of these per kind and joins them for a subscriber several versions behind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// Canonical JSON of the new table without its entries.
    pub header: Bytes,
    /// Each changed key: the new entry's canonical JSON, or `None` when it was removed.
    pub entries: BTreeMap<String, Option<Bytes>>,
}

impl Changes {
    /// The changes that take `old` to `new`: one walk over both sorted maps.
    ///
    /// # Errors
    /// An entry that does not serialize (not possible for table types).
    pub fn between<T: Keyed>(old: &T, new: &T) -> Result<Changes, serde_json::Error> {
        let mut entries = BTreeMap::new();
        let mut a = old.entries().iter().peekable();
        let mut b = new.entries().iter().peekable();
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some((ka, _)), None) => {
                    entries.insert((*ka).clone(), None);
                    a.next();
                }
                (None, Some((kb, vb))) => {
                    entries.insert((*kb).clone(), Some(serde_json::to_vec(vb)?.into()));
                    b.next();
                }
                (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                    std::cmp::Ordering::Less => {
                        entries.insert((*ka).clone(), None);
                        a.next();
                    }
                    std::cmp::Ordering::Greater => {
                        entries.insert((*kb).clone(), Some(serde_json::to_vec(vb)?.into()));
                        b.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if va != vb {
                            entries.insert((*kb).clone(), Some(serde_json::to_vec(vb)?.into()));
                        }
                        a.next();
                        b.next();
                    }
                },
            }
        }
        Ok(Changes {
            header: new.header().canonical_body()?.into(),
            entries,
        })
    }

    /// Consecutive changes joined into one, oldest first: a later change of a key replaces
    /// an earlier one, and the header is the last one's. `None` for an empty list.
    pub fn join<'a>(steps: impl IntoIterator<Item = &'a Changes>) -> Option<Changes> {
        let mut out: Option<Changes> = None;
        for step in steps {
            match &mut out {
                None => out = Some(step.clone()),
                Some(o) => {
                    o.header = step.header.clone();
                    o.entries
                        .extend(step.entries.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        out
    }

    /// About how many bytes the delta document of these changes takes.
    pub fn size(&self) -> usize {
        self.header.len()
            + self
                .entries
                .iter()
                .map(|(k, v)| k.len() + 8 + v.as_ref().map_or(0, Bytes::len))
                .sum::<usize>()
    }

    /// The delta document (see the module docs) that takes a table with ETag `from` to one
    /// with ETag `to`.
    pub fn encode(&self, from: &str, to: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size() + 128);
        out.extend_from_slice(b"{\"from\":");
        push_json_string(&mut out, from);
        out.extend_from_slice(b",\"header\":");
        out.extend_from_slice(&self.header);
        out.extend_from_slice(b",\"removed\":[");
        let mut first = true;
        for key in self
            .entries
            .iter()
            .filter_map(|(k, v)| v.is_none().then_some(k))
        {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            push_json_string(&mut out, key);
        }
        out.extend_from_slice(b"],\"set\":{");
        let mut first = true;
        for (key, entry) in self
            .entries
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            push_json_string(&mut out, key);
            out.push(b':');
            out.extend_from_slice(entry);
        }
        out.extend_from_slice(b"},\"to\":");
        push_json_string(&mut out, to);
        out.push(b'}');
        out
    }
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Serializing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}
