//! The reply budget of one client connection (`--max-client-reply-bytes`): how many bytes
//! of replies the router holds for a client, counted from the moment a backend reply is
//! framed until it has been written to the client.
//!
//! Two parties share it, so it lives apart from both (no module cycle):
//! - the backend reader ([`crate::upstream`]) [`admit`](ReplyBudget::admit)s each reply it
//!   frames for the client, and refuses it when the client already holds its budget (the
//!   client gets `SERVER_ERROR out of memory writing get response` for that request, as
//!   memcached answers when it cannot buffer a reply); a reply still being framed that
//!   grows past the whole budget is skipped, not buffered;
//! - the client connection ([`crate::connection`]) stops decoding and sending new requests
//!   while [`held`](ReplyBudget::held) is at the budget, and writes what it has.
//!
//! Admitted bytes are released by [`HeldReply`]'s drop, wherever the reply ends: taken by
//! the connection, or dropped unread with a receiver the client no longer waits on.
//! Ordering: plain relaxed atomics; the count is an accounting bound, not a lock, and the
//! two parties may each see the other's update a little late (the bound is then exceeded
//! by at most the replies framed in the meantime, each at most the budget).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

/// One client's reply budget.
#[derive(Debug)]
pub struct ReplyBudget {
    max: usize,
    /// Replies admitted by backend readers and not yet taken by the connection.
    received: AtomicUsize,
    /// Bytes in the connection's write buffer, not yet written.
    unwritten: AtomicUsize,
    /// The largest reply refused since the connection last asked (what a backend sent that
    /// the client did not get), so that the connection sends fewer such requests at once.
    refused: AtomicUsize,
}

impl ReplyBudget {
    /// A budget of `max` bytes (at least 1).
    pub fn new(max: usize) -> Arc<ReplyBudget> {
        Arc::new(ReplyBudget {
            max: max.max(1),
            received: AtomicUsize::new(0),
            unwritten: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        })
    }

    /// The budget in bytes.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Bytes held for the client now: replies received and not taken, plus its write
    /// buffer.
    pub fn held(&self) -> usize {
        self.received
            .load(Ordering::Relaxed)
            .saturating_add(self.unwritten.load(Ordering::Relaxed))
    }

    /// Whether the client holds its whole budget (stop sending its requests on).
    pub fn is_full(&self) -> bool {
        self.held() >= self.max
    }

    /// Records the size of the connection's write buffer.
    pub fn set_unwritten(&self, n: usize) {
        self.unwritten.store(n, Ordering::Relaxed);
    }

    /// Records a reply of (at least) `n` bytes refused for the budget.
    pub fn note_refused(&self, n: usize) {
        self.refused.fetch_max(n, Ordering::Relaxed);
    }

    /// The largest reply refused since the last call (0: none).
    pub fn take_refused(&self) -> usize {
        self.refused.swap(0, Ordering::Relaxed)
    }

    /// Admits a framed reply of `reply.len()` bytes when it fits in what is left of the
    /// budget; `None` refuses it (the caller drops it and answers an error).
    pub fn admit(self: &Arc<Self>, reply: Bytes) -> Option<HeldReply> {
        let n = reply.len();
        if self.held().saturating_add(n) > self.max {
            self.note_refused(n);
            return None;
        }
        self.received.fetch_add(n, Ordering::Relaxed);
        Some(HeldReply {
            bytes: reply,
            admitted: n,
            budget: Some(self.clone()),
        })
    }
}

/// A reply counted against a client's budget until it is dropped or taken.
#[derive(Debug)]
pub struct HeldReply {
    bytes: Bytes,
    /// What was added to the budget's count (released on drop).
    admitted: usize,
    budget: Option<Arc<ReplyBudget>>,
}

impl HeldReply {
    /// A reply no budget counts (probes, fire-and-forget requests).
    pub fn unbudgeted(bytes: Bytes) -> HeldReply {
        HeldReply {
            bytes,
            admitted: 0,
            budget: None,
        }
    }

    /// The reply; its bytes leave the budget now (the connection counts them again as its
    /// write buffer).
    pub fn take(mut self) -> Bytes {
        std::mem::take(&mut self.bytes)
        // `self` drops here and releases the count.
    }
}

impl Drop for HeldReply {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.received.fetch_sub(self.admitted, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admitted_bytes_are_released_when_taken_or_dropped() {
        let b = ReplyBudget::new(10);
        let r1 = b.admit(Bytes::from_static(b"123456")).unwrap();
        assert_eq!(b.held(), 6);
        assert!(
            b.admit(Bytes::from_static(b"12345")).is_none(),
            "6 + 5 > 10"
        );
        let r2 = b.admit(Bytes::from_static(b"1234")).unwrap();
        assert!(b.is_full());
        assert_eq!(r1.take().len(), 6);
        assert_eq!(b.held(), 4);
        b.set_unwritten(6);
        assert!(b.is_full(), "the write buffer counts too");
        drop(r2);
        b.set_unwritten(0);
        assert_eq!(b.held(), 0);
        assert!(
            b.admit(Bytes::from(vec![0u8; 11])).is_none(),
            "larger than the budget"
        );
        assert_eq!(b.take_refused(), 11);
        assert_eq!(b.take_refused(), 0);
    }
}
