//! Reload on SIGHUP: every daemon re-reads what it can without a new socket (control.toml,
//! TLS certificates and keys, password files) and keeps running on the old values when
//! the new ones are bad.
//!
//! One process-wide generation counter (a `watch` channel) is bumped by each SIGHUP; each
//! daemon [`spawn`]s a reloader on it. A reloader reports every attempt: a log line, the
//! counter `ocean_reloads_total{daemon, result}`, and, once every reloader of the process
//! has answered, `READY=1` to systemd after the `RELOADING=1` the signal sent.

use std::sync::{Mutex, OnceLock};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

struct State {
    /// Reloaders spawned in this process.
    reloaders: usize,
    /// The generation being answered and how many reloaders have answered it.
    generation: u64,
    answered: usize,
}

fn generation() -> &'static watch::Sender<u64> {
    static GEN: OnceLock<watch::Sender<u64>> = OnceLock::new();
    GEN.get_or_init(|| watch::channel(0).0)
}

fn state() -> &'static Mutex<State> {
    static STATE: Mutex<State> = Mutex::new(State {
        reloaders: 0,
        generation: 0,
        answered: 0,
    });
    &STATE
}

/// Asks every reloader of the process to reload (what SIGHUP does).
pub fn trigger() {
    let reloaders = state().lock().map(|s| s.reloaders).unwrap_or(0);
    tracing::info!(reloaders, "SIGHUP: reloading");
    crate::notify::reloading();
    generation().send_modify(|g| *g += 1);
    if reloaders == 0 {
        crate::notify::reloaded();
    }
}

/// Spawns `daemon`'s reloader: `reload` runs on every [`trigger`] until `cancel` fires.
/// It returns what changed (for the log) or why the new configuration was refused; on
/// an error the daemon must be left running on what it had.
pub fn spawn<F>(daemon: &'static str, cancel: CancellationToken, mut reload: F)
where
    F: FnMut() -> anyhow::Result<Vec<String>> + Send + 'static,
{
    let mut rx = generation().subscribe();
    rx.mark_unchanged();
    if let Ok(mut s) = state().lock() {
        s.reloaders += 1;
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { break },
                () = cancel.cancelled() => break,
            }
            let generation = *rx.borrow_and_update();
            let outcome = reload();
            record(daemon, generation, &outcome);
        }
        if let Ok(mut s) = state().lock() {
            s.reloaders = s.reloaders.saturating_sub(1);
        }
    });
}

fn record(daemon: &'static str, generation: u64, outcome: &anyhow::Result<Vec<String>>) {
    let result = match outcome {
        Ok(changed) if changed.is_empty() => {
            tracing::info!(daemon, "reload: nothing changed");
            "unchanged"
        }
        Ok(changed) => {
            tracing::info!(daemon, changed = ?changed, "reload: applied");
            "ok"
        }
        Err(e) => {
            tracing::error!(
                daemon,
                error = format!("{e:#}"),
                "reload failed: still running the previous configuration"
            );
            "error"
        }
    };
    metrics::counter!("ocean_reloads_total", "daemon" => daemon, "result" => result).increment(1);
    let done = match state().lock() {
        Ok(mut s) => {
            if s.generation != generation {
                s.generation = generation;
                s.answered = 0;
            }
            s.answered += 1;
            s.answered >= s.reloaders
        }
        Err(_) => true,
    };
    if done {
        crate::notify::reloaded();
    }
}

/// Describes the reload metric (`# HELP`).
pub fn describe() {
    crate::metrics::handle();
    metrics::describe_counter!(
        "ocean_reloads_total",
        "SIGHUP reloads by daemon and result (ok, unchanged, error)"
    );
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn every_trigger_runs_the_reloader_once_and_a_failure_is_reported() {
        let cancel = CancellationToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        spawn("test", cancel.clone(), move || {
            let n = r.fetch_add(1, Ordering::SeqCst);
            if n == 1 {
                anyhow::bail!("bad certificate")
            }
            Ok(vec!["tls".into()])
        });
        tokio::task::yield_now().await;
        for expected in 1..=3 {
            trigger();
            for _ in 0..1000 {
                if runs.load(Ordering::SeqCst) >= expected {
                    break;
                }
                tokio::task::yield_now().await;
            }
            assert_eq!(runs.load(Ordering::SeqCst), expected);
        }
        cancel.cancel();
    }
}
