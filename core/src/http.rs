//! HTTP client settings shared by control (Marathon) and subscribers (control).

use std::time::Duration;

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
