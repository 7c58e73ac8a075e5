//! # ocean-memcached-router
//!
//! mcrouter-style routing for memcached: ketama pools compatible with twemproxy, several
//! replica sets per pool, writes to all, reads fail over, failure detection (TKO).
//!
//! # Layout
//! - [`proto`]: the memcached ASCII and meta request codec (synchronous, total).
//! - [`reply`]: framing of backend replies (synchronous, total).
//! - [`budget`]: a client's reply budget, shared by its connection and backend readers.
//! - [`ketama`]: the ketama ring, byte-compatible with twemproxy's placement.
//! - [`config`]: flags ([`Args`]) and [`Config`].
//! - [`nutcracker`]: a twemproxy `nutcracker.yml` pool read as a standalone pool.
//! - [`route`]: a pool's routing state (rings over shared servers), swapped whole.
//! - [`upstream`]: backend servers, pipelined shared connections, TKO and probes.
//! - [`connection`]: one client connection: decode, route, collect replies in order.
//! - [`stats`]: the router's own counters (`stats`).
//! - [`server`]: listeners, workers (threads), table mode; [`start`] and [`run`].

pub mod budget;
pub mod config;
pub mod connection;
pub mod mcrouter;
pub mod nutcracker;
pub mod pool;
pub mod proto;
pub mod reply;
pub mod route;
pub mod server;
pub mod stats;
pub mod upstream;

// The placement code is shared with the redis router; these paths stay as they were.
pub use ocean_core::placement::{furc, ketama};

pub use config::{Args, Config};
pub use server::{run, start, Running};
