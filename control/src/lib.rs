//! # ocean-control
//!
//! Watches Marathon (or a file in Marathon's JSON), derives one routing table per proxy
//! kind, and serves them to proxies by long-poll.
//!
//! # Layout
//! - [`marathon`]: Marathon's JSON ([`marathon::model`]), the REST client with leader
//!   check ([`marathon::client`]) and the `/v2/events` stream ([`marathon::events`]).
//! - [`state`]: Marathon apps normalized into the facts derive needs (live tasks, routable
//!   addresses), with the health memory that survives Marathon leader elections.
//! - [`derive`]: pure functions state -> each table, one module per kind.
//! - [`ownership`]: which app may claim which database, cluster, pool, VIP or job.
//! - [`guard`]: holds back a table that would lose most of its backends at once.
//! - [`store`]: the published tables; long-poll waiters wake on a `watch`.
//! - [`subscribers`]: which proxies poll, which ETag they run, what they refused.
//! - [`freshness`]: how old control's view of Marathon is (`/healthz`, `X-Ocean-Lag-Ms`).
//! - [`pending`]: which apps Marathon's events named since the last sync (fetched alone).
//! - [`engine`]: the sync loop: source -> normalize -> derive -> guard -> publish.
//! - [`reload`]: SIGHUP: control.toml, secret and token files read again and swapped in.
//! - [`shared`]: the state the sync loop and the HTTP API share.
//! - [`server`]: the HTTP API (`/v1/tables/{kind}`, `/v1/state`, `/v1/problems`,
//!   `/v1/subscribers`, `/healthz`, `/metrics`).
//! - [`status_page`]: the status page (`/`, `/ui`) and `/v1/status`, what `ocean status`
//!   prints.
//! - [`api_auth`]: bearer tokens and their scopes; who may read which table.
//! - [`tls`]: serving the API over TLS.
//! - [`config`]: flags and `control.toml`.

pub mod api_auth;
pub mod config;
pub mod derive;
pub mod engine;
pub mod freshness;
pub mod guard;
pub mod marathon;
pub mod metrics;
pub mod ownership;
pub mod pending;
pub mod reload;
pub mod server;
pub mod shared;
pub mod state;
pub mod status_page;
pub mod store;
pub mod subscribers;
pub mod tls;

pub use config::Config;
pub use engine::run;
