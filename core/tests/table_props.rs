//! Bounded property tests of the table bodies proxies receive (issue 18; the fuzz target is
//! `table_json` in fuzz/): `from_json` never panics, and a table it accepts re-serializes
//! canonically and parses back equal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ocean_core::table::{
    canonical_json, DnsTable, LvsTable, MemcachedTable, MysqlTable, RedisTable, Table,
};
use proptest::prelude::*;
use serde_json::Value;

/// Real bodies, one per kind (the ones `direct_serialization_is_canonical` uses).
const SEEDS: &[&str] = &[
    r#"{"domain":"mesos","ttl":60,"soa":{"mname":"ns1.mesos.","rname":"root.ns1.mesos.","refresh_s":60,"retry_s":600,"expire_s":86400},
        "names":{"a.mesos.":{"a":["10.0.0.1"],"aaaa":["::1"],"srv":[{"priority":0,"weight":1,"port":80,"target":"a.mesos."}]}}}"#,
    r#"{"clusters":[{"name":"c","listen_port":1,"nodes":["10.0.0.1:7000"]}]}"#,
    r#"{"pools":[{"name":"p","listen_port":1,"hash":"md5","replicas":[{"name":"a","servers":[{"addr":"10.0.0.1:11211","weight":2}]}]}]}"#,
    r#"{"databases":[{"name":"/a/b/c","schema":"c","rw":{"user":"u","password":"p"},"ro":{"user":"r","password":"q"},
        "primary":"10.0.0.1:3306","replicas":["10.0.0.2:3306"]}],
        "jobs":[{"name":"j","ips":["10.0.0.3"],"grants":[{"database":"/a/b/c","access":"ro"}],
        "password":{"sha1_sha1":"00","sha256_sha256":"11"}}]}"#,
    r#"{"services":[{"vip":"10.1.0.1","port":80,"protocol":"tcp","scheduler":"wrr","persistence_s":30,
        "reals":[{"ip":"10.0.0.1","port":80,"weight":1,"forward":"nat"}]}]}"#,
];

/// Values a mutation may put in place of a leaf: edges of every field type the tables use.
fn replacement(i: usize) -> Value {
    let long = "x".repeat(300);
    let pool: [Value; 26] = [
        0.into(),
        1.into(),
        65535.into(),
        65536.into(),
        (-1).into(),
        u32::MAX.into(),
        u64::MAX.into(),
        1.5.into(),
        "".into(),
        "a b".into(),
        "\u{0}".into(),
        long.into(),
        "10.0.0.1".into(),
        "::1".into(),
        "10.0.0.1:0".into(),
        "[::ffff:10.0.0.1]:11211".into(),
        "rr".into(),
        "mesos.".into(),
        "a..b.".into(),
        "ro".into(),
        "md5".into(),
        "nat".into(),
        Value::Null,
        true.into(),
        Value::Array(vec![]),
        Value::Object(Default::default()),
    ];
    pool[i % pool.len()].clone()
}

/// Applies one mutation at the `pick`-th node (pre-order) of `v`: replace it, duplicate an
/// array element, or drop an object field.
fn mutate(v: &mut Value, pick: &mut usize, op: u8, with: usize) -> bool {
    if *pick == 0 {
        match (op % 3, &mut *v) {
            (1, Value::Array(a)) if !a.is_empty() => {
                let first = a[0].clone();
                a.push(first);
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

fn round_trip<T: Table>(body: &[u8]) {
    let Ok(t) = T::from_json(body) else {
        return;
    };
    let canonical = t.canonical_body().unwrap();
    assert_eq!(canonical, canonical_json(&t).unwrap(), "{}", T::KIND);
    let back = T::from_json(&canonical).unwrap_or_else(|e| {
        panic!(
            "{}: canonical body refused ({e}): {}",
            T::KIND,
            String::from_utf8_lossy(&canonical)
        )
    });
    assert_eq!(back, t, "{}", T::KIND);
    let _ = t.backend_count();
}

fn every_kind(body: &[u8]) {
    round_trip::<DnsTable>(body);
    round_trip::<RedisTable>(body);
    round_trip::<MemcachedTable>(body);
    round_trip::<MysqlTable>(body);
    round_trip::<LvsTable>(body);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Seeds with up to four mutations each: every validate branch is reached, nothing
    /// panics, and what is accepted round-trips.
    #[test]
    fn mutated_tables_round_trip_or_are_refused(
        seed in 0..SEEDS.len(),
        edits in proptest::collection::vec((0usize..64, any::<u8>(), any::<usize>()), 0..4),
    ) {
        let mut v: Value = serde_json::from_str(SEEDS[seed]).unwrap();
        for (at, op, with) in edits {
            let mut pick = at;
            mutate(&mut v, &mut pick, op, with);
        }
        every_kind(&serde_json::to_vec(&v).unwrap());
    }

    /// Arbitrary bytes, and seeds cut short: errors, never panics.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        seed in 0..SEEDS.len(),
        cut in any::<usize>(),
    ) {
        every_kind(&bytes);
        let s = SEEDS[seed].as_bytes();
        every_kind(&s[..cut % (s.len() + 1)]);
    }
}

#[test]
fn seeds_are_valid_tables() {
    DnsTable::from_json(SEEDS[0].as_bytes()).unwrap();
    RedisTable::from_json(SEEDS[1].as_bytes()).unwrap();
    MemcachedTable::from_json(SEEDS[2].as_bytes()).unwrap();
    MysqlTable::from_json(SEEDS[3].as_bytes()).unwrap();
    LvsTable::from_json(SEEDS[4].as_bytes()).unwrap();
}
