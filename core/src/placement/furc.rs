//! mcrouter's `ch3` placement (its default hash): `furc_hash(key, n)` picks one of `n`
//! servers, by position in the pool's server list (names and weights play no part).
//!
//! The algorithm, as mcrouter's `lib/fbi/hash.c` defines it: a bit stream from the key's
//! MurmurHash64A (seed 4193360111), each further 64 bits the MurmurHash64A of the previous
//! word; a binary decision tree walks down from the top bit of `n`'s width, then reads
//! `d - 1` bits spaced 23 apart as a candidate, retrying (up to 32 times) while it is not
//! below `n`. Adding a server only moves keys onto the new server.
//!
//! mcrouter hashes the *routing key*: the key up to its first `|#|` (the hash stop), so
//! `user:1|#|a` and `user:1|#|b` land together. Routing prefixes (`/region/cluster/`) are
//! not supported by this router and are hashed as part of the key.

/// MurmurHash64A's seed that mcrouter chose for furc.
const SEED: u64 = 4_193_360_111;
/// Tries for an in-range candidate before answering 0.
const MAX_TRIES: u32 = 32;
/// Bit gap between candidate bits; mcrouter's limit of 2^23 servers.
const FURC_SHIFT: u32 = 23;
/// Largest pool mcrouter's furc places into.
pub const MAX_POOL_SIZE: u32 = 1 << FURC_SHIFT;
/// The hash stop: only what comes before it is hashed.
const HASH_STOP: &[u8] = b"|#|";

const M: u64 = 0xc6a4_a793_5bd1_e995;
const R: u32 = 47;

/// MurmurHash2's 64-bit variant (MurmurHash64A) on a little-endian machine, as mcrouter
/// builds it on x86_64.
pub fn murmur_hash_64a(key: &[u8], seed: u64) -> u64 {
    let mut h = seed ^ (key.len() as u64).wrapping_mul(M);
    let mut chunks = key.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let mut k = u64::from_le_bytes(word);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate() {
            h ^= u64::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// MurmurHash64A of one 64-bit word with furc's seed: the next 64 bits of the stream.
fn rehash(word: u64) -> u64 {
    murmur_hash_64a(&word.to_le_bytes(), SEED)
}

/// Words of the bit stream kept on the stack: one try for a pool of up to 2^10 servers
/// reads at most 10 + 23 * 9 bits (4 words); more are needed only after several tries.
const INLINE_WORDS: usize = 8;

/// The key's bit stream, 64 bits per word, computed as far as it is read. The first
/// [`INLINE_WORDS`] live on the stack, so a lookup allocates nothing in the common case
/// (the Vec it used before was one allocation per ch3 lookup).
struct Bits<'a> {
    key: &'a [u8],
    inline: [u64; INLINE_WORDS],
    /// Words past the inline ones (a `Vec::new()` allocates nothing until pushed to).
    spill: Vec<u64>,
    len: usize,
}

impl<'a> Bits<'a> {
    fn new(key: &'a [u8]) -> Bits<'a> {
        Bits {
            key,
            inline: [0; INLINE_WORDS],
            spill: Vec::new(),
            len: 0,
        }
    }

    fn word(&self, ord: usize) -> u64 {
        match self.inline.get(ord) {
            Some(w) => *w,
            None => self.spill[ord - INLINE_WORDS],
        }
    }

    fn get(&mut self, idx: u32) -> bool {
        let ord = (idx >> 6) as usize;
        while self.len <= ord {
            let next = match self.len {
                0 => murmur_hash_64a(self.key, SEED),
                n => rehash(self.word(n - 1)),
            };
            match self.inline.get_mut(self.len) {
                Some(slot) => *slot = next,
                None => self.spill.push(next),
            }
            self.len += 1;
        }
        (self.word(ord) >> (idx & 0x3f)) & 1 == 1
    }
}

/// mcrouter's `furc_hash(key, len, m)`: the index in `0..m` of the server for `key`
/// (0 for `m <= 1`).
pub fn furc_hash(key: &[u8], m: u32) -> u32 {
    if m <= 1 {
        return 0;
    }
    let mut bits = Bits::new(key);
    furc_over(m, |idx| bits.get(idx))
}

/// furc's walk over a key's bit stream (`bit(idx)`), for `m >= 2` servers.
fn furc_over(m: u32, mut bit: impl FnMut(u32) -> bool) -> u32 {
    // d: the number of bits of the smallest power of two >= m.
    let mut d = 0u32;
    while d < 32 && u64::from(m) > (1u64 << d) {
        d += 1;
    }
    let mut a = d;
    for _ in 0..MAX_TRIES {
        while !bit(a) {
            d -= 1;
            if d == 0 {
                return 0;
            }
            a = d;
        }
        a += FURC_SHIFT;
        let mut num: u32 = 1;
        for _ in 0..d - 1 {
            num = (num << 1) | u32::from(bit(a));
            a += FURC_SHIFT;
        }
        if num < m {
            return num;
        }
    }
    0
}

/// The part of `key` mcrouter hashes: up to the first `|#|`.
pub fn routing_key(key: &[u8]) -> &[u8] {
    key.windows(HASH_STOP.len())
        .position(|w| w == HASH_STOP)
        .map_or(key, |at| &key[..at])
}

/// The first 64 bits of the key's stream: MurmurHash64A of its routing key.
pub fn key_hash(key: &[u8]) -> u64 {
    murmur_hash_64a(routing_key(key), SEED)
}

/// mcrouter's `Ch3HashFunc`: the server (of `n`) for `key`.
pub fn ch3(key: &[u8], n: usize) -> usize {
    let m = u32::try_from(n).unwrap_or(MAX_POOL_SIZE).min(MAX_POOL_SIZE);
    furc_hash(routing_key(key), m) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mcrouter's golden values (`lib/fbi/test/hash_test.cpp`, `kGoldenValues`): key,
    /// pool size, expected server. Those for pools larger than mcrouter's 2^23 limit are
    /// left out: this router never places into such a pool.
    const GOLDEN: &[(&str, u32, u32)] = &[
        ("key0", 1, 0),
        ("key0", 2, 0),
        ("key0", 3, 0),
        ("key0", 5, 4),
        ("key0", 7, 5),
        ("key0", 10, 7),
        ("key0", 16, 14),
        ("key0", 50, 22),
        ("key0", 100, 22),
        ("key0", 500, 413),
        ("key0", 1000, 950),
        ("key0", 5000, 3375),
        ("key0", 10000, 3375),
        ("key0", 100000, 59045),
        ("key0", 1000000, 500854),
        ("key0", 8388608, 4701525),
        ("key1", 3, 2),
        ("key1", 1000, 808),
        ("key1", 100000, 24368),
        ("key1", 1000000, 768680),
        ("key1", 8388608, 7205857),
        ("key2", 5, 4),
        ("key2", 16, 14),
        ("key2", 50, 40),
        ("key2", 500, 279),
        ("key2", 1000, 794),
        ("key2", 5000, 3741),
        ("key2", 100000, 99468),
        ("key2", 8388608, 8033017),
        ("key3", 2, 1),
        ("key3", 7, 5),
        ("key3", 100, 73),
        ("key3", 500, 214),
        ("key3", 5000, 1118),
        ("key3", 100000, 98344),
        ("key3", 1000000, 567453),
        ("key4", 3, 2),
        ("key4", 10, 8),
        ("key4", 16, 10),
        ("key4", 50, 47),
        ("key4", 500, 101),
        ("key4", 1000, 878),
        ("key4", 100000, 19896),
        ("key4", 1000000, 187582),
        ("someKey_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 5, 4),
        ("someKey_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 10, 8),
        ("someKey_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 50, 18),
        ("someKey_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 1000, 964),
        ("someKey_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 5000, 1334),
        ("someKey_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 10000, 5716),
        (
            "someKey_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
            100000,
            54971,
        ),
        (
            "someKey_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
            1000000,
            580644,
        ),
        ("short", 2, 1),
        ("short", 3, 2),
        ("short", 7, 6),
        ("short", 16, 12),
        ("short", 500, 172),
        ("short", 1000, 569),
        ("short", 5000, 4565),
        ("short", 100000, 94116),
        ("short", 1000000, 826962),
        ("short", 8388608, 6473107),
        ("a", 2, 1),
        ("a", 5, 4),
        ("a", 16, 13),
        ("a", 50, 34),
        ("a", 1000, 900),
        ("a", 5000, 1565),
        ("a", 100000, 55594),
        ("a", 1000000, 570739),
        ("a", 8388608, 7695180),
        ("ab", 3, 2),
        ("ab", 50, 35),
        ("ab", 500, 429),
        ("ab", 5000, 4150),
        ("ab", 10000, 9404),
        ("ab", 100000, 13199),
        ("ab", 1000000, 103282),
        ("abc", 5, 0),
        ("abc", 7, 5),
        ("abc", 16, 15),
        ("abc", 50, 47),
        ("abc", 100, 69),
        ("abc", 500, 371),
        ("abc", 1000, 985),
        ("abc", 5000, 3019),
        ("abc", 100000, 44962),
        ("abc", 1000000, 391441),
        ("mcrouter:pool:regional:0001", 3, 2),
        ("mcrouter:pool:regional:0001", 5, 3),
        ("mcrouter:pool:regional:0001", 16, 13),
        ("mcrouter:pool:regional:0001", 50, 27),
        ("mcrouter:pool:regional:0001", 100, 52),
        ("mcrouter:pool:regional:0001", 500, 493),
        ("mcrouter:pool:regional:0001", 1000, 829),
        ("mcrouter:pool:regional:0001", 5000, 4143),
        ("mcrouter:pool:regional:0001", 10000, 7488),
        ("mcrouter:pool:regional:0001", 100000, 36359),
        ("mcrouter:pool:regional:0001", 1000000, 669957),
        ("mcrouter:pool:regional:0001", 8388608, 6119431),
        ("mcrouter:pool:regional:0002", 2, 1),
        ("mcrouter:pool:regional:0002", 5, 4),
        ("mcrouter:pool:regional:0002", 7, 5),
        ("mcrouter:pool:regional:0002", 16, 13),
        ("mcrouter:pool:regional:0002", 500, 405),
        ("mcrouter:pool:regional:0002", 1000, 788),
        ("mcrouter:pool:regional:0002", 10000, 6708),
        ("mcrouter:pool:regional:0002", 100000, 65904),
        ("mcrouter:pool:regional:0002", 1000000, 589635),
        ("user:12345:profile", 2, 1),
        ("user:12345:profile", 5, 4),
        ("user:12345:profile", 16, 10),
        ("user:12345:profile", 50, 29),
        ("user:12345:profile", 100, 77),
        ("user:12345:profile", 1000, 712),
        ("user:12345:profile", 5000, 4344),
        ("user:12345:profile", 10000, 5119),
        ("user:12345:profile", 100000, 96279),
        ("user:12345:profile", 1000000, 368844),
        ("user:67890:timeline", 5, 0),
        ("user:67890:timeline", 7, 5),
        ("user:67890:timeline", 10, 7),
        ("user:67890:timeline", 16, 15),
        ("user:67890:timeline", 100, 73),
        ("user:67890:timeline", 500, 104),
        ("user:67890:timeline", 1000, 748),
        ("user:67890:timeline", 5000, 3756),
        ("user:67890:timeline", 10000, 6138),
        ("user:67890:timeline", 100000, 86163),
        ("cache:item:999999", 2, 1),
        ("cache:item:999999", 3, 2),
        ("cache:item:999999", 50, 17),
        ("cache:item:999999", 500, 184),
        ("cache:item:999999", 1000, 673),
        ("cache:item:999999", 5000, 3278),
        ("cache:item:999999", 10000, 5532),
        ("cache:item:999999", 100000, 72068),
        ("cache:item:999999", 1000000, 180793),
        ("", 2, 1),
        ("", 7, 6),
        ("", 10, 8),
        ("", 16, 12),
        ("", 100, 72),
        ("", 5000, 3031),
        ("", 100000, 86003),
        ("", 1000000, 407687),
    ];

    #[test]
    fn furc_hash_gives_mcrouters_golden_values() {
        let wrong: Vec<_> = GOLDEN
            .iter()
            .filter_map(|&(key, m, want)| {
                let got = furc_hash(key.as_bytes(), m);
                (got != want).then_some((key, m, want, got))
            })
            .collect();
        assert!(wrong.is_empty(), "(key, m, mcrouter, ours): {wrong:?}");
    }

    #[test]
    fn growing_a_pool_only_moves_keys_onto_the_new_servers() {
        for i in 0..2000 {
            let key = format!("k{i}");
            let mut prev = 0;
            for m in 1..=64 {
                let s = furc_hash(key.as_bytes(), m);
                assert!(s < m);
                assert!(s == prev || s == m - 1, "{key}: {prev} -> {s} at {m}");
                prev = s;
            }
        }
    }

    /// The stream as it was kept before (every word in a Vec): the inline words and the
    /// spill must read the same bits, also for pools large enough to need many tries.
    fn furc_with_vec(key: &[u8], m: u32) -> u32 {
        let mut words: Vec<u64> = Vec::new();
        furc_over(m, |idx| {
            let ord = (idx >> 6) as usize;
            while words.len() <= ord {
                let next = words
                    .last()
                    .map_or_else(|| murmur_hash_64a(key, SEED), |&w| rehash(w));
                words.push(next);
            }
            (words[ord] >> (idx & 0x3f)) & 1 == 1
        })
    }

    #[test]
    fn inline_words_and_spill_read_the_same_stream() {
        for m in [2, 3, 7, 100, 1000, 1025, 65_537, 1 << 20, MAX_POOL_SIZE - 1] {
            for i in 0..500 {
                let key = format!("key:{i}:{m}");
                assert_eq!(
                    furc_hash(key.as_bytes(), m),
                    furc_with_vec(key.as_bytes(), m),
                    "{key} m={m}"
                );
            }
        }
    }

    #[test]
    fn only_the_routing_key_is_hashed() {
        assert_eq!(routing_key(b"user:1|#|a"), b"user:1");
        assert_eq!(routing_key(b"plain"), b"plain");
        assert_eq!(ch3(b"user:1|#|a", 10), ch3(b"user:1|#|zzz", 10));
        assert_eq!(ch3(b"key0", 10), 7);
        assert_eq!(ch3(b"anything", 1), 0);
    }
}
