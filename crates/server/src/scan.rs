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

/// Cursor id -> last key returned, and the ids in creation order (for eviction).
type Cursors = (HashMap<u64, Vec<u8>>, VecDeque<u64>);

pub struct CursorTable {
    inner: Mutex<Cursors>,
}

impl CursorTable {
    pub fn new() -> Self {
        CursorTable { inner: Mutex::new((HashMap::new(), VecDeque::new())) }
    }

    /// Remembers `last_key` and returns a fresh cursor for it.
    pub fn save(&self, last_key: Vec<u8>) -> u64 {
        let mut g = self.inner.lock();
        let id = loop {
            let id = rand::random::<u64>() >> 2;
            if id != 0 && !g.0.contains_key(&id) {
                break id;
            }
        };
        while g.1.len() >= SCAN_CURSORS_MAX {
            if let Some(old) = g.1.pop_front() {
                g.0.remove(&old);
            }
        }
        g.0.insert(id, last_key);
        g.1.push_back(id);
        id
    }

    /// The key a cursor stands for; cursors are single-use.
    pub fn take(&self, id: u64) -> Option<Vec<u8>> {
        let mut g = self.inner.lock();
        let k = g.0.remove(&id)?;
        g.1.retain(|x| *x != id);
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
}
