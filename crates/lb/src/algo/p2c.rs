//! Power of two random choices: draw two distinct eligible backends at random
//! and take the one with the lower cost, where
//! cost = (in-flight + 1) x peak-EWMA latency / weight.
//!
//! Peak EWMA (as in Finagle and Linkerd): a sample above the estimate replaces
//! it at once, a lower one is blended in; between samples the estimate decays
//! towards zero with time constant [`DECAY_US`]. So a backend that turns slow
//! is avoided at once, and one that was avoided (or failed) is tried again
//! after a while instead of starving forever. Time comes in through
//! [`RequestCtx::now_us`], so the algorithm stays pure.

use std::time::Duration;

use super::{BackendView, Balancer, Outcome, RequestCtx, SplitMix64};

/// Time constant of the decay: 10 s.
pub const DECAY_US: f64 = 10_000_000.0;
/// A failure counts as a sample of this latency.
const FAILURE_PENALTY_US: f64 = 1_000_000.0;

#[derive(Clone, Copy, Debug, Default)]
struct Estimate {
    ewma_us: f64,
    at_us: u64,
}

impl Estimate {
    fn decayed(&self, now_us: u64) -> f64 {
        let dt = now_us.saturating_sub(self.at_us) as f64;
        self.ewma_us * (-dt / DECAY_US).exp()
    }
}

#[derive(Debug)]
pub struct PowerOfTwo {
    rng: SplitMix64,
    est: Vec<Estimate>,
    /// Latest time seen in a pick (feedback carries no clock of its own).
    now_us: u64,
    scratch: Vec<usize>,
}

impl PowerOfTwo {
    pub fn new(n: usize, seed: u64) -> Self {
        PowerOfTwo { rng: SplitMix64::new(seed), est: vec![Estimate::default(); n], now_us: 0, scratch: Vec::new() }
    }

    /// Latency estimate of `backend` at `now_us`, in microseconds (0 before any sample).
    pub fn estimate_us(&self, backend: usize, now_us: u64) -> f64 {
        self.est.get(backend).map_or(0.0, |e| e.decayed(now_us))
    }

    fn cost(&self, i: usize, b: &BackendView) -> f64 {
        (f64::from(b.active) + 1.0) * self.estimate_us(i, self.now_us) / f64::from(b.weight.max(1))
    }
}

impl Balancer for PowerOfTwo {
    fn pick(&mut self, backends: &[BackendView], ctx: &RequestCtx) -> Option<usize> {
        if self.est.len() != backends.len() {
            self.est.resize(backends.len(), Estimate::default());
        }
        self.now_us = self.now_us.max(ctx.now_us);
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
        let now = self.now_us;
        let Some(e) = self.est.get_mut(backend) else { return };
        let sample = match outcome {
            Outcome::Success => latency.as_secs_f64() * 1e6,
            Outcome::Failure => FAILURE_PENALTY_US.max(latency.as_secs_f64() * 1e6),
        };
        let cur = e.decayed(now);
        e.ewma_us = if sample > cur {
            sample
        } else {
            // Blend with a weight that grows with the time since the last sample,
            // at least 10 % so that a stream of fast samples pulls it down.
            let dt = now.saturating_sub(e.at_us) as f64;
            let w = (1.0 - (-dt / DECAY_US).exp()).max(0.1);
            cur + w * (sample - cur)
        };
        e.at_us = now;
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

    fn at(now_us: u64) -> RequestCtx {
        RequestCtx { hash_key: 0, now_us }
    }

    #[test]
    fn prefers_the_faster_backend() {
        let v = vec![view(1, true, 0, None), view(1, true, 0, None), view(1, true, 0, None)];
        let mut p = PowerOfTwo::new(3, 11);
        let mut counts = [0u32; 3];
        let mut now = 0u64;
        for _ in 0..3000 {
            now += 1_000;
            let i = p.pick(&v, &at(now)).unwrap();
            counts[i] += 1;
            // Backend 2 is ten times slower than the others.
            let ms = if i == 2 { 20 } else { 2 };
            p.on_finish(i, Duration::from_millis(ms), Outcome::Success);
        }
        assert!(counts[2] * 5 < counts[0].min(counts[1]), "{counts:?}");
    }

    #[test]
    fn an_avoided_backend_is_tried_again_later() {
        let v = vec![view(1, true, 0, None), view(1, true, 0, None)];
        let mut p = PowerOfTwo::new(2, 5);
        p.pick(&v, &at(1));
        p.on_finish(0, Duration::from_millis(2), Outcome::Success);
        p.on_finish(1, Duration::ZERO, Outcome::Failure);
        // Right after the failure backend 1 loses every comparison ...
        for k in 0..50 {
            assert_eq!(p.pick(&v, &at(2 + k)), Some(0));
            p.on_finish(0, Duration::from_millis(2), Outcome::Success);
        }
        // ... but without news its estimate decays while backend 0 keeps
        // reporting 2 ms: after about 10 s x ln(1 s / 2 ms) = 62 s it wins again.
        let mut now = 100u64;
        let mut retried_at = None;
        for _ in 0..1_000 {
            now += 100_000;
            let i = p.pick(&v, &at(now)).unwrap();
            if i == 1 {
                retried_at = Some(now);
                break;
            }
            p.on_finish(0, Duration::from_millis(2), Outcome::Success);
        }
        let t = retried_at.expect("backend 1 never tried again");
        assert!((55_000_000..70_000_000).contains(&t), "tried again after {t} us");
    }

    #[test]
    fn untried_backends_are_tried_first() {
        let v = vec![view(1, true, 0, None), view(1, true, 0, None)];
        let mut p = PowerOfTwo::new(2, 9);
        let first = p.pick(&v, &at(10)).unwrap();
        p.on_finish(first, Duration::from_millis(1), Outcome::Success);
        assert_eq!(p.pick(&v, &at(20)), Some(1 - first));
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
            for i in 0..v.len() {
                p.pick(&v, &at(1));
                p.on_finish(i, Duration::from_millis(5), Outcome::Success);
            }
            for _ in 0..50 {
                let i = p.pick(&v, &at(1)).unwrap();
                if n_max == 1 {
                    prop_assert!(loads[i] < max);
                }
            }
        }

        #[test]
        fn peak_ewma_jumps_up_and_comes_down(slow_ms in 10u64..1000) {
            let v = vec![view(1, true, 0, None)];
            let mut p = PowerOfTwo::new(1, 1);
            p.pick(&v, &at(1_000));
            p.on_finish(0, Duration::from_millis(slow_ms), Outcome::Success);
            prop_assert!((p.estimate_us(0, 1_000) - slow_ms as f64 * 1000.0).abs() < 1.0);
            p.pick(&v, &at(2_000));
            p.on_finish(0, Duration::from_millis(1), Outcome::Success);
            let after = p.estimate_us(0, 2_000);
            prop_assert!(after < slow_ms as f64 * 1000.0 && after > 1000.0);
        }
    }
}
