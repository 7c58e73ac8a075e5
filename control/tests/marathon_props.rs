//! Bounded property tests of what control reads from Marathon (issue 18; the fuzz targets
//! are `marathon_apps` and `marathon_sse` in fuzz/): apps JSON of every shape goes through
//! parse -> normalize -> derive without a panic and every derived table validates; the
//! event-stream parser reads back the events written to it, however the stream is cut.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use ocean_control::config::{FileConfig, Source};
use ocean_control::derive::{derive_all, DeriveConfig};
use ocean_control::marathon::events::{SseError, SseEvent, SseParser};
use ocean_control::marathon::model::parse_apps;
use ocean_control::state::{normalize, HealthMemory, Resolved};
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn any_apps_derive_valid_tables(apps in proptest::collection::vec(app(), 0..6)) {
        let body = serde_json::to_vec(&json!({ "apps": apps })).unwrap();
        let (apps, _bad) = parse_apps(&body).unwrap();
        let mut memory = HealthMemory::default();
        let state = normalize(&apps, &Resolved::new(), &mut memory);
        let d = derive_all(&state, &derive_config());
        d.dns.validate().unwrap();
        d.redis.validate().unwrap();
        d.memcached.validate().unwrap();
        d.mysql.validate().unwrap();
        d.lvs.validate().unwrap();
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok((apps, _)) = parse_apps(&body) {
            normalize(&apps, &Resolved::new(), &mut HealthMemory::default());
        }
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
