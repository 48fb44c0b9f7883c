//! Applying log entries to the key-value state. Deterministic: the same entries in the same
//! order give the same state on every node. What a command means is `rampart_kv::apply_command`;
//! this module only adapts the storage batch to it.

use rampart_kv::lease::{LeaseId, Leases, LEASE_ID_FIRST};
use rampart_kv::{apply_command, limits::VALUE_BYTES_MAX_CEILING, Ctx, Event, Record, State};
use rampart_storage::Batch;

use crate::types::{Command, Response};

/// The value APPEND may build in leader mode: the largest `--value-bytes-max` a node accepts.
/// A constant, so every replica decides the same whatever its own flags.
pub const APPEND_VALUE_BYTES_MAX: usize = VALUE_BYTES_MAX_CEILING;

/// The storage batch of one apply, as the command model's state; events go to the history
/// table (in the same transaction) and to `events`, for live watchers once it commits.
struct BatchState<'b, 'a> {
    batch: &'b mut Batch<'a>,
    events: &'b mut Vec<Event>,
    /// Events of this entry recorded so far (the history key's sequence).
    seq: u32,
}

impl State for BatchState<'_, '_> {
    type Error = rampart_storage::Error;

    fn get(&mut self, key: &[u8]) -> Result<Option<Record>, Self::Error> {
        Ok(self.batch.kv_get(key)?.map(|v| Record { value: v.value, revision: v.revision, expires_at: v.expires_at }))
    }

    fn put(&mut self, key: &[u8], revision: u64, value: &[u8], expires_at: Option<u64>) -> Result<(), Self::Error> {
        self.batch.kv_put(key, revision, value, expires_at)
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), Self::Error> {
        self.batch.kv_delete(key).map(|_| ())
    }

    fn record(&mut self, event: Event) -> Result<(), Self::Error> {
        let bytes = rmp_serde::to_vec(&event).map_err(|e| rampart_storage::Error::Malformed {
            what: format!("event of revision {}", event.revision),
            reason: e.to_string(),
        })?;
        self.batch.history_put(event.revision, self.seq, &bytes)?;
        self.seq += 1;
        self.events.push(event);
        Ok(())
    }

    fn leases(&mut self) -> Option<&mut dyn Leases<Error = Self::Error>> {
        Some(self)
    }
}

impl Leases for BatchState<'_, '_> {
    type Error = rampart_storage::Error;

    fn lease_ttl(&mut self, id: LeaseId) -> Result<Option<u64>, Self::Error> {
        self.batch.lease_get(id)
    }

    fn lease_count(&mut self) -> Result<usize, Self::Error> {
        Ok(self.batch.lease_count()? as usize)
    }

    fn lease_create(&mut self, ttl_ms: u64) -> Result<LeaseId, Self::Error> {
        let id = lease_next_id(self.batch)?;
        self.batch.meta_put(LEASE_NEXT_ID_META, &(id + 1).to_le_bytes())?;
        self.batch.lease_put(id, ttl_ms)?;
        Ok(id)
    }

    fn lease_remove(&mut self, id: LeaseId) -> Result<(), Self::Error> {
        self.batch.lease_delete(id).map(|_| ())
    }

    fn lease_keys(&mut self, id: LeaseId) -> Result<Vec<Vec<u8>>, Self::Error> {
        self.batch.lease_keys(id, usize::MAX)
    }

    fn lease_key_count(&mut self, id: LeaseId, limit: usize) -> Result<usize, Self::Error> {
        self.batch.lease_key_count(id, limit)
    }

    fn key_lease(&mut self, key: &[u8]) -> Result<Option<LeaseId>, Self::Error> {
        self.batch.kv_lease(key)
    }

    fn attach(&mut self, key: &[u8], id: LeaseId) -> Result<(), Self::Error> {
        self.batch.lease_attach(key, id)
    }

    fn detach(&mut self, key: &[u8]) -> Result<(), Self::Error> {
        self.batch.lease_detach(key).map(|_| ())
    }
}

/// The meta key of the next lease id the state machine hands out (8 little-endian bytes; absent:
/// [`LEASE_ID_FIRST`]). It only counts up, and snapshots carry it, so an id is never reused.
pub const LEASE_NEXT_ID_META: &str = "sm_lease_next_id";

fn decode_next_id(raw: Option<Vec<u8>>) -> LeaseId {
    raw.and_then(|b| b.try_into().ok()).map_or(LEASE_ID_FIRST, u64::from_le_bytes).max(LEASE_ID_FIRST)
}

/// The next lease id in `batch`.
pub fn lease_next_id(batch: &Batch<'_>) -> rampart_storage::Result<LeaseId> {
    Ok(decode_next_id(batch.meta_get(LEASE_NEXT_ID_META)?))
}

/// The next lease id as `view` sees it.
pub fn view_lease_next_id(view: &rampart_storage::View) -> rampart_storage::Result<LeaseId> {
    Ok(decode_next_id(view.meta_get(LEASE_NEXT_ID_META)?))
}

/// The meta key of the state machine's clock: the latest stamp ([`Command::At`]) of any entry
/// applied, Unix ms as 8 little-endian bytes. Expiry is judged against it, so every replica
/// applying the same entries decides the same; it never goes back.
pub const CLOCK_META: &str = "sm_clock_ms";

/// The state machine's clock in `batch` (0 before any stamped entry).
pub fn clock(batch: &Batch<'_>) -> rampart_storage::Result<u64> {
    Ok(batch.meta_get(CLOCK_META)?.and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes))
}

/// The state machine's clock as `view` sees it (0 before any stamped entry).
pub fn view_clock(view: &rampart_storage::View) -> rampart_storage::Result<u64> {
    Ok(view.meta_get(CLOCK_META)?.and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes))
}

/// Applies `cmd`, written at log index `index`, inside the batch, at the state machine's clock
/// (moved forward to the entry's stamp, if it has a later one). The events it makes are stored
/// in the watch history and appended to `events`.
pub fn apply(
    batch: &mut Batch<'_>,
    index: u64,
    cmd: &Command,
    events: &mut Vec<Event>,
) -> rampart_storage::Result<Response> {
    let before = clock(batch)?;
    let now_ms = match cmd {
        Command::At { now_ms, .. } => before.max(*now_ms),
        _ => before,
    };
    if now_ms != before {
        batch.meta_put(CLOCK_META, &now_ms.to_le_bytes())?;
    }
    let ctx = Ctx { revision: index, now_ms, value_bytes_max: APPEND_VALUE_BYTES_MAX };
    let outcome = apply_command(&mut BatchState { batch, events, seq: 0 }, ctx, cmd)?;
    Ok(Response { revision: index, outcome })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_kv::Outcome;
    use rampart_storage::{Durability, Store};

    /// The log entry format before APPEND carried its bound, variant for variant up to it.
    #[derive(serde::Serialize)]
    #[allow(dead_code)]
    enum OldCommand {
        Set { key: Vec<u8>, value: Vec<u8>, cond: rampart_kv::SetCond, return_old: bool },
        MSet { pairs: Vec<(Vec<u8>, Vec<u8>)> },
        Del { keys: Vec<Vec<u8>> },
        IncrBy { key: Vec<u8>, delta: i64 },
        Append { key: Vec<u8>, value: Vec<u8> },
    }

    #[test]
    fn leases_apply_to_the_store_and_ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        let put =
            |k: &[u8], lease| Command::PutLeased { key: k.to_vec(), value: b"v".to_vec(), lease, if_absent: false };
        let mut ev = Vec::new();
        let outcomes = store
            .write(Durability::Immediate, |b| {
                let mut out = vec![apply(b, 1, &Command::LeaseGrant { ttl_ms: 5_000 }, &mut ev)?.outcome];
                out.push(apply(b, 2, &put(b"b", 1), &mut ev)?.outcome);
                out.push(apply(b, 3, &put(b"a", 1), &mut ev)?.outcome);
                out.push(apply(b, 4, &Command::Delete { key: b"b".to_vec() }, &mut ev)?.outcome);
                out.push(apply(b, 5, &Command::LeaseRevoke { id: 1, expired: false }, &mut ev)?.outcome);
                out.push(apply(b, 6, &Command::LeaseGrant { ttl_ms: 5_000 }, &mut ev)?.outcome);
                Ok(out)
            })
            .unwrap();
        assert_eq!(outcomes[0], Outcome::Integer(1));
        assert_eq!(outcomes[4], Outcome::Deleted { count: 1 }, "b was detached by its delete");
        assert_eq!(outcomes[5], Outcome::Integer(2), "a revoked id is not handed out again");
        let revoked: Vec<_> = ev.iter().filter(|e| e.revision == 5).map(|e| (e.key.clone(), e.kind, e.cause)).collect();
        assert_eq!(revoked, vec![(b"a".to_vec(), rampart_kv::EventKind::Delete, rampart_kv::Cause::LeaseRevoked)]);
        store
            .read(|v| {
                assert_eq!(v.kv_get(b"a")?, None);
                assert_eq!(v.lease_list()?, vec![(2, 5_000)]);
                assert_eq!(v.kv_lease(b"a")?, None);
                assert_eq!(view_lease_next_id(v)?, 3);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn appends_apply_the_bound_their_entry_carries_and_old_entries_still_decode() {
        let old = rmp_serde::to_vec(&OldCommand::Append { key: b"k".to_vec(), value: b"v".to_vec() }).unwrap();
        let decoded: Command = rmp_serde::from_slice(&old).unwrap();
        assert_eq!(decoded, Command::Append { key: b"k".to_vec(), value: b"v".to_vec(), value_bytes_max: None });

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        let append = |bound| Command::Append { key: b"k".to_vec(), value: vec![b'x'; 4], value_bytes_max: bound };
        let outcomes: Vec<Outcome> = store
            .write(Durability::Immediate, |b| {
                Ok(vec![
                    apply(b, 1, &append(Some(6)), &mut Vec::new())?.outcome,
                    apply(b, 2, &append(Some(6)), &mut Vec::new())?.outcome,
                    apply(b, 3, &append(None), &mut Vec::new())?.outcome,
                ])
            })
            .unwrap();
        assert_eq!(outcomes[0], Outcome::Integer(4));
        assert_eq!(
            outcomes[1],
            Outcome::Rejected("value of 8 bytes exceeds the limit of 6 bytes (value_bytes_max)".into())
        );
        assert_eq!(outcomes[2], Outcome::Integer(8), "an entry without a bound has only the mode's ceiling");
    }
}
