//! What the sync loop ([`crate::engine`]) and the HTTP API ([`crate::server`]) share: the
//! published tables, the subscribers, the last sync's outcome and the API's settings.
//!
//! Its own module so that the engine (which starts the server) and the server (which reads
//! this state) do not import each other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::api_auth::ApiToken;
use crate::derive::Problem;
use crate::freshness::Freshness;
use crate::guard::Held;
use crate::state::State;
use crate::store::Store;
use crate::subscribers::Subscribers;

/// The outcome of the last syncs, for `/healthz`, `/v1/problems` and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncStatus {
    /// `marathon <url>`, `file <path>` or `static <name>`.
    pub source: String,
    pub last_success_unix: Option<u64>,
    pub last_attempt_unix: Option<u64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u64,
    pub event_stream_up: bool,
    pub apps: usize,
    pub tasks: usize,
    pub held: Vec<Held>,
}

/// State shared by the engine and the HTTP API.
pub struct Shared {
    pub store: Store,
    pub subscribers: Subscribers,
    pub status: Mutex<SyncStatus>,
    pub problems: ArcSwap<Vec<Problem>>,
    pub state: ArcSwap<State>,
    /// Bearer tokens with their scopes; empty: the API is open (loopback only). Swapped
    /// whole by a reload ([`crate::reload`]).
    pub tokens: ArcSwap<Vec<ApiToken>>,
    /// The API is served over TLS.
    pub tls: bool,
    /// `--allow-plaintext-secrets`: the `mysql` table goes to any peer even without TLS.
    pub allow_plaintext_secrets: bool,
    pub max_wait: Duration,
    /// `resync`, for judging staleness.
    pub resync: Duration,
    pub stream_up: Arc<AtomicBool>,
    pub marathon_source: bool,
    /// How current the published tables are (the lag every answer reports).
    pub freshness: Arc<Freshness>,
    /// `--max-lag`: beyond it `/healthz` says `lagging` with 503.
    pub max_lag: Option<Duration>,
    /// Fires at shutdown: long-polls answer at once instead of holding the drain.
    pub shutdown: CancellationToken,
}

impl Shared {
    pub fn status(&self) -> SyncStatus {
        let mut s = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        s.event_stream_up = self.stream_up.load(Ordering::Relaxed);
        s
    }
}
