//! Resharding under load: `redis-cli --cluster reshard` moves slots (with their keys) while
//! clients run SET/GET/MGET through the router; the clients see no error (ASK, MOVED and
//! TRYAGAIN are handled by the router).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use common::load::{spawn_load, LoadStats};
use common::{redis_cli, router};
use ocean_tests::servers::{find_binary, resp, RedisCluster};

async fn myid(addr: std::net::SocketAddr) -> Result<String> {
    let r = resp::command(addr, &["CLUSTER", "MYID"]).await?;
    Ok(r.as_str().unwrap_or_default().to_string())
}

/// `redis-cli --cluster reshard` refuses to start while the nodes' slot configs have not
/// converged yet ("Nodes don't agree about configuration"): retry for up to 30 s, which a
/// loaded CI machine may need.
async fn reshard(from: std::net::SocketAddr, to: std::net::SocketAddr, slots: usize) -> Result<()> {
    let mut last = None;
    for _ in 0..60 {
        match reshard_once(from, to, slots).await {
            Ok(()) => return Ok(()),
            Err(e) if e.to_string().contains("agree") => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("reshard never ran")))
}

async fn reshard_once(
    from: std::net::SocketAddr,
    to: std::net::SocketAddr,
    slots: usize,
) -> Result<()> {
    let bin = find_binary("redis-cli", "redis-tools")?;
    let out = tokio::process::Command::new(bin)
        .arg("--cluster")
        .arg("reshard")
        .arg(from.to_string())
        .arg("--cluster-from")
        .arg(myid(from).await?)
        .arg("--cluster-to")
        .arg(myid(to).await?)
        .arg("--cluster-slots")
        .arg(slots.to_string())
        .arg("--cluster-yes")
        .arg("--cluster-pipeline")
        .arg("10")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "reshard failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshard_under_load_without_client_errors() -> Result<()> {
    let mut cluster = RedisCluster::start(3, 1).await?;
    let (_running, addr, cancel) = router(cluster.master_addrs(), |_| {}).await?;
    let keys = 3000;
    // Preload so that the migration moves real keys (MIGRATE, ASK, TRYAGAIN).
    let mut script = String::new();
    for i in 0..keys {
        script.push_str(&format!("SET load:{i} init\n"));
    }
    common::redis_cli_opts(addr, &[], &[], Some(script.as_bytes())).await?;
    let before = redis_cli(addr, &["INFO"]).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(LoadStats::default());
    let workers = spawn_load(addr, 4, keys, Vec::new(), stop.clone(), stats.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let m = cluster.master_addrs();
    reshard(m[0], m[1], 1500).await?;
    // redis-cli checks that every node agrees on the config before it starts.
    cluster.wait_ok(Duration::from_secs(30)).await?;
    reshard(m[1], m[2], 1500).await?;
    cluster.wait_ok(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await?;
    }
    let after = redis_cli(addr, &["INFO"]).await?;
    let ops = stats.ops.load(Ordering::Relaxed);
    let errors = stats.errors.load(Ordering::Relaxed);
    println!("reshard under load: {ops} operations, {errors} errors");
    let log = stats
        .error_log
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    assert_eq!(errors, 0, "client errors during resharding: {log:?}");
    assert!(ops > 1000, "the load barely ran: {ops}");
    let refreshes = |info: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix("slot_map_refreshes:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        refreshes(&after) > refreshes(&before),
        "MOVED never made the router refresh: {after}"
    );
    cancel.cancel();
    Ok(())
}
