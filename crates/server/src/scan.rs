//! SCAN cursors (the glob patterns of KEYS and SCAN MATCH are in [`crate::glob`]).
//!
//! Redis clients treat a cursor as an unsigned integer, but our keys are
//! ordered byte strings. So a cursor is a random number naming the last key
//! returned, kept in a bounded table; a cursor evicted from it (the table is
//! full of newer ones) is answered with a clear error.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;

/// Live SCAN cursors kept per node.
pub const SCAN_CURSORS_MAX: usize = 10_000;
/// Bytes of keys the live cursors may hold together (a cursor keeps the last key it returned,
/// up to `key_bytes_max` long); past it the oldest cursors are evicted.
pub const SCAN_CURSORS_BYTES_MAX: usize = 64 << 20;

/// Cursor id -> last key returned, the ids in creation order (for eviction), and the bytes of
/// keys held.
#[derive(Default)]
struct Cursors {
    keys: HashMap<u64, Vec<u8>>,
    order: VecDeque<u64>,
    bytes: usize,
}

pub struct CursorTable {
    inner: Mutex<Cursors>,
}

impl CursorTable {
    pub fn new() -> Self {
        CursorTable { inner: Mutex::new(Cursors::default()) }
    }

    /// Remembers `last_key` and returns a fresh cursor for it.
    pub fn save(&self, last_key: Vec<u8>) -> u64 {
        let mut g = self.inner.lock();
        let id = loop {
            let id = rand::random::<u64>() >> 2;
            if id != 0 && !g.keys.contains_key(&id) {
                break id;
            }
        };
        while g.order.len() >= SCAN_CURSORS_MAX
            || (g.bytes + last_key.len() > SCAN_CURSORS_BYTES_MAX && !g.order.is_empty())
        {
            if let Some(old) = g.order.pop_front() {
                if let Some(k) = g.keys.remove(&old) {
                    g.bytes -= k.len();
                }
            }
        }
        g.bytes += last_key.len();
        g.keys.insert(id, last_key);
        g.order.push_back(id);
        id
    }

    /// The key a cursor stands for; cursors are single-use.
    pub fn take(&self, id: u64) -> Option<Vec<u8>> {
        let mut g = self.inner.lock();
        let k = g.keys.remove(&id)?;
        g.bytes -= k.len();
        g.order.retain(|x| *x != id);
        Some(k)
    }
}

impl Default for CursorTable {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_table_is_bounded() {
        let t = CursorTable::new();
        let first = t.save(b"k".to_vec());
        for i in 0..SCAN_CURSORS_MAX {
            t.save(i.to_string().into_bytes());
        }
        assert_eq!(t.take(first), None, "oldest cursor must be evicted");
        let c = t.save(b"z".to_vec());
        assert_eq!(t.take(c), Some(b"z".to_vec()));
        assert_eq!(t.take(c), None);
    }

    #[test]
    fn cursor_table_is_bounded_in_bytes() {
        let t = CursorTable::new();
        let big = vec![b'k'; SCAN_CURSORS_BYTES_MAX / 4];
        let ids: Vec<u64> = (0..5).map(|_| t.save(big.clone())).collect();
        assert_eq!(t.take(ids[0]), None, "the oldest went to make room");
        for id in &ids[1..] {
            assert_eq!(t.take(*id).map(|k| k.len()), Some(big.len()));
        }
        assert_eq!(t.inner.lock().bytes, 0);
    }
}
