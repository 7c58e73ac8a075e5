//! Process signals: SIGTERM and SIGINT drain, SIGHUP reloads.
//!
//! - **SIGTERM / SIGINT** cancel the process's drain token: listeners stop accepting,
//!   systemd is told `STOPPING=1`, connections finish what is in flight and close. The
//!   binary gives the daemon `--drain-timeout` ([`drain_deadline`]) and then exits 0 whatever
//!   is left. A second SIGTERM or SIGINT exits at once.
//! - **SIGHUP** asks every daemon in the process to re-read what it can without a new
//!   socket ([`crate::reload`]). It never kills: without this handler its default action
//!   would.

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Default `--drain-timeout`: below systemd's default `TimeoutStopSec` (90 s) and our
/// units' 45 s, so a drain always ends on our terms.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Spawns the signal watcher; returns the drain token it cancels.
pub fn install() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let drain = token.clone();
    tokio::spawn(async move {
        let mut draining = false;
        loop {
            let name = tokio::select! {
                Some(()) = term.recv() => "SIGTERM",
                Some(()) = int.recv() => "SIGINT",
                Some(()) = hup.recv() => {
                    if draining {
                        tracing::info!(signal = "SIGHUP", "draining: reload ignored");
                    } else {
                        crate::reload::trigger();
                    }
                    continue;
                }
                else => return,
            };
            if draining {
                tracing::warn!(
                    signal = name,
                    "second stop signal: exiting without waiting for the drain"
                );
                std::process::exit(if name == "SIGINT" { 130 } else { 143 });
            }
            draining = true;
            tracing::info!(signal = name, "draining: no new connections; in-flight requests finish (send it again to exit now)");
            crate::notify::stopping();
            drain.cancel();
        }
    });
    Ok(token)
}

/// Resolves `timeout` after `drain` fires: the moment the binary stops waiting for
/// connections to finish and exits.
pub async fn drain_deadline(drain: CancellationToken, timeout: Duration) {
    drain.cancelled().await;
    tokio::time::sleep(timeout).await;
    tracing::warn!(
        timeout = ?timeout,
        "drain timeout: closing the connections still open"
    );
}
