//! twemproxy's `nutcracker.yml`, read as twemproxy reads it, for the routers that start
//! from one (`--nutcracker-config`): each router then takes what it can serve and refuses
//! the rest by name.
//!
//! Placement keys (`hash`, `distribution`, `hash_tag`, server names and weights) are kept
//! exactly, so that a router places every key where nutcracker did; an unknown `hash` or
//! `distribution: random` is refused here, since no router could reproduce it. Keys that
//! only tune timing are returned as settings; the rest are listed in `ignored`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use yaml_rust2::{Yaml, YamlLoader};

use super::ketama::{server_name_for, twemproxy_name_cmp, Distribution, KeyHash};

/// One server line: `HOST:PORT:WEIGHT [NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NutcrackerServer {
    pub addr: SocketAddr,
    /// What ketama hashes: `NAME` when given, else `HOST` (port 11211) or `HOST:PORT`.
    pub name: String,
    pub weight: u32,
}

/// One pool of a nutcracker.yml.
#[derive(Debug, Clone, PartialEq)]
pub struct NutcrackerPool {
    /// The pool's name in the file.
    pub name: String,
    /// `listen`.
    pub listen: SocketAddr,
    /// `hash` (default `fnv1a_64`).
    pub hash: KeyHash,
    /// `distribution` (default `ketama`).
    pub distribution: Distribution,
    /// `hash_tag`: two bytes; only what is between them is hashed.
    pub hash_tag: Option<[u8; 2]>,
    /// `redis: true`.
    pub redis: bool,
    /// `redis_auth`: the password clients send and the servers expect.
    pub redis_auth: Option<String>,
    /// `redis_db`.
    pub redis_db: u32,
    /// `timeout` (ms): the backend reply timeout.
    pub timeout: Option<Duration>,
    /// `server_failure_limit`: failures before a server is marked down.
    pub server_failure_limit: Option<u32>,
    /// `server_retry_timeout` (ms): when a down server is tried again.
    pub server_retry_timeout: Option<Duration>,
    /// `server_connections`: connections per server.
    pub server_connections: Option<usize>,
    /// `auto_eject_hosts`.
    pub auto_eject_hosts: bool,
    /// The servers in twemproxy's order: sorted by name, shorter names first.
    pub servers: Vec<NutcrackerServer>,
    /// Keys read but not used, with why: for the start log.
    pub ignored: Vec<String>,
}

/// Reads the pool `want` of the nutcracker.yml at `path` (the only one when `want` is
/// `None`).
///
/// # Errors
/// An unreadable or malformed file, an unknown pool, several pools and no choice, or a
/// pool whose placement no router can reproduce; each names the file and the key.
pub fn load(path: &Path, want: Option<&str>) -> anyhow::Result<NutcrackerPool> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--nutcracker-config {}", path.display()))?;
    parse(&text, want).with_context(|| format!("--nutcracker-config {}", path.display()))
}

/// [`load`] on the file's text.
///
/// # Errors
/// As [`load`].
pub fn parse(text: &str, want: Option<&str>) -> anyhow::Result<NutcrackerPool> {
    let docs = YamlLoader::load_from_str(text).context("not YAML")?;
    let Some(Yaml::Hash(pools)) = docs.first() else {
        bail!("expected a mapping of pool names to pools");
    };
    let names: Vec<&str> = pools.keys().filter_map(Yaml::as_str).collect();
    let (name, body) = match want {
        Some(w) => pools
            .iter()
            .find(|(k, _)| k.as_str() == Some(w))
            .with_context(|| format!("no pool {w:?} (the file has {names:?})"))?,
        None => match pools.iter().collect::<Vec<_>>().as_slice() {
            [one] => *one,
            _ => bail!(
                "{} pools ({names:?}): pick one with --nutcracker-pool (one router per pool)",
                pools.len()
            ),
        },
    };
    let name = name
        .as_str()
        .context("a pool name is not a string")?
        .to_string();
    pool(&name, body).with_context(|| format!("pool {name:?}"))
}

fn pool(name: &str, body: &Yaml) -> anyhow::Result<NutcrackerPool> {
    let Yaml::Hash(keys) = body else {
        bail!("expected a mapping of settings");
    };
    let mut out = NutcrackerPool {
        name: name.to_string(),
        listen: SocketAddr::from(([127, 0, 0, 1], 22121)),
        hash: KeyHash::Fnv1a64,
        distribution: Distribution::Ketama,
        hash_tag: None,
        redis: false,
        redis_auth: None,
        redis_db: 0,
        timeout: None,
        server_failure_limit: None,
        server_retry_timeout: None,
        server_connections: None,
        auto_eject_hosts: false,
        servers: Vec::new(),
        ignored: Vec::new(),
    };
    let mut listen = None;
    let mut servers = None;
    for (k, v) in keys {
        let key = k.as_str().context("a key is not a string")?;
        let what = || format!("{key}: {v:?}");
        match key {
            "listen" => listen = Some(v.as_str().with_context(what)?.to_string()),
            "hash" => {
                out.hash = match v.as_str().with_context(what)? {
                    "fnv1a_64" => KeyHash::Fnv1a64,
                    "md5" => KeyHash::Md5,
                    "murmur" => KeyHash::Murmur,
                    "crc32" => KeyHash::Crc32,
                    "crc32a" => KeyHash::Crc32a,
                    other => bail!(
                        "hash: {other} is not supported (fnv1a_64, md5, murmur, crc32, \
                         crc32a); keys would land elsewhere"
                    ),
                }
            }
            "distribution" => {
                out.distribution = match v.as_str().with_context(what)? {
                    "ketama" => Distribution::Ketama,
                    "modula" => Distribution::Modula,
                    other => bail!(
                        "distribution: {other} is not supported (ketama, modula); keys would \
                         land elsewhere"
                    ),
                }
            }
            "hash_tag" => {
                let tag = v.as_str().with_context(what)?.as_bytes();
                let [open, close] = tag else {
                    bail!("hash_tag: {v:?} must be two characters, as twemproxy requires");
                };
                out.hash_tag = Some([*open, *close]);
            }
            "redis" => out.redis = v.as_bool().with_context(what)?,
            "redis_auth" => out.redis_auth = Some(v.as_str().with_context(what)?.to_string()),
            "redis_db" => {
                out.redis_db = v
                    .as_i64()
                    .and_then(|n| u32::try_from(n).ok())
                    .with_context(what)?;
            }
            "timeout" => out.timeout = Some(millis(v).with_context(what)?),
            "server_retry_timeout" => {
                out.server_retry_timeout = Some(millis(v).with_context(what)?);
            }
            "server_failure_limit" => {
                let n = v.as_i64().filter(|n| *n > 0).with_context(what)?;
                out.server_failure_limit = Some(u32::try_from(n).context("too large")?);
            }
            "server_connections" => {
                let n = v.as_i64().filter(|n| *n > 0).with_context(what)?;
                out.server_connections = Some(usize::try_from(n).context("too large")?);
            }
            "auto_eject_hosts" => out.auto_eject_hosts = v.as_bool().with_context(what)?,
            "servers" => servers = Some(v),
            "backlog" | "preconnect" | "client_connections" | "stats_listen" => {
                out.ignored.push(format!("{key}: not used by ocean"));
            }
            other => out.ignored.push(format!("{other}: unknown key, ignored")),
        }
    }
    let listen = listen.context("no listen address")?;
    out.listen = resolve(&listen).with_context(|| format!("listen: {listen}"))?;
    let servers = servers.and_then(Yaml::as_vec).context("no servers list")?;
    for s in servers {
        let line = s.as_str().with_context(|| format!("servers: {s:?}"))?;
        out.servers
            .push(server(line).with_context(|| format!("servers: {line}"))?);
    }
    if out.servers.is_empty() {
        bail!("servers: empty");
    }
    // twemproxy sorts a pool's servers by name, shorter names first (its string_compare),
    // and refuses two with one name: the order is what modula indexes.
    out.servers
        .sort_by(|a, b| twemproxy_name_cmp(&a.name, &b.name));
    if let Some(w) = out.servers.windows(2).find(|w| w[0].name == w[1].name) {
        bail!("servers: two servers named {:?}", w[0].name);
    }
    Ok(out)
}

/// twemproxy's server line: `HOST:PORT:WEIGHT [NAME]`. With a name, the name is what
/// ketama hashes; without, `HOST` (port 11211) or `HOST:PORT`, as written.
fn server(line: &str) -> anyhow::Result<NutcrackerServer> {
    let mut words = line.split_whitespace();
    let addr = words.next().context("empty")?;
    let name = words.next();
    if words.next().is_some() {
        bail!("expected HOST:PORT:WEIGHT [NAME]");
    }
    // Split from the right: an IPv6 host has colons of its own.
    let mut parts = addr.rsplitn(3, ':');
    let (Some(weight), Some(port), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("expected HOST:PORT:WEIGHT");
    };
    let weight: u32 = weight.parse().context("bad weight")?;
    if weight == 0 {
        bail!("weight 0");
    }
    let port: u16 = port.parse().context("bad port")?;
    let host_only = host.trim_start_matches('[').trim_end_matches(']');
    let sock = (host_only, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host_only}"))?
        .next()
        .with_context(|| format!("{host_only} has no address"))?;
    Ok(NutcrackerServer {
        addr: sock,
        name: match name {
            Some(n) => n.to_string(),
            None => server_name_for(host, port),
        },
        weight,
    })
}

fn resolve(hostport: &str) -> anyhow::Result<SocketAddr> {
    if hostport.starts_with('/') {
        bail!("unix sockets are not supported");
    }
    hostport.to_socket_addrs()?.next().context("no address")
}

fn millis(v: &Yaml) -> Option<Duration> {
    v.as_i64()
        .and_then(|n| u64::try_from(n).ok())
        .filter(|n| *n > 0)
        .map(Duration::from_millis)
}

/// The part of `key` twemproxy hashes under `hash_tag`: what lies between the first
/// `tag[0]` and the first `tag[1]` after it, when that is not empty; else the whole key.
pub fn tagged(key: &[u8], tag: Option<[u8; 2]>) -> &[u8] {
    let Some([open, close]) = tag else {
        return key;
    };
    let Some(start) = key.iter().position(|&b| b == open) else {
        return key;
    };
    match key[start + 1..].iter().position(|&b| b == close) {
        Some(len) if len > 0 => &key[start + 1..start + 1 + len],
        _ => key,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
  hash: murmur
  distribution: modula
  hash_tag: \"{}\"
  redis: true
  redis_auth: s3cret
  servers:
   - 127.0.0.1:6379:1
";

    #[test]
    fn a_pool_is_read_as_twemproxy_reads_it() {
        let p = parse(FILE, Some("alpha")).unwrap();
        assert_eq!(p.listen, "127.0.0.1:22121".parse().unwrap());
        assert_eq!(p.hash, KeyHash::Fnv1a64);
        let names: Vec<(&str, u32)> = p
            .servers
            .iter()
            .map(|s| (s.name.as_str(), s.weight))
            .collect();
        // twemproxy's order: by name, shorter first.
        assert_eq!(
            names,
            vec![("cache-3", 1), ("127.0.0.1", 2), ("127.0.0.1:11212", 1)]
        );
        assert_eq!(p.timeout, Some(Duration::from_millis(400)));
        assert_eq!(p.server_retry_timeout, Some(Duration::from_secs(2)));
        assert_eq!(p.server_failure_limit, Some(1));
        assert!(p.auto_eject_hosts && !p.redis);
        assert!(p.ignored.iter().any(|i| i.starts_with("backlog")));
        let b = parse(FILE, Some("beta")).unwrap();
        assert_eq!(
            (b.hash, b.distribution, b.hash_tag),
            (KeyHash::Murmur, Distribution::Modula, Some(*b"{}"))
        );
        assert!(b.redis);
        assert_eq!(b.redis_auth.as_deref(), Some("s3cret"));
    }

    #[test]
    fn what_no_router_can_reproduce_is_refused_naming_the_key() {
        let err = |text: &str, want: Option<&str>| format!("{:#}", parse(text, want).unwrap_err());
        assert!(err(FILE, None).contains("--nutcracker-pool"));
        assert!(err(FILE, Some("gamma")).contains("no pool \"gamma\""));
        let one = |extra: &str| {
            format!("p:\n  listen: 127.0.0.1:1\n{extra}\n  servers:\n   - 127.0.0.1:11211:1\n")
        };
        for (extra, needle) in [
            ("  hash: jenkins", "hash: jenkins is not supported"),
            ("  distribution: random", "distribution: random"),
            ("  hash_tag: \"{\"", "two characters"),
            ("  redis: maybe", "redis"),
        ] {
            let e = err(&one(extra), None);
            assert!(e.contains(needle), "{extra}: {e}");
        }
        assert!(err("p:\n  servers:\n   - 127.0.0.1:11211:1\n", None).contains("no listen"));
        assert!(err(&one("").replace(":11211:1", ":11211:0"), None).contains("weight 0"));
        assert!(err(&one("").replace(":11211:1", ":11211"), None).contains("HOST:PORT:WEIGHT"));
        assert!(err("[1, 2]", None).contains("mapping"));
        let twice = one("").replace(":11211:1\n", ":11211:1 a\n   - 127.0.0.1:11212:1 a\n");
        assert!(err(&twice, None).contains("two servers named \"a\""));
        assert!(err("p: [", None).contains("not YAML"));
        let unix = "p:\n  listen: /tmp/sock\n  servers:\n   - 127.0.0.1:11211:1\n";
        assert!(err(unix, None).contains("unix sockets"));
    }

    #[test]
    fn hash_tags_as_twemproxy_cuts_them() {
        let tag = Some(*b"{}");
        assert_eq!(tagged(b"{user1}:name", tag), b"user1");
        assert_eq!(tagged(b"a{b}c{d}", tag), b"b");
        assert_eq!(tagged(b"{}x", tag), b"{}x");
        assert_eq!(tagged(b"no-tag", tag), b"no-tag");
        assert_eq!(tagged(b"{open", tag), b"{open");
        assert_eq!(tagged(b"{user1}:name", None), b"{user1}:name");
    }
}
