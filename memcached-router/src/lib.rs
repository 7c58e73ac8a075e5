//! # ocean-memcached-router
//!
//! mcrouter-style routing for memcached: ketama pools compatible with twemproxy, several
//! replica sets per pool, writes to all, reads fail over.
//!
//! # Layout
//! - [`proto`]: the memcached ASCII and meta protocol codec (synchronous, total).
//! - [`ketama`]: the ketama ring, byte-compatible with twemproxy's placement.
//!
//! The daemon (listener, connections, routing, failure detection) comes with issue 5.

pub mod ketama;
pub mod proto;
