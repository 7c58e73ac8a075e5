//! Sharded standalone Redis, twemproxy's model (issue 15, must-show 2 for Redis): the real
//! `nutcracker` (Debian's twemproxy) stores keys in a `redis: true` pool of three plain
//! redis-servers, is stopped, and the router started from the same nutcracker.yml (same
//! listen port) reads every key back: zero misses, for ketama and modula, several of
//! twemproxy's hashes, a hash tag and redis_auth. A pool it would place differently is
//! refused at start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use clap::Parser;
use ocean_tests::servers::{free_port, start_nutcracker, RedisServer};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: ocean_redis_router::Args,
}

/// Keys per pipelined batch (SETs) or per MGET.
const BATCH: usize = 100;

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A blocking RESP2 client, enough for SET, MGET, AUTH, DBSIZE and EXISTS.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(Instant::now() < deadline, "{addr} never accepted: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    /// One reply: a simple line, or a bulk string's value (`None` for nil).
    fn bulk(&mut self) -> Option<Vec<u8>> {
        let header = self.line();
        let len: i64 = header
            .strip_prefix('$')
            .unwrap_or_else(|| panic!("not a bulk string: {header:?}"))
            .trim()
            .parse()
            .unwrap();
        if len < 0 {
            return None;
        }
        let mut data = vec![0u8; len as usize + 2];
        self.reader.read_exact(&mut data).unwrap();
        data.truncate(len as usize);
        Some(data)
    }

    fn call(&mut self, args: &[&[u8]]) -> String {
        self.writer.write_all(&encode(args)).unwrap();
        self.line()
    }

    fn auth(&mut self, password: Option<&str>) {
        if let Some(pw) = password {
            assert_eq!(self.call(&[b"AUTH", pw.as_bytes()]), "+OK\r\n");
        }
    }
}

fn value(key: &str) -> String {
    format!("v:{key}")
}

/// SETs every key through `addr`, pipelined, each answered `+OK`.
fn set_all(addr: SocketAddr, password: Option<&str>, keys: &[String]) {
    let mut c = Client::connect(addr);
    c.auth(password);
    for batch in keys.chunks(BATCH) {
        let mut req = Vec::new();
        for k in batch {
            req.extend(encode(&[b"SET", k.as_bytes(), value(k).as_bytes()]));
        }
        c.writer.write_all(&req).unwrap();
        for k in batch {
            assert_eq!(c.line(), "+OK\r\n", "SET {k} through nutcracker");
        }
    }
}

/// MGETs every key through `addr`; returns those missing or with a wrong value.
fn missing(addr: SocketAddr, password: Option<&str>, keys: &[String]) -> Vec<String> {
    let mut c = Client::connect(addr);
    c.auth(password);
    let mut lost = Vec::new();
    for batch in keys.chunks(BATCH) {
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(batch.iter().map(|k| k.as_bytes()));
        let header = c.call(&args);
        assert_eq!(header, format!("*{}\r\n", batch.len()), "MGET reply");
        for k in batch {
            if c.bulk().as_deref() != Some(value(k).as_bytes()) {
                lost.push(k.clone());
            }
        }
    }
    lost
}

fn dbsize(addr: SocketAddr, password: Option<&str>) -> u64 {
    let mut c = Client::connect(addr);
    c.auth(password);
    let line = c.call(&[b"DBSIZE"]);
    line.trim_start_matches(':').trim().parse().unwrap()
}

fn holder(servers: &[SocketAddr], password: Option<&str>, key: &str) -> Vec<usize> {
    let mut held = Vec::new();
    for (i, a) in servers.iter().enumerate() {
        let mut c = Client::connect(*a);
        c.auth(password);
        if c.call(&[b"EXISTS", key.as_bytes()]) == ":1\r\n" {
            held.push(i);
        }
    }
    held
}

/// One pool: nutcracker stores `n` keys (and tagged pairs when the pool has a hash tag),
/// then the router on the same file must find every one.
async fn check(placement: &str, n: usize, password: Option<&str>) {
    let mut servers = Vec::new();
    for _ in 0..3 {
        let s = RedisServer::start().await.unwrap();
        if let Some(pw) = password {
            let mut c = Client::connect(s.addr());
            assert_eq!(
                c.call(&[b"CONFIG", b"SET", b"requirepass", pw.as_bytes()]),
                "+OK\r\n"
            );
        }
        servers.push(s);
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(RedisServer::addr).collect();
    let listen = format!("127.0.0.1:{}", free_port().unwrap());
    let listen_addr: SocketAddr = listen.parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = password.map_or(String::new(), |p| format!("  redis_auth: {p}\n"));
    let conf = format!(
        "sessions:\n  listen: {listen}\n{placement}  redis: true\n{auth}  timeout: 2000\n  \
         auto_eject_hosts: false\n  servers:\n   - {}:1\n   - {}:2\n   - {}:1 shard-c\n",
        addrs[0], addrs[1], addrs[2]
    );
    let conf_path = dir.path().join("nutcracker.yml");
    std::fs::write(&conf_path, &conf).unwrap();

    let mut keys: Vec<String> = (0..n).map(|i| format!("session:{i}:{}", i * 31)).collect();
    let tagged = placement.contains("hash_tag");
    if tagged {
        for u in 0..50 {
            keys.push(format!("{{user:{u}}}:name"));
            keys.push(format!("{{user:{u}}}:mail"));
        }
    }
    keys.push(String::new()); // the empty key: twemproxy hashes it as 0

    let mut proxy = start_nutcracker(&conf_path, dir.path(), free_port().unwrap()).unwrap();
    set_all(listen_addr, password, &keys);
    proxy.stop();
    let per_server: Vec<u64> = addrs.iter().map(|a| dbsize(*a, password)).collect();
    assert_eq!(
        per_server.iter().sum::<u64>(),
        keys.len() as u64,
        "{placement}: {per_server:?}"
    );
    assert!(
        per_server.iter().all(|&k| k as usize > n / 10),
        "{placement}: every server holds a share: {per_server:?}"
    );
    if tagged {
        for u in 0..50 {
            let a = holder(&addrs, password, &format!("{{user:{u}}}:name"));
            let b = holder(&addrs, password, &format!("{{user:{u}}}:mail"));
            assert_eq!(a, b, "a hash tag keeps user {u}'s keys together");
        }
    }

    let cli = Cli::try_parse_from([
        "ocean".as_ref(),
        "--threads".as_ref(),
        "0".as_ref(),
        "--nutcracker-config".as_ref(),
        conf_path.as_os_str(),
    ])
    .unwrap();
    let config = cli.args.into_config().unwrap();
    let cancel = CancellationToken::new();
    let running = ocean_redis_router::start(config, cancel.clone())
        .await
        .unwrap();
    let lost = tokio::task::spawn_blocking({
        let keys = keys.clone();
        let password = password.map(str::to_string);
        move || missing(listen_addr, password.as_deref(), &keys)
    })
    .await
    .unwrap();
    assert!(
        lost.is_empty(),
        "{placement}: {} of {} keys nutcracker stored are missed through ocean (first: {:?})",
        lost.len(),
        keys.len(),
        lost.first()
    );
    cancel.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ketama_fnv1a_64_with_a_hash_tag_10k_keys() {
    check(
        "  hash: fnv1a_64\n  distribution: ketama\n  hash_tag: \"{}\"\n",
        10_000,
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modula_murmur_md5_crc32a_and_redis_auth() {
    check("  hash: murmur\n  distribution: modula\n", 2_000, None).await;
    check(
        "  hash: md5\n  distribution: ketama\n",
        2_000,
        Some("s3cret"),
    )
    .await;
    check("  hash: crc32a\n  distribution: ketama\n", 2_000, None).await;
    check("  hash: crc32\n  distribution: modula\n", 2_000, None).await;
}

/// `--mode ketama` from flags: keys the router stores (MSET split over the servers) are
/// where nutcracker, configured with the same servers, looks for them; DEL over many
/// servers counts them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_ketama_from_flags_stores_where_nutcracker_reads() {
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(RedisServer::start().await.unwrap());
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(RedisServer::addr).collect();
    let mut args: Vec<String> = ["ocean", "--listen", "127.0.0.1:0", "--threads", "0"]
        .map(String::from)
        .to_vec();
    for a in &addrs {
        args.extend(["--seed".to_string(), a.to_string()]);
    }
    args.extend(["--mode", "ketama", "--hash", "md5", "--hash-tag", "{}"].map(String::from));
    let config = Cli::try_parse_from(&args)
        .unwrap()
        .args
        .into_config()
        .unwrap();
    let cancel = CancellationToken::new();
    let running = ocean_redis_router::start(config, cancel.clone())
        .await
        .unwrap();
    let router = running.listen_addr.unwrap();
    let keys: Vec<String> = (0..3000).map(|i| format!("flag:{i}")).collect();
    let stored = tokio::task::spawn_blocking({
        let keys = keys.clone();
        move || {
            let mut c = Client::connect(router);
            for batch in keys.chunks(BATCH) {
                let values: Vec<String> = batch.iter().map(|k| value(k)).collect();
                let mut args: Vec<&[u8]> = vec![b"MSET"];
                for (k, v) in batch.iter().zip(&values) {
                    args.push(k.as_bytes());
                    args.push(v.as_bytes());
                }
                assert_eq!(c.call(&args), "+OK\r\n");
            }
            let dels: Vec<&[u8]> = std::iter::once(&b"DEL"[..])
                .chain(keys[..200].iter().map(|k| k.as_bytes()))
                .collect();
            c.call(&dels)
        }
    })
    .await
    .unwrap();
    assert_eq!(stored, ":200\r\n", "DEL of 200 keys over three servers");
    cancel.cancel();
    running.wait().await;
    let per_server: Vec<u64> = addrs.iter().map(|a| dbsize(*a, None)).collect();
    assert!(per_server.iter().all(|&n| n > 300), "{per_server:?}");

    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let conf = format!(
        "p:\n  listen: {listen}\n  hash: md5\n  hash_tag: \"{{}}\"\n  redis: true\n  \
         servers:\n   - {}:1\n   - {}:1\n   - {}:1\n",
        addrs[0], addrs[1], addrs[2]
    );
    let conf_path = dir.path().join("nutcracker.yml");
    std::fs::write(&conf_path, conf).unwrap();
    let _proxy = start_nutcracker(&conf_path, dir.path(), free_port().unwrap()).unwrap();
    let lost = tokio::task::spawn_blocking(move || missing(listen, None, &keys[200..]))
        .await
        .unwrap();
    assert!(lost.is_empty(), "{} missed through nutcracker", lost.len());
}

#[test]
fn a_pool_the_router_would_place_differently_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (body, needle) in [
        (
            "  redis: true\n  distribution: random\n",
            "distribution: random",
        ),
        ("  redis: true\n  hash: jenkins\n", "hash: jenkins"),
        ("  redis: true\n  redis_db: 2\n", "redis_db: 2"),
        ("", "a memcached pool"),
    ] {
        let conf = dir.path().join("nutcracker.yml");
        std::fs::write(
            &conf,
            format!("p:\n  listen: 127.0.0.1:1\n{body}  servers:\n   - 127.0.0.1:6379:1\n"),
        )
        .unwrap();
        let err = Cli::try_parse_from([
            "ocean".as_ref(),
            "--nutcracker-config".as_ref(),
            conf.as_os_str(),
        ])
        .unwrap()
        .args
        .into_config()
        .map(|_| ())
        .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains(needle) && err.contains("nutcracker.yml"),
            "{body}: {err}"
        );
    }
}
