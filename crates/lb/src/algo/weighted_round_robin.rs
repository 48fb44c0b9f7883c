//! Smooth weighted round robin, as nginx does it: each pick adds every
//! eligible backend's weight to its running score, takes the highest score and
//! subtracts the total weight from it. Weights 5,1,1 give `a a b a c a a`, not
//! `a a a a a b c`: the heavy backend never gets a burst.

use super::{BackendView, Balancer, RequestCtx};

#[derive(Debug)]
pub struct WeightedRoundRobin {
    current: Vec<i64>,
}

impl WeightedRoundRobin {
    pub fn new(n: usize) -> Self {
        WeightedRoundRobin { current: vec![0; n] }
    }
}

impl Balancer for WeightedRoundRobin {
    fn pick(&mut self, backends: &[BackendView], _ctx: &RequestCtx) -> Option<usize> {
        if self.current.len() != backends.len() {
            self.current = vec![0; backends.len()];
        }
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for (i, b) in backends.iter().enumerate() {
            if !b.eligible() {
                // An ineligible backend neither gains nor keeps credit, so it
                // does not come back with a burst.
                self.current[i] = 0;
                continue;
            }
            let w = i64::from(b.weight.max(1));
            self.current[i] += w;
            total += w;
            if best.is_none_or(|j| self.current[i] > self.current[j]) {
                best = Some(i);
            }
        }
        let i = best?;
        self.current[i] -= total;
        Some(i)
    }

    fn name(&self) -> &'static str {
        "weighted_round_robin"
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nginx_sequence_for_5_1_1() {
        let v = vec![view(5, true, 0, None), view(1, true, 0, None), view(1, true, 0, None)];
        let mut w = WeightedRoundRobin::new(3);
        let got: Vec<usize> = (0..7).map(|_| w.pick(&v, &RequestCtx::default()).unwrap()).collect();
        assert_eq!(got, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn runs_across_the_period_boundary_for_1_1_1_6() {
        let v: Vec<BackendView> = [1, 1, 1, 6].iter().map(|&w| view(w, true, 0, None)).collect();
        let mut w = WeightedRoundRobin::new(4);
        let got: Vec<usize> = (0..18).map(|_| w.pick(&v, &RequestCtx::default()).unwrap()).collect();
        assert_eq!(got, vec![3, 3, 0, 3, 1, 3, 2, 3, 3, 3, 3, 0, 3, 1, 3, 2, 3, 3]);
    }

    proptest! {
        /// Over one period (sum of weights) each backend gets exactly its weight,
        /// and no backend is picked more than 2 * ceil(w / (total - w)) times in
        /// a row (smoothness: no bursts; plain weighted round robin gives runs of
        /// w). Within a period the runs are at most ceil(w / (total - w)) + 1,
        /// but the end of one period and the start of the next can join: for
        /// weights 1,1,1,6 the period is `d d a d b d c d d`, so `d` runs 4 times
        /// across the boundary.
        #[test]
        fn exact_shares_and_smooth(weights in proptest::collection::vec(1u32..8, 1..8), periods in 1usize..4) {
            let v: Vec<BackendView> = weights.iter().map(|&w| view(w, true, 0, None)).collect();
            let total: u32 = weights.iter().sum();
            let mut wrr = WeightedRoundRobin::new(v.len());
            let mut counts = vec![0u32; v.len()];
            let mut run = 0u32;
            let mut last = usize::MAX;
            for _ in 0..(total as usize * periods) {
                let i = wrr.pick(&v, &RequestCtx::default()).unwrap();
                counts[i] += 1;
                if i == last { run += 1 } else { run = 1; last = i; }
                let others = total - weights[i];
                if others > 0 {
                    let bound = 2 * weights[i].div_ceil(others);
                    prop_assert!(run <= bound, "backend {i} picked {run} times in a row (bound {bound}), weights {weights:?}");
                }
            }
            for i in 0..v.len() {
                prop_assert_eq!(counts[i], weights[i] * periods as u32);
            }
        }
    }
}
