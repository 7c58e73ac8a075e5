//! The UDP workers take datagrams in `recvmmsg` batches and send the answers with one
//! `sendmmsg` (issue 14). Three clients on three loopback addresses burst queries without
//! reading, mixed with garbage that gets no answer and out-of-zone names that are
//! forwarded: every query is answered once, to its own client, with its own id and the
//! right records, and the workers did take several datagrams per receive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{
    a_addresses, fake_upstream, metric_line, query, start_dns, EXTERNAL, EXTERNAL_ADDR, OURS,
    OURS_ADDR,
};
use hickory_proto::op::Message;
use tokio::net::UdpSocket;

/// Datagrams each client sends before reading any answer.
const PER_CLIENT: u16 = 150;

/// What the `i`th datagram of a burst is.
enum Sent {
    /// Not DNS at all: dropped, never answered.
    Garbage,
    /// One of our names: answered from the zone.
    Ours,
    /// A name outside the zone: forwarded, answered by the upstream.
    External,
}

fn kind(i: u16) -> Sent {
    if i % 10 == 3 {
        Sent::Garbage
    } else if i.is_multiple_of(7) {
        Sent::External
    } else {
        Sent::Ours
    }
}

/// The one A record of an answer, checked to be a NOERROR response.
fn address(answer: &Message) -> Result<Ipv4Addr> {
    match a_addresses(answer)?.as_slice() {
        [a] => Ok(*a),
        addrs => anyhow::bail!("answers {addrs:?}"),
    }
}

/// Bursts [`PER_CLIENT`] datagrams from `source` to `server`, then reads answers until the
/// socket is quiet for a second; checks each and returns how many queries were sent.
async fn burst(source: Ipv4Addr, server: SocketAddr, client: u16) -> Result<usize> {
    let sock = UdpSocket::bind((source, 0)).await?;
    let mut expected = HashSet::new();
    for i in 0..PER_CLIENT {
        // Ids differ between clients, so an answer sent to the wrong client is caught.
        let id = client * 1000 + i;
        let datagram = match kind(i) {
            Sent::Garbage => vec![0xff, 0x00, 0x13],
            Sent::Ours => query(id, OURS),
            Sent::External => query(id, EXTERNAL),
        };
        if !matches!(kind(i), Sent::Garbage) {
            expected.insert(id);
        }
        sock.send_to(&datagram, server).await?;
    }
    let sent = expected.len();
    let mut buf = vec![0u8; 65535];
    while !expected.is_empty() {
        let (n, from) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
            .await
            .with_context(|| {
                format!("client {source}: no answer for {} queries", expected.len())
            })??;
        ensure!(from == server, "answer from {from}");
        let answer = Message::from_vec(buf.get(..n).unwrap_or_default())?;
        let id = answer.metadata.id;
        ensure!(
            expected.remove(&id),
            "client {source}: unexpected or repeated answer id {id}"
        );
        let want = match kind(id % 1000) {
            Sent::External => EXTERNAL_ADDR,
            _ => OURS_ADDR,
        };
        ensure!(address(&answer)? == want, "id {id}: wrong address");
    }
    // Nothing more: the garbage got no answer, and nothing was answered twice.
    let extra = tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await;
    ensure!(extra.is_err(), "an answer beyond the queries sent");
    Ok(sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_from_several_clients_are_answered_once_each_in_batches() -> Result<()> {
    let upstream = fake_upstream().await?;
    let dns = start_dns(|c| {
        c.udp_workers = 1;
        c.resolvers = vec![upstream];
        c.allow_recursion = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await?;
    let server = dns.running.dns_addr;
    let http = dns.running.http_addr.expect("http listens");
    let clients =
        [1u16, 2, 3].map(|c| tokio::spawn(burst(Ipv4Addr::new(127, 0, 0, c as u8 + 1), server, c)));
    let mut sent = 0;
    for c in clients {
        sent += c.await??;
    }

    // The counters are flushed once the worker is idle; then queries over receives is the
    // mean batch, which a burst makes larger than one.
    let receives = metric_line(http, "ocean_dns_udp_receives_total").await?;
    let receives: u64 = receives
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .context(receives.clone())?;
    let datagrams = 3 * u64::from(PER_CLIENT);
    ensure!(receives > 0, "no receives counted");
    ensure!(
        receives < datagrams,
        "{receives} receives for {datagrams} datagrams: no batch ever held more than one"
    );
    ensure!(sent > 0);
    Ok(())
}
