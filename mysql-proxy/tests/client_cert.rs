//! Client certificates: `--client-ca` asks TLS clients for one and verifies it; a job
//! with `require_cert_cn` logs in only over TLS with a verified certificate of that CN.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use mysql_async::prelude::*;
use mysql_async::{ClientIdentity, SslOpts};
use ocean_core::table::mysql::{Access, MysqlTable};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA written to `dir/{name}-ca.pem`; returns what signs with it.
fn ca(dir: &Path, name: &str) -> (rcgen::Certificate, KeyPair, PathBuf) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} CA"));
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let path = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&path, cert.pem()).unwrap();
    (cert, key, path)
}

/// A certificate with subject `cn` (and SAN localhost) signed by `ca`: (cert, key) files.
/// The key is the checked-in RSA test key, written as PKCS#1: mysql_async's rustls client
/// identity reads only `RSA PRIVATE KEY` (and ring cannot generate RSA keys).
fn leaf(
    dir: &Path,
    ca: &(rcgen::Certificate, KeyPair, PathBuf),
    file: &str,
    cn: &str,
) -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    let pem = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rsa-2048-test-only.pem"),
    )
    .unwrap();
    let key = KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap();
    let pkcs1 = rsa::RsaPrivateKey::from_pkcs8_pem(&pem)
        .unwrap()
        .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap();
    let cert = params.signed_by(&key, &ca.0, &ca.1).unwrap();
    let (c, k) = (
        dir.join(format!("{file}.pem")),
        dir.join(format!("{file}-key.pem")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, pkcs1.as_bytes()).unwrap();
    (c, k)
}

async fn login(opts: mysql_async::OptsBuilder) -> Result<Option<u8>, String> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_with_require_cert_cn_need_a_verified_client_certificate() {
    log_buffer();
    let (primary, dir, table_file) = prepared_backend().await;
    let d = dir.path();
    let trusted = ca(d, "trusted");
    let stranger = ca(d, "stranger");
    let (server_cert, server_key) = leaf(d, &trusted, "server", "ocean mysql-proxy");
    let good = leaf(d, &trusted, "good", "shop-secure-client");
    let other_cn = leaf(d, &trusted, "other", "somebody-else");
    let untrusted = leaf(d, &stranger, "untrusted", "shop-secure-client");

    let mut secure = job("shop/secure", &["127.0.0.5"], Access::Rw, Some("job-pw"));
    secure.require_cert_cn = Some("shop-secure-client".into());
    write_table(
        &table_file,
        &MysqlTable {
            databases: vec![database(primary.addr(), vec![])],
            jobs: vec![secure, job("shop/web", &["127.0.0.2"], Access::Rw, None)],
        },
    );
    let mut c = config(table_file);
    c.tls = Some((server_cert, server_key));
    c.client_ca = Some(trusted.2.clone());
    let (proxy, cancel) = start_proxy(c).await;
    let addr = proxy.addr;
    let secure = || {
        opts(
            addr,
            "127.0.0.5",
            "shop/secure",
            Some("job-pw"),
            Some("shop"),
        )
    };
    let tls = |identity: Option<&(PathBuf, PathBuf)>| {
        SslOpts::default()
            .with_danger_accept_invalid_certs(true)
            .with_client_identity(
                identity.map(|(c, k)| ClientIdentity::new(c.clone().into(), k.clone().into())),
            )
    };

    // The right certificate over TLS: in.
    assert_eq!(
        login(secure().ssl_opts(tls(Some(&good)))).await,
        Ok(Some(1))
    );
    // TLS without a certificate, another CN, plain TCP: 1045.
    let err = login(secure().ssl_opts(tls(None))).await.unwrap_err();
    assert!(err.contains("1045"), "{err}");
    let err = login(secure().ssl_opts(tls(Some(&other_cn))))
        .await
        .unwrap_err();
    assert!(err.contains("1045"), "{err}");
    let err = login(secure()).await.unwrap_err();
    assert!(err.contains("1045"), "{err}");
    // A certificate from another CA fails the TLS handshake itself.
    assert!(login(secure().ssl_opts(tls(Some(&untrusted))))
        .await
        .is_err());
    // Jobs without require_cert_cn log in over TLS without a certificate, and with one.
    let web = || opts(addr, "127.0.0.2", "shop/web", None, Some("shop"));
    assert_eq!(login(web().ssl_opts(tls(None))).await, Ok(Some(1)));
    assert_eq!(
        login(web().ssl_opts(tls(Some(&other_cn)))).await,
        Ok(Some(1))
    );
    assert_eq!(login(web()).await, Ok(Some(1)));

    // The mariadb CLI with --ssl-cert/--ssl-key.
    let (cert_arg, key_arg) = (
        format!("--ssl-cert={}", good.0.display()),
        format!("--ssl-key={}", good.1.display()),
    );
    let ca_arg = format!("--ssl-ca={}", trusted.2.display());
    let got = cli(
        addr,
        "127.0.0.5",
        "shop/secure",
        &["--ssl", &ca_arg, &cert_arg, &key_arg, "--password=job-pw"],
        Some("shop"),
        "SELECT 7",
    )
    .await;
    assert_eq!(got, Ok("7".to_string()));
    cancel.cancel();
    proxy.wait().await;

    let logs = logs();
    assert!(logs.contains("none presented over TLS"), "{logs}");
    assert!(logs.contains("the certificate's CN is another"), "{logs}");
}
