//! Issue 13, must-show 1 for the proxies: SIGHUP while clients run. For each of
//! `ocean redis-router`, `memcached-router`, `mysql-proxy`, `dns`, `lvs-sync` and `ocean up`,
//! the built binary runs against real servers (redis-server, memcached, mariadbd from the
//! harness), client threads send real requests without pause, the test sends SIGHUP a few
//! times with `kill(2)`, and then checks: the process is still there, no client saw an
//! error, `ocean_reloads_total{daemon=...}` counted every reload, and what changed took
//! effect (a new certificate served to the next TLS client, a rotated password for the
//! next AUTH, new upstream resolvers, a memcached server added to a nutcracker.yml or an
//! mcrouter JSON, an ownership rule of control.toml under `ocean up`) or, when the new
//! file is broken, did not.
//! control.toml reloads are tests/binary/reload_control.rs.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ocean_core::tls::PemFile;
use ocean_tests::pki::Pki;
use ocean_tests::servers::{free_port, Memcached, RedisCluster};
use rustls::pki_types::{CertificateDer, ServerName};

use super::{start_up, terminate, Proc, OCEAN};

/// How long anything a test waits for may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// How many SIGHUPs each daemon gets.
const HUPS: u64 = 3;

// ---------------------------------------------------------------------------------------
// The daemon under test.

/// `ocean ARGS` started by a test, stdout and stderr in one log file.
struct Daemon {
    proc: Proc,
    log: PathBuf,
    name: &'static str,
}

impl Daemon {
    fn start(name: &'static str, args: &[&str], dir: &Path) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap();
        let child = Command::new(OCEAN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        Daemon {
            proc: Proc(Some(child)),
            log,
            name,
        }
    }

    fn child(&mut self) -> &mut Child {
        self.proc.0.as_mut().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGHUP.
    fn hup(&mut self) {
        let pid = Pid::from_raw(i32::try_from(self.child().id()).unwrap());
        kill(pid, Signal::SIGHUP).unwrap();
    }

    /// Panics (with the log) unless the process is still running.
    fn assert_running(&mut self) {
        if let Some(status) = self.child().try_wait().unwrap() {
            panic!(
                "ocean {} exited ({status}) after SIGHUP; its log:\n{}",
                self.name,
                self.log()
            );
        }
    }

    /// SIGTERM, then a clean exit.
    fn stop(self) {
        terminate(self.proc);
    }
}

/// Polls `f` until it returns `Some`, at most [`DEADLINE`]; `what` names it on timeout.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// Metrics.

/// `GET path` on `addr` over HTTP/1.0: (status, body), or `None` when nothing answers.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// `ocean_reloads_total{daemon}` in `/metrics` of `admin`, for one `result` or (`None`)
/// all of them.
fn reloads(admin: SocketAddr, daemon: &str, result: Option<&str>) -> u64 {
    let Some((200, text)) = http_get(admin, "/metrics") else {
        return 0;
    };
    let d = format!("daemon=\"{daemon}\"");
    let r = result.map(|r| format!("result=\"{r}\""));
    ocean_tests::metrics::series(&text, "ocean_reloads_total", &[&d])
        .into_iter()
        .filter(|l| r.as_ref().is_none_or(|r| l.contains(r.as_str())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Sends one SIGHUP and waits until `daemon`'s reloads (of `result`, or any) counted it.
fn hup_and_wait(d: &mut Daemon, admin: SocketAddr, daemon: &str, result: Option<&str>) {
    let before = reloads(admin, daemon, result);
    d.hup();
    eventually(
        &format!("ocean_reloads_total{{daemon={daemon:?},result={result:?}}} to count a SIGHUP"),
        || (reloads(admin, daemon, result) > before).then_some(()),
    );
}

// ---------------------------------------------------------------------------------------
// Client load: threads doing real requests until stopped, counting what failed.

/// Client threads running one request after another, each on its own connection.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

/// One client: `connect` opens a session, `request` sends one request on it (numbered)
/// and checks the reply.
trait Client: Send + 'static {
    type Session;
    fn connect(&self) -> Result<Self::Session, String>;
    fn request(&self, s: &mut Self::Session, n: u64) -> Result<(), String>;
}

impl Load {
    /// Starts `n` threads of `client`; each connects once (retrying until the daemon is
    /// up) and keeps its session, reconnecting only after an error.
    fn start<C: Client + Clone>(client: C, n: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let threads = (0..n)
            .map(|t| {
                let (client, stop, ok) = (client.clone(), stop.clone(), ok.clone());
                std::thread::spawn(move || {
                    let mut errors = Vec::new();
                    let mut session =
                        eventually("the first client session", || client.connect().ok());
                    let mut i = (t as u64) << 32;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        match client.request(&mut session, i) {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                errors.push(e);
                                if errors.len() > 20 {
                                    break;
                                }
                                match client.connect() {
                                    Ok(s) => session = s,
                                    Err(e) => errors.push(format!("reconnect: {e}")),
                                }
                            }
                        }
                    }
                    errors
                })
            })
            .collect();
        Load { stop, ok, threads }
    }

    /// Waits until `more` requests succeeded from now on.
    fn wait_for(&self, more: u64) {
        let target = self.ok.load(Ordering::Relaxed) + more;
        eventually("client requests to succeed", || {
            (self.ok.load(Ordering::Relaxed) >= target).then_some(())
        });
    }

    /// Stops the clients and asserts that none saw an error.
    fn finish(self, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let errors: Vec<String> = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let ok = self.ok.load(Ordering::Relaxed);
        assert!(
            errors.is_empty(),
            "{what}: {} client errors ({ok} requests fine): {errors:?}",
            errors.len()
        );
        assert!(ok > 0, "{what}: no request succeeded");
    }
}

/// Reads from `r` until `done(buf)` says the reply is complete.
fn read_reply(r: &mut impl Read, done: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !done(&buf) {
        let n = r.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed after {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

/// Whether `buf` holds one whole RESP reply of the kinds these tests get (simple string,
/// error, integer, bulk string).
fn resp_complete(buf: &[u8]) -> bool {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    if buf.first() != Some(&b'$') {
        return true;
    }
    let len: i64 = String::from_utf8_lossy(&buf[1..eol]).parse().unwrap_or(0);
    len < 0 || buf.len() >= eol + 2 + len as usize + 2
}

/// One RESP command and its reply, as text.
fn resp(s: &mut (impl Read + Write), args: &[&str]) -> Result<String, String> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let reply = read_reply(s, resp_complete)?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// SET then GET of a key of its own through a Redis connection.
fn redis_set_get(s: &mut (impl Read + Write), n: u64) -> Result<(), String> {
    let (key, value) = (format!("reload-{n}"), format!("v{n}"));
    let set = resp(s, &["SET", &key, &value])?;
    if set != "+OK\r\n" {
        return Err(format!("SET {key}: {set:?}"));
    }
    let got = resp(s, &["GET", &key])?;
    if got != format!("${}\r\n{value}\r\n", value.len()) {
        return Err(format!("GET {key}: {got:?}"));
    }
    Ok(())
}

/// Redis over plain TCP (no password).
#[derive(Clone)]
struct PlainRedis(SocketAddr);

impl Client for PlainRedis {
    type Session = TcpStream;
    fn connect(&self) -> Result<TcpStream, String> {
        let s = TcpStream::connect(self.0).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        // The first request proves the router serves (a table mode port may be bound
        // before its cluster's slot map is in).
        let mut s = s;
        redis_set_get(&mut s, 0)?;
        Ok(s)
    }
    fn request(&self, s: &mut TcpStream, n: u64) -> Result<(), String> {
        redis_set_get(s, n)
    }
}

/// A TLS client config trusting `cas` (PEM files).
pub(super) fn tls_client(cas: &[&Path]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for c in ocean_core::tls::cert_chain(PemFile::new("ca", ca)).unwrap() {
            roots.add(c).unwrap();
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(ocean_core::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every connection a full handshake: a resumed session shows the certificate of the
    // handshake it resumes, not the one served now.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

pub(super) type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS handshake with 127.0.0.1 over `tcp` (already connected, maybe past a
/// protocol's own preamble); returns the stream and the leaf certificate served.
pub(super) fn tls_handshake(
    config: &Arc<rustls::ClientConfig>,
    mut tcp: TcpStream,
) -> Result<(TlsStream, CertificateDer<'static>), String> {
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut conn =
        rustls::ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no server certificate")?
        .clone()
        .into_owned();
    Ok((rustls::StreamOwned::new(conn, tcp), leaf))
}

/// The leaf certificate in a PEM file.
pub(super) fn leaf_of(pem: &Path) -> CertificateDer<'static> {
    ocean_core::tls::cert_chain(PemFile::new("cert", pem)).unwrap()[0].clone()
}

/// Redis over TLS with AUTH: the test's clients of a router with --tls-cert and
/// --password-file.
#[derive(Clone)]
struct TlsRedis {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    password: String,
}

impl TlsRedis {
    /// A new TLS connection: the stream and the certificate it was served.
    fn open(&self) -> Result<(TlsStream, CertificateDer<'static>), String> {
        let tcp = TcpStream::connect(self.addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        tls_handshake(&self.tls, tcp)
    }

    /// `AUTH password` on a new connection: the reply.
    fn auth(&self, password: &str) -> String {
        let (mut s, _) = self.open().unwrap();
        resp(&mut s, &["AUTH", password]).unwrap()
    }
}

impl Client for TlsRedis {
    type Session = TlsStream;
    fn connect(&self) -> Result<TlsStream, String> {
        let (mut s, _) = self.open()?;
        let auth = resp(&mut s, &["AUTH", &self.password])?;
        if auth != "+OK\r\n" {
            return Err(format!("AUTH: {auth:?}"));
        }
        redis_set_get(&mut s, 0)?;
        Ok(s)
    }
    fn request(&self, s: &mut TlsStream, n: u64) -> Result<(), String> {
        redis_set_get(s, n)
    }
}

/// memcached text protocol: set then get, each request in one write (sent in pieces,
/// Nagle's algorithm holds the rest until the router's delayed ACK: 40 ms a request).
#[derive(Clone)]
struct MemcachedClient(SocketAddr);

impl Client for MemcachedClient {
    type Session = TcpStream;
    fn connect(&self) -> Result<TcpStream, String> {
        let mut s = TcpStream::connect(self.0).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        self.request(&mut s, 0)?;
        Ok(s)
    }
    fn request(&self, s: &mut TcpStream, n: u64) -> Result<(), String> {
        let (key, value) = (format!("reload-{n}"), format!("v{n}"));
        let set = format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
        s.write_all(set.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let r = read_reply(s, mc_reply_complete)?;
        if r != b"STORED\r\n" {
            return Err(format!("set: {:?}", String::from_utf8_lossy(&r)));
        }
        s.write_all(format!("get {key}\r\n").as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let r = read_reply(s, mc_reply_complete)?;
        let want = format!("VALUE {key} 0 {}\r\n{value}\r\nEND\r\n", value.len());
        if r != want.as_bytes() {
            return Err(format!("get: {:?}", String::from_utf8_lossy(&r)));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// DNS over UDP, hand-made.

/// A query for `name` type A (no EDNS), with `id`.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Asks `server` for `name` A over UDP: the IPv4 addresses of the answer, or why not.
fn dns_a(
    sock: &UdpSocket,
    server: SocketAddr,
    id: u16,
    name: &str,
) -> Result<Vec<[u8; 4]>, String> {
    sock.send_to(&dns_query(id, name), server)
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 1500];
    loop {
        let (n, _) = sock
            .recv_from(&mut buf)
            .map_err(|e| format!("{name}: no answer: {e}"))?;
        let a = &buf[..n];
        if a.len() < 12 || u16::from_be_bytes([a[0], a[1]]) != id {
            continue; // a late answer to an earlier query
        }
        let rcode = a[3] & 0x0f;
        let ancount = u16::from_be_bytes([a[6], a[7]]);
        if rcode != 0 || ancount == 0 {
            return Err(format!("{name}: rcode {rcode}, {ancount} answers"));
        }
        return Ok(a_records(a));
    }
}

/// The A records' addresses in the answer section of `msg`.
fn a_records(msg: &[u8]) -> Vec<[u8; 4]> {
    let skip_name = |mut i: usize| -> Option<usize> {
        loop {
            let len = *msg.get(i)?;
            if len & 0xc0 == 0xc0 {
                return Some(i + 2);
            }
            if len == 0 {
                return Some(i + 1);
            }
            i += 1 + len as usize;
        }
    };
    let mut out = Vec::new();
    let Some(mut i) = skip_name(12).map(|i| i + 4) else {
        return out;
    };
    let ancount = u16::from_be_bytes([msg[6], msg[7]]);
    for _ in 0..ancount {
        let Some(j) = skip_name(i) else { break };
        let Some(h) = msg.get(j..j + 10) else { break };
        let (rtype, rdlen) = (
            u16::from_be_bytes([h[0], h[1]]),
            u16::from_be_bytes([h[8], h[9]]),
        );
        let rdata = j + 10;
        if rtype == 1 && rdlen == 4 {
            if let Some(ip) = msg.get(rdata..rdata + 4) {
                out.push([ip[0], ip[1], ip[2], ip[3]]);
            }
        }
        i = rdata + rdlen as usize;
    }
    out
}

/// UDP queries for `name`, which must answer with `want`.
#[derive(Clone)]
struct DnsClient {
    server: SocketAddr,
    name: String,
    want: [u8; 4],
}

impl Client for DnsClient {
    type Session = UdpSocket;
    fn connect(&self) -> Result<UdpSocket, String> {
        let mut s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        self.request(&mut s, 0)?;
        Ok(s)
    }
    fn request(&self, s: &mut UdpSocket, n: u64) -> Result<(), String> {
        let got = dns_a(s, self.server, n as u16, &self.name)?;
        if got != [self.want] {
            return Err(format!("{}: {got:?}", self.name));
        }
        Ok(())
    }
}

/// A stand-in upstream resolver: answers every A query with `ip` (TTL 0), until dropped.
struct FakeResolver {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl FakeResolver {
    fn start(ip: [u8; 4]) -> FakeResolver {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let q = &buf[..n];
                if q.len() < 17 {
                    continue;
                }
                // Header: the query's ID, QR+RD+RA, one question, one answer.
                let mut a = vec![q[0], q[1], 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
                a.extend_from_slice(&q[12..]);
                a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
                a.extend_from_slice(&ip);
                // A lost answer is the client's timeout, which the test reports.
                let _ = sock.send_to(&a, peer);
            }
        });
        FakeResolver { addr, stop }
    }
}

impl Drop for FakeResolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------
// MySQL: the mariadb client for queries, a hand-made SSLRequest for the certificate.

/// `mariadb -e "SELECT 1"` through the proxy as `user` (no password, no TLS).
#[derive(Clone)]
struct MysqlClient {
    addr: SocketAddr,
    user: String,
}

impl MysqlClient {
    fn select_1(&self) -> Result<(), String> {
        let out = Command::new("mariadb")
            .args([
                "--no-defaults",
                "--protocol=tcp",
                "--host=127.0.0.1",
                &format!("--port={}", self.addr.port()),
                &format!("--user={}", self.user),
                "--skip-ssl",
                "--connect-timeout=10",
                "--database=shop",
                "-N",
                "-B",
                "-e",
                "SELECT 1",
            ])
            .output()
            .map_err(|e| format!("cannot run mariadb (Debian package mariadb-client): {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || stdout.trim() != "1" {
            return Err(format!(
                "SELECT 1: {stdout:?} {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }
}

impl Client for MysqlClient {
    type Session = ();
    fn connect(&self) -> Result<(), String> {
        self.select_1()
    }
    fn request(&self, _: &mut (), _: u64) -> Result<(), String> {
        self.select_1()
    }
}

/// Reads one MySQL packet's payload.
fn mysql_packet(s: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head)
        .map_err(|e| format!("packet: {e}"))?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)
        .map_err(|e| format!("packet: {e}"))?;
    Ok(payload)
}

/// The certificate the MySQL proxy at `addr` serves now: greeting, SSLRequest, TLS
/// handshake (then the connection is dropped before any login).
fn mysql_tls_leaf(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> CertificateDer<'static> {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let greeting = mysql_packet(&mut tcp).unwrap();
    assert_eq!(
        greeting.first(),
        Some(&10),
        "not a HandshakeV10: {greeting:?}"
    );
    // CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION.
    let caps: u32 = 0x0001 | 0x0200 | 0x0800 | 0x8000;
    let mut req = vec![32, 0, 0, 1];
    req.extend_from_slice(&caps.to_le_bytes());
    req.extend_from_slice(&(16u32 << 20).to_le_bytes());
    req.push(45);
    req.extend_from_slice(&[0u8; 23]);
    tcp.write_all(&req).unwrap();
    tls_handshake(tls, tcp).unwrap().1
}

// ---------------------------------------------------------------------------------------
// Files.

/// Writes `contents` to `path` whole (a rename), as an operator's deploy tool would.
fn put(path: &Path, contents: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn copy(from: &Path, to: &Path) {
    put(to, std::fs::read(from).unwrap());
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn loopback() -> (SocketAddr, String) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    (addr, addr.to_string())
}

// ---------------------------------------------------------------------------------------
// The tests.

/// redis-router with a TLS certificate and a client password from files: both rotated
/// under load, then both broken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_router_reloads_its_certificate_and_password_under_load() {
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    let (old, new) = (Pki::generate().unwrap(), Pki::generate().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, pw) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("password"),
    );
    copy(&old.cert, &cert);
    copy(&old.key, &key);
    put(&pw, "old-password\n");
    let (listen, listen_s) = loopback();
    let (admin, admin_s) = loopback();
    let mut args = vec![
        "redis-router",
        "--listen",
        &listen_s,
        "--admin",
        &admin_s,
        "--tls-cert",
        s(&cert),
        "--tls-key",
        s(&key),
        "--password-file",
        s(&pw),
    ];
    let seeds: Vec<String> = cluster
        .master_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    for seed in &seeds {
        args.extend(["--seed", seed]);
    }
    let mut d = Daemon::start("redis-router", &args, dir.path());
    let tls = tls_client(&[&old.ca, &new.ca]);
    let client = TlsRedis {
        addr: listen,
        tls: tls.clone(),
        password: "old-password".into(),
    };
    let load = Load::start(client.clone(), 2);
    load.wait_for(100);
    assert_eq!(client.open().unwrap().1, leaf_of(&old.cert));

    // Rotate the certificate and the password: the next client gets the new ones.
    copy(&new.cert, &cert);
    copy(&new.key, &key);
    put(&pw, "new-password\n");
    hup_and_wait(&mut d, admin, "redis-router", Some("ok"));
    assert_eq!(
        client.open().unwrap().1,
        leaf_of(&new.cert),
        "a new TLS client still gets the old certificate"
    );
    assert!(
        client.auth("old-password").starts_with("-WRONGPASS"),
        "the old password still works"
    );
    assert_eq!(client.auth("new-password"), "+OK\r\n");
    load.wait_for(100);

    // Broken files: the reload fails, the router keeps the certificate and password.
    put(&cert, "not a certificate\n");
    put(&pw, "");
    hup_and_wait(&mut d, admin, "redis-router", Some("error"));
    assert_eq!(client.open().unwrap().1, leaf_of(&new.cert));
    assert_eq!(client.auth("new-password"), "+OK\r\n");
    assert!(d.log().contains("reload failed"), "{}", d.log());

    // Repaired, and a reload with nothing new.
    copy(&new.cert, &cert);
    put(&pw, "new-password\n");
    for _ in 0..HUPS - 1 {
        hup_and_wait(&mut d, admin, "redis-router", Some("unchanged"));
    }
    load.wait_for(100);
    d.assert_running();
    load.finish("redis-router clients (TLS, AUTH) during SIGHUPs");
    assert!(reloads(admin, "redis-router", None) > HUPS);
    d.stop();
}

/// Sends `CONFIG SET k v` for each pair to every node of `cluster`, authenticating with
/// `auth` first when given.
async fn redis_config_set(cluster: &RedisCluster, auth: Option<&str>, pairs: &[(&str, &str)]) {
    use ocean_tests::servers::RespClient;
    for addr in cluster.addrs() {
        let mut c = RespClient::connect(addr).await.unwrap();
        if let Some(pw) = auth {
            assert!(c.command(&["AUTH", pw]).await.unwrap().is_ok());
        }
        for (k, v) in pairs {
            let r = c.command(&["CONFIG", "SET", k, v]).await.unwrap();
            assert!(r.is_ok(), "CONFIG SET {k} on {addr}: {r:?}");
        }
    }
}

/// redis-router with `--backend-password-file`, on a cluster that requires a password: the
/// operator changes the nodes' password and the file, sends SIGHUP, and the router's next
/// backend connections log in with the new one (its open ones were killed on the nodes,
/// where the old password no longer works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_router_logs_in_to_backends_with_a_rotated_password() {
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    redis_config_set(
        &cluster,
        None,
        &[
            ("masterauth", "old-backend"),
            ("requirepass", "old-backend"),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("backend-password");
    put(&pw, "old-backend\n");
    let (listen, listen_s) = loopback();
    let (admin, admin_s) = loopback();
    let mut args = vec![
        "redis-router",
        "--listen",
        &listen_s,
        "--admin",
        &admin_s,
        "--backend-password-file",
        s(&pw),
    ];
    let seeds: Vec<String> = cluster
        .master_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    for seed in &seeds {
        args.extend(["--seed", seed]);
    }
    let mut d = Daemon::start("redis-router", &args, dir.path());
    let load = Load::start(PlainRedis(listen), 2);
    load.wait_for(100);

    // The nodes' password changes (connections already logged in stay so), then the file.
    redis_config_set(
        &cluster,
        Some("old-backend"),
        &[
            ("masterauth", "new-backend"),
            ("requirepass", "new-backend"),
        ],
    )
    .await;
    put(&pw, "new-backend\n");
    hup_and_wait(&mut d, admin, "redis-router", Some("ok"));
    load.wait_for(100);
    d.assert_running();
    load.finish("redis-router clients during the backend password rotation");

    // Every backend connection the router had is gone: the next ones need the new password.
    for addr in cluster.addrs() {
        let mut c = ocean_tests::servers::RespClient::connect(addr)
            .await
            .unwrap();
        assert!(c.command(&["AUTH", "new-backend"]).await.unwrap().is_ok());
        let r = c
            .command(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
            .await
            .unwrap();
        assert!(!r.is_error(), "CLIENT KILL on {addr}: {r:?}");
    }
    let client = PlainRedis(listen);
    eventually(
        "SET/GET through the router after its backends were cut",
        || {
            let mut s = client.connect().ok()?;
            (1..=30)
                .all(|n| redis_set_get(&mut s, n).is_ok())
                .then_some(())
        },
    );
    d.assert_running();
    d.stop();
}

// ---------------------------------------------------------------------------------------
// memcached-router: the server list of its `--nutcracker-config` or `--mcrouter-config`.

/// Whether `buf` holds one whole reply to a memcached `set`, `version` or one-key `get`:
/// a `VALUE` block through its `END`, or one line (`STORED`, `END`, an error).
fn mc_reply_complete(buf: &[u8]) -> bool {
    if buf.starts_with(b"VALUE ") {
        buf.ends_with(b"\r\nEND\r\n")
    } else {
        buf.ends_with(b"\r\n")
    }
}

/// One request to memcached (or the router) at `addr` on a new connection: the reply
/// (of a `set`, a one-key `get`, or `stats` through its `END`).
fn mc_direct(addr: SocketAddr, req: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let stats = req.starts_with("stats");
    let reply = read_reply(&mut s, |b| {
        if stats {
            b.ends_with(b"END\r\n")
        } else {
            mc_reply_complete(b)
        }
    })
    .unwrap_or_else(|e| panic!("{req:?} to {addr}: {e}"));
    String::from_utf8(reply).unwrap()
}

/// `STAT name` of the memcached at `addr`.
fn mc_stat(addr: SocketAddr, name: &str) -> u64 {
    let stats = mc_direct(addr, "stats\r\n");
    let prefix = format!("STAT {name} ");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the stats of {addr}:\n{stats}"))
}

/// The value the memcached at `addr` holds for `key`, asked directly (not through the
/// router).
fn mc_value(addr: SocketAddr, key: &str) -> Option<String> {
    let reply = mc_direct(addr, &format!("get {key}\r\n"));
    if reply == "END\r\n" {
        return None;
    }
    let value = reply
        .strip_prefix(&format!("VALUE {key} 0 "))
        .and_then(|r| r.split_once("\r\n"))
        .and_then(|(_, r)| r.strip_suffix("\r\nEND\r\n"));
    Some(
        value
            .unwrap_or_else(|| panic!("get {key} on {addr}: {reply:?}"))
            .to_string(),
    )
}

/// memcached clients of a router whose server list changes under them: `set` then `get`
/// of a key of their own on one connection. Every reply must be `STORED` and then the
/// value just stored, with one exception the router documents (clients use the new ring
/// from their next request batch): a key stored on its old server just before the swap
/// and read just after is looked up on its new server, and misses. Such a miss (a bare
/// `END`) is recorded in `moved`, which the test bounds and checks; anything else (another
/// value, `ERROR`, `SERVER_ERROR`, a closed or reset connection) is a client error.
#[derive(Clone)]
struct ReshardedMemcached {
    addr: SocketAddr,
    moved: Arc<Mutex<Vec<(String, String)>>>,
}

impl Client for ReshardedMemcached {
    type Session = TcpStream;
    fn connect(&self) -> Result<TcpStream, String> {
        let mut s = TcpStream::connect(self.addr).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        // The router answers `version` itself: it proves the router serves without
        // storing a key every connection would share.
        s.write_all(b"version\r\n")
            .map_err(|e| format!("write: {e}"))?;
        let r = read_reply(&mut s, mc_reply_complete)?;
        if !r.starts_with(b"VERSION ") {
            return Err(format!("version: {:?}", String::from_utf8_lossy(&r)));
        }
        Ok(s)
    }
    fn request(&self, s: &mut TcpStream, n: u64) -> Result<(), String> {
        let (key, value) = (format!("reshard-{n}"), format!("v{n}"));
        let set = format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
        s.write_all(set.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let r = read_reply(s, mc_reply_complete)?;
        if r != b"STORED\r\n" {
            return Err(format!("set {key}: {:?}", String::from_utf8_lossy(&r)));
        }
        s.write_all(format!("get {key}\r\n").as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let r = read_reply(s, mc_reply_complete)?;
        let want = format!("VALUE {key} 0 {}\r\n{value}\r\nEND\r\n", value.len());
        if r == want.as_bytes() {
            Ok(())
        } else if r == b"END\r\n" {
            self.moved.lock().unwrap().push((key, value));
            Ok(())
        } else {
            Err(format!("get {key}: {:?}", String::from_utf8_lossy(&r)))
        }
    }
}

/// The files memcached-router re-reads on SIGHUP, as an operator writes them.
#[derive(Clone, Copy)]
enum PoolFile {
    /// twemproxy's nutcracker.yml (`--nutcracker-config`): ketama over md5, listening
    /// where the file says.
    Nutcracker,
    /// mcrouter's JSON (`--listen` and `--mcrouter-config`): a `PoolRoute`, placed with ch3.
    Mcrouter,
}

impl PoolFile {
    fn file_name(self) -> &'static str {
        match self {
            PoolFile::Nutcracker => "nutcracker.yml",
            PoolFile::Mcrouter => "mcrouter.json",
        }
    }

    /// The file for a pool of `servers` served on `listen`. Backend replies may take 5 s
    /// (the default 1 s is a timing assertion on a loaded 2-core machine).
    fn text(self, listen: SocketAddr, servers: &[SocketAddr]) -> String {
        match self {
            PoolFile::Nutcracker => {
                let mut t = format!(
                    "cache:\n  listen: {listen}\n  hash: md5\n  distribution: ketama\n  \
                     timeout: 5000\n  servers:\n"
                );
                for s in servers {
                    t.push_str(&format!("   - {s}:1\n"));
                }
                t
            }
            PoolFile::Mcrouter => {
                let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
                format!(
                    "// the cache pool\n{{\n  \"pools\": {{\"A\": {{\"servers\": [{}]}}}},\n  \
                     \"route\": \"PoolRoute|A\"\n}}\n",
                    list.join(", ")
                )
            }
        }
    }

    /// A file that no longer loads.
    fn broken(self) -> &'static str {
        match self {
            PoolFile::Nutcracker => "cache: [",
            PoolFile::Mcrouter => "{\"pools\": {\"A\": ",
        }
    }

    /// `ocean memcached-router` on `file`, listening on `listen`, admin on `admin`.
    fn args(self, file: &Path, listen: SocketAddr, admin: SocketAddr) -> Vec<String> {
        let mut args = vec!["memcached-router".to_string()];
        match self {
            PoolFile::Nutcracker => args.extend(["--nutcracker-config".into(), s(file).into()]),
            PoolFile::Mcrouter => args.extend([
                "--listen".into(),
                listen.to_string(),
                "--mcrouter-config".into(),
                s(file).into(),
                "--request-timeout".into(),
                "5s".into(),
            ]),
        }
        args.extend(["--admin".into(), admin.to_string()]);
        args
    }
}

/// memcached-router from `kind`'s file with two real memcached, while two clients set and
/// get without pause: SIGHUP with the same file is counted `unchanged`, with a broken file
/// `error` (the pool is kept), and with a third server added `ok`; from then on the new
/// server gets its share of the keys (stored there and read back from there). No client
/// sees an error; the only misses allowed are keys that moved to the new server across
/// the swap, at most one per client connection, each then found where the router now
/// places it.
async fn memcached_router_reloads_its_pool_file_under_load(kind: PoolFile) {
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(Memcached::start().await.unwrap());
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(Memcached::addr).collect();
    let (old, new) = (&addrs[..2], addrs[2]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(kind.file_name());
    let (listen, _) = loopback();
    let (admin, _) = loopback();
    put(&file, kind.text(listen, old));
    let args = kind.args(&file, listen, admin);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut d = Daemon::start("memcached-router", &args, dir.path());
    const CLIENTS: usize = 2;
    let moved = Arc::new(Mutex::new(Vec::new()));
    let load = Load::start(
        ReshardedMemcached {
            addr: listen,
            moved: moved.clone(),
        },
        CLIENTS,
    );
    load.wait_for(100);

    // The same file: nothing to apply. A broken file: refused, the running pool kept.
    hup_and_wait(&mut d, admin, "memcached-router", Some("unchanged"));
    load.wait_for(100);
    put(&file, kind.broken());
    hup_and_wait(&mut d, admin, "memcached-router", Some("error"));
    assert!(d.log().contains("reload failed"), "{}", d.log());
    load.wait_for(100);
    assert!(
        old.iter().all(|a| mc_stat(*a, "curr_items") > 0),
        "both servers of the file hold keys"
    );
    assert_eq!(
        mc_stat(new, "curr_items"),
        0,
        "the server not in the file got keys"
    );
    assert_eq!(
        moved.lock().unwrap().clone(),
        Vec::<(String, String)>::new(),
        "gets missed while the server list stayed the same"
    );

    // A third server in the file: applied, and the clients' keys reach it from now on.
    put(&file, kind.text(listen, &addrs));
    hup_and_wait(&mut d, admin, "memcached-router", Some("ok"));
    eventually(
        "the added server to store and serve keys set through the router",
        || (mc_stat(new, "curr_items") >= 100 && mc_stat(new, "get_hits") >= 100).then_some(()),
    );
    load.wait_for(100);
    d.assert_running();
    load.finish(&format!(
        "memcached-router clients during SIGHUPs of {}",
        kind.file_name()
    ));

    // A miss is a key set on its old server one batch before the ring swap and read from
    // its new one: each connection crosses the swap once.
    let moved = moved.lock().unwrap().clone();
    assert!(
        moved.len() <= CLIENTS,
        "{} gets missed across one change of the server list: {moved:?}",
        moved.len()
    );
    for (key, value) in &moved {
        assert!(
            old.iter()
                .any(|a| mc_value(*a, key).as_deref() == Some(value.as_str())),
            "{key} missed, yet no server of the old list holds it"
        );
        let again = format!("set {key} 0 0 5\r\nagain\r\n");
        assert_eq!(mc_direct(listen, &again), "STORED\r\n");
        assert_eq!(
            mc_value(new, key).as_deref(),
            Some("again"),
            "{key} missed, yet the router does not place it on the added server"
        );
    }
    d.stop();
}

/// memcached-router on twemproxy's nutcracker.yml: a server added to the file is used
/// after SIGHUP while clients run, with no client error (see
/// [`memcached_router_reloads_its_pool_file_under_load`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_router_applies_a_new_nutcracker_server_on_sighup_under_load() {
    memcached_router_reloads_its_pool_file_under_load(PoolFile::Nutcracker).await;
}

/// memcached-router on mcrouter's JSON: a server added to the pool is used after SIGHUP
/// while clients run, with no client error (ch3 moves keys only to the added server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_router_applies_a_new_mcrouter_server_on_sighup_under_load() {
    memcached_router_reloads_its_pool_file_under_load(PoolFile::Mcrouter).await;
}

/// mysql-proxy with TLS, `--client-ca` and `--rsa-key`: a new certificate is served after
/// SIGHUP, a broken one is refused (the old one stays), a new client CA is applied, and
/// `SELECT 1` through the proxy never fails meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_proxy_reloads_its_certificate_under_load() {
    let db = ocean_tests::servers::MariaDb::start().await.unwrap();
    db.exec_sql(
        "CREATE DATABASE IF NOT EXISTS shop; \
         CREATE USER IF NOT EXISTS 'reload_rw'@'127.0.0.1' IDENTIFIED BY 'reload-rw-secret'; \
         GRANT ALL ON shop.* TO 'reload_rw'@'127.0.0.1'",
    )
    .await
    .unwrap();
    let (old, new) = (Pki::generate().unwrap(), Pki::generate().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (cert, key, ca, rsa, table) = (
        p("cert.pem"),
        p("key.pem"),
        p("client-ca.pem"),
        p("rsa.pem"),
        p("mysql.json"),
    );
    copy(&old.cert, &cert);
    copy(&old.key, &key);
    copy(&old.ca, &ca);
    copy(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("mysql-proxy/tests/data/rsa-2048-test-only.pem"),
        &rsa,
    );
    put(
        &table,
        super::mysql_table(db.addr(), "reload_rw", "reload-rw-secret"),
    );
    let (listen, listen_s) = loopback();
    let (admin, admin_s) = loopback();
    let mut d = Daemon::start(
        "mysql-proxy",
        &[
            "mysql-proxy",
            "--listen",
            &listen_s,
            "--admin",
            &admin_s,
            "--table-file",
            s(&table),
            "--host-ip",
            "192.0.2.77",
            "--tls-cert",
            s(&cert),
            "--tls-key",
            s(&key),
            "--client-ca",
            s(&ca),
            "--rsa-key",
            s(&rsa),
        ],
        dir.path(),
    );
    let load = Load::start(
        MysqlClient {
            addr: listen,
            user: "shop/web".into(),
        },
        2,
    );
    load.wait_for(5);
    let tls = tls_client(&[&old.ca, &new.ca]);
    assert_eq!(mysql_tls_leaf(listen, &tls), leaf_of(&old.cert));

    // A new certificate and a new client CA.
    copy(&new.cert, &cert);
    copy(&new.key, &key);
    copy(&new.ca, &ca);
    hup_and_wait(&mut d, admin, "mysql-proxy", Some("ok"));
    assert_eq!(
        mysql_tls_leaf(listen, &tls),
        leaf_of(&new.cert),
        "a new TLS client still gets the old certificate"
    );
    let log = d.log();
    assert!(
        log.contains("--tls-cert/--tls-key") && log.contains("--client-ca"),
        "the reload does not say what changed:\n{log}"
    );
    load.wait_for(5);

    // A broken certificate: refused, counted, the current one still served.
    put(
        &cert,
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    );
    hup_and_wait(&mut d, admin, "mysql-proxy", Some("error"));
    assert_eq!(mysql_tls_leaf(listen, &tls), leaf_of(&new.cert));
    load.wait_for(5);

    copy(&new.cert, &cert);
    for _ in 0..HUPS - 1 {
        hup_and_wait(&mut d, admin, "mysql-proxy", Some("unchanged"));
    }
    load.wait_for(5);
    d.assert_running();
    load.finish("mysql-proxy clients (SELECT 1) during SIGHUPs");
    d.stop();
}

/// A Mesos-DNS config.json for `ocean dns`: DNS on `dns`, HTTP on `http`, forwarding to
/// `resolver`.
fn mesos_dns_config(dns: SocketAddr, http: SocketAddr, resolver: SocketAddr) -> String {
    serde_json::json!({
        "listener": dns.ip().to_string(),
        "port": dns.port(),
        "httplistener": http.ip().to_string(),
        "httpport": http.port(),
        "resolvers": [resolver.to_string()],
        "timeout": 2,
    })
    .to_string()
}

/// dns with a Mesos-DNS config.json: new resolvers apply at once after SIGHUP, a new DNS
/// port is logged as needing a restart (the old one keeps serving), a broken file
/// changes nothing; queries of the zone never fail meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_reloads_its_mesos_dns_resolvers_under_load() {
    let (first, second) = (
        FakeResolver::start([10, 9, 0, 1]),
        FakeResolver::start([10, 9, 0, 2]),
    );
    let dir = tempfile::tempdir().unwrap();
    let (table, config) = (dir.path().join("dns.json"), dir.path().join("config.json"));
    put(
        &table,
        serde_json::json!({
            "domain": "mesos",
            "ttl": 60,
            "soa": {"mname": "ns1.mesos.", "rname": "root.ns1.mesos.", "refresh_s": 60, "retry_s": 600, "expire_s": 86400},
            "names": {"web.marathon.mesos.": {"a": ["10.0.0.5"]}}
        })
        .to_string(),
    );
    let (dns, _) = loopback();
    let (http, _) = loopback();
    put(&config, mesos_dns_config(dns, http, first.addr));
    let mut d = Daemon::start(
        "dns",
        &[
            "dns",
            "--table-file",
            s(&table),
            "--mesos-dns-config",
            s(&config),
            "--udp-workers",
            "1",
        ],
        dir.path(),
    );
    let load = Load::start(
        DnsClient {
            server: dns,
            name: "web.marathon.mesos".into(),
            want: [10, 0, 0, 5],
        },
        2,
    );
    load.wait_for(100);
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    assert_eq!(
        dns_a(&probe, dns, 1, "outside.example").unwrap(),
        [[10, 9, 0, 1]]
    );

    // New resolvers (applied) and a new DNS port (needs a restart: logged, not applied).
    let (moved, _) = loopback();
    put(&config, mesos_dns_config(moved, http, second.addr));
    hup_and_wait(&mut d, http, "dns", Some("ok"));
    assert_eq!(
        dns_a(&probe, dns, 2, "outside.example").unwrap(),
        [[10, 9, 0, 2]],
        "forwarding still goes to the old resolver"
    );
    assert!(
        d.log().contains("needs a restart"),
        "the new port is not reported:\n{}",
        d.log()
    );
    load.wait_for(100);

    // A broken file: refused, counted; forwarding unchanged.
    put(&config, "{ not json");
    hup_and_wait(&mut d, http, "dns", Some("error"));
    assert_eq!(
        dns_a(&probe, dns, 3, "outside.example").unwrap(),
        [[10, 9, 0, 2]]
    );
    put(&config, mesos_dns_config(dns, http, second.addr));
    hup_and_wait(&mut d, http, "dns", Some("unchanged"));
    load.wait_for(100);
    d.assert_running();
    load.finish("dns clients (UDP) during SIGHUPs");
    d.stop();
}

/// lvs-sync with the dry-run backend (no root): SIGHUP is answered, the daemon keeps
/// following its table; its admin port is the client here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lvs_sync_survives_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("lvs.json");
    let service = |weight: u32| {
        serde_json::json!({"services": [{
            "vip": "10.0.0.1", "port": 80, "protocol": "tcp", "scheduler": "wrr",
            "reals": [{"ip": "10.1.0.1", "port": 80, "weight": weight, "forward": "dr"}]
        }]})
        .to_string()
    };
    put(&table, service(1));
    let (admin, admin_s) = loopback();
    let mut d = Daemon::start(
        "lvs-sync",
        &[
            "lvs-sync",
            "--backend",
            "dry-run",
            "--table-file",
            s(&table),
            "--admin",
            &admin_s,
        ],
        dir.path(),
    );
    eventually("the first plan", || {
        d.log()
            .contains("ipvsadm -A -t 10.0.0.1:80 -s wrr")
            .then_some(())
    });
    let load = Load::start(Admin(admin), 1);
    load.wait_for(20);
    for _ in 0..HUPS {
        hup_and_wait(&mut d, admin, "lvs-sync", Some("unchanged"));
    }
    // Still following the table after the reloads.
    put(&table, service(5));
    eventually("the plan of the changed table", || {
        d.log().contains("-w 5").then_some(())
    });
    load.wait_for(20);
    d.assert_running();
    load.finish("lvs-sync admin clients during SIGHUPs");
    d.stop();
}

/// `GET /metrics` on an admin port, which must answer 200.
#[derive(Clone)]
struct Admin(SocketAddr);

impl Client for Admin {
    type Session = ();
    fn connect(&self) -> Result<(), String> {
        self.request(&mut (), 0)
    }
    fn request(&self, _: &mut (), _: u64) -> Result<(), String> {
        match http_get(self.0, "/metrics") {
            Some((200, _)) => Ok(()),
            other => Err(format!("GET /metrics: {other:?}")),
        }
    }
}

/// `GET path` of control's API at `api`, which must answer 200 with JSON.
fn control_json(api: SocketAddr, path: &str) -> Option<serde_json::Value> {
    match http_get(api, path)? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// `ocean up` with control and every proxy in one process: one SIGHUP reaches every
/// reloader (control, dns, redis-router, memcached-router, mysql-proxy, lvs-sync), and
/// Redis, memcached and DNS clients see no error. The first SIGHUP also brings a changed
/// control.toml: a new ownership rule refuses the claim of a second memcached pool, which
/// shows in `/v1/problems`, leaves the memcached table, and closes the router's listener
/// of that pool, while the clients of the first pool run on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocean_up_reloads_every_daemon_under_load() {
    use ocean_tests::fake_marathon::{app, task};

    let mc = Memcached::start().await.unwrap();
    let spare_mc = Memcached::start().await.unwrap();
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    let (mc_port, redis_port, spare_port) = (
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    );
    let memcached_app = |id: &str, pool: &str, port: u16, server: SocketAddr| {
        let mut a = app(
            id,
            serde_json::json!({"OCEAN_MEMCACHED_POOL": pool, "OCEAN_MEMCACHED_REPLICA": "a"}),
            port,
        );
        a["tasks"] = serde_json::json!([task(id, 1, &server.ip().to_string(), &[server.port()])]);
        a
    };
    let memcached = memcached_app("/cache/memcached", "demo", mc_port, mc.addr());
    // Another team's pool, which the new rule will refuse.
    let spare = memcached_app("/batch/memcached", "spare", spare_port, spare_mc.addr());
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
    put(
        &dir.path().join("apps.json"),
        serde_json::json!({"apps": [memcached, redis, spare]}).to_string(),
    );
    // The drop guard would hold the memcached table's last good version for a while when
    // the refusal drops half its servers; this test is about the rule.
    let control_toml = dir.path().join("control.toml");
    let guard = "[guard]\nmax_drop = 1.0\ndrop_hold = \"0s\"\n";
    put(&control_toml, guard);
    let (api, _) = loopback();
    let (admin, _) = loopback();
    let (mc_admin, _) = loopback();
    let (dns, _) = loopback();
    let (dns_http, _) = loopback();
    let (mysql, _) = loopback();
    let up = dir.path().join("up.toml");
    put(
        &up,
        format!(
            "[control]\nlisten = \"{api}\"\napps_file = \"apps.json\"\nconfig = \"control.toml\"\n\n\
             [redis_router]\nadmin = \"{admin}\"\n\n\
             [memcached_router]\nadmin = \"{mc_admin}\"\n\n\
             [dns]\nlisten = \"{dns}\"\nhttp = \"{dns_http}\"\nudp_workers = 1\n\n\
             [mysql_proxy]\nlisten = \"{mysql}\"\n\n\
             [lvs_sync]\nbackend = \"dry-run\"\n"
        ),
    );
    let (proc, _url, _stdout) = start_up(&["up", "--config", up.to_str().unwrap()]);
    let pid = Pid::from_raw(i32::try_from(proc.0.as_ref().unwrap().id()).unwrap());

    let redis = Load::start(
        PlainRedis(SocketAddr::from(([127, 0, 0, 1], redis_port))),
        2,
    );
    let memcached = Load::start(
        MemcachedClient(SocketAddr::from(([127, 0, 0, 1], mc_port))),
        1,
    );
    let names = Load::start(
        DnsClient {
            server: dns,
            name: "memcached-cache.marathon.mesos".into(),
            want: match mc.addr().ip() {
                std::net::IpAddr::V4(ip) => ip.octets(),
                std::net::IpAddr::V6(_) => unreachable!("the harness listens on IPv4"),
            },
        },
        1,
    );
    for load in [&redis, &memcached, &names] {
        load.wait_for(50);
    }
    // Before the rule: the spare pool is claimed without a problem and served.
    let spare_addr = SocketAddr::from(([127, 0, 0, 1], spare_port));
    eventually("the spare pool served through the router", || {
        let mut s = MemcachedClient(spare_addr).connect().ok()?;
        MemcachedClient(spare_addr).request(&mut s, 1).ok()
    });
    let problems = control_json(api, "/v1/problems").expect("GET /v1/problems");
    assert_eq!(
        super::reload_control::problems_of(&problems, "/batch/memcached", "memcached"),
        Vec::<String>::new(),
        "{problems}"
    );

    // The operator gives the pool name `spare` to another team, then signals.
    put(
        &control_toml,
        format!("{guard}[memcached.pools.spare]\napps = [\"/platform/\"]\n"),
    );
    let daemons = [
        "control",
        "dns",
        "redis-router",
        "memcached-router",
        "mysql-proxy",
        "lvs-sync",
    ];
    for hup in 1..=HUPS {
        kill(pid, Signal::SIGHUP).unwrap();
        // One recorder for the whole process: any admin port shows every daemon's count.
        for daemon in daemons {
            eventually(&format!("ocean up: {daemon} to count SIGHUP {hup}"), || {
                (reloads(admin, daemon, None) >= hup).then_some(())
            });
        }
        for load in [&redis, &memcached, &names] {
            load.wait_for(20);
        }
    }
    // The first SIGHUP applied the rule, the next two found nothing new.
    assert_eq!(reloads(admin, "control", Some("ok")), 1);
    assert_eq!(reloads(admin, "control", Some("unchanged")), HUPS - 1);

    // The rule took effect: the claim is refused and reported, the pool leaves the table,
    // and the router closes its listener.
    let problems = eventually("/v1/problems to report the refused claim", || {
        let p = control_json(api, "/v1/problems")?;
        let msgs = super::reload_control::problems_of(&p, "/batch/memcached", "memcached");
        (!msgs.is_empty()).then_some(msgs)
    });
    assert!(problems.iter().any(|m| m.contains("spare")), "{problems:?}");
    eventually("the refused pool to leave the memcached table", || {
        let t = control_json(api, "/v1/tables/memcached")?;
        (t.to_string().contains("\"demo\"") && !t.to_string().contains("\"spare\"")).then_some(())
    });
    eventually("the router to close the refused pool's listener", || {
        TcpStream::connect(spare_addr).is_err().then_some(())
    });
    for load in [&redis, &memcached, &names] {
        load.wait_for(50);
    }
    let mut proc = proc;
    assert!(
        proc.0.as_mut().unwrap().try_wait().unwrap().is_none(),
        "ocean up exited after SIGHUP"
    );
    redis.finish("ocean up: Redis clients during SIGHUPs");
    memcached.finish("ocean up: memcached clients during SIGHUPs");
    names.finish("ocean up: DNS clients during SIGHUPs");
    terminate(proc);
}
