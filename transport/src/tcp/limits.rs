//! The transport's resource limits: redial and accept backoff, the cap on
//! bytes of partial frames, connection slots, and the counters of limits hit.

use core::fmt;
use core::time::Duration;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::{Buf, BytesMut};

use crate::framing::HEADER_LEN;

/// The first pause after a failed `accept` (EMFILE, ENFILE, ...).
pub(super) const ACCEPT_BACKOFF_INITIAL: Duration = Duration::from_millis(10);
/// The longest pause after failed `accept`s in a row.
pub(super) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The least a read asks for: small frames are read several at a time.
const READ_AHEAD: usize = 8 * 1024;
/// The most one read asks for, however large the frame.
const READ_MAX: usize = 64 * 1024;

/// Exponential backoff: `initial`, doubling up to `max`, back to `initial`
/// on [`reset`](Self::reset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(super) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial.min(max),
        }
    }

    /// The pause to take now; the next one is twice as long, up to `max`.
    pub(super) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// Success: start over from `initial`.
    pub(super) fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }
}

/// How many bytes the next read of `buf` should ask for: what the frame
/// at its front still lacks, but at least [`READ_AHEAD`] and at most
/// [`READ_MAX`], so a claimed length never reserves memory by itself.
pub(super) fn read_size(buf: &BytesMut) -> usize {
    let need = match buf.get(..4) {
        Some(mut len) => {
            let len = usize::try_from(len.get_u32()).unwrap_or(usize::MAX);
            HEADER_LEN.saturating_add(len).saturating_sub(buf.len())
        }
        None => HEADER_LEN - buf.len(),
    };
    need.clamp(READ_AHEAD, READ_MAX)
}

/// Bytes of partial frames held by all connections, kept under a cap.
#[derive(Debug)]
pub(super) struct Budget {
    held: AtomicUsize,
    cap: usize,
}

impl Budget {
    pub(super) fn new(cap: usize) -> Self {
        Budget {
            held: AtomicUsize::new(0),
            cap,
        }
    }

    /// Bytes held now.
    pub(super) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The cap.
    pub(super) fn cap(&self) -> usize {
        self.cap
    }

    fn try_add(&self, n: usize) -> bool {
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(n).filter(|total| *total <= self.cap)
            })
            .is_ok()
    }

    fn sub(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::Relaxed);
    }
}

/// One connection's share of a [`Budget`] (none for an exempt
/// connection), given back when dropped.
#[derive(Debug)]
pub(super) struct Charge<'a> {
    budget: Option<&'a Budget>,
    held: usize,
}

impl<'a> Charge<'a> {
    pub(super) fn new(budget: Option<&'a Budget>) -> Self {
        Charge { budget, held: 0 }
    }

    /// Makes this connection's share `len` bytes (its buffer's length).
    /// `false` when growing to `len` would pass the cap; the share is then
    /// unchanged and the connection must close.
    pub(super) fn set(&mut self, len: usize) -> bool {
        let Some(budget) = self.budget else {
            return true;
        };
        if len > self.held {
            if !budget.try_add(len - self.held) {
                return false;
            }
        } else {
            budget.sub(self.held - len);
        }
        self.held = len;
        true
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        if let Some(budget) = self.budget {
            budget.sub(self.held);
        }
    }
}

/// A taken accept slot (of [`TcpConfig::max_connections`](super::TcpConfig::max_connections)),
/// given back when dropped.
#[derive(Debug)]
pub(super) struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A slot from `used`, unless `max` are taken.
    pub(super) fn take(used: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(Arc::clone(used)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A limit that closes a connection when hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Limit {
    MaxConnections,
    HelloTimeout,
    IdleTimeout,
    ClientFrame,
    BufferedBytes,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::MaxConnections => "max_connections",
            Limit::HelloTimeout => "hello_timeout (ms)",
            Limit::IdleTimeout => "idle_timeout (ms)",
            Limit::ClientFrame => "client_max_frame (bytes)",
            Limit::BufferedBytes => "max_buffered_bytes",
        })
    }
}

/// Counts of what the transport refused or closed.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) refused_hellos: AtomicU64,
    pub(super) malformed: AtomicU64,
    pub(super) accept_errors: AtomicU64,
    pub(super) dropped: AtomicU64,
    max_connections: AtomicU64,
    hello_timeout: AtomicU64,
    idle_timeout: AtomicU64,
    client_frame: AtomicU64,
    buffered_bytes: AtomicU64,
}

impl Counters {
    pub(super) fn limit(&self, limit: Limit) -> &AtomicU64 {
        match limit {
            Limit::MaxConnections => &self.max_connections,
            Limit::HelloTimeout => &self.hello_timeout,
            Limit::IdleTimeout => &self.idle_timeout,
            Limit::ClientFrame => &self.client_frame,
            Limit::BufferedBytes => &self.buffered_bytes,
        }
    }
}

/// Adds one to a counter.
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Reads a counter.
pub(super) fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Milliseconds, for logs and counters.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_from_10_ms_to_1_s_and_resets() {
        let mut b = Backoff::new(ACCEPT_BACKOFF_INITIAL, ACCEPT_BACKOFF_MAX);
        let ms: Vec<u128> = (0..10).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(10));
        assert_eq!(b.next_delay(), Duration::from_millis(20));
    }

    #[test]
    fn backoff_with_initial_above_max_stays_at_max() {
        let mut b = Backoff::new(Duration::from_secs(9), Duration::from_secs(2));
        assert_eq!(b.next_delay(), Duration::from_secs(2));
        assert_eq!(b.next_delay(), Duration::from_secs(2));
    }

    #[test]
    fn reads_ask_for_the_frame_s_remainder_within_bounds() {
        // No header yet, or a small frame: the read-ahead.
        assert_eq!(read_size(&BytesMut::new()), READ_AHEAD);
        let mut small = BytesMut::from(&[0, 0, 0, 10, 0, 0, 0, 0, 0][..]);
        assert_eq!(read_size(&small), READ_AHEAD);
        // A claimed 4 GiB frame asks for one bounded read only.
        small[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(read_size(&small), READ_MAX);
        // A 20 KiB frame with 9 + 1000 bytes in: the rest of it.
        let mut part = BytesMut::from(&(20u32 * 1024).to_be_bytes()[..]);
        part.resize(HEADER_LEN + 1000, 0);
        assert_eq!(read_size(&part), 20 * 1024 - 1000);
    }

    #[test]
    fn charges_never_pass_the_cap_and_are_given_back() {
        let budget = Budget::new(100);
        let mut a = Charge::new(Some(&budget));
        let mut b = Charge::new(Some(&budget));
        let mut exempt = Charge::new(None);
        assert!(exempt.set(1000));
        assert!(a.set(60));
        assert!(!b.set(41), "would pass the cap");
        assert_eq!(budget.held(), 60);
        assert!(b.set(40));
        assert_eq!(budget.held(), 100);
        assert!(a.set(10));
        assert_eq!(budget.held(), 50);
        drop(b);
        assert_eq!(budget.held(), 10);
        drop(a);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn slots_are_bounded_and_given_back() {
        let used = Arc::new(AtomicUsize::new(0));
        let one = Slot::take(&used, 2).unwrap();
        let two = Slot::take(&used, 2).unwrap();
        assert!(Slot::take(&used, 2).is_none());
        drop(one);
        let three = Slot::take(&used, 2);
        assert!(three.is_some());
        drop((two, three));
        assert_eq!(used.load(Ordering::Relaxed), 0);
    }
}
