//! Configuration: the TOML file format, the command-line quick start, and
//! validation. A broken configuration is rejected with the file, the field and
//! the reason; nothing here opens a socket.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::algo::{maglev::is_prime, Algorithm};
use crate::tls::{Acceptor, Connector};

/// Largest accepted configuration file.
pub const CONFIG_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Most frontends and most backends per frontend a configuration may declare.
pub const FRONTENDS_MAX: usize = 256;
pub const BACKENDS_PER_FRONTEND_MAX: usize = 4096;
/// Most retries a frontend may configure.
pub const RETRIES_MAX: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: field `{field}`: {reason}")]
    Invalid { file: String, field: String, reason: String },
}

/// Proxy mode of a frontend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Http,
    Tcp,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Http => "http",
            Mode::Tcp => "tcp",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "http" => Ok(Mode::Http),
            "tcp" => Ok(Mode::Tcp),
            _ => Err(format!("unknown mode `{s}` (expected http or tcp)")),
        }
    }
}

/// What the hashing algorithms hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Uri,
    Header(http::HeaderName),
    Cookie(String),
}

impl std::str::FromStr for HashKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "client_ip" {
            Ok(HashKey::ClientIp)
        } else if s == "uri" {
            Ok(HashKey::Uri)
        } else if let Some(h) = s.strip_prefix("header:") {
            http::HeaderName::from_bytes(h.as_bytes())
                .map(HashKey::Header)
                .map_err(|_| format!("`{h}` is not a valid header name"))
        } else if let Some(c) = s.strip_prefix("cookie:") {
            if c.is_empty() || c.contains(['=', ';', ' ']) {
                Err(format!("`{c}` is not a valid cookie name"))
            } else {
                Ok(HashKey::Cookie(c.to_string()))
            }
        } else {
            Err(format!("unknown hash key `{s}` (expected client_ip, uri, header:NAME or cookie:NAME)"))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    Tcp,
    Http,
}

/// Active health checks. Defaults: TCP connect every 500 ms, 1 s timeout,
/// down after 2 failures, up after 2 successes, 10 % jitter.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    pub enabled: bool,
    pub kind: HealthKind,
    /// HTTP checks: path to GET; a 2xx answer counts as healthy.
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub rise: u32,
    pub fall: u32,
    /// Each interval is stretched or shrunk at random by up to this share.
    pub jitter_percent: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            enabled: true,
            kind: HealthKind::Tcp,
            path: "/".into(),
            interval_ms: 500,
            timeout_ms: 1000,
            rise: 2,
            fall: 2,
            jitter_percent: 10,
        }
    }
}

/// Passive ejection (outlier detection). Defaults: 5 consecutive failures
/// (connect errors, resets, timeouts, and 5xx answers) eject a backend for
/// 5 s x the number of times it was ejected, at most 60 s, never more than
/// 50 % of a frontend's backends at once.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EjectionConfig {
    pub enabled: bool,
    pub consecutive_failures: u32,
    pub count_5xx: bool,
    pub base_ms: u64,
    pub max_ms: u64,
    pub max_ejected_percent: u32,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        EjectionConfig {
            enabled: true,
            consecutive_failures: 5,
            count_5xx: true,
            base_ms: 5_000,
            max_ms: 60_000,
            max_ejected_percent: 50,
        }
    }
}

/// Retries. Defaults: at most 2 retries, on connect failure or a reset before
/// any response byte; none on statuses; a retry budget of 20 % of recent
/// requests plus 10 retries per second.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    pub max_retries: u32,
    /// Statuses that make an idempotent request go to another backend.
    pub on_statuses: Vec<u16>,
    pub budget_percent: u32,
    pub budget_min_per_sec: u32,
    /// Request bodies up to this size are buffered so they can be re-sent;
    /// larger bodies are streamed and retried only if never sent.
    pub body_bytes_max: usize,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 2,
            on_statuses: Vec::new(),
            budget_percent: 20,
            budget_min_per_sec: 10,
            body_bytes_max: 64 * 1024,
        }
    }
}

/// Default `timeouts.connect_ms`: a TCP connect (and TLS handshake) to a backend, per attempt.
pub const DEFAULT_CONNECT_MS: u64 = 1_000;
/// Default `timeouts.first_byte_ms`: from accepting a client connection to
/// the first byte of its first request, the TLS handshake included.
pub const DEFAULT_FIRST_BYTE_MS: u64 = 10_000;
/// Default `timeouts.request_header_ms`: from a request's first byte to the
/// end of its head (slowloris guard).
pub const DEFAULT_REQUEST_HEADER_MS: u64 = 10_000;
/// Default `timeouts.idle_ms`: a keep-alive connection waiting for its next
/// request, or a TCP session moving no byte either way.
pub const DEFAULT_IDLE_MS: u64 = 60_000;
/// Default `timeouts.request_ms`: request to response header, all attempts.
pub const DEFAULT_REQUEST_MS: u64 = 30_000;
/// Default `max_conns` of a frontend: client connections open at once on its
/// listener; more are closed as soon as they are accepted.
pub const DEFAULT_FRONTEND_CONNS: u32 = 10_000;
/// Largest value of any timeout (one day).
pub const TIMEOUT_MS_MAX: u64 = 86_400_000;

/// Timeouts, in milliseconds; 0 disables one (except connect).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    /// TCP connect to a backend, and the TLS handshake with it (per attempt).
    pub connect_ms: u64,
    /// From accept to the first byte of the first request (HTTP), the TLS
    /// handshake included; a TCP frontend uses it for the TLS handshake only
    /// (plain TCP clients may wait for the server to speak first).
    pub first_byte_ms: u64,
    /// From a request's first byte to the end of its head (slowloris guard).
    pub request_header_ms: u64,
    /// A client or TCP session with no bytes either way is closed.
    pub idle_ms: u64,
    /// From request to response header, across all attempts (504 after).
    pub request_ms: u64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            connect_ms: DEFAULT_CONNECT_MS,
            first_byte_ms: DEFAULT_FIRST_BYTE_MS,
            request_header_ms: DEFAULT_REQUEST_HEADER_MS,
            idle_ms: DEFAULT_IDLE_MS,
            request_ms: DEFAULT_REQUEST_MS,
        }
    }
}

/// `[frontend.tls]`: the frontend terminates TLS. Paths are relative to the
/// configuration file's folder.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFrontendTls {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key of the leaf.
    pub key: String,
    /// PEM CA certificates: when set, clients must present a certificate one
    /// of them signed (mutual TLS).
    #[serde(default)]
    pub client_ca: Option<String>,
}

/// `[frontend.backend_tls]`: the frontend speaks TLS to its backends.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackendTls {
    /// PEM CA certificates the backends' certificates must chain to (only
    /// these are trusted; there is no way to skip the check).
    pub ca: String,
    /// Name the backends' certificates must carry, sent as SNI; default:
    /// each backend's IP address (then an IP SAN).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Client certificate chain and key to present to the backends.
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
}

/// A frontend's TLS after validation: the files, and the loaded acceptor.
#[derive(Clone, Debug)]
pub struct FrontendTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub acceptor: Acceptor,
}

/// TLS to a frontend's backends after validation.
#[derive(Clone, Debug)]
pub struct BackendTls {
    pub ca: PathBuf,
    pub server_name: Option<String>,
    pub cert: Option<PathBuf>,
    pub connector: Connector,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub addr: String,
    #[serde(default = "one")]
    pub weight: u32,
    /// Limit on in-flight requests / sessions to this backend.
    #[serde(default)]
    pub max_conns: Option<u32>,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFrontend {
    pub name: String,
    pub listen: String,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    #[serde(default = "default_algo")]
    pub algorithm: String,
    #[serde(default)]
    pub hash_key: Option<String>,
    #[serde(default)]
    pub load_bound: Option<f64>,
    #[serde(default)]
    pub maglev_table_size: Option<u32>,
    #[serde(default = "default_frontend_conns")]
    pub max_conns: u32,
    #[serde(default)]
    pub slow_start_ms: u64,
    #[serde(default = "default_pool_idle")]
    pub pool_idle_per_backend: usize,
    #[serde(default = "default_pool_idle_timeout")]
    pub pool_idle_timeout_ms: u64,
    #[serde(default = "default_header_bytes")]
    pub request_header_bytes_max: usize,
    #[serde(default)]
    pub http2: bool,
    #[serde(default)]
    pub access_log: bool,
    #[serde(default = "default_access_log_format")]
    pub access_log_format: String,
    #[serde(default)]
    pub timeouts: TimeoutConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub ejection: EjectionConfig,
    #[serde(default)]
    pub retries: RetryConfig,
    #[serde(default)]
    pub tls: Option<RawFrontendTls>,
    #[serde(default)]
    pub backend_tls: Option<RawBackendTls>,
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendConfig>,
}

fn default_mode() -> Mode {
    Mode::Http
}
fn default_algo() -> String {
    "round_robin".into()
}
fn default_frontend_conns() -> u32 {
    DEFAULT_FRONTEND_CONNS
}
fn default_pool_idle() -> usize {
    128
}
fn default_pool_idle_timeout() -> u64 {
    30_000
}
fn default_header_bytes() -> usize {
    64 * 1024
}
/// Placeholders: {client} {frontend} {method} {uri} {status} {backend}
/// {duration_ms} {attempts} {bytes_in} {bytes_out}.
pub const DEFAULT_ACCESS_LOG_FORMAT: &str =
    "{client} {frontend} \"{method} {uri}\" {status} backend={backend} attempts={attempts} {duration_ms}ms";
fn default_access_log_format() -> String {
    DEFAULT_ACCESS_LOG_FORMAT.into()
}

/// Default `admin.max_conns`: admin API connections open at once.
pub const DEFAULT_ADMIN_CONNS: u32 = 64;
/// Default `admin.request_header_ms`: a request head to the admin API,
/// counted from the accept or from the previous answer.
pub const DEFAULT_ADMIN_REQUEST_HEADER_MS: u64 = 10_000;
/// Default `admin.idle_ms`: an admin connection moving no byte is closed.
pub const DEFAULT_ADMIN_IDLE_MS: u64 = 60_000;
/// Largest `admin.max_conns` (and `max_conns` of a frontend).
pub const CONNS_MAX: u32 = 1_000_000;

/// `[admin]`: the admin API's address and the limits of its listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    /// A file holding the bearer token that the changing endpoints (`POST /reload`,
    /// `POST /backends/...`) require; relative to the config file's folder.
    pub token_file: Option<String>,
    pub max_conns: u32,
    pub request_header_ms: u64,
    pub idle_ms: u64,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: None,
            token_file: None,
            max_conns: DEFAULT_ADMIN_CONNS,
            request_header_ms: DEFAULT_ADMIN_REQUEST_HEADER_MS,
            idle_ms: DEFAULT_ADMIN_IDLE_MS,
        }
    }
}

/// The admin listener's limits after validation (fixed at start, like its address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminLimits {
    /// Connections open at once; more are closed at accept.
    pub max_conns: u32,
    /// Waiting for a request head, from the accept or the previous answer
    /// (first byte and head alike); zero: off.
    pub request_header: Duration,
    /// No byte either way for this long closes the connection; zero: off.
    pub idle: Duration,
    /// SHA-256 of the admin token (`admin.token_file`): `POST` endpoints need
    /// `Authorization: Bearer <token>`. `None`: no token (loopback only).
    pub token_sha256: Option<[u8; 32]>,
}

/// Shortest admin token accepted (a guessable token protects nothing).
pub const ADMIN_TOKEN_BYTES_MIN: usize = 16;
/// Largest admin token file read.
pub const ADMIN_TOKEN_FILE_BYTES_MAX: u64 = 4096;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default, rename = "frontend")]
    pub frontends: Vec<RawFrontend>,
}

/// One backend after validation.
#[derive(Clone, Debug, PartialEq)]
pub struct Backend {
    pub addr: SocketAddr,
    pub weight: u32,
    pub max_conns: Option<u32>,
}

/// One frontend after validation.
#[derive(Clone, Debug)]
pub struct Frontend {
    pub name: String,
    pub listen: SocketAddr,
    pub mode: Mode,
    pub algorithm: Algorithm,
    pub hash_key: HashKey,
    pub load_bound: Option<f64>,
    pub maglev_table_size: u32,
    pub max_conns: u32,
    pub slow_start: Duration,
    pub pool_idle_per_backend: usize,
    pub pool_idle_timeout: Duration,
    pub request_header_bytes_max: usize,
    /// Also accept cleartext HTTP/2 (prior knowledge) from clients.
    pub http2: bool,
    pub access_log: Option<String>,
    pub timeouts: TimeoutConfig,
    pub health: HealthConfig,
    pub ejection: EjectionConfig,
    pub retries: RetryConfig,
    /// TLS with clients (`None`: cleartext).
    pub tls: Option<FrontendTls>,
    /// TLS to the backends (`None`: cleartext).
    pub backend_tls: Option<BackendTls>,
    pub backends: Vec<Backend>,
}

impl Frontend {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts.connect_ms)
    }
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub admin: Option<SocketAddr>,
    pub admin_limits: AdminLimits,
    pub frontends: Vec<Frontend>,
    /// Where it came from, for reloads and messages (`None`: command line).
    pub source: Option<PathBuf>,
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        if meta.len() > CONFIG_FILE_BYTES_MAX {
            return Err(ConfigError::Invalid {
                file,
                field: "(file)".into(),
                reason: format!("larger than {CONFIG_FILE_BYTES_MAX} bytes"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        let base = path.parent().unwrap_or(Path::new(""));
        let mut cfg = Config::parse_in(&text, &file, base)?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses and validates TOML text; `file` names it in errors. Relative
    /// certificate paths are taken from the current directory.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        Config::parse_in(text, file, Path::new(""))
    }

    /// As [`Config::parse`], with relative paths taken from `base`.
    pub fn parse_in(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        validate_in(raw, file, base)
    }
}

fn invalid(file: &str, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { file: file.to_string(), field: field.into(), reason: reason.into() }
}

fn parse_addr(file: &str, field: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse::<SocketAddr>().map_err(|_| invalid(file, field, format!("`{s}` is not an IP:port address")))
}

/// Checks every field of `raw` and returns the typed configuration
/// (relative certificate paths from the current directory).
pub fn validate(raw: RawConfig, file: &str) -> Result<Config, ConfigError> {
    validate_in(raw, file, Path::new(""))
}

/// As [`validate`], with relative certificate paths taken from `base`; the
/// certificate and key files are read and checked here.
pub fn validate_in(raw: RawConfig, file: &str, base: &Path) -> Result<Config, ConfigError> {
    let admin = match &raw.admin.listen {
        Some(a) => Some(parse_addr(file, "admin.listen", a)?),
        None => None,
    };
    let mut admin_limits = validate_admin(file, &raw.admin)?;
    admin_limits.token_sha256 = match &raw.admin.token_file {
        None => None,
        Some(p) => Some(read_admin_token(file, &base.join(p))?),
    };
    if let Some(addr) = admin {
        if !addr.ip().is_loopback() && admin_limits.token_sha256.is_none() {
            return Err(invalid(
                file,
                "admin.listen",
                "is reachable from other hosts: set admin.token_file, or anyone who can reach it can reload the \
                 config and drain backends",
            ));
        }
    }
    if raw.frontends.is_empty() {
        return Err(invalid(file, "frontend", "at least one [[frontend]] is required"));
    }
    if raw.frontends.len() > FRONTENDS_MAX {
        return Err(invalid(file, "frontend", format!("more than {FRONTENDS_MAX} frontends")));
    }
    let mut names = HashSet::new();
    let mut listens = HashSet::new();
    let mut frontends = Vec::with_capacity(raw.frontends.len());
    for (fi, f) in raw.frontends.into_iter().enumerate() {
        let at = Field { file, frontend: fi, base };
        if f.name.is_empty() || !f.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(at.invalid("name", "must be non-empty and use only letters, digits, - and _"));
        }
        if !names.insert(f.name.clone()) {
            return Err(at.invalid("name", format!("duplicate frontend name `{}`", f.name)));
        }
        let listen = parse_addr(file, &at.name("listen"), &f.listen)?;
        if listen.port() != 0 && !listens.insert(listen) {
            return Err(at.invalid("listen", format!("{listen} is used by two frontends")));
        }
        if Some(listen) == admin && listen.port() != 0 {
            return Err(at.invalid("listen", "same address as admin.listen"));
        }
        frontends.push(validate_frontend(&at, f, listen)?);
    }
    assert!(!frontends.is_empty() && frontends.len() <= FRONTENDS_MAX);
    Ok(Config { admin, admin_limits, frontends, source: None })
}

fn validate_admin(file: &str, a: &RawAdmin) -> Result<AdminLimits, ConfigError> {
    if a.max_conns == 0 || a.max_conns > CONNS_MAX {
        return Err(invalid(file, "admin.max_conns", format!("must be between 1 and {CONNS_MAX}")));
    }
    for (name, v) in [("request_header_ms", a.request_header_ms), ("idle_ms", a.idle_ms)] {
        if v > TIMEOUT_MS_MAX {
            return Err(invalid(file, format!("admin.{name}"), format!("must be at most {TIMEOUT_MS_MAX} (one day)")));
        }
    }
    Ok(AdminLimits {
        max_conns: a.max_conns,
        request_header: Duration::from_millis(a.request_header_ms),
        idle: Duration::from_millis(a.idle_ms),
        token_sha256: None,
    })
}

/// The SHA-256 of the token in `path` (surrounding whitespace removed).
fn read_admin_token(file: &str, path: &Path) -> Result<[u8; 32], ConfigError> {
    use sha2::Digest;
    let bad = |why: String| invalid(file, "admin.token_file", format!("{}: {why}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.len() > ADMIN_TOKEN_FILE_BYTES_MAX {
        return Err(bad(format!("larger than {ADMIN_TOKEN_FILE_BYTES_MAX} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let token = text.trim();
    if token.len() < ADMIN_TOKEN_BYTES_MIN || token.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(bad(format!(
            "the token must be at least {ADMIN_TOKEN_BYTES_MIN} printable ASCII characters without spaces"
        )));
    }
    Ok(sha2::Sha256::digest(token.as_bytes()).into())
}

/// Names the fields of one frontend in errors: `frontend[3].retries.max_retries`.
struct Field<'a> {
    file: &'a str,
    frontend: usize,
    /// Folder relative paths are taken from.
    base: &'a Path,
}

impl Field<'_> {
    fn name(&self, field: &str) -> String {
        format!("frontend[{}].{field}", self.frontend)
    }
    fn invalid(&self, field: &str, reason: impl Into<String>) -> ConfigError {
        invalid(self.file, self.name(field), reason)
    }
    /// A path from the file: relative ones are taken from the file's folder.
    fn path(&self, field: &str, p: &str) -> Result<PathBuf, ConfigError> {
        if p.is_empty() {
            return Err(self.invalid(field, "must name a file"));
        }
        Ok(self.base.join(p))
    }
}

/// One frontend whose name and listen address were checked already.
fn validate_frontend(at: &Field, f: RawFrontend, listen: SocketAddr) -> Result<Frontend, ConfigError> {
    let (algorithm, hash_key, load_bound, maglev_table_size) = validate_balancing(at, &f)?;
    validate_frontend_limits(at, &f)?;
    validate_timeouts(at, &f.timeouts)?;
    validate_health(at, &f.health)?;
    validate_ejection(at, &f.ejection)?;
    validate_retries(at, &f.retries)?;
    let backends = validate_backends(at, &f.backends)?;
    let tls = validate_frontend_tls(at, &f)?;
    let backend_tls = validate_backend_tls(at, &f)?;
    let access_log = f.access_log.then(|| f.access_log_format.clone());
    Ok(Frontend {
        name: f.name,
        listen,
        mode: f.mode,
        algorithm,
        hash_key,
        load_bound,
        maglev_table_size,
        max_conns: f.max_conns,
        slow_start: Duration::from_millis(f.slow_start_ms),
        pool_idle_per_backend: f.pool_idle_per_backend,
        pool_idle_timeout: Duration::from_millis(f.pool_idle_timeout_ms),
        request_header_bytes_max: f.request_header_bytes_max,
        http2: f.http2,
        access_log,
        timeouts: f.timeouts,
        health: f.health,
        ejection: f.ejection,
        retries: f.retries,
        tls,
        backend_tls,
        backends,
    })
}

/// ALPN protocols a frontend of `mode` offers clients.
fn frontend_alpn(mode: Mode, http2: bool) -> &'static [&'static [u8]] {
    match (mode, http2) {
        (Mode::Tcp, _) => &[],
        (Mode::Http, true) => &[b"h2", b"http/1.1"],
        (Mode::Http, false) => &[b"http/1.1"],
    }
}

/// `[frontend.tls]`: the files exist and make a usable server configuration.
fn validate_frontend_tls(at: &Field, f: &RawFrontend) -> Result<Option<FrontendTls>, ConfigError> {
    let Some(t) = &f.tls else { return Ok(None) };
    let cert = at.path("tls.cert", &t.cert)?;
    let key = at.path("tls.key", &t.key)?;
    let client_ca = match &t.client_ca {
        Some(c) => Some(at.path("tls.client_ca", c)?),
        None => None,
    };
    let acceptor = Acceptor::new(&cert, &key, client_ca.as_deref(), frontend_alpn(f.mode, f.http2))
        .map_err(|e| at.invalid("tls", e.to_string()))?;
    Ok(Some(FrontendTls { cert, key, client_ca, acceptor }))
}

/// `[frontend.backend_tls]`: a CA to check backends against, a valid server
/// name, and a client certificate only together with its key.
fn validate_backend_tls(at: &Field, f: &RawFrontend) -> Result<Option<BackendTls>, ConfigError> {
    let Some(t) = &f.backend_tls else { return Ok(None) };
    let ca = at.path("backend_tls.ca", &t.ca)?;
    let client = match (&t.cert, &t.key) {
        (Some(c), Some(k)) => Some((at.path("backend_tls.cert", c)?, at.path("backend_tls.key", k)?)),
        (None, None) => None,
        _ => return Err(at.invalid("backend_tls", "cert and key go together (both or neither)")),
    };
    // Backends are spoken to in HTTP/1.1 (http mode); a TCP frontend passes bytes.
    let alpn: &[&[u8]] = if f.mode == Mode::Http { &[b"http/1.1"] } else { &[] };
    let connector =
        Connector::new(&ca, t.server_name.as_deref(), client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())), alpn)
            .map_err(|e| at.invalid("backend_tls", e.to_string()))?;
    Ok(Some(BackendTls { ca, server_name: t.server_name.clone(), cert: client.map(|(c, _)| c), connector }))
}

/// The algorithm and its parameters: hash key, load bound, Maglev table size.
fn validate_balancing(at: &Field, f: &RawFrontend) -> Result<(Algorithm, HashKey, Option<f64>, u32), ConfigError> {
    let algorithm: Algorithm = f.algorithm.parse().map_err(|e: String| at.invalid("algorithm", e))?;
    let hash_key = match (&f.hash_key, f.mode) {
        (Some(k), mode) => {
            let k: HashKey = k.parse().map_err(|e: String| at.invalid("hash_key", e))?;
            if mode == Mode::Tcp && k != HashKey::ClientIp {
                return Err(at.invalid("hash_key", "a tcp frontend can only hash on client_ip"));
            }
            k
        }
        (None, Mode::Http) => HashKey::Uri,
        (None, Mode::Tcp) => HashKey::ClientIp,
    };
    let load_bound = match f.load_bound {
        None => Some(1.25),
        Some(0.0) => None,
        Some(c) if (1.0..=100.0).contains(&c) => Some(c),
        Some(c) => return Err(at.invalid("load_bound", format!("{c} must be 0 (off) or between 1 and 100"))),
    };
    let maglev_table_size = f.maglev_table_size.unwrap_or(65_537);
    if !is_prime(u64::from(maglev_table_size)) || !(7..=10_000_019).contains(&maglev_table_size) {
        return Err(
            at.invalid("maglev_table_size", format!("{maglev_table_size} must be a prime between 7 and 10000019"))
        );
    }
    Ok((algorithm, hash_key, load_bound, maglev_table_size))
}

fn validate_frontend_limits(at: &Field, f: &RawFrontend) -> Result<(), ConfigError> {
    if f.max_conns == 0 || f.max_conns > CONNS_MAX {
        return Err(at.invalid("max_conns", format!("must be between 1 and {CONNS_MAX}")));
    }
    if f.request_header_bytes_max < 8192 || f.request_header_bytes_max > 1 << 20 {
        return Err(at.invalid("request_header_bytes_max", "must be between 8192 and 1048576"));
    }
    if f.http2 && f.mode == Mode::Tcp {
        return Err(at.invalid("http2", "only an http frontend can speak HTTP/2"));
    }
    if f.pool_idle_per_backend > 65_536 {
        return Err(at.invalid("pool_idle_per_backend", "must be at most 65536"));
    }
    Ok(())
}

fn validate_timeouts(at: &Field, t: &TimeoutConfig) -> Result<(), ConfigError> {
    if t.connect_ms == 0 || t.connect_ms > 600_000 {
        return Err(at.invalid("timeouts.connect_ms", "must be between 1 and 600000"));
    }
    for (name, v) in [
        ("first_byte_ms", t.first_byte_ms),
        ("request_header_ms", t.request_header_ms),
        ("idle_ms", t.idle_ms),
        ("request_ms", t.request_ms),
    ] {
        if v > TIMEOUT_MS_MAX {
            return Err(at.invalid(&format!("timeouts.{name}"), format!("must be at most {TIMEOUT_MS_MAX} (one day)")));
        }
    }
    Ok(())
}

fn validate_health(at: &Field, h: &HealthConfig) -> Result<(), ConfigError> {
    if h.interval_ms < 10 || h.interval_ms > 3_600_000 {
        return Err(at.invalid("health.interval_ms", "must be between 10 and 3600000"));
    }
    if h.timeout_ms == 0 || h.timeout_ms > 600_000 {
        return Err(at.invalid("health.timeout_ms", "must be between 1 and 600000"));
    }
    if h.rise == 0 || h.fall == 0 || h.rise > 1000 || h.fall > 1000 {
        return Err(at.invalid("health.rise", "rise and fall must be between 1 and 1000"));
    }
    if h.jitter_percent > 50 {
        return Err(at.invalid("health.jitter_percent", "must be at most 50"));
    }
    if h.kind == HealthKind::Http && (!h.path.starts_with('/') || h.path.bytes().any(|b| b <= b' ' || b == 0x7f)) {
        return Err(at.invalid("health.path", "must start with / and contain no spaces or control characters"));
    }
    Ok(())
}

fn validate_ejection(at: &Field, e: &EjectionConfig) -> Result<(), ConfigError> {
    if e.enabled && (e.consecutive_failures == 0 || e.base_ms == 0 || e.max_ms < e.base_ms) {
        return Err(at.invalid("ejection", "consecutive_failures and base_ms must be > 0 and max_ms >= base_ms"));
    }
    if e.max_ejected_percent > 100 {
        return Err(at.invalid("ejection.max_ejected_percent", "must be at most 100"));
    }
    Ok(())
}

fn validate_retries(at: &Field, r: &RetryConfig) -> Result<(), ConfigError> {
    if r.max_retries > RETRIES_MAX {
        return Err(at.invalid("retries.max_retries", format!("must be at most {RETRIES_MAX}")));
    }
    if let Some(s) = r.on_statuses.iter().find(|s| !(100..=599).contains(*s)) {
        return Err(at.invalid("retries.on_statuses", format!("{s} is not an HTTP status")));
    }
    if r.budget_percent > 100 {
        return Err(at.invalid("retries.budget_percent", "must be at most 100"));
    }
    if r.body_bytes_max > 16 << 20 {
        return Err(at.invalid("retries.body_bytes_max", "must be at most 16777216"));
    }
    Ok(())
}

fn validate_backends(at: &Field, raw: &[BackendConfig]) -> Result<Vec<Backend>, ConfigError> {
    if raw.is_empty() {
        return Err(at.invalid("backend", "at least one [[frontend.backend]] is required"));
    }
    if raw.len() > BACKENDS_PER_FRONTEND_MAX {
        return Err(at.invalid("backend", format!("more than {BACKENDS_PER_FRONTEND_MAX} backends")));
    }
    let mut seen = HashSet::new();
    let mut backends = Vec::with_capacity(raw.len());
    for (bi, b) in raw.iter().enumerate() {
        let field = |name: &str| format!("backend[{bi}].{name}");
        let addr = parse_addr(at.file, &at.name(&field("addr")), &b.addr)?;
        if addr.port() == 0 {
            return Err(at.invalid(&field("addr"), "port 0 is not a backend port"));
        }
        if !seen.insert(addr) {
            return Err(at.invalid(&field("addr"), format!("{addr} listed twice")));
        }
        if b.weight == 0 || b.weight > 1000 {
            return Err(at.invalid(&field("weight"), "must be between 1 and 1000"));
        }
        if b.max_conns == Some(0) {
            return Err(at.invalid(&field("max_conns"), "must be at least 1 (omit for no limit)"));
        }
        backends.push(Backend { addr, weight: b.weight, max_conns: b.max_conns });
    }
    Ok(backends)
}

/// Builds a one-frontend configuration from the quick-start flags, with the
/// same defaults as a file (health checks on).
pub fn quick_start(
    listen: &str,
    backends: &str,
    mode: Mode,
    algorithm: &str,
    hash_key: Option<&str>,
    admin: Option<&str>,
) -> Result<Config, ConfigError> {
    let raw = RawConfig {
        admin: RawAdmin { listen: admin.map(str::to_string), ..RawAdmin::default() },
        frontends: vec![RawFrontend {
            name: "default".into(),
            listen: listen.into(),
            mode,
            algorithm: algorithm.into(),
            hash_key: hash_key.map(str::to_string),
            load_bound: None,
            maglev_table_size: None,
            max_conns: default_frontend_conns(),
            slow_start_ms: 0,
            pool_idle_per_backend: default_pool_idle(),
            pool_idle_timeout_ms: default_pool_idle_timeout(),
            request_header_bytes_max: default_header_bytes(),
            http2: false,
            access_log: false,
            access_log_format: default_access_log_format(),
            timeouts: TimeoutConfig::default(),
            health: HealthConfig::default(),
            ejection: EjectionConfig::default(),
            retries: RetryConfig::default(),
            tls: None,
            backend_tls: None,
            backends: backends
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|a| BackendConfig { addr: a.to_string(), weight: 1, max_conns: None })
                .collect(),
        }],
    };
    validate(raw, "(command line)")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[admin]
listen = "127.0.0.1:9900"

[[frontend]]
name = "web"
listen = "127.0.0.1:8080"
mode = "http"
algorithm = "consistent_hash"
hash_key = "header:x-user"
[frontend.retries]
on_statuses = [502, 503]
[[frontend.backend]]
addr = "127.0.0.1:9001"
weight = 3
max_conns = 100
[[frontend.backend]]
addr = "127.0.0.1:9002"
"#;

    #[test]
    fn parses_a_good_file() {
        let c = Config::parse(GOOD, "lb.toml").unwrap();
        assert_eq!(c.admin, Some("127.0.0.1:9900".parse().unwrap()));
        let f = &c.frontends[0];
        assert_eq!(f.algorithm, Algorithm::ConsistentHash);
        assert_eq!(f.hash_key, HashKey::Header(http::HeaderName::from_static("x-user")));
        assert_eq!(f.backends[0].weight, 3);
        assert_eq!(f.backends[1].max_conns, None);
        assert_eq!(f.retries.on_statuses, vec![502, 503]);
        assert_eq!(f.health.interval_ms, 500);
    }

    fn err(text: &str) -> String {
        Config::parse(text, "lb.toml").unwrap_err().to_string()
    }

    #[test]
    fn names_file_field_and_reason() {
        let e = err(&GOOD.replace("weight = 3", "weight = 0"));
        assert!(e.contains("lb.toml") && e.contains("frontend[0].backend[0].weight") && e.contains("between 1"), "{e}");
        let e = err(&GOOD.replace("127.0.0.1:9002", "nowhere"));
        assert!(e.contains("frontend[0].backend[1].addr") && e.contains("not an IP:port"), "{e}");
        let e = err(&GOOD.replace("consistent_hash", "fastest"));
        assert!(e.contains("frontend[0].algorithm") && e.contains("unknown algorithm"), "{e}");
        let e = err(&GOOD.replace("max_conns = 100", "max_conn = 100"));
        assert!(e.contains("lb.toml") && e.contains("max_conn"), "{e}");
        let e = err(&GOOD.replace("[502, 503]", "[502, 999]"));
        assert!(e.contains("retries.on_statuses") && e.contains("999"), "{e}");
        let e = err("[[frontend]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n");
        assert!(e.contains("frontend[0].backend"), "{e}");
        let e = err("this is = = not toml");
        assert!(e.starts_with("lb.toml:"), "{e}");
        let e = err(&GOOD.replace("header:x-user", "header:bad header"));
        assert!(e.contains("hash_key"), "{e}");
    }

    #[test]
    fn shipped_examples_are_valid() {
        for (name, text) in [
            ("lb.toml", include_str!("../../../examples/lb.toml")),
            ("lb-minimal.toml", include_str!("../../../examples/lb-minimal.toml")),
            ("lb-hash.toml", include_str!("../../../examples/lb-hash.toml")),
        ] {
            let c = Config::parse(text, name).unwrap_or_else(|e| panic!("{e}"));
            assert!(!c.frontends.is_empty());
        }
    }

    #[test]
    fn quick_start_defaults() {
        let c = quick_start("127.0.0.1:8080", "127.0.0.1:1,127.0.0.1:2", Mode::Tcp, "round_robin", None, None).unwrap();
        let f = &c.frontends[0];
        assert_eq!(f.hash_key, HashKey::ClientIp);
        assert!(f.health.enabled);
        assert_eq!((f.health.rise, f.health.fall, f.retries.max_retries, f.timeouts.connect_ms), (2, 2, 2, 1000));
        assert!(quick_start("127.0.0.1:8080", "", Mode::Http, "round_robin", None, None).is_err());
        let e = quick_start("127.0.0.1:8080", "127.0.0.1:1", Mode::Http, "nope", None, None).unwrap_err();
        assert!(e.to_string().contains("(command line)"));
    }
}
