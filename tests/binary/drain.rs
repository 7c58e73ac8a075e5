//! SIGTERM drains and systemd readiness, on the built binary (issue 13):
//! - under redis-benchmark (redis-router) and memcaslap (memcached-router), pipelining
//!   verifier clients see every request they sent before the signal answered, and the
//!   process exits 0 within `--drain-timeout`;
//! - under a `NOTIFY_SOCKET` the test owns, `READY=1` comes only after the first table,
//!   `RELOADING=1` and `READY=1` around a SIGHUP, `STOPPING=1` on SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ocean_tests::servers::{find_binary, free_port, Memcached, RedisCluster};

use super::{Proc, OCEAN};

/// Requests per pipelined batch of a verifier.
const BATCH: usize = 16;

/// The drain timeout the tests give the daemon; it must exit well before.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

fn spawn_ocean(dir: &Path, args: &[String], env: &[(&str, String)]) -> Proc {
    let log = std::fs::File::create(dir.join("ocean.log")).unwrap();
    let child = Command::new(OCEAN)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Proc(Some(child))
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("ocean.log")).unwrap_or_default()
}

fn wait_port(addr: SocketAddr, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "{addr} never accepted:\n{}",
            log_of(dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// Waits for the child to exit; returns its exit code and how long it took.
fn wait_exit(proc: &mut Proc, within: Duration, dir: &Path) -> (Option<i32>, Duration) {
    let child = proc.0.as_mut().unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            proc.0 = None;
            return (status.code(), t0.elapsed());
        }
        assert!(
            t0.elapsed() < within,
            "still running {within:?} after SIGTERM:\n{}",
            log_of(dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_exit`] off the async runtime, for the async tests: `proc` is consumed (killed if
/// it outlives `within`).
async fn wait_exit_async(mut proc: Proc, within: Duration, dir: &Path) -> (Option<i32>, Duration) {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || wait_exit(&mut proc, within, &dir))
        .await
        .unwrap()
}

/// What one verifier saw: batches fully answered, and the failure that ended it with the
/// time its batch had been written (ms since the test's start).
struct Verified {
    batches: u64,
    ended: Option<(u64, String)>,
}

/// A client that writes `BATCH` requests at once, then reads `BATCH` replies, until the
/// connection ends. `reply_ok` reads one reply.
fn verifier(
    addr: SocketAddr,
    batch: Vec<u8>,
    t0: Instant,
    reply_ok: fn(&mut BufReader<TcpStream>) -> Result<(), String>,
) -> std::thread::JoinHandle<Verified> {
    std::thread::spawn(move || {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let mut batches = 0;
        loop {
            let written = writer.write_all(&batch);
            let sent_ms = t0.elapsed().as_millis() as u64;
            if let Err(e) = written {
                return Verified {
                    batches,
                    ended: Some((sent_ms, format!("write: {e}"))),
                };
            }
            for i in 0..BATCH {
                if let Err(e) = reply_ok(&mut reader) {
                    return Verified {
                        batches,
                        ended: Some((sent_ms, format!("reply {i} of the batch: {e}"))),
                    };
                }
            }
            batches += 1;
        }
    })
}

fn read_line(r: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => Err("connection closed".into()),
        Ok(_) => Ok(line),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs load + verifiers against `addr`, sends SIGTERM, and checks the drain.
fn drain_under_load(
    proc: &mut Proc,
    dir: &Path,
    addr: SocketAddr,
    batch: Vec<u8>,
    reply_ok: fn(&mut BufReader<TcpStream>) -> Result<(), String>,
) {
    let t0 = Instant::now();
    let verifiers: Vec<_> = (0..4)
        .map(|_| verifier(addr, batch.clone(), t0, reply_ok))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let signal_ms = Arc::new(AtomicU64::new(0));
    signal_ms.store(t0.elapsed().as_millis() as u64, Ordering::SeqCst);
    signal(proc.0.as_ref().unwrap(), nix::sys::signal::Signal::SIGTERM);
    let (code, took) = wait_exit(proc, DRAIN_TIMEOUT + Duration::from_secs(5), dir);
    let log = log_of(dir);
    assert_eq!(code, Some(0), "exit after SIGTERM:\n{log}");
    assert!(took < DRAIN_TIMEOUT, "the drain took {took:?}:\n{log}");
    assert!(log.contains("draining"), "no drain logged:\n{log}");
    let signalled = signal_ms.load(Ordering::SeqCst);
    for v in verifiers {
        let v = v.join().unwrap();
        assert!(
            v.batches > 0,
            "a verifier got no batch answered before the signal"
        );
        let (sent_ms, why) = v.ended.expect("the connection outlived the daemon");
        assert!(
            sent_ms >= signalled,
            "a batch written at {sent_ms} ms, before SIGTERM at {signalled} ms, lost its replies: {why}\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_router_drains_on_sigterm_under_redis_benchmark() {
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let args = vec![
        format!("--drain-timeout={}s", DRAIN_TIMEOUT.as_secs()),
        "redis-router".into(),
        "--listen".into(),
        addr.to_string(),
        "--seed".into(),
        cluster.addrs()[0].to_string(),
    ];
    let mut proc = spawn_ocean(dir.path(), &args, &[]);
    wait_port(addr, dir.path());
    let bench = find_binary("redis-benchmark", "redis-tools").unwrap();
    let mut load = Command::new(bench)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-c",
            "20",
            "-P",
            "16",
            "-n",
            "100000000",
            "-t",
            "set,get",
            "-q",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // SET of keys in every slot range: a batch touches all three masters.
    let mut batch = Vec::new();
    for i in 0..BATCH {
        let key = format!("drain:{i}");
        batch.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\nv\r\n", key.len()).as_bytes(),
        );
    }
    tokio::task::spawn_blocking(move || {
        drain_under_load(&mut proc, dir.path(), addr, batch, |r| {
            let line = read_line(r)?;
            if line == "+OK\r\n" {
                Ok(())
            } else {
                Err(format!("unexpected reply {line:?}"))
            }
        });
    })
    .await
    .unwrap();
    let _ = load.kill();
    let _ = load.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_router_drains_on_sigterm_under_memcaslap() {
    let server = Memcached::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let args = vec![
        format!("--drain-timeout={}s", DRAIN_TIMEOUT.as_secs()),
        "memcached-router".into(),
        "--listen".into(),
        addr.to_string(),
        "--pool".into(),
        format!("a={}", server.addr()),
    ];
    let mut proc = spawn_ocean(dir.path(), &args, &[]);
    wait_port(addr, dir.path());
    let slap = find_binary("memcaslap", "libmemcached-tools").unwrap();
    let mut load = Command::new(slap)
        .args(["-s", &addr.to_string(), "-c", "16", "-T", "1", "-t", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut batch = Vec::new();
    for i in 0..BATCH {
        batch.extend_from_slice(format!("set drain:{i} 0 0 1\r\nv\r\n").as_bytes());
    }
    tokio::task::spawn_blocking(move || {
        drain_under_load(&mut proc, dir.path(), addr, batch, |r| {
            let line = read_line(r)?;
            if line == "STORED\r\n" {
                Ok(())
            } else {
                Err(format!("unexpected reply {line:?}"))
            }
        });
    })
    .await
    .unwrap();
    let _ = load.kill();
    let _ = load.wait();
}

/// Reads datagrams from the notify socket until one contains `needle`; returns all read.
fn wait_notify(sock: &UnixDatagram, needle: &str, within: Duration, dir: &Path) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {needle:?} on NOTIFY_SOCKET; got {seen:?}\n{}",
            log_of(dir)
        );
        sock.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let hit = msg.lines().any(|l| l == needle);
            seen.push(msg);
            if hit {
                return seen;
            }
        }
    }
}

#[test]
fn systemd_hears_ready_only_after_the_first_table() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let table = dir.path().join("memcached.json");
    let port = free_port().unwrap();
    let admin: SocketAddr = ([127, 0, 0, 1], port).into();
    let args = vec![
        "memcached-router".into(),
        "--table-file".into(),
        table.display().to_string(),
        "--admin".into(),
        admin.to_string(),
    ];
    let mut proc = spawn_ocean(
        dir.path(),
        &args,
        &[("NOTIFY_SOCKET", sock_path.display().to_string())],
    );
    // Serving its admin port, but no table yet: not ready.
    wait_port(admin, dir.path());
    sock.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = vec![0u8; 4096];
    if let Ok(n) = sock.recv(&mut buf) {
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(
            !msg.lines().any(|l| l == "READY=1"),
            "READY=1 before any table: {msg:?}"
        );
    }
    // The first table: READY=1, with the table's ETag in STATUS=.
    std::fs::write(&table, r#"{"pools": []}"#).unwrap();
    let seen = wait_notify(&sock, "READY=1", Duration::from_secs(10), dir.path());
    let all = seen.join("\n");
    assert!(
        all.lines()
            .any(|l| l.starts_with("STATUS=") && l.contains("memcached ")),
        "no STATUS= with the table's ETag: {all:?}"
    );
    // SIGHUP: RELOADING=1, then READY=1 again; the process lives on.
    let child = proc.0.as_ref().unwrap();
    signal(child, nix::sys::signal::Signal::SIGHUP);
    wait_notify(&sock, "RELOADING=1", Duration::from_secs(10), dir.path());
    wait_notify(&sock, "READY=1", Duration::from_secs(10), dir.path());
    assert!(
        proc.0.as_mut().unwrap().try_wait().unwrap().is_none(),
        "SIGHUP killed it"
    );
    // SIGTERM: STOPPING=1 and a clean exit.
    signal(proc.0.as_ref().unwrap(), nix::sys::signal::Signal::SIGTERM);
    wait_notify(&sock, "STOPPING=1", Duration::from_secs(10), dir.path());
    let (code, _) = wait_exit(&mut proc, Duration::from_secs(15), dir.path());
    assert_eq!(code, Some(0), "{}", log_of(dir.path()));
}

/// The shipped units use what the daemons do: notify readiness, reload on SIGHUP, and a
/// stop timeout above the default drain.
#[test]
fn systemd_units_are_notify_reload_on_hup_and_outlast_the_drain() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/deploy/systemd");
    let mut units = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("service") {
            continue;
        }
        units += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .unwrap_or_else(|| panic!("{}: no {key}=", path.display()))
                .trim()
                .to_string()
        };
        assert_eq!(value("Type"), "notify", "{}", path.display());
        assert_eq!(
            value("ExecReload"),
            "/bin/kill -HUP $MAINPID",
            "{}",
            path.display()
        );
        let stop: u64 = value("TimeoutStopSec").parse().unwrap();
        assert!(
            stop > 30,
            "{}: TimeoutStopSec {stop} <= the 30 s drain",
            path.display()
        );
        assert!(
            value("RestrictAddressFamilies").contains("AF_UNIX"),
            "{}: NOTIFY_SOCKET needs AF_UNIX",
            path.display()
        );
    }
    assert_eq!(units, 6, "one unit per daemon");
}

/// A mariadbd with schema `shop`, table `shop.counter` (ids 1..=4 at 0) and the proxy's
/// backend user.
async fn drain_backend() -> ocean_tests::servers::MariaDb {
    let db = ocean_tests::servers::MariaDb::start().await.unwrap();
    db.exec_sql(
        "CREATE DATABASE IF NOT EXISTS shop; \
         CREATE USER IF NOT EXISTS 'drain_rw'@'127.0.0.1' IDENTIFIED BY 'drain-rw-secret'; \
         GRANT ALL ON shop.* TO 'drain_rw'@'127.0.0.1'; \
         CREATE TABLE IF NOT EXISTS shop.counter (id INT PRIMARY KEY, n INT); \
         INSERT IGNORE INTO shop.counter VALUES (1, 0), (2, 0), (3, 0), (4, 0)",
    )
    .await
    .unwrap();
    db
}

/// `ocean --drain-timeout=T mysql-proxy` in front of `db`; returns it and its listen address.
fn spawn_mysql_proxy(
    dir: &Path,
    db: &ocean_tests::servers::MariaDb,
    drain_timeout: Duration,
) -> (Proc, SocketAddr) {
    let table = dir.join("mysql.json");
    std::fs::write(
        &table,
        super::mysql_table(db.addr(), "drain_rw", "drain-rw-secret"),
    )
    .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    let args = vec![
        format!("--drain-timeout={}s", drain_timeout.as_secs()),
        "mysql-proxy".into(),
        "--listen".into(),
        addr.to_string(),
        "--table-file".into(),
        table.display().to_string(),
        "--host-ip".into(),
        "192.0.2.77".into(),
    ];
    let proc = spawn_ocean(dir, &args, &[]);
    wait_port(addr, dir);
    (proc, addr)
}

async fn mysql_session(addr: SocketAddr) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(addr.port())
        .user(Some("shop/web"))
        .db_name(Some("shop"))
        .prefer_socket(false);
    mysql_async::Conn::new(opts).await.unwrap()
}

/// sysbench's arguments against the proxy at `port`, for `command` (prepare or run).
fn sysbench_args(port: u16, command: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "oltp_point_select",
        "--db-driver=mysql",
        "--mysql-host=127.0.0.1",
        "--mysql-user=shop/web",
        "--mysql-db=shop",
        "--mysql-ssl=off",
        "--tables=1",
        "--table-size=100",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("--mysql-port={port}"));
    if command == "run" {
        args.extend(
            [
                "--threads=4",
                "--time=0",
                "--events=0",
                "--report-interval=0",
            ]
            .map(String::from),
        );
    }
    args.push(command.into());
    args
}

/// The real SIGTERM to `ocean mysql-proxy` under sysbench: verifier sessions run
/// transactions (BEGIN, SELECT, UPDATE, COMMIT) with each statement timed; none sent before
/// the signal fails, no transaction begun before it is cut, every acknowledged COMMIT is in
/// the table, and the process exits 0 within `--drain-timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_proxy_drains_on_sigterm_under_sysbench() {
    use mysql_async::prelude::Queryable;

    let db = drain_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let (proc, addr) = spawn_mysql_proxy(dir.path(), &db, DRAIN_TIMEOUT);
    let sysbench = find_binary("sysbench", "sysbench").unwrap();
    let prepare = Command::new(&sysbench)
        .args(sysbench_args(addr.port(), "prepare"))
        .output()
        .unwrap();
    assert!(
        prepare.status.success(),
        "sysbench prepare through the proxy failed:\n{}{}\n{}",
        String::from_utf8_lossy(&prepare.stdout),
        String::from_utf8_lossy(&prepare.stderr),
        log_of(dir.path())
    );
    let mut load = Command::new(&sysbench)
        .args(sysbench_args(addr.port(), "run"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let signalled_ms = Arc::new(AtomicU64::new(u64::MAX));
    let t0 = Instant::now();
    let mut verifiers = Vec::new();
    for id in 1..=4u32 {
        let signalled_ms = signalled_ms.clone();
        verifiers.push(tokio::spawn(async move {
            let mut conn = mysql_session(addr).await;
            let mut committed = 0u64;
            loop {
                let stmts = [
                    "BEGIN".to_string(),
                    format!("SELECT n FROM shop.counter WHERE id = {id}"),
                    format!("UPDATE shop.counter SET n = n + 1 WHERE id = {id}"),
                    "COMMIT".to_string(),
                ];
                for (i, s) in stmts.iter().enumerate() {
                    let sent_ms = t0.elapsed().as_millis() as u64;
                    if let Err(e) = conn.query_drop(s).await {
                        let signalled = signalled_ms.load(Ordering::SeqCst);
                        assert!(
                            sent_ms > signalled,
                            "{s:?} sent {sent_ms} ms in, before SIGTERM at {signalled} ms, failed: {e}"
                        );
                        assert_eq!(
                            i, 0,
                            "{s:?} failed inside a transaction begun before SIGTERM: {e}"
                        );
                        return committed;
                    }
                }
                committed += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        load.try_wait().unwrap().is_none(),
        "sysbench stopped before the signal: no load\n{}",
        log_of(dir.path())
    );
    signalled_ms.store(t0.elapsed().as_millis() as u64, Ordering::SeqCst);
    signal(proc.0.as_ref().unwrap(), nix::sys::signal::Signal::SIGTERM);
    let (code, took) =
        wait_exit_async(proc, DRAIN_TIMEOUT + Duration::from_secs(5), dir.path()).await;
    let log = log_of(dir.path());
    assert_eq!(code, Some(0), "exit after SIGTERM:\n{log}");
    assert!(took < DRAIN_TIMEOUT, "the drain took {took:?}:\n{log}");
    assert!(log.contains("draining"), "no drain logged:\n{log}");
    let mut total = 0;
    for v in verifiers {
        let committed = tokio::time::timeout(Duration::from_secs(10), v)
            .await
            .expect("a verifier session outlived the proxy")
            .unwrap();
        assert!(committed > 0, "a verifier committed nothing before SIGTERM");
        total += committed;
    }
    eprintln!("{total} transactions committed through the proxy, drained in {took:?}");
    let _ = load.kill();
    let _ = load.wait();
    let sum = db
        .exec_sql("SELECT SUM(n) FROM shop.counter")
        .await
        .unwrap();
    assert_eq!(
        sum.trim().parse::<u64>().unwrap(),
        total,
        "acknowledged COMMITs against the rows in the table"
    );
}

/// A transaction left open holds the drain (up to `--drain-timeout`, 30 s here); a second
/// SIGTERM ends the process at once with 143, as a shell reports a killed process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once() {
    use mysql_async::prelude::Queryable;

    let db = drain_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut proc, addr) = spawn_mysql_proxy(dir.path(), &db, Duration::from_secs(30));
    let mut open = mysql_session(addr).await;
    open.query_drop("BEGIN").await.unwrap();
    open.query_drop("UPDATE shop.counter SET n = n + 1 WHERE id = 1")
        .await
        .unwrap();

    signal(proc.0.as_ref().unwrap(), nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log_of(dir.path()).contains("draining") {
        assert!(
            Instant::now() < deadline,
            "no drain logged:\n{}",
            log_of(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The open transaction keeps it draining.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        proc.0.as_mut().unwrap().try_wait().unwrap().is_none(),
        "exited with a transaction still open, long before the drain timeout:\n{}",
        log_of(dir.path())
    );
    // The session is still served while the drain waits for its COMMIT.
    let n: Option<i64> = open
        .query_first("SELECT n FROM shop.counter WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(n, Some(1), "the open transaction's own write");

    signal(proc.0.as_ref().unwrap(), nix::sys::signal::Signal::SIGTERM);
    let (code, took) = wait_exit_async(proc, Duration::from_secs(5), dir.path()).await;
    let log = log_of(dir.path());
    assert_eq!(code, Some(143), "exit after the second SIGTERM:\n{log}");
    assert!(
        took < Duration::from_secs(2),
        "the second SIGTERM took {took:?}:\n{log}"
    );
    assert!(
        log.contains("second stop signal"),
        "the early exit is not logged:\n{log}"
    );
    // Never committed: the backend rolled the transaction back.
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = db
            .exec_sql("SELECT n FROM shop.counter WHERE id = 1")
            .await
            .unwrap();
        if n.trim() == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the uncommitted write is visible: n = {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Control is ready once it has published tables, not when it listens: while Marathon
/// answers 500 there is no `READY=1`, but the watchdog the unit asks for (`WATCHDOG_USEC`)
/// is pinged from the start; once Marathon answers, `READY=1` comes with the tables'
/// ETags in `STATUS=`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_control_ready_after_its_first_publish_and_watchdog_pings() {
    use ocean_tests::fake_marathon::{app, task, FakeMarathon, Mode};

    let marathon = FakeMarathon::start().await.unwrap();
    marathon.put_app(app("/shop/web", serde_json::json!({}), 10000));
    marathon.add_task("/shop/web", task("/shop/web", 1, "127.0.10.1", &[31000]));
    marathon.set_mode(Mode::Error500);
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let listen: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    let args = vec![
        "control".into(),
        "--marathon".into(),
        marathon.url().to_string(),
        "--listen".into(),
        listen.to_string(),
    ];
    let env = [
        ("NOTIFY_SOCKET", sock_path.display().to_string()),
        // Half a second: pings every 250 ms.
        ("WATCHDOG_USEC", "500000".to_string()),
    ];
    let proc = spawn_ocean(dir.path(), &args, &env);
    wait_port(listen, dir.path());
    let path = dir.path().to_path_buf();
    let (sock, before) = tokio::task::spawn_blocking(move || {
        // Marathon failing: watchdog pings, and no READY=1 for a while.
        let seen = wait_notify(&sock, "WATCHDOG=1", Duration::from_secs(5), &path);
        let mut buf = vec![0u8; 4096];
        let mut before = seen.join("\n");
        let until = Instant::now() + Duration::from_millis(1500);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            if let Ok(n) = sock.recv(&mut buf) {
                before.push('\n');
                before.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
        (sock, before)
    })
    .await
    .unwrap();
    assert!(
        !before.lines().any(|l| l == "READY=1"),
        "READY=1 while Marathon answers 500 and nothing is published: {before:?}"
    );
    assert!(
        before.lines().filter(|l| *l == "WATCHDOG=1").count() >= 3,
        "fewer than 3 watchdog pings in 1.5 s at WATCHDOG_USEC=500000: {before:?}"
    );

    marathon.set_mode(Mode::Normal);
    let path = dir.path().to_path_buf();
    let seen = tokio::task::spawn_blocking(move || {
        wait_notify(&sock, "READY=1", Duration::from_secs(15), &path)
    })
    .await
    .unwrap();
    let all = seen.join("\n");
    assert!(
        all.lines()
            .any(|l| l.starts_with("STATUS=") && l.contains("control ")),
        "no STATUS= with the published tables' ETags: {all:?}"
    );
    signal(proc.0.as_ref().unwrap(), nix::sys::signal::Signal::SIGTERM);
    let (code, _) = wait_exit_async(proc, Duration::from_secs(15), dir.path()).await;
    assert_eq!(code, Some(0), "{}", log_of(dir.path()));
}

/// A query for `web.marathon.mesos.` A, id `id` (RFC 1035 wire format).
fn dns_query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in ["web", "marathon", "mesos"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// `ocean dns` keeps answering until its sockets close: a client querying over UDP without
/// pause gets every query sent until the signal answered (NOERROR, its own id), and the
/// process, which has nothing to drain, exits 0 at once.
#[test]
fn dns_answers_until_sigterm_then_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("dns.json");
    let json = serde_json::json!({
        "domain": "mesos",
        "ttl": 60,
        "soa": {"mname": "ns1.mesos.", "rname": "root.ns1.mesos.", "refresh_s": 60,
                "retry_s": 600, "expire_s": 86400},
        "names": {"web.marathon.mesos.": {"a": ["10.0.0.1"]}}
    });
    std::fs::write(&table, json.to_string()).unwrap();
    let port = free_port().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let args = vec![
        format!("--drain-timeout={}s", DRAIN_TIMEOUT.as_secs()),
        "dns".into(),
        "--listen".into(),
        addr.to_string(),
        "--no-http".into(),
        "--table-file".into(),
        table.display().to_string(),
    ];
    let mut proc = spawn_ocean(dir.path(), &args, &[]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Answered once the table is loaded.
    let t = Instant::now();
    let mut buf = [0u8; 512];
    loop {
        sock.send_to(&dns_query(1), addr).unwrap();
        if matches!(sock.recv(&mut buf), Ok(n) if n > 12 && buf[3] & 0x0f == 0) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no answer:\n{}",
            log_of(dir.path())
        );
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t0 = Instant::now();
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // (id, sent at ms, answered)
            let mut log: Vec<(u16, u64, bool)> = Vec::new();
            let mut id = 2u16;
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::SeqCst) {
                id = id.wrapping_add(1);
                let sent = t0.elapsed().as_millis() as u64;
                sock.send_to(&dns_query(id), addr).unwrap();
                let answered = matches!(sock.recv(&mut buf), Ok(n)
                    if n > 12 && buf[..2] == id.to_be_bytes() && buf[3] & 0x0f == 0);
                log.push((id, sent, answered));
            }
            log
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    let signalled = t0.elapsed().as_millis() as u64;
    signal(proc.0.as_ref().unwrap(), nix::sys::signal::Signal::SIGTERM);
    let (code, took) = wait_exit(
        &mut proc,
        DRAIN_TIMEOUT + Duration::from_secs(5),
        dir.path(),
    );
    std::thread::sleep(Duration::from_millis(600));
    stop.store(true, Ordering::SeqCst);
    let log = client.join().unwrap();
    let text = log_of(dir.path());
    assert_eq!(code, Some(0), "exit after SIGTERM:\n{text}");
    assert!(
        took < Duration::from_secs(3),
        "nothing to drain, yet it took {took:?}:\n{text}"
    );
    let before: Vec<_> = log
        .iter()
        .filter(|(_, sent, _)| *sent < signalled)
        .collect();
    assert!(
        before.len() > 50,
        "only {} queries before the signal",
        before.len()
    );
    // The query in flight when the signal came may be lost with the socket; none before.
    let lost: Vec<_> = before
        .iter()
        .filter(|(_, sent, answered)| !answered && *sent + 20 < signalled)
        .collect();
    assert!(
        lost.is_empty(),
        "queries sent before SIGTERM unanswered: {lost:?}"
    );
}
