//! # ocean-core
//!
//! What every Ocean daemon shares.
//!
//! # Layout
//! - [`table`]: the table types, the contract between `ocean control` and the proxies, with
//!   their validation and ETag (a hash of canonical JSON, equal across processes).
//! - [`subscriber`]: how a proxy gets its table: long-poll on control, a static file, or the
//!   last good table cached on disk; validated, then published through `arc_swap` and a
//!   `watch` channel so the proxy can rebuild its routing state off the hot path.
//! - [`replicas`]: which of several control replicas a subscriber polls (the newest view,
//!   then the first listed).
//! - [`admin`]: the admin HTTP endpoints every daemon serves (`/` the status page, `/metrics`,
//!   `/healthz`, `/table`).
//! - [`status_page`]: the HTML status pages (`/` of control and of every admin port):
//!   escaping, the page frame, tables.
//! - [`metrics`]: the process-wide Prometheus recorder.
//! - [`daemon`]: the accept loop every TCP proxy shares: client cap with the protocol's own
//!   refusal, accept backoff, connection ids and spans, write deadlines, `RLIMIT_NOFILE`.
//! - [`drain`]: how a client connection reads while the daemon drains (request boundaries).
//! - [`net`]: `Cidr`, the one network type of every daemon (ipnet, bare addresses, IPv4-mapped
//!   addresses as IPv4).
//! - [`listener`]: sockets bound with the options proxies need (socket2).
//! - [`signals`]: SIGTERM/SIGINT drain (one cancellation token), SIGHUP reloads.
//! - [`reload`]: the process-wide reload generation, each daemon's reloader, the reload metric.
//! - [`notify`]: systemd readiness (`READY=1` after the first table, `STOPPING=1`, watchdog).
//! - [`http`]: the HTTP client settings shared by control and subscribers.
//! - [`logging`]: tracing setup.
//! - [`secret`]: a string (password, token) that `Debug` redacts.
//! - [`tls`]: PEM files into rustls server configs and root stores.

pub mod admin;
pub mod daemon;
pub mod drain;
pub mod http;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod placement;
pub mod reload;
pub mod replicas;
pub mod secret;
pub mod signals;
pub mod status_page;
pub mod subscriber;
pub mod table;
pub mod tls;
