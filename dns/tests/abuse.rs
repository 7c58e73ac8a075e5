//! Abuse (issue 18): 400 TCP connections against an `ocean dns` whose `RLIMIT_NOFILE` is 256
//! (soft and hard). The server runs in a child process, this test binary re-run as
//! `dns_child_process` under `sh -c 'ulimit -n 256; exec ...'` (the harness in
//! `ocean_tests::abuse`), raising its limit as the `ocean` binary does. While it is out of
//! descriptors it does not spin and keeps answering its TCP client and UDP; once the flood
//! is gone a new TCP client is answered again. The other TCP abuse (a flood past
//! `--max-tcp-connections`, clients that never read) is in `tests/tests/dns.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::a_addresses;
use hickory_proto::op::Message;
use ocean_core::subscriber::SubscriberConfig;
use ocean_tests::abuse::{self, LimitedChild, NOFILE};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

/// The name every query asks for, and its one address.
const NAME: &str = "web-shop.marathon.mesos.";
const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);

/// The child server of the descriptor test: does nothing unless `OCEAN_ABUSE_CHILD_TABLE`
/// names a `dns` table file; then raises `RLIMIT_NOFILE` as the `ocean` binary does, serves
/// that table, prints `LISTEN <addr> NOFILE <n>` once the zone is loaded and runs until
/// killed.
#[tokio::test]
async fn dns_child_process() -> Result<()> {
    let Ok(table) = std::env::var("OCEAN_ABUSE_CHILD_TABLE") else {
        return Ok(());
    };
    let nofile = ocean_core::daemon::raise_nofile_limit()?;
    let mut config = ocean_dns::Config::new(SubscriberConfig {
        table_file: Some(PathBuf::from(table)),
        file_poll: Duration::from_millis(50),
        ..Default::default()
    });
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.http = None;
    config.udp_workers = 1;
    // No flood connection is closed as idle while the test runs: the limit stays reached.
    config.tcp_idle_timeout = Duration::from_secs(60);
    let running = ocean_dns::server::start(config, CancellationToken::new()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while running.zone.load().is_none() {
        ensure!(tokio::time::Instant::now() < deadline, "no zone loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("LISTEN {} NOFILE {nofile}", running.dns_addr);
    std::future::pending::<()>().await;
    Ok(())
}

/// A query for [`NAME`] A.
fn query(id: u16) -> Vec<u8> {
    common::query(id, NAME)
}

/// The answer to [`query`]`(id)`, decoded by hickory: same id, NOERROR, [`ADDR`] only.
fn check(answer: &[u8], id: u16) -> Result<()> {
    let m = Message::from_vec(answer)?;
    ensure!(m.metadata.id == id, "id {} for {id}", m.metadata.id);
    let addrs = a_addresses(&m)?;
    ensure!(addrs == [ADDR], "answers {addrs:?}");
    Ok(())
}

/// One query over UDP, answered within 2 s.
async fn udp_answered(server: SocketAddr, id: u16) -> Result<()> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.send_to(&query(id), server).await?;
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .context("no UDP answer within 2 s")??;
    check(buf.get(..n).unwrap_or_default(), id)
}

/// One query over an open TCP connection (RFC 7766 framing), answered within 2 s.
async fn tcp_answered(s: &mut TcpStream, id: u16) -> Result<()> {
    let q = query(id);
    let mut framed = u16::try_from(q.len())?.to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).await?;
    let answer = tokio::time::timeout(Duration::from_secs(2), async {
        let len = s.read_u16().await?;
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf).await?;
        anyhow::Ok(buf)
    })
    .await
    .context("no TCP answer within 2 s")??;
    check(&answer, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_dns_idles_then_serves_again() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let table = dir.path().join("dns.json");
    let zone = json!({
        "domain": "mesos",
        "ttl": 60,
        "soa": {"mname": "ns1.mesos.", "rname": "root.ns1.mesos.", "refresh_s": 60, "retry_s": 600, "expire_s": 86400},
        "names": {NAME: {"a": [ADDR.to_string()]}}
    });
    std::fs::write(&table, serde_json::to_vec(&zone)?)?;
    let child = LimitedChild::spawn(
        "dns_child_process",
        &[("OCEAN_ABUSE_CHILD_TABLE", table.display().to_string())],
    )
    .await?;
    let addr = child.addr;
    // `LISTEN <addr> NOFILE <n>`: raising the soft limit to the hard one left it at 256.
    assert_eq!(
        child.extra.get(1).map(String::as_str),
        Some("256"),
        "the child's RLIMIT_NOFILE after raising"
    );
    let words = child.nofile_line()?;
    assert_eq!(
        words.get(3..5),
        Some(&["256".to_string(), "256".to_string()][..]),
        "child: {words:?}"
    );

    let mut normal = TcpStream::connect(addr).await?;
    tcp_answered(&mut normal, 1).await?;
    udp_answered(addr, 2).await?;
    // The flood: 400 connections (the listen backlog completes them all; the server can
    // take only what its 256 descriptors allow).
    let flood = abuse::flood(addr, abuse::FLOOD).await?;
    // Wait until accepting has hit the limit: the server's descriptors stop growing. (DNS
    // has no count of its clients to ask over the wire.)
    let fds = abuse::settle(async || child.open_fds()).await?;
    assert!(
        fds as u64 <= NOFILE,
        "{fds} descriptors open under a limit of 256"
    );
    // At the limit (the backlog holds the connections it cannot accept): no spinning.
    let ticks = child.cpu_ticks_over(Duration::from_secs(2)).await?;
    // The TCP client it has is still answered, and so is UDP.
    tcp_answered(&mut normal, 3).await?;
    udp_answered(addr, 4).await?;
    println!(
        "descriptors: {fds} open under RLIMIT_NOFILE 256 (soft and hard); CPU at the limit \
         {ticks} ticks in 2 s ({}%)",
        ticks / 2
    );
    assert!(
        ticks < 20,
        "{ticks} ticks in 2 s: over 10% CPU at the limit"
    );
    // The flood leaves; a new TCP client is answered again, and UDP still is.
    drop(flood);
    let took = abuse::served_again(async || {
        let mut c = TcpStream::connect(addr).await?;
        tcp_answered(&mut c, 5).await
    })
    .await?;
    println!("after the flood: a new TCP client answered {took:?} after it closed");
    udp_answered(addr, 6).await?;
    tcp_answered(&mut normal, 7).await?;
    child.kill().await?;
    Ok(())
}
