//! The clock a leader stamps its entries with ([`rampart_kv::Command::At`]) and judges reads of
//! expiring keys against: the wall clock plus an offset that tests (and, if the lead wires one,
//! an operator knob) can move, so expiry can be tested without waiting for real time to pass.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A wall clock in Unix milliseconds, shifted by an adjustable offset. Clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock, with no offset.
    pub fn system() -> Self {
        Self::default()
    }

    /// Unix milliseconds now: the wall clock plus the offset (0 if that is before 1970).
    pub fn now_ms(&self) -> u64 {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let wall = i64::try_from(wall).unwrap_or(i64::MAX);
        u64::try_from(wall.saturating_add(self.offset_ms.load(Ordering::Relaxed))).unwrap_or(0)
    }

    /// Moves the clock by `ms` (negative: back).
    pub fn advance(&self, ms: i64) {
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Sets the offset from the wall clock to `ms`.
    pub fn set_offset(&self, ms: i64) {
        self.offset_ms.store(ms, Ordering::Relaxed);
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}

/// A monotonic millisecond clock (from this node's start), shifted by an adjustable offset that
/// only tests move ([`MonoClock::advance`]). The leader counts leases down by it: wall-clock
/// steps never shorten or stretch a lease. Clones share the offset.
#[derive(Debug, Clone)]
pub struct MonoClock {
    zero: std::time::Instant,
    offset_ms: Arc<AtomicU64>,
}

impl Default for MonoClock {
    fn default() -> Self {
        MonoClock { zero: std::time::Instant::now(), offset_ms: Arc::new(AtomicU64::new(0)) }
    }
}

impl MonoClock {
    /// Milliseconds since this clock was made, plus the offset.
    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.zero.elapsed().as_millis()).unwrap_or(u64::MAX);
        elapsed.saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves the clock forward by `ms` (a monotonic clock never goes back).
    pub fn advance(&self, ms: u64) {
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

/// Stamps never going back on one node: each is at least the clock, the state machine's clock
/// (`floor`, what was already applied, possibly stamped by an earlier leader whose clock ran
/// ahead) and the last stamp issued.
#[derive(Debug, Default)]
pub struct Stamper {
    last: AtomicU64,
}

impl Stamper {
    /// The stamp for the next entry: max(`now`, `floor`, the last stamp issued).
    pub fn next(&self, now: u64, floor: u64) -> u64 {
        let want = now.max(floor);
        let prev = self.last.fetch_max(want, Ordering::AcqRel);
        prev.max(want)
    }

    /// The last stamp issued (0: none).
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_moves_the_clock_and_clones_share_it() {
        let c = Clock::system();
        let shared = c.clone();
        let before = c.now_ms();
        shared.advance(3_600_000);
        assert!(c.now_ms() >= before + 3_600_000);
        shared.set_offset(-i64::MAX);
        assert_eq!(c.now_ms(), 0, "a clock before 1970 reads 0");
    }

    #[test]
    fn stamps_never_go_back_and_never_fall_below_the_applied_clock() {
        let s = Stamper::default();
        assert_eq!(s.next(100, 0), 100);
        assert_eq!(s.next(50, 0), 100, "the clock went back: the last stamp holds");
        assert_eq!(s.next(120, 500), 500, "a clock behind the applied state-machine clock stamps at least it");
        assert_eq!(s.next(130, 0), 500);
        assert_eq!(s.next(900, 0), 900);
        assert_eq!(s.last(), 900);
    }
}
