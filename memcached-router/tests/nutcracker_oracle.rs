//! Compatibility with twemproxy: `nutcracker` (Debian's twemproxy) is the oracle.
//!
//! The same pool (weights, a server on port 11211, keys with bytes >= 0x80) is configured
//! in nutcracker; keys are set through it, then every memcached is asked directly which
//! one holds each key, and the ketama [`Ring`] must name that server.
//! A missing `nutcracker` binary fails the test, naming the Debian package.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ocean_memcached_router::config::{PoolSpec, ReplicaSetSpec, ServerSpec};
use ocean_memcached_router::ketama::{server_name, KeyHash, Ring};
use ocean_tests::servers::{free_port, start_nutcracker, Memcached};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `request` and reads until the reply ends with one of `ends`.
async fn roundtrip(stream: &mut TcpStream, request: &[u8], ends: &[&[u8]]) -> Result<Vec<u8>> {
    stream.write_all(request).await?;
    let mut reply = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, async {
        while !ends.iter().any(|e| reply.ends_with(e)) {
            if stream.read_buf(&mut reply).await? == 0 {
                bail!(
                    "connection closed after {:?}",
                    String::from_utf8_lossy(&reply)
                );
            }
        }
        Ok(())
    })
    .await
    .context("reply timed out")??;
    Ok(reply)
}

async fn connect_retry(addr: SocketAddr) -> Result<TcpStream> {
    let mut last = None;
    for _ in 0..100 {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{addr} never accepted: {last:?}")
}

fn keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..150)
        .map(|i| format!("user:{i}:profile").into_bytes())
        .collect();
    for i in 0u8..50 {
        // Bytes >= 0x80 (UTF-8 and raw Latin-1), never spaces or control characters.
        let mut k = "clé-".as_bytes().to_vec();
        k.push(0x80 + i);
        k.push(0xFF - i);
        k.extend_from_slice(format!("{i}").as_bytes());
        keys.push(k);
    }
    keys.push(vec![0xFF; 40]);
    keys.push(vec![0x80]);
    keys
}

async fn check_pool(hash_name: &str, hash: KeyHash) -> Result<()> {
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(Memcached::start().await?);
    }
    // Port 11211 on its own loopback address: twemproxy leaves it out of the hashed name.
    servers.push(Memcached::start_at("127.0.0.55:11211".parse()?).await?);
    let addrs: Vec<SocketAddr> = servers.iter().map(Memcached::addr).collect();
    let weights = [1u32, 2, 3, 2];

    let dir = tempfile::tempdir()?;
    let listen = free_port()?;
    let stats = free_port()?;
    let mut conf = format!(
        "pool:\n  listen: 127.0.0.1:{listen}\n  hash: {hash_name}\n  distribution: ketama\n  \
         auto_eject_hosts: false\n  timeout: 3000\n  servers:\n"
    );
    for (a, w) in addrs.iter().zip(weights) {
        conf.push_str(&format!("   - {}:{}:{}\n", a.ip(), a.port(), w));
    }
    let conf_path = dir.path().join("nutcracker.yml");
    std::fs::write(&conf_path, &conf)?;
    let _proxy = start_nutcracker(&conf_path, dir.path(), stats)?;
    let proxy_addr: SocketAddr = format!("127.0.0.1:{listen}").parse()?;
    let mut proxy = connect_retry(proxy_addr).await?;

    let named: Vec<(String, u32)> = addrs
        .iter()
        .zip(weights)
        .map(|(a, w)| (server_name(*a), w))
        .collect();
    assert_eq!(
        named[3].0, "127.0.0.55",
        "port 11211 is left out of the name"
    );
    let ring = Ring::new(&named, hash);

    let mut direct = Vec::new();
    for a in &addrs {
        direct.push(TcpStream::connect(a).await?);
    }
    let keys = keys();
    let mut per_server = vec![0usize; addrs.len()];
    for (i, key) in keys.iter().enumerate() {
        let value = format!("v{i}");
        let mut req = b"set ".to_vec();
        req.extend_from_slice(key);
        req.extend_from_slice(format!(" 0 0 {}\r\n{value}\r\n", value.len()).as_bytes());
        let reply = roundtrip(&mut proxy, &req, &[b"\r\n"]).await?;
        assert_eq!(reply, b"STORED\r\n", "set {key:?} through nutcracker");

        let mut holders = Vec::new();
        for (s, stream) in direct.iter_mut().enumerate() {
            let mut get = b"get ".to_vec();
            get.extend_from_slice(key);
            get.extend_from_slice(b"\r\n");
            let reply = roundtrip(stream, &get, &[b"END\r\n"]).await?;
            if reply.starts_with(b"VALUE ") {
                holders.push(s);
            }
        }
        assert_eq!(holders.len(), 1, "key {key:?} held by {holders:?}");
        assert_eq!(
            ring.server_for(key),
            holders[0],
            "key {key:?} ({hash_name}): nutcracker put it on {} ({})",
            addrs[holders[0]],
            named[holders[0]].0
        );
        per_server[holders[0]] += 1;
    }
    // Every server got some keys, so the check covered the whole ring.
    assert!(per_server.iter().all(|&n| n > 0), "{per_server:?}");

    // The running router, configured with the same pool, finds every key nutcracker set
    // (it reads only where ketama says, so a hit is the same server), and keys it sets
    // are found by nutcracker.
    let spec = PoolSpec {
        name: "oracle".into(),
        hash,
        placement: Default::default(),
        replica_sets: vec![ReplicaSetSpec {
            name: "a".into(),
            servers: addrs
                .iter()
                .zip(weights)
                .map(|(a, w)| ServerSpec {
                    addr: *a,
                    name: server_name(*a),
                    weight: w,
                })
                .collect(),
        }],
    };
    let cancel = CancellationToken::new();
    let running = ocean_memcached_router::start(
        ocean_memcached_router::Config::standalone("127.0.0.1:0".parse()?, spec),
        cancel.clone(),
    )
    .await?;
    let mut router = TcpStream::connect(running.listen_addr.context("listen addr")?).await?;
    for (i, key) in keys.iter().enumerate() {
        let mut get = b"get ".to_vec();
        get.extend_from_slice(key);
        get.extend_from_slice(b"\r\n");
        let reply = roundtrip(&mut router, &get, &[b"END\r\n"]).await?;
        let mut want = b"VALUE ".to_vec();
        want.extend_from_slice(key);
        want.extend_from_slice(
            format!(" 0 {}\r\nv{i}\r\nEND\r\n", format!("v{i}").len()).as_bytes(),
        );
        assert_eq!(reply, want, "get {key:?} ({hash_name}) through ocean");
        let mut set = b"set ".to_vec();
        set.extend_from_slice(key);
        set.extend_from_slice(b" 0 0 5\r\nocean\r\n");
        assert_eq!(
            roundtrip(&mut router, &set, &[b"\r\n"]).await?,
            b"STORED\r\n"
        );
        let reply = roundtrip(&mut proxy, &get, &[b"END\r\n"]).await?;
        assert!(
            reply.ends_with(b"\r\nocean\r\nEND\r\n"),
            "nutcracker reads what ocean set: {key:?}"
        );
    }
    cancel.cancel();
    running.wait().await;
    Ok(())
}

/// One test for both hashes: they share 127.0.0.55:11211, so they must not run in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nutcracker_agrees_fnv1a_64_and_md5() -> Result<()> {
    check_pool("fnv1a_64", KeyHash::Fnv1a64).await?;
    check_pool("md5", KeyHash::Md5).await
}
