//! Flags ([`Args`]) and the configuration they build ([`Config`]), checked by
//! [`Config::validate`] before anything is bound.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ocean_core::net::Cidr;
use ocean_core::subscriber::{SubscriberArgs, SubscriberConfig};

use crate::auth::Plugin;

/// Default `--max-connections` (alias `--max-clients`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default `--write-timeout`.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// `ocean mysql-proxy` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address clients connect to.
    #[arg(long, default_value = "127.0.0.1:3307")]
    pub listen: SocketAddr,
    /// Admin HTTP address for /metrics, /healthz and /table (off when absent).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    #[command(flatten)]
    pub subscriber: SubscriberArgs,
    /// This host's addresses: a client at 127.0.0.1 or ::1 counts as coming from each of
    /// them (repeatable; default: every non-loopback address of this host).
    #[arg(long = "host-ip", value_name = "IP")]
    pub host_ip: Vec<IpAddr>,
    /// PEM certificate chain for TLS to clients (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS to clients.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) for client certificates: TLS clients are asked for one and a
    /// certificate presented must verify against these (one not presented is allowed at
    /// the TLS layer); jobs with `require_cert_cn` log in only with a verified one whose
    /// subject CN matches. Needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Refuse clients that do not switch to TLS (needs --tls-cert).
    #[arg(long, requires = "tls_cert")]
    pub require_tls: bool,
    /// How long sessions on a database's old primary live after a table moves it.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// Close open sessions of jobs that lose the right to log in (IP gone, grant gone).
    #[arg(long)]
    pub kick_revoked: bool,
    /// How often each candidate of a database with `OCEAN_MYSQL_ROLE=auto` servers is asked
    /// `@@read_only` (primary discovery); a probe not answered within it counts as missed.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub probe_interval: Duration,
    /// Most client connections at once, logins in progress included (0 = no limit); one
    /// more is answered with error 1040 `Too many connections` instead of the greeting.
    #[arg(long, visible_alias = "max-clients", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most sessions per job at once (0 = no limit).
    #[arg(long, default_value_t = 512)]
    pub max_connections_per_job: usize,
    /// Connections from one client IP that have not finished logging in, at most; more
    /// are answered with error 1040 at once and closed (0 = no limit). Logged-in sessions
    /// do not count.
    #[arg(long, default_value_t = 16)]
    pub max_prelogin_per_ip: usize,
    /// Longest a client login may take (the pre-login timeout: PROXY header, greeting to
    /// handshake response, TLS, auth), and separately the backend connect and login.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Close sessions with no bytes either way for this long (0s = never; the backend's
    /// wait_timeout still applies).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Close a backend connection kept for reuse (see `pool_max`) after this long unused.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub pool_idle_timeout: Duration,
    /// How long a multiplexed session waits for a backend connection when all `pool_max`
    /// of its server are busy, before its command gets ERR 1040.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub pool_wait: Duration,
    /// Close a session whose client does not take what is written to it (a result, an
    /// error) for this long, and release its backend connection: a client that never
    /// reads cannot hold a backend or buffers.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,
    /// The auth plugin the greeting names: mysql_native_password or
    /// caching_sha2_password. Clients answering with either are checked as they answered.
    #[arg(long, default_value = "mysql_native_password")]
    pub default_auth: Plugin,
    /// caching_sha2_password logins always take full authentication (`AuthMoreData
    /// 0x04`), as on a MySQL server whose cache is empty: the password in clear inside
    /// TLS, or RSA-encrypted over plain TCP (see --rsa-key). Without it the proxy checks
    /// the scramble (fast auth), which it always can.
    #[arg(long)]
    pub caching_sha2_full_auth: bool,
    /// PEM RSA private key (PKCS#8 or PKCS#1, 2048 bits or more) for caching_sha2_password
    /// full authentication over plain TCP; its public key is sent to clients that ask.
    /// Absent: a 2048-bit key is generated at start when full authentication is on.
    #[arg(long, value_name = "FILE")]
    pub rsa_key: Option<PathBuf>,
    /// Networks of L4 balancers allowed to send a PROXY protocol v2 header (repeatable;
    /// `10.0.0.0/8`, or a bare address for one host); peers in them must send one, and
    /// the address in it is the client's.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxy: Vec<Cidr>,
    /// Server version in the greeting (default: the last backend's, until then 8.0.0-ocean).
    #[arg(long)]
    pub server_version: Option<String>,
    /// Require TLS to every backend: logins to a backend that does not offer TLS, or
    /// whose certificate does not verify against --backend-ca for its IP, fail.
    #[arg(long, requires = "backend_ca")]
    pub backend_tls: bool,
    /// PEM CA certificate(s) verifying backend certificates (with --backend-tls); a
    /// backend's certificate must name its IP as an IP subject alternative name.
    #[arg(long, value_name = "FILE", requires = "backend_tls")]
    pub backend_ca: Option<PathBuf>,
}

/// Everything `start` needs; tests and `ocean up` build it in code.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where clients connect (`--listen`).
    pub listen: SocketAddr,
    /// Admin HTTP (`--admin`).
    pub admin: Option<SocketAddr>,
    /// Where the `mysql` table comes from.
    pub subscriber: SubscriberConfig,
    /// This host's addresses, which a loopback client counts as (`--host-ip`).
    pub host_ips: Vec<IpAddr>,
    /// PEM chain and key for TLS to clients (`--tls-cert`, `--tls-key`).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// CA verifying client certificates (`--client-ca`).
    pub client_ca: Option<PathBuf>,
    /// Clients must switch to TLS (`--require-tls`).
    pub require_tls: bool,
    /// How long sessions on a moved database's old instance live (`--drain`).
    pub drain: Duration,
    /// Close sessions of revoked jobs (`--kick-revoked`).
    pub kick_revoked: bool,
    /// Primary discovery's probe period (`--probe-interval`).
    pub probe_interval: Duration,
    /// Client connections at once, logins in progress included; 0 = no limit
    /// (`--max-connections`, alias `--max-clients`).
    pub max_connections: usize,
    /// Sessions per job; 0 = no limit (`--max-connections-per-job`).
    pub max_connections_per_job: usize,
    /// Logins in progress per client IP (0 = no limit).
    pub max_prelogin_per_ip: usize,
    /// The pre-login timeout, and the backend connect and login's (`--connect-timeout`).
    pub connect_timeout: Duration,
    /// Sessions idle both ways this long are closed; `None` = never (`--idle-timeout`).
    pub idle_timeout: Option<Duration>,
    /// Backend connections kept for reuse are closed after this long unused
    /// (`--pool-idle-timeout`).
    pub pool_idle_timeout: Duration,
    /// A multiplexed session's longest wait for a busy server's connection (`--pool-wait`).
    pub pool_wait: Duration,
    /// A write to a client that does not finish within this closes the session
    /// (`--write-timeout`).
    pub write_timeout: Duration,
    /// The auth plugin of the greeting (`--default-auth`).
    pub default_auth: Plugin,
    /// caching_sha2_password logins take full authentication (`--caching-sha2-full-auth`).
    pub caching_sha2_full_auth: bool,
    /// The RSA key of full authentication over plain TCP (`--rsa-key`); `None` = one
    /// generated at start when full authentication is on.
    pub rsa_key: Option<PathBuf>,
    /// The greeting's server version; `None` = the last backend's (`--server-version`).
    pub server_version: Option<String>,
    /// Peers that must send a PROXY v2 header (`--trusted-proxy`): Ocean's one network
    /// type (ipnet; a v4-mapped network is the IPv4 one, peers compared canonical).
    pub trusted_proxies: Vec<Cidr>,
    /// `--backend-ca` when `--backend-tls`: TLS to every backend, verified with this CA.
    pub backend_tls: Option<PathBuf>,
}

/// A configuration that cannot run; the message names the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--require-tls needs --tls-cert and --tls-key")]
    RequireTlsWithoutTls,
    #[error("--client-ca needs --tls-cert and --tls-key")]
    ClientCaWithoutTls,
    #[error("--backend-tls and --backend-ca go together")]
    BackendTlsWithoutCa,
    #[error("--connect-timeout must be more than 0s")]
    ZeroConnectTimeout,
    #[error("--write-timeout must be more than 0s")]
    ZeroWriteTimeout,
    #[error("--probe-interval must be more than 0s")]
    ZeroProbeInterval,
}

impl Config {
    /// Defaults for everything but the listen address and table source.
    pub fn new(listen: SocketAddr, subscriber: SubscriberConfig) -> Config {
        Config {
            listen,
            admin: None,
            subscriber,
            host_ips: host_addresses(),
            tls: None,
            client_ca: None,
            require_tls: false,
            drain: Duration::ZERO,
            kick_revoked: false,
            probe_interval: Duration::from_secs(1),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_job: 512,
            max_prelogin_per_ip: 16,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: None,
            pool_idle_timeout: Duration::from_secs(60),
            pool_wait: Duration::from_secs(5),
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            default_auth: Plugin::Native,
            caching_sha2_full_auth: false,
            rsa_key: None,
            server_version: None,
            trusted_proxies: Vec::new(),
            backend_tls: None,
        }
    }

    /// Checks what flags alone cannot: called by `into_config` and again by `start`.
    ///
    /// # Errors
    /// The first problem, naming its flag.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.require_tls && self.tls.is_none() {
            return Err(ConfigError::RequireTlsWithoutTls);
        }
        if self.client_ca.is_some() && self.tls.is_none() {
            return Err(ConfigError::ClientCaWithoutTls);
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::ZeroConnectTimeout);
        }
        if self.write_timeout.is_zero() {
            return Err(ConfigError::ZeroWriteTimeout);
        }
        if self.probe_interval.is_zero() {
            return Err(ConfigError::ZeroProbeInterval);
        }
        Ok(())
    }
}

impl Args {
    /// The [`Config`] these flags describe.
    ///
    /// # Errors
    /// A table source that cannot be used, or a check of [`Config::validate`].
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut c = Config::new(self.listen, self.subscriber.into_config()?);
        if !self.host_ip.is_empty() {
            c.host_ips = self.host_ip;
        }
        c.admin = self.admin;
        c.tls = self.tls_cert.zip(self.tls_key);
        c.require_tls = self.require_tls;
        c.client_ca = self.client_ca;
        c.drain = self.drain;
        c.kick_revoked = self.kick_revoked;
        c.probe_interval = self.probe_interval;
        c.max_connections = self.max_connections;
        c.max_connections_per_job = self.max_connections_per_job;
        c.max_prelogin_per_ip = self.max_prelogin_per_ip;
        c.connect_timeout = self.connect_timeout;
        c.idle_timeout = (!self.idle_timeout.is_zero()).then_some(self.idle_timeout);
        c.pool_idle_timeout = self.pool_idle_timeout;
        c.pool_wait = self.pool_wait;
        c.write_timeout = self.write_timeout;
        c.default_auth = self.default_auth;
        c.caching_sha2_full_auth = self.caching_sha2_full_auth;
        c.rsa_key = self.rsa_key;
        c.server_version = self.server_version;
        c.trusted_proxies = self.trusted_proxy;
        if self.backend_tls != self.backend_ca.is_some() {
            return Err(ConfigError::BackendTlsWithoutCa.into());
        }
        c.backend_tls = self.backend_ca;
        c.validate()?;
        Ok(c)
    }
}

/// This host's non-loopback addresses.
pub fn host_addresses() -> Vec<IpAddr> {
    if_addrs::get_if_addrs()
        .map(|v| {
            v.into_iter()
                .map(|i| i.ip())
                .filter(|ip| !ip.is_loopback())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn backend_tls_and_backend_ca_go_together() {
        Cli::command().debug_assert();
        let base = ["ocean", "--table-file", "/tmp/mysql.json"];
        let with = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra.iter()));
        assert!(with(&["--backend-tls"]).is_err());
        assert!(with(&["--backend-ca", "/tmp/ca.pem"]).is_err());
        let cli = with(&["--backend-tls", "--backend-ca", "/tmp/ca.pem"]).unwrap();
        let c = cli.args.into_config().unwrap();
        assert_eq!(c.backend_tls, Some(PathBuf::from("/tmp/ca.pem")));
        let c = with(&[]).unwrap().args.into_config().unwrap();
        assert_eq!(c.backend_tls, None);
    }

    #[test]
    fn max_prelogin_per_ip_flag_and_default() {
        let base = ["ocean", "--table-file", "/tmp/mysql.json"];
        let c = Cli::try_parse_from(base)
            .unwrap()
            .args
            .into_config()
            .unwrap();
        assert_eq!(c.max_prelogin_per_ip, 16);
        let c = Cli::try_parse_from(base.iter().chain(&["--max-prelogin-per-ip", "3"]))
            .unwrap()
            .args
            .into_config()
            .unwrap();
        assert_eq!(c.max_prelogin_per_ip, 3);
    }

    #[test]
    fn max_clients_is_max_connections_and_write_timeout_defaults_to_30s() {
        let base = ["ocean", "--table-file", "/tmp/mysql.json"];
        let c = Cli::try_parse_from(base)
            .unwrap()
            .args
            .into_config()
            .unwrap();
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(c.write_timeout, Duration::from_secs(30));
        for flag in ["--max-clients", "--max-connections"] {
            let c = Cli::try_parse_from(base.iter().chain(&[flag, "7", "--write-timeout", "2s"]))
                .unwrap()
                .args
                .into_config()
                .unwrap();
            assert_eq!(
                (c.max_connections, c.write_timeout),
                (7, Duration::from_secs(2))
            );
        }
        let e = Cli::try_parse_from(base.iter().chain(&["--write-timeout", "0s"]))
            .unwrap()
            .args
            .into_config()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--write-timeout"), "{e}");
    }

    #[test]
    fn trusted_proxies_are_core_cidrs_and_v4_mapped_ones_are_ipv4() {
        let base = ["ocean", "--table-file", "/tmp/mysql.json"];
        let c = Cli::try_parse_from(base.iter().chain(&[
            "--trusted-proxy",
            "10.1.0.0/16",
            "--trusted-proxy",
            "::ffff:10.2.0.0/112",
            "--trusted-proxy",
            "127.0.0.7",
        ]))
        .unwrap()
        .args
        .into_config()
        .unwrap();
        let trusted = |ip: &str| {
            let ip: IpAddr = ip.parse().unwrap();
            c.trusted_proxies.iter().any(|n| n.contains(ip))
        };
        assert!(trusted("10.1.200.3") && trusted("::ffff:10.1.0.9"));
        assert!(trusted("10.2.0.1") && trusted("127.0.0.7"));
        assert!(!trusted("10.3.0.1") && !trusted("127.0.0.8"));
        assert!(
            Cli::try_parse_from(base.iter().chain(&["--trusted-proxy", "10.0.0.0/33"])).is_err()
        );
    }

    /// The proxy holds secrets in its config (control's API token): none may show in
    /// debug output or logs.
    #[test]
    fn debug_output_holds_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "control-token-secret\n").unwrap();
        let cli = Cli::try_parse_from([
            "ocean",
            "--control",
            "http://127.0.0.1:1",
            "--control-token-file",
            token.to_str().unwrap(),
        ])
        .unwrap();
        let c = cli.args.into_config().unwrap();
        assert!(c.subscriber.token.is_some());
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("control-token-secret"), "{shown}");
    }
}
