//! Control's locked table service end to end: TLS with a test CA, tokens scoped to tables
//! from control.toml, read with the real `curl` and with Ocean's own subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ocean_control::config::{FileConfig, Source};
use ocean_control::engine::{start, Running};
use ocean_control::tls::TlsFiles;
use ocean_control::Config;
use ocean_core::secret::Secret;
use ocean_core::subscriber::{self, SubscriberConfig};
use ocean_core::table::{DnsTable, MysqlTable};
use ocean_tests::fake_marathon::{app, task, FakeMarathon};
use ocean_tests::pki::Pki;
use ocean_tests::servers::find_binary;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const DNS_TOKEN: &str = "dns-only-7f3a9c";
const ADMIN_TOKEN: &str = "admin-all-51be02";

/// What curl did: its exit code, the HTTP status (`000` when there was no HTTP answer) and
/// the body.
struct Curl {
    exit: i32,
    status: String,
    body: String,
    stderr: String,
}

async fn curl(args: Vec<String>) -> Curl {
    let curl = find_binary("curl", "curl").unwrap();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(curl)
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(&args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        Curl {
            exit: out.status.code().unwrap_or(-1),
            status: status.to_string(),
            body: body.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    })
    .await
    .unwrap()
}

/// `curl --cacert CA [-H 'Authorization: Bearer TOKEN'] https://ADDR/PATH`.
async fn get(pki: &Pki, addr: SocketAddr, path: &str, token: Option<&str>) -> Curl {
    let mut args = vec![
        "--cacert".to_string(),
        pki.ca.display().to_string(),
        format!("https://{addr}{path}"),
    ];
    if let Some(t) = token {
        args.extend(["-H".to_string(), format!("Authorization: Bearer {t}")]);
    }
    curl(args).await
}

async fn marathon() -> FakeMarathon {
    let m = FakeMarathon::start().await.unwrap();
    m.put_app(app("/web", json!({}), 10080));
    m.add_task("/web", task("/web", 1, "127.0.1.1", &[31001]));
    m
}

/// Writes control.toml with an unscoped `token_file` and a `dns`-scoped `[[api.tokens]]`
/// (files relative to the config's directory), and builds control's config from it.
fn locked_config(dir: &Path, pki: &Pki, m: &FakeMarathon) -> Config {
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/dns.token"), format!("{DNS_TOKEN}\n")).unwrap();
    std::fs::write(dir.join("secrets/admin.token"), ADMIN_TOKEN).unwrap();
    let toml = r#"
token_file = "secrets/admin.token"
[[api.tokens]]
file = "secrets/dns.token"
tables = ["dns"]
"#;
    let path = dir.join("control.toml");
    std::fs::write(&path, toml).unwrap();
    let mut c = Config::new(Source::Marathon(vec![m.url()]));
    FileConfig::load(&path).unwrap().apply(dir, &mut c).unwrap();
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.debounce = Duration::from_millis(20);
    c.tls = Some(TlsFiles {
        cert: pki.cert.clone(),
        key: pki.key.clone(),
    });
    // Control's config is Debug (and logged by whoever likes): no token in it.
    let shown = format!("{c:?}");
    assert!(
        !shown.contains(DNS_TOKEN) && !shown.contains(ADMIN_TOKEN),
        "{shown}"
    );
    assert_eq!(c.tokens.len(), 2, "{shown}");
    c
}

async fn locked_control(pki: &Pki, m: &FakeMarathon) -> (Running, CancellationToken) {
    let c = locked_config(pki.dir(), pki, m);
    let cancel = CancellationToken::new();
    let running = start(c, cancel.clone()).await.unwrap();
    // Until the first sync, tables are 503.
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.shared.status().last_success_unix.is_none() {
        assert!(Instant::now() < deadline, "control never synced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (running, cancel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reads_its_table_over_tls_and_is_refused_outside_its_scope() {
    let pki = Pki::generate().unwrap();
    let m = marathon().await;
    let (ctl, cancel) = locked_control(&pki, &m).await;
    let addr = ctl.addr;

    // The dns-scoped token reads the dns table, checked against the test CA.
    let r = get(&pki, addr, "/v1/tables/dns", Some(DNS_TOKEN)).await;
    assert_eq!((r.exit, r.status.as_str()), (0, "200"), "{}", r.stderr);
    let dns: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        dns["names"]["web.marathon.mesos."]["a"],
        json!(["127.0.1.1"]),
        "{}",
        r.body
    );

    // ... and nothing else: 403 naming what it may read.
    let r = get(&pki, addr, "/v1/tables/mysql", Some(DNS_TOKEN)).await;
    assert_eq!(r.status, "403", "{}", r.body);
    assert!(
        r.body.contains("only the tables dns") && r.body.contains("not mysql"),
        "{}",
        r.body
    );
    for path in ["/v1/state", "/v1/problems", "/v1/subscribers"] {
        let r = get(&pki, addr, path, Some(DNS_TOKEN)).await;
        assert_eq!(r.status, "403", "{path}: {}", r.body);
        assert!(r.body.contains("unscoped"), "{path}: {}", r.body);
    }

    // The unscoped token from `token_file` reads everything.
    for path in ["/v1/tables/mysql", "/v1/tables/dns", "/v1/state"] {
        let r = get(&pki, addr, path, Some(ADMIN_TOKEN)).await;
        assert_eq!(r.status, "200", "{path}: {}", r.body);
    }

    // No token, a wrong one, or a prefix of a right one: 401.
    for token in [None, Some("nope"), Some("dns-only-7f3a9")] {
        let r = get(&pki, addr, "/v1/tables/dns", token).await;
        assert_eq!(r.status, "401", "{token:?}: {}", r.body);
    }
    // /healthz and /metrics need no token; both counters are there.
    let r = get(&pki, addr, "/metrics", None).await;
    assert_eq!(r.status, "200");
    assert!(
        r.body
            .contains(r#"ocean_control_forbidden_total{kind="mysql",reason="scope"}"#),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains(r#"ocean_control_forbidden_total{kind="api",reason="scope"}"#),
        "{}",
        r.body
    );
    assert!(r.body.contains("ocean_control_unauthorized_total"));

    // Plain HTTP to the TLS port gets no HTTP answer at all.
    let r = curl(vec![format!("http://{addr}/healthz")]).await;
    assert_ne!(r.exit, 0, "plain HTTP answered: {} {}", r.status, r.body);
    assert_eq!(r.status, "000");
    // Without the CA, curl's own verification refuses the certificate (exit 60).
    let r = curl(vec![format!("https://{addr}/healthz")]).await;
    assert_eq!(r.exit, 60, "{}", r.stderr);

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), ctl.wait())
        .await
        .expect("control did not stop within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_subscriber_trusts_the_control_ca_and_follows_changes() {
    let pki = Pki::generate().unwrap();
    let m = marathon().await;
    let (ctl, cancel) = locked_control(&pki, &m).await;
    let url = url::Url::parse(&format!("https://{}", ctl.addr)).unwrap();
    let sub = |ca: Option<&Path>| SubscriberConfig {
        controls: vec![url.clone()],
        token: Some(Secret::new(DNS_TOKEN.into())),
        control_ca: ca.map(Path::to_path_buf),
        wait: Duration::from_secs(30),
        backoff_max: Duration::from_millis(200),
        subscriber_id: "tls-test".into(),
        ..Default::default()
    };

    // Without --control-ca the system's trust store is used, which does not know the test
    // CA: no table, and the failure is reported.
    let (untrusting, _t) = subscriber::spawn::<DnsTable>(sub(None), cancel.clone());
    // A scoped token asking for another table: 403, reported, no table.
    let (mut mysql, _t) = subscriber::spawn::<MysqlTable>(sub(Some(&pki.ca)), cancel.clone());
    // With the CA: the table, then a change over the same TLS long-poll.
    let (mut w, _t) = subscriber::spawn::<DnsTable>(sub(Some(&pki.ca)), cancel.clone());
    let first = tokio::time::timeout(Duration::from_secs(5), w.first())
        .await
        .unwrap()
        .unwrap();
    assert!(first.table.names.contains_key("web.marathon.mesos."));
    m.add_task("/web", task("/web", 2, "127.0.1.2", &[31002]));
    let t0 = Instant::now();
    loop {
        let t = tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("no change over TLS within 5 s")
            .unwrap();
        let a = &t.table.names["web.marathon.mesos."].a;
        if a.len() == 2 {
            break;
        }
    }
    eprintln!("task added -> TLS subscriber has it: {:?}", t0.elapsed());

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = mysql.status();
        if let Some(e) = s.last_error.filter(|e| e.contains("403")) {
            eprintln!("scoped subscriber: {e}");
            break;
        }
        assert!(Instant::now() < deadline, "no 403 for the mysql table");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(100), mysql.first())
            .await
            .is_err()
    );
    assert!(untrusting.load().is_none());
    let e = untrusting.status().last_error;
    assert!(e.is_some_and(|e| e.contains("https://")));

    // Shutdown answers a TLS long-poll in flight at once.
    let client = ocean_core::http::trust_only(
        ocean_core::http::client_builder(Duration::from_secs(2)),
        ocean_core::tls::PemFile::new("ca", &pki.ca),
    )
    .unwrap()
    .build()
    .unwrap();
    let etag = w.load().unwrap().etag.clone();
    let poll = tokio::spawn(
        client
            .get(format!("{url}v1/tables/dns?wait=60s"))
            .bearer_auth(ADMIN_TOKEN)
            .header("If-None-Match", format!("\"{etag}\""))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), ctl.wait())
        .await
        .expect("control did not stop within 5 s");
    let answered = poll.await.unwrap().unwrap();
    assert_eq!(answered.status(), 304);
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn bad_tls_files_fail_before_binding_naming_the_flag() {
    let pki = Pki::generate().unwrap();
    let m = marathon().await;
    let mut c = locked_config(pki.dir(), &pki, &m);
    // The key of another certificate... here: the certificate given as the key.
    c.tls = Some(TlsFiles {
        cert: pki.cert.clone(),
        key: pki.ca.clone(),
    });
    let e = start(c, CancellationToken::new())
        .await
        .err()
        .expect("started with a certificate as its key")
        .to_string();
    assert!(e.contains("--tls-key") && e.contains("ca.pem"), "{e}");
}
