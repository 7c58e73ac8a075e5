//! Issue 13: control's status page, `ocean status`, and a proxy's admin `/`, as an operator
//! meets them.
//!
//! One platform per test: a fake Marathon with a web app, a memcached pool and an app whose
//! `OCEAN_PORT` label is markup (a problem whose text must render as text); `ocean control`
//! with an unscoped API token and a `dns`-scoped one; `ocean memcached-router` subscribed to
//! control (a subscriber in sync); and a subscriber that polls reporting an old ETag (one that
//! lags). The status page is loaded in headless Chromium (Debian's `chromium`) and checked in
//! the DOM it rendered; a missing `chromium` is a failure naming the package.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ocean_tests::fake_marathon::{app, task, FakeMarathon};
use ocean_tests::servers::{find_binary, free_port};
use serde_json::{json, Value};

use super::{terminate, Proc, OCEAN};

/// The unscoped API token (files `api.token`).
const TOKEN: &str = "status-page-token-4b1e";
/// A token that may read only the dns table (`dns.token`).
const DNS_TOKEN: &str = "dns-only-token-93c0";
/// The label value that becomes a problem line: markup, which the page must show as text.
const EVIL_PORT: &str = "<script>alert('owned')</script>";
/// The subscriber that reports an old ETag.
const LAGGING: &str = "stale-router";
/// The memcached router's subscriber id; sorts before [`LAGGING`], so "lagging first" shows.
const IN_SYNC: &str = "fresh-router";
/// How long anything this test waits for may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// A daemon started by the test, its output in a file.
struct Daemon {
    proc: Proc,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, name: &str, args: &[&str]) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(OCEAN)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Daemon {
            proc: Proc(Some(child)),
            log,
        }
    }

    fn log(&self) -> String {
        format!(
            "--- {} ---\n{}",
            self.log.display(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

/// Control, a memcached router subscribed to it, and a lagging subscriber.
struct Platform {
    _marathon: FakeMarathon,
    dir: tempfile::TempDir,
    control: Daemon,
    router: Daemon,
    control_url: String,
    router_admin: SocketAddr,
    /// The memcached server of pool `pages` (nothing listens there).
    pool_server: SocketAddr,
    /// The memcached table's ETag control serves.
    memcached_etag: String,
}

impl Platform {
    async fn start() -> Platform {
        let marathon = FakeMarathon::start().await.unwrap();
        let mut web = app("/shop/web", json!({}), 10080);
        web["tasks"] = json!([task("/shop/web", 1, "127.0.1.1", &[31001])]);
        marathon.put_app(web);
        let pool_port = free_port().unwrap();
        let mut cache = app(
            "/shop/cache",
            json!({
                "OCEAN_MEMCACHED_POOL": "pages",
                "OCEAN_MEMCACHED_REPLICA": "a",
                "OCEAN_PORT": pool_port.to_string(),
            }),
            10081,
        );
        // A backend that is not there: the router still applies the table.
        let pool_server = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
        cache["tasks"] = json!([task("/shop/cache", 1, "127.0.0.1", &[pool_server.port()])]);
        marathon.put_app(cache);
        let mut bad = app(
            "/shop/cache-bad",
            json!({"OCEAN_MEMCACHED_POOL": "bad", "OCEAN_PORT": EVIL_PORT}),
            10082,
        );
        bad["tasks"] = json!([task("/shop/cache-bad", 1, "127.0.1.3", &[31003])]);
        marathon.put_app(bad);

        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("api.token"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(d.join("dns.token"), format!("{DNS_TOKEN}\n")).unwrap();
        std::fs::write(
            d.join("control.toml"),
            "[[api.tokens]]\nfile = \"dns.token\"\ntables = [\"dns\"]\n",
        )
        .unwrap();
        let control_addr = format!("127.0.0.1:{}", free_port().unwrap());
        let control_url = format!("http://{control_addr}");
        let marathon_url = marathon.url().to_string();
        let control = Daemon::start(
            d,
            "control",
            &[
                "control",
                "--marathon",
                &marathon_url,
                "--listen",
                &control_addr,
                "--token-file",
                "api.token",
                "--config",
                "control.toml",
            ],
        );
        let memcached = wait_for(
            &format!("{control_url}/v1/tables/memcached"),
            |_| true,
            &control,
        )
        .await;
        let memcached_etag = memcached.0;

        let router_admin: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
            .parse()
            .unwrap();
        let admin = router_admin.to_string();
        let router = Daemon::start(
            d,
            "router",
            &[
                "memcached-router",
                "--control",
                &control_url,
                "--control-token-file",
                "api.token",
                "--subscriber-id",
                IN_SYNC,
                "--admin",
                &admin,
            ],
        );
        // A subscriber that still runs a table long gone: it reports the old ETag.
        let old = "0000000000000000000000000000000000000000000000000000000000000000";
        let (code, _, _) = get(
            &format!("{control_url}/v1/tables/memcached?subscriber={LAGGING}&running={old}"),
            Auth::Bearer(TOKEN),
            Some(old),
        )
        .await;
        assert_eq!(code, 200, "{}", control.log());
        // The router has applied the table and said so in its next poll.
        wait_for(
            &format!("{control_url}/v1/subscribers"),
            |v| {
                v.as_array().unwrap().iter().any(|s| {
                    s["id"] == IN_SYNC && s["running"].as_str() == Some(memcached_etag.as_str())
                })
            },
            &router,
        )
        .await;
        Platform {
            _marathon: marathon,
            dir,
            control,
            router,
            control_url,
            router_admin,
            pool_server,
            memcached_etag,
        }
    }

    fn stop(self) {
        terminate(self.router.proc);
        terminate(self.control.proc);
    }
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a str),
    /// HTTP Basic with this password (what a browser sends after asking).
    Basic(&'a str),
}

/// `GET url`: status, `WWW-Authenticate`, body. `if_none_match` is an ETag to send.
async fn get(url: &str, auth: Auth<'_>, if_none_match: Option<&str>) -> (u16, String, String) {
    ocean_core::http::init_tls();
    let client = reqwest::Client::new();
    let mut req = client.get(url).timeout(Duration::from_secs(10));
    req = match auth {
        Auth::None => req,
        Auth::Bearer(t) => req.bearer_auth(t),
        Auth::Basic(t) => req.basic_auth("operator", Some(t)),
    };
    if let Some(e) = if_none_match {
        req = req.header("If-None-Match", format!("\"{e}\""));
    }
    let resp = req.send().await.unwrap();
    let code = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (code, challenge, resp.text().await.unwrap())
}

/// Polls `url` (with the unscoped token) until it answers 200 with JSON `ready` accepts;
/// returns the ETag header (quotes stripped) and the JSON.
async fn wait_for(url: &str, ready: impl Fn(&Value) -> bool, logs: &Daemon) -> (String, Value) {
    ocean_core::http::init_tls();
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(resp) = client.get(url).bearer_auth(TOKEN).send().await {
            let etag = resp
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .trim_matches('"')
                .to_string();
            if resp.status() == 200 {
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                if ready(&v) {
                    return (etag, v);
                }
            }
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{url} never got ready\n{}",
            logs.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `ocean ARGS` to completion: success, stdout, stderr.
async fn ocean(args: &[&str]) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(OCEAN).args(&args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// Headless Chromium's DOM of `url` after it rendered the page.
async fn chromium_dom(url: &str, profile: &Path) -> String {
    let chromium = find_binary("chromium", "chromium").unwrap_or_else(|e| panic!("{e}"));
    let (url, profile) = (url.to_string(), profile.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                &format!("--user-data-dir={}", profile.display()),
                "--dump-dom",
                &url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = Proc(Some(child));
        let started = Instant::now();
        loop {
            let c = child.0.as_mut().unwrap();
            if c.try_wait().unwrap().is_some() {
                let out = child.0.take().unwrap().wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "chromium failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "chromium hangs"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_page_in_chromium_shows_apps_problems_and_the_lagging_subscriber_first() {
    // Fail first, and by package name, where the browser is missing.
    find_binary("chromium", "chromium").unwrap_or_else(|e| panic!("{e}"));
    let p = Platform::start().await;
    let url = &p.control_url;

    // The same token rules as /v1/state: none is 401 asking for Basic (a browser then
    // asks for the token), a scoped one is 403, the unscoped one reads it either way.
    for path in ["/", "/ui"] {
        let (code, challenge, _) = get(&format!("{url}{path}"), Auth::None, None).await;
        assert_eq!(code, 401, "{path}");
        assert!(challenge.starts_with("Basic realm="), "{challenge}");
        let (code, _, body) = get(&format!("{url}{path}"), Auth::Bearer(DNS_TOKEN), None).await;
        assert_eq!(code, 403, "{path}: {body}");
        let (code, _, _) = get(&format!("{url}{path}"), Auth::Basic("wrong"), None).await;
        assert_eq!(code, 401, "{path}");
        let (code, _, body) = get(&format!("{url}{path}"), Auth::Basic(TOKEN), None).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert!(body.contains("<title>ocean control</title>"), "{body}");
    }
    let (code, _, html) = get(&format!("{url}/"), Auth::Bearer(TOKEN), None).await;
    assert_eq!(code, 200);
    assert!(
        !html.contains("<script"),
        "markup from a label got through:\n{html}"
    );

    // The browser: credentials in the URL answer the Basic challenge.
    let port = url.rsplit(':').next().unwrap();
    let dom = chromium_dom(
        &format!("http://operator:{TOKEN}@127.0.0.1:{port}/"),
        &p.dir.path().join("chromium-profile"),
    )
    .await;
    assert!(dom.contains("<h1>ocean control</h1>"), "{dom}");
    for app in ["/shop/web", "/shop/cache", "/shop/cache-bad"] {
        assert!(dom.contains(&format!(">{app}<")), "no app {app} in:\n{dom}");
    }
    // The problem, its label value shown as text: no script element was made of it.
    assert!(
        dom.contains("OCEAN_PORT=\"&lt;script&gt;alert('owned')&lt;/script&gt;\" is not a port"),
        "{dom}"
    );
    assert!(!dom.contains("<script"), "{dom}");
    // Subscribers: the lagging one first, though its id sorts after the one in sync.
    let subs = &dom[dom
        .find("id=\"subscribers\"")
        .expect("a subscribers section")..];
    let (lagging, in_sync) = (subs.find(LAGGING), subs.find(IN_SYNC));
    assert!(
        lagging.is_some() && in_sync.is_some() && lagging < in_sync,
        "{subs}"
    );
    assert!(subs.contains("Subscribers (2, 1 lagging)"), "{subs}");
    assert!(
        subs.contains(&format!("behind {}", &p.memcached_etag[..12])),
        "{subs}"
    );
    // The tables with their ETag and size, and the last sync.
    assert!(dom.contains(&p.memcached_etag), "{dom}");
    assert!(dom.contains("last Marathon sync"), "{dom}");
    p.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn ocean_status_prints_aligned_text_and_json() {
    let p = Platform::start().await;
    let token = p.dir.path().join("api.token");
    let token = token.to_str().unwrap();
    let url = p.control_url.as_str();

    let (ok, text, err) = ocean(&["status", "--control", url, "--token-file", token]).await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = text.lines().collect();
    let line_of = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{text}"))
    };
    assert!(lines[0].contains(" ok"), "{text}");
    assert!(text.contains("last Marathon sync"), "{text}");
    // Tables: a header and one row per table, columns aligned under the header.
    let header = lines[line_of("TABLE ")];
    let row = lines[line_of(&p.memcached_etag[..12])];
    assert_eq!(
        header.find("ETAG"),
        row.find(&p.memcached_etag[..12]),
        "{text}"
    );
    // Subscribers: the lagging one first.
    let lagging = line_of(LAGGING);
    assert!(lines[lagging].starts_with("LAGGING"), "{text}");
    assert!(lagging < line_of(IN_SYNC), "{text}");
    assert!(text.contains("SUBSCRIBERS (2, 1 lagging)"), "{text}");
    // Problems and apps.
    assert!(
        text.contains("/shop/cache-bad")
            && text.contains(&format!("OCEAN_PORT=\"{EVIL_PORT}\" is not a port")),
        "{text}"
    );
    assert!(text.contains("/shop/web"), "{text}");

    let (ok, json, err) =
        ocean(&["status", "--control", url, "--token-file", token, "--json"]).await;
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&json).unwrap();
    let subs = v["subscribers"].as_array().unwrap();
    assert_eq!(subs[0]["id"], LAGGING, "{json}");
    assert_eq!(subs[0]["lagging"], true);
    assert_eq!(subs[1]["id"], IN_SYNC);
    assert_eq!(subs[1]["lagging"], false);
    assert_eq!(subs[1]["running"], p.memcached_etag.as_str());
    let memcached = v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "memcached")
        .unwrap();
    assert_eq!(memcached["etag"], p.memcached_etag.as_str());
    assert!(memcached["bytes"].as_u64().unwrap() > 0);
    assert!(v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["app"] == "/shop/cache-bad"));
    assert!(v["sync"]["last_success_unix"].as_u64().is_some(), "{json}");

    // Without the token: the API's 401, and a non-zero exit.
    let (ok, _, err) = ocean(&["status", "--control", url]).await;
    assert!(!ok);
    assert!(err.contains("401"), "{err}");
    // A scoped token is not enough either.
    let dns = p.dir.path().join("dns.token");
    let (ok, _, err) = ocean(&[
        "status",
        "--control",
        url,
        "--token-file",
        dns.to_str().unwrap(),
    ])
    .await;
    assert!(!ok);
    assert!(err.contains("403"), "{err}");
    p.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_admin_port_serves_its_status_page() {
    let p = Platform::start().await;
    let (code, _, html) = get(&format!("http://{}/", p.router_admin), Auth::None, None).await;
    assert_eq!(code, 200, "{html}\n{}", p.router.log());
    assert!(
        html.contains("<title>ocean memcached-router</title>"),
        "{html}"
    );
    assert!(html.contains(&p.memcached_etag), "{html}");
    assert!(
        html.contains(&format!("control {}", p.control_url)),
        "{html}"
    );
    assert!(html.contains("client connections"), "{html}");
    // Its backend: up until a request to it fails (none was sent).
    assert!(html.contains("Backends: 1 up, 0 down, 0 TKO"), "{html}");
    assert!(
        html.contains(&format!("<code>{}</code>", p.pool_server)),
        "{html}"
    );
    assert!(html.contains("pages / a"), "{html}");
    assert!(html.contains(">ok</span>"), "{html}");
    assert!(!html.contains("<script"), "{html}");
    p.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn ocean_status_reads_an_https_control_trusting_control_ca() {
    let pki = ocean_tests::pki::Pki::generate().unwrap();
    let d = pki.dir();
    let mut web = app("/shop/web", json!({}), 10080);
    web["tasks"] = json!([task("/shop/web", 1, "127.0.1.1", &[31001])]);
    std::fs::write(d.join("apps.json"), json!({ "apps": [web] }).to_string()).unwrap();
    std::fs::write(d.join("api.token"), format!("{TOKEN}\n")).unwrap();
    let listen = format!("127.0.0.1:{}", free_port().unwrap());
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let control = Daemon::start(
        d,
        "control",
        &[
            "control",
            "--apps-file",
            "apps.json",
            "--listen",
            &listen,
            "--token-file",
            "api.token",
            "--tls-cert",
            &s(&pki.cert),
            "--tls-key",
            &s(&pki.key),
        ],
    );
    let url = format!("https://{listen}");
    let (ca, token) = (s(&pki.ca), s(&d.join("api.token")));
    let args = [
        "status",
        "--control",
        &url,
        "--control-ca",
        &ca,
        "--token-file",
        &token,
    ];
    // Until control has synced and listens, `ocean status` fails; then it prints the app,
    // and the five tables once they are published (a moment after the app is known).
    let started = Instant::now();
    let text = loop {
        let (ok, text, err) = ocean(&args).await;
        if ok && text.contains("/shop/web") && text.contains("TABLES (5)") {
            break text;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "ocean status never read {url}: {err}\n{text}\n{}",
            control.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(text.contains("SUBSCRIBERS (0, 0 lagging)"), "{text}");
    // Without the CA, the system roots do not know the test CA: a TLS error, non-zero.
    let (ok, _, err) = ocean(&["status", "--control", &url, "--token-file", &token]).await;
    assert!(!ok);
    assert!(err.contains(&url), "{err}");
    terminate(control.proc);
}
