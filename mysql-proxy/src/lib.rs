//! `ocean mysql-proxy`: clients log in as their JOBNAME from an IP of a running task of
//! that job, only into databases granted to the job; the proxy logs in to the database's
//! current primary (or a replica for `ro` grants) with credentials only it holds.
//!
//! # Layout
//! - [`config`]: flags ([`Args`]) and [`Config`], with `validate()`.
//! - [`proto`]: the MySQL packet codec (framing with the 16 MB continuation rule,
//!   handshake and auth packets, ERR/OK, the command scanner, PROXY v2): synchronous,
//!   total, no I/O.
//! - [`wire`]: login packets read from and written to a stream, exactly as the codec asks.
//! - [`auth`]: password hashes, scramble checks, the RSA key of caching_sha2 full
//!   authentication, client-certificate CNs, the proxy's own auth responses.
//! - [`route`]: who may log in where and to which backend: the table indexed, routes,
//!   and the registry of open sessions a new table is applied to.
//! - [`discovery`]: primary discovery: candidates probed for `@@read_only`, the writable
//!   one takes writes (`OCEAN_MYSQL_ROLE=auto`).
//! - [`upstream`]: backend connections (TLS with `--backend-tls`) and the proxy's login.
//! - [`pool`]: backend connections kept between sessions, reset before reuse.
//! - [`connection`]: one client from accept to close: pre-login cap, greeting, TLS,
//!   login, then the relay.
//! - [`server`]: the listener, the table followed, admin HTTP; [`start`] and [`run`].

pub mod auth;
pub mod config;
pub mod connection;
pub mod discovery;
pub mod mariadb_caps;
pub mod metrics;
pub mod pool;
pub mod proto;
pub mod route;
pub mod server;
pub mod upstream;
pub mod wire;

pub use auth::{PasswordHashes, Plugin};
pub use config::{host_addresses, Args, Config};
pub use server::{run, start, Running};
