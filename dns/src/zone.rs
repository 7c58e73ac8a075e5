//! The zone, built from a `dns` table off the hot path: every answer pre-encoded, so that a
//! query costs a hash lookup and a copy.
//!
//! For each name and type the answer and additional sections are encoded once, with the
//! owner names written as a pointer to the question (offset 12), so they can be appended
//! after any question for that name. Answers with several records are stored in a few
//! rotations; queries take them in turn, which spreads clients over the backends.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use ocean_core::net::Cidr;
use ocean_core::table::dns::DnsRecords;
use ocean_core::table::{DnsTable, Versioned};
use rustc_hash::FxHashMap;

use crate::proto::encode::{name_to_wire, record, Owner, RData, Writer};
use crate::proto::{rtype, HEADER_LEN};

mod update;

/// The current zone, swapped whole when a new table arrives; read lock-free on the data
/// path, written by the task that builds zones from the table.
pub type SharedZone = Arc<ArcSwapOption<Zone>>;

/// Rotations kept per answer (fewer when there are fewer records).
const MAX_ROTATIONS: usize = 8;
/// An answer never grows past this (TCP's 64 KiB limit less header room).
const MAX_ANSWER_BYTES: usize = 60_000;

/// The answer and additional sections for one (name, type), in one order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Section {
    pub bytes: Vec<u8>,
    pub ancount: u16,
    pub arcount: u16,
}

/// The pre-encoded answer for one (name, type), in a few rotations.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// At least one.
    pub rotations: Vec<Section>,
}

impl Answer {
    fn single(section: Section) -> Answer {
        Answer {
            rotations: vec![section],
        }
    }

    /// The rotation for the `n`th query.
    pub fn pick(&self, n: u32) -> &Section {
        static EMPTY: Section = Section {
            bytes: Vec::new(),
            ancount: 0,
            arcount: 0,
        };
        let i = n as usize % self.rotations.len().max(1);
        self.rotations.get(i).unwrap_or(&EMPTY)
    }
}

/// What a name holds. All `None` for an empty non-terminal (a name that exists only
/// because names below it do): NODATA, not NXDOMAIN.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    pub a: Option<Answer>,
    pub aaaa: Option<Answer>,
    pub srv: Option<Answer>,
    pub soa: Option<Answer>,
    pub ns: Option<Answer>,
    pub any: Option<Answer>,
}

impl Entry {
    pub fn get(&self, qtype: u16) -> Option<&Answer> {
        match qtype {
            rtype::A => self.a.as_ref(),
            rtype::AAAA => self.aaaa.as_ref(),
            rtype::SRV => self.srv.as_ref(),
            rtype::SOA => self.soa.as_ref(),
            rtype::NS => self.ns.as_ref(),
            rtype::ANY => self.any.as_ref(),
            _ => None,
        }
    }
}

/// A ready-to-serve zone: the domain, any extra zones (`[dns.zones]`), and the views.
pub struct Zone {
    /// The table it was built from (the HTTP API reads it).
    pub table: Arc<Versioned<DnsTable>>,
    pub serial: u32,
    /// Lowercase wire-format apex of the domain.
    pub apex: Vec<u8>,
    /// Every apex served (the domain's first) and its SOA record (owner written in full)
    /// for the authority section of negative answers.
    apexes: Vec<(Vec<u8>, Vec<u8>)>,
    names: NameMap,
    /// Per view, the entries that differ from `names`, in the table's view order.
    views: Vec<NameMap>,
    /// Which view a client address is in.
    view_map: ViewMap,
    /// For each empty non-terminal (and other name with names under it): how many names
    /// of the table and its views are below it. An update removes an empty non-terminal
    /// when this falls to zero.
    below: FxHashMap<Arc<[u8]>, u32>,
}

/// Entries by lowercase wire-format name. Shared pointers, so that an update copies the
/// map (500k names: a few ms) and re-encodes only the names that changed.
pub(crate) type NameMap = FxHashMap<Arc<[u8]>, Arc<Entry>>;

/// Client address -> view index, first view in table order wins. One hash map per prefix
/// length present, so a lookup costs a few hash probes however many networks a carrier
/// line has.
#[derive(Debug, Default, Clone)]
struct ViewMap {
    v4: Vec<(u8, FxHashMap<u32, u16>)>,
    v6: Vec<(u8, FxHashMap<u128, u16>)>,
}

impl ViewMap {
    fn insert(&mut self, net: ipnet::IpNet, view: u16) {
        match net {
            ipnet::IpNet::V4(n) => {
                let key = u32::from(n.network());
                insert_prefix(&mut self.v4, n.prefix_len(), key, view);
            }
            ipnet::IpNet::V6(n) => {
                let key = u128::from(n.network());
                insert_prefix(&mut self.v6, n.prefix_len(), key, view);
            }
        }
    }

    fn lookup(&self, ip: IpAddr) -> Option<u16> {
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .iter()
                    .filter_map(|(len, m)| m.get(&(a & mask32(*len))))
                    .min()
                    .copied()
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6
                    .iter()
                    .filter_map(|(len, m)| m.get(&(a & mask128(*len))))
                    .min()
                    .copied()
            }
        }
    }
}

fn insert_prefix<K: std::hash::Hash + Eq>(
    by_len: &mut Vec<(u8, FxHashMap<K, u16>)>,
    len: u8,
    key: K,
    view: u16,
) {
    let i = match by_len.iter().position(|(l, _)| *l == len) {
        Some(i) => i,
        None => {
            by_len.push((len, FxHashMap::default()));
            by_len.len() - 1
        }
    };
    if let Some((_, m)) = by_len.get_mut(i) {
        // An earlier view keeps a network listed twice.
        m.entry(key).or_insert(view);
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl std::fmt::Debug for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zone")
            .field("etag", &self.table.etag)
            .field("serial", &self.serial)
            .field("names", &self.names.len())
            .finish()
    }
}

/// Why a table cannot become a zone (it passed validation, so only our own limits apply).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ZoneError(String);

fn rotations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    let n = items.len();
    let r = n.clamp(1, MAX_ROTATIONS);
    (0..r)
        .map(|i| {
            let mut v = items.to_vec();
            v.rotate_left(i * n / r);
            v
        })
        .collect()
}

impl Zone {
    /// Builds the zone; `serial` goes into the SOA (the time the zone was loaded, as
    /// Mesos-DNS does).
    pub fn build(table: Arc<Versioned<DnsTable>>, serial: u32) -> Result<Zone, ZoneError> {
        let t = &table.table;
        let apex = name_to_wire(&t.domain)
            .ok_or_else(|| ZoneError(format!("bad domain {:?}", t.domain)))?;
        let ttl = t.ttl;
        // Wire names of every table name, for SRV targets and additional records.
        let mut wire: FxHashMap<&str, Vec<u8>> = FxHashMap::default();
        for name in t
            .names
            .keys()
            .chain(t.views.iter().flat_map(|v| v.names.keys()))
        {
            if let Some(w) = name_to_wire(name) {
                wire.insert(name.as_str(), w);
            }
        }
        let encode_all = |names: &std::collections::BTreeMap<String, DnsRecords>| {
            let mut out = NameMap::default();
            for (name, recs) in names {
                if let Some(owner) = wire.get(name.as_str()) {
                    out.insert(
                        Arc::from(owner.as_slice()),
                        Arc::new(entry(t, recs, &wire, owner, ttl)),
                    );
                }
            }
            out
        };
        let mut names = encode_all(&t.names);
        let mut views = Vec::with_capacity(t.views.len());
        let mut view_map = ViewMap::default();
        for (i, v) in t.views.iter().enumerate() {
            let i = u16::try_from(i).map_err(|_| ZoneError("more than 65535 views".into()))?;
            for n in &v.networks {
                let net: Cidr = n
                    .parse()
                    .map_err(|e| ZoneError(format!("view {}: {e}", v.name)))?;
                view_map.insert(net.net(), i);
            }
            views.push(encode_all(&v.names));
        }
        let apexes = apex_records(t, serial)?;
        for a in &apexes {
            a.add_to(&mut names);
        }
        let apexes: Vec<(Vec<u8>, Vec<u8>)> =
            apexes.into_iter().map(|a| (a.wire, a.authority)).collect();
        // Empty non-terminals between each name (of any view) and its apex: NODATA, not
        // NXDOMAIN, for every client. `below` counts the names under each, so that an
        // update can tell when one is no longer needed.
        let existing: Vec<Arc<[u8]>> = names
            .keys()
            .chain(views.iter().flat_map(|v| v.keys()))
            .cloned()
            .collect();
        let mut below = FxHashMap::default();
        for name in existing {
            for_each_ancestor(&apexes, &name, |parent| {
                count_below(&mut below, parent, 1);
                if !names.contains_key(parent) {
                    names.insert(Arc::from(parent), Arc::default());
                }
            });
        }
        Ok(Zone {
            table,
            serial,
            apex,
            apexes,
            names,
            views,
            view_map,
            below,
        })
    }

    /// The view of a client address (`None`: the default answers).
    pub fn view_of(&self, client: IpAddr) -> Option<u16> {
        if self.views.is_empty() {
            return None;
        }
        self.view_map.lookup(client)
    }

    /// Views in the zone.
    pub fn view_count(&self) -> usize {
        self.views.len()
    }

    /// Whether some view answers `name` differently from the default.
    pub fn varies_by_view(&self, name: &[u8]) -> bool {
        self.views.iter().any(|v| v.contains_key(name))
    }

    /// The entry of a lowercase wire-format name for a client in `view`, if it exists.
    pub fn get(&self, name: &[u8], view: Option<u16>) -> Option<&Entry> {
        if let Some(e) = view
            .and_then(|v| self.views.get(usize::from(v)))
            .and_then(|m| m.get(name))
        {
            return Some(e);
        }
        self.names.get(name).map(|e| &**e)
    }

    /// Whether `name` (lowercase wire format) is an apex or below one.
    pub fn contains(&self, name: &[u8]) -> bool {
        apex_of(&self.apexes, name).is_some()
    }

    /// The SOA record for negative answers about `name` (its zone's), owner in full.
    pub fn soa_authority(&self, name: &[u8]) -> &[u8] {
        let i = apex_of(&self.apexes, name).unwrap_or(0);
        self.apexes
            .get(i)
            .map_or(&[][..], |(_, soa)| soa.as_slice())
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Which apex `name` (lowercase wire format) is, or is below: the longest one.
fn apex_of(apexes: &[(Vec<u8>, Vec<u8>)], name: &[u8]) -> Option<usize> {
    let mut pos = 0usize;
    loop {
        let rest = &name[pos.min(name.len())..];
        if let Some(i) = apexes.iter().position(|(a, _)| a.as_slice() == rest) {
            return Some(i);
        }
        match name.get(pos) {
            Some(&0) | None => return None,
            Some(&len) => pos += 1 + len as usize,
        }
    }
}

/// Calls `f` with each ancestor of `name` (lowercase wire format) down to its apex, the
/// apex included; nothing for a name outside every apex.
fn for_each_ancestor(apexes: &[(Vec<u8>, Vec<u8>)], name: &[u8], mut f: impl FnMut(&[u8])) {
    let Some(apex_len) = apex_of(apexes, name)
        .and_then(|i| apexes.get(i))
        .map(|(a, _)| a.len())
    else {
        return;
    };
    let mut pos = 0usize;
    while let Some(&len) = name.get(pos) {
        if len == 0 {
            break;
        }
        pos += 1 + len as usize;
        let parent = &name[pos.min(name.len())..];
        if parent.len() < apex_len {
            break;
        }
        f(parent);
    }
}

/// Adds `by` (+1 or -1) to the count of names below `name`; a count of zero is dropped.
fn count_below(below: &mut FxHashMap<Arc<[u8]>, u32>, name: &[u8], by: i32) {
    match below.get_mut(name) {
        Some(n) => {
            *n = n.saturating_add_signed(by);
            if *n == 0 {
                below.remove(name);
            }
        }
        None if by > 0 => {
            below.insert(Arc::from(name), by.unsigned_abs());
        }
        None => {}
    }
}

/// One apex's SOA and NS answers, and the SOA (owner written in full) for the authority
/// section of negative answers below it.
struct ApexRecords {
    wire: Vec<u8>,
    authority: Vec<u8>,
    soa: Answer,
    ns: Answer,
}

impl ApexRecords {
    /// Puts the SOA and NS answers on the apex's entry (made if the apex has none).
    fn add_to(&self, names: &mut NameMap) {
        let mut e = names
            .get(self.wire.as_slice())
            .map(|e| (**e).clone())
            .unwrap_or_default();
        e.soa = Some(self.soa.clone());
        e.ns = Some(self.ns.clone());
        names.insert(Arc::from(self.wire.as_slice()), Arc::new(e));
    }
}

/// The domain's and every extra zone's apex records, with `serial` in the SOA.
fn apex_records(t: &DnsTable, serial: u32) -> Result<Vec<ApexRecords>, ZoneError> {
    let mname = name_to_wire(&t.soa.mname).ok_or_else(|| ZoneError("bad SOA mname".into()))?;
    let rname = name_to_wire(&t.soa.rname).ok_or_else(|| ZoneError("bad SOA rname".into()))?;
    let ttl = t.ttl;
    let soa = RData::Soa {
        mname: &mname,
        rname: &rname,
        serial,
        refresh: t.soa.refresh_s,
        retry: t.soa.retry_s,
        expire: t.soa.expire_s,
        minimum: ttl,
    };
    let single = |rdata: &RData| {
        let mut w = Writer::new();
        record(&mut w, Owner::Pointer(HEADER_LEN as u16), ttl, rdata);
        Answer::single(Section {
            bytes: w.into_vec(),
            ancount: 1,
            arcount: 0,
        })
    };
    let mut out = Vec::with_capacity(1 + t.zones.len());
    for z in std::iter::once(&t.domain).chain(&t.zones) {
        let wire = name_to_wire(z).ok_or_else(|| ZoneError(format!("bad zone {z:?}")))?;
        let mut authority = Writer::new();
        record(&mut authority, Owner::Name(&wire), ttl, &soa);
        out.push(ApexRecords {
            authority: authority.into_vec(),
            soa: single(&soa),
            ns: single(&RData::Ns(&mname)),
            wire,
        });
    }
    Ok(out)
}

/// One name's pre-encoded answers.
fn entry(
    t: &DnsTable,
    recs: &DnsRecords,
    wire: &FxHashMap<&str, Vec<u8>>,
    owner: &[u8],
    ttl: u32,
) -> Entry {
    let mut e = Entry::default();
    if !recs.a.is_empty() {
        e.a = Some(encode_ips(
            &recs.a.iter().map(|i| IpAddr::V4(*i)).collect::<Vec<_>>(),
            ttl,
        ));
    }
    if !recs.aaaa.is_empty() {
        e.aaaa = Some(encode_ips(
            &recs.aaaa.iter().map(|i| IpAddr::V6(*i)).collect::<Vec<_>>(),
            ttl,
        ));
    }
    if !recs.srv.is_empty() {
        e.srv = Some(encode_srv(t, &recs.srv, wire, owner.len(), ttl));
    }
    let mut any = Section::default();
    for ans in [&e.a, &e.aaaa, &e.srv].into_iter().flatten() {
        let first = ans.pick(0);
        // Only the answer part: ANY carries no additional section.
        any.bytes
            .extend_from_slice(&first.bytes[..answers_len(&first.bytes, first.ancount)]);
        any.ancount += first.ancount;
    }
    if any.ancount > 0 && any.bytes.len() <= MAX_ANSWER_BYTES {
        e.any = Some(Answer::single(any));
    }
    e
}

/// The length of the first `ancount` records of encoded sections (the answer section,
/// without the additional records that follow it).
fn answers_len(sections: &[u8], ancount: u16) -> usize {
    let mut pos = 0usize;
    for _ in 0..ancount {
        // Owner is a 2-byte pointer in our encoding; then type, class, ttl, rdlen.
        let Some(rdlen) = sections.get(pos + 10..pos + 12) else {
            break;
        };
        pos += 12 + u16::from_be_bytes([rdlen[0], rdlen[1]]) as usize;
    }
    pos.min(sections.len())
}

fn encode_ips(ips: &[IpAddr], ttl: u32) -> Answer {
    let take = ips.len().min(MAX_ANSWER_BYTES / 28);
    let rotations = rotations(&ips[..take])
        .into_iter()
        .map(|ips| {
            let mut w = Writer::new();
            for ip in &ips {
                let rd = match ip {
                    IpAddr::V4(v4) => RData::A(*v4),
                    IpAddr::V6(v6) => RData::Aaaa(*v6),
                };
                record(&mut w, Owner::Pointer(HEADER_LEN as u16), ttl, &rd);
            }
            Section {
                bytes: w.into_vec(),
                ancount: take as u16,
                arcount: 0,
            }
        })
        .collect();
    Answer { rotations }
}

/// Encodes SRV records and, in the additional section, the first A and AAAA of each
/// distinct target (as Mesos-DNS does). An additional record's owner is a pointer to the
/// target name inside the SRV record that names it: the answer section always starts
/// right after the question, whose length is fixed for this name, so the offsets are known
/// in advance.
fn encode_srv(
    t: &DnsTable,
    srvs: &[ocean_core::table::dns::SrvRecord],
    wire: &FxHashMap<&str, Vec<u8>>,
    owner_len: usize,
    ttl: u32,
) -> Answer {
    let answers_at = HEADER_LEN + owner_len + 4;
    let targets: Vec<(&ocean_core::table::dns::SrvRecord, Vec<u8>)> = srvs
        .iter()
        .filter_map(|s| {
            let w = wire
                .get(s.target.as_str())
                .cloned()
                .or_else(|| name_to_wire(&s.target))?;
            Some((s, w))
        })
        .collect();
    let rotations = rotations(&targets)
        .into_iter()
        .map(|list| {
            let mut w = Writer::new();
            let mut ancount = 0u16;
            // (target, offset of its name in the message), first mention of each target.
            let mut named: Vec<(&str, &[u8], usize)> = Vec::new();
            for (srv, target) in &list {
                let before = w.len();
                record(
                    &mut w,
                    Owner::Pointer(HEADER_LEN as u16),
                    ttl,
                    &RData::Srv {
                        priority: srv.priority,
                        weight: srv.weight,
                        port: srv.port,
                        target,
                    },
                );
                if w.len() > MAX_ANSWER_BYTES {
                    // Keep what fits; the rest would not fit a TCP message either.
                    let mut v = w.into_vec();
                    v.truncate(before);
                    w = Writer::new();
                    w.bytes(&v);
                    break;
                }
                ancount += 1;
                if !named.iter().any(|(n, _, _)| *n == srv.target) {
                    // Owner pointer (2), type, class, TTL, length (10), priority, weight, port (6).
                    named.push((
                        srv.target.as_str(),
                        target.as_slice(),
                        answers_at + before + 18,
                    ));
                }
            }
            let answers_len = w.len();
            let mut arcount = 0u16;
            for (name, target, at) in named {
                let Some(recs) = t.names.get(name) else {
                    continue;
                };
                // Pointers reach the first 16 KiB of a message; later names are written out.
                let owner = if at < 0x4000 {
                    Owner::Pointer(at as u16)
                } else {
                    Owner::Name(target)
                };
                if let Some(a) = recs.a.first() {
                    record(&mut w, owner, ttl, &RData::A(*a));
                    arcount += 1;
                }
                if let Some(a) = recs.aaaa.first() {
                    record(&mut w, owner, ttl, &RData::Aaaa(*a));
                    arcount += 1;
                }
            }
            let mut bytes = w.into_vec();
            if bytes.len() > MAX_ANSWER_BYTES {
                bytes.truncate(answers_len);
                arcount = 0;
            }
            Section {
                bytes,
                ancount,
                arcount,
            }
        })
        .collect();
    Answer { rotations }
}
