//! `--nutcracker-config nutcracker.yml`: a twemproxy pool read as a standalone pool, so a
//! twemproxy user switches without rewriting and without moving a key.
//!
//! The file is read by [`ocean_core::placement::nutcracker`]; this module takes what the
//! memcached router serves: ketama or modula over any of twemproxy's hashes the reader
//! knows, `hash_tag`, server names as written, weights. A pool that asks for anything else
//! (a Redis pool) is refused at start with the key named, never served with keys silently
//! in other places. Keys that tune timing and `auto_eject_hosts` become settings; the rest are
//! named at start as ignored.

use std::path::Path;

use anyhow::{bail, Context};
use ocean_core::placement::nutcracker as file;

use crate::pool::{KeyPlacement, PoolSpec, ReplicaSetSpec, ServerSpec};

/// One pool of a nutcracker.yml, as the router runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct NutcrackerPool {
    /// The servers as one replica set, hashed as twemproxy does.
    pub pool: PoolSpec,
    /// The pool as the file has it: `listen`, the timing keys, `auto_eject_hosts`, and the
    /// keys read but not used.
    pub file: file::NutcrackerPool,
}

/// Reads the pool `want` of the nutcracker.yml at `path` (the only one when `want` is
/// `None`).
///
/// # Errors
/// An unreadable or malformed file, an unknown pool, several pools and no choice, or a
/// pool whose placement the router cannot reproduce; each names the file and the key.
pub fn load(path: &Path, want: Option<&str>) -> anyhow::Result<NutcrackerPool> {
    let p = file::load(path, want)?;
    memcached_pool(p).with_context(|| format!("--nutcracker-config {}", path.display()))
}

/// [`load`] on the file's text.
///
/// # Errors
/// As [`load`].
pub fn parse(text: &str, want: Option<&str>) -> anyhow::Result<NutcrackerPool> {
    memcached_pool(file::parse(text, want)?)
}

/// What of a twemproxy pool this router serves; the rest is refused by name.
fn memcached_pool(p: file::NutcrackerPool) -> anyhow::Result<NutcrackerPool> {
    let name = p.name.clone();
    if p.redis {
        bail!("pool {name:?}: redis: true is a Redis pool: run ocean redis-router for it");
    }
    if p.redis_auth.is_some() || p.redis_db != 0 {
        bail!("pool {name:?}: redis_auth and redis_db are for Redis pools: run ocean redis-router for it");
    }
    let pool = PoolSpec {
        name: name.clone(),
        hash: p.hash,
        replica_sets: vec![ReplicaSetSpec {
            name,
            servers: p
                .servers
                .iter()
                .map(|s| ServerSpec {
                    addr: s.addr,
                    name: s.name.clone(),
                    weight: s.weight,
                })
                .collect(),
        }],
        placement: KeyPlacement {
            distribution: p.distribution,
            hash_tag: p.hash_tag,
        },
    };
    Ok(NutcrackerPool { pool, file: p })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ketama::KeyHash;
    use ocean_core::placement::ketama::Distribution;
    use std::time::Duration;

    const FILE: &str = "
alpha:
  listen: 127.0.0.1:22121
  hash: fnv1a_64
  distribution: ketama
  timeout: 400
  backlog: 1024
  preconnect: true
  auto_eject_hosts: true
  server_retry_timeout: 2000
  server_failure_limit: 1
  servers:
   - 127.0.0.1:11212:1
   - 127.0.0.1:11211:2
   - 127.0.0.1:11213:1 cache-3
beta:
  listen: 127.0.0.1:22122
  hash: md5
  servers:
   - 127.0.0.1:11214:1
";

    #[test]
    fn a_pool_becomes_a_standalone_pool_hashed_as_twemproxy_does() {
        let p = parse(FILE, Some("alpha")).unwrap();
        assert_eq!(p.file.listen, "127.0.0.1:22121".parse().unwrap());
        assert_eq!(p.pool.hash, KeyHash::Fnv1a64);
        let names: Vec<(&str, u32)> = p.pool.replica_sets[0]
            .servers
            .iter()
            .map(|s| (s.name.as_str(), s.weight))
            .collect();
        assert_eq!(
            names,
            vec![("cache-3", 1), ("127.0.0.1", 2), ("127.0.0.1:11212", 1)]
        );
        assert_eq!(p.file.timeout, Some(Duration::from_millis(400)));
        assert_eq!(p.file.server_retry_timeout, Some(Duration::from_secs(2)));
        assert_eq!(p.file.server_failure_limit, Some(1));
        assert!(p.file.auto_eject_hosts);
        assert!(p.file.ignored.iter().any(|i| i.starts_with("backlog")));
        assert_eq!(parse(FILE, Some("beta")).unwrap().pool.hash, KeyHash::Md5);
    }

    #[test]
    fn modula_and_hash_tag_are_kept_for_placement() {
        let text = "p:\n  listen: 127.0.0.1:1\n  distribution: modula\n  hash_tag: \"{}\"\n  servers:\n   - 127.0.0.1:11211:1\n";
        let p = parse(text, None).unwrap();
        assert_eq!(p.pool.placement.distribution, Distribution::Modula);
        assert_eq!(p.pool.placement.hash_tag, Some(*b"{}"));
        assert_eq!(p.pool.placement.hashed(b"user:{42}:name"), b"42");
        let plain = parse(FILE, Some("beta")).unwrap();
        assert_eq!(plain.pool.placement, KeyPlacement::default());
    }

    #[test]
    fn what_would_move_keys_is_refused_naming_the_key() {
        let err = |text: &str, want: Option<&str>| format!("{:#}", parse(text, want).unwrap_err());
        assert!(err(FILE, None).contains("--nutcracker-pool"));
        assert!(err(FILE, Some("gamma")).contains("no pool \"gamma\""));
        let one = |extra: &str| {
            format!("p:\n  listen: 127.0.0.1:1\n{extra}\n  servers:\n   - 127.0.0.1:11211:1\n")
        };
        for (extra, needle) in [
            ("  hash: jenkins", "hash: jenkins is not supported"),
            ("  distribution: random", "distribution: random"),
            ("  redis: true", "ocean redis-router"),
        ] {
            let e = err(&one(extra), None);
            assert!(e.contains(needle), "{extra}: {e}");
        }
        assert!(err("p:\n  servers:\n   - 127.0.0.1:11211:1\n", None).contains("no listen"));
        assert!(err(&one("").replace(":11211:1", ":11211:0"), None).contains("weight 0"));
        assert!(err(&one("").replace(":11211:1", ":11211"), None).contains("HOST:PORT:WEIGHT"));
        assert!(err("[1, 2]", None).contains("mapping"));
        assert!(err("p: [", None).contains("not YAML"));
        let unix = "p:\n  listen: /tmp/sock\n  servers:\n   - 127.0.0.1:11211:1\n";
        assert!(err(unix, None).contains("unix sockets"));
    }
}
