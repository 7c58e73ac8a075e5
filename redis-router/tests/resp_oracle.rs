//! Our RESP reply decoder against the redis-protocol crate (issue 15). The router keeps its
//! own decoder on the hot path (examples/resp_decode_bench.rs shows by how much it wins);
//! this test holds it to the crate's grammar: for random RESP2/RESP3 frames (blobs, errors,
//! booleans, doubles, big numbers, verbatim strings, arrays, maps, sets, pushes and
//! attributes) written by redis-protocol's encoder, our check measures exactly the frame,
//! every strict prefix is "need more bytes", our parse builds the value the frame holds,
//! and redis-protocol's own decoder agrees on the length.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use ocean_redis_router::proto::{decode_reply, parse, ReplyLimits, ReplyScanner, Value};
use proptest::prelude::*;
use redis_protocol::resp3::types::{OwnedFrame, Resp3Frame, VerbatimStringFormat};

/// Bytes without CR or LF, for simple strings and errors.
fn line_text() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
        0..24,
    )
}

fn blob() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..64)
}

/// A map key: a blob string (hashable the same way on both sides).
fn key() -> impl Strategy<Value = OwnedFrame> {
    blob().prop_map(|data| OwnedFrame::BlobString {
        data,
        attributes: None,
    })
}

fn scalar() -> impl Strategy<Value = OwnedFrame> {
    prop_oneof![
        blob().prop_map(|data| OwnedFrame::BlobString {
            data,
            attributes: None
        }),
        blob().prop_map(|data| OwnedFrame::BlobError {
            data,
            attributes: None
        }),
        line_text().prop_map(|data| OwnedFrame::SimpleString {
            data,
            attributes: None
        }),
        "[a-zA-Z0-9 ]{0,20}".prop_map(|data| OwnedFrame::SimpleError {
            data,
            attributes: None
        }),
        any::<bool>().prop_map(|data| OwnedFrame::Boolean {
            data,
            attributes: None
        }),
        Just(OwnedFrame::Null),
        any::<i64>().prop_map(|data| OwnedFrame::Number {
            data,
            attributes: None
        }),
        (-1.0e12f64..1.0e12).prop_map(|data| OwnedFrame::Double {
            data,
            attributes: None
        }),
        "-?[1-9][0-9]{0,40}".prop_map(|s| OwnedFrame::BigNumber {
            data: s.into_bytes(),
            attributes: None,
        }),
        blob().prop_map(|data| OwnedFrame::VerbatimString {
            data,
            format: VerbatimStringFormat::Text,
            attributes: None,
        }),
    ]
}

fn frame() -> impl Strategy<Value = OwnedFrame> {
    scalar().prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(|data| OwnedFrame::Array {
                data,
                attributes: None
            }),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(|data| OwnedFrame::Push {
                data,
                attributes: None
            }),
            proptest::collection::vec((key(), inner), 0..4).prop_map(|pairs| OwnedFrame::Map {
                data: pairs.into_iter().collect::<HashMap<_, _>>(),
                attributes: None,
            }),
            proptest::collection::vec(key(), 0..5).prop_map(|keys| OwnedFrame::Set {
                data: keys.into_iter().collect::<HashSet<_>>(),
                attributes: None,
            }),
        ]
    })
}

/// A frame, maybe annotated with an attribute map (which our parse skips).
fn annotated() -> impl Strategy<Value = OwnedFrame> {
    (
        frame(),
        proptest::option::of(proptest::collection::vec((key(), scalar()), 1..3)),
    )
        .prop_map(|(mut f, attrs)| {
            if let Some(attrs) = attrs {
                let attrs: HashMap<_, _> = attrs.into_iter().collect();
                match &mut f {
                    OwnedFrame::BlobString { attributes, .. }
                    | OwnedFrame::Array { attributes, .. }
                    | OwnedFrame::Number { attributes, .. } => *attributes = Some(attrs),
                    _ => {}
                }
            }
            f
        })
}

fn encode(f: &OwnedFrame) -> Vec<u8> {
    let mut buf = vec![0u8; f.encode_len(false)];
    let n = redis_protocol::resp3::encode::complete::encode(&mut buf, f, false).unwrap();
    buf.truncate(n);
    buf
}

/// The [`Value`] our parse should build for `f`: what `Value`'s documentation says each
/// RESP3 type maps onto. Maps and sets are walked in the order the encoder wrote them
/// (the same instance, iterated the same way).
fn expected(f: &OwnedFrame) -> Value {
    let b = |d: &[u8]| Value::Bulk(Some(Bytes::copy_from_slice(d)));
    match f {
        OwnedFrame::BlobString { data, .. } | OwnedFrame::BigNumber { data, .. } => b(data),
        OwnedFrame::VerbatimString { data, .. } => b(data),
        OwnedFrame::BlobError { data, .. } => Value::Error(Bytes::copy_from_slice(data)),
        OwnedFrame::SimpleError { data, .. } => {
            Value::Error(Bytes::copy_from_slice(data.as_bytes()))
        }
        OwnedFrame::SimpleString { data, .. } => Value::Simple(Bytes::copy_from_slice(data)),
        OwnedFrame::Boolean { data, .. } => Value::Int(i64::from(*data)),
        OwnedFrame::Number { data, .. } => Value::Int(*data),
        // Compared by value below: the text is the encoder's choice.
        OwnedFrame::Double { .. } => Value::Bulk(None),
        OwnedFrame::Null => Value::Bulk(None),
        OwnedFrame::Array { data, .. } | OwnedFrame::Push { data, .. } => {
            Value::Array(Some(data.iter().map(expected).collect()))
        }
        OwnedFrame::Set { data, .. } => Value::Array(Some(data.iter().map(expected).collect())),
        OwnedFrame::Map { data, .. } => Value::Array(Some(
            data.iter()
                .flat_map(|(k, v)| [expected(k), expected(v)])
                .collect(),
        )),
        other => panic!("not generated: {other:?}"),
    }
}

/// `ours` equals `expected(f)`, doubles compared as numbers.
fn check_value(f: &OwnedFrame, ours: &Value) -> Result<(), TestCaseError> {
    match (f, ours) {
        (OwnedFrame::Double { data, .. }, Value::Bulk(Some(text))) => {
            let parsed: f64 = std::str::from_utf8(text).unwrap().parse().unwrap();
            prop_assert_eq!(parsed, *data);
        }
        (
            OwnedFrame::Array { data, .. } | OwnedFrame::Push { data, .. },
            Value::Array(Some(items)),
        ) => {
            prop_assert_eq!(data.len(), items.len());
            for (f, v) in data.iter().zip(items) {
                check_value(f, v)?;
            }
        }
        (OwnedFrame::Map { data, .. }, Value::Array(Some(items))) => {
            prop_assert_eq!(data.len() * 2, items.len());
            for ((k, v), pair) in data.iter().zip(items.chunks(2)) {
                check_value(k, &pair[0])?;
                check_value(v, &pair[1])?;
            }
        }
        _ => prop_assert_eq!(&expected(f), ours),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn our_decoder_measures_and_parses_what_redis_protocol_writes(f in annotated()) {
        let wire = encode(&f);
        let limits = ReplyLimits::default();
        // The crate's decoder agrees on the frame's length.
        let (_, theirs) = redis_protocol::resp3::decode::complete::decode(&wire)
            .unwrap()
            .unwrap();
        prop_assert_eq!(theirs, wire.len());
        // Ours measures exactly the frame, also with the next reply behind it.
        prop_assert_eq!(decode_reply(&wire, &limits), Ok(Some(wire.len())));
        let mut stream = wire.clone();
        stream.extend_from_slice(b"+NEXT\r\n");
        prop_assert_eq!(decode_reply(&stream, &limits), Ok(Some(wire.len())));
        // Strict prefixes need more bytes, from scratch and resumed (every prefix of a
        // short frame, about 64 spread over a long one).
        let mut scanner = ReplyScanner::new();
        for cut in (0..wire.len()).step_by((wire.len() / 64).max(1)) {
            prop_assert_eq!(decode_reply(&wire[..cut], &limits), Ok(None), "cut {}", cut);
            prop_assert_eq!(scanner.check(&wire[..cut], &limits), Ok(None), "resumed cut {}", cut);
        }
        prop_assert_eq!(scanner.check(&wire, &limits), Ok(Some(wire.len())));
        // And the value is the frame's.
        let ours = parse(&Bytes::from(wire));
        prop_assert!(ours.is_some());
        check_value(&f, ours.as_ref().unwrap())?;
    }
}

/// RESP2's own forms the RESP3 encoder does not write: the null bulk and null array.
#[test]
fn resp2_nulls_agree() {
    for (wire, value) in [
        (&b"$-1\r\n"[..], Value::Bulk(None)),
        (b"*-1\r\n", Value::Array(None)),
        (
            b"*2\r\n$-1\r\n:7\r\n",
            Value::Array(Some(vec![Value::Bulk(None), Value::Int(7)])),
        ),
    ] {
        let (_, len) = redis_protocol::resp2::decode::decode(wire)
            .unwrap()
            .unwrap();
        assert_eq!(len, wire.len());
        assert_eq!(
            decode_reply(wire, &ReplyLimits::default()),
            Ok(Some(wire.len()))
        );
        assert_eq!(parse(&Bytes::copy_from_slice(wire)), Some(value));
    }
}
