//! Bad input and bad backends: malformed RESP, a 1 GB bulk length, a 1,000,000-element
//! array, clients that leave mid-pipeline or in a stateful mode, a backend that stops
//! answering (SIGSTOP). Clear errors, no panic, and no leaked backend connections.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::{backend_clients, redis_cli, router};
use ocean_tests::servers::{resp, RedisCluster, Resp, RespClient};
use tokio::io::AsyncWriteExt;

/// Sends `bytes`, expects a protocol error reply starting with `want`, then EOF.
async fn protocol_error(addr: std::net::SocketAddr, bytes: &[u8], want: &str) -> Result<()> {
    let mut c = RespClient::connect(addr).await?;
    c.send_raw(bytes).await?;
    match c.read_reply().await? {
        Resp::Error(e) => assert!(e.starts_with(want), "{bytes:?}: {e}"),
        other => panic!("{bytes:?}: {other:?}"),
    }
    assert!(
        c.read_reply().await.is_err(),
        "connection left open after {bytes:?}"
    );
    Ok(())
}

/// Keys served by `node` (it accepts a SET without MOVED).
async fn keys_on(node: std::net::SocketAddr, n: usize) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for i in 0.. {
        let key = format!("bad:{i}");
        if resp::command(node, &["SET", key.as_str(), "x"])
            .await?
            .is_ok()
        {
            out.push(key);
        }
        if out.len() == n {
            break;
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_stalled_backend() -> Result<()> {
    let mut cluster = RedisCluster::start(3, 1).await?;
    let nodes = cluster.addrs();
    let (_running, addr, cancel) = router(cluster.master_addrs(), |c| {
        // Every dedicated connection closes when its client is done, so the count below
        // returns to the baseline exactly.
        c.cluster.max_idle_dedicated = 0;
        c.cluster.backend = std::sync::Arc::new(ocean_redis_router::upstream::BackendOpts {
            command_timeout: Duration::from_secs(1),
            ..Default::default()
        });
        c.client.route.retry_timeout = Duration::from_secs(1);
    })
    .await?;

    // Warm up: the shared connections to every master open.
    let mut warm = RespClient::connect(addr).await?;
    for i in 0..100 {
        let k = format!("warm{i}");
        assert!(warm.command(&["SET", k.as_str(), "1"]).await?.is_ok());
    }
    drop(warm);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = backend_clients(&nodes).await?;

    // Malformed requests: Redis's own protocol errors, then the connection closes.
    protocol_error(
        addr,
        b"*2\r\n$3\r\nGET\r\n:x\r\n",
        "ERR Protocol error: expected '$'",
    )
    .await?;
    protocol_error(
        addr,
        b"*x\r\n",
        "ERR Protocol error: invalid multibulk length",
    )
    .await?;
    protocol_error(
        addr,
        b"*2\r\n$3\r\nSET\r\n$1073741824\r\n",
        "ERR Protocol error: invalid bulk length",
    )
    .await?;
    protocol_error(
        addr,
        b"*1000000\r\n$3\r\nGET\r\n",
        "ERR Protocol error: invalid multibulk length",
    )
    .await?;
    protocol_error(
        addr,
        b"GET \"unbalanced\r\n",
        "ERR Protocol error: unbalanced quotes",
    )
    .await?;

    // Clients that leave mid-pipeline, mid-request, in MULTI, in BLPOP, subscribed.
    for i in 0..20 {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let mut pipeline = Vec::new();
        for j in 0..500 {
            Resp::encode_command(&["SET", &format!("p{i}:{j}"), "v"], &mut pipeline);
            Resp::encode_command(
                &["MGET", &format!("p{i}:{j}"), "a", "b", "c"],
                &mut pipeline,
            );
        }
        pipeline.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nhalf");
        s.write_all(&pipeline).await?;
        drop(s);
    }
    for cmd in [
        &["MULTI"][..],
        &["WATCH", "w"][..],
        &["SUBSCRIBE", "ch"][..],
        &["SSUBSCRIBE", "sch"][..],
    ] {
        for _ in 0..5 {
            let mut c = RespClient::connect(addr).await?;
            let r = c.command(cmd).await;
            if cmd[0] == "MULTI" {
                assert!(r?.is_ok());
                assert_eq!(
                    c.command(&["SET", "in-multi", "1"]).await?.as_str(),
                    Some("QUEUED")
                );
            } else {
                r?;
            }
            drop(c);
        }
    }
    // A BLPOP client is waiting in the router when it leaves: give the router a moment.
    let mut blocked = Vec::new();
    for _ in 0..5 {
        let mut c = RespClient::connect(addr).await?;
        let mut out = Vec::new();
        Resp::encode_command(&["BLPOP", "nothing", "0"], &mut out);
        c.send_raw(&out).await?;
        blocked.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(blocked);

    // The router still works, and every connection it opened for those clients is gone.
    assert_eq!(redis_cli(addr, &["SET", "after", "ok"]).await?.trim(), "OK");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = backend_clients(&nodes).await?;
    while now != baseline && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = backend_clients(&nodes).await?;
    }
    println!("backend connections: baseline {baseline}, after bad clients {now}");
    assert_eq!(now, baseline, "backend connections leaked");
    let info = redis_cli(addr, &["INFO"]).await?;
    assert!(
        info.contains("connected_clients:1\r"),
        "client sessions leaked: {info}"
    );

    // A backend that stops answering: its keys get a clear error within the command
    // timeout; other masters' keys are served meanwhile; after SIGCONT it serves again.
    let victim = cluster.master_addrs()[0];
    let other = cluster.master_addrs()[1];
    let stalled_key = keys_on(victim, 1).await?.remove(0);
    let fine_key = keys_on(other, 1).await?.remove(0);
    cluster.node_mut(victim).context("victim")?.pause()?;
    let started = Instant::now();
    let mut c = RespClient::connect(addr).await?;
    let r = c.command(&["GET", stalled_key.as_str()]).await?;
    let waited = started.elapsed();
    println!("GET on a stopped backend: {r:?} after {waited:?}");
    match &r {
        Resp::Error(e) => assert!(e.contains("did not answer") || e.contains("lost"), "{e}"),
        other => panic!("wanted an error, got {other:?}"),
    }
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let mut c2 = RespClient::connect(addr).await?;
    assert_eq!(
        c2.command(&["GET", fine_key.as_str()]).await?.as_str(),
        Some("x")
    );
    cluster.node_mut(victim).context("victim")?.resume()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.command(&["GET", stalled_key.as_str()]).await?;
        if r.as_str() == Some("x") {
            break;
        }
        assert!(Instant::now() < deadline, "never served again: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cancel.cancel();
    Ok(())
}
