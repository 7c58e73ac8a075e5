//! Every command through the router to real memcached servers: byte-exact replies from a
//! raw socket, a real client (the `memcache` crate), meta commands, pipelining across
//! servers, multi-key reads grouped per server and answered in key order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use anyhow::Result;
use common::{direct_get, pool, Raw, Router};
use ocean_memcached_router::config::Settings;
use ocean_memcached_router::ketama::KeyHash;
use ocean_tests::servers::Memcached;

async fn three() -> Result<Vec<Memcached>> {
    let mut v = Vec::new();
    for _ in 0..3 {
        v.push(Memcached::start().await?);
    }
    Ok(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ascii_commands_byte_exact() -> Result<()> {
    let servers = three().await?;
    let addrs: Vec<_> = servers.iter().map(Memcached::addr).collect();
    let settings = Settings {
        allow_flush: true,
        ..Settings::default()
    };
    // md5: twemproxy's fnv1a_64 (really 32-bit) puts keys that differ only in their last
    // bytes close together on the ring, so few keys might not span all servers.
    let router = Router::start(pool(std::slice::from_ref(&addrs), KeyHash::Md5), settings).await?;
    let mut c = Raw::connect(router.addr).await?;

    c.expect(b"set a 5 0 3\r\nabc\r\n", b"STORED\r\n").await?;
    c.expect(b"get a\r\n", b"VALUE a 5 3\r\nabc\r\nEND\r\n")
        .await?;
    c.expect(b"add a 0 0 1\r\nx\r\n", b"NOT_STORED\r\n").await?;
    c.expect(b"replace a 0 0 1\r\nx\r\n", b"STORED\r\n").await?;
    c.expect(b"append a 0 0 2\r\nyz\r\n", b"STORED\r\n").await?;
    c.expect(b"prepend a 0 0 1\r\nw\r\n", b"STORED\r\n").await?;
    c.expect(b"get a\r\n", b"VALUE a 0 4\r\nwxyz\r\nEND\r\n")
        .await?;
    // gets / cas.
    let reply = c.call(b"gets a\r\n", &[b"END\r\n"]).await?;
    let header = String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let token: u64 = header.rsplit(' ').next().unwrap().parse()?;
    c.expect(
        format!("cas a 0 0 1 {}\r\nq\r\n", token + 1000).as_bytes(),
        b"EXISTS\r\n",
    )
    .await?;
    c.expect(
        format!("cas a 0 0 1 {token}\r\nq\r\n").as_bytes(),
        b"STORED\r\n",
    )
    .await?;
    c.expect(b"cas nope 0 0 1 1\r\nq\r\n", b"NOT_FOUND\r\n")
        .await?;
    // incr/decr/touch/delete.
    c.expect(b"set n 0 0 2\r\n10\r\n", b"STORED\r\n").await?;
    c.expect(b"incr n 5\r\n", b"15\r\n").await?;
    c.expect(b"decr n 20\r\n", b"0\r\n").await?;
    c.expect(b"incr nope 1\r\n", b"NOT_FOUND\r\n").await?;
    c.expect(
        b"incr a 1\r\n",
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    )
    .await?;
    c.expect(b"touch n 100\r\n", b"TOUCHED\r\n").await?;
    c.expect(b"touch nope 100\r\n", b"NOT_FOUND\r\n").await?;
    c.expect(b"delete n\r\n", b"DELETED\r\n").await?;
    c.expect(b"delete n\r\n", b"NOT_FOUND\r\n").await?;
    c.expect(b"delete n 0\r\n", b"NOT_FOUND\r\n").await?;
    // gat / gats.
    c.expect(b"gat 100 a nope\r\n", b"VALUE a 0 1\r\nq\r\nEND\r\n")
        .await?;
    let reply = c.call(b"gats 100 a\r\n", &[b"END\r\n"]).await?;
    assert!(reply.starts_with(b"VALUE a 0 1 "), "{reply:?}");
    // noreply: nothing comes back, the next reply is the next request's.
    c.expect(
        b"set q 0 0 1 noreply\r\n1\r\nadd q 0 0 1 noreply\r\n2\r\nincr q 5 noreply\r\ntouch q 10 noreply\r\nget q\r\n",
        b"VALUE q 0 1\r\n6\r\nEND\r\n",
    )
    .await?;
    c.expect(b"delete q noreply\r\nget q\r\n", b"END\r\n")
        .await?;
    // Local commands.
    let v = c.call(b"version\r\n", &[b"\r\n"]).await?;
    assert!(v.starts_with(b"VERSION "), "{v:?}");
    c.expect(b"verbosity 1\r\n", b"OK\r\n").await?;
    c.expect(b"verbosity 1 noreply\r\nmn\r\n", b"MN\r\n")
        .await?;
    let stats = c.call(b"stats\r\n", &[b"END\r\n"]).await?;
    let stats = String::from_utf8_lossy(&stats);
    assert!(stats.contains("STAT curr_connections 1\r\n"), "{stats}");
    assert!(stats.contains("STAT cmd_get "), "{stats}");
    // Errors, memcached's lines.
    c.expect(b"bogus\r\n", b"ERROR\r\n").await?;
    c.expect(b"get\r\n", b"ERROR\r\n").await?;
    let long = format!("get {}\r\n", "k".repeat(251));
    c.expect(long.as_bytes(), b"CLIENT_ERROR bad command line format\r\n")
        .await?;
    c.expect(
        b"incr a x\r\n",
        b"CLIENT_ERROR invalid numeric delta argument\r\n",
    )
    .await?;
    // Multi-key get across the three servers, answered in key order with one END.
    let mut expected = Vec::new();
    let mut req = b"get".to_vec();
    let mut holders = std::collections::HashSet::new();
    for i in 0..150 {
        let key = format!("multi:{i}");
        if i % 3 != 0 {
            c.expect(
                format!("set {key} {i} 0 {}\r\n{key}\r\n", key.len()).as_bytes(),
                b"STORED\r\n",
            )
            .await?;
            expected.extend_from_slice(
                format!("VALUE {key} {i} {}\r\n{key}\r\n", key.len()).as_bytes(),
            );
            for (s, a) in addrs.iter().enumerate() {
                if direct_get(*a, key.as_bytes()).await?.is_some() {
                    holders.insert(s);
                }
            }
        }
        req.extend_from_slice(format!(" {key}").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    expected.extend_from_slice(b"END\r\n");
    assert_eq!(
        holders.len(),
        3,
        "the keys span every server: {holders:?} {addrs:?}"
    );
    c.expect(&req, &expected).await?;
    // Duplicate keys are answered twice, as memcached does.
    c.expect(b"get multi:1 multi:2 multi:1\r\n", b"VALUE multi:1 1 7\r\nmulti:1\r\nVALUE multi:2 2 7\r\nmulti:2\r\nVALUE multi:1 1 7\r\nmulti:1\r\nEND\r\n").await?;
    // flush_all (allowed here) reaches every server.
    c.expect(b"flush_all\r\n", b"OK\r\n").await?;
    c.expect(b"get multi:1 multi:2\r\n", b"END\r\n").await?;
    // quit closes after earlier replies.
    c.stream
        .write_all_buf(&mut &b"get a\r\nquit\r\nget a\r\n"[..])
        .await?;
    let rest = c.read_to_close().await?;
    assert_eq!(rest, b"END\r\n");
    router.stop().await;

    // Without --allow-flush, flush_all is refused.
    let router = Router::start(pool(&[addrs], KeyHash::Fnv1a64), Settings::default()).await?;
    let mut c = Raw::connect(router.addr).await?;
    c.expect(b"flush_all\r\n", b"SERVER_ERROR flush_all is disabled\r\n")
        .await?;
    router.stop().await;
    Ok(())
}

use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_commands() -> Result<()> {
    let mut servers = three().await?;
    servers.push(Memcached::start().await?);
    let addrs: Vec<_> = servers.iter().map(Memcached::addr).collect();
    let router = Router::start(
        pool(&[addrs[..3].to_vec(), vec![addrs[3]]], KeyHash::Md5),
        Settings::default(),
    )
    .await?;
    let mut c = Raw::connect(router.addr).await?;
    c.expect(b"ms mk 3 T0 F7\r\nabc\r\n", b"HD\r\n").await?;
    c.expect(b"mg mk v f k Oxy\r\n", b"VA 3 f7 kmk Oxy\r\nabc\r\n")
        .await?;
    c.expect(b"mg nope v\r\n", b"EN\r\n").await?;
    // base64 key: routed on the decoded key, so the plain key finds it.
    c.expect(b"ms bWs= 2 b\r\nzz\r\n", b"HD\r\n").await?;
    c.expect(b"mg mk v\r\n", b"VA 2\r\nzz\r\n").await?;
    c.expect(b"mg bWs= b v k\r\n", b"VA 2 kbWs= b\r\nzz\r\n")
        .await?;
    c.expect(b"ma cnt N0 J13 v\r\n", b"VA 2\r\n13\r\n").await?;
    c.expect(b"ma cnt v D5\r\n", b"VA 2\r\n18\r\n").await?;
    c.expect(b"md cnt\r\n", b"HD\r\n").await?;
    c.expect(b"md cnt\r\n", b"NF\r\n").await?;
    let me = c.call(b"me mk\r\n", &[b"\r\n"]).await?;
    // The key was last stored as binary (`b`), so memcached shows it in base64.
    assert!(me.starts_with(b"ME bWs= exp="), "{me:?}");
    // Quiet mode across several servers: misses and successes say nothing; one MN.
    let mut req = Vec::new();
    let mut want = Vec::new();
    for i in 0..30 {
        req.extend_from_slice(format!("ms q{i} 1 q\r\n{}\r\n", i % 10).as_bytes());
    }
    for i in 0..30 {
        req.extend_from_slice(format!("mg q{i} v q O{i}\r\nmg none{i} v q\r\n").as_bytes());
        want.extend_from_slice(format!("VA 1 O{i}\r\n{}\r\n", i % 10).as_bytes());
    }
    // memcached still reports NF for a quiet md (only HD is quiet).
    req.extend_from_slice(b"md none0 q\r\nmn\r\n");
    want.extend_from_slice(b"NF\r\nMN\r\n");
    c.expect(&req, &want).await?;
    // A quiet error still answers.
    c.expect(
        b"ma mk q\r\nmn\r\n",
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\nMN\r\n",
    )
    .await?;
    // mn alone.
    c.expect(b"mn\r\n", b"MN\r\n").await?;
    // Both replica sets got the meta writes.
    assert_eq!(direct_get(addrs[3], b"q5").await?, Some(b"5".to_vec()));
    router.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_and_pipelining() -> Result<()> {
    let servers = three().await?;
    let addrs: Vec<_> = servers.iter().map(Memcached::addr).collect();
    let router = Router::start(pool(&[addrs], KeyHash::Fnv1a64), Settings::default()).await?;
    let url = format!(
        "memcache://{}?timeout=5&tcp_nodelay=true&protocol=ascii",
        router.addr
    );
    let addr = router.addr;
    tokio::task::spawn_blocking(move || -> Result<()> {
        let client = memcache::Client::connect(url.as_str())?;
        for i in 0..200 {
            client.set(&format!("c{i}"), format!("value{i}").as_str(), 0)?;
        }
        for i in 0..200 {
            let v: Option<String> = client.get(&format!("c{i}"))?;
            assert_eq!(v.as_deref(), Some(format!("value{i}").as_str()));
        }
        let keys: Vec<String> = (0..200).map(|i| format!("c{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let many: std::collections::HashMap<String, String> = client.gets(&refs)?;
        assert_eq!(many.len(), 200);
        // The crate maps NOT_STORED to Ok; the value must be unchanged.
        let _not_stored = client.add("c0", "x", 0);
        assert_eq!(client.get::<String>("c0")?.as_deref(), Some("value0"));
        client.replace("c0", "r", 0)?;
        client.append("c0", "a")?;
        client.prepend("c0", "p")?;
        assert_eq!(client.get::<String>("c0")?.as_deref(), Some("pra"));
        client.set("num", 1u64, 0)?;
        assert_eq!(client.increment("num", 9)?, 10);
        assert_eq!(client.decrement("num", 3)?, 7);
        assert!(client.touch("num", 100)?);
        assert!(client.delete("num")?);
        assert!(!client.delete("num")?);
        assert!(client.version()?.iter().all(|(_, v)| v.contains("ocean")));
        Ok(())
    })
    .await??;

    // Deep pipelining from a raw socket: 2,000 requests in one write, replies in order.
    let mut c = Raw::connect(addr).await?;
    let mut req = Vec::new();
    let mut want = Vec::new();
    for i in 0..1000 {
        req.extend_from_slice(
            format!("set p{i} 0 0 {}\r\n{i}\r\n", i.to_string().len()).as_bytes(),
        );
        want.extend_from_slice(b"STORED\r\n");
    }
    for i in 0..1000 {
        req.extend_from_slice(format!("get p{i}\r\n").as_bytes());
        want.extend_from_slice(
            format!("VALUE p{i} 0 {}\r\n{i}\r\nEND\r\n", i.to_string().len()).as_bytes(),
        );
    }
    c.expect(&req, &want).await?;
    // Many clients at once, each pipelining.
    let mut tasks = Vec::new();
    for t in 0..20 {
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::connect(addr).await?;
            let mut req = Vec::new();
            let mut want = Vec::new();
            for i in 0..50 {
                let key = format!("t{t}:{i}");
                req.extend_from_slice(
                    format!("set {key} 0 0 {}\r\n{key}\r\nget {key} p{i}\r\n", key.len())
                        .as_bytes(),
                );
                want.extend_from_slice(
                    format!(
                        "STORED\r\nVALUE {key} 0 {}\r\n{key}\r\nVALUE p{i} 0 {}\r\n{i}\r\nEND\r\n",
                        key.len(),
                        i.to_string().len()
                    )
                    .as_bytes(),
                );
            }
            c.expect(&req, &want).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    router.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_threads_share_the_port() -> Result<()> {
    let servers = three().await?;
    let addrs: Vec<_> = servers.iter().map(Memcached::addr).collect();
    let mut config = ocean_memcached_router::Config::standalone(
        "127.0.0.1:0".parse()?,
        pool(&[addrs], KeyHash::Md5),
    );
    config.threads = 2;
    let cancel = tokio_util::sync::CancellationToken::new();
    let running = ocean_memcached_router::start(config, cancel.clone()).await?;
    let addr = running.listen_addr.unwrap();
    let mut tasks = Vec::new();
    for t in 0..16 {
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::connect(addr).await?;
            for i in 0..50 {
                let key = format!("w{t}:{i}");
                c.expect(
                    format!("set {key} 0 0 {}\r\n{key}\r\nget {key}\r\n", key.len()).as_bytes(),
                    format!("STORED\r\nVALUE {key} 0 {}\r\n{key}\r\nEND\r\n", key.len()).as_bytes(),
                )
                .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    // Every client's key is visible from any other connection (any worker).
    let mut c = Raw::connect(addr).await?;
    c.expect(b"get w3:7\r\n", b"VALUE w3:7 0 4\r\nw3:7\r\nEND\r\n")
        .await?;
    cancel.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(10), running.wait()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_per_pool_and_server() -> Result<()> {
    let server = Memcached::start().await?;
    let mut config = ocean_memcached_router::Config::standalone(
        "127.0.0.1:0".parse()?,
        pool(&[vec![server.addr()]], KeyHash::Fnv1a64),
    );
    config.admin = Some("127.0.0.1:0".parse()?);
    let cancel = tokio_util::sync::CancellationToken::new();
    let running = ocean_memcached_router::start(config, cancel.clone()).await?;
    let mut c = Raw::connect(running.listen_addr.unwrap()).await?;
    c.expect(
        b"set m 0 0 1\r\n1\r\nget m nope\r\n",
        b"STORED\r\nVALUE m 0 1\r\n1\r\nEND\r\n",
    )
    .await?;
    let mut http = Raw::connect(running.admin_addr.unwrap()).await?;
    http.stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let body = String::from_utf8(http.read_to_close().await?)?;
    let labels = format!(
        "pool=\"test\",replica_set=\"set0\",server=\"{}\"",
        server.addr()
    );
    for series in [
        "ocean_memcached_server_requests_total",
        "ocean_memcached_server_hits_total",
        "ocean_memcached_server_misses_total",
        "ocean_memcached_server_up",
        "ocean_memcached_server_latency_seconds",
    ] {
        assert!(
            body.contains(series) && body.contains(&labels),
            "{series} in {body}"
        );
    }
    cancel.cancel();
    running.wait().await;
    Ok(())
}
