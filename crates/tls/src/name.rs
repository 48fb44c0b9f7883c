//! How a certificate names a node, and reading that name back out of a verified certificate.
//!
//! A node certificate names node `N` with the DNS subject alternative name
//! `node-N.rampart.internal` ([`node_dns_name`]). A DNS name, rather than a URI, lets rustls's
//! standard server-name check (RFC 6125, done by webpki) confirm on the client side that the
//! node answering is the node that was called; `.internal` is reserved for private use, so no
//! public certificate can carry such a name. A certificate may carry other names too (its
//! host names, IP addresses); only names of this form count. A certificate that names two
//! different nodes is refused: its identity would be ambiguous.
//!
//! The parser below reads only what it needs (the subject alternative names) from a
//! certificate that webpki has already verified against the cluster CA. It is still written for
//! hostile input: every length is bounds-checked, and anything it does not understand is an
//! error, never a panic.

/// The DNS name suffix of node names.
pub const NODE_NAME_SUFFIX: &str = ".rampart.internal";
/// The DNS name prefix of node names.
pub const NODE_NAME_PREFIX: &str = "node-";

/// The DNS name that names node `id` in its certificate: `node-<id>.rampart.internal`.
pub fn node_dns_name(id: u64) -> String {
    format!("{NODE_NAME_PREFIX}{id}{NODE_NAME_SUFFIX}")
}

/// The node id a DNS name names, if it is a node name: `node-<id>.rampart.internal`, the id
/// positive and written without leading zeros (so every id has exactly one name). Case does
/// not matter (DNS names are case-insensitive).
pub fn node_id_of_dns_name(name: &str) -> Option<u64> {
    let lower = name.to_ascii_lowercase();
    let digits = lower.strip_prefix(NODE_NAME_PREFIX)?.strip_suffix(NODE_NAME_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// The node ids named in a DER certificate (distinct, sorted). `Err` when the certificate's
/// structure cannot be read.
pub fn node_ids_in_cert(der: &[u8]) -> Result<Vec<u64>, String> {
    let mut ids: Vec<u64> = dns_names(der)?.iter().filter_map(|n| node_id_of_dns_name(n)).collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// DER tags used below.
const TAG_SEQUENCE: u8 = 0x30;
const TAG_OID: u8 = 0x06;
const TAG_BOOLEAN: u8 = 0x01;
const TAG_OCTET_STRING: u8 = 0x04;
/// `[3] EXPLICIT Extensions` inside a TBSCertificate.
const TAG_EXTENSIONS: u8 = 0xA3;
/// `dNSName [2] IMPLICIT IA5String` inside GeneralNames.
const TAG_DNS_NAME: u8 = 0x82;
/// id-ce-subjectAltName (2.5.29.17), the OID's content bytes.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];

/// One DER element: its tag and its contents.
struct Tlv<'a> {
    tag: u8,
    value: &'a [u8],
}

/// Reads one element off the front of `input`.
fn read_tlv<'a>(input: &mut &'a [u8]) -> Result<Tlv<'a>, String> {
    let (&tag, rest) = input.split_first().ok_or("certificate ends inside an element")?;
    if tag & 0x1F == 0x1F {
        return Err("certificate uses a multi-byte tag".into());
    }
    let (&first, mut rest) = rest.split_first().ok_or("certificate ends inside a length")?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 {
            return Err(format!("certificate has an unsupported length form (0x{first:02x})"));
        }
        if rest.len() < n {
            return Err("certificate ends inside a length".into());
        }
        let (len_bytes, after) = rest.split_at(n);
        rest = after;
        len_bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return Err(format!("certificate element of {len} bytes overruns its container"));
    }
    let (value, after) = rest.split_at(len);
    *input = after;
    Ok(Tlv { tag, value })
}

/// Reads one element that must have `tag`.
fn expect<'a>(input: &mut &'a [u8], tag: u8, what: &str) -> Result<&'a [u8], String> {
    let t = read_tlv(input)?;
    if t.tag != tag {
        return Err(format!("certificate {what}: expected tag 0x{tag:02x}, found 0x{:02x}", t.tag));
    }
    Ok(t.value)
}

/// Every dNSName in the certificate's subject alternative names.
fn dns_names(der: &[u8]) -> Result<Vec<String>, String> {
    let mut input = der;
    let mut cert = expect(&mut input, TAG_SEQUENCE, "Certificate")?;
    if !input.is_empty() {
        return Err("trailing bytes after the certificate".into());
    }
    let mut tbs = expect(&mut cert, TAG_SEQUENCE, "TBSCertificate")?;
    let mut names = Vec::new();
    while !tbs.is_empty() {
        let field = read_tlv(&mut tbs)?;
        if field.tag != TAG_EXTENSIONS {
            continue;
        }
        let mut wrapper = field.value;
        let mut extensions = expect(&mut wrapper, TAG_SEQUENCE, "Extensions")?;
        while !extensions.is_empty() {
            let mut ext = expect(&mut extensions, TAG_SEQUENCE, "Extension")?;
            let oid = expect(&mut ext, TAG_OID, "extension id")?;
            let mut next = read_tlv(&mut ext)?;
            if next.tag == TAG_BOOLEAN {
                next = read_tlv(&mut ext)?;
            }
            if next.tag != TAG_OCTET_STRING {
                return Err("certificate extension value is not an OCTET STRING".into());
            }
            if oid != OID_SUBJECT_ALT_NAME {
                continue;
            }
            let mut value = next.value;
            let mut general_names = expect(&mut value, TAG_SEQUENCE, "subjectAltName")?;
            while !general_names.is_empty() {
                let gn = read_tlv(&mut general_names)?;
                if gn.tag == TAG_DNS_NAME {
                    let name = std::str::from_utf8(gn.value)
                        .map_err(|_| "certificate has a DNS name that is not ASCII".to_string())?;
                    names.push(name.to_string());
                }
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_round_trip_and_only_canonical_forms_count() {
        assert_eq!(node_dns_name(3), "node-3.rampart.internal");
        for id in [1, 3, 42, u64::MAX] {
            assert_eq!(node_id_of_dns_name(&node_dns_name(id)), Some(id));
        }
        assert_eq!(node_id_of_dns_name("NODE-7.Rampart.Internal"), Some(7));
        for bad in [
            "node-0.rampart.internal",
            "node-03.rampart.internal",
            "node-.rampart.internal",
            "node-3x.rampart.internal",
            "node--3.rampart.internal",
            "node-3.rampart.internal.evil",
            "xnode-3.rampart.internal",
            "node-18446744073709551616.rampart.internal",
            "localhost",
        ] {
            assert_eq!(node_id_of_dns_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn malformed_der_is_an_error_never_a_panic() {
        for junk in [&b""[..], b"\x30", b"\x30\x85\x01\x01\x01\x01\x01", b"\x30\x80", b"\x1f\x01\x00", b"\x30\x02\x30"]
        {
            assert!(node_ids_in_cert(junk).is_err(), "{junk:?}");
        }
        // A certificate with an empty TBSCertificate names nothing.
        assert_eq!(node_ids_in_cert(b"\x30\x02\x30\x00"), Ok(vec![]));
    }
}
