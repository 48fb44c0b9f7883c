//! SCAN cursors and Redis-style glob patterns.
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

/// The literal prefix of a glob (what a range scan can start from).
pub fn literal_prefix(pattern: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'*' | b'?' | b'[' => break,
            b'\\' if i + 1 < pattern.len() => {
                out.push(pattern[i + 1]);
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Redis glob match: `*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\x`.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    // Iterative with backtracking to the last `*`: linear-ish, no recursion.
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(pattern, p, s[i]) {
                        if matched {
                            p = next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == b'[' {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == s[i] {
                        p += 2;
                        i += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[i] {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// Matches `c` against the class starting at `pattern[start] == b'['`.
/// Returns (matched, index after the class), or None if unterminated.
fn class_match(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut j = start + 1;
    let negate = j < pattern.len() && pattern[j] == b'^';
    if negate {
        j += 1;
    }
    let mut matched = false;
    let mut first = true;
    while j < pattern.len() {
        if pattern[j] == b']' && !first {
            return Some((matched != negate, j + 1));
        }
        first = false;
        let lo = if pattern[j] == b'\\' && j + 1 < pattern.len() {
            j += 1;
            pattern[j]
        } else {
            pattern[j]
        };
        if j + 2 < pattern.len() && pattern[j + 1] == b'-' && pattern[j + 2] != b']' {
            let hi = pattern[j + 2];
            let (a, b) = if lo <= hi { (lo, hi) } else { (hi, lo) };
            if a <= c && c <= b {
                matched = true;
            }
            j += 3;
        } else {
            if lo == c {
                matched = true;
            }
            j += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"*", b"abc"));
        assert!(glob_match(b"a*c", b"abbbc"));
        assert!(!glob_match(b"a*c", b"abbbd"));
        assert!(glob_match(b"h?llo", b"hello"));
        assert!(glob_match(b"h[ae]llo", b"hallo"));
        assert!(!glob_match(b"h[^e]llo", b"hello"));
        assert!(glob_match(b"h[a-b]llo", b"hbllo"));
        assert!(glob_match(b"user:\\*", b"user:*"));
        assert!(!glob_match(b"user:\\*", b"user:x"));
        assert!(glob_match(b"*a*b*c*", b"xxaxxbxxcxx"));
        assert!(!glob_match(b"abc", b"abcd"));
        assert!(glob_match(b"[", b"["));
        assert_eq!(literal_prefix(b"user:*:x"), b"user:");
        assert_eq!(literal_prefix(b"a\\*b?"), b"a*b");
    }

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
