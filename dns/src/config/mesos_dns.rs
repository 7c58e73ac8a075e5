//! Reading a Mesos-DNS `config.json`, so a Mesos-DNS deployment can move to `ocean dns`
//! with the configuration it has.
//!
//! Mesos-DNS builds its zone itself; in Ocean, control derives the zone from Marathon and
//! `ocean dns` only serves it. So the file's keys fall in two groups:
//!
//! - **Server settings**, which [`MesosDnsConfig::apply`] sets on a [`Config`]: `port`,
//!   `listener`, `httpport`, `httplistener`, `httpon`, `resolvers`, `zoneResolvers`,
//!   `timeout`, `externalon`. Keys the file leaves out take Mesos-DNS's defaults (port 53
//!   on 0.0.0.0, HTTP on 0.0.0.0:8123, resolver 8.8.8.8, timeout 5 s), as they would in
//!   Mesos-DNS, so the file replaces the flags for these settings.
//! - **Zone settings** (`domain`, `ttl`, `SOA*`, `enforceRFC952`, `IPSources`, `masters`,
//!   `zk`, `refreshSeconds`, …), which control decides. `apply` changes nothing for them
//!   and returns a note naming the `control.toml` key (or control flag) to set instead.
//!
//! Keys are matched case-insensitively and a later duplicate wins, as Go's `encoding/json`
//! does; `null` leaves a setting at its default (and empties a list). A value of the wrong
//! type is an error naming the key. Unknown keys are ignored with a note, as Mesos-DNS
//! ignores them. Notes never quote `mesosCredentials`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::Config;

/// Mesos-DNS's defaults for the server settings (`records.NewConfig`).
const DEFAULT_PORT: u16 = 53;
const DEFAULT_HTTP_PORT: u16 = 8123;
const DEFAULT_LISTENER: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
const DEFAULT_RESOLVER: IpAddr = IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8));
const DEFAULT_TIMEOUT_S: u64 = 5;

/// What a Mesos-DNS `config.json` says; `None` where the file does not set a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MesosDnsConfig {
    // Server settings (applied).
    /// `port`: the DNS port.
    pub port: Option<u16>,
    /// `listener`: the DNS address.
    pub listener: Option<IpAddr>,
    /// `httpport`.
    pub http_port: Option<u16>,
    /// `httplistener`.
    pub http_listener: Option<IpAddr>,
    /// `httpon`: `false` turns the HTTP API off.
    pub http_on: Option<bool>,
    /// `dnson`: `ocean dns` always serves DNS; `false` only gets a note.
    pub dns_on: Option<bool>,
    /// `externalon`: `false` turns forwarding off.
    pub external_on: Option<bool>,
    /// `recurseon`: not configurable (RA is set exactly when forwarding); a note.
    pub recurse_on: Option<bool>,
    /// `resolvers`: IPs (port 53) or `ip:port`. `Some(empty)` means "the nameservers of
    /// /etc/resolv.conf", as in Mesos-DNS.
    pub resolvers: Option<Vec<SocketAddr>>,
    /// `zoneResolvers`: zone -> resolvers, flattened, in file order.
    pub zone_resolvers: Option<Vec<(String, SocketAddr)>>,
    /// `timeout`: seconds per forwarded query; 0 means the default (5).
    pub timeout_s: Option<u64>,
    /// `enumerationOn`: `ocean dns` always serves `/v1/enumerate`; `false` only gets a note.
    pub enumeration_on: Option<bool>,

    // Zone settings (control's; notes only).
    pub domain: Option<String>,
    pub ttl: Option<u32>,
    pub soa_mname: Option<String>,
    pub soa_rname: Option<String>,
    pub soa_refresh: Option<u32>,
    pub soa_retry: Option<u32>,
    pub soa_expire: Option<u32>,
    pub soa_minttl: Option<u32>,
    pub enforce_rfc952: Option<bool>,
    pub ip_sources: Option<Vec<String>>,
    pub masters: Option<Vec<String>>,
    pub zk: Option<String>,
    pub refresh_seconds: Option<u64>,
    pub state_timeout_seconds: Option<u64>,
    pub srv_record_default_weight: Option<u16>,

    /// Mesos-DNS keys with no meaning in Ocean (Mesos TLS and authentication, ZooKeeper
    /// detection, `SOASerial`, `File`), by their Mesos-DNS name, in file order.
    pub unused_keys: Vec<&'static str>,
    /// Keys Mesos-DNS does not know either, as spelled in the file.
    pub unknown_keys: Vec<String>,
}

/// Reads and parses a Mesos-DNS `config.json`.
pub fn load(path: &Path) -> anyhow::Result<MesosDnsConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read Mesos-DNS config {}", path.display()))?;
    MesosDnsConfig::parse(&text).with_context(|| format!("Mesos-DNS config {}", path.display()))
}

/// A JSON object's members in file order (`serde_json::Map` would sort them, and Go's
/// "last duplicate wins" needs the order).
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The JSON type of a value, for error messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn type_error(key: &str, want: &str, v: &Value) -> anyhow::Error {
    anyhow!("key {key:?}: expected {want}, got {}", kind(v))
}

fn get_bool(key: &str, v: &Value) -> anyhow::Result<bool> {
    v.as_bool()
        .ok_or_else(|| type_error(key, "true or false", v))
}

fn get_string(key: &str, v: &Value) -> anyhow::Result<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| type_error(key, "a string", v))
}

/// An integer in `0..=max` (Go's int and uint fields refuse fractions).
fn get_uint(key: &str, v: &Value, max: u64) -> anyhow::Result<u64> {
    let Value::Number(n) = v else {
        return Err(type_error(key, "a whole number", v));
    };
    match n.as_u64() {
        Some(x) if x <= max => Ok(x),
        _ => bail!("key {key:?}: {n} is not a whole number from 0 to {max}"),
    }
}

fn get_strings(key: &str, v: &Value) -> anyhow::Result<Vec<String>> {
    if v.is_null() {
        return Ok(Vec::new());
    }
    let Value::Array(items) = v else {
        return Err(type_error(key, "an array of strings", v));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| get_string(&format!("{key}[{i}]"), item))
        .collect()
}

fn get_ip(key: &str, v: &Value) -> anyhow::Result<IpAddr> {
    let s = get_string(key, v)?;
    s.parse()
        .map_err(|_| anyhow!("key {key:?}: {s:?} is not an IP address"))
}

/// A resolver as Mesos-DNS takes one: an IP (port 53) or `ip:port`.
fn parse_resolver(key: &str, s: &str) -> anyhow::Result<SocketAddr> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| anyhow!("key {key:?}: {s:?} is not IP or IP:PORT"))
}

fn get_resolvers(key: &str, v: &Value) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for (i, s) in get_strings(key, v)?.iter().enumerate() {
        let addr = parse_resolver(&format!("{key}[{i}]"), s)?;
        // Mesos-DNS refuses duplicates too.
        if out.contains(&addr) {
            bail!("key {key:?}: resolver {s:?} is listed twice");
        }
        out.push(addr);
    }
    Ok(out)
}

fn get_zone_resolvers(key: &str, v: &Value) -> anyhow::Result<Vec<(String, SocketAddr)>> {
    let zones = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Object(zones) => zones,
        _ => return Err(type_error(key, "an object of zone: [resolvers]", v)),
    };
    let mut out = Vec::new();
    for (zone, list) in zones {
        let zkey = format!("{key}.{zone}");
        if zone.trim_matches('.').is_empty() || crate::proto::encode::name_to_wire(zone).is_none() {
            bail!("key {zkey:?}: {zone:?} is not a domain name");
        }
        for addr in get_resolvers(&zkey, list)? {
            out.push((zone.trim_matches('.').to_ascii_lowercase(), addr));
        }
    }
    Ok(out)
}

impl MesosDnsConfig {
    /// Parses the text of a `config.json`.
    pub fn parse(text: &str) -> anyhow::Result<MesosDnsConfig> {
        let Members(members) = serde_json::from_str(text).context("not a JSON object")?;
        let mut c = MesosDnsConfig::default();
        for (key, v) in &members {
            c.set(key, v)?;
        }
        Ok(c)
    }

    /// One member. Scalars set to `null` keep their default, as in Go.
    fn set(&mut self, key: &str, v: &Value) -> anyhow::Result<()> {
        let lower = key.to_ascii_lowercase();
        let scalar_null = v.is_null();
        macro_rules! scalar {
            ($field:ident, $value:expr) => {
                if !scalar_null {
                    self.$field = Some($value);
                }
            };
        }
        let unused: Option<&'static str> = match lower.as_str() {
            "port" => {
                scalar!(port, get_uint(key, v, 65535)? as u16);
                None
            }
            "listener" => {
                scalar!(listener, get_ip(key, v)?);
                None
            }
            "httpport" => {
                scalar!(http_port, get_uint(key, v, 65535)? as u16);
                None
            }
            "httplistener" => {
                scalar!(http_listener, get_ip(key, v)?);
                None
            }
            "httpon" => {
                scalar!(http_on, get_bool(key, v)?);
                None
            }
            "dnson" => {
                scalar!(dns_on, get_bool(key, v)?);
                None
            }
            "externalon" => {
                scalar!(external_on, get_bool(key, v)?);
                None
            }
            "recurseon" => {
                scalar!(recurse_on, get_bool(key, v)?);
                None
            }
            "enumerationon" => {
                scalar!(enumeration_on, get_bool(key, v)?);
                None
            }
            "resolvers" => {
                self.resolvers = Some(get_resolvers(key, v)?);
                None
            }
            "zoneresolvers" => {
                self.zone_resolvers = Some(get_zone_resolvers(key, v)?);
                None
            }
            "timeout" => {
                scalar!(timeout_s, get_uint(key, v, 86_400)?);
                None
            }
            "domain" => {
                scalar!(domain, get_string(key, v)?);
                None
            }
            "ttl" => {
                scalar!(ttl, get_uint(key, v, i32::MAX as u64)? as u32);
                None
            }
            "soamname" => {
                scalar!(soa_mname, get_string(key, v)?);
                None
            }
            "soarname" => {
                scalar!(soa_rname, get_string(key, v)?);
                None
            }
            "soarefresh" => {
                scalar!(soa_refresh, get_uint(key, v, u32::MAX as u64)? as u32);
                None
            }
            "soaretry" => {
                scalar!(soa_retry, get_uint(key, v, u32::MAX as u64)? as u32);
                None
            }
            "soaexpire" => {
                scalar!(soa_expire, get_uint(key, v, u32::MAX as u64)? as u32);
                None
            }
            "soaminttl" => {
                scalar!(soa_minttl, get_uint(key, v, u32::MAX as u64)? as u32);
                None
            }
            "enforcerfc952" => {
                scalar!(enforce_rfc952, get_bool(key, v)?);
                None
            }
            "ipsources" => {
                self.ip_sources = Some(get_strings(key, v)?);
                None
            }
            "masters" => {
                self.masters = Some(get_strings(key, v)?);
                None
            }
            "zk" => {
                scalar!(zk, get_string(key, v)?);
                None
            }
            "refreshseconds" => {
                scalar!(refresh_seconds, get_uint(key, v, i32::MAX as u64)?);
                None
            }
            "statetimeoutseconds" => {
                scalar!(state_timeout_seconds, get_uint(key, v, i32::MAX as u64)?);
                None
            }
            "srvrecorddefaultweight" => {
                scalar!(
                    srv_record_default_weight,
                    get_uint(key, v, u16::MAX as u64)? as u16
                );
                None
            }
            // Read for their type only; nothing of them is kept (mesosCredentials holds a
            // secret).
            "zkdetectiontimeout" => {
                if !scalar_null {
                    get_uint(key, v, i32::MAX as u64)?;
                }
                Some("zkDetectionTimeout")
            }
            "soaserial" => {
                if !scalar_null {
                    get_uint(key, v, u32::MAX as u64)?;
                }
                Some("SOASerial")
            }
            "mesoshttpson" => {
                if !scalar_null {
                    get_bool(key, v)?;
                }
                Some("mesosHTTPSOn")
            }
            "cacertfile" | "iamconfigfile" | "mesosauthentication" | "file" => {
                if !scalar_null {
                    get_string(key, v)?;
                }
                Some(match lower.as_str() {
                    "cacertfile" => "CACertFile",
                    "iamconfigfile" => "IAMConfigFile",
                    "mesosauthentication" => "mesosAuthentication",
                    _ => "File",
                })
            }
            "mesoscredentials" => {
                if !matches!(v, Value::Object(_) | Value::Null) {
                    return Err(type_error(key, "an object", v));
                }
                Some("mesosCredentials")
            }
            _ => {
                if !self.unknown_keys.iter().any(|k| k == key) {
                    self.unknown_keys.push(key.to_string());
                }
                None
            }
        };
        if let Some(name) = unused {
            if !self.unused_keys.contains(&name) {
                self.unused_keys.push(name);
            }
        }
        Ok(())
    }

    /// Sets the server settings on `config` (Mesos-DNS's defaults for keys the file leaves
    /// out) and returns notes for everything else: zone settings that belong in control's
    /// config, keys with no meaning in Ocean, unknown keys, and defaults worth knowing.
    ///
    /// - `listen` = `listener:port`; `http` = `httplistener:httpport`, `None` when
    ///   `httpon` is false;
    /// - `resolvers` and `zone_resolvers` from `resolvers` and `zoneResolvers`, both empty
    ///   when `externalon` is false (no forwarding); `"resolvers": []` takes the
    ///   nameservers of /etc/resolv.conf (loopback ones skipped), as Mesos-DNS does;
    /// - `forward_timeout` = `timeout` seconds.
    pub fn apply(&self, config: &mut Config) -> Vec<String> {
        self.apply_with(config, || std::fs::read_to_string("/etc/resolv.conf").ok())
    }

    fn apply_with(
        &self,
        config: &mut Config,
        resolv_conf: impl FnOnce() -> Option<String>,
    ) -> Vec<String> {
        let mut notes = Vec::new();
        config.listen = SocketAddr::new(
            self.listener.unwrap_or(DEFAULT_LISTENER),
            self.port.unwrap_or(DEFAULT_PORT),
        );
        config.http = (self.http_on != Some(false)).then(|| {
            SocketAddr::new(
                self.http_listener.unwrap_or(DEFAULT_LISTENER),
                self.http_port.unwrap_or(DEFAULT_HTTP_PORT),
            )
        });
        config.forward_timeout = Duration::from_secs(match self.timeout_s {
            None | Some(0) => DEFAULT_TIMEOUT_S,
            Some(s) => s,
        });
        if self.external_on == Some(false) {
            config.resolvers = Vec::new();
            config.zone_resolvers = Vec::new();
            if self.resolvers.as_ref().is_some_and(|r| !r.is_empty())
                || self.zone_resolvers.as_ref().is_some_and(|r| !r.is_empty())
            {
                notes.push(
                    "resolvers: not used because \"externalon\" is false (no forwarding)"
                        .to_string(),
                );
            }
        } else {
            config.resolvers = match &self.resolvers {
                Some(r) if !r.is_empty() => r.clone(),
                Some(_) => {
                    let found = resolv_conf()
                        .map(|t| resolv_conf_nameservers(&t))
                        .unwrap_or_default();
                    notes.push(if found.is_empty() {
                        "resolvers: empty and /etc/resolv.conf lists no usable nameserver; \
                         names outside the domain are not forwarded"
                            .to_string()
                    } else {
                        format!(
                            "resolvers: empty, so the nameservers of /etc/resolv.conf are used: {}",
                            found
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    });
                    found
                }
                None => {
                    notes.push(format!(
                        "resolvers: not set; forwarding to {DEFAULT_RESOLVER} as Mesos-DNS does \
                         (set \"resolvers\", or \"externalon\": false to not forward)"
                    ));
                    vec![SocketAddr::new(DEFAULT_RESOLVER, 53)]
                }
            };
            config.zone_resolvers = self.zone_resolvers.clone().unwrap_or_default();
        }
        if self.dns_on == Some(false) {
            notes.push("dnson: false is not supported; ocean dns always serves DNS".into());
        }
        if self.recurse_on.is_some() {
            notes.push(
                "recurseon: not configurable; ocean dns sets RA exactly when it forwards".into(),
            );
        }
        if self.enumeration_on == Some(false) {
            notes.push(
                "enumerationOn: false is not supported; /v1/enumerate and /v1/axfr are always served"
                    .into(),
            );
        }
        self.control_notes(&mut notes);
        for key in &self.unused_keys {
            notes.push(match *key {
                "SOASerial" => {
                    "SOASerial: ignored; the serial is the time each zone loads, as in Mesos-DNS"
                        .to_string()
                }
                "File" => "File: ignored".to_string(),
                other => {
                    format!("{other}: ignored; Ocean reads Marathon (through control), not Mesos")
                }
            });
        }
        for key in &self.unknown_keys {
            notes.push(format!("{key}: unknown key, ignored"));
        }
        notes
    }

    /// Notes for the zone settings, naming what to set in control instead.
    fn control_notes(&self, notes: &mut Vec<String>) {
        const WHY: &str = "control derives the zone; set it in control.toml";
        let mut note = |s: String| notes.push(s);
        if let Some(d) = &self.domain {
            note(format!("domain: {WHY}: domain = {d:?}"));
        }
        if let Some(t) = self.ttl {
            note(format!("ttl: {WHY}: [dns] ttl = {t}"));
        }
        if let Some(m) = &self.soa_mname {
            note(format!("SOAMname: {WHY}: [dns] soa_mname = {m:?}"));
        }
        if let Some(r) = &self.soa_rname {
            note(format!("SOARname: {WHY}: [dns] soa_rname = {r:?}"));
        }
        for (key, v) in [
            ("SOARefresh", self.soa_refresh),
            ("SOARetry", self.soa_retry),
            ("SOAExpire", self.soa_expire),
        ] {
            if let Some(v) = v {
                note(format!(
                    "{key}: {v} not applied; control fixes SOA refresh, retry and expire at 60, 600 and 86400"
                ));
            }
        }
        if let Some(v) = self.soa_minttl {
            note(format!(
                "SOAMinttl: {v} not applied; the SOA minimum is the TTL ([dns] ttl in control.toml)"
            ));
        }
        if let Some(v) = self.enforce_rfc952 {
            note(format!("enforceRFC952: {WHY}: [dns] enforce_rfc952 = {v}"));
        }
        if let Some(v) = self.srv_record_default_weight {
            note(format!(
                "SRVRecordDefaultWeight: {WHY}: [dns] srv_weight = {v}"
            ));
        }
        if let Some(m) = &self.masters {
            let list = m
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            note(format!(
                "masters: {WHY}: [dns] masters = [{list}] (for the master and leader names; \
                 tasks come from Marathon)"
            ));
        }
        if self.zk.is_some() {
            note(
                "zk: not used; control reads Marathon (ocean control --marathon URL), not \
                 ZooKeeper; list the Mesos masters in [dns] masters"
                    .into(),
            );
        }
        if self.ip_sources.is_some() {
            note(
                "IPSources: not used; control picks each task's IP itself (docs/control.md, \
                 \"The task's IP\")"
                    .into(),
            );
        }
        if let Some(s) = self.refresh_seconds {
            note(format!(
                "refreshSeconds: {s} not applied; control follows Marathon's event stream \
                 and re-lists every ocean control --resync (60s by default)"
            ));
        }
        if let Some(s) = self.state_timeout_seconds {
            note(format!(
                "stateTimeoutSeconds: not applied; the closest setting is ocean control \
                 --marathon-timeout {s}s"
            ));
        }
    }
}

/// The `nameserver` addresses of a resolv.conf, loopback and unspecified ones left out
/// (Mesos-DNS leaves out the host's own addresses so as not to forward to itself).
fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        // A scoped IPv6 address (`fe80::1%eth0`) cannot be used; it is skipped.
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        let addr = SocketAddr::new(ip, 53);
        if !ip.is_loopback() && !ip.is_unspecified() && !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ocean_core::subscriber::SubscriberConfig;

    /// The example of Mesos-DNS's docs/docs/configuration-parameters.md.
    const DOCS_SAMPLE: &str = r#"{
  "zk": "zk://10.101.160.15:2181/mesos",
  "masters": ["10.101.160.15:5050", "10.101.160.16:5050", "10.101.160.17:5050"],
  "mesosCredentials": {
    "principal": "my-mesos-dns-principal",
    "secret": "super-secret"
  },
  "mesosAuthentication": "basic",
  "refreshSeconds": 60,
  "ttl": 60,
  "domain": "mesos",
  "port": 53,
  "resolvers": ["169.254.169.254"],
  "zoneResolvers": {
    "weave": ["172.17.0.1"]
  },
  "timeout": 5,
  "httpon": true,
  "dnson": true,
  "httpport": 8123,
  "externalon": true,
  "listener": "10.101.160.16",
  "SOAMname": "ns1.mesos",
  "SOARname": "root.ns1.mesos",
  "SOARefresh": 60,
  "SOARetry":   600,
  "SOAExpire":  86400,
  "SOAMinttl": 60,
  "IPSources": ["netinfo", "mesos", "host"]
}"#;

    /// Mesos-DNS's config.json.sample.
    const REPO_SAMPLE: &str = r#"{
  "zk": "zk://127.0.0.1:2181/mesos",
  "masters": ["127.0.0.1:5050"],
  "refreshSeconds": 60,
  "ttl": 60,
  "domain": "mesos",
  "port": 8053,
  "resolvers": ["8.8.8.8"],
  "timeout": 5,
  "listener": "0.0.0.0",
  "email": "root.mesos-dns.mesos",
  "dnson": true,
  "httpon": true,
  "httpport": 8123,
  "externalon": true
}"#;

    fn config() -> Config {
        Config::new(SubscriberConfig {
            table_file: Some("/tmp/dns.json".into()),
            ..Default::default()
        })
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn note_for<'a>(notes: &'a [String], key: &str) -> &'a str {
        notes
            .iter()
            .find(|n| n.starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no note for {key}: {notes:#?}"))
    }

    #[test]
    fn the_documented_sample_sets_the_server_and_names_control_keys() {
        let m = MesosDnsConfig::parse(DOCS_SAMPLE).unwrap();
        assert_eq!(m.port, Some(53));
        assert_eq!(m.listener, Some("10.101.160.16".parse().unwrap()));
        assert_eq!(m.masters.as_deref().map(<[String]>::len), Some(3), "{m:?}");
        assert_eq!(
            m.unused_keys,
            vec!["mesosCredentials", "mesosAuthentication"]
        );
        assert!(m.unknown_keys.is_empty(), "{:?}", m.unknown_keys);

        let mut c = config();
        let notes = m.apply(&mut c);
        assert_eq!(c.listen, addr("10.101.160.16:53"));
        assert_eq!(c.http, Some(addr("0.0.0.0:8123")));
        assert_eq!(c.resolvers, vec![addr("169.254.169.254:53")]);
        assert_eq!(
            c.zone_resolvers,
            vec![("weave".to_string(), addr("172.17.0.1:53"))]
        );
        assert_eq!(c.forward_timeout, Duration::from_secs(5));
        c.validate().unwrap();

        assert!(note_for(&notes, "domain").contains(r#"domain = "mesos""#));
        assert!(note_for(&notes, "ttl").contains("[dns] ttl = 60"));
        assert!(note_for(&notes, "SOAMname").contains(r#"[dns] soa_mname = "ns1.mesos""#));
        assert!(note_for(&notes, "SOARname").contains("[dns] soa_rname"));
        assert!(note_for(&notes, "masters").contains(
            r#"[dns] masters = ["10.101.160.15:5050", "10.101.160.16:5050", "10.101.160.17:5050"]"#
        ));
        assert!(note_for(&notes, "zk").contains("[dns] masters"));
        assert!(note_for(&notes, "refreshSeconds").contains("--resync"));
        for key in [
            "SOARefresh",
            "SOARetry",
            "SOAExpire",
            "SOAMinttl",
            "IPSources",
            "mesosCredentials",
            "mesosAuthentication",
        ] {
            note_for(&notes, key);
        }
        // Server keys that were applied get no note.
        for key in [
            "port",
            "listener",
            "httpport",
            "timeout",
            "externalon",
            "resolvers",
        ] {
            assert!(
                !notes.iter().any(|n| n.starts_with(&format!("{key}:"))),
                "{key}: {notes:#?}"
            );
        }
        let all = notes.join("\n");
        assert!(!all.contains("super-secret") && !all.contains("my-mesos-dns-principal"));
    }

    #[test]
    fn the_repository_sample_listens_on_its_port_and_ignores_email() {
        let m = MesosDnsConfig::parse(REPO_SAMPLE).unwrap();
        let mut c = config();
        let notes = m.apply(&mut c);
        assert_eq!(c.listen, addr("0.0.0.0:8053"));
        assert_eq!(c.http, Some(addr("0.0.0.0:8123")));
        assert_eq!(c.resolvers, vec![addr("8.8.8.8:53")]);
        assert!(c.zone_resolvers.is_empty());
        assert_eq!(m.unknown_keys, vec!["email"]);
        assert_eq!(note_for(&notes, "email"), "email: unknown key, ignored");
    }

    #[test]
    fn missing_keys_take_mesos_dns_defaults() {
        let m = MesosDnsConfig::parse("{}").unwrap();
        let mut c = config();
        c.zone_resolvers = vec![("consul".into(), addr("127.0.0.1:8600"))];
        let notes = m.apply(&mut c);
        assert_eq!(c.listen, addr("0.0.0.0:53"));
        assert_eq!(c.http, Some(addr("0.0.0.0:8123")));
        assert_eq!(c.resolvers, vec![addr("8.8.8.8:53")]);
        assert!(c.zone_resolvers.is_empty());
        assert_eq!(c.forward_timeout, Duration::from_secs(5));
        assert!(note_for(&notes, "resolvers").contains("8.8.8.8"));
        assert_eq!(notes.len(), 1, "{notes:#?}");
    }

    #[test]
    fn keys_match_case_insensitively_and_the_last_duplicate_wins() {
        let m = MesosDnsConfig::parse(
            r#"{"PORT": 1, "Port": 5353, "HttpPort": 9000, "HTTPON": true, "Listener": "127.0.0.1",
                "TTL": 5, "ttl": 30, "EnforceRfc952": true, "ExternalOn": false}"#,
        )
        .unwrap();
        assert_eq!(m.port, Some(5353));
        assert_eq!(m.ttl, Some(30));
        let mut c = config();
        let notes = m.apply(&mut c);
        assert_eq!(c.listen, addr("127.0.0.1:5353"));
        assert_eq!(c.http, Some(addr("0.0.0.0:9000")));
        assert!(note_for(&notes, "ttl").contains("[dns] ttl = 30"));
        assert!(note_for(&notes, "enforceRFC952").contains("[dns] enforce_rfc952 = true"));
    }

    #[test]
    fn externalon_false_means_no_forwarding_and_httpon_false_no_http() {
        let m = MesosDnsConfig::parse(
            r#"{"externalon": false, "httpon": false, "resolvers": ["10.0.0.2"],
                "zoneResolvers": {"consul.": ["127.0.0.1:8600"]}, "timeout": 2}"#,
        )
        .unwrap();
        let mut c = config();
        c.resolvers = vec![addr("1.1.1.1:53")];
        let notes = m.apply(&mut c);
        assert!(c.resolvers.is_empty());
        assert!(c.zone_resolvers.is_empty());
        assert_eq!(c.http, None);
        assert_eq!(c.forward_timeout, Duration::from_secs(2));
        assert!(note_for(&notes, "resolvers").contains("externalon"));
    }

    #[test]
    fn resolvers_take_ip_or_ip_port_and_an_empty_list_reads_resolv_conf() {
        let m = MesosDnsConfig::parse(
            r#"{"resolvers": ["10.0.0.2", "10.0.0.3:5353", "[fd00::1]:54", "fd00::2"],
                "zoneResolvers": {"Weave": ["172.17.0.1", "172.17.0.2:5353"]}}"#,
        )
        .unwrap();
        let mut c = config();
        m.apply(&mut c);
        assert_eq!(
            c.resolvers,
            vec![
                addr("10.0.0.2:53"),
                addr("10.0.0.3:5353"),
                addr("[fd00::1]:54"),
                addr("[fd00::2]:53")
            ]
        );
        assert_eq!(
            c.zone_resolvers,
            vec![
                ("weave".to_string(), addr("172.17.0.1:53")),
                ("weave".to_string(), addr("172.17.0.2:5353"))
            ]
        );

        let resolv = "# comment\nnameserver 127.0.0.53\nnameserver 10.1.0.1\nsearch x\n\
                      nameserver ::1\nnameserver fe80::1%eth0\nnameserver 10.1.0.2\n";
        for json in [r#"{"resolvers": []}"#, r#"{"resolvers": null}"#] {
            let m = MesosDnsConfig::parse(json).unwrap();
            let mut c = config();
            let notes = m.apply_with(&mut c, || Some(resolv.to_string()));
            assert_eq!(c.resolvers, vec![addr("10.1.0.1:53"), addr("10.1.0.2:53")]);
            assert!(note_for(&notes, "resolvers").contains("/etc/resolv.conf"));
        }
        let m = MesosDnsConfig::parse(r#"{"resolvers": []}"#).unwrap();
        let mut c = config();
        let notes = m.apply_with(&mut c, || None);
        assert!(c.resolvers.is_empty());
        assert!(note_for(&notes, "resolvers").contains("not forwarded"));
    }

    #[test]
    fn null_scalars_keep_the_default() {
        let m = MesosDnsConfig::parse(r#"{"port": null, "listener": null, "ttl": null}"#).unwrap();
        assert_eq!(m.port, None);
        assert_eq!(m.ttl, None);
        let mut c = config();
        m.apply(&mut c);
        assert_eq!(c.listen, addr("0.0.0.0:53"));
    }

    #[test]
    fn bad_types_and_values_are_errors_naming_the_key() {
        for (json, key) in [
            (r#"{"port": "53"}"#, "port"),
            (r#"{"port": 70000}"#, "port"),
            (r#"{"Port": -1}"#, "Port"),
            (r#"{"httpport": 80.5}"#, "httpport"),
            (r#"{"httpon": "yes"}"#, "httpon"),
            (r#"{"listener": "localhost"}"#, "listener"),
            (r#"{"resolvers": "8.8.8.8"}"#, "resolvers"),
            (r#"{"resolvers": ["dns.google"]}"#, "resolvers[0]"),
            (r#"{"resolvers": ["8.8.8.8", "8.8.8.8:53"]}"#, "resolvers"),
            (r#"{"zoneResolvers": ["a"]}"#, "zoneResolvers"),
            (
                r#"{"zoneResolvers": {"a..b": ["10.0.0.1"]}}"#,
                "zoneResolvers.a..b",
            ),
            (r#"{"ttl": "60"}"#, "ttl"),
            (r#"{"SOARefresh": -5}"#, "SOARefresh"),
            (r#"{"masters": "10.0.0.1:5050"}"#, "masters"),
            (r#"{"masters": [1]}"#, "masters[0]"),
            (r#"{"mesosCredentials": "x"}"#, "mesosCredentials"),
            (r#"{"MesosHTTPSOn": 1}"#, "MesosHTTPSOn"),
        ] {
            let err = format!("{:#}", MesosDnsConfig::parse(json).unwrap_err());
            assert!(err.contains(&format!("{key:?}")), "{json}: {err}");
        }
        for json in ["[]", "\"x\"", "{", ""] {
            assert!(MesosDnsConfig::parse(json).is_err(), "{json}");
        }
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let err = format!("{:#}", load(&path).unwrap_err());
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(&path, r#"{"port": true}"#).unwrap();
        let err = format!("{:#}", load(&path).unwrap_err());
        assert!(
            err.contains("config.json") && err.contains("\"port\""),
            "{err}"
        );
        std::fs::write(&path, REPO_SAMPLE).unwrap();
        assert_eq!(load(&path).unwrap().port, Some(8053));
    }
}
