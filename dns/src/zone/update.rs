//! A zone from its predecessor and a delta: only the names the delta touched, and the
//! names whose SRV answers carry their addresses, are encoded again.
//!
//! A full build of a 500k-name zone encodes every answer in its rotations; a task change
//! touches a handful of names. The update copies the entry maps (shared pointers), then:
//! - encodes the changed names again, or removes them (an empty non-terminal stays when
//!   names are still below it);
//! - encodes again every name (of the table or a view) with an SRV record whose target
//!   changed: its additional section holds the target's first addresses;
//! - adds the empty non-terminals above new names and drops those with nothing left below;
//! - writes the apexes' SOA and NS with the new serial.
//!
//! The result equals [`Zone::build`] of the new table with the same serial (the tests hold
//! it to that). When anything besides `names` changed (domain, SOA, TTL, views, zones) the
//! update is a full build.

use std::sync::Arc;

use ocean_core::table::{DnsTable, Versioned};
use rustc_hash::{FxHashMap, FxHashSet};

use super::{apex_records, count_below, entry, for_each_ancestor, Entry, NameMap, Zone, ZoneError};
use crate::proto::encode::name_to_wire;

/// Whether two tables differ only in `names`.
fn same_but_names(a: &DnsTable, b: &DnsTable) -> bool {
    a.domain == b.domain
        && a.ttl == b.ttl
        && a.soa == b.soa
        && a.zones == b.zones
        && a.views == b.views
}

impl Zone {
    /// The zone of `table`, made from this one: `changed` lists the names (table keys)
    /// that differ between this zone's table and `table`. See the module docs.
    ///
    /// # Errors
    /// What [`Zone::build`] refuses.
    pub fn update(
        &self,
        table: Arc<Versioned<DnsTable>>,
        changed: &[String],
        serial: u32,
    ) -> Result<Zone, ZoneError> {
        if !same_but_names(&self.table.table, &table.table) {
            return Zone::build(table, serial);
        }
        let old = &self.table.table;
        let t = &table.table;
        let ttl = t.ttl;
        let no_wire = FxHashMap::default();
        let changed: FxHashSet<&str> = changed.iter().map(String::as_str).collect();
        let mut names = self.names.clone();
        let mut below = self.below.clone();
        // Ancestors whose count fell: maybe no longer needed.
        let mut emptied: Vec<Vec<u8>> = Vec::new();
        let mut removed: Vec<Vec<u8>> = Vec::new();
        for name in &changed {
            let Some(wire) = name_to_wire(name) else {
                continue;
            };
            let was = old.names.contains_key(*name);
            match t.names.get(*name) {
                Some(recs) => {
                    if !was {
                        for_each_ancestor(&self.apexes, &wire, |parent| {
                            count_below(&mut below, parent, 1);
                            if !names.contains_key(parent) {
                                names.insert(Arc::from(parent), Arc::default());
                            }
                        });
                    }
                    let e = entry(t, recs, &no_wire, &wire, ttl);
                    names.insert(Arc::from(wire.as_slice()), Arc::new(e));
                }
                None if was => {
                    for_each_ancestor(&self.apexes, &wire, |parent| {
                        count_below(&mut below, parent, -1);
                        emptied.push(parent.to_vec());
                    });
                    removed.push(wire);
                }
                None => {}
            }
        }
        // Names with names below them stay, empty; the rest go.
        for wire in removed {
            if below.contains_key(wire.as_slice()) {
                names.insert(Arc::from(wire.as_slice()), Arc::default());
            } else {
                names.remove(wire.as_slice());
            }
        }
        for wire in emptied {
            let empty = names
                .get(wire.as_slice())
                .is_some_and(|e| **e == Entry::default());
            if empty && !below.contains_key(wire.as_slice()) {
                names.remove(wire.as_slice());
            }
        }
        // SRV answers whose targets changed carry new additional records.
        let refers = |recs: &ocean_core::table::dns::DnsRecords| {
            recs.srv.iter().any(|s| changed.contains(s.target.as_str()))
        };
        let reencode = |map: &mut NameMap,
                        list: &std::collections::BTreeMap<String, _>,
                        skip_changed: bool| {
            for (name, recs) in list {
                if (skip_changed && changed.contains(name.as_str())) || !refers(recs) {
                    continue;
                }
                if let Some(wire) = name_to_wire(name) {
                    let e = entry(t, recs, &no_wire, &wire, ttl);
                    map.insert(Arc::from(wire.as_slice()), Arc::new(e));
                }
            }
        };
        reencode(&mut names, &t.names, true);
        let mut views = self.views.clone();
        for (map, view) in views.iter_mut().zip(&t.views) {
            reencode(map, &view.names, false);
        }
        // The apexes, with the new serial.
        let apexes = apex_records(t, serial)?;
        for a in &apexes {
            a.add_to(&mut names);
        }
        Ok(Zone {
            table,
            serial,
            apex: self.apex.clone(),
            apexes: apexes.into_iter().map(|a| (a.wire, a.authority)).collect(),
            names,
            views,
            view_map: self.view_map.clone(),
            below,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use ocean_core::table::dns::{DnsRecords, DnsView, SrvRecord};
    use ocean_tests::lcg::Lcg;

    use super::*;

    /// The names a table may hold: apps, deep names (so that empty non-terminals come and
    /// go), SRV names, the apex itself, and names in an extra zone.
    fn candidate(i: u64) -> String {
        match i % 8 {
            0 => format!("app{i}.marathon.mesos."),
            1 => format!("t{i}.deep.x{}.marathon.mesos.", (i / 8) % 3),
            2 => format!("_app{}._tcp.marathon.mesos.", i % 9),
            3 => "mesos.".to_string(),
            4 => format!("w{i}.shop.example."),
            // Alone under its parents: they go when it goes.
            5 => format!("solo.lone{i}.marathon.mesos."),
            // A name with names below it: empty, not gone, when removed.
            6 => format!("x{}.marathon.mesos.", (i / 8) % 3),
            _ => format!("task{}.marathon.slave.mesos.", i % 7),
        }
    }

    fn records(rng: &mut Lcg, name: &str, pool: &[String]) -> DnsRecords {
        if name.starts_with('_') {
            let n = 1 + rng.next(3) as usize;
            DnsRecords {
                srv: (0..n)
                    .map(|k| SrvRecord {
                        port: 31000 + k as u16,
                        priority: 0,
                        target: pool[rng.next(pool.len() as u64) as usize].clone(),
                        weight: 1,
                    })
                    .collect(),
                ..Default::default()
            }
        } else {
            let n = 1 + rng.next(3) as u8;
            DnsRecords {
                a: (0..n)
                    .map(|k| Ipv4Addr::new(10, 0, rng.next(200) as u8, k + 1))
                    .collect(),
                ..Default::default()
            }
        }
    }

    fn versioned(t: &DnsTable) -> Arc<Versioned<DnsTable>> {
        Versioned::new(t.clone()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn assert_same(got: &Zone, want: &Zone, step: usize) {
        let keys = |m: &NameMap| {
            let mut k: Vec<Vec<u8>> = m.keys().map(|k| k.to_vec()).collect();
            k.sort();
            k
        };
        assert_eq!(keys(&got.names), keys(&want.names), "step {step}: names");
        for (k, e) in &want.names {
            assert_eq!(got.names.get(k), Some(e), "step {step}: entry {k:?}");
        }
        assert_eq!(got.views.len(), want.views.len());
        for (g, w) in got.views.iter().zip(&want.views) {
            assert_eq!(keys(g), keys(w), "step {step}: view names");
            for (k, e) in w {
                assert_eq!(g.get(k), Some(e), "step {step}: view entry {k:?}");
            }
        }
        assert_eq!(got.apexes, want.apexes, "step {step}: apexes");
        assert_eq!(got.below, want.below, "step {step}: counts below");
        assert_eq!(got.serial, want.serial);
    }

    #[test]
    fn an_update_equals_a_full_build_through_200_random_changes() {
        let mut rng = Lcg(0x0cea_0dd5);
        let pool: Vec<String> = (0..60).map(candidate).collect();
        let mut t = DnsTable {
            zones: vec!["shop.example".into()],
            views: vec![DnsView {
                name: "line".into(),
                networks: vec!["127.0.0.1/32".into()],
                names: BTreeMap::from([
                    (
                        "_app1._tcp.marathon.mesos.".to_string(),
                        DnsRecords {
                            srv: vec![SrvRecord {
                                port: 1,
                                priority: 0,
                                target: "app0.marathon.mesos.".into(),
                                weight: 1,
                            }],
                            ..Default::default()
                        },
                    ),
                    (
                        "only.in.view.marathon.mesos.".to_string(),
                        DnsRecords {
                            a: vec![Ipv4Addr::LOCALHOST],
                            ..Default::default()
                        },
                    ),
                ]),
            }],
            ..Default::default()
        };
        for name in pool.iter().take(20) {
            let r = records(&mut rng, name, &pool);
            t.names.insert(name.clone(), r);
        }
        let mut zone = Zone::build(versioned(&t), 1).unwrap_or_else(|e| panic!("{e}"));
        for step in 0..200 {
            // One to four names added, changed or removed.
            let mut changed = Vec::new();
            for _ in 0..1 + rng.next(4) {
                let name = pool[rng.next(pool.len() as u64) as usize].clone();
                if t.names.contains_key(&name) && rng.next(2) == 0 {
                    t.names.remove(&name);
                } else {
                    let r = records(&mut rng, &name, &pool);
                    t.names.insert(name.clone(), r);
                }
                changed.push(name);
            }
            let serial = 2 + step as u32;
            let next = versioned(&t);
            let updated = zone
                .update(next.clone(), &changed, serial)
                .unwrap_or_else(|e| panic!("{e}"));
            let built = Zone::build(next, serial).unwrap_or_else(|e| panic!("{e}"));
            assert_same(&updated, &built, step);
            zone = updated;
        }
    }

    #[test]
    fn a_change_besides_names_is_a_full_build() {
        let mut t = DnsTable::default();
        t.names.insert(
            "a.marathon.mesos.".into(),
            DnsRecords {
                a: vec![Ipv4Addr::LOCALHOST],
                ..Default::default()
            },
        );
        let zone = Zone::build(versioned(&t), 1).unwrap_or_else(|e| panic!("{e}"));
        t.ttl = 5;
        // The changed list names nothing, yet every answer has the new TTL.
        let updated = zone
            .update(versioned(&t), &[], 2)
            .unwrap_or_else(|e| panic!("{e}"));
        let built = Zone::build(versioned(&t), 2).unwrap_or_else(|e| panic!("{e}"));
        assert_same(&updated, &built, 0);
    }
}
