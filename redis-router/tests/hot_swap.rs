//! Table mode: a new table that adds a cluster opens its port; one that changes a
//! cluster's seeds keeps that cluster's clients connected (and error-free); one that
//! removes a cluster closes its port.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::load::{spawn_load, LoadStats};
use ocean_core::subscriber::SubscriberConfig;
use ocean_core::table::redis::{RedisCluster as TableCluster, RedisTable};
use ocean_redis_router::{Config, Mode};
use ocean_tests::servers::{free_port, RedisCluster, RespClient};
use tokio_util::sync::CancellationToken;

fn write_table(path: &std::path::Path, clusters: &[(&str, u16, Vec<SocketAddr>)]) -> Result<()> {
    let table = RedisTable {
        clusters: clusters
            .iter()
            .map(|(name, port, nodes)| TableCluster {
                name: name.to_string(),
                listen_port: *port,
                nodes: nodes.clone(),
            })
            .collect(),
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&table)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

async fn wait_serving(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(info) = common::redis_cli(addr, &["INFO"]).await {
            if info.contains("slots_covered:16384") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{addr} never served");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_adds_reseeds_and_removes_clusters() -> Result<()> {
    let cluster = RedisCluster::start(3, 0).await?;
    let m = cluster.master_addrs();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("redis.json");
    let (pa, pb) = (free_port()?, free_port()?);
    let a: SocketAddr = ([127, 0, 0, 1], pa).into();
    let b: SocketAddr = ([127, 0, 0, 1], pb).into();
    write_table(&file, &[("a", pa, vec![m[0]])])?;

    let mut config = Config::standalone("127.0.0.1:0".parse()?, Vec::new());
    config.mode = Mode::Table {
        subscriber: SubscriberConfig {
            table_file: Some(file.clone()),
            file_poll: Duration::from_millis(100),
            ..Default::default()
        },
        bind: "127.0.0.1".parse()?,
    };
    config.threads = 2;
    let cancel = CancellationToken::new();
    let _running = ocean_redis_router::start(config, cancel.clone()).await?;
    wait_serving(a).await?;
    assert!(
        tokio::net::TcpStream::connect(b).await.is_err(),
        "b is not in the table yet"
    );

    // Clients of `a`: one idle connection and a running load.
    let mut idle = RespClient::connect(a).await?;
    assert!(idle.command(&["SET", "kept", "1"]).await?.is_ok());
    let id = idle.command(&["CLIENT", "ID"]).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(LoadStats::default());
    let load = spawn_load(a, 2, 500, Vec::new(), stop.clone(), stats.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // New table: `a` re-seeded with other nodes, `b` added.
    write_table(&file, &[("a", pa, vec![m[1], m[2]]), ("b", pb, vec![m[2]])])?;
    wait_serving(b).await?;
    let mut cb = RespClient::connect(b).await?;
    assert_eq!(cb.command(&["GET", "kept"]).await?.as_str(), Some("1"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The idle client's connection survived (same session id, still answering).
    assert_eq!(idle.command(&["CLIENT", "ID"]).await?, id);
    assert_eq!(idle.command(&["GET", "kept"]).await?.as_str(), Some("1"));

    // Remove `b`: its port closes; `a` is untouched.
    write_table(&file, &[("a", pa, vec![m[1], m[2]])])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(b).await.is_ok() {
        assert!(Instant::now() < deadline, "b still listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(idle.command(&["GET", "kept"]).await?.as_str(), Some("1"));
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await?;
    }
    let errors = stats.errors.load(Ordering::Relaxed);
    let log = stats
        .error_log
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    println!(
        "hot swap: {} ops on a during the swaps, {errors} errors",
        stats.ops.load(Ordering::Relaxed)
    );
    assert_eq!(errors, 0, "{log:?}");
    cancel.cancel();
    Ok(())
}
