//! One plain HTTP/1.1 request with a deadline and a bound on the response
//! body, over hyper's pooled client. [`crate::Client`] sends every call
//! through it; [`request`] and [`request_json`] are the same thing for code
//! that needs a single request (test harnesses, probes).
//!
//! `http://` URLs, and `https://` ones for a client made with
//! [`HttpClient::with_tls`] (the server's certificate is checked against the
//! given CA; there is no way to skip the check). It never follows redirects, never reads a proxy from
//! the environment, and never sends a request twice: the one resend it
//! allows is hyper's, of a request that a reused idle connection closed
//! before any of it was written.
//!
//! Every error says whether the request may have reached the server
//! ([`Error::may_have_been_sent`]), so a caller can tell a safe retry from a
//! possible duplicate.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{capture_connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use hyper::body::Bytes;
pub use hyper::{HeaderMap, Method, StatusCode};

/// Default bound on one response body: 64 MiB. A longer body is an error,
/// not a truncated answer.
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Most idle connections kept open to one host.
pub const IDLE_CONNECTIONS_PER_HOST_MAX: usize = 16;

/// An idle pooled connection is closed after this long.
pub const IDLE_CONNECTION_TIMEOUT_S: u64 = 90;

/// `content-type` of a request body that is raw bytes.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// `content-type` of a JSON request body.
pub const JSON: &str = "application/json";

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL or a header was not acceptable; nothing was sent.
    #[error("invalid request to {url:?}: {reason}")]
    InvalidRequest {
        /// The URL as given.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// No connection could be made (refused, unresolvable, or not within
    /// the timeout); nothing was sent.
    #[error("{url}: cannot connect: {reason}")]
    Connect {
        /// The URL as given.
        url: String,
        /// The root cause.
        reason: String,
    },
    /// Connected, but the whole answer did not arrive within the timeout.
    #[error("{url}: no answer within {timeout_ms} ms")]
    Timeout {
        /// The URL as given.
        url: String,
        /// The timeout that passed.
        timeout_ms: u128,
    },
    /// The connection failed after the request may have been written.
    #[error("{url}: request failed: {reason}")]
    Send {
        /// The URL as given.
        url: String,
        /// The root cause.
        reason: String,
    },
    /// The answer started but its body could not be read to the end.
    #[error("{url}: reading the response failed: {reason}")]
    Receive {
        /// The URL as given.
        url: String,
        /// The root cause.
        reason: String,
    },
    /// The response body was longer than the client accepts.
    #[error("{url}: response larger than {bytes_max} bytes")]
    TooLarge {
        /// The URL as given.
        url: String,
        /// The bound that was exceeded.
        bytes_max: usize,
    },
}

impl Error {
    /// False only when the request certainly did not reach the server.
    pub fn may_have_been_sent(&self) -> bool {
        !matches!(self, Error::InvalidRequest { .. } | Error::Connect { .. })
    }
}

/// A fully read answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body, at most the client's bound.
    pub body: Bytes,
}

/// A pooled HTTP/1.1 client with one timeout for each request (connecting,
/// sending and reading the whole body) and a bound on response bodies.
/// Cheap to clone; clones share connections.
///
/// Defaults: [`RESPONSE_BYTES_MAX`], at most
/// [`IDLE_CONNECTIONS_PER_HOST_MAX`] idle connections per host, each closed
/// after [`IDLE_CONNECTION_TIMEOUT_S`]. Building one needs no async runtime;
/// sending needs tokio.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    response_bytes_max: usize,
    /// Whether `https://` URLs may be used (a CA was given).
    tls: bool,
    /// Sent as `Authorization` with every request.
    authorization: Option<HeaderValue>,
}

impl HttpClient {
    /// A client giving each request `timeout`, connecting included, for
    /// `http://` URLs only.
    pub fn new(timeout: Duration) -> Self {
        // Never used for a handshake: `https://` URLs are refused before
        // anything is sent when no CA was given.
        let no_roots = rampart_tls::rustls::ClientConfig::builder_with_provider(rampart_tls::provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_root_certificates(rampart_tls::rustls::RootCertStore::empty())
            .with_no_client_auth();
        Self::build(timeout, no_roots, false)
    }

    /// A client for `http://` and `https://` URLs; an `https://` server
    /// must present a certificate that chains to the CA in `tls`
    /// (see [`rampart_tls::load_client_config`]).
    pub fn with_tls(timeout: Duration, tls: std::sync::Arc<rampart_tls::rustls::ClientConfig>) -> Self {
        Self::build(timeout, (*tls).clone(), true)
    }

    fn build(timeout: Duration, tls_config: rampart_tls::rustls::ClientConfig, tls: bool) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(IDLE_CONNECTION_TIMEOUT_S))
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST_MAX)
            .build(connector);
        HttpClient { inner, timeout, response_bytes_max: RESPONSE_BYTES_MAX, tls, authorization: None }
    }

    /// Whether this client can reach `https://` URLs.
    pub fn has_tls(&self) -> bool {
        self.tls
    }

    /// Sends `Authorization: Bearer <token>` with every request (a token from the cluster's
    /// `POST /v1/auth/tokens`). Fails on a token that is not a valid header value.
    pub fn with_bearer_token(mut self, token: &str) -> Result<Self, Error> {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| Error::InvalidRequest {
            url: String::new(),
            reason: "the token is not a valid HTTP header value".into(),
        })?;
        value.set_sensitive(true);
        self.authorization = Some(value);
        Ok(self)
    }

    /// The same client (sharing its connections) with another per-request timeout; connecting
    /// keeps the first one.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Bounds the size of any response body this client reads.
    pub fn with_response_bytes_max(mut self, bytes_max: usize) -> Self {
        self.response_bytes_max = bytes_max;
        self
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The bound on response bodies.
    pub fn response_bytes_max(&self) -> usize {
        self.response_bytes_max
    }

    /// Sends one request and reads the whole answer, all within the
    /// client's timeout. `content_type` is sent when given.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Response, Error> {
        let invalid = |reason: String| Error::InvalidRequest { url: url.to_owned(), reason };
        let mut builder = Request::builder().method(method).uri(parse_url(url, self.tls)?);
        if let Some(content_type) = content_type {
            let value = HeaderValue::from_str(content_type)
                .map_err(|_| invalid(format!("invalid content-type {content_type:?}")))?;
            builder = builder.header(CONTENT_TYPE, value);
        }
        if let Some(auth) = &self.authorization {
            builder = builder.header(hyper::header::AUTHORIZATION, auth.clone());
        }
        let mut request = builder.body(Full::new(body)).map_err(|e| invalid(e.to_string()))?;
        // Tells a timeout before any connection (nothing sent) from one after.
        let connection = capture_connection(&mut request);
        let timeout_ms = self.timeout.as_millis();
        let deadline = tokio::time::Instant::now() + self.timeout;

        let response = match tokio::time::timeout_at(deadline, self.inner.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) if e.is_connect() => return Err(Error::Connect { url: url.to_owned(), reason: root_cause(&e) }),
            Ok(Err(e)) => return Err(Error::Send { url: url.to_owned(), reason: root_cause(&e) }),
            Err(_) if connection.connection_metadata().is_none() => {
                return Err(Error::Connect {
                    url: url.to_owned(),
                    reason: format!("no connection within {timeout_ms} ms"),
                })
            }
            Err(_) => return Err(Error::Timeout { url: url.to_owned(), timeout_ms }),
        };

        let (parts, mut body) = response.into_parts();
        let bytes_max = self.response_bytes_max;
        let too_large = || Error::TooLarge { url: url.to_owned(), bytes_max };
        if body.size_hint().lower() > bytes_max as u64 {
            return Err(too_large());
        }
        let mut data = Vec::new();
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Err(Error::Timeout { url: url.to_owned(), timeout_ms }),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(Error::Receive { url: url.to_owned(), reason: root_cause(&e) }),
                Ok(Some(Ok(frame))) => frame,
            };
            // Trailers carry nothing this client reads.
            if let Ok(chunk) = frame.into_data() {
                if data.len() + chunk.len() > bytes_max {
                    return Err(too_large());
                }
                data.extend_from_slice(&chunk);
            }
        }
        Ok(Response { status: parts.status, headers: parts.headers, body: Bytes::from(data) })
    }
}

/// One request with a fresh connection: `body` is sent as
/// `application/octet-stream` unless empty; the answer is bounded by
/// [`RESPONSE_BYTES_MAX`] and must arrive whole within `timeout`.
pub async fn request(
    method: Method,
    url: &str,
    body: impl Into<Bytes>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), Error> {
    let body = body.into();
    let content_type = (!body.is_empty()).then_some(OCTET_STREAM);
    let response = HttpClient::new(timeout).send(method, url, content_type, body).await?;
    Ok((response.status, response.body))
}

/// [`request`] with `value` as an `application/json` body.
pub async fn request_json<T: serde::Serialize + ?Sized>(
    method: Method,
    url: &str,
    value: &T,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), Error> {
    let body = serde_json::to_vec(value).map_err(|e| Error::InvalidRequest {
        url: url.to_owned(),
        reason: format!("cannot encode the JSON body: {e}"),
    })?;
    let response = HttpClient::new(timeout).send(method, url, Some(JSON), Bytes::from(body)).await?;
    Ok((response.status, response.body))
}

/// Parses an absolute `http://host[:port]/...` URL (or `https://` when the
/// client has a CA to check servers against).
fn parse_url(url: &str, tls: bool) -> Result<Uri, Error> {
    let invalid = |reason: &str| Error::InvalidRequest { url: url.to_owned(), reason: reason.to_owned() };
    let uri: Uri = url.parse().map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") if tls => {}
        Some("https") => return Err(invalid("https needs a CA certificate to check the server against (--cacert)")),
        Some(_) => return Err(invalid("only http:// and https:// are supported")),
        None => return Err(invalid("expected an absolute http:// URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    Ok(uri)
}

/// The end of an error's source chain: hyper's own messages ("client error
/// (Connect)") hide the useful part ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut root = e;
    while let Some(source) = root.source() {
        root = source;
    }
    root.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_anything_is_sent() {
        for (url, why) in [
            ("https://127.0.0.1:1/x", "https needs a CA certificate"),
            ("ftp://127.0.0.1:1/x", "only http:// and https://"),
            ("/v1/status", "absolute"),
            ("http://[::1/x", ""),
            ("not a url", ""),
        ] {
            match parse_url(url, false) {
                Err(e @ Error::InvalidRequest { .. }) => {
                    assert!(!e.may_have_been_sent());
                    assert!(e.to_string().contains(why), "{url}: {e}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        assert_eq!(parse_url("http://127.0.0.1:8001/v1/kv/a%2Fb?x=1", false).unwrap().path(), "/v1/kv/a%2Fb");
        assert_eq!(parse_url("https://localhost:8001/v1/status", true).unwrap().scheme_str(), Some("https"));
    }

    #[test]
    fn which_errors_may_have_reached_the_server() {
        let url = || "http://h:1/".to_owned();
        assert!(!Error::Connect { url: url(), reason: "refused".into() }.may_have_been_sent());
        assert!(Error::Timeout { url: url(), timeout_ms: 5 }.may_have_been_sent());
        assert!(Error::Send { url: url(), reason: "reset".into() }.may_have_been_sent());
        assert!(Error::Receive { url: url(), reason: "reset".into() }.may_have_been_sent());
        assert!(Error::TooLarge { url: url(), bytes_max: 1 }.may_have_been_sent());
    }
}
