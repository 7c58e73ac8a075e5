//! How a client connection reads while the daemon drains (SIGTERM).
//!
//! Request/response protocols (Redis, memcached, MySQL) have no way to say "this is the
//! last reply", so a drain ends each connection at a request boundary:
//! - a reader blocked on an idle client wakes up at once;
//! - what the client sent before the signal is still served: for [`GRACE`] after the drain
//!   began, bytes that arrive are read and answered (on loopback or a LAN, everything sent
//!   before the signal is in the socket by then);
//! - a request half read is read to its end (bounded by the idle timeout and, above all, by
//!   the binary's `--drain-timeout`);
//! - then, at the next boundary, the reader stops; the connection's writer flushes the
//!   replies still owed and closes.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long after the drain began a connection keeps reading new requests.
pub const GRACE: Duration = Duration::from_millis(100);

/// What a read under [`DrainWatch::read`] came to.
#[derive(Debug)]
pub enum Read {
    /// The read finished (bytes, EOF or an error), as it would without a drain.
    Done(io::Result<usize>),
    /// The drain began while the read waited: read again (nothing was lost: the read is
    /// cancel safe), now under the drain's rules.
    Again,
    /// The drain ended this connection at a request boundary: stop reading, flush, close.
    Stop,
}

/// A connection's view of the drain token.
#[derive(Debug, Clone)]
pub struct DrainWatch {
    token: CancellationToken,
    /// When reading new requests stops; set when the drain is first seen.
    deadline: Option<Instant>,
}

impl DrainWatch {
    pub fn new(token: CancellationToken) -> DrainWatch {
        DrainWatch {
            token,
            deadline: None,
        }
    }

    /// A watch that never drains (tests, tools).
    pub fn never() -> DrainWatch {
        DrainWatch::new(CancellationToken::new())
    }

    /// Whether the daemon is draining.
    pub fn draining(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Runs `read` (a cancel-safe read, such as `read_buf`) under the drain policy.
    /// `at_boundary`: nothing of a request is buffered, so stopping loses nothing.
    pub async fn read<F>(&mut self, at_boundary: bool, read: F) -> Read
    where
        F: Future<Output = io::Result<usize>>,
    {
        if !self.token.is_cancelled() {
            return tokio::select! {
                biased;
                r = read => Read::Done(r),
                () = self.token.cancelled() => Read::Again,
            };
        }
        let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + GRACE);
        if !at_boundary {
            return Read::Done(read.await);
        }
        match tokio::time::timeout_at(deadline, read).await {
            Ok(r) => Read::Done(r),
            Err(_) => Read::Stop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads as a connection loop does: again after [`Read::Again`].
    async fn read_until_done<F, Fut>(w: &mut DrainWatch, at_boundary: bool, mut read: F) -> Read
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = io::Result<usize>>,
    {
        loop {
            match w.read(at_boundary, read()).await {
                Read::Again => continue,
                r => return r,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_reader_stops_after_the_grace_and_a_busy_one_finishes_its_request() {
        let token = CancellationToken::new();
        let mut idle = DrainWatch::new(token.clone());
        let t = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            t.cancel();
        });
        let t0 = Instant::now();
        let r = read_until_done(&mut idle, true, std::future::pending::<io::Result<usize>>).await;
        assert!(matches!(r, Read::Stop));
        assert_eq!(t0.elapsed(), Duration::from_secs(5) + GRACE);

        // Bytes that arrive within the grace are still read.
        let mut late = DrainWatch::new(token.clone());
        let r = read_until_done(&mut late, true, || async {
            tokio::time::sleep(GRACE / 2).await;
            Ok(7)
        })
        .await;
        assert!(matches!(r, Read::Done(Ok(7))));

        // Mid-request, the read is waited for whatever the grace.
        let mut mid = DrainWatch::new(token);
        let r = read_until_done(&mut mid, false, || async {
            tokio::time::sleep(GRACE * 10).await;
            Ok(3)
        })
        .await;
        assert!(matches!(r, Read::Done(Ok(3))));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_drain_a_read_is_a_read() {
        let mut w = DrainWatch::never();
        let r = read_until_done(&mut w, true, || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(1)
        })
        .await;
        assert!(matches!(r, Read::Done(Ok(1))));
        assert!(!w.draining());
    }
}
