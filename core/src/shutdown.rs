//! Shutdown: one [`CancellationToken`] for the process, cancelled by SIGTERM or SIGINT.
//!
//! SIGTERM asks for a graceful stop: listeners stop accepting, connections drain until the
//! daemon's deadline. SIGINT (Ctrl-C) does the same, and a second SIGINT exits at once.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Spawns the signal watcher; returns the token it cancels.
pub fn install() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down: draining"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down: draining (Ctrl-C again exits now)"),
        }
        t.cancel();
        if int.recv().await.is_some() {
            tracing::warn!("second SIGINT: exiting now");
            std::process::exit(130);
        }
    });
    Ok(token)
}
