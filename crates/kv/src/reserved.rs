//! The reserved key namespace: rampart's own replicated data (users and their credentials) lives
//! in ordinary keys of the replicated store, under [`RESERVED_PREFIX`], so it travels with
//! everything else (log entries, snapshots, CASPaxos registers) in both modes.
//!
//! Client commands never reach it: [`crate::Limits::check`] refuses any client command that names
//! a reserved key, whichever node it came from, and the client APIs refuse reads of reserved keys
//! and leave them out of scans and counts. Only [`crate::Command::SystemCas`] and
//! [`crate::Command::SystemDelete`] write there, and only the node's own code builds them.

/// Keys starting with these bytes are reserved. `0xFF 0xFE` never occurs in UTF-8 text, so no
/// HTTP path and no text key can name one by accident.
pub const RESERVED_PREFIX: &[u8] = b"\xff\xfe";

/// True when `key` is in the reserved namespace.
pub fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// The error a client gets for naming a reserved key.
pub fn reserved_key_error() -> crate::KvError {
    crate::KvError::BadRequest(
        "keys starting with the bytes 0xFF 0xFE are reserved for rampart's own data (users and credentials)".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_prefix_is_reserved() {
        assert!(is_reserved(b"\xff\xfe"));
        assert!(is_reserved(b"\xff\xfeacl/user/default"));
        assert!(!is_reserved(b"\xff"));
        assert!(!is_reserved(b"\xfe\xff"));
        assert!(!is_reserved(b"user"));
        assert!(!is_reserved(b""));
    }
}
