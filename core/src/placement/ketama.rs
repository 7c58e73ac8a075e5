//! The ketama ring, byte-compatible with twemproxy (`distribution: ketama`).
//!
//! What twemproxy does, and this module copies exactly:
//! - A server's *name* is the address string as configured plus `:port`, or the bare
//!   host when the port is 11211 (libmemcached compatibility); an explicit name after the
//!   weight (`host:port:weight name`) replaces it. The weight is never part of the name.
//! - Each server gets `floor(weight / total * 40 * n) * 4` points (computed in `f32`, as
//!   twemproxy does), from md5 digests of `"{name}-{i}"`, four points per digest
//!   (little-endian 32-bit words).
//! - A key hashes with twemproxy's `fnv1a_64`, which is really a 32-bit FNV-1a with the
//!   64-bit constants truncated and each key byte *sign-extended* (C `char` is signed on
//!   x86_64), or with `md5` (first little-endian word of the digest).
//! - Lookup: the first point whose value is `>=` the key hash, wrapping to the first.
//!
//! Not copied: twemproxy formats `"{name}-{i}"` into an 86-byte buffer and hashes the
//! length `snprintf` *would* have written, so a name of about 83 bytes or more makes it hash past its
//! buffer (undefined behaviour, no stable placement to match). Keep names short.

use std::net::SocketAddr;

use md5::{Digest, Md5};

/// The port that twemproxy (after libmemcached) leaves out of a server's hashed name.
pub const DEFAULT_KETAMA_PORT: u16 = 11211;

const POINTS_PER_SERVER: f32 = 160.0;
const POINTS_PER_HASH: u32 = 4;

/// The key hash of a pool (twemproxy's `hash:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyHash {
    /// twemproxy's `fnv1a_64` (its default): see [`fnv1a_64`].
    #[default]
    Fnv1a64,
    /// twemproxy's `md5`: see [`md5_hash`].
    Md5,
    /// twemproxy's `murmur`: see [`murmur`].
    Murmur,
    /// twemproxy's `crc32` (libmemcached's: 15 bits of the CRC): see [`crc32`].
    Crc32,
    /// twemproxy's `crc32a` (the whole CRC-32): see [`crc32a`].
    Crc32a,
    /// mcrouter's `ch3` (its default): no ring, [`super::furc::ch3`] picks the server by
    /// its position in the list; weights must all be 1.
    Ch3,
}

impl KeyHash {
    /// Hashes a key as twemproxy does for this hash type.
    pub fn hash(self, key: &[u8]) -> u32 {
        match self {
            KeyHash::Fnv1a64 => fnv1a_64(key),
            KeyHash::Md5 => md5_hash(key),
            KeyHash::Murmur => murmur(key),
            KeyHash::Crc32 => crc32(key),
            KeyHash::Crc32a => crc32a(key),
            // ch3 places with furc_hash, not on a ring; this is only its key hash's low
            // 32 bits (what furc starts its bit stream from).
            KeyHash::Ch3 => super::furc::key_hash(key) as u32,
        }
    }
}

/// twemproxy's `hash_fnv1a_64`: FNV-1a over 32 bits with the 64-bit offset basis and prime
/// truncated to 32 bits, each byte sign-extended as a C `char` on x86_64 (so bytes >= 0x80
/// XOR in `0xFFFFFF80 | b`, not `b`). Matches Debian's amd64 `nutcracker`.
pub fn fnv1a_64(key: &[u8]) -> u32 {
    // Truncations of 0xcbf29ce484222325 and 0x100000001b3, as twemproxy casts them.
    let mut hash: u32 = 0x8422_2325;
    for &b in key {
        // `(uint32_t)(char)b`: sign extension.
        hash ^= i32::from(b as i8) as u32;
        hash = hash.wrapping_mul(0x0000_01b3);
    }
    hash
}

/// twemproxy's `hash_md5`: the first four bytes of the md5 digest, little-endian.
pub fn md5_hash(key: &[u8]) -> u32 {
    let digest = Md5::digest(key);
    word(&digest, 0)
}

/// twemproxy's `hash_murmur`: MurmurHash2 (32-bit) with the seed `0xdeadbeef * len`,
/// 4-byte words little-endian.
pub fn murmur(key: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let len = key.len() as u32;
    let mut h = 0xdead_beef_u32.wrapping_mul(len) ^ len;
    let mut words = key.chunks_exact(4);
    for w in &mut words {
        let mut k = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate() {
            h ^= u32::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The CRC-32 table (reflected, polynomial 0xEDB88320), built at compile time.
const CRC32_TABLE: [u32; 256] = crc32_table();

const fn crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

fn crc32_raw(key: &[u8]) -> u32 {
    !key.iter().fold(u32::MAX, |crc, &b| {
        (crc >> 8) ^ CRC32_TABLE[((crc ^ u32::from(b)) & 0xff) as usize]
    })
}

/// twemproxy's `hash_crc32` (libmemcached's): bits 16..31 of the CRC-32, masked to 15 bits.
pub fn crc32(key: &[u8]) -> u32 {
    (crc32_raw(key) >> 16) & 0x7fff
}

/// twemproxy's `hash_crc32a`: the CRC-32 (IEEE) of the key.
pub fn crc32a(key: &[u8]) -> u32 {
    crc32_raw(key)
}

fn word(digest: &[u8], i: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = digest.get(i * 4..i * 4 + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

/// The name twemproxy hashes for a server configured as `host:port:weight` (no explicit
/// name): `host` as written when `port` is 11211, `host:port` otherwise.
pub fn server_name_for(host: &str, port: u16) -> String {
    if port == DEFAULT_KETAMA_PORT {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    }
}

/// twemproxy's order of a pool's servers: by hashed name, shorter names first (its
/// `string_compare`). It sorts the pool so at start, and modula indexes servers in it.
pub fn twemproxy_name_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    (a.len(), a.as_bytes()).cmp(&(b.len(), b.as_bytes()))
}

/// [`server_name_for`] for an IP address, written as one would in twemproxy's config
/// (`127.0.0.1`, or an IPv6 address without brackets, as twemproxy splits on the last `:`).
/// A pool configured by host name must use [`server_name_for`] with that name instead:
/// twemproxy hashes the string as written, never the resolved address.
pub fn server_name(addr: SocketAddr) -> String {
    server_name_for(&addr.ip().to_string(), addr.port())
}

/// How a key's hash picks a server (twemproxy's `distribution:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Distribution {
    /// The ketama continuum.
    #[default]
    Ketama,
    /// `hash % n` over a list holding each server `weight` times.
    Modula,
}

#[derive(Debug, Clone, Copy)]
struct Point {
    value: u32,
    server: usize,
}

/// A ketama continuum over a list of servers, built once and read-only afterwards.
#[derive(Debug, Clone)]
pub struct Ring {
    points: Vec<Point>,
    /// Modula distribution: each server's index, `weight` times, in order; empty for
    /// ketama.
    modula: Vec<usize>,
    hash: KeyHash,
    servers: usize,
}

impl Ring {
    /// Builds the ring for `servers` as `(name, weight)` in configuration order (the order
    /// matters only for ties between equal point values, as in twemproxy's `qsort`, which
    /// is not stable: such ties are astronomically rare). Servers with weight 0 get no
    /// points (twemproxy refuses weight 0 in its config).
    pub fn new(servers: &[(String, u32)], hash: KeyHash) -> Ring {
        let total: u64 = servers.iter().map(|(_, w)| u64::from(*w)).sum();
        let n = servers.len();
        let mut points = Vec::new();
        if total > 0 && hash != KeyHash::Ch3 {
            for (index, (name, weight)) in servers.iter().enumerate() {
                let pct = *weight as f32 / total as f32;
                // twemproxy: floorf((float)(pct * 160 / 4 * (float)n + 0.0000000001)) * 4,
                // the float products in f32 and the addition in double.
                let v = pct * POINTS_PER_SERVER / 4.0 * n as f32;
                let v = (f64::from(v) + 0.000_000_000_1) as f32;
                let per_server = (v.floor() as u32).saturating_mul(POINTS_PER_HASH);
                for i in 0..per_server / POINTS_PER_HASH {
                    let digest = Md5::digest(format!("{name}-{i}").as_bytes());
                    for x in 0..POINTS_PER_HASH as usize {
                        points.push(Point {
                            value: word(&digest, x),
                            server: index,
                        });
                    }
                }
            }
        }
        points.sort_by_key(|p| p.value);
        Ring {
            points,
            modula: Vec::new(),
            hash,
            servers: n,
        }
    }

    /// Builds the placement for `servers` with `distribution` (see [`Ring::new`] for
    /// ketama).
    pub fn with_distribution(
        servers: &[(String, u32)],
        hash: KeyHash,
        distribution: Distribution,
    ) -> Ring {
        match distribution {
            Distribution::Ketama => Ring::new(servers, hash),
            Distribution::Modula => Ring {
                points: Vec::new(),
                modula: servers
                    .iter()
                    .enumerate()
                    .flat_map(|(i, (_, w))| std::iter::repeat_n(i, *w as usize))
                    .collect(),
                hash,
                servers: servers.len(),
            },
        }
    }

    /// twemproxy's `server_pool_idx` after the hash tag: one server, or an empty key,
    /// hash to 0 without hashing (so an empty key is placed by hash 0).
    pub fn server_for_twemproxy(&self, key: &[u8]) -> usize {
        if self.servers <= 1 {
            return 0;
        }
        let hash = if key.is_empty() {
            0
        } else {
            self.hash.hash(key)
        };
        self.dispatch(hash)
    }

    fn dispatch(&self, hash: u32) -> usize {
        if self.modula.is_empty() {
            self.server_for_hash(hash)
        } else {
            self.modula[hash as usize % self.modula.len()]
        }
    }

    /// The index (into the `servers` given to [`Ring::new`]) of the server for `key`.
    /// Returns 0 for a ring without points (no servers, or all of weight 0).
    pub fn server_for(&self, key: &[u8]) -> usize {
        match self.hash {
            KeyHash::Ch3 => super::furc::ch3(key, self.servers),
            hash => self.dispatch(hash.hash(key)),
        }
    }

    /// The server for an already computed key hash (twemproxy's `ketama_dispatch`).
    pub fn server_for_hash(&self, hash: u32) -> usize {
        let i = self.points.partition_point(|p| p.value < hash);
        self.points
            .get(i)
            .or_else(|| self.points.first())
            .map_or(0, |p| p.server)
    }

    /// The number of points on the continuum.
    pub fn points(&self) -> usize {
        self.points.len()
    }

    /// The number of servers the ring was built from.
    pub fn servers(&self) -> usize {
        self.servers
    }

    /// The key hash this ring uses.
    pub fn key_hash(&self) -> KeyHash {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_64_vectors() {
        // Empty key: the truncated offset basis.
        assert_eq!(fnv1a_64(b""), 0x8422_2325);
        // One byte: (basis ^ 'a') * 0x1b3 mod 2^32.
        let one = (0x8422_2325u32 ^ 0x61).wrapping_mul(0x1b3);
        assert_eq!(fnv1a_64(b"a"), one);
        // A high byte is sign-extended.
        let high = (0x8422_2325u32 ^ 0xFFFF_FF80).wrapping_mul(0x1b3);
        assert_eq!(fnv1a_64(&[0x80]), high);
        assert_ne!(
            fnv1a_64(&[0x80]),
            (0x8422_2325u32 ^ 0x80).wrapping_mul(0x1b3)
        );
    }

    #[test]
    fn murmur_and_crc32_vectors() {
        // CRC-32 (IEEE) check value.
        assert_eq!(crc32a(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"123456789"), (0xCBF4_3926u32 >> 16) & 0x7fff);
        assert_eq!(crc32a(b""), 0);
        // MurmurHash2 with seed 0xdeadbeef * len, by hand for "a": h = seed ^ 1 = 0xdeadbeee.
        let mut h: u32 = 0xdead_beee ^ 0x61;
        h = h.wrapping_mul(0x5bd1_e995);
        h ^= h >> 13;
        h = h.wrapping_mul(0x5bd1_e995);
        h ^= h >> 15;
        assert_eq!(murmur(b"a"), h);
        assert_ne!(murmur(b"abcd"), murmur(b"abce"));
    }

    #[test]
    fn modula_follows_weights() {
        let servers = vec![("a".to_owned(), 1), ("b".to_owned(), 2)];
        let ring = Ring::with_distribution(&servers, KeyHash::Crc32a, Distribution::Modula);
        assert_eq!(ring.dispatch(0), 0);
        assert_eq!(ring.dispatch(1), 1);
        assert_eq!(ring.dispatch(2), 1);
        assert_eq!(ring.dispatch(3), 0);
        assert_eq!(ring.server_for_twemproxy(b""), 0);
    }

    #[test]
    fn md5_vectors() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(md5_hash(b""), 0xd98c_1dd4);
        // md5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(md5_hash(b"a"), 0xb975_c10c);
    }

    #[test]
    fn naming_rule() {
        assert_eq!(server_name_for("127.0.0.1", 11211), "127.0.0.1");
        assert_eq!(server_name_for("127.0.0.1", 11212), "127.0.0.1:11212");
        assert_eq!(server_name_for("cache-1.example", 11211), "cache-1.example");
        let a: SocketAddr = "10.0.0.5:11211".parse().unwrap();
        assert_eq!(server_name(a), "10.0.0.5");
        let b: SocketAddr = "10.0.0.5:22122".parse().unwrap();
        assert_eq!(server_name(b), "10.0.0.5:22122");
        let c: SocketAddr = "[::1]:11300".parse().unwrap();
        assert_eq!(server_name(c), "::1:11300");
    }

    #[test]
    fn points_follow_weights() {
        let equal: Vec<(String, u32)> = (0..4).map(|i| (format!("s{i}"), 1)).collect();
        let ring = Ring::new(&equal, KeyHash::Fnv1a64);
        assert_eq!(ring.points(), 4 * 160);
        assert_eq!(ring.servers(), 4);
        let weighted = vec![
            ("a".to_owned(), 1),
            ("b".to_owned(), 2),
            ("c".to_owned(), 3),
        ];
        let ring = Ring::new(&weighted, KeyHash::Md5);
        // a: floor(1/6*40*3)=20 -> 80; b: 40 -> 160; c: 60 -> 240.
        let mut count = [0usize; 3];
        for p in &ring.points {
            count[p.server] += 1;
        }
        assert_eq!(count, [80, 160, 240]);
    }

    #[test]
    fn lookup_wraps_and_is_deterministic() {
        let servers = vec![("x:1".to_owned(), 1), ("y:2".to_owned(), 1)];
        let ring = Ring::new(&servers, KeyHash::Md5);
        let last = ring.points.last().unwrap();
        let first = ring.points.first().unwrap();
        assert_eq!(ring.server_for_hash(u32::MAX), first.server);
        assert_eq!(ring.server_for_hash(last.value), last.server);
        assert_eq!(ring.server_for_hash(0), first.server);
        let empty = Ring::new(&[], KeyHash::Md5);
        assert_eq!(empty.server_for(b"k"), 0);
    }

    #[test]
    fn adding_a_server_moves_about_its_share() {
        let three: Vec<(String, u32)> = (0..3).map(|i| (format!("10.0.0.{i}:11211"), 1)).collect();
        let mut four = three.clone();
        four.push(("10.0.0.9:11211".to_owned(), 1));
        let r3 = Ring::new(&three, KeyHash::Fnv1a64);
        let r4 = Ring::new(&four, KeyHash::Fnv1a64);
        let n = 20_000;
        let mut moved = 0;
        for i in 0..n {
            let k = format!("key:{i}");
            let (a, b) = (r3.server_for(k.as_bytes()), r4.server_for(k.as_bytes()));
            if a != b {
                assert_eq!(b, 3, "a key moved between old servers");
                moved += 1;
            }
        }
        let frac = moved as f64 / n as f64;
        assert!((0.15..0.35).contains(&frac), "moved {frac}");
    }
}
