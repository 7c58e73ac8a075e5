//! `/metrics` people can use (issue 13): server latency is a Prometheus histogram, every
//! metric has `# HELP`, `tko_total` carries pool, replica set and server, and a server
//! removed from the table takes its series with it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
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
use ocean_tests::metrics::{scrape, series, undescribed};
use ocean_tests::servers::{free_port, Memcached};
use tokio_util::sync::CancellationToken;

fn table(port: u16, addrs: &[SocketAddr]) -> Vec<u8> {
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

/// Polls `f` (every 50 ms, at most 10 s) until it holds.
async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> Result<bool>) -> Result<()> {
    for _ in 0..200 {
        if f().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("timed out waiting for {what}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_help_tko_labels_and_removed_servers() -> Result<()> {
    let keep = Memcached::start().await?;
    let mut gone = Memcached::start().await?;
    let (keep_addr, gone_addr) = (keep.addr(), gone.addr());
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("memcached.json");
    let port = free_port()?;
    std::fs::write(&file, table(port, &[keep_addr, gone_addr]))?;
    let config = Config {
        mode: Mode::Table {
            bind: "127.0.0.1".parse()?,
            subscriber: SubscriberConfig {
                table_file: Some(file.clone()),
                file_poll: Duration::from_millis(50),
                ..SubscriberConfig::default()
            },
        },
        settings: Settings {
            tko_after: 2,
            request_timeout: Duration::from_millis(300),
            probe_interval: Duration::from_secs(60),
            probe_interval_max: Duration::from_secs(60),
            ..Settings::default()
        },
        threads: 0,
        admin: Some("127.0.0.1:0".parse()?),
        pool_file: None,
    };
    let cancel = CancellationToken::new();
    let running = ocean_memcached_router::start(config, cancel.clone()).await?;
    let admin = running.admin_addr.expect("admin listens");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut c = None;
    wait_for("the pool's listener", async || {
        c = Raw::connect(addr).await.ok();
        Ok(c.is_some())
    })
    .await?;
    let mut c = c.unwrap();

    // Traffic to both servers (ketama spreads 200 keys over both).
    for i in 0..200 {
        c.expect(format!("set k{i} 0 0 1\r\nv\r\n").as_bytes(), b"STORED\r\n")
            .await?;
        c.call(format!("get k{i} nope{i}\r\n").as_bytes(), &[b"END\r\n"])
            .await?;
    }
    let text = scrape(admin).await?;
    assert_eq!(undescribed(&text), Vec::<String>::new(), "{text}");
    for server in [keep_addr, gone_addr] {
        let labels = format!("pool=\"cache\",replica_set=\"a\",server=\"{server}\"");
        for name in [
            "ocean_memcached_server_requests_total",
            "ocean_memcached_server_hits_total",
            "ocean_memcached_server_misses_total",
            "ocean_memcached_server_up",
        ] {
            assert_eq!(
                series(&text, name, &[&labels]).len(),
                1,
                "{name}{{{labels}}}:\n{text}"
            );
        }
        let buckets =
            format!("ocean_memcached_server_latency_seconds_bucket{{{labels},le=\"0.00005\"}}");
        assert!(text.contains(&buckets), "{buckets} missing:\n{text}");
        assert!(text.contains(&format!(
            "ocean_memcached_server_latency_seconds_bucket{{{labels},le=\"+Inf\"}}"
        )));
    }
    assert!(text.contains("# HELP ocean_memcached_server_latency_seconds "));
    assert!(text.contains("# TYPE ocean_memcached_server_latency_seconds histogram\n"));

    // A hung server is marked down; its TKO counter has the documented labels. (SIGSTOP,
    // not a kill: the port stays ours, no other test's server can take it meanwhile.)
    gone.pause()?;
    let gone_labels = format!("pool=\"cache\",replica_set=\"a\",server=\"{gone_addr}\"");
    // Keys the hung server owns, found with the router's own ring: twemproxy's fnv1a_64
    // puts keys that differ only in their last bytes close together on the ring, so
    // `gone1`, `gone2`, ... may all belong to one server, and which one depends on the ports.
    let ring = Ring::new(
        &[(server_name(keep_addr), 1), (server_name(gone_addr), 1)],
        KeyHash::Fnv1a64,
    );
    let mut gone_keys = (0..)
        .map(|i| format!("gone-{i}-{}", i * 7919))
        .filter(|k| ring.server_for(k.as_bytes()) == 1);
    wait_for("the hung server's TKO", async || {
        let key = gone_keys.next().expect("endless keys");
        // A key never set: the reply is one line, `END` or the router's `SERVER_ERROR`.
        let reply = c
            .call(format!("get {key}\r\n").as_bytes(), &[b"\r\n"])
            .await?;
        assert!(
            reply == b"END\r\n" || reply.starts_with(b"SERVER_ERROR "),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        let text = scrape(admin).await?;
        // The series exists (at 0) from the start: wait for the first TKO.
        let tko = series(&text, "ocean_memcached_server_tko_total", &[&gone_labels]);
        Ok(tko.iter().any(|l| !l.ends_with(" 0")))
    })
    .await?;
    let text = scrape(admin).await?;
    assert_eq!(
        series(&text, "ocean_memcached_server_up", &[&gone_labels]),
        vec![format!("ocean_memcached_server_up{{{gone_labels}}} 0")]
    );

    // The server leaves the table: every series of it goes, the other server's stay.
    std::fs::write(&file, table(port, &[keep_addr]))?;
    wait_for("the second table", async || {
        Ok(stat(addr, "table_swaps").await? >= 2)
    })
    .await?;
    let text = scrape(admin).await?;
    let needle = format!("server=\"{gone_addr}\"");
    let left: Vec<&str> = text.lines().filter(|l| l.contains(&needle)).collect();
    assert!(
        left.is_empty(),
        "series of the removed server remain: {left:#?}"
    );
    let keep_labels = format!("server=\"{keep_addr}\"");
    assert_eq!(
        series(&text, "ocean_memcached_server_up", &[&keep_labels]).len(),
        1
    );
    assert!(!series(
        &text,
        "ocean_memcached_server_latency_seconds",
        &[&keep_labels]
    )
    .is_empty());
    assert_eq!(undescribed(&text), Vec::<String>::new());

    drop(c);
    cancel.cancel();
    running.wait().await;
    Ok(())
}
