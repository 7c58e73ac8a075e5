//! `--mcrouter-config config.json`: an mcrouter route as the standalone pool, so an
//! mcrouter user switches without moving a key.
//!
//! What maps onto the router's model (one pool of replica sets, each a hashed list of
//! servers):
//! - a leaf, `PoolRoute|NAME` or `{"type": "PoolRoute", "pool": ...}` or
//!   `{"type": "HashRoute", "children": "Pool|NAME"}`, with mcrouter's default hash `Ch3`:
//!   one replica set placed by [`crate::furc`], exactly as mcrouter places it;
//! - `AllSyncRoute` (writes to every child, worst reply) and `AllInitialRoute` (the first
//!   child's reply) over leaves: replica sets with `--write-policy all` / `first`;
//! - `FailoverRoute` (reads go to the next child on an error) and `MissFailoverRoute` (also
//!   on a miss) over leaves: replica sets, the latter with `--miss-failover`;
//! - `WarmUpRoute` (`cold`, `warm`, `exptime`): sets [cold, warm], a miss on cold is read
//!   from warm and stored in cold with `add`.
//!
//! - `PrefixSelectorRoute` at the root (`policies`, `wildcard`): each policy is one of the
//!   routes above for the keys starting with its prefix (the longest prefix wins), the
//!   `wildcard` for every other key. Without a `wildcard` it is refused: mcrouter answers
//!   such keys with an error, which no client expects from a cache.
//!
//! Anything else (another hash, `OperationSelectorRoute`, several `routes`, routes nested
//! deeper) is refused at start naming the route: a cache served from other places than
//! before is a cold cache.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use anyhow::{bail, Context};
use serde_json::{Map, Value};

use crate::ketama::KeyHash;
use crate::pool::{PoolSpec, ReplicaSetSpec, ServerSpec};

/// An mcrouter config as the router runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct McrouterRoute {
    /// The replica sets (one per leaf route), hashed with ch3.
    pub pool: PoolSpec,
    /// `AllSyncRoute`: a write waits for every set and answers the worst reply
    /// (`--write-policy all`); otherwise the first set's reply (`first`).
    pub write_all: bool,
    /// `MissFailoverRoute`, `WarmUpRoute`: a miss is read from the next set.
    pub miss_failover: bool,
    /// `WarmUpRoute`'s exptime: a value found in warm is added to cold with it.
    pub warm_fill: Option<u32>,
    /// How the file was read, for the start log (semantics that differ from mcrouter's).
    pub notes: Vec<String>,
    /// `PrefixSelectorRoute`'s policies: the keys starting with a prefix take its route
    /// (the longest prefix wins); every other key takes this one (the `wildcard`).
    pub prefixes: Vec<(String, McrouterRoute)>,
}

/// Reads the mcrouter config at `path`.
///
/// # Errors
/// An unreadable file, JSON that does not parse, or a route the router cannot reproduce;
/// each names the file and the route.
pub fn load(path: &Path) -> anyhow::Result<McrouterRoute> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--mcrouter-config {}", path.display()))?;
    parse(&text).with_context(|| format!("--mcrouter-config {}", path.display()))
}

/// [`load`] on the file's text.
///
/// # Errors
/// As [`load`].
pub fn parse(text: &str) -> anyhow::Result<McrouterRoute> {
    let doc: Value = serde_json::from_str(&strip_comments(text)).context("not JSON")?;
    let Value::Object(top) = doc else {
        bail!("expected an object with \"pools\" and \"route\"");
    };
    let pools = match top.get("pools") {
        Some(Value::Object(p)) => p.clone(),
        None => Map::new(),
        Some(_) => bail!("\"pools\" is not an object"),
    };
    let route = match (top.get("route"), top.get("routes")) {
        (Some(r), None) => r,
        (None, Some(Value::Array(rs))) => match rs.as_slice() {
            [one] => one.get("route").context("routes[0] has no \"route\"")?,
            _ => bail!(
                "{} entries in \"routes\": one route per router (run one per route)",
                rs.len()
            ),
        },
        (None, Some(_)) => bail!("\"routes\" is not a list"),
        (Some(_), Some(_)) => bail!("both \"route\" and \"routes\""),
        (None, None) => bail!("no \"route\""),
    };
    let mut notes = Vec::new();
    for key in top.keys() {
        if !["pools", "route", "routes"].contains(&key.as_str()) {
            notes.push(format!("{key}: not used by ocean"));
        }
    }
    if route_type(route)? != "PrefixSelectorRoute" {
        let mut out = route_of(route, &pools, "mcrouter")?;
        out.notes.splice(0..0, notes);
        return Ok(out);
    }
    let wildcard = route
        .get("wildcard")
        .context("PrefixSelectorRoute has no \"wildcard\": keys matching no prefix would have no pool (mcrouter answers them with an error)")?;
    let mut out = route_of(wildcard, &pools, "mcrouter").context("PrefixSelectorRoute wildcard")?;
    out.notes.splice(0..0, notes);
    let policies = match route.get("policies") {
        Some(Value::Object(p)) => p,
        Some(_) => bail!("PrefixSelectorRoute: \"policies\" is not an object"),
        None => bail!("PrefixSelectorRoute has no \"policies\""),
    };
    for (prefix, policy) in policies {
        // A memcached key has no spaces or control characters: such a prefix never matches.
        if prefix.is_empty() || prefix.bytes().any(|b| b <= b' ' || b == 0x7f) {
            bail!("PrefixSelectorRoute: prefix {prefix:?} can never start a key");
        }
        let mut one = route_of(policy, &pools, &format!("mcrouter[{prefix}]"))
            .with_context(|| format!("PrefixSelectorRoute policy {prefix:?}"))?;
        if !one.prefixes.is_empty() {
            bail!("PrefixSelectorRoute policy {prefix:?}: a PrefixSelectorRoute inside another is not supported");
        }
        out.notes.extend(
            one.notes
                .drain(..)
                .map(|n| format!("policy {prefix:?}: {n}")),
        );
        out.prefixes.push((prefix.clone(), one));
    }
    Ok(out)
}

/// One route below the root (or the root itself): a pool named `name` of replica sets.
fn route_of(
    route: &Value,
    pools: &Map<String, Value>,
    name: &str,
) -> anyhow::Result<McrouterRoute> {
    let mut out = McrouterRoute {
        pool: PoolSpec {
            name: name.into(),
            hash: KeyHash::Ch3,
            replica_sets: Vec::new(),
            placement: crate::pool::KeyPlacement::default(),
        },
        write_all: false,
        miss_failover: false,
        warm_fill: None,
        notes: Vec::new(),
        prefixes: Vec::new(),
    };
    let kind = route_type(route)?;
    let children = |key: &str| -> anyhow::Result<Vec<ReplicaSetSpec>> {
        let list = match route.get(key) {
            Some(Value::Array(list)) => list.clone(),
            Some(Value::String(s)) if s.starts_with("Pool|") => {
                bail!("{kind}: \"{key}\": \"{s}\" (a pool's servers as children) is not supported; use PoolRoute|NAME children")
            }
            Some(one) => vec![one.clone()],
            None => bail!("{kind} has no \"{key}\""),
        };
        list.iter()
            .map(|c| leaf(c, pools).with_context(|| format!("{kind} child")))
            .collect()
    };
    match kind.as_str() {
        "PoolRoute" | "HashRoute" => out.pool.replica_sets.push(leaf(route, pools)?),
        "AllSyncRoute" => {
            out.pool.replica_sets = children("children")?;
            out.write_all = true;
        }
        "AllInitialRoute" => out.pool.replica_sets = children("children")?,
        "FailoverRoute" | "MissFailoverRoute" => {
            out.pool.replica_sets = children("children")?;
            out.miss_failover = kind == "MissFailoverRoute";
            out.notes.push(format!(
                "{kind}: writes go to every child (answered by the first), where mcrouter \
                 writes to the first that answers"
            ));
        }
        "WarmUpRoute" => {
            let cold = route.get("cold").context("WarmUpRoute has no \"cold\"")?;
            let warm = route.get("warm").context("WarmUpRoute has no \"warm\"")?;
            out.pool.replica_sets = vec![
                leaf(cold, pools).context("WarmUpRoute cold")?,
                leaf(warm, pools).context("WarmUpRoute warm")?,
            ];
            let exptime = match route.get("exptime") {
                None => 0,
                Some(v) => v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .context("WarmUpRoute exptime: not a number of seconds")?,
            };
            out.miss_failover = true;
            out.warm_fill = Some(exptime);
            out.notes.push(
                "WarmUpRoute: writes go to cold and warm (answered by cold); mcrouter writes \
                 to cold only"
                    .into(),
            );
        }
        "PrefixSelectorRoute" => bail!("PrefixSelectorRoute is supported at the root only"),
        other => bail!(
            "route type {other} is not supported (PoolRoute, HashRoute, AllSyncRoute, \
             AllInitialRoute, FailoverRoute, MissFailoverRoute, WarmUpRoute, and \
             PrefixSelectorRoute at the root)"
        ),
    }
    let mut names: Vec<&str> = out
        .pool
        .replica_sets
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        bail!("pool {} is used twice", w[0]);
    }
    out.pool.validate()?;
    Ok(out)
}

/// A route's type: `"PoolRoute|A"` -> `PoolRoute`, `{"type": ...}` -> its type.
fn route_type(route: &Value) -> anyhow::Result<String> {
    match route {
        Value::String(s) => Ok(s.split('|').next().unwrap_or_default().to_string()),
        Value::Object(o) => o
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_string)
            .context("a route object has no \"type\""),
        other => bail!("a route is a string or an object, not {other}"),
    }
}

/// A leaf route: one pool hashed with ch3, as one replica set.
fn leaf(route: &Value, pools: &Map<String, Value>) -> anyhow::Result<ReplicaSetSpec> {
    match route {
        Value::String(s) => match s.split_once('|') {
            Some(("PoolRoute" | "Pool", name)) => named_pool(name, pools),
            _ => bail!("route {s:?} is not supported here (PoolRoute|NAME)"),
        },
        Value::Object(o) => {
            let kind = route_type(route)?;
            let pool = match kind.as_str() {
                "PoolRoute" => o.get("pool").context("PoolRoute has no \"pool\"")?,
                "HashRoute" => o.get("children").context("HashRoute has no \"children\"")?,
                other => {
                    bail!("{other} inside another route is not supported (PoolRoute or HashRoute)")
                }
            };
            let hash = match (o.get("hash"), o.get("hash_func")) {
                (Some(Value::Object(h)), _) => h.get("hash_func").and_then(Value::as_str),
                (Some(Value::String(h)), _) | (None, Some(Value::String(h))) => Some(h.as_str()),
                _ => None,
            };
            if let Some(h) = hash.filter(|h| *h != "Ch3") {
                bail!("{kind}: hash {h} is not supported (Ch3); keys would land elsewhere");
            }
            for key in ["shadows", "rates", "shard_splits", "salt"] {
                if o.contains_key(key) {
                    bail!("{kind}: \"{key}\" is not supported");
                }
            }
            match pool {
                Value::String(s) => named_pool(s.strip_prefix("Pool|").unwrap_or(s), pools),
                Value::Object(p) => {
                    let name = p
                        .get("name")
                        .and_then(Value::as_str)
                        .context("an inline pool has no \"name\"")?;
                    pool_servers(name, p)
                }
                other => bail!("{kind}: pool {other} is not a name or a pool"),
            }
        }
        other => bail!("a route is a string or an object, not {other}"),
    }
}

fn named_pool(name: &str, pools: &Map<String, Value>) -> anyhow::Result<ReplicaSetSpec> {
    match pools.get(name) {
        Some(Value::Object(p)) => pool_servers(name, p),
        Some(_) => bail!("pool {name:?} is not an object"),
        None => bail!("no pool {name:?} in \"pools\""),
    }
}

fn pool_servers(name: &str, pool: &Map<String, Value>) -> anyhow::Result<ReplicaSetSpec> {
    if let Some(p) = pool.get("protocol").and_then(Value::as_str) {
        if p != "ascii" {
            bail!("pool {name:?}: protocol {p} is not supported (ascii)");
        }
    }
    let servers = pool
        .get("servers")
        .and_then(Value::as_array)
        .with_context(|| format!("pool {name:?} has no \"servers\" list"))?;
    if servers.is_empty() {
        bail!("pool {name:?}: no servers");
    }
    let servers = servers
        .iter()
        .map(|s| {
            let s = s
                .as_str()
                .with_context(|| format!("pool {name:?}: server {s} is not a string"))?;
            server(s).with_context(|| format!("pool {name:?}: server {s:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(ReplicaSetSpec {
        name: name.to_string(),
        servers,
    })
}

/// `HOST:PORT`, optionally followed by `:ascii` and `:plain` (mcrouter's protocol and
/// security suffixes); IPv6 hosts in brackets.
fn server(s: &str) -> anyhow::Result<ServerSpec> {
    let mut rest = s;
    for suffix in [":plain", ":ascii"] {
        rest = rest.strip_suffix(suffix).unwrap_or(rest);
    }
    let (host, port) = rest.rsplit_once(':').context("expected HOST:PORT")?;
    if port.parse::<u16>().is_err() {
        bail!(
            "expected HOST:PORT (mcrouter suffixes other than :ascii and :plain are not supported)"
        );
    }
    let addr: SocketAddr = rest
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    Ok(ServerSpec {
        addr,
        name: rest.to_string(),
        weight: 1,
    })
}

/// mcrouter accepts `//` and `/* */` comments in its JSON; serde_json does not.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const POOLS: &str = r#""pools": {
        "A": {"servers": ["127.0.0.1:5001", "127.0.0.1:5002:ascii:plain"]},
        "B": {"servers": ["127.0.0.1:5003"], "protocol": "ascii"}
    }"#;

    fn with(route: &str) -> anyhow::Result<McrouterRoute> {
        parse(&format!("{{ {POOLS}, \"route\": {route} }}"))
    }

    #[test]
    fn leaves_and_composites_map_onto_replica_sets() {
        let r = with(r#""PoolRoute|A""#).unwrap();
        assert_eq!(r.pool.hash, KeyHash::Ch3);
        assert_eq!(r.pool.replica_sets.len(), 1);
        assert_eq!(r.pool.replica_sets[0].servers[1].name, "127.0.0.1:5002");
        let r = with(r#"{"type": "HashRoute", "children": "Pool|B", "hash_func": "Ch3"}"#).unwrap();
        assert_eq!(r.pool.replica_sets[0].name, "B");
        let r = with(r#"{"type": "AllSyncRoute", "children": ["PoolRoute|A", {"type": "PoolRoute", "pool": "B"}]}"#).unwrap();
        assert!(r.write_all);
        assert_eq!(r.pool.replica_sets.len(), 2);
        let r =
            with(r#"{"type": "MissFailoverRoute", "children": ["PoolRoute|A", "PoolRoute|B"]}"#)
                .unwrap();
        assert!(r.miss_failover && r.warm_fill.is_none());
        let r = with(r#"{"type": "WarmUpRoute", "cold": "PoolRoute|B", "warm": "PoolRoute|A", "exptime": 300}"#).unwrap();
        assert_eq!(r.pool.replica_sets[0].name, "B");
        assert_eq!(r.warm_fill, Some(300));
        assert!(r.miss_failover);
        let inline = r#"{"route": {"type": "PoolRoute", "pool": {"name": "C", "servers": ["127.0.0.1:1"]}}} // c
        /* trailing */"#;
        assert_eq!(parse(inline).unwrap().pool.replica_sets[0].name, "C");
        let routes = format!(
            r#"{{ {POOLS}, "routes": [{{"aliases": ["/a/b/"], "route": "PoolRoute|A"}}] }}"#
        );
        assert_eq!(parse(&routes).unwrap().pool.replica_sets[0].name, "A");
    }

    #[test]
    fn prefix_selector_policies_are_routes_of_their_own_beside_the_wildcard() {
        let r = with(
            r#"{"type": "PrefixSelectorRoute",
                "policies": {
                    "user:": {"type": "WarmUpRoute", "cold": "PoolRoute|B", "warm": "PoolRoute|A", "exptime": 60},
                    "session:": {"type": "AllSyncRoute", "children": ["PoolRoute|A", "PoolRoute|B"]}
                },
                "wildcard": "PoolRoute|A"}"#,
        )
        .unwrap();
        // The wildcard is the route itself, named as a single route would be.
        assert_eq!(r.pool.name, "mcrouter");
        assert_eq!(r.pool.replica_sets[0].name, "A");
        assert!(!r.write_all && r.warm_fill.is_none());
        let policy = |p: &str| &r.prefixes.iter().find(|(k, _)| k == p).unwrap().1;
        let user = policy("user:");
        assert_eq!(user.pool.name, "mcrouter[user:]");
        assert_eq!(user.warm_fill, Some(60));
        assert_eq!(user.pool.replica_sets[0].name, "B");
        let session = policy("session:");
        assert!(session.write_all);
        assert_eq!(session.pool.replica_sets.len(), 2);
        // A policy's notes name it.
        assert!(r
            .notes
            .iter()
            .any(|n| n.starts_with("policy \"user:\": WarmUpRoute")));
    }

    #[test]
    fn what_would_move_keys_is_refused_naming_the_route() {
        let err = |route: &str| format!("{:#}", with(route).unwrap_err());
        assert!(
            err(r#"{"type": "PrefixSelectorRoute", "policies": {}}"#).contains("no \"wildcard\"")
        );
        assert!(err(r#"{"type": "PrefixSelectorRoute", "policies": {"a b": "PoolRoute|A"}, "wildcard": "PoolRoute|B"}"#)
            .contains("can never start a key"));
        assert!(err(r#"{"type": "PrefixSelectorRoute", "policies": {"": "PoolRoute|A"}, "wildcard": "PoolRoute|B"}"#)
            .contains("can never start a key"));
        assert!(err(r#"{"type": "PrefixSelectorRoute", "policies": {"a": {"type": "PrefixSelectorRoute", "policies": {}, "wildcard": "PoolRoute|A"}}, "wildcard": "PoolRoute|B"}"#)
            .contains("at the root only"));
        assert!(err(r#"{"type": "PrefixSelectorRoute", "policies": {"a": "PoolRoute|Z"}, "wildcard": "PoolRoute|B"}"#)
            .contains("policy \"a\""));
        assert!(
            err(r#"{"type": "OperationSelectorRoute", "default_policy": "PoolRoute|A"}"#)
                .contains("OperationSelectorRoute is not supported")
        );
        assert!(
            err(r#"{"type": "HashRoute", "children": "Pool|A", "hash_func": "Crc32"}"#)
                .contains("hash Crc32")
        );
        assert!(err(r#""PoolRoute|Z""#).contains("no pool \"Z\""));
        assert!(
            err(r#"{"type": "AllSyncRoute", "children": ["PoolRoute|A", "PoolRoute|A"]}"#)
                .contains("used twice")
        );
        assert!(err(
            r#"{"type": "AllSyncRoute", "children": [{"type": "FailoverRoute", "children": []}]}"#
        )
        .contains("FailoverRoute inside"));
        assert!(err(r#"{"type": "PoolRoute", "pool": "A", "shadows": []}"#).contains("shadows"));
        assert!(format!("{:#}", parse("{").unwrap_err()).contains("not JSON"));
        assert!(format!("{:#}", parse(r#"{"pools": {}}"#).unwrap_err()).contains("no \"route\""));
        let two = format!(
            r#"{{ {POOLS}, "routes": [{{"route": "PoolRoute|A"}}, {{"route": "PoolRoute|B"}}] }}"#
        );
        assert!(format!("{:#}", parse(&two).unwrap_err()).contains("one route per router"));
        let bad_proto = r#"{"pools": {"A": {"servers": ["127.0.0.1:1"], "protocol": "caret"}}, "route": "PoolRoute|A"}"#;
        assert!(format!("{:#}", parse(bad_proto).unwrap_err()).contains("protocol caret"));
        let ssl =
            r#"{"pools": {"A": {"servers": ["127.0.0.1:1:ascii:ssl"]}}, "route": "PoolRoute|A"}"#;
        assert!(format!("{:#}", parse(ssl).unwrap_err()).contains("HOST:PORT"));
    }
}
