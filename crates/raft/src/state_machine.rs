//! Applying log entries to the key-value state. Deterministic: the same entries in the same
//! order give the same state on every node. What a command means is `rampart_kv::apply_command`;
//! this module only adapts the storage batch to it.

use rampart_kv::{apply_command, limits::VALUE_BYTES_MAX_CEILING, Record, State};
use rampart_storage::Batch;

use crate::types::{Command, Response};

/// The value APPEND may build in leader mode: the largest `--value-bytes-max` a node accepts.
/// A constant, so every replica decides the same whatever its own flags.
pub const APPEND_VALUE_BYTES_MAX: usize = VALUE_BYTES_MAX_CEILING;

/// The storage batch of one apply, as the command model's state.
struct BatchState<'b, 'a>(&'b mut Batch<'a>);

impl State for BatchState<'_, '_> {
    type Error = rampart_storage::Error;

    fn get(&mut self, key: &[u8]) -> Result<Option<Record>, Self::Error> {
        Ok(self.0.kv_get(key)?.map(|v| Record { value: v.value, revision: v.revision }))
    }

    fn put(&mut self, key: &[u8], revision: u64, value: &[u8]) -> Result<(), Self::Error> {
        self.0.kv_put(key, revision, value)
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), Self::Error> {
        self.0.kv_delete(key).map(|_| ())
    }
}

/// Applies `cmd`, written at log index `index`, inside the batch.
pub fn apply(batch: &mut Batch<'_>, index: u64, cmd: &Command) -> rampart_storage::Result<Response> {
    let outcome = apply_command(&mut BatchState(batch), index, cmd, APPEND_VALUE_BYTES_MAX)?;
    Ok(Response { revision: index, outcome })
}
