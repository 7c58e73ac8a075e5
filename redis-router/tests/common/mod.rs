//! Shared helpers for the router's end-to-end tests.
#![allow(dead_code)]

pub mod load;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ocean_redis_router::{Config, Running};
use ocean_tests::servers::find_binary;
use tokio_util::sync::CancellationToken;

/// A router in front of `seeds` on its own worker thread, with test-friendly timeouts.
pub async fn router(
    seeds: Vec<SocketAddr>,
    tweak: impl FnOnce(&mut Config),
) -> Result<(Running, SocketAddr, CancellationToken)> {
    let mut config = Config::standalone("127.0.0.1:0".parse()?, seeds);
    config.threads = 1;
    config.client.allow_flush = true;
    tweak(&mut config);
    let cancel = CancellationToken::new();
    let running = ocean_redis_router::start(config, cancel.clone()).await?;
    let addr = running.listen_addr.context("no listen address")?;
    // Wait until the router has a slot map (PING is local; DBSIZE needs the map).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = redis_cli(addr, &["INFO"]).await.unwrap_or_default();
        if info.contains("slots_covered:16384") {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("router never got a full slot map: {info}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((running, addr, cancel))
}

/// Runs `redis-cli -h -p args...` and returns its stdout.
pub async fn redis_cli(addr: SocketAddr, args: &[&str]) -> Result<String> {
    redis_cli_opts(addr, &[], args, None).await
}

/// `redis-cli` with extra options (e.g. `-3`) and optional stdin.
pub async fn redis_cli_opts(
    addr: SocketAddr,
    opts: &[&str],
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<String> {
    use tokio::io::AsyncWriteExt;
    let bin = find_binary("redis-cli", "redis-tools")?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("-h")
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(opts)
        .args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    if let Some(input) = stdin {
        if let Some(mut s) = child.stdin.take() {
            s.write_all(input).await?;
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .context("redis-cli timed out")??;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A `redis` crate client for the router.
pub fn client(addr: SocketAddr, resp3: bool) -> Result<redis::Client> {
    let proto = if resp3 { "?protocol=resp3" } else { "" };
    Ok(redis::Client::open(format!("redis://{addr}/{proto}"))?)
}

/// Client connections on every node that are not the cluster's own (`CLIENT LIST`
/// minus the caller), summed.
pub async fn backend_clients(nodes: &[SocketAddr]) -> Result<usize> {
    let mut total = 0;
    for n in nodes {
        let r = ocean_tests::servers::resp::command(*n, &["CLIENT", "LIST"]).await?;
        let text = r.as_str().unwrap_or("").to_string();
        // Our own CLIENT LIST connection is one of them.
        total += text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
            .saturating_sub(1);
    }
    Ok(total)
}
