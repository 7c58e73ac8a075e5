//! # ocean-redis-router
//!
//! Clients speak plain Redis to one local port; the router routes each command to the Redis
//! Cluster node that owns its slot.
//!
//! # Layout
//! - [`proto`]: the RESP2/RESP3 codec, with inline commands (synchronous, total, bounded).
//! - [`slot`]: CRC16 key slots with hash tags.
//! - [`command`]: the command table: key positions, flags, how multi-key commands split.
//!
//! The daemon (listener, connections, slot map, MOVED/ASK, pools) comes with issue 4.

pub mod command;
pub mod proto;
pub mod slot;
