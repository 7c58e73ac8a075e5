//! Flags ([`Args`]) and the configuration they build ([`Config`]), with the pool syntax of
//! standalone mode.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};
use ocean_core::subscriber::{SubscriberArgs, SubscriberConfig};

use crate::ketama::{server_name_for, KeyHash};
use crate::mcrouter::McrouterRoute;
pub use crate::pool::{KeyPlacement, PoolSpec, ReplicaSetSpec, ServerSpec};
use crate::proto::Limits;

/// How a write (storage command, delete, incr/decr, touch) answers the client when a pool
/// has several replica sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WritePolicy {
    /// The first replica set's answer (the next set's when the first failed); the other
    /// sets are written without waiting.
    #[default]
    First,
    /// Wait for every set and answer the worst reply (mcrouter AllSync-style).
    All,
}

/// The key hash flag values (twemproxy's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum HashArg {
    /// twemproxy's default.
    #[default]
    #[value(name = "fnv1a_64")]
    Fnv1a64,
    /// twemproxy's `md5`.
    Md5,
    /// mcrouter's `ch3` (furc hash by server position; weights must be 1).
    Ch3,
}

impl From<HashArg> for KeyHash {
    fn from(h: HashArg) -> KeyHash {
        match h {
            HashArg::Fnv1a64 => KeyHash::Fnv1a64,
            HashArg::Md5 => KeyHash::Md5,
            HashArg::Ch3 => KeyHash::Ch3,
        }
    }
}

/// `ocean memcached-router` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Standalone mode: the address clients connect to (needs --pool).
    #[arg(long, value_name = "ADDR", requires = "pool")]
    pub listen: Option<SocketAddr>,
    /// Standalone mode: one replica set of the pool, `NAME=HOST:PORT[:WEIGHT],...`. Repeat
    /// for more replica sets (`--pool a=... --pool b=...`); reads prefer the first.
    #[arg(long, value_name = "SET=SERVERS", requires = "listen")]
    pub pool: Vec<String>,
    /// Key hash of the standalone pool (ketama over twemproxy's hashes).
    #[arg(long, value_enum, default_value = "fnv1a_64")]
    pub hash: HashArg,
    /// Standalone mode from twemproxy's config: the pool's `listen`, servers (names and
    /// weights), `hash`, `timeout`, `server_failure_limit`, `server_retry_timeout` and
    /// `server_connections`; what would place keys differently is refused at start.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["listen", "pool"])]
    pub nutcracker_config: Option<std::path::PathBuf>,
    /// Standalone mode from mcrouter's JSON config: its pools and route (PoolRoute and
    /// HashRoute with ch3, AllSyncRoute, AllInitialRoute, FailoverRoute,
    /// MissFailoverRoute, WarmUpRoute, and PrefixSelectorRoute over those) on --listen;
    /// other routes are refused at start.
    #[arg(long, value_name = "FILE", requires = "listen", conflicts_with_all = ["pool", "nutcracker_config"])]
    pub mcrouter_config: Option<std::path::PathBuf>,
    /// The pool of --nutcracker-config to serve when the file has several.
    #[arg(long, value_name = "NAME", requires = "nutcracker_config")]
    pub nutcracker_pool: Option<String>,
    /// Table mode: the address listeners bind to, one per pool on its `listen_port`.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// How writes answer when a pool has several replica sets.
    #[arg(long, value_enum, default_value = "first")]
    pub write_policy: WritePolicy,
    /// Retry a read that missed on the next replica set (for warming a new set).
    #[arg(long)]
    pub miss_failover: bool,
    /// Pass `flush_all` on to every server (refused otherwise).
    #[arg(long)]
    pub allow_flush: bool,
    /// twemproxy's `auto_eject_hosts`: while a server is marked down (--tko-after), its
    /// keys are placed on a ring of the servers still up instead of failing fast.
    #[arg(long)]
    pub auto_eject_hosts: bool,
    /// Consecutive failures after which a server is marked down.
    #[arg(long, default_value_t = 3)]
    pub tko_after: u32,
    /// First probe of a down server after this long; each failed probe waits 1.5x longer.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub probe_interval: Duration,
    /// Longest wait between probes of a down server.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub probe_interval_max: Duration,
    /// Connecting to a backend gives up after this long.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// A backend reply that takes longer counts as a failure (the read fails over).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Pipelined connections per backend server, shared by all clients (per thread).
    #[arg(long, default_value_t = 1)]
    pub backend_connections: usize,
    /// Worker threads, each a single-threaded runtime with its own listener (SO_REUSEPORT),
    /// backend connections and TKO state; 0 runs on the caller's runtime. Default: one per
    /// CPU.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Most client connections at once (per listener and thread).
    #[arg(long, default_value_t = 10_000)]
    pub max_clients: usize,
    /// Largest value a client may store (bytes); memcached's default item size is 1 MiB.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_value_bytes: usize,
    /// Reply bytes the router holds for one client (received from backends, not yet
    /// written). At the budget the client's requests wait and its replies are written; a
    /// backend reply that does not fit (one server's share of one read larger than the
    /// budget, or a client that does not read) is answered `SERVER_ERROR out of memory
    /// writing get response`.
    #[arg(long, default_value_t = DEFAULT_MAX_CLIENT_REPLY_BYTES)]
    pub max_client_reply_bytes: usize,
    /// A client with no request in progress for this long is closed (an incomplete
    /// request is no progress: slowloris).
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// A client that does not take a write of its replies within this long is closed.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,
    /// Admin HTTP address (/metrics, /healthz, /table).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Table mode: where the `memcached` table comes from.
    #[command(flatten)]
    pub subscriber: SubscriberArgs,
}

/// Default `--max-client-reply-bytes`: 8 MiB, room for a read of several values of
/// memcached's default 1 MiB item size at once.
pub const DEFAULT_MAX_CLIENT_REPLY_BYTES: usize = 8 << 20;

/// The smallest `--max-client-reply-bytes` accepted.
pub const MIN_CLIENT_REPLY_BYTES: usize = 64 << 10;

/// Where pools come from.
#[derive(Debug, Clone)]
pub enum Mode {
    /// One pool on one address.
    Standalone {
        /// Client address (port 0 picks one; see `Running::addrs`).
        listen: SocketAddr,
        /// The pool (of every key no prefix selects).
        pool: PoolSpec,
        /// mcrouter's `PrefixSelectorRoute`: the pools of keys with these prefixes.
        prefixes: Vec<PrefixPool>,
    },
    /// The `memcached` table: one listener per pool on `bind:listen_port`.
    Table {
        /// Address the listeners bind to.
        bind: std::net::IpAddr,
        /// The table source.
        subscriber: SubscriberConfig,
    },
}

/// The route that mcrouter's `PrefixSelectorRoute` gives the keys starting with `prefix`
/// (the longest matching prefix wins): its own pool and route behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixPool {
    pub prefix: String,
    pub route: McrouterRoute,
}

impl PrefixPool {
    /// The policies of an mcrouter route, as the router runs them.
    pub fn of_mcrouter(route: &McrouterRoute) -> Vec<PrefixPool> {
        route
            .prefixes
            .iter()
            .map(|(prefix, r)| PrefixPool {
                prefix: prefix.clone(),
                route: r.clone(),
            })
            .collect()
    }

    /// `base` with this route's behaviour.
    pub fn settings(&self, base: &Settings) -> Settings {
        with_route_behaviour(base, &self.route)
    }
}

/// `base` with what an mcrouter route's type decides: the write policy (AllSyncRoute waits
/// for every set), miss failover and WarmUpRoute's fill.
fn with_route_behaviour(base: &Settings, r: &McrouterRoute) -> Settings {
    Settings {
        write_policy: if r.write_all {
            WritePolicy::All
        } else {
            WritePolicy::First
        },
        miss_failover: r.miss_failover,
        warm_fill: r.warm_fill,
        ..base.clone()
    }
}

/// Routing and failure-detection settings shared by every pool.
#[derive(Debug, Clone)]
pub struct Settings {
    /// See [`WritePolicy`].
    pub write_policy: WritePolicy,
    /// Retry misses on the next replica set.
    pub miss_failover: bool,
    /// mcrouter's WarmUpRoute: a `get`/`gets` that missed on the first replica set and hit
    /// on a later one stores the value in the first with `add` and this exptime, without
    /// waiting (needs `miss_failover`).
    pub warm_fill: Option<u32>,
    /// Pass `flush_all` on.
    pub allow_flush: bool,
    /// twemproxy's `auto_eject_hosts`: the keys of a server marked down are placed on a
    /// ring of the servers still up (rehashed) instead of failing fast.
    pub auto_eject_hosts: bool,
    /// Consecutive failures before a server is down.
    pub tko_after: u32,
    /// First probe delay.
    pub probe_interval: Duration,
    /// Probe delay cap.
    pub probe_interval_max: Duration,
    /// Backend connect timeout.
    pub connect_timeout: Duration,
    /// Backend reply timeout.
    pub request_timeout: Duration,
    /// Connections per backend (per worker).
    pub backend_connections: usize,
    /// Client request limits.
    pub limits: Limits,
    /// Client connections per listener and worker.
    pub max_clients: usize,
    /// Reply bytes held per client (see [`crate::budget`]).
    pub max_client_reply_bytes: usize,
    /// A client with no request in progress for this long is closed.
    pub idle_timeout: Duration,
    /// A write to a client that is not taken within this long closes it.
    pub write_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            write_policy: WritePolicy::First,
            miss_failover: false,
            warm_fill: None,
            allow_flush: false,
            auto_eject_hosts: false,
            tko_after: 3,
            probe_interval: Duration::from_secs(10),
            probe_interval_max: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            backend_connections: 1,
            limits: Limits::default(),
            max_clients: 10_000,
            max_client_reply_bytes: DEFAULT_MAX_CLIENT_REPLY_BYTES,
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// Everything the router needs to start; tests and `ocean up` build it in code.
#[derive(Debug, Clone)]
pub struct Config {
    /// Standalone or table mode.
    pub mode: Mode,
    /// Routing settings.
    pub settings: Settings,
    /// Worker threads (0: the caller's runtime).
    pub threads: usize,
    /// Admin HTTP address.
    pub admin: Option<SocketAddr>,
    /// Standalone mode from a file (`--nutcracker-config`): re-read on SIGHUP.
    pub pool_file: Option<PoolFile>,
}

/// The file the standalone pool was read from, and what it held at start.
#[derive(Debug, Clone)]
pub struct PoolFile {
    /// The file.
    pub path: std::path::PathBuf,
    /// Its format and what it held at start: a reload compares against it.
    pub kind: PoolFileKind,
}

/// The formats a standalone pool is read from.
#[derive(Debug, Clone)]
pub enum PoolFileKind {
    /// `--nutcracker-config` (and `--nutcracker-pool`).
    Nutcracker {
        pool: Option<String>,
        loaded: crate::nutcracker::NutcrackerPool,
    },
    /// `--mcrouter-config`.
    Mcrouter { loaded: McrouterRoute },
}

impl Config {
    /// Standalone config with default settings, for tests and embedding.
    pub fn standalone(listen: SocketAddr, pool: PoolSpec) -> Config {
        Config {
            mode: Mode::Standalone {
                listen,
                pool,
                prefixes: Vec::new(),
            },
            settings: Settings::default(),
            threads: 0,
            admin: None,
            pool_file: None,
        }
    }

    /// Checks what flags cannot: non-empty pools, sane settings.
    ///
    /// # Errors
    /// A message naming the flag or field at fault.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Mode::Standalone { pool, prefixes, .. } = &self.mode {
            pool.validate()?;
            for p in prefixes {
                p.route.pool.validate()?;
            }
        }
        let s = &self.settings;
        if s.tko_after == 0 {
            bail!("--tko-after must be at least 1");
        }
        if s.backend_connections == 0 {
            bail!("--backend-connections must be at least 1");
        }
        if s.probe_interval.is_zero() || s.probe_interval_max < s.probe_interval {
            bail!("--probe-interval must be > 0 and <= --probe-interval-max");
        }
        if s.max_clients == 0 {
            bail!("--max-clients must be at least 1");
        }
        if s.max_client_reply_bytes < MIN_CLIENT_REPLY_BYTES {
            bail!("--max-client-reply-bytes must be at least {MIN_CLIENT_REPLY_BYTES}");
        }
        if s.idle_timeout.is_zero() {
            bail!("--idle-timeout must be > 0");
        }
        if s.write_timeout.is_zero() {
            bail!("--write-timeout must be > 0");
        }
        Ok(())
    }
}

/// Parses one `--pool` value: `NAME=HOST:PORT[:WEIGHT],...` (the `NAME=` part may be left
/// out: the set is then named by its position, `set<i>`). The hashed name is the host as
/// written, as twemproxy does.
///
/// # Errors
/// A message quoting the part that does not parse or resolve.
pub fn parse_replica_set(value: &str, index: usize) -> anyhow::Result<ReplicaSetSpec> {
    let (name, servers) = match value.split_once('=') {
        Some((n, s)) => (n.trim().to_owned(), s),
        None => (format!("set{index}"), value),
    };
    if name.is_empty() {
        bail!("--pool {value}: empty replica set name");
    }
    let mut out = Vec::new();
    for part in servers.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        out.push(parse_server(part).with_context(|| format!("--pool {value}: {part}"))?);
    }
    if out.is_empty() {
        bail!("--pool {value}: no servers");
    }
    Ok(ReplicaSetSpec { name, servers: out })
}

/// `HOST:PORT[:WEIGHT]`, IPv6 hosts in brackets (`[::1]:11211:2`).
fn parse_server(s: &str) -> anyhow::Result<ServerSpec> {
    let (host, rest) = if let Some(stripped) = s.strip_prefix('[') {
        let (h, r) = stripped.split_once(']').context("unclosed '['")?;
        (h, r.strip_prefix(':').context("expected :PORT after ']'")?)
    } else {
        s.split_once(':').context("expected HOST:PORT[:WEIGHT]")?
    };
    let (port, weight) = match rest.split_once(':') {
        Some((p, w)) => (p, w.parse::<u32>().context("bad weight")?),
        None => (rest, 1),
    };
    let port: u16 = port.parse().context("bad port")?;
    let addr = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    if weight == 0 {
        bail!("weight 0");
    }
    Ok(ServerSpec {
        addr,
        name: server_name_for(host, port),
        weight,
    })
}

impl Args {
    /// The config these flags describe.
    ///
    /// # Errors
    /// Bad `--pool` values, a missing table source in table mode, bad settings.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let settings = Settings {
            write_policy: self.write_policy,
            miss_failover: self.miss_failover,
            warm_fill: None,
            allow_flush: self.allow_flush,
            auto_eject_hosts: self.auto_eject_hosts,
            tko_after: self.tko_after,
            probe_interval: self.probe_interval,
            probe_interval_max: self.probe_interval_max,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            backend_connections: self.backend_connections,
            limits: Limits {
                max_value_bytes: self.max_value_bytes,
                ..Limits::default()
            },
            max_clients: self.max_clients,
            max_client_reply_bytes: self.max_client_reply_bytes,
            idle_timeout: self.idle_timeout,
            write_timeout: self.write_timeout,
        };
        let mut settings = settings;
        let threads = self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let (mode, pool_file) = if let Some(path) = &self.nutcracker_config {
            let p = crate::nutcracker::load(path, self.nutcracker_pool.as_deref())?;
            for why in &p.file.ignored {
                tracing::warn!(file = %path.display(), pool = %p.file.name, "nutcracker.yml {why}");
            }
            // The file's timing wins over the flags' defaults: it is what the pool ran with.
            if let Some(t) = p.file.timeout {
                settings.request_timeout = t;
            }
            if let Some(n) = p.file.server_failure_limit {
                settings.tko_after = n;
            }
            if let Some(t) = p.file.server_retry_timeout {
                settings.probe_interval = t;
                settings.probe_interval_max = settings.probe_interval_max.max(t);
            }
            if let Some(n) = p.file.server_connections {
                settings.backend_connections = n;
            }
            settings.auto_eject_hosts = p.file.auto_eject_hosts;
            let mode = Mode::Standalone {
                listen: p.file.listen,
                pool: p.pool.clone(),
                prefixes: Vec::new(),
            };
            let kind = PoolFileKind::Nutcracker {
                pool: self.nutcracker_pool.clone(),
                loaded: p,
            };
            (
                mode,
                Some(PoolFile {
                    path: path.clone(),
                    kind,
                }),
            )
        } else if let (Some(path), Some(listen)) = (&self.mcrouter_config, self.listen) {
            let r = crate::mcrouter::load(path)?;
            for note in &r.notes {
                tracing::warn!(file = %path.display(), "mcrouter config {note}");
            }
            // The route decides what the flags would: it is what the pool ran with.
            settings = with_route_behaviour(&settings, &r);
            let mode = Mode::Standalone {
                listen,
                pool: r.pool.clone(),
                prefixes: PrefixPool::of_mcrouter(&r),
            };
            let kind = PoolFileKind::Mcrouter { loaded: r };
            (
                mode,
                Some(PoolFile {
                    path: path.clone(),
                    kind,
                }),
            )
        } else if let Some(listen) = self.listen {
            let replica_sets = self
                .pool
                .iter()
                .enumerate()
                .map(|(i, v)| parse_replica_set(v, i))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let pool = PoolSpec {
                name: "default".into(),
                hash: self.hash.into(),
                replica_sets,
                placement: KeyPlacement::default(),
            };
            let prefixes = Vec::new();
            (
                Mode::Standalone {
                    listen,
                    pool,
                    prefixes,
                },
                None,
            )
        } else {
            let mode = Mode::Table {
                bind: self.bind,
                subscriber: self.subscriber.into_config()?,
            };
            (mode, None)
        };
        let config = Config {
            mode,
            settings,
            threads,
            admin: self.admin,
            pool_file,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn standalone_flags() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "127.0.0.1:0",
            "--pool",
            "a=127.0.0.1:11311,127.0.0.1:11312:2",
            "--pool",
            "b=127.0.0.1:11411",
            "--hash",
            "md5",
            "--write-policy",
            "all",
            "--tko-after",
            "5",
            "--probe-interval",
            "100ms",
            "--idle-timeout",
            "2s",
            "--max-client-reply-bytes",
            "1048576",
        ])
        .unwrap();
        let config = cli.args.into_config().unwrap();
        let Mode::Standalone { pool, .. } = &config.mode else {
            panic!("standalone expected");
        };
        assert_eq!(pool.hash, KeyHash::Md5);
        assert_eq!(pool.replica_sets.len(), 2);
        assert_eq!(pool.replica_sets[0].servers[1].weight, 2);
        assert_eq!(config.settings.write_policy, WritePolicy::All);
        assert_eq!(config.settings.tko_after, 5);
        assert_eq!(config.settings.probe_interval, Duration::from_millis(100));
        assert_eq!(config.settings.idle_timeout, Duration::from_secs(2));
        assert_eq!(config.settings.write_timeout, Duration::from_secs(30));
        assert_eq!(config.settings.max_client_reply_bytes, 1 << 20);
        // Table mode needs a source.
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert!(cli.args.into_config().is_err());
    }

    #[test]
    fn pool_values() {
        let rs = parse_replica_set("a=127.0.0.1:11311,127.0.0.1:11211:3", 0).unwrap();
        assert_eq!(rs.name, "a");
        assert_eq!(rs.servers[0].name, "127.0.0.1:11311");
        assert_eq!(rs.servers[1].name, "127.0.0.1", "port 11211 is left out");
        assert_eq!(rs.servers[1].weight, 3);
        let rs = parse_replica_set("[::1]:11300:2", 4).unwrap();
        assert_eq!(rs.name, "set4");
        assert_eq!(rs.servers[0].name, "::1:11300");
        assert!(parse_replica_set("a=127.0.0.1:x", 0).is_err());
        assert!(parse_replica_set("a=127.0.0.1:1:0", 0).is_err());
        assert!(parse_replica_set("a=", 0).is_err());
    }
}
