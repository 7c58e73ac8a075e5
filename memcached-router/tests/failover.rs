//! Replica sets and failure detection: a server killed under load (zero client errors,
//! zero lost hits), marked down, probed, used again when it returns; a hung server
//! (SIGSTOP) answered by timeouts and failover; cas never fails over.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use common::{direct_get, pool, Raw, Router};
use ocean_memcached_router::config::Settings;
use ocean_memcached_router::ketama::{server_name, KeyHash, Ring};
use ocean_tests::servers::Memcached;

fn fast_tko() -> Settings {
    Settings {
        tko_after: 3,
        probe_interval: Duration::from_millis(200),
        probe_interval_max: Duration::from_millis(800),
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(500),
        ..Settings::default()
    }
}

async fn router_stat(addr: std::net::SocketAddr, name: &str) -> Result<u64> {
    common::stat(addr, name).await
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> Result<bool>) -> Result<()> {
    for _ in 0..200 {
        if f().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("timed out waiting for {what}")
}

/// Stat `name` of `addr` once two readings 100 ms apart agree: a connection closed just
/// before (the harness's readiness check) is counted until the server's worker sees the
/// close, and a baseline taken then would never be reached again.
async fn settled_count(addr: std::net::SocketAddr, name: &str) -> Result<u64> {
    let mut last = common::stat(addr, name).await?;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = common::stat(addr, name).await?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    anyhow::bail!("{name} of {addr} did not settle (last {last})")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_one_server_under_load() -> Result<()> {
    let mut servers = Vec::new();
    for _ in 0..4 {
        servers.push(Memcached::start().await?);
    }
    let a: Vec<_> = servers[..2].iter().map(Memcached::addr).collect();
    let b: Vec<_> = servers[2..].iter().map(Memcached::addr).collect();
    let router = Router::start(pool(&[a.clone(), b.clone()], KeyHash::Fnv1a64), fast_tko()).await?;
    let addr = router.addr;

    // Keys written before the kill: in both sets.
    let mut c = Raw::connect(addr).await?;
    for i in 0..300 {
        let key = format!("{i}:before");
        c.expect(
            format!("set {key} 0 0 {}\r\n{key}\r\n", key.len()).as_bytes(),
            b"STORED\r\n",
        )
        .await?;
    }
    for i in 0..300 {
        let key = format!("{i}:before");
        let in_b = direct_get(b[0], key.as_bytes()).await?.is_some()
            || direct_get(b[1], key.as_bytes()).await?.is_some();
        assert!(in_b, "{key} was written to the second set too");
    }

    // Load: 4 clients loop over gets of old keys (each must hit) and sets of new keys.
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let (stop, errors, lost, done) = (stop.clone(), errors.clone(), lost.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::connect(addr).await?;
            let mut i = t * 1000;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("{}:before", i % 300);
                let reply = c
                    .call(format!("get {key}\r\n").as_bytes(), &[b"\r\n"])
                    .await?;
                let reply = if reply.starts_with(b"VALUE") && !reply.ends_with(b"END\r\n") {
                    let mut r = reply;
                    r.extend(c.read_until(&[b"END\r\n"]).await?);
                    r
                } else {
                    reply
                };
                let want = format!("VALUE {key} 0 {}\r\n{key}\r\nEND\r\n", key.len());
                if reply == b"END\r\n" {
                    lost.fetch_add(1, Ordering::Relaxed);
                } else if reply != want.as_bytes() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("get {key}: {:?}", String::from_utf8_lossy(&reply));
                }
                let new = format!("{i}:new");
                let reply = c
                    .call(format!("set {new} 0 0 1\r\nx\r\n").as_bytes(), &[b"\r\n"])
                    .await?;
                if reply != b"STORED\r\n" {
                    errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("set {new}: {:?}", String::from_utf8_lossy(&reply));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Kill the first set's first server mid-loop.
    servers[0].kill();
    let before = done.load(Ordering::Relaxed);
    wait_for("the killed server to be marked down", async || {
        Ok(router_stat(addr, "servers_down").await? == 1)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        done.load(Ordering::Relaxed) > before + 50,
        "the loop kept going"
    );
    // Stop the load while the server is still down: every key written before the kill
    // must have been a hit and nothing an error.
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "client errors");
    assert_eq!(lost.load(Ordering::Relaxed), 0, "lost hits");
    assert!(router_stat(addr, "tko_events").await? >= 1);
    // It comes back (empty), is probed and used again.
    servers[0].restart().await?;
    wait_for("the server to be probed back up", async || {
        Ok(router_stat(addr, "servers_down").await? == 0)
    })
    .await?;

    // Used again: a key that ketama puts on it is stored there through the router.
    let ring = Ring::new(
        &a.iter().map(|x| (server_name(*x), 1)).collect::<Vec<_>>(),
        KeyHash::Fnv1a64,
    );
    let key = (0..1000)
        .map(|i| format!("{i}:after"))
        .find(|k| ring.server_for(k.as_bytes()) == 0)
        .context("a key for the first server")?;
    let mut c = Raw::connect(addr).await?;
    c.expect(
        format!("set {key} 0 0 2\r\nok\r\n").as_bytes(),
        b"STORED\r\n",
    )
    .await?;
    assert_eq!(
        direct_get(a[0], key.as_bytes()).await?,
        Some(b"ok".to_vec())
    );
    // A key written before the kill now misses on the first set (the server came back
    // empty) but is still in the second: --miss-failover would find it.
    router.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_server_times_out_and_fails_over_cas_does_not() -> Result<()> {
    let mut a = Memcached::start().await?;
    let b = Memcached::start().await?;
    // A request timeout long enough that a read answered without waiting for it is
    // told apart from one that waited, even on a loaded machine.
    let settings = Settings {
        request_timeout: Duration::from_millis(1500),
        ..fast_tko()
    };
    let router = Router::start(
        pool(&[vec![a.addr()], vec![b.addr()]], KeyHash::Fnv1a64),
        settings,
    )
    .await?;
    let mut c = Raw::connect(router.addr).await?;
    c.expect(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n").await?;
    let gets = c.call(b"gets k\r\n", &[b"END\r\n"]).await?;
    let token = String::from_utf8_lossy(&gets)
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    let conns_before = settled_count(b.addr(), "curr_connections").await?;
    // The second set's copy is written without waiting (write policy `first`): reads fail
    // over to it below, so it must be there first. (These direct connections close, and
    // the count settles back at the end.)
    wait_for("the second set to hold the copy", async || {
        Ok(direct_get(b.addr(), b"k").await? == Some(b"v".to_vec()))
    })
    .await?;

    a.pause()?;
    // Reads time out on the first set and fail over; after tko_after timeouts the server
    // is down and reads fail over at once.
    for _ in 0..5 {
        c.expect(b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n")
            .await?;
    }
    assert_eq!(common::stat(router.addr, "servers_down").await?, 1);
    let started = std::time::Instant::now();
    c.expect(b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n")
        .await?;
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "down: no timeout waited ({:?})",
        started.elapsed()
    );
    // Writes are answered by the second set.
    c.expect(b"set k2 0 0 1\r\nw\r\n", b"STORED\r\n").await?;
    // cas never fails over: the token is the first set's.
    let reply = c
        .call(
            format!("cas k 0 0 1 {token}\r\nx\r\n").as_bytes(),
            &[b"\r\n"],
        )
        .await?;
    assert!(
        reply.starts_with(b"SERVER_ERROR "),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(direct_get(b.addr(), b"k").await?, Some(b"v".to_vec()));
    a.resume()?;
    wait_for("the resumed server to be up", async || {
        Ok(common::stat(router.addr, "servers_down").await? == 0)
    })
    .await?;
    c.expect(b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n")
        .await?;
    c.expect(
        format!("cas k 0 0 1 {token}\r\nx\r\n").as_bytes(),
        b"STORED\r\n",
    )
    .await?;
    // The second set cannot check the token: its copy is dropped rather than left stale.
    c.expect(b"mn\r\n", b"MN\r\n").await?;
    assert_eq!(direct_get(a.addr(), b"k").await?, Some(b"x".to_vec()));
    wait_for("cas to invalidate the other sets' copy", async || {
        Ok(direct_get(b.addr(), b"k").await?.is_none())
    })
    .await?;
    // No connection leaked to the healthy server (direct checks above close theirs).
    wait_for("the backend's connection count to settle", async || {
        Ok(common::stat(b.addr(), "curr_connections").await? == conns_before)
    })
    .await?;
    router.stop().await;

    // One set only: a hung server is a SERVER_ERROR after the request timeout.
    let router = Router::start(pool(&[vec![a.addr()]], KeyHash::Fnv1a64), fast_tko()).await?;
    let mut c = Raw::connect(router.addr).await?;
    a.pause()?;
    let reply = c.call(b"get k\r\n", &[b"\r\n"]).await?;
    assert!(
        reply.starts_with(b"SERVER_ERROR timeout from "),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    a.resume()?;
    router.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_policy_all_and_miss_failover() -> Result<()> {
    let a = Memcached::start().await?;
    let b = Memcached::start().await?;
    let sets = [vec![a.addr()], vec![b.addr()]];
    // The key exists only in the second set.
    let mut direct = Raw::connect(b.addr()).await?;
    direct
        .expect(b"set only_b 0 0 1\r\nb\r\n", b"STORED\r\n")
        .await?;

    let first = Router::start(pool(&sets, KeyHash::Fnv1a64), Settings::default()).await?;
    let mut c = Raw::connect(first.addr).await?;
    c.expect(b"get only_b\r\n", b"END\r\n").await?;
    c.expect(b"mg only_b v\r\n", b"EN\r\n").await?;
    first.stop().await;

    let settings = Settings {
        miss_failover: true,
        write_policy: ocean_memcached_router::config::WritePolicy::All,
        ..Settings::default()
    };
    let router = Router::start(pool(&sets, KeyHash::Fnv1a64), settings).await?;
    let mut c = Raw::connect(router.addr).await?;
    c.expect(b"get only_b\r\n", b"VALUE only_b 0 1\r\nb\r\nEND\r\n")
        .await?;
    c.expect(b"get x only_b y\r\n", b"VALUE only_b 0 1\r\nb\r\nEND\r\n")
        .await?;
    c.expect(b"mg only_b v\r\n", b"VA 1\r\nb\r\n").await?;
    // add: STORED on the first set, NOT_STORED on the second; all = the worst.
    c.expect(b"add only_b 0 0 1\r\na\r\n", b"NOT_STORED\r\n")
        .await?;
    assert_eq!(direct_get(a.addr(), b"only_b").await?, Some(b"a".to_vec()));
    router.stop().await;
    Ok(())
}
