//! Issue 12, must-show 1: each attack a tenant can make with nothing but Marathon labels,
//! run end to end with the parts users run.
//!
//! A fake Marathon serves one platform with several tenants; `ocean control` (with a
//! control.toml written here: credentials and ownership rules) derives the tables;
//! `ocean mysql-proxy`, `ocean redis-router` and `ocean lvs-sync --backend dry-run` are
//! separate processes subscribed to control; the backends are a real mariadbd and a real
//! Redis Cluster that requires a password. Tenants are told apart by their task IPs, which
//! are loopback addresses (127.0.0.2, 127.0.0.3, ...): the `mariadb` client cannot choose
//! its source address, so it connects through a small forwarder that does.
//!
//! The attacks (issue 12): a job granting itself another team's database, an app declaring
//! itself a replica of it, an app joining another team's Redis cluster as a seed, an app
//! taking another app's VIP (and the director's port 22), and an `ro` grant on a database
//! without `ro` credentials. Each must fail against the real servers and be a line in
//! control's `/v1/problems` naming the app, the label and the rule, while the owners keep
//! working.
//!
//! Only loopback addresses are connected to: the VIPs and real servers of the LVS part
//! (10.x) exist only as text in the table and in the dry-run printout.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ocean_tests::fake_marathon::{app, task, FakeMarathon};
use ocean_tests::servers::{find_binary, free_port, MariaDb, RedisCluster, RespClient};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{connect_retry, get_with_token, terminate, Proc, OCEAN};

/// The password the Redis Cluster requires and the router authenticates with.
const REDIS_PASSWORD: &str = "sessions-backend-secret";

/// Control's API token, given to every proxy in a file.
const API_TOKEN: &str = "api-token-secret-5d1c";

/// Every secret the run uses: none may appear in any daemon's log (issue 12).
const SECRETS: &[&str] = &[
    "key-rw-secret",
    "key-ro-secret",
    "rank-rw-secret",
    REDIS_PASSWORD,
    API_TOKEN,
];

/// The real database two tenants fight over, owned by `/miui/`.
const KEY_DB: &str = "/miui/browser/key";
/// A database configured without `ro_user`.
const RANK_DB: &str = "/miui/feeds/rank";

/// Task IPs, one per client tenant.
const WEB_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const GRANTEE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const REPORT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
const READER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
const WRITER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

/// How long anything this test waits for may take.
const DEADLINE: Duration = Duration::from_secs(20);

/// control.toml: backend credentials, and the ownership rules the attacks run into.
/// `/miui/browser/key` names its declaring apps and keeps the default `allow` (jobs under
/// `/miui/`, rw); `/miui/feeds/rank` has no `ro_user`.
const CONTROL_TOML: &str = r#"
[mysql.databases."/miui/browser/key"]
user = "key_rw"
password_file = "secrets/key.rw"
ro_user = "key_ro"
ro_password_file = "secrets/key.ro"
apps = ["/miui/db/"]

[mysql.databases."/miui/feeds/rank"]
user = "rank_rw"
password_file = "secrets/rank.rw"

[mysql.jobs."miui/browser/web"]
apps = ["/miui/browser/"]

[redis.clusters.sessions]
apps = ["/cache/"]

[lvs]
vips = [{ cidr = "10.99.0.0/24", apps = ["/lb/"] }]
"#;

/// An `ocean` subcommand started by the test, its stdout and stderr in one file.
struct Daemon {
    proc: Proc,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, name: &str, args: &[String], env: &[(&str, &str)]) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap();
        let child = Command::new(OCEAN)
            .args(args)
            .envs(env.iter().copied())
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

    /// Everything the daemon printed so far, for assertion messages.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(6000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        format!("--- {} ---\n{}", self.log.display(), &text[start..])
    }

    /// SIGTERM; asserts a clean exit (0) within 10 s.
    fn stop(self) {
        terminate(self.proc);
    }
}

/// `GET url` (retrying while the server is not up or answers 503), off the runtime.
async fn fetch(url: &str) -> (u16, String) {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || get_with_token(&url, Some(API_TOKEN)))
        .await
        .unwrap()
}

/// Polls `url` until its JSON satisfies `ready`; panics with `what` and `logs` after
/// [`DEADLINE`].
async fn wait_json(url: &str, what: &str, ready: impl Fn(&Value) -> bool, logs: &Daemon) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = fetch(url).await;
        let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status == 200 && ready(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {url} never got there; last answer {status}:\n{body}\n{}",
            logs.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls an admin `/healthz` until the daemon serves (200).
async fn wait_healthy(admin: SocketAddr, d: &Daemon) {
    let (status, body) = fetch(&format!("http://{admin}/healthz")).await;
    assert_eq!(status, 200, "{body}\n{}", d.log());
}

/// The messages `/v1/problems` has for `app`.
fn messages(problems: &Value, app: &str) -> Vec<String> {
    problems["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["app"] == app)
        .map(|p| {
            format!(
                "[{}] {}",
                p["table"].as_str().unwrap_or("-"),
                p["message"].as_str().unwrap()
            )
        })
        .collect()
}

/// Asserts that `/v1/problems` has a line for `app` about `table` containing every one of
/// `parts`.
fn assert_problem(problems: &Value, attack: &str, app: &str, table: &str, parts: &[&str]) {
    let found = problems["problems"].as_array().unwrap().iter().any(|p| {
        p["app"] == app
            && p["table"] == table
            && parts
                .iter()
                .all(|s| p["message"].as_str().unwrap_or("").contains(s))
    });
    assert!(
        found,
        "[{attack}] /v1/problems has no {table} line for {app} containing {parts:?}; it has:\n{}",
        serde_json::to_string_pretty(problems).unwrap()
    );
}

/// A TCP listener on loopback that records every connection and every byte it is sent,
/// and answers each connection with `greeting` (if any): a fake backend a label points at.
struct Recorder {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    async fn start(greeting: Option<Vec<u8>>) -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, greeting)
    }

    /// Like [`start`](Self::start), on an address that sorts before every one of `addrs`,
    /// so that a list of nodes sorted by address (as tables are) would name it first.
    async fn start_before(greeting: Option<Vec<u8>>, addrs: &[SocketAddr]) -> Recorder {
        let below = addrs.iter().map(SocketAddr::port).min().unwrap();
        for port in (1025..below).rev() {
            if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                return Self::serve(l, greeting);
            }
        }
        panic!("no free port on 127.0.0.1 below {below}");
    }

    fn serve(listener: tokio::net::TcpListener, greeting: Option<Vec<u8>>) -> Recorder {
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (c, b) = (conns.clone(), bytes.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (b, greeting) = (b.clone(), greeting.clone());
                tokio::spawn(async move {
                    if let Some(g) = greeting {
                        // A peer that hangs up at once is recorded all the same.
                        let _ = sock.write_all(&g).await;
                    }
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = sock.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        b.lock().unwrap().extend_from_slice(&buf[..n]);
                        // Look alive, so that a client that got here would go on talking.
                        let _ = sock.write_all(b"+OK\r\n").await;
                    }
                });
            }
        });
        Recorder { addr, conns, bytes }
    }

    fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    fn received(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }
}

/// A MySQL HandshakeV10 greeting (mysql_native_password), so that a proxy that connected
/// to the fake replica would go on and send it a backend login.
fn mysql_greeting() -> Vec<u8> {
    let mut p = vec![10u8];
    p.extend_from_slice(b"8.0.36-fake-replica\0");
    p.extend_from_slice(&7u32.to_le_bytes());
    p.extend_from_slice(b"abcdefgh\0");
    p.extend_from_slice(&0xf7ffu16.to_le_bytes());
    p.push(0x21);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&0x81ffu16.to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0u8; 10]);
    p.extend_from_slice(b"ijklmnopqrst\0");
    p.extend_from_slice(b"mysql_native_password\0");
    let len = p.len() as u32;
    let mut packet = len.to_le_bytes()[..3].to_vec();
    packet.push(0);
    packet.extend_from_slice(&p);
    packet
}

/// A loopback forwarder that connects to `target` from source address `from`: connect to
/// the returned address to reach `target` as a task at `from` would.
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

/// What the real `mariadb` client did: its exit code, stdout and stderr.
struct ClientRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the `mariadb` client against the proxy as `user` with default schema `db`, from
/// task IP `from`.
async fn mariadb(from: Ipv4Addr, proxy: SocketAddr, user: &str, db: &str, sql: &str) -> ClientRun {
    let client = find_binary("mariadb", "mariadb-client").unwrap();
    let addr = via(from, proxy).await;
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(client)
            .args([
                "--no-defaults",
                "--protocol=tcp",
                "--host=127.0.0.1",
                &format!("--port={}", addr.port()),
                &format!("--user={user}"),
                &format!("--database={db}"),
                "--skip-ssl",
                "--connect-timeout=10",
                "-N",
                "-B",
                "-e",
                sql,
            ])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("mariadb client timed out")
    .unwrap();
    ClientRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).trim_end().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
    }
}

/// Runs `redis-cli` against the router port.
async fn redis_cli(port: u16, args: &[&str]) -> (Option<i32>, String) {
    let cli = find_binary("redis-cli", "redis-tools").unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(cli)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("redis-cli timed out")
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
            + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Marathon's JSON for `id` with `labels`, running `tasks` (host, port) on loopback or
/// text-only addresses.
fn marathon_app(id: &str, labels: Value, service_port: u16, tasks: &[(String, u16)]) -> Value {
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

fn on(ip: Ipv4Addr) -> Vec<(String, u16)> {
    vec![(ip.to_string(), 31000)]
}

/// Creates the schemas and the backend accounts control.toml names.
async fn prepare_mariadb(db: &MariaDb) {
    db.exec_sql(
        "CREATE DATABASE `key`; \
         CREATE TABLE `key`.items (id INT PRIMARY KEY, name VARCHAR(64)); \
         INSERT INTO `key`.items VALUES (1, 'apple'), (2, 'pear'); \
         CREATE DATABASE `rank`; \
         CREATE TABLE `rank`.scores (id INT PRIMARY KEY, score INT); \
         INSERT INTO `rank`.scores VALUES (1, 42); \
         CREATE USER 'key_rw'@'127.0.0.1' IDENTIFIED BY 'key-rw-secret'; \
         GRANT ALL ON `key`.* TO 'key_rw'@'127.0.0.1'; \
         CREATE USER 'key_ro'@'127.0.0.1' IDENTIFIED BY 'key-ro-secret'; \
         GRANT SELECT ON `key`.* TO 'key_ro'@'127.0.0.1'; \
         CREATE USER 'rank_rw'@'127.0.0.1' IDENTIFIED BY 'rank-rw-secret'; \
         GRANT ALL ON `rank`.* TO 'rank_rw'@'127.0.0.1'",
    )
    .await
    .unwrap();
}

/// Makes every node require [`REDIS_PASSWORD`] (and replicas authenticate with it), after
/// the harness has seen the cluster converge without one.
async fn require_redis_password(cluster: &RedisCluster) {
    for addr in cluster.addrs() {
        let mut c = RespClient::connect(addr).await.unwrap();
        for (k, v) in [
            ("masterauth", REDIS_PASSWORD),
            ("requirepass", REDIS_PASSWORD),
        ] {
            let r = c.command(&["CONFIG", "SET", k, v]).await.unwrap();
            assert!(r.is_ok(), "CONFIG SET {k} on {addr}: {r:?}");
        }
        let r = ocean_tests::servers::resp::command(addr, &["PING"])
            .await
            .unwrap();
        assert!(
            r.is_error() && format!("{r:?}").contains("NOAUTH"),
            "{addr} still answers without AUTH: {r:?}"
        );
    }
}

/// Everything the attacks run against.
struct Platform {
    dir: tempfile::TempDir,
    control_url: String,
    control: Daemon,
    mysql_proxy: Daemon,
    mysql_addr: SocketAddr,
    redis_router: Daemon,
    redis_port: u16,
    mariadb: MariaDb,
    cluster: RedisCluster,
    fake_replica: Recorder,
    fake_seed: Recorder,
    _marathon: FakeMarathon,
}

async fn start_platform() -> Platform {
    let (mariadb, cluster) = tokio::join!(MariaDb::start(), RedisCluster::start(3, 0));
    let (mariadb, cluster) = (mariadb.unwrap(), cluster.unwrap());
    prepare_mariadb(&mariadb).await;
    require_redis_password(&cluster).await;
    let fake_replica = Recorder::start(Some(mysql_greeting())).await;
    // First in the sorted node list: a router that took it for a node would ask it first.
    let fake_seed = Recorder::start_before(None, &cluster.addrs()).await;

    let m = mariadb.addr();
    let db_task = vec![(m.ip().to_string(), m.port())];
    let redis_port = free_port().unwrap();
    let node_tasks: Vec<(String, u16)> = cluster
        .addrs()
        .iter()
        .map(|a| (a.ip().to_string(), a.port()))
        .collect();
    let fake = |r: &Recorder| vec![(r.addr.ip().to_string(), r.addr.port())];
    let text_only = |ips: &[&str]| -> Vec<(String, u16)> {
        ips.iter().map(|ip| (ip.to_string(), 31080)).collect()
    };
    let apps = [
        // MySQL: the owners' servers, the thief's fake replica, and the client jobs.
        marathon_app(
            "/miui/db/key",
            json!({"OCEAN_MYSQL_DB": KEY_DB, "OCEAN_MYSQL_ROLE": "primary"}),
            10001,
            &db_task,
        ),
        marathon_app(
            "/miui/db/rank",
            json!({"OCEAN_MYSQL_DB": RANK_DB, "OCEAN_MYSQL_ROLE": "primary"}),
            10002,
            &db_task,
        ),
        marathon_app(
            "/evil/replica",
            json!({"OCEAN_MYSQL_DB": KEY_DB, "OCEAN_MYSQL_ROLE": "replica"}),
            10003,
            &fake(&fake_replica),
        ),
        marathon_app(
            "/miui/browser/web",
            json!({"OCEAN_MYSQL_GRANTS": format!("{KEY_DB}:rw")}),
            10004,
            &on(WEB_IP),
        ),
        marathon_app(
            "/miui/browser/report",
            json!({"OCEAN_MYSQL_GRANTS": format!("{KEY_DB}:ro")}),
            10005,
            &on(REPORT_IP),
        ),
        marathon_app(
            "/evil/grantee",
            json!({"OCEAN_MYSQL_GRANTS": format!("{KEY_DB}:rw")}),
            10006,
            &on(GRANTEE_IP),
        ),
        marathon_app(
            "/miui/feeds/reader",
            json!({"OCEAN_MYSQL_GRANTS": format!("{RANK_DB}:ro")}),
            10007,
            &on(READER_IP),
        ),
        marathon_app(
            "/miui/feeds/writer",
            json!({"OCEAN_MYSQL_GRANTS": format!("{RANK_DB}:rw")}),
            10008,
            &on(WRITER_IP),
        ),
        // Redis: the real nodes, and a fake node claiming the same cluster and port.
        marathon_app(
            "/cache/redis",
            json!({"OCEAN_REDIS_CLUSTER": "sessions"}),
            redis_port,
            &node_tasks,
        ),
        marathon_app(
            "/evil/seed",
            json!({"OCEAN_REDIS_CLUSTER": "sessions"}),
            redis_port,
            &fake(&fake_seed),
        ),
        // LVS: the owner of 10.99.0.1:80, and a thief with another scheduler that also
        // wants the director's ssh port.
        marathon_app(
            "/lb/web",
            json!({"OCEAN_ELB": "10.99.0.1:80/tcp", "OCEAN_ELB_SCHEDULER": "wrr"}),
            10009,
            &text_only(&["10.1.0.1", "10.1.0.2"]),
        ),
        marathon_app(
            "/evil/thief",
            json!({"OCEAN_ELB": "10.99.0.1:80/tcp,10.0.0.1:22/tcp", "OCEAN_ELB_SCHEDULER": "rr"}),
            10010,
            &text_only(&["10.66.0.1"]),
        ),
    ];
    let marathon = FakeMarathon::start().await.unwrap();
    for a in apps {
        marathon.put_app(a);
    }

    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    for (file, pw) in [
        ("key.rw", "key-rw-secret"),
        ("key.ro", "key-ro-secret"),
        ("rank.rw", "rank-rw-secret"),
        ("api.token", API_TOKEN),
    ] {
        std::fs::write(secrets.join(file), format!("{pw}\n")).unwrap();
    }
    std::fs::write(dir.path().join("control.toml"), CONTROL_TOML).unwrap();

    let control_addr = format!("127.0.0.1:{}", free_port().unwrap());
    let control_url = format!("http://{control_addr}");
    let control = Daemon::start(
        dir.path(),
        "control",
        &[
            // Debug logs: the most a daemon ever prints, checked for secrets at the end.
            "--log".into(),
            "debug".into(),
            "control".into(),
            "--token-file".into(),
            "secrets/api.token".into(),
            "--marathon".into(),
            marathon.url().to_string(),
            "--config".into(),
            "control.toml".into(),
            "--listen".into(),
            control_addr,
        ],
        &[],
    );
    // Control's first table is its last: every app is in Marathon already.
    wait_json(
        &format!("{control_url}/v1/tables/mysql"),
        "control derives the mysql table",
        |t| t["databases"].as_array().is_some_and(|d| d.len() == 2),
        &control,
    )
    .await;

    let mysql_addr: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let mysql_admin: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let mysql_proxy = Daemon::start(
        dir.path(),
        "mysql-proxy",
        &[
            "--log".into(),
            "debug".into(),
            "mysql-proxy".into(),
            "--control".into(),
            control_url.clone(),
            "--control-token-file".into(),
            "secrets/api.token".into(),
            "--listen".into(),
            mysql_addr.to_string(),
            "--admin".into(),
            mysql_admin.to_string(),
            // "This host" is a documentation address: a client at 127.0.0.1 is no task.
            "--host-ip".into(),
            "192.0.2.77".into(),
        ],
        &[],
    );
    let redis_admin: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let redis_router = Daemon::start(
        dir.path(),
        "redis-router",
        &[
            "--log".into(),
            "debug".into(),
            "redis-router".into(),
            "--control".into(),
            control_url.clone(),
            "--control-token-file".into(),
            "secrets/api.token".into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--admin".into(),
            redis_admin.to_string(),
        ],
        // The secret goes by environment, not argv.
        &[("OCEAN_REDIS_BACKEND_PASSWORD", REDIS_PASSWORD)],
    );
    wait_healthy(mysql_admin, &mysql_proxy).await;
    wait_healthy(redis_admin, &redis_router).await;
    drop(connect_retry(mysql_addr.port()).await);
    drop(connect_retry(redis_port).await);

    Platform {
        dir,
        control_url,
        control,
        mysql_proxy,
        mysql_addr,
        redis_router,
        redis_port,
        mariadb,
        cluster,
        fake_replica,
        fake_seed,
        _marathon: marathon,
    }
}

/// Every attack of issue 12 against one platform: refused end to end, reported in
/// `/v1/problems`, and the owners keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_claim_a_tenant_does_not_own_is_refused_end_to_end() {
    let p = start_platform().await;
    let problems = wait_json(
        &format!("{}/v1/problems", p.control_url),
        "control reports problems",
        |v| v["problems"].is_array(),
        &p.control,
    )
    .await;
    let (_, body) = fetch(&format!("{}/v1/tables/mysql", p.control_url)).await;
    let mysql: Value = serde_json::from_str(&body).unwrap();

    // The owners themselves are not reported: nothing they claim is refused.
    for owner in [
        "/miui/db/key",
        "/miui/db/rank",
        "/miui/browser/web",
        "/miui/browser/report",
        "/miui/feeds/writer",
        "/cache/redis",
        "/lb/web",
    ] {
        assert_eq!(
            messages(&problems, owner),
            Vec::<String>::new(),
            "owner {owner} has problems"
        );
    }

    grant_yourself(&p, &problems, &mysql).await;
    fake_replica(&p, &problems, &mysql).await;
    ro_without_ro_credentials(&p, &problems, &mysql).await;
    fake_redis_seed(&p, &problems).await;
    vip_thief(&p, &problems).await;

    // Nothing in the whole run reached the fakes.
    assert_eq!(
        p.fake_replica.connections(),
        0,
        "[fake replica] the fake MySQL listener was connected to"
    );
    assert_eq!(
        p.fake_seed.connections(),
        0,
        "[fake redis seed] the fake node was connected to"
    );

    let Platform {
        control,
        mysql_proxy,
        redis_router,
        ..
    } = p;
    let logs: Vec<PathBuf> = [&control, &mysql_proxy, &redis_router]
        .iter()
        .map(|d| d.log.clone())
        .collect();
    mysql_proxy.stop();
    redis_router.stop();
    control.stop();
    // Secrets out of logs: every daemon ran at debug level through logins, backend AUTH,
    // table fetches with the token and a drain; none printed a password or the token.
    for path in logs {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.len() > 1000,
            "{}: suspiciously short log",
            path.display()
        );
        for secret in SECRETS {
            assert!(
                !text.contains(secret),
                "[secrets] {} prints the secret {secret:?}",
                path.display()
            );
        }
    }
}

/// Attack 1: `/evil/grantee` asks for `/miui/browser/key:rw`; the database's default
/// `allow` (jobs under `/miui/`) does not cover it. The real client gets 1044 from its own
/// task IP, and 1045 when it tries the owner's job name; the owner's job reads and writes.
async fn grant_yourself(p: &Platform, problems: &Value, mysql: &Value) {
    const A: &str = "grant-yourself";
    assert_problem(
        problems,
        A,
        "/evil/grantee",
        "mysql",
        &[
            "OCEAN_MYSQL_GRANTS=/miui/browser/key:rw",
            "refused by the default rule (no `allow` in [mysql.databases.\"/miui/browser/key\"]: jobs under /miui/, rw)",
        ],
    );
    let grantee = mysql["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "evil/grantee");
    assert!(
        grantee.is_none_or(|j| j["grants"] == json!([])),
        "[{A}] the mysql table grants evil/grantee something: {grantee:?}"
    );
    let web = mysql["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "miui/browser/web")
        .unwrap_or_else(|| panic!("[{A}] no job miui/browser/web in {mysql}"));
    assert_eq!(
        web["grants"],
        json!([{"access": "rw", "database": KEY_DB}]),
        "[{A}]"
    );
    assert_eq!(web["ips"], json!([WEB_IP.to_string()]), "[{A}]");

    // The attacker, from its own task, as its own job.
    let r = mariadb(
        GRANTEE_IP,
        p.mysql_addr,
        "evil/grantee",
        "key",
        "SELECT name FROM items",
    )
    .await;
    assert_eq!(r.code, Some(1), "[{A}] the client succeeded: {}", r.stdout);
    assert!(
        r.stderr
            .contains("ERROR 1044 (42000): Access denied for user 'evil/grantee'@'127.0.0.3' to database 'key'"),
        "[{A}] {}\n{}",
        r.stderr,
        p.mysql_proxy.log()
    );
    // ... and posing as the owner's job, from its own task.
    let r = mariadb(
        GRANTEE_IP,
        p.mysql_addr,
        "miui/browser/web",
        "key",
        "SELECT 1",
    )
    .await;
    assert_eq!(r.code, Some(1), "[{A}] {}", r.stdout);
    assert!(
        r.stderr
            .contains("ERROR 1045 (28000): Access denied for user 'miui/browser/web'@'127.0.0.3'"),
        "[{A}] {}",
        r.stderr
    );

    // The owner's job, from its task: reads and writes through the rw account.
    let r = mariadb(
        WEB_IP,
        p.mysql_addr,
        "miui/browser/web",
        "key",
        "INSERT INTO items VALUES (3, 'from-web'); SELECT CURRENT_USER(), name FROM items WHERE id = 3",
    )
    .await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), "key_rw@127.0.0.1\tfrom-web"),
        "[{A}] the owner's job: {}\n{}",
        r.stderr,
        p.mysql_proxy.log()
    );
    let row = p
        .mariadb
        .exec_sql("SELECT name FROM `key`.items WHERE id = 3")
        .await
        .unwrap();
    assert_eq!(row, "from-web", "[{A}] the write did not reach mariadbd");
}

/// Attack 2: `/evil/replica` declares itself a replica of `/miui/browser/key`, whose `apps`
/// rule is `["/miui/db/"]`: absent from the table, reported, and never connected to when a
/// legitimate `ro` session runs.
async fn fake_replica(p: &Platform, problems: &Value, mysql: &Value) {
    const A: &str = "fake replica";
    assert_problem(
        problems,
        A,
        "/evil/replica",
        "mysql",
        &[
            "OCEAN_MYSQL_DB=/miui/browser/key: refused by [mysql.databases.\"/miui/browser/key\"] apps = [\"/miui/db/\"], which does not cover this app",
        ],
    );
    let key = mysql["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == KEY_DB)
        .unwrap_or_else(|| panic!("[{A}] no {KEY_DB} in {mysql}"));
    assert_eq!(key["primary"], p.mariadb.addr().to_string(), "[{A}] {key}");
    assert_eq!(
        key["replicas"],
        json!([]),
        "[{A}] the fake replica {} is in the table",
        p.fake_replica.addr
    );

    // An ro session (which would go to a replica if there were one) reaches the primary
    // through the ro account, and the fake listener sees nothing.
    let r = mariadb(
        REPORT_IP,
        p.mysql_addr,
        "miui/browser/report",
        "key",
        "SELECT CURRENT_USER(), COUNT(*) FROM items",
    )
    .await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), "key_ro@127.0.0.1\t3"),
        "[{A}] the ro session: {}\n{}",
        r.stderr,
        p.mysql_proxy.log()
    );
    assert_eq!(
        p.fake_replica.connections(),
        0,
        "[{A}] the proxy connected to the fake replica and sent {:?}",
        String::from_utf8_lossy(&p.fake_replica.received())
    );
}

/// Attack 5: `/miui/feeds/reader` is granted `/miui/feeds/rank:ro`, a database configured
/// without `ro_user`: refused (the rw account is never lent), 1044 from the real client,
/// while a rw job of the same database logs in.
async fn ro_without_ro_credentials(p: &Platform, problems: &Value, mysql: &Value) {
    const A: &str = "ro without ro credentials";
    assert_problem(
        problems,
        A,
        "/miui/feeds/reader",
        "mysql",
        &[
            "OCEAN_MYSQL_GRANTS=/miui/feeds/rank:ro",
            "refused: an ro grant needs ro credentials, and [mysql.databases.\"/miui/feeds/rank\"] has no ro_user/ro_password",
        ],
    );
    let reader = mysql["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "miui/feeds/reader");
    assert!(
        reader.is_none_or(|j| j["grants"] == json!([])),
        "[{A}] the mysql table grants miui/feeds/reader something: {reader:?}"
    );
    let r = mariadb(
        READER_IP,
        p.mysql_addr,
        "miui/feeds/reader",
        "rank",
        "SELECT score FROM scores",
    )
    .await;
    assert_eq!(r.code, Some(1), "[{A}] the client succeeded: {}", r.stdout);
    assert!(
        r.stderr.contains(
            "ERROR 1044 (42000): Access denied for user 'miui/feeds/reader'@'127.0.0.5' to database 'rank'"
        ),
        "[{A}] {}\n{}",
        r.stderr,
        p.mysql_proxy.log()
    );
    let r = mariadb(
        WRITER_IP,
        p.mysql_addr,
        "miui/feeds/writer",
        "rank",
        "SELECT CURRENT_USER(), score FROM scores",
    )
    .await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), "rank_rw@127.0.0.1\t42"),
        "[{A}] the rw job of the same database: {}",
        r.stderr
    );
}

/// Attack 3: `/evil/seed` labels itself a node of `sessions`, owned by `/cache/` in
/// control.toml: absent from the table, reported, and the fake node gets not one byte (no
/// AUTH with the backend password) while SET/GET through the router work on the real
/// cluster.
async fn fake_redis_seed(p: &Platform, problems: &Value) {
    const A: &str = "fake redis seed";
    assert_problem(
        problems,
        A,
        "/evil/seed",
        "redis",
        &["OCEAN_REDIS_CLUSTER=sessions: refused by [redis.clusters.\"sessions\"] apps = [\"/cache/\"], which does not cover this app"],
    );
    let (_, body) = fetch(&format!("{}/v1/tables/redis", p.control_url)).await;
    let redis: Value = serde_json::from_str(&body).unwrap();
    let mut nodes: Vec<String> = p.cluster.addrs().iter().map(ToString::to_string).collect();
    nodes.sort();
    assert_eq!(
        redis,
        json!({"clusters": [{"name": "sessions", "listen_port": p.redis_port, "nodes": nodes}]}),
        "[{A}] the fake node {} must not be a node",
        p.fake_seed.addr
    );

    for i in 0..10 {
        let (key, value) = (format!("session-{i}"), format!("user-{i}"));
        let (code, out) = redis_cli(p.redis_port, &["SET", &key, &value]).await;
        assert_eq!(
            (code, out.as_str()),
            (Some(0), "OK"),
            "[{A}] SET {key}\n{}",
            p.redis_router.log()
        );
        let (code, out) = redis_cli(p.redis_port, &["GET", &key]).await;
        assert_eq!(
            (code, out.as_str()),
            (Some(0), value.as_str()),
            "[{A}] GET {key}"
        );
    }
    // The keys are on the real masters, which need the password.
    let mut found = 0;
    for master in p.cluster.master_addrs() {
        let mut c = RespClient::connect(master).await.unwrap();
        assert!(c.command(&["AUTH", REDIS_PASSWORD]).await.unwrap().is_ok());
        found += c.command(&["DBSIZE"]).await.unwrap().as_int().unwrap();
    }
    assert_eq!(
        found, 10,
        "[{A}] the real cluster does not hold the 10 keys"
    );
    // Had it been taken for a node, it would have been asked first (AUTH, then the map).
    assert!(
        p.cluster.addrs().iter().all(|a| p.fake_seed.addr < *a),
        "[{A}] the fake node {} does not sort first",
        p.fake_seed.addr
    );
    let got = p.fake_seed.received();
    assert!(
        !String::from_utf8_lossy(&got).contains("AUTH"),
        "[{A}] the fake node was sent AUTH"
    );
    assert!(
        got.is_empty() && p.fake_seed.connections() == 0,
        "[{A}] the fake node got {} connections and these bytes: {:?}",
        p.fake_seed.connections(),
        String::from_utf8_lossy(&got)
    );
}

/// Attack 4: `/evil/thief` claims `/lb/web`'s VIP with another scheduler, and the
/// director's `10.0.0.1:22`: `ocean lvs-sync --backend dry-run --once`, fed by control,
/// prints the owner's service with the owner's scheduler and real servers only.
async fn vip_thief(p: &Platform, problems: &Value) {
    const A: &str = "VIP thief";
    assert_problem(
        problems,
        A,
        "/evil/thief",
        "lvs",
        &["OCEAN_ELB=10.99.0.1:80/tcp: refused by [lvs] vips { cidr = \"10.99.0.0/24\", apps = [\"/lb/\"] }, which does not cover this app"],
    );
    assert_problem(
        problems,
        A,
        "/evil/thief",
        "lvs",
        &["OCEAN_ELB=10.0.0.1:22/tcp: refused: 10.0.0.1 lies in no [lvs] vips range of control.toml"],
    );
    let control_url = p.control_url.clone();
    let dir = p.dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(OCEAN)
            .args([
                "lvs-sync",
                "--backend",
                "dry-run",
                "--once",
                "--control",
                &control_url,
                "--control-token-file",
                "secrets/api.token",
            ])
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "[{A}] lvs-sync --once: {}\n{stdout}\n{stderr}",
        out.status
    );
    let commands: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("ipvsadm"))
        .collect();
    assert_eq!(
        commands,
        vec![
            "ipvsadm -A -t 10.99.0.1:80 -s wrr",
            "ipvsadm -a -t 10.99.0.1:80 -r 10.1.0.1:80 -g -w 1",
            "ipvsadm -a -t 10.99.0.1:80 -r 10.1.0.2:80 -g -w 1",
        ],
        "[{A}] the plan; full output:\n{stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains("10.66.0.1") && !stdout.contains(":22") && !stdout.contains("-s rr"),
        "[{A}] {stdout}"
    );
}

/// The default rule for a shared name: with no `[redis.clusters.sessions]`, apps of two
/// top-level groups claiming `sessions` is a conflict reported for both, and the cluster is
/// left out (never "first wins"). Control alone, from Marathon's JSON in a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_name_claimed_across_groups_without_a_rule_is_refused_for_both() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let apps = json!({"apps": [
        marathon_app("/cache/redis", json!({"OCEAN_REDIS_CLUSTER": "sessions"}), port, &[("127.0.0.1".into(), 7000)]),
        marathon_app("/evil/seed", json!({"OCEAN_REDIS_CLUSTER": "sessions"}), port, &[("127.0.0.1".into(), 7001)]),
        marathon_app("/cache/feeds", json!({"OCEAN_REDIS_CLUSTER": "feeds"}), free_port().unwrap(), &[("127.0.0.1".into(), 7002)]),
    ]});
    std::fs::write(dir.path().join("apps.json"), apps.to_string()).unwrap();
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let url = format!("http://{addr}");
    let control = Daemon::start(
        dir.path(),
        "control",
        &[
            "control".into(),
            "--apps-file".into(),
            "apps.json".into(),
            "--listen".into(),
            addr,
        ],
        &[],
    );
    let redis = wait_json(
        &format!("{url}/v1/tables/redis"),
        "control derives the redis table",
        |t| t["clusters"].is_array(),
        &control,
    )
    .await;
    let names: Vec<&str> = redis["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["feeds"], "sessions must be left out: {redis}");
    let (_, body) = fetch(&format!("{url}/v1/problems")).await;
    let problems: Value = serde_json::from_str(&body).unwrap();
    for app in ["/cache/redis", "/evil/seed"] {
        assert_problem(
            &problems,
            "default rule",
            app,
            "redis",
            &[
                "OCEAN_REDIS_CLUSTER=sessions: conflict: claimed by apps of several top-level groups (/cache/, /evil/)",
                "name the owner with [redis.clusters.\"sessions\"] apps = [...] in control.toml",
            ],
        );
    }
    assert_eq!(messages(&problems, "/cache/feeds"), Vec::<String>::new());
    control.stop();
}
