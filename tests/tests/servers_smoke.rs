//! Smoke tests of the server harness: each real server starts, answers real clients, and
//! is gone after drop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use ocean_tests::servers::{
    find_binary, mariadb_query, pid_exists, proc_stat, process_group_members, MariaDb, Memcached,
    RedisCluster, RedisServer, Resp, ServerProcess,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` and reads exactly `expected.len()` bytes back.
async fn exchange(stream: &mut TcpStream, request: &[u8], expected_len: usize) -> Vec<u8> {
    stream.write_all(request).await.unwrap();
    let mut reply = vec![0u8; expected_len];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut reply))
        .await
        .expect("reply timed out")
        .unwrap();
    reply
}

async fn redis_cli(args: &[&str]) -> String {
    let cli = find_binary("redis-cli", "redis-tools").unwrap();
    let out = tokio::process::Command::new(cli)
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn redis_standalone_set_get_and_gone_after_drop() {
    let redis = RedisServer::start().await.unwrap();
    let mut client = redis.client().await.unwrap();
    assert!(client
        .command(&["SET", "greeting", "hello"])
        .await
        .unwrap()
        .is_ok());
    assert_eq!(
        client.command(&["GET", "greeting"]).await.unwrap(),
        Resp::Bulk(Some(b"hello".to_vec()))
    );
    assert!(client.command(&["GET", "missing"]).await.unwrap().is_null());
    assert!(client.command(&["NOSUCHCMD"]).await.unwrap().is_error());

    // Byte-exact on the wire too.
    let mut raw = TcpStream::connect(redis.addr()).await.unwrap();
    let reply = exchange(&mut raw, b"*2\r\n$3\r\nGET\r\n$8\r\ngreeting\r\n", 11).await;
    assert_eq!(reply, b"$5\r\nhello\r\n");

    let pid = redis.pid();
    let dir = redis.dir().to_path_buf();
    assert!(pid_exists(pid));
    drop(client);
    drop(raw);
    drop(redis);
    assert!(
        !pid_exists(pid),
        "redis-server pid {pid} still exists after drop"
    );
    assert!(!dir.exists(), "temp dir {} left behind", dir.display());
}

#[tokio::test]
async fn redis_restart_pause_resume() {
    let mut redis = RedisServer::start_with(&["--maxmemory", "10mb"])
        .await
        .unwrap();
    let maxmemory = redis.cmd(&["CONFIG", "GET", "maxmemory"]).await.unwrap();
    assert_eq!(maxmemory.as_array().unwrap()[1].as_str(), Some("10485760"));

    let old_pid = redis.pid();
    redis.kill();
    assert!(!redis.is_running());
    assert!(!pid_exists(old_pid));
    redis.restart().await.unwrap();
    assert_ne!(redis.pid(), old_pid);
    assert_eq!(
        redis.cmd(&["PING"]).await.unwrap(),
        Resp::Simple("PONG".into())
    );

    redis.pause().unwrap();
    let paused = tokio::time::timeout(Duration::from_millis(300), redis.cmd(&["PING"])).await;
    assert!(paused.is_err(), "a paused server answered: {paused:?}");
    redis.resume().unwrap();
    assert_eq!(
        redis.cmd(&["PING"]).await.unwrap(),
        Resp::Simple("PONG".into())
    );
}

#[tokio::test]
async fn redis_cluster_three_masters_three_replicas() {
    let mut cluster = RedisCluster::start(3, 1).await.unwrap();
    assert_eq!(cluster.nodes().len(), 6);
    let masters = cluster.master_addrs();
    assert_eq!(masters.len(), 3);
    assert_eq!(cluster.replica_addrs().len(), 3);
    for &master in &masters {
        assert_eq!(cluster.replicas_of(master).len(), 1, "replicas of {master}");
    }
    for addr in cluster.addrs() {
        let info = cluster
            .node(addr)
            .unwrap()
            .cmd(&["CLUSTER", "INFO"])
            .await
            .unwrap();
        assert!(
            info.as_str().unwrap().contains("cluster_state:ok"),
            "{addr}: {info:?}"
        );
    }

    // The real cluster client follows MOVED from whichever node it asks.
    for addr in cluster.addrs() {
        let port = addr.port().to_string();
        let key = format!("k{port}");
        assert_eq!(
            redis_cli(&["-c", "-p", &port, "set", &key, "v"]).await,
            "OK"
        );
        assert_eq!(redis_cli(&["-c", "-p", &port, "get", &key]).await, "v");
    }

    // A plain client gets MOVED from a master that does not own the slot.
    let mut moved = 0;
    for &master in &masters {
        if let Resp::Error(e) = cluster
            .node(master)
            .unwrap()
            .cmd(&["GET", "foo"])
            .await
            .unwrap()
        {
            assert!(e.starts_with("MOVED 12182 127.0.0.1:"), "{e}");
            moved += 1;
        }
    }
    assert_eq!(moved, 2);

    let topology = cluster.topology().await.unwrap();
    assert_eq!(topology.masters, masters);

    let pids: Vec<u32> = cluster.nodes().iter().map(|n| n.pid()).collect();
    drop(cluster);
    for pid in pids {
        assert!(
            !pid_exists(pid),
            "cluster node pid {pid} still exists after drop"
        );
    }
}

#[tokio::test]
async fn memcached_set_get_byte_exact() {
    let mc = Memcached::start().await.unwrap();
    let mut stream = TcpStream::connect(mc.addr()).await.unwrap();
    assert_eq!(
        exchange(&mut stream, b"set k 5 0 5\r\nhello\r\n", 8).await,
        b"STORED\r\n"
    );
    let expected = b"VALUE k 5 5\r\nhello\r\nEND\r\n";
    assert_eq!(
        exchange(&mut stream, b"get k\r\n", expected.len()).await,
        expected
    );
    assert_eq!(exchange(&mut stream, b"get nope\r\n", 5).await, b"END\r\n");
    // UDP is off (-U 0): only the TCP listener exists.
    let pid = mc.pid();
    drop(stream);
    drop(mc);
    assert!(
        !pid_exists(pid),
        "memcached pid {pid} still exists after drop"
    );
}

#[tokio::test]
async fn mariadb_user_grant_and_tcp_login() {
    let db = MariaDb::start().await.unwrap();
    assert!(db.socket_path().exists());
    db.exec_sql(
        "CREATE DATABASE app; \
         CREATE TABLE app.t (id INT PRIMARY KEY, name VARCHAR(20)); \
         INSERT INTO app.t VALUES (1, 'one'), (2, 'two'); \
         CREATE USER 'web'@'127.0.0.1' IDENTIFIED BY 'secret'; \
         GRANT SELECT ON app.* TO 'web'@'127.0.0.1'",
    )
    .await
    .unwrap();
    assert_eq!(
        db.exec_sql("SELECT COUNT(*) FROM app.t").await.unwrap(),
        "2"
    );

    let rows = mariadb_query(
        db.addr(),
        "web",
        "secret",
        Some("app"),
        "SELECT id, name FROM t ORDER BY id",
    )
    .await
    .unwrap();
    assert_eq!(rows, "1\tone\n2\ttwo");

    let denied = mariadb_query(db.addr(), "web", "wrong", None, "SELECT 1")
        .await
        .unwrap_err();
    assert!(format!("{denied:#}").contains("ERROR 1045"), "{denied:#}");
    let readonly = mariadb_query(db.addr(), "web", "secret", Some("app"), "DELETE FROM t")
        .await
        .unwrap_err();
    assert!(
        format!("{readonly:#}").contains("ERROR 1142"),
        "{readonly:#}"
    );

    let sql_error = db.exec_sql("SELEKT 1").await.unwrap_err();
    assert!(
        format!("{sql_error:#}").contains("ERROR 1064"),
        "{sql_error:#}"
    );

    let pid = db.pid();
    drop(db);
    assert!(
        !pid_exists(pid),
        "mariadbd pid {pid} still exists after drop"
    );
}

#[tokio::test]
async fn mariadb_replica_follows_primary() {
    let primary = MariaDb::start().await.unwrap();
    primary
        .exec_sql(
            "CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY); \
             CREATE USER 'app'@'%' IDENTIFIED BY 'pw'; GRANT ALL ON shop.* TO 'app'@'%'",
        )
        .await
        .unwrap();
    let replica = MariaDb::start_replica_of(&primary).await.unwrap();
    assert!(replica.is_replica());
    assert_ne!(replica.server_id(), primary.server_id());

    mariadb_query(
        primary.addr(),
        "app",
        "pw",
        Some("shop"),
        "INSERT INTO items VALUES (1), (2)",
    )
    .await
    .unwrap();
    replica.sync_with(&primary).await.unwrap();
    let on_replica = mariadb_query(
        replica.addr(),
        "app",
        "pw",
        Some("shop"),
        "SELECT COUNT(*) FROM items",
    )
    .await
    .unwrap();
    assert_eq!(on_replica, "2");
    let write = mariadb_query(
        replica.addr(),
        "app",
        "pw",
        Some("shop"),
        "INSERT INTO items VALUES (3)",
    )
    .await
    .unwrap_err();
    assert!(format!("{write:#}").contains("read-only"), "{write:#}");
}

#[test]
fn missing_binary_names_the_debian_package() {
    let err = find_binary("ocean-no-such-binary", "ocean-pkg")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ocean-no-such-binary not found"), "{err}");
    assert!(err.contains("apt-get install ocean-pkg"), "{err}");
}

#[tokio::test]
async fn parallel_servers_get_distinct_ports() {
    let servers = futures_util::future::try_join_all((0..4).map(|_| RedisServer::start()))
        .await
        .unwrap();
    let mut addrs: Vec<SocketAddr> = servers.iter().map(RedisServer::addr).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 4);
}

/// A stop kills what the server forked (its whole process group) and the watchdog, and an
/// exit noticed by `is_running` does the same; a server survives the thread that spawned it.
#[test]
fn stop_kills_forked_helpers_and_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let sh = find_binary("sh", "dash").unwrap();
    let spawn_dir = dir.path().to_path_buf();
    let mut server = std::thread::spawn(move || {
        ServerProcess::spawn(
            "forking sh",
            sh,
            vec!["-c".into(), "sleep 600 & sleep 600 & wait".into()],
            &spawn_dir,
            spawn_dir.join("out.log"),
            Vec::new(),
        )
        .unwrap()
    })
    .join()
    .unwrap();
    let pid = server.pid();
    let watchdog = server.watchdog_pid().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let members = loop {
        let members = process_group_members(pid);
        if members.len() >= 3 {
            break members;
        }
        assert!(std::time::Instant::now() < deadline, "no helpers forked");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(members.contains(&pid));
    assert!(server.is_running(), "the spawning thread's exit killed it");
    let started: Vec<_> = members
        .iter()
        .map(|&m| (m, proc_stat(m).unwrap()))
        .collect();

    server.stop();
    assert!(!server.is_running());
    assert!(server.watchdog_pid().is_none());
    assert!(!pid_exists(watchdog), "watchdog {watchdog} left behind");
    assert!(!pid_exists(pid), "server {pid} not reaped");
    for (member, stat) in started {
        // Helpers are reparented to pid 1 when killed, which may leave them zombies. The
        // group's SIGKILL reaches them asynchronously (only the leader is waited for):
        // under load a helper can still show as running for a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = proc_stat(member);
            let alive = now.is_some_and(|s| s.start_time == stat.start_time && s.is_running());
            if !alive {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "forked helper {member} still running 5 s after the stop: {now:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    // A restart arms a new watchdog; an exit seen by `is_running` disarms it.
    server.respawn().unwrap();
    let watchdog = server.watchdog_pid().unwrap();
    server.signal("KILL").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.is_running() {
        assert!(std::time::Instant::now() < deadline, "SIGKILL not noticed");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(server.watchdog_pid().is_none());
    assert!(!pid_exists(watchdog), "watchdog {watchdog} left behind");
    assert!(server.exit_status().unwrap().is_some());
}
