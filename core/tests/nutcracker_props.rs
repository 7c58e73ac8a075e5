//! Bounded property tests of the nutcracker.yml reader (a file an operator or a migration
//! script wrote): any text, and any mutation of a valid file, is read or refused with an
//! error, never a panic; a file that reads has a listen address and servers of non-zero
//! weight with unique names, in twemproxy's order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ocean_core::placement::nutcracker::parse;
use proptest::prelude::*;

const CASES: u32 = 256;

const VALID: &str = "pool:
  listen: 127.0.0.1:22121
  hash: fnv1a_64
  distribution: ketama
  hash_tag: \"{}\"
  redis: true
  timeout: 400
  servers:
   - 127.0.0.1:6379:1
   - 127.0.0.1:6380:2 named
";

fn check(text: &str) {
    if let Ok(p) = parse(text, None) {
        assert!(!p.servers.is_empty());
        assert!(p.servers.iter().all(|s| s.weight > 0));
        let key = |n: &str| (n.len(), n.as_bytes().to_vec());
        assert!(p
            .servers
            .windows(2)
            .all(|w| key(&w[0].name) < key(&w[1].name)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn any_text_is_read_or_refused(text in "\\PC{0,300}") {
        check(&text);
    }

    #[test]
    fn a_mutated_valid_file_is_read_or_refused(
        at in 0usize..VALID.len(),
        cut in 0usize..40,
        // No letters: a mangled host name would be looked up in DNS.
        insert in "[ :\\-{}\\[\\]\"'#\n0-9]{0,12}",
    ) {
        let mut text = VALID.to_string();
        let end = (at + cut).min(text.len());
        if text.is_char_boundary(at) && text.is_char_boundary(end) {
            text.replace_range(at..end, &insert);
        }
        check(&text);
    }
}
