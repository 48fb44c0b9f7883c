//! A Rust client for Rampart's HTTP/JSON API (`/v1/`).
//!
//! The client is given every node's HTTP address and finds one that
//! answers: it starts with the node that last answered and moves on after a
//! connection error or a `503` (`TRYAGAIN`, `CLUSTERDOWN`). Reads also move
//! on after a timeout. A write never does: once a write may have reached a
//! node, retrying it elsewhere could apply it twice (or make a
//! compare-and-set fail against its own earlier success), so a timeout or a
//! `504` on a write comes back as [`Error::OutcomeUnknown`] and the caller
//! decides.
//!
//! This crate never retries the same endpoint, never sleeps, and bounds
//! every response it reads ([`Client::with_max_response_bytes`]).

pub mod base64;
pub mod http;
mod types;
mod url;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Bytes, HttpClient, Method};

pub use types::{Deleted, Entry, Held, Item, Lease, LeaseInfo, Member, MemberList, NewMember, ScanPage, Status};
pub use url::{normalize_endpoint, percent_encode, Consistency};

use types::{AcquireRequest, ErrorBody, LeaseRequest, MembersOnly, Released, Revision, Revoked};

/// Default bound on one response body: 64 MiB ([`http::RESPONSE_BYTES_MAX`]).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = http::RESPONSE_BYTES_MAX;

/// Header carrying a value's revision on `GET /v1/kv/{key}`.
pub const REVISION_HEADER: &str = "x-rampart-revision";

/// One endpoint's failure on the way to [`Error::Unavailable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Base URL of the endpoint.
    pub endpoint: String,
    /// What went wrong there.
    pub error: String,
}

fn format_attempts(attempts: &[Attempt]) -> String {
    attempts.iter().map(|a| format!("{}: {}", a.endpoint, a.error)).collect::<Vec<_>>().join("; ")
}

/// `prefix: message`, unless the server's message already says it.
fn with_prefix(prefix: &str, message: &str) -> String {
    if message.to_ascii_lowercase().starts_with(prefix) {
        message.to_owned()
    } else {
        format!("{prefix}: {message}")
    }
}

/// Everything a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `Client::new` got an empty endpoint list.
    #[error("no endpoints given")]
    NoEndpoints,
    /// An endpoint is not `host:port` or `http://host:port`.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was rejected.
        reason: String,
    },
    /// 404: the key or member does not exist.
    #[error("{}", with_prefix("not found", .message))]
    NotFound {
        /// Endpoint that answered.
        endpoint: String,
        /// The server's message.
        message: String,
    },
    /// 409: the key's revision did not match the `cas` given.
    #[error("{}", with_prefix("compare-and-set failed", .message))]
    CasFailed {
        /// Endpoint that answered.
        endpoint: String,
        /// The server's message.
        message: String,
    },
    /// A write may or may not have been applied: it timed out, the server
    /// answered 504, or the connection broke after the request was sent.
    /// It was not retried; read the key to find out.
    #[error("outcome unknown: {reason} (at {endpoint}); the write may or may not have been applied")]
    OutcomeUnknown {
        /// Endpoint the write was sent to.
        endpoint: String,
        /// What happened.
        reason: String,
    },
    /// Every endpoint failed with an error that allowed trying the next.
    #[error("no endpoint could serve the request: {}", format_attempts(.attempts))]
    Unavailable {
        /// One entry per endpoint tried, in order.
        attempts: Vec<Attempt>,
    },
    /// Any other error answer (400, 413, 500, ...).
    #[error("{endpoint} answered {status} {code}: {message}")]
    Server {
        /// Endpoint that answered.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// The `code` of the JSON error body (`BAD_REQUEST`, `TOO_LARGE`, ...).
        code: String,
        /// The server's message.
        message: String,
    },
    /// The bearer token given cannot be sent in an HTTP header.
    #[error("invalid bearer token: {0}")]
    InvalidToken(String),
    /// A response that does not follow the API contract.
    #[error("unexpected response from {endpoint}: {reason}")]
    BadResponse {
        /// Endpoint that answered.
        endpoint: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// Whether a request may be sent to another node after it may already have
/// reached one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    Idempotent,
    NotIdempotent,
}

/// What to do after one endpoint failed to give a usable answer.
#[derive(Debug)]
pub(crate) enum Step {
    /// Try the next endpoint; the reason goes into [`Error::Unavailable`].
    Next(String),
    /// Stop and return this error.
    Fail(Error),
}

/// A fully read response.
#[derive(Debug)]
struct Reply {
    endpoint: String,
    status: u16,
    revision: Option<String>,
    body: Vec<u8>,
}

/// Why one attempt produced no response.
#[derive(Debug)]
pub(crate) enum SendFailure {
    /// Nothing reached the server (connection refused, DNS, connect timeout).
    NotSent(String),
    /// The request may have reached the server.
    MaybeSent(String),
    /// The response was larger than the client accepts.
    TooLarge(usize),
}

/// Maps one endpoint's HTTP answer to the next step; `None` for success.
pub(crate) fn classify(endpoint: &str, status: u16, body: &[u8], retry: Retry) -> Option<Step> {
    if (200..300).contains(&status) {
        return None;
    }
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (e.code, e.error),
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_owned();
            (String::new(), if text.is_empty() { format!("HTTP {status}") } else { text })
        }
    };
    let endpoint = endpoint.to_owned();
    let summary = || {
        if code.is_empty() {
            format!("{status} {message}")
        } else {
            format!("{status} {code}: {message}")
        }
    };
    Some(match status {
        503 => Step::Next(summary()),
        502 | 504 => match retry {
            Retry::Idempotent => Step::Next(summary()),
            Retry::NotIdempotent => Step::Fail(Error::OutcomeUnknown { endpoint, reason: summary() }),
        },
        404 => Step::Fail(Error::NotFound { endpoint, message }),
        409 if code.is_empty() || code == "CAS_FAILED" => Step::Fail(Error::CasFailed { endpoint, message }),
        _ => Step::Fail(Error::Server { endpoint, status, code, message }),
    })
}

/// Maps a failure to get any answer to the next step.
pub(crate) fn classify_failure(endpoint: &str, failure: SendFailure, retry: Retry) -> Step {
    match (failure, retry) {
        (SendFailure::NotSent(why), _) | (SendFailure::MaybeSent(why), Retry::Idempotent) => Step::Next(why),
        (SendFailure::MaybeSent(why), Retry::NotIdempotent) => {
            Step::Fail(Error::OutcomeUnknown { endpoint: endpoint.to_owned(), reason: why })
        }
        (SendFailure::TooLarge(max), _) => Step::Fail(Error::BadResponse {
            endpoint: endpoint.to_owned(),
            reason: format!("response larger than {max} bytes"),
        }),
    }
}

/// One failed request as [`classify_failure`] sees it. The endpoint is
/// left out: [`Attempt`] and [`Error`] name it already.
fn send_failure(e: http::Error) -> SendFailure {
    match e {
        http::Error::InvalidRequest { reason, .. } => SendFailure::NotSent(format!("invalid request: {reason}")),
        http::Error::Connect { reason, .. } => SendFailure::NotSent(format!("cannot connect: {reason}")),
        http::Error::Timeout { timeout_ms, .. } => SendFailure::MaybeSent(format!("no answer within {timeout_ms} ms")),
        http::Error::Send { reason, .. } => SendFailure::MaybeSent(format!("request failed: {reason}")),
        // A failure while reading the body comes after the server acted.
        http::Error::Receive { reason, .. } => SendFailure::MaybeSent(format!("reading the response failed: {reason}")),
        http::Error::TooLarge { bytes_max, .. } => SendFailure::TooLarge(bytes_max),
    }
}

/// One request of a call, built afresh for each endpoint tried.
struct Req {
    method: Method,
    url: String,
    content_type: Option<&'static str>,
    body: Bytes,
}

impl Req {
    fn get(url: String) -> Self {
        Req { method: Method::GET, url, content_type: None, body: Bytes::new() }
    }

    fn delete(url: String) -> Self {
        Req { method: Method::DELETE, url, content_type: None, body: Bytes::new() }
    }

    fn put(url: String, value: Bytes) -> Self {
        Req { method: Method::PUT, url, content_type: Some(http::OCTET_STREAM), body: value }
    }

    fn post_json(url: String, json: Bytes) -> Self {
        Req { method: Method::POST, url, content_type: Some(http::JSON), body: json }
    }
}

/// A handle to a cluster. Cheap to clone; clones share connections and the
/// memory of which node answered last.
#[derive(Debug, Clone)]
pub struct Client {
    http: HttpClient,
    endpoints: Arc<Vec<String>>,
    preferred: Arc<AtomicUsize>,
}

impl Client {
    /// A client for the nodes at `endpoints` (`host:port` or
    /// `http://host:port`, tried in this order), giving each request
    /// `timeout` per endpoint (connecting included).
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Result<Self, Error> {
        Self::with_http(endpoints, HttpClient::new(timeout))
    }

    /// [`Client::new`] for nodes that serve HTTPS: a bare `host:port`
    /// means `https://host:port`, and every server's certificate must chain
    /// to the CA in `tls` (see [`rampart_tls::load_client_config`]).
    pub fn with_tls(
        endpoints: Vec<String>,
        timeout: Duration,
        tls: Arc<rampart_tls::rustls::ClientConfig>,
    ) -> Result<Self, Error> {
        Self::with_http(endpoints, HttpClient::with_tls(timeout, tls))
    }

    fn with_http(endpoints: Vec<String>, http: HttpClient) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let tls = http.has_tls();
        let endpoints = endpoints.iter().map(|e| normalize_endpoint(e, tls)).collect::<Result<Vec<_>, _>>()?;
        // Cluster nodes are addressed directly: the HTTP client reads no
        // proxy settings from the environment.
        Ok(Client { http, endpoints: Arc::new(endpoints), preferred: Arc::new(AtomicUsize::new(0)) })
    }

    /// Bounds the size of any response body this client reads.
    pub fn with_max_response_bytes(mut self, max: usize) -> Self {
        self.http = self.http.with_response_bytes_max(max);
        self
    }

    /// Authenticates every request with a bearer token (see `docs/api.md`, Authentication).
    pub fn with_bearer_token(mut self, token: &str) -> Result<Self, Error> {
        self.http = self.http.with_bearer_token(token).map_err(|e| Error::InvalidToken(e.to_string()))?;
        Ok(self)
    }

    /// The normalised base URLs, in the order given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Reads `key` linearizably; `None` if it does not exist.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Entry>, Error> {
        self.get_with(key, Consistency::Linearizable).await
    }

    /// Reads `key` from whichever node answers, without checking that it is
    /// up to date.
    pub async fn get_stale(&self, key: impl AsRef<[u8]>) -> Result<Option<Entry>, Error> {
        self.get_with(key, Consistency::Stale).await
    }

    /// Reads `key` with the given consistency.
    pub async fn get_with(&self, key: impl AsRef<[u8]>, consistency: Consistency) -> Result<Option<Entry>, Error> {
        let key = key.as_ref();
        let reply = match self.call(Retry::Idempotent, |base| Req::get(url::kv_get(base, key, consistency))).await {
            Ok(reply) => reply,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let revision =
            reply.revision.as_deref().and_then(|r| r.trim().parse::<u64>().ok()).ok_or_else(|| Error::BadResponse {
                endpoint: reply.endpoint.clone(),
                reason: format!("missing or invalid {REVISION_HEADER} header"),
            })?;
        Ok(Some(Entry { value: reply.body, revision }))
    }

    /// Writes `value` under `key`; returns the new revision.
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<u64, Error> {
        self.put_inner(key.as_ref(), value.as_ref(), None, None).await
    }

    /// Writes `key` with an expiry `ttl_ms` milliseconds after the write (as Redis
    /// `SET key value PX ttl_ms`); a plain [`Client::put`] clears any expiry.
    pub async fn put_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl_ms: u64,
    ) -> Result<u64, Error> {
        self.put_inner(key.as_ref(), value.as_ref(), None, Some(ttl_ms)).await
    }

    /// Writes only if the key's current revision is `revision` (0: only if
    /// the key does not exist); otherwise [`Error::CasFailed`].
    pub async fn put_cas(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, revision: u64) -> Result<u64, Error> {
        self.put_inner(key.as_ref(), value.as_ref(), Some(revision), None).await
    }

    async fn put_inner(&self, key: &[u8], value: &[u8], cas: Option<u64>, ttl_ms: Option<u64>) -> Result<u64, Error> {
        let value = Bytes::copy_from_slice(value);
        let reply = self
            .call(Retry::NotIdempotent, |base| Req::put(url::kv_put(base, key, cas, ttl_ms), value.clone()))
            .await?;
        Ok(decode_json::<Revision>(&reply)?.revision)
    }

    /// Writes `key` attached to lease `lease` (leader mode): the key goes when the lease is
    /// revoked or runs out, and a later write without the lease detaches it. Returns the new
    /// revision. A lease that does not exist (or is full) is refused by the server.
    pub async fn put_with_lease(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        lease: u64,
    ) -> Result<u64, Error> {
        let (key, value) = (key.as_ref(), Bytes::copy_from_slice(value.as_ref()));
        let reply = self
            .call(Retry::NotIdempotent, |base| Req::put(url::kv_put_leased(base, key, lease), value.clone()))
            .await?;
        Ok(decode_json::<Revision>(&reply)?.revision)
    }

    /// Grants a lease of `ttl_ms` milliseconds (leader mode only).
    pub async fn lease_grant(&self, ttl_ms: u64) -> Result<Lease, Error> {
        // A struct of one integer always encodes.
        let json = Bytes::from(serde_json::to_vec(&LeaseRequest { ttl_ms }).expect("LeaseRequest encodes as JSON"));
        let reply = self.call(Retry::NotIdempotent, |base| Req::post_json(url::leases(base), json.clone())).await?;
        decode_json(&reply)
    }

    /// Renews lease `id` to its full TTL; `None` if it no longer exists (revoked or ran out).
    /// Renewing twice does no harm, so a keepalive that timed out is retried on the next node.
    pub async fn lease_keepalive(&self, id: u64) -> Result<Option<Lease>, Error> {
        match self.call(Retry::Idempotent, |base| Req::post_json(url::lease_keepalive(base, id), Bytes::new())).await {
            Ok(reply) => decode_json(&reply).map(Some),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lease `id`'s TTL, remaining time and keys; `None` if it does not exist.
    pub async fn lease_info(&self, id: u64) -> Result<Option<LeaseInfo>, Error> {
        match self.call(Retry::Idempotent, |base| Req::get(url::lease(base, id))).await {
            Ok(reply) => decode_json(&reply).map(Some),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Revokes lease `id`, removing every key attached to it at once; false if it did not exist.
    pub async fn lease_revoke(&self, id: u64) -> Result<bool, Error> {
        match self.call(Retry::NotIdempotent, |base| Req::delete(url::lease(base, id))).await {
            Ok(reply) => Ok(decode_json::<Revoked>(&reply)?.revoked),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits up to `wait_ms` for lock `name` with lease `lease` (leader mode): the key and the
    /// fencing token once held, `None` if the wait ran out.
    ///
    /// With `keep_place`, a request that ends without the lock (the wait ran out, an error, the
    /// connection lost) keeps the lease's place in line until the lease ends, and asking again
    /// with the same lease carries on from it (a holder gets its own token back): so a request
    /// that timed out is retried on the next node. Keep the lease alive while waiting, and revoke
    /// it to give up. Without `keep_place`, a request that ends without the lock withdraws the
    /// lease's key, even one that another request with the same lease holds meanwhile: such a
    /// request is not retried ([`Error::OutcomeUnknown`] on a timeout), and one lease should
    /// have one such request at a time.
    pub async fn lock(&self, name: &str, lease: u64, wait_ms: u64, keep_place: bool) -> Result<Option<Held>, Error> {
        self.acquire("lock", name, lease, None, wait_ms, keep_place).await
    }

    /// Campaigns in election `name` with lease `lease` and `value`, waiting up to `wait_ms` to be
    /// elected (see [`Client::lock`]).
    pub async fn campaign(
        &self,
        name: &str,
        lease: u64,
        value: &str,
        wait_ms: u64,
        keep_place: bool,
    ) -> Result<Option<Held>, Error> {
        self.acquire("election", name, lease, Some(value), wait_ms, keep_place).await
    }

    async fn acquire(
        &self,
        kind: &str,
        name: &str,
        lease: u64,
        value: Option<&str>,
        wait_ms: u64,
        keep_place: bool,
    ) -> Result<Option<Held>, Error> {
        let req = AcquireRequest { lease, wait_ms, value, keep_place };
        let json = serde_json::to_vec(&req).map_err(|e| Error::BadResponse {
            endpoint: String::new(),
            reason: format!("cannot encode the request: {e}"),
        })?;
        let json = Bytes::from(json);
        // The request waits on the server for up to `wait_ms`, on top of the usual time.
        let waiting = self.with_timeout(self.http.timeout() + Duration::from_millis(wait_ms));
        let retry = if keep_place { Retry::Idempotent } else { Retry::NotIdempotent };
        match waiting.call(retry, |base| Req::post_json(url::line(base, kind, name, None), json.clone())).await {
            Ok(reply) => decode_json(&reply).map(Some),
            Err(Error::Server { status: 408, code, .. }) if code == "NOT_ACQUIRED" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Releases lock `name` held with `token`; false if it was not held with it (released
    /// already, or its lease ended).
    pub async fn unlock(&self, name: &str, token: u64) -> Result<bool, Error> {
        self.release("lock", name, token).await
    }

    /// Resigns from election `name` won with `token` (see [`Client::unlock`]).
    pub async fn resign(&self, name: &str, token: u64) -> Result<bool, Error> {
        self.release("election", name, token).await
    }

    async fn release(&self, kind: &str, name: &str, token: u64) -> Result<bool, Error> {
        // Removing a key only at its revision: doing it twice does no harm.
        match self.call(Retry::Idempotent, |base| Req::delete(url::line(base, kind, name, Some(token)))).await {
            Ok(reply) => Ok(decode_json::<Released>(&reply)?.released),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The holder of lock `name`, if any.
    pub async fn lock_holder(&self, name: &str) -> Result<Option<Held>, Error> {
        self.holder("lock", name).await
    }

    /// The leader of election `name`, if any.
    pub async fn election_leader(&self, name: &str) -> Result<Option<Held>, Error> {
        self.holder("election", name).await
    }

    async fn holder(&self, kind: &str, name: &str) -> Result<Option<Held>, Error> {
        match self.call(Retry::Idempotent, |base| Req::get(url::line(base, kind, name, None))).await {
            Ok(reply) => decode_json(&reply).map(Some),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// This client with another per-request timeout, sharing connections and the memory of
    /// which node answered last.
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client { http: self.http.clone().with_timeout(timeout), ..self.clone() }
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<Deleted, Error> {
        let key = key.as_ref();
        let reply = self.call(Retry::NotIdempotent, |base| Req::delete(url::kv_key(base, key))).await?;
        decode_json(&reply)
    }

    /// Up to `limit` keys starting with `prefix`, in key order, read
    /// linearizably.
    pub async fn scan(&self, prefix: impl AsRef<[u8]>, limit: usize) -> Result<ScanPage, Error> {
        self.scan_with(prefix, limit, Consistency::Linearizable).await
    }

    /// [`Client::scan`] with the given consistency.
    pub async fn scan_with(
        &self,
        prefix: impl AsRef<[u8]>,
        limit: usize,
        consistency: Consistency,
    ) -> Result<ScanPage, Error> {
        let prefix = prefix.as_ref();
        let reply =
            self.call(Retry::Idempotent, |base| Req::get(url::kv_scan(base, prefix, limit, consistency))).await?;
        decode_json(&reply)
    }

    /// The status of the first node that answers.
    pub async fn status(&self) -> Result<Status, Error> {
        let reply = self.call(Retry::Idempotent, |base| Req::get(url::status(base))).await?;
        decode_json(&reply)
    }

    /// The status of every endpoint, in order, each on its own (no failover).
    pub async fn status_all(&self) -> Vec<(String, Result<Status, Error>)> {
        let mut out = Vec::with_capacity(self.endpoints.len());
        for index in 0..self.endpoints.len() {
            let result = match self.call_on(&[index], Retry::Idempotent, |base| Req::get(url::status(base))).await {
                Ok(reply) => decode_json(&reply),
                Err(e) => Err(e),
            };
            out.push((self.endpoints[index].clone(), result));
        }
        out
    }

    /// The cluster's members and leader.
    pub async fn members(&self) -> Result<MemberList, Error> {
        let reply = self.call(Retry::Idempotent, |base| Req::get(url::members(base))).await?;
        decode_json(&reply)
    }

    /// Adds a node; returns the new member list.
    pub async fn add_member(&self, member: &NewMember) -> Result<Vec<Member>, Error> {
        // A struct of strings and integers always encodes.
        let json = Bytes::from(serde_json::to_vec(member).expect("NewMember encodes as JSON"));
        let reply = self.call(Retry::NotIdempotent, |base| Req::post_json(url::members(base), json.clone())).await?;
        Ok(decode_json::<MembersOnly>(&reply)?.members)
    }

    /// Removes node `id`; returns the new member list.
    pub async fn remove_member(&self, id: u64) -> Result<Vec<Member>, Error> {
        let reply = self.call(Retry::NotIdempotent, |base| Req::delete(url::member(base, id))).await?;
        Ok(decode_json::<MembersOnly>(&reply)?.members)
    }

    /// Gives member `id`'s place to the node now at its address with an empty data dir
    /// (multi-master mode); returns the new member list.
    pub async fn replace_member(&self, id: u64) -> Result<Vec<Member>, Error> {
        let reply =
            self.call(Retry::NotIdempotent, |base| Req::post_json(url::replace_member(base, id), Bytes::new())).await?;
        Ok(decode_json::<MembersOnly>(&reply)?.members)
    }

    /// Tries every endpoint once, starting with the one that answered last.
    async fn call<F>(&self, retry: Retry, make: F) -> Result<Reply, Error>
    where
        F: Fn(&str) -> Req,
    {
        let n = self.endpoints.len();
        let start = self.preferred.load(Ordering::Relaxed) % n;
        let order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
        self.call_on(&order, retry, make).await
    }

    async fn call_on<F>(&self, order: &[usize], retry: Retry, make: F) -> Result<Reply, Error>
    where
        F: Fn(&str) -> Req,
    {
        let mut attempts = Vec::new();
        for &index in order {
            let base = &self.endpoints[index];
            let step = match self.send_once(base, make(base)).await {
                Ok(reply) => match classify(base, reply.status, &reply.body, retry) {
                    None => {
                        self.preferred.store(index, Ordering::Relaxed);
                        return Ok(reply);
                    }
                    Some(step) => step,
                },
                Err(failure) => classify_failure(base, failure, retry),
            };
            match step {
                Step::Next(why) => attempts.push(Attempt { endpoint: base.clone(), error: why }),
                Step::Fail(e) => {
                    // The node answered; it is alive and worth asking first next time.
                    self.preferred.store(index, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Err(Error::Unavailable { attempts })
    }

    async fn send_once(&self, base: &str, req: Req) -> Result<Reply, SendFailure> {
        let response = self.http.send(req.method, &req.url, req.content_type, req.body).await.map_err(send_failure)?;
        let revision = response.headers.get(REVISION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Reply {
            endpoint: base.to_owned(),
            status: response.status.as_u16(),
            revision,
            body: Vec::from(response.body),
        })
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(reply: &Reply) -> Result<T, Error> {
    serde_json::from_slice(&reply.body)
        .map_err(|e| Error::BadResponse { endpoint: reply.endpoint.clone(), reason: format!("invalid JSON: {e}") })
}

#[cfg(test)]
mod tests;
