//! `--mcrouter-config` (issue 15, must-show 3): the router started from an mcrouter JSON
//! places keys of a ch3 pool where mcrouter's own golden values say, on real memcached
//! servers; a WarmUpRoute fills the cold pool on a miss; a PrefixSelectorRoute sends each
//! key to the route of its longest prefix; a route it cannot reproduce is refused at start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use common::{direct_get, Raw};
use ocean_memcached_router::config::Args;
use ocean_memcached_router::furc::ch3;
use ocean_tests::servers::Memcached;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

/// mcrouter's golden values for a pool of 10 servers (`lib/fbi/test/hash_test.cpp`):
/// key, index of the server that holds it.
const GOLDEN_10: &[(&str, usize)] = &[
    ("key0", 7),
    ("key1", 2),
    ("key2", 4),
    ("key3", 5),
    ("key4", 8),
    ("someKey_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 8),
    ("short", 6),
    ("a", 4),
    ("ab", 2),
    ("abc", 5),
    ("mcrouter:pool:regional:0001", 3),
    ("mcrouter:pool:regional:0002", 5),
    ("user:12345:profile", 4),
    ("user:67890:timeline", 7),
    ("cache:item:999999", 2),
];

/// A router started the way the flag parser starts it: `--listen` and `--mcrouter-config`.
struct Started {
    addr: SocketAddr,
    cancel: CancellationToken,
}

impl Drop for Started {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn args(file: &Path) -> Args {
    Cli::try_parse_from([
        "router".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--threads".as_ref(),
        "0".as_ref(),
        "--mcrouter-config".as_ref(),
        file.as_os_str(),
    ])
    .unwrap()
    .args
}

async fn start(dir: &Path, json: &str) -> Result<Started> {
    let file = dir.join("mcrouter.json");
    std::fs::write(&file, json)?;
    let config = args(&file).into_config()?;
    let cancel = CancellationToken::new();
    let running = ocean_memcached_router::start(config, cancel.clone()).await?;
    Ok(Started {
        addr: running.listen_addr.context("listen addr")?,
        cancel,
    })
}

fn servers_json(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", list.join(", "))
}

async fn set(c: &mut Raw, key: &str, value: &str) {
    let req = format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
    c.expect(req.as_bytes(), b"STORED\r\n").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ch3_pool_places_keys_where_mcrouters_golden_values_say() {
    let mut servers = Vec::new();
    for _ in 0..10 {
        servers.push(Memcached::start().await.unwrap());
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(Memcached::addr).collect();
    let dir = tempfile::tempdir().unwrap();
    let json = format!(
        "// as an mcrouter user writes it, comments and all\n{{\n  \"pools\": {{\"A\": {{\"servers\": {}}}}},\n  \"route\": \"PoolRoute|A\"\n}}\n",
        servers_json(&addrs)
    );
    let router = start(dir.path(), &json).await.unwrap();
    let mut c = Raw::connect(router.addr).await.unwrap();
    for (key, want) in GOLDEN_10 {
        set(&mut c, key, "golden").await;
        let mut holders = Vec::new();
        for (i, a) in addrs.iter().enumerate() {
            if direct_get(*a, key.as_bytes()).await.unwrap().is_some() {
                holders.push(i);
            }
        }
        assert_eq!(holders, [*want], "{key}: mcrouter puts it on server {want}");
    }
    // The hash stop: only what comes before |#| is hashed, so these share key0's server.
    set(&mut c, "key0|#|one", "x").await;
    set(&mut c, "key0|#|two", "y").await;
    for key in ["key0|#|one", "key0|#|two"] {
        assert!(direct_get(addrs[7], key.as_bytes())
            .await
            .unwrap()
            .is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_up_route_fills_the_cold_pool_on_a_miss() {
    let mut servers = Vec::new();
    for _ in 0..4 {
        servers.push(Memcached::start().await.unwrap());
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(Memcached::addr).collect();
    let (cold, warm) = (&addrs[..2], &addrs[2..]);
    let dir = tempfile::tempdir().unwrap();
    let json = format!(
        r#"{{"pools": {{"cold": {{"servers": {}}}, "warm": {{"servers": {}}}}},
            "route": {{"type": "WarmUpRoute", "cold": "PoolRoute|cold", "warm": "PoolRoute|warm", "exptime": 600}}}}"#,
        servers_json(cold),
        servers_json(warm)
    );
    // The warm (old) pool has the data; the cold (new) one is empty.
    let keys: Vec<String> = (0..40).map(|i| format!("warm:{i}")).collect();
    for k in &keys {
        let mut w = Raw::connect(warm[ch3(k.as_bytes(), 2)]).await.unwrap();
        set(&mut w, k, &format!("v-{k}")).await;
    }
    // A key the cold pool already has keeps its own value.
    let mut own = Raw::connect(cold[ch3(b"warm:0", 2)]).await.unwrap();
    own.expect(b"set warm:0 0 0 4\r\nmine\r\n", b"STORED\r\n")
        .await
        .unwrap();

    let router = start(dir.path(), &json).await.unwrap();
    let mut c = Raw::connect(router.addr).await.unwrap();
    // Single gets and one multi-get: every value is served, from warm where cold missed.
    for k in &keys[..20] {
        let reply = c
            .call(format!("get {k}\r\n").as_bytes(), &[b"END\r\n"])
            .await
            .unwrap();
        let want = if k == "warm:0" {
            "mine".to_string()
        } else {
            format!("v-{k}")
        };
        assert!(
            String::from_utf8_lossy(&reply).contains(&format!("\r\n{want}\r\n")),
            "{k}: {reply:?}"
        );
    }
    let multi = format!("get {}\r\n", keys[20..].join(" "));
    let reply = c.call(multi.as_bytes(), &[b"END\r\n"]).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&reply).matches("VALUE ").count(),
        20,
        "{reply:?}"
    );
    let absent = c.call(b"get nowhere\r\n", &[b"END\r\n"]).await.unwrap();
    assert_eq!(absent, b"END\r\n");

    // The fills are not waited for: poll the cold pool until every key is there.
    let deadline = Instant::now() + Duration::from_secs(5);
    for k in &keys {
        let server = cold[ch3(k.as_bytes(), 2)];
        loop {
            if let Some(v) = direct_get(server, k.as_bytes()).await.unwrap() {
                let want = if k == "warm:0" {
                    b"mine".to_vec()
                } else {
                    format!("v-{k}").into_bytes()
                };
                assert_eq!(v, want, "{k} in the cold pool");
                break;
            }
            assert!(Instant::now() < deadline, "{k} never reached the cold pool");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for a in cold {
        assert!(direct_get(*a, b"nowhere").await.unwrap().is_none());
    }
    // Served from cold now: the warm pool can go.
    for s in &mut servers[2..] {
        s.stop();
    }
    for k in &keys[1..5] {
        let reply = c
            .call(format!("get {k}\r\n").as_bytes(), &[b"END\r\n"])
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&reply).contains(&format!("v-{k}")),
            "{k} after the warm pool stopped: {reply:?}"
        );
    }
    let stats = c.call(b"stats\r\n", &[b"END\r\n"]).await.unwrap();
    assert!(
        String::from_utf8_lossy(&stats).contains("STAT warm_fills 39\r\n"),
        "{}",
        String::from_utf8_lossy(&stats)
    );
}

#[test]
fn a_route_the_router_cannot_reproduce_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mcrouter.json");
    std::fs::write(
        &file,
        r#"{"pools": {"A": {"servers": ["127.0.0.1:11211"]}},
            "route": {"type": "OperationSelectorRoute", "default_policy": "PoolRoute|A"}}"#,
    )
    .unwrap();
    let err = format!("{:#}", args(&file).into_config().unwrap_err());
    assert!(
        err.contains("OperationSelectorRoute is not supported") && err.contains("mcrouter.json"),
        "{err}"
    );
    // --mcrouter-config needs --listen (mcrouter's port is a flag, not in the file).
    assert!(Cli::try_parse_from(["router", "--mcrouter-config", "x.json"]).is_err());
}

/// Which of `pools` (each a list of servers, placed by ch3) hold `key`.
async fn holders(pools: &[(&str, &[SocketAddr])], key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (name, servers) in pools {
        for a in servers.iter() {
            if direct_get(*a, key.as_bytes()).await.unwrap().is_some() {
                assert_eq!(
                    *a,
                    servers[ch3(key.as_bytes(), servers.len())],
                    "{key} in {name}"
                );
                out.push(name.to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_selector_route_sends_each_key_to_the_route_of_its_longest_prefix() {
    let mut servers = Vec::new();
    for _ in 0..5 {
        servers.push(Memcached::start().await.unwrap());
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(Memcached::addr).collect();
    let (users, vips, common, mirror) = (&addrs[..2], &addrs[2..3], &addrs[3..4], &addrs[4..5]);
    let dir = tempfile::tempdir().unwrap();
    let json = format!(
        r#"{{"pools": {{"users": {{"servers": {}}}, "vips": {{"servers": {}}},
                        "common": {{"servers": {}}}, "mirror": {{"servers": {}}}}},
            "route": {{"type": "PrefixSelectorRoute",
                "policies": {{
                    "user:": "PoolRoute|users",
                    "user:vip:": "PoolRoute|vips",
                    "sess:": {{"type": "AllSyncRoute", "children": ["PoolRoute|common", "PoolRoute|mirror"]}}
                }},
                "wildcard": "PoolRoute|common"}}}}"#,
        servers_json(users),
        servers_json(vips),
        servers_json(common),
        servers_json(mirror)
    );
    let pools: [(&str, &[SocketAddr]); 4] = [
        ("users", users),
        ("vips", vips),
        ("common", common),
        ("mirror", mirror),
    ];
    let router = start(dir.path(), &json).await.unwrap();
    let mut c = Raw::connect(router.addr).await.unwrap();
    let mut keys = Vec::new();
    for i in 0..12 {
        for (key, want) in [
            (format!("user:{i}"), &["users"][..]),
            (format!("user:vip:{i}"), &["vips"][..]),
            (format!("sess:{i}"), &["common", "mirror"][..]),
            (format!("other:{i}"), &["common"][..]),
            // A prefix of a policy's prefix is not that prefix.
            (format!("use{i}"), &["common"][..]),
        ] {
            set(&mut c, &key, &format!("v-{key}")).await;
            assert_eq!(holders(&pools, &key).await, want, "{key}");
            keys.push(key);
        }
    }
    // One multi-get over every route, a missing key among them: every value once, one END.
    let mut asked: Vec<&str> = keys.iter().map(String::as_str).collect();
    asked.insert(7, "user:missing");
    let reply = c
        .call(
            format!("get {}\r\n", asked.join(" ")).as_bytes(),
            &[b"END\r\n"],
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert_eq!(text.matches("VALUE ").count(), keys.len(), "{text}");
    assert_eq!(text.matches("END\r\n").count(), 1, "{text}");
    assert!(text.ends_with("END\r\n"));
    for k in &keys {
        assert!(
            text.contains(&format!("VALUE {k} 0 {}\r\nv-{k}\r\n", k.len() + 2)),
            "{k}"
        );
    }
    // gets carries each route's cas tokens.
    let reply = c
        .call(b"gets user:1 other:1 user:vip:1\r\n", &[b"END\r\n"])
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&reply).matches("VALUE ").count(), 3);

    // The vips pool dies: its keys are misses beside the others' values, as a dead server's
    // keys are within one pool; alone, they answer its error.
    servers[2].stop();
    let reply = c
        .call(b"get user:1 user:vip:1 other:1\r\n", &[b"END\r\n", b"\r\n"])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert_eq!(text.matches("VALUE ").count(), 2, "{text}");
    assert!(
        text.contains("VALUE user:1 ") && text.contains("VALUE other:1 "),
        "{text}"
    );
    let reply = c.call(b"get user:vip:1\r\n", &[b"\r\n"]).await.unwrap();
    assert!(
        reply.starts_with(b"SERVER_ERROR"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    // Writes by prefix still reach their pools.
    set(&mut c, "sess:late", "x").await;
    let live = [pools[0], pools[2], pools[3]];
    assert_eq!(holders(&live, "sess:late").await, ["common", "mirror"]);
}
