//! A frontend at run time: its validated configuration, its backends, and the
//! balancer that picks among them. One `FrontendRt` exists per configuration
//! generation; a reload builds a new one and in-flight work keeps the old.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::algo::{self, AlgoParams, BackendView, Balancer, Outcome, RequestCtx};
use crate::backend::{now_ms, now_us, release_one, BackendState, FrontendStats, RetryBudget};
use crate::config;
use crate::h1client::{BodyEnd, H1Conn};

struct Selector {
    balancer: Box<dyn Balancer>,
    /// Reused buffer for the per-pick views (one entry per backend).
    views: Vec<BackendView>,
}

pub struct FrontendRt {
    pub cfg: config::Frontend,
    pub backends: Vec<Arc<BackendState>>,
    pub stats: Arc<FrontendStats>,
    pub budget: RetryBudget,
    selector: Mutex<Selector>,
}

impl FrontendRt {
    pub fn new(cfg: config::Frontend, backends: Vec<Arc<BackendState>>, stats: Arc<FrontendStats>, seed: u64) -> Self {
        let keys: Vec<String> = backends.iter().map(|b| b.key.clone()).collect();
        let weights: Vec<u32> = cfg.backends.iter().map(|b| b.weight).collect();
        let params = AlgoParams {
            load_bound: cfg.load_bound,
            maglev_table_size: cfg.maglev_table_size,
            seed,
            ..AlgoParams::default()
        };
        let balancer = algo::build(cfg.algorithm, &keys, &weights, &params);
        let budget = RetryBudget::new(&cfg.retries, now_ms());
        FrontendRt {
            backends,
            stats,
            budget,
            selector: Mutex::new(Selector { balancer, views: Vec::with_capacity(keys.len()) }),
            cfg,
        }
    }

    /// Picks a backend not in `exclude` and counts a request on it; `None`
    /// when every backend is down, ejected, drained, full or excluded.
    ///
    /// Asserted (a balancer that breaks its contract is a bug, not a state to
    /// serve in): the index is in range, the backend was eligible (healthy,
    /// enabled, not ejected, below `max_conns`) and not excluded.
    pub fn pick(self: &Arc<Self>, hash_key: u64, exclude: &[usize]) -> Option<ActiveGuard> {
        let now_us = now_us();
        let now = now_us / 1000;
        let mut s = self.selector.lock();
        let s = &mut *s;
        s.views.clear();
        s.views.extend(self.backends.iter().map(|b| b.view(now, self.cfg.slow_start)));
        for &i in exclude {
            if let Some(v) = s.views.get_mut(i) {
                v.available = false;
            }
        }
        let i = s.balancer.pick(&s.views, &RequestCtx { hash_key, now_us })?;
        let algorithm = s.balancer.name();
        assert!(i < self.backends.len(), "{algorithm} picked backend {i} of {}", self.backends.len());
        assert!(
            s.views[i].eligible(),
            "{algorithm} picked backend {i}, which is down, ejected, drained, full or excluded"
        );
        assert!(!exclude.contains(&i), "{algorithm} picked backend {i}, already tried by this request");
        // Counted under the lock so that max_conns cannot be overshot by a race.
        self.backends[i].active.fetch_add(1, Relaxed);
        s.balancer.on_start(i);
        self.backends[i].stats.requests.inc();
        Some(ActiveGuard {
            fe: self.clone(),
            index: i,
            started: Instant::now(),
            outcome: Outcome::Success,
            latency: None,
        })
    }

    fn finish(&self, index: usize, latency: Duration, outcome: Outcome) {
        release_one(&self.backends[index].active, "backend requests in flight");
        self.selector.lock().balancer.on_finish(index, latency, outcome);
    }
}

/// One request or session in flight on a backend; ends it on drop.
pub struct ActiveGuard {
    fe: Arc<FrontendRt>,
    pub index: usize,
    started: Instant,
    outcome: Outcome,
    latency: Option<Duration>,
}

impl ActiveGuard {
    pub fn backend(&self) -> &Arc<BackendState> {
        &self.fe.backends[self.index]
    }
    pub fn frontend(&self) -> &Arc<FrontendRt> {
        &self.fe
    }
    pub fn fail(&mut self) {
        self.outcome = Outcome::Failure;
    }
    /// Freezes the latency reported to the balancer (time to response header).
    pub fn mark_response(&mut self) {
        let l = self.started.elapsed();
        self.latency = Some(l);
        self.backend().stats.latency.record_us(l.as_micros() as u64);
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let latency = self.latency.unwrap_or_else(|| self.started.elapsed());
        self.fe.finish(self.index, latency, self.outcome);
    }
}

/// A backend response body ended: a reusable connection goes back to the
/// backend's pool before the request stops counting as in flight.
impl BodyEnd for ActiveGuard {
    fn complete(self, conn: Option<H1Conn>) {
        if let Some(conn) = conn {
            self.backend().pool.put(conn);
        }
    }
    fn failed(mut self) {
        self.fail();
    }
}

/// A frontend over `backends` loopback addresses that nothing connects to,
/// with `extra` lines of TOML in its table (tests of the modules above).
#[cfg(test)]
pub(crate) fn test_frontend(backends: usize, extra: &str) -> Arc<FrontendRt> {
    let mut toml = format!("[[frontend]]\nname = \"f\"\nlisten = \"127.0.0.1:0\"\n{extra}\n");
    for i in 0..backends {
        toml.push_str(&format!("[[frontend.backend]]\naddr = \"127.0.0.1:{}\"\n", 1000 + i));
    }
    let cfg = config::Config::parse(&toml, "test.toml").expect("test config").frontends.remove(0);
    let states = cfg
        .backends
        .iter()
        .map(|b| Arc::new(BackendState::new("f", b, crate::pool::Pool::new(1, Duration::from_secs(1)))))
        .collect();
    Arc::new(FrontendRt::new(cfg, states, Arc::new(FrontendStats::default()), 7))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::{BackendView, RequestCtx};
    use crate::backend::AdminState;
    use proptest::prelude::*;

    /// A balancer that always answers `Some(self.0)`, whatever it is shown.
    struct Broken(usize);

    impl Balancer for Broken {
        fn pick(&mut self, _: &[BackendView], _: &RequestCtx) -> Option<usize> {
            Some(self.0)
        }
        fn name(&self) -> &'static str {
            "broken"
        }
    }

    fn with_broken_balancer(pick: usize) -> Arc<FrontendRt> {
        let fe = test_frontend(2, "");
        fe.selector.lock().balancer = Box::new(Broken(pick));
        fe
    }

    #[test]
    #[should_panic(expected = "which is down, ejected, drained, full or excluded")]
    fn picking_a_down_backend_is_a_bug_that_surfaces() {
        let fe = with_broken_balancer(0);
        fe.backends[0].set_healthy(false, now_ms());
        let _ = fe.pick(0, &[]);
    }

    #[test]
    #[should_panic(expected = "broken picked backend 7 of 2")]
    fn picking_out_of_range_is_a_bug_that_surfaces() {
        let _ = with_broken_balancer(7).pick(0, &[]);
    }

    #[test]
    #[should_panic(expected = "picked backend 1, which is down, ejected, drained, full or excluded")]
    fn picking_an_excluded_backend_is_a_bug_that_surfaces() {
        let _ = with_broken_balancer(1).pick(0, &[1]);
    }

    #[test]
    #[should_panic(expected = "released more than was counted")]
    fn releasing_more_than_was_counted_is_a_bug_that_surfaces() {
        let n = std::sync::atomic::AtomicU32::new(1);
        release_one(&n, "test");
        release_one(&n, "test");
    }

    const ALGORITHMS: [&str; 7] =
        ["round_robin", "weighted_round_robin", "least_connections", "consistent_hash", "maglev", "random", "p2c"];

    proptest! {
        /// Whatever the algorithm and the state of the backends, a pick is an
        /// eligible, untried backend, and every request counted in flight is
        /// released when its guard goes.
        #[test]
        fn picks_are_eligible_and_in_flight_counts_return_to_zero(
            algo in 0usize..ALGORITHMS.len(),
            states in proptest::collection::vec((any::<bool>(), 0u8..3, any::<bool>(), any::<bool>()), 1..8),
            keys in proptest::collection::vec(any::<u64>(), 1..20),
        ) {
            let extra = format!(
                "algorithm = \"{}\"\nmaglev_table_size = 101\n[frontend.ejection]\nconsecutive_failures = 1\nmax_ejected_percent = 100\n",
                ALGORITHMS[algo]
            );
            let fe = test_frontend(states.len(), &extra);
            let now = now_ms();
            let mut exclude = Vec::new();
            for (i, &(healthy, admin, eject, excluded)) in states.iter().enumerate() {
                let b = &fe.backends[i];
                b.set_healthy(healthy, now);
                b.set_admin([AdminState::Enabled, AdminState::Draining, AdminState::Disabled][admin as usize]);
                if eject {
                    b.record_failure(&fe.cfg.ejection, &fe.backends, now);
                }
                if excluded {
                    exclude.push(i);
                }
            }
            let mut guards = Vec::new();
            for &k in &keys {
                let Some(g) = fe.pick(k, &exclude) else { continue };
                let b = g.backend();
                prop_assert!(b.is_healthy() && b.admin() == AdminState::Enabled && !b.is_ejected(now_ms()));
                prop_assert!(!exclude.contains(&g.index));
                guards.push(g);
            }
            let in_flight: u32 = fe.backends.iter().map(|b| b.active.load(Relaxed)).sum();
            prop_assert_eq!(in_flight as usize, guards.len());
            drop(guards);
            prop_assert!(fe.backends.iter().all(|b| b.active.load(Relaxed) == 0));
        }
    }
}
