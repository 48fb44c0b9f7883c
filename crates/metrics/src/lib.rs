//! rampart-metrics: lock-free counters and a log-linear latency histogram,
//! the one implementation behind the load balancer's `/stats` and
//! `/metrics` and the server's Prometheus `/metrics`.
//!
//! It knows nothing of its users: no I/O, no clock, no exposition format.
//! Callers read plain numbers (counts, sums, quantiles, cumulative bucket
//! counts) and render them as they must.
//!
//! # The histogram
//!
//! Values are microseconds. Below [`SUB`] µs every value has its own bucket;
//! above, each power of two is cut into [`SUB`] equal sub-buckets, so a
//! bucket's upper edge is at most 12.5 % above any value in it. Buckets cover
//! 0 .. 2^40 µs (about 12 days); larger values land in the last one. Memory is
//! fixed ([`BUCKETS`] counters) and recording is three relaxed atomic adds.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// log2 of the sub-buckets per power of two.
const SUB_BITS: u32 = 3;
/// Sub-buckets per power of two: relative error at most 1/8 = 12.5 %.
pub const SUB: u64 = 1 << SUB_BITS;
/// Largest power of two with buckets of its own: 2^40 µs.
const EXP_MAX: u32 = 40;
/// Buckets in a histogram (fixed memory: one counter each).
pub const BUCKETS: usize = ((EXP_MAX - SUB_BITS + 1) as usize + 1) * SUB as usize;

/// Index of the bucket holding `v` µs.
fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
    let idx = ((exp - SUB_BITS + 1) as u64 * SUB + sub) as usize;
    idx.min(BUCKETS - 1)
}

/// Largest value (µs) that falls in bucket `idx`.
fn bucket_upper_us(idx: usize) -> u64 {
    assert!(idx < BUCKETS, "bucket {idx} out of range");
    let idx = idx as u64;
    if idx < SUB {
        return idx;
    }
    let exp = idx / SUB - 1 + u64::from(SUB_BITS);
    let sub = idx % SUB;
    let lower = (1u64 << exp) + (sub << (exp - u64::from(SUB_BITS)));
    lower + (1u64 << (exp - u64::from(SUB_BITS))) - 1
}

/// Latency histogram in microseconds with fixed memory ([`BUCKETS`] counters).
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one value of `v` µs.
    pub fn record_us(&self, v: u64) {
        self.buckets[bucket_of(v)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(v, Relaxed);
    }

    /// Records a duration (whole microseconds; longer than u64 µs saturates).
    pub fn record(&self, d: Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Values recorded so far.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Sum of the values recorded so far, in µs (wraps after 2^64 µs).
    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Relaxed)
    }

    /// Value at quantile `q` (0..=1), as the upper edge of its bucket; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        self.snapshot().quantile_us(q)
    }

    /// The bucket counts as they are now, read once, so that numbers derived
    /// from one snapshot agree with each other while recording goes on.
    pub fn snapshot(&self) -> Snapshot {
        let counts: Box<[u64]> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        Snapshot { counts, sum_us: self.sum_us() }
    }
}

/// Bucket counts of a [`Histogram`] at one moment.
pub struct Snapshot {
    counts: Box<[u64]>,
    sum_us: u64,
}

impl Snapshot {
    /// Values in the snapshot.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of the values in µs (read just after the buckets).
    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    /// Value at quantile `q` (0..=1), as the upper edge of its bucket; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_upper_us(i);
            }
        }
        unreachable!("rank {rank} is at most the total {total}")
    }

    /// Values in buckets that lie wholly at or below `bound_us`: a cumulative
    /// ("le") bucket count for an exposition with fixed bounds. Exact when
    /// `bound_us` is a bucket edge; otherwise it leaves out the values of the
    /// one bucket that straddles the bound (all within 12.5 % below it).
    /// Never decreases as `bound_us` grows.
    pub fn count_at_most_us(&self, bound_us: u64) -> u64 {
        let straddling = bucket_of(bound_us);
        let whole = if bucket_upper_us(straddling) <= bound_us { straddling + 1 } else { straddling };
        self.counts[..whole].iter().sum()
    }
}

/// A monotonic counter.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bucket_bounds_contain_value(v in 0u64..(1u64 << EXP_MAX)) {
            let i = bucket_of(v);
            prop_assert!(bucket_upper_us(i) >= v);
            if i > 0 { prop_assert!(bucket_upper_us(i - 1) < v); }
            // 12.5 % relative error at most.
            prop_assert!(bucket_upper_us(i) as f64 <= v as f64 * 1.125 + 1.0);
        }

        #[test]
        fn quantiles_within_error(mut values in proptest::collection::vec(1u64..10_000_000, 1..300), q in 0.01f64..1.0) {
            let h = Histogram::default();
            for &v in &values { h.record_us(v); }
            values.sort_unstable();
            let rank = ((q * values.len() as f64).ceil() as usize).max(1);
            let exact = values[rank - 1];
            let got = h.quantile_us(q);
            prop_assert!(got >= exact && got as f64 <= exact as f64 * 1.125 + 1.0, "q {q} exact {exact} got {got}");
        }

        /// A cumulative count never overstates, is exact at bucket edges, and
        /// misses only values within 12.5 % below the bound.
        #[test]
        fn cumulative_counts_bounded(values in proptest::collection::vec(0u64..10_000_000, 0..300), bound in 0u64..12_000_000) {
            let h = Histogram::default();
            for &v in &values { h.record_us(v); }
            let s = h.snapshot();
            let exact = values.iter().filter(|&&v| v <= bound).count() as u64;
            let near = values.iter().filter(|&&v| v <= bound && (v as f64) < bound as f64 / 1.125 - 1.0).count() as u64;
            let got = s.count_at_most_us(bound);
            prop_assert!(got <= exact && got >= near, "bound {bound}: exact {exact} near {near} got {got}");
            let edge = bucket_upper_us(bucket_of(bound));
            let exact_at_edge = values.iter().filter(|&&v| v <= edge).count() as u64;
            prop_assert_eq!(s.count_at_most_us(edge), exact_at_edge);
            prop_assert!(s.count_at_most_us(bound.saturating_add(1)) >= got);
            prop_assert_eq!(s.count(), values.len() as u64);
        }
    }

    #[test]
    fn empty_and_extremes() {
        let h = Histogram::default();
        assert_eq!((h.count(), h.sum_us(), h.quantile_us(0.99)), (0, 0, 0));
        h.record(Duration::from_secs(u64::MAX));
        h.record_us(0);
        assert_eq!(h.count(), 2);
        assert_eq!(h.quantile_us(0.0), 0);
        assert_eq!(h.quantile_us(1.0), bucket_upper_us(BUCKETS - 1));
        assert_eq!(h.snapshot().count_at_most_us(u64::MAX), 2);
        let c = Counter::default();
        c.inc();
        c.add(41);
        assert_eq!(c.get(), 42);
    }
}
