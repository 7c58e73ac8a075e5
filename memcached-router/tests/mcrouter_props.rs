//! Bounded property tests of the mcrouter config reader: any text, and any mutation of a
//! valid config, is read or refused with an error, never a panic; a config that reads
//! has replica sets with servers, all of weight 1 (ch3 has no weights).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ocean_memcached_router::mcrouter::parse;
use proptest::prelude::*;

const CASES: u32 = 256;

const VALID: &str = r#"// comment
{
  "pools": {
    "cold": {"servers": ["127.0.0.1:5001", "127.0.0.1:5002:ascii:plain"]},
    "warm": {"servers": ["127.0.0.1:5003"]}
  },
  /* the route */
  "route": {"type": "WarmUpRoute", "cold": "PoolRoute|cold", "warm": {"type": "HashRoute", "children": "Pool|warm", "hash_func": "Ch3"}, "exptime": 60}
}"#;

fn check(text: &str) {
    if let Ok(r) = parse(text) {
        assert!(!r.pool.replica_sets.is_empty());
        for set in &r.pool.replica_sets {
            assert!(!set.servers.is_empty());
            assert!(set.servers.iter().all(|s| s.weight == 1));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn any_text_is_read_or_refused(text in "\\PC{0,300}") {
        check(&text);
    }

    #[test]
    fn a_mutated_valid_config_is_read_or_refused(
        at in 0usize..VALID.len(),
        cut in 0usize..40,
        // No letters: a mangled host name would be looked up in DNS.
        insert in "[ :|{}\\[\\]\",/*0-9]{0,12}",
    ) {
        let mut text = VALID.to_string();
        let end = (at + cut).min(text.len());
        if text.is_char_boundary(at) && text.is_char_boundary(end) {
            text.replace_range(at..end, &insert);
        }
        check(&text);
    }
}
