//! What commands answer. Both modes produce these; the RESP and HTTP front ends render them.

use serde::{Deserialize, Serialize};

/// The result of a command or of one [`crate::KeyOp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Set/MSet/PutIfRevision: whether it was written, the old value if asked for, and the
    /// key's revision after the command (0: the key is absent).
    Written { written: bool, old: Option<Vec<u8>>, current_revision: u64 },
    /// Del/Delete: how many keys were removed.
    Deleted { count: u64 },
    /// IncrBy: the new value. Append: the new length.
    Integer(i64),
    /// Cas: whether it swapped.
    Swapped(bool),
    /// Refused by the command's meaning (not an integer, overflow, too large); nothing changed.
    Rejected(String),
    /// The outcomes of a [`crate::Command::Batch`], in order.
    Batch(Vec<Outcome>),
    /// A read: the value (`None`: absent).
    Value(Option<Vec<u8>>),
}

/// A command's outcome and the revision it was applied at (leader mode: its log index;
/// multi-master mode, whose revisions are per key: the key's revision after it where the outcome
/// names one, else 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub revision: u64,
    pub outcome: Outcome,
}
