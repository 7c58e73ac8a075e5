//! Every command family through the router, against a real 3-master 3-replica cluster,
//! with redis-cli (RESP2 and `-3`) and the `redis` crate (RESP2 and RESP3), pipelined.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{client, redis_cli, redis_cli_opts, router};
use ocean_tests::servers::RedisCluster;
use redis::AsyncCommands;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_resp2_and_resp3() -> Result<()> {
    let cluster = RedisCluster::start(3, 1).await?;
    let (_running, addr, cancel) = router(cluster.master_addrs(), |_| {}).await?;

    // Local answers.
    assert_eq!(redis_cli(addr, &["PING"]).await?.trim(), "PONG");
    assert_eq!(redis_cli(addr, &["ECHO", "hi"]).await?.trim(), "hi");
    assert_eq!(redis_cli(addr, &["SELECT", "0"]).await?.trim(), "OK");
    assert!(redis_cli(addr, &["SELECT", "1"]).await?.contains("ERR"));
    let info = redis_cli(addr, &["INFO"]).await?;
    assert!(
        info.contains("# Proxy") && info.contains("masters:3"),
        "{info}"
    );
    let count = redis_cli(addr, &["COMMAND", "COUNT"]).await?;
    assert!(count.trim().parse::<u32>()? > 100, "{count}");
    // Inline PING, as telnet and redis-benchmark's PING_INLINE send it.
    let mut raw = ocean_tests::servers::RespClient::connect(addr).await?;
    raw.send_raw(b"PING\r\n").await?;
    assert_eq!(raw.read_reply().await?.as_str(), Some("PONG"));

    // Single-key reads and writes, redis-cli RESP2 and RESP3.
    for (i, opts) in [&[][..], &["-3"][..]].iter().enumerate() {
        let k = format!("cli{i}");
        assert_eq!(
            redis_cli_opts(addr, opts, &["SET", &k, "v"], None)
                .await?
                .trim(),
            "OK"
        );
        assert_eq!(
            redis_cli_opts(addr, opts, &["GET", &k], None).await?.trim(),
            "v"
        );
        let h = format!("h{{x}}{i}");
        assert_eq!(
            redis_cli_opts(addr, opts, &["HSET", &h, "f", "1"], None)
                .await?
                .trim(),
            "1"
        );
        let all = redis_cli_opts(addr, opts, &["HGETALL", &h], None).await?;
        assert!(all.contains('f') && all.contains('1'), "{all}");
    }
    // redis-cli pipelined over stdin (many commands in one write).
    let mut script = String::new();
    for i in 0..200 {
        script.push_str(&format!("SET pk{i} {i}\n"));
    }
    for i in 0..200 {
        script.push_str(&format!("GET pk{i}\n"));
    }
    let out = redis_cli_opts(addr, &[], &[], Some(script.as_bytes())).await?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 400, "{out}");
    for i in 0..200 {
        assert_eq!(lines[200 + i], i.to_string());
    }

    for resp3 in [false, true] {
        let c = client(addr, resp3)?;
        let mut con = c.get_multiplexed_async_connection().await?;
        let tag = if resp3 { "r3" } else { "r2" };

        // Pipelined single-key commands over many slots.
        let mut pipe = redis::pipe();
        for i in 0..500 {
            pipe.cmd("SET").arg(format!("{tag}:k{i}")).arg(i).ignore();
        }
        for i in 0..500 {
            pipe.cmd("GET").arg(format!("{tag}:k{i}"));
        }
        let got: Vec<i64> = pipe.query_async(&mut con).await?;
        assert_eq!(got, (0..500).collect::<Vec<i64>>());

        // Multi-key split and merge, in request order.
        let keys: Vec<String> = (0..50).map(|i| format!("{tag}:m{i}")).collect();
        let pairs: Vec<(String, i64)> = keys.iter().cloned().zip(0..).collect();
        let () = con.mset(&pairs).await?;
        let mut mget_keys = keys.clone();
        mget_keys.push(format!("{tag}:missing"));
        let vals: Vec<Option<i64>> = redis::cmd("MGET")
            .arg(&mget_keys)
            .query_async(&mut con)
            .await?;
        let mut want: Vec<Option<i64>> = (0..50).map(Some).collect();
        want.push(None);
        assert_eq!(vals, want);
        let n: i64 = redis::cmd("EXISTS")
            .arg(&mget_keys)
            .query_async(&mut con)
            .await?;
        assert_eq!(n, 50);
        let n: i64 = redis::cmd("TOUCH")
            .arg(&keys[..10])
            .query_async(&mut con)
            .await?;
        assert_eq!(n, 10);
        let n: i64 = redis::cmd("UNLINK")
            .arg(&keys[..10])
            .query_async(&mut con)
            .await?;
        assert_eq!(n, 10);
        let n: i64 = redis::cmd("DEL")
            .arg(&mget_keys)
            .query_async(&mut con)
            .await?;
        assert_eq!(n, 40);

        // Must-share-slot commands: Redis's own CROSSSLOT error, byte for byte.
        let via_router =
            ocean_tests::servers::resp::command(addr, &["MSETNX", "a", "1", "b", "2"]).await?;
        let direct = ocean_tests::servers::resp::command(
            cluster.master_addrs()[0],
            &["MSETNX", "a", "1", "b", "2"],
        )
        .await?;
        assert_eq!(via_router, direct);
        assert!(via_router.is_error(), "{via_router:?}");
        let n: i64 = redis::cmd("MSETNX")
            .arg(format!("{{{tag}}}a"))
            .arg(1)
            .arg(format!("{{{tag}}}b"))
            .arg(2)
            .query_async(&mut con)
            .await?;
        assert_eq!(n, 1);

        // Transactions pin a connection: MULTI ... EXEC, and WATCH.
        let (a, b): (i64, i64) = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg(format!("{{{tag}}}ctr"))
            .cmd("INCR")
            .arg(format!("{{{tag}}}ctr"))
            .query_async(&mut con)
            .await?;
        assert_eq!((a, b), (1, 2));

        // Cluster-wide: DBSIZE, KEYS, SCAN over all masters.
        let size: i64 = redis::cmd("DBSIZE").query_async(&mut con).await?;
        assert!(size >= 500, "{size}");
        let keys_found: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{tag}:k*"))
            .query_async(&mut con)
            .await?;
        assert_eq!(keys_found.len(), 500);
        let mut cursor = 0u64;
        let mut scanned = std::collections::BTreeSet::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{tag}:k*"))
                .arg("COUNT")
                .arg(100)
                .query_async(&mut con)
                .await?;
            scanned.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        assert_eq!(scanned.len(), 500);

        // HELLO and CLIENT SETNAME/GETNAME.
        let () = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg("me")
            .query_async(&mut con)
            .await?;
        let name: String = redis::cmd("CLIENT")
            .arg("GETNAME")
            .query_async(&mut con)
            .await?;
        assert_eq!(name, "me");
    }

    // Blocking commands on a dedicated connection; a push from another client wakes them.
    let c = client(addr, false)?;
    let mut waiter = c.get_multiplexed_async_connection().await?;
    let mut pusher = c.get_multiplexed_async_connection().await?;
    let blpop = tokio::spawn(async move {
        redis::cmd("BLPOP")
            .arg("queue")
            .arg(5)
            .query_async::<(String, String)>(&mut waiter)
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _: i64 = pusher.rpush("queue", "job").await?;
    assert_eq!(blpop.await??, ("queue".to_string(), "job".to_string()));
    let r: Option<(String, String)> = redis::cmd("BRPOP")
        .arg("empty")
        .arg("0.1")
        .query_async(&mut pusher)
        .await?;
    assert_eq!(r, None);

    // Pub/sub: SUBSCRIBE through the router, PUBLISH through the router.
    for resp3 in [false, true] {
        let c = client(addr, resp3)?;
        let mut pubsub = c.get_async_pubsub().await?;
        pubsub.subscribe("news").await?;
        pubsub.psubscribe("sport.*").await?;
        let mut p = c.get_multiplexed_async_connection().await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n: i64 = p.publish("news", "hello").await?;
        assert!(n >= 1);
        let _: i64 = p.publish("sport.ball", "goal").await?;
        let mut stream = pubsub.on_message();
        use futures_util::StreamExt;
        let m = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await?
            .expect("message");
        assert_eq!(m.get_payload::<String>()?, "hello");
        let m = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await?
            .expect("message");
        assert_eq!(m.get_payload::<String>()?, "goal");
    }
    // Sharded pub/sub with redis-cli: SSUBSCRIBE on the channel's node.
    let sub =
        tokio::spawn(
            async move { redis_cli_opts(addr, &[], &["SSUBSCRIBE", "orders"], None).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = redis_cli(addr, &["SPUBLISH", "orders", "o1"]).await?;
    assert_eq!(n.trim(), "1");
    sub.abort();

    // FLUSHALL reaches every master (allowed here); refused without --allow-flush.
    assert_eq!(redis_cli(addr, &["FLUSHALL"]).await?.trim(), "OK");
    assert_eq!(redis_cli(addr, &["DBSIZE"]).await?.trim(), "0");
    let (_r2, addr2, cancel2) =
        router(cluster.master_addrs(), |c| c.client.allow_flush = false).await?;
    assert!(redis_cli(addr2, &["FLUSHALL"])
        .await?
        .contains("--allow-flush"));
    // What wipes scripts or functions on every master is gated the same way (issue 15);
    // what only reads or adds passes.
    let sha = redis_cli(addr2, &["SCRIPT", "LOAD", "return 1"]).await?;
    let sha = sha.trim();
    assert_eq!(sha.len(), 40, "{sha}");
    for wipe in [
        &["SCRIPT", "FLUSH"][..],
        &["FUNCTION", "FLUSH"][..],
        &["FUNCTION", "DELETE", "mylib"][..],
        &["FUNCTION", "RESTORE", "x"][..],
    ] {
        let r = redis_cli(addr2, wipe).await?;
        assert!(
            r.contains(&format!("ERR {} {} is disabled", wipe[0], wipe[1]))
                && r.contains("--allow-flush"),
            "{wipe:?}: {r}"
        );
    }
    assert_eq!(
        redis_cli(addr2, &["SCRIPT", "EXISTS", sha]).await?.trim(),
        "1",
        "the refused SCRIPT FLUSH reached no master"
    );
    assert_eq!(redis_cli(addr, &["SCRIPT", "FLUSH"]).await?.trim(), "OK");
    assert_eq!(
        redis_cli(addr2, &["SCRIPT", "EXISTS", sha]).await?.trim(),
        "0",
        "with --allow-flush SCRIPT FLUSH reaches every master"
    );
    cancel2.cancel();
    cancel.cancel();
    Ok(())
}
