//! TLS with rustls (ring provider): the server side of frontends that
//! terminate TLS ([`Acceptor`], optionally requiring client certificates
//! from a CA), the client side to backends that speak TLS ([`Connector`]:
//! the backend's certificate checked against a given CA and server name,
//! optionally our own client certificate), and [`BackendStream`], a backend
//! connection that is plain TCP or TLS, opened by [`connect`] (the one way
//! every proxy path and health check reaches a backend).
//!
//! Certificates and keys are PEM files, read when the configuration is
//! loaded (so `--check` and a reload see a broken or missing file, and a
//! reload picks up renewed certificates). Nothing here decides policy
//! (retries, ejection); it must never offer a way to skip verification.
//! Uses no other module.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Largest certificate, key or CA file read (a PEM bundle of a few hundred
/// certificates fits; anything larger is not a certificate file).
pub const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Most certificates in one PEM file (a chain or a CA bundle).
pub const PEM_CERTS_MAX: usize = 1000;

/// Why TLS material could not be loaded; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path}: larger than {PEM_FILE_BYTES_MAX} bytes, not a PEM file")]
    TooLarge { path: String },
    #[error("{path}: not valid PEM: {why}")]
    Pem { path: String, why: String },
    #[error("{path}: no certificate in the file")]
    NoCertificate { path: String },
    #[error("{path}: more than {PEM_CERTS_MAX} certificates")]
    TooManyCertificates { path: String },
    #[error("{path}: no private key in the file (PKCS#8, PKCS#1 or SEC1 PEM expected)")]
    NoKey { path: String },
    #[error("{path}: CA certificate refused: {why}")]
    BadCa { path: String, why: String },
    #[error("`{0}` is not a valid server name (DNS name or IP address)")]
    ServerName(String),
    #[error("certificate and key do not make a usable TLS configuration: {0}")]
    Config(String),
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let meta = std::fs::metadata(path).map_err(|source| TlsError::Read { path: shown(path), source })?;
    if meta.len() > PEM_FILE_BYTES_MAX {
        return Err(TlsError::TooLarge { path: shown(path) });
    }
    std::fs::read(path).map_err(|source| TlsError::Read { path: shown(path), source })
}

/// Every certificate in a PEM file, in order (leaf first for a chain).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path)?;
    let mut certs = Vec::new();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| TlsError::Pem { path: shown(path), why: e.to_string() })?;
        if certs.len() == PEM_CERTS_MAX {
            return Err(TlsError::TooManyCertificates { path: shown(path) });
        }
        certs.push(c);
    }
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: shown(path) });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey { path: shown(path) },
        e => TlsError::Pem { path: shown(path), why: e.to_string() },
    })
}

/// The CA certificates of a PEM file as trust anchors.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(|e| TlsError::BadCa { path: shown(path), why: e.to_string() })?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // Deprecated in 0.23.48 only because ring has no post-quantum key
    // exchange; aws-lc-rs, which has, compiles C and is kept out (docs/lb.md).
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side of a TLS frontend (cheap to clone).
#[derive(Clone)]
pub struct Acceptor {
    inner: tokio_rustls::TlsAcceptor,
    /// Client certificates are required (and checked against this CA file).
    pub client_ca: Option<PathBuf>,
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor").field("client_ca", &self.client_ca).finish_non_exhaustive()
    }
}

impl Acceptor {
    /// Loads `cert` (chain, leaf first) and `key`; with `client_ca`, clients
    /// must present a certificate that CA signed. `alpn`: protocols offered,
    /// in order of preference (empty: no ALPN).
    pub fn new(cert: &Path, key: &Path, client_ca: Option<&Path>, alpn: &[&[u8]]) -> Result<Acceptor, TlsError> {
        let chain = load_certs(cert)?;
        let key = load_key(key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = Arc::new(load_roots(ca)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| TlsError::BadCa { path: shown(ca), why: e.to_string() })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut cfg = builder.with_single_cert(chain, key).map_err(|e| TlsError::Config(e.to_string()))?;
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Acceptor {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
            client_ca: client_ca.map(Path::to_path_buf),
        })
    }

    /// The TLS handshake with a client (the caller bounds it in time).
    pub async fn accept(&self, stream: TcpStream) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        self.inner.accept(stream).await
    }
}

/// The client side to TLS backends (cheap to clone).
#[derive(Clone)]
pub struct Connector {
    inner: tokio_rustls::TlsConnector,
    /// Name the backends' certificates must carry (and SNI); `None`: each
    /// backend's IP address (its certificate then needs that IP as a SAN).
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl Connector {
    /// Trusts the CAs in `ca` (only those: not the system store); checks
    /// `server_name` (a DNS name or IP address; `None`: the backend's IP);
    /// presents `client` (certificate chain, key) when given. `alpn`:
    /// protocols offered (empty: no ALPN).
    pub fn new(
        ca: &Path,
        server_name: Option<&str>,
        client: Option<(&Path, &Path)>,
        alpn: &[&[u8]],
    ) -> Result<Connector, TlsError> {
        let roots = load_roots(ca)?;
        let server_name = match server_name {
            None => None,
            Some(n) => Some(ServerName::try_from(n.to_string()).map_err(|_| TlsError::ServerName(n.to_string()))?),
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let mut cfg = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
                .map_err(|e| TlsError::Config(e.to_string()))?,
        };
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Connector { inner: tokio_rustls::TlsConnector::from(Arc::new(cfg)), server_name })
    }

    /// The TLS handshake with the backend at `ip` over `stream` (the caller
    /// bounds it in time). An untrusted or mismatched certificate is an
    /// error of kind `InvalidData` whose text says why.
    pub async fn connect(&self, ip: IpAddr, stream: TcpStream) -> io::Result<BackendStream> {
        let name = self.server_name.clone().unwrap_or(ServerName::IpAddress(ip.into()));
        let tls = self.inner.connect(name, stream).await?;
        Ok(BackendStream::Tls(Box::new(tls)))
    }
}

/// A connection to a backend: plain TCP, or TLS over TCP.
pub enum BackendStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl BackendStream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            BackendStream::Plain(s) => s,
            BackendStream::Tls(t) => t.get_ref().0,
        }
    }

    /// Whether an idle connection is still usable: false when the backend
    /// closed it, failed it, or sent bytes nobody asked for. Never waits.
    pub fn idle_and_open(&mut self) -> bool {
        match self {
            BackendStream::Plain(s) => {
                let mut probe = [0u8; 1];
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            BackendStream::Tls(t) => {
                // Reading processes what TLS sent meanwhile (session tickets,
                // close_notify) without returning it: Pending means nothing
                // for the application and the connection is still open.
                let mut byte = [0u8; 1];
                let mut buf = ReadBuf::new(&mut byte);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                matches!(Pin::new(t.as_mut()).poll_read(&mut cx, &mut buf), Poll::Pending)
            }
        }
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write(cx, data),
            BackendStream::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, data),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BackendStream::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Plain(s) => s.is_write_vectored(),
            BackendStream::Tls(t) => t.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why [`connect`] got no backend connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect failed: {0}")]
    Tcp(io::Error),
    #[error("connect and TLS handshake not done within {0:?}")]
    Timeout(Duration),
    /// The backend's certificate was refused (untrusted, expired, wrong
    /// name), it wanted a client certificate we do not have, or it does not
    /// speak TLS.
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
}

/// A connection to `addr`: TCP, then the TLS handshake when `tls` is given,
/// both within `limit`.
pub async fn connect(
    addr: SocketAddr,
    tls: Option<&Connector>,
    limit: Duration,
) -> Result<BackendStream, ConnectError> {
    let work = async {
        let stream = TcpStream::connect(addr).await.map_err(ConnectError::Tcp)?;
        let _ = stream.set_nodelay(true);
        match tls {
            None => Ok(BackendStream::Plain(stream)),
            Some(c) => c.connect(addr.ip(), stream).await.map_err(ConnectError::Tls),
        }
    };
    tokio::time::timeout(limit, work).await.unwrap_or(Err(ConnectError::Timeout(limit)))
}
