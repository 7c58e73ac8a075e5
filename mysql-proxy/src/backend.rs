//! The proxy as a client of the backend: connect, log in with the table's credentials.

use std::collections::HashMap;
use std::net::SocketAddr;

use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse};
use mysql_common::proto::MySerialize;
use ocean_core::table::mysql::Credentials;
use tokio::net::TcpStream;

use crate::auth::client_response;
use crate::packet::{read_packet, write_packet, LOGIN_PACKET_LIMIT};

/// What the client negotiated with the proxy, passed on so the backend speaks the same
/// protocol variant (EOF packets, session tracking, multi-results ...).
pub struct ClientParams {
    pub capabilities: CapabilityFlags,
    pub collation: u8,
    pub max_packet_size: u32,
    pub attributes: Option<HashMap<String, String>>,
}

/// A logged-in backend connection.
pub struct Backend {
    pub stream: TcpStream,
    /// The backend's final OK payload (its status flags go to the client).
    pub ok: Vec<u8>,
    pub server_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("login i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("backend refused: {code} {message}")]
    Refused { code: u16, message: String },
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Connects to `addr` and logs in as `creds` into `schema`.
pub async fn login(
    addr: SocketAddr,
    creds: &Credentials,
    schema: Option<&str>,
    client: &ClientParams,
    allowed: CapabilityFlags,
) -> Result<Backend, BackendError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(BackendError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (seq, greeting) = read_packet(&mut stream, LOGIN_PACKET_LIMIT).await?;
    if greeting.first() == Some(&0xff) {
        return Err(refused(&greeting));
    }
    let hs: HandshakePacket<'_> = ParseBuf(&greeting)
        .parse(())
        .map_err(|e| BackendError::Protocol(format!("bad greeting: {e}")))?;
    let server_caps = hs.capabilities();
    if !server_caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        return Err(BackendError::Protocol("server lacks protocol 4.1".into()));
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
    );
    let mut payload = Vec::with_capacity(128);
    resp.serialize(&mut payload);
    // HandshakeResponse::new picks the collation from the server version; keep the
    // client's own (byte 8: after capabilities and max packet size).
    if let Some(b) = payload.get_mut(8) {
        *b = client.collation;
    }
    let mut seq = seq.wrapping_add(1);
    write_packet(&mut stream, seq, &payload).await?;

    let mut plugin = plugin;
    loop {
        let (s, p) = read_packet(&mut stream, LOGIN_PACKET_LIMIT).await?;
        seq = s.wrapping_add(1);
        match p.first() {
            Some(0x00) => {
                return Ok(Backend {
                    stream,
                    ok: p,
                    server_version: hs.server_version_str().into_owned(),
                })
            }
            Some(0xff) => return Err(refused(&p)),
            // AuthSwitchRequest: plugin name, NUL, new nonce (maybe NUL-terminated).
            Some(0xfe) => {
                let rest = p.get(1..).unwrap_or_default();
                let nul = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                plugin = rest[..nul].to_vec();
                let mut nonce = rest.get(nul + 1..).unwrap_or_default().to_vec();
                if nonce.last() == Some(&0) {
                    nonce.pop();
                }
                let data =
                    client_response(&plugin, &nonce, &creds.password).ok_or_else(|| {
                        BackendError::Protocol(format!(
                            "backend switched to unsupported auth plugin {}",
                            String::from_utf8_lossy(&plugin)
                        ))
                    })?;
                write_packet(&mut stream, seq, &data).await?;
            }
            // AuthMoreData of caching_sha2_password: 3 = fast auth succeeded (OK follows),
            // 4 = full authentication (needs TLS or the server's RSA key).
            Some(0x01) if plugin == b"caching_sha2_password" => match p.get(1) {
                Some(3) => continue,
                _ => {
                    return Err(BackendError::Protocol(
                        "backend asks caching_sha2_password full authentication, which needs TLS \
                         or RSA to the backend (not supported): log in once with the mysql client \
                         to fill the server's cache, or use mysql_native_password for the proxy's user"
                            .into(),
                    ))
                }
            },
            _ => {
                return Err(BackendError::Protocol(format!(
                    "unexpected login packet 0x{:02x}",
                    p.first().copied().unwrap_or_default()
                )))
            }
        }
    }
}

fn refused(p: &[u8]) -> BackendError {
    let code = match p {
        [_, a, b, ..] => u16::from_le_bytes([*a, *b]),
        _ => 0,
    };
    let msg = p.get(3..).unwrap_or_default();
    let msg = msg
        .strip_prefix(b"#")
        .map(|m| m.get(5..).unwrap_or_default())
        .unwrap_or(msg);
    BackendError::Refused {
        code,
        message: String::from_utf8_lossy(msg).into_owned(),
    }
}
