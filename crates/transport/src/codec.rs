//! The one encoding of peer messages, in both replication modes: MessagePack through serde
//! (`rmp-serde`). A message that does not decode is an error for its sender, never a panic:
//! every peer message is untrusted input.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Encodes a peer message.
pub fn encode<T: Serialize>(v: &T) -> Result<Bytes, String> {
    rmp_serde::to_vec(v).map(Bytes::from).map_err(|e| format!("cannot encode a peer message: {e}"))
}

/// Decodes a peer message.
pub fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(b).map_err(|e| format!("malformed peer message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Hello { id: u64, name: String },
    }

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let m = Msg::Hello { id: 7, name: "n".into() };
        assert_eq!(decode::<Msg>(&encode(&m).unwrap()).unwrap(), m);
        for junk in [&b""[..], b"\xc1", b"\x81\xa5Hello\x92\xff"] {
            let e = decode::<Msg>(junk).unwrap_err();
            assert!(e.starts_with("malformed peer message"), "{e}");
        }
    }
}
