//! A development CA and the certificates Rampart needs, made with rcgen (ECDSA P-256). For
//! `rampart certs`, `rampart up --tls` and tests; a production cluster may use any CA whose
//! node certificates follow [`crate::name`].

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

pub use rcgen;

use crate::name::node_dns_name;
use crate::TlsError;

/// Years a development certificate is valid from the start of the current year.
pub const DEV_CERT_VALID_YEARS: i32 = 10;
/// Common name of the development CA; a CA is reloaded from its key by this name.
pub const DEV_CA_COMMON_NAME: &str = "Rampart development CA";

/// A certificate and its private key, PEM encoded.
#[derive(Clone)]
pub struct CertPem {
    pub cert: String,
    pub key: String,
}

/// A development CA that issues node and server certificates.
pub struct DevCa {
    pem: CertPem,
    issuer: Issuer<'static, KeyPair>,
}

fn gen_err(e: rcgen::Error) -> TlsError {
    TlsError::Config(format!("cannot generate a certificate: {e}"))
}

/// The current UTC year, from the system clock (to the day: it only bounds validity).
fn current_year() -> i32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    1970 + (secs / 31_556_952) as i32
}

fn validity(params: &mut CertificateParams) {
    let year = current_year();
    // From the start of last year, so a clock a little behind still accepts it.
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + DEV_CERT_VALID_YEARS, 1, 1);
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, DEV_CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params);
    params
}

impl DevCa {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<DevCa, TlsError> {
        let key = KeyPair::generate().map_err(gen_err)?;
        let params = ca_params();
        let cert = params.self_signed(&key).map_err(gen_err)?;
        let pem = CertPem { cert: cert.pem(), key: key.serialize_pem() };
        Ok(DevCa { pem, issuer: Issuer::new(params, key) })
    }

    /// A CA made by [`DevCa::generate`], from its certificate and key, to issue more
    /// certificates. Certificates issued this way chain to `cert_pem` only if it was made by
    /// `generate` with this key (callers check the result with [`crate::PeerTls`]).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<DevCa, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| TlsError::Pem { what: "CA key", reason: e.to_string() })?;
        let pem = CertPem { cert: cert_pem.to_string(), key: key_pem.to_string() };
        Ok(DevCa { pem, issuer: Issuer::new(ca_params(), key) })
    }

    /// The CA's certificate and key.
    pub fn pem(&self) -> &CertPem {
        &self.pem
    }

    /// A certificate with these subject alternative names and extended key usages.
    pub fn issue(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<CertPem, TlsError> {
        let key = KeyPair::generate().map_err(gen_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        validity(&mut params);
        let cert = params.signed_by(&key, &self.issuer).map_err(gen_err)?;
        Ok(CertPem { cert: cert.pem(), key: key.serialize_pem() })
    }

    /// Node `id`'s peer certificate: names it as `node-<id>.rampart.internal`, for both the
    /// server and the client end of peer connections.
    pub fn node_cert(&self, id: u64) -> Result<CertPem, TlsError> {
        let name = node_dns_name(id);
        let san = SanType::DnsName(name.as_str().try_into().map_err(gen_err)?);
        self.issue(&name, vec![san], vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth])
    }

    /// A server certificate for client-facing listeners, naming these DNS names and IP
    /// addresses (for example `localhost` and `127.0.0.1`).
    pub fn server_cert(&self, names: &[&str]) -> Result<CertPem, TlsError> {
        let mut sans = Vec::new();
        for n in names {
            sans.push(match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().map_err(gen_err)?),
            });
        }
        self.issue("Rampart server", sans, vec![ExtendedKeyUsagePurpose::ServerAuth])
    }
}
