//! TLS test helpers: CAs and certificates made with rcgen at run time, PEM
//! files in a temporary folder, TLS clients and TLS backends built with
//! rustls directly (not with the crate's own `tls` module, so the two sides
//! of each handshake are not the same code).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

use super::{Flags, DEADLINE};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // ring, as in the crate (the default provider, aws-lc-rs, is not built).
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM text.
#[derive(Clone)]
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("client"));
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert: cert.pem(), key: key.serialize_pem() }
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Leaf {
        self.leaf(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate.
    pub fn client(&self, name: &str) -> Leaf {
        self.leaf(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().unwrap()
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn roots(ca_pem: &str) -> rustls::RootCertStore {
    let mut r = rustls::RootCertStore::empty();
    for c in certs(ca_pem) {
        r.add(c).unwrap();
    }
    r
}

/// A TLS client configuration trusting `ca_pem`, presenting `client` if given.
pub fn client_config(ca_pem: &str, client: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca_pem));
    let cfg = match client {
        Some(l) => b.with_client_auth_cert(certs(&l.cert), key(&l.key)).unwrap(),
        None => b.with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// A TLS connection to `addr`, checking the server's certificate for `name`.
pub async fn connect(
    addr: SocketAddr,
    cfg: &Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let s = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, s).await
}

/// One `GET path` over a fresh TLS connection (`Connection: close`): the
/// whole raw answer, or why there was none.
pub async fn get(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>, path: &str) -> Result<String, String> {
    let mut s = connect(addr, cfg, "localhost").await.map_err(|e| format!("handshake: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    s.flush().await.map_err(|e| format!("flush: {e}"))?;
    let mut out = Vec::new();
    match tokio::time::timeout(DEADLINE, s.read_to_end(&mut out)).await {
        Err(_) => Err("no answer in time".into()),
        Ok(Err(e)) if out.is_empty() => Err(format!("read: {e}")),
        // A peer that closes without close_notify after a complete answer.
        Ok(_) if out.is_empty() => Err("closed without an answer".into()),
        Ok(_) => Ok(String::from_utf8_lossy(&out).into_owned()),
    }
}

/// A keep-alive HTTPS client connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>) -> Result<Client, String> {
        let s = connect(addr, cfg, "localhost").await.map_err(|e| e.to_string())?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(Client { sender })
    }

    pub async fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let req = Request::get(path).header("host", "localhost").body(Full::new(Bytes::new())).unwrap();
        let resp = self.sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// An HTTPS backend (the same routes as `common::Backend`) with certificate
/// `leaf`; with `client_ca`, clients must present a certificate it signed.
pub struct TlsBackend {
    pub addr: SocketAddr,
    pub flags: Flags,
    /// TLS handshakes that failed at this backend.
    pub handshake_failures: Arc<AtomicU64>,
}

impl TlsBackend {
    pub async fn start(name: &str, leaf: &Leaf, client_ca: Option<&str>) -> TlsBackend {
        let b = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap();
        let b = match client_ca {
            Some(ca) => b.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)), provider())
                    .build()
                    .unwrap(),
            ),
            None => b.with_no_client_auth(),
        };
        let cfg = Arc::new(b.with_single_cert(certs(&leaf.cert), key(&leaf.key)).unwrap());
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let flags = Flags {
            hits: Arc::new(AtomicU64::new(0)),
            healthy: Arc::new(AtomicBool::new(true)),
            fail_all: Arc::new(AtomicBool::new(false)),
        };
        let failures = Arc::new(AtomicU64::new(0));
        let (n, f, fails) = (name.to_string(), flags.clone(), failures.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (acceptor, n, f, fails) = (acceptor.clone(), n.clone(), f.clone(), fails.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else {
                        fails.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| super::serve(n.clone(), f.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
                });
            }
        });
        TlsBackend { addr, flags, handshake_failures: failures }
    }

    pub fn hits(&self) -> u64 {
        self.flags.hits.load(std::sync::atomic::Ordering::Relaxed)
    }
}
