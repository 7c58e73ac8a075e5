//! `/healthz` means the slots are served (issue 19, must-show 1): a master of a 3-master
//! cluster with no replica is SIGKILLed; the router's `/healthz` answers 503 naming that
//! master's slot ranges within 5 s, and `ocean_redis_slots_uncovered` counts them; the
//! master is restarted (same port, same nodes.conf) and `/healthz` is 200 again within
//! 5 s with the gauge back at 0. No client traffic runs meanwhile: the router finds out
//! from its own probes. Against a real Redis Cluster the harness starts.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use common::router;
use ocean_tests::servers::{resp, RedisCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// `GET path` on the admin port: the status code and the body.
async fn get(admin: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(admin).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
        .await
        .context("admin answer timed out")??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status line in {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((code, body.to_string()))
}

/// The value of `ocean_redis_slots_uncovered{cluster="standalone"}` in `/metrics`.
async fn uncovered_gauge(admin: SocketAddr) -> Result<Option<f64>> {
    let (_, body) = get(admin, "/metrics").await?;
    Ok(body
        .lines()
        .find(|l| l.starts_with("ocean_redis_slots_uncovered{cluster=\"standalone\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok()))
}

/// Polls `/healthz` until it answers `want`; the time it took and the last body.
async fn wait_health(admin: SocketAddr, want: u16, within: Duration) -> Result<(Duration, String)> {
    let start = Instant::now();
    loop {
        let (code, body) = get(admin, "/healthz").await?;
        if code == want {
            return Ok((start.elapsed(), body));
        }
        if start.elapsed() > within {
            bail!("/healthz still {code} after {within:?}: {body}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `victim`'s slot ranges as the cluster itself reports them (`CLUSTER SLOTS` on `ask`),
/// in the router's words: `0-5460` (comma-joined when several).
async fn slot_ranges_of(ask: SocketAddr, victim: SocketAddr) -> Result<(String, i64)> {
    let reply = resp::command(ask, &["CLUSTER", "SLOTS"]).await?;
    let mut ranges = Vec::new();
    for r in reply.as_array().context("CLUSTER SLOTS")? {
        let r = r.as_array().context("range")?;
        let start = r.first().and_then(|v| v.as_int()).context("start")?;
        let end = r.get(1).and_then(|v| v.as_int()).context("end")?;
        let master = r.get(2).and_then(|v| v.as_array()).context("master")?;
        let port = master.get(1).and_then(|v| v.as_int()).context("port")?;
        if port == i64::from(victim.port()) {
            ranges.push((start, end));
        }
    }
    ranges.sort();
    let count = ranges.iter().map(|(a, b)| b - a + 1).sum();
    let text = ranges
        .iter()
        .map(|(a, b)| format!("{a}-{b}"))
        .collect::<Vec<_>>()
        .join(",");
    Ok((text, count))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_names_uncovered_slots_of_a_killed_master() -> Result<()> {
    // The process-wide recorder that `/metrics` renders (the binary installs it too).
    ocean_core::metrics::handle();
    let mut cluster = RedisCluster::start(3, 0).await?;
    let masters = cluster.master_addrs();
    let (running, _addr, cancel) = router(masters.clone(), |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
    })
    .await?;
    let admin = running.admin_addr.context("no admin address")?;
    wait_health(admin, 200, Duration::from_secs(5)).await?;
    assert_eq!(uncovered_gauge(admin).await?, Some(0.0));

    let victim = masters[0];
    let (ranges, count) = slot_ranges_of(masters[1], victim).await?;
    assert!(count > 0, "{victim} owns no slots");
    cluster.node_mut(victim).context("victim")?.kill();
    let (took, body) = wait_health(admin, 503, Duration::from_secs(5)).await?;
    println!("killed {victim} (slots {ranges}): /healthz 503 after {took:?}: {body}");
    assert!(body.contains("\"status\":\"uncovered\""), "{body}");
    assert!(
        body.contains(&format!("without a reachable master: {ranges}")),
        "the body should name {ranges}: {body}"
    );
    assert!(body.contains(&victim.to_string()), "{body}");
    // The gauge follows within its update interval (500 ms) at most.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut gauge = uncovered_gauge(admin).await?;
    while gauge != Some(count as f64) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        gauge = uncovered_gauge(admin).await?;
    }
    assert_eq!(
        gauge,
        Some(count as f64),
        "ocean_redis_slots_uncovered while down"
    );

    cluster
        .node_mut(victim)
        .context("victim")?
        .restart()
        .await?;
    let (took, _) = wait_health(admin, 200, Duration::from_secs(5)).await?;
    println!("restarted {victim}: /healthz 200 after {took:?}");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut gauge = uncovered_gauge(admin).await?;
    while gauge != Some(0.0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        gauge = uncovered_gauge(admin).await?;
    }
    assert_eq!(
        gauge,
        Some(0.0),
        "ocean_redis_slots_uncovered after the restart"
    );
    cancel.cancel();
    running.wait().await;
    Ok(())
}
