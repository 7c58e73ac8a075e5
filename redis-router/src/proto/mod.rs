//! The RESP codec: client requests (RESP2/RESP3 multibulk and inline commands), replies the
//! proxy makes itself, and backend replies (checked for relaying, parsed where read).
//!
//! Synchronous, no IO, no tokio, total: every function here returns an error or `None`
//! ("need more bytes") on any input and never panics. Every length read off the wire is
//! checked against a limit ([`Limits`], [`PreAuthLimits`], [`ReplyLimits`]) before
//! anything is allocated from it.
//!
//! - [`request`]: client requests; [`Decoder::decode`] is the connection's one decoder.
//! - [`reply`]: backend replies; [`decode_reply`]/[`ReplyScanner`] measure one for
//!   relaying, [`parse`] builds a [`Value`] from the same scan.
//! - [`encode`]: replies the router makes itself, and request encoding.
//! - `num`: decimal numbers as redis reads them.

pub mod encode;
mod num;
pub mod reply;
pub mod request;

pub use encode::*;
pub use reply::{decode_reply, parse, ReplyError, ReplyLimits, ReplyScanner, Value};
pub use request::{decode, split_args, DecodeError, Decoder, Limits, PreAuthLimits, Request};
