//! Flags and config: what `ocean redis-router` is told, checked before anything binds.
//!
//! [`Args`] are the command-line flags (clap); [`Args::into_config`] turns them into a
//! [`Config`], reading password files and TLS material on the way; [`Config::validate`]
//! refuses a config that cannot work, naming the flag. Nothing here does network IO.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ocean_core::secret::{Secret, SecretFile};
use ocean_core::subscriber::{SubscriberArgs, SubscriberConfig};

use ocean_core::placement::ketama::{server_name, twemproxy_name_cmp, Distribution, KeyHash};

use crate::proto::{Limits, PreAuthLimits, ReplyLimits};
use crate::route::RouteOpts;
use crate::upstream::{BackendOpts, ClusterOpts};

/// `ocean redis-router` flags. `Debug` shows no password (they are [`Secret`]s).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Standalone mode: the address clients connect to (needs at least one --seed).
    #[arg(long, value_name = "ADDR", requires = "seed")]
    pub listen: Option<SocketAddr>,
    /// Standalone mode: a cluster node to fetch the slot map from; repeat for more. With
    /// --mode ketama: the pool's servers, in ring order.
    #[arg(long = "seed", value_name = "ADDR")]
    pub seed: Vec<SocketAddr>,
    /// Standalone mode: `cluster` (a Redis Cluster) or `ketama` (twemproxy's sharded pool of
    /// standalone servers: each key on the --seed server that --hash, --distribution and
    /// --hash-tag pick, exactly as twemproxy picks it).
    #[arg(long, value_enum, default_value = "cluster")]
    pub mode: ModeArg,
    /// --mode ketama: twemproxy's key hash.
    #[arg(long, value_enum, default_value = "fnv1a_64")]
    pub hash: HashArg,
    /// --mode ketama: twemproxy's distribution.
    #[arg(long, value_enum, default_value = "ketama")]
    pub distribution: DistributionArg,
    /// --mode ketama: twemproxy's hash_tag, two characters (`{}`): only the part of a key
    /// between them is hashed.
    #[arg(long, value_name = "XY")]
    pub hash_tag: Option<String>,
    /// Standalone sharded mode from twemproxy's config: a `redis: true` pool's listen,
    /// servers (names, weights), hash, distribution, hash_tag, redis_auth, timeout and
    /// server_connections; what would place keys differently is refused at start.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["listen", "seed", "hash_tag"])]
    pub nutcracker_config: Option<PathBuf>,
    /// The pool of --nutcracker-config to serve when the file has several.
    #[arg(long, value_name = "NAME", requires = "nutcracker_config")]
    pub nutcracker_pool: Option<String>,
    /// Table mode: where the `redis` table comes from.
    #[command(flatten)]
    pub table: SubscriberArgs,
    /// Table mode: the address every cluster's listen_port is bound on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Worker threads, each with a current_thread runtime and its own SO_REUSEPORT
    /// listener and backend connections (0: run on the caller's runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Multiplexed connections per backend node, per worker and client protocol.
    #[arg(long, default_value_t = 1)]
    pub conns_per_node: usize,
    /// Dedicated backend connections (MULTI/WATCH, blocking, pub/sub) per node and
    /// worker at most.
    #[arg(long, default_value_t = 512)]
    pub max_dedicated: usize,
    /// Password clients must AUTH with (user `default`). Prefer --password-file: a flag
    /// shows in the process list.
    #[arg(long, env = "OCEAN_REDIS_PASSWORD", hide_env_values = true, value_name = "PW", value_parser = parse_secret)]
    pub password: Option<Secret>,
    /// File holding the password clients must AUTH with (a trailing newline is not part
    /// of it).
    #[arg(
        long,
        env = "OCEAN_REDIS_PASSWORD_FILE",
        value_name = "FILE",
        conflicts_with = "password"
    )]
    pub password_file: Option<PathBuf>,
    /// ACL user the router authenticates as on backends (with --backend-password or
    /// --backend-password-file).
    #[arg(long, requires = "backend_auth")]
    pub backend_user: Option<String>,
    /// Password the router authenticates with on backends. Prefer
    /// --backend-password-file: a flag shows in the process list.
    #[arg(long, env = "OCEAN_REDIS_BACKEND_PASSWORD", hide_env_values = true, value_name = "PW", value_parser = parse_secret, group = "backend_auth")]
    pub backend_password: Option<Secret>,
    /// File holding the password the router authenticates with on backends (a trailing
    /// newline is not part of it).
    #[arg(
        long,
        env = "OCEAN_REDIS_BACKEND_PASSWORD_FILE",
        value_name = "FILE",
        conflicts_with = "backend_password",
        group = "backend_auth"
    )]
    pub backend_password_file: Option<PathBuf>,
    /// Longest wait for a backend connection (TCP connect plus AUTH/HELLO).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Longest wait for a backend reply (not for blocking commands); then the connection
    /// is closed and the requests on it get an error.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub command_timeout: Duration,
    /// How long a request keeps retrying while its node is unreachable, the cluster is
    /// down, or the backend says TRYAGAIN (failover, resharding).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub retry_timeout: Duration,
    /// MOVED/ASK redirects followed per request.
    #[arg(long, default_value_t = 5)]
    pub max_redirects: u8,
    /// How often the slot map is refreshed without a MOVED.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub refresh_interval: Duration,
    /// A master whose connections have failed this long, with no connect succeeding since,
    /// counts as unreachable: its slots are uncovered and /healthz answers 503.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub down_after: Duration,
    /// How often the slot map is refreshed and the masters probed while a slot is
    /// uncovered or a master's connections are failing.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub recheck_interval: Duration,
    /// Longest bulk string in a client request.
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    pub max_bulk_len: usize,
    /// Most arguments in one client request.
    #[arg(long, default_value_t = 256 * 1024)]
    pub max_array_len: usize,
    /// Replies one client may have outstanding before the router stops reading from it.
    #[arg(long, default_value_t = 1024)]
    pub max_pending: usize,
    /// Reply bytes one client may have buffered in the router (arrived, or estimated from
    /// its recent replies, and not yet written to it); past it the router stops reading
    /// from the client until it drains.
    #[arg(long, default_value_t = DEFAULT_MAX_CLIENT_REPLY_BYTES)]
    pub max_client_reply_bytes: usize,
    /// Client connections at once, over every worker and listener; one more gets
    /// `-ERR max number of clients reached` and is closed (redis's `maxclients`).
    #[arg(long, default_value_t = ocean_core::daemon::DEFAULT_MAX_CLIENTS)]
    pub max_clients: usize,
    /// Close a client that sent nothing for this long while nothing of it is in flight
    /// (redis's `timeout`; 0: never). Blocked and subscribed clients are never idle.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Close a client whose replies are not taken within this long (it does not read).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,
    /// With a password: the longest bulk argument before AUTH (redis: 16384).
    #[arg(long, default_value_t = 16 * 1024)]
    pub preauth_max_bulk_len: usize,
    /// With a password: the most arguments in one request before AUTH (redis: 10).
    #[arg(long, default_value_t = 10)]
    pub preauth_max_args: usize,
    /// Send read-only commands to the replicas of the slot's master (round robin), with
    /// READONLY on backend connections; reads may then see slightly stale data.
    #[arg(long)]
    pub read_from_replicas: bool,
    /// Pass FLUSHALL/FLUSHDB to every master (refused otherwise).
    #[arg(long)]
    pub allow_flush: bool,
    /// Serve /metrics and /healthz here.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// TLS for clients: the certificate chain (PEM); the listeners then accept TLS only.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS for clients: the private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Connect to backends with TLS (needs --backend-ca); node certificates must name the
    /// node's IP address (an IP SAN).
    #[arg(long, requires = "backend_ca")]
    pub backend_tls: bool,
    /// The CA certificates (PEM) that backend node certificates are checked against.
    #[arg(long, value_name = "FILE", requires = "backend_tls")]
    pub backend_ca: Option<PathBuf>,
}

/// Where the clusters come from.
#[derive(Debug, Clone)]
pub enum Mode {
    /// One cluster on one address.
    Standalone {
        /// Client address (port 0 picks one; see [`crate::Running::listen_addr`]).
        listen: SocketAddr,
        /// Nodes to fetch the slot map from.
        seeds: Vec<SocketAddr>,
    },
    /// One listener per cluster of the `redis` table.
    Table {
        /// The table source.
        subscriber: SubscriberConfig,
        /// Address the listen ports are bound on.
        bind: IpAddr,
    },
}

/// A sharded pool of standalone redis servers, placed as twemproxy places them
/// (`--mode ketama` or `--nutcracker-config`): the standalone mode's seeds are the servers,
/// in this order.
#[derive(Debug, Clone)]
pub struct Sharding {
    /// Each server's hashed name and weight, in the order of the seeds.
    pub servers: Vec<(String, u32)>,
    /// twemproxy's `hash`.
    pub hash: KeyHash,
    /// twemproxy's `distribution`.
    pub distribution: Distribution,
    /// twemproxy's `hash_tag`.
    pub hash_tag: Option<[u8; 2]>,
    /// `--nutcracker-config` and `--nutcracker-pool`, when the pool came from a file: a
    /// reload reads it again and applies a changed pool (see `server::start`).
    pub file: Option<(PathBuf, Option<String>)>,
    /// From a file: its `listen` and the settings only a restart applies, as read at start
    /// (a reload that finds them changed says so and keeps them).
    pub(crate) at_start: Option<(SocketAddr, FromNutcracker)>,
}

impl Sharding {
    /// Whether `other` places keys the same way: same server names and weights, hash,
    /// distribution and hash tag (the file it came from does not count).
    pub fn same_placement(&self, other: &Sharding) -> bool {
        self.servers == other.servers
            && self.hash == other.hash
            && self.distribution == other.distribution
            && self.hash_tag == other.hash_tag
    }

    /// Refuses a pool over `servers` (their addresses, in the order of
    /// [`Sharding::servers`]) that cannot be served.
    ///
    /// # Errors
    /// A name and weight missing for a server, a server listed twice, too many servers.
    pub fn check(&self, servers: &[SocketAddr]) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.servers.len() == servers.len(),
            "a sharded pool needs a name and weight per server"
        );
        let mut sorted = servers.to_vec();
        sorted.sort();
        sorted.dedup();
        anyhow::ensure!(
            sorted.len() == servers.len(),
            "a sharded pool lists a server twice"
        );
        anyhow::ensure!(
            servers.len() <= usize::from(crate::slot::SLOTS),
            "a sharded pool has at most 16384 servers"
        );
        Ok(())
    }
}

/// Everything the router needs; build it in code or from [`Args`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Standalone or table mode.
    pub mode: Mode,
    /// Worker threads (0: the caller's runtime).
    pub threads: usize,
    /// Client-side settings.
    pub client: ClientOpts,
    /// Backend-side settings.
    pub cluster: ClusterOpts,
    /// Admin HTTP address.
    pub admin: Option<SocketAddr>,
    /// Standalone mode over a sharded pool instead of a Redis Cluster.
    pub sharding: Option<Sharding>,
}

impl Config {
    /// A standalone config with defaults, on `listen`, for `seeds`.
    pub fn standalone(listen: SocketAddr, seeds: Vec<SocketAddr>) -> Config {
        Config {
            mode: Mode::Standalone { listen, seeds },
            threads: 0,
            client: ClientOpts::default(),
            cluster: ClusterOpts::default(),
            admin: None,
            sharding: None,
        }
    }
}

impl Config {
    /// Refuses a config that cannot work, before anything is bound.
    ///
    /// # Errors
    /// A message naming the flag (or config field) that is wrong.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Mode::Standalone { seeds, .. } = &self.mode {
            anyhow::ensure!(
                !seeds.is_empty(),
                "--seed: standalone mode needs at least one"
            );
            if let Some(sh) = &self.sharding {
                sh.check(seeds)?;
            }
        } else {
            anyhow::ensure!(
                self.sharding.is_none(),
                "--mode ketama and --nutcracker-config are standalone modes (not with a table)"
            );
        }
        let c = &self.client;
        anyhow::ensure!(c.max_pending >= 1, "--max-pending must be at least 1");
        anyhow::ensure!(c.max_clients >= 1, "--max-clients must be at least 1");
        anyhow::ensure!(
            c.max_reply_bytes >= 1,
            "--max-client-reply-bytes must be at least 1"
        );
        anyhow::ensure!(
            !c.write_timeout.is_zero(),
            "--write-timeout must be more than 0"
        );
        anyhow::ensure!(
            c.pre_auth.max_array_len >= 3,
            "--preauth-max-args must be at least 3 (AUTH user pass)"
        );
        anyhow::ensure!(
            c.limits.max_array_len >= 1,
            "--max-array-len must be at least 1"
        );
        let k = &self.cluster;
        anyhow::ensure!(k.conns_per_node >= 1, "--conns-per-node must be at least 1");
        anyhow::ensure!(k.max_dedicated >= 1, "--max-dedicated must be at least 1");
        anyhow::ensure!(
            !k.refresh_interval.is_zero(),
            "--refresh-interval must be more than 0"
        );
        anyhow::ensure!(
            !k.recheck_interval.is_zero(),
            "--recheck-interval must be more than 0"
        );
        anyhow::ensure!(
            !k.backend.connect_timeout.is_zero(),
            "--connect-timeout must be more than 0"
        );
        anyhow::ensure!(
            !k.backend.command_timeout.is_zero(),
            "--command-timeout must be more than 0"
        );
        Ok(())
    }
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// A Redis Cluster.
    Cluster,
    /// twemproxy's sharded pool of standalone servers.
    Ketama,
}

/// `--hash`: twemproxy's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HashArg {
    #[value(name = "fnv1a_64")]
    Fnv1a64,
    Md5,
    Murmur,
    Crc32,
    Crc32a,
}

impl From<HashArg> for KeyHash {
    fn from(h: HashArg) -> KeyHash {
        match h {
            HashArg::Fnv1a64 => KeyHash::Fnv1a64,
            HashArg::Md5 => KeyHash::Md5,
            HashArg::Murmur => KeyHash::Murmur,
            HashArg::Crc32 => KeyHash::Crc32,
            HashArg::Crc32a => KeyHash::Crc32a,
        }
    }
}

/// `--distribution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DistributionArg {
    Ketama,
    Modula,
}

/// What a twemproxy pool gives the router besides its servers: settings fixed at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FromNutcracker {
    pub(crate) redis_auth: Option<Secret>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) server_connections: Option<usize>,
}

/// A `redis: true` pool of a nutcracker.yml as the standalone sharded mode.
#[derive(Debug, Clone)]
pub(crate) struct NutcrackerPool {
    /// `listen`.
    pub(crate) listen: SocketAddr,
    /// The servers' addresses, in the order of `sharding.servers`.
    pub(crate) servers: Vec<SocketAddr>,
    /// The placement.
    pub(crate) sharding: Sharding,
    /// What only a restart applies.
    pub(crate) settings: FromNutcracker,
}

/// Reads the pool `want` of the nutcracker.yml at `path` as at start (what SIGHUP does):
/// what the router would serve differently is refused, with the same warnings.
///
/// # Errors
/// As at start: a file that does not load, a pool that is not `redis: true`, another
/// database, a pool that cannot be served ([`Sharding::check`]).
pub(crate) fn load_nutcracker(
    path: &std::path::Path,
    want: Option<&str>,
) -> anyhow::Result<NutcrackerPool> {
    let (listen, servers, sharding, settings) = nutcracker_pool(path, want)?;
    sharding
        .check(&servers)
        .with_context(|| format!("--nutcracker-config {}", path.display()))?;
    Ok(NutcrackerPool {
        listen,
        servers,
        sharding,
        settings,
    })
}

/// A `redis: true` pool of a nutcracker.yml as the standalone sharded mode: listen, the
/// servers, and the placement; what the router would serve differently is refused.
fn nutcracker_pool(
    path: &std::path::Path,
    want: Option<&str>,
) -> anyhow::Result<(SocketAddr, Vec<SocketAddr>, Sharding, FromNutcracker)> {
    let p = ocean_core::placement::nutcracker::load(path, want)?;
    let file = || format!("--nutcracker-config {} pool {:?}", path.display(), p.name);
    anyhow::ensure!(
        p.redis,
        "{}: a memcached pool (no redis: true): run ocean memcached-router for it",
        file()
    );
    anyhow::ensure!(
        p.redis_db == 0,
        "{}: redis_db: {} is not supported (database 0 only)",
        file(),
        p.redis_db
    );
    for note in &p.ignored {
        tracing::warn!(file = %path.display(), pool = %p.name, "nutcracker.yml {note}");
    }
    if p.auto_eject_hosts {
        tracing::warn!(
            file = %path.display(),
            pool = %p.name,
            "nutcracker.yml auto_eject_hosts: true is not applied by the redis router: a down \
             server's keys get an error instead of moving to another server"
        );
    }
    for key in ["server_failure_limit", "server_retry_timeout"] {
        let set = match key {
            "server_failure_limit" => p.server_failure_limit.is_some(),
            _ => p.server_retry_timeout.is_some(),
        };
        if set {
            tracing::warn!(file = %path.display(), pool = %p.name, "nutcracker.yml {key}: not used by the redis router (see --down-after)");
        }
    }
    let seeds = p.servers.iter().map(|s| s.addr).collect();
    let sharding = Sharding {
        servers: p
            .servers
            .iter()
            .map(|s| (s.name.clone(), s.weight))
            .collect(),
        hash: p.hash,
        distribution: p.distribution,
        hash_tag: p.hash_tag,
        file: Some((path.to_path_buf(), want.map(str::to_string))),
        at_start: None,
    };
    Ok((
        p.listen,
        seeds,
        sharding,
        FromNutcracker {
            redis_auth: p.redis_auth.map(Secret::new),
            timeout: p.timeout,
            server_connections: p.server_connections,
        },
    ))
}

impl Args {
    /// The config these flags describe.
    ///
    /// # Errors
    /// When neither --listen nor a table source is given, or a file cannot be read.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let table_mode = !self.table.control.is_empty() || self.table.table_file.is_some();
        let mut listen = self.listen;
        let mut seeds = self.seed.clone();
        let mut sharding = None;
        let mut from_file = None;
        if let Some(path) = &self.nutcracker_config {
            let (l, s, mut sh, f) = nutcracker_pool(path, self.nutcracker_pool.as_deref())?;
            sh.at_start = Some((l, f.clone()));
            (listen, seeds, sharding, from_file) = (Some(l), s, Some(sh), Some(f));
        } else if self.mode == ModeArg::Ketama {
            let hash_tag = match self.hash_tag.as_deref().map(str::as_bytes) {
                None => None,
                Some(&[open, close]) => Some([open, close]),
                Some(_) => anyhow::bail!("--hash-tag must be two characters, such as {{}}"),
            };
            // twemproxy's server order (by name, shorter first): what modula indexes.
            let mut named: Vec<(String, SocketAddr)> =
                seeds.iter().map(|a| (server_name(*a), *a)).collect();
            named.sort_by(|a, b| twemproxy_name_cmp(&a.0, &b.0));
            seeds = named.iter().map(|(_, a)| *a).collect();
            sharding = Some(Sharding {
                servers: named.into_iter().map(|(name, _)| (name, 1)).collect(),
                hash: self.hash.into(),
                distribution: match self.distribution {
                    DistributionArg::Ketama => Distribution::Ketama,
                    DistributionArg::Modula => Distribution::Modula,
                },
                hash_tag,
                file: None,
                at_start: None,
            });
        }
        let mode = match (listen, table_mode) {
            (Some(listen), false) => {
                anyhow::ensure!(!seeds.is_empty(), "--listen needs at least one --seed");
                Mode::Standalone { listen, seeds }
            }
            (None, true) => Mode::Table {
                subscriber: self.table.into_config()?,
                bind: self.bind,
            },
            (Some(_), true) => {
                anyhow::bail!("--listen (standalone) and --control/--table-file (table mode) exclude each other")
            }
            (None, false) => anyhow::bail!(
                "give --listen ADDR --seed ADDR (standalone) or --control/--table-file (table mode)"
            ),
        };
        let client_tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
            _ => None,
        };
        let backend_tls = match (&self.backend_ca, self.backend_tls) {
            (Some(ca), true) => Some(crate::tls::connector(ca)?),
            _ => None,
        };
        // From a file: SIGHUP re-reads it (see `server::start`).
        let mut password = match (self.password, &self.password_file) {
            (Some(p), _) => Some(SecretFile::fixed(p)),
            (None, Some(f)) => Some(SecretFile::load(f, "--password-file")?),
            (None, None) => None,
        };
        let mut backend_password = match (self.backend_password, &self.backend_password_file) {
            (Some(p), _) => Some(SecretFile::fixed(p)),
            (None, Some(f)) => Some(SecretFile::load(f, "--backend-password-file")?),
            (None, None) => None,
        };
        let mut command_timeout = self.command_timeout;
        let mut conns_per_node = self.conns_per_node;
        if let Some(f) = from_file {
            // twemproxy's redis_auth is both what clients send and what the servers expect.
            if let Some(auth) = f.redis_auth {
                anyhow::ensure!(
                    password.is_none() && backend_password.is_none(),
                    "redis_auth in --nutcracker-config and a --password/--backend-password \
                     flag: give the password one way"
                );
                password = Some(SecretFile::fixed(auth.clone()));
                backend_password = Some(SecretFile::fixed(auth));
            }
            command_timeout = f.timeout.unwrap_or(command_timeout);
            conns_per_node = f.server_connections.unwrap_or(conns_per_node);
        }
        let backend = BackendOpts {
            user: self.backend_user,
            password: backend_password,
            connect_timeout: self.connect_timeout,
            command_timeout,
            reply_limits: ReplyLimits::default(),
            readonly: self.read_from_replicas,
            tls: backend_tls,
        };
        Ok(Config {
            mode,
            threads: self.threads,
            client: ClientOpts {
                limits: Limits {
                    max_bulk_len: self.max_bulk_len,
                    max_array_len: self.max_array_len,
                    ..Limits::default()
                },
                pre_auth: PreAuthLimits {
                    max_bulk_len: self.preauth_max_bulk_len,
                    max_array_len: self.preauth_max_args,
                },
                max_clients: self.max_clients,
                idle_timeout: self.idle_timeout,
                write_timeout: self.write_timeout,
                max_reply_bytes: self.max_client_reply_bytes,
                max_pending: self.max_pending.max(1),
                password,
                allow_flush: self.allow_flush,
                route: RouteOpts {
                    max_redirects: self.max_redirects,
                    retry_timeout: self.retry_timeout,
                },
                tls: client_tls,
            },
            cluster: ClusterOpts {
                conns_per_node: conns_per_node.max(1),
                max_dedicated: self.max_dedicated.max(1),
                refresh_interval: self.refresh_interval,
                down_after: self.down_after,
                recheck_interval: self.recheck_interval,
                read_from_replicas: self.read_from_replicas,
                backend: Arc::new(backend),
                ..ClusterOpts::default()
            },
            admin: self.admin,
            sharding,
        })
    }
}

/// A password given inline (flag or environment).
fn parse_secret(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(s.to_string()))
}

/// Reads a password file for `flag`: the whole file, less one trailing newline (`\n` or
/// `\r\n`); leading and inner whitespace is part of the password.
///
/// # Errors
/// The file cannot be read, is not UTF-8, or holds an empty password; the message names
/// the flag and the file, never the contents.
pub fn read_secret_file(path: &std::path::Path, flag: &str) -> anyhow::Result<Secret> {
    ocean_core::secret::read_file(path, flag)
}

/// Client-facing settings.
#[derive(Debug, Clone)]
pub struct ClientOpts {
    /// Request size bounds.
    pub limits: Limits,
    /// Request size bounds until the client has authenticated (with a password set).
    pub pre_auth: PreAuthLimits,
    /// Client connections at once over every listener (`--max-clients`).
    pub max_clients: usize,
    /// Close a client idle this long (`--idle-timeout`; zero: never).
    pub idle_timeout: Duration,
    /// Close a client whose replies are not taken within this long (`--write-timeout`).
    pub write_timeout: Duration,
    /// Reply bytes buffered per client before the router stops reading from it
    /// (`--max-client-reply-bytes`).
    pub max_reply_bytes: usize,
    /// Replies a client may have outstanding before the router stops reading from it.
    pub max_pending: usize,
    /// Password clients must `AUTH` with (`Debug` redacts it); from `--password-file`,
    /// SIGHUP re-reads it and the next `AUTH` is checked against the new one.
    pub password: Option<Arc<SecretFile>>,
    /// Whether FLUSHALL/FLUSHDB are passed to every master.
    pub allow_flush: bool,
    /// Routing limits.
    pub route: RouteOpts,
    /// TLS for clients (`--tls-cert`/`--tls-key`): the listeners then accept TLS only.
    pub tls: Option<crate::tls::Acceptor>,
}

impl Default for ClientOpts {
    fn default() -> Self {
        ClientOpts {
            limits: Limits {
                max_array_len: 256 * 1024,
                ..Limits::default()
            },
            pre_auth: PreAuthLimits::default(),
            max_clients: ocean_core::daemon::DEFAULT_MAX_CLIENTS,
            idle_timeout: Duration::ZERO,
            write_timeout: Duration::from_secs(30),
            max_reply_bytes: DEFAULT_MAX_CLIENT_REPLY_BYTES,
            max_pending: 1024,
            password: None,
            allow_flush: false,
            route: RouteOpts::default(),
            tls: None,
        }
    }
}

/// Default `--max-client-reply-bytes`: 8 MiB.
pub const DEFAULT_MAX_CLIENT_REPLY_BYTES: usize = 8 * 1024 * 1024;

/// The default table-mode bind address.
pub const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn flags_parse_into_configs() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "127.0.0.1:6380",
            "--seed",
            "127.0.0.1:7000",
            "--seed",
            "127.0.0.1:7001",
            "--threads",
            "2",
            "--read-from-replicas",
            "--command-timeout",
            "250ms",
        ])
        .unwrap();
        let c = cli.args.into_config().unwrap();
        assert!(matches!(c.mode, Mode::Standalone { ref seeds, .. } if seeds.len() == 2));
        assert_eq!(c.threads, 2);
        assert!(c.cluster.read_from_replicas && c.cluster.backend.readonly);
        assert_eq!(
            c.cluster.backend.command_timeout,
            Duration::from_millis(250)
        );

        let cli =
            Cli::try_parse_from(["x", "--table-file", "/tmp/redis.json", "--bind", "0.0.0.0"])
                .unwrap();
        let c = cli.args.into_config().unwrap();
        assert!(matches!(c.mode, Mode::Table { bind, .. } if bind.is_unspecified()));

        assert!(Cli::try_parse_from(["x", "--listen", "127.0.0.1:1"]).is_err());
        let neither = Cli::try_parse_from(["x"]).unwrap();
        assert!(neither.args.into_config().is_err());

        // TLS flags come in pairs; missing files are errors, not plain fallbacks.
        let base = [
            "x",
            "--listen",
            "127.0.0.1:6380",
            "--seed",
            "127.0.0.1:7000",
        ];
        let with = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra));
        assert!(with(&["--tls-cert", "/nonexistent.pem"]).is_err());
        assert!(with(&["--backend-tls"]).is_err());
        assert!(with(&["--backend-ca", "/nonexistent.pem"]).is_err());
        let c = with(&["--backend-tls", "--backend-ca", "/nonexistent.pem"]).unwrap();
        assert!(c.args.into_config().is_err());
        let c = with(&[
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            "/nonexistent.pem",
        ])
        .unwrap();
        assert!(c.args.into_config().is_err());
        let c = with(&[]).unwrap().args.into_config().unwrap();
        assert!(c.client.tls.is_none() && c.cluster.backend.tls.is_none());
    }

    #[test]
    fn limits_flags_and_validate() {
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "127.0.0.1:6380",
            "--seed",
            "127.0.0.1:7000",
        ])
        .unwrap();
        let c = cli.args.into_config().unwrap();
        assert_eq!(c.client.max_clients, 10_000);
        assert_eq!(c.client.idle_timeout, Duration::ZERO);
        assert_eq!(c.client.write_timeout, Duration::from_secs(30));
        assert_eq!(c.client.max_reply_bytes, 8 << 20);
        assert_eq!(c.client.pre_auth, PreAuthLimits::default());
        c.validate().unwrap();
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "127.0.0.1:6380",
            "--seed",
            "127.0.0.1:7000",
            "--max-clients",
            "0",
        ])
        .unwrap();
        let err = cli.args.into_config().unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("--max-clients"), "{err}");
        let mut c = Config::standalone("127.0.0.1:0".parse().unwrap(), vec![]);
        assert!(c.validate().unwrap_err().to_string().contains("--seed"));
        c.mode = Mode::Standalone {
            listen: "127.0.0.1:0".parse().unwrap(),
            seeds: vec!["127.0.0.1:1".parse().unwrap()],
        };
        c.client.write_timeout = Duration::ZERO;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--write-timeout"));
    }

    #[test]
    fn password_files_and_no_secret_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let client_pw = dir.path().join("client.pw");
        let backend_pw = dir.path().join("backend.pw");
        std::fs::write(&client_pw, " client secret 1\n").unwrap();
        std::fs::write(&backend_pw, "backend-secret-2\r\n").unwrap();
        let base = [
            "x",
            "--listen",
            "127.0.0.1:6380",
            "--seed",
            "127.0.0.1:7000",
        ];
        let with = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra));
        let (cf, bf) = (client_pw.to_str().unwrap(), backend_pw.to_str().unwrap());

        // From files: one trailing newline dropped, other whitespace kept.
        let cli = with(&[
            "--password-file",
            cf,
            "--backend-user",
            "router",
            "--backend-password-file",
            bf,
        ])
        .unwrap();
        let shown_args = format!("{cli:?} {cli:#?}");
        let c = cli.args.into_config().unwrap();
        assert_eq!(
            c.client
                .password
                .as_ref()
                .map(|p| p.current().expose().to_string()),
            Some(" client secret 1".to_string())
        );
        assert_eq!(
            c.cluster
                .backend
                .password
                .as_ref()
                .map(|p| p.current().expose().to_string()),
            Some("backend-secret-2".to_string())
        );
        let shown = format!("{shown_args} {c:?} {c:#?}");
        assert!(
            !shown.contains("client secret") && !shown.contains("backend-secret"),
            "{shown}"
        );
        assert!(shown.contains("redacted"), "{shown}");

        // Inline flags: the same redaction in Args and Config.
        let cli = with(&[
            "--password",
            "inline-client-pw",
            "--backend-password",
            "inline-backend-pw",
        ])
        .unwrap();
        let shown_args = format!("{cli:?}");
        let c = cli.args.into_config().unwrap();
        let shown = format!("{shown_args} {c:?} {c:#?}");
        assert!(!shown.contains("inline-"), "{shown}");
        assert_eq!(
            c.client
                .password
                .as_ref()
                .map(|p| p.current().expose().to_string()),
            Some("inline-client-pw".to_string())
        );

        // Inline and file forms exclude each other; a backend user needs one of them.
        assert!(with(&["--password", "a", "--password-file", cf]).is_err());
        assert!(with(&["--backend-password", "a", "--backend-password-file", bf]).is_err());
        assert!(with(&["--backend-user", "router"]).is_err());
        assert!(with(&["--backend-user", "router", "--backend-password", "a"]).is_ok());

        // An empty or missing file is an error naming the flag, never an empty password.
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let err = with(&["--password-file", empty.to_str().unwrap()])
            .unwrap()
            .args
            .into_config()
            .unwrap_err();
        assert!(format!("{err:#}").contains("--password-file"), "{err:#}");
        let err = with(&["--backend-password-file", "/nonexistent/pw"])
            .unwrap()
            .args
            .into_config()
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("--backend-password-file /nonexistent/pw"),
            "{err:#}"
        );
    }
}
