//! The Mesos-DNS HTTP API of a running `ocean dns`, fed from a table file: every endpoint's
//! JSON, 503 before the first table, and a new table showing up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ocean_core::subscriber::SubscriberConfig;
use ocean_dns::server::{start, Running};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// A zone like control derives for app `/nginx` (two tasks, one named port) and app
/// `/shop/web` (label and raw form), plus the master names.
fn table() -> Value {
    json!({
        "domain": "mesos",
        "ttl": 60,
        "soa": {"mname": "ns1.mesos.", "rname": "root.ns1.mesos.", "refresh_s": 60, "retry_s": 600, "expire_s": 86400},
        "names": {
            "nginx.marathon.mesos.": {"a": ["10.0.0.1", "10.0.0.2"]},
            "nginx.marathon.slave.mesos.": {"a": ["10.0.1.1", "10.0.1.2"]},
            "nginx-f93mi-s1.marathon.mesos.": {"a": ["10.0.0.1"]},
            "nginx-f93mi-s1.marathon.slave.mesos.": {"a": ["10.0.1.1"]},
            "nginx-8kzqw-s2.marathon.mesos.": {"a": ["10.0.0.2"], "aaaa": ["fd00::2"]},
            "nginx-8kzqw-s2.marathon.slave.mesos.": {"a": ["10.0.1.2"]},
            "_nginx._tcp.marathon.mesos.": {"srv": [
                {"priority": 0, "weight": 1, "port": 31644, "target": "nginx-8kzqw-s2.marathon.mesos."},
                {"priority": 0, "weight": 1, "port": 31667, "target": "nginx-f93mi-s1.marathon.mesos."},
                {"priority": 0, "weight": 1, "port": 8080, "target": "gone.marathon.mesos."}
            ]},
            "_http._nginx._tcp.marathon.mesos.": {"srv": [
                {"priority": 0, "weight": 1, "port": 31667, "target": "nginx-f93mi-s1.marathon.mesos."}
            ]},
            "_nginx._tcp.marathon.slave.mesos.": {"srv": [
                {"priority": 0, "weight": 1, "port": 31001, "target": "nginx-f93mi-s1.marathon.slave.mesos."}
            ]},
            "web-shop.marathon.mesos.": {"a": ["10.0.2.1"]},
            "web.shop.marathon.mesos.": {"a": ["10.0.2.1"]},
            "master.mesos.": {"a": ["10.0.0.10"]},
            "leader.mesos.": {"a": ["10.0.0.10"]},
            "_leader._tcp.mesos.": {"srv": [
                {"priority": 0, "weight": 1, "port": 5050, "target": "leader.mesos."}
            ]}
        }
    })
}

/// Writes `v` to `path` in one step (a rename), so the subscriber never reads half a file.
fn write_table(path: &Path, v: &Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Server {
    running: Option<Running>,
    cancel: CancellationToken,
    base: String,
    client: reqwest::Client,
}

impl Server {
    async fn start(table_file: &Path) -> Server {
        ocean_core::http::init_tls();
        let mut config = ocean_dns::Config::new(SubscriberConfig {
            table_file: Some(table_file.to_path_buf()),
            file_poll: Duration::from_millis(50),
            ..Default::default()
        });
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.http = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.udp_workers = 1;
        config.resolvers = vec!["127.0.0.1:5353".parse().unwrap()];
        config.zone_resolvers = vec![("consul.".into(), "127.0.0.1:8600".parse().unwrap())];
        let cancel = CancellationToken::new();
        let running = start(config, cancel.clone()).await.unwrap();
        let base = format!("http://{}", running.http_addr.unwrap());
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        Server {
            running: Some(running),
            cancel,
            base,
            client,
        }
    }

    async fn get(&self, path: &str) -> (u16, String, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let ctype = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ctype, r.text().await.unwrap())
    }

    /// GET that must answer 200 with JSON.
    async fn json(&self, path: &str) -> Value {
        let (status, ctype, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(ctype.starts_with("application/json"), "{path}: {ctype}");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls `path` until `ok` holds for its status and body (5 s at most).
    async fn wait_for(&self, path: &str, ok: impl Fn(u16, &str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, _, body) = self.get(path).await;
            if ok(status, &body) {
                return body;
            }
            assert!(Instant::now() < deadline, "{path}: still {status} {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(r) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(5), r.wait())
                .await
                .unwrap();
        }
    }
}

const DATA_ENDPOINTS: [&str; 6] = [
    "/v1/config",
    "/v1/hosts/nginx.marathon.mesos",
    "/v1/services/_nginx._tcp.marathon.mesos",
    "/v1/enumerate",
    "/v1/axfr",
    "/v1/hosts/nginx.marathon.mesos.",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_in_mesos_dns_shape() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dns.json");
    let server = Server::start(&file).await;

    // No table yet: version answers, data endpoints say 503 with text, not empty data.
    let (status, _, body) = server.get("/healthz").await;
    assert_eq!(status, 503, "{body}");
    for path in DATA_ENDPOINTS {
        let (status, ctype, body) = server.get(path).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert!(ctype.starts_with("text/plain"), "{path}: {ctype}");
        assert!(body.contains("no dns table"), "{path}: {body}");
    }
    let version = json!({
        "Service": "Mesos-DNS",
        "URL": "https://github.com/mesosphere/mesos-dns",
        "Version": format!("ocean-{}", env!("CARGO_PKG_VERSION")),
    });
    assert_eq!(server.json("/v1/version").await, version);
    // A Go map: keys sorted.
    let (_, _, raw) = server.get("/v1/version").await;
    assert!(raw.starts_with(r#"{"Service":"Mesos-DNS","URL":"#), "{raw}");

    write_table(&file, &table());
    server.wait_for("/healthz", |s, _| s == 200).await;
    let health = server.json("/healthz").await;
    let serial = health["serial"].as_u64().unwrap();
    assert!(serial > 0);
    // The status page: the daemon, the zone's serial, the table applied.
    let (status, ctype, page) = server.get("/").await;
    assert_eq!(status, 200, "{page}");
    assert!(ctype.starts_with("text/html"), "{ctype}");
    for fact in [
        "<h1>ocean dns</h1>".to_string(),
        format!("<dt>zone serial</dt><dd>{serial}</dd>"),
    ] {
        assert!(
            page.contains(&fact),
            "{fact} missing from the status page:\n{page}"
        );
    }

    // /v1/hosts: A then AAAA, the name cleaned like Mesos-DNS does.
    assert_eq!(
        server.json("/v1/hosts/nginx.marathon.mesos").await,
        json!([
            {"host": "nginx.marathon.mesos.", "ip": "10.0.0.1"},
            {"host": "nginx.marathon.mesos.", "ip": "10.0.0.2"}
        ])
    );
    assert_eq!(
        server
            .json("/v1/hosts/NGINX-8kzqw-s2.marathon.*.mesos.")
            .await,
        json!([
            {"host": "nginx-8kzqw-s2.marathon.mesos.", "ip": "10.0.0.2"},
            {"host": "nginx-8kzqw-s2.marathon.mesos.", "ip": "fd00::2"}
        ])
    );
    assert_eq!(
        server.json("/v1/hosts/nothing.mesos").await,
        json!([{"host": "", "ip": ""}])
    );
    let (status, _, _) = server.get("/v1/hosts/nginx.marathon.mesos/ports").await;
    assert_eq!(status, 501);

    // /v1/services: a row per target address, port a string, targets without address left out.
    assert_eq!(
        server.json("/v1/services/_nginx._tcp.marathon.mesos").await,
        json!([
            {"service": "_nginx._tcp.marathon.mesos", "host": "nginx-8kzqw-s2.marathon.mesos.", "ip": "10.0.0.2", "port": "31644"},
            {"service": "_nginx._tcp.marathon.mesos", "host": "nginx-8kzqw-s2.marathon.mesos.", "ip": "fd00::2", "port": "31644"},
            {"service": "_nginx._tcp.marathon.mesos", "host": "nginx-f93mi-s1.marathon.mesos.", "ip": "10.0.0.1", "port": "31667"}
        ])
    );
    assert_eq!(
        server.json("/v1/services/_leader._tcp.mesos.").await,
        json!([{"service": "_leader._tcp.mesos.", "host": "leader.mesos.", "ip": "10.0.0.10", "port": "5050"}])
    );
    assert_eq!(
        server.json("/v1/services/_none._tcp.marathon.mesos").await,
        json!([{"service": "", "host": "", "ip": "", "port": ""}])
    );
    let (_, _, raw) = server.get("/v1/services/_leader._tcp.mesos.").await;
    assert!(
        raw.starts_with(r#"[{"service":"#),
        "Go's field order: {raw}"
    );

    // /v1/enumerate: one "task" per app name.
    let rec =
        |name: &str, host: &str, rtype: &str| json!({"name": name, "host": host, "rtype": rtype});
    assert_eq!(
        server.json("/v1/enumerate").await,
        json!({"frameworks": [{
            "tasks": [
                {"name": "nginx", "id": "nginx", "records": [
                    rec("_http._nginx._tcp.marathon.mesos.", "nginx-f93mi-s1.marathon.mesos.:31667", "SRV"),
                    rec("_nginx._tcp.marathon.mesos.", "nginx-8kzqw-s2.marathon.mesos.:31644", "SRV"),
                    rec("_nginx._tcp.marathon.mesos.", "nginx-f93mi-s1.marathon.mesos.:31667", "SRV"),
                    rec("_nginx._tcp.marathon.mesos.", "gone.marathon.mesos.:8080", "SRV"),
                    rec("_nginx._tcp.marathon.slave.mesos.", "nginx-f93mi-s1.marathon.slave.mesos.:31001", "SRV"),
                    rec("nginx-8kzqw-s2.marathon.mesos.", "10.0.0.2", "A"),
                    rec("nginx-8kzqw-s2.marathon.mesos.", "fd00::2", "AAAA"),
                    rec("nginx-8kzqw-s2.marathon.slave.mesos.", "10.0.1.2", "A"),
                    rec("nginx-f93mi-s1.marathon.mesos.", "10.0.0.1", "A"),
                    rec("nginx-f93mi-s1.marathon.slave.mesos.", "10.0.1.1", "A"),
                    rec("nginx.marathon.mesos.", "10.0.0.1", "A"),
                    rec("nginx.marathon.mesos.", "10.0.0.2", "A"),
                    rec("nginx.marathon.slave.mesos.", "10.0.1.1", "A"),
                    rec("nginx.marathon.slave.mesos.", "10.0.1.2", "A"),
                ]},
                {"name": "web-shop", "id": "web-shop", "records": [
                    rec("web-shop.marathon.mesos.", "10.0.2.1", "A"),
                ]},
                {"name": "web.shop", "id": "web.shop", "records": [
                    rec("web.shop.marathon.mesos.", "10.0.2.1", "A"),
                ]},
            ],
            "name": "marathon"
        }]})
    );

    // /v1/axfr: the whole zone.
    assert_eq!(
        server.json("/v1/axfr").await,
        json!({
            "TTL": 60,
            "Serial": serial,
            "RefreshSeconds": 60,
            "Mname": "ns1.mesos.",
            "Rname": "root.ns1.mesos.",
            "Domain": "mesos",
            "Records": {
                "As": {
                    "leader.mesos.": ["10.0.0.10"],
                    "master.mesos.": ["10.0.0.10"],
                    "nginx-8kzqw-s2.marathon.mesos.": ["10.0.0.2"],
                    "nginx-8kzqw-s2.marathon.slave.mesos.": ["10.0.1.2"],
                    "nginx-f93mi-s1.marathon.mesos.": ["10.0.0.1"],
                    "nginx-f93mi-s1.marathon.slave.mesos.": ["10.0.1.1"],
                    "nginx.marathon.mesos.": ["10.0.0.1", "10.0.0.2"],
                    "nginx.marathon.slave.mesos.": ["10.0.1.1", "10.0.1.2"],
                    "web-shop.marathon.mesos.": ["10.0.2.1"],
                    "web.shop.marathon.mesos.": ["10.0.2.1"]
                },
                "AAAAs": {"nginx-8kzqw-s2.marathon.mesos.": ["fd00::2"]},
                "SRVs": {
                    "_http._nginx._tcp.marathon.mesos.": ["nginx-f93mi-s1.marathon.mesos.:31667"],
                    "_leader._tcp.mesos.": ["leader.mesos.:5050"],
                    "_nginx._tcp.marathon.mesos.": [
                        "nginx-8kzqw-s2.marathon.mesos.:31644",
                        "nginx-f93mi-s1.marathon.mesos.:31667",
                        "gone.marathon.mesos.:8080"
                    ],
                    "_nginx._tcp.marathon.slave.mesos.": ["nginx-f93mi-s1.marathon.slave.mesos.:31001"]
                }
            }
        })
    );
    let (_, _, raw) = server.get("/v1/axfr").await;
    assert!(
        raw.starts_with(r#"{"TTL":60,"Serial":"#),
        "Go's field order: {raw}"
    );

    // /v1/config: Mesos-DNS's Config, from our settings and the zone.
    let config = server.json("/v1/config").await;
    let running = server.running.as_ref().unwrap();
    let (dns_port, http_port) = (running.dns_addr.port(), running.http_addr.unwrap().port());
    assert_ne!(
        dns_port, 0,
        "the bound port is reported, not the configured 0"
    );
    assert_eq!(
        config,
        json!({
            "RefreshSeconds": 60,
            "Port": dns_port,
            "Timeout": 2,
            "StateTimeoutSeconds": 30,
            "ZkDetectionTimeout": 0,
            "HttpPort": http_port,
            "TTL": 60,
            "SOASerial": serial,
            "SOARefresh": 60,
            "SOARetry": 600,
            "SOAExpire": 86400,
            "SOAMinttl": 60,
            "SOAMname": "ns1.mesos.",
            "SOARname": "root.ns1.mesos.",
            "Masters": [],
            "Resolvers": ["127.0.0.1:5353"],
            "ZoneResolvers": {"consul": ["127.0.0.1:8600"]},
            "IPSources": [],
            "Zk": "",
            "Domain": "mesos",
            "File": "",
            "Listener": "127.0.0.1",
            "HTTPListener": "127.0.0.1",
            "RecurseOn": true,
            "DnsOn": true,
            "HttpOn": true,
            "ExternalOn": true,
            "EnforceRFC952": false,
            "EnumerationOn": true,
            "MesosHTTPSOn": false,
            "CACertFile": "",
            "IAMConfigFile": "",
            "MesosAuthentication": ""
        })
    );
    let (_, _, raw) = server.get("/v1/config").await;
    assert!(
        raw.starts_with(&format!(r#"{{"RefreshSeconds":60,"Port":{dns_port},"#)),
        "{raw}"
    );
    assert!(!raw.to_ascii_lowercase().contains("secret") && !raw.contains("token"));

    // A new table shows up, with a new serial.
    let mut next = table();
    next["ttl"] = json!(30);
    next["names"]["nginx.marathon.mesos."] = json!({"a": ["10.0.0.3"]});
    write_table(&file, &next);
    server
        .wait_for("/v1/hosts/nginx.marathon.mesos", |s, b| {
            s == 200 && b.contains("10.0.0.3")
        })
        .await;
    assert_eq!(
        server.json("/v1/hosts/nginx.marathon.mesos").await,
        json!([{"host": "nginx.marathon.mesos.", "ip": "10.0.0.3"}])
    );
    let axfr = server.json("/v1/axfr").await;
    assert_eq!(axfr["TTL"], 30);
    assert!(axfr["Serial"].as_u64().unwrap() > serial);
    assert_eq!(
        axfr["Records"]["As"]["nginx.marathon.mesos."],
        json!(["10.0.0.3"])
    );
    assert_eq!(server.json("/v1/config").await["TTL"], 30);

    // A broken table file keeps the zone being served.
    std::fs::write(&file, b"{not json").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.json("/v1/hosts/nginx.marathon.mesos").await,
        json!([{"host": "nginx.marathon.mesos.", "ip": "10.0.0.3"}])
    );

    server.stop().await;
}
