//! Connections that have not finished logging in, counted per client IP.
//!
//! A connection holds a [`PreLoginSlot`] from the moment it is accepted (after a PROXY
//! header, if any, names the real client) until its login succeeds or fails; at most
//! `--max-prelogin-per-ip` slots exist per IP. One host opening connections and never
//! answering the greeting thus ties up at most that many tasks and timers (each also ends
//! at `--connect-timeout`), and other IPs, and the same IP's logged-in sessions, are not
//! affected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// The per-IP counts of logins in progress.
#[derive(Debug)]
pub struct PreLogin {
    /// Most logins in progress per IP; 0 = no limit.
    limit: usize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One login in progress; gives its slot back when dropped.
#[derive(Debug)]
pub struct PreLoginSlot {
    owner: Arc<PreLogin>,
    ip: IpAddr,
}

impl PreLogin {
    /// A counter allowing `limit` logins in progress per IP (0 = no limit).
    pub fn new(limit: usize) -> Arc<PreLogin> {
        Arc::new(PreLogin {
            limit,
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    fn counts(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Nothing panics while the lock is held; a poisoned map is still consistent.
        self.per_ip.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a new connection from `ip`, or `None` when `ip` already has `limit`
    /// logins in progress.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<PreLoginSlot> {
        let ip = ip.to_canonical();
        let mut counts = self.counts();
        let n = counts.entry(ip).or_insert(0);
        if self.limit > 0 && *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(PreLoginSlot {
            owner: self.clone(),
            ip,
        })
    }

    /// Logins in progress from `ip` now.
    pub fn in_progress(&self, ip: IpAddr) -> usize {
        self.counts().get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    /// Logins in progress from every IP.
    pub fn total(&self) -> usize {
        self.counts().values().sum()
    }
}

impl Drop for PreLoginSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_cap_leaves_other_ips_alone_and_slots_come_back() {
        let p = PreLogin::new(2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let s1 = p.try_acquire(a).unwrap();
        let s2 = p.try_acquire(a).unwrap();
        assert!(p.try_acquire(a).is_none());
        // An IPv4-mapped IPv6 peer is the same IP.
        assert!(p.try_acquire("::ffff:127.0.0.2".parse().unwrap()).is_none());
        let other = p.try_acquire(b).unwrap();
        assert_eq!((p.in_progress(a), p.in_progress(b), p.total()), (2, 1, 3));
        drop(s1);
        let s3 = p.try_acquire(a).unwrap();
        drop((s2, s3, other));
        assert_eq!(p.total(), 0);
        assert!(p.counts().is_empty(), "no entry left behind");
    }

    #[test]
    fn zero_means_no_limit() {
        let p = PreLogin::new(0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..1000).map(|_| p.try_acquire(a).unwrap()).collect();
        assert_eq!(p.in_progress(a), 1000);
        drop(slots);
        assert_eq!(p.total(), 0);
    }
}
