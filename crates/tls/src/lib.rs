//! rampart-tls: certificates and rustls configurations for Rampart's listeners.
//!
//! - [`PeerTls`]: mutual TLS between the nodes of one cluster. Every node holds the cluster CA,
//!   its own certificate and its key. As a server it requires a client certificate signed by
//!   the cluster CA; as a client it presents its own and checks that the server's is signed by
//!   the CA and names the node it meant to call. TLS 1.3 only (both ends are Rampart).
//! - [`load_server_config`]: a plain server certificate for client-facing listeners (RESP,
//!   HTTP), no client certificates; TLS 1.2 and 1.3 for the widest client support.
//! - [`name`]: how a certificate names a node (`node-<id>.rampart.internal`, a DNS subject
//!   alternative name) and how the id is read back from a verified certificate.
//! - [`dev`]: a development CA and certificates, for `rampart certs`,
//!   `rampart up --tls` and tests.
//!
//! Cryptography is rustls's `ring` provider. This crate never opens a socket.

pub mod dev;
pub mod name;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

pub use name::{node_dns_name, node_id_of_dns_name};
pub use rustls;
pub use tokio_rustls;

/// Why TLS material could not be loaded or a peer's certificate was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {reason}")]
    Read { what: &'static str, path: PathBuf, reason: String },
    #[error("{what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("{what} holds no certificate")]
    NoCertificate { what: &'static str },
    #[error("invalid TLS settings: {0}")]
    Config(String),
    #[error("the node certificate is not valid under the cluster CA: {0}")]
    NotSignedByCa(String),
    #[error("the certificate names no node (it needs a DNS name node-<id>.rampart.internal)")]
    NoNodeName,
    #[error("the certificate names more than one node ({0:?}); a node certificate names exactly one")]
    AmbiguousNodeName(Vec<u64>),
    #[error("the certificate cannot be read: {0}")]
    Malformed(String),
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
}

/// rustls's `ring` provider, the one this crate uses everywhere. rustls marks it deprecated
/// because it has no post-quantum key exchange; the project builds on `ring` rather than
/// aws-lc-rs to avoid compiling a large C library on small machines (see docs/design.md).
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The one node id a DER certificate names. Call it only on a certificate that was verified
/// against the cluster CA (rustls did, for a peer's certificate after the handshake).
pub fn node_id_of_cert(cert: &CertificateDer<'_>) -> Result<u64, TlsError> {
    let ids = name::node_ids_in_cert(cert.as_ref()).map_err(TlsError::Malformed)?;
    match ids.as_slice() {
        [] => Err(TlsError::NoNodeName),
        [id] => Ok(*id),
        _ => Err(TlsError::AmbiguousNodeName(ids)),
    }
}

/// The node id of the peer on an established TLS connection (client or server side).
pub fn peer_node_id(conn: &rustls::CommonState) -> Result<u64, TlsError> {
    let certs = conn.peer_certificates().ok_or(TlsError::NoPeerCertificate)?;
    node_id_of_cert(certs.first().ok_or(TlsError::NoPeerCertificate)?)
}

/// The name a client asks for when it calls node `id`.
pub fn node_server_name(id: u64) -> ServerName<'static> {
    ServerName::try_from(node_dns_name(id)).expect("node names are valid DNS names")
}

/// PEM contents of a node's TLS material.
pub struct PeerPem<'a> {
    /// The cluster CA certificate(s).
    pub ca: &'a [u8],
    /// The node's certificate, optionally followed by intermediates.
    pub cert: &'a [u8],
    /// The node's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: &'a [u8],
}

/// Mutual TLS between the members of one cluster: the server and client configurations of
/// one node, and the node id its own certificate names.
pub struct PeerTls {
    node_id: u64,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTls").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

/// Largest certificate, key or CA file read (a bundle of hundreds of certificates fits; a
/// larger file is not a PEM file and is refused before it is read).
pub const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let err = |reason: String| TlsError::Read { what, path: path.to_path_buf(), reason };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut data = Vec::new();
    file.take(PEM_FILE_BYTES_MAX + 1).read_to_end(&mut data).map_err(|e| err(e.to_string()))?;
    if data.len() as u64 > PEM_FILE_BYTES_MAX {
        return Err(err(format!("larger than {PEM_FILE_BYTES_MAX} bytes, not a PEM file")));
    }
    Ok(data)
}

fn certs(what: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { what, reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what });
    }
    Ok(certs)
}

fn key(what: &'static str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem { what, reason: e.to_string() })
}

impl PeerTls {
    /// Loads a node's CA, certificate and key from PEM files (see [`PeerTls::from_pem`]).
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<PeerTls, TlsError> {
        let ca_pem = read("peer TLS CA file", ca)?;
        let cert_pem = read("peer TLS certificate file", cert)?;
        let key_pem = read("peer TLS key file", key)?;
        PeerTls::from_pem(PeerPem { ca: &ca_pem, cert: &cert_pem, key: &key_pem })
    }

    /// Builds both configurations and checks the node's own certificate now, with the same
    /// verifiers peers will use: valid under the CA as a client and as a server, naming exactly
    /// one node, and matching the key. A node with a bad certificate fails at start, not at
    /// its first peer connection.
    pub fn from_pem(pem: PeerPem<'_>) -> Result<PeerTls, TlsError> {
        let provider = provider();
        let ca = certs("peer TLS CA", pem.ca)?;
        let chain = certs("peer TLS certificate", pem.cert)?;
        let key = key("peer TLS key", pem.key)?;
        let mut roots = RootCertStore::empty();
        for c in ca {
            roots.add(c).map_err(|e| TlsError::Config(format!("peer TLS CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let node_id = node_id_of_cert(&chain[0])?;

        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let server_verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let now = UnixTime::now();
        client_verifier
            .verify_client_cert(&chain[0], &chain[1..], now)
            .map_err(|e| TlsError::NotSignedByCa(format!("as a client certificate: {e}")))?;
        server_verifier
            .verify_server_cert(&chain[0], &chain[1..], &node_server_name(node_id), &[], now)
            .map_err(|e| TlsError::NotSignedByCa(format!("as a server certificate: {e}")))?;

        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| TlsError::Config(format!("peer TLS certificate and key: {e}")))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(server_verifier)
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::Config(format!("peer TLS certificate and key: {e}")))?;
        Ok(PeerTls { node_id, server: Arc::new(server), client: Arc::new(client) })
    }

    /// The node id this node's own certificate names.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// For accepting peer connections: client certificates required, verified against the CA.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }

    /// For calling peers: presents this node's certificate, verifies the server's.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.clone())
    }
}

/// A server configuration for a client-facing listener (RESP, HTTP): the certificate chain
/// and key from PEM files, no client certificates, TLS 1.2 and 1.3. ALPN is left to the
/// caller.
pub fn load_server_config(cert: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs("server TLS certificate", &read("server TLS certificate file", cert)?)?;
    let key = key("server TLS key", &read("server TLS key file", key_path)?)?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("server TLS certificate and key: {e}")))?;
    Ok(Arc::new(cfg))
}

/// A client configuration for Rampart's client-facing listeners (HTTP API, RESP): the server
/// certificate must chain to one of the CA certificates in the PEM file `ca`. TLS 1.2 and 1.3,
/// no client certificate.
pub fn load_client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_from_pem(&read("client TLS CA file", ca)?)
}

/// [`load_client_config`] from PEM bytes.
pub fn client_config_from_pem(ca_pem: &[u8]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs("client TLS CA", ca_pem)? {
        roots.add(c).map_err(|e| TlsError::Config(format!("client TLS CA certificate refused: {e}")))?;
    }
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::dev::{CertPem, DevCa};
    use super::*;
    use rcgen::{ExtendedKeyUsagePurpose as Eku, SanType};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn peer(ca: &DevCa, node: &CertPem) -> Result<PeerTls, TlsError> {
        PeerTls::from_pem(PeerPem {
            ca: ca.pem().cert.as_bytes(),
            cert: node.cert.as_bytes(),
            key: node.key.as_bytes(),
        })
    }

    /// Runs a handshake between `client` (calling node `expect`) and `server`; returns what
    /// each side learned of the other, or the first error.
    async fn handshake(client: &PeerTls, server: &PeerTls, expect: u64) -> (Result<u64, String>, Result<u64, String>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = server.acceptor();
        let connector = client.connector();
        let srv = tokio::spawn(async move {
            let mut s = acceptor.accept(b).await.map_err(|e| e.to_string())?;
            let id = peer_node_id(s.get_ref().1).map_err(|e| e.to_string())?;
            let mut byte = [0u8; 1];
            s.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            Ok::<u64, String>(id)
        });
        let cli = async move {
            let mut s = connector.connect(node_server_name(expect), a).await.map_err(|e| e.to_string())?;
            let id = peer_node_id(s.get_ref().1).map_err(|e| e.to_string())?;
            s.write_all(b"x").await.map_err(|e| e.to_string())?;
            s.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((id, s))
        };
        // The client end stays open until the server is done with it.
        let c = cli.await;
        let s = srv.await.unwrap();
        (c.map(|(id, _stream)| id), s)
    }

    #[test]
    fn an_oversized_pem_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'A'; PEM_FILE_BYTES_MAX as usize + 1]).unwrap();
        let e = load_client_config(&big).unwrap_err().to_string();
        assert!(e.contains("big.pem") && e.contains("larger than"), "{e}");
        let e = load_server_config(&big, &big).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
    }

    #[tokio::test]
    async fn members_authenticate_each_other_by_node_id() {
        let ca = DevCa::generate().unwrap();
        let n1 = peer(&ca, &ca.node_cert(1).unwrap()).unwrap();
        let n2 = peer(&ca, &ca.node_cert(2).unwrap()).unwrap();
        assert_eq!((n1.node_id(), n2.node_id()), (1, 2));
        let (c, s) = handshake(&n1, &n2, 2).await;
        assert_eq!(c, Ok(2), "the client learns it reached node 2");
        assert_eq!(s, Ok(1), "the server learns node 1 called");
    }

    #[tokio::test]
    async fn a_server_that_is_not_the_node_called_is_refused() {
        let ca = DevCa::generate().unwrap();
        let n1 = peer(&ca, &ca.node_cert(1).unwrap()).unwrap();
        let n2 = peer(&ca, &ca.node_cert(2).unwrap()).unwrap();
        let (c, _) = handshake(&n1, &n2, 3).await;
        let e = c.unwrap_err();
        assert!(e.contains("certificate"), "{e}");
    }

    #[tokio::test]
    async fn a_certificate_from_another_ca_is_refused_both_ways() {
        let ca = DevCa::generate().unwrap();
        let other = DevCa::generate().unwrap();
        let n1 = peer(&ca, &ca.node_cert(1).unwrap()).unwrap();
        let stranger = peer(&other, &other.node_cert(2).unwrap()).unwrap();
        let (c, s) = handshake(&stranger, &n1, 1).await;
        assert!(c.is_err() || s.is_err(), "a stranger's client certificate must be refused");
        assert!(s.is_err(), "the server must refuse: {s:?}");
        let (c, _) = handshake(&n1, &stranger, 2).await;
        assert!(c.is_err(), "a stranger's server certificate must be refused");
    }

    #[test]
    fn bad_node_material_fails_at_load_with_a_clear_error() {
        let ca = DevCa::generate().unwrap();
        let other = DevCa::generate().unwrap();
        let e = peer(&ca, &other.node_cert(1).unwrap()).unwrap_err();
        assert!(matches!(e, TlsError::NotSignedByCa(_)), "{e}");
        let server_only = ca.server_cert(&["localhost"]).unwrap();
        assert!(matches!(peer(&ca, &server_only).unwrap_err(), TlsError::NoNodeName));
        let two = ca
            .issue(
                "two",
                vec![
                    SanType::DnsName(node_dns_name(2).as_str().try_into().unwrap()),
                    SanType::DnsName(node_dns_name(3).as_str().try_into().unwrap()),
                ],
                vec![Eku::ServerAuth, Eku::ClientAuth],
            )
            .unwrap();
        assert!(matches!(peer(&ca, &two).unwrap_err(), TlsError::AmbiguousNodeName(ids) if ids == vec![2, 3]));
        let client_only = ca
            .issue("c", vec![SanType::DnsName(node_dns_name(4).as_str().try_into().unwrap())], vec![Eku::ClientAuth])
            .unwrap();
        let e = peer(&ca, &client_only).unwrap_err();
        assert!(matches!(&e, TlsError::NotSignedByCa(m) if m.contains("server")), "{e}");
        let mut swapped = ca.node_cert(1).unwrap();
        swapped.key = ca.node_cert(1).unwrap().key;
        let e = peer(&ca, &swapped).unwrap_err();
        assert!(e.to_string().contains("certificate and key"), "{e}");
        let e = PeerTls::from_pem(PeerPem { ca: b"not pem", cert: b"", key: b"" }).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { what: "peer TLS CA" }), "{e}");
    }

    #[test]
    fn a_reloaded_ca_issues_certificates_that_chain_to_it() {
        let ca = DevCa::generate().unwrap();
        let again = dev::DevCa::from_pem(&ca.pem().cert, &ca.pem().key).unwrap();
        let n4 = peer(&ca, &again.node_cert(4).unwrap()).unwrap();
        assert_eq!(n4.node_id(), 4);
    }

    #[test]
    fn files_load_and_a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate().unwrap();
        let n = ca.node_cert(5).unwrap();
        let srv = ca.server_cert(&["localhost", "127.0.0.1"]).unwrap();
        let w = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let (cap, certp, keyp) = (w("ca.pem", &ca.pem().cert), w("n.pem", &n.cert), w("n-key.pem", &n.key));
        assert_eq!(PeerTls::from_files(&cap, &certp, &keyp).unwrap().node_id(), 5);
        let e = PeerTls::from_files(&dir.path().join("nope.pem"), &certp, &keyp).unwrap_err().to_string();
        assert!(e.starts_with("cannot read peer TLS CA file") && e.contains("nope.pem"), "{e}");
        let (sc, sk) = (w("s.pem", &srv.cert), w("s-key.pem", &srv.key));
        load_server_config(&sc, &sk).unwrap();
        assert!(load_server_config(&sc, &keyp).is_err(), "a key that does not match is refused");
    }

    #[test]
    fn every_truncation_or_bit_flip_of_a_real_certificate_reads_without_panic() {
        let ca = DevCa::generate().unwrap();
        let pem = ca.node_cert(9).unwrap().cert;
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(node_id_of_cert(&der).unwrap(), 9);
        let bytes = der.as_ref().to_vec();
        for cut in 0..bytes.len() {
            let _ = name::node_ids_in_cert(&bytes[..cut]);
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xFF;
            let _ = name::node_ids_in_cert(&b);
        }
        assert!(name::node_ids_in_cert(&bytes[..bytes.len() - 1]).is_err());
    }
}
