//! Smoke tests of the built `ocean` binary, as a new user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const OCEAN: &str = env!("CARGO_BIN_EXE_ocean");

mod table_service;

mod drain;

mod ownership;

mod reload;

mod status;

mod reload_control;

mod views;

mod nutcracker;

/// The mysql table of the binary tests' mysql-proxy: `/dept/shop/main` on `primary`, logged
/// in to as `user`, and job `shop/web` on this host (`--host-ip 192.0.2.77`), no password.
fn mysql_table(primary: std::net::SocketAddr, user: &str, password: &str) -> String {
    serde_json::json!({
        "databases": [{
            "name": "/dept/shop/main",
            "primary": primary.to_string(),
            "replicas": [],
            "rw": {"user": user, "password": password},
            "schema": "shop",
        }],
        "jobs": [{
            "name": "shop/web",
            "ips": ["192.0.2.77"],
            "grants": [{"database": "/dept/shop/main", "access": "rw"}],
        }],
    })
    .to_string()
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(OCEAN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn help_lists_subcommands_and_documents_every_flag() {
    let (ok, text) = run(&["--help"]);
    assert!(ok, "{text}");
    for sub in [
        "control",
        "dns",
        "redis-router",
        "memcached-router",
        "mysql-proxy",
        "lvs-sync",
        "up",
    ] {
        assert!(text.contains(sub), "--help does not list {sub}:\n{text}");
    }
    for (sub, flags) in [
        (
            "redis-router",
            &[
                "--listen",
                "--seed",
                "--control",
                "--control-probe-interval",
                "--table-file",
                "--bind",
            ][..],
        ),
        (
            "memcached-router",
            &[
                "--listen",
                "--pool",
                "--hash",
                "--tko-after",
                "--table-file",
            ][..],
        ),
        (
            "mysql-proxy",
            &[
                "--listen",
                "--host-ip",
                "--tls-cert",
                "--drain",
                "--table-file",
            ][..],
        ),
        (
            "lvs-sync",
            &[
                "--backend",
                "--vip",
                "--state-file",
                "--drain",
                "--once",
                "--max-delete",
            ][..],
        ),
    ] {
        let (ok, text) = run(&[sub, "--help"]);
        assert!(ok, "{sub} --help: {text}");
        for flag in flags {
            assert!(
                text.contains(flag),
                "{sub} --help does not document {flag}:\n{text}"
            );
        }
    }
    let (ok, text) = run(&["control", "--help"]);
    assert!(ok);
    for flag in [
        "--marathon",
        "--apps-file",
        "--config",
        "--listen",
        "--resync",
        "--poll-while-down",
        "--debounce",
        "--marathon-timeout",
        "--token-file",
        "--max-drop",
        "--drop-hold",
        "--domain",
        "--delta-history",
        "--max-lag",
    ] {
        assert!(
            text.contains(flag),
            "control --help does not document {flag}:\n{text}"
        );
    }
}

#[test]
fn bad_config_exits_non_zero_naming_the_problem() {
    let (ok, text) = run(&["control"]);
    assert!(!ok);
    assert!(
        text.contains("--marathon URL or --apps-file FILE"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("control.toml");
    std::fs::write(&cfg, "[guard]\nmax_drop = 2.0\n").unwrap();
    let (ok, text) = run(&[
        "control",
        "--apps-file",
        "x.json",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(text.contains("guard.max_drop"), "{text}");
}

/// A child process that is killed if the test fails before it is terminated.
struct Proc(Option<Child>);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Everything `ocean up` printed after its banner line for control.
type Stdout = Arc<Mutex<String>>;

/// Waits until `ocean up`'s stdout contains `needle`.
fn wait_stdout(out: &Stdout, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !out.lock().unwrap().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "ocean up never printed {needle:?}; it printed:\n{}",
            out.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `ocean up` and returns the child, control's address from its banner, and the
/// rest of its stdout as it arrives.
fn start_up(args: &[&str]) -> (Proc, String, Stdout) {
    let mut child = Command::new(OCEAN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no banner from ocean up");
        let Some(Ok(line)) = lines.next() else {
            let status = child.wait().unwrap();
            panic!("ocean up exited early: {status}");
        };
        if let Some(rest) = line.trim().strip_prefix("control") {
            let url = rest.split_whitespace().next().unwrap().to_string();
            // Keep draining stdout so the child never blocks on a full pipe.
            let out = Stdout::default();
            let sink = out.clone();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
            return (Proc(Some(child)), url, out);
        }
    }
}

/// `dig +short` for an A record, or nothing while the server does not answer yet.
pub(crate) fn dig_a(port: u16, name: &str) -> Vec<String> {
    let dig = ocean_tests::servers::find_binary("dig", "bind9-dnsutils").unwrap();
    let out = Command::new(dig)
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+short",
            "+time=1",
            "+tries=1",
            name,
            "A",
        ])
        .output()
        .unwrap();
    let mut ips: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(';'))
        .map(str::to_string)
        .collect();
    ips.sort();
    ips
}

fn get(url: &str) -> (u16, String) {
    get_with_token(url, None)
}

/// `GET url` with an optional bearer token, retrying while nothing answers or it is 503.
fn get_with_token(url: &str, token: Option<&str>) -> (u16, String) {
    // reqwest is built without a bundled crypto provider; ocean installs ring.
    ocean_core::http::init_tls();
    let client = reqwest::Client::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut req = client.get(url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            match req.send().await {
                Ok(r) if r.status() != 503 => {
                    return (r.status().as_u16(), r.text().await.unwrap())
                }
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Ok(r) => return (r.status().as_u16(), r.text().await.unwrap()),
                Err(e) => panic!("{url}: {e}"),
            }
        }
    })
}

fn terminate(mut proc: Proc) {
    let mut child = proc.0.take().unwrap();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "ocean exited with {status} after SIGTERM");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ocean did not exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ocean_up_serves_the_bundled_example_and_stops_on_sigterm() {
    // The README's first command, exactly: `ocean up` with no arguments (port 7070).
    let (child, url, stdout) = start_up(&["up"]);
    assert_eq!(url, "http://127.0.0.1:7070");
    let (status, body) = get(&format!("{url}/v1/tables/dns"));
    assert_eq!(status, 200, "{body}");
    let dns: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dns["domain"], "mesos");
    // An app in nested groups of the example, under its Mesos-DNS name.
    assert!(
        dns["names"]["web-browser-miui.marathon.mesos."]["a"].is_array(),
        "{}",
        &body[..500.min(body.len())]
    );
    let (_, redis) = get(&format!("{url}/v1/tables/redis"));
    assert!(redis.contains("\"sessions\""), "{redis}");
    let (_, problems) = get(&format!("{url}/v1/problems"));
    assert!(problems.contains("OCEAN_PORT=\\\"99999\\\""), "{problems}");
    // The README's dig line: ocean dns answers the example's names once it has loaded the
    // table control just served (its subscriber may still be fetching it).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ips = dig_a(8053, "web-browser-miui.marathon.mesos");
        if ips.len() == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dig answered {ips:?}, not 4 addresses"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // lvs-sync in dry-run prints the plan for the example's virtual services.
    wait_stdout(&stdout, "ipvsadm -A -t 10.10.0.1:80 -s wrr");
    wait_stdout(
        &stdout,
        "ipvsadm -a -t 10.10.0.3:80 -r 10.0.1.12:31392 -m -w 1",
    );
    // The MySQL proxy answers as MySQL does: this host is not a task of browser-web.
    let out = Command::new("mariadb")
        .args([
            "--protocol=tcp",
            "-h",
            "127.0.0.1",
            "-P",
            "3307",
            "-u",
            "browser-web",
            "key",
            "-e",
            "select 1",
        ])
        .output()
        .expect("mariadb: install the Debian package mariadb-client");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("ERROR 1045") && err.contains("Access denied for user 'browser-web'"),
        "{err}"
    );
    terminate(child);
}

#[test]
fn ocean_up_with_a_config_file() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("up.toml");
    std::fs::write(
        &up,
        format!("[control]\nlisten = \"127.0.0.1:0\"\napps_file = \"{examples}/marathon-apps.json\"\nconfig = \"{examples}/control.toml\"\n"),
    )
    .unwrap();
    let (child, url, _) = start_up(&["up", "--config", up.to_str().unwrap()]);
    let (status, body) = get(&format!("{url}/v1/tables/mysql"));
    assert_eq!(status, 200);
    let mysql: serde_json::Value = serde_json::from_str(&body).unwrap();
    let schemas: Vec<&str> = mysql["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["schema"].as_str().unwrap())
        .collect();
    assert_eq!(schemas, vec!["key", "orders"]);
    terminate(child);
}

/// Marathon JSON in a file -> control -> the routers `ocean up` runs -> real memcached and
/// a real Redis Cluster: the whole chain a new user sets up, on loopback.
#[tokio::test(flavor = "multi_thread")]
async fn ocean_up_routes_to_real_backends_from_marathon_json() {
    use ocean_tests::fake_marathon::{app, task};
    use ocean_tests::servers::{free_port, Memcached, RedisCluster, RespClient};

    let mc = Memcached::start().await.unwrap();
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    let mc_port = free_port().unwrap();
    let redis_port = free_port().unwrap();

    let mut memcached = app(
        "/cache/memcached",
        serde_json::json!({"OCEAN_MEMCACHED_POOL": "demo", "OCEAN_MEMCACHED_REPLICA": "a"}),
        mc_port,
    );
    memcached["tasks"] = serde_json::json!([task(
        "/cache/memcached",
        1,
        &mc.addr().ip().to_string(),
        &[mc.addr().port()]
    )]);
    let mut redis = app(
        "/cache/redis",
        serde_json::json!({"OCEAN_REDIS_CLUSTER": "demo"}),
        redis_port,
    );
    redis["tasks"] = serde_json::Value::Array(
        cluster
            .addrs()
            .iter()
            .enumerate()
            .map(|(i, a)| task("/cache/redis", i as u32, &a.ip().to_string(), &[a.port()]))
            .collect(),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("apps.json"),
        serde_json::json!({"apps": [memcached, redis]}).to_string(),
    )
    .unwrap();
    let up = dir.path().join("up.toml");
    std::fs::write(
        &up,
        "[control]\nlisten = \"127.0.0.1:0\"\napps_file = \"apps.json\"\n\n[redis_router]\n\n[memcached_router]\n",
    )
    .unwrap();
    let (child, _url, _) = start_up(&["up", "--config", up.to_str().unwrap()]);

    // memcached: through the router's port for pool `demo`, found on the real server.
    let mut conn = connect_retry(mc_port).await;
    let reply = memcached_exchange(&mut conn, b"set up-key 0 0 5\r\nhello\r\n").await;
    assert_eq!(reply, "STORED\r\n");
    let mut direct = tokio::net::TcpStream::connect(mc.addr()).await.unwrap();
    let reply = memcached_exchange(&mut direct, b"get up-key\r\n").await;
    assert_eq!(reply, "VALUE up-key 0 5\r\nhello\r\nEND\r\n");

    // Redis: keys of all three masters through the one port.
    drop(connect_retry(redis_port).await);
    let mut client = RespClient::connect(std::net::SocketAddr::from(([127, 0, 0, 1], redis_port)))
        .await
        .unwrap();
    for i in 0..30 {
        let key = format!("up-key-{i}");
        assert!(client
            .command(&["SET", key.as_str(), "v"])
            .await
            .unwrap()
            .is_ok());
        let got = client.command(&["GET", key.as_str()]).await.unwrap();
        assert_eq!(got.as_bytes(), Some(&b"v"[..]), "{key}");
    }
    // Each master holds its share: the router sent every key to its slot's owner.
    for master in cluster.master_addrs() {
        let n = cluster
            .node(master)
            .unwrap()
            .cmd(&["DBSIZE"])
            .await
            .unwrap();
        assert!(n.as_int().unwrap() > 0, "master {master} got no keys");
    }
    terminate(child);
}

async fn connect_retry(port: u16) -> tokio::net::TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => return s,
            Err(e) => {
                assert!(Instant::now() < deadline, "port {port} never opened: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Sends one memcached request and reads until its reply is complete.
async fn memcached_exchange(conn: &mut tokio::net::TcpStream, req: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(req).await.unwrap();
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if text.ends_with("STORED\r\n") || text.ends_with("END\r\n") || text.contains("ERROR") {
            return text;
        }
        assert!(Instant::now() < deadline, "incomplete reply: {text:?}");
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed after {text:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}
