//! TLS with rustls (ring provider): an acceptor for clients, a connector for backends.
//! PEM files are read by [`ocean_core::tls`], the one loader every daemon shares.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::Context;
use ocean_core::tls::{self, PemFile};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The client-side TLS acceptor (`--tls-cert`/`--tls-key`) and the certificate it serves,
/// which SIGHUP re-reads.
#[derive(Clone)]
pub struct Acceptor {
    pub tls: TlsAcceptor,
    pub cert: Arc<tls::ServerCert>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptor")
    }
}

/// The backend TLS connector (`--backend-tls`, `--backend-ca`).
#[derive(Clone)]
pub struct Connector(pub TlsConnector);

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

/// Loads `cert` (a PEM chain) and `key` (a PEM private key) into an acceptor, through
/// [`ocean_core::tls`] (rustls-pki-types' PEM reader, the ring provider).
///
/// # Errors
/// When a file cannot be read or parsed, or the key does not match; the message names
/// `--tls-cert`/`--tls-key` and the file.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<Acceptor> {
    let cert = tls::ServerCert::load(
        PemFile::new("--tls-cert", cert),
        PemFile::new("--tls-key", key),
    )?;
    let config = tls::server_config(cert.clone())?;
    Ok(Acceptor {
        tls: TlsAcceptor::from(Arc::new(config)),
        cert,
    })
}

/// A connector trusting the CA certificates in `ca` (PEM); node certificates are checked
/// against the node's IP address (an IP SAN).
///
/// # Errors
/// When the file cannot be read or holds no usable CA certificate; the message names
/// `--backend-ca` and the file.
pub fn connector(ca: &Path) -> anyhow::Result<Connector> {
    let roots = tls::root_store(PemFile::new("--backend-ca", ca))?;
    let config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector(TlsConnector::from(Arc::new(config))))
}

/// A backend connection, plain or TLS.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stream::Plain(s) => f.debug_tuple("Plain").field(s).finish(),
            Stream::Tls(_) => f.write_str("Tls"),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
