//! The retry policy, written once for every proxy path (HTTP buffered, HTTP
//! streamed, TCP): [`Attempts`] hands out the backend for each attempt of one
//! request (never one already tried by it), within `max_retries` and the
//! frontend's retry budget, and counts retries where the stats expect them;
//! [`may_resend`] and [`may_retry_status`] say whether a failed or refused
//! attempt may be followed by another, from what reached the backend.
//!
//! The rule (docs/lb.md, "Failure handling"): a request of which nothing was
//! sent (connect failure, a failed TLS handshake, a write that failed before
//! its first byte, a streamed request handed back unsent) may go to another
//! backend whatever its method; a request that was written, even partly,
//! only if it may be sent again ([`may_send_again`]): its method is safe
//! (GET, HEAD, OPTIONS: RFC 9110 §9.2.1), or the client gave it an
//! `Idempotency-Key` header, which tells the backend to apply it at most
//! once; otherwise the backend may have acted on it. A malformed answer is
//! never retried. It must never decide from anything else (idempotency by
//! configuration, the status of an earlier attempt), so that a PUT, DELETE
//! or POST without a key is never sent twice.

use std::sync::Arc;

use http::Method;

use crate::config::RETRIES_MAX;
use crate::frontend::{ActiveGuard, FrontendRt};

/// Most attempts of one request: the first plus at most `RETRIES_MAX` retries.
pub const ATTEMPTS_MAX: usize = RETRIES_MAX as usize + 1;

/// RFC 9110 §9.2.1: methods a client expects to have no effect, and so the
/// only ones sent again once (part of) the request reached a backend.
pub fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The header with which a client marks a request as safe to apply more
/// than once: the backend deduplicates by its value
/// (draft-ietf-httpapi-idempotency-key-header).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// May this request be sent again once (part of) it reached a backend? Its
/// method is safe, or it carries a non-empty `Idempotency-Key`.
pub fn may_send_again(m: &Method, headers: &http::HeaderMap) -> bool {
    is_safe(m) || headers.get(IDEMPOTENCY_KEY).is_some_and(|v| !v.as_bytes().trim_ascii().is_empty())
}

/// What reached a backend in an attempt that got no usable answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// No byte of the request reached the backend's socket.
    Unsent,
    /// Some or all of the request was written; no response followed.
    Sent,
    /// The backend answered with something that is not HTTP.
    BadAnswer,
}

/// May a request whose attempt ended as `delivery` be sent to another
/// backend? `again`: [`may_send_again`] for it. (Whether attempts and budget
/// are left is [`Attempts`]'s part.)
pub fn may_resend(delivery: Delivery, again: bool) -> bool {
    match delivery {
        Delivery::Unsent => true,
        Delivery::Sent => again,
        Delivery::BadAnswer => false,
    }
}

/// May an answer with a status listed in `retries.on_statuses` be replaced
/// by another backend's? Only if [`may_send_again`]: the backend acted on it.
pub fn may_retry_status(again: bool) -> bool {
    again
}

/// The attempts of one request on one frontend.
pub struct Attempts<'a> {
    fe: &'a Arc<FrontendRt>,
    hash: u64,
    /// 1 + `retries.max_retries`.
    attempts_max: u32,
    /// Attempts handed out so far (each got a backend).
    made: u32,
    /// Backends tried so far, in order; no allocation per request.
    tried: [usize; ATTEMPTS_MAX],
}

impl<'a> Attempts<'a> {
    pub fn new(fe: &'a Arc<FrontendRt>, hash: u64) -> Self {
        let attempts_max = 1 + fe.cfg.retries.max_retries;
        // Config validation caps max_retries; the array relies on it.
        assert!(attempts_max as usize <= ATTEMPTS_MAX, "max_retries {} over {RETRIES_MAX}", attempts_max - 1);
        Attempts { fe, hash, attempts_max, made: 0, tried: [0; ATTEMPTS_MAX] }
    }

    /// The backend for the next attempt, counted as in flight on it; `None`
    /// when every attempt is used, the retry budget refuses a retry, or no
    /// backend not yet tried is eligible. `now_ms` is the [`crate::backend::now_ms`] clock
    /// (passed in so that tests decide when the budget refills).
    pub fn next(&mut self, now_ms: u64) -> Option<ActiveGuard> {
        if !self.another_allowed() {
            return None;
        }
        let retry = self.made > 0;
        if retry {
            if !self.fe.budget.try_withdraw(now_ms) {
                self.fe.stats.retries_denied_by_budget.inc();
                tracing::debug!(frontend = %self.fe.cfg.name, "retry denied by the retry budget");
                return None;
            }
            self.fe.stats.retries.inc();
        }
        let guard = self.fe.pick(self.hash, self.tried())?;
        assert!(!self.tried().contains(&guard.index), "backend {} tried twice by one request", guard.index);
        self.tried[self.made as usize] = guard.index;
        self.made += 1;
        if retry {
            guard.backend().stats.retries.inc();
        }
        Some(guard)
    }

    /// Attempts made so far (each went to a backend).
    pub fn made(&self) -> u32 {
        self.made
    }

    /// Whether `max_retries` leaves room for another attempt (the budget and
    /// the backends left are asked only by [`Attempts::next`]).
    pub fn another_allowed(&self) -> bool {
        self.made < self.attempts_max
    }

    /// The backends tried so far, in order.
    pub fn tried(&self) -> &[usize] {
        &self.tried[..self.made as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::now_ms;

    #[test]
    fn an_idempotency_key_makes_a_written_request_resendable() {
        let mut h = http::HeaderMap::new();
        for m in [Method::PUT, Method::DELETE, Method::POST, Method::PATCH] {
            assert!(!may_send_again(&m, &h), "{m} without a key");
        }
        h.insert(IDEMPOTENCY_KEY, http::HeaderValue::from_static("  "));
        assert!(!may_send_again(&Method::POST, &h), "a blank key is no key");
        h.insert("Idempotency-Key", http::HeaderValue::from_static("\"8e03978e-40d5-43e8-bc93-6894a57f9324\""));
        for m in [Method::PUT, Method::DELETE, Method::POST, Method::PATCH, Method::GET] {
            let again = may_send_again(&m, &h);
            assert!(again && may_resend(Delivery::Sent, again) && may_retry_status(again), "{m} with a key");
            assert!(!may_resend(Delivery::BadAnswer, again), "{m}: a malformed answer is final, key or not");
        }
        assert!(may_send_again(&Method::GET, &http::HeaderMap::new()));
    }

    #[test]
    fn written_unsafe_requests_are_never_resent() {
        let all = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "POST", "PATCH", "TRACE", "CONNECT", "PROPFIND"];
        for m in all {
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            let safe = is_safe(&method);
            assert_eq!(safe, matches!(m, "GET" | "HEAD" | "OPTIONS"), "{m}");
            assert!(may_resend(Delivery::Unsent, safe), "{m}: nothing was sent, any method may go elsewhere");
            assert_eq!(may_resend(Delivery::Sent, safe), safe, "{m}: written");
            assert!(!may_resend(Delivery::BadAnswer, safe), "{m}: a malformed answer is final");
            assert_eq!(may_retry_status(safe), safe, "{m}: status retry");
        }
    }

    fn frontend(backends: usize, retries: &str) -> Arc<FrontendRt> {
        crate::frontend::test_frontend(backends, &format!("[frontend.retries]\n{retries}"))
    }

    #[test]
    fn attempts_try_each_backend_once_within_max_retries() {
        let fe = frontend(5, "max_retries = 3\nbudget_min_per_sec = 100");
        let now = now_ms();
        let mut a = Attempts::new(&fe, 0);
        let mut seen = Vec::new();
        while let Some(g) = a.next(now) {
            assert!(!seen.contains(&g.index), "backend {} twice", g.index);
            seen.push(g.index);
        }
        assert_eq!((seen.len(), a.made(), a.tried()), (4, 4, &seen[..]));
        assert!(!a.another_allowed());
        assert_eq!((fe.stats.retries.get(), fe.stats.retries_denied_by_budget.get()), (3, 0));
        // Fewer backends than attempts: the untried ones run out first.
        let fe = frontend(2, "max_retries = 5\nbudget_min_per_sec = 100");
        let mut a = Attempts::new(&fe, 0);
        let n = std::iter::from_fn(|| a.next(now)).count();
        assert_eq!((n, a.made()), (2, 2));
    }

    #[test]
    fn an_empty_budget_stops_retries_but_not_first_attempts() {
        let fe = frontend(3, "max_retries = 2\nbudget_percent = 0\nbudget_min_per_sec = 1");
        // One instant for every attempt: the budget does not refill meanwhile.
        let now = now_ms();
        let mut a = Attempts::new(&fe, 0);
        assert!(a.next(now).is_some() && a.next(now).is_some(), "the one token pays for one retry");
        assert!(a.next(now).is_none());
        assert_eq!((fe.stats.retries.get(), fe.stats.retries_denied_by_budget.get()), (1, 1));
        let mut b = Attempts::new(&fe, 0);
        assert!(b.next(now).is_some(), "a first attempt needs no token");
        assert!(b.next(now).is_none());
        assert_eq!(fe.stats.retries_denied_by_budget.get(), 2);
        // A second later the floor pays for one more retry.
        let mut c = Attempts::new(&fe, 0);
        assert!(c.next(now + 1_000).is_some() && c.next(now + 1_000).is_some());
    }

    #[test]
    fn a_backend_down_is_never_handed_out() {
        let fe = frontend(3, "max_retries = 2\nbudget_min_per_sec = 100");
        fe.backends[1].set_healthy(false, now_ms());
        let mut a = Attempts::new(&fe, 0);
        let now = now_ms();
        let picked: Vec<usize> = std::iter::from_fn(|| a.next(now).map(|g| g.index)).collect();
        assert_eq!(picked.len(), 2);
        assert!(!picked.contains(&1), "{picked:?}");
    }
}
