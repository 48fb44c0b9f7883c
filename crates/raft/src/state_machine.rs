//! Applying commands to the key-value state. Deterministic: the same entries
//! in the same order give the same state on every node.

use rampart_storage::Batch;

use crate::types::{Command, Outcome, Response, SetCond};

/// Applies `cmd`, written at log index `index`, inside the batch.
pub fn apply(batch: &mut Batch<'_>, index: u64, cmd: &Command) -> rampart_storage::Result<Response> {
    Ok(Response { revision: index, outcome: apply_one(batch, index, cmd)? })
}

fn apply_one(batch: &mut Batch<'_>, index: u64, cmd: &Command) -> rampart_storage::Result<Outcome> {
    let outcome = match cmd {
        Command::Batch(cmds) => {
            let mut outs = Vec::with_capacity(cmds.len());
            for c in cmds {
                outs.push(apply_one(batch, index, c)?);
            }
            Outcome::Batch(outs)
        }
        Command::Set { key, value, cond, return_old } => {
            let old = batch.kv_get(key)?;
            let write = match cond {
                SetCond::Always => true,
                SetCond::IfAbsent => old.is_none(),
                SetCond::IfPresent => old.is_some(),
            };
            if write {
                batch.kv_put(key, index, value)?;
            }
            let current_revision = if write { index } else { old.as_ref().map_or(0, |o| o.revision) };
            Outcome::Written {
                written: write,
                old: if *return_old { old.map(|o| o.value) } else { None },
                current_revision,
            }
        }
        Command::MSet { pairs } => {
            for (k, v) in pairs {
                batch.kv_put(k, index, v)?;
            }
            Outcome::Written { written: true, old: None, current_revision: index }
        }
        Command::Del { keys } => {
            let mut count = 0;
            for k in keys {
                if batch.kv_delete(k)? {
                    count += 1;
                }
            }
            Outcome::Deleted { count }
        }
        Command::Delete { key } => Outcome::Deleted { count: u64::from(batch.kv_delete(key)?) },
        Command::IncrBy { key, delta } => {
            let current = match batch.kv_get(key)? {
                None => Ok(0i64),
                Some(v) => std::str::from_utf8(&v.value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or("value is not an integer or out of range"),
            };
            match current.and_then(|c| c.checked_add(*delta).ok_or("increment or decrement would overflow")) {
                Ok(n) => {
                    batch.kv_put(key, index, n.to_string().as_bytes())?;
                    Outcome::Integer(n)
                }
                Err(msg) => Outcome::Rejected(msg.to_string()),
            }
        }
        Command::Append { key, value } => {
            let mut cur = batch.kv_get(key)?.map(|v| v.value).unwrap_or_default();
            cur.extend_from_slice(value);
            batch.kv_put(key, index, &cur)?;
            Outcome::Integer(cur.len() as i64)
        }
        Command::Cas { key, expected, new } => {
            let cur = batch.kv_get(key)?.map(|v| v.value);
            if &cur == expected {
                batch.kv_put(key, index, new)?;
                Outcome::Swapped(true)
            } else {
                Outcome::Swapped(false)
            }
        }
        Command::PutIfRevision { key, revision, value } => {
            let cur_rev = batch.kv_get(key)?.map_or(0, |v| v.revision);
            if cur_rev == *revision {
                batch.kv_put(key, index, value)?;
                Outcome::Written { written: true, old: None, current_revision: index }
            } else {
                Outcome::Written { written: false, old: None, current_revision: cur_rev }
            }
        }
    };
    Ok(outcome)
}
