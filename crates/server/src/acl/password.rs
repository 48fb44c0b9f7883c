//! Password hashing (argon2id) and the bounded pool that runs it.
//!
//! An argon2 verification costs tens of milliseconds of CPU and ~19 MiB of memory by design, so
//! it never runs on an async worker (heartbeats and elections share them): every hash and
//! verification goes to tokio's blocking pool through [`Pool`], at most
//! `password_checks_max` at once, with at most [`PASSWORD_CHECKS_QUEUED_MAX`] waiting; past that
//! a client is told to retry instead of piling up work. A burst of wrong passwords therefore
//! costs at most `password_checks_max` cores, and the async workers stay free.
//!
//! Successful verifications are remembered in a bounded cache ([`VERIFIED_CACHE_ENTRIES_MAX`])
//! keyed by a keyed SHA-256 of (user, password, stored hash), so a client that reconnects and
//! authenticates again (every redis-benchmark connection does) does not pay argon2 again. The
//! cache holds no password: only digests salted with a per-process random key. Failures are
//! never cached, and a changed password (a new stored hash) misses the cache.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::rules::Hasher;

/// Default most argon2 computations at once (`--password-checks-max`): one core of the two a
/// small node has, so a flood of AUTH attempts never takes every core.
pub const PASSWORD_CHECKS_MAX_DEFAULT: usize = 1;
/// Most password checks waiting for a slot; more are answered "busy, retry".
pub const PASSWORD_CHECKS_QUEUED_MAX: usize = 256;
/// Successful verifications remembered (oldest forgotten first).
pub const VERIFIED_CACHE_ENTRIES_MAX: usize = 4096;
/// Largest argon2 memory cost (KiB) a stored hash may ask for: `#hash` rules over it are
/// refused, so an admin cannot make every verification take gigabytes.
pub const ARGON2_M_COST_KIB_MAX: u32 = 256 * 1024;
/// Largest argon2 time cost a stored hash may ask for.
pub const ARGON2_T_COST_MAX: u32 = 16;
/// Largest argon2 parallelism a stored hash may ask for.
pub const ARGON2_P_COST_MAX: u32 = 4;

/// The argon2id hasher with the argon2 crate's default (OWASP) parameters: m = 19 MiB, t = 2,
/// p = 1, a 16-byte random salt per hash.
pub struct Argon2Hasher;

impl Hasher for Argon2Hasher {
    fn hash(&self, password: &[u8]) -> Result<String, String> {
        let salt_bytes: [u8; 16] = rand::random();
        let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| format!("cannot encode a salt: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::DEFAULT);
        argon.hash_password(password, &salt).map(|h| h.to_string()).map_err(|e| format!("cannot hash: {e}"))
    }

    fn verify(&self, password: &[u8], hash: &str) -> bool {
        match PasswordHash::new(hash) {
            Ok(parsed) if params_in_bounds(&parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
            _ => false,
        }
    }

    fn is_hash(&self, hash: &str) -> bool {
        PasswordHash::new(hash)
            .is_ok_and(|h| h.algorithm.as_str() == "argon2id" && h.hash.is_some() && params_in_bounds(&h))
    }
}

fn params_in_bounds(h: &PasswordHash<'_>) -> bool {
    match Params::try_from(h) {
        Ok(p) => {
            p.m_cost() <= ARGON2_M_COST_KIB_MAX && p.t_cost() <= ARGON2_T_COST_MAX && p.p_cost() <= ARGON2_P_COST_MAX
        }
        Err(_) => false,
    }
}

/// Why a password check did not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    #[error(
        "too many password checks are waiting (password_checks_queued_max = {PASSWORD_CHECKS_QUEUED_MAX}); retry shortly"
    )]
    Queue,
    #[error("the password check could not run: {0}")]
    Failed(String),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub checks: AtomicU64,
    pub cache_hits: AtomicU64,
    pub refused_busy: AtomicU64,
}

/// Runs hashing work off the async workers, bounded (see the module docs).
pub struct Pool {
    running: Arc<Semaphore>,
    queued: Arc<Semaphore>,
    cache: Mutex<VerifiedCache>,
    /// Key of the cache digests, random per process.
    secret: [u8; 32],
    pub stats: PoolStats,
}

impl Pool {
    pub fn new(checks_max: usize) -> Pool {
        Pool {
            running: Arc::new(Semaphore::new(checks_max.max(1))),
            queued: Arc::new(Semaphore::new(PASSWORD_CHECKS_QUEUED_MAX)),
            cache: Mutex::new(VerifiedCache::default()),
            secret: rand::random(),
            stats: PoolStats::default(),
        }
    }

    /// Runs `job` on the blocking pool once a slot is free; refuses at once when too many wait.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        let Ok(_queued) = self.queued.clone().try_acquire_owned() else {
            self.stats.refused_busy.fetch_add(1, Ordering::Relaxed);
            return Err(Busy::Queue);
        };
        let _slot = self.running.clone().acquire_owned().await.map_err(|e| Busy::Failed(e.to_string()))?;
        self.stats.checks.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(job).await.map_err(|e| Busy::Failed(e.to_string()))
    }

    /// True when `password` matches one of `hashes` of user `name`.
    pub async fn verify(&self, name: &[u8], password: &[u8], hashes: &[String]) -> Result<bool, Busy> {
        let keys: Vec<[u8; 32]> = hashes.iter().map(|h| self.cache_key(name, password, h)).collect();
        if keys.iter().any(|k| self.cache.lock().contains(k)) {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        let (pw, hs) = (password.to_vec(), hashes.to_vec());
        let found = self.run(move || hs.iter().position(|h| Argon2Hasher.verify(&pw, h))).await?;
        match found {
            Some(i) => {
                self.cache.lock().insert(keys[i]);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn cache_key(&self, name: &[u8], password: &[u8], hash: &str) -> [u8; 32] {
        let mut d = Sha256::new();
        d.update(self.secret);
        for part in [name, password, hash.as_bytes()] {
            d.update((part.len() as u64).to_le_bytes());
            d.update(part);
        }
        d.finalize().into()
    }
}

#[derive(Default)]
struct VerifiedCache {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl VerifiedCache {
    fn contains(&self, k: &[u8; 32]) -> bool {
        self.set.contains(k)
    }

    fn insert(&mut self, k: [u8; 32]) {
        if !self.set.insert(k) {
            return;
        }
        self.order.push_back(k);
        while self.order.len() > VERIFIED_CACHE_ENTRIES_MAX {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_hashes_verify_and_are_recognised() {
        let h = Argon2Hasher.hash(b"secret").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(Argon2Hasher.verify(b"secret", &h));
        assert!(!Argon2Hasher.verify(b"Secret", &h));
        assert!(Argon2Hasher.is_hash(&h));
        assert_ne!(Argon2Hasher.hash(b"secret").unwrap(), h, "a fresh salt each time");
        assert!(!Argon2Hasher.is_hash("c592df4a86933b92addc9842402ddf198c638ea9be58916ee6e3734e1e3152f8"));
        assert!(!Argon2Hasher.is_hash("$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"));
        // A hash asking for 4 GiB of memory is refused, and never verified.
        let huge = h.replace("m=19456", "m=4194304");
        assert!(!Argon2Hasher.is_hash(&huge));
        assert!(!Argon2Hasher.verify(b"secret", &huge));
    }

    #[tokio::test]
    async fn verifications_are_cached_only_when_they_succeed() {
        let pool = Pool::new(1);
        let h = Argon2Hasher.hash(b"pw").unwrap();
        let hashes = vec![h];
        assert!(!pool.verify(b"u", b"bad", &hashes).await.unwrap());
        assert!(!pool.verify(b"u", b"bad", &hashes).await.unwrap());
        assert_eq!(pool.stats.cache_hits.load(Ordering::Relaxed), 0);
        assert!(pool.verify(b"u", b"pw", &hashes).await.unwrap());
        assert!(pool.verify(b"u", b"pw", &hashes).await.unwrap());
        assert_eq!(pool.stats.cache_hits.load(Ordering::Relaxed), 1);
        assert_eq!(pool.stats.checks.load(Ordering::Relaxed), 3);
        // Another user with the same password and hash is a different entry.
        assert!(pool.verify(b"v", b"pw", &hashes).await.unwrap());
        assert_eq!(pool.stats.cache_hits.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_not_queued() {
        let pool = Arc::new(Pool::new(1));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // Hold the only slot, then fill the queue.
        let p = pool.clone();
        let holder = tokio::spawn(async move { p.run(move || rx.recv().ok()).await });
        let mut waiting = Vec::new();
        while pool.queued.available_permits() > 0 {
            let p = pool.clone();
            waiting.push(tokio::spawn(async move { p.run(|| ()).await }));
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.run(|| ()).await, Err(Busy::Queue));
        assert_eq!(pool.stats.refused_busy.load(Ordering::Relaxed), 1);
        tx.send(()).unwrap();
        assert!(holder.await.unwrap().is_ok());
        for w in waiting {
            assert!(w.await.unwrap().is_ok());
        }
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut c = VerifiedCache::default();
        for i in 0..VERIFIED_CACHE_ENTRIES_MAX + 10 {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_le_bytes());
            c.insert(k);
        }
        assert_eq!(c.set.len(), VERIFIED_CACHE_ENTRIES_MAX);
        assert!(!c.contains(&[0u8; 32]));
    }
}
