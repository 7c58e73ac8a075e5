//! `--read-from-replicas`: read-only single-slot commands are answered by replicas (they
//! count the GETs), writes by masters, and the values are right.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::router;
use ocean_tests::servers::{resp, RedisCluster, RespClient};

async fn gets_served(node: std::net::SocketAddr) -> Result<u64> {
    let info = resp::command(node, &["INFO", "commandstats"]).await?;
    let text = info.as_str().unwrap_or_default().to_string();
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_replicas() -> Result<()> {
    let cluster = RedisCluster::start(3, 1).await?;
    let (_running, addr, cancel) = router(cluster.master_addrs(), |c| {
        c.cluster.read_from_replicas = true;
        c.cluster.backend = std::sync::Arc::new(ocean_redis_router::upstream::BackendOpts {
            readonly: true,
            ..Default::default()
        });
    })
    .await?;
    let info = common::redis_cli(addr, &["INFO"]).await?;
    assert!(info.contains("replicas_read:3"), "{info}");
    let mut c = RespClient::connect(addr).await?;
    for i in 0..100 {
        let k = format!("r{i}");
        assert!(c.command(&["SET", k.as_str(), k.as_str()]).await?.is_ok());
    }
    // Let replication catch up (replica reads may be slightly stale by design): until the
    // replicas hold all 100 keys. (WAIT would only wait for its own connection's writes.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut on_replicas = 0;
        for r in cluster.replica_addrs() {
            on_replicas += resp::command(r, &["DBSIZE"]).await?.as_int().unwrap_or(0);
        }
        if on_replicas == 100 {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "replicas hold {on_replicas} of 100 keys after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..100 {
        let k = format!("r{i}");
        assert_eq!(
            c.command(&["GET", k.as_str()]).await?.as_str(),
            Some(k.as_str())
        );
    }
    let mut on_replicas = 0;
    for r in cluster.replica_addrs() {
        on_replicas += gets_served(r).await?;
    }
    let mut on_masters = 0;
    for m in cluster.master_addrs() {
        on_masters += gets_served(m).await?;
    }
    println!("GETs served: {on_replicas} by replicas, {on_masters} by masters");
    assert_eq!(on_replicas, 100);
    assert_eq!(on_masters, 0);
    cancel.cancel();
    Ok(())
}
