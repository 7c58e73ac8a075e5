//! TLS to clients (a rustls server config from PEM files) and to backends (a rustls
//! client config trusting a PEM CA), both read through [`ocean_core::tls`].

use std::path::Path;
use std::sync::Arc;

use ocean_core::tls::{PemFile, TlsError};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Loads `cert` (a PEM chain) and `key` (a PEM private key) into an acceptor.
///
/// # Errors
/// A file that cannot be used, or a key that is not the certificate's; the message names
/// the flag and the file.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let config = ocean_core::tls::server_config(
        PemFile::new("--tls-cert", cert),
        PemFile::new("--tls-key", key),
    )?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// TLS to backends (`--backend-tls`): a rustls client trusting only the PEM CA
/// certificates in `ca`; the backend's certificate must name its IP (an IP SAN).
///
/// # Errors
/// A CA file that cannot be used; the message names `--backend-ca` and the file.
pub fn connector(ca: &Path) -> Result<TlsConnector, TlsError> {
    let roots = ocean_core::tls::root_store(PemFile::new("--backend-ca", ca))?;
    let config = rustls::ClientConfig::builder_with_provider(ocean_core::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Versions)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
