//! Bounded property tests of the MySQL codec (issue 18; the fuzz target is `mysql_packet`
//! in fuzz/): the packet decoder, the handshake parsers and the command scanner never panic
//! on any bytes; packets, greetings, handshake responses, auth switches and ERR packets we
//! write read back to what we wrote; and a stream split at any point decodes and scans as
//! the whole does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use mysql_common::packets::{AuthPlugin, HandshakeResponse};
use mysql_common::proto::MySerialize;
use ocean_mysql_proxy::proto::command::{Intercept, Scanner, COM_INIT_DB, INTERCEPT_LIMIT};
use ocean_mysql_proxy::proto::frame::{encode, Decoder, Packet, LOGIN_PACKET_LIMIT, MAX_PAYLOAD};
use ocean_mysql_proxy::proto::handshake::{
    auth_switch, greeting, is_ssl_request, max_packet_size, parse_backend_answer, parse_greeting,
    parse_response, BackendAnswer,
};
use ocean_mysql_proxy::proto::reply::{err_payload, parse_err};
use proptest::prelude::*;

/// Cases per property: enough to find the easy bugs on every CI run, few enough to be fast.
const CASES: u32 = 256;

fn packets() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    prop::collection::vec(
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..200)),
        1..6,
    )
}

fn wire(packets: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (seq, p) in packets {
        encode(*seq, p, &mut out);
    }
    out
}

/// Every packet off `buf`; whether it stopped on an error. `needed` is checked on the way.
fn decode_all(d: &Decoder, buf: &mut BytesMut) -> (Vec<Packet>, bool) {
    let mut out = Vec::new();
    loop {
        let needed = d.needed(buf);
        match d.decode(buf) {
            Ok(Some(p)) => {
                assert_eq!(needed, 0, "a whole packet was there");
                assert!(p.payload.len() <= d.limit());
                out.push(p);
            }
            Ok(None) => {
                assert!(needed > 0, "incomplete but nothing needed");
                return (out, false);
            }
            Err(_) => return (out, true),
        }
    }
}

/// Bytes worth reading as packets or payloads: anything after a telling first byte, or a
/// valid stream with one byte changed and cut somewhere.
fn packet_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            prop::sample::select(&[0x00u8, 0x01, 0x02, 0x03, 0x0a, 0x11, 0xfe, 0xff][..]),
            prop::collection::vec(any::<u8>(), 0..160)
        )
            .prop_map(|(first, rest)| [vec![first], rest].concat()),
        (
            packets(),
            any::<prop::sample::Index>(),
            any::<u8>(),
            any::<prop::sample::Index>()
        )
            .prop_map(|(p, at, byte, cut)| {
                let mut w = wire(&p);
                let i = at.index(w.len());
                w[i] = byte;
                w.truncate(cut.index(w.len() + 1));
                w
            }),
    ]
}

/// A command stream: plain commands (COM_QUERY, COM_PING, ...) and COM_INIT_DB packets the
/// proxy intercepts; (stream, bytes to forward, intercepted payloads).
fn commands() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, Vec<Vec<u8>>)> {
    prop::collection::vec(
        (
            any::<bool>(),
            prop::sample::select(&[0x03u8, 0x0e, 0x16, 0x17, 0x19][..]),
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..100),
        ),
        1..8,
    )
    .prop_map(|cmds| {
        let (mut stream, mut forwarded, mut intercepted) = (Vec::new(), Vec::new(), Vec::new());
        for (init_db, cmd, seq, rest) in cmds {
            let payload = [vec![if init_db { COM_INIT_DB } else { cmd }], rest].concat();
            let mut one = Vec::new();
            encode(seq, &payload, &mut one);
            stream.extend_from_slice(&one);
            if init_db {
                intercepted.push(payload);
            } else {
                forwarded.extend_from_slice(&one);
            }
        }
        (stream, forwarded, intercepted)
    })
}

/// Scans `pieces` as they arrive, as the connection does: forwards what it may, handles an
/// intercept and drops its bytes. Returns the forwarded bytes, the intercepts, and whether
/// it stopped on an error.
fn scan(pieces: &[&[u8]]) -> (Vec<u8>, Vec<Intercept>, bool) {
    let mut scanner = Scanner::default();
    let mut buf: Vec<u8> = Vec::new();
    let (mut forwarded, mut intercepts) = (Vec::new(), Vec::new());
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match scanner.scan(&buf) {
                Ok((n, icpt)) => {
                    assert!(n <= buf.len(), "forwarded past the buffer");
                    forwarded.extend(buf.drain(..n));
                    match icpt {
                        Some(i) => {
                            assert!(i.total <= buf.len(), "intercept past the buffer");
                            assert!(i.payload.len() <= INTERCEPT_LIMIT);
                            let _ = i.command();
                            buf.drain(..i.total);
                            intercepts.push(i);
                        }
                        None => break,
                    }
                }
                Err(_) => return (forwarded, intercepts, true),
            }
        }
    }
    (forwarded, intercepts, false)
}

/// Bytes without NUL, as names and scrambles are on the wire.
fn no_nul(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(1u8..=255, len)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// Any bytes: the packet decoder (both limits), every handshake parser on every payload
    /// and on the raw bytes, and the command scanner never panic; a decoded packet
    /// re-encodes to bytes that decode back to it.
    #[test]
    fn parsers_never_panic(data in packet_bytes(), step in 1usize..12) {
        for limit in [LOGIN_PACKET_LIMIT, MAX_PAYLOAD * 2] {
            let d = Decoder::new(limit);
            let (packets, _) = decode_all(&d, &mut BytesMut::from(&data[..]));
            for p in packets {
                let _ = (parse_response(&p.payload), parse_backend_answer(&p.payload));
                let _ = (parse_greeting(&p.payload), is_ssl_request(&p.payload));
                let _ = max_packet_size(&p.payload);
                let mut enc = Vec::new();
                let last = encode(p.seq, &p.payload, &mut enc);
                let back = d.decode(&mut BytesMut::from(&enc[..])).unwrap().unwrap();
                prop_assert_eq!((back.seq, back.last_seq, &back.payload), (p.seq, last, &p.payload));
            }
        }
        let _ = (parse_response(&data), parse_backend_answer(&data), parse_greeting(&data));
        let _ = (is_ssl_request(&data), max_packet_size(&data), parse_err(&data));
        let _ = scan(&data.chunks(step).collect::<Vec<_>>());
    }

    /// Packets encoded then decoded are the same packets, each consuming its own bytes; the
    /// stream split at any point decodes to the same packets.
    #[test]
    fn packets_round_trip_and_split_anywhere(p in packets(), cut in any::<prop::sample::Index>()) {
        let w = wire(&p);
        let d = Decoder::new(LOGIN_PACKET_LIMIT);
        let (got, failed) = decode_all(&d, &mut BytesMut::from(&w[..]));
        prop_assert!(!failed);
        let got: Vec<(u8, Vec<u8>)> = got.iter().map(|g| (g.seq, g.payload.to_vec())).collect();
        prop_assert_eq!(&got, &p);

        let cut = cut.index(w.len() + 1);
        let mut buf = BytesMut::from(&w[..cut]);
        let (mut split, failed) = decode_all(&d, &mut buf);
        prop_assert!(!failed);
        buf.extend_from_slice(&w[cut..]);
        split.extend(decode_all(&d, &mut buf).0);
        prop_assert!(buf.is_empty());
        let split: Vec<(u8, Vec<u8>)> = split.iter().map(|g| (g.seq, g.payload.to_vec())).collect();
        prop_assert_eq!(&split, &p);
    }

    /// The scanner forwards every plain command and intercepts every COM_INIT_DB, however
    /// the stream is split.
    #[test]
    fn scanner_splits_anywhere((stream, forwarded, intercepted) in commands(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(stream.len() + 1);
        for pieces in [vec![&stream[..]], vec![&stream[..cut], &stream[cut..]]] {
            let (fwd, icpts, failed) = scan(&pieces);
            prop_assert!(!failed);
            prop_assert_eq!(&fwd, &forwarded);
            let payloads: Vec<Vec<u8>> = icpts.into_iter().map(|i| i.payload).collect();
            prop_assert_eq!(&payloads, &intercepted);
        }
    }

    /// The proxy's greeting parses back (connection id, version, scramble, plugin).
    #[test]
    fn greetings_round_trip(
        conn_id in any::<u32>(),
        version in "[0-9]\\.[0-9]\\.[0-9]{1,2}-[a-z]{1,10}",
        scramble in no_nul(20..21),
        plugin in prop::sample::select(&["mysql_native_password", "caching_sha2_password"][..]),
        mariadb in any::<bool>(),
    ) {
        let scramble: [u8; 20] = scramble.try_into().unwrap();
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH;
        let mariadb = if mariadb {
            MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA
        } else {
            MariadbCapabilities::empty()
        };
        let g = greeting(conn_id, &version, &scramble, caps, mariadb, plugin);
        let hs = parse_greeting(&g).unwrap();
        prop_assert_eq!(hs.mariadb_ext_capabilities(), mariadb);
        prop_assert_eq!(hs.connection_id(), conn_id);
        prop_assert_eq!(hs.server_version_ref(), version.as_bytes());
        prop_assert_eq!(hs.nonce(), scramble.to_vec());
        prop_assert_eq!(hs.auth_plugin_name_ref(), Some(plugin.as_bytes()));
        prop_assert!(hs.capabilities().contains(caps));
    }

    /// A client's handshake response (as mysql_common writes it) parses back: user, schema,
    /// auth data, plugin and max packet size.
    #[test]
    fn handshake_responses_round_trip(
        user in no_nul(1..40),
        db in proptest::option::of(no_nul(1..40)),
        auth in prop::collection::vec(any::<u8>(), 0..=32),
        plugin in prop::sample::select(&["mysql_native_password", "caching_sha2_password"][..]),
        lenenc in any::<bool>(),
        max_packet in any::<u32>(),
    ) {
        let mut caps = CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_SECURE_CONNECTION;
        if lenenc {
            caps |= CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
        }
        let resp = HandshakeResponse::new(
            Some(&auth[..]),
            (8, 0, 0),
            Some(&user[..]),
            db.as_deref(),
            Some(AuthPlugin::from_bytes(plugin.as_bytes())),
            caps,
            None,
            max_packet,
        );
        let mut payload = Vec::new();
        resp.serialize(&mut payload);
        let back = parse_response(&payload).unwrap();
        prop_assert_eq!(back.user(), &user[..]);
        prop_assert_eq!(back.db_name(), db.as_deref());
        prop_assert_eq!(back.scramble_buf(), &auth[..]);
        prop_assert_eq!(back.auth_plugin().map(|p| p.as_bytes().to_vec()), Some(plugin.as_bytes().to_vec()));
        prop_assert_eq!(max_packet_size(&payload), max_packet);
        prop_assert!(!is_ssl_request(&payload));
    }

    /// An AuthSwitchRequest and an ERR packet we write are classified back to their parts.
    #[test]
    fn backend_answers_round_trip(
        plugin in "[a-z_]{1,30}",
        nonce in no_nul(0..40),
        code in any::<u16>(),
        state in "[0-9A-Z]{5}",
        message in "[ -~]{0,80}",
    ) {
        match parse_backend_answer(&auth_switch(&plugin, &nonce)).unwrap() {
            BackendAnswer::Switch { plugin: p, nonce: n } => {
                prop_assert_eq!(p, plugin.as_bytes());
                prop_assert_eq!(n, &nonce[..]);
            }
            other => prop_assert!(false, "{:?}", other),
        }
        let state: [u8; 5] = state.as_bytes().try_into().unwrap();
        let err = err_payload(code, &state, &message);
        let parsed = parse_err(&err);
        prop_assert_eq!((parsed.code, parsed.message.as_str()), (code, message.as_str()));
        prop_assert_eq!(parse_backend_answer(&err).unwrap(), BackendAnswer::Err(parsed));
    }
}

proptest! {
    // Each case allocates a 16 MiB payload: a handful of cases.
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    /// Payloads around the 16 MiB packet size are split into continuation packets (an
    /// empty one after an exact multiple) and decode back whole, sequence ids advancing.
    #[test]
    fn continuations_round_trip(len in (MAX_PAYLOAD - 1)..=(MAX_PAYLOAD + 2), seq in any::<u8>(), fill in any::<u8>()) {
        let payload = vec![fill; len];
        let mut w = Vec::new();
        let last = encode(seq, &payload, &mut w);
        prop_assert_eq!(last, seq.wrapping_add(u8::from(len >= MAX_PAYLOAD)));
        let back = Decoder::new(MAX_PAYLOAD * 2).decode(&mut BytesMut::from(&w[..])).unwrap().unwrap();
        prop_assert_eq!((back.seq, back.last_seq), (seq, last));
        prop_assert!(back.payload[..] == payload[..]);
    }
}
