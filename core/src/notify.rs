//! systemd readiness (`Type=notify`) through the `sd-notify` crate: `READY=1` once every
//! component of the process has its first table (a proxy applied it, control published
//! it), `STATUS=` with the ETags applied, `RELOADING=1`/`READY=1` around a reload,
//! `STOPPING=1` on drain and `WATCHDOG=1` when the unit sets `WatchdogSec`.
//!
//! Without `NOTIFY_SOCKET` (not under systemd) every call is a no-op. A component is a
//! table kind (`dns`, `redis`, ...) or `control`; the binary says which it runs with
//! [`expect`] before starting them, so `ocean up` is ready only when all are.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

struct State {
    /// Components that must be ready before `READY=1`.
    expected: Vec<&'static str>,
    /// The ETag each component last applied.
    applied: BTreeMap<&'static str, String>,
    ready_sent: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    expected: Vec::new(),
    applied: BTreeMap::new(),
    ready_sent: false,
});

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// Declares that `component` runs in this process and must be ready before `READY=1`.
pub fn expect(component: &'static str) {
    if let Ok(mut s) = STATE.lock() {
        if !s.expected.contains(&component) {
            s.expected.push(component);
        }
    }
}

/// `component` applied (or published) the table `etag`: updates `STATUS=`, and sends
/// `READY=1` the first time every expected component has one.
pub fn table_applied(component: &'static str, etag: &str) {
    let Ok(mut s) = STATE.lock() else { return };
    s.applied.insert(component, etag.to_string());
    let status = s
        .applied
        .iter()
        .map(|(c, e)| format!("{c} {e}"))
        .collect::<Vec<_>>()
        .join(", ");
    let status = format!("tables: {status}");
    let all = s.expected.iter().all(|c| s.applied.contains_key(c));
    if all && !s.ready_sent {
        s.ready_sent = true;
        drop(s);
        tracing::info!(%status, "ready");
        send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    } else {
        drop(s);
        send(&[NotifyState::Status(&status)]);
    }
}

/// A SIGHUP is being handled.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Every reloader answered the SIGHUP.
pub fn reloaded() {
    let ready = STATE.lock().map(|s| s.ready_sent).unwrap_or(false);
    if ready {
        send(&[NotifyState::Ready]);
    }
}

/// Draining for a stop.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Sends `WATCHDOG=1` at half the unit's `WatchdogSec` until `cancel` fires; nothing when
/// the unit has no watchdog. The ping comes from the runtime, so a wedged runtime misses it.
pub fn spawn_watchdog(cancel: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (period / 2).max(Duration::from_millis(100));
    tracing::info!(every = ?every, "systemd watchdog enabled");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
                () = cancel.cancelled() => return,
            }
        }
    });
}
