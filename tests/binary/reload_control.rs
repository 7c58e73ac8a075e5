//! Issue 13, must-show 1 for control: `ocean control` re-reads control.toml (and the
//! secret and token files it names) on SIGHUP, while clients keep polling its API.
//!
//! Each test runs the built `ocean control` against the fake Marathon with a control.toml
//! written here, edits the files as an operator would, sends SIGHUP with `kill(2)`, and
//! looks at what control serves: a new ownership rule in `/v1/problems`, a rotated MySQL
//! password in the next mysql table (and, through `ocean mysql-proxy`, in the next backend
//! login to a real mariadbd), a rotated API token, and a broken control.toml that changes
//! nothing but `ocean_reloads_total{daemon="control",result="error"}`.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ocean_tests::fake_marathon::{app, task, FakeMarathon};
use ocean_tests::servers::{free_port, mariadb_query, MariaDb};
use serde_json::{json, Value};

use super::{terminate, Proc, OCEAN};

/// Control's unscoped API token (`--token-file secrets/api.token`).
const API_TOKEN: &str = "api-token-before-rotation";

/// How long anything a test waits for may take.
const DEADLINE: Duration = Duration::from_secs(20);

/// `ocean control` started by a test, its stdout and stderr in one file.
struct Control {
    proc: Proc,
    log: PathBuf,
    url: String,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    marathon: FakeMarathon,
}

impl Control {
    /// Writes `toml` as control.toml (and `files`, relative to it) and starts control on
    /// the fake Marathon serving `apps`, with `--token-file secrets/api.token`.
    async fn start(toml: &str, files: &[(&str, &str)], apps: Vec<Value>) -> Control {
        let marathon = FakeMarathon::start().await.unwrap();
        for a in apps {
            marathon.put_app(a);
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        write(dir.path(), "secrets/api.token", API_TOKEN);
        for (name, body) in files {
            write(dir.path(), name, body);
        }
        write(dir.path(), "control.toml", toml);
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
            .parse()
            .unwrap();
        let log = dir.path().join("control.log");
        let out = File::create(&log).unwrap();
        let child = Command::new(OCEAN)
            .args(["control", "--token-file", "secrets/api.token", "--marathon"])
            .arg(marathon.url().to_string())
            .args(["--config", "control.toml", "--listen"])
            .arg(addr.to_string())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let c = Control {
            proc: Proc(Some(child)),
            log,
            url: format!("http://{addr}"),
            addr,
            dir,
            marathon,
        };
        // Serving tables means started: the SIGHUP handler is installed before that.
        c.wait_json("/v1/tables/dns", "control serves its first tables", |_| {
            true
        })
        .await;
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Everything control printed so far, for assertion messages.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(6000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        format!("--- {} ---\n{}", self.log.display(), &text[start..])
    }

    fn sighup(&self) {
        let pid = self.proc.0.as_ref().unwrap().id();
        kill(Pid::from_raw(pid as i32), Signal::SIGHUP).unwrap();
    }

    /// Asserts that control has not exited.
    fn assert_running(&mut self) {
        let status = self.proc.0.as_mut().unwrap().try_wait().unwrap();
        assert!(
            status.is_none(),
            "control exited: {status:?}\n{}",
            self.log()
        );
    }

    /// `GET path` with `token`.
    async fn get(&self, path: &str, token: &str) -> (u16, String) {
        get(&format!("{}{path}", self.url), token).await
    }

    /// Polls `path` (with the API token) until its JSON satisfies `ready`.
    async fn wait_json(&self, path: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (status, body) = get(&format!("{}{path}", self.url), API_TOKEN).await;
            let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if status == 200 && ready(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {path} never got there; last answer {status}:\n{body}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `/metrics` until `ocean_reloads_total{daemon="control",result}` is `n`.
    async fn wait_reloads(&self, result: &str, n: u64) {
        let deadline = Instant::now() + DEADLINE;
        let needle = format!("result=\"{result}\"");
        loop {
            let text = ocean_tests::metrics::scrape(self.addr).await.unwrap();
            let series = ocean_tests::metrics::series(
                &text,
                "ocean_reloads_total",
                &["daemon=\"control\"", &needle],
            );
            let value = series
                .first()
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok());
            if value == Some(n as f64) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ocean_reloads_total{{daemon=\"control\",{needle}}} never reached {n}: {series:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(self) {
        terminate(self.proc);
    }
}

/// Writes `body` to `dir/name` the way an operator's tool would: a new file renamed over
/// the old one, so control never reads half of it.
fn write(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

fn client() -> reqwest::Client {
    // reqwest is built without a bundled crypto provider; ocean installs ring.
    ocean_core::http::init_tls();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// One `GET url` with a bearer token; 0 when no answer came.
async fn get(url: &str, token: &str) -> (u16, String) {
    match client().get(url).bearer_auth(token).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Marathon's JSON for `id` with `labels`, running one task per `(host, port)`.
fn marathon_app(id: &str, labels: Value, service_port: u16, tasks: &[(&str, u16)]) -> Value {
    let mut a = app(id, labels, service_port);
    a["tasks"] = tasks
        .iter()
        .enumerate()
        .map(|(i, (host, port))| task(id, i as u32, host, &[*port]))
        .collect();
    a["instances"] = json!(tasks.len());
    a["tasksRunning"] = json!(tasks.len());
    a
}

/// Clients polling `/v1/tables/dns` and `/v1/problems` in a loop until stopped, counting
/// answers and failures (anything but a 200).
struct Pollers {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pollers {
    fn start(base: &str, clients: usize) -> Pollers {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                let base = base.to_string();
                tokio::spawn(async move {
                    let client = client();
                    while !stop.load(Ordering::SeqCst) {
                        for path in ["/v1/tables/dns", "/v1/problems"] {
                            let r = client
                                .get(format!("{base}{path}"))
                                .bearer_auth(API_TOKEN)
                                .send()
                                .await;
                            match r {
                                Ok(r) if r.status() == 200 => match r.bytes().await {
                                    Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                                    Err(e) => {
                                        failures.lock().unwrap().push(format!("{path}: {e}"));
                                        0
                                    }
                                },
                                Ok(r) => {
                                    failures
                                        .lock()
                                        .unwrap()
                                        .push(format!("{path}: {}", r.status()));
                                    0
                                }
                                Err(e) => {
                                    failures.lock().unwrap().push(format!("{path}: {e}"));
                                    0
                                }
                            };
                        }
                    }
                })
            })
            .collect();
        Pollers {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    fn answered(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Waits until the clients have had `more` answers beyond what they had.
    async fn wait_more(&self, more: usize) {
        let target = self.answered() + more;
        let deadline = Instant::now() + DEADLINE;
        while self.answered() < target {
            assert!(
                Instant::now() < deadline,
                "the clients stopped getting answers"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the clients; returns how many answers they had and every failure.
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::SeqCst), failures)
    }
}

/// The problems `/v1/problems` has for `app` about `table`.
pub(super) fn problems_of(problems: &Value, app: &str, table: &str) -> Vec<String> {
    problems["problems"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p["app"] == app && p["table"] == table)
                .map(|p| p["message"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The Redis cluster `sessions` of `/cache/redis` (text-only addresses: control never
/// connects to them) and a DNS-only app.
fn redis_apps() -> Vec<Value> {
    vec![
        marathon_app(
            "/cache/redis",
            json!({"OCEAN_REDIS_CLUSTER": "sessions"}),
            10001,
            &[("127.0.0.1", 31001), ("127.0.0.1", 31002)],
        ),
        marathon_app("/web/front", json!({}), 10002, &[("127.0.0.1", 31003)]),
    ]
}

/// A rule that refuses an app's claim, added to control.toml and applied by SIGHUP while
/// clients poll: the refusal shows in `/v1/problems`, no client request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_ownership_rule_applies_on_sighup_while_clients_poll() {
    // The drop guard would hold the cluster's last good version for a while when the
    // refusal empties it; this test is about the rule.
    let toml = "domain = \"mesos\"\n[guard]\nmax_drop = 1.0\ndrop_hold = \"0s\"\n";
    let mut control = Control::start(toml, &[], redis_apps()).await;
    control
        .wait_json(
            "/v1/tables/redis",
            "/cache/redis claims the unconfigured cluster sessions",
            |t| t.to_string().contains("\"sessions\""),
        )
        .await;
    let (_, before) = control.get("/v1/problems", API_TOKEN).await;
    let before: Value = serde_json::from_str(&before).unwrap();
    assert_eq!(
        problems_of(&before, "/cache/redis", "redis"),
        Vec::<String>::new()
    );

    let pollers = Pollers::start(&control.url, 4);
    pollers.wait_more(50).await;
    // The operator gives the cluster name to another team.
    write(
        control.dir.path(),
        "control.toml",
        &format!("{toml}[redis.clusters.sessions]\napps = [\"/platform/\"]\n"),
    );
    control.sighup();
    let problems = control
        .wait_json("/v1/problems", "the new rule refuses /cache/redis", |p| {
            !problems_of(p, "/cache/redis", "redis").is_empty()
        })
        .await;
    let message = problems_of(&problems, "/cache/redis", "redis").join("\n");
    assert!(message.contains("sessions"), "{message}");
    control
        .wait_json(
            "/v1/tables/redis",
            "the refused claim leaves the table",
            |t| !t.to_string().contains("\"sessions\""),
        )
        .await;
    control.wait_reloads("ok", 1).await;
    // The clients went on being answered after the reload, and none ever failed.
    pollers.wait_more(50).await;
    let (answered, failures) = pollers.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {} client requests failed across the reload: {:?}\n{}",
        failures.len(),
        answered + failures.len(),
        &failures[..failures.len().min(10)],
        control.log()
    );
    control.assert_running();
    let log = control.log();
    assert!(
        log.contains("reload: applied") && log.contains("redis.clusters.\\\"sessions\\\""),
        "no log line naming the changed rule\n{log}"
    );
    control.stop();
}

/// `ocean_control_derives_total{dns=how}` as control's `/metrics` has it (0 when absent).
async fn derives(control: &Control, how: &str) -> u64 {
    let text = ocean_tests::metrics::scrape(control.addr).await.unwrap();
    let needle = format!("dns=\"{how}\"");
    ocean_tests::metrics::value(&text, "ocean_control_derives_total", &[&needle])
        .map_or(0, |v| v as u64)
}

/// The dns index (issue 17) across a reload: a new `[dns.views]` view is new dns settings,
/// so that sync derives the dns names whole; the task changes after it are patched on an
/// index of the new settings. A control started afterwards from the same files and
/// Marathon state, deriving whole, publishes the same dns table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_dns_view_on_sighup_is_derived_whole_and_later_changes_are_patched() {
    let toml = "domain = \"mesos\"\n";
    let control = Control::start(toml, &[], redis_apps()).await;
    let view = format!("{toml}[dns.views.lan]\nnetworks = [\"127.0.0.0/8\"]\n");
    write(control.dir.path(), "control.toml", &view);
    control.sighup();
    control
        .wait_json("/v1/tables/dns", "the new view is in the dns table", |t| {
            t["views"][0]["name"] == "lan"
        })
        .await;
    control.wait_reloads("ok", 1).await;
    assert_eq!(derives(&control, "whole").await, 2, "{}", control.log());

    // Two task changes, each an event that the next sync patches.
    let front = |hosts: &[(&'static str, u16)]| marathon_app("/web/front", json!({}), 10002, hosts);
    let final_hosts = [
        ("127.0.0.1", 31003),
        ("127.0.0.2", 31004),
        ("127.0.0.3", 31005),
    ];
    for n in 2..=3 {
        control.marathon.put_app(front(&final_hosts[..n]));
        let ip = final_hosts[n - 1].0;
        control
            .wait_json(
                "/v1/tables/dns",
                "the new task's address is published",
                |t| {
                    t["names"]["front-web.marathon.mesos."]
                        .to_string()
                        .contains(ip)
                },
            )
            .await;
    }
    let patched = derives(&control, "patched").await;
    assert!(patched >= 2, "{patched} patched derives\n{}", control.log());
    assert_eq!(derives(&control, "whole").await, 2, "{}", control.log());

    let mut apps = redis_apps();
    apps[1] = front(&final_hosts);
    let fresh = Control::start(&view, &[], apps).await;
    let etag = |c: &Control| {
        let url = format!("{}/v1/tables/dns", c.url);
        async move {
            let r = client()
                .get(url)
                .bearer_auth(API_TOKEN)
                .send()
                .await
                .unwrap();
            r.headers()["etag"].to_str().unwrap().to_string()
        }
    };
    assert_eq!(etag(&control).await, etag(&fresh).await);
    assert_eq!(derives(&fresh, "patched").await, 0);
    control.stop();
    fresh.stop();
}

/// A broken control.toml on SIGHUP: control keeps serving the tables it had, logs why, and
/// counts the reload as an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_control_toml_keeps_the_running_config() {
    let toml = "domain = \"mesos\"\n[redis.clusters.sessions]\napps = [\"/cache/\"]\n";
    let mut control = Control::start(toml, &[], redis_apps()).await;
    let redis = control
        .wait_json("/v1/tables/redis", "sessions is served", |t| {
            t.to_string().contains("\"sessions\"")
        })
        .await;
    let etag = |body: &reqwest::Response| {
        body.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let tables = ["dns", "redis", "mysql", "lvs", "memcached"];
    let mut etags = Vec::new();
    for kind in tables {
        let r = client()
            .get(format!("{}/v1/tables/{kind}", control.url))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{kind}");
        etags.push(etag(&r));
    }

    // A typo and a rule that would refuse /cache/redis: none of it may apply.
    write(
        control.dir.path(),
        "control.toml",
        "domain = \"mesos\"\n[redis.clusters.sessions]\napps = [\"/platform/\"]\nowners = [\"/x/\"]\n",
    );
    control.sighup();
    control.wait_reloads("error", 1).await;
    control.assert_running();
    let log = control.log();
    assert!(
        log.contains("reload failed") && log.contains("owners"),
        "the log does not say why the reload failed\n{log}"
    );
    // A secret file that is gone: refused as well.
    write(
        control.dir.path(),
        "control.toml",
        "domain = \"mesos\"\n[mysql.databases.\"/a/b/c\"]\nuser = \"u\"\npassword_file = \"secrets/missing\"\n",
    );
    control.sighup();
    control.wait_reloads("error", 2).await;
    // A sync on the old config still runs: the tables stay what they were.
    for (kind, before) in tables.iter().zip(&etags) {
        let r = client()
            .get(format!("{}/v1/tables/{kind}", control.url))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{kind}");
        assert_eq!(&etag(&r), before, "{kind} changed after a refused reload");
    }
    let (_, now) = control.get("/v1/tables/redis", API_TOKEN).await;
    assert_eq!(serde_json::from_str::<Value>(&now).unwrap(), redis);
    let (_, problems) = control.get("/v1/problems", API_TOKEN).await;
    let problems: Value = serde_json::from_str(&problems).unwrap();
    assert_eq!(
        problems_of(&problems, "/cache/redis", "redis"),
        Vec::<String>::new()
    );
    control.assert_running();
    control.stop();
}

/// A token file rewritten with a new token: after SIGHUP the old token is 401 and the new
/// one reads, for the unscoped `--token-file` and for a scoped `[[api.tokens]]` file alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_applies_on_sighup() {
    let toml = "[[api.tokens]]\nfile = \"secrets/dns.token\"\ntables = [\"dns\"]\n";
    let mut control = Control::start(
        toml,
        &[("secrets/dns.token", "dns-token-old\n")],
        redis_apps(),
    )
    .await;
    assert_eq!(control.get("/v1/tables/dns", "dns-token-old").await.0, 200);
    assert_eq!(control.get("/v1/tables/dns", "dns-token-new").await.0, 401);

    write(control.dir.path(), "secrets/dns.token", "dns-token-new\n");
    write(control.dir.path(), "secrets/api.token", "api-token-new\n");
    control.sighup();
    control.wait_reloads("ok", 1).await;
    assert_eq!(control.get("/v1/tables/dns", "dns-token-new").await.0, 200);
    assert_eq!(control.get("/v1/tables/dns", "dns-token-old").await.0, 401);
    // Still scoped to dns.
    assert_eq!(
        control.get("/v1/tables/redis", "dns-token-new").await.0,
        403
    );
    assert_eq!(control.get("/v1/problems", "api-token-new").await.0, 200);
    assert_eq!(control.get("/v1/problems", API_TOKEN).await.0, 401);
    let log = control.log();
    assert!(
        !log.contains("dns-token-new") && !log.contains("api-token-new"),
        "a token in the log\n{log}"
    );
    control.assert_running();
    control.stop();
}

/// The database `key` and its backend account, with `password`.
async fn prepare_mariadb(db: &MariaDb, password: &str) {
    db.exec_sql(&format!(
        "CREATE DATABASE `key`; \
         CREATE TABLE `key`.items (id INT PRIMARY KEY, name VARCHAR(64)); \
         INSERT INTO `key`.items VALUES (1, 'apple'); \
         CREATE USER 'key_rw'@'127.0.0.1' IDENTIFIED BY '{password}'; \
         GRANT ALL ON `key`.* TO 'key_rw'@'127.0.0.1'"
    ))
    .await
    .unwrap();
}

/// A loopback forwarder that connects to `target` from source address `from`: connect to
/// the returned address to reach `target` as a task at `from` would (the `mariadb` client
/// cannot choose its source address).
async fn via(from: Ipv4Addr, target: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                sock.bind(SocketAddr::from((from, 0))).unwrap();
                if let Ok(mut upstream) = sock.connect(target).await {
                    // Either side closing ends the relay; errors are the peers' business.
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    addr
}

/// A MySQL password rotated in the backend and in control's password file: after SIGHUP
/// the next mysql table carries it, and `ocean mysql-proxy` logs in to the real mariadbd
/// with it for the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_mysql_password_reaches_the_table_and_the_next_backend_login() {
    const DB: &str = "/miui/browser/key";
    const WEB_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
    let mariadb = MariaDb::start().await.unwrap();
    prepare_mariadb(&mariadb, "key-pw-old").await;
    let m = mariadb.addr();
    let m_ip = m.ip().to_string();
    let apps = vec![
        marathon_app(
            "/miui/db/key",
            json!({"OCEAN_MYSQL_DB": DB, "OCEAN_MYSQL_ROLE": "primary"}),
            10001,
            &[(m_ip.as_str(), m.port())],
        ),
        marathon_app(
            "/miui/browser/web",
            json!({"OCEAN_MYSQL_GRANTS": format!("{DB}:rw")}),
            10002,
            &[(&WEB_IP.to_string(), 31000)],
        ),
    ];
    let toml = format!(
        "[mysql.databases.\"{DB}\"]\nuser = \"key_rw\"\npassword_file = \"secrets/key.rw\"\napps = [\"/miui/db/\"]\n"
    );
    let mut control = Control::start(&toml, &[("secrets/key.rw", "key-pw-old\n")], apps).await;
    let rw_password = |t: &Value| -> Option<String> {
        t["databases"]
            .as_array()?
            .iter()
            .find(|d| d["name"] == DB)?["rw"]["password"]
            .as_str()
            .map(String::from)
    };
    control
        .wait_json("/v1/tables/mysql", "the database is served", |t| {
            rw_password(t).as_deref() == Some("key-pw-old")
        })
        .await;

    // The proxy, subscribed to control; "this host" is a documentation address.
    let proxy: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let proxy_log = control.path("mysql-proxy.log");
    let out = File::create(&proxy_log).unwrap();
    let child = Command::new(OCEAN)
        .args(["mysql-proxy", "--control", &control.url])
        .args(["--control-token-file", "secrets/api.token", "--listen"])
        .arg(proxy.to_string())
        .arg("--admin")
        .arg(admin.to_string())
        .args(["--host-ip", "192.0.2.77"])
        .current_dir(control.dir.path())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let proxy_proc = Proc(Some(child));
    let proxy_log = || std::fs::read_to_string(&proxy_log).unwrap_or_default();
    let web = via(WEB_IP, proxy).await;
    let query = || {
        mariadb_query(
            web,
            "miui/browser/web",
            "",
            Some("key"),
            "SELECT name FROM items",
        )
    };

    // Before: the job reads through the proxy, which logs in with the old password.
    let deadline = Instant::now() + DEADLINE;
    loop {
        match query().await {
            Ok(out) => {
                assert_eq!(out.trim(), "apple");
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "the job never read through the proxy: {e:#}\n{}\n{}",
                proxy_log(),
                control.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The DBA rotates the password on the server: the proxy's next login, still with the
    // old one, is refused by mariadbd.
    mariadb
        .exec_sql("ALTER USER 'key_rw'@'127.0.0.1' IDENTIFIED BY 'key-pw-new'")
        .await
        .unwrap();
    let refused = query().await;
    assert!(
        refused.is_err(),
        "the old password still logs in: {refused:?}"
    );

    // ... and in control's password file; SIGHUP.
    write(control.dir.path(), "secrets/key.rw", "key-pw-new\n");
    control.sighup();
    control
        .wait_json("/v1/tables/mysql", "the new password is served", |t| {
            rw_password(t).as_deref() == Some("key-pw-new")
        })
        .await;
    control.wait_reloads("ok", 1).await;
    // The next backend login uses it (once the proxy has the new table).
    let deadline = Instant::now() + DEADLINE;
    loop {
        match query().await {
            Ok(out) => {
                assert_eq!(out.trim(), "apple");
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "the proxy never logged in with the rotated password: {e:#}\n{}\n{}",
                proxy_log(),
                control.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = control.log();
    assert!(
        log.contains("mysql.databases.\\\"/miui/browser/key\\\" credentials")
            && !log.contains("key-pw-new"),
        "the reload log line should name the credentials, never the password\n{log}"
    );
    control.assert_running();
    terminate(proxy_proc);
    control.stop();
}

/// `ocean up` runs control in-process from up.toml: its SIGHUP re-reads the control.toml
/// that up.toml names, as `ocean control` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocean_up_rereads_its_control_toml_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let apps = json!({"apps": [marathon_app(
        "/miui/db/key",
        json!({"OCEAN_MYSQL_DB": "/miui/browser/key", "OCEAN_MYSQL_ROLE": "primary"}),
        10001,
        &[("127.0.0.1", 3306)],
    )]});
    write(dir.path(), "apps.json", &apps.to_string());
    write(dir.path(), "control.toml", "domain = \"mesos\"\n");
    write(
        dir.path(),
        "up.toml",
        "[control]\nlisten = \"127.0.0.1:0\"\napps_file = \"apps.json\"\nconfig = \"control.toml\"\n",
    );
    let up = dir.path().join("up.toml");
    let (mut proc, url, _) = super::start_up(&["up", "--config", up.to_str().unwrap()]);
    let mysql_names = |body: &str| -> Vec<String> {
        serde_json::from_str::<Value>(body).unwrap_or(Value::Null)["databases"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|d| d["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Without credentials in control.toml the database is not served.
    let (status, body) = get(&format!("{url}/v1/tables/mysql"), API_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(mysql_names(&body), Vec::<String>::new());

    write(
        dir.path(),
        "control.toml",
        "domain = \"mesos\"\n[mysql.databases.\"/miui/browser/key\"]\nuser = \"key_rw\"\npassword = \"pw\"\napps = [\"/miui/db/\"]\n",
    );
    let pid = proc.0.as_ref().unwrap().id();
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = get(&format!("{url}/v1/tables/mysql"), API_TOKEN).await;
        if status == 200 && mysql_names(&body) == ["/miui/browser/key"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ocean up never served the database its control.toml gained: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = proc.0.as_mut().unwrap().try_wait().unwrap();
    assert!(status.is_none(), "ocean up exited: {status:?}");
    terminate(proc);
}

/// Control's own certificate (`--tls-cert`, `--tls-key`) is re-read on SIGHUP: new TLS
/// clients get the new one while pollers of `/healthz` over HTTPS see no error through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_serves_a_new_certificate_after_sighup_while_clients_poll() {
    use super::reload::{leaf_of, tls_client, tls_handshake};
    use std::io::{Read, Write};

    let marathon = FakeMarathon::start().await.unwrap();
    for a in redis_apps() {
        marathon.put_app(a);
    }
    let (old, new) = (
        ocean_tests::pki::Pki::generate().unwrap(),
        ocean_tests::pki::Pki::generate().unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(&old.cert, &cert).unwrap();
    std::fs::copy(&old.key, &key).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let log = dir.path().join("control.log");
    let out = File::create(&log).unwrap();
    let child = Command::new(OCEAN)
        .args(["control", "--marathon"])
        .arg(marathon.url().to_string())
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut proc = Proc(Some(child));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let tls = tls_client(&[&old.ca, &new.ca]);
    // One HTTPS GET /healthz on a new connection: the certificate served and the status.
    let healthz = {
        let tls = tls.clone();
        move || -> Result<(rustls::pki_types::CertificateDer<'static>, String), String> {
            let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
            tcp.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            let (mut s, leaf) = tls_handshake(&tls, tcp)?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let mut reply = Vec::new();
            // The server may end TLS without close_notify after the body: keep what came.
            let _ = s.read_to_end(&mut reply);
            let status = String::from_utf8_lossy(&reply)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            Ok((leaf, status))
        }
    };
    let t = Instant::now();
    let first = loop {
        match tokio::task::spawn_blocking(healthz.clone()).await.unwrap() {
            Ok((leaf, status)) if status.starts_with("HTTP/1.1 200") => break leaf,
            other => assert!(
                t.elapsed() < DEADLINE,
                "control never served /healthz over TLS: {other:?}\n{}",
                log_text()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(first, leaf_of(&old.cert));

    let stop = Arc::new(AtomicBool::new(false));
    let pollers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, healthz) = (stop.clone(), healthz.clone());
            std::thread::spawn(move || {
                let (mut ok, mut errors) = (0u64, Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    match healthz() {
                        Ok((_, status)) if status.starts_with("HTTP/1.1 200") => ok += 1,
                        other => errors.push(format!("{other:?}")),
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::copy(&new.cert, &cert).unwrap();
    std::fs::copy(&new.key, &key).unwrap();
    kill(
        Pid::from_raw(proc.0.as_ref().unwrap().id() as i32),
        Signal::SIGHUP,
    )
    .unwrap();
    let t = Instant::now();
    loop {
        let (leaf, _) = tokio::task::spawn_blocking(healthz.clone())
            .await
            .unwrap()
            .unwrap();
        if leaf == leaf_of(&new.cert) {
            break;
        }
        assert!(
            t.elapsed() < DEADLINE,
            "still the old certificate after SIGHUP\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for p in pollers {
        let (ok, errors) = p.join().unwrap();
        assert!(ok > 0, "a poller got no answer");
        assert!(
            errors.is_empty(),
            "HTTPS pollers failed across the reload: {errors:?}\n{}",
            log_text()
        );
    }
    assert!(
        proc.0.as_mut().unwrap().try_wait().unwrap().is_none(),
        "SIGHUP stopped control\n{}",
        log_text()
    );
    terminate(proc);
}
