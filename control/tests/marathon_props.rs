//! Bounded property tests of what control reads from Marathon (issue 18; the fuzz targets
//! are `marathon_apps` and `marathon_sse` in fuzz/): apps JSON of every shape goes through
//! parse -> normalize -> derive without a panic and every derived table validates; the
//! event-stream parser reads back the events written to it, however the stream is cut.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use ocean_control::config::{FileConfig, Source};
use std::sync::Arc;

use ocean_control::derive::dns_index::{Derivation, DnsIndex, Recycled};
use ocean_control::derive::{derive_all, derive_all_patched, DeriveConfig};
use ocean_control::marathon::events::{SseError, SseEvent, SseParser};
use ocean_control::marathon::model;
use ocean_control::marathon::model::{parse_apps, parse_apps_from};
use ocean_control::state::{normalize, normalize_patched, HealthMemory, Resolved, State};
use ocean_control::Config;
use ocean_core::table::Table;
use proptest::prelude::*;
use serde_json::{json, Value};

fn derive_config() -> DeriveConfig {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut config = Config::new(Source::File("unused".into()));
    let file = FileConfig::load(&examples.join("control.toml")).unwrap();
    file.apply(&examples, &mut config).unwrap();
    config.derive
}

/// Picks from a list, so values are mostly ones derive acts on, sometimes edge cases.
fn one_of(values: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(values).prop_map(str::to_string)
}

const LABELS: &[&str] = &[
    "OCEAN_REDIS_CLUSTER",
    "OCEAN_MEMCACHED_POOL",
    "OCEAN_MEMCACHED_REPLICA",
    "OCEAN_MYSQL_DB",
    "OCEAN_MYSQL_ROLE",
    "OCEAN_MYSQL_GRANTS",
    "OCEAN_JOBNAME",
    "OCEAN_PORT",
    "OCEAN_ELB",
    "OCEAN_ELB_SCHEDULER",
    "OCEAN_ELB_FORWARD",
    "HAPROXY_GROUP",
];
const LABEL_VALUES: &[&str] = &[
    "sessions",
    "feeds",
    "pages",
    "a",
    "b",
    "/miui/browser/key",
    "/shop/orders/main",
    "primary",
    "replica",
    "leader",
    "/miui/browser/key:ro",
    "/shop/orders/main:rw,/miui/browser/key:ro",
    "browser-web",
    "6391",
    "99999",
    "0",
    "10.10.0.1:80/tcp",
    "10.10.0.1:443/tcp,10.10.0.2:53/udp",
    "[2001:db8::1]:443/tcp",
    "not-an-ip:80/tcp",
    "rr",
    "wrr",
    "nope",
    "dr",
    "nat",
    "",
    "a b",
    "\u{0}",
];
const IDS: &[&str] = &[
    "/web",
    "/infra/cache/redis-sessions",
    "/infra/cache/memcached-pages-a",
    "/miui/browser/key/mysql",
    "/a/b.c/d_e",
    "/UPPER/Case",
    "/",
    "//double",
    "noslash",
    "/dots..here",
    "/-leading",
    // Two ids, one dns name (`y-x-z.marathon.mesos.`): the dns index must merge them.
    "/z/x/y",
    "/x-z/y",
];
const HOSTS: &[&str] = &[
    "10.0.1.1",
    "10.0.1.2",
    "::1",
    "2001:db8::5",
    "",
    "agent-1.example",
];
const IPS: &[&str] = &["172.17.0.2", "9.0.0.5", "2001:db8::9", "fe80::1", "bogus"];
const STATES: &[&str] = &["TASK_RUNNING", "TASK_STAGING", "TASK_KILLING", "TASK_LOST"];
const NETWORK_MODES: &[&str] = &["host", "container", "container/bridge"];
const PROTOCOLS: &[&str] = &["tcp", "udp", "tcp,udp", "TCP", "", "sctp"];

fn port() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u32..70_000).prop_map(Value::from),
        Just(Value::Null),
        Just(json!(31000)),
    ]
}

fn task() -> impl Strategy<Value = Value> {
    (
        "[a-z]{1,6}\\.[0-9]{1,3}",
        one_of(HOSTS),
        proptest::collection::vec(port(), 0..3),
        proptest::option::of(one_of(STATES)),
        proptest::option::of(proptest::collection::vec(one_of(IPS), 0..3)),
        proptest::option::of(proptest::collection::vec(any::<bool>(), 0..3)),
    )
        .prop_map(|(id, host, ports, state, ips, health)| {
            let mut t = json!({ "id": id, "host": host, "ports": ports, "slaveId": "S1" });
            if let Some(s) = state {
                t["state"] = s.into();
            } else {
                t["startedAt"] = "2017-10-01T12:00:00.000Z".into();
            }
            if let Some(ips) = ips {
                t["ipAddresses"] = ips
                    .iter()
                    .map(|ip| json!({"ipAddress": ip, "protocol": "IPv4"}))
                    .collect();
            }
            if let Some(h) = health {
                t["healthCheckResults"] = h.iter().map(|a| json!({ "alive": a })).collect();
            }
            t
        })
}

fn app() -> impl Strategy<Value = Value> {
    (
        one_of(IDS),
        proptest::collection::btree_map(one_of(LABELS), one_of(LABEL_VALUES), 0..5),
        0..4u8,
        proptest::collection::vec((port(), one_of(PROTOCOLS), "[a-z]{0,4}"), 0..3),
        proptest::option::of(one_of(NETWORK_MODES)),
        any::<bool>(),
        proptest::collection::vec(task(), 0..4),
    )
        .prop_map(|(id, labels, shape, ports, mode, checks, tasks)| {
            let mut a = json!({ "id": id, "labels": labels, "tasks": tasks });
            let defs: Vec<Value> = ports
                .iter()
                .map(|(p, proto, name)| json!({"port": p, "servicePort": p, "containerPort": 80, "hostPort": 0, "protocol": proto, "name": name, "number": p}))
                .collect();
            match shape {
                0 => a["portDefinitions"] = defs.into(),
                1 => a["container"] = json!({ "type": "DOCKER", "portMappings": defs }),
                2 => {
                    a["container"] =
                        json!({ "docker": { "network": "USER", "portMappings": defs } })
                }
                _ => a["ipAddress"] = json!({ "discovery": { "ports": defs } }),
            }
            if let Some(m) = mode {
                a["networks"] = json!([{ "mode": m }]);
            }
            if checks {
                a["healthChecks"] = json!([{ "protocol": "HTTP" }]);
            }
            a
        })
}

/// The apps of `examples/marathon-apps.json`: every label kind, with owners in
/// `examples/control.toml`, so mutations of them reach every derive rule.
fn example_apps() -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/marathon-apps.json");
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["apps"].as_array().unwrap().clone()
}

/// What a mutation puts in place of a node: Marathon-ish values and type confusions.
fn replacement(i: usize) -> Value {
    let strings = [
        LABEL_VALUES,
        HOSTS,
        IPS,
        STATES,
        NETWORK_MODES,
        PROTOCOLS,
        IDS,
    ]
    .concat();
    let others = [
        json!(0),
        json!(1),
        json!(65536),
        json!(-1),
        json!(u64::MAX),
        Value::Null,
        json!(true),
        json!([]),
        json!({}),
    ];
    match i % 4 {
        0 => others[(i / 4) % others.len()].clone(),
        _ => strings[i % strings.len()].into(),
    }
}

/// Replaces, duplicates (array element) or drops (object field) the `pick`-th node.
fn mutate(v: &mut Value, pick: &mut usize, op: u8, with: usize) -> bool {
    if *pick == 0 {
        match (op % 3, &mut *v) {
            (1, Value::Array(a)) if !a.is_empty() => {
                let e = a[with % a.len()].clone();
                a.push(e);
            }
            (2, Value::Object(m)) if !m.is_empty() => {
                let k = m.keys().nth(with % m.len()).cloned().unwrap();
                m.remove(&k);
            }
            _ => *v = replacement(with),
        }
        return true;
    }
    *pick -= 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|c| mutate(c, pick, op, with)),
        Value::Object(m) => m.values_mut().any(|c| mutate(c, pick, op, with)),
        _ => false,
    }
}

/// The apps body of the example's apps picked by `pick`, with `edits` applied anywhere.
fn mutated_examples(pick: &[usize], edits: Vec<(usize, u8, usize)>) -> Vec<u8> {
    let all = example_apps();
    let mut apps = Value::Array(pick.iter().map(|i| all[i % all.len()].clone()).collect());
    for (at, op, with) in edits {
        let mut at = at % 400;
        mutate(&mut apps, &mut at, op, with);
    }
    serde_json::to_vec(&json!({ "apps": apps })).unwrap()
}

/// Parse, normalize, derive; every table must validate. A body that is not an apps
/// envelope (a mutation replaced the array) derives nothing.
fn derive_checked(body: &[u8]) -> [usize; 5] {
    let Ok((apps, _bad)) = parse_apps(body) else {
        return [0; 5];
    };
    let mut memory = HealthMemory::default();
    let state = normalize(&apps, &Resolved::new(), &mut memory);
    let d = derive_all(&state, &derive_config());
    d.dns.validate().unwrap();
    d.redis.validate().unwrap();
    d.memcached.validate().unwrap();
    d.mysql.validate().unwrap();
    d.lvs.validate().unwrap();
    [
        d.dns.backend_count(),
        d.redis.backend_count(),
        d.memcached.backend_count(),
        d.mysql.backend_count(),
        d.lvs.backend_count(),
    ]
}

/// The normalized state of `apps`, one app per id (Marathon's ids are unique; the
/// generator's are not).
fn unique_state(apps: &[Value]) -> Arc<State> {
    let body = serde_json::to_vec(&json!({ "apps": apps })).unwrap();
    let mut state = match parse_apps(&body) {
        Ok((apps, _)) => normalize(&apps, &Resolved::new(), &mut HealthMemory::default()),
        Err(_) => State::default(),
    };
    state.apps.dedup_by(|a, b| a.id == b.id);
    Arc::new(state)
}

/// The unmutated example derives something for every kind, so the mutations below start
/// from tables that exist.
#[test]
fn the_example_derives_every_kind() {
    let body = serde_json::to_vec(&json!({ "apps": example_apps() })).unwrap();
    assert!(derive_checked(&body).iter().all(|&n| n > 0));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn any_apps_derive_valid_tables(apps in proptest::collection::vec(app(), 0..6)) {
        derive_checked(&serde_json::to_vec(&json!({ "apps": apps })).unwrap());
    }

    /// The example's apps, up to eight of them, with up to six mutations anywhere
    /// (labels, ports, tasks, health, networks): derived tables still validate.
    #[test]
    fn mutated_example_apps_derive_valid_tables(
        pick in proptest::collection::vec(any::<usize>(), 1..8),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<usize>()), 0..6),
    ) {
        derive_checked(&mutated_examples(&pick, edits));
    }

    /// Issue 17: after apps are added, removed or changed, the dns index patches the names
    /// the full derive would make, with the same problems, and every other table is the
    /// full derive's; and so back again.
    #[test]
    fn the_dns_index_patches_what_the_full_derive_makes(
        before in proptest::collection::vec(app(), 0..8),
        added in proptest::collection::vec(app(), 0..4),
        keep in proptest::collection::vec(any::<bool>(), 8),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<usize>()), 0..4),
    ) {
        let mut after: Vec<Value> = before
            .iter()
            .zip(keep.iter().chain(std::iter::repeat(&true)))
            .filter(|(_, k)| **k)
            .map(|(a, _)| a.clone())
            .chain(added)
            .collect();
        for (at, op, with) in edits {
            let mut arr = Value::Array(after.clone());
            let mut at = at % 200;
            mutate(&mut arr, &mut at, op, with);
            if let Value::Array(a) = arr {
                after = a;
            }
        }
        let config = derive_config();
        let (s1, s2) = (unique_state(&before), unique_state(&after));
        let mut index = DnsIndex::build(Arc::clone(&s1), &config.dns).unwrap();
        let mut last = derive_all(&s1, &config);
        // Each table as published, with its state and load balancers' names: the patch
        // rewrites the one before the current one, as the engine offers it (the first
        // patch, the index's base table).
        let mut published = vec![(Arc::clone(&s1), last.dns.clone(), last.dns_lb_names.clone())];
        for s in [&s2, &s1, &s1, &s2] {
            let (from, table, added) = published[published.len().saturating_sub(2)].clone();
            let recycled = Recycled {
                table,
                from: Derivation {
                    state: from,
                    settings: config.dns.clone(),
                    lb_names: added,
                },
            };
            let patched = derive_all_patched(s, &config, &mut index, Some(recycled)).unwrap();
            published.push((Arc::clone(s), patched.dns.clone(), patched.dns_lb_names.clone()));
            let full = derive_all(s, &config);
            prop_assert_eq!(&patched.dns, &full.dns);
            prop_assert_eq!(&patched.problems, &full.problems);
            prop_assert_eq!(&patched.lvs, &full.lvs);
            prop_assert!(Arc::ptr_eq(index.base(), s));
            // The publish's hint: every name that differs from the last table is one the
            // patch touched or a load balancer's name of either table.
            let touched = patched.dns_touched.clone().unwrap();
            for name in full.dns.names.keys().chain(last.dns.names.keys()) {
                if full.dns.names.get(name) != last.dns.names.get(name) {
                    prop_assert!(
                        touched.contains(name) || last.dns_lb_names.contains(name),
                        "{} changed, not in the hint",
                        name
                    );
                }
            }
            last = full;
        }
    }

    /// Issue 17: a sync after events normalizes only the apps they named. With the rest of
    /// the list the last one's (as the engine patches it: the named apps' entries out,
    /// Marathon's answer for each in, none for a deleted one), that is the state and the
    /// health memory normalizing the whole list makes.
    #[test]
    fn normalizing_the_named_apps_makes_what_normalizing_all_makes(
        before in proptest::collection::vec(app(), 0..8),
        fresh in proptest::collection::vec(app(), 0..4),
        deleted in proptest::collection::vec(one_of(IDS), 0..3),
    ) {
        let parse = |apps: &[Value]| {
            parse_apps(&serde_json::to_vec(&json!({ "apps": apps })).unwrap())
                .map(|(a, _)| a)
                .unwrap_or_default()
        };
        let old = parse(&before);
        let fresh = parse(&fresh);
        let named: Vec<String> = fresh.iter().map(|a| a.id.clone()).chain(deleted).collect();
        let mut new: Vec<model::App> =
            old.iter().filter(|a| !named.contains(&a.id)).cloned().collect();
        new.extend(fresh.iter().cloned());

        let mut memory = HealthMemory::default();
        let last = normalize(&old, &Resolved::new(), &mut memory);
        let mut whole_memory = memory.clone();
        let whole = normalize(&new, &Resolved::new(), &mut whole_memory);
        let mut patched_memory = memory.clone();
        let patched = normalize_patched(&last, &new, &named, &Resolved::new(), &mut patched_memory);

        let unique = |ids: Vec<&str>| {
            let n = ids.len();
            ids.into_iter().collect::<std::collections::BTreeSet<_>>().len() == n
        };
        fn app_ids(apps: &[model::App]) -> Vec<&str> {
            apps.iter().map(|a| a.id.as_str()).collect()
        }
        if unique(app_ids(&old)) && unique(app_ids(&new)) {
            prop_assert!(patched.is_some(), "unique ids must be patched");
        }
        if let Some(p) = patched {
            prop_assert_eq!(&p, &whole);
            // Each task's last result is remembered by its id, which Marathon makes unique.
            let task_ids: Vec<&str> = old
                .iter()
                .chain(&fresh)
                .flat_map(|a| a.tasks.iter().flatten())
                .map(|t| t.id.as_str())
                .collect();
            if unique(task_ids) {
                prop_assert_eq!(&patched_memory, &whole_memory);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let whole = parse_apps(&body);
        // Marathon's list is parsed as it streams in: it takes and refuses the same bodies.
        let streamed = parse_apps_from(&body[..]);
        prop_assert_eq!(whole.is_ok(), streamed.is_ok());
        if let Ok((apps, _)) = whole {
            normalize(&apps, &Resolved::new(), &mut HealthMemory::default());
        }
    }

    /// The example's apps, mutated anywhere: streamed or whole, the same apps and bad apps.
    #[test]
    fn a_streamed_list_parses_as_the_whole_one(
        pick in proptest::collection::vec(any::<usize>(), 1..6),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<usize>()), 0..6),
    ) {
        let body = mutated_examples(&pick, edits);
        let whole = format!("{:?}", parse_apps(&body).map_err(|_| ()));
        let streamed = format!("{:?}", parse_apps_from(&body[..]).map_err(|_| ()));
        prop_assert_eq!(whole, streamed);
    }
}

/// An event as Marathon writes it: `event:` then one `data:` line per line of data.
fn write_event(out: &mut Vec<u8>, e: &SseEvent, crlf: bool) {
    let nl: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(e.event.as_bytes());
    out.extend_from_slice(nl);
    for line in e.data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(nl);
    }
    out.extend_from_slice(nl);
}

fn sse_event() -> impl Strategy<Value = SseEvent> {
    // Event names and data lines hold no CR or LF (the framing); data may span lines.
    ("[a-z_]{1,30}", "[^\r\n]{0,40}(\n[^\r\n]{0,40}){0,2}")
        .prop_map(|(event, data)| SseEvent { event, data })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn events_round_trip_however_the_stream_is_cut(
        events in proptest::collection::vec(sse_event(), 0..5),
        crlf in any::<bool>(),
        keepalives in any::<bool>(),
        step in 1..17usize,
    ) {
        let mut stream = Vec::new();
        for e in &events {
            if keepalives {
                stream.extend_from_slice(b": keepalive\n\n");
            }
            write_event(&mut stream, e, crlf);
        }
        let mut p = SseParser::new(4096);
        let mut got = Vec::new();
        for chunk in stream.chunks(step) {
            got.extend(p.feed(chunk).unwrap());
        }
        prop_assert_eq!(got, events);
    }

    #[test]
    fn limits_hold_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..512), max in 1..64usize) {
        match SseParser::new(max).feed(&data) {
            Ok(events) => {
                for e in events {
                    prop_assert!(e.data.len() <= max);
                }
            }
            Err(SseError::LineTooLong(m) | SseError::EventTooLarge(m)) => prop_assert_eq!(m, max),
        }
    }
}
