//! Where a key lives in a pool of servers, exactly as the proxies users migrate from put it:
//! twemproxy's ketama and modula over its key hashes ([`ketama`]), mcrouter's ch3
//! ([`furc`]). Shared by the memcached and redis routers.

pub mod furc;
pub mod ketama;
pub mod nutcracker;
