//! TLS from the proxy to the backend (`--backend-tls`, `--backend-ca`) against a real
//! MariaDB serving TLS, whose backend user requires it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsString;
use std::path::Path;

use common::*;
use ocean_core::table::mysql::{Access, MysqlTable};
use ocean_tests::servers::mariadb::MariaDb;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

/// A CA and a server certificate for 127.0.0.1 (IP SAN) signed by it, as PEM files in
/// `dir`: (ca, cert, key).
fn certs(dir: &Path, tag: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let files = (
        dir.join(format!("{tag}-ca.pem")),
        dir.join(format!("{tag}-cert.pem")),
        dir.join(format!("{tag}-key.pem")),
    );
    std::fs::write(&files.0, ca.pem()).unwrap();
    std::fs::write(&files.1, cert.pem()).unwrap();
    std::fs::write(&files.2, key.serialize_pem()).unwrap();
    files
}

fn arg(flag: &str, p: &Path) -> OsString {
    let mut s = OsString::from(flag);
    s.push(p.as_os_str());
    s
}

/// Restarts `db` with TLS on (ssl_* are read-only at runtime in MariaDB 10.11), same port
/// and socket, and checks that the server took the certificate.
async fn restart_with_tls(db: &mut MariaDb, ca: &Path, cert: &Path, key: &Path) {
    db.stop();
    db.restart_with(&[
        arg("--ssl-ca=", ca),
        arg("--ssl-cert=", cert),
        arg("--ssl-key=", key),
    ])
    .await
    .unwrap();
    let have_ssl = db
        .exec_sql("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES WHERE VARIABLE_NAME='HAVE_SSL'")
        .await
        .unwrap();
    assert_eq!(
        have_ssl,
        "YES",
        "mariadbd did not enable TLS:\n{}",
        db.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_login_and_refusals() {
    log_buffer();
    let (mut db, dir, table_file) = prepared_backend().await;
    let (ca, cert, key) = certs(dir.path(), "good");
    let (other_ca, _, _) = certs(dir.path(), "other");
    write_table(
        &table_file,
        &MysqlTable {
            databases: vec![database(db.addr(), vec![])],
            jobs: vec![job("shop/web", &["127.0.0.2"], Access::Rw, None)],
        },
    );
    let sql = "SELECT name FROM items WHERE id=1";

    // --backend-tls against a backend without TLS: the login fails, clearly logged.
    let mut c = config(table_file.clone());
    c.backend_tls = Some(ca.clone());
    let (proxy, cancel) = start_proxy(c).await;
    let err = cli(proxy.addr, "127.0.0.2", "shop/web", &[], Some("shop"), sql)
        .await
        .unwrap_err();
    assert!(
        err.contains("ERROR 1429") && err.contains("cannot reach the database"),
        "{err}"
    );
    let l = logs();
    assert!(
        l.contains("the backend does not offer TLS, which --backend-tls requires"),
        "{l}"
    );
    cancel.cancel();
    proxy.wait().await;

    // The backend now serves TLS and its user requires it.
    restart_with_tls(&mut db, &ca, &cert, &key).await;
    db.exec_sql(&format!("ALTER USER '{RW_USER}'@'127.0.0.1' REQUIRE SSL"))
        .await
        .unwrap();

    // With --backend-tls: logged in over TLS, queries relayed.
    let mut c = config(table_file.clone());
    c.backend_tls = Some(ca.clone());
    let (proxy, cancel) = start_proxy(c).await;
    let got = cli(proxy.addr, "127.0.0.2", "shop/web", &[], Some("shop"), sql).await;
    assert_eq!(got.unwrap(), "apple");
    let cipher = cli(
        proxy.addr,
        "127.0.0.2",
        "shop/web",
        &[],
        Some("shop"),
        "SHOW STATUS LIKE 'Ssl_cipher'",
    )
    .await
    .unwrap();
    let value = cipher.strip_prefix("Ssl_cipher\t").unwrap_or_default();
    assert!(!value.is_empty(), "no TLS to the backend: {cipher:?}");
    let version = cli(
        proxy.addr,
        "127.0.0.2",
        "shop/web",
        &[],
        Some("shop"),
        "SHOW STATUS LIKE 'Ssl_version'",
    )
    .await
    .unwrap();
    assert!(version.contains("TLS"), "{version}");
    cancel.cancel();
    proxy.wait().await;

    // Without --backend-tls: the backend refuses the proxy's user.
    let (proxy, cancel) = start_proxy(config(table_file.clone())).await;
    let err = cli(proxy.addr, "127.0.0.2", "shop/web", &[], Some("shop"), sql)
        .await
        .unwrap_err();
    assert!(
        err.contains("ERROR 1429") && err.contains("cannot reach the database"),
        "{err}"
    );
    let l = logs();
    assert!(
        l.contains(&format!(
            "backend refused: 1045 Access denied for user '{RW_USER}'"
        )),
        "{l}"
    );
    cancel.cancel();
    proxy.wait().await;

    // A CA that did not sign the backend's certificate: the TLS handshake fails.
    let mut c = config(table_file.clone());
    c.backend_tls = Some(other_ca);
    let (proxy, cancel) = start_proxy(c).await;
    let err = cli(proxy.addr, "127.0.0.2", "shop/web", &[], Some("shop"), sql)
        .await
        .unwrap_err();
    assert!(err.contains("ERROR 1429"), "{err}");
    let l = logs();
    assert!(l.contains("tls: handshake with 127.0.0.1:"), "{l}");
    cancel.cancel();
    proxy.wait().await;
}
