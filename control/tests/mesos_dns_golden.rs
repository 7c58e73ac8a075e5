//! Name compatibility with Mesos-DNS, from its own test vectors.
//!
//! Mesos-DNS (github.com/mesosphere/mesos-dns, Apache-2.0) tests its record generator on
//! `factories/fake.json`, a Mesos master state, in `records/generator_test.go`
//! (`TestInsertState`, `TestMasterRecord`, `TestHashString`), and its label function in
//! `records/labels/labels_test.go`. `fixtures/mesos_dns/fake_marathon.json` is the Marathon
//! framework of that state written as Marathon's `GET /v2/apps?embed=apps.tasks` answer
//! (the mapping is in `fixtures/mesos_dns/README.md`). Derived with RFC 952 labels and the
//! test's master, it must give the names, addresses, targets and ports Mesos-DNS gives.
//!
//! What Marathon JSON cannot express, and so is not checked here:
//! - frameworks other than `marathon` (`some-box.chronoswithaspaceandmixe.mesos.`, the
//!   `toy-store.ipv6-framework.mesos.` A/AAAA rows): control publishes Marathon's tasks only.
//!   (For a dual-stack task Mesos-DNS publishes its first IPv4 and first IPv6 address;
//!   control's normalized state keeps one address per task, the first of `ipAddresses`.)
//! - Mesos master state that Marathon does not report: `slave.mesos.` (every agent, also
//!   those without tasks), `_slave._tcp.mesos.`, the framework records `marathon.mesos.` and
//!   `_framework._tcp.marathon.mesos.`, and the SOA name's A record (a DNS server setting);
//! - a task without DiscoveryInfo (car.store, chronos, reviewbot, nginx in fake.json):
//!   Marathon always sets one, named like the task, with the host ports (host networking)
//!   or the container ports (IP per task). Mesos-DNS then points `_{name}._tcp.marathon.`
//!   at the canonical non-`.slave.` name instead of the `.slave.` one, with the same
//!   address and ports, and adds no `_udp` there for a tcp port; see
//!   [`rows_marathon_cannot_express_have_their_marathon_equivalent`];
//! - a Mesos task name that differs from its DiscoveryInfo name (`big.dog2` vs `big.dog`):
//!   Marathon names both after the app; only the DiscoveryInfo name makes names anyway;
//! - `IPSources` other than the default (`rgSlave`, `rgMesos`, `rgDocker`, `rgNetinfo`):
//!   control takes the task IP from Marathon's `ipAddresses` (Mesos' NetworkInfo) for
//!   IP-per-task apps and the agent otherwise, and has no such setting;
//! - the elected leader apart from the masters list: control's `leader.{domain}` is the
//!   first configured master, so only `TestMasterRecord` cases whose leader is (or can be
//!   listed as) the first master apply.
//!
//! Control's deliberate departures (tasks failing health checks are left out; Docker bridge
//! tasks answer the agent's address) do not arise: fake.json has neither.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use ocean_control::derive::dns::{derive, DnsSettings};
use ocean_control::derive::names::{label, slave_tail, task_hash, task_name};
use ocean_control::marathon::model::parse_apps;
use ocean_control::state::{normalize, HealthMemory, Resolved};
use ocean_core::table::dns::DnsTable;
use ocean_core::table::Table;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mesos_dns")
        .join(name)
}

fn settings(domain: &str, masters: &[&str]) -> DnsSettings {
    let mut s = DnsSettings {
        // TestInsertState builds its generators with labels.RFC952.
        enforce_rfc952: true,
        masters: masters.iter().map(|m| m.parse().unwrap()).collect(),
        ..Default::default()
    };
    s.set_domain(domain);
    s
}

/// The dns table derived from fake_marathon.json as testRecordGenerator sets it up:
/// domain `mesos`, leader `master@144.76.157.37:5050`, masters `["144.76.157.37:5050"]`.
fn fake_zone() -> DnsTable {
    let path = fixture("fake_marathon.json");
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (apps, bad) = parse_apps(&body).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let state = normalize(&apps, &Resolved::new(), &mut HealthMemory::default());
    let mut problems = Vec::new();
    let zone = derive(
        &state,
        &settings("mesos", &["144.76.157.37:5050"]),
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems:?}");
    zone.validate().unwrap();
    zone
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    A,
    Srv,
}

/// The values of one name and kind as Mesos-DNS's `rrs` holds them: a set of addresses, or
/// of `target:port` for SRV. (Every AAAA row of TestInsertState is about the ipv6-framework.)
fn rrs(zone: &DnsTable, name: &str, kind: Kind) -> BTreeSet<String> {
    let Some(r) = zone.names.get(name) else {
        return BTreeSet::new();
    };
    match kind {
        Kind::A => r.a.iter().map(ToString::to_string).collect(),
        Kind::Srv => r
            .srv
            .iter()
            .map(|s| format!("{}:{}", s.target, s.port))
            .collect(),
    }
}

/// Every record of the zone as `NAME TYPE VALUE` (the format of expected_records.txt).
fn lines(zone: &DnsTable) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (name, r) in &zone.names {
        out.extend(r.a.iter().map(|ip| format!("{name} A {ip}")));
        out.extend(r.aaaa.iter().map(|ip| format!("{name} AAAA {ip}")));
        out.extend(
            r.srv
                .iter()
                .map(|s| format!("{name} SRV {}:{}", s.target, s.port)),
        );
    }
    out
}

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(ToString::to_string).collect()
}

/// `TestInsertState`, generator `rg` (RFC 952, IPSources netinfo, docker, mesos, host): the
/// rows about the Marathon framework and the masters, verbatim. A row with no values means
/// the name must have no record of that kind.
#[test]
fn insert_state_rows_for_the_marathon_framework() {
    use Kind::{Srv, A};
    let zone = fake_zone();
    let rows: &[(Kind, &str, &[&str])] = &[
        (A, "big-dog.marathon.mesos.", &["10.3.0.1"]),
        (A, "liquor-store.marathon.mesos.", &["10.3.0.1", "10.3.0.2"]),
        (
            A,
            "liquor-store.marathon.slave.mesos.",
            &["1.2.3.11", "1.2.3.12"],
        ),
        (A, "car-store.marathon.slave.mesos.", &["1.2.3.11"]),
        (A, "nginx.marathon.mesos.", &["10.3.0.3"]),
        (A, "poseidon.marathon.mesos.", &[]),
        (A, "poseidon.marathon.slave.mesos.", &[]),
        (A, "master.mesos.", &["144.76.157.37"]),
        (A, "master0.mesos.", &["144.76.157.37"]),
        (A, "leader.mesos.", &["144.76.157.37"]),
        (
            Srv,
            "_big-dog._tcp.marathon.mesos.",
            &[
                "big-dog-4dfjd-0.marathon.mesos.:80",
                "big-dog-4dfjd-0.marathon.mesos.:443",
            ],
        ),
        (Srv, "_poseidon._tcp.marathon.mesos.", &[]),
        (Srv, "_leader._tcp.mesos.", &["leader.mesos.:5050"]),
        (
            Srv,
            "_liquor-store._tcp.marathon.mesos.",
            &[
                "liquor-store-4dfjd-0.marathon.mesos.:80",
                "liquor-store-4dfjd-0.marathon.mesos.:443",
                "liquor-store-zasmd-1.marathon.mesos.:80",
                "liquor-store-zasmd-1.marathon.mesos.:443",
            ],
        ),
        (Srv, "_liquor-store._udp.marathon.mesos.", &[]),
        (Srv, "_liquor-store.marathon.mesos.", &[]),
        (
            Srv,
            "_https._liquor-store._tcp.marathon.mesos.",
            &[
                "liquor-store-4dfjd-0.marathon.mesos.:443",
                "liquor-store-zasmd-1.marathon.mesos.:443",
            ],
        ),
        (
            Srv,
            "_http._liquor-store._tcp.marathon.mesos.",
            &[
                "liquor-store-4dfjd-0.marathon.mesos.:80",
                "liquor-store-zasmd-1.marathon.mesos.:80",
            ],
        ),
        // Not rows of `rg`, but the same for every IPSources: the rgSlave/rgMesos/rgDocker
        // `.slave.` rows.
        (
            A,
            "liquor-store.marathon.slave.mesos.",
            &["1.2.3.11", "1.2.3.12"],
        ),
        (A, "car-store.marathon.slave.mesos.", &["1.2.3.11"]),
    ];
    let mut failures = Vec::new();
    for (i, (kind, name, want)) in rows.iter().enumerate() {
        let got = rrs(&zone, name, *kind);
        if got != set(want) {
            failures.push(format!(
                "row {i}: {kind:?} {name}: got {got:?}, want {want:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Mesos-DNS's SRV records have priority 0 and SRVRecordDefaultWeight 1.
    for r in zone.names.values() {
        assert!(r.srv.iter().all(|s| s.priority == 0 && s.weight == 1));
    }
}

/// `_car-store._tcp.marathon.mesos.` and `_car-store._udp.marathon.mesos.` point at
/// `car-store-zinaz-0.marathon.slave.mesos.:31364/31365` in `TestInsertState` because
/// fake.json's car.store task has no DiscoveryInfo. From Marathon it has one (tcp host
/// ports), so Mesos-DNS itself would point the tcp name at the canonical name, which
/// resolves to the same agent, at the same ports; the `.slave.` names keep both protocols.
#[test]
fn rows_marathon_cannot_express_have_their_marathon_equivalent() {
    let zone = fake_zone();
    // Resolve each SRV target to (address, port): the endpoints a client ends up at.
    let endpoints = |name: &str| -> BTreeSet<(IpAddr, u16)> {
        zone.names[name]
            .srv
            .iter()
            .flat_map(|s| {
                zone.names[&s.target]
                    .a
                    .iter()
                    .map(move |ip| (IpAddr::V4(*ip), s.port))
            })
            .collect()
    };
    let mesos_dns: BTreeSet<(IpAddr, u16)> = [31364, 31365]
        .into_iter()
        .map(|p| ("1.2.3.11".parse().unwrap(), p))
        .collect();
    assert_eq!(
        rrs(&zone, "_car-store._tcp.marathon.mesos.", Kind::Srv),
        set(&[
            "car-store-zinaz-0.marathon.mesos.:31364",
            "car-store-zinaz-0.marathon.mesos.:31365",
        ])
    );
    assert_eq!(endpoints("_car-store._tcp.marathon.mesos."), mesos_dns);
    for proto in ["tcp", "udp"] {
        assert_eq!(
            rrs(
                &zone,
                &format!("_car-store._{proto}.marathon.slave.mesos."),
                Kind::Srv
            ),
            set(&[
                "car-store-zinaz-0.marathon.slave.mesos.:31364",
                "car-store-zinaz-0.marathon.slave.mesos.:31365",
            ]),
            "{proto}"
        );
        assert_eq!(
            endpoints(&format!("_car-store._{proto}.marathon.slave.mesos.")),
            mesos_dns
        );
    }
}

/// The whole zone, exactly: every record Mesos-DNS makes for fake.json's Marathon framework
/// and masters (expected_records.txt; rows marked `-`/`+` are the no-DiscoveryInfo cases).
#[test]
fn the_whole_zone_is_what_mesos_dns_gives() {
    let path = fixture("expected_records.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let (mut want, mut never) = (BTreeSet::new(), BTreeSet::new());
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(l) = line.strip_prefix("- ") {
            never.insert(l.to_string());
        } else {
            want.insert(line.trim_start_matches("+ ").to_string());
        }
    }
    assert!(want.len() > 100 && !never.is_empty(), "{}", path.display());
    let got = lines(&fake_zone());
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing: {missing:#?}\nextra: {extra:#?}"
    );
    assert!(got.is_disjoint(&never));
}

/// Killed tasks are not published, under any name form.
#[test]
fn killed_tasks_are_absent() {
    let zone = fake_zone();
    let leaked: Vec<_> = zone
        .names
        .keys()
        .filter(|n| {
            n.contains("poseidon")
                || n.contains(&task_hash("poseidon.bc4e3796-2d7a-11e4-b8df-d43d7edb01cd"))
        })
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
}

/// `TestMasterRecord` (domain foo.com). Control's leader is its first configured master, so
/// a case applies when its leader is the first master: verbatim where the case already
/// lists it so, or lists no masters (the leader alone); otherwise listed with the leader
/// moved to the front and the records masterRecord gives for that order.
#[test]
fn master_record_vectors() {
    struct Case {
        masters: &'static [&'static str],
        a: &'static [(&'static str, &'static [&'static str])],
        aaaa: &'static [(&'static str, &'static [&'static str])],
        leader_port: u16,
    }
    let cases = [
        // {"foo.com", nil, "5@0.0.0.6:7"} and "single master: leader and fallback".
        Case {
            masters: &["0.0.0.6:7"],
            a: &[
                ("leader.foo.com.", &["0.0.0.6"]),
                ("master.foo.com.", &["0.0.0.6"]),
                ("master0.foo.com.", &["0.0.0.6"]),
            ],
            aaaa: &[],
            leader_port: 7,
        },
        // {"foo.com", nil, "5@[2001:db8::1]:7"}.
        Case {
            masters: &["[2001:db8::1]:7"],
            a: &[],
            aaaa: &[
                ("leader.foo.com.", &["2001:db8::1"]),
                ("master.foo.com.", &["2001:db8::1"]),
                ("master0.foo.com.", &["2001:db8::1"]),
            ],
            leader_port: 7,
        },
        // "leader that's also listed in the fallback list (in the middle)", leader first.
        Case {
            masters: &["0.0.0.6:7", "0.0.0.8:9", "0.0.0.7:0"],
            a: &[
                ("leader.foo.com.", &["0.0.0.6"]),
                ("master.foo.com.", &["0.0.0.6", "0.0.0.7", "0.0.0.8"]),
                ("master0.foo.com.", &["0.0.0.6"]),
                ("master1.foo.com.", &["0.0.0.8"]),
                ("master2.foo.com.", &["0.0.0.7"]),
            ],
            aaaa: &[],
            leader_port: 7,
        },
        // "duplicate leading masters" and "duplicate fallback masters", leader first: a
        // master listed twice (or a second master on an address already listed) gets no
        // second masterN.
        Case {
            masters: &["0.0.0.6:7", "0.0.0.8:9", "0.0.0.8:9", "0.0.0.6:7"],
            a: &[
                ("leader.foo.com.", &["0.0.0.6"]),
                ("master.foo.com.", &["0.0.0.6", "0.0.0.8"]),
                ("master0.foo.com.", &["0.0.0.6"]),
                ("master1.foo.com.", &["0.0.0.8"]),
            ],
            aaaa: &[],
            leader_port: 7,
        },
        // The IPv6 fallback master case, leader first.
        Case {
            masters: &["0.0.0.6:7", "0.0.0.8:9", "[2001:db8::1]:0"],
            a: &[
                ("leader.foo.com.", &["0.0.0.6"]),
                ("master.foo.com.", &["0.0.0.6", "0.0.0.8"]),
                ("master0.foo.com.", &["0.0.0.6"]),
                ("master1.foo.com.", &["0.0.0.8"]),
            ],
            aaaa: &[
                ("master.foo.com.", &["2001:db8::1"]),
                ("master2.foo.com.", &["2001:db8::1"]),
            ],
            leader_port: 7,
        },
    ];
    let empty = ocean_control::state::State::default();
    for (i, case) in cases.iter().enumerate() {
        let zone = derive(&empty, &settings("foo.com", case.masters), &mut Vec::new());
        let mut want = BTreeSet::new();
        for (name, ips) in case.a {
            want.extend(ips.iter().map(|ip| format!("{name} A {ip}")));
        }
        for (name, ips) in case.aaaa {
            want.extend(ips.iter().map(|ip| format!("{name} AAAA {ip}")));
        }
        for proto in ["tcp", "udp"] {
            want.insert(format!(
                "_leader._{proto}.foo.com. SRV leader.foo.com.:{}",
                case.leader_port
            ));
        }
        assert_eq!(lines(&zone), want, "case {i}: {:?}", case.masters);
    }
    // {"foo.com", nil, ""} and the other unusable leaders: no records at all.
    let zone = derive(&empty, &settings("foo.com", &[]), &mut Vec::new());
    assert!(zone.names.is_empty(), "{:?}", zone.names);
}

/// labels_test.go: `testFunc` (both specs), `TestRFC952`, `TestRFC1123`, and the
/// benchmark inputs of labels_test.go and tables_test.go with their expected outputs.
#[test]
fn label_vectors() {
    let both = [
        ("", ""),
        ("a", "a"),
        ("-", ""),
        ("a---", "a"),
        ("---a---", "a"),
        ("---a---b", "a---b"),
        ("a.b.c.d.e", "a-b-c-d-e"),
        ("a.c.d_de.", "a-c-d-de"),
        ("abc123", "abc123"),
        ("-abc123", "abc123"),
        ("abc123-", "abc123"),
        ("abc-123", "abc-123"),
        ("abc--123", "abc--123"),
        ("r29f.dev.angrypigs", "r29f-dev-angrypigs"),
        // "hello" + 58 dashes + "f": cut at 24/63, trailing dashes dropped, "f" kept.
        (
            "hello----------------------------------------------------------f",
            "hellof",
        ),
    ];
    for (input, want) in both {
        assert_eq!(label(input, true), want, "RFC952({input:?})");
        assert_eq!(label(input, false), want, "RFC1123({input:?})");
    }
    let rfc952 = [
        ("4abc123", "abc123"),
        ("-4abc123", "abc123"),
        ("fd%gsf---gs7-f$gs--d7fddg-123", "fdgsf---gs7-fgs--d7fddg1"),
        ("89fdgsf---gs7-fgs--d7fddg-123", "fdgsf---gs7-fgs--d7fddg1"),
        (
            "89fdgsf---gs7-fgs--d7fddg---123",
            "fdgsf---gs7-fgs--d7fddg1",
        ),
        ("89fdgsf---gs7-fgs--d7fddg-", "fdgsf---gs7-fgs--d7fddg"),
        (
            "chronos with a space AND MIXED CASE-2.0.1",
            "chronoswithaspaceandmixe",
        ),
        (
            "chronos with a space AND----------MIXED--",
            "chronoswithaspaceandmixe",
        ),
        // "hello" + 56 dashes + "f".
        (
            "hello--------------------------------------------------------f",
            "hellof",
        ),
        ("89f.gsf---g_7-fgs--d7fddg-", "f-gsf---g-7-fgs--d7fddg"),
    ];
    for (input, want) in rfc952 {
        assert_eq!(label(input, true), want, "RFC952({input:?})");
    }
    let rfc1123 = [
        ("4abc123", "4abc123"),
        ("-4abc123", "4abc123"),
        (
            "89fdgsf---gs7-fgs--d7fddg-123",
            "89fdgsf---gs7-fgs--d7fddg-123",
        ),
        (
            "89fdgsf---gs7-fgs--d7fddg---123",
            "89fdgsf---gs7-fgs--d7fddg---123",
        ),
        ("89fdgsf---gs7-fgs--d7fddg-", "89fdgsf---gs7-fgs--d7fddg"),
        (
            "fd%gsf---gs7-f$gs--d7fddg-123",
            "fdgsf---gs7-fgs--d7fddg-123",
        ),
        (
            "fd%gsf---gs7-f$gs--d7fddg123456789012345678901234567890123456789-123",
            "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891",
        ),
        (
            "$$fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789-123",
            "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891",
        ),
        (
            "%%fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789---123",
            "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891",
        ),
        (
            "##fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789-",
            "fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789",
        ),
        // "hello" + 56 dashes + "f" fits in 63.
        (
            "hello--------------------------------------------------------f",
            "hello--------------------------------------------------------f",
        ),
    ];
    for (input, want) in rfc1123 {
        assert_eq!(label(input, false), want, "RFC1123({input:?})");
    }
    // The quick-check properties, on a few awkward inputs.
    for input in ["", "-9-9-", "ÄÖÜ--ß", "0123456789", "a\u{0}b", "__..--"] {
        for rfc952 in [true, false] {
            let l = label(input, rfc952);
            assert!(l.len() <= if rfc952 { 24 } else { 63 });
            assert!(l
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            assert!(!l.starts_with('-'), "{input:?}");
            if rfc952 {
                assert!(!l.starts_with(|c: char| c.is_ascii_digit()), "{input:?}");
            }
        }
    }
}

/// `TestHashString`, the task hashes and agent tails `TestInsertState` expects, and the
/// Marathon task names of the translated apps.
#[test]
fn hash_tail_and_task_name_vectors() {
    assert_eq!(task_hash("test"), "iffe9");
    assert_eq!(task_hash("test").len(), 5);
    for (id, hash) in [
        ("liquor-store.b8db9f73-562f-11e4-a088-c20493233aa5", "4dfjd"),
        ("liquor-store.b71166c1-562f-11e4-a088-c20493233aa5", "zasmd"),
        ("car-store.43758382-562f-11e4-a088-c20493233aa5", "zinaz"),
    ] {
        assert_eq!(task_hash(id), hash, "{id}");
    }
    assert_eq!(slave_tail("20140803-125133-3041283216-5050-2410-0"), "0");
    assert_eq!(slave_tail("20140827-000744-3041283216-5050-2116-1"), "1");
    for (app, name, mangled) in [
        ("/store/liquor", "liquor.store", "liquor-store"),
        ("/dog/big", "big.dog", "big-dog"),
        ("/store/car", "car.store", "car-store"),
        ("/nginx", "nginx", "nginx"),
    ] {
        assert_eq!(task_name(app), name);
        assert_eq!(label(name, true), mangled);
    }
}
