//! Endpoint normalisation and URL building for the `/v1/` HTTP API.
//! Pure string work, kept apart so it can be tested without a server.

use crate::Error;

/// Turns `host:port`, `http://host:port` or `http://host:port/` into the
/// base URL `http://host:port`. `https://host:port` keeps its scheme only
/// when `tls` is true (the client has a CA to check servers against); with
/// `tls`, a bare `host:port` becomes `https://host:port`.
pub fn normalize_endpoint(raw: &str, tls: bool) -> Result<String, Error> {
    let invalid = |why: &str| Error::InvalidEndpoint { endpoint: raw.to_owned(), reason: why.to_owned() };
    let trimmed = raw.trim();
    let (scheme, rest) = if let Some(rest) = trimmed.strip_prefix("https://") {
        if !tls {
            return Err(invalid("https needs a CA certificate to check the server against (--cacert)"));
        }
        ("https", rest)
    } else if let Some(rest) = trimmed.strip_prefix("http://") {
        ("http", rest)
    } else if tls {
        ("https", trimmed)
    } else {
        ("http", trimmed)
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(invalid("empty address"));
    }
    if rest.contains("://") {
        return Err(invalid("only http:// and https:// are supported"));
    }
    if rest.contains(['/', '?', '#', ' ', '@']) {
        return Err(invalid("expected host:port with no path"));
    }
    Ok(format!("{scheme}://{rest}"))
}

/// Percent-encodes every byte but RFC 3986's unreserved characters, so any
/// key (slashes, spaces, binary) fits in one path segment or query value.
pub fn percent_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len());
    for &b in data {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Read consistency for gets and scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Linearizable: the answer reflects every write acknowledged before the
    /// read started. The default.
    #[default]
    Linearizable,
    /// Served from the queried node's local state; may lag behind.
    Stale,
}

pub(crate) fn kv_key(base: &str, key: &[u8]) -> String {
    format!("{base}/v1/kv/{}", percent_encode(key))
}

pub(crate) fn kv_get(base: &str, key: &[u8], consistency: Consistency) -> String {
    let mut url = kv_key(base, key);
    if consistency == Consistency::Stale {
        url.push_str("?consistency=stale");
    }
    url
}

/// The URL of a PUT: `cas` writes only at that revision, `ttl_ms` gives the key an expiry (the
/// server refuses both at once).
pub(crate) fn kv_put(base: &str, key: &[u8], cas: Option<u64>, ttl_ms: Option<u64>) -> String {
    let mut url = kv_key(base, key);
    let mut sep = '?';
    if let Some(rev) = cas {
        url.push_str(&format!("{sep}cas={rev}"));
        sep = '&';
    }
    if let Some(ms) = ttl_ms {
        url.push_str(&format!("{sep}ttl_ms={ms}"));
    }
    url
}

/// The URL of `PUT /v1/kv/{key}?lease={id}`: the key goes when the lease does.
pub(crate) fn kv_put_leased(base: &str, key: &[u8], lease: u64) -> String {
    format!("{}?lease={lease}", kv_key(base, key))
}

/// `POST /v1/lease` (grant).
pub(crate) fn leases(base: &str) -> String {
    format!("{base}/v1/lease")
}

/// `GET` (info) and `DELETE` (revoke) of one lease.
pub(crate) fn lease(base: &str, id: u64) -> String {
    format!("{base}/v1/lease/{id}")
}

/// `POST /v1/lease/{id}/keepalive`.
pub(crate) fn lease_keepalive(base: &str, id: u64) -> String {
    format!("{base}/v1/lease/{id}/keepalive")
}

/// `/v1/lock/{name}` or `/v1/election/{name}` (`kind`: `lock` or `election`), with the release's
/// `?token=`.
pub(crate) fn line(base: &str, kind: &str, name: &str, token: Option<u64>) -> String {
    let mut url = format!("{base}/v1/{kind}/{}", percent_encode(name.as_bytes()));
    if let Some(t) = token {
        url.push_str(&format!("?token={t}"));
    }
    url
}

pub(crate) fn kv_scan(base: &str, prefix: &[u8], limit: usize, consistency: Consistency) -> String {
    let mut url = format!("{base}/v1/kv?prefix={}&limit={limit}", percent_encode(prefix));
    if consistency == Consistency::Stale {
        url.push_str("&consistency=stale");
    }
    url
}

pub(crate) fn status(base: &str) -> String {
    format!("{base}/v1/status")
}

pub(crate) fn members(base: &str) -> String {
    format!("{base}/v1/cluster/members")
}

pub(crate) fn replace_member(base: &str, id: u64) -> String {
    format!("{base}/v1/cluster/members/{id}/replace")
}

pub(crate) fn member(base: &str, id: u64) -> String {
    format!("{base}/v1/cluster/members/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_normalise() {
        for raw in ["127.0.0.1:8001", "http://127.0.0.1:8001", "http://127.0.0.1:8001/", " 127.0.0.1:8001 "] {
            assert_eq!(normalize_endpoint(raw, false).unwrap(), "http://127.0.0.1:8001", "{raw}");
        }
        assert_eq!(normalize_endpoint("[::1]:8001", false).unwrap(), "http://[::1]:8001");
        assert_eq!(normalize_endpoint("localhost:80", false).unwrap(), "http://localhost:80");
        assert_eq!(normalize_endpoint("localhost:80", true).unwrap(), "https://localhost:80");
        assert_eq!(normalize_endpoint("https://localhost:80/", true).unwrap(), "https://localhost:80");
        assert_eq!(normalize_endpoint("http://localhost:80", true).unwrap(), "http://localhost:80");
    }

    #[test]
    fn bad_endpoints() {
        for raw in ["", "http://", "https://a:1", "ftp://a:1", "a:1/v1", "a b:1", "user@a:1"] {
            assert!(matches!(normalize_endpoint(raw, false), Err(Error::InvalidEndpoint { .. })), "{raw}");
        }
    }

    #[test]
    fn keys_are_one_path_segment() {
        let base = "http://h:1";
        assert_eq!(kv_get(base, b"plain-key_1.x~", Consistency::Linearizable), "http://h:1/v1/kv/plain-key_1.x~");
        assert_eq!(kv_get(base, b"a/b c?d", Consistency::Stale), "http://h:1/v1/kv/a%2Fb%20c%3Fd?consistency=stale");
        assert_eq!(kv_get(base, &[0xff, b'%'], Consistency::Linearizable), "http://h:1/v1/kv/%FF%25");
    }

    #[test]
    fn put_and_scan_urls() {
        let base = "http://h:1";
        assert_eq!(kv_put(base, b"k", None, None), "http://h:1/v1/kv/k");
        assert_eq!(kv_put(base, b"k", Some(0), None), "http://h:1/v1/kv/k?cas=0");
        assert_eq!(kv_put(base, b"k", Some(42), None), "http://h:1/v1/kv/k?cas=42");
        assert_eq!(kv_put(base, b"k", None, Some(1500)), "http://h:1/v1/kv/k?ttl_ms=1500");
        assert_eq!(kv_put(base, b"k", Some(3), Some(9)), "http://h:1/v1/kv/k?cas=3&ttl_ms=9");
        assert_eq!(kv_scan(base, b"", 10, Consistency::Linearizable), "http://h:1/v1/kv?prefix=&limit=10");
        assert_eq!(
            kv_scan(base, b"a&b=", 5, Consistency::Stale),
            "http://h:1/v1/kv?prefix=a%26b%3D&limit=5&consistency=stale"
        );
        assert_eq!(status(base), "http://h:1/v1/status");
        assert_eq!(members(base), "http://h:1/v1/cluster/members");
        assert_eq!(member(base, 4), "http://h:1/v1/cluster/members/4");
    }

    #[test]
    fn lease_urls() {
        let base = "http://h:1";
        assert_eq!(leases(base), "http://h:1/v1/lease");
        assert_eq!(lease(base, 77), "http://h:1/v1/lease/77");
        assert_eq!(lease_keepalive(base, 77), "http://h:1/v1/lease/77/keepalive");
        assert_eq!(kv_put_leased(base, b"a/b", 9), "http://h:1/v1/kv/a%2Fb?lease=9");
    }

    #[test]
    fn lock_and_election_urls() {
        let base = "http://h:1";
        assert_eq!(line(base, "lock", "jobs", None), "http://h:1/v1/lock/jobs");
        assert_eq!(line(base, "lock", "a b", Some(12)), "http://h:1/v1/lock/a%20b?token=12");
        assert_eq!(line(base, "election", "e", Some(3)), "http://h:1/v1/election/e?token=3");
    }
}
