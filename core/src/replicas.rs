//! Which of several control replicas a subscriber polls (`--control URL`, repeated).
//!
//! Every answer of control carries how old its view of Marathon is ([`LAG_HEADER`]); the
//! subscriber turns that into the moment, on its own clock, up to which that replica is
//! known to be current. It polls the first replica listed among those that answer and
//! whose view is within [`SAME_VIEW`] of the newest one, and it never takes a table from a
//! replica that is behind another that answers: moving between replicas never steps a
//! proxy back in time. A replica that fails is left until a probe (`GET /healthz`, every
//! `probe_every`) finds it answering again; when every replica fails, they are tried in
//! turn.

use std::time::{Duration, Instant};

/// Control's lag, in milliseconds, on every answer (tables and `/healthz`).
pub const LAG_HEADER: &str = "x-ocean-lag-ms";

/// Replicas whose views are closer than this are as good as each other: the first listed
/// wins. Longer than a sync takes at scale (1.4 s at 100k tasks), so a replica in the
/// middle of a sync does not send the fleet away and back.
pub const SAME_VIEW: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, Default)]
struct Replica {
    /// Current up to this moment (this host's clock); `None` until it answered.
    fresh_as_of: Option<Instant>,
    /// Its last request or probe failed.
    down: bool,
}

/// What the subscriber knows of each `--control` replica, in the order listed.
#[derive(Debug, Clone)]
pub struct Replicas {
    replicas: Vec<Replica>,
}

impl Replicas {
    pub fn new(count: usize) -> Self {
        Replicas {
            replicas: vec![Replica::default(); count.max(1)],
        }
    }

    /// Replica `i` answered at `now`, reporting `lag` (an answer without the header, from an
    /// older control, counts as current).
    pub fn answered(&mut self, i: usize, lag: Option<Duration>, now: Instant) {
        if let Some(r) = self.replicas.get_mut(i) {
            r.down = false;
            r.fresh_as_of = Some(now.checked_sub(lag.unwrap_or_default()).unwrap_or(now));
        }
    }

    /// A request to replica `i` failed.
    pub fn failed(&mut self, i: usize) {
        if let Some(r) = self.replicas.get_mut(i) {
            r.down = true;
        }
    }

    /// The newest view among the replicas that answer.
    fn newest(&self) -> Option<Instant> {
        self.replicas
            .iter()
            .filter(|r| !r.down)
            .filter_map(|r| r.fresh_as_of)
            .max()
    }

    /// Replica `i` is more than [`SAME_VIEW`] behind another one that answers.
    pub fn behind(&self, i: usize) -> bool {
        match (
            self.replicas.get(i).and_then(|r| r.fresh_as_of),
            self.newest(),
        ) {
            (Some(fresh), Some(newest)) => fresh + SAME_VIEW < newest,
            _ => false,
        }
    }

    /// The replica to poll next: the first listed that answers and is not behind (one not
    /// heard from yet counts as good); when every replica is down, the one after `current`.
    pub fn preferred(&self, current: usize) -> usize {
        (0..self.replicas.len())
            .find(|&i| !self.replicas[i].down && !self.behind(i))
            .unwrap_or((current + 1) % self.replicas.len())
    }

    /// Whether every replica's last request or probe failed.
    pub fn all_down(&self) -> bool {
        self.replicas.iter().all(|r| r.down)
    }

    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }
}

/// Reads [`LAG_HEADER`] from an answer.
pub fn lag_of(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(LAG_HEADER)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()
        .map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_listed_is_preferred_among_equals_and_unknowns() {
        let now = Instant::now();
        let mut r = Replicas::new(3);
        assert_eq!(r.preferred(0), 0);
        r.answered(1, Some(Duration::ZERO), now);
        assert_eq!(r.preferred(1), 0, "an unheard replica still counts");
        r.answered(0, Some(SAME_VIEW - S), now);
        assert_eq!(r.preferred(1), 0, "within SAME_VIEW of the newest");
        assert!(!r.behind(0));
    }

    #[test]
    fn a_replica_behind_another_that_answers_is_passed_over() {
        let now = Instant::now();
        let mut r = Replicas::new(2);
        r.answered(0, Some(SAME_VIEW + S), now);
        r.answered(1, Some(Duration::ZERO), now);
        assert!(r.behind(0));
        assert!(!r.behind(1));
        assert_eq!(r.preferred(0), 1);
        // The newer one goes down: the old view is the best there is.
        r.failed(1);
        assert!(!r.behind(0));
        assert_eq!(r.preferred(1), 0);
        // It catches up: first listed again.
        r.answered(1, Some(Duration::ZERO), now);
        r.answered(0, Some(Duration::ZERO), now);
        assert_eq!(r.preferred(1), 0);
    }

    #[test]
    fn down_replicas_are_skipped_and_tried_in_turn_when_all_are_down() {
        let now = Instant::now();
        let mut r = Replicas::new(3);
        r.failed(0);
        assert_eq!(r.preferred(0), 1);
        r.failed(1);
        assert_eq!(r.preferred(1), 2);
        assert!(!r.all_down());
        r.failed(2);
        assert!(r.all_down());
        assert_eq!(r.preferred(2), 0);
        assert_eq!(r.preferred(0), 1);
        r.answered(0, None, now);
        assert_eq!(r.preferred(1), 0);
    }

    #[test]
    fn the_lag_header_is_read_in_milliseconds() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(lag_of(&h), None);
        h.insert(LAG_HEADER, "1500".parse().unwrap());
        assert_eq!(lag_of(&h), Some(Duration::from_millis(1500)));
        h.insert(LAG_HEADER, "junk".parse().unwrap());
        assert_eq!(lag_of(&h), None);
    }
}
