//! TKO on tokio's paused clock (issue 18): one `upstream::Server` against a local fake
//! memcached that is silent or answers on command. Request timeouts count as failures; at
//! `tko_after` in a row the server is down and requests fail at once; a reply resets the
//! count; a down server is probed with `version` after `probe_interval`, not before, and is
//! up again once a probe is answered. No wall-clock sleeps: the clock advances only when
//! every task waits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ocean_memcached_router::config::Settings;
use ocean_memcached_router::reply::Expect;
use ocean_memcached_router::stats::RouterStats;
use ocean_memcached_router::upstream::{Server, UpstreamError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// A fake memcached: reads command lines and, while `answering`, replies `END` to `get`
/// and `VERSION` to `version` (counted in `probes`); otherwise says nothing, and answers
/// those `get`s late, before the next reply (a slow server, so replies stay in order).
struct Fake {
    addr: SocketAddr,
    answering: Arc<AtomicBool>,
    probes: Arc<AtomicUsize>,
}

async fn fake() -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answering = Arc::new(AtomicBool::new(false));
    let probes = Arc::new(AtomicUsize::new(0));
    let (a, p) = (answering.clone(), probes.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (a, p) = (a.clone(), p.clone());
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut lines = BufReader::new(r).lines();
                // `get`s not answered yet: answered late, in order, once answering.
                let mut unanswered = 0;
                while let Ok(Some(line)) = lines.next_line().await {
                    let version = line.starts_with("version");
                    if !a.load(Ordering::SeqCst) {
                        unanswered += usize::from(!version);
                        continue;
                    }
                    let mut reply = b"END\r\n".repeat(unanswered);
                    unanswered = 0;
                    if version {
                        p.fetch_add(1, Ordering::SeqCst);
                        reply.extend_from_slice(b"VERSION 1.6.0\r\n");
                    } else {
                        reply.extend_from_slice(b"END\r\n");
                    }
                    if w.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Fake {
        addr,
        answering,
        probes,
    }
}

/// A server with TKO after 3 failures. The request and connect timeouts are long next to
/// the probe interval so that no loopback exchange can lose a race with them.
fn server(addr: SocketAddr) -> Arc<Server> {
    let settings = Settings {
        tko_after: 3,
        request_timeout: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(60),
        probe_interval: PROBE_INTERVAL,
        probe_interval_max: Duration::from_secs(60),
        backend_connections: 1,
        ..Settings::default()
    };
    Server::new(
        addr,
        "pool",
        "a",
        Arc::new(settings),
        Arc::new(RouterStats::default()),
        CancellationToken::new(),
    )
}

async fn get(s: &Arc<Server>) -> Result<Bytes, UpstreamError> {
    s.send(
        0,
        Bytes::from_static(b"get k\r\n"),
        Expect::Retrieval,
        false,
        true,
        None,
    )
    .reply()
    .await
}

#[tokio::test(start_paused = true)]
async fn three_timeouts_mark_the_server_down_and_a_probe_after_the_interval_brings_it_back() {
    let f = fake().await;
    let s = server(f.addr);
    for i in 0..3 {
        assert!(!s.is_down(), "down after {i} failures");
        let t0 = Instant::now();
        let r = get(&s).await;
        assert!(matches!(r, Err(UpstreamError::Timeout(_))), "{r:?}");
        assert!(t0.elapsed() >= Duration::from_secs(60), "timed out early");
    }
    assert!(s.is_down(), "up after 3 timeouts in a row");
    // Down: a request fails at once, without waiting for the server.
    let t0 = Instant::now();
    let r = get(&s).await;
    assert!(matches!(r, Err(UpstreamError::Down(_))), "{r:?}");
    assert_eq!(t0.elapsed(), Duration::ZERO);

    // The server answers again; nobody asks before the probe interval.
    f.answering.store(true, Ordering::SeqCst);
    let down_at = Instant::now();
    tokio::time::sleep(PROBE_INTERVAL - Duration::from_millis(1)).await;
    assert!(s.is_down());
    assert_eq!(
        f.probes.load(Ordering::SeqCst),
        0,
        "probed before the interval"
    );
    // The first probe, at the interval, is answered: up again.
    for _ in 0..100 {
        if !s.is_down() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!s.is_down(), "still down after the probe");
    assert_eq!(f.probes.load(Ordering::SeqCst), 1);
    assert!(down_at.elapsed() >= PROBE_INTERVAL);
    assert_eq!(get(&s).await.unwrap(), Bytes::from_static(b"END\r\n"));
}

#[tokio::test(start_paused = true)]
async fn a_reply_resets_the_failure_count() {
    let f = fake().await;
    let s = server(f.addr);
    for _ in 0..2 {
        assert!(matches!(get(&s).await, Err(UpstreamError::Timeout(_))));
    }
    f.answering.store(true, Ordering::SeqCst);
    assert_eq!(get(&s).await.unwrap(), Bytes::from_static(b"END\r\n"));
    f.answering.store(false, Ordering::SeqCst);
    for _ in 0..2 {
        assert!(matches!(get(&s).await, Err(UpstreamError::Timeout(_))));
    }
    assert!(
        !s.is_down(),
        "2 + 2 failures with a reply between are not 3 in a row"
    );
    assert!(matches!(get(&s).await, Err(UpstreamError::Timeout(_))));
    assert!(s.is_down());
}
