//! The HTTP side of `ocean dns`: Mesos-DNS's API (`/v1/...`, same paths and JSON shapes)
//! and the admin endpoints (`/` the status page, `/metrics`, `/healthz`, `/table`).
//!
//! | path | answer |
//! |---|---|
//! | `/` | the status page (HTML, as on every daemon's admin port): health, the table applied (ETag, source, age), the zone's serial |
//! | `/v1/version` | `{"Service":"Mesos-DNS","URL":…,"Version":"ocean-<version>"}` |
//! | `/v1/config` | Mesos-DNS's `Config` object, filled from our settings and the zone ([`ConfigView`]) |
//! | `/v1/hosts/{host}` | `[{"host","ip"}]`: the A, then AAAA records of a name |
//! | `/v1/hosts/{host}/ports` | 501, as in Mesos-DNS |
//! | `/v1/services/{service}` | `[{"service","host","ip","port"}]`: SRV records with their targets' addresses |
//! | `/v1/enumerate` | the names of framework `marathon`, grouped by app ([`enumerate`]) |
//! | `/v1/axfr` | the whole zone as Mesos-DNS's `AXFR` object |
//!
//! Every `/v1` endpoint but `/v1/version` answers 503 until the first table loads: an empty
//! list would look like a zone where the name does not exist. Lookups strip `.*` and
//! lowercase the name and add the trailing dot, as Mesos-DNS does. Answers are built from
//! the table of the zone being served, on request; the DNS hot path is not involved.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ocean_core::subscriber::TableWatch;
use ocean_core::table::dns::DnsRecords;
use ocean_core::table::DnsTable;
use serde::Serialize;

use crate::config::Config;
use crate::zone::{SharedZone, Zone};

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct ApiState {
    pub zone: SharedZone,
    pub watch: TableWatch<DnsTable>,
    pub config: Config,
}

pub fn router(state: ApiState) -> Router {
    let state = Arc::new(state);
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(|| async { ocean_core::metrics::render() }))
        .route("/table", get(table))
        .route("/v1/version", get(|| async { Json(version()) }))
        .route("/v1/config", get(config))
        .route("/v1/hosts/{host}", get(hosts))
        .route(
            "/v1/hosts/{host}/ports",
            get(|| async { (StatusCode::NOT_IMPLEMENTED, "To be implemented...") }),
        )
        .route("/v1/services/{service}", get(services))
        .route("/v1/enumerate", get(enumerate_handler))
        .route("/v1/axfr", get(axfr_handler))
        .with_state(state)
}

async fn healthz(State(s): State<Arc<ApiState>>) -> Response {
    let zone = s.zone.load_full();
    let status = s.watch.status();
    match zone {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "starting", "reason": status.last_error.unwrap_or_else(|| "no table yet".into())})),
        )
            .into_response(),
        Some(z) => {
            let body = match &status.last_error {
                Some(e) => serde_json::json!({"status": "stale", "reason": e, "etag": z.table.etag, "serial": z.serial}),
                None => serde_json::json!({"status": "ok", "etag": z.table.etag, "serial": z.serial, "source": status.source}),
            };
            Json(body).into_response()
        }
    }
}

/// The status page, in the style of every daemon's admin `/`
/// ([`ocean_core::admin::render_status`]).
async fn status_page(State(s): State<Arc<ApiState>>) -> Response {
    let facts = match s.zone.load_full() {
        Some(z) => vec![("zone serial".to_string(), z.serial.to_string())],
        None => vec![("zone".to_string(), "none yet".to_string())],
    };
    let status = ocean_core::admin::DaemonStatus {
        table: s.watch.applied(),
        facts,
        ..Default::default()
    };
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        ocean_core::admin::render_status("dns", &s.watch.health(), &status),
    )
        .into_response()
}

async fn table(State(s): State<Arc<ApiState>>) -> Response {
    match s.zone.load_full() {
        Some(z) => (
            [(header::ETAG, format!("\"{}\"", z.table.etag))],
            Json(&z.table.table),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no table loaded\n").into_response(),
    }
}

/// Answers from the zone, or with the 503 every `/v1` data endpoint gives before the first
/// table.
fn with_zone(s: &ApiState, answer: impl FnOnce(&Zone) -> Response) -> Response {
    match s.zone.load_full() {
        Some(z) => answer(&z),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "no dns table loaded yet (see /healthz)\n",
        )
            .into_response(),
    }
}

async fn config(State(s): State<Arc<ApiState>>) -> Response {
    with_zone(&s, |z| Json(ConfigView::new(&s.config, z)).into_response())
}

async fn hosts(State(s): State<Arc<ApiState>>, Path(host): Path<String>) -> Response {
    with_zone(&s, |z| {
        Json(host_records(&z.table.table, &host)).into_response()
    })
}

async fn services(State(s): State<Arc<ApiState>>, Path(service): Path<String>) -> Response {
    with_zone(&s, |z| {
        Json(service_records(&z.table.table, &service)).into_response()
    })
}

async fn enumerate_handler(State(s): State<Arc<ApiState>>) -> Response {
    with_zone(&s, |z| Json(enumerate(&z.table.table)).into_response())
}

async fn axfr_handler(State(s): State<Arc<ApiState>>) -> Response {
    with_zone(&s, |z| {
        Json(Axfr::new(&z.table.table, z.serial)).into_response()
    })
}

/// `/v1/version`. Mesos-DNS answers a Go map, so the keys come sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    #[serde(rename = "Service")]
    pub service: &'static str,
    #[serde(rename = "URL")]
    pub url: &'static str,
    #[serde(rename = "Version")]
    pub version: String,
}

pub fn version() -> Version {
    Version {
        service: "Mesos-DNS",
        url: "https://github.com/mesosphere/mesos-dns",
        version: concat!("ocean-", env!("CARGO_PKG_VERSION")).to_string(),
    }
}

/// `/v1/config`: Mesos-DNS's `records.Config` as its JSON (Go field names, in Go's field
/// order), filled from what `ocean dns` runs with.
///
/// Mesos-DNS builds its zone itself; here control derives it, so the zone settings come from
/// the table being served and the server settings from [`Config`]:
///
/// | field | from |
/// |---|---|
/// | `RefreshSeconds`, `SOARefresh`, `SOARetry`, `SOAExpire` | the table's SOA (`refresh_s`, …) |
/// | `TTL`, `SOAMinttl` | the table's TTL (the zone's SOA minimum is its TTL) |
/// | `SOASerial` | the serial of the zone being served (the time it loaded) |
/// | `SOAMname`, `SOARname`, `Domain` | the table |
/// | `Port`, `Listener` / `HttpPort`, `HTTPListener` | `--listen` / `--http` as configured (0 for "any free port") |
/// | `Timeout` | `--forward-timeout`, whole seconds rounded up |
/// | `StateTimeoutSeconds` | the subscriber's long-poll wait |
/// | `Resolvers`, `ZoneResolvers` | `--resolver`, `--zone-resolver` (`ip` for port 53, else `ip:port`) |
/// | `ExternalOn`, `RecurseOn` | whether anything is forwarded (RA is set exactly then) |
/// | `Masters`, `IPSources`, `Zk`, `File`, `EnforceRFC952`, Mesos TLS and auth fields | empty or false: control decides these, `ocean dns` does not know them |
///
/// Mesos-DNS also serializes `MesosCredentials` (with its secret); that field is left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigView {
    pub refresh_seconds: u32,
    pub port: u16,
    pub timeout: u64,
    pub state_timeout_seconds: u64,
    pub zk_detection_timeout: u64,
    pub http_port: u16,
    #[serde(rename = "TTL")]
    pub ttl: u32,
    #[serde(rename = "SOASerial")]
    pub soa_serial: u32,
    #[serde(rename = "SOARefresh")]
    pub soa_refresh: u32,
    #[serde(rename = "SOARetry")]
    pub soa_retry: u32,
    #[serde(rename = "SOAExpire")]
    pub soa_expire: u32,
    #[serde(rename = "SOAMinttl")]
    pub soa_minttl: u32,
    #[serde(rename = "SOAMname")]
    pub soa_mname: String,
    #[serde(rename = "SOARname")]
    pub soa_rname: String,
    pub masters: Vec<String>,
    pub resolvers: Vec<String>,
    pub zone_resolvers: BTreeMap<String, Vec<String>>,
    #[serde(rename = "IPSources")]
    pub ip_sources: Vec<String>,
    pub zk: String,
    pub domain: String,
    pub file: String,
    pub listener: String,
    #[serde(rename = "HTTPListener")]
    pub http_listener: String,
    pub recurse_on: bool,
    pub dns_on: bool,
    pub http_on: bool,
    pub external_on: bool,
    #[serde(rename = "EnforceRFC952")]
    pub enforce_rfc952: bool,
    pub enumeration_on: bool,
    #[serde(rename = "MesosHTTPSOn")]
    pub mesos_https_on: bool,
    #[serde(rename = "CACertFile")]
    pub ca_cert_file: String,
    #[serde(rename = "IAMConfigFile")]
    pub iam_config_file: String,
    pub mesos_authentication: String,
}

/// A resolver as Mesos-DNS writes one: the bare IP for port 53, else `ip:port`.
fn resolver_string(addr: &SocketAddr) -> String {
    if addr.port() == 53 {
        addr.ip().to_string()
    } else {
        addr.to_string()
    }
}

impl ConfigView {
    pub fn new(config: &Config, zone: &Zone) -> ConfigView {
        let t = &zone.table.table;
        let forwarding = !config.resolvers.is_empty() || !config.zone_resolvers.is_empty();
        let mut zone_resolvers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (z, addr) in &config.zone_resolvers {
            zone_resolvers
                .entry(z.trim_matches('.').to_ascii_lowercase())
                .or_default()
                .push(resolver_string(addr));
        }
        ConfigView {
            refresh_seconds: t.soa.refresh_s,
            port: config.listen.port(),
            timeout: config.forward_timeout.as_secs_f64().ceil() as u64,
            state_timeout_seconds: config.subscriber.wait.as_secs(),
            zk_detection_timeout: 0,
            http_port: config.http.map(|a| a.port()).unwrap_or(0),
            ttl: t.ttl,
            soa_serial: zone.serial,
            soa_refresh: t.soa.refresh_s,
            soa_retry: t.soa.retry_s,
            soa_expire: t.soa.expire_s,
            soa_minttl: t.ttl,
            soa_mname: t.soa.mname.clone(),
            soa_rname: t.soa.rname.clone(),
            masters: Vec::new(),
            resolvers: config.resolvers.iter().map(resolver_string).collect(),
            zone_resolvers,
            ip_sources: Vec::new(),
            zk: String::new(),
            domain: t.domain.clone(),
            file: String::new(),
            listener: config.listen.ip().to_string(),
            http_listener: config.http.map(|a| a.ip().to_string()).unwrap_or_default(),
            recurse_on: forwarding,
            dns_on: true,
            http_on: config.http.is_some(),
            external_on: forwarding,
            enforce_rfc952: false,
            enumeration_on: true,
            mesos_https_on: false,
            ca_cert_file: String::new(),
            iam_config_file: String::new(),
            mesos_authentication: String::new(),
        }
    }
}

/// Mesos-DNS's clean-up of a name from a URL: `.*` removed, lowercased, trailing dot.
fn lookup_name(raw: &str) -> String {
    let mut name = raw.replace(".*", "").to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name
}

/// One row of `/v1/hosts/{host}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostRecord {
    pub host: String,
    pub ip: String,
}

/// `/v1/hosts/{host}`: the A records of the name, then its AAAA records; one empty row when
/// there are none (as Mesos-DNS answers).
pub fn host_records(t: &DnsTable, host: &str) -> Vec<HostRecord> {
    let name = lookup_name(host);
    let mut out = Vec::new();
    if let Some(r) = t.names.get(&name) {
        let ips =
            r.a.iter()
                .map(ToString::to_string)
                .chain(r.aaaa.iter().map(ToString::to_string));
        out.extend(ips.map(|ip| HostRecord {
            host: name.clone(),
            ip,
        }));
    }
    if out.is_empty() {
        out.push(HostRecord::default());
    }
    out
}

/// One row of `/v1/services/{service}`; the port is a string, as in Mesos-DNS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceRecord {
    pub service: String,
    pub host: String,
    pub ip: String,
    pub port: String,
}

/// `/v1/services/{service}`: a row per SRV record and address of its target (A records,
/// then AAAA), `service` as given in the URL. Targets without an address in the zone are
/// left out (Mesos-DNS would list them with an empty `ip`); one empty row when nothing is
/// left.
pub fn service_records(t: &DnsTable, service: &str) -> Vec<ServiceRecord> {
    let name = lookup_name(service);
    let mut out = Vec::new();
    for srv in t.names.get(&name).map(|r| r.srv.as_slice()).unwrap_or(&[]) {
        let Some(target) = t.names.get(&srv.target) else {
            continue;
        };
        let ips = target
            .a
            .iter()
            .map(ToString::to_string)
            .chain(target.aaaa.iter().map(ToString::to_string));
        out.extend(ips.map(|ip| ServiceRecord {
            service: service.to_string(),
            host: srv.target.clone(),
            ip,
            port: srv.port.to_string(),
        }));
    }
    if out.is_empty() {
        out.push(ServiceRecord::default());
    }
    out
}

/// `/v1/enumerate`, Mesos-DNS's `EnumerationData`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Enumeration {
    pub frameworks: Vec<EnumFramework>,
}

/// A framework; Go's field order (`tasks` before `name`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EnumFramework {
    pub tasks: Vec<EnumTask>,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EnumTask {
    pub name: String,
    pub id: String,
    pub records: Vec<EnumRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EnumRecord {
    pub name: String,
    pub host: String,
    pub rtype: String,
}

/// The framework control publishes names for.
const FRAMEWORK: &str = "marathon";
/// The z-base-32 alphabet of the `{hash}` in canonical task names.
const ZBASE32: &str = "ybndrfg8ejkmcpqxot1uwisza345h769";

/// Builds `/v1/enumerate` from the table.
///
/// **Unlike Mesos-DNS**, which lists every Mesos task with its id, the table has no
/// per-task data: it holds names. So the one framework, `marathon`, gets one "task" per
/// *app name*, with `name` and `id` both that name, holding every record of the app:
///
/// - `{app}.marathon.{domain}.` and `{app}.marathon.slave.{domain}.` (A, AAAA);
/// - the canonical per-task names `{app}-{hash}-{slaveTail}.marathon[.slave].{domain}.`:
///   a name whose part before `.marathon[.slave].{domain}.` ends in `-{5 z-base-32
///   characters}-{tail}` and whose prefix is itself an app name above;
/// - SRV names `_{app}._{proto}.marathon[.slave].{domain}.` and
///   `_{port}._{app}._{proto}.marathon.{domain}.`.
///
/// Control publishes the raw form of an app name (`app.group`) next to its label form
/// (`app-group`), so such an app shows up twice, once per form. Names outside framework
/// `marathon` (`master`, `leader`, …) are not enumerated; `/v1/axfr` has them. SRV records
/// are written `target:port`, as Mesos-DNS does.
pub fn enumerate(t: &DnsTable) -> Enumeration {
    let apex = format!("{}.", t.domain);
    let under = format!(".{FRAMEWORK}.{apex}");
    let under_slave = format!(".{FRAMEWORK}.slave.{apex}");
    let stem = |name: &str| -> Option<String> {
        name.strip_suffix(under_slave.as_str())
            .or_else(|| name.strip_suffix(under.as_str()))
            .map(str::to_string)
    };
    let stems: Vec<(&String, &DnsRecords, String)> = t
        .names
        .iter()
        .filter_map(|(name, r)| stem(name).map(|s| (name, r, s)))
        .collect();
    let plain: BTreeSet<&str> = stems
        .iter()
        .map(|(_, _, s)| s.as_str())
        .filter(|s| !s.starts_with('_'))
        .collect();
    let mut tasks: BTreeMap<String, Vec<EnumRecord>> = BTreeMap::new();
    for (name, r, s) in &stems {
        let app = app_of(s, &plain);
        let records = tasks.entry(app.to_string()).or_default();
        let rec = |host: String, rtype: &str| EnumRecord {
            name: (*name).clone(),
            host,
            rtype: rtype.to_string(),
        };
        records.extend(r.a.iter().map(|ip| rec(ip.to_string(), "A")));
        records.extend(r.aaaa.iter().map(|ip| rec(ip.to_string(), "AAAA")));
        records.extend(
            r.srv
                .iter()
                .map(|s| rec(format!("{}:{}", s.target, s.port), "SRV")),
        );
    }
    Enumeration {
        frameworks: vec![EnumFramework {
            tasks: tasks
                .into_iter()
                .map(|(app, records)| EnumTask {
                    name: app.clone(),
                    id: app,
                    records,
                })
                .collect(),
            name: FRAMEWORK.to_string(),
        }],
    }
}

/// The app a stem (a name less `.marathon[.slave].{domain}.`) belongs to; see [`enumerate`].
fn app_of<'a>(stem: &'a str, plain: &BTreeSet<&str>) -> &'a str {
    if let Some(srv) = stem.strip_prefix('_') {
        // `{app}._{proto}` or `{port}._{app}._{proto}`: labels are joined by `._`, which no
        // app name contains (Marathon ids have no `_`).
        let without_proto = srv.rsplit_once("._").map(|(l, _)| l).unwrap_or(srv);
        return without_proto
            .rsplit_once("._")
            .map(|(_, app)| app)
            .unwrap_or(without_proto);
    }
    let canonical_app = stem.rsplit_once('-').and_then(|(rest, tail)| {
        let (app, hash) = rest.rsplit_once('-')?;
        let tail_ok = !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_alphanumeric());
        let hash_ok = hash.len() == 5 && hash.chars().all(|c| ZBASE32.contains(c));
        (tail_ok && hash_ok && plain.contains(app)).then_some(app)
    });
    canonical_app.unwrap_or(stem)
}

/// `/v1/axfr`, Mesos-DNS's `models.AXFR` (Go's field order; maps with sorted keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Axfr {
    #[serde(rename = "TTL")]
    pub ttl: u32,
    #[serde(rename = "Serial")]
    pub serial: u32,
    /// The SOA refresh: how often a downstream should poll at least.
    #[serde(rename = "RefreshSeconds")]
    pub refresh_seconds: u32,
    #[serde(rename = "Mname")]
    pub mname: String,
    #[serde(rename = "Rname")]
    pub rname: String,
    #[serde(rename = "Domain")]
    pub domain: String,
    #[serde(rename = "Records")]
    pub records: AxfrRecords,
}

/// Name -> values: IPs for `As` and `AAAAs`, `target:port` for `SRVs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AxfrRecords {
    #[serde(rename = "As")]
    pub a: BTreeMap<String, Vec<String>>,
    #[serde(rename = "AAAAs")]
    pub aaaa: BTreeMap<String, Vec<String>>,
    #[serde(rename = "SRVs")]
    pub srv: BTreeMap<String, Vec<String>>,
}

impl Axfr {
    pub fn new(t: &DnsTable, serial: u32) -> Axfr {
        let mut records = AxfrRecords::default();
        for (name, r) in &t.names {
            if !r.a.is_empty() {
                records
                    .a
                    .insert(name.clone(), r.a.iter().map(ToString::to_string).collect());
            }
            if !r.aaaa.is_empty() {
                records.aaaa.insert(
                    name.clone(),
                    r.aaaa.iter().map(ToString::to_string).collect(),
                );
            }
            if !r.srv.is_empty() {
                records.srv.insert(
                    name.clone(),
                    r.srv
                        .iter()
                        .map(|s| format!("{}:{}", s.target, s.port))
                        .collect(),
                );
            }
        }
        Axfr {
            ttl: t.ttl,
            serial,
            refresh_seconds: t.soa.refresh_s,
            mname: t.soa.mname.clone(),
            rname: t.soa.rname.clone(),
            domain: t.domain.clone(),
            records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ocean_core::table::dns::SrvRecord;

    fn srv(port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority: 0,
            weight: 1,
            port,
            target: target.into(),
        }
    }

    fn table() -> DnsTable {
        let mut t = DnsTable::default();
        let a = |ips: &[&str]| DnsRecords {
            a: ips.iter().map(|i| i.parse().unwrap()).collect(),
            ..Default::default()
        };
        for (n, r) in [
            ("web.marathon.mesos.", a(&["10.0.0.1"])),
            ("web-f93mi-s2.marathon.mesos.", a(&["10.0.0.1"])),
            ("web-f93mi-s2.marathon.slave.mesos.", a(&["10.0.1.1"])),
            // An app whose name merely looks like a task of `web`.
            ("web-proxy.marathon.mesos.", a(&["10.0.0.9"])),
            ("web.shop.marathon.mesos.", a(&["10.0.0.7"])),
            ("web.shop-f93mi-s2.marathon.mesos.", a(&["10.0.0.7"])),
            ("leader.mesos.", a(&["10.0.0.10"])),
        ] {
            t.names.insert(n.into(), r);
        }
        let srvs = |s: Vec<SrvRecord>| DnsRecords {
            srv: s,
            ..Default::default()
        };
        t.names.insert(
            "_web._tcp.marathon.mesos.".into(),
            srvs(vec![
                srv(31000, "web-f93mi-s2.marathon.mesos."),
                srv(80, "nowhere.marathon.mesos."),
            ]),
        );
        t.names.insert(
            "_http._web._tcp.marathon.mesos.".into(),
            srvs(vec![srv(31000, "web-f93mi-s2.marathon.mesos.")]),
        );
        t.names.insert(
            "_web._udp.marathon.slave.mesos.".into(),
            srvs(vec![srv(31000, "web-f93mi-s2.marathon.slave.mesos.")]),
        );
        t.names.insert(
            "_web.shop._tcp.marathon.mesos.".into(),
            srvs(vec![srv(8080, "web.shop-f93mi-s2.marathon.mesos.")]),
        );
        t
    }

    #[test]
    fn names_are_grouped_by_app() {
        let e = enumerate(&table());
        assert_eq!(e.frameworks.len(), 1);
        let fw = &e.frameworks[0];
        assert_eq!(fw.name, "marathon");
        let groups: Vec<(&str, Vec<&str>)> = fw
            .tasks
            .iter()
            .map(|t| {
                assert_eq!(t.name, t.id);
                (
                    t.name.as_str(),
                    t.records.iter().map(|r| r.name.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            groups,
            vec![
                (
                    "web",
                    vec![
                        "_http._web._tcp.marathon.mesos.",
                        "_web._tcp.marathon.mesos.",
                        "_web._tcp.marathon.mesos.",
                        "_web._udp.marathon.slave.mesos.",
                        "web-f93mi-s2.marathon.mesos.",
                        "web-f93mi-s2.marathon.slave.mesos.",
                        "web.marathon.mesos.",
                    ]
                ),
                ("web-proxy", vec!["web-proxy.marathon.mesos."]),
                (
                    "web.shop",
                    vec![
                        "_web.shop._tcp.marathon.mesos.",
                        "web.shop-f93mi-s2.marathon.mesos.",
                        "web.shop.marathon.mesos.",
                    ]
                ),
            ]
        );
        let srv = &fw.tasks[0].records[1];
        assert_eq!(srv.host, "web-f93mi-s2.marathon.mesos.:31000");
        assert_eq!(srv.rtype, "SRV");
    }

    #[test]
    fn a_canonical_looking_name_without_its_app_is_an_app() {
        let plain: BTreeSet<&str> = ["db-f93mi-s2"].into_iter().collect();
        assert_eq!(app_of("db-f93mi-s2", &plain), "db-f93mi-s2");
        let plain: BTreeSet<&str> = ["db", "db-f93mi-s2"].into_iter().collect();
        assert_eq!(app_of("db-f93mi-s2", &plain), "db");
        // `l` is not in the z-base-32 alphabet.
        let plain: BTreeSet<&str> = ["db", "db-hello-s2"].into_iter().collect();
        assert_eq!(app_of("db-hello-s2", &plain), "db-hello-s2");
        assert_eq!(app_of("_db._tcp", &plain), "db");
        assert_eq!(app_of("_admin._db._tcp", &plain), "db");
        assert_eq!(app_of("_db", &plain), "db");
    }

    #[test]
    fn lookups_clean_the_name_like_mesos_dns() {
        let t = table();
        assert_eq!(
            host_records(&t, "WEB.marathon.*.mesos"),
            vec![HostRecord {
                host: "web.marathon.mesos.".into(),
                ip: "10.0.0.1".into()
            }]
        );
        assert_eq!(host_records(&t, "nope.mesos"), vec![HostRecord::default()]);
        let s = service_records(&t, "_web._tcp.marathon.mesos");
        assert_eq!(
            s,
            vec![ServiceRecord {
                service: "_web._tcp.marathon.mesos".into(),
                host: "web-f93mi-s2.marathon.mesos.".into(),
                ip: "10.0.0.1".into(),
                port: "31000".into(),
            }]
        );
        assert_eq!(
            service_records(&t, "_x._tcp"),
            vec![ServiceRecord::default()]
        );
    }

    #[test]
    fn version_keys_are_sorted_like_a_go_map() {
        let v = serde_json::to_string(&version()).unwrap();
        assert!(v.starts_with(r#"{"Service":"Mesos-DNS","URL":"https://github.com/mesosphere/mesos-dns","Version":"ocean-"#), "{v}");
    }
}
