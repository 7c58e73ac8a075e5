//! The drop guard: a table that would lose more than `max_drop` of its backends at once, or
//! all of them, is held back until the drop has persisted for `drop_hold`.
//!
//! Marathon sometimes answers with too little (a leader election, a half-loaded state, an
//! empty list); proxies must not empty their pools because of it. A real scale-down that
//! persists is published after the hold.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ocean_core::table::TableKind;
use serde::Serialize;

#[derive(Debug, Clone, Copy)]
pub struct GuardConfig {
    /// Fraction of backends (0..1) a new table may lose at once.
    pub max_drop: f64,
    /// How long a larger drop must persist before it is published.
    pub drop_hold: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            max_drop: 0.5,
            drop_hold: Duration::from_secs(120),
        }
    }
}

/// What to do with a candidate table.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Publish,
    Hold(Held),
}

/// A table being held, for logs, metrics and `/v1/problems`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Held {
    pub table: TableKind,
    pub published_backends: usize,
    pub candidate_backends: usize,
    pub held_for_s: u64,
    pub publishes_in_s: u64,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Guard {
    config: GuardConfig,
    since: BTreeMap<TableKind, Instant>,
}

impl Guard {
    pub fn new(config: GuardConfig) -> Self {
        Guard {
            config,
            since: BTreeMap::new(),
        }
    }

    /// Decides for one table. `published` is the backend count of the table proxies have,
    /// `None` when nothing has been published yet (then anything goes).
    pub fn check(
        &mut self,
        kind: TableKind,
        published: Option<usize>,
        candidate: usize,
        now: Instant,
    ) -> Decision {
        let Some(published) = published.filter(|p| *p > 0) else {
            self.since.remove(&kind);
            return Decision::Publish;
        };
        let lost = published.saturating_sub(candidate);
        let drop = lost as f64 / published as f64;
        let suspicious = candidate == 0 || drop > self.config.max_drop;
        if !suspicious {
            self.since.remove(&kind);
            return Decision::Publish;
        }
        let since = *self.since.entry(kind).or_insert(now);
        let held_for = now.saturating_duration_since(since);
        if held_for >= self.config.drop_hold {
            tracing::warn!(table = %kind, published, candidate, held_s = held_for.as_secs(), "drop persisted past the hold; publishing it");
            self.since.remove(&kind);
            return Decision::Publish;
        }
        let publishes_in = self.config.drop_hold - held_for;
        Decision::Hold(Held {
            table: kind,
            published_backends: published,
            candidate_backends: candidate,
            held_for_s: held_for.as_secs(),
            publishes_in_s: publishes_in.as_secs(),
            message: format!(
                "{kind} table held: it would drop {:.0}% of backends ({published} -> {candidate}, limit {:.0}%); \
                 publishing in {}s if Marathon still says so",
                drop * 100.0,
                self.config.max_drop * 100.0,
                publishes_in.as_secs()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_drops_pass_large_ones_wait_for_the_hold() {
        let mut g = Guard::new(GuardConfig {
            max_drop: 0.5,
            drop_hold: Duration::from_secs(120),
        });
        let t0 = Instant::now();
        let k = TableKind::Redis;
        assert_eq!(g.check(k, None, 0, t0), Decision::Publish);
        assert_eq!(g.check(k, Some(10), 5, t0), Decision::Publish);
        assert_eq!(g.check(k, Some(10), 12, t0), Decision::Publish);
        assert!(matches!(g.check(k, Some(10), 4, t0), Decision::Hold(_)));
        assert!(matches!(
            g.check(k, Some(10), 0, t0 + Duration::from_secs(60)),
            Decision::Hold(_)
        ));
        assert_eq!(
            g.check(k, Some(10), 0, t0 + Duration::from_secs(121)),
            Decision::Publish
        );
    }

    #[test]
    fn recovery_clears_the_hold() {
        let mut g = Guard::new(GuardConfig::default());
        let t0 = Instant::now();
        let k = TableKind::Dns;
        assert!(matches!(g.check(k, Some(10), 0, t0), Decision::Hold(_)));
        assert_eq!(
            g.check(k, Some(10), 10, t0 + Duration::from_secs(10)),
            Decision::Publish
        );
        // A new drop starts a new hold.
        assert!(matches!(
            g.check(k, Some(10), 0, t0 + Duration::from_secs(130)),
            Decision::Hold(_)
        ));
    }
}
