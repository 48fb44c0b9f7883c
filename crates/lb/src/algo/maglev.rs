//! Maglev hashing (Eisenbud et al., NSDI 2016): a lookup table of prime size M
//! filled from each backend's permutation of the slots, so every backend owns
//! about M/N slots and a key maps in O(1). The table is rebuilt (O(M x N) at
//! worst, O(M) on average) whenever the set of available backends changes;
//! removing one of N backends moves about 1/N of the keys. Weights are not used.

use super::{hash64, BackendView, Balancer, RequestCtx};

#[derive(Debug)]
pub struct Maglev {
    size: u64,
    /// (offset, skip) per backend.
    perms: Vec<(u64, u64)>,
    /// Slot -> backend; empty when no backend is available.
    table: Vec<u32>,
    /// Availability the table was built for.
    built_for: Vec<bool>,
}

/// True if `n` is prime (trial division; n is at most a few million).
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

impl Maglev {
    /// `size` must be prime (the configuration layer rejects others); a
    /// non-prime is rounded up to the next prime.
    pub fn new(keys: &[String], size: u32) -> Self {
        let mut m = u64::from(size.max(3));
        while !is_prime(m) {
            m += 1;
        }
        let perms = keys
            .iter()
            .map(|k| {
                let offset = hash64(format!("{k}/offset").as_bytes()) % m;
                let skip = hash64(format!("{k}/skip").as_bytes()) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        Maglev { size: m, perms, table: Vec::new(), built_for: Vec::new() }
    }

    fn rebuild(&mut self, avail: &[bool]) {
        self.built_for = avail.to_vec();
        let members: Vec<usize> = (0..avail.len()).filter(|&i| avail[i]).collect();
        self.table.clear();
        if members.is_empty() {
            return;
        }
        let m = self.size as usize;
        const EMPTY: u32 = u32::MAX;
        self.table.resize(m, EMPTY);
        let mut next = vec![0u64; members.len()];
        let mut filled = 0usize;
        // Each round every member claims its next free preferred slot; the
        // loop ends after exactly M claims.
        'fill: loop {
            for (k, &i) in members.iter().enumerate() {
                let (offset, skip) = self.perms[i];
                loop {
                    let slot = ((offset + next[k] * skip) % self.size) as usize;
                    next[k] += 1;
                    if self.table[slot] == EMPTY {
                        self.table[slot] = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
}

impl Balancer for Maglev {
    fn pick(&mut self, backends: &[BackendView], ctx: &RequestCtx) -> Option<usize> {
        if backends.len() != self.perms.len() {
            return None;
        }
        let changed = self.built_for.len() != backends.len()
            || backends.iter().zip(&self.built_for).any(|(b, &was)| b.available != was);
        if changed {
            let avail: Vec<bool> = backends.iter().map(|b| b.available).collect();
            self.rebuild(&avail);
        }
        if self.table.is_empty() {
            return None;
        }
        let slot = (ctx.hash_key % self.size) as usize;
        let first = self.table[slot] as usize;
        if backends[first].eligible() {
            return Some(first);
        }
        // The owner is at its connection limit: walk on to the next slots.
        let m = self.table.len();
        (1..m).map(|s| self.table[(slot + s) % m] as usize).find(|&i| backends[i].eligible())
    }

    fn name(&self) -> &'static str {
        "maglev"
    }
}

#[cfg(test)]
mod tests {
    use super::super::fmix64;
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn removal_moves_about_one_nth(n in 3usize..10, gone_seed in any::<usize>(), salt in any::<u64>()) {
            let gone = gone_seed % n;
            let mut mg = Maglev::new(&keys(n), 4099);
            let all = vec![view(1, true, 0, None); n];
            let mut less = all.clone();
            less[gone].available = false;
            let samples = 4000u64;
            let before: Vec<usize> = (0..samples).map(|k| mg.pick(&all, &RequestCtx { hash_key: fmix64(k ^ salt), now_us: 0 }).unwrap()).collect();
            let after: Vec<usize> = (0..samples).map(|k| mg.pick(&less, &RequestCtx { hash_key: fmix64(k ^ salt), now_us: 0 }).unwrap()).collect();
            let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count() as f64 / samples as f64;
            let ideal = 1.0 / n as f64;
            prop_assert!(after.iter().all(|&i| i != gone));
            prop_assert!(moved > ideal * 0.5 && moved < ideal * 1.8, "moved {moved}, ideal {ideal}");
        }

        /// Each available backend owns close to M/N table slots.
        #[test]
        fn table_is_balanced(n in 1usize..12) {
            let mut mg = Maglev::new(&keys(n), 4099);
            let all = vec![view(1, true, 0, None); n];
            mg.pick(&all, &RequestCtx::default());
            let mut counts = vec![0usize; n];
            for &i in &mg.table { counts[i as usize] += 1; }
            let mean = 4099.0 / n as f64;
            for c in counts {
                prop_assert!((c as f64) > mean * 0.9 && (c as f64) < mean * 1.1, "count {c} mean {mean}");
            }
        }
    }

    #[test]
    fn primes() {
        assert!(is_prime(65_537) && is_prime(4099) && !is_prime(65_536) && !is_prime(1));
    }
}
