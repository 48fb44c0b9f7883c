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
