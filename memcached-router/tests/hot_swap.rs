//! Table mode: a `memcached` table file; a change that adds a server to a pool moves only
//! the keys ketama says should move, and open client connections stay and pick up the new
//! ring.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{stat, Raw};
use ocean_core::subscriber::SubscriberConfig;
use ocean_core::table::memcached::{
    MemcachedHash, MemcachedPool, MemcachedServer, MemcachedTable, ReplicaSet,
};
use ocean_memcached_router::config::{Mode, Settings};
use ocean_memcached_router::ketama::{server_name, KeyHash, Ring};
use ocean_memcached_router::Config;
use ocean_tests::servers::{free_port, Memcached};
use tokio_util::sync::CancellationToken;

fn table(port: u16, addrs: &[std::net::SocketAddr]) -> Vec<u8> {
    let t = MemcachedTable {
        pools: vec![MemcachedPool {
            name: "cache".into(),
            listen_port: port,
            hash: MemcachedHash::Fnv1a64,
            replicas: vec![ReplicaSet {
                name: "a".into(),
                servers: addrs
                    .iter()
                    .map(|a| MemcachedServer {
                        addr: *a,
                        weight: 1,
                    })
                    .collect(),
            }],
        }],
    };
    serde_json::to_vec(&t).unwrap()
}

fn ring(addrs: &[std::net::SocketAddr]) -> Ring {
    Ring::new(
        &addrs
            .iter()
            .map(|a| (server_name(*a), 1))
            .collect::<Vec<_>>(),
        KeyHash::Fnv1a64,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_server_moves_only_ketamas_share() -> Result<()> {
    let mut servers = Vec::new();
    for _ in 0..4 {
        servers.push(Memcached::start().await?);
    }
    let addrs: Vec<_> = servers.iter().map(Memcached::addr).collect();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("memcached.json");
    let port = free_port()?;
    std::fs::write(&file, table(port, &addrs[..3]))?;
    let config = Config {
        mode: Mode::Table {
            bind: "127.0.0.1".parse()?,
            subscriber: SubscriberConfig {
                table_file: Some(file.clone()),
                file_poll: Duration::from_millis(100),
                ..SubscriberConfig::default()
            },
        },
        settings: Settings::default(),
        threads: 0,
        admin: None,
        pool_file: None,
    };
    let cancel = CancellationToken::new();
    let running = ocean_memcached_router::start(config, cancel.clone()).await?;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut c = None;
    for _ in 0..100 {
        if let Ok(conn) = Raw::connect(addr).await {
            c = Some(conn);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = c.expect("the pool's listener comes up");
    let mut idle = Raw::connect(addr).await?;

    let keys: Vec<String> = (0..2000).map(|i| format!("{i}:session")).collect();
    for k in &keys {
        c.expect(format!("set {k} 0 0 1\r\nv\r\n").as_bytes(), b"STORED\r\n")
            .await?;
    }
    let before = ring(&addrs[..3]);
    let after = ring(&addrs);
    let should_move: Vec<bool> = keys
        .iter()
        .map(|k| before.server_for(k.as_bytes()) != after.server_for(k.as_bytes()))
        .collect();
    let moved = should_move.iter().filter(|m| **m).count();
    let fraction = moved as f64 / keys.len() as f64;
    assert!(
        (0.1..0.45).contains(&fraction),
        "ketama moves about 1/4: {fraction}"
    );

    std::fs::write(&file, table(port, &addrs))?;
    for _ in 0..100 {
        if stat(addr, "table_swaps").await? >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stat(addr, "table_swaps").await?, 2);
    // The same connection: exactly the keys ketama moved now miss (they went to the new,
    // empty server), every other key hits.
    let mut misses = 0;
    for (k, m) in keys.iter().zip(&should_move) {
        let reply = c
            .call(format!("get {k}\r\n").as_bytes(), &[b"END\r\n"])
            .await?;
        let hit = reply.starts_with(b"VALUE ");
        assert_eq!(hit, !m, "{k}: moved {m}");
        misses += usize::from(!hit);
    }
    assert_eq!(misses, moved);
    // The idle connection opened before the swap works too, on the new ring.
    idle.expect(
        b"set new 0 0 1\r\nn\r\nget new\r\n",
        b"STORED\r\nVALUE new 0 1\r\nn\r\nEND\r\n",
    )
    .await?;
    // Both clients are still the router's (plus the one asking).
    assert_eq!(stat(addr, "curr_connections").await?, 3);
    cancel.cancel();
    running.wait().await;
    Ok(())
}
