//! Weighted random choice among eligible backends.

use super::{weighted_random, BackendView, Balancer, RequestCtx, SplitMix64};

#[derive(Debug)]
pub struct RandomPick {
    rng: SplitMix64,
}

impl RandomPick {
    pub fn new(seed: u64) -> Self {
        RandomPick { rng: SplitMix64::new(seed) }
    }
}

impl Balancer for RandomPick {
    fn pick(&mut self, backends: &[BackendView], _ctx: &RequestCtx) -> Option<usize> {
        weighted_random(backends, &mut self.rng)
    }

    fn name(&self) -> &'static str {
        "random"
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn follows_weights() {
        let v = vec![view(1, true, 0, None), view(3, true, 0, None), view(9, false, 0, None)];
        let mut r = RandomPick::new(3);
        let mut counts = [0u32; 3];
        for _ in 0..8000 {
            counts[r.pick(&v, &RequestCtx::default()).unwrap()] += 1;
        }
        assert_eq!(counts[2], 0);
        // Expected 2000 / 6000; a seeded generator makes this deterministic.
        assert!((1700..=2300).contains(&counts[0]), "{counts:?}");
    }
}
