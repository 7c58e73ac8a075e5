//! # ocean-dns
//!
//! A Mesos-DNS replacement: answers the names Mesos-DNS gives Marathon tasks from the `dns`
//! table control pushes, and serves Mesos-DNS's HTTP API.
//!
//! # Layout
//! - [`proto`]: the wire format (query parsing, record encoding); synchronous, total.
//! - [`zone`]: the zone built from a table off the hot path, every answer pre-encoded.
//! - [`respond`]: one query in, one response out (or "forward this").
//! - [`forward`]: sending out-of-zone queries to upstream resolvers.
//! - [`server`]: UDP workers (one thread and `SO_REUSEPORT` socket each) and the TCP listener.
//! - [`http`]: the Mesos-DNS HTTP API.
//! - [`config`]: flags and defaults, and a Mesos-DNS `config.json` read on top
//!   ([`config::mesos_dns`]); [`run`] wires it all to a table subscriber.

pub mod config;
pub mod forward;
pub mod http;
pub mod proto;
pub mod respond;
pub mod server;
pub mod zone;

pub use config::Config;
pub use server::run;
