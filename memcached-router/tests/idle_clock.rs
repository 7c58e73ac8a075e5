//! The client idle timeout on tokio's paused clock (issue 18): one `connection::serve` over
//! a loopback socket. A client that sends a request now and then is never idle; one that
//! goes quiet (or sends half a command line, a slowloris) is closed `--idle-timeout` after
//! its last request, not before. `version` is answered by the router itself, so no backend
//! is needed. (`tests/abuse.rs` checks the same on a whole router with real time.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ocean_memcached_router::config::Settings;
use ocean_memcached_router::connection::{serve, ClientContext};
use ocean_memcached_router::ketama::KeyHash;
use ocean_memcached_router::route::{Registry, Routes};
use ocean_memcached_router::stats::RouterStats;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const IDLE: Duration = Duration::from_secs(10);

/// A client connected to `serve` running in its own task.
async fn client() -> (BufReader<TcpStream>, JoinHandle<()>) {
    let settings = Arc::new(Settings {
        idle_timeout: IDLE,
        ..Settings::default()
    });
    let stats = Arc::new(RouterStats::default());
    let cancel = CancellationToken::new();
    // Nothing listens there; `version` never reaches a backend.
    let backend = "127.0.0.1:9".parse().unwrap();
    let route = Registry::new(stats.clone()).build(
        &common::pool(&[vec![backend]], KeyHash::Fnv1a64),
        &settings,
        &cancel,
    );
    let ctx = Arc::new(ClientContext {
        route: Arc::new(ArcSwap::from_pointee(Routes::single(route))),
        stats,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (s, _) = listener.accept().await.unwrap();
    let task = tokio::spawn(serve(s, ctx, 0, cancel));
    (BufReader::new(c), task)
}

async fn version(c: &mut BufReader<TcpStream>) {
    c.get_mut().write_all(b"version\r\n").await.unwrap();
    let mut line = String::new();
    c.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("VERSION "), "{line:?}");
}

/// Waits for the server to close: returns how long that took.
async fn closed_after(c: &mut BufReader<TcpStream>) -> Duration {
    let t0 = Instant::now();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    t0.elapsed()
}

#[tokio::test(start_paused = true)]
async fn requests_keep_a_client_open_and_silence_closes_it_at_the_idle_timeout() {
    let (mut c, task) = client().await;
    // A request every 9 s: 45 s without being idle.
    for _ in 0..5 {
        version(&mut c).await;
        tokio::time::sleep(IDLE - Duration::from_secs(1)).await;
        assert!(!task.is_finished(), "closed while the client was active");
    }
    // Then silence: closed 10 s after the last request, counted from it.
    version(&mut c).await;
    assert_eq!(closed_after(&mut c).await, IDLE);
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn half_a_command_line_does_not_reset_the_idle_timeout() {
    let (mut c, task) = client().await;
    version(&mut c).await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // A slowloris: bytes of a line that never ends.
    c.get_mut().write_all(b"get ").await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    c.get_mut().write_all(b"k").await.unwrap();
    closed_after(&mut c).await;
    assert_eq!(
        t0.elapsed(),
        IDLE,
        "closed at the idle timeout after the last request"
    );
    task.await.unwrap();
}
