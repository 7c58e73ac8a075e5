//! Response rate limiting on UDP (issue 14): a flood from one client network gets at most
//! `--rrl-per-second` answers a second, every `--rrl-slip`th answer over the limit goes out
//! truncated (TC=1, so a real client retries over TCP), the rest are dropped; another network
//! is answered as usual, TCP is never limited, and both outcomes are counted in
//! `ocean_dns_rate_limited_total{action}`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use common::{dig, metric_line, query, start_dns, OURS, OURS_ADDR};

const PER_SECOND: u32 = 5;
const SLIP: u32 = 2;
const FLOOD: u16 = 60;

/// What came back for a flood of `FLOOD` queries sent from `source` as fast as the socket
/// takes them: (whole answers, truncated answers).
fn flood(source: &str, port: u16) -> Result<(usize, usize)> {
    let socket = UdpSocket::bind((source, 0))?;
    socket.connect(("127.0.0.1", port))?;
    for id in 0..FLOOD {
        socket.send(&query(id, OURS))?;
    }
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    let (mut whole, mut truncated) = (0, 0);
    let mut ids = HashSet::new();
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(e.into()),
        };
        ensure!(n >= 12, "a {n}-byte reply");
        let id = u16::from_be_bytes([buf[0], buf[1]]);
        ensure!(ids.insert(id), "two replies to query {id}");
        ensure!(buf[2] & 0x80 != 0, "reply {id} is not a response");
        if buf[2] & 0x02 != 0 {
            // A slip: TC set and no answer records to take instead of asking over TCP.
            let ancount = u16::from_be_bytes([buf[6], buf[7]]);
            ensure!(
                ancount == 0,
                "truncated reply {id} carries {ancount} answers"
            );
            truncated += 1;
        } else {
            whole += 1;
        }
    }
    Ok((whole, truncated))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_network_is_limited_with_slips_and_others_are_answered() -> Result<()> {
    let dns = start_dns(|c| {
        c.rrl_per_second = PER_SECOND;
        c.rrl_slip = SLIP;
    })
    .await?;
    let port = dns.port();

    let (whole, truncated) =
        tokio::task::spawn_blocking(move || flood("127.0.0.2", port)).await??;
    println!("127.0.0.2: {FLOOD} queries -> {whole} answers, {truncated} TC slips");
    // The flood may straddle a second boundary: at most two seconds' worth of answers.
    let limit = 2 * PER_SECOND as usize;
    ensure!(
        (PER_SECOND as usize..=limit).contains(&whole),
        "{whole} whole answers to {FLOOD} queries at {PER_SECOND}/s"
    );
    let over = usize::from(FLOOD) - whole;
    // Every SLIP-th answer over the limit slips; the others are dropped.
    ensure!(
        truncated >= over / SLIP as usize - 1 && truncated <= over / SLIP as usize + 1,
        "{truncated} slips of {over} answers over the limit with slip {SLIP}"
    );
    ensure!(
        whole + truncated < usize::from(FLOOD),
        "nothing was dropped: {whole} + {truncated} replies to {FLOOD} queries"
    );

    // Another /24 has its own budget: dig from 127.0.1.1 gets the normal answer at once, and
    // 127.0.0.3 (the flooded /24) is answered over TCP, which is never rate limited.
    let d = tokio::task::spawn_blocking(move || dig("127.0.1.1", port, OURS, &[])).await??;
    ensure!(
        d.status == "NOERROR" && !d.has_flag("tc") && d.answers == [OURS_ADDR],
        "127.0.1.1 during the flood: {}",
        d.output
    );
    let d = tokio::task::spawn_blocking(move || dig("127.0.0.3", port, OURS, &["+tcp"])).await??;
    ensure!(
        d.status == "NOERROR" && d.answers == [OURS_ADDR],
        "127.0.0.3 over TCP: {}",
        d.output
    );

    let http = dns.running.http_addr.unwrap();
    for (action, at_least) in [
        ("slip", truncated),
        ("drop", usize::from(FLOOD) - whole - truncated),
    ] {
        let line = metric_line(
            http,
            &format!("ocean_dns_rate_limited_total{{action=\"{action}\"}}"),
        )
        .await?;
        let n: f64 = line.rsplit(' ').next().unwrap_or("").parse()?;
        ensure!(n >= at_least as f64, "{line}: expected at least {at_least}");
        println!("{line}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rrl_per_second_nothing_is_limited() -> Result<()> {
    let dns = start_dns(|_| {}).await?;
    let port = dns.port();
    let (whole, truncated) =
        tokio::task::spawn_blocking(move || flood("127.0.0.2", port)).await??;
    ensure!(
        whole == usize::from(FLOOD) && truncated == 0,
        "rate limiting off: {whole} answers and {truncated} slips to {FLOOD} queries"
    );
    Ok(())
}
