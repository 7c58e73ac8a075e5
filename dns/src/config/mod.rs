//! `ocean dns` settings: [`Config`], the flags that build it ([`Args`]), and a Mesos-DNS
//! `config.json` read on top ([`mesos_dns`]).

pub mod mesos_dns;

use std::net::SocketAddr;
use std::time::Duration;

use std::path::PathBuf;

use ocean_core::net::Cidr;
use ocean_core::subscriber::SubscriberConfig;

/// Who may recurse when no `--allow-recursion` is given: this host only.
pub const DEFAULT_ALLOW_RECURSION: [&str; 2] = ["127.0.0.0/8", "::1"];

/// Everything `ocean dns` runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// DNS address, UDP and TCP (port 0: any free port, for tests).
    pub listen: SocketAddr,
    /// Mesos-DNS HTTP API plus `/metrics`, `/healthz`, `/table`; `None` disables it.
    pub http: Option<SocketAddr>,
    /// Upstream resolvers for names outside the domain, tried in order.
    pub resolvers: Vec<SocketAddr>,
    /// Upstreams for particular zones (`consul.` -> 127.0.0.1:8600), before `resolvers`.
    pub zone_resolvers: Vec<(String, SocketAddr)>,
    /// Timeout of one upstream try.
    pub forward_timeout: Duration,
    /// Forwarded queries in flight at most; beyond it clients get SERVFAIL at once.
    pub max_forward_inflight: usize,
    /// Client networks whose queries for names outside the zone are forwarded; any other
    /// client gets REFUSED for them (names in the zone are answered to everyone).
    pub allow_recursion: Vec<Cidr>,
    /// Resolvers whose EDNS Client Subnet option picks the view (`--trust-ecs`); from
    /// anyone else the option is ignored.
    pub trust_ecs: Vec<Cidr>,
    /// UDP answers per second to one client network (/24 or /56); 0 turns rate limiting off.
    pub rrl_per_second: u32,
    /// Of the UDP answers over the rate limit, every Nth is sent truncated (TC=1) and the
    /// others dropped; 0 drops all, 1 truncates all.
    pub rrl_slip: u32,
    /// UDP worker threads, each with its own `SO_REUSEPORT` socket.
    pub udp_workers: usize,
    /// Largest UDP answer to EDNS clients (the client's own limit applies when smaller).
    pub max_udp_payload: u16,
    /// TCP connections at most; a client past it is accepted and closed at once.
    pub max_tcp_connections: usize,
    /// A TCP connection idle this long between queries is closed.
    pub tcp_idle_timeout: Duration,
    /// A TCP client that does not take an answer within this long is closed.
    pub tcp_write_timeout: Duration,
    /// Where the `dns` table comes from.
    pub subscriber: SubscriberConfig,
    /// The Mesos-DNS `config.json` applied on top of the flags (`--mesos-dns-config`):
    /// SIGHUP re-reads it and applies its `resolvers`, `zoneResolvers` and `timeout`.
    pub mesos_dns_config: Option<PathBuf>,
    /// DNS over TLS (RFC 7858): `--tls-listen`, `--tls-cert`, `--tls-key`.
    pub tls: Option<DotConfig>,
}

/// Where DNS over TLS listens and the certificate it serves (re-read on SIGHUP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl Config {
    pub fn new(subscriber: SubscriberConfig) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8053)),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 8123))),
            resolvers: Vec::new(),
            zone_resolvers: Vec::new(),
            forward_timeout: Duration::from_secs(2),
            max_forward_inflight: 1024,
            allow_recursion: DEFAULT_ALLOW_RECURSION
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            trust_ecs: Vec::new(),
            rrl_per_second: 0,
            rrl_slip: 2,
            udp_workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            max_udp_payload: 1232,
            max_tcp_connections: 1024,
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_write_timeout: Duration::from_secs(10),
            subscriber,
            mesos_dns_config: None,
            tls: None,
        }
    }

    /// Checks the settings; the message names the flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.subscriber.validate()?;
        anyhow::ensure!(self.udp_workers >= 1, "--udp-workers must be at least 1");
        anyhow::ensure!(
            self.max_udp_payload >= 512,
            "--max-udp-payload must be at least 512"
        );
        anyhow::ensure!(
            self.rrl_per_second < 1 << 24,
            "--rrl-per-second must be less than 16777216"
        );
        anyhow::ensure!(
            !self.forward_timeout.is_zero(),
            "--forward-timeout must be longer than 0"
        );
        for (zone, _) in &self.zone_resolvers {
            anyhow::ensure!(
                crate::proto::encode::name_to_wire(zone).is_some(),
                "--zone-resolver {zone:?}: not a domain name"
            );
        }
        Ok(())
    }
}

/// `host:port`, or a bare IP meaning port 53.
fn parse_resolver(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("{s:?} is not IP or IP:PORT"))
}

fn parse_zone_resolver(s: &str) -> Result<(String, SocketAddr), String> {
    let (zone, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not ZONE=ADDR"))?;
    Ok((zone.to_string(), parse_resolver(addr)?))
}

/// `ocean dns` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub table: ocean_core::subscriber::SubscriberArgs,
    /// DNS address (UDP and TCP).
    #[arg(long, default_value = "127.0.0.1:8053")]
    pub listen: SocketAddr,
    /// Address of the Mesos-DNS HTTP API and /metrics, /healthz, /table.
    #[arg(long, default_value = "127.0.0.1:8123")]
    pub http: SocketAddr,
    /// Do not serve HTTP.
    #[arg(long)]
    pub no_http: bool,
    /// Upstream resolver for names outside the domain (IP or IP:PORT); repeat to try several in order.
    #[arg(long = "resolver", value_name = "ADDR", value_parser = parse_resolver)]
    pub resolvers: Vec<SocketAddr>,
    /// Upstream for one zone, tried before --resolver: ZONE=ADDR (e.g. consul=127.0.0.1:8600); repeatable.
    #[arg(long = "zone-resolver", value_name = "ZONE=ADDR", value_parser = parse_zone_resolver)]
    pub zone_resolvers: Vec<(String, SocketAddr)>,
    /// Timeout of one upstream try.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub forward_timeout: Duration,
    /// Forwarded queries in flight at most; beyond it clients get SERVFAIL at once.
    #[arg(long, default_value_t = 1024)]
    pub max_forward_inflight: usize,
    /// A client network that may have names outside the zone forwarded (CIDR or address);
    /// repeatable, replaces the default (this host: 127.0.0.0/8 and ::1). Other clients get
    /// REFUSED for such names; names in the zone are answered to everyone.
    #[arg(long = "allow-recursion", value_name = "CIDR", default_values = DEFAULT_ALLOW_RECURSION)]
    pub allow_recursion: Vec<Cidr>,
    /// A resolver (CIDR or address) whose EDNS Client Subnet option decides the view of a
    /// query instead of its own address; repeatable. The answer then carries the option
    /// back with its scope. From anyone else the option is ignored.
    #[arg(long = "trust-ecs", value_name = "CIDR")]
    pub trust_ecs: Vec<Cidr>,
    /// UDP answers per second to one client network (/24 IPv4, /56 IPv6) before response
    /// rate limiting drops or truncates; 0: off. Recommended where untrusted networks reach
    /// the server: 200 (well above what one network's resolvers ask of a zone with a 60 s
    /// TTL, far below a reflection flood).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub rrl_per_second: u32,
    /// Of the UDP answers over --rrl-per-second, every Nth is sent truncated (TC=1, the
    /// client retries over TCP, which is never limited) and the others dropped; 0 drops
    /// all, 1 truncates all.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub rrl_slip: u32,
    /// UDP worker threads, each with its own SO_REUSEPORT socket (default: one per CPU).
    #[arg(long)]
    pub udp_workers: Option<usize>,
    /// Largest UDP answer to EDNS clients (smaller when the client offers less).
    #[arg(long, default_value_t = 1232)]
    pub max_udp_payload: u16,
    /// TCP connections at most (also `--max-clients`, the name every daemon takes); a
    /// client past it is closed at once.
    #[arg(long, alias = "max-clients", default_value_t = 1024)]
    pub max_tcp_connections: usize,
    /// Close a TCP connection idle this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub tcp_idle_timeout: Duration,
    /// Close a TCP client that does not take an answer within this long (it holds a slot).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub tcp_write_timeout: Duration,
    /// A Mesos-DNS config.json: its listener/port, HTTP, resolvers, externalon and timeout
    /// replace the flags above; keys that belong to control are reported.
    #[arg(long, value_name = "FILE")]
    pub mesos_dns_config: Option<PathBuf>,
    /// DNS over TLS (RFC 7858, usually port 853): the address of its TCP listener; the
    /// same answers as UDP and TCP. Needs --tls-cert and --tls-key.
    #[arg(long, value_name = "ADDR", requires_all = ["tls_cert", "tls_key"])]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain served over DNS over TLS; re-read on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_listen")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert; re-read on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_listen")]
    pub tls_key: Option<PathBuf>,
}

impl Args {
    /// The config these flags describe (a `--mesos-dns-config` file applied on top).
    ///
    /// # Errors
    /// Bad table-source flags, an unreadable Mesos-DNS config, an invalid result.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let a = self;
        let mut c = Config::new(a.table.into_config()?);
        c.listen = a.listen;
        c.http = (!a.no_http).then_some(a.http);
        c.resolvers = a.resolvers;
        c.zone_resolvers = a.zone_resolvers;
        c.forward_timeout = a.forward_timeout;
        c.max_forward_inflight = a.max_forward_inflight;
        c.allow_recursion = a.allow_recursion;
        c.trust_ecs = a.trust_ecs;
        c.rrl_per_second = a.rrl_per_second;
        c.rrl_slip = a.rrl_slip;
        if let Some(n) = a.udp_workers {
            c.udp_workers = n;
        }
        c.max_udp_payload = a.max_udp_payload;
        c.max_tcp_connections = a.max_tcp_connections;
        c.tcp_idle_timeout = a.tcp_idle_timeout;
        c.tcp_write_timeout = a.tcp_write_timeout;
        if let (Some(listen), Some(cert), Some(key)) = (a.tls_listen, a.tls_cert, a.tls_key) {
            c.tls = Some(DotConfig { listen, cert, key });
        }
        if let Some(path) = &a.mesos_dns_config {
            let m = mesos_dns::load(path)?;
            for note in m.apply(&mut c) {
                tracing::warn!(file = %path.display(), "{note}");
            }
            c.mesos_dns_config = Some(path.clone());
        }
        c.validate()?;
        Ok(c)
    }
}
