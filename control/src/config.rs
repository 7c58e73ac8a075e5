//! Control's configuration: command-line settings plus `control.toml` (shape in DESIGN.md).
//!
//! Secrets (backend MySQL passwords, job passwords, the API token) come from this file or
//! files it names, never from Marathon labels. Relative file names are relative to the
//! config file's directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ocean_core::net::Cidr;
use ocean_core::table::dns::check_fqdn;
use ocean_core::table::mysql::{Credentials, JobPassword};
use serde::Deserialize;
use url::Url;

use crate::api_auth::{self, ApiFile, ApiToken, TokenError, ORIGIN_TOKEN_FILE_KEY};
use crate::derive::dns::{view_label, DnsSettings, ViewSettings};
use crate::derive::mysql::{hash_password, DatabaseConfig, MysqlConfig};
use crate::derive::DeriveConfig;
use crate::guard::GuardConfig;
use crate::ownership::{AllowRule, AppPrefix, Owners, VipRange};
use crate::tls::TlsFiles;

/// Where Marathon's state comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Marathon instances (REST + event stream).
    Marathon(Vec<Url>),
    /// A file with the JSON of `GET /v2/apps?embed=apps.tasks`, re-read when it changes.
    File(PathBuf),
    /// Fixed JSON (the example `ocean up` embeds).
    Static { name: String, body: Bytes },
}

/// Everything `ocean control` runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: Source,
    /// HTTP API address.
    pub listen: SocketAddr,
    /// Full re-list interval while the event stream is up.
    pub resync: Duration,
    /// Poll interval while the event stream is down (and for `--apps-file` changes).
    pub poll_while_down: Duration,
    /// Least time from the end of a sync to the next one an event causes (an event after a
    /// quiet spell syncs at once); the delay after an apps file change.
    pub debounce: Duration,
    /// Timeout of each Marathon request.
    pub marathon_timeout: Duration,
    /// Longest long-poll a client may ask for.
    pub max_wait: Duration,
    /// Version steps kept per table kind for deltas (`--delta-history`; 0: always whole
    /// tables).
    pub delta_history: usize,
    /// `/healthz` answers 503 `lagging` once control's view of Marathon is older than this
    /// (`--max-lag`; see [`crate::freshness`]). `None`: it never does.
    pub max_lag: Option<Duration>,
    /// Bearer tokens for `/v1/` (`--token-file`, `token_file`, `[[api.tokens]]`), each
    /// maybe scoped to some tables. Empty: the API is open, allowed on loopback only.
    pub tokens: Vec<ApiToken>,
    /// Serve the API over TLS (`--tls-cert`, `--tls-key`).
    pub tls: Option<TlsFiles>,
    /// Serve the `mysql` table (backend passwords) without TLS to non-loopback peers.
    pub allow_plaintext_secrets: bool,
    /// CA certificates (PEM) an `https://` Marathon must chain to (`--marathon-ca`); else
    /// the system's trust store.
    pub marathon_ca: Option<PathBuf>,
    /// Where the last published tables are kept, so that a restarted control guards
    /// against an empty or partial Marathon answer as a running one does.
    pub state_dir: Option<std::path::PathBuf>,
    pub derive: DeriveConfig,
    pub guard: GuardConfig,
    /// How to build this config again from where it came from (flags, control.toml and the
    /// files it names), on SIGHUP; `None`: nothing to re-read.
    pub rebuild: Option<Rebuild>,
}

/// Builds control's whole config again from its sources: what a SIGHUP runs
/// ([`crate::reload`]). `ocean control` re-parses its flags' `--config` and token files;
/// `ocean up` re-reads its own file and the control.toml it names.
#[derive(Clone)]
pub struct Rebuild(Arc<dyn Fn() -> anyhow::Result<Config> + Send + Sync>);

impl Rebuild {
    pub fn new(f: impl Fn() -> anyhow::Result<Config> + Send + Sync + 'static) -> Self {
        Rebuild(Arc::new(f))
    }

    /// The config as its sources say now.
    ///
    /// # Errors
    /// Whatever the sources have wrong: an unreadable or invalid file, a bad secret file,
    /// a config that does not validate.
    pub fn build(&self) -> anyhow::Result<Config> {
        (self.0)()
    }
}

impl std::fmt::Debug for Rebuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rebuild")
    }
}

impl Config {
    /// Defaults for everything but the source.
    pub fn new(source: Source) -> Self {
        Config {
            source,
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            resync: Duration::from_secs(60),
            poll_while_down: Duration::from_secs(2),
            debounce: Duration::from_millis(100),
            marathon_timeout: Duration::from_secs(10),
            max_wait: Duration::from_secs(120),
            delta_history: crate::store::DEFAULT_DELTA_HISTORY,
            max_lag: None,
            tokens: Vec::new(),
            tls: None,
            allow_plaintext_secrets: false,
            marathon_ca: None,
            state_dir: None,
            derive: DeriveConfig {
                dns: DnsSettings::default(),
                mysql: MysqlConfig::default(),
                owners: Owners::default(),
            },
            guard: GuardConfig::default(),
            rebuild: None,
        }
    }

    /// Checks what can be checked before binding anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // First: no other mistake matters if the API would be open to the network.
        crate::api_auth::check_config(&self.tokens, self.listen)?;
        match &self.source {
            Source::Marathon(urls) if urls.is_empty() => return Err(ConfigError::NoSource),
            Source::Marathon(urls) => {
                if let Some(u) = urls
                    .iter()
                    .find(|u| !matches!(u.scheme(), "http" | "https"))
                {
                    return Err(ConfigError::Field {
                        field: "--marathon".into(),
                        message: format!("{u}: only http and https"),
                    });
                }
            }
            _ => {}
        }
        if !(0.0..=1.0).contains(&self.guard.max_drop) {
            return Err(ConfigError::Field {
                field: "guard.max_drop".into(),
                message: format!("{} is not a fraction between 0 and 1", self.guard.max_drop),
            });
        }
        if self.resync.is_zero() || self.poll_while_down.is_zero() {
            return Err(ConfigError::Field {
                field: "--resync/--poll-while-down".into(),
                message: "must be longer than 0".into(),
            });
        }
        let dns = &self.derive.dns;
        if dns.zones.contains_key(&dns.domain) {
            return Err(ConfigError::Field {
                field: format!("dns.zones.{:?}", dns.domain),
                message: "the domain is served anyway; a zone must be another name".into(),
            });
        }
        if self.derive.dns.ttl == 0 {
            return Err(ConfigError::Field {
                field: "dns.ttl".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// A configuration problem, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no Marathon source: give --marathon URL or --apps-file FILE")]
    NoSource,
    #[error("{field}: {message}")]
    Field { field: String, message: String },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

impl From<TokenError> for ConfigError {
    fn from(e: TokenError) -> Self {
        ConfigError::Field {
            field: e.field,
            message: e.message,
        }
    }
}

/// `ocean control` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Marathon base URL; repeat for several masters (only the elected leader is trusted).
    #[arg(long = "marathon", value_name = "URL", conflicts_with = "apps_file")]
    pub marathon: Vec<url::Url>,
    /// A file holding the JSON of `GET /v2/apps?embed=apps.tasks`, re-read when it changes.
    #[arg(long, value_name = "FILE")]
    pub apps_file: Option<PathBuf>,
    /// control.toml: domain, DNS, guard, MySQL credentials (see docs/control.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Full re-list from Marathon this often while the event stream is up.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub resync: Duration,
    /// Re-list this often while the event stream is down (and check --apps-file for changes).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub poll_while_down: Duration,
    /// Least time from the end of a sync to the next one an event causes, to batch bursts
    /// (an event after a quiet spell syncs at once); the delay after an apps file change.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub debounce: Duration,
    /// Timeout of each request to Marathon.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub marathon_timeout: Duration,
    /// File with a bearer token that reads every /v1/ endpoint (replaces `token_file` of the
    /// config file; `[[api.tokens]]` there add scoped ones). Required off loopback.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve the API over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve the mysql table (backend passwords) without TLS to peers off loopback.
    #[arg(long)]
    pub allow_plaintext_secrets: bool,
    /// CA certificates (PEM) an https --marathon must chain to (default: the system's).
    #[arg(long, value_name = "FILE")]
    pub marathon_ca: Option<PathBuf>,
    /// Hold a table that would lose more than this fraction of its backends (overrides guard.max_drop).
    #[arg(long)]
    pub max_drop: Option<f64>,
    /// Publish a held table once its drop has lasted this long (overrides guard.drop_hold).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub drop_hold: Option<Duration>,
    /// DNS domain (overrides `domain` in the config file).
    #[arg(long)]
    pub domain: Option<String>,
    /// Keep the last published tables here, so that after a restart the drop guard still
    /// holds back an empty or partial Marathon answer.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Versions per table kept for deltas: a subscriber fewer versions behind gets only what
    /// changed (`?since=`), one further behind the whole table. 0 turns deltas off.
    #[arg(long, default_value_t = crate::store::DEFAULT_DELTA_HISTORY)]
    pub delta_history: usize,
    /// Answer /healthz with 503 `lagging` while this replica's view of Marathon is older
    /// than this (e.g. 30s), so a load balancer in front of several replicas leaves it.
    /// Unset: a stale view is reported in the body with 200.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_lag: Option<Duration>,
}

impl Args {
    /// Builds control's config from flags and the optional config file; flags win.
    ///
    /// The config remembers these flags, so that a SIGHUP reads the same files again
    /// ([`Config::rebuild`]).
    ///
    /// # Errors
    /// No source, an unreadable or invalid config file, a bad token file, an invalid result.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let again = self.clone();
        let mut c = self.build()?;
        c.rebuild = Some(Rebuild::new(move || again.clone().build()));
        Ok(c)
    }

    fn build(self) -> anyhow::Result<Config> {
        let a = self;
        let source = match (a.apps_file, a.marathon.is_empty()) {
            (Some(f), _) => Source::File(f),
            (None, false) => Source::Marathon(a.marathon),
            (None, true) => {
                anyhow::bail!("no Marathon source: give --marathon URL or --apps-file FILE")
            }
        };
        let mut c = Config::new(source);
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
        c.delta_history = a.delta_history;
        c.max_lag = a.max_lag;
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
}

/// `control.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// DNS domain; names are `<app>.marathon.<domain>`. Default `mesos`.
    pub domain: Option<String>,
    #[serde(default)]
    pub dns: DnsFile,
    #[serde(default)]
    pub guard: GuardFile,
    #[serde(default)]
    pub mysql: MysqlFile,
    /// Who owns which Redis cluster names.
    #[serde(default)]
    pub redis: RedisFile,
    /// Who owns which memcached pool names.
    #[serde(default)]
    pub memcached: MemcachedFile,
    /// Which VIPs apps may claim.
    #[serde(default)]
    pub lvs: LvsFile,
    /// File holding a bearer token for `/v1/` that reads everything (`--token-file`
    /// replaces it).
    pub token_file: Option<PathBuf>,
    /// `[[api.tokens]]`: more bearer tokens, each maybe limited to some tables.
    #[serde(default)]
    pub api: ApiFile,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsFile {
    /// TTL of every record, seconds (60).
    pub ttl: Option<u32>,
    /// Mesos masters `ip:port`, for `master.<domain>` and `leader.<domain>`.
    #[serde(default)]
    pub masters: Vec<SocketAddr>,
    /// Mesos-DNS `EnforceRFC952`: labels of at most 24 characters.
    pub enforce_rfc952: Option<bool>,
    /// Publish tasks failing their health checks, as Mesos-DNS does.
    pub include_unhealthy: Option<bool>,
    /// SOA primary name server (`ns1.<domain>.`).
    pub soa_mname: Option<String>,
    /// SOA mailbox (`root.ns1.<domain>.`).
    pub soa_rname: Option<String>,
    /// SRV weight (1).
    pub srv_weight: Option<u16>,
    /// `[dns.views.NAME] networks = [...]`, in file order: the order clients are matched in.
    #[serde(default, deserialize_with = "in_file_order")]
    pub views: Vec<(String, ViewFile)>,
    /// `[dns.zones."ZONE"] apps = [...]`: extra zones and who may put names in them.
    #[serde(default)]
    pub zones: BTreeMap<String, OwnersFile>,
}

/// `[dns.views.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewFile {
    /// CIDRs (or addresses) of the view's clients.
    pub networks: Vec<String>,
}

/// A TOML table's entries in file order (toml's `preserve_order` keeps it; a map type
/// would sort them, and the order of views is the order they match in).
fn in_file_order<'de, D, T>(d: D) -> Result<Vec<(String, T)>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Entries<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Entries<T> {
        type Value = Vec<(String, T)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a table")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = m.next_entry()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Entries(std::marker::PhantomData))
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardFile {
    /// Fraction of a table's backends that may go at once (0.5).
    pub max_drop: Option<f64>,
    /// How long a bigger drop must persist before it is published ("120s").
    #[serde(default, with = "humantime_serde")]
    pub drop_hold: Option<Duration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlFile {
    #[serde(default)]
    pub databases: BTreeMap<String, DatabaseFile>,
    #[serde(default)]
    pub jobs: BTreeMap<String, JobFile>,
}

/// `[redis]`: ownership of cluster names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    /// `[redis.clusters."NAME"]`, one per `OCEAN_REDIS_CLUSTER` name.
    #[serde(default)]
    pub clusters: BTreeMap<String, OwnersFile>,
}

/// `[memcached]`: ownership of pool names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemcachedFile {
    /// `[memcached.pools."NAME"]`, one per `OCEAN_MEMCACHED_POOL` name.
    #[serde(default)]
    pub pools: BTreeMap<String, OwnersFile>,
}

/// Who may claim one shared name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnersFile {
    /// App-id prefixes (`"/cache/"`) whose apps may claim the name; nobody else may.
    pub apps: Vec<AppPrefix>,
}

/// `[lvs]`: the VIP ranges apps may claim.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LvsFile {
    /// `[{ cidr = "10.99.0.0/24", apps = ["/lb/"] }]`; no range, no VIP.
    #[serde(default)]
    pub vips: Vec<VipRange>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseFile {
    /// The schema clients name; default: the last segment of the database name.
    pub schema: Option<String>,
    /// App-id prefixes whose apps may declare this database's servers (`OCEAN_MYSQL_DB`);
    /// default: apps under the database name's top-level group.
    pub apps: Option<Vec<AppPrefix>>,
    /// `"PREFIX:rw|ro"`: the jobs that may be granted this database and at most what;
    /// default: jobs under the database name's top-level group, rw.
    pub allow: Option<Vec<AllowRule>>,
    pub user: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ro_user: Option<String>,
    pub ro_password: Option<String>,
    pub ro_password_file: Option<PathBuf>,
    /// Idle backend connections mysql-proxy keeps per server for reuse (0: off; default
    /// 100).
    pub pool_max: Option<u32>,
    /// Sessions share backend connections between plain reads (needs pool_max).
    pub multiplex: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// App-id prefixes whose apps may run as this job (label `OCEAN_JOBNAME` or their id);
    /// default: the app `/JOBNAME` and its group, else one top-level group.
    pub apps: Option<Vec<AppPrefix>>,
    /// The password in clear (hashed at load; prefer the hashes or a file).
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    /// hex SHA1(SHA1(password)), as MySQL's `PASSWORD()` without the `*`.
    pub password_sha1_sha1: Option<String>,
    /// hex SHA256(SHA256(password)).
    pub password_sha256_sha256: Option<String>,
    /// The job logs in only over TLS with a client certificate verified by the proxy's
    /// `--client-ca` whose subject CN is exactly this.
    pub require_cert_cn: Option<String>,
}

fn read_secret(
    base: &Path,
    field: &str,
    inline: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<String>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::Field {
            field: field.into(),
            message: "give the password or the password file, not both".into(),
        }),
        (Some(p), None) => Ok(Some(p.clone())),
        (None, Some(f)) => {
            let path = base.join(f);
            let s = std::fs::read_to_string(&path).map_err(|e| ConfigError::Field {
                field: field.into(),
                message: format!("{}: {e}", path.display()),
            })?;
            // A trailing newline from `echo pw > file` is not part of the password.
            Ok(Some(s.trim_end_matches(['\n', '\r']).to_string()))
        }
        (None, None) => Ok(None),
    }
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Applies this file to `config`; relative secret files are resolved against `base`.
    pub fn apply(&self, base: &Path, config: &mut Config) -> Result<(), ConfigError> {
        let dns = &mut config.derive.dns;
        if let Some(d) = &self.domain {
            dns.set_domain(d);
        }
        if let Some(t) = self.dns.ttl {
            dns.ttl = t;
        }
        if !self.dns.masters.is_empty() {
            dns.masters = self.dns.masters.clone();
        }
        if let Some(v) = self.dns.enforce_rfc952 {
            dns.enforce_rfc952 = v;
        }
        if let Some(v) = self.dns.include_unhealthy {
            dns.include_unhealthy = v;
        }
        if let Some(v) = &self.dns.soa_mname {
            dns.soa.mname = fqdn(v);
        }
        if let Some(v) = &self.dns.soa_rname {
            dns.soa.rname = fqdn(&v.replace('@', "."));
        }
        if let Some(v) = self.dns.srv_weight {
            dns.srv_weight = v;
        }
        dns.views = dns_views(&self.dns.views)?;
        dns.zones = dns_zones(&self.dns.zones)?;
        if let Some(v) = self.guard.max_drop {
            config.guard.max_drop = v;
        }
        if let Some(v) = self.guard.drop_hold {
            config.guard.drop_hold = v;
        }
        if let Some(f) = &self.token_file {
            let token = ApiToken::from_file(ORIGIN_TOKEN_FILE_KEY, &base.join(f), None)?;
            config.tokens.push(token);
        }
        config.tokens.extend(self.api.load(base)?);
        let mut secrets = MysqlConfig::default();
        for (name, db) in &self.mysql.databases {
            let field = |f: &str| format!("mysql.databases.\"{name}\".{f}");
            if !name.starts_with('/') {
                return Err(ConfigError::Field {
                    field: format!("mysql.databases.\"{name}\""),
                    message: "database names look like /dept/product/name".into(),
                });
            }
            let password = read_secret(base, &field("password"), &db.password, &db.password_file)?
                .ok_or_else(|| ConfigError::Field {
                    field: field("password"),
                    message: "a password or password_file is required".into(),
                })?;
            let ro_password = read_secret(
                base,
                &field("ro_password"),
                &db.ro_password,
                &db.ro_password_file,
            )?;
            let ro = match (&db.ro_user, ro_password) {
                (Some(user), Some(password)) => Some(Credentials {
                    user: user.clone(),
                    password,
                }),
                (None, None) => None,
                _ => {
                    return Err(ConfigError::Field {
                        field: field("ro_user"),
                        message: "ro_user and ro_password(_file) go together".into(),
                    })
                }
            };
            if db.apps.as_ref().is_some_and(Vec::is_empty) {
                return Err(ConfigError::Field {
                    field: field("apps"),
                    message: "an empty list lets no app declare the database; remove the key for the default".into(),
                });
            }
            secrets.databases.insert(
                name.clone(),
                DatabaseConfig {
                    schema: db.schema.clone(),
                    rw: Credentials {
                        user: db.user.clone(),
                        password,
                    },
                    ro,
                    apps: db.apps.clone(),
                    allow: db.allow.clone(),
                    pool_max: db.pool_max,
                    multiplex: db.multiplex,
                },
            );
        }
        for (name, job) in &self.mysql.jobs {
            let field = format!("mysql.jobs.\"{name}\"");
            let clear = read_secret(
                base,
                &format!("{field}.password"),
                &job.password,
                &job.password_file,
            )?;
            let hashed = match (clear, &job.password_sha1_sha1, &job.password_sha256_sha256) {
                (Some(pw), None, None) => Some(hash_password(&pw)),
                (None, Some(a), Some(b)) => Some(JobPassword {
                    sha1_sha1: a.trim_start_matches('*').to_ascii_lowercase(),
                    sha256_sha256: b.to_ascii_lowercase(),
                }),
                // A section with only `apps` (and/or `require_cert_cn`) names the job's
                // owners (or its certificate) and sets no password.
                (None, None, None) if job.apps.is_some() || job.require_cert_cn.is_some() => {
                    None
                }
                _ => {
                    return Err(ConfigError::Field {
                        field,
                        message: "give password, password_file, or both password_sha1_sha1 and password_sha256_sha256 (or only `apps`)".into(),
                    })
                }
            };
            if let Some(h) = &hashed {
                let hex =
                    |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
                if !hex(&h.sha1_sha1, 40) || !hex(&h.sha256_sha256, 64) {
                    // Fail at load: a proxy would refuse the job for the broken hash anyway.
                    return Err(ConfigError::Field {
                        field: format!("{field}.password_sha1_sha1/password_sha256_sha256"),
                        message: "must be 40 and 64 hex digits".into(),
                    });
                }
                secrets.jobs.insert(name.clone(), h.clone());
            }
            if let Some(apps) = &job.apps {
                secrets.job_owners.insert(name.clone(), apps.clone());
            }
            if let Some(cn) = &job.require_cert_cn {
                if cn.is_empty() {
                    return Err(ConfigError::Field {
                        field: format!("{field}.require_cert_cn"),
                        message: "must not be empty".into(),
                    });
                }
                secrets.job_cert_cns.insert(name.clone(), cn.clone());
            }
        }
        config.derive.mysql = secrets;
        config.derive.owners = Owners {
            redis_clusters: self
                .redis
                .clusters
                .iter()
                .map(|(k, v)| (k.clone(), v.apps.clone()))
                .collect(),
            memcached_pools: self
                .memcached
                .pools
                .iter()
                .map(|(k, v)| (k.clone(), v.apps.clone()))
                .collect(),
            vips: self.lvs.vips.clone(),
        };
        Ok(())
    }
}

/// `[dns.views]`, checked: names a label can spell, networks that parse.
fn dns_views(views: &[(String, ViewFile)]) -> Result<Vec<ViewSettings>, ConfigError> {
    let mut out: Vec<ViewSettings> = Vec::new();
    for (name, v) in views {
        let field = |f: &str| format!("dns.views.{name}{f}");
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(ConfigError::Field {
                field: field(""),
                message: "view names are [a-z0-9_-]+".into(),
            });
        }
        // Labels spell `-` as `_`: two such names would share OCEAN_ELB_VIEW_*.
        if let Some(other) = out.iter().find(|o| o.label() == view_label(name)) {
            return Err(ConfigError::Field {
                field: field(""),
                message: format!(
                    "{} would be the label of views {} and {name}",
                    view_label(name),
                    other.name
                ),
            });
        }
        if v.networks.is_empty() {
            return Err(ConfigError::Field {
                field: field(".networks"),
                message: "a view needs at least one network".into(),
            });
        }
        let networks = v
            .networks
            .iter()
            .map(|n| n.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::Field {
                field: field(".networks"),
                message: e.to_string(),
            })?;
        out.push(ViewSettings {
            name: name.clone(),
            networks,
        });
    }
    Ok(out)
}

/// `[dns.zones]`, checked: lowercase names without the trailing dot, owners given.
fn dns_zones(
    zones: &BTreeMap<String, OwnersFile>,
) -> Result<BTreeMap<String, Vec<AppPrefix>>, ConfigError> {
    let mut out = BTreeMap::new();
    for (zone, o) in zones {
        let field = format!("dns.zones.{zone:?}");
        let z = zone.trim_end_matches('.').to_ascii_lowercase();
        if let Err(e) = check_fqdn(&format!("{z}.")) {
            return Err(ConfigError::Field { field, message: e });
        }
        if o.apps.is_empty() {
            return Err(ConfigError::Field {
                field: format!("{field}.apps"),
                message: "an empty list lets no app put names in the zone".into(),
            });
        }
        if out.insert(z, o.apps.clone()).is_some() {
            return Err(ConfigError::Field {
                field,
                message: "the zone is listed twice".into(),
            });
        }
    }
    Ok(out)
}

fn fqdn(s: &str) -> String {
    if s.ends_with('.') {
        s.to_string()
    } else {
        format!("{s}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_md_shape_loads_with_secret_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/key.rw"), "rw-secret\n").unwrap();
        std::fs::write(dir.path().join("secrets/key.ro"), "ro-secret").unwrap();
        std::fs::write(dir.path().join("secrets/web.pw"), "pw").unwrap();
        let toml = r#"
domain = "mesos"
[dns]
ttl = 30
[guard]
max_drop = 0.3
drop_hold = "90s"
[mysql.databases."/miui/browser/key"]
schema = "key"
user = "ocean_rw"
password_file = "secrets/key.rw"
ro_user = "ocean_ro"
ro_password_file = "secrets/key.ro"
pool_max = 50
multiplex = true
[mysql.jobs."miui/browser/web"]
password_file = "secrets/web.pw"
"#;
        let path = dir.path().join("control.toml");
        std::fs::write(&path, toml).unwrap();
        let file = FileConfig::load(&path).unwrap();
        let mut c = Config::new(Source::File("x".into()));
        file.apply(dir.path(), &mut c).unwrap();
        assert_eq!(c.derive.dns.ttl, 30);
        assert_eq!(c.guard.drop_hold, Duration::from_secs(90));
        let db = &c.derive.mysql.databases["/miui/browser/key"];
        assert_eq!(db.rw.password, "rw-secret");
        assert_eq!(db.ro.as_ref().unwrap().password, "ro-secret");
        assert_eq!(db.pool_max, Some(50));
        assert_eq!(db.multiplex, Some(true));
        assert_eq!(c.derive.mysql.jobs["miui/browser/web"], hash_password("pw"));
        c.validate().unwrap();
    }

    #[test]
    fn ownership_rules_load_and_bad_ones_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.toml");
        let toml = r#"
[mysql.databases."/miui/browser/key"]
user = "rw"
password = "x"
apps = ["/db/"]
allow = ["/miui/browser/:rw", "/miui/report/:ro"]
[mysql.jobs."shared"]
apps = ["/a/", "/b/x"]
[mysql.jobs."certified"]
require_cert_cn = "certified-client"
[redis.clusters.sessions]
apps = ["/cache/"]
[memcached.pools.pages]
apps = ["/cache/"]
[lvs]
vips = [{ cidr = "10.99.0.0/24", apps = ["/lb/"] }, { cidr = "fd00::/64", apps = ["/lb6/"] }]
"#;
        std::fs::write(&path, toml).unwrap();
        let mut c = Config::new(Source::File("x".into()));
        FileConfig::load(&path)
            .unwrap()
            .apply(dir.path(), &mut c)
            .unwrap();
        let db = &c.derive.mysql.databases["/miui/browser/key"];
        assert_eq!(db.apps.as_ref().map(Vec::len), Some(1));
        assert_eq!(db.allow.as_ref().map(Vec::len), Some(2));
        assert!(
            c.derive.mysql.jobs.is_empty(),
            "apps alone sets no password"
        );
        assert_eq!(c.derive.mysql.job_owners["shared"].len(), 2);
        assert_eq!(
            c.derive.mysql.job_cert_cns["certified"], "certified-client",
            "require_cert_cn alone sets no password"
        );
        assert!(c.derive.owners.redis_clusters.contains_key("sessions"));
        assert!(c.derive.owners.memcached_pools.contains_key("pages"));
        assert_eq!(c.derive.owners.vips.len(), 2);

        for (bad, needle) in [
            (
                "[lvs]\nvips = [{ cidr = \"10.99.0.0/33\", apps = [\"/lb/\"] }]\n",
                "cidr",
            ),
            (
                "[lvs]\nvips = [{ cidr = \"10.99.0.0/24\", apps = [\"lb\"] }]\n",
                "must start with '/'",
            ),
            (
                "[redis.clusters.x]\napps = [\"cache\"]\n",
                "must start with '/'",
            ),
            ("[redis.clusters.x]\nowners = [\"/cache/\"]\n", "owners"),
            (
                "[mysql.databases.\"/a/b/c\"]\nuser = \"u\"\npassword = \"p\"\nallow = [\"/a/\"]\n",
                "APP-PREFIX:rw",
            ),
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = FileConfig::load(&path).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        std::fs::write(
            &path,
            "[mysql.databases.\"/a/b/c\"]\nuser = \"u\"\npassword = \"p\"\napps = []\n",
        )
        .unwrap();
        let err = FileConfig::load(&path)
            .unwrap()
            .apply(dir.path(), &mut Config::new(Source::File("x".into())))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mysql.databases.\"/a/b/c\".apps"), "{err}");
    }

    #[test]
    fn dns_views_keep_file_order_and_zones_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.toml");
        // Not alphabetical, so a sorted map would show.
        let toml = r#"
[dns.views.unicom]
networks = ["10.1.0.0/16", "::ffff:10.3.0.0/112"]
[dns.views.china-telecom]
networks = ["10.2.0.0/16"]
[dns.views.a_default]
networks = ["10.0.0.1"]
[dns.zones."Shop.Example.com."]
apps = ["/lb/"]
[dns.zones."example.org"]
apps = ["/web/", "/lb/x"]
"#;
        std::fs::write(&path, toml).unwrap();
        let mut c = Config::new(Source::File("x".into()));
        FileConfig::load(&path)
            .unwrap()
            .apply(dir.path(), &mut c)
            .unwrap();
        c.validate().unwrap();
        let views: Vec<(String, Vec<String>)> = c
            .derive
            .dns
            .views
            .iter()
            .map(|v| {
                (
                    v.name.clone(),
                    v.networks.iter().map(ToString::to_string).collect(),
                )
            })
            .collect();
        assert_eq!(
            views,
            vec![
                (
                    "unicom".into(),
                    vec!["10.1.0.0/16".into(), "10.3.0.0/16".into()]
                ),
                ("china-telecom".into(), vec!["10.2.0.0/16".into()]),
                ("a_default".into(), vec!["10.0.0.1/32".into()]),
            ]
        );
        assert_eq!(
            c.derive.dns.views[1].label(),
            "OCEAN_ELB_VIEW_CHINA_TELECOM"
        );
        let zones: Vec<(&str, usize)> = c
            .derive
            .dns
            .zones
            .iter()
            .map(|(z, a)| (z.as_str(), a.len()))
            .collect();
        assert_eq!(zones, vec![("example.org", 2), ("shop.example.com", 1)]);

        for (bad, needle) in [
            (
                "[dns.views.Unicom]\nnetworks = [\"10.0.0.0/8\"]\n",
                "dns.views.Unicom: view names are [a-z0-9_-]+",
            ),
            (
                "[dns.views.u]\nnetworks = [\"10.0.0.0/33\"]\n",
                "dns.views.u.networks: invalid CIDR \"10.0.0.0/33\"",
            ),
            (
                "[dns.views.u]\nnetworks = []\n",
                "dns.views.u.networks: a view needs at least one network",
            ),
            (
                "[dns.views.a-b]\nnetworks = [\"10.0.0.0/8\"]\n[dns.views.a_b]\nnetworks = [\"10.1.0.0/16\"]\n",
                "dns.views.a_b: OCEAN_ELB_VIEW_A_B would be the label of views a-b and a_b",
            ),
            (
                "[dns.zones.\"a..b\"]\napps = [\"/lb/\"]\n",
                "dns.zones.\"a..b\": name has an empty label",
            ),
            (
                "[dns.zones.\"x.org\"]\napps = []\n",
                "dns.zones.\"x.org\".apps: an empty list",
            ),
            (
                "[dns.zones.\"x.org\"]\napps = [\"/lb/\"]\n[dns.zones.\"X.org\"]\napps = [\"/lb/\"]\n",
                "the zone is listed twice",
            ),
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = FileConfig::load(&path)
                .unwrap()
                .apply(dir.path(), &mut Config::new(Source::File("x".into())))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        for (bad, needle) in [
            ("[dns.views.u]\nnets = [\"10.0.0.0/8\"]\n", "nets"),
            ("[dns.zones.\"x.org\"]\nowners = [\"/lb/\"]\n", "owners"),
            (
                "[dns.zones.\"x.org\"]\napps = [\"lb\"]\n",
                "must start with '/'",
            ),
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = FileConfig::load(&path).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        std::fs::write(&path, "[dns.zones.\"mesos\"]\napps = [\"/lb/\"]\n").unwrap();
        let mut c = Config::new(Source::File("x".into()));
        FileConfig::load(&path)
            .unwrap()
            .apply(dir.path(), &mut c)
            .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("dns.zones.\"mesos\": the domain is served anyway"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_and_missing_passwords_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.toml");
        std::fs::write(&path, "domian = \"x\"\n").unwrap();
        let err = FileConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("domian"), "{err}");
        std::fs::write(&path, "[mysql.databases.\"/a/b/c\"]\nuser = \"u\"\n").unwrap();
        let err = FileConfig::load(&path)
            .unwrap()
            .apply(dir.path(), &mut Config::new(Source::File("x".into())))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mysql.databases.\"/a/b/c\".password"), "{err}");
    }
}
