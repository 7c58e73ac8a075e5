//! Redis Cluster key slots: CRC16-XMODEM of the key (or of its `{hash tag}`) mod 16384.
//!
//! The rules follow the Redis Cluster specification (`keyHashSlot` in redis's cluster.c):
//! if the key contains a `{`, and a `}` after it, and at least one byte between them, only
//! the bytes between the first `{` and the first `}` after it are hashed; otherwise the
//! whole key is.

use ocean_core::placement::ketama::Ring;
use ocean_core::placement::nutcracker::tagged;

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// CRC16-XMODEM (polynomial 0x1021, init 0), the variant Redis Cluster uses, built at
/// compile time so the hot path is one table lookup per byte.
const CRC16_TABLE: [u16; 256] = build_table();

const fn build_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// CRC16-XMODEM of `data` (`crc16("123456789") == 0x31C3`).
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from(((crc >> 8) as u8) ^ b)]
    })
}

/// The part of `key` that is hashed: the hash tag when there is a non-empty one, else the
/// whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        let rest = &key[open + 1..];
        if let Some(close) = rest.iter().position(|&b| b == b'}') {
            if close > 0 {
                return &rest[..close];
            }
        }
    }
    key
}

/// The cluster slot (0..16384) that owns `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & (SLOTS - 1)
}

/// Where a cluster's keys go: Redis Cluster's slots, or a sharded pool of standalone
/// servers placed as twemproxy places them. For a sharded pool the "slot" of a key is its
/// server's index (plus the map's `base`), and the slot map sends that slot to that server,
/// so everything that routes by slot (batching, multi-key splits, transactions) works
/// unchanged.
///
/// A sharded pool's placement belongs to one slot map (a reload replaces both at once), so
/// it is borrowed from that map for as long as slots are computed: see
/// `Cluster::with_placement`.
#[derive(Debug, Clone, Copy, Default)]
pub enum Placement<'a> {
    /// CRC16 of the key (or its `{tag}`) mod 16384.
    #[default]
    Slots,
    /// twemproxy's hash, hash tag and distribution over the pool's servers; server `i` is
    /// slot `base + i`.
    Sharded {
        /// The pool's placement.
        shards: &'a Shards,
        /// The slot of server 0 in this map.
        base: u16,
    },
}

/// A sharded pool's placement: the servers' ring and the pool's `hash_tag`.
#[derive(Debug)]
pub struct Shards {
    /// Over the servers in configuration order.
    pub ring: Ring,
    /// twemproxy's `hash_tag` (two bytes), or none: the whole key is hashed.
    pub hash_tag: Option<[u8; 2]>,
}

impl Shards {
    /// The index (in configuration order) of the server twemproxy puts `key` on.
    pub fn server(&self, key: &[u8]) -> usize {
        self.ring.server_for_twemproxy(tagged(key, self.hash_tag))
    }
}

impl Placement<'_> {
    /// The slot (or, sharded, the server's slot) of `key`.
    pub fn slot(&self, key: &[u8]) -> u16 {
        match self {
            Placement::Slots => key_slot(key),
            Placement::Sharded { shards, base } => {
                let index = u16::try_from(shards.server(key)).unwrap_or(0);
                base.saturating_add(index) & (SLOTS - 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_spec_vector() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn known_slots() {
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"123456789"), 0x31C3 & 16383);
    }

    #[test]
    fn hash_tags() {
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // Empty tag: the whole key is hashed.
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"{}"), b"{}");
        assert_eq!(hash_tag(b"{"), b"{");
        assert_eq!(hash_tag(b"}{a"), b"}{a");
        assert_eq!(hash_tag(b"a}{b}"), b"b");
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }
}
