//! Bad input: memcached's error lines, no panic, no leaked connections (counted on the
//! backends and on the router).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{pool, stat, Raw, Router};
use ocean_memcached_router::config::Settings;
use ocean_memcached_router::ketama::KeyHash;
use ocean_tests::servers::Memcached;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_memcached_errors_and_leaks_nothing() -> Result<()> {
    let a = Memcached::start().await?;
    let b = Memcached::start().await?;
    let router = Router::start(
        pool(&[vec![a.addr(), b.addr()]], KeyHash::Md5),
        Settings::default(),
    )
    .await?;
    let addr = router.addr;
    // Warm the shared backend connections (they open on first use), then count them.
    // 64 keys: the ring depends on the servers' ports, and a few keys could all land on
    // one server, leaving the other's connection to open later and look like a leak.
    let mut warm = Raw::connect(addr).await?;
    let keys: Vec<String> = (0..64).map(|i| format!("warm:{i}")).collect();
    warm.expect(format!("get {}\r\n", keys.join(" ")).as_bytes(), b"END\r\n")
        .await?;
    drop(warm);
    let backend_conns =
        stat(a.addr(), "curr_connections").await? + stat(b.addr(), "curr_connections").await?;

    // An unterminated line over the limit: CLIENT_ERROR line too long, closed.
    let mut c = Raw::connect(addr).await?;
    c.stream.write_all(&[b'x'; 3000]).await?;
    assert_eq!(c.read_to_close().await?, b"CLIENT_ERROR line too long\r\n");
    // An unterminated line under the limit, then the client goes away mid-request.
    let mut c = Raw::connect(addr).await?;
    c.stream.write_all(b"get abc").await?;
    drop(c);
    let mut c = Raw::connect(addr).await?;
    c.stream.write_all(b"set k 0 0 100\r\npartial").await?;
    drop(c);
    // A data block longer than declared: bad data chunk, closed.
    let mut c = Raw::connect(addr).await?;
    c.stream
        .write_all(b"set k 0 0 3\r\nabcdef\r\nget k\r\n")
        .await?;
    assert_eq!(c.read_to_close().await?, b"CLIENT_ERROR bad data chunk\r\n");
    // A 2 GB declared length: refused before anything is buffered, closed.
    let mut c = Raw::connect(addr).await?;
    c.stream.write_all(b"set k 0 0 2147483648\r\nxxxx").await?;
    assert_eq!(
        c.read_to_close().await?,
        b"CLIENT_ERROR bad command line format\r\n"
    );
    let mut c = Raw::connect(addr).await?;
    c.stream.write_all(b"set k 0 0 2000000000\r\nxxxx").await?;
    assert_eq!(
        c.read_to_close().await?,
        b"SERVER_ERROR object too large for cache\r\n"
    );
    // A value a little over the item limit is swallowed and the connection goes on.
    let mut c = Raw::connect(addr).await?;
    let mut req = format!("set big 0 0 {}\r\n", (1 << 20) + 1).into_bytes();
    req.extend(std::iter::repeat_n(b'v', (1 << 20) + 1));
    req.extend_from_slice(b"\r\nget big\r\n");
    c.expect(&req, b"SERVER_ERROR object too large for cache\r\nEND\r\n")
        .await?;
    // 10,000 keys in one get, over both servers, answered in key order.
    let mut req = b"get".to_vec();
    let mut want = Vec::new();
    for i in 0..10_000 {
        let key = format!("many:{i}");
        if i % 1000 == 0 {
            c.expect(
                format!("set {key} 0 0 1\r\n{}\r\n", i / 1000).as_bytes(),
                b"STORED\r\n",
            )
            .await?;
            want.extend_from_slice(format!("VALUE {key} 0 1\r\n{}\r\n", i / 1000).as_bytes());
        }
        req.extend_from_slice(format!(" {key}").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    want.extend_from_slice(b"END\r\n");
    c.expect(&req, &want).await?;
    // 10,001 keys: over the router's limit, a memcached-style error, the stream goes on.
    req.truncate(req.len() - 2);
    req.extend_from_slice(b" one_more\r\nmn\r\n");
    c.expect(&req, b"CLIENT_ERROR bad command line format\r\nMN\r\n")
        .await?;
    // Unknown commands and bad keys keep the connection.
    c.expect(b"nonsense\r\nget\r\nmn\r\n", b"ERROR\r\nERROR\r\nMN\r\n")
        .await?;

    drop(c);
    // Many clients that vanish mid-request while their requests are in flight.
    for i in 0..50 {
        let mut c = Raw::connect(addr).await?;
        c.stream
            .write_all(format!("get many:{i} many:0\r\nset q{i} 0 0 5\r\nab").as_bytes())
            .await?;
        drop(c);
    }
    // The router is fine, and nothing leaked: the backends see the same shared
    // connections, and the router only this client.
    let mut c = Raw::connect(addr).await?;
    c.expect(b"get many:0\r\n", b"VALUE many:0 0 1\r\n0\r\nEND\r\n")
        .await?;
    let mut ok = false;
    for _ in 0..100 {
        let router_conns = stat(addr, "curr_connections").await?;
        let backends =
            stat(a.addr(), "curr_connections").await? + stat(b.addr(), "curr_connections").await?;
        if router_conns == 2 && backends == backend_conns {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ok,
        "connections leaked: router {} backends {} (want {backend_conns})",
        stat(addr, "curr_connections").await?,
        stat(a.addr(), "curr_connections").await? + stat(b.addr(), "curr_connections").await?
    );
    router.stop().await;
    Ok(())
}

/// A flood past `--max-clients`: each extra client gets memcached's kind of refusal and is
/// closed; the clients already in keep being served, and a freed slot is usable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_max_clients_is_refused_and_the_others_are_served() -> Result<()> {
    let a = Memcached::start().await?;
    let settings = Settings {
        max_clients: 4,
        ..Settings::default()
    };
    let router = Router::start(pool(&[vec![a.addr()]], KeyHash::Fnv1a64), settings).await?;
    let addr = router.addr;
    let mut inside = Vec::new();
    for i in 0..4 {
        let mut c = Raw::connect(addr).await?;
        c.expect(format!("set k{i} 0 0 1\r\nv\r\n").as_bytes(), b"STORED\r\n")
            .await?;
        inside.push(c);
    }
    for _ in 0..50 {
        let mut c = Raw::connect(addr).await?;
        assert_eq!(
            c.read_to_close().await?,
            b"SERVER_ERROR too many open connections\r\n"
        );
    }
    for (i, c) in inside.iter_mut().enumerate() {
        c.expect(
            format!("get k{i}\r\n").as_bytes(),
            format!("VALUE k{i} 0 1\r\nv\r\nEND\r\n").as_bytes(),
        )
        .await?;
    }
    drop(inside.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Raw::connect(addr).await?;
        match c.call(b"version\r\n", &[b"\r\n"]).await {
            Ok(r) if r.starts_with(b"VERSION") => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "a freed slot was never reused: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    router.stop().await;
    Ok(())
}
