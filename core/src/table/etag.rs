//! The ETag of a body that is mostly its last version: hashed from where they first differ.
//!
//! An ETag is the SHA-256 of the whole canonical body ([`super::etag_of`]): 74 ms for the
//! 131 MB dns table at 100k tasks. A new version after a task change is the last one but
//! for a few entries, and SHA-256 reads its input front to back, so the hash state after
//! any prefix both versions share is the same. [`EtagTrail`] keeps the state after every
//! [`STEP`] bytes of a body; the next body is hashed from the last state before its first
//! difference (on average half the body for a change at a random name).

use sha2::{Digest, Sha256};

/// Bytes between two kept hash states: 1 MiB (a multiple of SHA-256's 64-byte block, so a
/// kept state has no partial block buffered), 125 states of ~100 bytes for 131 MB.
pub const STEP: usize = 1 << 20;

/// The SHA-256 states after each whole [`STEP`] of a body: `states[i]` has hashed
/// `body[..(i + 1) * STEP]`.
#[derive(Debug, Clone, Default)]
pub struct EtagTrail {
    states: Vec<Sha256>,
}

/// A trail is a cache derived from its body: whatever holds one ([`super::incremental::Encoded`])
/// is equal to another by its body, not by what it kept of hashing it.
impl PartialEq for EtagTrail {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// `body`'s ETag (as [`super::etag_of`]) and trail, hashing only from the last kept state
/// of `last` (the previous body and its trail) before the two bodies first differ.
pub fn etag_after(body: &[u8], last: Option<(&[u8], &EtagTrail)>) -> (String, EtagTrail) {
    let reuse = last.map_or(0, |(old, trail)| {
        (common_prefix(body, old) / STEP).min(trail.states.len())
    });
    let mut states: Vec<Sha256> = last
        .map(|(_, trail)| trail.states[..reuse].to_vec())
        .unwrap_or_default();
    let mut hasher = states.last().cloned().unwrap_or_default();
    for chunk in body[reuse * STEP..].chunks(STEP) {
        hasher.update(chunk);
        if chunk.len() == STEP {
            states.push(hasher.clone());
        }
    }
    let digest = hasher.finalize();
    (hex::encode(&digest[..16]), EtagTrail { states })
}

/// How many leading bytes `a` and `b` share, compared a page at a time (memcmp speed).
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    const PAGE: usize = 4096;
    let n = a.len().min(b.len());
    let mut at = 0;
    while at + PAGE <= n && a[at..at + PAGE] == b[at..at + PAGE] {
        at += PAGE;
    }
    at + a[at..n]
        .iter()
        .zip(&b[at..n])
        .take_while(|(x, y)| x == y)
        .count()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::table::etag_of;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn common_prefix_counts_shared_bytes() {
        let a = vec![7u8; 3 * 4096 + 10];
        let mut b = a.clone();
        assert_eq!(common_prefix(&a, &b), a.len());
        b[4096 + 3] = 0;
        assert_eq!(common_prefix(&a, &b), 4096 + 3);
        assert_eq!(common_prefix(&a, &a[..100]), 100);
        assert_eq!(common_prefix(&[], &a), 0);
    }

    /// A chain of versions, each the last with a few bytes changed, inserted or cut
    /// anywhere (the front, a step boundary, the end): every ETag is the whole body's.
    #[test]
    fn each_version_has_the_etag_of_its_whole_body() {
        let mut rng = StdRng::seed_from_u64(17);
        let mut body: Vec<u8> = (0..3 * STEP + 12_345).map(|_| rng.random()).collect();
        let (etag, mut trail) = etag_after(&body, None);
        assert_eq!(etag, etag_of(&body));
        assert_eq!(trail.states.len(), 3);
        for round in 0..40 {
            let mut next = body.clone();
            let at = match round % 5 {
                0 => 0,
                1 => STEP,
                2 => next.len() - 1,
                _ => rng.random_range(0..next.len()),
            };
            match round % 3 {
                0 => next[at] ^= 0x5a,
                1 => {
                    let n = rng.random_range(1..3 * STEP / 2);
                    let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                    next.splice(at..at, bytes);
                }
                _ => {
                    let end = (at + rng.random_range(1..STEP)).min(next.len());
                    next.drain(at..end);
                }
            }
            let (etag, t) = etag_after(&next, Some((&body, &trail)));
            assert_eq!(etag, etag_of(&next), "round {round}");
            assert_eq!(t.states.len(), next.len() / STEP);
            body = next;
            trail = t;
        }
        // The same body again: every state is reused, the ETag unchanged.
        let (etag, _) = etag_after(&body, Some((&body, &trail)));
        assert_eq!(etag, etag_of(&body));
        assert_eq!(
            etag_after(b"{}", None).0,
            "44136fa355b3678a1146ad16f7e8649e"
        );
    }
}
