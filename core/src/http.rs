//! HTTP client settings shared by control (Marathon) and subscribers (control).

use std::time::Duration;

use crate::tls::{PemFile, TlsError};

/// Installs the process-wide rustls crypto provider (ring) once.
///
/// reqwest is built without a bundled provider so that one crypto library serves every TLS
/// user in the binary.
pub fn init_tls() {
    // Err means a provider is already installed (by us or by a test), which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client builder with Ocean's defaults: short connect timeout, no proxy from the
/// environment (control and Marathon are reached directly), and a user agent.
pub fn client_builder(connect_timeout: Duration) -> reqwest::ClientBuilder {
    init_tls();
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("ocean/", env!("CARGO_PKG_VERSION")))
}

/// Makes `builder` trust only the CA certificates in `ca` (PEM) for https URLs, instead of
/// the system's roots: a private control or Marathon behind a private CA. Without it,
/// https servers are checked against the system's trust store (rustls-platform-verifier).
///
/// # Errors
/// When the file cannot be read or holds no certificate; names the flag and the file.
pub fn trust_only(
    builder: reqwest::ClientBuilder,
    ca: PemFile<'_>,
) -> Result<reqwest::ClientBuilder, TlsError> {
    let certs = crate::tls::cert_chain(ca)?
        .into_iter()
        .map(|der| {
            reqwest::Certificate::from_der(&der).map_err(|e| TlsError::File {
                flag: ca.flag.to_string(),
                path: ca.path.to_path_buf(),
                message: format!("not a usable CA certificate: {e}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(builder.tls_certs_only(certs))
}
