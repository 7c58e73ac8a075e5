//! `ocean mysql-proxy`: clients log in as their JOBNAME from an IP of a running task of
//! that job, only into databases granted to the job; the proxy logs in to the database's
//! current primary (or a replica for `ro` grants) with credentials only it holds.
//!
//! # Layout
//! - [`config`]: flags ([`Args`]) and [`Config`], with `validate()`.
//! - [`server`]: the listener, admin HTTP, the table followed; [`start`] and [`run`].
//! - [`packet`] framing, [`auth`] password checks and scrambles, [`access`] the table
//!   indexed for logins, [`session`] one client connection, [`backend`] the proxy's own
//!   login to MySQL, [`relay`] the byte relay after login, [`registry`] open sessions
//!   (limits, failover, revocation), [`prelogin`] logins in progress per client IP,
//!   [`proxy_protocol`] PROXY v2 headers, [`tls`] rustls for clients and backends.

pub mod access;
pub mod auth;
pub mod backend;
pub mod config;
pub mod packet;
pub mod prelogin;
pub mod proxy_protocol;
pub mod registry;
pub mod relay;
pub mod server;
pub mod session;
pub mod tls;

pub use auth::{PasswordHashes, Plugin};
pub use config::{host_addresses, Args, Config};
pub use server::{run, start, Running};
