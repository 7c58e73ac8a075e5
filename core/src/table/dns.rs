//! The `dns` table: the whole zone `ocean dns` answers for, pre-resolved by control.
//!
//! Names are fully qualified, lowercase, with the trailing dot (`web.marathon.mesos.`).
//! Control follows Mesos-DNS naming (see `docs/control.md`); the DNS server only looks names
//! up, it does not derive them.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::{Problems, Table, TableError, TableKind};

/// The zone served by `ocean dns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsTable {
    /// The domain without trailing dot, e.g. `mesos`.
    pub domain: String,
    /// Every name in the zone and its records.
    #[serde(default)]
    pub names: BTreeMap<String, DnsRecords>,
    /// SOA fields of the domain (the serial is set by the DNS server when it loads a zone).
    pub soa: Soa,
    /// TTL of every record, seconds.
    pub ttl: u32,
    /// Client networks with answers of their own (control.toml `[dns.views.NAME]`), in
    /// match order: a query's view is the first whose networks hold its source address;
    /// clients in none get `names`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<DnsView>,
    /// Zones served besides `domain` (control.toml `[dns.zones."shop.example.com"]`),
    /// lowercase, without trailing dot: each gets SOA and NS (the domain's `soa` fields),
    /// and NXDOMAIN for names below it that are not in `names`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
}

impl Default for DnsTable {
    fn default() -> Self {
        DnsTable {
            domain: "mesos".into(),
            ttl: 60,
            soa: Soa::default(),
            names: BTreeMap::new(),
            views: Vec::new(),
            zones: Vec::new(),
        }
    }
}

/// One view: its client networks and the names whose records differ for them (only
/// those: every other name answers as in the table's `names`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsView {
    /// The view's name as configured (`[dns.views.unicom]` -> `unicom`).
    pub name: String,
    /// CIDRs (or bare addresses) of the clients in this view.
    pub networks: Vec<String>,
    /// Names answered differently in this view; a name's records here replace its
    /// records in `names` for these clients.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub names: BTreeMap<String, DnsRecords>,
}

/// SOA and NS data for the domain, Mesos-DNS defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Soa {
    pub expire_s: u32,
    /// Primary name server, fully qualified (`ns1.mesos.`); also the NS record.
    pub mname: String,
    pub refresh_s: u32,
    pub retry_s: u32,
    /// Responsible mailbox as a name (`root.ns1.mesos.`).
    pub rname: String,
}

impl Default for Soa {
    fn default() -> Self {
        Soa {
            mname: "ns1.mesos.".into(),
            rname: "root.ns1.mesos.".into(),
            refresh_s: 60,
            retry_s: 600,
            expire_s: 86400,
        }
    }
}

/// The records of one name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsRecords {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub a: Vec<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aaaa: Vec<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub srv: Vec<SrvRecord>,
}

impl DnsRecords {
    pub fn is_empty(&self) -> bool {
        self.a.is_empty() && self.aaaa.is_empty() && self.srv.is_empty()
    }
}

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SrvRecord {
    pub port: u16,
    pub priority: u16,
    /// Fully qualified target name.
    pub target: String,
    pub weight: u16,
}

/// Checks that `name` is a fully qualified DNS name: labels of 1..=63 bytes of
/// `[a-z0-9-_.]`-ish printable ASCII, 253 bytes at most, trailing dot.
pub fn check_fqdn(name: &str) -> Result<(), String> {
    // The common case, a good name, in one pass over the bytes (control checks every name
    // of a 500k-name table several times per sync); the walk below says what is wrong.
    if name
        .as_bytes()
        .strip_suffix(b".")
        .is_some_and(|body| body.len() <= 253 && labels_are_good(body))
    {
        return Ok(());
    }
    explain_fqdn(name)
}

/// [`check_fqdn`] the slow way, naming what is wrong.
fn explain_fqdn(name: &str) -> Result<(), String> {
    let Some(body) = name.strip_suffix('.') else {
        return Err("name must be fully qualified (end with '.')".into());
    };
    if body.len() > 253 {
        return Err(format!("name is {} bytes long, more than 253", body.len()));
    }
    for label in body.split('.') {
        if label.is_empty() {
            return Err("name has an empty label".into());
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} is longer than 63 bytes"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_graphic()) || c.is_ascii_uppercase())
        {
            return Err(format!(
                "label {label:?} contains {c:?} (names are lowercase ASCII)"
            ));
        }
    }
    Ok(())
}

/// Whether `body` (a name without its trailing dot) is labels of 1..=63 printable,
/// non-upper-case ASCII bytes joined by dots: [`check_fqdn`]'s rule, without the reasons.
fn labels_are_good(body: &[u8]) -> bool {
    let mut label = 0usize;
    for &c in body {
        match BYTE_CLASS[c as usize] {
            LABEL_BYTE if label < 63 => label += 1,
            DOT if label > 0 => label = 0,
            _ => return false,
        }
    }
    label > 0
}

const BAD: u8 = 0;
const LABEL_BYTE: u8 = 1;
const DOT: u8 = 2;

/// What each byte is in a name: one table lookup per byte instead of three range checks.
static BYTE_CLASS: [u8; 256] = {
    let mut t = [BAD; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        if b == b'.' {
            t[c] = DOT;
        } else if b.is_ascii_graphic() && !b.is_ascii_uppercase() {
            t[c] = LABEL_BYTE;
        }
        c += 1;
    }
    t
};

impl super::delta::Keyed for DnsTable {
    type Entry = DnsRecords;

    fn entries(&self) -> &BTreeMap<String, DnsRecords> {
        &self.names
    }

    fn entries_mut(&mut self) -> &mut BTreeMap<String, DnsRecords> {
        &mut self.names
    }

    fn validate_changed(&self, changed: &[String]) -> Result<(), TableError> {
        self.validate_names(Some(changed))
    }

    fn header(&self) -> Self {
        DnsTable {
            domain: self.domain.clone(),
            names: BTreeMap::new(),
            soa: self.soa.clone(),
            ttl: self.ttl,
            views: self.views.clone(),
            zones: self.zones.clone(),
        }
    }
}

impl Table for DnsTable {
    const KIND: TableKind = TableKind::Dns;
    const DELTAS: bool = true;

    fn changes_since(
        &self,
        old: &Self,
    ) -> Option<Result<super::delta::Changes, serde_json::Error>> {
        Some(super::delta::Changes::between(old, self))
    }

    fn apply_delta(
        &self,
        etag: &str,
        encoded: &super::incremental::Encoded,
        doc: &[u8],
    ) -> Option<Result<super::delta::Applied<Self>, super::delta::DeltaError>> {
        Some(super::delta::apply(self, etag, encoded, doc))
    }

    fn encode_after(
        &self,
        previous: Option<(&Self, &super::incremental::Encoded)>,
        buffers: super::incremental::Buffers,
    ) -> Result<(super::incremental::Encoded, Option<super::delta::Changes>), serde_json::Error>
    {
        super::incremental::encode(self, previous, buffers)
    }

    fn encode_hinted(
        &self,
        previous: (&Self, &super::incremental::Encoded),
        hint: &std::collections::BTreeSet<String>,
        buffers: super::incremental::Buffers,
    ) -> Result<(super::incremental::Encoded, Option<super::delta::Changes>), serde_json::Error>
    {
        super::incremental::encode_hinted(self, previous, hint, buffers)
    }

    fn validate_after(
        &self,
        previous: &Self,
        changes: &super::delta::Changes,
    ) -> Result<(), TableError> {
        super::incremental::validate_after(self, previous, changes)
    }

    fn validate(&self) -> Result<(), TableError> {
        self.validate_names(None)
    }

    fn backend_count(&self) -> usize {
        self.names
            .values()
            .chain(self.views.iter().flat_map(|v| v.names.values()))
            .map(|r| r.a.len() + r.aaaa.len() + r.srv.len())
            .sum()
    }
}

impl DnsTable {
    /// [`Table::validate`], checking of `names` only the keys in `only` when given (the
    /// names a delta changed in a table whose other names were checked already).
    fn validate_names(&self, only: Option<&[String]>) -> Result<(), TableError> {
        let mut p = Problems::default();
        let apex = format!("{}.", self.domain);
        if let Err(e) = check_fqdn(&apex) {
            p.push("domain", e);
        }
        if self.ttl == 0 {
            p.push("ttl", "must be at least 1 second");
        }
        for (field, v) in [
            ("soa.mname", &self.soa.mname),
            ("soa.rname", &self.soa.rname),
        ] {
            if let Err(e) = check_fqdn(v) {
                p.push(field, e);
            }
        }
        let mut apexes = vec![apex.clone()];
        for (i, z) in self.zones.iter().enumerate() {
            let zone = format!("{z}.");
            if let Err(e) = check_fqdn(&zone) {
                p.push(format!("zones[{i}]"), e);
            } else if apexes.contains(&zone) {
                p.push(
                    format!("zones[{i}]"),
                    format!("zone {zone} is listed twice"),
                );
            } else {
                apexes.push(zone);
            }
        }
        let in_a_zone = |name: &str| {
            apexes.iter().any(|a| {
                name == a
                    || name
                        .strip_suffix(a.as_str())
                        .is_some_and(|h| h.ends_with('.'))
            })
        };
        let check_names =
            |p: &mut Problems,
             at: &str,
             names: &mut dyn Iterator<Item = (&String, &DnsRecords)>| {
                for (name, records) in names {
                    // Formatted only for a problem: a large table has 500k good names.
                    let entry = || format!("{at}[{name:?}]");
                    if let Err(e) = check_fqdn(name) {
                        p.push(entry(), e);
                        continue;
                    }
                    if !in_a_zone(name) {
                        p.push(
                            entry(),
                            format!("name is outside the domain {apex} and every zone"),
                        );
                    }
                    if records.is_empty() {
                        p.push(entry(), "name has no records");
                    }
                    for srv in &records.srv {
                        if let Err(e) = check_fqdn(&srv.target) {
                            p.push(entry(), format!("SRV target {:?}: {e}", srv.target));
                        }
                    }
                }
            };
        match only {
            Some(keys) => check_names(
                &mut p,
                "names",
                &mut keys.iter().filter_map(|k| self.names.get_key_value(k)),
            ),
            None => check_names(&mut p, "names", &mut self.names.iter()),
        }
        let mut view_names = std::collections::HashSet::new();
        for (i, v) in self.views.iter().enumerate() {
            let entry = format!("views[{i}] ({})", v.name);
            if v.name.is_empty() || !view_names.insert(v.name.as_str()) {
                p.push(&entry, "view names must be unique and not empty");
            }
            if v.networks.is_empty() {
                p.push(&entry, "a view needs at least one network");
            }
            for n in &v.networks {
                if let Err(e) = n.parse::<crate::net::Cidr>() {
                    p.push(&entry, e.to_string());
                }
            }
            check_names(&mut p, &format!("views[{i}].names"), &mut v.names.iter());
        }
        p.into_result(TableKind::Dns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> DnsTable {
        let mut t = DnsTable::default();
        t.names.insert(
            "web.marathon.mesos.".into(),
            DnsRecords {
                a: vec![Ipv4Addr::new(10, 0, 0, 1)],
                ..Default::default()
            },
        );
        t
    }

    #[test]
    fn the_body_built_on_the_last_one_is_canonical_with_views_and_zones() {
        let mut t = table();
        t.zones = vec!["shop.example.com".into()];
        t.views = vec![DnsView {
            name: "unicom".into(),
            networks: vec!["10.1.0.0/16".into()],
            // A view's names come after the table's own in the JSON.
            names: t.names.clone(),
        }];
        let (first, _) = t.encode_after(None, Default::default()).unwrap();
        assert_eq!(first.body.as_ref(), t.canonical_body().unwrap().as_slice());
        let mut next = t.clone();
        next.names.insert(
            "db.marathon.mesos.".into(),
            DnsRecords {
                a: vec![Ipv4Addr::new(10, 0, 0, 2)],
                ..Default::default()
            },
        );
        let (built, changes) = next
            .encode_after(Some((&t, &first)), Default::default())
            .unwrap();
        assert_eq!(
            built.body.as_ref(),
            next.canonical_body().unwrap().as_slice()
        );
        let changes = changes.unwrap();
        assert_eq!(
            changes.entries.keys().collect::<Vec<_>>(),
            ["db.marathon.mesos."]
        );
        assert!(next.validate_after(&t, &changes).is_ok());
    }

    #[test]
    fn a_good_zone_is_valid() {
        assert!(table().validate().is_ok());
        assert_eq!(table().backend_count(), 1);
    }

    #[test]
    fn names_outside_the_domain_uppercase_or_unqualified_are_refused() {
        let mut t = table();
        let rec = DnsRecords {
            a: vec![Ipv4Addr::LOCALHOST],
            ..Default::default()
        };
        t.names.insert("web.example.com.".into(), rec.clone());
        t.names.insert("Web.marathon.mesos.".into(), rec.clone());
        t.names.insert("x.marathon.mesos".into(), rec);
        t.names.insert("empty.mesos.".into(), DnsRecords::default());
        let Err(TableError::Invalid { problems, .. }) = t.validate() else {
            panic!("expected invalid");
        };
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 4, "{text:?}");
        assert!(text
            .iter()
            .any(|s| s.contains("web.example.com.") && s.contains("outside")));
        assert!(text.iter().any(|s| s.contains("lowercase")));
        assert!(text.iter().any(|s| s.contains("fully qualified")));
        assert!(text.iter().any(|s| s.contains("no records")));
    }

    #[test]
    fn views_and_zones_are_checked() {
        let rec = DnsRecords {
            a: vec![Ipv4Addr::new(203, 0, 113, 10)],
            ..Default::default()
        };
        let mut t = table();
        t.zones = vec!["shop.example.com".into()];
        t.names.insert("api.shop.example.com.".into(), rec.clone());
        t.views = vec![DnsView {
            name: "unicom".into(),
            networks: vec!["127.0.0.2/32".into(), "10.8.0.0/16".into()],
            names: [("api.shop.example.com.".to_string(), rec.clone())].into(),
        }];
        assert!(t.validate().is_ok(), "{:?}", t.validate());
        assert_eq!(t.backend_count(), 3);
        // Outside every zone, a bad network, a duplicate view and zone.
        t.views[0]
            .names
            .insert("api.other.example.".into(), rec.clone());
        t.views[0].networks.push("10.0.0.0/33".into());
        t.views.push(t.views[0].clone());
        t.zones.push("shop.example.com".into());
        // A name that only ends like a zone is not in it.
        t.names.insert("xshop.example.com.".into(), rec);
        let Err(TableError::Invalid { problems, .. }) = t.validate() else {
            panic!("expected invalid");
        };
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|s| s.contains("api.other.example.")),
            "{text:?}"
        );
        assert!(text.iter().any(|s| s.contains("10.0.0.0/33")), "{text:?}");
        assert!(text.iter().any(|s| s.contains("unique")), "{text:?}");
        assert!(text.iter().any(|s| s.contains("listed twice")), "{text:?}");
        assert!(
            text.iter().any(|s| s.contains("xshop.example.com.")),
            "{text:?}"
        );
    }

    #[test]
    fn long_labels_are_refused() {
        let long = "a".repeat(64);
        assert!(check_fqdn(&format!("{long}.mesos.")).is_err());
        assert!(check_fqdn(&format!("{}.mesos.", "a".repeat(63))).is_ok());
        assert!(check_fqdn("a..mesos.").is_err());
    }

    /// A delta checks only the names it changed, and still refuses a bad one.
    #[test]
    fn a_delta_that_adds_a_bad_name_is_refused() {
        use crate::table::delta::{apply, Changes, DeltaError};
        let good = table();
        let etag = |t: &DnsTable| crate::table::etag_of(&t.canonical_body().unwrap_or_default());
        for (name, records) in [
            (
                "web.elsewhere.",
                DnsRecords {
                    a: vec![Ipv4Addr::LOCALHOST],
                    ..Default::default()
                },
            ),
            (
                "_web._tcp.marathon.mesos.",
                DnsRecords {
                    srv: vec![SrvRecord {
                        port: 1,
                        priority: 0,
                        target: "NOT A NAME".into(),
                        weight: 1,
                    }],
                    ..Default::default()
                },
            ),
            ("empty.marathon.mesos.", DnsRecords::default()),
        ] {
            let mut bad = good.clone();
            bad.names.insert(name.into(), records);
            let doc = Changes::between(&good, &bad)
                .unwrap_or_default()
                .encode(&etag(&good), &etag(&bad));
            assert!(
                matches!(
                    apply(
                        &good,
                        &etag(&good),
                        &good.encode_after(None, Default::default()).unwrap().0,
                        &doc
                    ),
                    Err(DeltaError::Invalid(_))
                ),
                "{name}"
            );
        }
    }

    /// The one-pass check and the one that explains agree on good and bad names alike.
    #[test]
    fn the_fast_name_check_agrees_with_the_explaining_one() {
        let long = "a".repeat(63);
        let cases = [
            "web.marathon.mesos.".to_string(),
            "_web._tcp.marathon.mesos.".into(),
            "a.".into(),
            ".".into(),
            "".into(),
            "mesos".into(),
            ".mesos.".into(),
            "a..mesos.".into(),
            "Web.mesos.".into(),
            "we b.mesos.".into(),
            "wé.mesos.".into(),
            "tab\t.mesos.".into(),
            format!("{long}.mesos."),
            format!("{long}a.mesos."),
            format!("{}.", ["abcdefg"; 32].join(".")),
            format!("{}.", ["abcdefg"; 31].join(".")),
            format!("{}a.", "b.".repeat(126)),
            format!("{}ab.", "b.".repeat(126)),
        ];
        for name in &cases {
            assert_eq!(
                check_fqdn(name).is_ok(),
                explain_fqdn(name).is_ok(),
                "{name:?}"
            );
        }
        assert!(check_fqdn(&cases[0]).is_ok());
        assert!(check_fqdn(&cases[12]).is_ok());
        assert!(check_fqdn(&cases[13]).is_err());
    }
}
