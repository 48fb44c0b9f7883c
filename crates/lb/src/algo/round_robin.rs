//! Plain round robin: each eligible backend in turn, weights ignored.

use super::{BackendView, Balancer, RequestCtx};

/// Round robin over the backend list, skipping ineligible backends.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    pub fn new() -> Self {
        RoundRobin { next: 0 }
    }
}

impl Balancer for RoundRobin {
    fn pick(&mut self, backends: &[BackendView], _ctx: &RequestCtx) -> Option<usize> {
        let n = backends.len();
        // Bounded: at most one full turn.
        for step in 0..n {
            let i = (self.next + step) % n;
            if backends[i].eligible() {
                self.next = (i + 1) % n;
                return Some(i);
            }
        }
        None
    }

    fn name(&self) -> &'static str {
        "round_robin"
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Over k full turns every eligible backend is picked exactly k times.
        #[test]
        fn even_over_eligible(views in views(), turns in 1usize..20) {
            let mut rr = RoundRobin::new();
            let eligible: Vec<usize> = (0..views.len()).filter(|&i| views[i].eligible()).collect();
            let mut counts = vec![0usize; views.len()];
            for _ in 0..turns * eligible.len() {
                counts[rr.pick(&views, &RequestCtx::default()).unwrap()] += 1;
            }
            for i in 0..views.len() {
                let want = if views[i].eligible() { turns } else { 0 };
                prop_assert_eq!(counts[i], want);
            }
            if eligible.is_empty() {
                prop_assert!(rr.pick(&views, &RequestCtx::default()).is_none());
            }
        }
    }

    #[test]
    fn cycles_in_order() {
        let v = vec![view(1, true, 0, None), view(1, false, 0, None), view(1, true, 0, None)];
        let mut rr = RoundRobin::new();
        let got: Vec<usize> = (0..4).map(|_| rr.pick(&v, &RequestCtx::default()).unwrap()).collect();
        assert_eq!(got, vec![0, 2, 0, 2]);
    }
}
