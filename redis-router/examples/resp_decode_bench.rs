//! Our RESP reply decoder against the redis-protocol crate's, on the same frames (issue 15:
//! where our own decoder stays on the hot path, show by how much it wins). Run through
//! `bash benches/resp-decode.sh` (a release build).
//!
//! Two jobs, each with the closest function of both:
//! - **check**: find where one reply ends, so it can be relayed byte for byte (what the
//!   router does with every backend reply): our `decode_reply` against redis-protocol's
//!   `decode_range` (frames of offsets, no copies).
//! - **parse**: build a value that shares the buffer (what the router does for the few
//!   replies it reads): our `parse` against redis-protocol's `decode_bytes`.
//!
//! Prints ns per frame (best of 5 runs) and theirs/ours (above 1: ours is faster).

use std::hint::black_box;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use ocean_redis_router::proto::{decode_reply, parse, ReplyLimits};

/// One kind of reply and its bytes.
struct Case {
    name: &'static str,
    wire: Bytes,
    /// RESP3-only types: redis-protocol's RESP3 decoder; else its RESP2 one (as a
    /// RESP2 connection would use).
    resp3: bool,
}

fn bulk(out: &mut BytesMut, data: &[u8]) {
    out.put_slice(format!("${}\r\n", data.len()).as_bytes());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

fn cases() -> Vec<Case> {
    let mut get = BytesMut::new();
    bulk(&mut get, &[b'v'; 100]);
    let mut mget = BytesMut::from(&b"*10\r\n"[..]);
    for i in 0..10u8 {
        bulk(&mut mget, &[b'a' + i; 32]);
    }
    let mut lrange = BytesMut::from(&b"*100\r\n"[..]);
    for i in 0..100u8 {
        bulk(&mut lrange, &[b'0' + i % 10; 16]);
    }
    let mut hgetall = BytesMut::from(&b"%20\r\n"[..]);
    for i in 0..20 {
        bulk(&mut hgetall, format!("field:{i}").as_bytes());
        bulk(&mut hgetall, &[b'x'; 24]);
    }
    let mut big = BytesMut::new();
    bulk(&mut big, &vec![b'z'; 64 << 10]);
    vec![
        Case {
            name: "+OK (SET)",
            wire: Bytes::from_static(b"+OK\r\n"),
            resp3: false,
        },
        Case {
            name: ":n (INCR)",
            wire: Bytes::from_static(b":1234567\r\n"),
            resp3: false,
        },
        Case {
            name: "bulk 100 B (GET)",
            wire: get.freeze(),
            resp3: false,
        },
        Case {
            name: "10 x 32 B (MGET)",
            wire: mget.freeze(),
            resp3: false,
        },
        Case {
            name: "100 x 16 B (LRANGE)",
            wire: lrange.freeze(),
            resp3: false,
        },
        Case {
            name: "map 20 (RESP3 HGETALL)",
            wire: hgetall.freeze(),
            resp3: true,
        },
        Case {
            name: "bulk 64 KiB",
            wire: big.freeze(),
            resp3: false,
        },
    ]
}

/// Best of 5 runs of `iters` calls of `f`, in ns per call.
fn time(iters: u32, mut f: impl FnMut() -> usize) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let mut sink = 0usize;
        for _ in 0..iters {
            sink = sink.wrapping_add(f());
        }
        black_box(sink);
        best = best.min(start.elapsed().as_nanos() as f64 / f64::from(iters));
    }
    best
}

fn theirs_check(c: &Case) -> usize {
    let wire = black_box(&c.wire[..]);
    if c.resp3 {
        redis_protocol::resp3::decode::complete::decode_range(wire)
            .ok()
            .flatten()
            .map_or(0, |(_, n)| n)
    } else {
        redis_protocol::resp2::decode::decode_range(wire)
            .ok()
            .flatten()
            .map_or(0, |(_, n)| n)
    }
}

fn theirs_parse(c: &Case) -> usize {
    let wire = black_box(&c.wire);
    if c.resp3 {
        redis_protocol::resp3::decode::complete::decode_bytes(wire)
            .ok()
            .flatten()
            .map_or(0, |(_, n)| n)
    } else {
        redis_protocol::resp2::decode::decode_bytes(wire)
            .ok()
            .flatten()
            .map_or(0, |(_, n)| n)
    }
}

fn main() {
    let limits = ReplyLimits::default();
    println!(
        "{:<24} {:>11} {:>11} {:>7}   {:>11} {:>11} {:>7}",
        "frame", "check ours", "theirs", "ratio", "parse ours", "theirs", "ratio"
    );
    for c in cases() {
        // Both decoders accept the frame and agree on its length before anything is timed.
        let len = c.wire.len();
        assert_eq!(decode_reply(&c.wire, &limits), Ok(Some(len)), "{}", c.name);
        assert_eq!(theirs_check(&c), len, "{}", c.name);
        assert!(parse(&c.wire).is_some(), "{}", c.name);
        assert_eq!(theirs_parse(&c), len, "{}", c.name);
        let iters = (20_000_000 / (len as u32 + 64)).clamp(2_000, 2_000_000);
        let ours_check = time(iters, || {
            decode_reply(black_box(&c.wire[..]), &limits)
                .ok()
                .flatten()
                .unwrap_or(0)
        });
        let theirs_check_ns = time(iters, || theirs_check(&c));
        let ours_parse = time(iters, || usize::from(parse(black_box(&c.wire)).is_some()));
        let theirs_parse_ns = time(iters, || theirs_parse(&c));
        println!(
            "{:<24} {:>8.1} ns {:>8.1} ns {:>6.2}x   {:>8.1} ns {:>8.1} ns {:>6.2}x",
            c.name,
            ours_check,
            theirs_check_ns,
            theirs_check_ns / ours_check,
            ours_parse,
            theirs_parse_ns,
            theirs_parse_ns / ours_parse,
        );
    }
}
