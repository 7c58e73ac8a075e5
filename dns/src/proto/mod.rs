//! The DNS wire format, as much of it as an authoritative server for one zone needs.
//!
//! Synchronous and allocation-free on the query side: [`query::parse`] reads a query into a
//! [`query::Query`] that borrows nothing, [`encode`] writes names and records. Decoding is
//! total: every length is checked against the buffer, compression pointers must point
//! backwards and are bounded in number, names are bounded to 255 bytes.

pub mod ecs;
pub mod encode;
pub mod query;

/// Record types this server knows.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const SOA: u16 = 6;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const ANY: u16 = 255;
}

/// Response codes.
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
    /// Extended (EDNS) rcode 16: the upper 8 bits go in the OPT record.
    pub const BADVERS: u16 = 16;
}

/// Class IN.
pub const CLASS_IN: u16 = 1;

/// Largest UDP answer we send to an EDNS client, whatever size it offers (RFC 9715 / DNS
/// flag day 2020: 1232 avoids IP fragmentation).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// The UDP limit for clients without EDNS.
pub const CLASSIC_UDP_PAYLOAD: u16 = 512;

/// The size of a DNS header.
pub const HEADER_LEN: usize = 12;
