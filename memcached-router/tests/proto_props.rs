//! Bounded property tests of the memcached request codec (issue 18; the fuzz target is
//! `memcached_request` in fuzz/): the decoder never panics on any bytes and keeps the stream
//! going after an error as the module docs say; requests we write decode back to their
//! command, keys, data and raw bytes; a retrieval re-encoded for its keys decodes to the same
//! request; and the resumable `Decoder` fed the bytes split at any point reads what the
//! one-shot `decode` reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use ocean_memcached_router::proto::{decode, discard, Decoder, Limits, Request};
use proptest::prelude::*;

/// Cases per property: enough to find the easy bugs on every CI run, few enough to be fast.
const CASES: u32 = 256;

/// Small limits, so that generated inputs reach them.
fn limits() -> Limits {
    Limits {
        max_value_bytes: 64,
        max_swallow_bytes: 1 << 10,
        ..Limits::default()
    }
}

/// A request we write, and what decoding it must give.
#[derive(Debug, Clone)]
struct Spec {
    wire: Vec<u8>,
    word: &'static str,
    keys: Vec<Vec<u8>>,
    data: Option<Vec<u8>>,
    noreply: bool,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    "[a-zA-Z0-9_:.-]{1,24}".prop_map(String::into_bytes)
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..48)
}

fn spec() -> impl Strategy<Value = Spec> {
    let storage = (
        prop::sample::select(&["set", "add", "replace", "append", "prepend", "cas"][..]),
        key(),
        any::<u32>(),
        0u32..100_000,
        data(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(word, k, flags, exp, d, cas, noreply)| {
            let mut line = format!(
                "{word} {} {flags} {exp} {}",
                String::from_utf8_lossy(&k),
                d.len()
            );
            if word == "cas" {
                line.push_str(&format!(" {cas}"));
            }
            if noreply {
                line.push_str(" noreply");
            }
            let wire = [line.as_bytes(), b"\r\n", &d, b"\r\n"].concat();
            Spec {
                wire,
                word,
                keys: vec![k],
                data: Some(d),
                noreply,
            }
        });
    let retrieval = (
        prop::sample::select(&["get", "gets", "gat", "gats"][..]),
        prop::collection::vec(key(), 1..6),
        0u32..100_000,
    )
        .prop_map(|(word, keys, exp)| {
            let mut line = word.to_string();
            if word.starts_with("gat") {
                line.push_str(&format!(" {exp}"));
            }
            for k in &keys {
                line.push(' ');
                line.push_str(&String::from_utf8_lossy(k));
            }
            line.push_str("\r\n");
            Spec {
                wire: line.into_bytes(),
                word,
                keys,
                data: None,
                noreply: false,
            }
        });
    let keyed = (
        prop::sample::select(&["delete", "incr", "decr", "touch"][..]),
        key(),
        0u32..100_000,
        any::<bool>(),
    )
        .prop_map(|(word, k, n, noreply)| {
            let mut line = format!("{word} {}", String::from_utf8_lossy(&k));
            if word != "delete" {
                line.push_str(&format!(" {n}"));
            }
            if noreply {
                line.push_str(" noreply");
            }
            line.push_str("\r\n");
            Spec {
                wire: line.into_bytes(),
                word,
                keys: vec![k],
                data: None,
                noreply,
            }
        });
    let meta = (
        prop::sample::select(&["mg", "md", "ms"][..]),
        key(),
        prop::collection::vec(
            prop::sample::select(&["v", "t", "f", "k", "q", "T30", "Oab1"][..]),
            0..4,
        ),
        data(),
    )
        .prop_map(|(word, k, flags, d)| {
            let mut line = format!("{word} {}", String::from_utf8_lossy(&k));
            if word == "ms" {
                line.push_str(&format!(" {}", d.len()));
            }
            for f in flags {
                line.push(' ');
                line.push_str(f);
            }
            line.push_str("\r\n");
            let mut wire = line.into_bytes();
            let data = (word == "ms").then(|| {
                wire.extend_from_slice(&d);
                wire.extend_from_slice(b"\r\n");
                d
            });
            Spec {
                wire,
                word,
                keys: vec![k],
                data,
                noreply: false,
            }
        });
    let bare = prop::sample::select(&["version", "stats", "mn", "flush_all", "verbosity 1"][..])
        .prop_map(|line| {
            let word = line.split(' ').next().unwrap_or(line);
            let word = ["version", "stats", "mn", "flush_all", "verbosity"]
                .into_iter()
                .find(|w| *w == word)
                .unwrap_or("version");
            Spec {
                wire: format!("{line}\r\n").into_bytes(),
                word,
                keys: vec![],
                data: None,
                noreply: false,
            }
        });
    prop_oneof![storage, retrieval, keyed, meta, bare]
}

fn check(r: &Request, s: &Spec) -> Result<(), TestCaseError> {
    prop_assert_eq!(r.command().word(), s.word);
    prop_assert_eq!(&r.raw()[..], &s.wire[..]);
    prop_assert_eq!(
        r.keys().iter().map(|k| k.to_vec()).collect::<Vec<_>>(),
        s.keys.clone()
    );
    prop_assert_eq!(r.data().map(|d| d.to_vec()), s.data.clone());
    if !r.command().is_meta() {
        prop_assert_eq!(r.noreply(), s.noreply);
    }
    Ok(())
}

/// Bytes worth decoding: anything, text that looks like commands, or a valid pipeline with
/// one byte changed and cut somewhere.
fn request_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        "((get|gets|gat|set|cas|delete|incr|touch|mg|ms|md|ma|mn|me|version|verbosity|quit|stats|flush_all) ?[ a-z0-9\r\n-]{0,40}){1,4}"
            .prop_map(String::into_bytes),
        (
            prop::collection::vec(spec(), 1..4),
            any::<prop::sample::Index>(),
            any::<u8>(),
            any::<prop::sample::Index>()
        )
            .prop_map(|(specs, at, byte, cut)| {
                let mut wire: Vec<u8> = specs.into_iter().flat_map(|s| s.wire).collect();
                let i = at.index(wire.len());
                wire[i] = byte;
                wire.truncate(cut.index(wire.len() + 1));
                wire
            }),
    ]
}

/// One-shot `decode` over `data`, handling errors as a connection does (reply, discard the
/// swallowed block, or stop where the connection would close): the requests, and the
/// requests before the first error.
fn one_shot(data: &[u8]) -> (Vec<Request>, usize) {
    let limits = limits();
    let mut buf = BytesMut::from(data);
    let mut out = Vec::new();
    let mut clean = None;
    for _ in 0..=data.len() {
        let before = buf.len();
        match decode(&mut buf, &limits) {
            Ok(Some(r)) => {
                assert!(buf.len() < before, "a request consumes bytes");
                assert!(r.raw().len() <= before);
                out.push(r);
            }
            Ok(None) => break,
            Err(e) => {
                clean.get_or_insert(out.len());
                assert!(!e.reply().is_empty());
                if e.closes_connection() {
                    break;
                }
                let mut remaining = e.swallow();
                discard(&mut buf, &mut remaining);
                if remaining > 0 {
                    break;
                }
            }
        }
    }
    let clean = clean.unwrap_or(out.len());
    (out, clean)
}

/// The resumable `Decoder` fed `data` in the given pieces, up to the first error.
fn resumed(pieces: &[&[u8]]) -> Vec<Request> {
    let limits = limits();
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf, &limits) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {
                    assert!(decoder.scanned() <= buf.len());
                    break;
                }
                Err(_) => return out,
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// Any bytes: no panic, every error has a reply, and a retrieval's re-encoding for
    /// some of its keys is not empty.
    #[test]
    fn decoder_never_panics(data in request_bytes()) {
        let (reqs, _) = one_shot(&data);
        for r in &reqs {
            let _ = (r.exptime(), r.meta(), r.noreply());
            if r.command().is_retrieval() && !r.keys().is_empty() {
                let mut out = BytesMut::new();
                r.encode_retrieval(&[0], &mut out);
                prop_assert!(!out.is_empty());
            }
        }
    }

    /// Requests we write decode back to their command, keys, data and raw bytes, in order,
    /// leaving nothing.
    #[test]
    fn requests_round_trip(specs in prop::collection::vec(spec(), 1..5)) {
        let wire: Vec<u8> = specs.iter().flat_map(|s| s.wire.clone()).collect();
        let mut buf = BytesMut::from(&wire[..]);
        let mut decoder = Decoder::new();
        for s in &specs {
            let r = decoder.decode(&mut buf, &limits()).unwrap().expect("a whole request");
            check(&r, s)?;
        }
        prop_assert!(buf.is_empty());
    }

    /// A retrieval re-encoded for all its keys decodes to the same command, keys and
    /// exptime.
    #[test]
    fn retrievals_re_encode(s in spec()) {
        let mut buf = BytesMut::from(&s.wire[..]);
        let r = decode(&mut buf, &limits()).unwrap().unwrap();
        if r.command().is_retrieval() {
            let idx: Vec<usize> = (0..r.keys().len()).collect();
            let mut out = BytesMut::new();
            r.encode_retrieval(&idx, &mut out);
            let back = decode(&mut out, &limits()).unwrap().unwrap();
            prop_assert!(out.is_empty());
            prop_assert_eq!(back.command(), r.command());
            prop_assert_eq!(back.keys(), r.keys());
            prop_assert_eq!(back.exptime(), r.exptime());
        }
    }

    /// The same bytes split at any point (or fed in small steps): the resumable decoder
    /// reads what the one-shot decode reads, up to the first error.
    #[test]
    fn split_anywhere_equals_whole(
        data in prop_oneof![
            prop::collection::vec(spec(), 1..4)
                .prop_map(|s| s.into_iter().flat_map(|s| s.wire).collect::<Vec<u8>>()),
            request_bytes(),
        ],
        cut in any::<prop::sample::Index>(),
        step in 1usize..16,
    ) {
        let (whole, clean) = one_shot(&data);
        let cut = cut.index(data.len() + 1);
        let split = resumed(&[&data[..cut], &data[cut..]]);
        let stepped = resumed(&data.chunks(step).collect::<Vec<_>>());
        for got in [split, stepped] {
            prop_assert_eq!(got.len(), clean);
            prop_assert_eq!(&got[..], &whole[..clean]);
        }
    }
}
