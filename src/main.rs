//! The `ocean` binary: parses flags and dispatches to a daemon's `run`.

mod up;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ocean_control::api_auth::{self, ApiToken};
use ocean_control::config::{FileConfig, Source};
use ocean_control::tls::TlsFiles;

/// Ocean: the data plane of a Mesos/Marathon platform.
///
/// `ocean up` runs control and every proxy in one process from one config (with no
/// arguments, the bundled example). `ocean control` runs the table service alone.
#[derive(Debug, Parser)]
#[command(
    name = "ocean",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// Log filter (RUST_LOG syntax), e.g. `info` or `ocean_control=debug,info`.
    /// RUST_LOG in the environment wins.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    /// Log format: `text` or `json`.
    #[arg(long, global = true, default_value = "text")]
    log_format: ocean_core::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch Marathon (or a file in its JSON), derive one table per proxy kind, serve them.
    Control(Box<ControlArgs>),
    /// Answer Mesos-DNS names from the `dns` table (UDP and TCP), with Mesos-DNS's HTTP API.
    Dns(Box<DnsArgs>),
    /// One plain-Redis port in front of a Redis Cluster (slots, MOVED/ASK, multi-key splits).
    RedisRouter(Box<ocean_redis_router::Args>),
    /// Memcached pools with ketama, replica sets and failover (mcrouter-style).
    MemcachedRouter(Box<ocean_memcached_router::Args>),
    /// MySQL logins as JOBNAME from the job's task IPs, routed to the granted database.
    MysqlProxy(Box<ocean_mysql_proxy::Args>),
    /// Keep the kernel's IPVS table equal to the virtual services Marathon apps declare.
    LvsSync(Box<ocean_lvs_sync::Args>),
    /// Run control and every proxy in one process from one config file.
    Up(UpArgs),
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

#[derive(Debug, Args)]
struct DnsArgs {
    #[command(flatten)]
    table: ocean_core::subscriber::SubscriberArgs,
    /// DNS address (UDP and TCP).
    #[arg(long, default_value = "127.0.0.1:8053")]
    listen: SocketAddr,
    /// Address of the Mesos-DNS HTTP API and /metrics, /healthz, /table.
    #[arg(long, default_value = "127.0.0.1:8123")]
    http: SocketAddr,
    /// Do not serve HTTP.
    #[arg(long)]
    no_http: bool,
    /// Upstream resolver for names outside the domain (IP or IP:PORT); repeat to try several in order.
    #[arg(long = "resolver", value_name = "ADDR", value_parser = parse_resolver)]
    resolvers: Vec<SocketAddr>,
    /// Upstream for one zone, tried before --resolver: ZONE=ADDR (e.g. consul=127.0.0.1:8600); repeatable.
    #[arg(long = "zone-resolver", value_name = "ZONE=ADDR", value_parser = parse_zone_resolver)]
    zone_resolvers: Vec<(String, SocketAddr)>,
    /// Timeout of one upstream try.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    forward_timeout: Duration,
    /// Forwarded queries in flight at most; beyond it clients get SERVFAIL at once.
    #[arg(long, default_value_t = 1024)]
    max_forward_inflight: usize,
    /// UDP worker threads, each with its own SO_REUSEPORT socket (default: one per CPU).
    #[arg(long)]
    udp_workers: Option<usize>,
    /// Largest UDP answer to EDNS clients (smaller when the client offers less).
    #[arg(long, default_value_t = 1232)]
    max_udp_payload: u16,
    /// TCP connections at most.
    #[arg(long, default_value_t = 1024)]
    max_tcp_connections: usize,
    /// Close a TCP connection idle this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    tcp_idle_timeout: Duration,
    /// A Mesos-DNS config.json: its listener/port, HTTP, resolvers, externalon and timeout
    /// replace the flags above; keys that belong to control are reported.
    #[arg(long, value_name = "FILE")]
    mesos_dns_config: Option<PathBuf>,
}

fn dns_config(a: DnsArgs) -> anyhow::Result<ocean_dns::Config> {
    let mut c = ocean_dns::Config::new(a.table.into_config()?);
    c.listen = a.listen;
    c.http = (!a.no_http).then_some(a.http);
    c.resolvers = a.resolvers;
    c.zone_resolvers = a.zone_resolvers;
    c.forward_timeout = a.forward_timeout;
    c.max_forward_inflight = a.max_forward_inflight;
    if let Some(n) = a.udp_workers {
        c.udp_workers = n;
    }
    c.max_udp_payload = a.max_udp_payload;
    c.max_tcp_connections = a.max_tcp_connections;
    c.tcp_idle_timeout = a.tcp_idle_timeout;
    if let Some(path) = &a.mesos_dns_config {
        let m = ocean_dns::mesos_config::load(path)?;
        for note in m.apply(&mut c) {
            tracing::warn!(file = %path.display(), "{note}");
        }
    }
    c.validate()?;
    Ok(c)
}

#[derive(Debug, Args)]
struct ControlArgs {
    /// Marathon base URL; repeat for several masters (only the elected leader is trusted).
    #[arg(long = "marathon", value_name = "URL", conflicts_with = "apps_file")]
    marathon: Vec<url::Url>,
    /// A file holding the JSON of `GET /v2/apps?embed=apps.tasks`, re-read when it changes.
    #[arg(long, value_name = "FILE")]
    apps_file: Option<PathBuf>,
    /// control.toml: domain, DNS, guard, MySQL credentials (see docs/control.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Full re-list from Marathon this often while the event stream is up.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    resync: Duration,
    /// Re-list this often while the event stream is down (and check --apps-file for changes).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    poll_while_down: Duration,
    /// Wait this long after an event before re-listing, to batch bursts.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    debounce: Duration,
    /// Timeout of each request to Marathon.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    marathon_timeout: Duration,
    /// File with a bearer token that reads every /v1/ endpoint (replaces `token_file` of the
    /// config file; `[[api.tokens]]` there add scoped ones). Required off loopback.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Serve the API over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve the mysql table (backend passwords) without TLS to peers off loopback.
    #[arg(long)]
    allow_plaintext_secrets: bool,
    /// CA certificates (PEM) an https --marathon must chain to (default: the system's).
    #[arg(long, value_name = "FILE")]
    marathon_ca: Option<PathBuf>,
    /// Hold a table that would lose more than this fraction of its backends (overrides guard.max_drop).
    #[arg(long)]
    max_drop: Option<f64>,
    /// Publish a held table once its drop has lasted this long (overrides guard.drop_hold).
    #[arg(long, value_parser = humantime::parse_duration)]
    drop_hold: Option<Duration>,
    /// DNS domain (overrides `domain` in the config file).
    #[arg(long)]
    domain: Option<String>,
    /// Keep the last published tables here, so that after a restart the drop guard still
    /// holds back an empty or partial Marathon answer.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct UpArgs {
    /// The `ocean up` config (shape: examples/up.toml). Without it, the bundled example runs.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Builds control's config from flags and the optional config file; flags win.
fn control_config(a: ControlArgs) -> anyhow::Result<ocean_control::Config> {
    let source = match (a.apps_file, a.marathon.is_empty()) {
        (Some(f), _) => Source::File(f),
        (None, false) => Source::Marathon(a.marathon),
        (None, true) => {
            anyhow::bail!("no Marathon source: give --marathon URL or --apps-file FILE")
        }
    };
    let mut c = ocean_control::Config::new(source);
    if let Some(path) = &a.config {
        let file = FileConfig::load(path)?;
        let base = path.parent().map(PathBuf::from).unwrap_or_default();
        file.apply(&base, &mut c)?;
    }
    if let Some(d) = a.domain {
        c.derive.dns.set_domain(&d);
    }
    c.listen = a.listen;
    c.state_dir = a.state_dir;
    c.resync = a.resync;
    c.poll_while_down = a.poll_while_down;
    c.debounce = a.debounce;
    c.marathon_timeout = a.marathon_timeout;
    if let Some(f) = a.token_file {
        // The flag replaces the config file's unscoped `token_file`, not its [[api.tokens]].
        c.tokens
            .retain(|t| t.origin != api_auth::ORIGIN_TOKEN_FILE_KEY);
        c.tokens.insert(
            0,
            ApiToken::from_file(api_auth::ORIGIN_TOKEN_FLAG, &f, None)?,
        );
    }
    if let (Some(cert), Some(key)) = (a.tls_cert, a.tls_key) {
        c.tls = Some(TlsFiles { cert, key });
    }
    c.allow_plaintext_secrets = a.allow_plaintext_secrets;
    c.marathon_ca = a.marathon_ca;
    if let Some(v) = a.max_drop {
        c.guard.max_drop = v;
    }
    if let Some(v) = a.drop_hold {
        c.guard.drop_hold = v;
    }
    c.validate()?;
    Ok(c)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    ocean_core::logging::init(&cli.log, cli.log_format);
    // Every daemon holds a descriptor per client and per backend connection.
    match ocean_core::daemon::raise_nofile_limit() {
        Ok(n) => tracing::debug!(open_files = n, "RLIMIT_NOFILE"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ocean: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let cancel = ocean_core::shutdown::install()?;
        match cli.command {
            Command::Control(a) => {
                let a = *a;
                // --domain after --config: rebuild so that the flag wins.
                let config = control_config(a)?;
                ocean_control::run(config, cancel).await
            }
            Command::Dns(a) => ocean_dns::run(dns_config(*a)?, cancel).await,
            Command::RedisRouter(a) => ocean_redis_router::run(a.into_config()?, cancel).await,
            Command::MemcachedRouter(a) => {
                ocean_memcached_router::run(a.into_config()?, cancel).await
            }
            Command::MysqlProxy(a) => ocean_mysql_proxy::run(a.into_config()?, cancel).await,
            Command::LvsSync(a) => ocean_lvs_sync::run(a.into_config()?, cancel).await,
            Command::Up(a) => up::run(a.config, cancel).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ocean: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
