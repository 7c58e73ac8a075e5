//! How current control's view of Marathon is: the lag `/healthz` reports and every API
//! answer carries (`X-Ocean-Lag-Ms`), so that a proxy given several `--control` replicas
//! prefers the one with the newest view, and `--max-lag` marks a replica that fell behind.
//!
//! The view is current while something watches for changes (the event stream is up, or
//! the apps file is watched) and no announced change waits for its sync. Otherwise it is as
//! old as the first moment a change may have been missed: an event not yet synced, the
//! stream dropping, or, while the stream is down, the start of the last successful fetch.
//! A lag is a duration on this host's clock, so replicas on hosts whose clocks disagree
//! still compare correctly.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A lag in whole milliseconds, as answers carry it.
pub fn millis(lag: Duration) -> u64 {
    u64::try_from(lag.as_millis()).unwrap_or(u64::MAX)
}

/// The response header with control's lag in milliseconds (see [`Freshness::lag`]).
pub const LAG_HEADER: &str = ocean_core::replicas::LAG_HEADER;

#[derive(Debug, Default)]
struct View {
    /// A sync has succeeded: there are tables to be current or behind.
    synced: bool,
    /// The first moment from which a change may be missing from the published tables.
    doubt_since: Option<Instant>,
}

/// The age of control's view of Marathon.
#[derive(Debug, Default)]
pub struct Freshness {
    view: Mutex<View>,
}

impl Freshness {
    fn with<R>(&self, f: impl FnOnce(&mut View) -> R) -> R {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut v)
    }

    /// Something may have changed from now on (an event came, the apps file changed, the
    /// event stream dropped): the view is current up to now, until a sync that started
    /// after this succeeds.
    pub fn doubt(&self) {
        let now = Instant::now();
        self.with(|v| {
            v.doubt_since.get_or_insert(now);
        });
    }

    /// A sync whose fetch started at `started` succeeded. `blind`: nothing watches for
    /// changes now (the event stream is down), so the view ages from `started`.
    pub fn synced(&self, started: Instant, blind: bool) {
        self.with(|v| {
            v.synced = true;
            if blind {
                v.doubt_since = Some(started);
            } else if v.doubt_since.is_some_and(|d| d <= started) {
                v.doubt_since = None;
            }
        });
    }

    /// How far the published tables may be behind Marathon; `None` before the first sync.
    pub fn lag(&self) -> Option<Duration> {
        let now = Instant::now();
        self.with(|v| {
            v.synced.then(|| {
                v.doubt_since
                    .map_or(Duration::ZERO, |d| now.saturating_duration_since(d))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_lag_before_the_first_sync_then_current_while_watched() {
        let f = Freshness::default();
        assert_eq!(f.lag(), None);
        f.synced(Instant::now(), false);
        assert_eq!(f.lag(), Some(Duration::ZERO));
    }

    #[test]
    fn a_change_ages_the_view_until_a_sync_started_after_it_succeeds() {
        let f = Freshness::default();
        let before = Instant::now();
        f.synced(before, false);
        f.doubt();
        std::thread::sleep(Duration::from_millis(30));
        assert!(f.lag().unwrap() >= Duration::from_millis(30));
        // A sync that started before the change does not cover it.
        f.synced(before, false);
        assert!(f.lag().unwrap() >= Duration::from_millis(30));
        // A second change does not move the first moment of doubt.
        f.doubt();
        assert!(f.lag().unwrap() >= Duration::from_millis(30));
        f.synced(Instant::now(), false);
        assert_eq!(f.lag(), Some(Duration::ZERO));
    }

    #[test]
    fn without_a_watch_the_view_ages_from_the_last_fetch() {
        let f = Freshness::default();
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        f.synced(started, true);
        let lag = f.lag().unwrap();
        assert!(lag >= Duration::from_millis(20), "{lag:?}");
        // Each later blind sync moves the age to its own fetch.
        let again = Instant::now();
        f.synced(again, true);
        assert!(f.lag().unwrap() < lag);
        // The stream attaches and a sync succeeds: current again.
        f.synced(Instant::now(), false);
        assert_eq!(f.lag(), Some(Duration::ZERO));
    }
}
