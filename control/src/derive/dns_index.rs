//! The dns table derived again after a few apps changed.
//!
//! The full derive ([`super::dns::derive`]) walks every app: about 500 ms at 10k apps and
//! 100k tasks, nearly all of `derive_all`. [`DnsIndex`] keeps, beside the names it derived
//! last, which apps gave each name its records. For the next state it derives only the apps
//! that differ (added, removed, changed in any field) and rebuilds only the names those apps
//! had or have now, from every app that contributes to them. The result is the full
//! derive's, name for name and problem for problem: `tests/marathon_props.rs` holds the two
//! equal on random states and changes.
//!
//! Copying the 500k names into a new table would then be most of a patch. The engine
//! gives back the table it published before the current one ([`Recycled`]), and the patch
//! brings that up to date by rewriting only the names that can differ: those of the apps
//! that differ between that table's state and the new one, and the load balancers' names
//! that table had. The first patch may have no such table: it rewrites a copy that the
//! build made beside the index.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ocean_core::table::dns::{DnsRecords, DnsTable};

use super::dns::{absorb, derive_apps, domain_of, master_names, table, tidy, DnsSettings};
use super::Problem;
use crate::state::{App, State};

/// Who contributes records to a name: an app (by id) or, for `None`, the masters.
type Source = Option<Arc<str>>;

/// One name of the zone: its records (sorted, deduplicated) and where they come from.
#[derive(Debug, Clone, Default)]
struct Entry {
    records: DnsRecords,
    /// Mostly one; two apps whose ids make the same name share it.
    sources: Vec<Source>,
}

/// The last derived dns names and their sources; see the module docs.
#[derive(Debug)]
pub struct DnsIndex {
    settings: DnsSettings,
    base: Arc<State>,
    /// A copy of the base's names made with the index, in the background: the first
    /// patch rewrites it when it is offered no other table.
    spare: Option<Recycled>,
    names: BTreeMap<String, Entry>,
    /// Each app's problems, by app id (the order the full derive reports them in).
    problems: BTreeMap<String, Vec<Problem>>,
}

/// Above this many changed apps, and an eighth of all, [`DnsIndex::patch`] declines: a full
/// derive (on two threads) is then about as cheap.
const MAX_CHANGED: usize = 64;

impl DnsIndex {
    /// The index of `state`'s dns names. `None` when two apps share an id (Marathon does
    /// not allow it; the diff needs ids to be keys).
    pub fn build(state: Arc<State>, settings: &DnsSettings) -> Option<DnsIndex> {
        if has_duplicate_ids(&state.apps) {
            return None;
        }
        let tail = format!(".{}.", domain_of(settings));
        let mut names: BTreeMap<String, Entry> = BTreeMap::new();
        let mut problems = BTreeMap::new();
        let mut add = |name: String, source: Source, records: DnsRecords| {
            let e = names.entry(name).or_default();
            let shared = !e.sources.is_empty();
            absorb(&mut e.records, records);
            if shared {
                e.records = tidy(std::mem::take(&mut e.records));
            }
            e.sources.push(source);
        };
        for app in &state.apps {
            let source: Source = Some(Arc::from(app.id.as_str()));
            let (own, p) = derive_apps(std::slice::from_ref(app), settings, &tail);
            if !p.is_empty() {
                problems.insert(app.id.clone(), p);
            }
            for (name, records) in own {
                add(name, source.clone(), records);
            }
        }
        for (name, records) in master_names(settings, &tail) {
            add(name, None, records);
        }
        let spare = Some(Recycled {
            table: table(settings, domain_of(settings), copy_records(&names)),
            from: Derivation {
                state: Arc::clone(&state),
                settings: settings.clone(),
                lb_names: Vec::new(),
            },
        });
        Some(DnsIndex {
            settings: settings.clone(),
            base: state,
            spare,
            names,
            problems,
        })
    }

    /// The state the index holds the names of.
    pub fn base(&self) -> &Arc<State> {
        &self.base
    }

    /// Moves the index to `state` and returns its dns table (before `lb_names`) and
    /// problems, as [`super::dns::derive`] would; see [`Patched`]. `None`, leaving the
    /// index as it was, when it cannot: other settings, duplicate app ids, or more than
    /// [`MAX_CHANGED`] changed apps and an eighth of all.
    ///
    /// The table is `recycled`'s brought up to date when that was derived with the same
    /// settings from a state not too unlike `state`, else (at the first patch) the spare
    /// copy made with the index; otherwise every name is copied.
    pub fn patch(
        &mut self,
        state: &Arc<State>,
        settings: &DnsSettings,
        recycled: Option<Recycled>,
    ) -> Option<Patched> {
        if *settings != self.settings || has_duplicate_ids(&state.apps) {
            return None;
        }
        let changes = diff(&self.base.apps, &state.apps);
        if too_many(changes.len(), state.apps.len()) {
            return None;
        }
        let tail = format!(".{}.", domain_of(settings));
        // The names of the changed apps as they are now, by app id.
        let mut fresh: HashMap<String, Vec<(String, DnsRecords)>> = HashMap::new();
        let mut touched: Vec<String> = Vec::new();
        for (old, new) in changes {
            if let Some(old) = old {
                let id = old.id.as_str();
                for (name, _) in derive_apps(std::slice::from_ref(old), settings, &tail).0 {
                    if let Some(e) = self.names.get_mut(&name) {
                        e.sources.retain(|s| s.as_deref() != Some(id));
                    }
                    touched.push(name);
                }
                self.problems.remove(id);
            }
            if let Some(new) = new {
                let (own, p) = derive_apps(std::slice::from_ref(new), settings, &tail);
                if !p.is_empty() {
                    self.problems.insert(new.id.clone(), p);
                }
                let source: Source = Some(Arc::from(new.id.as_str()));
                for (name, _) in &own {
                    let e = self.names.entry(name.clone()).or_default();
                    e.sources.push(source.clone());
                    touched.push(name.clone());
                }
                fresh.insert(new.id.clone(), own);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        let mut masters: Option<Vec<(String, DnsRecords)>> = None;
        for name in &touched {
            let Some(sources) = self.names.get(name).map(|e| e.sources.clone()) else {
                continue;
            };
            if sources.is_empty() {
                self.names.remove(name);
                continue;
            }
            // Every contributor's records for this name, merged as the full derive merges.
            let mut merged = DnsRecords::default();
            for source in &sources {
                let own: &[(String, DnsRecords)] = match source {
                    None => masters.get_or_insert_with(|| master_names(settings, &tail)),
                    Some(id) => {
                        if !fresh.contains_key(&**id) {
                            // An app that did not change shares this name: its part again.
                            let own = find(&state.apps, id)
                                .map(|app| {
                                    derive_apps(std::slice::from_ref(app), settings, &tail).0
                                })
                                .unwrap_or_default();
                            fresh.insert(id.to_string(), own);
                        }
                        fresh.get(&**id).map_or(&[], Vec::as_slice)
                    }
                };
                if let Ok(i) = own.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
                    absorb(&mut merged, own[i].1.clone());
                }
            }
            if let Some(e) = self.names.get_mut(name) {
                e.records = tidy(merged);
            }
        }
        // The spare copy is of use to the first patch only.
        let spare = self.spare.take();
        let rewritten = recycled
            .and_then(|r| self.stale_names(r, state, &tail))
            .or_else(|| spare.and_then(|r| self.stale_names(r, state, &tail)));
        let recycled = rewritten.is_some();
        let names = match rewritten {
            Some((mut names, stale)) => {
                for name in stale {
                    match self.names.get(&name) {
                        Some(e) => {
                            names.insert(name, e.records.clone());
                        }
                        None => {
                            names.remove(&name);
                        }
                    }
                }
                names
            }
            None => copy_records(&self.names),
        };
        self.base = state.clone();
        Some(Patched {
            table: table(settings, domain_of(settings), names),
            problems: self.problems.values().flatten().cloned().collect(),
            touched,
            recycled,
        })
    }

    /// `recycled`'s names, and those that can differ from the index's, which now holds
    /// `state`'s: the names every app that differs between the two states has on either
    /// side (a name's records come from the apps that have it), and the load balancers'
    /// names (not the index's: each goes, or is set to the index's when a Mesos-DNS name
    /// took it over since). `None` when the table was derived with other settings or
    /// from a state too unlike this one.
    fn stale_names(
        &self,
        recycled: Recycled,
        state: &State,
        tail: &str,
    ) -> Option<(BTreeMap<String, DnsRecords>, BTreeSet<String>)> {
        let Recycled { table, from } = recycled;
        if from.settings != self.settings || has_duplicate_ids(&from.state.apps) {
            return None;
        }
        let changes = diff(&from.state.apps, &state.apps);
        if too_many(changes.len(), state.apps.len()) {
            return None;
        }
        let mut stale: BTreeSet<String> = from.lb_names.into_iter().collect();
        for (old, new) in changes {
            for app in old.into_iter().chain(new) {
                let (own, _) = derive_apps(std::slice::from_ref(app), &from.settings, tail);
                stale.extend(own.into_iter().map(|(name, _)| name));
            }
        }
        Some((table.names, stale))
    }
}

/// Whether `changed` apps of `all` are too many to patch: more than [`MAX_CHANGED`] and an
/// eighth of all.
fn too_many(changed: usize, all: usize) -> bool {
    changed > MAX_CHANGED && changed * 8 > all
}

/// What [`DnsIndex::patch`] derived.
pub struct Patched {
    /// The dns table, before `lb_names`.
    pub table: DnsTable,
    pub problems: Vec<Problem>,
    /// The names it rebuilt (sorted): every other name is as the last state's table had it.
    pub touched: Vec<String>,
    /// Whether the table is the offered [`Recycled`] one rewritten (else a copy).
    pub recycled: bool,
}

/// What a published dns table was derived from: the state, the `[dns]` settings, and the
/// names `lb_names` added to it.
#[derive(Debug, Clone)]
pub struct Derivation {
    pub state: Arc<State>,
    pub settings: DnsSettings,
    pub lb_names: Vec<String>,
}

/// A dns table derived before, to be brought up to date rather than every name copied
/// again: the table as published, and what it was derived from.
#[derive(Debug)]
pub struct Recycled {
    pub table: DnsTable,
    pub from: Derivation,
}

/// Above this many names the table's copy is made on two threads.
const PARALLEL_COPY_FROM: usize = 50_000;

/// The names and records of `names`, for the table. Copying is most of a patch (about 100
/// ms of 503k names); on two threads, each a half.
fn copy_records(names: &BTreeMap<String, Entry>) -> BTreeMap<String, DnsRecords> {
    let copy = |part: &mut dyn Iterator<Item = (&String, &Entry)>| -> Vec<(String, DnsRecords)> {
        part.map(|(name, e)| (name.clone(), e.records.clone()))
            .collect()
    };
    let middle = match names.keys().nth(names.len() / 2) {
        Some(m) if names.len() >= PARALLEL_COPY_FROM => m,
        _ => return copy(&mut names.iter()).into_iter().collect(),
    };
    let (first, second) = std::thread::scope(|scope| {
        let second = scope.spawn(|| copy(&mut names.range::<String, _>(middle..)));
        (copy(&mut names.range::<String, _>(..middle)), second.join())
    });
    let second = second.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    // Sorted already: `collect` builds the map in one pass.
    first.into_iter().chain(second).collect()
}

/// The app with id `id` in `apps` (sorted by id).
fn find<'a>(apps: &'a [Arc<App>], id: &str) -> Option<&'a App> {
    apps.binary_search_by(|a| a.id.as_str().cmp(id))
        .ok()
        .map(|i| &*apps[i])
}

fn has_duplicate_ids(apps: &[Arc<App>]) -> bool {
    apps.windows(2).any(|w| w[0].id == w[1].id)
}

/// The apps that differ between two states (each sorted by id, ids unique): `(old, new)`,
/// `None` on the side where the app does not exist. An app the sync took over from the
/// last state unchanged is the same allocation: equal without a deep compare.
fn diff<'a>(old: &'a [Arc<App>], new: &'a [Arc<App>]) -> Vec<(Option<&'a App>, Option<&'a App>)> {
    use std::cmp::Ordering;
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    loop {
        let (a, b) = (old.get(i).map(|a| &**a), new.get(j).map(|b| &**b));
        // An app only on one side sorts before the other side's next (or its end).
        let order = match (a, b) {
            (Some(a), Some(b)) => a.id.cmp(&b.id),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => break,
        };
        match order {
            Ordering::Less => {
                out.push((a, None));
                i += 1;
            }
            Ordering::Greater => {
                out.push((None, b));
                j += 1;
            }
            Ordering::Equal => {
                if let (Some(x), Some(y)) = (a, b) {
                    if !std::ptr::eq(x, y) && x != y {
                        out.push((a, b));
                    }
                }
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::derive::dns::derive;
    use crate::derive::fixtures::{state, task};

    fn settings() -> DnsSettings {
        DnsSettings {
            masters: vec!["10.9.0.1:5050".parse().unwrap()],
            ..Default::default()
        }
    }

    fn apps(specs: &[(&str, &[&str])]) -> Arc<State> {
        let apps: Vec<String> = specs
            .iter()
            .map(|(id, ips)| {
                let tasks: Vec<String> = ips
                    .iter()
                    .enumerate()
                    .map(|(k, ip)| task(&format!("t{k}.{}", ip.replace('.', "-")), ip, &[31000]))
                    .collect();
                format!(
                    r#"{{"id":"{id}","portDefinitions":[{{"port":10000,"name":"http"}}],"tasks":[{}]}}"#,
                    tasks.join(",")
                )
            })
            .collect();
        Arc::new(state(&format!(r#"{{"apps":[{}]}}"#, apps.join(","))))
    }

    fn full(state: &State) -> (DnsTable, Vec<Problem>) {
        let mut problems = Vec::new();
        let t = derive(state, &settings(), &mut problems);
        (t, problems)
    }

    /// `/z/x/y` and `/x-z/y` both make `y-x-z.marathon.mesos.`: changing or removing one
    /// keeps the other's records on the shared name.
    #[test]
    fn a_name_two_apps_share_keeps_the_other_apps_records() {
        let s1 = apps(&[("/z/x/y", &["10.0.0.1"]), ("/x-z/y", &["10.0.0.2"])]);
        let mut index = DnsIndex::build(s1.clone(), &settings()).unwrap();
        let shared = "y-x-z.marathon.mesos.";
        // The first patch rewrites the spare copy the build made; the next, offered no
        // table, copies the names.
        let first = index.patch(&s1, &settings(), None).unwrap();
        assert!(first.recycled);
        let t1 = first.table;
        assert_eq!(t1.names[shared].a.len(), 2);
        assert_eq!(t1, full(&s1).0);
        let s2 = apps(&[("/z/x/y", &["10.0.0.3"]), ("/x-z/y", &["10.0.0.2"])]);
        let p = index.patch(&s2, &settings(), None).unwrap();
        assert!(!p.recycled);
        let (t2, p2) = (p.table, p.problems);
        assert_eq!((t2.clone(), p2), full(&s2));
        let ips: Vec<String> = t2.names[shared].a.iter().map(|i| i.to_string()).collect();
        assert_eq!(ips, ["10.0.0.2", "10.0.0.3"]);
        let s3 = apps(&[("/x-z/y", &["10.0.0.2"])]);
        let t3 = index.patch(&s3, &settings(), None).unwrap().table;
        assert_eq!(t3, full(&s3).0);
        assert_eq!(t3.names[shared].a.len(), 1);
        // The masters' names stay through every patch.
        assert!(t3.names.contains_key("leader.mesos."));
        let s4 = apps(&[]);
        let t4 = index.patch(&s4, &settings(), None).unwrap().table;
        assert_eq!(t4, full(&s4).0);
        assert!(t4.names.keys().all(|n| !n.contains("marathon")));
    }

    /// The engine hands back the table it published before the current one. A table from
    /// the index's base or any state before it is brought up to date (its load balancers'
    /// names gone); one derived with other settings is not used, and every name is copied.
    #[test]
    fn a_recycled_table_is_brought_up_to_date() {
        let states = [
            apps(&[("/a", &["10.0.0.1"]), ("/b", &["10.0.0.2"])]),
            apps(&[("/a", &["10.0.0.1", "10.0.0.3"]), ("/b", &["10.0.0.2"])]),
            apps(&[("/b", &["10.0.0.4"]), ("/c", &["10.0.0.5"])]),
            apps(&[("/a", &["10.0.0.6"]), ("/c", &["10.0.0.5"])]),
            apps(&[("/a", &["10.0.0.6"]), ("/d", &["10.0.0.7"])]),
            apps(&[("/a", &["10.0.0.8"]), ("/d", &["10.0.0.7"])]),
        ];
        let lb = "lb.shop.example.";
        // A table as published: the patch's names and one load balancer's name.
        let published = |s: &Arc<State>, mut t: DnsTable| {
            let mut records = DnsRecords::default();
            records.a.push("192.0.2.1".parse().unwrap());
            t.names.insert(lb.to_string(), records);
            (Arc::clone(s), t)
        };
        // A name no state has, left in the offered table: a rewrite keeps it (it is not
        // stale), a copy does not. It tells which of the two ran.
        let marker = "marker.mesos.";
        let recycle = |(from, table): &(Arc<State>, DnsTable), settings: DnsSettings| {
            let mut table = table.clone();
            table
                .names
                .insert(marker.to_string(), DnsRecords::default());
            Recycled {
                table,
                from: Derivation {
                    state: Arc::clone(from),
                    settings,
                    lb_names: vec![lb.to_string()],
                },
            }
        };
        let mut index = DnsIndex::build(states[0].clone(), &settings()).unwrap();
        let mut tables = vec![published(&states[0], full(&states[0]).0)];
        for (k, s) in states.iter().enumerate().skip(1) {
            // From the base, two, one and four states before this one; the last step's
            // was derived with another domain.
            let (from, settings_then) = match k {
                1 | 2 | 4 => (0, settings()),
                3 => (1, settings()),
                _ => (
                    4,
                    DnsSettings {
                        domain: "other".into(),
                        ..settings()
                    },
                ),
            };
            let offered = recycle(&tables[from], settings_then);
            let patched = index.patch(s, &settings(), Some(offered)).unwrap();
            let (mut t, p) = (patched.table, patched.problems);
            let rewritten = t.names.remove(marker).is_some();
            assert_eq!(rewritten, k != 5, "step {k}");
            assert_eq!(patched.recycled, rewritten, "step {k}");
            assert_eq!((t.clone(), p), full(s), "step {k}");
            assert!(!t.names.contains_key(lb));
            tables.push(published(s, t));
        }
        // A removed app's names are gone from the rewritten table.
        assert!(tables[2]
            .1
            .names
            .keys()
            .all(|n| !n.starts_with("a.marathon")));
        assert!(tables[3].1.names.contains_key("a.marathon.mesos."));
    }

    /// A large zone is copied in two halves: every name once, in order, with its records.
    #[test]
    fn the_two_thread_copy_is_the_whole_map() {
        let names: BTreeMap<String, Entry> = (0..PARALLEL_COPY_FROM as u32 + 7)
            .map(|i| {
                let mut e = Entry::default();
                e.records.a.push(std::net::Ipv4Addr::from(i));
                (format!("n{i}.mesos."), e)
            })
            .collect();
        let copied = copy_records(&names);
        let expected: BTreeMap<String, DnsRecords> = names
            .iter()
            .map(|(n, e)| (n.clone(), e.records.clone()))
            .collect();
        assert_eq!(copied.len(), names.len());
        assert_eq!(copied, expected);
    }

    #[test]
    fn other_settings_or_too_many_changes_are_declined_and_change_nothing() {
        let many: Vec<(String, Vec<String>)> = (0..200)
            .map(|i| {
                (
                    format!("/app{i}"),
                    vec![format!("10.1.{}.{}", i / 200, i % 200)],
                )
            })
            .collect();
        let spec = |v: &[(String, Vec<String>)]| -> Arc<State> {
            let owned: Vec<(&str, Vec<&str>)> = v
                .iter()
                .map(|(id, ips)| (id.as_str(), ips.iter().map(String::as_str).collect()))
                .collect();
            let refs: Vec<(&str, &[&str])> = owned
                .iter()
                .map(|(id, ips)| (*id, ips.as_slice()))
                .collect();
            apps(&refs)
        };
        let s1 = spec(&many);
        let mut index = DnsIndex::build(s1.clone(), &settings()).unwrap();
        let other = DnsSettings {
            ttl: 5,
            ..settings()
        };
        assert!(index.patch(&s1, &other, None).is_none());
        // 100 of 200 apps changed: more than 64 and an eighth.
        let changed: Vec<(String, Vec<String>)> = many
            .iter()
            .enumerate()
            .map(|(i, (id, ips))| {
                let ip = if i % 2 == 0 {
                    "10.2.0.1".to_string()
                } else {
                    ips[0].clone()
                };
                (id.clone(), vec![ip])
            })
            .collect();
        assert!(index.patch(&spec(&changed), &settings(), None).is_none());
        assert!(Arc::ptr_eq(index.base(), &s1));
        // 10 changed: patched.
        let few: Vec<(String, Vec<String>)> = many
            .iter()
            .enumerate()
            .map(|(i, (id, ips))| {
                let ip = if i < 10 {
                    "10.3.0.1".to_string()
                } else {
                    ips[0].clone()
                };
                (id.clone(), vec![ip])
            })
            .collect();
        let s2 = spec(&few);
        let t = index.patch(&s2, &settings(), None).unwrap().table;
        assert_eq!(t, full(&s2).0);
    }
}
