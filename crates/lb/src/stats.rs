//! Lock-free counters and a log-linear latency histogram for /stats and /metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Sub-buckets per power of two: relative error at most 1/8 = 12.5 %.
const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets cover 0 .. 2^40 µs (about 12 days); larger values land in the last.
const BUCKETS: usize = ((40 - SUB_BITS + 1) as usize + 1) * SUB as usize;

/// Latency histogram in microseconds with fixed memory (`BUCKETS` counters).
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

fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
    let idx = ((exp - SUB_BITS + 1) as u64 * SUB + sub) as usize;
    idx.min(BUCKETS - 1)
}

/// Largest value that falls in bucket `idx`.
fn bucket_upper(idx: usize) -> u64 {
    let idx = idx as u64;
    if idx < SUB {
        return idx;
    }
    let exp = idx / SUB - 1 + u64::from(SUB_BITS);
    let sub = idx % SUB;
    let lower = (1u64 << exp) + (sub << (exp - u64::from(SUB_BITS)));
    lower + (1u64 << (exp - u64::from(SUB_BITS))) - 1
}

impl Histogram {
    pub fn record_us(&self, v: u64) {
        self.buckets[bucket_of(v)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(v, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Relaxed)
    }

    /// Value at quantile `q` (0..=1), as the upper edge of its bucket; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_upper(i);
            }
        }
        bucket_upper(BUCKETS - 1)
    }
}

/// A plain counter.
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
        fn bucket_bounds_contain_value(v in 0u64..(1u64 << 40)) {
            let i = bucket_of(v);
            prop_assert!(bucket_upper(i) >= v);
            if i > 0 { prop_assert!(bucket_upper(i - 1) < v); }
            // 12.5 % relative error at most.
            prop_assert!(bucket_upper(i) as f64 <= v as f64 * 1.125 + 1.0);
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
    }
}
