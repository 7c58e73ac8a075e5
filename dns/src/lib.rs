//! # ocean-dns
//!
//! A Mesos-DNS replacement: answers the names Mesos-DNS gives Marathon tasks from the `dns`
//! table control pushes, and serves Mesos-DNS's HTTP API.
//!
//! # Layout
//! - [`proto`]: the wire format (query parsing, record encoding); synchronous, total.
//! - [`zone`]: the zone built from a table off the hot path, every answer pre-encoded.
//! - [`route`]: one query in, one response out (or "forward this"), looked up in the zone.
//! - [`upstream`]: sending out-of-zone queries to upstream resolvers.
//! - [`rrl`]: response rate limiting for the UDP workers, one lock-free table they share.
//! - [`server`]: starts everything: UDP workers, the TCP and TLS listeners, the zone builder.
//! - `udp`: the UDP hot path, one thread and `SO_REUSEPORT` socket per worker, datagrams
//!   taken and answered in `recvmmsg`/`sendmmsg` batches.
//! - `connection`: one DNS-over-TCP client, length-prefixed queries in and answers out.
//! - `stats`: the query counters UDP workers and TCP connections flush to metrics.
//! - [`http`]: the Mesos-DNS HTTP API.
//! - [`config`]: flags and defaults, and a Mesos-DNS `config.json` read on top
//!   ([`config::mesos_dns`]); [`run`] wires it all to a table subscriber.

pub mod config;
mod connection;
pub mod http;
pub mod proto;
pub mod route;
pub mod rrl;
pub mod server;
mod stats;
mod udp;
pub mod upstream;
pub mod zone;

pub use config::Config;
pub use server::run;
