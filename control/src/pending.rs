//! What Marathon's events said changed since the last sync: the ids of the apps they
//! named, or everything (an event that names no app, a reconnect of the stream).
//!
//! The event stream records here and wakes the sync loop; the sync takes it. When only a
//! few apps changed, the sync fetches those apps (`GET /v2/apps/{id}?embed=app.tasks`)
//! and patches its last list instead of re-listing all of Marathon (66 MB and 140 ms of
//! parsing at 100k tasks, and seconds of Marathon's own time). Anything else, and every
//! `--resync`, re-lists.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// Above this many changed apps one re-list is cheaper than fetching each.
pub const MAX_APPS: usize = 32;

#[derive(Debug, Default)]
struct Changed {
    all: bool,
    apps: BTreeSet<String>,
}

/// The changes the events announced since the sync loop last took them.
#[derive(Debug, Default)]
pub struct Pending {
    changed: Mutex<Changed>,
}

/// What a sync should fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// Re-list every app.
    All,
    /// Only these apps changed.
    Apps(Vec<String>),
}

impl Pending {
    fn with<R>(&self, f: impl FnOnce(&mut Changed) -> R) -> R {
        let mut c = self.changed.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c)
    }

    /// An event about the app `id`.
    pub fn app(&self, id: &str) {
        self.with(|c| {
            if !c.all {
                c.apps.insert(id.to_string());
                if c.apps.len() > MAX_APPS {
                    c.all = true;
                    c.apps.clear();
                }
            }
        });
    }

    /// An event that may change any app, or events that may have been missed.
    pub fn all(&self) {
        self.with(|c| {
            c.all = true;
            c.apps.clear();
        });
    }

    /// Takes what changed: [`Fetch::Apps`] only when events named apps and nothing else
    /// happened; [`Fetch::All`] otherwise (also when no event was recorded: a reload, an
    /// apps file, a timer).
    pub fn take(&self) -> Fetch {
        self.with(|c| {
            let taken = std::mem::take(c);
            if taken.all || taken.apps.is_empty() {
                Fetch::All
            } else {
                Fetch::Apps(taken.apps.into_iter().collect())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_apps_are_fetched_alone_and_anything_else_re_lists() {
        let p = Pending::default();
        assert_eq!(p.take(), Fetch::All, "nothing recorded");
        p.app("/a");
        p.app("/b");
        p.app("/a");
        assert_eq!(p.take(), Fetch::Apps(vec!["/a".into(), "/b".into()]));
        assert_eq!(p.take(), Fetch::All, "taken");
        p.app("/a");
        p.all();
        p.app("/b");
        assert_eq!(p.take(), Fetch::All);
        for i in 0..=MAX_APPS {
            p.app(&format!("/app{i}"));
        }
        assert_eq!(p.take(), Fetch::All, "too many to fetch one by one");
    }
}
