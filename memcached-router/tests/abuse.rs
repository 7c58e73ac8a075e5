//! Abuse (issue 18): clients that try to make the router hold memory, slots or descriptors,
//! each with a normal client beside it that must keep getting correct answers. The flood
//! past `--max-clients` is in `bad_input.rs`.
//!
//! - a client that pipelines `get big big ...` of a 512 KiB value and never reads: the
//!   router's memory stays bounded (the router runs in this process: the test measures this
//!   process's RSS growth) and the client is closed after `--write-timeout`;
//! - slowloris (a partial command line, then silence, or a byte now and then): closed by
//!   `--idle-timeout`;
//! - 400 connections against a router whose `RLIMIT_NOFILE` is 256 (the router runs in a
//!   child process: this test binary re-run as `router_child_process`, under
//!   `sh -c 'ulimit -n 256; exec ...'`): it does not spin while out of descriptors, serves
//!   the client it has, and serves new clients once the flood is gone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{pool, stat, Raw, Router};
use ocean_memcached_router::config::Settings;
use ocean_memcached_router::ketama::KeyHash;
use ocean_tests::abuse::{self, LimitedChild};
use ocean_tests::servers::{rss_bytes, Memcached};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A normal client's round trip: store `key`, read it back.
async fn normal_round_trip(c: &mut Raw, key: &str, value: &str) -> Result<()> {
    c.expect(
        format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes(),
        b"STORED\r\n",
    )
    .await?;
    c.expect(
        format!("get {key}\r\n").as_bytes(),
        format!("VALUE {key} 0 {}\r\n{value}\r\nEND\r\n", value.len()).as_bytes(),
    )
    .await
}

/// Polls the router's `curr_connections` until it is `want` (the `stats` client included).
async fn wait_connections(addr: SocketAddr, want: u64, within: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let n = stat(addr, "curr_connections").await?;
        if n == want {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!("curr_connections is {n}, want {want}, after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_replies_is_bounded_and_closed() -> Result<()> {
    const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
    let a = Memcached::start().await?;
    let settings = Settings {
        write_timeout: WRITE_TIMEOUT,
        ..Settings::default()
    };
    let router = Router::start(pool(&[vec![a.addr()]], KeyHash::Fnv1a64), settings).await?;
    let addr = router.addr;
    let big = "b".repeat(512 << 10);
    let mut normal = Raw::connect(addr).await?;
    // Warm the normal path with a big value, so its buffers count as idle.
    for _ in 0..3 {
        normal_round_trip(&mut normal, "big", &big).await?;
    }
    let idle = rss_bytes(None).expect("VmRSS of this process");

    // Two clients that pipeline reads of the 512 KiB key and never read a reply:
    // - 2,000 lines with 8 copies (4 MiB a reply, within the budget; 8 GB in all if the
    //   router buffered them): its replies are written until its socket is full, then it
    //   is closed by the write timeout;
    // - 200 lines with 32 copies (16 MiB a reply, more than the whole budget): each reply
    //   is skipped as it arrives and answered with a SERVER_ERROR line, one at a time.
    let pipeline = |copies: usize, lines: usize| {
        format!("get{}\r\n", " big".repeat(copies))
            .repeat(lines)
            .into_bytes()
    };
    let abuser = |bytes: Vec<u8>| async move {
        let mut s = TcpStream::connect(addr).await?;
        Ok::<_, anyhow::Error>(tokio::spawn(async move {
            // The router stops reading from it; the write then waits until it is closed.
            let _closed_or_done = s.write_all(&bytes).await;
            s
        }))
    };
    let started = Instant::now();
    let within_budget = abuser(pipeline(8, 2_000)).await?;
    let over_budget = abuser(pipeline(32, 200)).await?;

    // The normal client keeps getting right answers meanwhile.
    let mut peak = idle;
    let mut round = 0;
    let closed_after = loop {
        normal_round_trip(
            &mut normal,
            &format!("k{}", round % 10),
            &format!("v{round}"),
        )
        .await?;
        if round % 10 == 0 {
            normal
                .expect(
                    b"get big\r\n",
                    format!("VALUE big 0 {}\r\n{big}\r\nEND\r\n", big.len()).as_bytes(),
                )
                .await?;
        }
        round += 1;
        peak = peak.max(rss_bytes(None).expect("VmRSS of this process"));
        // The normal client, the over-budget abuser and the stats client.
        if stat(addr, "curr_connections").await? == 3 {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < WRITE_TIMEOUT + Duration::from_secs(15),
            "the abuser was not closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The over-budget one got error lines, not values.
    let mut over_budget = over_budget.await?;
    over_budget.shutdown().await?;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"\r\n") || got.len() < 60 {
            let n = tokio::io::AsyncReadExt::read(&mut over_budget, &mut buf).await?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await??;
    assert!(
        got.starts_with(b"SERVER_ERROR out of memory writing get response\r\n"),
        "{:?}",
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
    drop(over_budget);
    let growth = peak.saturating_sub(idle);
    println!(
        "never-reading client: closed after {closed_after:?}, RSS idle {} MiB, peak +{} MiB, \
         {round} normal round trips meanwhile",
        idle >> 20,
        growth >> 20
    );
    assert!(growth < 64 << 20, "RSS grew by {} MiB", growth >> 20);
    assert!(
        closed_after >= WRITE_TIMEOUT,
        "closed after {closed_after:?}, before the write timeout"
    );
    drop(within_budget.await?);
    // Still served after the abusers are gone.
    normal_round_trip(&mut normal, "after", "fine").await?;
    router.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_closed_by_the_idle_timeout_and_others_are_served() -> Result<()> {
    const IDLE: Duration = Duration::from_secs(1);
    let a = Memcached::start().await?;
    let settings = Settings {
        idle_timeout: IDLE,
        ..Settings::default()
    };
    let router = Router::start(pool(&[vec![a.addr()]], KeyHash::Fnv1a64), settings).await?;
    let addr = router.addr;
    let started = Instant::now();
    // A partial command line, then silence.
    let mut silent = Raw::connect(addr).await?;
    silent.stream.write_all(b"get a").await?;
    // A partial command line that grows by one byte every 200 ms: bytes, but no request.
    let mut drip = TcpStream::connect(addr).await?;
    drip.write_all(b"get ").await?;
    let dripper = tokio::spawn(async move {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if drip.write_all(b"x").await.is_err() {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    });
    // A normal client, with pauses shorter than the idle timeout.
    let mut normal = Raw::connect(addr).await?;
    let mut rounds = 0;
    while started.elapsed() < IDLE * 3 {
        normal_round_trip(&mut normal, "k", &format!("v{rounds}")).await?;
        rounds += 1;
        tokio::time::sleep(IDLE / 3).await;
    }
    // The silent one was closed without a word.
    assert_eq!(silent.read_to_close().await?, b"");
    // Only the normal client (and the stats one) remain.
    wait_connections(addr, 2, Duration::from_secs(5)).await?;
    let closed = started.elapsed();
    let drip_closed = dripper.await?;
    println!(
        "slowloris: both closed within {closed:?} (idle timeout {IDLE:?}); the dripper's \
         writes failed after {drip_closed:?}; {rounds} normal round trips"
    );
    assert!(closed >= IDLE);
    normal_round_trip(&mut normal, "k", "still").await?;
    router.stop().await;
    Ok(())
}

/// The entry point of the child router of the descriptor test: does nothing unless
/// `OCEAN_ABUSE_CHILD_POOL` names a memcached address; then runs a router on it, prints
/// `LISTEN <addr>` and runs until killed.
#[tokio::test]
async fn router_child_process() -> Result<()> {
    let Ok(backend) = std::env::var("OCEAN_ABUSE_CHILD_POOL") else {
        return Ok(());
    };
    let router = Router::start(
        pool(&[vec![backend.parse()?]], KeyHash::Fnv1a64),
        Settings::default(),
    )
    .await?;
    println!("LISTEN {}", router.addr);
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_router_idles_then_serves_again() -> Result<()> {
    let a = Memcached::start().await?;
    let child = LimitedChild::spawn(
        "router_child_process",
        &[("OCEAN_ABUSE_CHILD_POOL", a.addr().to_string())],
    )
    .await?;
    let addr = child.addr;
    let nofile = child.nofile_line()?;
    assert!(
        nofile.get(3).map(String::as_str) == Some("256"),
        "child limit: {nofile:?}"
    );

    let mut normal = Raw::connect(addr).await?;
    normal_round_trip(&mut normal, "k", "before").await?;
    // The flood: 400 connections (the listen backlog completes them all; the router can
    // take only what its 256 descriptors allow).
    let flood = abuse::flood(addr, abuse::FLOOD).await?;
    // Wait until accepting has hit the limit: the router's connection count stops growing.
    let last = abuse::settle(async || {
        let reply = normal.call(b"stats\r\n", &[b"END\r\n"]).await?;
        let text = String::from_utf8_lossy(&reply).into_owned();
        let n: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("STAT curr_connections "))
            .context("curr_connections")?
            .parse()?;
        Ok(n)
    })
    .await?;
    assert!(last < 256, "{last} clients with 256 descriptors?");
    // At the limit (the backlog still holds ~150 connections it cannot accept): no spinning.
    let ticks = child.cpu_ticks_over(Duration::from_secs(2)).await?;
    // The client it has is still served.
    normal_round_trip(&mut normal, "k", "during").await?;
    println!(
        "descriptors: {last} clients accepted under RLIMIT_NOFILE 256; CPU at the limit \
         {ticks} ticks in 2 s ({}%)",
        ticks / 2
    );
    assert!(
        ticks < 20,
        "{ticks} ticks in 2 s: over 10% CPU at the limit"
    );
    // The flood leaves; a new client is served again.
    drop(flood);
    let took = abuse::served_again(async || {
        let mut c = Raw::connect(addr).await?;
        normal_round_trip(&mut c, "k", "after").await
    })
    .await?;
    println!("served a new client {took:?} after the flood closed");
    normal_round_trip(&mut normal, "k", "end").await?;
    child.kill().await?;
    Ok(())
}
