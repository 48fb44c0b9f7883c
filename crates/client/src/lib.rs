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
mod types;
mod url;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use types::{Deleted, Entry, Item, Member, MemberList, NewMember, ScanPage, Status};
pub use url::{normalize_endpoint, percent_encode, Consistency};

use types::{ErrorBody, MembersOnly, Revision};

/// Default bound on one response body: 64 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

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
    /// The HTTP client could not be built.
    #[error("cannot build HTTP client: {0}")]
    Build(#[source] reqwest::Error),
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

/// A short description of a transport error. reqwest's own message
/// ("error sending request for url (...)") hides the useful part, the root
/// cause at the end of the source chain ("Connection refused").
fn describe(e: &reqwest::Error, timeout: Duration, phase: &str) -> String {
    if e.is_timeout() {
        return format!("no answer within {} ms", timeout.as_millis());
    }
    let mut root: &dyn std::error::Error = e;
    while let Some(source) = root.source() {
        root = source;
    }
    if e.is_connect() {
        format!("cannot connect: {root}")
    } else {
        format!("{phase}: {root}")
    }
}

/// A handle to a cluster. Cheap to clone; clones share connections and the
/// memory of which node answered last.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoints: Arc<Vec<String>>,
    preferred: Arc<AtomicUsize>,
    max_response_bytes: usize,
    timeout: Duration,
}

impl Client {
    /// A client for the nodes at `endpoints` (`host:port` or
    /// `http://host:port`, tried in this order), giving each request
    /// `timeout` per endpoint (connecting included).
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let endpoints = endpoints.iter().map(|e| normalize_endpoint(e)).collect::<Result<Vec<_>, _>>()?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // Cluster nodes are addressed directly; an HTTP_PROXY in the
            // environment must not reroute loopback traffic.
            .no_proxy()
            .build()
            .map_err(Error::Build)?;
        Ok(Client {
            http,
            endpoints: Arc::new(endpoints),
            preferred: Arc::new(AtomicUsize::new(0)),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            timeout,
        })
    }

    /// Bounds the size of any response body this client reads.
    pub fn with_max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
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
        let reply = match self.call(Retry::Idempotent, |http, base| http.get(url::kv_get(base, key, consistency))).await
        {
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
        self.put_inner(key.as_ref(), value.as_ref(), None).await
    }

    /// Writes only if the key's current revision is `revision` (0: only if
    /// the key does not exist); otherwise [`Error::CasFailed`].
    pub async fn put_cas(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, revision: u64) -> Result<u64, Error> {
        self.put_inner(key.as_ref(), value.as_ref(), Some(revision)).await
    }

    async fn put_inner(&self, key: &[u8], value: &[u8], cas: Option<u64>) -> Result<u64, Error> {
        let reply = self
            .call(Retry::NotIdempotent, |http, base| {
                http.put(url::kv_put(base, key, cas))
                    .header("content-type", "application/octet-stream")
                    .body(value.to_vec())
            })
            .await?;
        Ok(decode_json::<Revision>(&reply)?.revision)
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<Deleted, Error> {
        let key = key.as_ref();
        let reply = self.call(Retry::NotIdempotent, |http, base| http.delete(url::kv_key(base, key))).await?;
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
            self.call(Retry::Idempotent, |http, base| http.get(url::kv_scan(base, prefix, limit, consistency))).await?;
        decode_json(&reply)
    }

    /// The status of the first node that answers.
    pub async fn status(&self) -> Result<Status, Error> {
        let reply = self.call(Retry::Idempotent, |http, base| http.get(url::status(base))).await?;
        decode_json(&reply)
    }

    /// The status of every endpoint, in order, each on its own (no failover).
    pub async fn status_all(&self) -> Vec<(String, Result<Status, Error>)> {
        let mut out = Vec::with_capacity(self.endpoints.len());
        for index in 0..self.endpoints.len() {
            let result = match self.call_on(&[index], Retry::Idempotent, |http, base| http.get(url::status(base))).await
            {
                Ok(reply) => decode_json(&reply),
                Err(e) => Err(e),
            };
            out.push((self.endpoints[index].clone(), result));
        }
        out
    }

    /// The cluster's members and leader.
    pub async fn members(&self) -> Result<MemberList, Error> {
        let reply = self.call(Retry::Idempotent, |http, base| http.get(url::members(base))).await?;
        decode_json(&reply)
    }

    /// Adds a node; returns the new member list.
    pub async fn add_member(&self, member: &NewMember) -> Result<Vec<Member>, Error> {
        let reply = self.call(Retry::NotIdempotent, |http, base| http.post(url::members(base)).json(member)).await?;
        Ok(decode_json::<MembersOnly>(&reply)?.members)
    }

    /// Removes node `id`; returns the new member list.
    pub async fn remove_member(&self, id: u64) -> Result<Vec<Member>, Error> {
        let reply = self.call(Retry::NotIdempotent, |http, base| http.delete(url::member(base, id))).await?;
        Ok(decode_json::<MembersOnly>(&reply)?.members)
    }

    /// Tries every endpoint once, starting with the one that answered last.
    async fn call<F>(&self, retry: Retry, make: F) -> Result<Reply, Error>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        let n = self.endpoints.len();
        let start = self.preferred.load(Ordering::Relaxed) % n;
        let order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
        self.call_on(&order, retry, make).await
    }

    async fn call_on<F>(&self, order: &[usize], retry: Retry, make: F) -> Result<Reply, Error>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        let mut attempts = Vec::new();
        for &index in order {
            let base = &self.endpoints[index];
            let step = match self.send_once(base, make(&self.http, base)).await {
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

    async fn send_once(&self, base: &str, request: reqwest::RequestBuilder) -> Result<Reply, SendFailure> {
        let transport = |e: reqwest::Error| {
            if e.is_connect() || e.is_builder() {
                SendFailure::NotSent(describe(&e, self.timeout, "request failed"))
            } else {
                SendFailure::MaybeSent(describe(&e, self.timeout, "request failed"))
            }
        };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let revision = response.headers().get(REVISION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let max = self.max_response_bytes;
        if response.content_length().is_some_and(|len| len > max as u64) {
            return Err(SendFailure::TooLarge(max));
        }
        let mut body = Vec::new();
        // A failure while reading the body comes after the server acted.
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| SendFailure::MaybeSent(describe(&e, self.timeout, "reading the response failed")))?
        {
            if body.len() + chunk.len() > max {
                return Err(SendFailure::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply { endpoint: base.to_owned(), status, revision, body })
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(reply: &Reply) -> Result<T, Error> {
    serde_json::from_slice(&reply.body)
        .map_err(|e| Error::BadResponse { endpoint: reply.endpoint.clone(), reason: format!("invalid JSON: {e}") })
}

#[cfg(test)]
mod tests;
