//! `ocean up`: control and every proxy in one process, from one config file.
//!
//! Without a config the bundled example runs: `examples/` is compiled into the binary and
//! written to a private temporary directory at start, so a new user needs nothing else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ocean_control::api_auth::ApiToken;
use ocean_control::config::{FileConfig, Rebuild, Source};
use ocean_core::secret::Secret;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// The `ocean up` config file (see examples/up.toml).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpConfig {
    control: ControlSection,
    /// `ocean dns`; absent: not run.
    dns: Option<DnsSection>,
    /// `ocean redis-router` in table mode; absent: not run.
    redis_router: Option<RouterSection>,
    /// `ocean memcached-router` in table mode; absent: not run.
    memcached_router: Option<RouterSection>,
    /// `ocean mysql-proxy`; absent: not run.
    mysql_proxy: Option<MysqlSection>,
    /// `ocean lvs-sync`; absent: not run.
    lvs_sync: Option<LvsSection>,
}

/// A router in table mode: one listener per cluster or pool, on its table port.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouterSection {
    /// Address the table's ports are bound on (127.0.0.1).
    #[serde(default = "default_bind")]
    bind: std::net::IpAddr,
    /// /metrics and /healthz of this router (off when absent).
    admin: Option<SocketAddr>,
}

fn default_bind() -> std::net::IpAddr {
    std::net::IpAddr::from([127, 0, 0, 1])
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MysqlSection {
    /// Client address (127.0.0.1:3307).
    #[serde(default = "default_mysql_listen")]
    listen: SocketAddr,
    /// This host's addresses, for clients at 127.0.0.1 (default: the host's own).
    #[serde(default)]
    host_ips: Vec<std::net::IpAddr>,
    /// /metrics and /healthz of the proxy (off when absent).
    admin: Option<SocketAddr>,
}

fn default_mysql_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3307))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LvsSection {
    /// `dry-run` (print the ipvsadm commands; needs nothing), `ipvsadm-restore`, or
    /// `netlink` (the kernel: root and the ip_vs module).
    #[serde(default = "default_lvs_backend")]
    backend: String,
    /// This director's VIPs (CIDR); default: all.
    #[serde(default)]
    vips: Vec<String>,
}

fn default_lvs_backend() -> String {
    "dry-run".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsSection {
    /// DNS address, UDP and TCP (127.0.0.1:8053).
    #[serde(default = "default_dns_listen")]
    listen: SocketAddr,
    /// Mesos-DNS HTTP API (127.0.0.1:8123).
    #[serde(default = "default_dns_http")]
    http: SocketAddr,
    /// Upstream resolvers for names outside the domain.
    #[serde(default)]
    resolvers: Vec<SocketAddr>,
    /// UDP worker threads (default: one per CPU).
    udp_workers: Option<usize>,
}

fn default_dns_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8053))
}

fn default_dns_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8123))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlSection {
    /// HTTP API address (127.0.0.1:7070).
    #[serde(default = "default_control_listen")]
    listen: SocketAddr,
    /// Marathon's apps JSON in a file...
    apps_file: Option<PathBuf>,
    /// ...or Marathon masters.
    #[serde(default)]
    marathon: Vec<url::Url>,
    /// control.toml.
    config: Option<PathBuf>,
}

fn default_control_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}

/// The bundled example, file by file.
const EXAMPLE: &[(&str, &str)] = &[
    ("up.toml", include_str!("../examples/up.toml")),
    ("control.toml", include_str!("../examples/control.toml")),
    (
        "marathon-apps.json",
        include_str!("../examples/marathon-apps.json"),
    ),
    ("secrets/key.rw", include_str!("../examples/secrets/key.rw")),
    ("secrets/key.ro", include_str!("../examples/secrets/key.ro")),
    (
        "secrets/orders.rw",
        include_str!("../examples/secrets/orders.rw"),
    ),
    (
        "secrets/orders.ro",
        include_str!("../examples/secrets/orders.ro"),
    ),
    ("secrets/web.pw", include_str!("../examples/secrets/web.pw")),
];

/// Writes the bundled example to a fresh private directory and returns its up.toml.
fn materialize_example() -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::Builder::new().prefix("ocean-up-").tempdir()?;
    for (name, body) in EXAMPLE {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, body)?;
    }
    let up = dir.path().join("up.toml");
    Ok((dir, up))
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// 32 random bytes from the kernel, hex.
fn random_token() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("/dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The origin of the token `ocean up` gives its own proxies.
const INTERNAL_TOKEN: &str = "ocean up (in-process proxies)";

/// Reads and parses up.toml.
fn read_up(path: &Path) -> anyhow::Result<UpConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}", path.display()))
}

/// Control's config from up.toml's `[control]` and the control.toml it names (without the
/// proxies' internal token).
fn control_config(path: &Path, up: &UpConfig) -> anyhow::Result<ocean_control::Config> {
    let base = path.parent().map(PathBuf::from).unwrap_or_default();
    let source = match (&up.control.apps_file, up.control.marathon.is_empty()) {
        (Some(f), true) => Source::File(resolve(&base, f)),
        (None, false) => Source::Marathon(up.control.marathon.clone()),
        _ => anyhow::bail!(
            "{}: [control] needs exactly one of apps_file or marathon",
            path.display()
        ),
    };
    let mut control = ocean_control::Config::new(source);
    control.listen = up.control.listen;
    if let Some(c) = &up.control.config {
        let file_path = resolve(&base, c);
        let file = FileConfig::load(&file_path)?;
        let file_base = file_path.parent().map(PathBuf::from).unwrap_or_default();
        file.apply(&file_base, &mut control)?;
    }
    Ok(control)
}

pub async fn run(config: Option<PathBuf>, cancel: CancellationToken) -> anyhow::Result<()> {
    let (_example_dir, path, bundled) = match config {
        Some(p) => (None, p, false),
        None => {
            let (dir, p) = materialize_example()?;
            (Some(dir), p, true)
        }
    };
    let up = read_up(&path)?;
    let mut control = control_config(&path, &up)?;
    // When the config sets tokens, the proxies in this process get one of their own: random,
    // unscoped, and never written anywhere.
    let internal_token = if control.tokens.is_empty() {
        None
    } else {
        let token = Secret::new(random_token()?);
        control
            .tokens
            .push(ApiToken::new(INTERNAL_TOKEN, &token, None)?);
        Some(token)
    };
    // SIGHUP: up.toml and the control.toml it names are read again (ocean_control::reload).
    let (again, token) = (path.clone(), internal_token.clone());
    control.rebuild = Some(Rebuild::new(move || {
        let mut c = control_config(&again, &read_up(&again)?)?;
        match &token {
            Some(t) => c.tokens.push(ApiToken::new(INTERNAL_TOKEN, t, None)?),
            None if !c.tokens.is_empty() => anyhow::bail!(
                "API tokens cannot be added to a running `ocean up` that started without any: its proxies have none; restart"
            ),
            None => {}
        }
        c.validate()?;
        Ok(c)
    }));
    // systemd READY=1 only once control and every proxy of this process have a table.
    ocean_core::notify::expect("control");
    for (present, kind) in [
        (up.dns.is_some(), "dns"),
        (up.redis_router.is_some(), "redis"),
        (up.memcached_router.is_some(), "memcached"),
        (up.mysql_proxy.is_some(), "mysql"),
        (up.lvs_sync.is_some(), "lvs"),
    ] {
        if present {
            ocean_core::notify::expect(kind);
        }
    }
    let running = ocean_control::engine::start(control, cancel.clone())
        .await
        .context("[control]")?;
    let api = running.addr;
    // Proxies start once control has its first tables, so they do not begin with a 503.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while running.shared.status().last_success_unix.is_none()
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let control_url = url::Url::parse(&format!("http://{api}"))?;
    let dns = match &up.dns {
        Some(d) => {
            let mut c = ocean_dns::Config::new(ocean_core::subscriber::SubscriberConfig {
                controls: vec![control_url.clone()],
                subscriber_id: "ocean-up/dns".into(),
                token: internal_token.clone(),
                ..Default::default()
            });
            c.listen = d.listen;
            c.http = Some(d.http);
            c.resolvers = d.resolvers.clone();
            if let Some(n) = d.udp_workers {
                c.udp_workers = n;
            }
            Some(
                ocean_dns::server::start(c, cancel.clone())
                    .await
                    .context("[dns]")?,
            )
        }
        None => None,
    };
    let table_source = |who: &str| ocean_core::subscriber::SubscriberConfig {
        controls: vec![control_url.clone()],
        subscriber_id: format!("ocean-up/{who}"),
        token: internal_token.clone(),
        ..Default::default()
    };
    let redis = match &up.redis_router {
        Some(r) => {
            let c = ocean_redis_router::Config {
                mode: ocean_redis_router::Mode::Table {
                    subscriber: table_source("redis-router"),
                    bind: r.bind,
                },
                threads: 0,
                client: Default::default(),
                cluster: Default::default(),
                admin: r.admin,
                sharding: None,
            };
            Some(
                ocean_redis_router::start(c, cancel.clone())
                    .await
                    .context("[redis_router]")?,
            )
        }
        None => None,
    };
    let memcached = match &up.memcached_router {
        Some(r) => {
            let c = ocean_memcached_router::Config {
                mode: ocean_memcached_router::config::Mode::Table {
                    bind: r.bind,
                    subscriber: table_source("memcached-router"),
                },
                settings: ocean_memcached_router::config::Settings::default(),
                threads: 0,
                admin: r.admin,
                pool_file: None,
            };
            Some(
                ocean_memcached_router::start(c, cancel.clone())
                    .await
                    .context("[memcached_router]")?,
            )
        }
        None => None,
    };
    let mysql = match &up.mysql_proxy {
        Some(m) => {
            let mut c = ocean_mysql_proxy::Config::new(m.listen, table_source("mysql-proxy"));
            if !m.host_ips.is_empty() {
                c.host_ips = m.host_ips.clone();
            }
            c.admin = m.admin;
            Some(
                ocean_mysql_proxy::start(c, cancel.clone())
                    .await
                    .context("[mysql_proxy]")?,
            )
        }
        None => None,
    };
    let lvs = match &up.lvs_sync {
        Some(l) => {
            use clap::ValueEnum;
            let backend = ocean_lvs_sync::backend::BackendKind::from_str(&l.backend, false)
                .map_err(|e| anyhow::anyhow!("[lvs_sync] backend {:?}: {e}", l.backend))?;
            let mut c = ocean_lvs_sync::Config::new(backend);
            c.subscriber = table_source("lvs-sync");
            for v in &l.vips {
                c.vips.push(
                    v.parse()
                        .map_err(|e| anyhow::anyhow!("[lvs_sync] vips {v:?}: {e}"))?,
                );
            }
            Some(
                ocean_lvs_sync::start(c, cancel.clone())
                    .await
                    .context("[lvs_sync]")?,
            )
        }
        None => None,
    };
    println!();
    println!(
        "ocean up: {}",
        if bundled {
            "running the bundled example (examples/ in the source tree)"
        } else {
            "running"
        }
    );
    println!("  control   http://{api}   tables, state, problems, subscribers, metrics");
    if let Some(d) = &dns {
        println!(
            "  dns       {} (udp, tcp)   Mesos-DNS names of the apps",
            d.dns_addr
        );
        if let Some(h) = d.http_addr {
            println!("  dns-http  http://{h}   Mesos-DNS HTTP API, /metrics");
        }
    }
    if redis.is_some() {
        println!(
            "  redis     one plain-Redis port per cluster of the redis table (its listen_port)"
        );
    }
    if memcached.is_some() {
        println!(
            "  memcached one memcached port per pool of the memcached table (its listen_port)"
        );
    }
    if let Some(m) = &mysql {
        println!(
            "  mysql     {}   log in as a JOBNAME from one of its task IPs",
            m.addr
        );
    }
    if let Some(l) = &up.lvs_sync {
        println!(
            "  lvs-sync  backend {}: the IPVS changes for the lvs table{}",
            l.backend,
            if l.backend == "dry-run" {
                " are printed as ipvsadm commands"
            } else {
                ""
            }
        );
    }
    println!();
    println!("Try:");
    if let Some(d) = &dns {
        println!(
            "  dig @{} -p {} web-browser-miui.marathon.mesos",
            d.dns_addr.ip(),
            d.dns_addr.port()
        );
        println!(
            "  dig @{} -p {} _web-browser-miui._tcp.marathon.mesos SRV",
            d.dns_addr.ip(),
            d.dns_addr.port()
        );
    }
    println!("  curl -s http://{api}/v1/tables/dns | head -c 600; echo");
    println!("  curl -s http://{api}/v1/tables/redis");
    println!("  curl -s http://{api}/v1/problems");
    println!("  curl -s -i 'http://{api}/v1/tables/lvs?wait=5s' -H 'If-None-Match: \"<etag>\"'   # long-poll");
    println!("  curl -s http://{api}/metrics | grep ocean_control");
    println!();
    println!("Ctrl-C stops.");
    running.wait().await;
    if let Some(d) = dns {
        d.wait().await;
    }
    if let Some(r) = redis {
        r.wait().await;
    }
    if let Some(m) = memcached {
        m.wait().await;
    }
    if let Some(m) = mysql {
        m.wait().await;
    }
    if let Some(l) = lvs {
        l.wait().await;
    }
    Ok(())
}
