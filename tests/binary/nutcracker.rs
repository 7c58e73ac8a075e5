//! `ocean memcached-router --nutcracker-config` as a drop-in for twemproxy (issue 15): the
//! real `nutcracker` stores 10,000 keys in a weighted ketama pool of three memcached, is
//! stopped, and the built binary started on the very same nutcracker.yml (same listen
//! port) reads every one of them back; with `auto_eject_hosts` and a dead server, keys
//! nutcracker rehashed are found where ocean rehashes them; a file whose placement the
//! router cannot reproduce is refused at start, naming the key.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ocean_tests::servers::{free_port, start_nutcracker, Memcached};

use super::{Proc, OCEAN};

const KEYS: usize = 10_000;
/// Keys per pipelined batch (sets) or per multi-get.
const BATCH: usize = 100;

fn connect(addr: SocketAddr, what: &str, log: &dyn Fn() -> String) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = TcpStream::connect(addr) {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never accepted on {addr}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Groups of four keys share a hash tag (`{N}`); without `hash_tag` the braces are only
/// bytes of the key.
fn key(i: usize) -> String {
    format!("user:{{{}}}:session:{i}", i / 4)
}

fn value(i: usize) -> String {
    format!("v{}", i * 7)
}

/// Sets every key through `addr`, pipelined, checking each `STORED`.
fn set_all(addr: SocketAddr, log: &dyn Fn() -> String) {
    let stream = connect(addr, "nutcracker", log);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    for batch in (0..KEYS).collect::<Vec<_>>().chunks(BATCH) {
        let mut req = String::new();
        for &i in batch {
            let v = value(i);
            req.push_str(&format!("set {} 0 0 {}\r\n{v}\r\n", key(i), v.len()));
        }
        writer.write_all(req.as_bytes()).unwrap();
        for &i in batch {
            line.clear();
            reader.read_line(&mut line).unwrap();
            assert_eq!(line, "STORED\r\n", "set {} through nutcracker", key(i));
        }
    }
}

/// Multi-gets every key through `addr`; returns the keys missing or with a wrong value.
fn missing(addr: SocketAddr, log: &dyn Fn() -> String) -> Vec<String> {
    let stream = connect(addr, "ocean memcached-router", log);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut missing = Vec::new();
    let mut line = String::new();
    for batch in (0..KEYS).collect::<Vec<_>>().chunks(BATCH) {
        let mut req = "get".to_string();
        for &i in batch {
            req.push(' ');
            req.push_str(&key(i));
        }
        req.push_str("\r\n");
        writer.write_all(req.as_bytes()).unwrap();
        let mut got = std::collections::HashMap::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "END\r\n" {
                break;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            assert!(
                words.len() == 4 && words[0] == "VALUE",
                "not a VALUE line: {line:?}\n{}",
                log()
            );
            let name = words[1].to_string();
            let mut data = String::new();
            reader.read_line(&mut data).unwrap();
            got.insert(name, data.trim_end().to_string());
        }
        for &i in batch {
            if got.get(&key(i)) != Some(&value(i)) {
                missing.push(key(i));
            }
        }
    }
    missing
}

fn items(addr: SocketAddr) -> u64 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"stats\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if let Some(n) = line.strip_prefix("STAT curr_items ") {
            return n.trim().parse().unwrap();
        }
        assert_ne!(line, "END\r\n", "no curr_items in stats of {addr}");
    }
}

/// `ocean memcached-router [extra...] --nutcracker-config conf`, its output in
/// `dir/ocean.log`.
fn ocean(dir: &Path, conf: &Path, extra: &[&str]) -> Proc {
    let log = std::fs::File::create(dir.join("ocean.log")).unwrap();
    Proc(Some(
        Command::new(OCEAN)
            .arg("memcached-router")
            .args(extra)
            .arg("--nutcracker-config")
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    ))
}

/// A pool of three memcached (weights 1, 2, 1; the third hashed by its name) whose 10,000
/// keys the real nutcracker stored from `nutcracker.yml` (with `placement`: the hash,
/// distribution and hash_tag lines), then the built router started on the very same file.
/// Three memcached servers, their addresses, a listen address for the pool, and a temp
/// dir for its files.
async fn three_servers() -> (
    Vec<Memcached>,
    Vec<SocketAddr>,
    SocketAddr,
    tempfile::TempDir,
) {
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(Memcached::start().await.unwrap());
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(Memcached::addr).collect();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    (servers, addrs, listen, tempfile::tempdir().unwrap())
}

struct DropIn {
    _servers: Vec<Memcached>,
    addrs: Vec<SocketAddr>,
    listen: SocketAddr,
    dir: tempfile::TempDir,
    conf: String,
    conf_path: std::path::PathBuf,
    per_server: Vec<u64>,
    router: Proc,
}

impl DropIn {
    async fn start(placement: &str) -> DropIn {
        let (servers, addrs, listen, dir) = three_servers().await;
        // A production-looking pool: weights, one server hashed by its name, and the keys
        // twemproxy users set that only tune timing or that ocean does not use.
        let conf = format!(
            "cache:\n  listen: {listen}\n{placement}  \
             timeout: 400\n  backlog: 1024\n  preconnect: true\n  auto_eject_hosts: false\n  \
             server_retry_timeout: 2000\n  server_failure_limit: 2\n  servers:\n   \
             - {}:1\n   - {}:2\n   - {}:1 cache-3\n",
            addrs[0], addrs[1], addrs[2]
        );
        let conf_path = dir.path().join("nutcracker.yml");
        std::fs::write(&conf_path, &conf).unwrap();

        let nut_log = dir.path().join("nutcracker.log");
        let mut proxy = start_nutcracker(&conf_path, dir.path(), free_port().unwrap()).unwrap();
        let nut_log_text = || std::fs::read_to_string(&nut_log).unwrap_or_default();
        set_all(listen, &nut_log_text);
        let per_server: Vec<u64> = addrs.iter().map(|a| items(*a)).collect();
        assert_eq!(
            per_server.iter().sum::<u64>(),
            KEYS as u64,
            "{per_server:?}"
        );
        assert!(
            per_server.iter().all(|&n| n > KEYS as u64 / 10),
            "every server holds a share: {per_server:?}"
        );
        // The weight-2 server holds the most: twice the points on the ketama ring, or
        // twice in the modula list.
        assert!(per_server[1] > per_server[0] && per_server[1] > per_server[2]);
        proxy.stop();

        let router = ocean(dir.path(), &conf_path, &[]);
        let drop_in = DropIn {
            _servers: servers,
            addrs,
            listen,
            dir,
            conf,
            conf_path,
            per_server,
            router,
        };
        let lost = missing(listen, &|| drop_in.log());
        assert!(
            lost.is_empty(),
            "{placement}: {} of {KEYS} keys stored by nutcracker are missed through ocean (first: {:?})",
            lost.len(),
            lost.first()
        );
        drop_in
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ocean.log")).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocean_serves_every_key_nutcracker_stored_from_the_same_file() {
    let DropIn {
        _servers,
        addrs,
        listen,
        dir,
        conf,
        conf_path,
        per_server: _,
        mut router,
    } = DropIn::start("  hash: fnv1a_64\n  distribution: ketama\n").await;
    let ocean_log = || std::fs::read_to_string(dir.path().join("ocean.log")).unwrap_or_default();
    let log = ocean_log();
    assert!(
        log.contains("backlog: not used by ocean") && log.contains("preconnect"),
        "the keys ocean does not use are named at start:\n{log}"
    );

    // SIGHUP re-reads the file. A broken file keeps the running pool.
    let child = router.0.as_ref().unwrap();
    std::fs::write(&conf_path, "cache: [").unwrap();
    hup_and_wait(child, &ocean_log, "reload failed");
    assert!(missing(listen, &ocean_log).is_empty());
    // cache-3 leaves the pool (and the listen port changes, which needs a restart): new
    // keys go to the two servers left, on the port the router already listens on.
    let moved = conf
        .replace(&format!("   - {}:1 cache-3\n", addrs[2]), "")
        .replace(&format!("listen: {listen}"), "listen: 127.0.0.1:1");
    std::fs::write(&conf_path, &moved).unwrap();
    hup_and_wait(child, &ocean_log, "servers applied");
    assert!(
        ocean_log().contains("listen changed in the file; it needs a restart"),
        "{}",
        ocean_log()
    );
    let before: Vec<u64> = addrs.iter().map(|a| items(*a)).collect();
    let stream = connect(listen, "ocean memcached-router", &ocean_log);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    for i in 0..300 {
        writer
            .write_all(format!("set after-reload:{i} 0 0 1\r\nx\r\n").as_bytes())
            .unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "STORED\r\n");
    }
    let after: Vec<u64> = addrs.iter().map(|a| items(*a)).collect();
    assert_eq!(after[2], before[2], "nothing goes to the removed server");
    assert_eq!(
        after[0] + after[1],
        before[0] + before[1] + 300,
        "{before:?} -> {after:?}"
    );
    if let Some(mut c) = router.0.take() {
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

/// twemproxy's other placements: `distribution: modula` and `hash_tag: "{}"` (keys come
/// in groups of four sharing a tag, `user:{N}:session:I`, so one multi-get of a batch spans
/// every server and each group must sit on one). Every key nutcracker stored is read back
/// through ocean, so each one is placed exactly where nutcracker put it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modula_and_hash_tag_place_keys_where_nutcracker_does() {
    for placement in [
        "  hash: md5\n  distribution: modula\n  hash_tag: \"{}\"\n",
        "  hash: murmur\n  distribution: ketama\n  hash_tag: \"{}\"\n",
    ] {
        let d = DropIn::start(placement).await;
        // The tag decides: the four keys of a group are on one server, so the groups
        // (2,500) and not the keys are spread; the weights still show.
        assert!(
            d.per_server.iter().all(|n| n % 4 == 0),
            "{placement}: groups of four stay whole: {:?}",
            d.per_server
        );
        drop(d);
    }
}

/// Sends SIGHUP and waits (up to 10 s) until the log has one more line containing
/// `needle` than before.
fn hup_and_wait(child: &std::process::Child, log: &dyn Fn() -> String, needle: &str) {
    let before = log().matches(needle).count();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while log().matches(needle).count() == before {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sets keys through `addr` until `n` in a row are stored: a down server's first failures
/// (before it is ejected) answer `SERVER_ERROR`.
fn until_ejected(addr: SocketAddr, what: &str, log: &dyn Fn() -> String) {
    let stream = connect(addr, what, log);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    let mut in_a_row = 0;
    for i in 0..500 {
        // Keys that differ in their first bytes: fnv1a_64 puts keys that differ only at
        // the end next to each other on the ring, so they could all miss the dead server.
        let key = format!("{:08x}-warm", (i as u32).wrapping_mul(2_654_435_761));
        writer
            .write_all(format!("set {key} 0 0 1\r\nw\r\n").as_bytes())
            .unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "STORED\r\n" {
            in_a_row += 1;
            if in_a_row == 60 {
                return;
            }
        } else {
            assert!(line.starts_with("SERVER_ERROR"), "{what}: {line:?}");
            in_a_row = 0;
        }
    }
    panic!("{what} never ejected the dead server:\n{}", log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_eject_hosts_rehashes_like_nutcracker() {
    let (mut servers, addrs, listen, dir) = three_servers().await;
    // One failure ejects a server, and it stays out for the whole test.
    let conf = format!(
        "cache:\n  listen: {listen}\n  hash: fnv1a_64\n  distribution: ketama\n  \
         timeout: 500\n  auto_eject_hosts: true\n  server_failure_limit: 1\n  \
         server_retry_timeout: 60000\n  servers:\n   \
         - {}:1\n   - {}:1\n   - {}:1\n",
        addrs[0], addrs[1], addrs[2]
    );
    let conf_path = dir.path().join("nutcracker.yml");
    std::fs::write(&conf_path, &conf).unwrap();
    // Every port is picked before the server dies: a port picked after it could be its own,
    // and nutcracker's stats listener would then answer in its place.
    let stats_port = free_port().unwrap();
    servers[1].stop();

    let nut_log = dir.path().join("nutcracker.log");
    let mut proxy = start_nutcracker(&conf_path, dir.path(), stats_port).unwrap();
    let nut_log_text = || std::fs::read_to_string(&nut_log).unwrap_or_default();
    until_ejected(listen, "nutcracker", &nut_log_text);
    set_all(listen, &nut_log_text);
    proxy.stop();
    let per_server: Vec<u64> = [addrs[0], addrs[2]].iter().map(|a| items(*a)).collect();
    assert!(
        per_server.iter().all(|&n| n > KEYS as u64 / 4),
        "the two live servers share the keys: {per_server:?}"
    );

    // One worker thread: the ejection is per worker, and the test's connection must see
    // the one it caused.
    let mut router = ocean(dir.path(), &conf_path, &["--threads", "1"]);
    let ocean_log = || std::fs::read_to_string(dir.path().join("ocean.log")).unwrap_or_default();
    until_ejected(listen, "ocean", &ocean_log);
    let lost = missing(listen, &ocean_log);
    assert!(
        lost.is_empty(),
        "{} of {KEYS} keys nutcracker stored with a server ejected are missed through ocean \
         with the same server ejected (first: {:?})",
        lost.len(),
        lost.first()
    );
    if let Some(mut c) = router.0.take() {
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

#[test]
fn a_pool_that_would_move_keys_is_refused_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (body, needle) in [
        ("  hash: jenkins\n", "hash: jenkins is not supported"),
        ("  distribution: random\n", "distribution: random"),
        ("  redis: true\n", "ocean redis-router"),
    ] {
        let conf = dir.path().join("nutcracker.yml");
        std::fs::write(
            &conf,
            format!("p:\n  listen: 127.0.0.1:1\n{body}  servers:\n   - 127.0.0.1:11211:1\n"),
        )
        .unwrap();
        let log = dir.path().join("refused.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(OCEAN)
            .args(["memcached-router", "--nutcracker-config"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        // A router that accepted the file would serve for ever: give it 10 s at most.
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            status.is_some_and(|s| !s.success()),
            "{body}: the router started:\n{text}"
        );
        assert!(
            text.contains(needle) && text.contains("nutcracker.yml"),
            "{body}: {text}"
        );
    }
    // The two sources of a pool cannot be mixed.
    let out = Command::new(OCEAN)
        .args([
            "memcached-router",
            "--nutcracker-config",
            "x.yml",
            "--listen",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}
