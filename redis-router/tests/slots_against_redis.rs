//! `key_slot` against a real redis-server in cluster mode: `CLUSTER KEYSLOT` for ~500 keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ocean_redis_router::slot::key_slot;
use ocean_tests::servers::RedisServer;

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }

    fn bytes(&mut self, len: usize, binary: bool) -> Vec<u8> {
        (0..len)
            .map(|_| {
                if binary {
                    self.next() as u8
                } else {
                    b"abcdefghijklmnopqrstuvwxyz0123456789:_-{}"[self.below(41)]
                }
            })
            .collect()
    }
}

#[tokio::test]
async fn key_slot_matches_cluster_keyslot() -> anyhow::Result<()> {
    let server = RedisServer::start_with(&["--cluster-enabled", "yes"]).await?;
    let mut client = server.client().await?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut keys: Vec<Vec<u8>> = [
        &b""[..],
        b"foo",
        b"123456789",
        b"{user1000}.following",
        b"{user1000}.followers",
        b"foo{}{bar}",
        b"foo{{bar}}zap",
        b"foo{bar}{zap}",
        b"{",
        b"}",
        b"{}",
        b"}{",
        b"{a",
        b"a}",
        b"\xff{\x00}\x01",
    ]
    .iter()
    .map(|k| k.to_vec())
    .collect();
    while keys.len() < 520 {
        let len = rng.below(24);
        let binary = rng.below(3) == 0;
        let mut key = rng.bytes(len, binary);
        match rng.below(4) {
            0 => {
                // Insert a hash tag somewhere, sometimes empty.
                let tag_len = rng.below(6);
                let tag = rng.bytes(tag_len, binary);
                let at = rng.below(key.len() as u64 + 1);
                let tagged = [b"{".as_slice(), &tag, b"}"].concat();
                key.splice(at..at, tagged);
            }
            1 => key.push(b'{'),
            _ => {}
        }
        keys.push(key);
    }
    for key in &keys {
        let reply = client
            .command(&[b"CLUSTER".as_slice(), b"KEYSLOT", key])
            .await?;
        let want = reply
            .as_int()
            .unwrap_or_else(|| panic!("CLUSTER KEYSLOT {key:?}: {reply:?}"));
        assert_eq!(i64::from(key_slot(key)), want, "key {key:?}");
    }
    Ok(())
}
