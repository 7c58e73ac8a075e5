//! Backends: the proxy as a MySQL client. Connect to a backend the [`route`](crate::route)
//! chose, over TLS with `--backend-tls` ([`connector`]), and log in with the table's
//! credentials, passing on what the client negotiated. One backend connection per client
//! session, closed with it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use mysql_common::packets::{AuthPlugin, HandshakeResponse};
use mysql_common::proto::MySerialize;
use ocean_core::table::mysql::Credentials;
use ocean_core::tls::{PemFile, TlsError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::auth::client_response;
use crate::proto::handshake::{parse_backend_answer, parse_greeting, BackendAnswer};
use crate::proto::reply::parse_err;
use crate::proto::{Decoder, LOGIN_PACKET_LIMIT};
use crate::wire::{read_packet, write_packet, ReadError};

const LOGIN: Decoder = Decoder::new(LOGIN_PACKET_LIMIT);

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

/// What the client negotiated with the proxy, passed on so the backend speaks the same
/// protocol variant (EOF packets, session tracking, multi-results ...).
#[derive(Clone)]
pub struct ClientParams {
    pub capabilities: CapabilityFlags,
    pub collation: u8,
    pub max_packet_size: u32,
    pub attributes: Option<HashMap<String, String>>,
    /// MariaDB's extended capabilities the client negotiated (the metadata cache at
    /// most): the backend must speak them too, as the proxy relays its replies as they are.
    pub mariadb: MariadbCapabilities,
}

/// The connection to a backend: plain TCP, or TLS with `--backend-tls`.
pub enum BackendStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl BackendStream {
    /// Writes `bytes` and flushes them (TLS buffers what it encrypts).
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            BackendStream::Plain(s) => s.write_all(bytes).await,
            BackendStream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    /// Reads what is there into `buf` (cancel safe); 0 at EOF.
    pub async fn read_buf(&mut self, buf: &mut bytes::BytesMut) -> std::io::Result<usize> {
        match self {
            BackendStream::Plain(s) => s.read_buf(buf).await,
            BackendStream::Tls(s) => s.read_buf(buf).await,
        }
    }
}

/// A logged-in backend connection.
pub struct Backend {
    pub stream: BackendStream,
    /// The backend's final OK payload (its status flags go to the client).
    pub ok: Vec<u8>,
    pub server_version: String,
    /// `CLIENT_DEPRECATE_EOF` was negotiated: result sets end with an OK, not an EOF.
    pub deprecate_eof: bool,
    /// MariaDB's extended capabilities the server offered (none from MySQL).
    pub server_mariadb: MariadbCapabilities,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("login i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("login: {0}")]
    Read(#[from] ReadError),
    #[error("backend refused: {code} {message}")]
    Refused { code: u16, message: String },
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("the client negotiated MariaDB capabilities {wanted:?} that this backend does not offer ({server:?}); a new connection will not ask for them")]
    Mariadb {
        server: MariadbCapabilities,
        wanted: MariadbCapabilities,
    },
}

impl BackendError {
    /// The server's MariaDB capabilities, when the login got as far as its greeting
    /// to learn them.
    pub fn server_mariadb(&self) -> Option<MariadbCapabilities> {
        match self {
            BackendError::Mariadb { server, .. } => Some(*server),
            _ => None,
        }
    }
}

/// Connects to `addr` and logs in as `creds` into `schema`; with `tls` (`--backend-tls`)
/// the login switches to TLS first (SSLRequest), and fails if the backend does not offer it.
pub async fn login(
    addr: SocketAddr,
    creds: &Credentials,
    schema: Option<&str>,
    client: &ClientParams,
    allowed: CapabilityFlags,
    tls: Option<&ArcSwap<TlsConnector>>,
) -> Result<Backend, BackendError> {
    // The connector now (SIGHUP may swap it for a new --backend-ca): one per login.
    let tls = tls.map(ArcSwap::load_full);
    let tls = tls.as_deref();
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(BackendError::Connect)?;
    // Latency only: a socket without TCP_NODELAY still works.
    let _nodelay_is_best_effort = stream.set_nodelay(true);
    let greeting = read_packet(&mut stream, LOGIN).await?;
    let seq = greeting.last_seq;
    let greeting = greeting.payload;
    if greeting.first() == Some(&0xff) {
        return Err(refused(&greeting));
    }
    let hs = parse_greeting(&greeting)
        .map_err(|e| BackendError::Protocol(format!("bad greeting: {e}")))?;
    let server_caps = hs.capabilities();
    if !server_caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        return Err(BackendError::Protocol("server lacks protocol 4.1".into()));
    }
    // MariaDB says it is one by leaving CLIENT_LONG_PASSWORD (its CLIENT_MYSQL) clear.
    let server_mariadb = if server_caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD) {
        MariadbCapabilities::empty()
    } else {
        hs.mariadb_ext_capabilities()
    };
    if !server_mariadb.contains(client.mariadb) {
        return Err(BackendError::Mariadb {
            server: server_mariadb,
            wanted: client.mariadb,
        });
    }
    let nonce = hs.nonce();
    let plugin = hs
        .auth_plugin_name_ref()
        .unwrap_or(b"mysql_native_password")
        .to_vec();
    let data = client_response(&plugin, &nonce, &creds.password).ok_or_else(|| {
        BackendError::Protocol(format!(
            "backend wants unsupported auth plugin {}",
            String::from_utf8_lossy(&plugin)
        ))
    })?;

    let must = CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_TRANSACTIONS;
    let caps = (client.capabilities & allowed & server_caps)
        | (must & server_caps)
        | (server_caps & CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA);
    let caps = caps
        - CapabilityFlags::CLIENT_SSL
        - CapabilityFlags::CLIENT_COMPRESS
        - CapabilityFlags::CLIENT_LOCAL_FILES
        - CapabilityFlags::CLIENT_CONNECT_ATTRS;
    let caps = match tls {
        Some(_) if !server_caps.contains(CapabilityFlags::CLIENT_SSL) => {
            return Err(BackendError::Tls(
                "the backend does not offer TLS, which --backend-tls requires \
                 (configure ssl_cert/ssl_key on the server)"
                    .into(),
            ))
        }
        Some(_) => caps | CapabilityFlags::CLIENT_SSL,
        None => caps,
    };
    let attrs = if server_caps.contains(CapabilityFlags::CLIENT_CONNECT_ATTRS) {
        client.attributes.clone()
    } else {
        None
    };
    let resp = HandshakeResponse::new(
        Some(data),
        hs.server_version_parsed().unwrap_or((5, 7, 0)),
        Some(creds.user.as_bytes()),
        schema.map(str::as_bytes),
        Some(AuthPlugin::from_bytes(&plugin)),
        caps,
        attrs,
        client.max_packet_size,
    )
    .with_mariadb_ext_capabilities(client.mariadb);
    let mut payload = Vec::with_capacity(128);
    resp.serialize(&mut payload);
    // HandshakeResponse::new picks the collation from the server version; keep the
    // client's own (byte 8: after capabilities and max packet size).
    if let Some(b) = payload.get_mut(8) {
        *b = client.collation;
    }
    let server_version = hs.server_version_str().into_owned();
    let deprecate_eof = caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
    let seq = seq.wrapping_add(1);
    match tls {
        None => {
            write_packet(&mut stream, seq, &payload).await?;
            let ok = authenticate(&mut stream, plugin, &creds.password, false).await?;
            Ok(Backend {
                stream: BackendStream::Plain(stream),
                ok,
                server_version,
                deprecate_eof,
                server_mariadb,
            })
        }
        Some(connector) => {
            // SSLRequest: the response's first 32 bytes (capabilities with CLIENT_SSL, max
            // packet size, collation, filler), then the TLS handshake, then the response.
            let ssl_request = payload.get(..32).ok_or_else(|| {
                BackendError::Protocol("handshake response shorter than 32 bytes".into())
            })?;
            write_packet(&mut stream, seq, ssl_request).await?;
            let name = rustls::pki_types::ServerName::from(addr.ip());
            let mut stream = connector
                .connect(name, stream)
                .await
                .map_err(|e| BackendError::Tls(format!("handshake with {addr}: {e}")))?;
            let seq = seq.wrapping_add(1);
            write_packet(&mut stream, seq, &payload).await?;
            let ok = authenticate(&mut stream, plugin, &creds.password, true).await?;
            Ok(Backend {
                stream: BackendStream::Tls(Box::new(stream)),
                ok,
                server_version,
                deprecate_eof,
                server_mariadb,
            })
        }
    }
}

/// The rest of the login after the handshake response went out:
/// auth switches and caching_sha2_password's extra round trips, until OK (its payload
/// is returned) or ERR. Full authentication sends the password in clear, so only over TLS.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    mut plugin: Vec<u8>,
    password: &str,
    tls: bool,
) -> Result<Vec<u8>, BackendError> {
    loop {
        let packet = read_packet(stream, LOGIN).await?;
        let seq = packet.last_seq.wrapping_add(1);
        let answer = parse_backend_answer(&packet.payload)
            .map_err(|e| BackendError::Protocol(e.to_string()))?;
        match answer {
            BackendAnswer::Ok => return Ok(packet.payload.to_vec()),
            BackendAnswer::Err(_) => return Err(refused(&packet.payload)),
            BackendAnswer::Switch {
                plugin: name,
                nonce,
            } => {
                plugin = name.to_vec();
                let data = client_response(&plugin, nonce, password).ok_or_else(|| {
                    BackendError::Protocol(format!(
                        "backend switched to unsupported auth plugin {}",
                        String::from_utf8_lossy(&plugin)
                    ))
                })?;
                write_packet(stream, seq, &data).await?;
            }
            // AuthMoreData of caching_sha2_password: 3 = fast auth succeeded (OK follows),
            // 4 = full authentication: the password in clear over TLS (RSA key exchange
            // for plain connections is not supported).
            BackendAnswer::MoreData(data) if plugin == b"caching_sha2_password" => {
                match data.first() {
                    Some(3) => continue,
                    Some(4) if tls => {
                        let mut clear = Vec::with_capacity(password.len() + 1);
                        clear.extend_from_slice(password.as_bytes());
                        clear.push(0);
                        write_packet(stream, seq, &clear).await?;
                    }
                    Some(4) => {
                        return Err(BackendError::Protocol(
                            "backend asks caching_sha2_password full authentication, which \
                             needs TLS to the backend: run the proxy with --backend-tls (RSA \
                             key exchange is not supported), or use mysql_native_password for \
                             the proxy's user"
                                .into(),
                        ))
                    }
                    other => {
                        return Err(BackendError::Protocol(format!(
                            "unexpected caching_sha2_password data {other:?}"
                        )))
                    }
                }
            }
            BackendAnswer::MoreData(_) => {
                return Err(BackendError::Protocol(
                    "unexpected login packet 0x01".into(),
                ))
            }
            BackendAnswer::Unexpected(first) => {
                return Err(BackendError::Protocol(format!(
                    "unexpected login packet 0x{first:02x}"
                )))
            }
        }
    }
}

fn refused(p: &[u8]) -> BackendError {
    let e = parse_err(p);
    BackendError::Refused {
        code: e.code,
        message: e.message,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const OK: &[u8] = &[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00];

    /// Runs `authenticate` against a scripted server: `script` is what the server sends
    /// (sequence numbers from 2), `expect` what it must then receive, in turn.
    async fn run(
        plugin: &str,
        tls: bool,
        script: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<Vec<u8>, BackendError> {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let fake = tokio::spawn(async move {
            let mut seq = 2u8;
            for (send, expect) in script {
                write_packet(&mut server, seq, &send).await.unwrap();
                if let Some(expect) = expect {
                    let got = read_packet(&mut server, Decoder::new(1 << 20))
                        .await
                        .unwrap();
                    assert_eq!(got.seq, seq + 1, "client sequence");
                    assert_eq!(&got.payload[..], &expect[..], "client packet");
                    seq += 2;
                } else {
                    seq += 1;
                }
            }
        });
        let r = authenticate(&mut client, plugin.as_bytes().to_vec(), "s3cret", tls).await;
        drop(client);
        fake.await.unwrap();
        r
    }

    #[tokio::test]
    async fn caching_sha2_full_auth_over_tls_sends_the_password_in_clear() {
        let ok = run(
            "caching_sha2_password",
            true,
            vec![
                (vec![0x01, 0x04], Some(b"s3cret\0".to_vec())),
                (OK.to_vec(), None),
            ],
        )
        .await
        .unwrap();
        assert_eq!(ok, OK);
    }

    #[tokio::test]
    async fn caching_sha2_full_auth_without_tls_names_backend_tls() {
        let err = run(
            "caching_sha2_password",
            false,
            vec![(vec![0x01, 0x04], None)],
        )
        .await
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("--backend-tls"), "{msg}");
        assert!(msg.contains("full authentication"), "{msg}");
    }

    #[tokio::test]
    async fn caching_sha2_fast_auth_then_ok() {
        let ok = run(
            "caching_sha2_password",
            false,
            vec![(vec![0x01, 0x03], None), (OK.to_vec(), None)],
        )
        .await
        .unwrap();
        assert_eq!(ok, OK);
    }

    #[tokio::test]
    async fn switch_to_caching_sha2_then_full_auth_over_tls() {
        let nonce = [7u8; 20];
        let mut switch = vec![0xfe];
        switch.extend_from_slice(b"caching_sha2_password\0");
        switch.extend_from_slice(&nonce);
        switch.push(0);
        let scramble = client_response(b"caching_sha2_password", &nonce, "s3cret").unwrap();
        let ok = run(
            "mysql_native_password",
            true,
            vec![
                (switch, Some(scramble)),
                (vec![0x01, 0x04], Some(b"s3cret\0".to_vec())),
                (OK.to_vec(), None),
            ],
        )
        .await
        .unwrap();
        assert_eq!(ok, OK);
    }

    #[tokio::test]
    async fn refusal_after_full_auth_is_reported() {
        let mut err = vec![0xff, 0x15, 0x04, b'#'];
        err.extend_from_slice(b"28000Access denied");
        let e = run(
            "caching_sha2_password",
            true,
            vec![(vec![0x01, 0x04], Some(b"s3cret\0".to_vec())), (err, None)],
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, BackendError::Refused { code: 1045, message } if message == "Access denied"),
            "{e}"
        );
    }
}
