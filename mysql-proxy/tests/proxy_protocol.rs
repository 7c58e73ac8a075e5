//! PROXY protocol v2 from a `--trusted-proxy` network: the client address in the header is
//! the one checked against the job's task IPs; untrusted peers cannot claim one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;

use common::*;
use ocean_core::table::mysql::{Access, MysqlTable};
use ocean_mysql_proxy::proto::proxy_v2::header_v2;

/// Like [`via`], but sends `header` first, as an L4 balancer with PROXY protocol does.
fn via_with_header(bind: &str, target: SocketAddr, header: Vec<u8>) -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    let bind: std::net::IpAddr = bind.parse().unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let local = l.local_addr().unwrap();
    let l = tokio::net::TcpListener::from_std(l).unwrap();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let header = header.clone();
            tokio::spawn(async move {
                let s = tokio::net::TcpSocket::new_v4().unwrap();
                s.bind(SocketAddr::new(bind, 0)).unwrap();
                if let Ok(mut u) = s.connect(target).await {
                    u.write_all(&header).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                }
            });
        }
    });
    local
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_address_from_a_trusted_balancer() {
    log_buffer();
    let (db, _dir, table_file) = prepared_backend().await;
    write_table(
        &table_file,
        &MysqlTable {
            databases: vec![database(db.addr(), vec![])],
            jobs: vec![job("shop/web", &["10.1.2.3"], Access::Rw, None)],
        },
    );
    let mut cfg = config(table_file);
    cfg.trusted_proxies = vec!["127.0.0.7/32".parse().unwrap()];
    let (proxy, cancel) = start_proxy(cfg).await;
    let addr = proxy.addr;
    let task: SocketAddr = "10.1.2.3:40000".parse().unwrap();
    let other: SocketAddr = "10.9.9.9:40000".parse().unwrap();

    // Through the trusted balancer: the task's address is the one checked.
    let lb = via_with_header("127.0.0.7", addr, header_v2(task, addr));
    let got = cli(lb, "127.0.0.1", "shop/web", &[], Some("shop"), "SELECT 1").await;
    assert_eq!(got.unwrap(), "1");
    let lb_other = via_with_header("127.0.0.7", addr, header_v2(other, addr));
    let err = cli(
        lb_other,
        "127.0.0.1",
        "shop/web",
        &[],
        Some("shop"),
        "SELECT 1",
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("Access denied for user 'shop/web'@'10.9.9.9'"),
        "{err}"
    );
    // A trusted peer without a header, and an untrusted one with a header: no login.
    assert!(
        cli(addr, "127.0.0.7", "shop/web", &[], Some("shop"), "SELECT 1")
            .await
            .is_err()
    );
    let untrusted = via_with_header("127.0.0.8", addr, header_v2(task, addr));
    assert!(cli(
        untrusted,
        "127.0.0.1",
        "shop/web",
        &[],
        Some("shop"),
        "SELECT 1"
    )
    .await
    .is_err());
    assert!(logs().contains("from trusted proxy"));
    cancel.cancel();
    proxy.wait().await;
}
