//! One peer's phi-accrual detector.

use crate::Error;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Phi is capped here (a probability of 1e-300 is as dead as it gets, and infinities do not
/// belong in JSON or Prometheus).
pub const PHI_MAX: f64 = 300.0;

/// Detector settings. [`PhiConfig::default`] documents the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhiConfig {
    /// Phi at or above which a peer is [`PeerState::Dead`].
    pub dead_threshold: f64,
    /// Phi at or above which a peer is [`PeerState::Suspect`].
    pub suspect_threshold: f64,
    /// Most inter-arrival samples kept (the sliding window).
    pub window_max: usize,
    /// Floor of the standard deviation, so a very regular peer is not declared dead after one
    /// slightly late heartbeat.
    pub std_dev_min_ms: f64,
    /// Added to the mean: a pause this long (GC, a busy disk) adds no suspicion by itself.
    pub acceptable_pause_ms: u64,
    /// Assumed inter-arrival time before real samples exist (the heartbeat interval). The window
    /// starts with samples of mean this and standard deviation a quarter of it.
    pub first_heartbeat_estimate_ms: u64,
}

impl Default for PhiConfig {
    /// For the default 100 ms heartbeat: dead at phi 8 (the threshold, as Cassandra and
    /// Akka), suspect at phi 3 (a 0.1% chance the heartbeat is merely late: early enough to warn
    /// and to shed load, far too weak to act on as death), 1000 samples (100 s of history),
    /// standard deviation at least 25 ms, 200 ms of acceptable pause, a first estimate of
    /// 100 ms. A steady peer that stops is then suspect after about 380 ms and dead after about
    /// 440 ms of silence.
    fn default() -> Self {
        PhiConfig {
            dead_threshold: 8.0,
            suspect_threshold: 3.0,
            window_max: 1000,
            std_dev_min_ms: 25.0,
            acceptable_pause_ms: 200,
            first_heartbeat_estimate_ms: 100,
        }
    }
}

impl PhiConfig {
    pub fn validate(&self) -> Result<(), Error> {
        let finite = [self.dead_threshold, self.suspect_threshold, self.std_dev_min_ms].iter().all(|x| x.is_finite());
        if !finite {
            return Err(Error::Config { reason: "thresholds and std_dev_min_ms must be finite" });
        }
        if !(self.suspect_threshold > 0.0 && self.suspect_threshold <= self.dead_threshold) {
            return Err(Error::Config { reason: "need 0 < suspect_threshold <= dead_threshold" });
        }
        if self.window_max < 2 {
            return Err(Error::Config { reason: "window_max must be at least 2" });
        }
        if self.std_dev_min_ms <= 0.0 {
            return Err(Error::Config { reason: "std_dev_min_ms must be positive" });
        }
        if self.first_heartbeat_estimate_ms == 0 {
            return Err(Error::Config { reason: "first_heartbeat_estimate_ms must be positive" });
        }
        Ok(())
    }
}

/// What the detector says about a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    Alive,
    Suspect,
    Dead,
}

impl PeerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Alive => "alive",
            PeerState::Suspect => "suspect",
            PeerState::Dead => "dead",
        }
    }
}

/// The detector of one peer. Sums are kept exactly in integers, so no drift builds up.
#[derive(Clone, Debug)]
pub struct PhiAccrual {
    config: PhiConfig,
    intervals_ms: VecDeque<u64>,
    sum_ms: u128,
    sum_sq_ms: u128,
    last_ms: Option<u64>,
}

impl PhiAccrual {
    pub fn new(config: PhiConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(PhiAccrual { config, intervals_ms: VecDeque::new(), sum_ms: 0, sum_sq_ms: 0, last_ms: None })
    }

    pub fn config(&self) -> &PhiConfig {
        &self.config
    }

    /// Records a heartbeat arriving at `now_ms`. A time before the last heartbeat (reordered
    /// delivery) is ignored rather than recorded as a negative interval.
    pub fn heartbeat(&mut self, now_ms: u64) {
        match self.last_ms {
            None => {
                let estimate = self.config.first_heartbeat_estimate_ms;
                let spread = estimate / 4;
                self.push(estimate - spread);
                self.push(estimate + spread);
                self.last_ms = Some(now_ms);
            }
            Some(last) if now_ms >= last => {
                self.push(now_ms - last);
                self.last_ms = Some(now_ms);
            }
            Some(_) => {}
        }
    }

    fn push(&mut self, interval_ms: u64) {
        if self.intervals_ms.len() >= self.config.window_max {
            if let Some(old) = self.intervals_ms.pop_front() {
                self.sum_ms -= u128::from(old);
                self.sum_sq_ms -= u128::from(old) * u128::from(old);
            }
        }
        self.intervals_ms.push_back(interval_ms);
        self.sum_ms += u128::from(interval_ms);
        self.sum_sq_ms += u128::from(interval_ms) * u128::from(interval_ms);
    }

    /// When the last heartbeat arrived.
    pub fn last_heartbeat_ms(&self) -> Option<u64> {
        self.last_ms
    }

    /// Samples in the window (bootstrap samples included).
    pub fn samples(&self) -> usize {
        self.intervals_ms.len()
    }

    /// Mean inter-arrival time of the window, in ms.
    pub fn mean_ms(&self) -> f64 {
        if self.intervals_ms.is_empty() {
            return self.config.first_heartbeat_estimate_ms as f64;
        }
        self.sum_ms as f64 / self.intervals_ms.len() as f64
    }

    /// Standard deviation of the window, floored at `std_dev_min_ms`.
    pub fn std_dev_ms(&self) -> f64 {
        let n = self.intervals_ms.len() as u128;
        if n == 0 {
            return self.config.std_dev_min_ms;
        }
        // n * sum_sq - sum^2 is exact and never negative (Cauchy–Schwarz).
        let numerator = (n * self.sum_sq_ms).saturating_sub(self.sum_ms * self.sum_ms);
        let variance = numerator as f64 / (n * n) as f64;
        variance.sqrt().max(self.config.std_dev_min_ms)
    }

    /// Suspicion at `now_ms`; 0 before the first heartbeat, capped at [`PHI_MAX`].
    pub fn phi(&self, now_ms: u64) -> f64 {
        let Some(last) = self.last_ms else { return 0.0 };
        let since_ms = now_ms.saturating_sub(last) as f64;
        let mean = self.mean_ms() + self.config.acceptable_pause_ms as f64;
        let y = (since_ms - mean) / self.std_dev_ms();
        // P(later than t) ≈ 1 / (1 + e^a) with a = y (1.5976 + 0.070566 y²), so
        // phi = log10(1 + e^a) = softplus(a) / ln 10, written so e^a never overflows.
        let a = y * (1.5976 + 0.070566 * y * y);
        let softplus = a.max(0.0) + (-a.abs()).exp().ln_1p();
        (softplus / std::f64::consts::LN_10).min(PHI_MAX)
    }

    /// The state at `now_ms`.
    pub fn state(&self, now_ms: u64) -> PeerState {
        let phi = self.phi(now_ms);
        if phi >= self.config.dead_threshold {
            PeerState::Dead
        } else if phi >= self.config.suspect_threshold {
            PeerState::Suspect
        } else {
            PeerState::Alive
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn detector() -> PhiAccrual {
        PhiAccrual::new(PhiConfig::default()).unwrap()
    }

    /// Feeds heartbeats at the given intervals starting at t = 1000; returns the last arrival.
    fn feed(d: &mut PhiAccrual, intervals: impl IntoIterator<Item = u64>) -> u64 {
        let mut t = 1000;
        d.heartbeat(t);
        for i in intervals {
            t += i;
            d.heartbeat(t);
        }
        t
    }

    /// First time (ms after `last`) at which the detector reports `state`.
    fn first_time_in(d: &PhiAccrual, last: u64, state: PeerState) -> u64 {
        (0..100_000).find(|&dt| d.state(last + dt) >= state).expect("reaches the state")
    }

    #[test]
    fn steady_heartbeats_stay_alive_and_silence_turns_suspect_then_dead() {
        let mut d = detector();
        let last = feed(&mut d, std::iter::repeat_n(100, 200));
        assert!((d.mean_ms() - 100.0).abs() < 1.0);
        assert_eq!(d.std_dev_ms(), 25.0, "the floor applies to a perfectly steady peer");
        for dt in [0, 50, 100, 150, 250] {
            assert_eq!(d.state(last + dt), PeerState::Alive, "at +{dt} ms");
        }
        let suspect = first_time_in(&d, last, PeerState::Suspect);
        let dead = first_time_in(&d, last, PeerState::Dead);
        assert!((350..=400).contains(&suspect), "suspect after {suspect} ms");
        assert!((420..=470).contains(&dead), "dead after {dead} ms");
        assert!(d.phi(last + 10_000) >= 8.0 && d.phi(last + u64::MAX / 2) == PHI_MAX);
    }

    #[test]
    fn jittery_heartbeats_stay_alive_and_widen_the_margin() {
        // Intervals 40..=160 ms from a fixed LCG: deterministic jitter.
        let mut x: u64 = 12345;
        let jitter = std::iter::repeat_with(move || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            40 + (x >> 33) % 121
        });
        let mut d = detector();
        let mut t = 1000;
        d.heartbeat(t);
        for interval in jitter.take(500) {
            // Just before each arrival the peer is still alive.
            assert_eq!(d.state(t + interval - 1), PeerState::Alive, "at +{interval} ms");
            t += interval;
            d.heartbeat(t);
        }
        assert!(d.std_dev_ms() > 25.0);
        let mut steady = detector();
        let steady_last = feed(&mut steady, std::iter::repeat_n(100, 500));
        assert!(
            first_time_in(&d, t, PeerState::Dead) > first_time_in(&steady, steady_last, PeerState::Dead),
            "a jittery peer gets more slack than a steady one"
        );
        assert_eq!(d.state(t + 2_000), PeerState::Dead);
    }

    #[test]
    fn a_pause_within_the_acceptable_pause_is_not_suspicious() {
        let mut d = detector();
        let last = feed(&mut d, std::iter::repeat_n(100, 100));
        // A 280 ms gap: mean 100 + acceptable pause 200 covers it.
        assert_eq!(d.state(last + 280), PeerState::Alive);
        d.heartbeat(last + 280);
        // One long interval in the window barely moves things: back to normal.
        assert_eq!(d.state(last + 380), PeerState::Alive);
        // Without the acceptable pause the same gap is already dead.
        let config = PhiConfig { acceptable_pause_ms: 0, ..PhiConfig::default() };
        let mut strict = PhiAccrual::new(config).unwrap();
        let last = feed(&mut strict, std::iter::repeat_n(100, 100));
        assert_eq!(strict.state(last + 280), PeerState::Dead);
    }

    #[test]
    fn a_death_is_detected_and_recovery_is_immediate() {
        let mut d = detector();
        let last = feed(&mut d, std::iter::repeat_n(100, 50));
        assert_eq!(d.state(last + 1_000), PeerState::Dead);
        d.heartbeat(last + 1_000);
        assert_eq!(d.state(last + 1_000), PeerState::Alive, "a heartbeat revives at once");
    }

    #[test]
    fn before_any_heartbeat_and_out_of_order_arrivals() {
        let mut d = detector();
        assert_eq!(d.phi(5_000), 0.0);
        assert_eq!(d.state(5_000), PeerState::Alive);
        d.heartbeat(1_000);
        assert_eq!(d.samples(), 2, "bootstrap samples from the first estimate");
        d.heartbeat(900);
        assert_eq!(d.last_heartbeat_ms(), Some(1_000));
        assert_eq!(d.samples(), 2);
    }

    #[test]
    fn the_window_is_bounded() {
        let mut d = PhiAccrual::new(PhiConfig { window_max: 10, ..PhiConfig::default() }).unwrap();
        feed(&mut d, std::iter::repeat_n(500, 100));
        assert_eq!(d.samples(), 10);
        assert!((d.mean_ms() - 500.0).abs() < 1e-9, "old samples left the window exactly");
    }

    #[test]
    fn invalid_configs_are_refused() {
        let base = PhiConfig::default();
        for bad in [
            PhiConfig { suspect_threshold: 9.0, ..base },
            PhiConfig { suspect_threshold: 0.0, ..base },
            PhiConfig { window_max: 1, ..base },
            PhiConfig { std_dev_min_ms: 0.0, ..base },
            PhiConfig { dead_threshold: f64::NAN, ..base },
            PhiConfig { first_heartbeat_estimate_ms: 0, ..base },
        ] {
            assert!(PhiAccrual::new(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn phi_is_monotonic_in_time_since_the_last_heartbeat(
            intervals in proptest::collection::vec(1u64..5_000, 0..50),
            a in 0u64..100_000,
            b in 0u64..100_000,
        ) {
            let mut d = detector();
            let last = feed(&mut d, intervals);
            let (early, late) = (a.min(b), a.max(b));
            let (phi_early, phi_late) = (d.phi(last + early), d.phi(last + late));
            prop_assert!(phi_early.is_finite() && phi_early >= 0.0);
            prop_assert!(phi_early <= phi_late, "phi({early}) = {phi_early} > phi({late}) = {phi_late}");
            prop_assert!(d.state(last + early) <= d.state(last + late));
        }
    }
}
