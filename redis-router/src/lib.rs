//! # ocean-redis-router
//!
//! Clients speak plain Redis to one local port; the router routes each command to the Redis
//! Cluster node that owns its slot.
//!
//! # Layout
//! - [`proto`]: the RESP2/RESP3 codec, with inline commands (synchronous, total, bounded):
//!   requests, replies checked for relaying and parsed where read, and encoding.
//! - [`slot`]: CRC16 key slots with hash tags.
//! - [`command`]: the command table: key positions, flags, how multi-key commands split.
//! - [`upstream`]: backend connections (multiplexed shared ones, dedicated ones), nodes,
//!   the slot map and its refresher, the dedicated-connection pool.
//! - [`route`]: one request to its final reply (MOVED, ASK, TRYAGAIN, retries), and
//!   [`route::assemble`]: batched and split replies put back together.
//! - [`connection`]: one client connection: the framed IO loop, pipelining, batching.
//! - [`cmd`]: what to do with each command (local, split, cluster-wide, stateful modes).
//! - [`metrics`]: per command family metrics.
//! - [`health`]: slot coverage over every worker, for `/healthz` (503 `uncovered`) and
//!   `ocean_redis_slots_uncovered`.
//! - [`config`]: flags ([`Args`]), [`Config`] and its `validate()`.
//! - [`tls`]: the client acceptor and backend connector (PEM via `ocean_core::tls`).
//! - [`server`]: workers, listeners through `ocean_core::daemon`'s accept loop (one
//!   `--max-clients`, a span and id per connection, nothing detached), table mode.
//!
//! Imports point down the list's dependency order, never back: `proto`, `slot`, `command`
//! and `tls` are leaves; `connection` knows nothing of commands (it calls a
//! [`connection::Handler`], which [`cmd::Session`] implements); `server` wires the two.

pub mod cmd;
pub mod command;
pub mod config;
pub mod connection;
pub mod health;
pub mod metrics;
pub mod proto;
pub mod route;
pub mod server;
pub mod slot;
pub mod tls;
pub mod upstream;

pub use config::{Args, Config, Mode};
pub use server::{run, start, Running};
