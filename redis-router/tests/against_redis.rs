//! The codec and the command table against a real redis-server: the same inputs must give
//! the same protocol errors and arguments, and the table must agree with `COMMAND INFO`
//! and `COMMAND GETKEYS`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use ocean_redis_router::command::{self, keys};
use ocean_redis_router::proto::{decode, decode_reply, Limits, ReplyLimits, Request};
use ocean_tests::servers::resp::Resp;
use ocean_tests::servers::RedisServer;

/// Our decoder's error for `input`, if any.
fn our_error(input: &[u8]) -> Option<String> {
    let mut buf = BytesMut::from(input);
    loop {
        match decode(&mut buf, &Limits::default()) {
            Ok(Some(_)) => continue,
            Ok(None) => return None,
            Err(e) => return Some(e.to_string()),
        }
    }
}

#[tokio::test]
async fn protocol_errors_match_redis() -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let cases: &[&[u8]] = &[
        b"*x\r\n",
        b"*2147483648\r\n",
        b"*1\r\nx\r\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n$abc\r\n",
        b"*1\r\n$600000000\r\n",
        b"SET k \"abc\r\n",
        b"SET k 'a'b\r\n",
        b"SET k \"a\"b\r\n",
    ];
    for case in cases {
        let mut client = server.client().await?;
        client.send_raw(case).await?;
        let reply = client.read_reply().await?;
        let Resp::Error(theirs) = reply else {
            panic!("{case:?}: redis answered {reply:?}");
        };
        assert_eq!(
            our_error(case).as_deref(),
            Some(theirs.as_str()),
            "{case:?}"
        );
        // Redis closes the connection after a protocol error.
        assert!(client.read_reply().await.is_err(), "{case:?}: still open");
    }
    Ok(())
}

#[tokio::test]
async fn inline_arguments_match_redis() -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let lines: &[&[u8]] = &[
        b"ECHO plain",
        b"ECHO \"a b\"",
        b"ECHO \"\\x41\\x7a\\n\\t\\q\"",
        b"ECHO 'it\\'s'",
        b"ECHO a\"b c\"",
        b"ECHO \"\"",
        b"ECHO \"\\xZZ\"",
    ];
    for line in lines {
        let mut client = server.client().await?;
        client.send_raw(&[*line, b"\r\n"].concat()).await?;
        let reply = client.read_reply().await?;
        let mut buf = BytesMut::from(&[*line, b"\r\n"].concat()[..]);
        let req = decode(&mut buf, &Limits::default())?.expect("complete");
        assert_eq!(reply.as_bytes(), Some(&req.args[1][..]), "{line:?}");
    }
    Ok(())
}

/// Reads one raw reply with our check-only parser.
async fn raw_reply(addr: std::net::SocketAddr, args: &[&[u8]]) -> anyhow::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut out = BytesMut::new();
    Request::new(args.iter().map(|a| Bytes::copy_from_slice(a))).encode(&mut out);
    stream.write_all(&out).await?;
    let mut buf = BytesMut::new();
    loop {
        if let Some(n) = decode_reply(&buf, &ReplyLimits::default())? {
            assert_eq!(n, buf.len(), "one reply, nothing after it");
            return Ok(buf.to_vec());
        }
        if stream.read_buf(&mut buf).await? == 0 {
            anyhow::bail!("closed");
        }
    }
}

#[tokio::test]
async fn reply_checker_measures_real_replies() -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let addr = server.addr();
    for cmd in [
        &[&b"COMMAND"[..]][..],
        &[b"INFO"],
        &[b"HELLO", b"3"],
        &[b"CONFIG", b"GET", b"*"],
        &[b"GET", b"nokey"],
    ] {
        let bytes = raw_reply(addr, cmd).await?;
        assert!(!bytes.is_empty());
        // The harness parser agrees it is exactly one RESP2 reply (HELLO 3 replies a map).
        if cmd[0] != b"HELLO" {
            let parsed = Resp::parse(&bytes)?;
            assert_eq!(parsed.map(|(_, n)| n), Some(bytes.len()), "{cmd:?}");
        }
    }
    Ok(())
}

fn int(r: &Resp) -> i64 {
    r.as_int()
        .unwrap_or_else(|| panic!("not an integer: {r:?}"))
}

#[tokio::test]
async fn table_matches_command_info() -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let mut client = server.client().await?;
    let mut missing = Vec::new();
    let mut mismatches = Vec::new();
    for spec in command::all() {
        let reply = client.command(&["COMMAND", "INFO", spec.name]).await?;
        let entry = &reply.as_array().expect("array")[0];
        let Some(info) = entry.as_array() else {
            missing.push(spec.name);
            continue;
        };
        let got = (int(&info[1]), int(&info[3]), int(&info[4]), int(&info[5]));
        let want = (
            i64::from(spec.arity),
            i64::from(spec.first),
            i64::from(spec.last),
            i64::from(spec.step),
        );
        if want != got {
            mismatches.push(format!("{}: ours {want:?} redis {got:?}", spec.name));
        }
        let flags: Vec<&str> = info[2]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Resp::as_str)
            .collect();
        // A container's key positions belong to its subcommands (OBJECT ENCODING).
        let container = spec.flags.contains(command::Flags::CONTAINER);
        if !container && spec.movable_keys() != flags.contains(&"movablekeys") {
            mismatches.push(format!("{}: movablekeys {flags:?}", spec.name));
        }
    }
    assert!(missing.is_empty(), "unknown to redis: {missing:?}");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    Ok(())
}

#[tokio::test]
async fn keys_match_command_getkeys() -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let mut client = server.client().await?;
    let samples = [
        "GET a",
        "SET a 1 EX 10",
        "MGET a b c",
        "MSET a 1 b 2 c 3",
        "DEL a b",
        "BLPOP a b 0",
        "BITOP AND d a b",
        "EVAL s 2 a b x",
        "EVALSHA s 1 a",
        "FCALL f 2 a b",
        "ZUNIONSTORE d 2 a b WEIGHTS 1 2",
        "ZINTER 2 a b",
        "ZDIFFSTORE d 1 a",
        "SINTERCARD 2 a b",
        "LMPOP 2 a b LEFT",
        "BLMPOP 0 2 a b LEFT",
        "BZMPOP 0 1 a MIN",
        "XREAD COUNT 2 STREAMS a b 0 0",
        "XREADGROUP GROUP g c STREAMS a b > >",
        "MIGRATE h 1 k 0 10",
        "SORT a BY w GET x LIMIT 0 1 STORE d",
        "GEORADIUS a 1 2 3 km STORE d",
        "GEORADIUSBYMEMBER a m 3 km STOREDIST d",
        "OBJECT ENCODING a",
        "MEMORY USAGE a",
        "XINFO STREAM s",
        "XGROUP CREATE s g $",
        "LMOVE a b LEFT RIGHT",
        "RENAME a b",
        "SMOVE a b m",
        "LCS a b",
        "COPY a b",
        "GEOSEARCHSTORE d s FROMMEMBER m BYRADIUS 1 km",
        "ZRANGESTORE d s 0 1",
        "WATCH a b",
        "PFCOUNT a b",
        "SUNIONSTORE d a b",
    ];
    for s in samples {
        let args: Vec<&str> = s.split(' ').collect();
        let mut cmd = vec!["COMMAND", "GETKEYS"];
        cmd.extend(&args);
        let reply = client.command(&cmd).await?;
        let theirs: Vec<Vec<u8>> = reply
            .as_array()
            .unwrap_or_else(|| panic!("{s}: {reply:?}"))
            .iter()
            .map(|k| k.as_bytes().unwrap().to_vec())
            .collect();
        let req = Request::new(args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())));
        let ours: Vec<Vec<u8>> = keys(&req)?.map(<[u8]>::to_vec).collect();
        assert_eq!(ours, theirs, "{s}");
    }
    Ok(())
}

/// Every RESP3 type redis can produce (`DEBUG PROTOCOL`, enabled by the harness), pipelined
/// on one connection after `HELLO 3`, measured by `decode_reply` at every split point.
#[tokio::test]
async fn reply_checker_handles_every_resp3_type_from_redis() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = RedisServer::start().await?;
    let mut stream = tokio::net::TcpStream::connect(server.addr()).await?;
    let types = [
        "string", "integer", "double", "bignum", "null", "array", "set", "map", "attrib", "push",
        "verbatim", "true", "false",
    ];
    let mut commands: Vec<Vec<&str>> = vec![vec!["HELLO", "3"]];
    commands.extend(types.iter().map(|t| vec!["DEBUG", "PROTOCOL", t]));
    commands.extend([
        vec!["HSET", "h", "a", "1"],
        vec!["HGETALL", "h"],
        vec!["SADD", "s", "x"],
        vec!["SMEMBERS", "s"],
        vec!["ZADD", "z", "1.5", "m"],
        vec!["ZSCORE", "z", "m"],
        vec!["GET", "nokey"],
        vec!["NOSUCHCOMMAND"],
    ]);
    let mut out = BytesMut::new();
    for c in &commands {
        Request::new(c.iter().map(|a| Bytes::copy_from_slice(a.as_bytes()))).encode(&mut out);
    }
    stream.write_all(&out).await?;
    // Read until every reply is complete.
    let limits = ReplyLimits::default();
    let mut buf = BytesMut::new();
    let mut lens = Vec::new();
    let mut pos = 0;
    // `DEBUG PROTOCOL push` sends an out-of-band push message before its reply: one more.
    let expected = commands.len() + 1;
    while lens.len() < expected {
        match decode_reply(&buf[pos..], &limits)? {
            Some(n) => {
                lens.push(n);
                pos += n;
            }
            None => {
                let n = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    stream.read_buf(&mut buf),
                )
                .await??;
                assert!(n > 0, "closed after {} replies", lens.len());
            }
        }
    }
    assert_eq!(pos, buf.len(), "nothing after the last reply");
    let all = buf.freeze();
    // Spot-check that the RESP3 types really arrived.
    let text = String::from_utf8_lossy(&all);
    for marker in ["%", "~", ",", "(", "_\r\n", "|1", ">", "=", "#t", "#f"] {
        assert!(text.contains(marker), "no {marker:?} in {text:?}");
    }
    // Split the same stream at every byte: the same replies come out.
    for cut in 0..=all.len() {
        let mut b = BytesMut::new();
        let mut got = Vec::new();
        for chunk in [&all[..cut], &all[cut..]] {
            b.extend_from_slice(chunk);
            while let Some(n) = decode_reply(&b, &limits)? {
                got.push(n);
                let _ = b.split_to(n);
            }
        }
        assert_eq!(got, lens, "cut {cut}");
    }
    Ok(())
}
