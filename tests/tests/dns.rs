//! `ocean dns` end to end: fake Marathon -> control -> ocean dns, queried with `dig`
//! (bind9-dnsutils) and with hickory's codec over raw sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use ocean_control::config::Source;
use ocean_core::subscriber::SubscriberConfig;
use ocean_tests::fake_marathon::{app, task, FakeMarathon};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// What dig printed, parsed.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answers: Vec<(String, String, String)>,
    authority: Vec<String>,
    opt: bool,
    raw: String,
}

impl Dig {
    fn values(&self, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .answers
            .iter()
            .filter(|(_, t, _)| t == rtype)
            .map(|(_, _, d)| d.clone())
            .collect();
        v.sort();
        v
    }
}

fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args([
            "-p",
            &server.port().to_string(),
            "+norec",
            "+nocmd",
            "+noall",
            "+comments",
            "+answer",
            "+authority",
            "+time=2",
            "+tries=1",
        ])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run dig ({e}): install the Debian package bind9-dnsutils")
        });
    let raw = String::from_utf8_lossy(&out.stdout).to_string();
    let mut d = Dig {
        status: String::new(),
        flags: Vec::new(),
        answers: Vec::new(),
        authority: Vec::new(),
        opt: raw.contains("OPT PSEUDOSECTION"),
        raw: raw.clone(),
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest.split(',').next().unwrap_or("").to_string();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            d.flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect();
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(';') || line.trim().is_empty() {
            if line.trim().is_empty() {
                section = "";
            }
        } else {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 5 {
                match section {
                    "answer" => {
                        d.answers
                            .push((f[0].to_string(), f[3].to_string(), f[4..].join(" ")))
                    }
                    "authority" => d.authority.push(f[3].to_string()),
                    _ => {}
                }
            }
        }
    }
    d
}

struct Stack {
    marathon: FakeMarathon,
    dns: SocketAddr,
    cancel: CancellationToken,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn running(id: &str, n: u32, host: &str, ports: &[u16]) -> serde_json::Value {
    let mut t = task(id, n, host, ports);
    t["slaveId"] = json!(format!("20140803-125133-3041283216-5050-2410-S{n}"));
    t
}

async fn stack(resolvers: Vec<SocketAddr>) -> Stack {
    stack_with(resolvers, |_| {}).await
}

/// [`stack`] with the dns config adjusted by `tweak` before it starts.
async fn stack_with(
    resolvers: Vec<SocketAddr>,
    tweak: impl FnOnce(&mut ocean_dns::Config),
) -> Stack {
    let m = FakeMarathon::start().await.unwrap();
    // Host networking, nested groups, a named port.
    m.put_app(app("/shop/web", json!({}), 10000));
    for n in 1..=3 {
        m.add_task(
            "/shop/web",
            running(
                "/shop/web",
                n,
                &format!("127.0.10.{n}"),
                &[31000 + n as u16],
            ),
        );
    }
    // IP per task.
    m.put_app(json!({
        "id": "/db/redis", "labels": {}, "tasks": [],
        "container": {"type": "DOCKER", "portMappings": [{"containerPort": 6379, "name": "redis", "protocol": "tcp"}]},
        "networks": [{"mode": "container", "name": "dcos"}]
    }));
    let mut t = running("/db/redis", 1, "127.0.20.1", &[]);
    t["ipAddresses"] = json!([{"ipAddress": "127.0.21.1", "protocol": "IPv4"}]);
    m.add_task("/db/redis", t);
    // Docker bridge: the 172.17 address must never be answered.
    m.put_app(json!({
        "id": "/cache/bridge", "labels": {}, "tasks": [],
        "container": {"type": "DOCKER", "portMappings": [{"containerPort": 11211, "hostPort": 0, "servicePort": 10011, "protocol": "tcp"}]},
        "networks": [{"mode": "container/bridge"}]
    }));
    let mut t = running("/cache/bridge", 1, "127.0.30.1", &[31999]);
    t["ipAddresses"] = json!([{"ipAddress": "172.17.0.2", "protocol": "IPv4"}]);
    m.add_task("/cache/bridge", t);
    // Health checks: the failing task is left out.
    let mut hc = app("/api/checked", json!({}), 10002);
    hc["healthChecks"] = json!([{"protocol": "HTTP", "path": "/health"}]);
    m.put_app(hc);
    for (n, alive) in [(1, true), (2, false)] {
        let mut t = running("/api/checked", n, &format!("127.0.40.{n}"), &[31500]);
        t["healthCheckResults"] = json!([{"alive": alive}]);
        m.add_task("/api/checked", t);
    }
    // 300 tasks: the SRV answer does not fit UDP.
    m.put_app(app("/big", json!({}), 10003));
    for n in 1..=300u32 {
        m.add_task(
            "/big",
            running(
                "/big",
                n,
                &format!("127.1.{}.{}", n / 250, n % 250 + 1),
                &[32000],
            ),
        );
    }

    let cancel = CancellationToken::new();
    let mut c = ocean_control::Config::new(Source::Marathon(vec![m.url()]));
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.debounce = Duration::from_millis(20);
    c.derive.dns.masters = vec![
        "127.0.50.1:5050".parse().unwrap(),
        "127.0.50.2:5050".parse().unwrap(),
    ];
    let control = ocean_control::engine::start(c, cancel.clone())
        .await
        .unwrap();
    let mut d = ocean_dns::Config::new(SubscriberConfig {
        controls: vec![url::Url::parse(&format!("http://{}", control.addr)).unwrap()],
        backoff_max: Duration::from_millis(200),
        ..Default::default()
    });
    d.listen = "127.0.0.1:0".parse().unwrap();
    d.http = None;
    d.udp_workers = 2;
    d.resolvers = resolvers;
    d.tcp_idle_timeout = Duration::from_secs(1);
    tweak(&mut d);
    let dns = ocean_dns::server::start(d, cancel.clone()).await.unwrap();
    let addr = dns.dns_addr;
    let deadline = Instant::now() + Duration::from_secs(10);
    while dns.zone.load().is_none() {
        assert!(Instant::now() < deadline, "no zone loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Stack {
        marathon: m,
        dns: addr,
        cancel,
    }
}

async fn dig_async(server: SocketAddr, args: &[&str]) -> Dig {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        dig(server, &args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_kind_over_udp_and_tcp_with_and_without_edns() {
    let s = stack(vec![]).await;
    let ns = s.dns;

    // A, nested group, authoritative, EDNS echoed.
    let d = dig_async(ns, &["web-shop.marathon.mesos", "A"]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(d.flags.contains(&"aa".to_string()), "{}", d.raw);
    assert!(d.opt, "EDNS not echoed: {}", d.raw);
    assert_eq!(
        d.values("A"),
        vec!["127.0.10.1", "127.0.10.2", "127.0.10.3"]
    );
    // Without EDNS: no OPT in the answer.
    let d = dig_async(ns, &["+noedns", "web-shop.marathon.mesos"]).await;
    assert!(!d.opt);
    assert_eq!(d.values("A").len(), 3);
    // TCP, and case-insensitive.
    let d = dig_async(ns, &["+tcp", "WEB-Shop.Marathon.MESOS"]).await;
    assert_eq!(d.values("A").len(), 3, "{}", d.raw);
    // The raw dotted name and the agent names.
    assert_eq!(
        dig_async(ns, &["web.shop.marathon.mesos"])
            .await
            .values("A")
            .len(),
        3
    );
    assert_eq!(
        dig_async(ns, &["web-shop.marathon.slave.mesos"])
            .await
            .values("A")
            .len(),
        3
    );
    // SRV: targets are canonical task names that resolve.
    let d = dig_async(ns, &["_web-shop._tcp.marathon.mesos", "SRV"]).await;
    let srv = d.values("SRV");
    assert_eq!(srv.len(), 3, "{}", d.raw);
    let target = srv[0].split_whitespace().last().unwrap().to_string();
    assert!(
        target.starts_with("web-shop-") && target.ends_with(".marathon.mesos."),
        "{target}"
    );
    let a = dig_async(ns, &[&target]).await.values("A");
    assert_eq!(a.len(), 1);
    assert!(a[0].starts_with("127.0.10."));
    // Named port and the .slave. SRV over UDP.
    assert_eq!(
        dig_async(ns, &["_main._web-shop._tcp.marathon.mesos", "SRV"])
            .await
            .values("SRV")
            .len(),
        3
    );
    assert_eq!(
        dig_async(ns, &["_web-shop._udp.marathon.slave.mesos", "SRV"])
            .await
            .values("SRV")
            .len(),
        3
    );
    // IP per task: the container address and port.
    assert_eq!(
        dig_async(ns, &["redis-db.marathon.mesos"])
            .await
            .values("A"),
        vec!["127.0.21.1"]
    );
    assert_eq!(
        dig_async(ns, &["redis-db.marathon.slave.mesos"])
            .await
            .values("A"),
        vec!["127.0.20.1"]
    );
    let srv = dig_async(ns, &["_redis._redis-db._tcp.marathon.mesos", "SRV"])
        .await
        .values("SRV");
    assert!(srv[0].starts_with("0 1 6379 "), "{srv:?}");
    // Docker bridge: the agent, never 172.17.
    assert_eq!(
        dig_async(ns, &["bridge-cache.marathon.mesos"])
            .await
            .values("A"),
        vec!["127.0.30.1"]
    );
    // Failing health check left out.
    assert_eq!(
        dig_async(ns, &["checked-api.marathon.mesos"])
            .await
            .values("A"),
        vec!["127.0.40.1"]
    );
    // Masters and leader.
    assert_eq!(
        dig_async(ns, &["master.mesos"]).await.values("A"),
        vec!["127.0.50.1", "127.0.50.2"]
    );
    assert_eq!(
        dig_async(ns, &["master1.mesos"]).await.values("A"),
        vec!["127.0.50.2"]
    );
    assert_eq!(
        dig_async(ns, &["leader.mesos"]).await.values("A"),
        vec!["127.0.50.1"]
    );
    assert_eq!(
        dig_async(ns, &["_leader._tcp.mesos", "SRV"])
            .await
            .values("SRV"),
        vec!["0 1 5050 leader.mesos."]
    );
    // SOA and NS at the apex.
    let soa = dig_async(ns, &["mesos", "SOA"]).await.values("SOA");
    assert!(soa[0].starts_with("ns1.mesos. root.ns1.mesos. "), "{soa:?}");
    assert_eq!(
        dig_async(ns, &["mesos", "NS"]).await.values("NS"),
        vec!["ns1.mesos."]
    );
    // NXDOMAIN with SOA; NODATA (NOERROR, no answer, SOA) for another type; an empty
    // non-terminal is NODATA too.
    let d = dig_async(ns, &["nope.marathon.mesos"]).await;
    assert_eq!(
        (d.status.as_str(), d.authority.clone()),
        ("NXDOMAIN", vec!["SOA".to_string()]),
        "{}",
        d.raw
    );
    let d = dig_async(ns, &["web-shop.marathon.mesos", "AAAA"]).await;
    assert_eq!(
        (d.status.as_str(), d.answers.len(), d.authority.clone()),
        ("NOERROR", 0, vec!["SOA".to_string()]),
        "{}",
        d.raw
    );
    let d = dig_async(ns, &["marathon.mesos"]).await;
    assert_eq!(
        (d.status.as_str(), d.answers.len()),
        ("NOERROR", 0),
        "{}",
        d.raw
    );
    // Outside the domain without resolvers: REFUSED.
    assert_eq!(dig_async(ns, &["example.com"]).await.status, "REFUSED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_task_srv_answer_sets_tc_over_udp_and_comes_whole_over_tcp() {
    let s = stack(vec![]).await;
    for edns in ["+noedns", "+edns=0"] {
        let d = dig_async(s.dns, &[edns, "+ignore", "_big._tcp.marathon.mesos", "SRV"]).await;
        assert!(d.flags.contains(&"tc".to_string()), "{edns}: {}", d.raw);
        assert_eq!(d.answers.len(), 0);
    }
    // dig retries over TCP by itself once it sees TC.
    let d = dig_async(s.dns, &["_big._tcp.marathon.mesos", "SRV"]).await;
    assert_eq!(
        d.values("SRV").len(),
        300,
        "{}",
        &d.raw[..d.raw.len().min(400)]
    );
    let d = dig_async(s.dns, &["+tcp", "big.marathon.mesos"]).await;
    assert_eq!(d.values("A").len(), 300);
    // A big EDNS buffer still caps at our 1232 bytes: 300 A records do not fit.
    let d = dig_async(s.dns, &["+bufsize=65000", "+ignore", "big.marathon.mesos"]).await;
    assert!(d.flags.contains(&"tc".to_string()), "{}", d.raw);
}

/// One query over UDP with hickory's encoder, decoded by hickory.
async fn hickory_udp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hickory_client_decodes_every_answer() {
    let s = stack(vec![]).await;
    let r = hickory_udp(s.dns, "web-shop.marathon.mesos.", RecordType::A).await;
    assert_eq!(r.metadata.id, 4242);
    assert!(r.metadata.authoritative);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 3);
    let r = hickory_udp(s.dns, "_web-shop._tcp.marathon.mesos.", RecordType::SRV).await;
    assert_eq!(r.answers.len(), 3);
    // The additional section carries the targets' addresses.
    let targets: Vec<String> = r
        .answers
        .iter()
        .filter_map(|a| match &a.data {
            RData::SRV(srv) => Some(srv.target.to_ascii()),
            _ => None,
        })
        .collect();
    assert_eq!(targets.len(), 3);
    assert_eq!(r.additionals.len(), 3);
    let r = hickory_udp(s.dns, "nope.marathon.mesos.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(r.authorities.len(), 1);
    let r = hickory_udp(s.dns, "mesos.", RecordType::SOA).await;
    assert!(matches!(r.answers[0].data, RData::SOA(_)));
    let r = hickory_udp(s.dns, "web-shop.marathon.mesos.", RecordType::ANY).await;
    assert_eq!(r.answers.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_added_or_killed_in_marathon_is_answered_within_a_second() {
    let s = stack(vec![]).await;
    let t0 = Instant::now();
    s.marathon
        .add_task("/shop/web", running("/shop/web", 9, "127.0.10.9", &[31009]));
    loop {
        let a = dig_async(s.dns, &["web-shop.marathon.mesos"])
            .await
            .values("A");
        if a.contains(&"127.0.10.9".to_string()) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "added task not answered within 1 s: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("task added -> dig answers it: {:?}", t0.elapsed());
    let id = running("/shop/web", 1, "x", &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t0 = Instant::now();
    s.marathon.kill_task("/shop/web", &id);
    loop {
        let a = dig_async(s.dns, &["web-shop.marathon.mesos"])
            .await
            .values("A");
        if !a.contains(&"127.0.10.1".to_string()) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "killed task still answered after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("task killed -> dig stops answering it: {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_outside_the_domain_are_forwarded_to_a_local_upstream() {
    // The upstream is another ocean dns serving `example.` from a table file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dns.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({
            "domain": "example", "ttl": 30,
            "soa": {"mname": "ns1.example.", "rname": "root.ns1.example.", "refresh_s": 60, "retry_s": 600, "expire_s": 86400},
            "names": {"www.example.": {"a": ["127.0.60.1"]}}
        }))
        .unwrap(),
    )
    .unwrap();
    let cancel = CancellationToken::new();
    let mut up = ocean_dns::Config::new(SubscriberConfig {
        table_file: Some(file),
        ..Default::default()
    });
    up.listen = "127.0.0.1:0".parse().unwrap();
    up.http = None;
    up.udp_workers = 1;
    let upstream = ocean_dns::server::start(up, cancel.clone()).await.unwrap();
    while upstream.zone.load().is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A dead upstream first: it times out and the next one answers.
    let dead: SocketAddr = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let s = stack(vec![dead, upstream.dns_addr]).await;
    for transport in ["+notcp", "+tcp"] {
        let d = dig_async(s.dns, &[transport, "+time=5", "www.example"]).await;
        assert_eq!(d.status, "NOERROR", "{transport}: {}", d.raw);
        assert_eq!(d.values("A"), vec!["127.0.60.1"], "{transport}");
        // The upstream's NXDOMAIN comes back as it is.
        let d = dig_async(s.dns, &[transport, "+time=5", "nope.example"]).await;
        assert_eq!(d.status, "NXDOMAIN", "{transport}");
    }
    // Our own zone is still answered by us.
    assert_eq!(
        dig_async(s.dns, &["web-shop.marathon.mesos"])
            .await
            .values("A")
            .len(),
        3
    );
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_formerr_or_nothing_and_everyone_else_is_served() {
    let s = stack(vec![]).await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = s.dns;
    let ask = |q: Vec<u8>| {
        let sock = &sock;
        async move {
            let mut buf = vec![0u8; 4096];
            sock.send_to(&q, server).await.unwrap();
            match tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
                _ => None,
            }
        }
    };
    let rcode = |r: &[u8]| r[3] & 0x0f;
    // Truncated header: nothing.
    assert!(ask(vec![1, 2, 3, 4, 5]).await.is_none());
    // Random bytes shaped like a query header with garbage after: FORMERR or nothing.
    let mut x: u32 = 12345;
    for _ in 0..200 {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        for _ in 0..40 {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            q.push((x >> 16) as u8);
        }
        if let Some(r) = ask(q).await {
            assert!(r[2] & 0x80 != 0, "not a response");
        }
    }
    // A compression loop in the question.
    let r = ask(vec![
        0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1,
    ])
    .await
    .unwrap();
    assert_eq!((r[0], r[1], rcode(&r)), (0xab, 0xcd, 1));
    // A question of 300 labels.
    let mut q = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for _ in 0..300 {
        q.extend_from_slice(&[1, b'a']);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(rcode(&ask(q).await.unwrap()), 1);
    // Ten questions.
    let mut q = vec![0, 2, 1, 0, 0, 10, 0, 0, 0, 0, 0, 0];
    for _ in 0..10 {
        q.extend_from_slice(&[1, b'a', 5, b'm', b'e', b's', b'o', b's', 0, 0, 1, 0, 1]);
    }
    assert_eq!(rcode(&ask(q).await.unwrap()), 1);
    // A response sent to us is never answered (no reflection loops).
    assert!(ask(vec![0, 3, 0x84, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .await
        .is_none());

    // A TCP client that sends a length and stalls is cut; others are served meanwhile.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stalled = tokio::net::TcpStream::connect(s.dns).await.unwrap();
    stalled.write_all(&[0, 40, 0, 1]).await.unwrap();
    let d = dig_async(s.dns, &["+tcp", "web-shop.marathon.mesos"]).await;
    assert_eq!(d.values("A").len(), 3);
    let mut b = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut b))
        .await
        .expect("stalled client not cut");
    assert!(matches!(closed, Ok(0) | Err(_)));
    // Still serving UDP.
    assert_eq!(
        dig_async(s.dns, &["web-shop.marathon.mesos"])
            .await
            .values("A")
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_until_the_first_table_loads() {
    let cancel = CancellationToken::new();
    let dir = tempfile::tempdir().unwrap();
    let mut c = ocean_dns::Config::new(SubscriberConfig {
        table_file: Some(dir.path().join("not-yet.json")),
        ..Default::default()
    });
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.http = None;
    c.udp_workers = 1;
    let dns = ocean_dns::server::start(c, cancel.clone()).await.unwrap();
    let d = dig_async(dns.dns_addr, &["web.marathon.mesos"]).await;
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    cancel.cancel();
}

/// TCP abuse: a flood past `--max-tcp-connections` is closed at once while UDP answers, and
/// clients that pipeline big answers without ever reading are closed after
/// `--tcp-write-timeout`, so they cannot keep every slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_floods_and_clients_that_never_read_cannot_take_every_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = stack_with(vec![], |d| {
        d.max_tcp_connections = 8;
        d.tcp_idle_timeout = Duration::from_secs(30);
        d.tcp_write_timeout = Duration::from_millis(500);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(tokio::net::TcpStream::connect(s.dns).await.unwrap());
    }
    // Every slot is taken: the next clients are closed without an answer ...
    for _ in 0..20 {
        let mut extra = tokio::net::TcpStream::connect(s.dns).await.unwrap();
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut b))
            .await
            .expect("a client past the cap was left hanging");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
    // ... and UDP is answered meanwhile.
    assert_eq!(
        dig_async(s.dns, &["web-shop.marathon.mesos"])
            .await
            .values("A")
            .len(),
        3
    );
    // The holders now pipeline 2,000 queries for the 300-task SRV answer and never read.
    let mut q = vec![0u8, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["_big", "_tcp", "marathon", "mesos"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 33, 0, 1]);
    let mut burst = Vec::new();
    for i in 0..2000u16 {
        burst.extend_from_slice(&(q.len() as u16).to_be_bytes());
        let mut one = q.clone();
        one[..2].copy_from_slice(&i.to_be_bytes());
        burst.extend_from_slice(&one);
    }
    for h in &mut held {
        h.write_all(&burst).await.unwrap();
    }
    // Nobody reads for 3 s: the answers fill the socket buffers and every write stalls
    // past the 500 ms write timeout. Reading afterwards finds what was buffered, then the
    // end of the stream: each holder was closed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for mut h in held {
        let mut sink = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(15), h.read_to_end(&mut sink))
            .await
            .expect("a client that never read was never closed");
        let got = sink.len();
        assert!(
            r.is_err() || got < 2000 * 1000,
            "closed only after {got} bytes"
        );
    }
    // The slots are free again: a real TCP client is answered.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let d = dig_async(s.dns, &["+tcp", "+tries=1", "web-shop.marathon.mesos"]).await;
        if d.values("A").len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "TCP never served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
