//! Weighted least connections: the eligible backend with the fewest in-flight
//! requests per unit of weight; ties are broken at random (reservoir sampling)
//! so that a fleet of idle backends does not all start with the first one.

use super::{BackendView, Balancer, RequestCtx, SplitMix64};

#[derive(Debug)]
pub struct LeastConnections {
    rng: SplitMix64,
}

impl LeastConnections {
    pub fn new(seed: u64) -> Self {
        LeastConnections { rng: SplitMix64::new(seed) }
    }
}

impl Balancer for LeastConnections {
    fn pick(&mut self, backends: &[BackendView], _ctx: &RequestCtx) -> Option<usize> {
        let mut best: Option<usize> = None;
        let mut ties: u64 = 0;
        for (i, b) in backends.iter().enumerate() {
            if !b.eligible() {
                continue;
            }
            let Some(j) = best else {
                best = Some(i);
                ties = 1;
                continue;
            };
            // Compare active_i / w_i with active_j / w_j without division.
            let lhs = u64::from(b.active) * u64::from(backends[j].weight.max(1));
            let rhs = u64::from(backends[j].active) * u64::from(b.weight.max(1));
            if lhs < rhs {
                best = Some(i);
                ties = 1;
            } else if lhs == rhs {
                ties += 1;
                if self.rng.below(ties) == 0 {
                    best = Some(i);
                }
            }
        }
        best
    }

    fn name(&self) -> &'static str {
        "least_connections"
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The pick has the minimal active/weight ratio among eligible backends.
        #[test]
        fn picks_a_minimum(views in views(), seed in any::<u64>()) {
            let mut lc = LeastConnections::new(seed);
            if let Some(i) = lc.pick(&views, &RequestCtx::default()) {
                let ratio = |v: &BackendView| f64::from(v.active) / f64::from(v.weight.max(1));
                for v in views.iter().filter(|v| v.eligible()) {
                    prop_assert!(ratio(&views[i]) <= ratio(v));
                }
            }
        }
    }

    #[test]
    fn ties_are_spread() {
        let v = vec![view(1, true, 2, None); 4];
        let mut lc = LeastConnections::new(7);
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            counts[lc.pick(&v, &RequestCtx::default()).unwrap()] += 1;
        }
        for c in counts {
            assert!((800..=1200).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn weight_counts() {
        // 4 active on weight 4 (ratio 1) beats 2 active on weight 1 (ratio 2).
        let v = vec![view(1, true, 2, None), view(4, true, 4, None)];
        let mut lc = LeastConnections::new(1);
        assert_eq!(lc.pick(&v, &RequestCtx::default()), Some(1));
    }
}
