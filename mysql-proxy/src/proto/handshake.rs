//! The login exchange, on mysql_common's packet types: the proxy's greeting to clients,
//! the client's SSLRequest and handshake response, the auth switch and "more data"
//! packets, and the backend's answers to the proxy's own login.

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthMoreData, AuthSwitchRequest, HandshakePacket, HandshakeResponse};
use mysql_common::proto::MySerialize;

use crate::proto::reply::{parse_err, ServerErr};

/// The collation of the greeting: utf8mb4_general_ci (the client's own choice goes to the
/// backend).
pub const GREETING_COLLATION: u8 = 45;

/// The `AuthMoreData` payload of caching_sha2_password's "fast auth succeeded".
pub const FAST_AUTH_SUCCESS: [u8; 2] = [0x01, 0x03];

/// The `AuthMoreData` payload of caching_sha2_password's "perform full authentication".
pub const PERFORM_FULL_AUTH: [u8; 2] = [0x01, 0x04];

/// A client's answer to [`PERFORM_FULL_AUTH`] over plain TCP asking for the server's RSA
/// public key.
pub const REQUEST_PUBLIC_KEY: [u8; 1] = [0x02];

/// An `AuthMoreData` packet carrying `data` (the RSA public key in PEM).
pub fn auth_more_data(data: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + data.len());
    p.push(0x01);
    p.extend_from_slice(data);
    p
}

/// A login packet that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("unparsable {what}: {message}")]
    Unparsable { what: &'static str, message: String },
}

impl HandshakeError {
    fn new(what: &'static str, e: impl std::fmt::Display) -> Self {
        HandshakeError::Unparsable {
            what,
            message: e.to_string(),
        }
    }
}

/// The proxy's greeting (protocol 10) with connection id `conn_id`, naming `plugin` and
/// carrying the 20-byte `scramble`. With `mariadb` capabilities it greets as MariaDB
/// does: those in the last 4 filler bytes, and `CLIENT_LONG_PASSWORD` (MariaDB's
/// `CLIENT_MYSQL`) clear, which tells a client to read them.
pub fn greeting(
    conn_id: u32,
    server_version: &str,
    scramble: &[u8; 20],
    capabilities: CapabilityFlags,
    mariadb: MariadbCapabilities,
    plugin: &str,
) -> Vec<u8> {
    let capabilities = if mariadb.is_empty() {
        capabilities
    } else {
        capabilities - CapabilityFlags::CLIENT_LONG_PASSWORD
    };
    let (s1, s2) = scramble.split_at(8);
    let mut part1 = [0u8; 8];
    part1.copy_from_slice(s1);
    // mysql_common writes scramble part 2 as given: 12 bytes plus the NUL servers send.
    let mut part2 = Vec::with_capacity(13);
    part2.extend_from_slice(s2);
    part2.push(0);
    let hs = HandshakePacket::new(
        10,
        server_version.as_bytes(),
        conn_id,
        part1,
        Some(part2),
        capabilities,
        GREETING_COLLATION,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(plugin.as_bytes()),
    )
    .with_mariadb_ext_capabilities(mariadb);
    let mut out = Vec::with_capacity(96);
    hs.serialize(&mut out);
    out
}

/// Whether a client's first answer is an SSLRequest (32 bytes with `CLIENT_SSL`): the TLS
/// handshake follows, then the real handshake response.
pub fn is_ssl_request(payload: &[u8]) -> bool {
    match payload {
        [a, b, c, d, ..] if payload.len() == 32 => {
            u32::from_le_bytes([*a, *b, *c, *d]) & CapabilityFlags::CLIENT_SSL.bits() != 0
        }
        _ => false,
    }
}

/// A client's handshake response.
///
/// # Errors
/// When it does not parse.
pub fn parse_response(payload: &[u8]) -> Result<HandshakeResponse<'_>, HandshakeError> {
    ParseBuf(payload)
        .parse(())
        .map_err(|e| HandshakeError::new("handshake response", e))
}

/// The client's max packet size (bytes 4..8 of its handshake response; 16 MB if short).
pub fn max_packet_size(payload: &[u8]) -> u32 {
    match payload.get(4..8) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 16 * 1024 * 1024,
    }
}

/// An AuthSwitchRequest to `plugin` with a fresh challenge.
pub fn auth_switch(plugin: &str, scramble: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(scramble.len() + 1);
    data.extend_from_slice(scramble);
    data.push(0);
    let mut out = Vec::with_capacity(plugin.len() + data.len() + 2);
    AuthSwitchRequest::new(plugin.as_bytes(), data).serialize(&mut out);
    out
}

/// A backend's greeting.
///
/// # Errors
/// When it does not parse (an ERR greeting is [`BackendAnswer::Err`] through
/// [`parse_backend_answer`], checked first by the caller).
pub fn parse_greeting(payload: &[u8]) -> Result<HandshakePacket<'_>, HandshakeError> {
    // mysql_common computes `auth_plugin_data_len as i8 - 8`, which overflows (a panic
    // in debug builds) for lengths of 0x80 and more; real servers send 21.
    let version_end = payload
        .get(1..)
        .and_then(|rest| rest.iter().position(|&b| b == 0))
        .map(|p| p + 1);
    if let Some(&len) = version_end.and_then(|n| payload.get(n + 21)) {
        if len >= 0x80 {
            return Err(HandshakeError::new(
                "greeting",
                format!("auth plugin data length {len}"),
            ));
        }
    }
    ParseBuf(payload)
        .parse(())
        .map_err(|e| HandshakeError::new("greeting", e))
}

/// What a backend answers during the proxy's login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAnswer<'a> {
    /// Logged in; the payload is the OK packet.
    Ok,
    /// Refused.
    Err(ServerErr),
    /// AuthSwitchRequest: answer `plugin`'s challenge `nonce` (trailing NUL removed).
    Switch { plugin: &'a [u8], nonce: &'a [u8] },
    /// AuthMoreData (caching_sha2_password: 3 fast auth succeeded, 4 full auth).
    MoreData(&'a [u8]),
    /// Anything else: the first byte.
    Unexpected(u8),
}

/// Classifies a backend's login packet.
///
/// # Errors
/// A switch request or more-data packet that does not parse.
pub fn parse_backend_answer(payload: &[u8]) -> Result<BackendAnswer<'_>, HandshakeError> {
    Ok(match payload.first() {
        Some(0x00) => BackendAnswer::Ok,
        Some(0xff) => BackendAnswer::Err(parse_err(payload)),
        Some(0xfe) => {
            let _parsed: AuthSwitchRequest<'_> = ParseBuf(payload)
                .parse(())
                .map_err(|e| HandshakeError::new("auth switch request", e))?;
            // It parsed, so a NUL ends the plugin name; the nonce may end with one too.
            let rest = payload.get(1..).unwrap_or_default();
            let nul = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            let plugin = rest.get(..nul).unwrap_or_default();
            let nonce = rest.get(nul + 1..).unwrap_or_default();
            let nonce = nonce.strip_suffix(&[0]).unwrap_or(nonce);
            BackendAnswer::Switch { plugin, nonce }
        }
        Some(0x01) => {
            let _parsed: AuthMoreData<'_> = ParseBuf(payload)
                .parse(())
                .map_err(|e| HandshakeError::new("auth more data", e))?;
            BackendAnswer::MoreData(payload.get(1..).unwrap_or_default())
        }
        other => BackendAnswer::Unexpected(other.copied().unwrap_or_default()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn greeting_parses_back() {
        let scramble = *b"abcdefghijklmnopqrst";
        let g = greeting(
            42,
            "8.0.0-ocean",
            &scramble,
            CapabilityFlags::CLIENT_PROTOCOL_41
                | CapabilityFlags::CLIENT_SECURE_CONNECTION
                | CapabilityFlags::CLIENT_PLUGIN_AUTH,
            MariadbCapabilities::empty(),
            "mysql_native_password",
        );
        let hs = parse_greeting(&g).unwrap();
        assert_eq!(hs.connection_id(), 42);
        assert_eq!(hs.nonce(), scramble.to_vec());
        // A greeting whose auth data length would overflow mysql_common's arithmetic.
        let mut bad = g.clone();
        let len_at = g.iter().position(|&b| b == 0).unwrap() + 21;
        bad[len_at] = 0x80;
        assert!(parse_greeting(&bad).is_err());
        assert_eq!(
            hs.auth_plugin_name_ref(),
            Some(&b"mysql_native_password"[..])
        );
    }

    /// Offering MariaDB's metadata cache: the flag in the filler, and the "MySQL" bit
    /// clear so that a MariaDB client reads it.
    #[test]
    fn a_greeting_with_mariadb_capabilities_says_it_is_not_mysql() {
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_LONG_PASSWORD
            | CapabilityFlags::CLIENT_PLUGIN_AUTH;
        let scramble = *b"abcdefghijklmnopqrst";
        let plain = parse_greeting(&greeting(
            1,
            "v",
            &scramble,
            caps,
            MariadbCapabilities::empty(),
            "mysql_native_password",
        ))
        .unwrap()
        .into_owned();
        assert!(plain
            .capabilities()
            .contains(CapabilityFlags::CLIENT_LONG_PASSWORD));
        assert!(plain.mariadb_ext_capabilities().is_empty());
        let cache = MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA;
        let g = greeting(1, "v", &scramble, caps, cache, "mysql_native_password");
        let hs = parse_greeting(&g).unwrap();
        assert!(!hs
            .capabilities()
            .contains(CapabilityFlags::CLIENT_LONG_PASSWORD));
        assert_eq!(hs.mariadb_ext_capabilities(), cache);
    }

    #[test]
    fn switch_requests_round_trip() {
        let p = auth_switch("caching_sha2_password", &[7u8; 20]);
        assert_eq!(p[0], 0xfe);
        match parse_backend_answer(&p).unwrap() {
            BackendAnswer::Switch { plugin, nonce } => {
                assert_eq!(plugin, b"caching_sha2_password");
                assert_eq!(nonce, [7u8; 20]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_backend_answer(&FAST_AUTH_SUCCESS).unwrap(),
            BackendAnswer::MoreData(&[3])
        );
        assert_eq!(parse_backend_answer(&[0, 0, 0]).unwrap(), BackendAnswer::Ok);
        assert_eq!(
            parse_backend_answer(&[0x42]).unwrap(),
            BackendAnswer::Unexpected(0x42)
        );
        assert_eq!(
            parse_backend_answer(&[]).unwrap(),
            BackendAnswer::Unexpected(0)
        );
    }

    #[test]
    fn ssl_requests_and_max_packet() {
        let mut p = vec![0u8; 32];
        p[..4].copy_from_slice(&CapabilityFlags::CLIENT_SSL.bits().to_le_bytes());
        assert!(is_ssl_request(&p));
        assert!(!is_ssl_request(&p[..31]));
        assert!(!is_ssl_request(&[0u8; 32]));
        p[4..8].copy_from_slice(&1234u32.to_le_bytes());
        assert_eq!(max_packet_size(&p), 1234);
        assert_eq!(max_packet_size(&[1, 2]), 16 * 1024 * 1024);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 80) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
            for first in [0x00, 0x01, 0xfe, 0xff, 0x0a] {
                if let Some(b) = bytes.first_mut() {
                    *b = first;
                }
                let _unchecked = parse_backend_answer(&bytes);
                let _unchecked = parse_response(&bytes);
                let _unchecked = parse_greeting(&bytes);
                let _ = is_ssl_request(&bytes);
            }
        }
    }
}
