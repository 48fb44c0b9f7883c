//! Run-time state of backends and frontends shared by the proxy, the health
//! checker and the admin API: atomics only on the request path. The pure
//! policies (ejection, retry budget) are plain functions of their inputs and a
//! millisecond clock passed in, so they are tested without waiting.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rampart_metrics::{Counter, Histogram};

use crate::algo::BackendView;
use crate::config::{Backend, EjectionConfig, RetryConfig};
use crate::pool::Pool;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the first call in this process, plus one (0 means "never").
pub fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Microseconds on the same clock as [`now_ms`].
pub fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
}

/// Takes one off an in-flight counter (requests on a backend, connections on
/// a frontend). It never goes below zero: releasing what was never counted,
/// or releasing twice, is a bug, and this is where it surfaces.
pub fn release_one(counter: &AtomicU32, what: &'static str) {
    let released = counter.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok();
    assert!(released, "{what}: released more than was counted");
}

/// Operator-set state of a backend (admin API).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminState {
    /// In rotation.
    Enabled,
    /// Out of rotation; in-flight requests finish, idle pooled connections close.
    Draining,
    /// Out of rotation and not health-checked.
    Disabled,
}

impl AdminState {
    fn from_u8(v: u8) -> AdminState {
        match v {
            1 => AdminState::Draining,
            2 => AdminState::Disabled,
            _ => AdminState::Enabled,
        }
    }
    fn as_u8(self) -> u8 {
        match self {
            AdminState::Enabled => 0,
            AdminState::Draining => 1,
            AdminState::Disabled => 2,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Enabled => "enabled",
            AdminState::Draining => "draining",
            AdminState::Disabled => "disabled",
        }
    }
}

#[derive(Default)]
pub struct BackendStats {
    pub requests: Counter,
    pub failures: Counter,
    pub responses_5xx: Counter,
    pub retries: Counter,
    pub ejections: Counter,
    pub health_checks_failed: Counter,
    pub connects: Counter,
    /// TLS handshakes with the backend that failed (requests and health checks).
    pub tls_failures: Counter,
    pub latency: Histogram,
}

/// Ejection length for the `(prior + 1)`-th ejection: base x (prior + 1), at most max.
pub fn ejection_duration_ms(cfg: &EjectionConfig, prior_ejections: u32) -> u64 {
    cfg.base_ms.saturating_mul(u64::from(prior_ejections) + 1).min(cfg.max_ms)
}

/// May one more of `total` backends be ejected while `ejected` already are?
/// At most `max_percent` % of them (rounded down, but at least one when there
/// are two or more backends), and never the last one.
pub fn may_eject(total: usize, ejected: usize, max_percent: u32) -> bool {
    if total < 2 {
        return false;
    }
    let cap = (total * max_percent as usize / 100).clamp(1, total - 1);
    ejected < cap
}

pub struct BackendState {
    pub frontend: String,
    pub addr: SocketAddr,
    /// Address as text, used to place the backend on hash rings.
    pub key: String,
    weight: AtomicU32,
    /// 0 = unlimited.
    max_conns: AtomicU32,
    /// In-flight requests (HTTP) or sessions (TCP).
    pub active: AtomicU32,
    health_up: AtomicBool,
    admin: AtomicU8,
    /// 0 when not ejected.
    ejected_until_ms: AtomicU64,
    consecutive_failures: AtomicU32,
    ejection_count: AtomicU32,
    last_ejection_end_ms: AtomicU64,
    /// When it last came back up (for slow start); 0 = never went down.
    up_since_ms: AtomicU64,
    pub stats: BackendStats,
    pub pool: Pool,
}

impl BackendState {
    pub fn new(frontend: &str, b: &Backend, pool: Pool) -> Self {
        BackendState {
            frontend: frontend.to_string(),
            addr: b.addr,
            key: b.addr.to_string(),
            weight: AtomicU32::new(b.weight),
            max_conns: AtomicU32::new(b.max_conns.unwrap_or(0)),
            active: AtomicU32::new(0),
            health_up: AtomicBool::new(true),
            admin: AtomicU8::new(AdminState::Enabled.as_u8()),
            ejected_until_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejection_count: AtomicU32::new(0),
            last_ejection_end_ms: AtomicU64::new(0),
            up_since_ms: AtomicU64::new(0),
            stats: BackendStats::default(),
            pool,
        }
    }

    /// Applies a reloaded backend definition (weight, limit, pool sizes).
    pub fn update(&self, b: &Backend, pool_idle_max: usize, pool_idle_timeout: Duration) {
        self.weight.store(b.weight, Relaxed);
        self.max_conns.store(b.max_conns.unwrap_or(0), Relaxed);
        self.pool.set_limits(pool_idle_max, pool_idle_timeout);
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }
    pub fn max_conns(&self) -> Option<u32> {
        match self.max_conns.load(Relaxed) {
            0 => None,
            m => Some(m),
        }
    }
    pub fn is_healthy(&self) -> bool {
        self.health_up.load(Relaxed)
    }
    pub fn admin(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Relaxed))
    }
    pub fn set_admin(&self, s: AdminState) {
        self.admin.store(s.as_u8(), Relaxed);
        if s != AdminState::Enabled {
            self.pool.clear();
        }
    }
    /// Sets the health state; returns true if it changed.
    pub fn set_healthy(&self, up: bool, now_ms: u64) -> bool {
        let was = self.health_up.swap(up, Relaxed);
        if was != up {
            if up {
                self.up_since_ms.store(now_ms, Relaxed);
                self.consecutive_failures.store(0, Relaxed);
            } else {
                self.pool.clear();
            }
        }
        was != up
    }
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        let until = self.ejected_until_ms.load(Relaxed);
        until != 0 && now_ms < until
    }
    pub fn ejected_until_ms(&self) -> u64 {
        self.ejected_until_ms.load(Relaxed)
    }

    /// Effective weight: during slow start it ramps linearly from 10 % to 100 %.
    pub fn effective_weight(&self, now_ms: u64, slow_start: Duration) -> u32 {
        let w = self.weight();
        let since = self.up_since_ms.load(Relaxed);
        let ramp = slow_start.as_millis() as u64;
        if ramp == 0 || since == 0 {
            return w;
        }
        let elapsed = now_ms.saturating_sub(since);
        if elapsed >= ramp {
            return w;
        }
        let share = 0.1 + 0.9 * elapsed as f64 / ramp as f64;
        ((f64::from(w) * share).round() as u32).max(1)
    }

    /// The algorithm's view of this backend right now.
    pub fn view(&self, now_ms: u64, slow_start: Duration) -> BackendView {
        let available = self.is_healthy() && self.admin() == AdminState::Enabled && !self.is_ejected(now_ms);
        let weight = self.effective_weight(now_ms, slow_start);
        // The algorithms divide by it; configuration keeps weights >= 1.
        assert!(weight >= 1, "backend {} has effective weight 0", self.addr);
        BackendView { weight, available, active: self.active.load(Relaxed), max_conns: self.max_conns() }
    }

    /// A request or session to this backend succeeded.
    pub fn record_success(&self) {
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
        }
    }

    /// A failure: counts towards ejection. `siblings` are all backends of the
    /// frontend (for the ejection cap). Returns true if this ejected it.
    pub fn record_failure(&self, cfg: &EjectionConfig, siblings: &[std::sync::Arc<BackendState>], now_ms: u64) -> bool {
        self.stats.failures.inc();
        let n = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if !cfg.enabled || n < cfg.consecutive_failures || self.is_ejected(now_ms) {
            return false;
        }
        let ejected = siblings.iter().filter(|b| b.is_ejected(now_ms)).count();
        if !may_eject(siblings.len(), ejected, cfg.max_ejected_percent) {
            return false;
        }
        // A backend that stayed in for max_ms since its last ejection starts over.
        let last_end = self.last_ejection_end_ms.load(Relaxed);
        let prior = if last_end != 0 && now_ms.saturating_sub(last_end) > cfg.max_ms {
            0
        } else {
            self.ejection_count.load(Relaxed)
        };
        let dur = ejection_duration_ms(cfg, prior);
        self.ejected_until_ms.store(now_ms + dur, Relaxed);
        self.last_ejection_end_ms.store(now_ms + dur, Relaxed);
        self.ejection_count.store(prior + 1, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        self.up_since_ms.store(now_ms + dur, Relaxed);
        self.stats.ejections.inc();
        self.pool.clear();
        tracing::warn!(frontend = %self.frontend, backend = %self.addr, ejection_ms = dur, "backend ejected after {n} consecutive failures");
        true
    }

    /// Ends an ejection at once (admin `enable`).
    pub fn clear_ejection(&self) {
        self.ejected_until_ms.store(0, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
    }
}

/// Per-frontend counters; survive reloads (keyed by frontend name).
#[derive(Default)]
pub struct FrontendStats {
    pub conns_active: AtomicU32,
    pub conns_total: Counter,
    pub conns_rejected: Counter,
    pub requests: Counter,
    pub responses_2xx: Counter,
    pub responses_3xx: Counter,
    pub responses_4xx: Counter,
    pub responses_5xx: Counter,
    pub no_backend: Counter,
    pub retries: Counter,
    pub retries_denied_by_budget: Counter,
    pub timeouts: Counter,
    /// Client connections closed because no request byte came within
    /// `timeouts.first_byte_ms` of accepting them (TLS handshake included).
    pub closed_first_byte_timeout: Counter,
    /// Client connections closed because a request head was not complete
    /// within `timeouts.request_header_ms` of its first byte.
    pub closed_header_timeout: Counter,
    /// Client connections and TCP sessions closed after `timeouts.idle_ms` without progress.
    pub closed_idle_timeout: Counter,
    /// TLS handshakes with clients that failed (bad certificate, no client
    /// certificate where one is required, not TLS at all).
    pub tls_handshake_failures: Counter,
    pub latency: Histogram,
    /// Last time a rate-limited warning was logged (ms, [`now_ms`] clock).
    last_log_ms: AtomicU64,
}

impl FrontendStats {
    /// True at most once a second: keeps an outage from flooding the log.
    pub fn log_allowed(&self, now_ms: u64) -> bool {
        let last = self.last_log_ms.load(Relaxed);
        (last == 0 || now_ms.saturating_sub(last) >= 1000)
            && self.last_log_ms.compare_exchange(last, now_ms, Relaxed, Relaxed).is_ok()
    }

    pub fn record_status(&self, status: u16) {
        match status {
            200..=299 => self.responses_2xx.inc(),
            300..=399 => self.responses_3xx.inc(),
            400..=499 => self.responses_4xx.inc(),
            500..=599 => self.responses_5xx.inc(),
            _ => {}
        }
    }
}

/// Largest bank of retry tokens (so a long quiet spell cannot fund a retry storm).
pub const RETRY_BUDGET_TOKENS_MAX: i64 = 1_000;

/// Retry budget in the style of Finagle: every request deposits
/// `percent`/100 of a token, every retry withdraws one, and `min_per_sec`
/// tokens are added each second so that low-traffic frontends can still retry.
/// Retries therefore add at most `percent` % load (plus the floor) during an outage.
pub struct RetryBudget {
    /// Milli-tokens.
    balance: AtomicI64,
    last_refill_ms: AtomicU64,
    percent: u32,
    min_per_sec: u32,
}

impl RetryBudget {
    pub fn new(cfg: &RetryConfig, now_ms: u64) -> Self {
        RetryBudget {
            balance: AtomicI64::new(i64::from(cfg.budget_min_per_sec) * 1000),
            last_refill_ms: AtomicU64::new(now_ms),
            percent: cfg.budget_percent,
            min_per_sec: cfg.budget_min_per_sec,
        }
    }

    fn add(&self, milli: i64) {
        // Only deposits and refills add; withdrawals never take below zero.
        assert!(milli >= 0, "a deposit of {milli} milli-tokens");
        let cap = RETRY_BUDGET_TOKENS_MAX * 1000;
        let _ = self.balance.fetch_update(Relaxed, Relaxed, |b| Some((b + milli).min(cap)));
    }

    /// A new request (not a retry) arrived.
    pub fn deposit(&self) {
        if self.percent > 0 {
            self.add(i64::from(self.percent) * 10);
        }
    }

    /// Takes a token for one retry; false when the budget is spent.
    pub fn try_withdraw(&self, now_ms: u64) -> bool {
        let last = self.last_refill_ms.load(Relaxed);
        let secs = now_ms.saturating_sub(last) / 1000;
        if secs > 0 && self.last_refill_ms.compare_exchange(last, last + secs * 1000, Relaxed, Relaxed).is_ok() {
            self.add(i64::from(self.min_per_sec) * 1000 * secs.min(1_000) as i64);
        }
        self.balance.fetch_update(Relaxed, Relaxed, |b| if b >= 1000 { Some(b - 1000) } else { None }).is_ok()
    }

    /// Whole tokens left.
    pub fn tokens(&self) -> i64 {
        self.balance.load(Relaxed) / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn budget(percent: u32, min: u32) -> RetryBudget {
        RetryBudget::new(&RetryConfig { budget_percent: percent, budget_min_per_sec: min, ..RetryConfig::default() }, 1)
    }

    proptest! {
        /// Within one second, retries never exceed floor + percent x requests.
        #[test]
        fn budget_bounds_retries(percent in 0u32..=100, min in 0u32..20, requests in 0u32..2000) {
            let b = budget(percent, min);
            for _ in 0..requests { b.deposit(); }
            let mut granted = 0u64;
            while b.try_withdraw(500) && granted < 10_000 { granted += 1; }
            let allowed = u64::from(min) + u64::from(requests) * u64::from(percent) / 100;
            prop_assert!(granted <= allowed.min(RETRY_BUDGET_TOKENS_MAX as u64), "granted {granted} allowed {allowed}");
            prop_assert!(granted + 1 >= allowed.min(RETRY_BUDGET_TOKENS_MAX as u64));
        }

        #[test]
        fn ejection_cap(total in 0usize..50, pct in 0u32..=100) {
            let mut ejected = 0;
            while may_eject(total, ejected, pct) { ejected += 1; prop_assert!(ejected <= total); }
            if total >= 2 {
                prop_assert!(ejected >= 1 && ejected < total);
                prop_assert!(ejected <= (total * pct as usize / 100).max(1));
            } else {
                prop_assert_eq!(ejected, 0);
            }
        }
    }

    #[test]
    fn budget_refills_each_second() {
        let b = budget(0, 2);
        assert!(b.try_withdraw(10) && b.try_withdraw(10) && !b.try_withdraw(10));
        assert!(b.try_withdraw(1011) && b.try_withdraw(1011) && !b.try_withdraw(1011));
    }

    #[test]
    fn ejection_grows_and_caps() {
        let cfg = EjectionConfig { base_ms: 100, max_ms: 250, ..EjectionConfig::default() };
        assert_eq!([0, 1, 2, 7].map(|p| ejection_duration_ms(&cfg, p)), [100, 200, 250, 250]);
    }

    #[test]
    fn failures_eject_then_expire_and_respect_cap() {
        let cfg = EjectionConfig {
            consecutive_failures: 3,
            base_ms: 1000,
            max_ms: 5000,
            max_ejected_percent: 34,
            ..EjectionConfig::default()
        };
        let mk = |p: u16| {
            std::sync::Arc::new(BackendState::new(
                "f",
                &Backend { addr: SocketAddr::from(([127, 0, 0, 1], p)), weight: 1, max_conns: None },
                Pool::new(4, Duration::from_secs(1)),
            ))
        };
        let all = vec![mk(1), mk(2), mk(3)];
        assert!(!all[0].record_failure(&cfg, &all, 10));
        assert!(!all[0].record_failure(&cfg, &all, 10));
        assert!(all[0].record_failure(&cfg, &all, 10));
        assert!(all[0].is_ejected(500) && !all[0].view(500, Duration::ZERO).available);
        // 34 % of 3 is one backend: the second may not be ejected.
        for _ in 0..5 {
            assert!(!all[1].record_failure(&cfg, &all, 20));
        }
        assert!(!all[1].is_ejected(20));
        // Expired after 1 s; the next ejection lasts twice as long.
        assert!(!all[0].is_ejected(1011));
        for _ in 0..3 {
            all[0].record_failure(&cfg, &all, 1100);
        }
        assert!(all[0].is_ejected(3000) && !all[0].is_ejected(3101));
    }

    #[test]
    fn slow_start_ramps() {
        let b = BackendState::new(
            "f",
            &Backend { addr: SocketAddr::from(([127, 0, 0, 1], 1)), weight: 10, max_conns: None },
            Pool::new(4, Duration::from_secs(1)),
        );
        let ss = Duration::from_millis(1000);
        assert_eq!(b.effective_weight(5, ss), 10);
        b.set_healthy(false, 5);
        b.set_healthy(true, 100);
        assert_eq!(b.effective_weight(100, ss), 1);
        assert_eq!(b.effective_weight(600, ss), 6);
        assert_eq!(b.effective_weight(1100, ss), 10);
    }
}
