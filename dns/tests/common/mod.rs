//! What the recursion and rate-limiting tests share: an `ocean dns` started in-process on
//! a free loopback port from a `dns` table file, a stand-in upstream resolver, `dig` (a
//! missing one fails the test naming its Debian package), and `/metrics`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ocean_core::subscriber::SubscriberConfig;
use ocean_dns::server::Running;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

/// One of our own names (an app in the table), and its one address.
pub const OURS: &str = "web-shop.marathon.mesos.";
pub const OURS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);
/// A name outside the zone, and the address the stand-in upstream gives it.
pub const EXTERNAL: &str = "external.example.";
pub const EXTERNAL_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
/// A name outside the zone the upstream answers with [`BIG_COUNT`] A records (~1.6 KB).
pub const BIG: &str = "big.example.";
pub const BIG_COUNT: u8 = 100;

/// A running `ocean dns` and what keeps it alive.
pub struct Dns {
    pub running: Running,
    pub cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Dns {
    pub fn port(&self) -> u16 {
        self.running.dns_addr.port()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts `ocean dns` on 127.0.0.1, any free port, serving [`OURS`] from a table file,
/// with `tweak` applied to its config; returns once the zone is loaded.
pub async fn start_dns(tweak: impl FnOnce(&mut ocean_dns::Config)) -> Result<Dns> {
    let zone = json!({
        "domain": "mesos",
        "ttl": 60,
        "soa": {"mname": "ns1.mesos.", "rname": "root.ns1.mesos.", "refresh_s": 60, "retry_s": 600, "expire_s": 86400},
        "names": {OURS: {"a": [OURS_ADDR.to_string()]}}
    });
    start_dns_with(zone, tweak).await
}

/// Starts `ocean dns` like [`start_dns`], serving the `dns` table `zone` (JSON).
pub async fn start_dns_with(
    zone: serde_json::Value,
    tweak: impl FnOnce(&mut ocean_dns::Config),
) -> Result<Dns> {
    ocean_core::http::init_tls();
    let dir = tempfile::tempdir()?;
    let table = dir.path().join("dns.json");
    std::fs::write(&table, serde_json::to_vec(&zone)?)?;
    let mut config = ocean_dns::Config::new(SubscriberConfig {
        table_file: Some(PathBuf::from(&table)),
        file_poll: Duration::from_millis(50),
        ..Default::default()
    });
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.http = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.udp_workers = 2;
    tweak(&mut config);
    let cancel = CancellationToken::new();
    let running = ocean_dns::server::start(config, cancel.clone()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while running.zone.load().is_none() {
        ensure!(tokio::time::Instant::now() < deadline, "no zone loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Dns {
        running,
        cancel,
        _dir: dir,
    })
}

/// The stand-in upstream's answer to `req`: [`EXTERNAL_ADDR`] for [`EXTERNAL`], [`BIG_COUNT`]
/// records for [`BIG`], NXDOMAIN otherwise; recursion available.
fn upstream_answer(req: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(req).ok()?;
    let question = q.queries.first()?.clone();
    let name = question.name().to_ascii().to_ascii_lowercase();
    let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_query(question.clone());
    let addrs: Vec<Ipv4Addr> = match name.as_str() {
        EXTERNAL => vec![EXTERNAL_ADDR],
        BIG => (0..BIG_COUNT).map(|i| Ipv4Addr::new(10, 9, 0, i)).collect(),
        _ => {
            m.metadata.response_code = ResponseCode::NXDomain;
            Vec::new()
        }
    };
    for a in addrs {
        m.add_answer(Record::from_rdata(
            question.name().clone(),
            60,
            RData::A(a.into()),
        ));
    }
    if let Some(e) = q.edns {
        let mut edns = hickory_proto::op::Edns::new();
        edns.set_max_payload(e.max_payload().max(512));
        m.set_edns(edns);
    }
    m.to_vec().ok()
}

/// A stand-in upstream resolver on 127.0.0.1, UDP and TCP on one port, answering whole
/// (it never truncates: fitting the answer to the client is `ocean dns`'s job).
pub async fn fake_upstream() -> Result<SocketAddr> {
    let (udp, tcp, addr) = bind_udp_and_tcp().await?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            if let Some(a) = upstream_answer(&buf[..n]) {
                // A lost answer only makes the forwarder time out.
                let _ = udp.send_to(&a, from).await;
            }
        }
    });
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            tokio::spawn(async move {
                while let Ok(len) = s.read_u16().await {
                    let mut req = vec![0u8; usize::from(len)];
                    if s.read_exact(&mut req).await.is_err() {
                        return;
                    }
                    let Some(a) = upstream_answer(&req) else {
                        return;
                    };
                    let mut framed = u16::try_from(a.len()).unwrap().to_be_bytes().to_vec();
                    framed.extend_from_slice(&a);
                    if s.write_all(&framed).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// A UDP socket and a TCP listener on one free port of 127.0.0.1. The kernel picks the
/// UDP port; its TCP twin may be the ephemeral port of some outgoing connection (tests run
/// side by side), so pick again a few times, as `ocean dns` itself does for port 0.
async fn bind_udp_and_tcp() -> Result<(UdpSocket, TcpListener, SocketAddr)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = udp.local_addr()?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp, addr)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("no port"), Into::into))
}

/// What `dig` printed, read back.
#[derive(Debug)]
pub struct Dig {
    /// `NOERROR`, `REFUSED`, ...
    pub status: String,
    /// The header flags (`qr`, `aa`, `rd`, `ra`, `tc`).
    pub flags: Vec<String>,
    /// The A records of the answer section.
    pub answers: Vec<Ipv4Addr>,
    pub output: String,
}

impl Dig {
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
}

/// `dig -b SOURCE @127.0.0.1 -p PORT NAME A` plus `extra` options. `dig` missing fails
/// with the Debian package to install.
pub fn dig(source: &str, port: u16, name: &str, extra: &[&str]) -> Result<Dig> {
    let bin = ocean_tests::servers::find_binary("dig", "bind9-dnsutils")?;
    let out = Command::new(&bin)
        .args(["-b", source, "@127.0.0.1", "-p", &port.to_string()])
        .args(["+time=3", "+tries=1", "+noall", "+comments", "+answer"])
        .args(extra)
        .args([name, "A"])
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(out.status.success(), "dig failed: {output}");
    let status = output
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .with_context(|| format!("no status in dig's output:\n{output}"))?
        .to_string();
    let flags = output
        .split(";; flags: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let answers = output
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "A").then(|| f[4].parse().ok())?
        })
        .collect();
    Ok(Dig {
        status,
        flags,
        answers,
        output,
    })
}

/// A query for `name` type A with id `id` (recursion desired, no EDNS), hickory-encoded.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

/// The A addresses of an answer, checked to be a NOERROR response.
pub fn a_addresses(answer: &Message) -> Result<Vec<Ipv4Addr>> {
    ensure!(
        answer.metadata.response_code == ResponseCode::NoError,
        "rcode {:?}",
        answer.metadata.response_code
    );
    Ok(answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect())
}

/// `/metrics` once it has a line starting with `prefix` (counters are flushed by the UDP
/// workers when idle for 200 ms, by TCP connections when they close); the line.
pub async fn metric_line(http: SocketAddr, prefix: &str) -> Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = reqwest::get(format!("http://{http}/metrics"))
            .await?
            .error_for_status()?
            .text()
            .await?;
        if let Some(l) = text.lines().find(|l| l.starts_with(prefix)) {
            return Ok(l.to_string());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no {prefix} in /metrics within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
