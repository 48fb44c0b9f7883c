//! Standard base64 (RFC 4648, padded), as the HTTP API uses for keys and
//! values that are not UTF-8; a thin wrapper over the `base64` crate.

use base64::Engine;

pub fn encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// None when `text` is not valid padded standard base64.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejects() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"\xff\x00\xfe"] {
            assert_eq!(decode(&encode(data)).as_deref(), Some(data));
        }
        assert_eq!(encode(b"foo"), "Zm9v");
        assert_eq!(decode("Zm9"), None);
        assert_eq!(decode("!!!!"), None);
    }
}
