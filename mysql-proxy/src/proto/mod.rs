//! The MySQL wire protocol as the proxy speaks it: pure, synchronous and total. Nothing
//! here does I/O or knows tokio; every function takes bytes and returns a value or an
//! error, never panics on what a peer sent, and checks every length read off the wire
//! against a limit before allocating for it.
//!
//! - [`frame`]: packets (3-byte length, sequence id, payload) and the 16 MB continuation
//!   rule: [`Decoder::decode`], [`encode`].
//! - [`handshake`]: the greeting, SSLRequest, the handshake response and the auth
//!   exchange (switch requests, more data), on mysql_common's packet types.
//! - [`reply`]: ERR and OK payloads.
//! - [`command`]: the client's command stream after login, scanned for the commands the
//!   proxy must answer itself (COM_INIT_DB, COM_CHANGE_USER) without buffering the rest.
//! - [`exchange`]: the command/response exchange followed from packet headers, to tell
//!   when a relayed session is at rest (drain closes it only then).
//! - [`proxy_v2`]: the PROXY protocol v2 header of L4 balancers.

pub mod command;
pub mod exchange;
pub mod frame;
pub mod handshake;
pub mod proxy_v2;
pub mod reply;

pub use frame::{encode, DecodeError, Decoder, Packet, LOGIN_PACKET_LIMIT, MAX_PAYLOAD};
