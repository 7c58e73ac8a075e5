//! TLS to clients (a rustls server config from PEM files) and to backends (a rustls
//! client config trusting a PEM CA).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Loads `cert` (a PEM chain) and `key` (a PEM private key) into an acceptor.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("--tls-cert {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("--tls-cert {}: not PEM certificates", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "--tls-cert {}: no certificate",
        cert.display()
    );
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("--tls-key {}", key.display()))?,
    ))
    .with_context(|| format!("--tls-key {}: not a PEM key", key.display()))?
    .with_context(|| format!("--tls-key {}: no private key", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("TLS certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// TLS to backends (`--backend-tls`): a rustls client trusting only the PEM CA
/// certificates in `ca`; the backend's certificate must name its IP (an IP SAN).
pub fn connector(ca: &Path) -> anyhow::Result<TlsConnector> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(ca).with_context(|| format!("--backend-ca {}", ca.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("--backend-ca {}: not PEM certificates", ca.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "--backend-ca {}: no certificate",
        ca.display()
    );
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots
            .add(c)
            .with_context(|| format!("--backend-ca {}: bad CA certificate", ca.display()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
