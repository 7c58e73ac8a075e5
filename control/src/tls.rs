//! TLS for control's API (`--tls-cert`, `--tls-key`).
//!
//! [`TlsListener`] is an `axum::serve` listener that yields finished handshakes, so the API
//! is served by the same `axum::serve` with the same graceful shutdown with or without TLS.
//! Handshakes run in their own tasks (tracked, capped at [`MAX_HANDSHAKES`], each with a
//! deadline), so a client that connects and says nothing holds up no one else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ocean_core::tls::{PemFile, ServerCert, TlsError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// The certificate chain and key control serves with (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// `--tls-cert`: the server's chain, leaf first.
    pub cert: PathBuf,
    /// `--tls-key`: its private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Loads the files into a server config (HTTP/1.1 by ALPN) and the certificate it
    /// serves, which SIGHUP re-reads.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, or a key that is not the certificate's; the
    /// message names the flag and the file.
    pub fn server_config(&self) -> Result<(Arc<rustls::ServerConfig>, Arc<ServerCert>), TlsError> {
        let cert = ServerCert::load(
            PemFile::new("--tls-cert", &self.cert),
            PemFile::new("--tls-key", &self.key),
        )?;
        let mut c = ocean_core::tls::server_config(cert.clone())?;
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok((Arc::new(c), cert))
    }
}

/// Handshakes in progress at most; the accept loop waits for a slot.
pub const MAX_HANDSHAKES: usize = 256;
/// A client that has not finished its handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TCP, runs the TLS handshake, and hands the stream to `axum::serve`.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts the accept loop on `tcp` in `tracker`; it stops when `cancel` fires.
    ///
    /// # Errors
    /// When the socket has no local address.
    pub fn spawn(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        // Small: a finished handshake waits here only until axum's loop comes round.
        let (tx, rx) = mpsc::channel(16);
        tracker.spawn(accept_loop(
            tcp,
            TlsAcceptor::from(config),
            tx,
            tracker.clone(),
            cancel,
        ));
        Ok(TlsListener { rx, local })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        // A permit before accept: beyond the cap, connections wait in the kernel's backlog.
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                // Never closed; if it were, there is nothing left to accept with.
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tcp.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then try again.
                    tracing::warn!(error = %e, "control API: accept failed");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        let cancel = cancel.clone();
        let span = tracing::debug_span!("tls_handshake", client.addr = %peer);
        tracker.spawn(
            async move {
                let _permit = permit;
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
                let handshake = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
                };
                let reason = match handshake {
                    Ok(Ok(tls)) => {
                        tokio::select! {
                            _ = cancel.cancelled() => {}
                            // Err: the server has stopped; the connection is dropped.
                            sent = tx.send((tls, peer)) => if sent.is_err() {
                                tracing::debug!("API server gone; connection dropped");
                            },
                        }
                        return;
                    }
                    Ok(Err(e)) => {
                        // Plain HTTP to the TLS port lands here, as do port scanners.
                        tracing::debug!(error = %e, "TLS handshake failed");
                        "error"
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        "timeout"
                    }
                };
                metrics::counter!("ocean_control_tls_handshake_failures_total", "reason" => reason)
                    .increment(1);
            }
            .instrument(span),
        );
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop has stopped, which happens only at shutdown, when axum stops
            // calling accept anyway.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
