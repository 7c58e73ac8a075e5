//! Bounded property tests of the RESP codec (issue 18; the fuzz targets are `resp_request`
//! and `resp_reply` in fuzz/): the request decoder and the reply scanner and parser never
//! panic on any bytes; requests and replies we encode decode back to themselves; and bytes
//! split at any point decode as the whole does (the decoders resume).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use ocean_redis_router::proto::encode::{write_array_header, write_bulk, write_integer};
use ocean_redis_router::proto::reply::{decode_reply, parse, ReplyLimits, ReplyScanner, Value};
use ocean_redis_router::proto::request::{
    decode, Decoder, Limits, PreAuthLimits, Request as RespRequest,
};
use proptest::prelude::*;

/// Cases per property: enough to find the easy bugs on every CI run, few enough to be fast.
const CASES: u32 = 256;

/// Requests off `buf` with one `Decoder`, until it needs more or fails; whether it failed.
fn decode_all(decoder: &mut Decoder, buf: &mut BytesMut) -> (Vec<RespRequest>, bool) {
    let mut out = Vec::new();
    loop {
        let before = buf.len();
        match decoder.decode(buf) {
            Ok(Some(r)) => {
                assert!(!r.args.is_empty(), "a request has a name");
                assert!(buf.len() < before, "a request consumes bytes");
                out.push(r);
            }
            Ok(None) => return (out, false),
            Err(e) => {
                assert!(e.reply().starts_with(b"-ERR"), "{e:?}");
                return (out, true);
            }
        }
    }
}

/// A request: 1 to 6 arguments of any bytes.
fn request() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6)
}

fn encode_requests(reqs: &[Vec<Vec<u8>>]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for r in reqs {
        RespRequest::new(r.iter().map(|a| Bytes::copy_from_slice(a))).encode(&mut out);
    }
    out.to_vec()
}

/// Bytes worth decoding: anything, anything after a RESP type byte, or a valid pipeline
/// with one byte changed and cut somewhere.
fn request_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (
            prop::sample::select(&b"*$+-:\r\n "[..]),
            prop::collection::vec(any::<u8>(), 0..128)
        )
            .prop_map(|(first, rest)| [vec![first], rest].concat()),
        (
            prop::collection::vec(request(), 1..4),
            any::<prop::sample::Index>(),
            any::<u8>(),
            any::<prop::sample::Index>()
        )
            .prop_map(|(reqs, at, byte, cut)| {
                let mut wire = encode_requests(&reqs);
                let i = at.index(wire.len());
                wire[i] = byte;
                wire.truncate(cut.index(wire.len() + 1));
                wire
            }),
    ]
}

/// A reply value as RESP2 can carry it (simple strings and errors without CR or LF).
fn value() -> impl Strategy<Value = Value> {
    let line = prop::collection::vec(
        any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
        0..20,
    )
    .prop_map(Bytes::from);
    let leaf = prop_oneof![
        line.clone().prop_map(Value::Simple),
        line.prop_map(Value::Error),
        any::<i64>().prop_map(Value::Int),
        proptest::option::of(prop::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from))
            .prop_map(Value::Bulk),
        Just(Value::Array(None)),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop::collection::vec(inner, 0..5).prop_map(|v| Value::Array(Some(v)))
    })
}

fn encode_value(v: &Value, out: &mut BytesMut) {
    match v {
        Value::Simple(s) => {
            out.extend_from_slice(b"+");
            out.extend_from_slice(s);
            out.extend_from_slice(b"\r\n");
        }
        Value::Error(e) => {
            out.extend_from_slice(b"-");
            out.extend_from_slice(e);
            out.extend_from_slice(b"\r\n");
        }
        Value::Int(n) => write_integer(out, *n),
        Value::Bulk(Some(b)) => write_bulk(out, b),
        Value::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
        Value::Array(None) => out.extend_from_slice(b"*-1\r\n"),
        Value::Array(Some(items)) => {
            write_array_header(out, items.len());
            for i in items {
                encode_value(i, out);
            }
        }
    }
}

/// Bytes worth scanning as a reply: anything after a RESP2/RESP3 type byte, or a valid
/// reply with one byte changed and cut somewhere.
fn reply_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            prop::sample::select(&b"+-:$*%~>_#,(=!|"[..]),
            prop::collection::vec(any::<u8>(), 0..128)
        )
            .prop_map(|(first, rest)| [vec![first], rest].concat()),
        (
            value(),
            any::<prop::sample::Index>(),
            any::<u8>(),
            any::<prop::sample::Index>()
        )
            .prop_map(|(v, at, byte, cut)| {
                let mut out = BytesMut::new();
                encode_value(&v, &mut out);
                let mut wire = out.to_vec();
                let i = at.index(wire.len());
                wire[i] = byte;
                wire.truncate(cut.index(wire.len() + 1));
                wire
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// Any bytes: no panic, with and without the pre-auth limits; the free `decode` agrees
    /// with the `Decoder`; pre-auth requests keep the pre-auth bounds.
    #[test]
    fn request_decoder_never_panics(data in request_bytes()) {
        let (whole, _) = decode_all(&mut Decoder::new(), &mut BytesMut::from(&data[..]));
        let mut buf = BytesMut::from(&data[..]);
        for r in &whole {
            match decode(&mut buf, &Limits::default()) {
                Ok(Some(got)) => prop_assert_eq!(&got, r),
                other => prop_assert!(false, "decode returned {:?} where Decoder read {:?}", other, r),
            }
        }
        let pre = PreAuthLimits::default();
        let mut decoder = Decoder::new();
        decoder.set_pre_auth(Some(pre));
        let (limited, _) = decode_all(&mut decoder, &mut BytesMut::from(&data[..]));
        for r in limited.iter().filter(|r| !r.inline) {
            prop_assert!(r.args.len() <= pre.max_array_len);
            prop_assert!(r.args.iter().all(|a| a.len() <= pre.max_bulk_len));
        }
    }

    /// Requests encoded as RESP arrays decode back to the same arguments, each consuming
    /// exactly its own bytes (kept as `raw`).
    #[test]
    fn requests_round_trip(reqs in prop::collection::vec(request(), 1..5)) {
        let wire = encode_requests(&reqs);
        let mut buf = BytesMut::from(&wire[..]);
        let mut decoder = Decoder::new();
        for r in &reqs {
            let mut one = BytesMut::new();
            RespRequest::new(r.iter().map(|a| Bytes::copy_from_slice(a))).encode(&mut one);
            let got = decoder.decode(&mut buf).unwrap().expect("a whole request");
            prop_assert!(!got.inline);
            prop_assert_eq!(got.args.iter().map(|a| a.to_vec()).collect::<Vec<_>>(), r.clone());
            if let Some(raw) = &got.raw {
                prop_assert_eq!(&raw[..], &one[..]);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoder.decode(&mut buf), Ok(None));
    }

    /// The same bytes split at any point: the resumed `Decoder` reads what it reads from the
    /// whole buffer (valid pipelines and garbage alike, up to the first error).
    #[test]
    fn requests_split_anywhere_equal_whole(
        data in prop_oneof![
            prop::collection::vec(request(), 1..4).prop_map(|r| encode_requests(&r)),
            request_bytes(),
        ],
        cut in any::<prop::sample::Index>(),
    ) {
        let (whole, whole_failed) = decode_all(&mut Decoder::new(), &mut BytesMut::from(&data[..]));
        let cut = cut.index(data.len() + 1);
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::from(&data[..cut]);
        let (mut pieces, failed) = decode_all(&mut decoder, &mut buf);
        if !failed {
            buf.extend_from_slice(&data[cut..]);
            let (rest, failed) = decode_all(&mut decoder, &mut buf);
            pieces.extend(rest);
            prop_assert_eq!(failed, whole_failed);
            prop_assert_eq!(&pieces, &whole);
        } else {
            // An error seen on a prefix is seen on the whole too, after the same requests.
            prop_assert!(whole_failed);
            prop_assert_eq!(&pieces[..], &whole[..pieces.len()]);
        }
    }

    /// Any reply bytes: the scanner and parser never panic; the resumable `ReplyScanner`
    /// fed the bytes split at any point agrees with `decode_reply` on the whole; whatever
    /// `parse` reads, the scanner framed.
    #[test]
    fn reply_scanner_never_panics_and_resumes(data in reply_bytes(), cut in any::<prop::sample::Index>()) {
        let limits = ReplyLimits::default();
        let whole = decode_reply(&data, &limits);
        if let Ok(Some(n)) = whole {
            prop_assert!(n > 0 && n <= data.len());
        }
        let cut = cut.index(data.len() + 1);
        let mut scanner = ReplyScanner::new();
        let mut resumed = scanner.check(&data[..cut], &limits);
        if matches!(resumed, Ok(None)) {
            resumed = scanner.check(&data, &limits);
        }
        match (&whole, &resumed) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "whole buffer {:?}, split at {} {:?}", a, cut, b),
        }
        if parse(&Bytes::copy_from_slice(&data)).is_some() {
            prop_assert!(matches!(whole, Ok(Some(_))));
        }
    }

    /// A value encoded as RESP parses back to itself; the scanner frames exactly its bytes,
    /// finds every strict prefix incomplete, and resumes from any split.
    #[test]
    fn replies_round_trip(v in value(), cut in any::<prop::sample::Index>()) {
        let limits = ReplyLimits::default();
        let mut enc = BytesMut::new();
        encode_value(&v, &mut enc);
        let enc = enc.freeze();
        prop_assert_eq!(parse(&enc), Some(v));
        prop_assert_eq!(decode_reply(&enc, &limits), Ok(Some(enc.len())));
        let cut = cut.index(enc.len());
        prop_assert_eq!(decode_reply(&enc[..cut], &limits), Ok(None));
        let mut scanner = ReplyScanner::new();
        prop_assert_eq!(scanner.check(&enc[..cut], &limits), Ok(None));
        prop_assert_eq!(scanner.check(&enc, &limits), Ok(Some(enc.len())));
    }
}
