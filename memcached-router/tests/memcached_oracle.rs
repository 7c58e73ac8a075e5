//! The request codec's error replies against a real memcached (the oracle).
//!
//! Every case is sent to memcached over a fresh connection and decoded by [`decode`] as a
//! proxy connection would (forward, or reply and then close or skip and continue). Both
//! transcripts are pinned, and a case without a documented deviation must agree: each of
//! our lines equals memcached's, a forwarded request standing for whatever memcached
//! answers to it. The deliberate deviations (see the `proto` module docs) are:
//! - [`CLOSE_NOT_DATA`]: after a storage command whose data block length is unknown (bad
//!   arguments or key), or a data block not ended by `\r\n`, memcached goes on reading the
//!   client's data as commands (the extra `ERROR` lines); we reply the same line and close.
//! - [`REPLY_BEFORE_CLOSE`]: memcached closes silently on a line over 2048 bytes without a
//!   newline; we say why first.
//! - [`REPLY_EARLY`]: memcached sends `SERVER_ERROR object too large for cache` only once
//!   the too-large block is swallowed; we send it at once (the same bytes in the end).
//! - `gat`/`gats` lines may be as long as `get` lines (memcached closes); a keyless
//!   `gat <exptime>` is refused with `ERROR` (memcached answers `END`): there is no key to
//!   route it by.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use bytes::BytesMut;
use ocean_memcached_router::proto::{decode, discard, Limits};
use ocean_tests::servers::Memcached;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLOSE_NOT_DATA: &str =
    "memcached reads the rest as commands (the client's data block); we close";
const REPLY_BEFORE_CLOSE: &str = "memcached closes silently; we reply why, then close";
const REPLY_EARLY: &str = "memcached replies after swallowing the block; we reply at once";
const LONG_GAT: &str = "gat lines are bounded like get lines (4 MiB); memcached closes";
const KEYLESS_GAT: &str = "a keyless gat has nothing to route by; memcached answers END";

/// First reply byte wait, then the quiet time that ends a reply.
const FIRST_WAIT: Duration = Duration::from_millis(1500);
const IDLE_WAIT: Duration = Duration::from_millis(300);

struct Case {
    request: Vec<u8>,
    /// memcached's reply lines joined by ` | `, `closed` when it closes, `VERSION x.y.z`
    /// shortened to `VERSION`.
    memcached: &'static str,
    /// Ours the same way, `forward <command>` for a request passed on.
    ours: &'static str,
    /// Why we deliberately differ, or `None` when we must agree.
    deviation: Option<&'static str>,
}

fn case(request: impl Into<Vec<u8>>, memcached: &'static str, ours: &'static str) -> Case {
    Case {
        request: request.into(),
        memcached,
        ours,
        deviation: None,
    }
}

fn deviating(
    request: impl Into<Vec<u8>>,
    memcached: &'static str,
    ours: &'static str,
    why: &'static str,
) -> Case {
    Case {
        deviation: Some(why),
        ..case(request, memcached, ours)
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const BAD: &str = "CLIENT_ERROR bad command line format";

fn cases() -> Vec<Case> {
    let k251 = vec![b'k'; 251];
    let k250 = vec![b'k'; 250];
    let two_mib = vec![b'v'; 2 << 20];
    let b64_251 = base64::engine::general_purpose::STANDARD.encode(&k251);
    vec![
        // Unknown commands and retrievals.
        case(&b"bogus\r\n"[..], "ERROR", "ERROR"),
        case(&b"\r\n"[..], "ERROR", "ERROR"),
        case(&b"GET k\r\n"[..], "ERROR", "ERROR"),
        case(&b"get\r\n"[..], "ERROR", "ERROR"),
        case(
            cat(&[b"get ", &k251, b"\r\nbogus\r\n"]),
            "CLIENT_ERROR bad command line format | ERROR",
            "CLIENT_ERROR bad command line format | ERROR",
        ),
        case(cat(&[b"get ", &k250, b"\r\n"]), "END", "forward get"),
        // memcached checks only a key's length: control characters pass.
        case(&b"get c\x01d\r\n"[..], "END", "forward get"),
        case(&b"get c\x7f\r\n"[..], "END", "forward get"),
        case(&b"gat\r\n"[..], "ERROR", "ERROR"),
        case(
            &b"gat x k\r\n"[..],
            "CLIENT_ERROR invalid exptime argument",
            "CLIENT_ERROR invalid exptime argument",
        ),
        case(cat(&[b"gats 1 ", &k251, b"\r\n"]), BAD, BAD),
        deviating(&b"gat 1\r\n"[..], "END", "ERROR", KEYLESS_GAT),
        // Storage commands.
        case(&b"set a\x01b 0 0 1\r\na\r\n"[..], "STORED", "forward set"),
        case(
            &b"set k 4294967296 0 1\r\na\r\n"[..],
            "STORED",
            "forward set",
        ),
        case(&b"set k 0 0 1 maybe\r\na\r\n"[..], "STORED", "forward set"),
        case(&b"set k 0 0 +1\r\na\r\n"[..], "STORED", "forward set"),
        case(&b"set k 0 -1 1\r\na\r\n"[..], "STORED", "forward set"),
        deviating(
            cat(&[b"set ", &k251, b" 0 0 1\r\na\r\n"]),
            "CLIENT_ERROR bad command line format | ERROR",
            "CLIENT_ERROR bad command line format | closed",
            CLOSE_NOT_DATA,
        ),
        deviating(
            &b"set k x 0 1\r\na\r\n"[..],
            "CLIENT_ERROR bad command line format | ERROR",
            "CLIENT_ERROR bad command line format | closed",
            CLOSE_NOT_DATA,
        ),
        deviating(
            &b"set k 0 x 1\r\na\r\n"[..],
            "CLIENT_ERROR bad command line format | ERROR",
            "CLIENT_ERROR bad command line format | closed",
            CLOSE_NOT_DATA,
        ),
        deviating(
            &b"set k 0 0 x\r\na\r\n"[..],
            "CLIENT_ERROR bad command line format | ERROR",
            "CLIENT_ERROR bad command line format | closed",
            CLOSE_NOT_DATA,
        ),
        deviating(
            &b"set k -1 0 1\r\na\r\n"[..],
            "CLIENT_ERROR bad command line format | ERROR",
            "CLIENT_ERROR bad command line format | closed",
            CLOSE_NOT_DATA,
        ),
        deviating(
            &b"set k 0 0 -1\r\n"[..],
            "CLIENT_ERROR bad command line format",
            "CLIENT_ERROR bad command line format | closed",
            CLOSE_NOT_DATA,
        ),
        deviating(
            &b"set k 0 0 2147483646\r\n"[..],
            "CLIENT_ERROR bad command line format",
            "CLIENT_ERROR bad command line format | closed",
            CLOSE_NOT_DATA,
        ),
        deviating(
            &b"set k 0 0\r\nbogus\r\n"[..],
            "ERROR | ERROR",
            "ERROR | closed",
            CLOSE_NOT_DATA,
        ),
        deviating(
            &b"cas k 0 0 1\r\na\r\n"[..],
            "ERROR | ERROR",
            "ERROR | closed",
            CLOSE_NOT_DATA,
        ),
        deviating(
            &b"set k 0 0 1 noreply x\r\na\r\n"[..],
            "ERROR | ERROR",
            "ERROR | closed",
            CLOSE_NOT_DATA,
        ),
        deviating(
            &b"cas k 0 0 1 x\r\na\r\n"[..],
            "CLIENT_ERROR bad command line format | ERROR",
            "CLIENT_ERROR bad command line format | closed",
            CLOSE_NOT_DATA,
        ),
        deviating(
            &b"set k 0 0 3\r\nabcd\r\n"[..],
            "CLIENT_ERROR bad data chunk | ERROR",
            "CLIENT_ERROR bad data chunk | closed",
            CLOSE_NOT_DATA,
        ),
        deviating(
            &b"set k 0 0 1\r\naXY"[..],
            "CLIENT_ERROR bad data chunk",
            "CLIENT_ERROR bad data chunk | closed",
            CLOSE_NOT_DATA,
        ),
        // Over the 1 MiB item size (memcached's default -I, our default limit): the block
        // is swallowed and the next request is read.
        case(
            cat(&[b"set k 0 0 2097152\r\n", &two_mib, b"\r\nbogus\r\n"]),
            "SERVER_ERROR object too large for cache | ERROR",
            "SERVER_ERROR object too large for cache | ERROR",
        ),
        case(
            cat(&[b"ms k 2097152 T0\r\n", &two_mib, b"\r\nbogus\r\n"]),
            "SERVER_ERROR object too large for cache | ERROR",
            "SERVER_ERROR object too large for cache | ERROR",
        ),
        deviating(
            &b"set k 0 0 2097152\r\n"[..],
            "",
            "SERVER_ERROR object too large for cache",
            REPLY_EARLY,
        ),
        // incr/decr, touch, delete (on a key no case sets).
        case(
            &b"incr absent abc\r\n"[..],
            "CLIENT_ERROR invalid numeric delta argument",
            "CLIENT_ERROR invalid numeric delta argument",
        ),
        case(
            &b"incr absent -1\r\n"[..],
            "CLIENT_ERROR invalid numeric delta argument",
            "CLIENT_ERROR invalid numeric delta argument",
        ),
        case(
            &b"decr absent 18446744073709551616\r\n"[..],
            "CLIENT_ERROR invalid numeric delta argument",
            "CLIENT_ERROR invalid numeric delta argument",
        ),
        case(&b"incr absent\r\n"[..], "ERROR", "ERROR"),
        case(&b"incr absent 1 2 3\r\n"[..], "ERROR", "ERROR"),
        case(&b"incr absent 1 maybe\r\n"[..], "NOT_FOUND", "forward incr"),
        case(cat(&[b"incr ", &k251, b" 1\r\n"]), BAD, BAD),
        case(&b"touch absent\r\n"[..], "ERROR", "ERROR"),
        case(
            &b"touch absent x\r\n"[..],
            "CLIENT_ERROR invalid exptime argument",
            "CLIENT_ERROR invalid exptime argument",
        ),
        case(&b"touch absent 1 x\r\n"[..], "NOT_FOUND", "forward touch"),
        case(cat(&[b"touch ", &k251, b" 1\r\n"]), BAD, BAD),
        case(&b"delete\r\n"[..], "ERROR", "ERROR"),
        case(
            &b"delete absent 5\r\n"[..],
            "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]",
            "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]",
        ),
        case(
            &b"delete absent noreply x\r\n"[..],
            "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]",
            "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]",
        ),
        case(&b"delete absent 0\r\n"[..], "NOT_FOUND", "forward delete"),
        case(cat(&[b"delete ", &k251, b"\r\n"]), BAD, BAD),
        // Other commands.
        case(&b"verbosity\r\n"[..], "ERROR", "ERROR"),
        case(&b"verbosity x\r\n"[..], BAD, BAD),
        case(&b"verbosity -1\r\n"[..], BAD, BAD),
        case(&b"verbosity 1 2 3\r\n"[..], "ERROR", "ERROR"),
        case(&b"verbosity 1 2\r\n"[..], "OK", "forward verbosity"),
        case(&b"version x\r\n"[..], "VERSION", "forward version"),
        case(&b"quit x\r\n"[..], "closed", "forward quit"),
        case(
            &b"flush_all x\r\n"[..],
            "CLIENT_ERROR invalid exptime argument",
            "CLIENT_ERROR invalid exptime argument",
        ),
        case(&b"flush_all 1 2 3\r\n"[..], "ERROR", "ERROR"),
        // Meta commands: flags are the server's business (forwarded), keys are ours.
        case(&b"mg\r\n"[..], "ERROR", "ERROR"),
        case(&b"md\r\n"[..], "ERROR", "ERROR"),
        case(&b"ma\r\n"[..], "ERROR", "ERROR"),
        case(&b"me\r\n"[..], BAD, BAD),
        case(cat(&[b"mg ", &k251, b" v\r\n"]), BAD, BAD),
        case(cat(&[b"md ", &k251, b"\r\n"]), BAD, BAD),
        case(cat(&[b"ma ", &k251, b"\r\n"]), BAD, BAD),
        case(cat(&[b"me ", &k251, b"\r\n"]), BAD, BAD),
        case(format!("mg {b64_251} b v\r\n"), BAD, BAD),
        case(
            &b"mg !!!! b v\r\n"[..],
            "CLIENT_ERROR error decoding key",
            "CLIENT_ERROR error decoding key",
        ),
        case(
            &b"mg absent zz\r\n"[..],
            "CLIENT_ERROR invalid flag",
            "forward mg",
        ),
        case(
            &b"ma absent Nx\r\n"[..],
            "CLIENT_ERROR invalid or duplicate flag",
            "forward ma",
        ),
        case(&b"mg c\x01d v\r\n"[..], "EN", "forward mg"),
        case(&b"mn x\r\n"[..], "MN", "forward mn"),
        deviating(
            &b"ms\r\nbogus\r\n"[..],
            "ERROR | ERROR",
            "ERROR | closed",
            CLOSE_NOT_DATA,
        ),
        deviating(
            &b"ms k\r\n"[..],
            "CLIENT_ERROR bad command line format",
            "CLIENT_ERROR bad command line format | closed",
            CLOSE_NOT_DATA,
        ),
        deviating(
            &b"ms k x\r\nabc\r\n"[..],
            "CLIENT_ERROR bad command line format | ERROR",
            "CLIENT_ERROR bad command line format | closed",
            CLOSE_NOT_DATA,
        ),
        deviating(
            &b"ms k 2147483648 T0\r\n"[..],
            "CLIENT_ERROR bad command line format",
            "CLIENT_ERROR bad command line format | closed",
            CLOSE_NOT_DATA,
        ),
        deviating(
            cat(&[b"ms ", &k251, b" 1\r\na\r\n"]),
            "CLIENT_ERROR bad command line format | ERROR",
            "CLIENT_ERROR bad command line format | closed",
            CLOSE_NOT_DATA,
        ),
        deviating(
            &b"ms k 1 q\r\nab\r\n"[..],
            "CLIENT_ERROR bad data chunk | ERROR",
            "CLIENT_ERROR bad data chunk | closed",
            CLOSE_NOT_DATA,
        ),
        // Lines over 2048 bytes that have not ended yet.
        deviating(
            vec![b'x'; 3000],
            "closed",
            "CLIENT_ERROR line too long | closed",
            REPLY_BEFORE_CLOSE,
        ),
        deviating(
            cat(&[b"set k 0 0 1", &[b' '; 3000]]),
            "closed",
            "CLIENT_ERROR line too long | closed",
            REPLY_BEFORE_CLOSE,
        ),
        case(cat(&[b"get", &b" k".repeat(1500)]), "", ""),
        deviating(
            cat(&[b"gat 1", &b" k".repeat(1500)]),
            "closed",
            "",
            LONG_GAT,
        ),
    ]
}

/// What memcached answers to `request` on a fresh connection.
async fn memcached_transcript(addr: SocketAddr, request: Vec<u8>) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // A write memcached cuts short by closing shows up as `closed` when reading.
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.write_all(&request)).await;
    let mut reply = Vec::new();
    let mut closed = false;
    let mut wait = FIRST_WAIT;
    loop {
        match tokio::time::timeout(wait, stream.read_buf(&mut reply)).await {
            Ok(Ok(0) | Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => wait = IDLE_WAIT,
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&reply);
    let mut lines: Vec<String> = text
        .split_terminator("\r\n")
        .map(|l| {
            if l.starts_with("VERSION ") {
                "VERSION".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect();
    if closed {
        lines.push("closed".to_owned());
    }
    lines.join(" | ")
}

/// What a proxy connection built on [`decode`] does with `request`.
fn our_transcript(request: &[u8]) -> String {
    let limits = Limits::default();
    let mut buf = BytesMut::from(request);
    let mut skip = 0u64;
    let mut lines = Vec::new();
    loop {
        discard(&mut buf, &mut skip);
        if skip > 0 {
            break;
        }
        match decode(&mut buf, &limits) {
            Ok(Some(req)) => lines.push(format!("forward {}", req.command().word())),
            Ok(None) => break,
            Err(e) => {
                let reply = String::from_utf8_lossy(e.reply());
                lines.push(reply.trim_end_matches("\r\n").to_owned());
                if e.closes_connection() {
                    lines.push("closed".to_owned());
                    break;
                }
                skip = e.swallow();
            }
        }
    }
    lines.join(" | ")
}

/// Each of ours equals memcached's line, a forwarded request standing for any line.
fn agrees(memcached: &str, ours: &str) -> bool {
    let theirs: Vec<&str> = memcached.split(" | ").collect();
    let ours: Vec<&str> = ours.split(" | ").collect();
    theirs.len() == ours.len()
        && theirs
            .iter()
            .zip(&ours)
            .all(|(t, o)| t == o || o.starts_with("forward "))
}

#[tokio::test]
async fn error_replies_match_memcached() {
    let server = Memcached::start().await.expect("memcached");
    let addr = server.addr();
    let cases = cases();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in cases.iter().enumerate() {
        let request = c.request.clone();
        tasks.spawn(async move { (i, memcached_transcript(addr, request).await) });
    }
    let mut theirs = vec![String::new(); cases.len()];
    while let Some(done) = tasks.join_next().await {
        let (i, t) = done.expect("task");
        theirs[i] = t;
    }
    let mut failures = Vec::new();
    for (c, theirs) in cases.iter().zip(&theirs) {
        let ours = our_transcript(&c.request);
        let shown: String = String::from_utf8_lossy(&c.request)
            .chars()
            .take(60)
            .collect();
        eprintln!("{shown:?}\n    memcached: {theirs}\n    ours:      {ours}");
        if theirs != c.memcached {
            failures.push(format!(
                "{shown:?}: memcached answered {theirs:?}, pinned {:?}",
                c.memcached
            ));
        }
        if ours != c.ours {
            failures.push(format!(
                "{shown:?}: we answer {ours:?}, pinned {:?}",
                c.ours
            ));
        }
        match c.deviation {
            None if !agrees(theirs, &ours) => failures.push(format!(
                "{shown:?}: memcached {theirs:?} and ours {ours:?} disagree"
            )),
            // A documented deviation must really deviate, or it is stale.
            Some(why) if agrees(theirs, &ours) => {
                failures.push(format!("{shown:?}: agrees now, drop the deviation {why:?}"));
            }
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
