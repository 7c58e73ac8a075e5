//! A pool as the router runs it: replica sets of weighted, named servers and the key hash,
//! whichever source it came from (flags, the `memcached` table, a nutcracker.yml).

use std::net::SocketAddr;

use anyhow::bail;

use crate::ketama::KeyHash;
use ocean_core::placement::ketama::Distribution;
use ocean_core::placement::nutcracker::tagged;

/// One backend server of a replica set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The name hashed onto the ketama ring (twemproxy's: host as written, `:port` unless
    /// 11211).
    pub name: String,
    /// Ketama weight.
    pub weight: u32,
}

/// One replica set: a full copy of the keyspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSetSpec {
    /// Its name (for logs and metrics).
    pub name: String,
    /// Its servers, in configuration order.
    pub servers: Vec<ServerSpec>,
}

/// A pool: replica sets in preference order, hashed the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// Pool name (metrics label).
    pub name: String,
    /// The key hash.
    pub hash: KeyHash,
    /// Replica sets; reads go to the first and fail over in order.
    pub replica_sets: Vec<ReplicaSetSpec>,
    /// twemproxy's `distribution` and `hash_tag` (a nutcracker.yml pool); the default,
    /// ketama over the whole key, everywhere else.
    pub placement: KeyPlacement,
}

/// How a key's hash picks a server beyond the hash function: twemproxy's `distribution`
/// (ketama or modula) and `hash_tag` (only what lies between the two bytes is hashed, so
/// `{user42}:name` and `{user42}:mail` share a server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyPlacement {
    pub distribution: Distribution,
    pub hash_tag: Option<[u8; 2]>,
}

impl KeyPlacement {
    /// The part of `key` that is hashed.
    pub fn hashed<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        tagged(key, self.hash_tag)
    }
}

impl PoolSpec {
    /// Checks that every replica set has servers with non-zero weights.
    ///
    /// # Errors
    /// A message naming the replica set.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.hash == KeyHash::Ch3 && self.placement != KeyPlacement::default() {
            bail!(
                "pool {}: ch3 places by mcrouter's rules; distribution and hash_tag are twemproxy's",
                self.name
            );
        }
        if self.replica_sets.is_empty() {
            bail!("pool {}: no replica sets", self.name);
        }
        for rs in &self.replica_sets {
            if rs.servers.is_empty() {
                bail!("pool {} replica set {}: no servers", self.name, rs.name);
            }
            if self.hash == KeyHash::Ch3 {
                if let Some(s) = rs.servers.iter().find(|s| s.weight != 1) {
                    bail!(
                        "pool {} replica set {}: {} has weight {}; ch3 places by position and has no weights",
                        self.name,
                        rs.name,
                        s.addr,
                        s.weight
                    );
                }
            }
            if let Some(s) = rs.servers.iter().find(|s| s.weight == 0) {
                bail!(
                    "pool {} replica set {}: {} has weight 0",
                    self.name,
                    rs.name,
                    s.addr
                );
            }
        }
        Ok(())
    }

    /// The pool a `memcached` table entry describes (server names from their addresses).
    pub fn from_table(pool: &ocean_core::table::memcached::MemcachedPool) -> PoolSpec {
        use ocean_core::table::memcached::MemcachedHash;
        PoolSpec {
            name: pool.name.clone(),
            hash: match pool.hash {
                MemcachedHash::Fnv1a64 => KeyHash::Fnv1a64,
                MemcachedHash::Md5 => KeyHash::Md5,
            },
            replica_sets: pool
                .replicas
                .iter()
                .map(|rs| ReplicaSetSpec {
                    name: rs.name.clone(),
                    servers: rs
                        .servers
                        .iter()
                        .map(|s| ServerSpec {
                            addr: s.addr,
                            name: crate::ketama::server_name(s.addr),
                            weight: s.weight,
                        })
                        .collect(),
                })
                .collect(),
            placement: KeyPlacement::default(),
        }
    }
}
