//! Consistent hashing on a ring of virtual nodes, with an optional load bound
//! ("Consistent Hashing with Bounded Loads", Mirrokni, Thorup, Zadimoghaddam).
//!
//! Each backend owns `vnodes_per_weight x weight` points on a 64-bit ring, placed
//! by hashing its address; a request's key hash goes to the first point at or
//! after it, clockwise. Ineligible backends are skipped by walking on, so taking
//! one backend out moves only the keys it owned (about 1/N of them). With the
//! bound `c`, a backend already carrying `c` times its share of the in-flight
//! requests is skipped too, which caps hot spots at the price of moving some
//! keys while the load lasts.

use super::{hash64, BackendView, Balancer, RequestCtx};

#[derive(Debug)]
pub struct ConsistentHash {
    /// (point, backend index), sorted by point.
    ring: Vec<(u64, u32)>,
    n: usize,
    load_bound: Option<f64>,
}

impl ConsistentHash {
    pub fn new(keys: &[String], weights: &[u32], vnodes_per_weight: u32, load_bound: Option<f64>) -> Self {
        let mut ring = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let w = weights.get(i).copied().unwrap_or(1).max(1);
            let vnodes = vnodes_per_weight.max(1).saturating_mul(w);
            for v in 0..vnodes {
                ring.push((hash64(format!("{key}#{v}").as_bytes()), i as u32));
            }
        }
        ring.sort_unstable();
        ConsistentHash { ring, n: keys.len(), load_bound }
    }

    /// Per-backend in-flight cap under the bound, for this pick.
    fn capacities(&self, backends: &[BackendView]) -> Option<(u64, u64)> {
        let c = self.load_bound?;
        let (mut total_active, mut total_weight) = (0u64, 0u64);
        for b in backends.iter().filter(|b| b.eligible()) {
            total_active += u64::from(b.active);
            total_weight += u64::from(b.weight.max(1));
        }
        // Capacity of backend i = ceil(c * (total + 1) * w_i / W), computed in
        // fixed point (c in 1/1000ths) to stay exact and platform-independent.
        let c_milli = (c * 1000.0).round().max(1000.0) as u64;
        Some((c_milli * (total_active + 1), total_weight.max(1) * 1000))
    }
}

impl Balancer for ConsistentHash {
    fn pick(&mut self, backends: &[BackendView], ctx: &RequestCtx) -> Option<usize> {
        if self.ring.is_empty() || backends.len() != self.n {
            return None;
        }
        let caps = self.capacities(backends);
        let within_bound = |b: &BackendView| match caps {
            None => true,
            Some((num, den)) => {
                let cap = (num * u64::from(b.weight.max(1))).div_ceil(den);
                u64::from(b.active) < cap
            }
        };
        let start = self.ring.partition_point(|&(p, _)| p < ctx.hash_key);
        let len = self.ring.len();
        for step in 0..len {
            let (_, i) = self.ring[(start + step) % len];
            let b = &backends[i as usize];
            if b.eligible() && within_bound(b) {
                return Some(i as usize);
            }
        }
        None
    }

    fn name(&self) -> &'static str {
        "consistent_hash"
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{fmix64, BackendView};
    use super::*;
    use proptest::prelude::*;

    fn owner(ch: &mut ConsistentHash, v: &[BackendView], key: u64) -> usize {
        ch.pick(v, &RequestCtx { hash_key: key, now_us: 0 }).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Taking backend `gone` out moves exactly the keys it owned, and those
        /// are about 1/N of all keys.
        #[test]
        fn removal_moves_about_one_nth(n in 3usize..12, gone_seed in any::<usize>(), salt in any::<u64>()) {
            let gone = gone_seed % n;
            let keys = keys(n);
            let mut ch = ConsistentHash::new(&keys, &vec![1; n], 160, None);
            let all = vec![view(1, true, 0, None); n];
            let mut less = all.clone();
            less[gone].available = false;
            let samples = 4000u64;
            let mut moved = 0u64;
            for k in 0..samples {
                let key = fmix64(k ^ salt);
                let before = owner(&mut ch, &all, key);
                let after = owner(&mut ch, &less, key);
                if before != after {
                    prop_assert_eq!(before, gone, "a key moved between two surviving backends");
                    moved += 1;
                }
                prop_assert!(after != gone);
            }
            let share = moved as f64 / samples as f64;
            let ideal = 1.0 / n as f64;
            prop_assert!(share > ideal * 0.5 && share < ideal * 1.6, "moved {share}, ideal {ideal}");
        }

        /// Assigning requests one by one (none finishing), no backend ever holds
        /// more than ceil(c x mean) of the in-flight requests.
        #[test]
        fn bounded_load_holds(n in 2usize..10, requests in 1u32..400, salt in any::<u64>()) {
            let keys = keys(n);
            let mut ch = ConsistentHash::new(&keys, &vec![1; n], 40, Some(1.25));
            let mut v = vec![view(1, true, 0, None); n];
            // Skewed keys: a few hot ones, as the bound is meant for.
            for r in 0..requests {
                let key = fmix64(u64::from(r % 3) ^ salt);
                let i = owner(&mut ch, &v, key);
                v[i].active += 1;
                let total: u32 = v.iter().map(|b| b.active).sum();
                let cap = (1.25 * f64::from(total) / n as f64).ceil() as u32 + 1;
                for b in &v {
                    prop_assert!(b.active <= cap, "active {} above cap {cap} (total {total}, n {n})", b.active);
                }
            }
        }
    }

    #[test]
    fn weight_scales_share() {
        let keys = keys(2);
        let mut ch = ConsistentHash::new(&keys, &[1, 3], 160, None);
        let v = vec![view(1, true, 0, None), view(3, true, 0, None)];
        let mut heavy = 0;
        for k in 0..8000u64 {
            if owner(&mut ch, &v, fmix64(k)) == 1 {
                heavy += 1;
            }
        }
        assert!((5400..=6600).contains(&heavy), "{heavy}");
    }
}
