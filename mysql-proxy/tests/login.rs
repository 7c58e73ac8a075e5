//! Logins through the proxy against a real MariaDB primary and replica: who may log in
//! (IP + JOBNAME, optional password), which schema, ro vs rw routing, both auth plugins,
//! TLS, and the commands the proxy answers itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use mysql_async::prelude::*;
use ocean_core::table::mysql::{Access, MysqlTable};
use ocean_mysql_proxy::Plugin;
use ocean_tests::servers::mariadb::MariaDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_routing_plugins_and_tls() {
    log_buffer();
    let (primary, dir, table_file) = prepared_backend().await;
    let replica = MariaDb::start_replica_of(&primary).await.unwrap();
    replica.sync_with(&primary).await.unwrap();
    let (pid, rid) = (
        primary.server_id().to_string(),
        replica.server_id().to_string(),
    );

    write_table(
        &table_file,
        &MysqlTable {
            databases: vec![database(primary.addr(), vec![replica.addr()])],
            jobs: vec![
                job("shop/web", &["127.0.0.2"], Access::Rw, None),
                job(
                    "shop/report",
                    &["127.0.0.4", "192.0.2.77"],
                    Access::Ro,
                    None,
                ),
                job("shop/secure", &["127.0.0.5"], Access::Rw, Some("job-pw")),
            ],
        },
    );
    let (proxy, cancel) = start_proxy(config(table_file.clone())).await;
    let addr = proxy.addr;

    // rw job from its task's IP: the primary.
    let got = cli(
        addr,
        "127.0.0.2",
        "shop/web",
        &[],
        Some("shop"),
        "SELECT @@server_id, name FROM items WHERE id=1",
    )
    .await;
    assert_eq!(got.unwrap(), format!("{pid}\tapple"));

    // The same job from another IP, and an unknown job: 1045.
    let err = cli(addr, "127.0.0.3", "shop/web", &[], Some("shop"), "SELECT 1")
        .await
        .unwrap_err();
    assert!(
        err.contains("ERROR 1045 (28000)")
            && err.contains("Access denied for user 'shop/web'@'127.0.0.3' (using password: NO)"),
        "{err}"
    );
    let err = cli(addr, "127.0.0.2", "nobody", &[], Some("shop"), "SELECT 1")
        .await
        .unwrap_err();
    assert!(err.contains("ERROR 1045 (28000)"), "{err}");

    // A schema not granted and one that does not exist: the same 1044.
    let other = cli(
        addr,
        "127.0.0.2",
        "shop/web",
        &[],
        Some("other"),
        "SELECT 1",
    )
    .await
    .unwrap_err();
    let none = cli(
        addr,
        "127.0.0.2",
        "shop/web",
        &[],
        Some("nonexistent"),
        "SELECT 1",
    )
    .await
    .unwrap_err();
    assert!(
        other.contains(
            "ERROR 1044 (42000): Access denied for user 'shop/web'@'127.0.0.2' to database 'other'"
        ),
        "{other}"
    );
    assert_eq!(
        other.replace("other", "X"),
        none.replace("nonexistent", "X")
    );

    // ro job: a replica, with the read-only backend user.
    let got = cli(
        addr,
        "127.0.0.4",
        "shop/report",
        &[],
        Some("shop"),
        "SELECT @@server_id, CURRENT_USER()",
    )
    .await;
    assert_eq!(got.unwrap(), format!("{rid}\t{RO_USER}@127.0.0.1"));
    let err = cli(
        addr,
        "127.0.0.4",
        "shop/report",
        &[],
        Some("shop"),
        "INSERT INTO items VALUES (9, 'x')",
    )
    .await
    .unwrap_err();
    assert!(err.contains("ERROR"), "{err}");
    // 127.0.0.1 counts as this host's address (192.0.2.77 here), which is a task of the ro job.
    let got = cli(
        addr,
        "127.0.0.1",
        "shop/report",
        &[],
        Some("shop"),
        "SELECT @@server_id",
    )
    .await;
    assert_eq!(got.unwrap(), rid);
    // ... but not of the rw job.
    assert!(
        cli(addr, "127.0.0.1", "shop/web", &[], Some("shop"), "SELECT 1")
            .await
            .unwrap_err()
            .contains("1045")
    );

    // USE into a schema that is not granted: 1044 again; COM_CHANGE_USER is refused.
    let err = cli(
        addr,
        "127.0.0.2",
        "shop/web",
        &[],
        Some("shop"),
        "USE other",
    )
    .await
    .unwrap_err();
    assert!(err.contains("ERROR 1044 (42000)"), "{err}");
    let got = cli(
        addr,
        "127.0.0.2",
        "shop/web",
        &[],
        Some("shop"),
        "USE shop; SELECT COUNT(*) FROM items",
    )
    .await;
    assert_eq!(got.unwrap(), "2");
    // LOAD DATA LOCAL INFILE: the proxy never offers it, so the server refuses.
    let err = cli(
        addr,
        "127.0.0.2",
        "shop/web",
        &["--local-infile=1"],
        Some("shop"),
        "LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE items",
    )
    .await
    .unwrap_err();
    println!("LOAD DATA LOCAL through the proxy: {err}");
    assert!(err.contains("ERROR"), "{err}");

    // mysql_async (Rust), native plugin offered: rw job, and the password job.
    let mut conn = mysql_async::Conn::new(opts(addr, "127.0.0.2", "shop/web", None, Some("shop")))
        .await
        .unwrap();
    let id: Option<u32> = conn.query_first("SELECT @@server_id").await.unwrap();
    assert_eq!(id.unwrap().to_string(), pid);
    let names: Vec<String> = conn
        .exec("SELECT name FROM items WHERE id > ? ORDER BY id", (0,))
        .await
        .unwrap();
    assert_eq!(names, ["apple", "pear"]);
    let err = conn
        .change_user(mysql_async::ChangeUserOpts::default().with_user(Some("root".into())))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("COM_CHANGE_USER"), "{err}");
    drop(conn);
    let mut conn = mysql_async::Conn::new(opts(
        addr,
        "127.0.0.5",
        "shop/secure",
        Some("job-pw"),
        Some("shop"),
    ))
    .await
    .unwrap();
    let one: Option<u8> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    conn.disconnect().await.unwrap();
    let err = mysql_async::Conn::new(opts(
        addr,
        "127.0.0.5",
        "shop/secure",
        Some("wrong"),
        Some("shop"),
    ))
    .await
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("Access denied for user 'shop/secure'@'127.0.0.5' (using password: YES)"),
        "{err}"
    );
    let err = mysql_async::Conn::new(opts(addr, "127.0.0.5", "shop/secure", None, Some("shop")))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("(using password: NO)"), "{err}");
    // The CLI with the password job, native and forcing caching_sha2 on its side.
    assert_eq!(
        cli(
            addr,
            "127.0.0.5",
            "shop/secure",
            &["--password=job-pw"],
            Some("shop"),
            "SELECT 1"
        )
        .await
        .unwrap(),
        "1"
    );
    assert_eq!(
        cli(
            addr,
            "127.0.0.5",
            "shop/secure",
            &["--password=job-pw", "--default-auth=caching_sha2_password"],
            Some("shop"),
            "SELECT 2"
        )
        .await
        .unwrap(),
        "2"
    );
    assert!(cli(
        addr,
        "127.0.0.5",
        "shop/secure",
        &["--password=nope", "--default-auth=caching_sha2_password"],
        Some("shop"),
        "SELECT 2"
    )
    .await
    .unwrap_err()
    .contains("1045"));

    // A second proxy that greets with caching_sha2_password: mysql_async answers with it.
    let mut c2 = config(table_file.clone());
    c2.default_auth = Plugin::CachingSha2;
    let (sha_proxy, sha_cancel) = start_proxy(c2).await;
    let mut conn = mysql_async::Conn::new(opts(
        sha_proxy.addr,
        "127.0.0.5",
        "shop/secure",
        Some("job-pw"),
        Some("shop"),
    ))
    .await
    .unwrap();
    let one: Option<u8> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    conn.disconnect().await.unwrap();
    let err = mysql_async::Conn::new(opts(
        sha_proxy.addr,
        "127.0.0.5",
        "shop/secure",
        Some("wrong"),
        Some("shop"),
    ))
    .await
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("1045") || err.to_string().contains("Access denied"),
        "{err}"
    );
    assert_eq!(
        cli(
            sha_proxy.addr,
            "127.0.0.5",
            "shop/secure",
            &["--password=job-pw"],
            Some("shop"),
            "SELECT 3"
        )
        .await
        .unwrap(),
        "3"
    );
    assert_eq!(
        cli(
            sha_proxy.addr,
            "127.0.0.2",
            "shop/web",
            &[],
            Some("shop"),
            "SELECT 4"
        )
        .await
        .unwrap(),
        "4"
    );
    sha_cancel.cancel();

    // TLS: a self-signed certificate; --require-tls refuses plain clients.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let mut c3 = config(table_file.clone());
    c3.tls = Some((cert_file.clone(), key_file));
    c3.require_tls = true;
    let (tls_proxy, tls_cancel) = start_proxy(c3).await;
    let ssl = mysql_async::SslOpts::default().with_danger_accept_invalid_certs(true);
    let mut conn = mysql_async::Conn::new(
        opts(tls_proxy.addr, "127.0.0.2", "shop/web", None, Some("shop")).ssl_opts(ssl),
    )
    .await
    .unwrap();
    let id: Option<u32> = conn.query_first("SELECT @@server_id").await.unwrap();
    assert_eq!(id.unwrap().to_string(), pid);
    conn.disconnect().await.unwrap();
    let cert_arg = format!("--ssl-ca={}", cert_file.display());
    let got = cli(
        tls_proxy.addr,
        "127.0.0.5",
        "shop/secure",
        &["--ssl", &cert_arg, "--password=job-pw"],
        Some("shop"),
        "SELECT 5",
    )
    .await;
    assert_eq!(got.unwrap(), "5");
    let err = cli(
        tls_proxy.addr,
        "127.0.0.2",
        "shop/web",
        &[],
        Some("shop"),
        "SELECT 1",
    )
    .await
    .unwrap_err();
    assert!(err.contains("3159"), "{err}");
    tls_cancel.cancel();

    // Every attempt is in the audit log.
    let logs = logs();
    assert!(
        logs.contains("job=\"shop/web\"") || logs.contains("job=shop/web"),
        "{logs}"
    );
    assert!(logs.contains("peer IP is not a running task of the job"));
    assert!(logs.contains("schema not granted"));
    cancel.cancel();
    proxy.wait().await;
}
