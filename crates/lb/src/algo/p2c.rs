//! Power of two random choices: draw two distinct eligible backends at random
//! and take the one with the lower cost, where cost = (in-flight + 1) x peak-EWMA
//! latency / weight. Peak EWMA jumps up at once to a slower observation and
//! decays slowly, so a backend that turns slow is avoided quickly and trusted
//! again only gradually (the Finagle / Linkerd scheme, with a per-sample decay
//! instead of a clock so the algorithm stays pure).

use std::time::Duration;

use super::{BackendView, Balancer, Outcome, RequestCtx, SplitMix64};

/// Weight of a new sample below the current estimate.
const EWMA_ALPHA: f64 = 0.1;
/// Estimate before the first observation: 1 ms, so new backends get tried.
const EWMA_INITIAL_US: f64 = 1_000.0;
/// A failure counts as this many times the current estimate (at least 1 s).
const FAILURE_PENALTY_FACTOR: f64 = 4.0;
const FAILURE_PENALTY_MIN_US: f64 = 1_000_000.0;

#[derive(Debug)]
pub struct PowerOfTwo {
    rng: SplitMix64,
    ewma_us: Vec<f64>,
    scratch: Vec<usize>,
}

impl PowerOfTwo {
    pub fn new(n: usize, seed: u64) -> Self {
        PowerOfTwo { rng: SplitMix64::new(seed), ewma_us: vec![EWMA_INITIAL_US; n], scratch: Vec::new() }
    }

    /// Current latency estimate of `backend`, in microseconds.
    pub fn ewma_us(&self, backend: usize) -> f64 {
        self.ewma_us.get(backend).copied().unwrap_or(EWMA_INITIAL_US)
    }

    fn cost(&self, i: usize, b: &BackendView) -> f64 {
        (f64::from(b.active) + 1.0) * self.ewma_us(i) / f64::from(b.weight.max(1))
    }
}

impl Balancer for PowerOfTwo {
    fn pick(&mut self, backends: &[BackendView], _ctx: &RequestCtx) -> Option<usize> {
        if self.ewma_us.len() != backends.len() {
            self.ewma_us.resize(backends.len(), EWMA_INITIAL_US);
        }
        self.scratch.clear();
        self.scratch.extend((0..backends.len()).filter(|&i| backends[i].eligible()));
        let n = self.scratch.len() as u64;
        match n {
            0 => None,
            1 => Some(self.scratch[0]),
            _ => {
                let a = self.rng.below(n);
                let mut b = self.rng.below(n - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (self.scratch[a as usize], self.scratch[b as usize]);
                let (ca, cb) = (self.cost(a, &backends[a]), self.cost(b, &backends[b]));
                Some(if cb < ca { b } else { a })
            }
        }
    }

    fn on_finish(&mut self, backend: usize, latency: Duration, outcome: Outcome) {
        let Some(cur) = self.ewma_us.get_mut(backend) else {
            return;
        };
        let mut sample = latency.as_secs_f64() * 1e6;
        if outcome == Outcome::Failure {
            sample = (*cur * FAILURE_PENALTY_FACTOR).max(FAILURE_PENALTY_MIN_US);
        }
        if sample > *cur {
            *cur = sample;
        } else {
            *cur += EWMA_ALPHA * (sample - *cur);
        }
    }

    fn name(&self) -> &'static str {
        "p2c"
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefers_the_faster_backend() {
        let v = vec![view(1, true, 0, None), view(1, true, 0, None), view(1, true, 0, None)];
        let mut p = PowerOfTwo::new(3, 11);
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            let i = p.pick(&v, &RequestCtx::default()).unwrap();
            counts[i] += 1;
            // Backend 2 is ten times slower than the others.
            let ms = if i == 2 { 20 } else { 2 };
            p.on_finish(i, Duration::from_millis(ms), Outcome::Success);
        }
        assert!(counts[2] * 5 < counts[0].min(counts[1]), "{counts:?}");
    }

    proptest! {
        /// With equal latency the less loaded of any two is chosen, so the most
        /// loaded eligible backend is never picked when loads differ.
        #[test]
        fn never_picks_the_strictly_most_loaded(loads in proptest::collection::vec(0u32..50, 2..8), seed in any::<u64>()) {
            let v: Vec<BackendView> = loads.iter().map(|&a| view(1, true, a, None)).collect();
            let max = *loads.iter().max().unwrap();
            let n_max = loads.iter().filter(|&&a| a == max).count();
            let mut p = PowerOfTwo::new(v.len(), seed);
            for _ in 0..50 {
                let i = p.pick(&v, &RequestCtx::default()).unwrap();
                if n_max == 1 {
                    prop_assert!(loads[i] < max);
                }
            }
        }

        #[test]
        fn peak_ewma_jumps_up_decays_down(slow_ms in 10u64..1000) {
            let mut p = PowerOfTwo::new(1, 1);
            p.on_finish(0, Duration::from_millis(slow_ms), Outcome::Success);
            prop_assert!((p.ewma_us(0) - slow_ms as f64 * 1000.0).abs() < 1.0);
            p.on_finish(0, Duration::from_millis(1), Outcome::Success);
            let after = p.ewma_us(0);
            prop_assert!(after < slow_ms as f64 * 1000.0 && after > 1000.0);
        }
    }
}
