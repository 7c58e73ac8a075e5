//! TLS: clients to the router (`--tls-cert`/`--tls-key`, checked with `redis-cli --tls`),
//! and the router to backends (`--backend-tls --backend-ca`, against a TLS redis-server).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use common::{redis_cli, redis_cli_opts, router};
use ocean_redis_router::upstream::BackendOpts;
use ocean_redis_router::{Config, Running};
use ocean_tests::pki::Pki;
use ocean_tests::servers::{free_port, RedisCluster, RedisServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A CA and a certificate for 127.0.0.1 (an IP SAN) signed by it, written as PEM files.
fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// `redis-cli --tls --cacert ca.pem` against `addr`.
async fn tls_cli(pki: &Pki, addr: SocketAddr, args: &[&str]) -> Result<String> {
    redis_cli_opts(addr, &["--tls", "--cacert", s(&pki.ca)], args, None).await
}

/// A router accepting TLS clients only, in front of `seeds`, once it has a slot map.
async fn tls_router(
    pki: &Pki,
    seeds: Vec<SocketAddr>,
) -> Result<(Running, SocketAddr, CancellationToken)> {
    let mut config = Config::standalone("127.0.0.1:0".parse()?, seeds);
    config.threads = 1;
    config.client.tls = Some(ocean_redis_router::tls::acceptor(&pki.cert, &pki.key)?);
    let cancel = CancellationToken::new();
    let running = ocean_redis_router::start(config, cancel.clone()).await?;
    let addr = running.listen_addr.context("no listen address")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = tls_cli(pki, addr, &["INFO"]).await.unwrap_or_default();
        if info.contains("slots_covered:16384") {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("TLS router never answered with a full slot map: {info}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((running, addr, cancel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_get_routed_and_plain_clients_are_refused() -> Result<()> {
    let pki = Pki::generate()?;
    let cluster = RedisCluster::start(3, 0).await?;
    let (running, addr, cancel) = tls_router(&pki, cluster.master_addrs()).await?;

    assert_eq!(tls_cli(&pki, addr, &["PING"]).await?.trim(), "PONG");
    // Keys on all three masters.
    for k in ["a", "b", "c", "{x}1", "foo", "bar"] {
        let v = format!("v-{k}");
        assert_eq!(tls_cli(&pki, addr, &["SET", k, &v]).await?.trim(), "OK");
        assert_eq!(tls_cli(&pki, addr, &["GET", k]).await?.trim(), v);
    }
    let mget = tls_cli(&pki, addr, &["MGET", "a", "b", "c", "foo", "bar", "nope"]).await?;
    assert_eq!(
        mget.lines().collect::<Vec<_>>(),
        ["v-a", "v-b", "v-c", "v-foo", "v-bar", ""],
        "{mget}"
    );
    // A pipelined batch over one TLS connection, RESP3 too.
    let mut input = String::new();
    for i in 0..200 {
        input.push_str(&format!("SET k{i} {i}\nGET k{i}\n"));
    }
    let out = redis_cli_opts(
        addr,
        &["--tls", "--cacert", s(&pki.ca), "-3"],
        &[],
        Some(input.as_bytes()),
    )
    .await?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 400, "{out}");
    for i in 0..200 {
        assert_eq!(lines[2 * i], "OK");
        assert_eq!(lines[2 * i + 1], i.to_string());
    }
    // A large value both ways (several TLS records, socket back-pressure).
    let big = "x".repeat(3 << 20);
    let set = redis_cli_opts(
        addr,
        &["--tls", "--cacert", s(&pki.ca), "-x"],
        &["SET", "big"],
        Some(big.as_bytes()),
    )
    .await?;
    assert_eq!(set.trim(), "OK");
    let got = tls_cli(&pki, addr, &["GET", "big"]).await?;
    assert_eq!(got.trim_end().len(), big.len());
    // Without the CA the certificate is not trusted.
    let untrusted = redis_cli_opts(addr, &["--tls"], &["PING"], None).await?;
    assert!(!untrusted.contains("PONG"), "{untrusted}");

    // Plain text is refused: the connection is closed without a reply.
    let mut plain = tokio::net::TcpStream::connect(addr).await?;
    plain.write_all(b"PING\r\n").await?;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        loop {
            match plain.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .context("plain-text connection not closed")?;
    assert!(!got.windows(5).any(|w| w == b"+PONG"), "{got:?}");
    assert!(redis_cli(addr, &["PING"]).await.unwrap_or_default().trim() != "PONG");

    // The router still serves TLS clients afterwards.
    assert_eq!(tls_cli(&pki, addr, &["GET", "a"]).await?.trim(), "v-a");
    cancel.cancel();
    running.wait().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_backends() -> Result<()> {
    let pki = Pki::generate()?;
    let tls_port = free_port()?.to_string();
    // One node owning every slot, with a TLS port (and TLS on its cluster bus, so that
    // CLUSTER SHARDS reports the TLS port); the harness checks its plain port.
    let node = RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--tls-port",
        &tls_port,
        "--tls-cluster",
        "yes",
        "--tls-cert-file",
        s(&pki.cert),
        "--tls-key-file",
        s(&pki.key),
        "--tls-ca-cert-file",
        s(&pki.ca),
        "--tls-auth-clients",
        "no",
    ])
    .await?;
    let r = node
        .cmd(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])
        .await?;
    assert_eq!(r.as_str(), Some("OK"), "{r:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = node.cmd(&["CLUSTER", "INFO"]).await?;
        if info
            .as_str()
            .unwrap_or_default()
            .contains("cluster_state:ok")
        {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("single-node cluster never became ok: {info:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tls_addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse()?;

    let connector = ocean_redis_router::tls::connector(&pki.ca)?;
    let (running, addr, cancel) = router(vec![tls_addr], |c| {
        c.cluster.backend = Arc::new(BackendOpts {
            tls: Some(connector),
            ..BackendOpts::default()
        });
    })
    .await?;
    // Shared connections.
    for k in ["a", "b", "c", "foo"] {
        assert_eq!(redis_cli(addr, &["SET", k, k]).await?.trim(), "OK");
    }
    let mget = redis_cli(addr, &["MGET", "a", "b", "c", "foo"]).await?;
    assert_eq!(mget.lines().collect::<Vec<_>>(), ["a", "b", "c", "foo"]);
    // A large value both ways through the shared TLS connection.
    let big = "y".repeat(3 << 20);
    let set = redis_cli_opts(addr, &["-x"], &["SET", "big"], Some(big.as_bytes())).await?;
    assert_eq!(set.trim(), "OK");
    let got = redis_cli(addr, &["GET", "big"]).await?;
    assert_eq!(got.trim_end().len(), big.len());
    // A dedicated connection (MULTI/EXEC).
    let out = redis_cli_opts(
        addr,
        &[],
        &[],
        Some(b"MULTI\nSET t 1\nINCR t\nEXEC\nGET t\n"),
    )
    .await?;
    assert!(out.trim_end().ends_with("2"), "{out}");
    assert!(out.contains("OK\nQUEUED\nQUEUED"), "{out}");
    // Every backend connection of the router is a TLS one: the node saw the keys.
    assert_eq!(
        node.cmd(&["GET", "foo"]).await?.as_str(),
        Some("foo"),
        "written through TLS"
    );
    let info = redis_cli(addr, &["INFO"]).await?;
    assert!(info.contains("masters:1"), "{info}");
    cancel.cancel();
    running.wait().await;

    // A router that does not trust the CA cannot get a slot map (no plain fallback).
    let other = Pki::generate()?;
    let untrusted = ocean_redis_router::tls::connector(&other.ca)?;
    let mut config = Config::standalone("127.0.0.1:0".parse()?, vec![tls_addr]);
    config.cluster.backend = Arc::new(BackendOpts {
        tls: Some(untrusted),
        ..BackendOpts::default()
    });
    let cancel = CancellationToken::new();
    let running = ocean_redis_router::start(config, cancel.clone()).await?;
    let addr = running.listen_addr.context("no listen address")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = redis_cli(addr, &["INFO"]).await?;
    assert!(!info.contains("slots_covered:16384"), "{info}");
    cancel.cancel();
    running.wait().await;
    Ok(())
}
