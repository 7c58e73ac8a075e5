//! A keyed table's next canonical body, built from the last one.
//!
//! At platform scale one task change touches a handful of the `dns` table's 120k names, yet
//! serializing the whole 131 MB table took 319 ms of control's sync and validating it 233 ms
//! (`cargo bench -p ocean-control --bench scale`). Control keeps, beside each table it
//! published, where each entry lies in its body ([`Encoded`]). The next version copies the
//! bytes of every entry that did not change and serializes only the others, and the same
//! walk yields the [`Changes`] a delta carries. Only those changed entries need validating
//! when the header (everything but the entries) is the same ([`validate_after`]).
//!
//! The result is byte for byte the table's canonical body (`serde_json::to_vec`): the tests
//! hold it to that through random changes.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Bound, Range};

use bytes::Bytes;

use super::etag::{etag_after, EtagTrail};
use super::keyed::{Changes, Keyed};
use super::TableError;

/// A table's canonical body, and where each entry (`"key":value`) lies in it, in key
/// order, so that the next version can copy the unchanged ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encoded {
    pub body: Bytes,
    /// Empty when the body was serialized whole (a kind without entries, or a header that
    /// did not have the expected shape): the next version is then serialized whole too.
    spans: Vec<Range<usize>>,
    /// The hash states along `body` once [`Encoded::hash_etag`] ran, for the next version's.
    trail: EtagTrail,
}

impl Encoded {
    /// A body serialized whole, with nothing to reuse.
    pub fn whole(body: impl Into<Bytes>) -> Encoded {
        Encoded {
            body: body.into(),
            spans: Vec::new(),
            trail: EtagTrail::default(),
        }
    }

    /// The body's ETag ([`super::etag_of`]), hashed from where the body first differs from
    /// `last`'s when given ([`super::etag`]); keeps the hash states for the next version.
    pub fn hash_etag(&mut self, last: Option<&Encoded>) -> String {
        let (etag, trail) = etag_after(&self.body, last.map(|l| (&l.body[..], &l.trail)));
        self.trail = trail;
        etag
    }
}

/// The allocations of an encoding no longer served, for the next one to fill. Always
/// empty: [`Buffers::reclaim`] clears what it takes back.
///
/// A new body in fresh memory costs the kernel a page fault per page: ~85 ms of system
/// time for the 131 MB `dns` table here, and at times 300 ms (`cargo bench -p
/// ocean-control --bench scale`). Control keeps the encoding its last publish retired and
/// builds the next body in its buffer instead, so a publish after the first two touches
/// no new memory.
#[derive(Debug, Default)]
pub struct Buffers {
    body: Vec<u8>,
    spans: Vec<Range<usize>>,
}

impl Buffers {
    /// `encoded`'s buffers, emptied. A body still shared (a response to a slow
    /// subscriber still being written) stays with its holders, and the next body is
    /// allocated afresh.
    pub fn reclaim(encoded: Encoded) -> Buffers {
        let body = match encoded.body.try_into_mut() {
            Ok(mut body) => {
                // Empty first: turning a `BytesMut` into a `Vec` moves its bytes to the
                // front of the buffer, 131 MB for nothing.
                body.clear();
                Vec::from(body)
            }
            Err(_) => Vec::new(),
        };
        let mut spans = encoded.spans;
        spans.clear();
        Buffers { body, spans }
    }

    /// Bytes the body buffer holds without allocating (0: nothing was reclaimed).
    pub fn body_capacity(&self) -> usize {
        self.body.capacity()
    }

    /// The (empty) body buffer with room for `capacity` bytes, and the spans', with room
    /// for `entries`.
    fn take(self, capacity: usize, entries: usize) -> (Vec<u8>, Vec<Range<usize>>) {
        let Buffers {
            mut body,
            mut spans,
        } = self;
        body.reserve(capacity);
        spans.reserve(entries);
        (body, spans)
    }
}

/// Where a keyed table's header JSON holds its (empty) entries: every keyed table declares
/// its entries map as `names`, before any other field that could hold the same text.
const ENTRIES: &[u8] = b"\"names\":{}";

/// `table`'s canonical body, copying from `previous` (the last version and its encoding)
/// every entry that is the same, with the changes from `previous` to `table` (`None`
/// without a previous version).
///
/// # Errors
/// An entry that does not serialize (not possible for table types).
pub fn encode<T: Keyed>(
    table: &T,
    previous: Option<(&T, &Encoded)>,
    buffers: Buffers,
) -> Result<(Encoded, Option<Changes>), serde_json::Error> {
    let header = table.header().canonical_body()?;
    let Some(close) = entries_close(&header) else {
        let body = table.canonical_body()?;
        let changes = previous
            .map(|(old, _)| Changes::between(old, table))
            .transpose()?;
        return Ok((Encoded::whole(body), changes));
    };
    let previous = previous.filter(|(old, enc)| enc.spans.len() == old.entries().len());
    let capacity = previous.map_or(header.len() + 64 * table.entries().len(), |(_, e)| {
        e.body.len() + 4096
    });
    let (mut out, mut spans) = buffers.take(capacity, table.entries().len());
    out.extend_from_slice(header.get(..close).unwrap_or_default());
    let mut changed: BTreeMap<String, Option<Bytes>> = BTreeMap::new();
    let mut old = previous.map(|(t, e)| (t.entries().iter().zip(&e.spans).peekable(), &e.body));
    for (i, (key, value)) in table.entries().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let start = out.len();
        let mut copied = false;
        if let Some((entries, body)) = old.as_mut() {
            // Keys before this one that only the old table has were removed.
            while let Some(((k, _), _)) = entries.next_if(|((k, _), _)| k.as_str() < key.as_str()) {
                changed.insert(k.clone(), None);
            }
            if let Some(((_, v), span)) = entries.next_if(|((k, _), _)| *k == key) {
                if v == value {
                    if let Some(bytes) = body.get(span.clone()) {
                        out.extend_from_slice(bytes);
                        copied = true;
                    }
                }
            }
        }
        if !copied {
            let value = write_entry(&mut out, key, value)?;
            if old.is_some() {
                changed.insert(key.clone(), Some(value));
            }
        }
        spans.push(start..out.len());
    }
    if let Some((entries, _)) = old {
        for ((k, _), _) in entries {
            changed.insert(k.clone(), None);
        }
    }
    let changes = previous.map(|_| changed);
    Ok(finish(out, header, close, spans, changes))
}

/// Where the entries close in a header: `header[..close]` ends with the entries' `{`,
/// `header[close..]` starts with its `}`. `None` when the header has no empty entries map.
fn entries_close(header: &[u8]) -> Option<usize> {
    let at = header.windows(ENTRIES.len()).position(|w| w == ENTRIES)?;
    Some(at + ENTRIES.len() - 1)
}

/// Writes one entry, `"key":value`, and returns the value's bytes (what a delta carries).
fn write_entry<V: serde::Serialize>(
    out: &mut Vec<u8>,
    key: &str,
    value: &V,
) -> Result<Bytes, serde_json::Error> {
    serde_json::to_writer(&mut *out, key)?;
    out.push(b':');
    let value_start = out.len();
    serde_json::to_writer(&mut *out, value)?;
    Ok(Bytes::copy_from_slice(
        out.get(value_start..).unwrap_or_default(),
    ))
}

/// Closes the entries with the rest of the header (`header[close..]`).
fn finish(
    mut out: Vec<u8>,
    header: Vec<u8>,
    close: usize,
    spans: Vec<Range<usize>>,
    changed: Option<BTreeMap<String, Option<Bytes>>>,
) -> (Encoded, Option<Changes>) {
    out.extend_from_slice(header.get(close..).unwrap_or_default());
    let changes = changed.map(|entries| Changes {
        header: header.into(),
        entries,
    });
    let encoded = Encoded {
        body: out.into(),
        spans,
        trail: EtagTrail::default(),
    };
    (encoded, changes)
}

/// [`encode`] for a `table` that differs from `previous` in at most the entries `hint`
/// names (it may name entries that did not change, or that neither version has): each run
/// of entries between two named ones is copied from the last body in one piece, without
/// comparing them. Control's dns index knows which names a sync touched, and this is its
/// publish walk without 500k comparisons.
///
/// Falls back to [`encode`] when the run lengths of the two versions differ (an entry added
/// or removed outside `hint`) or the last encoding has no spans. A changed value outside
/// `hint` goes unnoticed and keeps its old bytes: callers pass only a hint they can prove.
///
/// # Errors
/// An entry that does not serialize (not possible for table types).
pub fn encode_hinted<T: Keyed>(
    table: &T,
    previous: (&T, &Encoded),
    hint: &BTreeSet<String>,
    buffers: Buffers,
) -> Result<(Encoded, Option<Changes>), serde_json::Error> {
    let (old, last) = previous;
    let header = table.header().canonical_body()?;
    let close = entries_close(&header);
    let (Some(close), true) = (close, last.spans.len() == old.entries().len()) else {
        return encode(table, Some(previous), buffers);
    };
    let (new, olds) = (table.entries(), old.entries());
    // Each run is counted before anything is written, so that a fallback still has the
    // buffers to give to the whole walk.
    let mut runs = Vec::with_capacity(hint.len() + 1);
    let mut lower: Bound<&str> = Bound::Unbounded;
    for named in hint.iter().map(Some).chain(std::iter::once(None)) {
        let upper = named.map_or(Bound::Unbounded, |k| Bound::Excluded(k.as_str()));
        // The run between two named entries: the same entries in both versions.
        let run = new.range::<str, _>((lower, upper)).count();
        if run != olds.range::<str, _>((lower, upper)).count() {
            return encode(table, Some(previous), buffers);
        }
        runs.push(run);
        if let Some(key) = named {
            lower = Bound::Excluded(key.as_str());
        }
    }
    let (mut out, mut spans) = buffers.take(last.body.len() + 4096, new.len());
    out.extend_from_slice(header.get(..close).unwrap_or_default());
    let mut changed: BTreeMap<String, Option<Bytes>> = BTreeMap::new();
    // The next old entry (and span) not yet passed.
    let mut old_at = 0;
    for (named, run) in hint.iter().map(Some).chain(std::iter::once(None)).zip(runs) {
        if run > 0 {
            let (first, end) = (last.spans[old_at].start, last.spans[old_at + run - 1].end);
            if !spans.is_empty() {
                out.push(b',');
            }
            let shift = out.len() as isize - first as isize;
            out.extend_from_slice(last.body.get(first..end).unwrap_or_default());
            spans.extend(
                last.spans[old_at..old_at + run].iter().map(|s| {
                    (s.start as isize + shift) as usize..(s.end as isize + shift) as usize
                }),
            );
            old_at += run;
        }
        let Some(key) = named else { break };
        let was = olds.get(key).map(|v| {
            old_at += 1;
            (v, last.spans[old_at - 1].clone())
        });
        let Some(value) = new.get(key) else {
            if was.is_some() {
                changed.insert(key.clone(), None);
            }
            continue;
        };
        if !spans.is_empty() {
            out.push(b',');
        }
        let start = out.len();
        match was {
            Some((old_value, span)) if old_value == value => {
                out.extend_from_slice(last.body.get(span).unwrap_or_default());
            }
            _ => {
                changed.insert(key.clone(), Some(write_entry(&mut out, key, value)?));
            }
        }
        spans.push(start..out.len());
    }
    Ok(finish(out, header, close, spans, Some(changed)))
}

/// Validates `table`, which is `previous` (valid) with `changes` applied: with the same
/// header only the changed entries can make it invalid.
///
/// # Errors
/// What [`crate::table::Table::validate`] finds.
pub fn validate_after<T: Keyed>(
    table: &T,
    previous: &T,
    changes: &Changes,
) -> Result<(), TableError> {
    if table.header() == previous.header() {
        let keys: Vec<String> = changes.entries.keys().cloned().collect();
        table.validate_changed(&keys)
    } else {
        table.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Problems, Table, TableKind};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde::{Deserialize, Serialize};

    /// A keyed table of its own, so that these tests hold for any kind (the `dns` table's
    /// own test is in `dns.rs`): names to numbers, a name must not be empty nor a number
    /// zero, and the TTL must not be zero.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    struct Names {
        #[serde(default)]
        names: BTreeMap<String, Vec<u32>>,
        ttl: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        zones: Vec<String>,
    }

    impl Table for Names {
        const KIND: TableKind = TableKind::Dns;

        fn validate(&self) -> Result<(), TableError> {
            let mut p = Problems::default();
            if self.ttl == 0 {
                p.push("ttl", "zero");
            }
            for key in self.names.keys() {
                self.check(key, &mut p);
            }
            p.into_result(Self::KIND)
        }

        fn backend_count(&self) -> usize {
            self.names.len()
        }
    }

    impl Names {
        fn check(&self, key: &str, p: &mut Problems) {
            if let Some(v) = self.names.get(key) {
                if key.is_empty() || v.contains(&0) {
                    p.push(format!("names[{key:?}]"), "empty name or zero");
                }
            }
        }
    }

    impl Keyed for Names {
        type Entry = Vec<u32>;

        fn entries(&self) -> &BTreeMap<String, Vec<u32>> {
            &self.names
        }

        fn entries_mut(&mut self) -> &mut BTreeMap<String, Vec<u32>> {
            &mut self.names
        }

        fn header(&self) -> Self {
            Names {
                names: BTreeMap::new(),
                ttl: self.ttl,
                zones: self.zones.clone(),
            }
        }

        fn validate_changed(&self, changed: &[String]) -> Result<(), TableError> {
            let mut p = Problems::default();
            for key in changed {
                self.check(key, &mut p);
            }
            p.into_result(Self::KIND)
        }
    }

    #[test]
    fn the_body_built_on_the_last_one_is_the_canonical_body_through_random_changes() {
        let mut table = Names {
            ttl: 60,
            ..Default::default()
        };
        let mut encoded: Option<Encoded> = None;
        // The encoding before the last one: its buffers (holding its bytes) build the next.
        let mut retired: Option<Encoded> = None;
        // Seeded, so a failure replays and names its step.
        let mut rng = StdRng::seed_from_u64(17);
        for step in 0..300 {
            let before = table.clone();
            random_edits(&mut table, &mut rng, 60);
            if rng.random_range(0..25) == 0 {
                table.ttl += 1;
            }
            if rng.random_range(0..40) == 0 {
                table.zones = vec![format!("z{step}")];
            }
            let previous = encoded.as_ref().map(|e| (&before, e));
            let buffers = retired.take().map(Buffers::reclaim).unwrap_or_default();
            let (next, changes) = encode(&table, previous, buffers).unwrap();
            assert_eq!(
                next.body.as_ref(),
                table.canonical_body().unwrap().as_slice(),
                "step {step}"
            );
            if previous.is_some() {
                assert_eq!(
                    changes,
                    Some(Changes::between(&before, &table).unwrap()),
                    "step {step}"
                );
            }
            retired = encoded.replace(next);
        }
    }

    /// One to six random entries set or removed (keys that need escaping too, out of
    /// `keys`); returns their keys.
    fn random_edits(table: &mut Names, rng: &mut StdRng, keys: u32) -> Vec<String> {
        let mut edited = Vec::new();
        for _ in 0..=rng.random_range(0..6) {
            let key = format!("n\"{}\u{e9}", rng.random_range(0..keys));
            match rng.random_range(0..4) {
                0 => {
                    table.names.remove(&key);
                }
                _ => {
                    table
                        .names
                        .insert(key.clone(), vec![rng.random_range(1..=1000)]);
                }
            }
            edited.push(key);
        }
        edited
    }

    /// An encoding no longer shared gives its buffers to the next, which is built in them
    /// (the same memory); one still shared (a response being written) gives none.
    #[test]
    fn a_retired_encoding_lends_its_buffers_unless_shared() {
        let mut table = Names {
            ttl: 60,
            ..Default::default()
        };
        for i in 0..500 {
            table.names.insert(format!("n{i}"), vec![i + 1]);
        }
        let (first, _) = encode(&table, None, Buffers::default()).unwrap();
        let (second, _) = encode(&table, Some((&table, &first)), Buffers::default()).unwrap();
        let memory = first.body.as_ptr();
        let mut next = table.clone();
        next.names.insert("n7".into(), vec![70]);
        let buffers = Buffers::reclaim(first);
        assert!(buffers.body_capacity() >= second.body.len());
        let hint: BTreeSet<String> = ["n7".to_string()].into();
        let (third, _) = encode_hinted(&next, (&table, &second), &hint, buffers).unwrap();
        assert_eq!(
            third.body.as_ptr(),
            memory,
            "built in the retired body's buffer"
        );
        assert_eq!(
            third.body.as_ref(),
            next.canonical_body().unwrap().as_slice()
        );
        // A body a subscriber's response still holds is left to it.
        let held = second.body.clone();
        assert_eq!(Buffers::reclaim(second).body_capacity(), 0);
        assert_eq!(held.as_ref(), table.canonical_body().unwrap().as_slice());
    }

    /// With a hint naming every changed entry (and some that did not change, or that
    /// neither version has), the hinted body, spans and changes are `encode`'s.
    #[test]
    fn a_hinted_encoding_is_the_full_walks_through_random_changes() {
        let mut table = Names {
            ttl: 60,
            ..Default::default()
        };
        let (mut last, _) = encode(&table, None, Buffers::default()).unwrap();
        let mut retired: Option<Encoded> = None;
        let mut rng = StdRng::seed_from_u64(23);
        for step in 0..400 {
            let before = table.clone();
            let mut hint: BTreeSet<String> =
                random_edits(&mut table, &mut rng, 80).into_iter().collect();
            for _ in 0..rng.random_range(0..3) {
                hint.insert(format!("n\"{}\u{e9}", rng.random_range(0..100)));
            }
            if rng.random_range(0..25) == 0 {
                table.ttl += 1;
            }
            let full = encode(&table, Some((&before, &last)), Buffers::default()).unwrap();
            let buffers = retired.take().map(Buffers::reclaim).unwrap_or_default();
            let hinted = encode_hinted(&table, (&before, &last), &hint, buffers).unwrap();
            assert_eq!(hinted.0.body, full.0.body, "step {step}");
            assert_eq!(hinted.0.spans, full.0.spans, "step {step}");
            assert_eq!(hinted.1, full.1, "step {step}");
            retired = Some(std::mem::replace(&mut last, hinted.0));
        }
    }

    /// The runs between named entries are copied whole, not compared: a value changed
    /// outside the hint keeps its old bytes (which is why only a proven hint may be given),
    /// while the named entries are the new ones.
    #[test]
    fn a_hinted_encoding_copies_the_runs_without_comparing_them() {
        let mut table = Names {
            ttl: 60,
            ..Default::default()
        };
        for (k, v) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
            table.names.insert(k.into(), vec![v]);
        }
        let (first, _) = encode(&table, None, Buffers::default()).unwrap();
        let mut next = table.clone();
        next.names.insert("a".into(), vec![10]);
        next.names.insert("c".into(), vec![30]);
        next.names.remove("d");
        let hint: BTreeSet<String> = ["c".to_string(), "d".to_string()].into();
        let (built, changes) =
            encode_hinted(&next, (&table, &first), &hint, Buffers::default()).unwrap();
        assert_eq!(
            built.body.as_ref(),
            br#"{"names":{"a":[1],"b":[2],"c":[30]},"ttl":60}"#
        );
        let changes = changes.unwrap();
        assert_eq!(changes.entries.keys().collect::<Vec<_>>(), ["c", "d"]);
        // A hint that misses an added or a removed entry: a run's length differs between
        // the versions, and the full walk is taken.
        let mut added = table.clone();
        added.names.insert("bb".into(), vec![5]);
        let mut removed = table.clone();
        removed.names.remove("b");
        for next in [added, removed] {
            let hinted = encode_hinted(&next, (&table, &first), &hint, Buffers::default()).unwrap();
            let full = encode(&next, Some((&table, &first)), Buffers::default()).unwrap();
            assert_eq!(hinted.0.body, full.0.body);
            assert_eq!(hinted.0.spans, full.0.spans);
            assert_eq!(hinted.1, full.1);
        }
    }

    #[test]
    fn unchanged_entries_are_copied_not_serialized_again() {
        let mut table = Names {
            ttl: 60,
            ..Default::default()
        };
        table.names.insert("a".into(), vec![1]);
        table.names.insert("b".into(), vec![2]);
        let (first, _) = encode(&table, None, Buffers::default()).unwrap();
        // Spoil the old body where `a` lies: a copy shows the spoiled bytes, a new
        // serialization would not.
        let mut spoiled = first.body.to_vec();
        let a = first.spans[0].clone();
        let at = a.start + spoiled[a.clone()].iter().rposition(|&b| b == b'1').unwrap();
        spoiled[at] = b'9';
        let spoiled = Encoded {
            body: spoiled.into(),
            spans: first.spans.clone(),
            trail: EtagTrail::default(),
        };
        let mut next = table.clone();
        next.names.insert("b".into(), vec![3]);
        let (built, changes) = encode(&next, Some((&table, &spoiled)), Buffers::default()).unwrap();
        assert_eq!(
            built.body.as_ref(),
            br#"{"names":{"a":[9],"b":[3]},"ttl":60}"#
        );
        let changes = changes.unwrap();
        assert_eq!(changes.entries.keys().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn only_changed_entries_are_validated_while_the_header_stays() {
        let mut table = Names {
            ttl: 60,
            ..Default::default()
        };
        table.names.insert("a".into(), vec![1]);
        let (first, _) = encode(&table, None, Buffers::default()).unwrap();
        let after = |next: &Names| {
            let (_, changes) = encode(next, Some((&table, &first)), Buffers::default()).unwrap();
            validate_after(next, &table, &changes.unwrap())
        };
        let mut next = table.clone();
        next.names.insert("b".into(), vec![2]);
        assert!(after(&next).is_ok());
        // A bad changed entry is caught.
        let mut bad = table.clone();
        bad.names.insert(String::new(), vec![2]);
        assert!(after(&bad).is_err());
        // A new header is validated whole.
        let mut other = table.clone();
        other.ttl = 0;
        assert!(after(&other).is_err());
    }
}
