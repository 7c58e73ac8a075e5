//! Abuse, with a well-behaved client beside the abuser that keeps getting right answers:
//! a connection flood past `--max-clients`, a client that pipelines `GET bigkey` and never
//! reads (memory stays bounded, the abuser is closed after `--write-timeout`), requests too
//! big for a client that has not sent AUTH, a slowloris closed by `--idle-timeout`, and
//! 400 connections against a router whose `RLIMIT_NOFILE` is 256 (soft and hard: the
//! router runs in a child process, this test binary re-run as `router_child_process` under
//! `sh -c 'ulimit -n 256; exec ...'`, parsing the router's own flags and raising its
//! limit as the `ocean` binary does): it does not spin while out of descriptors and
//! serves new clients once the flood is gone. Against a real Redis Cluster the harness
//! starts.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use common::{redis_cli, router};
use ocean_tests::abuse::{self, LimitedChild};
use ocean_tests::servers::{rss_bytes, RedisCluster, Resp, RespClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// One test at a time: the memory test measures this process, which runs the routers.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Redis's own refusal (networking.c, `acceptCommonHandler`).
const MAX_CLIENTS: &[u8] = b"-ERR max number of clients reached\r\n";

/// The normal client: a write and a read, checked.
async fn still_served(c: &mut RespClient, i: usize) -> Result<()> {
    let k = format!("normal:{i}");
    let v = format!("value-{i}");
    let set = c.command(&["SET", k.as_str(), v.as_str()]).await?;
    anyhow::ensure!(set.is_ok(), "SET: {set:?}");
    let got = c.command(&["GET", k.as_str()]).await?;
    anyhow::ensure!(got.as_bytes() == Some(v.as_bytes()), "GET: {got:?}");
    Ok(())
}

/// Reads until EOF or a reset (both: the router closed it); everything read is returned.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => bail!("still open after {within:?} ({} bytes read)", got.len()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(got),
            Ok(Ok(n)) => got.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
    }
}

async fn connected_clients(addr: SocketAddr) -> Result<usize> {
    let info = redis_cli(addr, &["INFO"]).await?;
    info.lines()
        .find_map(|l| l.trim().strip_prefix("connected_clients:"))
        .and_then(|v| v.parse().ok())
        .context("no connected_clients in INFO")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_past_max_clients_gets_redis_refusal() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 0).await?;
    let (_running, addr, cancel) = router(cluster.master_addrs(), |c| {
        c.client.max_clients = 4;
    })
    .await?;
    let mut normal = RespClient::connect(addr).await?;
    still_served(&mut normal, 0).await?;
    // Three more take the remaining slots.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = RespClient::connect(addr).await?;
        assert!(c.command(&["PING"]).await?.as_str() == Some("PONG"));
        held.push(c);
    }
    // The flood: every one is refused in Redis's words and closed, while the normal client
    // keeps being served.
    let mut flood = Vec::new();
    for _ in 0..50 {
        flood.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await?;
            read_until_closed(&mut s, Duration::from_secs(10)).await
        }));
    }
    for i in 1..20 {
        still_served(&mut normal, i).await?;
    }
    for f in flood {
        let got = f.await??;
        assert_eq!(got, MAX_CLIENTS, "{:?}", String::from_utf8_lossy(&got));
    }
    // A freed slot is usable again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = RespClient::connect(addr).await?;
        if matches!(c.command(&["PING"]).await, Ok(Resp::Simple(ref s)) if s == "PONG") {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    still_served(&mut normal, 99).await?;
    cancel.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_bounded_then_closed() -> Result<()> {
    let _serial = SERIAL.lock().await;
    const BIG: usize = 1024 * 1024;
    const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
    let cluster = RedisCluster::start(3, 0).await?;
    let (_running, addr, cancel) = router(cluster.master_addrs(), |c| {
        c.client.write_timeout = WRITE_TIMEOUT;
    })
    .await?;
    let mut normal = RespClient::connect(addr).await?;
    let big = "x".repeat(BIG);
    assert!(normal
        .command(&["SET", "bigkey", big.as_str()])
        .await?
        .is_ok());
    // The router's and the test's buffers warm up on one big read first.
    let got = normal.command(&["GET", "bigkey"]).await?;
    assert_eq!(got.as_bytes().map(<[u8]>::len), Some(BIG));
    still_served(&mut normal, 0).await?;
    let before_clients = connected_clients(addr).await?;
    let idle_rss = rss_bytes(None).context("no VmRSS in /proc/self/status")?;

    // The abuser: 4000 pipelined `GET bigkey` (4 GB of replies), never read.
    let abuser = TcpStream::connect(addr).await?;
    let (mut abuser_rd, mut abuser_wr) = abuser.into_split();
    let writer = tokio::spawn(async move {
        let one = b"*2\r\n$3\r\nGET\r\n$6\r\nbigkey\r\n";
        let all: Vec<u8> = one.iter().copied().cycle().take(one.len() * 4000).collect();
        // Blocks once the router stops reading; fails once it closes the connection.
        abuser_wr.write_all(&all).await.is_ok()
    });

    // While it is connected: memory stays bounded, the normal client is served.
    let mut peak = 0u64;
    let started = Instant::now();
    let mut i = 1;
    while started.elapsed() < WRITE_TIMEOUT - Duration::from_millis(500) {
        still_served(&mut normal, i).await?;
        i += 1;
        peak = peak.max(
            rss_bytes(None)
                .context("no VmRSS in /proc/self/status")?
                .saturating_sub(idle_rss),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        peak < 64 * 1024 * 1024,
        "RSS grew {} MB above idle while a client did not read",
        peak >> 20
    );

    // Past the write timeout the abuser is closed; the normal client is still served.
    let deadline = Instant::now() + Duration::from_secs(20);
    while connected_clients(addr).await? > before_clients {
        assert!(
            Instant::now() < deadline,
            "the client that never reads was not closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let read = read_until_closed_half(&mut abuser_rd).await?;
    assert!(
        read < 4000 * BIG,
        "the abuser got every reply ({read} bytes)"
    );
    writer.abort();
    still_served(&mut normal, 1000).await?;
    eprintln!(
        "peak RSS growth {} KB, abuser read {read} bytes",
        peak >> 10
    );
    cancel.cancel();
    Ok(())
}

/// Drains a read half until EOF or reset; returns the bytes read.
async fn read_until_closed_half(rd: &mut tokio::net::tcp::OwnedReadHalf) -> Result<usize> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf)).await {
            Err(_) => bail!("abuser connection still open"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(n),
            Ok(Ok(k)) => n += k,
        }
    }
}

/// Sends `bytes` and expects exactly `want` back, then the connection closed.
async fn refused(addr: SocketAddr, bytes: &[u8], want: &[u8]) -> Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(bytes).await?;
    let got = read_until_closed(&mut s, Duration::from_secs(10)).await?;
    assert_eq!(
        got,
        want,
        "{:?} -> {:?}",
        String::from_utf8_lossy(bytes.get(..40).unwrap_or(bytes)),
        String::from_utf8_lossy(&got)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_auth_requests_are_as_small_as_redis_allows() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 0).await?;
    let mut config =
        ocean_redis_router::Config::standalone("127.0.0.1:0".parse()?, cluster.master_addrs());
    config.threads = 1;
    config.client.password = Some(ocean_core::secret::SecretFile::fixed(
        ocean_core::secret::Secret::new("pw".to_string()),
    ));
    let cancel = tokio_util::sync::CancellationToken::new();
    let running = ocean_redis_router::start(config, cancel.clone()).await?;
    let addr = running.listen_addr.context("no listen address")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info =
            common::redis_cli_opts(addr, &["-a", "pw", "--no-auth-warning"], &["INFO"], None)
                .await
                .unwrap_or_default();
        if info.contains("slots_covered:16384") {
            break;
        }
        assert!(Instant::now() < deadline, "no slot map: {info}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut normal = RespClient::connect(addr).await?;
    assert!(normal.command(&["AUTH", "pw"]).await?.is_ok());
    still_served(&mut normal, 0).await?;

    // Unauthenticated: Redis's own protocol errors, and the connection is closed.
    refused(
        addr,
        b"*2000\r\n",
        b"-ERR Protocol error: unauthenticated multibulk length\r\n",
    )
    .await?;
    let mut big = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2097152\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'v', 64 * 1024));
    refused(
        addr,
        &big,
        b"-ERR Protocol error: unauthenticated bulk length\r\n",
    )
    .await?;
    still_served(&mut normal, 1).await?;

    // Authenticated, the same requests are served.
    let value = "v".repeat(2 * 1024 * 1024);
    assert!(normal
        .command(&["SET", "big", value.as_str()])
        .await?
        .is_ok());
    let got = normal.command(&["GET", "big"]).await?;
    assert_eq!(got.as_bytes().map(<[u8]>::len), Some(value.len()));
    let mut del = vec!["DEL".to_string()];
    del.extend((0..1999).map(|i| format!("nokey:{i}")));
    assert_eq!(normal.command(&del).await?.as_int(), Some(0));
    // AUTH lifts the limits for the next request of the same pipeline, as in Redis.
    let mut c = RespClient::connect(addr).await?;
    let mut pipeline = b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n".to_vec();
    Resp::encode_command(&del, &mut pipeline);
    c.send_raw(&pipeline).await?;
    assert!(c.read_reply().await?.is_ok());
    assert_eq!(c.read_reply().await?.as_int(), Some(0));
    cancel.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_closed_by_the_idle_timeout() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 0).await?;
    let (_running, addr, cancel) = router(cluster.master_addrs(), |c| {
        c.client.idle_timeout = Duration::from_secs(1);
    })
    .await?;
    let mut normal = RespClient::connect(addr).await?;
    // Half a request, then nothing.
    let mut slow = TcpStream::connect(addr).await?;
    slow.write_all(b"*2\r\n$3\r\nGE").await?;
    let started = Instant::now();
    // The normal client stays busy (never idle for a second) and is served throughout.
    let closed =
        tokio::spawn(async move { read_until_closed(&mut slow, Duration::from_secs(10)).await });
    let mut i = 0;
    while !closed.is_finished() {
        still_served(&mut normal, i).await?;
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = closed.await??;
    assert!(got.is_empty(), "{got:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    still_served(&mut normal, i).await?;
    cancel.cancel();
    Ok(())
}

/// The child router of the descriptor test: does nothing unless `OCEAN_ABUSE_CHILD_ARGS`
/// holds router flags; then raises `RLIMIT_NOFILE` as the `ocean` binary does, runs the
/// router those flags describe, prints `LISTEN <addr>` and runs until killed.
#[tokio::test]
async fn router_child_process() -> Result<()> {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ocean_redis_router::Args,
    }
    let Ok(flags) = std::env::var("OCEAN_ABUSE_CHILD_ARGS") else {
        return Ok(());
    };
    let nofile = ocean_core::daemon::raise_nofile_limit()?;
    let cli = <Cli as clap::Parser>::try_parse_from(
        std::iter::once("redis-router").chain(flags.split(' ')),
    )?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let running = ocean_redis_router::start(cli.args.into_config()?, cancel).await?;
    println!(
        "LISTEN {} NOFILE {nofile}",
        running.listen_addr.context("no listen address")?
    );
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_router_idles_then_serves_again() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start(3, 0).await?;
    let seeds: Vec<String> = cluster
        .master_addrs()
        .iter()
        .map(|a| format!("--seed {a}"))
        .collect();
    let flags = format!("--listen 127.0.0.1:0 {}", seeds.join(" "));
    let child =
        LimitedChild::spawn("router_child_process", &[("OCEAN_ABUSE_CHILD_ARGS", flags)]).await?;
    let addr = child.addr;
    // `LISTEN <addr> NOFILE <n>`: raising the soft limit to the hard one left it at 256.
    let nofile = child.extra.get(1).map(String::as_str).unwrap_or("?");
    assert_eq!(nofile, "256", "the child's RLIMIT_NOFILE after raising");
    let words = child.nofile_line()?;
    assert_eq!(
        words.get(3..5),
        Some(&["256".to_string(), "256".to_string()][..]),
        "child: {words:?}"
    );

    // Wait for the slot map, then a normal client is served.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !redis_cli(addr, &["INFO"])
        .await?
        .contains("slots_covered:16384")
    {
        assert!(
            Instant::now() < deadline,
            "the child router has no slot map"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut normal = RespClient::connect(addr).await?;
    still_served(&mut normal, 0).await?;
    // The flood: 400 connections (the listen backlog completes them all; the router can
    // take only what its 256 descriptors allow).
    let flood = abuse::flood(addr, abuse::FLOOD).await?;
    // Wait until accepting has hit the limit: the router's client count stops growing.
    let last = abuse::settle(async || {
        let info = normal.command(&["INFO"]).await?;
        let n: usize = info
            .as_str()
            .unwrap_or("")
            .lines()
            .find_map(|l| l.trim().strip_prefix("connected_clients:"))
            .context("connected_clients")?
            .parse()?;
        Ok(n)
    })
    .await?;
    assert!(last < 256, "{last} clients with 256 descriptors?");
    // At the limit (the backlog still holds the connections it cannot accept): no spinning.
    let ticks = child.cpu_ticks_over(Duration::from_secs(2)).await?;
    // The client it has is still served.
    still_served(&mut normal, 1).await?;
    println!(
        "descriptors: {last} clients accepted under RLIMIT_NOFILE 256 (soft and hard); CPU \
         at the limit {ticks} ticks in 2 s ({}%)",
        ticks / 2
    );
    assert!(
        ticks < 20,
        "{ticks} ticks in 2 s: over 10% CPU at the limit"
    );
    // The flood leaves; a new client's SET and GET work again.
    drop(flood);
    let took = abuse::served_again(async || {
        let mut c = RespClient::connect(addr).await?;
        still_served(&mut c, 2).await
    })
    .await?;
    println!("after the flood: a new client served {took:?} after it closed");
    child.kill().await?;
    Ok(())
}
