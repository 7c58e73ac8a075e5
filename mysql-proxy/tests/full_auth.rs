//! caching_sha2_password full authentication (`--caching-sha2-full-auth`) with real
//! clients: over plain TCP through the RSA public-key exchange (a generated key, and one
//! from `--rsa-key`), and with the password in clear inside TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use common::*;
use mysql_async::prelude::*;
use mysql_common::io::ParseBuf;
use mysql_common::packets::HandshakePacket;
use mysql_common::scramble::scramble_sha256;
use ocean_core::table::mysql::{Access, MysqlTable};
use ocean_mysql_proxy::auth::RsaKey;
use ocean_mysql_proxy::Plugin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn select_one(opts: mysql_async::OptsBuilder) -> Result<Option<u8>, String> {
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .map_err(|e| e.to_string())?;
    let one: Option<u8> = conn
        .query_first("SELECT 1")
        .await
        .map_err(|e| e.to_string())?;
    conn.disconnect().await.map_err(|e| e.to_string())?;
    Ok(one)
}

async fn read_packet(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 4];
    tcp.read_exact(&mut header).await.unwrap();
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    (header[3], payload)
}

async fn write_packet(tcp: &mut TcpStream, seq: u8, payload: &[u8]) {
    let len = payload.len();
    let mut v = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
    v.extend_from_slice(payload);
    tcp.write_all(&v).await.unwrap();
}

/// A client that has the proxy's public key already (`--server-public-key-path`): after
/// "perform full authentication" it sends the encrypted password at once, no 0x02.
/// Returns the payload answering it (OK or ERR).
async fn login_with_known_key(addr: SocketAddr, public_pem: &[u8], password: &str) -> Vec<u8> {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new("127.0.0.5".parse().unwrap(), 0))
        .unwrap();
    let mut tcp = s.connect(addr).await.unwrap();
    let (_, greeting) = read_packet(&mut tcp).await;
    let hs = ParseBuf(&greeting).parse::<HandshakePacket>(()).unwrap();
    let nonce = hs.nonce();
    // PROTOCOL_41 | SECURE_CONNECTION | CONNECT_WITH_DB | PLUGIN_AUTH | LONG_PASSWORD |
    // TRANSACTIONS | MULTI_RESULTS
    let caps: u32 = 0x0200 | 0x8000 | 0x0008 | 0x0008_0000 | 0x0001 | 0x2000 | 0x0002_0000;
    let mut resp = Vec::new();
    resp.extend_from_slice(&caps.to_le_bytes());
    resp.extend_from_slice(&(64u32 << 20).to_le_bytes());
    resp.push(45);
    resp.extend_from_slice(&[0u8; 23]);
    resp.extend_from_slice(b"shop/secure\0");
    let scramble = scramble_sha256(&nonce, password.as_bytes()).unwrap();
    resp.push(scramble.len() as u8);
    resp.extend_from_slice(&scramble);
    resp.extend_from_slice(b"shop\0caching_sha2_password\0");
    write_packet(&mut tcp, 1, &resp).await;
    let (seq, more) = read_packet(&mut tcp).await;
    assert_eq!(more, [0x01, 0x04], "perform full authentication");
    let mut pw = password.as_bytes().to_vec();
    pw.push(0);
    for (b, n) in pw.iter_mut().zip(nonce.iter().cycle()) {
        *b ^= n;
    }
    let encrypted = mysql_common::crypto::encrypt(&pw, public_pem);
    write_packet(&mut tcp, seq + 1, &encrypted).await;
    read_packet(&mut tcp).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_sha2_full_auth_over_plain_tcp_with_rsa_and_over_tls() {
    log_buffer();
    let (primary, dir, table_file) = prepared_backend().await;
    write_table(
        &table_file,
        &MysqlTable {
            databases: vec![database(primary.addr(), vec![])],
            jobs: vec![
                job("shop/secure", &["127.0.0.5"], Access::Rw, Some("job-pw")),
                job("shop/web", &["127.0.0.2"], Access::Rw, None),
            ],
        },
    );

    // A generated key (no --rsa-key): mysql_async asks for it (0x02) and encrypts.
    let mut c = config(table_file.clone());
    c.default_auth = Plugin::CachingSha2;
    c.caching_sha2_full_auth = true;
    let (proxy, cancel) = start_proxy(c).await;
    let secure = |addr, pw: Option<&str>| opts(addr, "127.0.0.5", "shop/secure", pw, Some("shop"));
    assert_eq!(
        select_one(secure(proxy.addr, Some("job-pw"))).await,
        Ok(Some(1))
    );
    let err = select_one(secure(proxy.addr, Some("wrong")))
        .await
        .unwrap_err();
    assert!(
        err.contains("1045") && err.contains("(using password: YES)"),
        "{err}"
    );
    // The mariadb CLI (libmariadb) asks for the key the same way.
    let got = cli(
        proxy.addr,
        "127.0.0.5",
        "shop/secure",
        &["--password=job-pw", "--default-auth=caching_sha2_password"],
        Some("shop"),
        "SELECT 2",
    )
    .await;
    assert_eq!(got, Ok("2".to_string()));
    // A job without a password still logs in by IP (no scramble, no full auth), and the
    // CLI with the password from another IP is refused.
    let web = opts(proxy.addr, "127.0.0.2", "shop/web", None, Some("shop"));
    assert_eq!(select_one(web).await, Ok(Some(1)));
    let err = select_one(opts(
        proxy.addr,
        "127.0.0.3",
        "shop/secure",
        Some("job-pw"),
        Some("shop"),
    ))
    .await
    .unwrap_err();
    assert!(err.contains("1045"), "{err}");
    cancel.cancel();
    proxy.wait().await;

    // The key from --rsa-key.
    let mut c = config(table_file.clone());
    c.default_auth = Plugin::CachingSha2;
    c.caching_sha2_full_auth = true;
    c.rsa_key =
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/rsa-2048-test-only.pem"));
    let key_file =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/rsa-2048-test-only.pem");
    let public = RsaKey::load(&key_file).unwrap().public_pem().to_vec();
    let (proxy, cancel) = start_proxy(c).await;
    let ok = login_with_known_key(proxy.addr, &public, "job-pw").await;
    assert_eq!(ok.get(..1), Some(&[0x00][..]), "OK: {ok:?}");
    let err = login_with_known_key(proxy.addr, &public, "nope").await;
    assert_eq!(err.get(..3), Some(&[0xff, 0x15, 0x04][..]), "1045: {err:?}");
    assert_eq!(
        select_one(secure(proxy.addr, Some("job-pw"))).await,
        Ok(Some(1))
    );
    assert!(select_one(secure(proxy.addr, Some("nope")))
        .await
        .unwrap_err()
        .contains("1045"));
    cancel.cancel();
    proxy.wait().await;

    // Inside TLS the client sends the password in clear; no RSA.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let mut c = config(table_file.clone());
    c.default_auth = Plugin::CachingSha2;
    c.caching_sha2_full_auth = true;
    c.tls = Some((cert_file, key_file));
    let (proxy, cancel) = start_proxy(c).await;
    let ssl = mysql_async::SslOpts::default().with_danger_accept_invalid_certs(true);
    assert_eq!(
        select_one(secure(proxy.addr, Some("job-pw")).ssl_opts(ssl.clone())).await,
        Ok(Some(1))
    );
    assert!(select_one(secure(proxy.addr, Some("nope")).ssl_opts(ssl))
        .await
        .unwrap_err()
        .contains("1045"));
    cancel.cancel();
    proxy.wait().await;

    let logs = logs();
    assert!(logs.contains("wrong or missing"), "{logs}");
    assert!(
        logs.contains("caching_sha2_password full authentication rsa"),
        "{logs}"
    );
    assert!(
        logs.contains("caching_sha2_password full authentication tls"),
        "{logs}"
    );
}
