//! `/metrics` people can use (issue 13): command latency is a Prometheus histogram per
//! cluster and family, every metric has `# HELP`, and a cluster removed from the table
//! takes its series with it, once every worker thread has let go of it.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ocean_core::subscriber::SubscriberConfig;
use ocean_core::table::redis::{RedisCluster as TableCluster, RedisTable};
use ocean_redis_router::{Config, Mode};
use ocean_tests::metrics::{scrape, series, undescribed};
use ocean_tests::servers::{free_port, RedisCluster, RespClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// Polls `f` (every 50 ms, at most 10 s) until it holds.
async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("timed out waiting for {what}")
}

async fn serving(addr: SocketAddr) -> bool {
    common::redis_cli(addr, &["INFO"])
        .await
        .is_ok_and(|i| i.contains("slots_covered:16384"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_histograms_help_and_removed_clusters() -> Result<()> {
    let cluster = RedisCluster::start(3, 0).await?;
    let m = cluster.master_addrs();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("redis.json");
    let (pa, pb) = (free_port()?, free_port()?);
    let a: SocketAddr = ([127, 0, 0, 1], pa).into();
    let b: SocketAddr = ([127, 0, 0, 1], pb).into();
    write_table(&file, &[("a", pa, m.clone()), ("b", pb, m.clone())])?;

    let mut config = Config::standalone("127.0.0.1:0".parse()?, Vec::new());
    config.mode = Mode::Table {
        subscriber: SubscriberConfig {
            table_file: Some(file.clone()),
            file_poll: Duration::from_millis(50),
            ..Default::default()
        },
        bind: "127.0.0.1".parse()?,
    };
    // Two workers: each holds its own handles for each cluster.
    config.threads = 2;
    config.admin = Some("127.0.0.1:0".parse()?);
    let cancel = CancellationToken::new();
    let running = ocean_redis_router::start(config, cancel.clone()).await?;
    let admin = running.admin_addr.context("admin listens")?;
    wait_for("a", async || Ok(serving(a).await)).await?;
    wait_for("b", async || Ok(serving(b).await)).await?;

    for addr in [a, b] {
        // Several connections: the kernel spreads them over both workers.
        for i in 0..4 {
            let mut c = RespClient::connect(addr).await?;
            assert!(c.command(&["SET", &format!("k{i}"), "v"]).await?.is_ok());
            assert_eq!(
                c.command(&["GET", &format!("k{i}")]).await?.as_str(),
                Some("v")
            );
        }
    }
    // One pipeline on `a` (a hash tag keeps it on one node): gathered into one job, its
    // replies are counted per run of one family, 2 writes then 4 reads.
    let mut raw = tokio::net::TcpStream::connect(a).await?;
    let set = "*3\r\n$3\r\nSET\r\n$4\r\n{t}x\r\n$1\r\n1\r\n";
    let get = "*2\r\n$3\r\nGET\r\n$4\r\n{t}x\r\n";
    let pipeline = [set.repeat(2), get.repeat(4)].concat();
    raw.write_all(pipeline.as_bytes()).await?;
    let want = ["+OK\r\n".repeat(2), "$1\r\n1\r\n".repeat(4)].concat();
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(Duration::from_secs(5), raw.read_exact(&mut got)).await??;
    assert_eq!(String::from_utf8_lossy(&got), want);
    drop(raw);
    wait_for("the coverage gauges", async || {
        let text = scrape(admin).await?;
        Ok(!series(&text, "ocean_redis_slots_uncovered", &["cluster=\"b\""]).is_empty())
    })
    .await?;
    let text = scrape(admin).await?;
    assert_eq!(undescribed(&text), Vec::<String>::new(), "{text}");
    assert!(text.contains("# TYPE ocean_redis_command_seconds histogram\n"));
    for cluster in ["a", "b"] {
        for family in ["read", "write"] {
            let labels = format!("cluster=\"{cluster}\",family=\"{family}\"");
            let first = format!("ocean_redis_command_seconds_bucket{{{labels},le=\"0.00005\"}}");
            assert!(text.contains(&first), "{first} missing:\n{text}");
            let count = format!("ocean_redis_command_seconds_count{{{labels}}} ");
            assert!(text.contains(&count), "{count} missing");
            let total = series(&text, "ocean_redis_commands_total", &[&labels]);
            let n = match (cluster, family) {
                ("a", "read") => 8,
                ("a", _) => 6,
                _ => 4,
            };
            assert_eq!(
                total,
                vec![format!("ocean_redis_commands_total{{{labels}}} {n}")]
            );
            let count = series(&text, "ocean_redis_command_seconds_count", &[&labels]);
            assert_eq!(
                count,
                vec![format!("ocean_redis_command_seconds_count{{{labels}}} {n}")]
            );
        }
    }

    // `b` leaves the table: once its port is closed (its clients are gone: they were
    // closed above), every `cluster="b"` series goes; `a`'s stay.
    write_table(&file, &[("a", pa, m.clone())])?;
    wait_for("b's port to close", async || {
        Ok(tokio::net::TcpStream::connect(b).await.is_err())
    })
    .await?;
    wait_for("b's series to go", async || {
        let text = scrape(admin).await?;
        Ok(!text.contains("cluster=\"b\""))
    })
    .await?;
    let text = scrape(admin).await?;
    assert!(!series(&text, "ocean_redis_command_seconds", &["cluster=\"a\""]).is_empty());
    assert!(!series(&text, "ocean_redis_slots_uncovered", &["cluster=\"a\""]).is_empty());
    assert_eq!(undescribed(&text), Vec::<String>::new());

    cancel.cancel();
    Ok(())
}
