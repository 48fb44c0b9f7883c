//! Balancing algorithms: pure state machines that choose a backend.
//!
//! Every algorithm implements [`Balancer`]. It sees the backends only through a
//! slice of [`BackendView`]s (weight, availability, in-flight count) that the
//! proxy fills in before each pick, and it hears back through
//! [`Balancer::on_start`] / [`Balancer::on_finish`]. Nothing here performs I/O,
//! reads a clock or touches a socket, so each algorithm is tested on its own
//! with property tests. An algorithm must never return a backend whose view is
//! not [`BackendView::eligible`]; `pick` returns `None` when no backend is left.

use std::time::Duration;

mod consistent_hash;
mod least_connections;
pub mod maglev;
mod p2c;
mod random;
mod round_robin;
mod weighted_round_robin;

pub use consistent_hash::ConsistentHash;
pub use least_connections::LeastConnections;
pub use maglev::Maglev;
pub use p2c::PowerOfTwo;
pub use random::RandomPick;
pub use round_robin::RoundRobin;
pub use weighted_round_robin::WeightedRoundRobin;

/// What an algorithm may know about one backend at the moment of a pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendView {
    /// Effective weight (configured weight, scaled down during slow start); at least 1.
    pub weight: u32,
    /// False when the backend is down, ejected, drained, disabled, or already
    /// tried by this request.
    pub available: bool,
    /// Requests (HTTP) or sessions (TCP) currently in flight on this backend.
    pub active: u32,
    /// Limit on `active`; `None` means unlimited.
    pub max_conns: Option<u32>,
}

impl BackendView {
    /// A backend an algorithm may return: available and below its connection limit.
    pub fn eligible(&self) -> bool {
        self.available && self.max_conns.is_none_or(|m| self.active < m)
    }
}

/// Per-request input to a pick.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestCtx {
    /// Hash of the configured key (client IP, URI, header or cookie); used by
    /// the hashing algorithms, ignored by the others.
    pub hash_key: u64,
    /// Monotonic time in microseconds (any fixed origin), for algorithms whose
    /// estimates decay with time (p2c).
    pub now_us: u64,
}

/// How a request to a backend ended, as feedback for the algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response (any status) or a TCP session that ended normally.
    Success,
    /// Connect failure, reset, timeout, malformed response.
    Failure,
}

/// A balancing algorithm. See the module documentation for the contract.
pub trait Balancer: Send {
    /// Chooses a backend index into `backends`, or `None` when none is eligible.
    fn pick(&mut self, backends: &[BackendView], ctx: &RequestCtx) -> Option<usize>;
    /// A request was sent to `backend`.
    fn on_start(&mut self, _backend: usize) {}
    /// A request to `backend` finished after `latency` with `outcome`.
    fn on_finish(&mut self, _backend: usize, _latency: Duration, _outcome: Outcome) {}
    /// Short name, as used in configuration.
    fn name(&self) -> &'static str;
}

/// The algorithms a frontend can be configured with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    ConsistentHash,
    Maglev,
    Random,
    P2c,
}

impl Algorithm {
    pub const ALL: [Algorithm; 7] = [
        Algorithm::RoundRobin,
        Algorithm::WeightedRoundRobin,
        Algorithm::LeastConnections,
        Algorithm::ConsistentHash,
        Algorithm::Maglev,
        Algorithm::Random,
        Algorithm::P2c,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::WeightedRoundRobin => "weighted_round_robin",
            Algorithm::LeastConnections => "least_connections",
            Algorithm::ConsistentHash => "consistent_hash",
            Algorithm::Maglev => "maglev",
            Algorithm::Random => "random",
            Algorithm::P2c => "p2c",
        }
    }

    /// True for the algorithms that use [`RequestCtx::hash_key`].
    pub fn uses_hash_key(self) -> bool {
        matches!(self, Algorithm::ConsistentHash | Algorithm::Maglev)
    }
}

impl std::str::FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
            format!("unknown algorithm `{s}` (expected one of {})", names.join(", "))
        })
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parameters the algorithms take beyond the backend list.
#[derive(Clone, Debug)]
pub struct AlgoParams {
    /// Consistent hash: virtual nodes per unit of weight.
    pub vnodes_per_weight: u32,
    /// Consistent hash: load bound factor `c` (no backend above `c` x mean load);
    /// `None` disables the bound.
    pub load_bound: Option<f64>,
    /// Maglev: lookup table size; must be prime.
    pub maglev_table_size: u32,
    /// Seed for the algorithms that draw random numbers.
    pub seed: u64,
}

impl Default for AlgoParams {
    /// 160 virtual nodes per weight unit (as ketama), c = 1.25, Maglev table of
    /// 65,537 entries (prime, well above 100 x the backend count we expect).
    fn default() -> Self {
        AlgoParams { vnodes_per_weight: 160, load_bound: Some(1.25), maglev_table_size: 65_537, seed: 0x005e_ed1b }
    }
}

/// Builds the balancer for `algo` over backends identified by `keys` (their
/// addresses, used by the hashing algorithms to place them) and `weights`.
pub fn build(algo: Algorithm, keys: &[String], weights: &[u32], params: &AlgoParams) -> Box<dyn Balancer> {
    match algo {
        Algorithm::RoundRobin => Box::new(RoundRobin::new()),
        Algorithm::WeightedRoundRobin => Box::new(WeightedRoundRobin::new(keys.len())),
        Algorithm::LeastConnections => Box::new(LeastConnections::new(params.seed)),
        Algorithm::ConsistentHash => {
            Box::new(ConsistentHash::new(keys, weights, params.vnodes_per_weight, params.load_bound))
        }
        Algorithm::Maglev => Box::new(Maglev::new(keys, params.maglev_table_size)),
        Algorithm::Random => Box::new(RandomPick::new(params.seed)),
        Algorithm::P2c => Box::new(PowerOfTwo::new(keys.len(), params.seed)),
    }
}

/// 64-bit hash used for keys and ring placement: FNV-1a, then the MurmurHash3
/// finaliser so that similar inputs spread over the whole range. Stable across
/// runs and platforms (placement must not change between restarts).
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    fmix64(h)
}

/// MurmurHash3's 64-bit finaliser.
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// A small, fast, seedable generator (SplitMix64) so that the random algorithms
/// stay deterministic under test.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        fmix64(self.0)
    }
    /// Uniform in `0..n`; `n` must be > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        // Lemire's multiply-shift; the bias is below 2^-32 for our n.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Weighted random choice among eligible backends; `None` if none.
pub(crate) fn weighted_random(backends: &[BackendView], rng: &mut SplitMix64) -> Option<usize> {
    let total: u64 = backends.iter().filter(|b| b.eligible()).map(|b| u64::from(b.weight.max(1))).sum();
    if total == 0 {
        return None;
    }
    let mut r = rng.below(total);
    for (i, b) in backends.iter().enumerate() {
        if !b.eligible() {
            continue;
        }
        let w = u64::from(b.weight.max(1));
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use proptest::prelude::*;

    pub fn view(weight: u32, available: bool, active: u32, max: Option<u32>) -> BackendView {
        BackendView { weight, available, active, max_conns: max }
    }

    /// Arbitrary backend lists, 1..=12 backends, some unavailable or full.
    pub fn views() -> impl Strategy<Value = Vec<BackendView>> {
        proptest::collection::vec(
            (1u32..=10, proptest::bool::weighted(0.8), 0u32..20, proptest::option::of(1u32..25)),
            1..=12,
        )
        .prop_map(|v| v.into_iter().map(|(w, a, act, m)| view(w, a, act, m)).collect())
    }

    pub fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.{}.{}:80", i / 250, i % 250 + 1)).collect()
    }

    /// Every algorithm: never returns an ineligible backend, returns None iff none is eligible.
    pub fn check_contract(b: &mut dyn Balancer, views: &[BackendView], ctx: &RequestCtx) -> Result<(), TestCaseError> {
        let any = views.iter().any(|v| v.eligible());
        match b.pick(views, ctx) {
            Some(i) => {
                prop_assert!(i < views.len());
                prop_assert!(views[i].eligible(), "picked ineligible backend {i}: {:?}", views[i]);
            }
            None => prop_assert!(!any, "returned none while {:?} has an eligible backend", views),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_algorithm_honours_the_contract(views in views(), key in any::<u64>(), algo_ix in 0usize..7) {
            let algo = Algorithm::ALL[algo_ix];
            let keys = keys(views.len());
            let weights: Vec<u32> = views.iter().map(|v| v.weight).collect();
            let params = AlgoParams { maglev_table_size: 251, vnodes_per_weight: 20, ..AlgoParams::default() };
            let mut b = build(algo, &keys, &weights, &params);
            for i in 0..20u64 {
                check_contract(b.as_mut(), &views, &RequestCtx { hash_key: key.wrapping_add(i), now_us: i })?;
            }
        }
    }

    #[test]
    fn algorithm_names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(a.as_str().parse::<Algorithm>().unwrap(), a);
        }
        assert!("fastest".parse::<Algorithm>().unwrap_err().contains("round_robin"));
    }

    #[test]
    fn splitmix_below_stays_in_range() {
        let mut r = SplitMix64::new(1);
        for n in 1..200u64 {
            assert!(r.below(n) < n);
        }
    }
}
