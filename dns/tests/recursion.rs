//! Safe forwarding (issue 14): with `--resolver` set, only `--allow-recursion` clients have
//! names outside the zone forwarded; any other client gets REFUSED (RA clear) for them, and
//! the normal answer for our own names, over UDP and TCP. Forwarded UDP answers larger than
//! the client takes come back truncated (TC) and whole over TCP. Checked with `dig` from two
//! loopback source addresses (127.0.0.1 allowed, 127.0.0.2 not).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use anyhow::{ensure, Result};
use common::{
    dig, fake_upstream, metric_line, start_dns, BIG, BIG_COUNT, EXTERNAL, EXTERNAL_ADDR, OURS,
    OURS_ADDR,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_outside_allow_recursion_are_refused_external_names_but_answered_ours() -> Result<()>
{
    let upstream = fake_upstream().await?;
    let dns = start_dns(|c| {
        c.resolvers = vec![upstream];
        c.allow_recursion = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await?;
    let port = dns.port();
    // dig blocks: run it off the runtime that serves the upstream.
    let run = |source: &'static str, name: &'static str, extra: &'static [&'static str]| {
        tokio::task::spawn_blocking(move || dig(source, port, name, extra))
    };
    for (transport, extra) in [("udp", &[][..]), ("tcp", &["+tcp"][..])] {
        // An outside client: REFUSED for the external name, RA clear, nothing forwarded.
        let d = run("127.0.0.2", EXTERNAL, extra).await??;
        ensure!(
            d.status == "REFUSED" && !d.has_flag("ra") && d.answers.is_empty(),
            "{transport}: 127.0.0.2 asking {EXTERNAL}: {}",
            d.output
        );
        // ...and the normal answer for our own name.
        let d = run("127.0.0.2", OURS, extra).await??;
        ensure!(
            d.status == "NOERROR" && d.has_flag("aa") && d.answers == [OURS_ADDR],
            "{transport}: 127.0.0.2 asking {OURS}: {}",
            d.output
        );
        // An allowed client has the external name forwarded.
        let d = run("127.0.0.1", EXTERNAL, extra).await??;
        ensure!(
            d.status == "NOERROR" && d.has_flag("ra") && d.answers == [EXTERNAL_ADDR],
            "{transport}: 127.0.0.1 asking {EXTERNAL}: {}",
            d.output
        );
        let d = run("127.0.0.1", OURS, extra).await??;
        ensure!(
            d.answers == [OURS_ADDR],
            "{transport}: 127.0.0.1 asking {OURS}: {}",
            d.output
        );
        println!("{transport}: 127.0.0.2 refused {EXTERNAL}, answered {OURS}; 127.0.0.1 forwarded");
    }
    let line = metric_line(
        dns.running.http_addr.unwrap(),
        "ocean_dns_refused_total{reason=\"recursion\"}",
    )
    .await?;
    let n: f64 = line.rsplit(' ').next().unwrap_or("").parse()?;
    ensure!(n >= 1.0, "{line}");
    println!("{line}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_forwarded_answers_are_truncated_to_the_client_over_udp() -> Result<()> {
    let upstream = fake_upstream().await?;
    let dns = start_dns(|c| c.resolvers = vec![upstream]).await?;
    let port = dns.port();
    let run = |extra: &'static [&'static str]| {
        tokio::task::spawn_blocking(move || dig("127.0.0.1", port, BIG, extra))
    };
    // +ignore: dig shows the truncated answer instead of retrying over TCP. The upstream's
    // answer (~1.6 KB) is larger than 512 bytes (no EDNS), 1232 (dig's EDNS default) and
    // our --max-udp-payload of 1232 even when the client offers 4096.
    for extra in [
        &["+ignore", "+noedns"][..],
        &["+ignore"][..],
        &["+ignore", "+bufsize=4096"][..],
    ] {
        let d = run(extra).await??;
        ensure!(
            d.status == "NOERROR" && d.has_flag("tc") && d.answers.is_empty(),
            "dig {extra:?} {BIG}: {}",
            d.output
        );
    }
    // dig's default: retry the truncated answer over TCP, where it comes whole.
    let d = run(&[]).await??;
    ensure!(
        d.answers.len() == usize::from(BIG_COUNT) && !d.has_flag("tc"),
        "dig {BIG} (retrying over TCP): {} answers\n{}",
        d.answers.len(),
        d.output
    );
    // A small forwarded answer is not truncated.
    let d = tokio::task::spawn_blocking(move || dig("127.0.0.1", port, EXTERNAL, &["+ignore"]))
        .await??;
    ensure!(
        !d.has_flag("tc") && d.answers == [EXTERNAL_ADDR],
        "{}",
        d.output
    );
    Ok(())
}
