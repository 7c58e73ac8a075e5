//! Response rate limiting (RRL) for the UDP fast path, after Knot's and BIND's: at most
//! `--rrl-per-second` answers per second to one client network (a /24 for IPv4, a /56 for
//! IPv6); of the answers over that, every `--rrl-slip`th goes out as a truncated reply
//! (TC=1, no records) so a real client retries over TCP, and the others are dropped. A
//! spoofed flood therefore reflects at most the limit (plus a trickle of small TC
//! replies) onto its victim, while a real client behind a busy network still gets its
//! answers over TCP, which is never limited.
//!
//! The table is shared by every UDP worker thread without a lock: a fixed number of
//! `AtomicU64` slots, each the counter of one client network for the current second,
//! indexed by a keyed hash of the network and updated with one compare-and-swap. A slot
//! holds `tag (24 bits) | second (16 bits) | count (24 bits)`:
//! - the tag is more bits of the hash, so two networks that share a slot do not share a
//!   count: the newcomer takes the slot over with a fresh count. A collision can only let
//!   answers through that would have been limited, never limit a client that is under the
//!   limit, so an attacker spraying source networks cannot get anyone else limited;
//! - the second is the caller's clock (read once per batch of datagrams, see [`Rrl::now`]),
//!   so a slot from an earlier second starts over;
//! - the count is the answers to that network in that second, limited ones included, so
//!   the slip is every Nth of the answers over the limit, per network.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Slots in the table (a power of two; 512 KiB). Many more client networks than this at
/// once only make collisions, which let answers through (see the module docs).
const SLOTS: usize = 1 << 16;
const COUNT_BITS: u32 = 24;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const SECOND_BITS: u32 = 16;
const SECOND_MASK: u64 = (1 << SECOND_BITS) - 1;

/// What to do with one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Under the limit: send it.
    Answer,
    /// Over the limit, this one slips: send a truncated reply (TC=1) instead.
    Slip,
    /// Over the limit: send nothing.
    Drop,
}

/// The response rate limiter shared by the UDP workers.
pub struct Rrl {
    per_second: u64,
    slip: u64,
    key: u64,
    epoch: Instant,
    slots: Box<[AtomicU64]>,
}

impl std::fmt::Debug for Rrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rrl")
            .field("per_second", &self.per_second)
            .field("slip", &self.slip)
            .finish_non_exhaustive()
    }
}

impl Rrl {
    /// A limiter of `per_second` answers per client network and second (at most 2^24 - 1;
    /// more is taken as that), slipping every `slip`th answer over the limit (0: none);
    /// `None` when `per_second` is 0 (rate limiting off).
    pub fn new(per_second: u32, slip: u32) -> Option<Rrl> {
        if per_second == 0 {
            return None;
        }
        Some(Rrl {
            per_second: u64::from(per_second).min(COUNT_MAX - 1),
            slip: u64::from(slip),
            key: rand::random(),
            epoch: Instant::now(),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// The clock [`Rrl::check`] takes: whole seconds since the limiter was made. Read it
    /// once per batch of datagrams, not per answer.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Counts one answer to `client` in second `now` and says whether to send it, slip it
    /// or drop it. Lock-free; safe to call from every worker thread at once.
    pub fn check(&self, client: IpAddr, now: u64) -> Verdict {
        let h = mix(network(client) ^ self.key);
        let slot = &self.slots[(h as usize) & (SLOTS - 1)];
        let tag = h >> (64 - 24);
        let second = now & SECOND_MASK;
        let mut cur = slot.load(Ordering::Relaxed);
        let count = loop {
            let count = if cur >> 40 == tag && (cur >> COUNT_BITS) & SECOND_MASK == second {
                ((cur & COUNT_MAX) + 1).min(COUNT_MAX)
            } else {
                // Another network's slot, or an earlier second: start over.
                1
            };
            let next = tag << 40 | second << COUNT_BITS | count;
            match slot.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break count,
                Err(actual) => cur = actual,
            }
        };
        if count <= self.per_second {
            return Verdict::Answer;
        }
        let over = count - self.per_second;
        if self.slip != 0 && over.is_multiple_of(self.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// The client network an address counts against: its /24 (IPv4, also when IPv4-mapped)
/// or /56 (IPv6), with the family in the top bits so the two never meet.
fn network(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => (1 << 63) | u64::from(u32::from(v4) >> 8),
        IpAddr::V6(v6) => (u128::from(v6) >> 72) as u64,
    }
}

/// splitmix64's finalizer: every input bit moves every output bit, so the table index
/// and the tag are independent parts of the hash.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn verdicts(rrl: &Rrl, client: &str, now: u64, n: usize) -> Vec<Verdict> {
        (0..n).map(|_| rrl.check(ip(client), now)).collect()
    }

    #[test]
    fn off_at_zero() {
        assert!(Rrl::new(0, 2).is_none());
    }

    #[test]
    fn limits_per_network_and_second_with_slip() {
        let rrl = Rrl::new(5, 2).unwrap();
        let v = verdicts(&rrl, "192.0.2.1", 7, 11);
        use Verdict::*;
        assert_eq!(
            v,
            [Answer, Answer, Answer, Answer, Answer, Drop, Slip, Drop, Slip, Drop, Slip]
        );
        // The same /24 shares the count; another /24 has its own.
        assert_eq!(rrl.check(ip("192.0.2.200"), 7), Drop);
        assert_eq!(verdicts(&rrl, "192.0.3.1", 7, 5), [Answer; 5]);
        // The next second starts over.
        assert_eq!(verdicts(&rrl, "192.0.2.1", 8, 5), [Answer; 5]);
    }

    #[test]
    fn slip_zero_drops_all_and_one_slips_all() {
        let none = Rrl::new(1, 0).unwrap();
        assert_eq!(verdicts(&none, "192.0.2.1", 0, 4)[1..], [Verdict::Drop; 3]);
        let all = Rrl::new(1, 1).unwrap();
        assert_eq!(verdicts(&all, "192.0.2.1", 0, 4)[1..], [Verdict::Slip; 3]);
    }

    #[test]
    fn ipv6_networks_are_slash_56_and_mapped_ipv4_is_ipv4() {
        let rrl = Rrl::new(2, 0).unwrap();
        assert_eq!(
            verdicts(&rrl, "2001:db8:0:ff::1", 0, 2),
            [Verdict::Answer; 2]
        );
        assert_eq!(rrl.check(ip("2001:db8:0:0::9"), 0), Verdict::Drop);
        assert_eq!(rrl.check(ip("2001:db8:0:100::1"), 0), Verdict::Answer);
        assert_eq!(verdicts(&rrl, "10.1.2.3", 0, 2), [Verdict::Answer; 2]);
        assert_eq!(rrl.check(ip("::ffff:10.1.2.4"), 0), Verdict::Drop);
    }

    #[test]
    fn threads_share_one_count() {
        let rrl = std::sync::Arc::new(Rrl::new(1000, 0).unwrap());
        let answered: usize = (0..4)
            .map(|_| {
                let rrl = rrl.clone();
                std::thread::spawn(move || {
                    verdicts(&rrl, "198.51.100.7", 3, 1000)
                        .into_iter()
                        .filter(|v| *v == Verdict::Answer)
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(answered, 1000, "exactly the limit across threads");
    }
}
